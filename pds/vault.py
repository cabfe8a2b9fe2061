"""A person's vault: records, collections, versions, key epochs, deletion.

A ``Vault`` comes from ``Store.open_vault`` locked. Locked, it lists metadata (what the host
can see anyway). Unlocked with the owner's secret, it reads and writes content. See
``docs/keys.md`` for the key hierarchy and ``docs/threat-model.md`` for what the host sees.

A ``Vault`` object is not thread-safe: use one per thread (each thread opens its own store).
"""

from __future__ import annotations

import builtins
import dataclasses
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from pds import _codec, _crypto, _envelope, _export, _faults, _owner, _serve, capability, merkle
from pds._context import (
    HOST_KEY_SUFFIX,
    Context,
    call_provider,
    check_time_ms,
    datetime_to_ms,
    ms_to_datetime,
    ms_to_datetime_clamped,
    optional_ms,
    timedelta_to_ms,
)
from pds._ids import (
    check_collection,
    check_items,
    check_record_id,
    check_text_items,
    new_id,
    parse_cursor,
)
from pds._store.base import BatchRow, EpochRow, LinkRow, RecordRow, RevocationRow, VaultRow
from pds.accesslog import (
    OWNER_KINDS,
    Checkpoint,
    LogEntry,
    MerkleLog,
    check_extends,
    origin,
    revoked_digest,
    rotated_digest,
)
from pds.capability import Token
from pds.errors import (
    FormatError,
    IntegrityError,
    InvalidProof,
    InvalidRecordData,
    LifetimeExceeded,
    RecordDeleted,
    RecordNotFound,
    VaultDestroyed,
    VaultLocked,
    VaultNotFound,
)
from pds.keys import KdfParams, KeyProvider

__all__ = ["AccessEntry", "GrantInfo", "LogPage", "Record", "RecordInfo", "RecordPage", "Vault"]


MAX_RECORD_SIZE = 16 * 1024 * 1024
MAX_STORED_SIZE = 24 * 1024 * 1024
"""The largest stored ciphertext of a field-sealed record (each field adds its nonce, tag
and name): an export frame (``_export.MAX_FRAME``, 32 MiB) must hold any stored record."""

_Item = tuple[str | None, Mapping[str, Any] | None, bytes | None]
"""A record to write: its id (or None for a new one), its data and its encoding (both
None for a deletion tombstone)."""
MAX_LIST_LIMIT = 1000


_Records = tuple[tuple[int, bytes], tuple[int, bytes]]
"""A head's revocation and rotation records (``Checkpoint.records``)."""


@dataclass(frozen=True, slots=True)
class RecordInfo:
    """A record's current version as the host sees it: metadata, no content."""

    record_id: str
    collection: str
    version: int
    created_at: datetime
    epoch: int
    deleted: bool
    size: int


@dataclass(frozen=True, slots=True)
class Record:
    """One verified, decrypted record version. Its repr never shows ``data``."""

    record_id: str
    collection: str
    version: int
    created_at: datetime
    epoch: int
    writer: str
    """The ``did:key`` of the key that signed this version's batch."""
    deleted: bool
    erased: bool
    """True for earlier versions of a deleted record: their content is gone."""
    data: dict[str, Any] | None = field(repr=False)


RESTORED_REASON = "restored by repair from the access log"
"""The reason of a revocation statement ``Vault.repair`` signs again."""

MAX_EPOCH = 2**31 - 1
"""The largest key epoch number pds makes (a vault would need billions of rotations to
reach it). Numbers past it in the store or the log are a host's: ``Vault.repair`` and
the numbering of new epochs ignore them."""


class _LoggedRecords:
    """What the log says the heads record, as ``Vault.repair`` and ``Vault.rotate`` collect
    it entry by entry: every revoked link (``revoke`` entries), every collection made
    (``create`` entries, with its field-sealing flag) and each collection's newest key
    epoch (``create`` and ``rotate`` entries), plus what an earlier repair recorded beyond
    the log. Only entries the owner signed count: one whose details do not open or carry
    no valid signature (a host's, sealed to the owner's public key) adds nothing but its
    index to ``ignored``, and so does a stored entry that does not parse or names another
    index or vault (``unreadable``: the host's, or one it garbled)."""

    def __init__(self, owner_x25519_secret: bytes, identity_public: bytes) -> None:
        self._secret = owner_x25519_secret
        self._identity = identity_public
        self.revoked: set[bytes] = set()
        self.newest: dict[str, int] = {}
        self.sealed: dict[str, bool] = {}
        self.ignored: builtins.list[int] = []
        self._made: dict[tuple[str, int], int] = {}

    def visit(self, entry: LogEntry) -> None:
        if entry.kind not in ("create", "revoke", "rotate", "repair"):
            return
        details = entry.open_signed(self._secret, self._identity)
        if details is None:
            self.ignored.append(entry.index)
        elif entry.kind == "revoke":
            if entry.link_id is not None:
                self.revoked.add(entry.link_id)
        elif entry.kind == "rotate":
            self._epochs(details.get("epochs"), made=True)
        elif entry.kind == "create":
            names = details.get("collections")
            listed = names if isinstance(names, builtins.list) else []
            made = {name: 1 for name in listed if isinstance(name, str)}
            for name in self._epochs(made, made=True):
                self.sealed[name] = details.get("seal_fields") is True
        else:
            self._epochs(details.get("epochs"), made=True)
            unlogged = details.get("unlogged")
            for text in unlogged if isinstance(unlogged, builtins.list) else []:
                link_id = _hex_link_id(text)
                if link_id is not None:
                    self.revoked.add(link_id)
            self._epochs(details.get("newest"))

    def unreadable(self, index: int) -> None:
        """Entry ``index`` is no entry of this log (see ``Vault._walk_log``): what it was,
        if anything, cannot be told, so it adds nothing."""
        self.ignored.append(index)

    def _epochs(self, epochs: Any, *, made: bool = False) -> builtins.list[str]:
        """Take the well-formed ``{collection: epoch}`` items; return their collections."""
        taken: builtins.list[str] = []
        if not isinstance(epochs, dict):
            return taken
        for collection, epoch in epochs.items():
            if type(epoch) is not int or not 1 <= epoch <= MAX_EPOCH:
                continue
            try:
                check_collection(collection)
            except FormatError:
                continue
            self.newest[collection] = max(epoch, self.newest.get(collection, 0))
            if made:
                self._made[collection, epoch] = self._made.get((collection, epoch), 0) + 1
            taken.append(collection)
        return taken

    def made_twice(self, collection: str) -> bool:
        """Whether two entries made the collection's newest epoch number: a host that hid
        the number had a rotation make it again, under a new key, and may put the old row,
        which a revoked link holds, back in its place (the heads record numbers only)."""
        newest = self.newest.get(collection)
        return newest is not None and self._made.get((collection, newest), 0) >= 2


def _checkpoint_missing() -> IntegrityError:
    return IntegrityError(
        "checkpoint-missing",
        "the log holds the owner's entries but the store has no signed checkpoint "
        "(repair rebuilds it)",
    )


def _epochs_changed() -> IntegrityError:
    return IntegrityError(
        "epochs-changed",
        "the stored key epochs differ from those the latest checkpoint records "
        "(repair rebuilds them from the log)",
    )


def _hex_link_id(text: Any) -> bytes | None:
    if not isinstance(text, str) or _HEX_LINK_ID.fullmatch(text) is None:
        return None
    return bytes.fromhex(text)


_HEX_LINK_ID = re.compile("[0-9a-f]{64}")


@dataclass(frozen=True, slots=True)
class RepairReport:
    """What ``Vault.repair`` mended: link ids in hex, epochs as ``(collection, epoch)``."""

    restored: list[str]
    """Revocations the log records whose stored rows were missing or did not verify:
    signed again, dated now, with the reason ``RESTORED_REASON``."""
    removed: list[str]
    """Revocation rows that did not verify, of links no entry revokes: deleted."""
    epochs: dict[str, int]
    """Collections whose newest key epoch, as the log records it, was missing or did not
    verify, with the new epoch made in its place (the next number no row or entry used;
    records written under the lost key stay unreadable)."""
    removed_epochs: list[tuple[str, int]]
    """Epoch rows whose certificates did not verify, numbered outside the range pds
    numbers epochs in (1 to ``MAX_EPOCH``): a host's, deleted."""
    unverified_epochs: list[tuple[str, int]]
    """Epoch rows in that range whose certificates did not verify: left in place (one may
    be the owner's own, damaged, and the only copy of its secret); a collection whose
    newest row is one gets a new epoch past it."""
    ignored: list[int]
    """Indexes of ``create``, ``revoke``, ``rotate`` and ``repair`` entries the owner did not
    sign (a host's, or a pds's from before owner entries were signed), and of stored
    entries that do not parse or name another index or vault (the host wrote or garbled
    them): not taken into account."""
    checkpoint: Checkpoint | None
    """The head signed over the ``repair`` entry; ``None``: nothing needed mending."""


@dataclass(frozen=True, slots=True)
class GrantInfo:
    """A link the host knows (a grant or a delegation seen) and its status."""

    link_id: str
    parent: str | None
    audience: str
    created_at: datetime
    not_before: datetime
    expires: datetime
    uses: int | None
    used: int | None
    """Requests served against the budget; ``None`` when the link has no budget (the host
    counts only budgeted links; the access log has every use)."""
    status: str
    """``active``, ``revoked`` (it or an ancestor), ``expired``, ``not-yet-valid``,
    ``exhausted``, or (only while unlocked) ``over-policy`` (its grant outlives the vault's
    token-lifetime policy as set since: refused when used) or ``invalid`` (the stored link
    does not verify against the vault's identity key: a row the host forged or changed)."""
    purposes: list[str] | None
    collections: list[str] | None


@dataclass(frozen=True, slots=True)
class AccessEntry:
    """One access-log entry in the person's terms: who, what, when, why, and the result.

    An entry the host wrote or changed so that it cannot be read is listed as ``damaged``
    (see there) with the values it could not give empty or ``None``."""

    index: int
    time: datetime | None
    """When the access was logged; ``None`` for an entry whose stored bytes do not parse
    (``damage == "entry"``): nothing says when it was written."""
    kind: str
    """``read``, ``list`` (by token), ``owner-read``, ``create`` (a collection's first key
    epoch), ``grant``, ``delegation``, ``revoke``, ``rotate``, ``export``, ``import``,
    ``rekey``, ``destroy`` or ``repair``; empty for an entry that does not parse."""
    actor: str
    """The organisation's (or the owner's) ``did:key``."""
    agent: str | None
    """The person acting inside the organisation, if the request named one."""
    purpose: str | None
    basis: str | None
    collections: list[str]
    records: list[tuple[str, int]]
    link_ids: list[str]
    result: str
    """``released``, ``refused`` or ``ok``; empty for an entry that does not parse."""
    reason: str | None
    correlation: str | None
    fields: list[str] | None
    """The fields the token limited the access to (``None``: all fields)."""
    disclose_after: datetime | None
    defer_reason: str | None
    unsigned: bool
    """Whether the entry is of a kind only the owner's pds appends (``grant``, ``revoke``,
    ``owner-read``, ...) but lacks the owner's signature: the host wrote it (or a pds
    from before owner entries were signed, 2026-11-27)."""
    details: dict[str, Any] = field(repr=False)
    damaged: bool = False
    """Whether the host wrote or changed the entry so that it cannot be read (``damage``
    says how). Shown rather than raised, so that one such entry cannot hide the rest of
    the person's log."""
    damage: str | None = None
    """Why the entry is ``damaged``: ``details``, its details do not open with the owner's
    key (they are then empty; its header, time and kind included, is as stored); or
    ``entry``, its stored bytes do not parse as a log entry, or name another index or
    vault: only its index is known (``time`` is ``None``; ``kind`` and ``result`` are empty;
    nothing else is). ``None`` when it is not damaged."""


@dataclass(frozen=True, slots=True)
class LogPage:
    entries: list[AccessEntry]
    withheld: int
    """Entries in this range whose disclosure is deferred past now (not shown)."""
    cursor: int | None
    """Pass as ``before=`` for the next (older) page; ``None`` at the start of the log."""


@dataclass(frozen=True, slots=True)
class RecordPage:
    records: list[RecordInfo]
    cursor: str | None
    """Pass to ``list(cursor=...)`` for the next page; ``None`` on the last page."""


@dataclass(frozen=True, slots=True)
class _Sources:
    """The stored rows an owner read needs besides the records, fetched in its transaction."""

    batches: dict[bytes, BatchRow]
    epochs: dict[tuple[str, int], EpochRow | IntegrityError]
    """Verified epoch rows by (collection, epoch), or why one failed: raised only when it
    is used, after the record's own checks, so a changed record reports its own reason."""

    def epoch(self, collection: str, epoch: int) -> EpochRow:
        found = self.epochs[(collection, epoch)]
        if isinstance(found, IntegrityError):
            raise found
        return found


