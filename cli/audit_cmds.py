"""``pds audit export`` (the owner writes an audit package) and ``pds audit verify`` (an
auditor checks one offline, trusting nothing but the public keys in it)."""

from __future__ import annotations

import base64
from pathlib import Path

import click

from pds import audit
from pds.accesslog import Checkpoint

from .heads import check_or_warn, pin_or_warn
from .output import emit, iso_ms
from .state import (
    AppState,
    InputError,
    json_option,
    owner_options,
    pass_state,
    read_file_at_most,
    unlocked_vault,
)

__all__ = ["audit_group"]

# A checkpoint note is at most 4096 characters (Checkpoint.parse): a trusted head file is
# read only up to four bytes for each.
MAX_CHECKPOINT_BYTES = 4 * 4096


@click.group("audit")
def audit_group() -> None:
    """Export an audit package of a vault, and verify one offline."""


@audit_group.command("export", short_help="Write an audit package of a vault.")
@click.argument("vault_id", metavar="VAULT")
@click.argument("directory", metavar="DIR", type=click.Path(file_okay=False, path_type=Path))
@owner_options
@json_option
@pass_state
def export(
    state: AppState,
    vault_id: str,
    directory: Path,
    passphrase_file: Path | None,
    key_file: Path | None,
    as_json: bool,
) -> None:
    """Write an audit package of VAULT into DIR (created; it must be empty): the vault's
    public key, a checkpoint signed now, every token it knows, the signed revocation list,
    and every log entry with a key that discloses exactly that entry.

    Needs the owner's secret. The package holds no record content, but the disclosed log
    entries are personal data: who read what, when and why. The export is itself logged.
    """
    opened = unlocked_vault(state, vault_id, passphrase_file, key_file)
    extended = check_or_warn(opened)
    target = audit.export_audit(opened, directory)
    checkpoint = Checkpoint.parse((target / "checkpoint.txt").read_text(encoding="utf-8"))
    if extended:
        pin_or_warn(opened, checkpoint)
    files = sorted(path.name for path in target.iterdir() if path.is_file())
    document = {
        "vault": opened.vault_id,
        "directory": str(target),
        "files": files,
        "entries": checkpoint.size,
        "root": base64.b64encode(checkpoint.root).decode("ascii"),
        "checkpoint": checkpoint.to_text(),
    }
    emit(
        as_json,
        document,
        [
            f"wrote the audit package of vault {opened.vault_id} to {target}",
            f"  {checkpoint.size} log entries, checkpoint signed {iso_ms(checkpoint.time)}",
            f"  files: {', '.join(files)}",
            f"  verify offline: pds audit verify {target}",
        ],
    )


@audit_group.command("verify", short_help="Verify an audit package offline.")
@click.argument(
    "directory",
    metavar="DIR",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
)
@click.option(
    "--trusted-head",
    type=click.Path(dir_okay=False, path_type=Path),
    help="A checkpoint seen earlier (e.g. saved from 'pds log head'): the package's log "
    "must extend it.",
)
@click.option(
    "--vault-did",
    metavar="DID",
    help="The vault's did:key as obtained from the person: the package must be signed by it "
    "(otherwise the package's own key is trusted; compare the did the report prints).",
)
@json_option
def verify(directory: Path, trusted_head: Path | None, vault_did: str | None, as_json: bool) -> int:
    """Verify the audit package in DIR offline, without any store: the checkpoint's
    signature, every entry against it, consistency with --trusted-head, every token chain
    and revocation, and for every access that released data whether a valid, unrevoked,
    in-scope, right-purpose token authorised it at that moment.

    Prints a report. Exit 0 clean, 1 any violation (or a checkpoint whose signature
    fails), 2 a malformed package.
    """
    trusted_text = None
    if trusted_head is not None:
        label = f"trusted head {trusted_head}"
        data = read_file_at_most(trusted_head, MAX_CHECKPOINT_BYTES, label)
        try:
            trusted_text = data.decode("utf-8")
        except UnicodeDecodeError:
            raise InputError(f"{label} is not UTF-8 text") from None
    report = audit.verify_audit(directory, trusted_head=trusted_text, vault_did=vault_did)
    document = report.to_dict()
    document["trusted_head"] = None if trusted_head is None else str(trusted_head)
    counts = document["counts"]
    verdict = "clean" if report.clean else f"{counts['violations']} violation(s)"
    lines = [
        f"audit of vault {report.vault_id}: {verdict}",
        f"  vault key:   {report.did}"
        + ("" if vault_did else " (the package's own: compare it with the vault's did:key)"),
        f"  log entries: {counts['entries']}"
        + (" (consistent with the trusted head)" if trusted_head and report.clean else ""),
        f"  accesses:    {counts['accesses']} ({counts['released']} released, "
        f"{counts['refused']} refused, {counts['undisclosed']} not disclosed to the auditor)",
    ]
    for violation in report.violations:
        where = "package" if violation.index is None else f"entry {violation.index}"
        lines.append(f"  VIOLATION {where}: {violation.rule}: {violation.message}")
    emit(as_json, document, lines)
    return 0 if report.clean else 1
