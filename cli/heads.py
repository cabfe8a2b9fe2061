"""Pinned log heads: the last signed checkpoint this user saw for each vault.

Every command that opens a vault's log (``log``, ``log head``, ``read``, ``audit export``)
checks that the store's log still extends the pinned head (``Vault.verify_log``), so a host
that rolls its store back to an earlier copy, or shows different users different logs (a
fork), is detected the next time this user looks. When the check passes, the pin moves to
the newest signed checkpoint the store's log extends; it never moves backwards.

The commands that share key epochs with the live grants (``vault rotate``, ``vault
share-keys``) or write records (``put``, ``delete``) refuse to run on a store that does not
extend the pin, and ``revoke`` and ``vault rotate`` pin the heads that record the
revocation and the new epoch: a host that rolls back a revocation or a rotation together
with the heads signed since (which the library alone cannot tell from an older store) is
caught before a new epoch reaches the revoked link, or a record is written under the
epoch it holds. A revocation or rotation that no head could record leaves a marker,
``heads/<vault>.unrecorded``: those four commands refuse until ``vault repair`` records
it (the host could have undone it).

Pins live in the user's state directory: ``$PDS_STATE_DIR``, else ``$XDG_STATE_HOME/pds``,
else ``~/.local/state/pds``; one file per vault, ``heads/<vault>.checkpoint``, holding the
checkpoint note exactly as signed.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

import click

import pds
from pds import errors
from pds.accesslog import Checkpoint

from .output import iso_ms, printable
from .state import AppState, InputError, owner_credential, replace_file, unlock

__all__ = [
    "STATE_DIR_ENV",
    "SUBTREES_CHANGED",
    "HeadCheck",
    "check_or_warn",
    "check_pinned",
    "clear_unrecorded",
    "head_path",
    "mark_unrecorded",
    "pin",
    "pin_or_warn",
    "signing_vault",
    "state_directory",
    "unrecorded_path",
]

STATE_DIR_ENV = "PDS_STATE_DIR"
# Vault ids are short random names; anything else never becomes part of a file name.
_SAFE_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")


def state_directory() -> Path:
    """``$PDS_STATE_DIR``, else ``$XDG_STATE_HOME/pds``, else ``~/.local/state/pds``."""
    explicit = os.environ.get(STATE_DIR_ENV)
    if explicit:
        return Path(explicit)
    xdg = os.environ.get("XDG_STATE_HOME")
    if xdg:
        return Path(xdg) / "pds"
    return Path.home() / ".local" / "state" / "pds"


def head_path(vault_id: str) -> Path | None:
    """Where the pinned head of ``vault_id`` lives (``None`` for an id unfit for a name)."""
    if not _SAFE_ID.fullmatch(vault_id):
        return None
    return state_directory() / "heads" / f"{vault_id}.checkpoint"


def pinned_text(vault_id: str) -> str | None:
    """The pinned head of ``vault_id`` as its note text, or ``None`` if this user has not
    seen one yet. Passed as text to the library, which picks the signature line by the
    vault's key (a note may carry other keys' lines)."""
    path = head_path(vault_id)
    if path is None:
        return None
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        raise InputError(f"cannot read the pinned log head {path}: {reason}") from None
    try:
        Checkpoint.parse(text)
    except errors.FormatError:
        raise InputError(
            f"the pinned log head {path} is not a checkpoint (delete it to pin afresh)"
        ) from None
    return text


def pinned_head(vault_id: str) -> Checkpoint | None:
    """The pinned head of ``vault_id`` parsed for its size, root and time (its signature is
    checked where it is used, as ``pinned_text``), or ``None``."""
    text = pinned_text(vault_id)
    return None if text is None else Checkpoint.parse(text)


SUBTREES_CHANGED = "log-entry"
"""The reason ``Vault.verify_log`` gives when the entries extend the pin but the stored
subtree hashes (a cache the host keeps) do not match them. The host can cause it at will,
and nothing in pds rewrites those hashes: ``pds log`` lists the entries anyway, which did
verify against the pin, after the WARNING, and exits 1. (An entry that does not parse is
no longer a failure: it is a leaf the host wrote, listed as damaged.)"""


@dataclass(frozen=True)
class HeadCheck:
    """The outcome of checking a store's log against the pinned head."""

    ok: bool
    pinned: Checkpoint | None
    reason: str | None = None

    def warning(self, vault_id: str) -> str:
        if self.reason == SUBTREES_CHANGED:
            # Not a rollback: the entries extend the pin, the host's cache of hashes does not.
            return (
                f"WARNING: the store's log for {vault_id} does not verify ({self.reason}): "
                "its stored subtree hashes do not match its entries; the host changed them"
            )
        seen = "an earlier visit"
        if self.pinned is not None:
            seen = f"{iso_ms(self.pinned.time)} (size {self.pinned.size})"
        return (
            f"WARNING: the store's log for {vault_id} does not extend the head seen on "
            f"{seen}: possible rollback or fork ({self.reason})"
        )


