"""``pds log``: the person's view of a vault's access log (who read what, when, why), its
signed head, and inclusion and consistency proofs.

``pds log VAULT`` is short for ``pds log list VAULT``: the ``log`` group treats a first
word that is not one of its commands as the VAULT of the listing.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click

import pds
from pds import errors, merkle
from pds.accesslog import Checkpoint

from .heads import SUBTREES_CHANGED, check_or_warn, check_pinned, pin, pin_or_warn, warn
from .output import emit, from_ms, iso, iso_ms, printable
from .params import DidKey
from .state import (
    AppState,
    Timestamp,
    json_option,
    owner_credential,
    owner_options,
    pass_state,
    unlock,
)

__all__ = ["describe_entry", "entry_document", "log"]

MAX_LOG_LIMIT = 1000
UNPARSED_TEXT = (
    "[DAMAGED: the entry does not parse as one of this vault's log entries; the host wrote "
    "or changed it]"
)


class LogGroup(click.Group):
    """A group whose first argument is either one of its commands or the VAULT of the
    default command (``list``): ``pds log VAULT`` and ``pds log head VAULT`` both work."""

    default_command = "list"

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if args and args[0] not in self.commands and args[0] not in ctx.help_option_names:
            args = [self.default_command, *args]
        return super().parse_args(ctx, args)


@click.group(
    cls=LogGroup,
    subcommand_metavar="VAULT [OPTIONS] | COMMAND [ARGS]...",
    short_help="Who read what, when and why; signed heads; proofs.",
)
def log() -> None:
    """The vault's access log: who read what, when and why; its signed head; proofs.

    'pds log VAULT' lists the log (short for 'pds log list VAULT').
    """


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def short_did(did: str) -> str:
    return did if len(did) <= 24 else f"{did[:20]}…"


def _when(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


def _when_ms(ms: int) -> str:
    moment = from_ms(ms)
    return f"{ms} ms after 1970" if moment is None else _when(moment)


def _action(entry: pds.AccessEntry) -> str:
    action = entry.details.get("action")
    return str(action) if isinstance(action, str) else entry.kind


def entry_document(entry: pds.AccessEntry) -> dict[str, Any]:
    """The JSON shape of one log entry, in the person's terms."""
    return {
        "index": entry.index,
        "time": None if entry.time is None else iso(entry.time),
        "kind": entry.kind,
        "actor": entry.actor,
        "owner": bool(entry.details.get("owner")),
        "agent": entry.agent,
        "action": _action(entry),
        "purpose": entry.purpose,
        "basis": entry.basis,
        "collections": entry.collections,
        "fields": entry.fields,
        "records": [{"record": record, "version": version} for record, version in entry.records],
        "links": entry.link_ids,
        "result": entry.result,
        "reason": entry.reason,
        "correlation": entry.correlation,
        "disclose_after": None if entry.disclose_after is None else iso(entry.disclose_after),
        "defer_reason": entry.defer_reason,
        "unsigned": entry.unsigned,
        "damaged": entry.damaged,
        "damage": entry.damage,
    }


def _count(items: Sequence[Any], noun: str) -> str:
    return f"{len(items)} {noun}{'' if len(items) == 1 else 's'}"


def _scope(entry: pds.AccessEntry) -> str:
    if not entry.collections:
        return ""
    return f" in {', '.join(entry.collections)}"


def _names(epochs: Any) -> str:
    """The collection names of an ``epochs`` map (text keys only: the details may be a
    host's)."""
    if not isinstance(epochs, dict):
        return ""
    return ", ".join(sorted(name for name in epochs if isinstance(name, str)))


def _why(entry: pds.AccessEntry) -> str:
    text = f" for '{entry.purpose}'" if entry.purpose else ""
    if entry.basis:
        text += f" (basis: {entry.basis})"
    return text


