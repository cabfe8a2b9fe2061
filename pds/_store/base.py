"""The storage interface: what vault logic needs from a backend, and nothing more.

Rows are plain, immutable data: frozen dataclasses, except the two a read or a listing
builds by the hundred (``RecordRow``, ``RecordMeta``), which are named tuples (built in
a fifth of the time). A backend stores and returns them exactly; it never interprets
ciphertext or keys. Every multi-row change happens inside ``transaction()``, which is
all-or-nothing and durable when it returns. Backends raise only ``pds.errors.StoreError``
subclasses (or ``NotAStore``), never their driver's exceptions.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import NamedTuple, Protocol


@dataclass(frozen=True, slots=True)
class VaultRow:
    vault_id: str
    created_at: int
    identity_public: bytes
    unlock: bytes
    """Canonical msgpack describing how the owner unlocks (method and KDF parameters)."""
    wrapped_master: bytes | None
    wrapped_identity: bytes | None
    destroyed_at: int | None = None
    policy: bytes | None = None
    """Canonical msgpack of the vault's policy (e.g. the longest token lifetime)."""


@dataclass(frozen=True, slots=True)
class EpochRow:
    vault_id: str
    collection: str
    epoch: int
    public_key: bytes
    created_at: int
    signature: bytes
    """The vault identity key's signature over the epoch certificate."""
    sealed_owner: bytes | None
    """The epoch secret sealed to the owner's X25519 key; ``None`` once crypto-erased."""
    seal_fields: bool = False
    """Records of this collection are sealed field by field (``docs/spec/records.md``)."""


@dataclass(frozen=True, slots=True)
class BatchRow:
    vault_id: str
    batch_id: bytes
    collection: str
    epoch: int
    writer: bytes
    created_at: int
    manifest: bytes
    signature: bytes
    sealed_reader: bytes | None
    wrapped_host: bytes | None


class RecordMeta(NamedTuple):
    seq: int
    vault_id: str
    record_id: str
    version: int
    collection: str
    created_at: int
    epoch: int
    batch_id: bytes
    deleted: bool
    size: int


class RecordRow(NamedTuple):
    vault_id: str
    record_id: str
    version: int
    collection: str
    created_at: int
    epoch: int
    batch_id: bytes
    deleted: bool
    nonce: bytes | None
    """``None`` when the content was erased (an earlier version of a deleted record)."""
    ciphertext: bytes | None
    seq: int = 0


@dataclass(frozen=True, slots=True)
class LinkRow:
    """A token link the host knows: a grant it issued, or a delegation it has seen."""

    link_id: bytes
    vault_id: str
    parent_id: bytes | None
    audience: bytes
    not_before: int
    expires: int
    uses: int | None
    created_at: int
    sealed_token: bytes
    """The token up to this link, sealed to the owner (it names purposes and scope)."""


@dataclass(frozen=True, slots=True)
class LinkKeyRow:
    link_id: bytes
    collection: str
    epoch: int
    sealed: bytes
    """The epoch secret sealed to the link's audience."""


@dataclass(frozen=True, slots=True)
class RevocationRow:
    vault_id: str
    link_id: bytes
    revoked_at: int
    statement: bytes
    signature: bytes


