"""``pds vault ...``: create, list, change the owner's secret, rotate, export, import, destroy."""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path

import click

import pds
from pds.accesslog import Checkpoint

from .heads import (
    check_or_warn,
    clear_unrecorded,
    head_path,
    mark_unrecorded,
    pin_or_warn,
    pinned_text,
    signing_vault,
)
from .output import RecordProgress, emit, iso, iso_ms, table
from .state import (
    AppState,
    InputError,
    OwnerCredential,
    check_replaceable,
    json_option,
    kdf_option,
    new_owner_credential,
    owner_credential,
    owner_options,
    pass_state,
    unlock,
    unlocked_vault,
)

__all__ = ["vault"]


@click.group()
def vault() -> None:
    """Create, list and manage vaults (one per person)."""


def _ensure_key_file(key_file: Path | None) -> bool:
    """Create the owner key file if it does not exist yet; return whether it was created."""
    if key_file is None or key_file.exists():
        return False
    pds.SymmetricKey.create_file(key_file)
    return True


@vault.command("create")
@kdf_option
@owner_options
@json_option
@pass_state
def create(
    state: AppState,
    kdf: str,
    passphrase_file: Path | None,
    key_file: Path | None,
    as_json: bool,
) -> None:
    """Create a new vault and print its id.

    The vault is unlocked by a passphrase (asked twice on a terminal) or, with --key-file,
    by a 32-byte owner key file, which is created (mode 0600) if it does not exist. The
    store is created if it does not exist.
    """
    params = pds.KdfParams.named(kdf)
    credential = owner_credential(passphrase_file, key_file, confirm=True)
    # Every input is checked, and the key file made, before the store is: a bad key file
    # (or one that cannot be created) must not leave a new, empty store behind.
    if credential.key_file is not None and credential.key_file.exists():
        pds.SymmetricKey.from_file(credential.key_file)
    created_key = _ensure_key_file(credential.key_file)
    try:
        store = state.open_store(create=True)
        vault_id = store.create_vault(
            passphrase=credential.passphrase,
            key_file=credential.key_file,
            kdf=params if credential.passphrase is not None else None,
        )
    except BaseException:
        # A key file made for a vault that was not created unlocks nothing: remove it.
        if created_key and credential.key_file is not None:
            credential.key_file.unlink(missing_ok=True)
        raise
    opened = store.open_vault(vault_id)
    document = {
        "vault": vault_id,
        "did": opened.did,
        "created_at": iso(opened.created_at),
        "unlock": credential.method,
        "kdf": kdf if credential.passphrase is not None else None,
        "key_file": str(credential.key_file) if credential.key_file is not None else None,
        "key_file_created": created_key,
        "store": str(store.path),
    }
    lines = [f"created vault {vault_id}", f"  did:     {opened.did}"]
    if credential.key_file is not None:
        note = " (new: keep it safe, it unlocks the vault)" if created_key else ""
        lines.append(f"  unlock:  key file {credential.key_file}{note}")
    else:
        lines.append(f"  unlock:  passphrase (Argon2id, {kdf})")
    lines.append(f"  store:   {store.path}")
    emit(as_json, document, lines)


def _vault_info_document(info: pds.VaultInfo) -> dict[str, object]:
    return {
        "vault": info.vault_id,
        "did": info.did,
        "created_at": iso(info.created_at),
        "unlock": info.unlock_method,
        "destroyed": info.destroyed,
    }


@vault.command("list")
@json_option
@pass_state
def list_vaults(state: AppState, as_json: bool) -> None:
    """List the vaults in the store (no secret needed)."""
    infos = state.open_store().list_vaults()
    documents = [_vault_info_document(info) for info in infos]
    if not infos:
        text: list[str] = ["no vaults in this store"]
    else:
        text = table(
            ["VAULT", "CREATED", "UNLOCK", "STATE", "DID"],
            [
                [
                    info.vault_id,
                    iso(info.created_at),
                    info.unlock_method,
                    "destroyed" if info.destroyed else "active",
                    info.did,
                ]
                for info in infos
            ],
        )
    emit(as_json, {"vaults": documents}, text)