class Vault:
    """One person's vault in a store. Obtain with ``Store.open_vault(vault_id)``."""

    def __init__(self, context: Context, row: VaultRow) -> None:
        self._ctx = context
        self._row = row
        self._owner: _owner.OwnerKeys | None = None
        # The key file the owner's secret came from, if any: an export never replaces it.
        self._key_file: _owner.KeyFile | None = None
        self._host_shares = _owner.LRU()
        # A manifest holds up to 128 entries (~7 KB): keep a few hundred, not thousands.
        self._manifests = _owner.LRU(256)
        # Verified epoch certificates, with whether their collection seals fields.
        self._verified_epochs: dict[tuple[str, int, bytes], bool] = {}
        self._verified_revocations: set[RevocationRow] = set()
        self._newest_epochs: tuple[str | None, dict[str, int]] | None = None
        """The newest epoch of each collection, as last checked against the latest head,
        with that head's text: valid while the store's latest head is that one."""
        # Set when a rotation could not be recorded; cleared by a repair.
        self._rotation_unrecorded = False
        # The last checkpoint text this object verified (or signed), with its parse: the
        # latest checkpoint is read before every owner-side entry, and is usually the one
        # this object signed after the previous one.
        self._verified_head: tuple[str, bytes, Checkpoint] | None = None
        # The largest head this object signed or verified: the store's latest head must
        # never be older (a store rolled back under a long-lived object).
        self._seen_head: Checkpoint | None = None

    def __repr__(self) -> str:
        state = "locked" if self._owner is None else "unlocked"
        return f"Vault(id={self.vault_id!r}, {state})"

    # -- identity and state

    @property
    def vault_id(self) -> str:
        return self._row.vault_id

    @property
    def did(self) -> str:
        """The vault identity key as a ``did:key``: it signs root grants and tree heads."""
        return _crypto.did_key(self._row.identity_public)

    @property
    def created_at(self) -> datetime:
        return ms_to_datetime(self._row.created_at)

    @property
    def is_locked(self) -> bool:
        return self._owner is None

    def _refresh(self) -> VaultRow:
        """The vault's row as stored now. A vault's identity key never changes: a row with
        another one than this object first read is the host's, and taken, it would have
        heads the host signed verify as the owner's (``IntegrityError`` ``identity``)."""
        row = self._ctx.backend.get_vault(self.vault_id)
        if row is None:
            raise VaultNotFound("no such vault")
        if row.destroyed_at is not None:
            raise VaultDestroyed("the vault was destroyed")
        if row.identity_public != self._row.identity_public:
            raise IntegrityError("identity", "the stored identity public key was replaced")
        self._row = row
        return row

    def unlock(
        self,
        *,
        passphrase: str | bytes | None = None,
        key_file: _owner.KeyFile | None = None,
        key_provider: KeyProvider | None = None,
    ) -> None:
        """Unlock with the owner's secret.

        Raises ``WrongPassphrase`` or ``WrongKey`` if it is not this vault's secret,
        ``WeakKdfParameters`` if the stored Argon2id parameters are below the floor, and
        ``IntegrityError`` if the stored identity key was replaced.
        """
        secret = _owner.OwnerSecret(passphrase, key_file, key_provider)
        row = self._refresh()
        if row.wrapped_master is None or row.wrapped_identity is None:
            raise self._keys_missing()
        master = _owner.unwrap_master(row.unlock, row.wrapped_master, secret, self.vault_id)
        self._owner = _owner.open_owner_keys(master, row)
        self._key_file = key_file

    def _keys_missing(self) -> VaultDestroyed | IntegrityError:
        """A missing key is a crypto-erase only if the vault says it was destroyed; in a
        live vault it is a tampered store."""
        row = self._ctx.backend.get_vault(self.vault_id)
        if row is not None and row.destroyed_at is not None:
            return VaultDestroyed("the vault's keys were erased")
        return IntegrityError("key-missing", "a key of this vault is missing")

    def lock(self) -> None:
        """Forget every secret this object holds (best effort: Python cannot zero memory)."""
        self._owner = None
        self._key_file = None
        self._host_shares.clear()

    def _keys(self) -> _owner.OwnerKeys:
        if self._owner is None:
            raise VaultLocked("the vault is locked: unlock it with the owner's secret")
        return self._owner

    def rekey(
        self,
        *,
        passphrase: str | bytes | None = None,
        key_file: _owner.KeyFile | None = None,
        key_provider: KeyProvider | None = None,
        kdf: KdfParams | None = None,
    ) -> None:
        """Change the owner's secret (a new passphrase, key file or provider).

        A new vault master key is drawn, wrapped for the new secret, and the identity key
        is re-wrapped under it; records and grants are not touched (the identity key and
        the vault's ``did`` stay the same), and the old wraps are overwritten. Then pds
        asks SQLite to checkpoint the write-ahead log, where the old vault row (old unlock
        document, master and identity wraps) may still sit: best effort, as after a
        delete. While another connection is reading the store, SQLite keeps that page
        until a later checkpoint, and the old secret with it would still open the
        identity key; so would a copy of the store made before the rekey. The vault must
        be unlocked.
        """
        keys = self._keys()
        secret = _owner.OwnerSecret(passphrase, key_file, key_provider)
        rng = self._ctx.rng
        unlock, provider = _owner.new_unlock(secret, kdf, rng)
        master = rng(_crypto.KEY_SIZE)
        context = _owner.master_context(self.vault_id)
        wrapped = call_provider(lambda: provider.wrap(master, context=context))
        wrapped_identity = _owner.wrap_identity(master, keys.identity.seed, self.vault_id, rng)
        with self._ctx.backend.transaction():
            self._refresh()
            self._ctx.backend.update_vault_unlock(self.vault_id, unlock, wrapped, wrapped_identity)
            self._log("rekey", {"method": secret.method})
        self._key_file = key_file
        keys.master = master
        self._refresh()
        # Best effort: move the old wrapped keys out of the WAL (secure_delete zeroes them).
        self._ctx.backend.checkpoint()

    # -- key epochs

    def collections(self) -> list[str]:
        """Names of the collections that have a key epoch (visible to the host)."""
        return self._ctx.backend.list_collections(self.vault_id)

    def create_collection(self, collection: str, *, seal_fields: bool = False) -> None:
        """Create a collection (its first key epoch) before anything is written to it.

        With ``seal_fields``, every top-level field of its records is encrypted under its
        own key, and the host releases to a field-restricted grantee the keys of the granted
        fields only: field restrictions are then enforced by cryptography. The field names
        (and sizes) become visible to the host. Writing to a new collection creates it
        without field sealing. Raises ``FormatError`` if the collection exists.
        """
        check_collection(collection)
        if type(seal_fields) is not bool:
            raise FormatError("seal_fields must be True or False")
        self._keys()
        with self._ctx.backend.transaction():
            self._refresh()
            if self._ctx.backend.current_epoch(self.vault_id, collection) is not None:
                raise FormatError("the collection already exists")
            self._first_epoch(collection, self._ctx.now_ms(), seal_fields=seal_fields)

    def _first_epoch(self, collection: str, now: int, *, seal_fields: bool = False) -> EpochRow:
        """Make a collection's first key epoch and log a signed ``create`` entry naming it:
        heads record newest epochs from 2 on only, so the log is what tells a rotation of
        every collection about one whose rows the host hides (a revoked link may hold its
        first epoch)."""
        row = self._new_epoch(collection, 1, now, seal_fields=seal_fields)
        self._log("create", {"collections": [collection], "seal_fields": seal_fields})
        return row

    def _new_epoch(
        self, collection: str, epoch: int, now: int, *, seal_fields: bool = False
    ) -> EpochRow:
        keys = self._keys()
        public, secret = _crypto.x25519_keypair(self._ctx.rng)
        certificate = _envelope.epoch_certificate(
            self.vault_id, collection, epoch, public, now, seal_fields
        )
        row = EpochRow(
            vault_id=self.vault_id,
            collection=collection,
            epoch=epoch,
            public_key=public,
            created_at=now,
            signature=keys.identity.sign(_envelope.EPOCH_SIGNATURE_LABEL, certificate),
            sealed_owner=_crypto.seal(
                secret, _crypto.x25519_public(keys.x25519_secret), self._ctx.rng
            ),
            seal_fields=seal_fields,
        )
        self._ctx.backend.insert_epoch(row)
        keys.epoch_secrets[(collection, epoch, public)] = secret
        self._verified_epochs[(collection, epoch, public)] = seal_fields
        if self._revocations_trusted():
            _serve.share_epoch(self._ctx, self._row, keys, collection, epoch, secret, now)
        return row

    def _check_epoch(self, row: EpochRow) -> None:
        marker = (row.collection, row.epoch, row.public_key)
        if self._verified_epochs.get(marker) == row.seal_fields:
            return
        if row.vault_id != self.vault_id:
            raise IntegrityError("epoch-signature", "the epoch belongs to another vault")
        _envelope.verify_epoch_row(self._row.identity_public, row)
        self._verified_epochs[marker] = row.seal_fields

    def _newest_verified_epoch(self, collection: str) -> EpochRow | None:
        """The collection's newest epoch row whose certificate verifies (a rotation takes
        its field-sealing flag from it: a newer row the host planted could flip it)."""
        backend = self._ctx.backend
        row = backend.current_epoch(self.vault_id, collection)
        if row is None or self._epoch_verifies(row):
            return row
        rows = [r for r in backend.iter_epochs(self.vault_id) if r.collection == collection]
        verified = [r for r in rows if self._epoch_verifies(r)]
        return max(verified, key=lambda r: r.epoch, default=None)

    def _epoch_verifies(self, row: EpochRow) -> bool:
        try:
            self._check_epoch(row)
        except (IntegrityError, FormatError):
            return False
        return True

    def _epoch_row(self, collection: str, epoch: int) -> EpochRow:
        """A verified epoch row (the one asked for)."""
        row = self._ctx.backend.get_epoch(self.vault_id, collection, epoch)
        if row is None:
            raise IntegrityError("epoch-missing", "the record's key epoch is missing")
        if (row.vault_id, row.collection, row.epoch) != (self.vault_id, collection, epoch):
            raise IntegrityError("epoch-missing", "the store answered with another epoch")
        self._check_epoch(row)
        return row

    def _epoch_secret(self, collection: str, epoch: int, row: EpochRow | None = None) -> bytes:
        """The epoch's secret; ``row``, if given, is its verified row (else it is fetched)."""
        keys = self._keys()
        if row is None:
            row = self._epoch_row(collection, epoch)
        cached = keys.epoch_secrets.get((collection, epoch, row.public_key))
        if cached is not None:
            return cached
        if row.sealed_owner is None:
            raise self._keys_missing()
        try:
            secret = _crypto.unseal(row.sealed_owner, keys.x25519_secret)
        except _crypto.AuthenticationFailed:
            raise IntegrityError("epoch-secret", "the epoch secret failed authentication") from None
        if not _crypto.constant_time_equal(_crypto.x25519_public(secret), row.public_key):
            raise IntegrityError("epoch-secret", "the epoch secret does not match its public key")
        keys.epoch_secrets[(collection, epoch, row.public_key)] = secret
        return secret

    def rotate(
        self, collection: str | None = None, *, pinned: Checkpoint | str | None = None
    ) -> dict[str, int]:
        """Start a new key epoch for one collection (or all) and return the new epochs.
        A named collection without any epoch (new, or its rows lost) gets one: it is made,
        at epoch 2 (the CLI refuses a name it does not know, so a typo is not taken for a
        rotation). All collections are those the store lists and those the owner's signed
        ``create`` (and ``rotate``) entries in the log name: a host hiding a collection's
        rows during the rotation would otherwise keep it at an epoch a revoked link holds.
        The log is read in full for them, recomputing its tree (and for a named collection
        the store has no epoch of, for its field-sealing flag; an entry that does not parse
        is hashed and passed over, see ``_walk_log``); if it cannot be, every
        collection known is still rotated, then ``IntegrityError``
        (``rotation-incomplete``) is raised.

        ``pinned``, a head seen earlier (e.g. the CLI's pin), must be extended by the log
        the rotation runs on and reached by its latest signed head (``check_extends``),
        checked inside its transaction: otherwise ``InvalidProof`` and nothing is made (a
        store rolled back to before a revocation, or with the revocation and the heads
        since deleted, would share the new epochs with the revoked link); the log walk is
        anchored at it too.

        New writes use the new epoch's public key; older records stay readable with the
        older epochs' secrets and are not re-encrypted. The new epochs are shared with the
        live links, unless the stored revocations are not the set the latest signed head
        records (a host dropped one, ``docs/spec/log.md``): then with no one, and
        ``share_keys`` says why. The vault must be unlocked. Raises ``IntegrityError``
        (``rotation-unrecorded``) *after* making the new epochs when no signed head can
        record them (the store was changed): a host could then drop them unnoticed.
        """
        keys = self._keys()
        targets = [check_collection(collection)] if collection is not None else None
        anchor = None if pinned is None else self._pinned_head(pinned)
        result: dict[str, int] = {}
        unread: InvalidProof | None = None
        with self._ctx.backend.transaction():
            self._refresh()
            if anchor is not None:
                # The heads too: with those signed since the pin deleted (and the
                # revocation they record), the older one left agrees with the rows.
                log = MerkleLog(self._ctx.backend, self.vault_id)
                check_extends(log, self._stored_latest_checkpoint(), anchor)
            now = self._ctx.now_ms()
            used = self._epoch_numbers_used()
            logged = _LoggedRecords(keys.x25519_secret, keys.identity.public)
            if targets is None or self._newest_verified_epoch(targets[0]) is None:
                # Under the write lock, though the walk is O(log size): read before it, the
                # log could be swapped away for the walk and back for the rotation.
                unread = self._read_log(logged.visit, anchor, logged.unreadable)
            for name in targets or sorted(set(self.collections()) | logged.newest.keys()):
                # Epoch 2 at least: heads record newest epochs from 2 on, and a first epoch
                # made again under 1 (the host dropped the collection's rows) would be
                # recorded by none, so the host could put the old one back unseen.
                current = self._newest_verified_epoch(name)
                epoch = self._next_epoch(
                    name,
                    verified=1 if current is None else current.epoch,
                    wanted=logged.newest.get(name, 1),
                    used=used,
                )
                sealed = logged.sealed.get(name, False) if current is None else current.seal_fields
                self._new_epoch(name, epoch, now, seal_fields=sealed)
                result[name] = epoch
            recorded = self._log("rotate", {"epochs": result})
            if self._revocations_trusted():
                self._share_keys(now)
        if not recorded:
            # Unrecorded, the host can put back the epochs this rotation replaced (a revoked
            # link holds them): this object writes nothing until a repair records it.
            self._rotation_unrecorded = True
            raise IntegrityError(
                "rotation-unrecorded",
                "the new key epochs are made and the rotation logged, but no signed head "
                "records it: the store's epochs, revocations or checkpoints were changed "
                "(repair records it; until then this vault object writes nothing)",
            )
        if unread is not None:
            raise IntegrityError(
                "rotation-incomplete",
                "the new key epochs are made and recorded, but the log, which names every "
                f"collection, could not be read ({unread.reason}): a collection whose rows "
                "the host hid may be left out, or rotated without its field sealing "
                "(verify the log; rotate such a one by name)",
            )
        return result

    def _read_log(
        self,
        visit: Callable[[LogEntry], None],
        anchor: Checkpoint | None = None,
        unreadable: Callable[[int], None] | None = None,
    ) -> InvalidProof | None:
        """Walk the log, each entry to ``visit`` (see ``_walk_log``), checked against ``anchor``,
        the latest stored head and the largest this object saw; return why it could not be
        read in full, or ``None``. The entries are the host's bytes: only a walk that
        recomputes the tree from them, as repair's does, shows a rewritten or deleted entry."""
        try:
            latest = self._stored_latest_checkpoint()
            heads = [head for head in (anchor, latest, self._seen_head) if head is not None]
            self._walk_log(heads, visit, unreadable)
        except InvalidProof as exc:
            return exc
        except FormatError:
            return InvalidProof("the latest checkpoint is malformed", "checkpoint-format")
        return None

    def _epoch_numbers_used(self) -> dict[str, int]:
        """The highest key epoch number of each collection that a stored epoch row or link
        names (a secret sealed to a link, or one a link carries). A new epoch takes a number
        past these: a link still holding the secret of an epoch the host dropped would take
        it for the new epoch's under the same number, and read nothing written under it."""
        keys = self._keys()
        backend = self._ctx.backend
        used = backend.shared_epochs(self.vault_id, MAX_EPOCH)
        held = [(row.collection, row.epoch) for row in backend.iter_epochs(self.vault_id)]
        for link in builtins.list(backend.iter_links(self.vault_id)):
            token = _serve.open_link(link, keys, self.vault_id)
            if token is not None:
                held.extend((key.collection, key.epoch) for key in token.leaf.keys)
        for collection, epoch in held:
            if 1 <= epoch <= MAX_EPOCH:
                used[collection] = max(epoch, used.get(collection, 0))
        return used

    def _next_epoch(
        self, collection: str, *, verified: int, wanted: int, used: Mapping[str, int]
    ) -> int:
        """The number of a new epoch of ``collection``: past ``wanted`` and every number in
        use. Where that would pass ``MAX_EPOCH`` (only a host's rows and entries name such
        numbers), the first number past ``verified``, the newest verified epoch, that no
        stored row holds: safe, since the heads record each newest epoch, but a link
        holding a planted number may then hold the wrong secret under it. Raises
        ``IntegrityError`` (``epoch-number``) if no number is left."""
        epoch = max(wanted, verified, used.get(collection, 0)) + 1
        if epoch <= MAX_EPOCH:
            return epoch
        backend = self._ctx.backend
        taken = {r.epoch for r in backend.iter_epochs(self.vault_id) if r.collection == collection}
        epoch = verified + 1
        while epoch in taken:
            epoch += 1
        if epoch > MAX_EPOCH:
            raise IntegrityError("epoch-number", "no key epoch number is left for the collection")
        return epoch

    def share_keys(self) -> int:
        """Seal every key epoch a live link's scope covers but it does not hold yet, to
        that link's audience; return how many were shared.

        Epochs created while a link is known are shared at once. A delegation the host
        first saw after an epoch was created (or made by a holder that lacked a newer epoch)
        waits for this: its holder's reads list those records as ``pending`` until then.
        Rotation runs it too. The vault must be unlocked. Raises ``IntegrityError``
        (``revocations-changed``) if the stored revocations are not the set the latest
        signed head records, and ``InvalidProof`` if the log does not extend that head.
        """
        self._keys()
        with self._ctx.backend.transaction():
            self._refresh()
            return self._share_keys(self._ctx.now_ms())

    def _share_keys(self, now: int) -> int:
        keys = self._keys()
        self._check_revocations()
        backend = self._ctx.backend
        epochs = [
            (row.collection, row.epoch)
            for row in backend.iter_epochs(self.vault_id)
            if self._epoch_verifies(row)  # a row the host planted or damaged: nothing to share
        ]
        shared = 0
        for token in _serve.live_links(self._ctx, self._row, keys, now):
            leaf = token.leaf
            held = {(k.collection, k.epoch) for k in leaf.keys}
            held.update((k.collection, k.epoch) for k in backend.link_keys(leaf.link_id))
            for collection, epoch in epochs:
                if (collection, epoch) in held:
                    continue
                if not capability.collection_allowed(leaf.caveats.collections, collection):
                    continue
                try:
                    secret = self._epoch_secret(collection, epoch)
                except IntegrityError:
                    continue  # its sealed secret was changed: no one can be given it
                _serve.seal_to_link(self._ctx, leaf, collection, epoch, secret)
                shared += 1
        return shared

    # -- writing

    def put(
        self, collection: str, data: Mapping[str, Any], *, record_id: str | None = None
    ) -> RecordInfo:
        """Store ``data`` (a JSON object) as a new record, or a new version of ``record_id``.

        Raises ``InvalidRecordData`` if ``data`` is not a JSON-compatible object,
        ``VaultLocked`` if the vault is locked.
        """
        return self.put_many(collection, [data], record_ids=[record_id])[0]

    def put_many(
        self,
        collection: str,
        items: Iterable[Mapping[str, Any]],
        *,
        record_ids: Iterable[str | None] | None = None,
    ) -> list[RecordInfo]:
        """Store many records in one collection, all or nothing, in one transaction.

        ``items`` is an iterable of JSON objects, ``record_ids`` (if given) one id or None
        per item; anything else raises ``FormatError``."""
        check_collection(collection)
        documents = check_items(items, "items")
        ids = (
            check_items(record_ids, "record_ids")
            if record_ids is not None
            else [None] * len(documents)
        )
        if len(ids) != len(documents):
            raise FormatError("record_ids and items differ in length")
        return self._write(
            collection,
            [
                (record_id, document, _encode_data(document))
                for record_id, document in zip(ids, documents, strict=True)
            ],
        )

    def delete(self, record_id: str) -> RecordInfo:
        """Append a tombstone version and erase the content of every earlier version."""
        check_record_id(record_id)
        self._keys()
        with self._ctx.backend.transaction():
            self._refresh()
            latest = self._ctx.backend.latest_record(self.vault_id, record_id)
            if latest is None:
                raise RecordNotFound("no such record")
            if latest.deleted:
                raise RecordDeleted("the record is already deleted")
            info = self._write(latest.collection, [(record_id, None, None)])[0]
            self._ctx.backend.erase_record_content(self.vault_id, record_id, info.version)
        # Best effort: move the erased pages out of the WAL (secure_delete zeroes them).
        self._ctx.backend.checkpoint()
        return info

    def _write(self, collection: str, items: list[_Item]) -> list[RecordInfo]:
        keys = self._keys()
        if self._rotation_unrecorded:
            raise IntegrityError(
                "rotation-unrecorded",
                "a rotation this vault object made is not recorded: repair the vault first",
            )
        ctx = self._ctx
        backend = ctx.backend
        given = [item[0] for item in items if item[0] is not None]
        for record_id in given:
            check_record_id(record_id)
        if len(set(given)) != len(given):
            raise FormatError("a record id appears twice in one write")
        with backend.transaction():
            self._refresh()
            now = ctx.now_ms()
            epoch_row = backend.current_epoch(self.vault_id, collection)
            if epoch_row is not None:
                self._check_epoch(epoch_row)
            self._check_newest_epoch(collection, epoch_row)
            if epoch_row is None:
                epoch_row = self._first_epoch(collection, now)
            explicit = sorted(set(given))
            latest = backend.latest_versions(self.vault_id, explicit) if explicit else {}
            for _, existing in latest.values():
                if existing != collection:
                    # A record's versions stay in one collection: grants are per collection.
                    raise FormatError("the record belongs to another collection")
            versions = {record_id: version for record_id, (version, _) in latest.items()}
            infos: list[RecordInfo] = []
            for start in range(0, len(items), _envelope.BATCH_MAX):
                chunk = items[start : start + _envelope.BATCH_MAX]
                infos.extend(self._write_batch(keys, epoch_row, chunk, versions, now))
        return infos

    def _write_batch(
        self,
        keys: _owner.OwnerKeys,
        epoch_row: EpochRow,
        chunk: list[_Item],
        versions: dict[str, int],
        now: int,
    ) -> list[RecordInfo]:
        ctx = self._ctx
        rng = ctx.rng
        writer = keys.identity
        collection, epoch = epoch_row.collection, epoch_row.epoch
        batch_id = rng(16)
        # The reader share is reused by this unlocked vault for every batch of the epoch:
        # whoever can open one can open them all (they hold the epoch secret), and record
        # keys stay unique through the binding's fresh batch id. Sealing it afresh would
        # cost an X25519 key pair and a box per batch (docs/spec/records.md).
        shared = (collection, epoch, epoch_row.public_key)
        reader = keys.writer_shares.get(shared)
        if reader is None:
            reader_share = rng(_crypto.KEY_SIZE)
            batch_host_share = rng(_crypto.KEY_SIZE)
            sealed_reader = _crypto.seal(reader_share, epoch_row.public_key, rng)
            keys.writer_shares[shared] = (reader_share, sealed_reader)
        else:
            reader_share, sealed_reader = reader
            batch_host_share = rng(_crypto.KEY_SIZE)
        # An owner read of these records needs no unseal.
        keys.reader_shares.remember(batch_id, reader_share)
        wrapped_host = ctx.host_wrap(
            batch_host_share, _envelope.host_wrap_context(self.vault_id, batch_id)
        )
        rows: list[RecordRow] = []
        entries: list[tuple[str, int, bool, bytes]] = []
        for given_id, data, plaintext in chunk:
            if given_id is None:
                record_id = new_id(rng)
                version = 1
            else:
                record_id = given_id
                version = versions.get(record_id, 0) + 1
                versions[record_id] = version
            deleted = plaintext is None
            record_binding = _envelope.binding(
                self.vault_id, collection, record_id, version, epoch, batch_id, deleted
            )
            if plaintext is None or data is None:
                nonce, ciphertext = b"", b""
            elif epoch_row.seal_fields:
                nonce = b""
                ciphertext = _envelope.seal_fields(
                    data, reader_share, batch_host_share, record_binding, rng
                )
                if len(ciphertext) > MAX_STORED_SIZE:
                    raise InvalidRecordData(
                        "record data is larger than 24 MiB once its fields are sealed one by "
                        "one (each field adds about 45 bytes)"
                    )
            else:
                key = _envelope.record_key(
                    reader_share,
                    _envelope.host_share(batch_host_share, record_binding),
                    record_binding,
                )
                nonce = rng(_crypto.NONCE_SIZE)
                ciphertext = _envelope.seal_record(key, nonce, plaintext, record_binding)
            entries.append(
                (
                    record_id,
                    version,
                    deleted,
                    _envelope.entry_hash(record_binding, nonce, ciphertext),
                )
            )
            rows.append(
                RecordRow(
                    self.vault_id,
                    record_id,
                    version,
                    collection,
                    now,
                    epoch,
                    batch_id,
                    deleted,
                    nonce,
                    ciphertext,
                )
            )
        manifest = _envelope.build_manifest(
            vault_id=self.vault_id,
            batch_id=batch_id,
            collection=collection,
            epoch=epoch,
            writer=writer.public,
            created_at=now,
            sealed_reader=sealed_reader,
            entries=entries,
        )
        signature = writer.sign(_envelope.BATCH_SIGNATURE_LABEL, manifest)
        ctx.backend.insert_batch(
            BatchRow(
                self.vault_id,
                batch_id,
                collection,
                epoch,
                writer.public,
                now,
                manifest,
                signature,
                sealed_reader,
                wrapped_host,
            )
        )
        ctx.backend.insert_records(rows)
        created = ms_to_datetime(now)
        return [
            RecordInfo(
                row.record_id,
                collection,
                row.version,
                created,
                epoch,
                row.deleted,
                len(row.ciphertext or b""),
            )
            for row in rows
        ]

    # -- reading

    def get(self, record_id: str) -> Record:
        """The current version of a record, verified and decrypted.

        Raises ``RecordNotFound`` (``RecordDeleted`` for a tombstone), ``VaultLocked``, or
        ``IntegrityError`` if any stored byte of it, or of its batch or epoch, was changed.
        """
        check_record_id(record_id)
        self._keys()
        with self._ctx.backend.transaction():
            # Another process may have destroyed the vault since this object unlocked it.
            self._refresh()
            row = self._ctx.backend.latest_record(self.vault_id, record_id)
            if row is None:
                raise RecordNotFound("no such record")
            _check_identity(row, self.vault_id, record_id)
            sources = self._sources([row])
            self._log_owner_read([row])
        record = self._open(row, sources, erasable=False)
        if record.deleted:
            raise RecordDeleted("the record was deleted")
        return record

    def history(self, record_id: str) -> list[Record]:
        """Every version of a record, oldest first, each verified (erased content is None)."""
        check_record_id(record_id)
        self._keys()
        with self._ctx.backend.transaction():
            self._refresh()
            rows = self._ctx.backend.record_history(self.vault_id, record_id)
            if not rows:
                raise RecordNotFound("no such record")
            for row in rows:
                _check_identity(row, self.vault_id, record_id)
            sources = self._sources(rows)
            self._log_owner_read(rows)
        # Content may be erased only below a tombstone (a deleted record's old versions).
        last_tombstone = max((row.version for row in rows if row.deleted), default=0)
        return [self._open(row, sources, erasable=row.version < last_tombstone) for row in rows]

    def _log_owner_read(self, rows: builtins.list[RecordRow]) -> None:
        """Log the owner's read (inside the caller's transaction, which also fetched
        everything the read needs: once it commits, opening the records reads nothing
        more from the store, so the read cannot fail after it was logged)."""
        self._log(
            "owner-read",
            {
                "action": "read",
                "collections": sorted({row.collection for row in rows}),
                "records": [[row.record_id, row.version] for row in rows],
            },
        )

    def _sources(self, rows: builtins.list[RecordRow]) -> _Sources:
        """The batch and verified epoch rows the records need, fetched from the store."""
        batches: dict[bytes, BatchRow] = {}
        epochs: dict[tuple[str, int], EpochRow | IntegrityError] = {}
        for row in rows:
            batch = batches.get(row.batch_id)
            if batch is None:
                batch = self._ctx.backend.get_batch(self.vault_id, row.batch_id)
                if batch is None:
                    raise IntegrityError("batch-missing", "the record's batch is missing")
                batches[row.batch_id] = batch
            for key in ((row.collection, row.epoch), (batch.collection, batch.epoch)):
                if key not in epochs:
                    try:
                        epochs[key] = self._epoch_row(*key)
                    except IntegrityError as error:
                        epochs[key] = error
        return _Sources(batches, epochs)

    def _authorized_writers(self) -> frozenset[bytes]:
        return frozenset({self._row.identity_public})

    def _verify_batch(self, batch: BatchRow) -> _envelope.Manifest:
        """Verify a batch's signed manifest against its row (no caching)."""
        return _envelope.verify_batch(
            batch, vault_id=self.vault_id, authorized_writers=self._authorized_writers()
        )

    def _manifest(self, batch: BatchRow) -> _envelope.Manifest:
        cached = self._manifests.get(batch.batch_id)
        if cached is not None and cached[0] == (
            batch.manifest,
            batch.signature,
            batch.sealed_reader,
        ):
            manifest: _envelope.Manifest = cached[1]
            if (batch.collection, batch.epoch, batch.writer, batch.created_at) == (
                manifest.collection,
                manifest.epoch,
                manifest.writer,
                manifest.created_at,
            ):
                return manifest
        manifest = self._verify_batch(batch)
        self._manifests.remember(
            batch.batch_id, ((batch.manifest, batch.signature, batch.sealed_reader), manifest)
        )
        return manifest

    def _open(self, row: RecordRow, sources: _Sources, *, erasable: bool) -> Record:
        """Verify one stored record version against its batch and decrypt it (no storage
        access: ``sources`` holds the rows it needs)."""
        keys = self._keys()
        batch = sources.batches[row.batch_id]
        manifest = self._manifest(batch)
        try:
            record_binding = _envelope.binding(
                self.vault_id,
                row.collection,
                row.record_id,
                row.version,
                row.epoch,
                row.batch_id,
                row.deleted,
            )
        except FormatError:
            # A stored column no binding can hold (a negative version, say): the host
            # changed the row, which is an integrity failure, not malformed input.
            raise IntegrityError(
                "record-binding", "a stored record's columns are out of range"
            ) from None
        _envelope.check_entry(
            manifest,
            record_id=row.record_id,
            version=row.version,
            deleted=row.deleted,
            collection=row.collection,
            epoch=row.epoch,
            created_at=row.created_at,
            record_binding=record_binding,
            nonce=row.nonce,
            ciphertext=row.ciphertext,
            erasable=erasable,
        )
        erased = row.nonce is None and not row.deleted
        data: dict[str, Any] | None = None
        if (
            not row.deleted
            and row.nonce is not None
            and row.ciphertext is not None
            and sources.epoch(row.collection, row.epoch).seal_fields
        ):
            reader_share = self._reader_share(keys, batch, sources)
            host = self._host_share(batch)
            data = _envelope.open_fields(
                row.ciphertext,
                reader_share,
                {
                    name: _envelope.field_host_share(host, record_binding, name)
                    for name in _envelope.field_names(row.ciphertext)
                },
                record_binding,
            )
        elif not row.deleted and row.nonce is not None and row.ciphertext is not None:
            reader_share = self._reader_share(keys, batch, sources)
            host_share = _envelope.host_share(self._host_share(batch), record_binding)
            key = _envelope.record_key(reader_share, host_share, record_binding)
            content = _envelope.open_record(key, row.nonce, row.ciphertext, record_binding)
            if not isinstance(content, dict):
                raise IntegrityError("content", "record content is not an object")
            data = content
        return Record(
            record_id=row.record_id,
            collection=row.collection,
            version=row.version,
            created_at=ms_to_datetime(row.created_at),
            epoch=row.epoch,
            writer=_crypto.did_key(batch.writer),
            deleted=row.deleted,
            erased=erased,
            data=data,
        )

    def _reader_share(self, keys: _owner.OwnerKeys, batch: BatchRow, sources: _Sources) -> bytes:
        cached: bytes | None = keys.reader_shares.get(batch.batch_id)
        if cached is not None:
            return cached
        if batch.sealed_reader is None:
            raise self._keys_missing()
        secret = self._epoch_secret(
            batch.collection, batch.epoch, sources.epoch(batch.collection, batch.epoch)
        )
        try:
            share = _crypto.unseal(batch.sealed_reader, secret)
        except _crypto.AuthenticationFailed:
            raise IntegrityError(
                "reader-share", "the batch reader share failed authentication"
            ) from None
        keys.reader_shares.remember(batch.batch_id, share)
        return share

    def _host_share(self, batch: BatchRow) -> bytes:
        cached: bytes | None = self._host_shares.get(batch.batch_id)
        if cached is not None:
            return cached
        if batch.wrapped_host is None:
            raise self._keys_missing()
        share = self._ctx.host_unwrap(
            batch.wrapped_host, _envelope.host_wrap_context(self.vault_id, batch.batch_id)
        )
        self._host_shares.remember(batch.batch_id, share)
        return share

    def list(
        self,
        collection: str | None = None,
        *,
        since: datetime | None = None,
        until: datetime | None = None,
        limit: int = 100,
        cursor: str | None = None,
    ) -> RecordPage:
        """Current versions of live records (metadata only), oldest first, one page.

        Works while locked: it reads only what the host can see. ``since`` is inclusive,
        ``until`` exclusive, both on the current version's ``created_at``.
        """
        if collection is not None:
            check_collection(collection)
        if not _is_int(limit) or not 1 <= limit <= MAX_LIST_LIMIT:
            raise FormatError(f"limit must be between 1 and {MAX_LIST_LIMIT}")
        after = parse_cursor(cursor) if cursor is not None else None
        self._refresh()
        metas = self._ctx.backend.list_records(
            self.vault_id,
            collection=collection,
            since=datetime_to_ms(since) if since is not None else None,
            until=datetime_to_ms(until) if until is not None else None,
            after=after,
            limit=limit + 1,
        )
        # Tombstones stay in the index so the cursor order is stable; they are not shown.
        page = metas[:limit]
        next_cursor = f"{page[-1].created_at}.{page[-1].seq}" if len(metas) > limit else None
        return RecordPage(
            [
                RecordInfo(
                    m.record_id,
                    m.collection,
                    m.version,
                    # Clamped: one row with a time no datetime can hold (the host wrote
                    # it) must not make the whole listing fail; reading it is refused.
                    ms_to_datetime_clamped(m.created_at),
                    m.epoch,
                    m.deleted,
                    m.size,
                )
                for m in page
                if not m.deleted
            ],
            next_cursor,
        )

    def iter_records(self, collection: str | None = None) -> Iterable[RecordInfo]:
        """Every live record's current version (metadata), page by page."""
        cursor: str | None = None
        while True:
            page = self.list(collection, limit=MAX_LIST_LIMIT, cursor=cursor)
            yield from page.records
            if page.cursor is None:
                return
            cursor = page.cursor

    # -- grants and revocation

    def grant(
        self,
        audience: str,
        *,
        collections: Sequence[str],
        purpose: str | Sequence[str],
        expires: datetime | timedelta,
        not_before: datetime | None = None,
        abilities: Sequence[str] = ("read", "list"),
        fields: Sequence[str] | None = None,
        window: tuple[datetime | None, datetime | None] | None = None,
        uses: int | None = None,
        delegable: int = 0,
        basis: str | None = None,
        defer: timedelta | None = None,
    ) -> Token:
        """Issue a root token to ``audience`` (a principal's ``did:key``).

        ``collections`` are exact names, ``prefix/*`` or ``*``. The epoch secrets of every
        matching collection are sealed to the audience inside the token; epochs created
        later (rotation, new collections) are sealed to it by the store while the grant is
        live. ``delegable`` is the delegation depth (0: the holder may not delegate).
        ``defer`` lets the holder postpone showing an access to the person by up to that
        long (deferred disclosure, e.g. for an investigation with a legal basis).
        Raises ``LifetimeExceeded`` if longer than the vault's policy, ``FormatError`` for
        malformed caveats, among them a start, expiry or ``defer`` past
        9999-12-31T23:59:59.999Z (``MAX_TIME_MS``: no later time can be shown as a date).
        """
        keys = self._keys()
        collections = check_text_items(collections, "collections")
        purpose = purpose if isinstance(purpose, str) else check_text_items(purpose, "purpose")
        abilities = check_text_items(abilities, "abilities")
        fields = None if fields is None else check_text_items(fields, "fields")
        if not isinstance(expires, datetime | timedelta):
            raise FormatError("expires is a datetime or a timedelta")
        if defer is not None and not isinstance(defer, timedelta):
            raise FormatError("defer is a timedelta")
        if window is not None and (not isinstance(window, tuple) or len(window) != 2):
            raise FormatError("window is a (start, end) pair of datetimes or None")
        if not _is_int(delegable) or (uses is not None and not _is_int(uses)):
            raise FormatError("delegable and uses are integers")
        audience_key = _crypto.parse_did_key(audience)
        recipient = _crypto.ed25519_to_x25519(audience_key)
        now = self._ctx.now_ms()
        start = check_time_ms(
            datetime_to_ms(not_before) if not_before is not None else now, "not_before"
        )
        end = check_time_ms(
            start + timedelta_to_ms(expires)
            if isinstance(expires, timedelta)
            else datetime_to_ms(expires),
            "expires",
        )
        defer_ms = None if defer is None else check_time_ms(timedelta_to_ms(defer), "defer")
        purposes = [purpose] if isinstance(purpose, str) else list(purpose)
        ability_set = set(abilities) | ({"delegate"} if delegable > 0 else set())
        caveats = capability.Caveats(
            abilities=frozenset(ability_set),
            collections=tuple(sorted(set(collections))),
            fields=frozenset(fields) if fields is not None else None,
            window=(
                (None, None) if window is None else (optional_ms(window[0]), optional_ms(window[1]))
            ),
            purposes=frozenset(purposes),
            basis=basis,
            not_before=start,
            expires=end,
            uses=uses,
            depth=delegable,
            defer=defer_ms,
        )
        with self._ctx.backend.transaction():
            row = self._refresh()
            if end - start > _serve.max_lifetime_ms(row):
                raise LifetimeExceeded("the grant is longer than the vault's policy allows")
            if fields is not None:
                self._check_field_sealed(caveats.collections)
            carried, older = capability.carried_epochs(
                (epoch.collection, epoch.epoch)
                for epoch in self._ctx.backend.iter_epochs(self.vault_id)
                if capability.collection_allowed(caveats.collections, epoch.collection)
            )
            sealed = [
                capability.SealedKey(
                    collection,
                    epoch,
                    _crypto.seal(self._epoch_secret(collection, epoch), recipient, self._ctx.rng),
                )
                for collection, epoch in carried
            ]
            link = capability.make_link(
                signer=keys.identity,
                vault_id=self.vault_id,
                audience=audience_key,
                parent=None,
                caveats=caveats,
                keys=sealed,
                salt=self._ctx.rng(16),
            )
            token = capability.Token((link,))
            self._ctx.backend.insert_link(
                LinkRow(
                    link_id=link.link_id,
                    vault_id=self.vault_id,
                    parent_id=None,
                    audience=audience_key,
                    not_before=start,
                    expires=end,
                    uses=uses,
                    created_at=now,
                    sealed_token=_crypto.seal(
                        token.to_bytes(), _crypto.x25519_public(keys.x25519_secret), self._ctx.rng
                    ),
                )
            )
            # Epochs beyond what a link carries reach the holder with its responses.
            for collection, epoch in older:
                _serve.seal_to_link(
                    self._ctx, link, collection, epoch, self._epoch_secret(collection, epoch)
                )
            self._log(
                "grant",
                {
                    "audience": audience,
                    "purposes": sorted(caveats.purposes),
                    "basis": basis,
                    "collections": list(caveats.collections),
                    "fields": None if caveats.fields is None else sorted(caveats.fields),
                    "abilities": sorted(caveats.abilities),
                    "not_before": start,
                    "expires": end,
                    "uses": uses,
                    "delegable": delegable,
                },
                link_id=link.link_id,
            )
        return token

    def _check_field_sealed(self, patterns: Sequence[str]) -> None:
        """A field restriction is enforced by per-field keys: refuse it over a collection
        whose records are sealed whole (the host would then serve it nothing)."""
        for name in self.collections():
            if not capability.collection_allowed(patterns, name):
                continue
            current = self._ctx.backend.current_epoch(self.vault_id, name)
            if current is not None and not current.seal_fields:
                raise FormatError(
                    f"collection {name!r} seals records whole; a field-restricted grant needs "
                    "collections created with seal_fields=True"
                )

    def revoke(self, link: Token | str | bytes, *, reason: str = "") -> bytes:
        """Revoke a link (a token, its hex link id, or the raw id) and every descendant.

        Takes effect on the next request. The revocation is signed by the vault identity
        key, so an auditor can tell when it happened, and binds this vault only. Returns
        the link id. Revoking twice keeps the first revocation (a stored row whose statement
        does not verify is replaced, not kept). Raises ``FormatError`` for
        a token issued for another vault.

        Raises ``IntegrityError`` (``revocation-unrecorded``) *after* making the revocation
        (the host refuses the link) and logging it, when no signed head can record it: the
        store's revocations or checkpoints were changed (``docs/spec/log.md``). Until it
        is recorded, a host could undo it; revoking the link again records it once the
        store holds the revocations the latest head records, and ``repair`` records it
        in any state the log still shows it.
        """
        keys = self._keys()
        link_id = _link_id(link, self.vault_id)
        if not isinstance(reason, str) or len(reason) > 1024:
            raise FormatError("a revocation reason is text of at most 1024 characters")
        with self._ctx.backend.transaction():
            self._refresh()
            if self._revoked_already(link_id):
                return link_id
            self._ctx.backend.insert_revocation(
                self._revocation_row(keys, link_id, self._ctx.now_ms(), reason)
            )
            recorded = self._log(
                "revoke", {"link": link_id.hex(), "reason": reason}, link_id=link_id
            )
        if not recorded:
            raise IntegrityError(
                "revocation-unrecorded",
                "the link is revoked and the revocation logged, but no signed head records "
                "it: the store's revocations or checkpoints were changed",
            )
        return link_id

    def _revocation_row(
        self, keys: _owner.OwnerKeys, link_id: bytes, revoked_at: int, reason: str
    ) -> RevocationRow:
        """The owner's signed statement that ``link_id`` is revoked, as a row to store."""
        statement = _codec.encode(
            {
                "v": 1,
                "vault": self.vault_id,
                "link": link_id,
                "revoked_at": revoked_at,
                "reason": reason,
            }
        )
        return RevocationRow(
            self.vault_id,
            link_id,
            revoked_at,
            statement,
            keys.identity.sign(capability.REVOCATION_LABEL, statement),
        )

    def _revoked_already(self, link_id: bytes) -> bool:
        """Whether the store holds this vault's own signed revocation of ``link_id``, and
        the stored revocations are the ones the latest head records (so it is recorded).
        A row whose statement does not verify is the host's: taking it for a revocation
        would let the host turn this one into a no-op (no statement, no entry, nothing
        recorded) and undo it later by deleting its row; it is replaced. An unrecorded one
        is made again, to be recorded."""
        if not self._ctx.backend.revoked_among(self.vault_id, [link_id]):
            return False
        if not self._revocations_trusted():
            return False
        for row in self._ctx.backend.iter_revocations(self.vault_id):
            if row.link_id == link_id:
                try:
                    _export.verify_revocation_row(row, self._row)
                except (IntegrityError, FormatError):
                    return False
                return True
        return False

    def revoke_all(self, *, audience: str, reason: str = "") -> builtins.list[bytes]:
        """Revoke every known link issued to ``audience``: the grants the owner's signed
        ``grant`` entries in the log name (a host that hid a link row cannot keep one out),
        and the grants and delegations the host has seen. Raises ``IntegrityError``
        (``revocation-unrecorded``) after revoking them all if any revocation could not be
        recorded (see ``revoke``); otherwise ``IntegrityError`` (``revocation-incomplete``)
        after revoking them all if the log does not verify against its heads (a fork, a
        gap, a head that does not verify): a grant entry the host relabelled, changed or
        deleted may name ``audience``, and that grant is then not revoked. (Bytes that are
        no entry are leaves the host wrote, as in ``verify_log``; an entry no head covers
        yet is the host's to change unseen.)"""
        target = _crypto.parse_did_key(audience)
        keys = self._keys()
        ids = [
            link.link_id
            for link in self._ctx.backend.iter_links(self.vault_id)
            if link.audience == target
        ]
        found: builtins.list[bytes] = []

        def visit(entry: LogEntry) -> None:
            if entry.kind != "grant" or entry.link_id is None or entry.link_id in ids + found:
                return
            details = entry.open_signed(keys.x25519_secret, keys.identity.public)
            if details is not None and _names_key(details.get("audience"), target):
                found.append(entry.link_id)

        # Read as a walk that checks the log against the heads: a grant entry the host
        # relabelled, garbled or deleted shows as a fork or a gap there.
        unverified = self._read_log(visit)
        if unverified is not None:
            found.clear()
            log = MerkleLog(self._ctx.backend, self.vault_id)
            for _, entry in log.stored_entries(0, log.size()):
                if entry is not None:
                    visit(entry)
        ids += found
        unrecorded: IntegrityError | None = None
        for link_id in ids:
            try:
                self.revoke(link_id, reason=reason)
            except IntegrityError as exc:
                if exc.reason != "revocation-unrecorded":
                    raise
                unrecorded = exc
        if unverified is None:
            if unrecorded is not None:
                raise unrecorded
            return ids
        missed = (
            f"the log does not verify ({unverified.reason}): a grant to the audience in an "
            "entry the host changed or removed may not be revoked (revoke it by its token "
            "or link id)"
        )
        if unrecorded is not None:
            # Its reason comes first (the CLI holds writes back until a repair records the
            # revocation); the message tells of the log too.
            raise IntegrityError(unrecorded.reason, f"{unrecorded}; and {missed}")
        revoked = f"{len(ids)} {'link' if len(ids) == 1 else 'links'}"
        raise IntegrityError("revocation-incomplete", f"revoked {revoked}, but {missed}")

    def grants(self) -> builtins.list[GrantInfo]:
        """Every known link (root grants and delegations seen) with its status.

        Purposes and collections are shown only while unlocked (they are sealed to the
        owner); then each link is also verified from its own signed bytes, and its times
        are the chain's (a link that does not verify is ``invalid``). A time past
        9999-12-31T23:59:59.999Z (a delegation made elsewhere may carry one: the token
        format allows up to 2**63 ms) is shown as that instant; the status is decided on
        the exact value.
        """
        backend = self._ctx.backend
        now = self._ctx.now_ms()
        links = list(backend.iter_links(self.vault_id))
        parents = {link.link_id: link.parent_id for link in links}
        budgets = {link.link_id: link.uses for link in links if link.uses is not None}
        revoked = set(backend.revoked_among(self.vault_id, [link.link_id for link in links]))
        spent = backend.use_counts([link.link_id for link in links if link.uses is not None])
        result = []
        policy = _serve.max_lifetime_ms(self._row)
        for link in links:
            chain: builtins.list[bytes] = []
            cursor: bytes | None = link.link_id
            while cursor is not None and cursor not in chain:
                chain.append(cursor)
                cursor = parents.get(cursor)
            not_before, expires = link.not_before, link.expires
            caveats = None
            verified, over_policy = True, False
            if self._owner is not None:
                # While unlocked, each link is judged by its own signed bytes; a lifetime
                # over a policy tightened since is the owner's doing, its own status.
                token = _serve.open_link(link, self._owner, self.vault_id)
                verified = token is not None
                if token is not None:
                    over_policy = _serve.over_lifetime(token, policy)
                    caveats = token.leaf.caveats
                    not_before = max(each.caveats.not_before for each in token.links)
                    expires = min(each.caveats.expires for each in token.links)
            if not verified:
                status = "invalid"
            elif any(link_id in revoked for link_id in chain):
                status = "revoked"
            elif now >= expires:
                status = "expired"
            elif now < not_before:
                status = "not-yet-valid"
            elif any(spent.get(i, 0) >= budgets[i] for i in chain if i in budgets):
                # The host refuses a link whose own budget or an ancestor's is spent.
                status = "exhausted"
            elif over_policy:
                status = "over-policy"
            else:
                status = "active"
            result.append(
                GrantInfo(
                    link_id=link.link_id.hex(),
                    parent=None if link.parent_id is None else link.parent_id.hex(),
                    audience=_crypto.did_key(link.audience),
                    created_at=ms_to_datetime_clamped(link.created_at),
                    not_before=ms_to_datetime_clamped(not_before),
                    expires=ms_to_datetime_clamped(expires),
                    uses=link.uses,
                    used=None if link.uses is None else spent.get(link.link_id, 0),
                    status=status,
                    purposes=None if caveats is None else sorted(caveats.purposes),
                    collections=None if caveats is None else list(caveats.collections),
                )
            )
        return result

    def revocation_list(self) -> bytes:
        """The signed, timestamped list of every revocation, for auditors (docs/spec/token.md)."""
        keys = self._keys()
        entries = [
            [row.statement, row.signature]
            for row in self._ctx.backend.iter_revocations(self.vault_id)
        ]
        body = _codec.encode(
            {
                "v": 1,
                "vault": self.vault_id,
                "issued_at": self._ctx.now_ms(),
                "revocations": entries,
            }
        )
        return _codec.encode(
            {"body": body, "sig": keys.identity.sign(capability.REVOCATION_LIST_LABEL, body)}
        )

    def set_policy(self, *, max_token_lifetime: timedelta) -> None:
        """Cap the lifetime (expiry minus not-before) of tokens this vault honours."""
        self._keys()
        if not isinstance(max_token_lifetime, timedelta):
            raise FormatError("max_token_lifetime must be a timedelta")
        lifetime = timedelta_to_ms(max_token_lifetime)
        if lifetime <= 0:
            raise FormatError("the maximum token lifetime must be positive")
        policy = _codec.encode({"max_token_lifetime_ms": lifetime})
        with self._ctx.backend.transaction():
            row = self._refresh()
            self._ctx.backend.set_policy(self.vault_id, policy)
        # Only once committed, and without reading the store again (a failed read here
        # would report a failure for a change that was made).
        self._row = dataclasses.replace(row, policy=policy)

    # -- the access log

    def _log(
        self,
        kind: str,
        details: Mapping[str, Any],
        *,
        link_id: bytes | None = None,
        result: str = "ok",
        records: _Records | None = None,
    ) -> bool:
        """Append an owner-side entry (inside the caller's transaction) and, while unlocked,
        sign and store the new tree head, unless the stored log no longer extends the
        latest signed checkpoint: the owner's key never signs a head over entries the host
        rewrote. The entry is appended either way (a revocation or a destroy must not wait
        for the host to mend its log); ``checkpoint``, ``latest_checkpoint``, ``verify_log``
        and the exports refuse such a log with ``InvalidProof`` (``log-fork``). Returns
        whether a signed head records the entry. ``records``, given by ``repair`` once it
        has checked the log, are signed as they are.
        """
        log = MerkleLog(self._ctx.backend, self.vault_id)
        signing, latest = False, None
        if records is None and self._owner is not None:
            try:
                latest = self.latest_checkpoint()
                # Every owner entry signs a head: one logged and no head means the host
                # deleted the heads, and records counted from its store would be signed.
                signing = latest is not None or not self._owner_logged()
            except (InvalidProof, FormatError):
                pass
        now = self._ctx.now_ms()
        index = log.append(
            time=now,
            kind=kind,
            result=result,
            link_id=link_id,
            details={"actor": self.did, "owner": True, **details},
            owner_x25519_public=_serve.owner_public_x25519(self._row),
            rng=self._ctx.rng,
            signer=None if self._owner is None else self._owner.identity,
        )
        if _faults.SEAM.armed:
            _faults.point(f"{kind}: log entry written, head not signed")
        if signing:
            if kind == "revoke" and link_id is not None:
                records = self._revocation_head(latest, link_id)
            elif kind == "rotate":
                records = self._rotation_head(latest, details["epochs"])
            else:
                records = self._head_records(latest)
        if records is not None and self._owner is not None:
            size = index + 1
            try:
                root = self._extending_root(log, size, latest)
            except InvalidProof:
                return False  # a fork hidden in the stored subtree hashes: sign nothing
            self._store_head(
                Checkpoint.sign(
                    self._owner.identity, self.vault_id, size, root, now, records=records
                )
            )
            return True
        return False

    def _extending_root(self, log: MerkleLog, size: int, latest: Checkpoint | None) -> bytes:
        """The log's root at ``size``, to be signed, once proved to extend ``latest`` and
        the largest head this object saw. The root is computed from the stored subtree
        hashes, a cache the host can rewrite: checking only the root at the latest head's
        size would let it change a larger subtree over both the signed entries and its own
        unsigned tail, and have the owner sign that. Raises ``InvalidProof`` (``log-fork``)."""
        root = log.root(size)
        for head in (latest, self._seen_head):
            if head is None or head.size == 0:
                continue
            try:
                merkle.verify_consistency(
                    head.size, size, head.root, root, log.consistency(head.size, size)
                )
            except InvalidProof:
                raise InvalidProof(
                    "the stored log does not extend the latest checkpoint", "log-fork"
                ) from None
        return root

    # -- what the heads record (docs/spec/log.md, "The revocation and rotation records")

    def _stored_revocations(self) -> builtins.list[bytes]:
        """The links revoked by the stored rows whose statements verify as this vault's
        owner's. A row the host planted is no revocation of the owner's: counted, it would
        set the stored revocations apart from the recorded ones and stop all sharing over
        one row (its link is still left out of sharing, as every stored row's is)."""
        return [
            row.link_id
            for row in self._ctx.backend.iter_revocations(self.vault_id)
            if self._genuine_revocation(row)
        ]

    def _stored_newest_epochs(self, excluding: Mapping[str, int] | None = None) -> dict[str, int]:
        """The newest epoch of each collection, among the stored epoch rows whose
        certificates verify (a row the host planted is no epoch of the owner's), leaving
        out the epochs ``excluding`` names (a rotation's new ones)."""
        newest: dict[str, int] = {}
        for row in self._ctx.backend.iter_epochs(self.vault_id):
            if row.epoch <= newest.get(row.collection, 0):
                continue
            if excluding is not None and excluding.get(row.collection) == row.epoch:
                continue
            if self._epoch_verifies(row):
                newest[row.collection] = row.epoch
        return newest

    def _stored_records(self) -> _Records:
        return (
            revoked_digest(self._stored_revocations()),
            rotated_digest(self._stored_newest_epochs()),
        )

    def _head_records(self, latest: Checkpoint | None) -> _Records:
        """What a new head records: the latest head's records, carried forward (a stored
        revocation or epoch the host dropped since is caught where the records are
        checked, never signed away); counted from the store after a head signed before
        heads recorded them, or none."""
        if latest is None or latest.records is None:
            return self._stored_records()
        return latest.records

    def _revocation_head(self, latest: Checkpoint | None, link_id: bytes) -> _Records | None:
        """The records of a head signed for the revocation of ``link_id``: the stored set,
        if it is the recorded one plus this link (or the recorded one, when a revocation
        the host dropped is made again); otherwise ``None``, and no head is signed."""
        if latest is None or latest.records is None:
            return self._stored_records()
        stored = set(self._stored_revocations())
        current = revoked_digest(stored)
        if latest.revoked in (current, revoked_digest(stored - {link_id})):
            return current, latest.records[1]
        return None

    def _rotation_head(
        self, latest: Checkpoint | None, epochs: Mapping[str, int]
    ) -> _Records | None:
        """The records of a head signed for a rotation to ``epochs``: the stored newest
        epochs, if without the new ones they are the recorded ones (the new epochs are
        numbered past every one in use, so they may skip numbers), or, when an epoch the
        host dropped is passed, if the recorded ones are these collections one epoch back;
        otherwise ``None``, and no head is signed. Never when the rotation made a recorded
        number again: the host, which hid it, could put the old epoch back unseen."""
        if latest is None or latest.records is None:
            return self._stored_records()
        newest = self._stored_newest_epochs()
        before = dict(newest)
        for collection, epoch in epochs.items():
            before[collection] = epoch - 1
        previous = rotated_digest(self._stored_newest_epochs(excluding=epochs))
        if latest.records[1] in (rotated_digest(before), previous):
            return latest.records[0], rotated_digest(newest)
        return None

    def _recording_head(self) -> Checkpoint | None:
        """The latest checkpoint, to check the stored revocations and epochs against, or
        ``None`` if there is none to check with (no head yet, or one signed before heads
        recorded them: the next head records the store as it is). Raises ``InvalidProof``
        (a forked log, a bad checkpoint) or ``IntegrityError`` (``checkpoint-missing``:
        every owner entry signs a head, so one logged without any head means heads were
        deleted)."""
        head = self.latest_checkpoint()
        if head is None:
            if self._owner_logged():
                raise _checkpoint_missing()
            return None
        return head if head.records is not None else None

    def _owner_logged(self) -> bool:
        """Whether the log holds an entry of a kind only the owner appends (a grant, a
        revocation, an owner read...): the owner signed a head over it, so a store without
        any head lost it. Decided from the log, which heads pin, not from the links table,
        which a host could empty to make the vault look as if it had never been used. An
        entry that does not parse counts as one: it may be an owner entry the host garbled,
        and a log with no head at all is then ``checkpoint-missing`` until ``repair``
        (which passes over the entry and signs a head over it as it is). That costs the
        owner one repair, and gives the host nothing it lacks: an unsigned parseable entry
        of an owner kind, which it can append too, counts the same."""
        size = MerkleLog(self._ctx.backend, self.vault_id).size()
        for _, raw in self._ctx.backend.iter_log(self.vault_id, 0, size):
            try:
                if LogEntry.parse(raw).kind in OWNER_KINDS:
                    return True
            except FormatError:
                return True
        return False

    def _revocations_trusted(self) -> bool:
        """Whether ``_check_revocations`` passes. Where sharing is automatic (a new
        epoch, a rotation) an untrusted record shares nothing, so that a rotation after a
        revocation is never blocked: the links get their keys from ``share_keys``, which
        raises, once the store is mended."""
        try:
            self._check_revocations()
        except (IntegrityError, FormatError):
            return False
        return True

    def _check_revocations(self) -> None:
        """Before the stored revocations are trusted (key epochs shared to every link they
        do not name, an export or audit package signed over them): they must be the ones
        the latest checkpoint records. A host that drops a revocation (to have the revoked
        link sent the next epochs) is refused here; one that also drops the checkpoints
        signed since is caught only by a pinned head whose size the latest stored head
        must reach (``rotate(pinned=)``, ``import_vault(pinned=)``, the CLI's pin check;
        ``verify_log`` checks the entries alone).

        Raises ``InvalidProof`` or ``IntegrityError`` (see ``_recording_head``;
        ``revocations-changed``).
        """
        head = self._recording_head()
        if head is not None and revoked_digest(self._stored_revocations()) != head.revoked:
            raise IntegrityError(
                "revocations-changed",
                "the stored revocations differ from those the latest checkpoint records "
                "(repair rebuilds them from the log)",
            )

    def _check_records(self) -> None:
        """Before an export or audit package is signed over the store: its revocations and
        newest key epochs must be those the latest checkpoint records, and every stored
        revocation must verify (as the export and the importer check it: a damaged or
        planted row fails them). Raises as ``_check_revocations`` does, or
        ``IntegrityError`` (``revocation``, ``epochs-changed``)."""
        for row in self._ctx.backend.iter_revocations(self.vault_id):
            _export.verify_revocation_row(row, self._row)
        self._check_revocations()
        head = self._recording_head()
        if head is not None and rotated_digest(self._stored_newest_epochs()) != head.rotated:
            raise _epochs_changed()

    def _check_newest_epoch(self, collection: str, row: EpochRow | None) -> None:
        """Before a write uses ``row`` (``None``: the collection has no epoch yet), it must
        be the collection's newest epoch as the owner's heads record it: a host that drops
        the epoch a rotation made would have the owner write under the one a revoked
        grantee holds. The newest epochs last checked are kept with the head they were
        checked against; a write under another head (a rotation here or elsewhere signs
        one), at another epoch, or to a collection without one checks again.

        Raises ``InvalidProof`` or ``IntegrityError`` (see ``_recording_head``;
        ``epochs-changed``).
        """
        epoch = 0 if row is None else row.epoch
        text = self._ctx.backend.latest_checkpoint(self.vault_id)
        known = self._newest_epochs
        if (
            known is not None
            and known[0] == text
            and row is not None
            and known[1].get(collection) == epoch
        ):
            return
        newest = self._stored_newest_epochs()
        head = self._recording_head()
        recorded = None if head is None or head.records is None else head.records[1]
        if newest.get(collection, 0) != epoch or (
            recorded is not None and rotated_digest(newest) != recorded
        ):
            raise _epochs_changed()
        self._newest_epochs = (text, newest)

    def repair(self, *, pinned: Checkpoint | str | None = None) -> RepairReport:
        """Rebuild the revocations and newest key epochs the signed heads record from the
        access log, after a host changed the store's rows (``revocations-changed``,
        ``epochs-changed``, ``checkpoint-missing``, or a revocation or rotation that no
        head could record).

        Every revocation and rotation appended an entry (a ``revoke`` header names the
        link; a ``rotate`` entry's details name the new epochs), so the log holds what the
        rows should. The log is read entry by entry and must extend the latest checkpoint
        and ``pinned`` (a head seen earlier, e.g. the CLI's pin; without any head the
        store's log is taken as it is). Then a revocation the log records whose row is
        missing or does not verify is signed again (dated now, its reason
        ``RESTORED_REASON``); a revocation row that does not verify, of a link no entry
        revokes, is deleted (the host planted it); an epoch row whose certificate does not
        verify is deleted if its number is outside 1 to ``MAX_EPOCH`` (pds makes none
        there), else left in place (it may be the owner's own, damaged, and the only copy
        of its secret); a collection whose newest epoch as logged is missing, or whose
        newest row does not verify, or whose newest number two entries made (a rotation
        made it again after the host hid it: the heads record numbers, not keys), gets a
        new epoch numbered past every one in use (links hold a lost key under its number),
        field-sealed as its newest verified epoch is. A
        ``repair`` entry lists what changed, a head signed over it records the result (and
        anything the rows hold beyond the log, so a later repair keeps it), and the live
        links are given the epochs they lack. With nothing to mend, nothing is written.

        Entries a host appended (a forged ``revoke`` or ``rotate``) can only make repair
        revoke more links and make more epochs, never fewer: a link the owner never
        revoked may be revoked (listed in ``RepairReport.restored``; grant it again). A
        revocation or rotation whose entry no head covers and the host removed (or garbled
        so that it does not parse: such an entry is hashed, listed in
        ``RepairReport.ignored`` and otherwise passed over) is not found: make it again.

        Raises ``VaultLocked``; ``IntegrityError`` (``epoch-number``) if no epoch number
        is left; ``InvalidProof`` if the log does not extend the latest checkpoint,
        ``pinned`` or the largest head this object saw (a fork or rollback, which
        repairing would sign), or the latest checkpoint does not verify (the host must
        restore it).
        """
        keys = self._keys()
        anchor = None if pinned is None else self._pinned_head(pinned)
        backend = self._ctx.backend
        with backend.transaction():
            self._refresh()
            # A head this object saw anchors the log as a pinned one does (the store's may
            # be older: deleted or rolled back).
            latest = self._stored_latest_checkpoint()
            anchors = [h for h in (anchor, latest, self._seen_head) if h is not None]
            logged = _LoggedRecords(keys.x25519_secret, keys.identity.public)
            self._walk_log(anchors, logged.visit, logged.unreadable)
            now = self._ctx.now_ms()

            rows = builtins.list(backend.iter_revocations(self.vault_id))
            genuine = {row.link_id for row in rows if self._genuine_revocation(row)}
            removed = sorted(
                row.link_id
                for row in rows
                if row.link_id not in genuine and row.link_id not in logged.revoked
            )
            for link_id in removed:
                backend.delete_revocation(self.vault_id, link_id)
            restored = sorted(logged.revoked - genuine)
            for link_id in restored:
                # Dated now, with a fixed reason: the owner's key never signs a time or text
                # that an entry, perhaps the host's, chose (the entry keeps both, and an
                # audit takes the earlier of the entry's and the statement's times).
                backend.insert_revocation(self._revocation_row(keys, link_id, now, RESTORED_REASON))
            unlogged = sorted(genuine - logged.revoked)

            # Epoch rows whose certificates do not verify: out of the range pds numbers
            # epochs in, a host's (deleted); in it, perhaps the owner's own, damaged, and
            # the only copy of its secret (kept, and passed by a new epoch if newest).
            removed_epochs: builtins.list[tuple[str, int]] = []
            unverified: builtins.list[tuple[str, int]] = []
            newest: dict[str, EpochRow] = {}
            top: dict[str, int] = {}
            for row in builtins.list(backend.iter_epochs(self.vault_id)):
                marker = (row.collection, row.epoch)
                if self._epoch_verifies(row):
                    best = newest.get(row.collection)
                    if best is None or row.epoch > best.epoch:
                        newest[row.collection] = row
                elif 1 <= row.epoch <= MAX_EPOCH:
                    unverified.append(marker)
                else:
                    backend.delete_epoch(self.vault_id, row.collection, row.epoch)
                    removed_epochs.append(marker)
                    continue
                top[row.collection] = max(row.epoch, top.get(row.collection, 0))
            # A collection of the owner's whose newest epoch as logged is lost, or whose
            # newest row does not verify (writes would use it), gets a new epoch, numbered
            # past every one in use (see _epoch_numbers_used).
            used = self._epoch_numbers_used()
            remade: dict[str, int] = {}
            for collection in sorted(logged.newest.keys() | newest.keys()):
                current = newest.get(collection)
                have = 0 if current is None else current.epoch
                wanted = max(logged.newest.get(collection, 0), top.get(collection, 0))
                if have < wanted or logged.made_twice(collection):
                    epoch = self._next_epoch(collection, verified=have, wanted=wanted, used=used)
                    sealed = (
                        logged.sealed.get(collection, False)
                        if current is None
                        else current.seal_fields
                    )
                    newest[collection] = self._new_epoch(collection, epoch, now, seal_fields=sealed)
                    remade[collection] = epoch

            epochs = {collection: row.epoch for collection, row in newest.items()}
            records = (revoked_digest(genuine | logged.revoked), rotated_digest(epochs))
            # A vault whose log holds no owner entry needs no head yet: its first head
            # records the store. One whose heads are older than this object saw (deleted)
            # needs a new one.
            seen = self._seen_head
            behind = seen is not None and (latest is None or latest.size < seen.size)
            unrecorded = behind or (
                self._owner_logged() if latest is None else latest.records != records
            )
            if not (restored or removed or remade or removed_epochs or unrecorded):
                self._rotation_unrecorded = False
                return RepairReport([], [], {}, [], unverified, logged.ignored, None)
            self._log(
                "repair",
                {
                    "restored": [link_id.hex() for link_id in restored],
                    "removed": [link_id.hex() for link_id in removed],
                    "unlogged": [link_id.hex() for link_id in unlogged],
                    "epochs": remade,
                    "removed_epochs": [[c, e] for c, e in removed_epochs],
                    "unverified_epochs": [[c, e] for c, e in unverified],
                    "newest": {c: e for c, e in sorted(epochs.items()) if e >= 2},
                    "ignored": logged.ignored,
                },
                records=records,
            )
            head = self.latest_checkpoint()
            self._share_keys(now)
        self._rotation_unrecorded = False
        return RepairReport(
            [link_id.hex() for link_id in restored],
            [link_id.hex() for link_id in removed],
            remade,
            removed_epochs,
            unverified,
            logged.ignored,
            head,
        )

    def _genuine_revocation(self, row: RevocationRow) -> bool:
        """Whether a stored revocation's statement verifies as this vault's owner's."""
        if row in self._verified_revocations:
            return True
        try:
            _export.verify_revocation_row(row, self._row)
        except (IntegrityError, FormatError):
            return False
        self._verified_revocations.add(row)
        return True

    def _store_head(self, head: Checkpoint) -> None:
        """Store a head this object signed (and remember it as verified)."""
        text = head.to_text()
        self._ctx.backend.put_checkpoint(self.vault_id, head.size, head.time, text)
        self._verified_head = (text, self._row.identity_public, head)
        self._saw_head(head)

    def log(
        self,
        *,
        since: datetime | None = None,
        actor: str | None = None,
        limit: int = 50,
        before: int | None = None,
        include_deferred: bool = False,
    ) -> LogPage:
        """The access log in the person's terms, newest first, one page.

        Entries whose disclosure is deferred past now are withheld (counted, not shown)
        unless ``include_deferred``. Needs the owner's secret (entries are encrypted).
        ``since`` keeps entries stamped at or after it: times are in index order only to
        within ``LOG_TIME_SLACK_MS`` (see there), so the page reads on until an entry older
        than ``since`` by more than that.

        An entry the host wrote or changed so that it cannot be read is listed as
        ``damaged`` (``AccessEntry.damage``) rather than raised, so that it cannot hide the
        rest. One whose stored bytes do not parse (or name another index or vault) has no
        time, actor or deferral: ``since`` keeps it wherever the page reaches it (its place
        in the log is all that dates it), ``actor`` leaves it out, and it is never withheld
        (the host could otherwise hide entries behind one). Raises ``IntegrityError``
        (``log-gap``) if an index is missing from the store.
        """
        keys = self._keys()
        if not _is_int(limit) or not 1 <= limit <= MAX_LIST_LIMIT:
            raise FormatError(f"limit must be between 1 and {MAX_LIST_LIMIT}")
        if before is not None and not _is_int(before):
            raise FormatError("before is an entry index")
        if actor is not None and not isinstance(actor, str):
            raise FormatError("actor must be text")
        log = MerkleLog(self._ctx.backend, self.vault_id)
        end = log.size() if before is None else min(before, log.size())
        if end < 0:
            raise FormatError("before must not be negative")
        now = self._ctx.now_ms()
        since_ms = datetime_to_ms(since) if since is not None else None
        entries: builtins.list[AccessEntry] = []
        withheld = 0
        cursor: int | None = None
        expected = end - 1
        for index, entry in log.stored_entries(0, end, newest_first=True):
            if index != expected:
                raise IntegrityError("log-gap", "an entry is missing from the log")
            expected -= 1
            if entry is not None and since_ms is not None and entry.time < since_ms:
                if entry.time < since_ms - LOG_TIME_SLACK_MS:
                    break
                continue  # an older time, but a later entry may yet be newer: read on
            if len(entries) == limit:
                cursor = index + 1
                break
            deferred = (
                entry is not None
                and entry.disclose_after is not None
                and entry.disclose_after > now
                and not include_deferred
            )
            item = _unparsed_entry(index) if entry is None else _access_entry(entry, keys)
            if actor is not None and item.actor != actor:
                continue
            if deferred:
                withheld += 1
                continue
            entries.append(item)
        return LogPage(entries, withheld, cursor)

    def access_log(self) -> builtins.list[AccessEntry]:
        """Every disclosed entry, oldest first (a convenience over ``log``); an entry that
        cannot be read is listed as ``damaged``, as ``log`` lists it."""
        keys = self._keys()
        now = self._ctx.now_ms()
        log = MerkleLog(self._ctx.backend, self.vault_id)
        return [
            _unparsed_entry(index) if entry is None else _access_entry(entry, keys)
            for index, entry in log.stored_entries(0, log.size())
            if entry is None or entry.disclose_after is None or entry.disclose_after <= now
        ]

    def log_size(self) -> int:
        return MerkleLog(self._ctx.backend, self.vault_id).size()

    def log_root(self, size: int | None = None) -> bytes:
        _check_sizes(size)
        log = MerkleLog(self._ctx.backend, self.vault_id)
        current = log.size()
        size = current if size is None else size
        if not 0 <= size <= current:
            raise FormatError("size is beyond the log")
        return log.root(size)

    def checkpoint(self) -> Checkpoint:
        """Sign (as the owner) and store a checkpoint of the log's current head.

        Raises ``InvalidProof`` (``log-fork``) if the stored log does not extend the latest
        signed checkpoint: signing then would sign a fork; ``IntegrityError``
        (``checkpoint-missing``) if the log holds an owner entry but there is no checkpoint:
        every owner entry signs one, so the host deleted them, and a head counted from its
        store would sign away what it dropped (``repair`` rebuilds the records from the
        log).
        """
        keys = self._keys()
        with self._ctx.backend.transaction():
            self._refresh()
            latest = self.latest_checkpoint()
            if latest is None and self._owner_logged():
                raise _checkpoint_missing()
            log = MerkleLog(self._ctx.backend, self.vault_id)
            size = log.size()
            now = self._ctx.now_ms()
            head = Checkpoint.sign(
                keys.identity,
                self.vault_id,
                size,
                self._extending_root(log, size, latest),
                now,
                records=self._head_records(latest),
            )
            self._store_head(head)
        return head

    def latest_checkpoint(self) -> Checkpoint | None:
        """The newest checkpoint the owner signed, without any secret.

        Raises ``InvalidProof`` if its signature fails, it names another log, or the stored
        log does not match it (``log-fork``: shorter than it, or another root at its size,
        computed from the stored subtree hashes; ``verify_log`` recomputes from the entries).
        A host that deletes the checkpoint rows escapes this check: a head pinned by the
        client (``verify_log``) is the anchor. The vault object is one too: a latest head
        older than one it signed or verified (the host rolled its store back under it)
        raises ``InvalidProof`` (``checkpoint-missing``).
        """
        head = self._stored_latest_checkpoint()
        seen = self._seen_head
        if seen is not None and (head is None or head.size < seen.size):
            raise InvalidProof(
                "the store's latest checkpoint is older than one this vault object saw "
                "(repair rebuilds the records)",
                "checkpoint-missing",
            )
        return head

    def _stored_latest_checkpoint(self) -> Checkpoint | None:
        """``latest_checkpoint`` without the comparison with the heads this object saw."""
        text = self._ctx.backend.latest_checkpoint(self.vault_id)
        if text is None:
            return None
        identity = self._row.identity_public
        cached = self._verified_head
        if cached is not None and cached[0] == text and cached[1] == identity:
            head = cached[2]  # the same text, verified with the same key: parsing is pure
        else:
            head = Checkpoint.parse(text, identity)
            head.verify(identity)
            if head.origin != origin(self.vault_id):
                raise InvalidProof("the checkpoint is for another log", "checkpoint-origin")
            self._verified_head = (text, identity, head)
        log = MerkleLog(self._ctx.backend, self.vault_id)
        # The root at size 0 is SHA-256(""), so a size-0 head with another root fails too.
        if head.size > log.size() or log.root(head.size) != head.root:
            raise InvalidProof("the stored log does not match its latest checkpoint", "log-fork")
        if self._seen_head is not None:
            # Signed by the owner, but maybe on another branch (a session without this
            # object's head, on a store the host rolled back): it must extend what was seen.
            _check_consistent(log, self._seen_head, head)
        self._saw_head(head)
        return head

    def _saw_head(self, head: Checkpoint) -> None:
        """Remember ``head`` as seen once it is committed (a head signed in a transaction
        that rolls back never was)."""

        def seen() -> None:
            if self._seen_head is None or head.size > self._seen_head.size:
                self._seen_head = head

        self._ctx.backend.after_commit(seen)

    def prove_inclusion(
        self, index: int, size: int | None = None
    ) -> tuple[LogEntry, builtins.list[bytes]]:
        """Entry ``index`` and its inclusion proof in the tree of ``size`` (default: now)."""
        _check_sizes(index, size)
        log = MerkleLog(self._ctx.backend, self.vault_id)
        current = log.size()
        size = current if size is None else size
        if not 0 <= index < size <= current:
            raise FormatError("need 0 <= index < size <= the log's size")
        return log.entry(index), log.inclusion(index, size)

    def prove_consistency(self, old_size: int, size: int | None = None) -> builtins.list[bytes]:
        _check_sizes(old_size, size)
        log = MerkleLog(self._ctx.backend, self.vault_id)
        current = log.size()
        size = current if size is None else size
        if not 0 < old_size <= size <= current:
            raise FormatError("need 0 < old size <= size <= the log's size")
        return log.consistency(old_size, size)

    def verify_log(self, pinned: Checkpoint | str) -> None:
        """Check that the stored log extends a checkpoint seen earlier.

        Verifies the pinned checkpoint's signature, recomputes the root at its size from
        the stored entries' hashes, and checks consistency up to the current size. Raises
        ``InvalidProof`` on a rewrite, truncation, rollback or fork. A stored entry that
        does not parse, or names another index or vault, is hashed as it is and passes
        (the host wrote it, and can at will: ``Vault.log`` lists it as damaged); one that
        replaced other bytes under the pin is a rewrite (``log-fork``). Once verified, this
        vault object holds the checkpoint as seen (as ``Store.open_vault(pinned=)`` does).
        """
        head = self._pinned_head(pinned)
        log = MerkleLog(self._ctx.backend, self.vault_id)
        size = self._walk_log([head])
        if head.size:
            merkle.verify_consistency(
                head.size, size, head.root, log.root(size), log.consistency(head.size, size)
            )
        self._trust_head(head)

    def _trust_head(self, head: Checkpoint) -> None:
        """Hold ``head`` (verified by the caller) as seen, from now on: every operation of
        this object then refuses a store whose latest head is older or on another branch,
        and signs no head over a log that does not extend it (``latest_checkpoint``,
        ``_extending_root``). Raises ``InvalidProof`` (``log-fork``) if it and a head this
        object already holds are not one branch."""
        seen = self._seen_head
        if seen is not None:
            log = MerkleLog(self._ctx.backend, self.vault_id)
            if head.size >= seen.size:
                _check_consistent(log, seen, head)
            elif log.size() >= seen.size:
                # An older pin: the head held must extend it (a store rolled back below the
                # held head is caught by ``latest_checkpoint``).
                _check_consistent(log, head, seen)
        if seen is None or head.size > seen.size:
            self._seen_head = head

    def _pinned_head(self, pinned: Checkpoint | str) -> Checkpoint:
        """A checkpoint seen earlier, verified as this vault's owner's for this log."""
        if not isinstance(pinned, str | Checkpoint):
            raise FormatError("pinned is a Checkpoint or its text")
        identity = self._row.identity_public
        head = Checkpoint.parse(pinned, identity) if isinstance(pinned, str) else pinned
        head.verify(identity)
        if head.origin != origin(self.vault_id):
            raise InvalidProof("the checkpoint is for another log", "checkpoint-origin")
        return head

    def _walk_log(
        self,
        heads: Sequence[Checkpoint],
        visit: Callable[[LogEntry], None] | None = None,
        unreadable: Callable[[int], None] | None = None,
    ) -> int:
        """Read every stored entry once, in order, recomputing the tree from the entries
        themselves (O(log n) memory: the stored subtree hashes are only a cache, and a host
        could rewrite them with an entry); pass each to ``visit``. Returns the log's size.

        A stored entry whose bytes do not parse as a log entry, or name another index or
        vault, is a leaf the host wrote (the owner's pds writes no such bytes): it is
        hashed as it is, so a head that covered other bytes at its index still fails
        (``log-fork``), but it is no entry, so it is not passed to ``visit``; its index is
        passed to ``unreadable``. The host, which writes access entries, can append one at
        will, and the log is append-only: refusing the log for it would let the host stop
        verification, repair, rotation's walk and exports for good, while it can as well
        append a parseable entry of its choosing in its place.

        Raises ``InvalidProof`` if the log is shorter than a head, its root at a head's
        size is not that head's (``log-fork``), an index is missing (``log-gap``), or the
        stored subtree hashes disagree with the entries (``log-entry``)."""
        log = MerkleLog(self._ctx.backend, self.vault_id)
        size = log.size()
        roots: dict[int, set[bytes]] = {}
        for head in heads:
            if size < head.size:
                raise InvalidProof("the log is shorter than the pinned checkpoint", "log-truncated")
            if head.size == 0 and head.root != merkle.EMPTY_ROOT:
                raise InvalidProof("the log does not extend the pinned checkpoint", "log-fork")
            roots.setdefault(head.size, set()).add(head.root)
        builder = merkle.RootBuilder()
        for index, raw in self._ctx.backend.iter_log(self.vault_id, 0, size):
            if index != builder.size:
                raise InvalidProof("an entry is missing from the log", "log-gap")
            entry: LogEntry | None
            try:
                entry = LogEntry.parse(raw)
            except FormatError:
                entry = None
            if entry is not None and (entry.index != index or entry.vault_id != self.vault_id):
                entry = None
            builder.add(merkle.leaf_hash(raw))
            expected = roots.get(builder.size)
            if expected is not None and expected != {builder.root()}:
                raise InvalidProof("the log does not extend the pinned checkpoint", "log-fork")
            if entry is None:
                if unreadable is not None:
                    unreadable(index)
            elif visit is not None:
                visit(entry)
        if builder.size != size:
            raise InvalidProof("an entry is missing from the log", "log-gap")
        if builder.root() != log.root(size):
            raise InvalidProof("the stored subtree hashes do not match the entries", "log-entry")
        return size

    # -- lifecycle

    def destroy(self) -> None:
        """Crypto-erase the vault: its keys are deleted and committed first, so the
        remaining ciphertext is unrecoverable even if the second step (deleting rows) is
        interrupted. The vault id stays reserved. The vault must be unlocked."""
        self._keys()
        backend = self._ctx.backend
        with backend.transaction():
            self._refresh()
            self._log("destroy", {})
            backend.erase_vault_keys(self.vault_id, self._ctx.now_ms())
        backend.checkpoint()
        with backend.transaction():
            backend.delete_vault_content(self.vault_id)
        backend.checkpoint()
        self.lock()

    def export(
        self,
        destination: Any,
        *,
        progress: Callable[[int], None] | None = None,
        pinned: Checkpoint | str | None = None,
    ) -> None:
        """Write the vault to one portable file (``docs/spec/export.md``), in constant memory.

        ``destination`` is a path or a binary file object. The vault must be unlocked: the
        export is signed by the vault identity key and carries the host shares sealed to
        the owner, so the file is useless to a grantee and to the host alone.

        ``pinned``, a head seen earlier (e.g. the CLI's pin; a ``Checkpoint`` or its note
        text, whose line is picked by this vault's key id), verified as this vault's, must be
        extended by the log and reached by its latest signed head (``check_extends``),
        checked inside the export's transaction before anything is logged: otherwise
        ``InvalidProof``
        (``log-truncated``, ``log-fork``, ``checkpoint-missing``, ``checkpoint-records``),
        nothing is logged and no file is written. A store rolled back to before a
        revocation (or with the revocation and the heads since deleted) would otherwise be
        exported with the revocation undone, under a head the owner's key signs for the
        export. The read snapshot the file is written from (after that transaction) must
        extend the largest head this object holds, the pin or the export's own, with the
        root recomputed from the entries: a store swapped in between is refused too.

        Every stored row is checked as an importer checks it before it is written: a damaged
        row raises ``IntegrityError`` (with the importer's reason code), a log that does not
        extend the latest signed checkpoint ``InvalidProof`` (``log-fork``); a file written
        to a path is then removed. A path that exists and is not a regular file (a FIFO, a
        device), whose directory does not exist, or that is one of the store's own files or
        the key file the vault was unlocked with, and a text file object, are refused with
        ``FormatError`` before anything is logged: the new file is renamed over the path.
        """
        self._keys()
        anchor = None if pinned is None else self._pinned_head(pinned)
        store_file = getattr(self._ctx.backend, "path", None)
        protected = [] if self._key_file is None else [self._key_file]
        if isinstance(store_file, Path):
            protected += [
                store_file.with_name(store_file.name + suffix)
                for suffix in ("", "-wal", "-shm", "-journal", HOST_KEY_SUFFIX)
            ]
        _export.check_destination(destination, protected)
        with self._ctx.backend.transaction():
            self._refresh()
            if anchor is not None:
                # Before the entry: its head would sign the rolled-back log for the file.
                log = MerkleLog(self._ctx.backend, self.vault_id)
                check_extends(log, self._stored_latest_checkpoint(), anchor)
            # A forked log, or revocations or epochs its latest head does not record:
            # refused before anything is logged.
            self._check_records()
            self._log("export", {})
        # The snapshot is read after the transaction: it must extend the largest head this
        # object holds (the export's own, once signed), pinned or not.
        seen = self._seen_head
        if seen is not None and (anchor is None or seen.size >= anchor.size):
            anchor = seen
        _export.export_vault(self, destination, progress=progress, pinned=anchor)