def describe_entry(entry: pds.AccessEntry) -> str:
    """One log entry as a sentence: who did what, when, why, and the result."""
    if entry.time is None or entry.damage == "entry":
        # Nothing but its place is known: no time, kind or details to put in a sentence.
        return f"{'(time unknown)':<20}  #{entry.index}  {UNPARSED_TEXT}"
    details = entry.details
    owner = bool(details.get("owner"))
    who = "you (the owner)" if owner else short_did(entry.actor)
    if entry.agent:
        who += f" (agent: {entry.agent})"
    kind = entry.kind
    if kind in ("read", "list"):
        verb = "read" if kind == "read" else "listed"
        if entry.result == "refused":
            what = f"tried to {'read' if kind == 'read' else 'list'}{_scope(entry)}"
        else:
            what = f"{verb} {_count(entry.records, 'record')}{_scope(entry)}"
        outcome = "released" if entry.result == "released" else entry.result
        if entry.reason:
            outcome += f" ({entry.reason})"
        text = f"{who} {what}{_why(entry)} — {outcome}"
        if entry.correlation:
            text += f" [ref {entry.correlation}]"
    elif kind == "owner-read":
        text = f"{who} read {_count(entry.records, 'record version')}{_scope(entry)}"
    elif kind == "create":
        sealed = " (sealed field by field)" if details.get("seal_fields") is True else ""
        text = f"{who} created the collection {', '.join(entry.collections)}{sealed}"
    elif kind == "grant":
        audience = short_did(str(details.get("audience", "?")))
        collections = ", ".join(entry.collections)
        expires = details.get("expires")
        until = "" if not isinstance(expires, int) else f" until {_when_ms(expires)}"
        text = f"{who} granted {audience} access to {collections}{_why(entry)}{until}"
    elif kind == "delegation":
        audience = short_did(str(details.get("audience", "?")))
        collections = ", ".join(entry.collections)
        text = f"{who} delegated to {audience} access to {collections}{_why(entry)}"
    elif kind == "revoke":
        link = str(details.get("link", ""))[:16]
        reason = details.get("reason")
        text = f"{who} revoked link {link}…" + (f" (reason: {reason})" if reason else "")
    elif kind == "rotate":
        names = _names(details.get("epochs"))
        text = f"{who} rotated the keys of {names or 'no collection'}"
    elif kind == "repair":
        restored = details.get("restored")
        revocations = _count(restored if isinstance(restored, list) else [], "revocation")
        names = _names(details.get("epochs"))
        text = f"{who} repaired the vault's records ({revocations} restored)" + (
            f" with new keys for {names}" if names else ""
        )
    elif kind == "export":
        what = "an audit package" if details.get("audit") else "the vault"
        text = f"{who} exported {what}"
    elif kind == "import":
        text = f"{who} imported the vault into this store"
    elif kind == "rekey":
        text = f"{who} changed the vault's passphrase or key"
    elif kind == "destroy":
        text = f"{who} destroyed the vault"
    else:
        text = f"{who} {kind}"
    if entry.disclose_after is not None:
        text += f" (disclosed after {_when(entry.disclose_after)}"
        text += f": {entry.defer_reason})" if entry.defer_reason else ")"
    if entry.damaged:
        text += (
            " [DAMAGED: its details do not open with the vault key; the host wrote or changed it]"
        )
    elif entry.unsigned:
        text += " [NOT SIGNED by the vault key: the host wrote this entry]"
    return f"{_when(entry.time)}  #{entry.index}  {text}"


