"""``pds grant``, ``pds grants``, ``pds revoke``, ``pds revocations``: the owner's side of
capability tokens."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

import click

import pds
from pds import capability

from .heads import check_or_warn, mark_unrecorded, pin_or_warn, signing_vault
from .output import emit, iso, iso_ms, table
from .params import CommaList, DidKey, Duration, Expiry, read_token
from .state import (
    AppState,
    InputError,
    Timestamp,
    check_replaceable,
    json_option,
    owner_credential,
    owner_options,
    pass_state,
    replace_file,
    unlock,
    unlocked_vault,
)

__all__ = [
    "TokenFile",
    "grant",
    "grants",
    "revocations",
    "revoke",
    "token_document",
    "token_summary",
    "unlock_option",
]


F = TypeVar("F", bound=Callable[..., Any])


def unlock_option(function: F) -> F:
    """``--unlock``: use the owner's secret from $PDS_PASSPHRASE or a prompt."""
    return click.option(
        "--unlock",
        "use_secret",
        is_flag=True,
        help="Unlock the vault (secret from $PDS_PASSPHRASE or a prompt) to show more; "
        "implied by --passphrase-file or --key-file.",
    )(function)


def wants_secret(use_secret: bool, passphrase_file: Path | None, key_file: Path | None) -> bool:
    return use_secret or passphrase_file is not None or key_file is not None


def token_document(token: pds.Token) -> dict[str, Any]:
    """The JSON shape of a newly issued or delegated token: the text, its link id and the
    effective (final link's) caveats, times as ISO 8601."""
    leaf = token.links[-1]
    caveats = leaf.caveats
    start, end = caveats.window
    return {
        "token": token.to_text(),
        "link": token.link_id.hex(),
        "parent": None if leaf.parent is None else leaf.parent.hex(),
        "vault": token.vault_id,
        "issuer": leaf.issuer_did,
        "audience": leaf.audience_did,
        "abilities": sorted(caveats.abilities),
        "collections": list(caveats.collections),
        "fields": None if caveats.fields is None else sorted(caveats.fields),
        "records_window": [
            None if start is None else iso_ms(start),
            None if end is None else iso_ms(end),
        ],
        "purposes": sorted(caveats.purposes),
        "basis": caveats.basis,
        "not_before": iso_ms(caveats.not_before),
        "expires": iso_ms(caveats.expires),
        "uses": caveats.uses,
        "delegable": caveats.depth,
        "defer_seconds": None if caveats.defer is None else caveats.defer // 1000,
        "chain": len(token.links),
    }


def token_summary(document: dict[str, Any]) -> list[str]:
    """Text lines describing ``token_document``'s caveats."""
    purposes = ", ".join(f"'{p}'" for p in document["purposes"])
    lines = [
        f"  audience:    {document['audience']}",
        f"  link:        {document['link']}",
        f"  abilities:   {', '.join(document['abilities'])}",
        f"  collections: {', '.join(document['collections'])}",
        f"  purposes:    {purposes}",
        f"  valid:       {document['not_before']} to {document['expires']}",
    ]
    if document["fields"] is not None:
        lines.append(f"  fields:      {', '.join(document['fields'])}")
    if document["records_window"] != [None, None]:
        start, end = document["records_window"]
        lines.append(f"  records:     written from {start or 'any time'} to {end or 'now'}")
    if document["basis"] is not None:
        lines.append(f"  basis:       {document['basis']}")
    if document["uses"] is not None:
        lines.append(f"  uses:        {document['uses']}")
    lines.append(f"  delegable:   {document['delegable']} more link(s)")
    if document["defer_seconds"] is not None:
        lines.append(f"  may defer disclosure by up to {document['defer_seconds']} s")
    return lines


def report_token(as_json: bool, token: pds.Token, out: TokenFile, heading: str) -> None:
    """Write the token to ``out`` (if given) and print it with its summary."""
    out.write(token)
    document = token_document(token)
    lines = [f"{heading} for vault {token.vault_id}:", *token_summary(document)]
    if out.path is not None:
        lines.append(f"token written to {out.path}")
    lines.append(f"token: {document['token']}")
    emit(as_json, document, lines)


class TokenFile:
    """The ``--out`` file of a new token: created (new, mode 0600) before the token is
    issued, so a file that cannot be written refuses the command before anything is
    granted, and removed again if issuing fails."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._fd: int | None = None

    def __enter__(self) -> TokenFile:
        if self.path is None:
            return self
        try:
            self._fd = os.open(
                self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600
            )
        except FileExistsError:
            raise click.ClickException(
                f"--out file {self.path} exists (it is never overwritten)"
            ) from None
        except OSError as exc:
            raise click.ClickException(
                f"cannot create --out file {self.path}: {exc.strerror}"
            ) from None
        return self

    def write(self, token: pds.Token) -> None:
        """Write the token's text and close the file. If that fails (a full disk), the
        partial file is removed and the error names the token's link, which exists now."""
        if self._fd is None or self.path is None:
            return
        fd, self._fd = self._fd, None
        try:
            with os.fdopen(fd, "w", encoding="ascii") as out:
                out.write(token.to_text() + "\n")
        except OSError as exc:
            with contextlib.suppress(OSError):
                self.path.unlink()
            raise click.ClickException(
                f"the token (link {token.link_id.hex()}) was made but --out file {self.path} "
                f"could not be written: {exc.strerror}"
            ) from None

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._fd is None:
            return
        # The token was never written: nothing was issued, or printing it failed.
        os.close(self._fd)
        self._fd = None
        if self.path is not None:
            with contextlib.suppress(OSError):
                self.path.unlink()