def _check_consistent(log: MerkleLog, seen: Checkpoint, head: Checkpoint) -> None:
    """``head`` must not contradict ``seen``, a head held earlier: at the same size the same
    root, at a larger one a consistency proof from the stored log (its nodes are the host's
    cache, but the proof is checked against both signed roots). A smaller ``head`` is left
    to the callers (``latest_checkpoint``: ``checkpoint-missing``). Raises ``InvalidProof``
    (``log-fork``)."""
    if head.size < seen.size:
        return
    if head.size == seen.size:
        consistent = head.root == seen.root
    elif seen.size == 0:
        consistent = seen.root == merkle.EMPTY_ROOT
    else:
        try:
            merkle.verify_consistency(
                seen.size, head.size, seen.root, head.root, log.consistency(seen.size, head.size)
            )
            consistent = True
        except (InvalidProof, IntegrityError):
            consistent = False
    if not consistent:
        raise InvalidProof(
            "a checkpoint is on another branch than one this vault object holds: a fork",
            "log-fork",
        )


def _check_identity(row: RecordRow, vault_id: str, record_id: str) -> None:
    """The store must answer with the record asked for (not one that merely compares equal
    under a collation the host slipped into the schema)."""
    if row.vault_id != vault_id or row.record_id != record_id:
        raise IntegrityError("record-id", "the store answered with another record")