@log.command("list", short_help="Who read what, when and why (also: pds log VAULT).")
@click.argument("vault_id", metavar="VAULT")
@click.option(
    "--since",
    type=Timestamp(),
    help="Only entries at or after this ISO 8601 time (UTC if no offset).",
)
@click.option("--actor", type=DidKey(), help="Only entries by this did:key.")
@click.option(
    "--limit",
    type=click.IntRange(1, MAX_LOG_LIMIT),
    default=50,
    show_default=True,
    help="Entries per page.",
)
@click.option(
    "--before",
    type=click.IntRange(min=0),
    metavar="CURSOR",
    help="Continue with entries older than this cursor (printed by the previous page).",
)
@owner_options
@json_option
@pass_state
def list_entries(
    state: AppState,
    vault_id: str,
    since: datetime | None,
    actor: str | None,
    limit: int,
    before: int | None,
    passphrase_file: Path | None,
    key_file: Path | None,
    as_json: bool,
) -> int:
    """Who read what, when and why: VAULT's access log, newest first, one page, in plain
    language (or --json). Entries whose disclosure is deferred are withheld and counted.

    Needs the owner's secret (entries are encrypted to the owner). The store's log is
    first checked against the head pinned on an earlier visit: if it does not extend it
    (a rollback or fork), a WARNING is printed and the exit code is 1. Then a checkpoint
    of the current head is signed and pinned. An entry the host wrote or changed so that
    it does not parse is listed as DAMAGED (the log verifies: it is hashed as it is). If
    the store's subtree hashes do not match its entries (log-entry), the WARNING is
    printed, the entries are listed all the same, nothing is pinned, and the exit code
    is 1.
    """
    opened = state.open_vault(vault_id)
    check = check_pinned(opened)
    if not check.ok:
        warn(check.warning(opened.vault_id))
        # A rollback or fork shows nothing; subtree hashes the host changed (the entries
        # extend the pin) must not hide the log: nothing in pds rewrites them.
        if check.reason != SUBTREES_CHANGED:
            return 1
    unlock(opened, owner_credential(passphrase_file, key_file))
    page = opened.log(since=since, actor=actor, limit=limit, before=before)
    verified = check.ok
    if verified:
        try:
            signed: Checkpoint | None = opened.checkpoint()
        except errors.StoreReadOnly:
            signed = None  # A read-only store: pin the newest checkpoint it holds instead.
        pinned = pin(opened, signed)
        if not pinned.ok:
            warn(pinned.warning(opened.vault_id))
            if pinned.reason != SUBTREES_CHANGED:
                return 1
            verified = False
    documents = [entry_document(entry) for entry in page.entries]
    lines = [describe_entry(entry) for entry in page.entries] or ["no entries"]
    if page.withheld:
        lines.append(
            f"{page.withheld} entr{'y is' if page.withheld == 1 else 'ies are'} withheld: "
            "their disclosure is deferred (shown after the date set by the reader)"
        )
    if page.cursor is not None:
        lines.append(f"older entries: pds log {vault_id} --before {page.cursor}")
    emit(
        as_json,
        {
            "vault": opened.vault_id,
            "entries": documents,
            "withheld": page.withheld,
            "cursor": page.cursor,
        },
        lines,
    )
    return 0 if verified else 1


@log.command("head", short_help="Print the log's signed checkpoint.")
@click.argument("vault_id", metavar="VAULT")
@click.option(
    "--unlock",
    "use_secret",
    is_flag=True,
    help="Sign a checkpoint of the current head now (secret from $PDS_PASSPHRASE or a "
    "prompt); implied by --passphrase-file or --key-file.",
)
@click.option(
    "--repin",
    is_flag=True,
    help="Pin this head even if it does not extend the pinned one (after a legitimate "
    "restore; check why first).",
)
@owner_options
@json_option
@pass_state
def head(
    state: AppState,
    vault_id: str,
    use_secret: bool,
    repin: bool,
    passphrase_file: Path | None,
    key_file: Path | None,
    as_json: bool,
) -> int:
    """Print VAULT's checkpoint (a C2SP tlog-checkpoint signed note: origin, size, root,
    time, signed by the vault key): signed now with the owner's secret, else the newest
    one stored. The text form is exactly the note (usable as --trusted-head).

    The store's log is checked against the pinned head first (WARNING and exit 1 if it
    does not extend it); then this checkpoint is pinned.
    """
    opened = state.open_vault(vault_id)
    if not repin and not check_or_warn(opened):
        return 1
    if use_secret or passphrase_file is not None or key_file is not None:
        unlock(opened, owner_credential(passphrase_file, key_file))
        checkpoint = opened.checkpoint()
        signed_now = True
    else:
        stored = opened.latest_checkpoint()
        if stored is None:
            raise click.ClickException(
                "the vault has no signed checkpoint yet: sign one with --unlock"
            )
        checkpoint = stored
        signed_now = False
    if not pin_or_warn(opened, checkpoint, force=repin):
        return 1
    text = checkpoint.to_text()
    document = {
        "vault": opened.vault_id,
        "checkpoint": text,
        "origin": checkpoint.origin,
        "size": checkpoint.size,
        "root": _b64(checkpoint.root),
        "time": iso_ms(checkpoint.time),
        "signed_now": signed_now,
    }
    if as_json:
        emit(True, document, [])
    else:
        # The note's own line breaks are kept; anything else a terminal must not see in
        # it is escaped (a note pds signs has none).
        click.echo("\n".join(printable(line) for line in text.split("\n")), nl=False)
    return 0