class Backend(Protocol):
    """A store of vaults. Implementations: ``SQLiteBackend`` (default)."""

    def transaction(self) -> AbstractContextManager[None]:
        """Run the enclosed calls atomically (nested calls join the outer transaction)."""
        ...

    def after_commit(self, callback: Callable[[], None]) -> None:
        """Run ``callback`` once the current transaction commits (at once outside one);
        never if it rolls back."""
        ...

    def in_transaction(self) -> bool:
        """Whether a transaction or snapshot is open on this connection (a new
        ``transaction()`` would join it, and commit only with it)."""
        ...

    def snapshot(self) -> AbstractContextManager[None]:
        """Read from one consistent snapshot without blocking writers (for export)."""
        ...

    def close(self) -> None: ...

    def checkpoint(self) -> None:
        """Make committed changes reach the main file and drop old page images (best effort)."""
        ...

    def get_meta(self, key: str) -> str | None: ...
    def set_meta(self, key: str, value: str) -> None: ...

    # -- vaults
    def insert_vault(self, row: VaultRow) -> None: ...
    def get_vault(self, vault_id: str) -> VaultRow | None: ...
    def list_vaults(self) -> list[VaultRow]: ...
    def update_vault_unlock(
        self, vault_id: str, unlock: bytes, wrapped_master: bytes, wrapped_identity: bytes
    ) -> None:
        """A rekey: the new unlock parameters, master key wrap and identity wrap, at once."""

    def erase_vault_keys(self, vault_id: str, destroyed_at: int) -> None:
        """Remove every wrapped or sealed key of the vault (crypto-erase)."""
        ...

    def delete_vault_content(self, vault_id: str) -> None:
        """Delete the vault's records, batches and epochs (after ``erase_vault_keys``)."""
        ...

    # -- key epochs
    def insert_epoch(self, row: EpochRow) -> None: ...
    def current_epoch(self, vault_id: str, collection: str) -> EpochRow | None: ...
    def get_epoch(self, vault_id: str, collection: str, epoch: int) -> EpochRow | None: ...
    def delete_epoch(self, vault_id: str, collection: str, epoch: int) -> None:
        """Delete one epoch row (``Vault.repair``: a row whose certificate does not verify)."""
        ...

    def iter_epochs(self, vault_id: str) -> Iterator[EpochRow]:
        """In (collection, epoch) order (the export writes it, the importer checks it)."""
        ...

    def list_collections(self, vault_id: str) -> list[str]: ...

    # -- write batches
    def insert_batch(self, row: BatchRow) -> None: ...
    def get_batch(self, vault_id: str, batch_id: bytes) -> BatchRow | None: ...
    def iter_batches(self, vault_id: str) -> Iterator[BatchRow]: ...

    # -- records
    def insert_records(self, rows: Sequence[RecordRow]) -> None:
        """Insert record versions; each becomes its record's current version."""
        ...

    def latest_versions(
        self, vault_id: str, record_ids: Sequence[str]
    ) -> dict[str, tuple[int, str]]:
        """``(highest version, its collection)`` of each record id that exists."""
        ...

    def latest_record(self, vault_id: str, record_id: str) -> RecordRow | None: ...
    def record_history(self, vault_id: str, record_id: str) -> list[RecordRow]: ...
    def erase_record_content(self, vault_id: str, record_id: str, below_version: int) -> None: ...
    def iter_batch_records(self, vault_id: str, batch_id: bytes) -> Iterator[RecordRow]: ...
    def list_records(
        self,
        vault_id: str,
        *,
        collection: str | None,
        since: int | None,
        until: int | None,
        after: tuple[int, int] | None,
        limit: int,
        scope: Sequence[str] | None = None,
    ) -> list[RecordMeta]:
        """Current versions, ordered by ``(created_at, seq)``, strictly after ``after``.

        ``scope`` keeps only collections matching its patterns (``name``, ``prefix/*``,
        ``*``), so a grantee's page and cursor never touch records outside its grant."""
        ...

    def finish_import(self, vault_id: str) -> None:
        """Mark each imported record's highest version as current."""
        ...

    def get_records(self, vault_id: str, record_ids: Sequence[str]) -> list[RecordRow]:
        """The latest version of each existing id, in the order given."""
        ...

    def set_policy(self, vault_id: str, policy: bytes) -> None: ...

    # -- tokens
    def insert_link(self, row: LinkRow) -> None: ...
    def get_link(self, link_id: bytes) -> LinkRow | None: ...
    def iter_links(self, vault_id: str) -> Iterator[LinkRow]:
        """In (created_at, link_id) order (the export writes it, the importer checks it)."""
        ...

    def insert_link_keys(self, rows: Sequence[LinkKeyRow]) -> None: ...
    def link_keys(self, link_id: bytes) -> list[LinkKeyRow]: ...
    def shared_epochs(self, vault_id: str, at_most: int) -> dict[str, int]:
        """The highest epoch number, from 1 to ``at_most``, of each collection sealed to any
        of the vault's links (rows outside that range are not counted)."""
        ...

    def insert_revocation(self, row: RevocationRow) -> None:
        """Store a revocation, replacing the vault's row for the same link if there is one
        (a row whose statement does not verify, which the owner replaces)."""
        ...

    def delete_revocation(self, vault_id: str, link_id: bytes) -> None:
        """Delete the vault's row for ``link_id`` (``Vault.repair``: a row whose statement
        does not verify, for a link no log entry revokes)."""
        ...

    def revoked_among(self, vault_id: str, link_ids: Sequence[bytes]) -> list[bytes]:
        """Which of ``link_ids`` the vault ``vault_id`` revoked: one indexed lookup. (A
        revocation binds the vault whose owner signed it, never another.)"""
        ...

    def iter_revocations(self, vault_id: str) -> Iterator[RevocationRow]:
        """In (revoked_at, link_id) order (the export writes it, the importer checks it)."""
        ...

    def use_counts(self, link_ids: Sequence[bytes]) -> dict[bytes, int]: ...
    def add_uses(self, link_ids: Sequence[bytes]) -> None: ...
    def set_uses(self, link_id: bytes, count: int) -> None:
        """Set a link's spent budget (an import)."""
        ...

    def remember_nonce(self, vault_id: str, nonce: bytes, time: int, policy: bytes | None) -> bool:
        """Record an invocation nonce; ``False`` if it was seen before, or if the vault is
        missing, destroyed or no longer has ``policy`` (checked in the same statement, so a
        change committed after the caller read the vault row is seen here)."""
        ...

    def prune_nonces(self, older_than: int) -> None: ...

    # -- the access log (one Merkle log per vault)
    def log_size(self, vault_id: str) -> int: ...
    def append_log(
        self,
        vault_id: str,
        index: int,
        time: int,
        entry: bytes,
        nodes: Sequence[tuple[int, int, bytes]],
    ) -> None:
        """Store entry ``index`` and the new complete-subtree hashes ``(level, index, hash)``."""
        ...

    def log_node(self, vault_id: str, level: int, index: int) -> bytes | None: ...
    def log_nodes(
        self, vault_id: str, coordinates: Sequence[tuple[int, int]]
    ) -> dict[tuple[int, int], bytes]:
        """The stored subtree hashes at these ``(level, index)`` (absent ones left out)."""
        ...

    def iter_log(
        self, vault_id: str, start: int, end: int, *, newest_first: bool = False
    ) -> Iterator[tuple[int, bytes]]:
        """Entries ``start <= index < end`` as ``(index, entry bytes)``."""
        ...

    def put_checkpoint(self, vault_id: str, size: int, time: int, note: str) -> None: ...
    def latest_checkpoint(self, vault_id: str) -> str | None: ...