def _window(
    start: datetime | None, end: datetime | None
) -> tuple[datetime | None, datetime | None] | None:
    return None if start is None and end is None else (start, end)


@click.command("grant", short_help="Issue a capability token to a principal.")
@click.argument("vault_id", metavar="VAULT")
@click.option("--to", "audience", required=True, type=DidKey(), help="The grantee's did:key.")
@click.option(
    "--collection",
    "collections",
    "-c",
    multiple=True,
    required=True,
    help="A collection: an exact name, prefix/* or * (repeat for several).",
)
@click.option(
    "--purpose",
    "purposes",
    multiple=True,
    required=True,
    help="A purpose the token may be used for, shown in the person's log (repeatable).",
)
@click.option(
    "--expires",
    required=True,
    type=Expiry(),
    help="Lifetime from --not-before (30d, 12h) or an ISO 8601 date or time (UTC if no offset).",
)
@click.option(
    "--not-before",
    type=Timestamp(),
    help="Valid from this ISO 8601 time (default: now; UTC if no offset).",
)
@click.option("--fields", type=CommaList(), help="Only these top-level fields (a,b): projection.")
@click.option(
    "--records-from",
    type=Timestamp(),
    help="Only records written at or after this ISO 8601 time.",
)
@click.option(
    "--records-until",
    type=Timestamp(),
    help="Only records written before this ISO 8601 time.",
)
@click.option("--uses", type=click.IntRange(min=1), help="At most N requests with this token.")
@click.option(
    "--delegable",
    type=click.IntRange(0, 15),
    default=0,
    show_default=True,
    help="How many further links the holder may add (0: may not delegate).",
)
@click.option(
    "--ability",
    "abilities",
    type=CommaList(),
    default="read,list",
    show_default=True,
    help="Abilities: read, list (delegate is added by --delegable).",
)
@click.option("--basis", help="The legal basis, shown in the person's log.")
@click.option(
    "--defer",
    type=Duration(),
    help="Let the holder defer showing an access to the person by up to this long (10d).",
)
@click.option(
    "--out",
    "out_file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Also write the token's text to this new file (for --token @FILE).",
)
@owner_options
@json_option
@pass_state
def grant(
    state: AppState,
    vault_id: str,
    audience: str,
    collections: Sequence[str],
    purposes: Sequence[str],
    expires: timedelta | datetime,
    not_before: datetime | None,
    fields: list[str] | None,
    records_from: datetime | None,
    records_until: datetime | None,
    uses: int | None,
    delegable: int,
    abilities: list[str],
    basis: str | None,
    defer: timedelta | None,
    out_file: Path | None,
    passphrase_file: Path | None,
    key_file: Path | None,
    as_json: bool,
) -> int:
    """Issue a capability token for VAULT to the principal --to, and print it.

    The token lets its holder (and only its holder, who signs every request with its key)
    read the given collections, for the given purposes, within the validity window. The
    epoch keys of those collections are sealed to the grantee inside the token. Needs the
    owner's secret. The grant is recorded in the vault's access log. Refused (WARNING,
    exit 1) if the store's log does not extend the head pinned on an earlier visit.
    """
    opened = signing_vault(state, vault_id, passphrase_file, key_file)
    if opened is None:
        return 1
    with TokenFile(out_file) as out:
        token = opened.grant(
            audience,
            collections=list(collections),
            purpose=list(purposes),
            expires=expires,
            not_before=not_before,
            abilities=abilities,
            fields=fields,
            window=_window(records_from, records_until),
            uses=uses,
            delegable=delegable,
            basis=basis,
            defer=defer,
        )
        report_token(as_json, token, out, "granted a token")
    return 0


def _grant_document(info: pds.GrantInfo) -> dict[str, Any]:
    return {
        "link": info.link_id,
        "parent": info.parent,
        "audience": info.audience,
        "status": info.status,
        "created_at": iso(info.created_at),
        "not_before": iso(info.not_before),
        "expires": iso(info.expires),
        "uses": info.uses,
        # pds counts uses only for links with a budget: for the others the count is unknown.
        "used": None if info.uses is None else info.used,
        "purposes": info.purposes,
        "collections": info.collections,
    }


