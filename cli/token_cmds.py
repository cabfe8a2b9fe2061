"""``pds token inspect/verify/delegate`` (offline, no store) and ``pds read`` (the grantee's
side of a request against a store)."""

from __future__ import annotations

import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import click

import pds
from pds import capability, errors

from .grant_cmds import TokenFile, report_token
from .heads import check_or_warn, pin_or_warn
from .output import emit, iso, iso_ms, pretty_json, table
from .params import CommaList, DidKey, Duration, Expiry, load_token, optional_list
from .state import AppState, Timestamp, json_option, pass_state

__all__ = ["read", "token"]

# Vault.list and the host refuse larger pages.
MAX_READ_LIMIT = 1000


@click.group(short_help="Inspect, verify and delegate tokens (offline).")
def token() -> None:
    """Inspect, verify and delegate capability tokens, offline (no store needed)."""


def _window_text(window: Sequence[int | None]) -> str | None:
    start, end = window
    if start is None and end is None:
        return None
    first = "any time" if start is None else iso_ms(start)
    last = "now" if end is None else iso_ms(end)
    return f"written from {first} to {last}"


def _link_lines(number: int, link: dict[str, Any]) -> list[str]:
    role = "root" if link["parent"] is None else "delegation"
    lines = [
        f"link {number} ({role}) {link['link']}",
        f"  issuer:      {link['issuer']}",
        f"  audience:    {link['audience']}",
        f"  abilities:   {', '.join(link['abilities'])}",
        f"  collections: {', '.join(link['collections'])}",
        f"  purposes:    {', '.join(repr(p) for p in link['purposes'])}",
        f"  valid:       {iso_ms(link['not_before'])} to {iso_ms(link['expires'])}",
        f"  delegable:   {link['depth']} more link(s)",
    ]
    if link["fields"] is not None:
        lines.append(f"  fields:      {', '.join(link['fields'])}")
    window = _window_text(link["window"])
    if window is not None:
        lines.append(f"  records:     {window}")
    if link["basis"] is not None:
        lines.append(f"  basis:       {link['basis']}")
    if link["uses"] is not None:
        lines.append(f"  uses:        {link['uses']}")
    if link["defer"] is not None:
        lines.append(f"  may defer disclosure by up to {link['defer'] // 1000} s")
    if link["keys"]:
        epochs = ", ".join(f"{collection}#{epoch}" for collection, epoch in link["keys"])
        lines.append(f"  sealed keys: {epochs} (sealed to the audience; not shown)")
    return lines


@token.command("inspect", short_help="Show what a token grants (no keys, no store).")
@click.argument("source", metavar="TOKEN")
@json_option
def inspect(source: str, as_json: bool) -> None:
    """Show every link of TOKEN: issuer, audience, scope, purposes, validity, delegation.

    Works offline and verifies nothing (see 'pds token verify'); sealed epoch keys are
    named, never shown. TOKEN is the token's text, - to read it from stdin, or @FILE.
    """
    parsed = load_token(source)
    document = parsed.describe()
    lines = [
        f"token {document['link']} for vault {document['vault']} "
        f"({len(document['links'])} link(s), not verified)"
    ]
    for number, link in enumerate(document["links"], start=1):
        lines += _link_lines(number, link)
    emit(as_json, document, lines)