@vault.command("passwd", short_help="Change a vault's passphrase or key file.")
@click.argument("vault_id", metavar="VAULT")
@owner_options
@click.option(
    "--new-passphrase-file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Read the new passphrase from the first line of this file "
    "(else $PDS_NEW_PASSPHRASE, else a prompt, asked twice).",
)
@click.option(
    "--new-key-file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Unlock the vault with this 32-byte key file from now on (created if missing).",
)
@kdf_option
@json_option
@pass_state
def passwd(
    state: AppState,
    vault_id: str,
    passphrase_file: Path | None,
    key_file: Path | None,
    new_passphrase_file: Path | None,
    new_key_file: Path | None,
    kdf: str,
    as_json: bool,
) -> None:
    """Change the owner's secret of VAULT (a new passphrase or key file).

    Only the vault master key is re-wrapped; records are not re-encrypted. The current
    secret comes from --passphrase-file, --key-file, $PDS_PASSPHRASE or a prompt.
    """
    params = pds.KdfParams.named(kdf)
    opened = unlocked_vault(state, vault_id, passphrase_file, key_file)
    new: OwnerCredential = new_owner_credential(new_passphrase_file, new_key_file)
    created_key = _ensure_key_file(new.key_file)
    opened.rekey(
        passphrase=new.passphrase,
        key_file=new.key_file,
        kdf=params if new.passphrase is not None else None,
    )
    document = {
        "vault": opened.vault_id,
        "unlock": new.method,
        "kdf": kdf if new.passphrase is not None else None,
        "key_file": str(new.key_file) if new.key_file is not None else None,
        "key_file_created": created_key,
    }
    how = f"key file {new.key_file}" if new.key_file is not None else f"passphrase ({kdf})"
    emit(as_json, document, f"vault {opened.vault_id} now unlocks with a {how}")


@vault.command("rotate", short_help="Start new key epochs for new writes.")
@click.argument("vault_id", metavar="VAULT")
@click.option(
    "--collection",
    "-c",
    help="Rotate only this collection (default: every collection of the vault).",
)
@owner_options
@json_option
@pass_state
def rotate(
    state: AppState,
    vault_id: str,
    collection: str | None,
    passphrase_file: Path | None,
    key_file: Path | None,
    as_json: bool,
) -> int:
    """Start a new key epoch for new writes to one collection, or to all, and share it
    with the live grants.

    Older records are not re-encrypted and stay readable with the older epochs. Refused
    (WARNING, exit 1) if the store's log does not extend the head pinned on an earlier
    visit: a store rolled back to before a revocation would share the epoch with the
    revoked grant.
    """
    opened = state.open_vault(vault_id)
    if collection is not None and collection not in opened.collections():
        # A typo must not pass for the rotation of the collection meant (the library's
        # rotate would make it, as a new collection).
        raise InputError(
            f"the vault has no collection {collection!r} (make one with 'pds vault "
            "collection'; if its keys were lost, 'pds vault repair')"
        )
    if not check_or_warn(opened, changing=True):  # before the secret is asked for
        return 1
    unlock(opened, owner_credential(passphrase_file, key_file))
    try:
        epochs = opened.rotate(collection, pinned=pinned_text(opened.vault_id))
    except pds.errors.IntegrityError as exc:
        if exc.reason == "rotation-unrecorded":
            mark_unrecorded(opened.vault_id)
        raise
    pin_or_warn(opened)
    if epochs:
        text = [f"rotated {name} to epoch {epoch}" for name, epoch in sorted(epochs.items())]
    else:
        text = ["nothing to rotate: the vault has no collections yet"]
    emit(as_json, {"vault": opened.vault_id, "epochs": epochs}, text)
    return 0


@vault.command("collection", short_help="Create a collection, optionally sealed by field.")
@click.argument("vault_id", metavar="VAULT")
@click.argument("name")
@click.option(
    "--seal-fields",
    is_flag=True,
    help="Encrypt each top-level field under its own key, so a grant limited to some "
    "fields is enforced by cryptography (field names become visible to the host).",
)
@owner_options
@json_option
@pass_state
def collection(
    state: AppState,
    vault_id: str,
    name: str,
    seal_fields: bool,
    passphrase_file: Path | None,
    key_file: Path | None,
    as_json: bool,
) -> int:
    """Create the collection NAME before anything is written to it.

    Writing to a new collection creates it sealed record by record; create it here with
    --seal-fields to allow field-restricted grants (pds grant --fields) on it. Refused
    (WARNING, exit 1) if the store's log does not extend the head pinned on an earlier
    visit: the creation is logged, and the owner's key would sign a head over that log.
    """
    opened = signing_vault(state, vault_id, passphrase_file, key_file, changing=True)
    if opened is None:
        return 1
    opened.create_collection(name, seal_fields=seal_fields)
    pin_or_warn(opened)
    sealing = "field by field" if seal_fields else "record by record"
    emit(
        as_json,
        {"vault": opened.vault_id, "collection": name, "seal_fields": seal_fields},
        [f"created collection {name} (sealed {sealing})"],
    )
    return 0