@click.command("grants", short_help="List the tokens a vault issued, with their status.")
@click.argument("vault_id", metavar="VAULT")
@unlock_option
@owner_options
@json_option
@pass_state
def grants(
    state: AppState,
    vault_id: str,
    use_secret: bool,
    passphrase_file: Path | None,
    key_file: Path | None,
    as_json: bool,
) -> None:
    """List every link VAULT knows (its grants, and the delegations seen in requests) with
    its status: active, revoked (it or an ancestor), expired, not-yet-valid or exhausted.

    Needs no secret. Purposes and collections are sealed to the owner: they are shown only
    with --unlock (or a --passphrase-file/--key-file), and are null otherwise.
    """
    opened = state.open_vault(vault_id)
    if wants_secret(use_secret, passphrase_file, key_file):
        unlock(opened, owner_credential(passphrase_file, key_file))
    infos = opened.grants()
    documents = [_grant_document(info) for info in infos]
    if not infos:
        lines = ["no grants"]
    else:
        lines = table(
            ["LINK", "PARENT", "STATUS", "EXPIRES", "USED", "AUDIENCE", "PURPOSES", "COLLECTIONS"],
            [
                [
                    info.link_id[:16],
                    "-" if info.parent is None else info.parent[:16],
                    info.status,
                    iso(info.expires),
                    "-" if info.uses is None else f"{info.used}/{info.uses}",
                    info.audience,
                    "(locked)" if info.purposes is None else ", ".join(info.purposes),
                    "(locked)" if info.collections is None else ", ".join(info.collections),
                ]
                for info in infos
            ],
        )
    emit(as_json, {"vault": opened.vault_id, "grants": documents}, lines)


def _revocation_target(vault_id: str, text: str) -> pds.Token | str:
    """A token (parsed) or a link id (as given). A token of another vault is refused
    (exit 2): its link is not one of VAULT's, and revoking it there would do nothing."""
    if not text.startswith(capability.TOKEN_PREFIX):
        return text
    token = pds.Token.from_text(text)
    if token.vault_id != vault_id:
        raise InputError(f"the token is for vault {token.vault_id}, not {vault_id}")
    return token


@click.command("revoke", short_help="Revoke a token (and its descendants) or a grantee.")
@click.argument("vault_id", metavar="VAULT")
@click.argument("link", metavar="[LINK_OR_TOKEN]", required=False)
@click.option(
    "--audience",
    type=DidKey(),
    help="Revoke every link issued to this did:key instead of one link.",
)
@click.option("--reason", default="", help="Why (kept in the signed revocation and the log).")
@owner_options
@json_option
@pass_state
def revoke(
    state: AppState,
    vault_id: str,
    link: str | None,
    audience: str | None,
    reason: str,
    passphrase_file: Path | None,
    key_file: Path | None,
    as_json: bool,
) -> None:
    """Revoke LINK_OR_TOKEN (a 64-hex link id, a token's text, - for stdin or @FILE) and
    every link delegated from it, or, with --audience, every link issued to a did:key.

    Takes effect on the next request. Each revocation is signed by the vault key (see
    'pds revocations'). Needs the owner's secret.
    """
    if (link is None) == (audience is None):
        raise click.UsageError("give a LINK_OR_TOKEN or --audience, not both and not neither")
    # The token is read (and checked) before the owner's secret is asked for.
    target = None if link is None else _revocation_target(vault_id, read_token(link))
    opened = unlocked_vault(state, vault_id, passphrase_file, key_file)
    try:
        if target is None:
            assert audience is not None
            revoked = opened.revoke_all(audience=audience, reason=reason)
        else:
            revoked = [opened.revoke(target, reason=reason)]
    except pds.errors.IntegrityError as exc:
        if exc.reason == "revocation-unrecorded":
            mark_unrecorded(opened.vault_id)  # sharing and writing wait for a repair
        raise
    # The head that records the revocation is pinned: rotate and share-keys refuse a store
    # rolled back to before it (a failed pin is a WARNING; the revocation stands).
    if check_or_warn(opened):
        pin_or_warn(opened)
    ids = [link_id.hex() for link_id in revoked]
    if ids:
        lines = [f"revoked {link_id}" for link_id in ids]
    else:
        lines = [f"nothing to revoke: no link was issued to {audience}"]
    emit(as_json, {"vault": opened.vault_id, "revoked": ids, "reason": reason}, lines)


@click.command("revocations", short_help="Write the vault's signed revocation list.")
@click.argument("vault_id", metavar="VAULT")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@owner_options
@json_option
@pass_state
def revocations(
    state: AppState,
    vault_id: str,
    file: Path,
    passphrase_file: Path | None,
    key_file: Path | None,
    as_json: bool,
) -> None:
    """Write VAULT's signed, timestamped revocation list to FILE (binary, replaced if it
    exists), for auditors and hosts. Needs the owner's secret (the vault key signs it)."""
    check_replaceable(file)  # before the secret is asked for
    opened = unlocked_vault(state, vault_id, passphrase_file, key_file)
    data = opened.revocation_list()
    replace_file(file, data)
    emit(
        as_json,
        {"vault": opened.vault_id, "file": str(file), "bytes": len(data)},
        f"wrote the signed revocation list of vault {opened.vault_id} ({len(data)} bytes) "
        f"to {file}",
    )