@token.command("verify", short_help="Verify a token offline: signatures, narrowing, times.")
@click.argument("source", metavar="TOKEN")
@click.option(
    "--vault-did",
    type=DidKey(),
    help="The vault's did:key the root link must be issued by (else taken from the root).",
)
@click.option(
    "--at",
    "moment",
    type=Timestamp(),
    help="Check validity times at this ISO 8601 time instead of now (UTC if no offset).",
)
@json_option
def verify(source: str, vault_did: str | None, moment: datetime | None, as_json: bool) -> int:
    """Verify TOKEN offline: its structure, every link's signature, that each link only
    narrows its parent, and its validity times (now, or --at), with the documented clock
    skew allowance.

    Without --vault-did the root issuer is taken from the root link itself, which proves
    only that the chain is consistent: give --vault-did to check who issued it. Revocation,
    use budgets and the vault's lifetime policy need the host: they are not checked here.
    Exit 0 valid, 1 invalid (the reason is printed), 2 malformed.
    """
    parsed = load_token(source)
    now = moment if moment is not None else datetime.fromtimestamp(time.time(), tz=UTC)
    now_ms = (now - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(milliseconds=1)  # exact
    root = parsed.links[0]
    document: dict[str, Any] = {
        "valid": False,
        "reason": None,
        "message": None,
        "link": parsed.link_id.hex(),
        "vault": parsed.vault_id,
        "issuer": root.issuer_did,
        "issuer_source": "--vault-did" if vault_did is not None else "root-link",
        "holder": parsed.links[-1].audience_did,
        "links": len(parsed.links),
        "checked_at": iso(now),
        "clock_skew_seconds": capability.CLOCK_SKEW_MS // 1000,
        "not_checked": ["revocation", "use budget", "vault lifetime policy"],
        "effective": None,
    }
    try:
        if vault_did is not None and root.issuer_did != vault_did:
            raise errors.UntrustedIssuer("the root link is not issued by --vault-did")
        caveats = capability.verify_chain(parsed, vault_id=parsed.vault_id, identity=root.issuer)
        capability.check_times(parsed, now_ms)
    except errors.AccessDenied as denied:
        if isinstance(denied, errors.FormatError):
            raise
        document["reason"] = denied.reason
        document["message"] = str(denied)
        emit(
            as_json,
            document,
            [f"invalid: {denied.reason} ({denied})", f"  token {document['link']}"],
        )
        return 1
    document["valid"] = True
    effective = caveats.describe()
    document["effective"] = effective
    source_note = (
        "matches --vault-did"
        if vault_did is not None
        else "taken from the root link: pass --vault-did to check it"
    )
    emit(
        as_json,
        document,
        [
            f"valid: token {document['link']} ({document['links']} link(s))",
            f"  vault:     {document['vault']}",
            f"  issuer:    {document['issuer']} ({source_note})",
            f"  holder:    {document['holder']}",
            f"  grants:    {', '.join(effective['abilities'])} on "
            f"{', '.join(effective['collections'])} for "
            f"{', '.join(repr(p) for p in effective['purposes'])}",
            f"  until:     {iso_ms(effective['expires'])}",
            f"  checked at {document['checked_at']} "
            f"(clock skew allowed: {document['clock_skew_seconds']} s)",
            "  not checked offline: revocation, use budget, the vault's lifetime policy",
        ],
    )
    return 0


def _grantee(key_file: Path) -> pds.Grantee:
    return pds.Grantee(pds.PrincipalKey.from_file(key_file))


@token.command("delegate", short_help="Extend a token to another principal, narrowed.")
@click.argument("source", metavar="TOKEN")
@click.option(
    "--key",
    "key_file",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="The holder's principal key file (the token's final audience).",
)
@click.option("--to", "audience", required=True, type=DidKey(), help="The new holder's did:key.")
@click.option(
    "--collection",
    "collections",
    "-c",
    multiple=True,
    help="Narrow to these collections (repeatable; default: the parent's).",
)
@click.option(
    "--purpose",
    "purposes",
    multiple=True,
    help="Narrow to these purposes (repeatable; default: the parent's).",
)
@click.option(
    "--expires",
    type=Expiry(),
    help="Lifetime from now (7d) or an ISO 8601 date (default: the parent's expiry).",
)
@click.option(
    "--not-before",
    type=Timestamp(),
    help="Valid from this ISO 8601 time (default: the parent's).",
)
@click.option("--fields", type=CommaList(), help="Narrow to these top-level fields (a,b).")
@click.option("--uses", type=click.IntRange(min=1), help="At most N requests with the new link.")
@click.option(
    "--depth",
    type=click.IntRange(min=0),
    help="Further links the new holder may add (default: one less than the parent's).",
)
@click.option("--ability", "abilities", type=CommaList(), help="Narrow the abilities (read,list).")
@click.option(
    "--defer",
    type=Duration(),
    help="The longest the new holder may defer disclosure (default: the parent's).",
)
@click.option(
    "--out",
    "out_file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Also write the new token's text to this new file.",
)
@json_option
def delegate(
    source: str,
    key_file: Path,
    audience: str,
    collections: Sequence[str],
    purposes: Sequence[str],
    expires: timedelta | datetime | None,
    not_before: datetime | None,
    fields: list[str] | None,
    uses: int | None,
    depth: int | None,
    abilities: list[str] | None,
    defer: timedelta | None,
    out_file: Path | None,
    as_json: bool,
) -> None:
    """Extend TOKEN to the principal --to, signed with the holder's --key, narrowing any
    caveat given (anything not given is inherited). Offline: no store is needed; the host
    learns of the delegation at its first use.

    Widening any caveat is refused (exit 1, access denied (widened:...)). The epoch keys
    the holder has for the narrowed scope are re-sealed to the new holder.
    """
    parsed = load_token(source)
    grantee = _grantee(key_file)
    with TokenFile(out_file) as out:
        child = grantee.delegate(
            parsed,
            to=audience,
            collections=optional_list(collections),
            purposes=optional_list(purposes),
            abilities=abilities,
            fields=fields,
            not_before=not_before,
            expires=expires,
            uses=uses,
            depth=depth,
            defer=defer,
        )
        report_token(as_json, child, out, "delegated token")


def _read_document(record: pds.Record) -> dict[str, Any]:
    return {
        "record": record.record_id,
        "collection": record.collection,
        "version": record.version,
        "created_at": iso(record.created_at),
        "epoch": record.epoch,
        "writer": record.writer or None,
        "data": record.data,
    }


@click.command("read", short_help="Read a vault's records as a token's holder.")
@click.option(
    "--token",
    "source",
    required=True,
    metavar="TOKEN",
    help="The token: its text, - for stdin, or @FILE.",
)
@click.option(
    "--key",
    "key_file",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="The holder's principal key file (the token's final audience).",
)
@click.option("--collection", "-c", help="Only this collection.")
@click.option(
    "--record",
    "record_ids",
    multiple=True,
    metavar="ID",
    help="Only these records (repeatable).",
)
@click.option("--purpose", help="The purpose of this request (default: the token's only one).")
@click.option("--list", "list_only", is_flag=True, help="List metadata only (the list ability).")
@click.option("--since", type=Timestamp(), help="Only records written at or after this time.")
@click.option("--until", type=Timestamp(), help="Only records written before this time.")
@click.option(
    "--limit",
    type=click.IntRange(1, MAX_READ_LIMIT),
    default=100,
    show_default=True,
    help="Records per page.",
)
@click.option("--cursor", help="Continue after the page that printed this cursor.")
@click.option("--agent", help="The person acting in the holder's organisation (for the log).")
@click.option("--correlation", help="The holder's reference for this request (for the log).")
@click.option(
    "--defer-until",
    type=Timestamp(),
    help="Show this access to the person only after this time (needs --defer-reason).",
)
@click.option("--defer-reason", help="Why disclosure of this access is deferred.")
@json_option
@pass_state
def read(
    state: AppState,
    source: str,
    key_file: Path,
    collection: str | None,
    record_ids: Sequence[str],
    purpose: str | None,
    list_only: bool,
    since: datetime | None,
    until: datetime | None,
    limit: int,
    cursor: str | None,
    agent: str | None,
    correlation: str | None,
    defer_until: datetime | None,
    defer_reason: str | None,
    as_json: bool,
) -> None:
    """Read records from the store (--store, $PDS_STORE) as the holder of a token.

    The request is signed with --key; the host checks the token, revocation, scope and
    purpose, logs the access in the person's log, and only then releases the keys; the
    records are verified and decrypted here. A refusal prints 'access denied (<reason>)'
    and exits 1. The store's log is checked against the pinned head first.
    """
    parsed = load_token(source)
    grantee = _grantee(key_file)
    store = state.open_store()
    opened = store.open_vault(parsed.vault_id)
    extended = check_or_warn(opened)
    result = grantee.read(
        store,
        parsed,
        action="list" if list_only else "read",
        purpose=purpose,
        collection=collection,
        records=optional_list(record_ids),
        since=since,
        until=until,
        limit=limit,
        cursor=cursor,
        agent=agent,
        correlation=correlation,
        defer_until=defer_until,
        defer_reason=defer_reason,
    )
    if extended:
        pin_or_warn(opened)
    documents = [_read_document(record) for record in result.records]
    document = {
        "vault": parsed.vault_id,
        "records": documents,
        "cursor": result.cursor,
        "access": result.access,
        "pending": [
            {"record": record_id, "collection": collection, "epoch": epoch}
            for record_id, collection, epoch in result.pending
        ],
    }
    lines: list[str] = []
    if not result.records:
        lines.append("no records")
    elif list_only:
        lines += table(
            ["RECORD", "COLLECTION", "VERSION", "CREATED"],
            [
                [r.record_id, r.collection, str(r.version), iso(r.created_at)]
                for r in result.records
            ],
        )
    else:
        for record in result.records:
            lines.append(
                f"record {record.record_id}  {record.collection}  version {record.version}  "
                f"{iso(record.created_at)}"
            )
            lines += pretty_json(record.data, indent="    ")
    lines.append(f"access logged as entry {result.access} of the vault's log")
    if result.pending:
        count = len(result.pending)
        lines.append(
            f"{count} record{'' if count == 1 else 's'} in scope not yet readable: their key "
            "epoch is not shared with this token yet (the owner runs `pds vault share-keys`)"
        )
    if result.cursor is not None:
        lines.append(f"more records: add --cursor {result.cursor}")
    emit(as_json, document, lines)