@log.command("prove", short_help="Prove that an entry is in the log.")
@click.argument("vault_id", metavar="VAULT")
@click.option(
    "--entry",
    "index",
    required=True,
    type=click.IntRange(min=0),
    help="The entry's index (0 is the first).",
)
@click.option(
    "--size",
    type=click.IntRange(min=1),
    help="The tree size to prove against (default: the log's current size).",
)
@json_option
@pass_state
def prove(state: AppState, vault_id: str, index: int, size: int | None, as_json: bool) -> None:
    """Print entry --entry of VAULT's log (hex, still encrypted), its leaf hash and its
    RFC 9162 inclusion proof in the tree of --size entries, after verifying the proof
    against that tree's root. Needs no secret."""
    opened = state.open_vault(vault_id)
    tree_size = opened.log_size() if size is None else size
    entry, proof = opened.prove_inclusion(index, tree_size)
    root = opened.log_root(tree_size)
    merkle.verify_inclusion(entry.leaf_hash, index, tree_size, proof, root)
    nodes = [_b64(node) for node in proof]
    document = {
        "vault": opened.vault_id,
        "index": index,
        "size": tree_size,
        "entry": entry.raw.hex(),
        "leaf_hash": _b64(entry.leaf_hash),
        "proof": nodes,
        "root": _b64(root),
        "verified": True,
    }
    lines = [
        f"entry {index} is in the log of size {tree_size} (proof verified)",
        f"  root:      {document['root']}",
        f"  leaf hash: {document['leaf_hash']}",
        f"  proof ({len(proof)} hashes):",
        *(f"    {node}" for node in nodes),
        f"  entry:     {document['entry']}",
    ]
    emit(as_json, document, lines)


@log.command("consistency", short_help="Prove that the log extends an earlier size.")
@click.argument("vault_id", metavar="VAULT")
@click.option(
    "--from",
    "old_size",
    required=True,
    type=click.IntRange(min=1),
    help="The earlier tree size.",
)
@click.option(
    "--to",
    "new_size",
    type=click.IntRange(min=1),
    help="The later tree size (default: the log's current size).",
)
@json_option
@pass_state
def consistency(
    state: AppState, vault_id: str, old_size: int, new_size: int | None, as_json: bool
) -> None:
    """Print the RFC 9162 consistency proof that VAULT's log of --to entries extends the
    log of --from entries, after verifying it against both roots. Needs no secret."""
    opened = state.open_vault(vault_id)
    size = opened.log_size() if new_size is None else new_size
    proof = opened.prove_consistency(old_size, size)
    old_root, new_root = opened.log_root(old_size), opened.log_root(size)
    merkle.verify_consistency(old_size, size, old_root, new_root, proof)
    nodes = [_b64(node) for node in proof]
    document = {
        "vault": opened.vault_id,
        "from": old_size,
        "to": size,
        "old_root": _b64(old_root),
        "new_root": _b64(new_root),
        "proof": nodes,
        "verified": True,
    }
    lines = [
        f"the log of size {size} extends the log of size {old_size} (proof verified)",
        f"  old root: {document['old_root']}",
        f"  new root: {document['new_root']}",
        f"  proof ({len(proof)} hashes):",
        *(f"    {node}" for node in nodes),
    ]
    emit(as_json, document, lines)
