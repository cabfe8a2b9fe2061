"""Coverage-guided fuzz targets for pds (atheris / libFuzzer), and their runner.

Each target module under ``fuzz/targets/`` exposes ``TestOneInput(data: bytes) -> None``,
usable by atheris and by pytest alike. The contract every target checks: for any input, the
code under test either succeeds or raises a subclass of ``pds.errors.PDSError`` (the CLI
target: the exit code is 0, 1 or 2, and the output holds no traceback and no "unexpected"
error). Anything else, an exception of another type, a failed invariant (``AssertionError``)
or a hang, is a finding.

Run them with ``python -m fuzz TARGET --seconds N`` or ``python -m fuzz all --seconds N``
(``make fuzz``); see ``docs/fuzzing.md``. This module imports nothing from pds, so that the
engine can import pds under atheris' instrumentation.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

__all__ = ["CORPUS_DIR", "REGRESS_DIR", "REPO_ROOT", "TARGETS", "Target"]

REPO_ROOT = Path(__file__).resolve().parent.parent
CORPUS_DIR = Path(__file__).resolve().parent / "corpus"
"""Committed seeds, one directory per target (regenerate with ``python -m fuzz.seeds``)."""
REGRESS_DIR = REPO_ROOT / "tests" / "regress"
"""Every input a fuzzer found that broke the contract, one directory per target."""


@dataclass(frozen=True)
class Target:
    name: str
    module: str
    max_len: int
    """libFuzzer's ``-max_len``: the largest input it generates."""
    surface: str

    @property
    def seeds(self) -> Path:
        return CORPUS_DIR / self.name

    @property
    def regressions(self) -> Path:
        return REGRESS_DIR / self.name


TARGETS: dict[str, Target] = {
    target.name: target
    for target in (
        Target(
            "token",
            "fuzz.targets.token",
            8192,
            "Token.from_bytes/from_text, verify_chain (as given and re-signed), check_times",
        ),
        Target(
            "invocation",
            "fuzz.targets.invocation",
            8192,
            "Invocation.parse (bytes and pdsi1_ text); re-signed invocations served by a host",
        ),
        Target(
            "envelope",
            "fuzz.targets.envelope",
            4096,
            "_codec.decode, batch manifests, field-sealed records, responses, log entries",
        ),
        Target(
            "checkpoint",
            "fuzz.targets.checkpoint",
            2048,
            "Checkpoint.parse/verify and Vault.verify_log against a fuzzed pinned head",
        ),
        Target(
            "proof",
            "fuzz.targets.proof",
            2048,
            "merkle.verify_inclusion/verify_consistency with fuzzed proofs, sizes and roots",
        ),
        Target(
            "importer",
            "fuzz.targets.importer",
            32768,
            "Store.import_vault on mutated exports, raw and re-signed",
        ),
        Target(
            "audit",
            "fuzz.targets.audit",
            8192,
            "audit.verify_audit on a package with one file replaced by the input",
        ),
        Target(
            "cli",
            "fuzz.targets.cli",
            8192,
            "the pds CLI (CliRunner): token inspect/verify, log prove/consistency/head, "
            "vault import, audit verify, and fuzzed argument lists",
        ),
    )
}
