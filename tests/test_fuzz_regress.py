"""Replays every fuzz seed (``fuzz/corpus/TARGET/``) and every input a fuzzer found
(``tests/regress/TARGET/``) through its target's ``TestOneInput`` (``docs/fuzzing.md``).

The contract: each input is accepted or refused with a ``pds.errors.PDSError`` (the CLI:
exit code 0, 1 or 2, no traceback), within a few seconds. An input that still breaks it is
listed in ``KNOWN_FAILURES`` with the reason, and its replay is a strict xfail: when pds is
fixed, the replay passes, the xfail fails, and the entry is removed. The replays need no
atheris. The seeds must also still reach past the signature checks (a format change
that makes them stale fails here: regenerate them with ``python -m fuzz.seeds``).
"""

from __future__ import annotations

import importlib
import io
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # the fuzz package lives at the repository root
    sys.path.insert(0, str(ROOT))

import pds  # noqa: E402
from fuzz import REGRESS_DIR, TARGETS  # noqa: E402
from fuzz._data import Builder, Data  # noqa: E402
from fuzz._world import world  # noqa: E402
from pds import capability  # noqa: E402

pytestmark = pytest.mark.timeout(120)

SLOW_SECONDS = 10.0
"""A replay slower than this is a hang (libFuzzer's ``-timeout`` in the runner is 30 s)."""

KNOWN_FAILURES: dict[tuple[str, str], str] = {}
"""``(target, file name) -> why`` for regression inputs that still break the contract,
each reported with a reproducer (``docs/fuzzing.md``, Findings). F1 to F7 were fixed in
7e2480a and their inputs replay clean."""


def _inputs(directory: Path) -> list[Path]:
    if not directory.is_dir():
        return []
    return sorted(
        path
        for path in directory.iterdir()
        if path.is_file() and not path.name.startswith(("README", "."))
    )


def _cases() -> Iterator[object]:
    for target in TARGETS.values():
        for kind, directory in (("seed", target.seeds), ("regress", target.regressions)):
            for path in _inputs(directory):
                reason = KNOWN_FAILURES.get((target.name, path.name))
                marks = [pytest.mark.xfail(strict=True, reason=reason)] if reason else []
                yield pytest.param(
                    target.name, path, id=f"{target.name}/{kind}/{path.name}", marks=marks
                )


@pytest.mark.parametrize(("name", "path"), list(_cases()))
def test_replay(name: str, path: Path) -> None:
    module = importlib.import_module(TARGETS[name].module)
    data = path.read_bytes()
    module.TestOneInput(b"")  # builds the world outside the timed replay
    start = time.monotonic()
    module.TestOneInput(data)
    elapsed = time.monotonic() - start
    assert elapsed < SLOW_SECONDS, f"{name}/{path.name} took {elapsed:.1f} s"


def test_every_target_has_seeds() -> None:
    for target in TARGETS.values():
        assert _inputs(target.seeds), f"no seeds for {target.name}: run python -m fuzz.seeds"


def test_regression_directories_are_targets() -> None:
    if REGRESS_DIR.is_dir():
        for path in REGRESS_DIR.iterdir():
            assert path.is_file() or path.name in TARGETS, f"tests/regress/{path.name}"


def test_known_failures_name_regression_files() -> None:
    for target, name in KNOWN_FAILURES:
        assert (TARGETS[target].regressions / name).is_file(), f"{target}/{name} is gone"


def _seed(target: str, name: str) -> bytes:
    return (TARGETS[target].seeds / name).read_bytes()


STALE = "the fuzz seeds no longer match pds: regenerate them with python -m fuzz.seeds"


def test_token_seeds_verify() -> None:
    w = world()
    for name in ("root", "delegated", "chain3", "fields"):
        token = pds.Token.from_bytes(_seed("token", f"{name}.bin"))
        try:
            capability.verify_chain(token, vault_id=w.vault_id, identity=w.identity.public)
        except pds.errors.PDSError as exc:
            pytest.fail(f"{STALE} (token {name}: {exc!r})")


def test_invocation_seeds_are_served() -> None:
    from fuzz.targets import invocation

    for name in ("read", "list", "fields"):
        parsed = pds.Invocation.parse(_seed("invocation", f"{name}.bin"))
        try:
            invocation._serve(parsed)
        except pds.errors.PDSError as exc:
            pytest.fail(f"{STALE} (invocation {name}: {exc!r})")


def test_export_seed_imports(tmp_path: Path) -> None:
    w = world()
    data = _seed("importer", "raw")
    assert data[0] == 0
    with pds.open_store(tmp_path / "store.db") as store:
        try:
            store.import_vault(io.BytesIO(data[1:]), key_file=w.key_file)
        except pds.errors.PDSError as exc:
            pytest.fail(f"{STALE} ({exc!r})")


def test_checkpoint_seed_is_the_worlds() -> None:
    try:
        world().vault.verify_log(_seed("checkpoint", "latest.txt").decode())
    except pds.errors.PDSError as exc:
        pytest.fail(f"{STALE} ({exc!r})")


def test_data_reads_what_builder_writes() -> None:
    data = Builder().byte(300).flag(True).uint(7, 3).chunk(b"abc").text("x\udcff").build()
    reader = Data(data + b"tail")
    assert reader.byte() == 44
    assert reader.flag() is True
    assert reader.uint(3) == 7
    assert reader.chunk() == b"abc"
    assert reader.text() == "x\udcff"
    assert reader.rest() == b"tail"
    assert (reader.byte(), reader.uint(4), reader.chunk(), reader.rest()) == (0, 0, b"", b"")