@vault.command("share-keys", short_help="Share key epochs with grantees that lack them.")
@click.argument("vault_id", metavar="VAULT")
@owner_options
@json_option
@pass_state
def share_keys(
    state: AppState,
    vault_id: str,
    passphrase_file: Path | None,
    key_file: Path | None,
    as_json: bool,
) -> int:
    """Seal every key epoch that a live grant or delegation covers but does not hold yet.

    A delegation first presented after a new epoch reads those records as pending until
    this runs (rotation runs it too). Refused (WARNING, exit 1) if the store's log does not
    extend the head pinned on an earlier visit.
    """
    opened = state.open_vault(vault_id)
    if not check_or_warn(opened, changing=True):  # before the secret is asked for
        return 1
    unlock(opened, owner_credential(passphrase_file, key_file))
    shared = opened.share_keys()
    pin_or_warn(opened)
    emit(as_json, {"vault": opened.vault_id, "shared": shared}, [f"shared {shared} key epochs"])
    return 0


@vault.command("repair", short_help="Rebuild the revocations and key epochs from the log.")
@click.argument("vault_id", metavar="VAULT")
@owner_options
@json_option
@pass_state
def repair(
    state: AppState,
    vault_id: str,
    passphrase_file: Path | None,
    key_file: Path | None,
    as_json: bool,
) -> None:
    """Rebuild what the signed heads record, the vault's revocations and each collection's
    newest key epoch, from the access log, after the store's rows were changed.

    For a vault whose rotate, share-keys or export fail with revocations-changed,
    epochs-changed or checkpoint-missing, or a revoke or rotate that reported it could not
    be recorded. Revocations the log records are signed again, revocation rows the owner
    never signed are removed, a lost newest key epoch is replaced by a new one, and a new
    head records the result. The log must extend the head pinned on an earlier
    visit (checked before the secret is asked for): repairing a rolled-back log would sign
    the rollback.
    """
    opened = state.open_vault(vault_id)
    pinned = pinned_text(opened.vault_id)
    if pinned is not None:
        opened.verify_log(pinned)  # before the secret is asked for
    unlock(opened, owner_credential(passphrase_file, key_file))
    report = opened.repair(pinned=pinned)
    clear_unrecorded(opened.vault_id)
    pin_or_warn(opened)
    text = [f"restored the revocation of link {link}" for link in report.restored]
    text += [f"removed a revocation row the owner never signed ({link})" for link in report.removed]
    text += [
        f"removed epoch {epoch} of {name}: a number pds never makes, unsigned"
        for name, epoch in report.removed_epochs
    ]
    text += [
        f"left epoch {epoch} of {name} in place: its certificate does not verify"
        for name, epoch in report.unverified_epochs
    ]
    text += [
        f"made epoch {epoch} of {name} in place of a lost one"
        for name, epoch in sorted(report.epochs.items())
    ]
    text += [
        f"ignored log entry {index}: it claims to be yours but you did not sign it"
        for index in report.ignored
    ]
    head = report.checkpoint
    text.append(
        "nothing to repair: the store holds what the log records"
        if head is None
        else f"signed a head at size {head.size} recording the result"
    )
    document = {
        "vault": opened.vault_id,
        "restored": report.restored,
        "removed": report.removed,
        "epochs": report.epochs,
        "removed_epochs": [list(pair) for pair in report.removed_epochs],
        "unverified_epochs": [list(pair) for pair in report.unverified_epochs],
        "ignored": report.ignored,
        "checkpoint": None if head is None else head.to_text(),
    }
    emit(as_json, document, text)


@vault.command("export", short_help="Export a vault to one portable file.")
@click.argument("vault_id", metavar="VAULT")
@click.argument("file", type=click.Path(dir_okay=False, writable=True, path_type=Path))
@owner_options
@json_option
@pass_state
def export(
    state: AppState,
    vault_id: str,
    file: Path,
    passphrase_file: Path | None,
    key_file: Path | None,
    as_json: bool,
) -> int:
    """Export VAULT to FILE: one portable, signed file of its ciphertext.

    The file holds no plaintext; importing it needs the owner's secret. FILE is replaced
    atomically if it exists. Refused (WARNING, exit 1) if the store's log does not extend
    the head pinned on an earlier visit, checked before the secret is asked for and again
    by the export: the file would carry a rolled-back vault (its revocations undone), under
    a head the owner's key signs for the export.
    """
    check_replaceable(file)
    opened = signing_vault(state, vault_id, passphrase_file, key_file)
    if opened is None:
        return 1
    try:
        with RecordProgress("exporting", as_json=as_json) as progress:
            # Checked again inside the export's transaction: the store may have changed
            # since the check above (while the secret was asked for, say).
            opened.export(file, progress=progress.callback, pinned=pinned_text(opened.vault_id))
    except pds.errors.InvalidProof:
        if check_or_warn(opened):
            raise  # not the pin: the store's log and its own heads disagree
        return 1
    pin_or_warn(opened)
    size = file.stat().st_size
    document = {"vault": opened.vault_id, "file": str(file), "records": progress.count}
    document["bytes"] = size
    emit(
        as_json,
        document,
        f"exported vault {opened.vault_id}: {progress.count} record versions, "
        f"{size} bytes to {file}",
    )
    return 0