LOG_TIME_SLACK_MS = capability.CLOCK_SKEW_MS
"""How far an entry's time may fall behind an earlier entry's: every entry is stamped once
its writer holds the write lock, but the processes writing one store may have clocks that
differ by the clock skew tokens allow (5 minutes)."""


def _access_entry(entry: LogEntry, keys: _owner.OwnerKeys) -> AccessEntry:
    """The entry in the person's terms. The host writes access and delegation entries and
    can seal any details to the owner's key: a value of the wrong shape is shown as absent,
    and details that do not open as none (``damaged``), so that one such entry cannot break
    the person's view of the whole log."""
    identity = keys.identity.public
    try:
        details = entry.open(keys.x25519_secret)
        damaged = False
    except IntegrityError:
        details, damaged = {}, True
    defer = details.get("defer")
    records = details.get("records")
    purposes = _texts(details.get("purposes"))
    fields = details.get("fields")
    return AccessEntry(
        index=entry.index,
        time=ms_to_datetime_clamped(entry.time),
        kind=entry.kind,
        actor=_text(details.get("actor")) or "",
        agent=_text(details.get("agent")),
        purpose=_text(details.get("purpose")) or ", ".join(purposes) or None,
        basis=_text(details.get("basis")),
        collections=_texts(details.get("collections")),
        records=[
            (r[0], r[1])
            for r in (records if isinstance(records, builtins.list) else [])
            if isinstance(r, builtins.list)
            and len(r) == 2
            and isinstance(r[0], str)
            and type(r[1]) is int
        ],
        link_ids=_texts(details.get("chain")) or ([entry.link_id.hex()] if entry.link_id else []),
        result=entry.result,
        reason=_text(details.get("reason")),
        correlation=_text(details.get("correlation")),
        fields=None if fields is None else _texts(fields),
        disclose_after=None
        if entry.disclose_after is None
        else ms_to_datetime_clamped(entry.disclose_after),
        defer_reason=_text(defer[1])
        if isinstance(defer, builtins.list) and len(defer) == 2
        else None,
        unsigned=entry.kind in OWNER_KINDS and not entry.signed_by_owner(details, identity),
        details=details,
        damaged=damaged,
        damage="details" if damaged else None,
    )