def check_pinned(vault: pds.Vault) -> HeadCheck:
    """Check the store's log for ``vault`` against the pinned head (no secret needed)."""
    text = pinned_text(vault.vault_id)
    if text is None:
        return HeadCheck(True, None)
    pinned = Checkpoint.parse(text)
    try:
        vault.verify_log(text)
        latest = vault.latest_checkpoint()
    except errors.IntegrityError as exc:
        return HeadCheck(False, pinned, exc.reason)
    # The log's entries extend the pin, but the heads must too: a host that deleted the
    # heads signed since (with what they record: a revocation, a rotation) shows an older
    # head, or none, over the same entries.
    if latest is None or latest.size < pinned.size:
        return HeadCheck(False, pinned, "checkpoint-missing")
    if (
        latest.size == pinned.size
        and None not in (latest.records, pinned.records)
        and latest.records != pinned.records
    ):
        return HeadCheck(False, pinned, "checkpoint-records")
    return HeadCheck(True, pinned)


def warn(message: str) -> None:
    """A loud line on stderr (never on stdout: ``--json`` output stays one document)."""
    click.echo(printable(message), err=True)


def check_or_warn(vault: pds.Vault, *, changing: bool = False) -> bool:
    """``check_pinned``, with the WARNING on stderr when the store does not extend the pin.

    ``changing``: the command writes records or shares key epochs, which it must not do
    after a revocation or rotation this user made could not be recorded (a host could have
    undone it) until ``pds vault repair`` records it."""
    check = check_pinned(vault)
    if not check.ok:
        warn(check.warning(vault.vault_id))
        return False
    path = unrecorded_path(vault.vault_id)
    if changing and path is not None and path.exists():
        warn(
            f"WARNING: a revocation or rotation of {vault.vault_id} could not be recorded "
            f"(the store was changed): run 'pds vault repair {vault.vault_id}' first"
        )
        return False
    return True


def signing_vault(
    state: AppState,
    vault_id: str,
    passphrase_file: Path | None,
    key_file: Path | None,
    *,
    changing: bool = False,
) -> pds.Vault | None:
    """The vault, unlocked for a command whose log entry the owner's key signs a head over
    (an owner read, a grant) or that writes records (``changing``, see ``check_or_warn``),
    or ``None`` after a WARNING if the store's log does not extend the head pinned on an
    earlier visit: the key would sign a head on a log the host rolled back, one that
    contradicts a head it signed before, and a write could use the key epoch a revoked
    grantee holds. Checked before the secret is asked for."""
    opened = state.open_vault(vault_id)
    if not check_or_warn(opened, changing=changing):
        return None
    unlock(opened, owner_credential(passphrase_file, key_file))
    return opened


def unrecorded_path(vault_id: str) -> Path | None:
    """The marker of a revocation or rotation of ``vault_id`` no signed head recorded."""
    path = head_path(vault_id)
    return None if path is None else path.with_suffix(".unrecorded")


def mark_unrecorded(vault_id: str) -> None:
    """Remember (best effort) that a revocation or rotation could not be recorded."""
    path = unrecorded_path(vault_id)
    if path is None:
        return
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        replace_file(path, b"")
    except OSError as exc:
        warn(f"warning: cannot write {path}: {exc.strerror}")


def clear_unrecorded(vault_id: str) -> None:
    path = unrecorded_path(vault_id)
    if path is not None:
        try:
            path.unlink(missing_ok=True)
        except OSError as exc:
            warn(f"warning: cannot remove {path}: {exc.strerror}")


def pin_or_warn(vault: pds.Vault, head: Checkpoint | None = None, *, force: bool = False) -> bool:
    """``pin``, with the WARNING on stderr when the store's log does not extend ``head``."""
    pinned = pin(vault, head, force=force)
    if not pinned.ok:
        warn(pinned.warning(vault.vault_id))
    return pinned.ok


def pin(vault: pds.Vault, head: Checkpoint | None = None, *, force: bool = False) -> HeadCheck:
    """Move the pin of ``vault`` to ``head`` (default: the newest checkpoint in the store).

    The store's log must extend ``head`` (else the result is not ok and nothing is pinned),
    and the pin never moves to a smaller tree unless ``force``. A pin that cannot be written
    is reported on stderr: the command's own result still stands.
    """
    if head is None:
        head = vault.latest_checkpoint()
        if head is None:
            return HeadCheck(True, pinned_head(vault.vault_id))
    try:
        vault.verify_log(head)
    except errors.IntegrityError as exc:
        return HeadCheck(False, head, exc.reason)
    path = head_path(vault.vault_id)
    if path is None:
        return HeadCheck(True, head)
    current = None if force else pinned_head(vault.vault_id)
    if current is not None and (current.size, current.time) >= (head.size, head.time):
        return HeadCheck(True, current)
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        replace_file(path, head.to_text().encode())
    except OSError as exc:
        warn(f"warning: cannot save the log head to {path}: {exc.strerror}")
    return HeadCheck(True, head)