@vault.command("import", short_help="Import an exported vault.")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@owner_options
@json_option
@pass_state
def import_(
    state: AppState,
    file: Path,
    passphrase_file: Path | None,
    key_file: Path | None,
    as_json: bool,
) -> None:
    """Import a vault exported with 'pds vault export' from FILE.

    Needs the vault owner's secret. Everything is verified before anything is written; on
    any failure nothing is imported. The store is created if it does not exist. If a head
    of the vault was pinned on an earlier visit, the file must extend it: an older export
    would bring back what was revoked or rotated since.
    """
    # Open the file first: a missing file must not leave a new, empty store behind.
    try:
        source = file.open("rb")
    except OSError as exc:
        raise InputError(f"cannot read {file}: {exc.strerror}") from None
    with source:
        credential = owner_credential(passphrase_file, key_file)
        try:
            state.open_store().close()
            created = False
        except pds.errors.StoreNotFound:
            created = True  # no store yet: one is made for the import
        store = state.open_store(create=True)
        pins: dict[str, Checkpoint] = {}

        def pin_of(vault_id: str) -> str | None:
            text = pinned_text(vault_id)
            if text is not None:
                pins[vault_id] = Checkpoint.parse(text)  # for the message
            return text

        try:
            with RecordProgress("importing", as_json=as_json) as progress:
                try:
                    vault_id = store.import_vault(
                        source,
                        passphrase=credential.passphrase,
                        key_file=credential.key_file,
                        progress=progress.callback,
                        pinned=pin_of,
                    )
                except pds.errors.InvalidProof as exc:
                    if not pins or exc.reason not in _PIN_REASONS:
                        raise
                    raise _older_than_pin(*next(iter(pins.items())), exc.reason) from None
        except BaseException:
            if created:
                # A failed import leaves no new, empty store (nor its host key) behind.
                store.close()
                for suffix in ("", "-wal", "-shm", ".hostkey"):
                    with contextlib.suppress(OSError):
                        store.path.with_name(store.path.name + suffix).unlink()
            raise
    opened = store.open_vault(vault_id)
    pin_or_warn(opened)
    document = {
        "vault": vault_id,
        "did": opened.did,
        "records": progress.count,
        "file": str(file),
        "store": str(store.path),
    }
    emit(
        as_json,
        document,
        f"imported vault {vault_id} ({progress.count} record versions, verified) into {store.path}",
    )


# What import_vault raises for a file that does not extend the pinned head.
_PIN_REASONS = frozenset({"log-truncated", "log-fork", "checkpoint-missing", "checkpoint-records"})


def _older_than_pin(vault_id: str, pinned: Checkpoint, reason: str) -> pds.errors.InvalidProof:
    return pds.errors.InvalidProof(
        f"the file does not extend the head of vault {vault_id} pinned on "
        f"{iso_ms(pinned.time)} (size {pinned.size}; {reason}): importing it would undo "
        f"what was revoked or rotated since (after a legitimate restore, delete "
        f"{head_path(vault_id)} and import again)",
        reason,
    )


@vault.command("destroy", short_help="Crypto-erase a vault.")
@click.argument("vault_id", metavar="VAULT")
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
@owner_options
@json_option
@pass_state
def destroy(
    state: AppState,
    vault_id: str,
    yes: bool,
    passphrase_file: Path | None,
    key_file: Path | None,
    as_json: bool,
) -> None:
    """Crypto-erase VAULT: its keys are deleted first, so every record in it becomes
    unrecoverable, then its rows. Needs the owner's secret; asks for confirmation.
    """
    opened = state.open_vault(vault_id)
    unlock(opened, owner_credential(passphrase_file, key_file))
    if not yes:
        if sys.stdin is None:
            # Closed stdin: no answer can come, which is not a yes.
            raise click.ClickException("vault not destroyed: not confirmed (stdin is closed)")
        try:
            confirmed = click.confirm(
                f"Destroy vault {vault_id}? Every record in it becomes unrecoverable",
                default=False,
                err=True,
            )
        except click.Abort:
            # End of input or Ctrl-C left the prompt line open; close it before the error.
            click.echo(err=True)
            raise
        if not confirmed:
            raise click.ClickException("vault not destroyed: not confirmed")
    opened.destroy()
    emit(
        as_json,
        {"vault": vault_id, "destroyed": True},
        f"destroyed vault {vault_id}: its keys are erased",
    )