def _unparsed_entry(index: int) -> AccessEntry:
    """Entry ``index`` whose stored bytes do not parse as a log entry of this vault at that
    index (``MerkleLog.stored_entries``): the host wrote or changed them. Listed, damaged,
    with nothing but its index: no time, kind, actor or details can be told from them."""
    return AccessEntry(
        index=index,
        time=None,
        kind="",
        actor="",
        agent=None,
        purpose=None,
        basis=None,
        collections=[],
        records=[],
        link_ids=[],
        result="",
        reason=None,
        correlation=None,
        fields=None,
        disclose_after=None,
        defer_reason=None,
        unsigned=False,
        details={},
        damaged=True,
        damage="entry",
    )


def _names_key(did: Any, public: bytes) -> bool:
    """Whether ``did`` is the ``did:key`` of ``public``."""
    try:
        return isinstance(did, str) and _crypto.parse_did_key(did) == public
    except FormatError:
        return False


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _texts(value: Any) -> builtins.list[str]:
    """A list of text as stored; anything else (another type, an item not text): empty."""
    if isinstance(value, builtins.list) and all(isinstance(item, str) for item in value):
        return builtins.list(value)
    return []


def _link_id(link: capability.Token | str | bytes, vault_id: str) -> bytes:
    """The link id to revoke in vault ``vault_id``: a token must be one of its own (a bare
    id is taken as given: it may name a delegation the host has not seen yet)."""
    if isinstance(link, str) and link.startswith(capability.TOKEN_PREFIX):
        link = capability.Token.from_text(link)
    if isinstance(link, capability.Token):
        if link.vault_id != vault_id:
            raise FormatError("the token was issued for another vault")
        return link.link_id
    if isinstance(link, str):
        try:
            raw = bytes.fromhex(link)
        except ValueError:
            raise FormatError("a link id is 64 hex characters or a token") from None
        link = raw
    if not isinstance(link, bytes) or len(link) != 32:
        raise FormatError("a link id is 32 bytes")
    return link


def _is_int(value: object) -> bool:
    """An ``int`` that is not a ``bool`` (``True`` is no count)."""
    return isinstance(value, int) and not isinstance(value, bool)


def _check_sizes(*values: int | None) -> None:
    if not all(value is None or _is_int(value) for value in values):
        raise FormatError("log indices and sizes are integers")


def _encode_data(data: Any) -> bytes:
    if not isinstance(data, Mapping):
        raise InvalidRecordData("record data must be a JSON object")
    try:
        plaintext = _codec.encode(data, json_only=True)
    except FormatError as exc:
        raise InvalidRecordData(f"record data is not JSON-compatible: {exc}") from None
    if len(plaintext) > MAX_RECORD_SIZE:
        raise InvalidRecordData("record data is larger than 16 MiB")
    return plaintext
