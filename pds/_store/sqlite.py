"""The SQLite backend: sqlite-utils for the schema and migrations, raw ``sqlite3`` on hot paths.

Durability: WAL journal, ``synchronous=FULL`` by default (every acknowledged commit
survives power loss), ``secure_delete`` so erased content is overwritten in the file.
Transactions start with ``BEGIN IMMEDIATE`` so two processes never interleave a
read-then-write; a second writer waits up to the busy timeout, then gets ``StoreBusy``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import os
import secrets
import sqlite3
import types
import typing
import urllib.parse
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal, TypeVar

import sqlite_utils

from pds import _faults
from pds.errors import (
    FormatError,
    NotAStore,
    SchemaTooNew,
    StoreBusy,
    StoreCorrupt,
    StoreError,
    StoreFull,
    StoreNotFound,
    StoreReadOnly,
)

from .base import (
    BatchRow,
    EpochRow,
    LinkKeyRow,
    LinkRow,
    RecordMeta,
    RecordRow,
    RevocationRow,
    VaultRow,
)

SCHEMA_VERSION = 5
STORE_FORMAT = "pds-store"
STORE_ID = "store_id"
COMMITS = "commits"
_IN_CHUNK = 500
"""Ids per ``IN (...)`` query: well under SQLite's bound-parameter limit."""

Synchronous = Literal["full", "normal"]
T = TypeVar("T")
R = TypeVar("R")


def _translate(exc: sqlite3.Error) -> StoreError | NotAStore:
    """Map a driver error to a pds error whose message holds no SQL values."""
    name = getattr(exc, "sqlite_errorname", "") or ""
    text = str(exc).lower()
    if text.startswith("could not decode to utf-8"):
        # The driver's message quotes the stored bytes: matched first, and never kept.
        return StoreCorrupt("a stored text value is not UTF-8")
    if name.startswith("SQLITE_BUSY") or name.startswith("SQLITE_LOCKED") or "locked" in text:
        return StoreBusy("the store is busy: another writer held the lock too long")
    if name.startswith("SQLITE_READONLY") or "readonly" in text:
        return StoreReadOnly("the store is read-only")
    if name.startswith("SQLITE_FULL") or "full" in text:
        return StoreFull("the store's disk or size limit is full")
    if name.startswith("SQLITE_NOTADB") or "not a database" in text:
        return NotAStore("not a pds store (not an SQLite database)")
    if name.startswith("SQLITE_CORRUPT") or "malformed" in text:
        return StoreCorrupt("the store's database file is corrupt or truncated")
    if name.startswith("SQLITE_CANTOPEN") or "unable to open" in text:
        return StoreError("cannot open the store's database file")
    if name.startswith("SQLITE_IOERR") or "disk i/o" in text:
        return StoreError("input/output error in the store")
    return StoreError(f"storage failure ({name or type(exc).__name__})")


def _check_wal_owner(path: Path) -> None:
    """Refuse a write-ahead log that belongs to another database, before anything could
    copy it into this one.

    SQLite replays any well-formed ``-wal`` beside a database, whichever database wrote
    it. Every pds commit rewrites the meta page (see ``transaction``), so a log written by
    this store shows this store's id; one written by another shows another id. Both views
    are read-only connections, which never checkpoint: nothing is changed either way.
    """
    # SQLite follows a symlinked database name and uses the log beside the file it names.
    path = Path(os.path.realpath(path))
    wal = Path(f"{path}-wal")
    try:
        if not path.exists() or wal.stat().st_size == 0:
            return
    except FileNotFoundError:
        return
    # The path is percent-encoded: a '?' or '#' in it would end the URI's path.
    location = urllib.parse.quote(str(path))
    in_file = _probe_store_id(f"file:{location}?immutable=1")
    if in_file is None:
        return  # no id in the file yet (a store older than the check, or never checkpointed)
    try:
        in_wal = _probe_store_id(f"file:{location}?mode=ro")
    except sqlite3.OperationalError as exc:
        if isinstance(_translate(exc), StoreBusy):
            return  # another process is recovering the log: it is this store's
        in_wal = None
    if in_wal != in_file:
        raise StoreCorrupt(
            "the write-ahead log beside the store (-wal) belongs to another database; "
            "move it away (and its -shm) to open the store as last checkpointed"
        )


def _probe_store_id(uri: str) -> str | None:
    """The store id a read-only view shows; ``None`` if it shows no pds meta table.
    Raises ``sqlite3.OperationalError`` if the database stayed busy."""
    try:
        with contextlib.closing(sqlite3.connect(uri, uri=True, isolation_level=None)) as conn:
            row = conn.execute("SELECT value FROM meta WHERE key = ?", (STORE_ID,)).fetchone()
    except sqlite3.OperationalError as exc:
        if isinstance(_translate(exc), StoreBusy):
            raise
        return None
    except (sqlite3.Error, UnicodeDecodeError):
        return None
    return None if row is None else str(row[0])


def _migrate_to_1(db: sqlite_utils.Database) -> None:
    db.table("meta").create({"key": str, "value": str}, pk="key")
    db.table("vaults").create(
        {
            "vault_id": str,
            "created_at": int,
            "identity_public": bytes,
            "unlock": bytes,
            "wrapped_master": bytes,
            "wrapped_identity": bytes,
            "destroyed_at": int,
        },
        pk="vault_id",
        not_null={"created_at", "identity_public", "unlock"},
    )
    db.table("epochs").create(
        {
            "vault_id": str,
            "collection": str,
            "epoch": int,
            "public_key": bytes,
            "created_at": int,
            "signature": bytes,
            "sealed_owner": bytes,
            "seal_fields": int,
        },
        pk=("vault_id", "collection", "epoch"),
        not_null={"public_key", "created_at", "signature", "seal_fields"},
        defaults={"seal_fields": 0},
    )
    db.table("batches").create(
        {
            "bseq": int,
            "vault_id": str,
            "batch_id": bytes,
            "collection": str,
            "epoch": int,
            "writer": bytes,
            "created_at": int,
            "manifest": bytes,
            "signature": bytes,
            "sealed_reader": bytes,
            "wrapped_host": bytes,
        },
        pk="bseq",
        not_null={"vault_id", "batch_id", "collection", "epoch", "writer", "created_at"},
    )
    db.table("batches").create_index(["batch_id"], unique=True)
    db.table("batches").create_index(["vault_id", "bseq"])
    # AUTOINCREMENT keeps ``seq`` monotonic, so list cursors stay valid across deletions.
    db.execute(
        """
        CREATE TABLE records (
            seq INTEGER PRIMARY KEY AUTOINCREMENT,
            vault_id TEXT NOT NULL,
            record_id TEXT NOT NULL,
            version INTEGER NOT NULL,
            collection TEXT NOT NULL,
            created_at INTEGER NOT NULL,
            epoch INTEGER NOT NULL,
            batch_id BLOB NOT NULL,
            deleted INTEGER NOT NULL,
            current INTEGER NOT NULL,
            size INTEGER NOT NULL,
            nonce BLOB,
            ciphertext BLOB
        )
        """
    )
    db.table("records").create_index(["vault_id", "record_id", "version"], unique=True)
    db.table("records").create_index(["batch_id"])
    db.execute(
        "CREATE INDEX records_current_by_time ON records (vault_id, created_at, seq) "
        "WHERE current = 1"
    )
    db.execute(
        "CREATE INDEX records_current_by_collection "
        "ON records (vault_id, collection, created_at, seq) WHERE current = 1"
    )


def _migrate_to_2(db: sqlite_utils.Database) -> None:
    """Capability tokens: known links, their sealed keys, revocations, budgets, nonces, and
    the access table written before any release."""
    db.execute("ALTER TABLE vaults ADD COLUMN policy BLOB")
    db.table("links").create(
        {
            "link_id": bytes,
            "vault_id": str,
            "parent_id": bytes,
            "audience": bytes,
            "not_before": int,
            "expires": int,
            "uses": int,
            "created_at": int,
            "sealed_token": bytes,
        },
        pk="link_id",
        not_null={"vault_id", "audience", "not_before", "expires", "created_at", "sealed_token"},
    )
    db.table("links").create_index(["vault_id", "audience"])
    db.table("link_keys").create(
        {"link_id": bytes, "collection": str, "epoch": int, "sealed": bytes},
        pk=("link_id", "collection", "epoch"),
        not_null={"sealed"},
    )
    db.table("revocations").create(
        {
            "link_id": bytes,
            "vault_id": str,
            "revoked_at": int,
            "statement": bytes,
            "signature": bytes,
        },
        pk="link_id",
        not_null={"vault_id", "revoked_at", "statement", "signature"},
    )
    db.table("revocations").create_index(["vault_id", "revoked_at"])
    db.table("link_uses").create({"link_id": bytes, "count": int}, pk="link_id")
    db.table("nonces").create(
        {"nonce": bytes, "vault_id": str, "time": int}, pk="nonce", not_null={"vault_id", "time"}
    )
    db.table("nonces").create_index(["time"])
    # The access log: entries (encrypted details, public header), the hashes of every
    # complete subtree (level 0 = leaf hashes) so appends and proofs are O(log n), and the
    # checkpoints the owner signed.
    db.table("log_entries").create(
        {"vault_id": str, "idx": int, "time": int, "entry": bytes},
        pk=("vault_id", "idx"),
        not_null={"time", "entry"},
    )
    db.table("log_nodes").create(
        {"vault_id": str, "level": int, "idx": int, "hash": bytes},
        pk=("vault_id", "level", "idx"),
        not_null={"hash"},
    )
    db.table("log_checkpoints").create(
        {"vault_id": str, "size": int, "time": int, "note": str},
        pk=("vault_id", "size"),
        not_null={"time", "note"},
    )


def _rebuild_without_rowid(
    db: sqlite_utils.Database, table: str, columns: Sequence[str], key: str, *indexes: str
) -> None:
    """Replace ``table`` by a ``WITHOUT ROWID`` table of the same name with these column
    definitions (in the table's column order) and primary ``key``, holding every row of the
    old one; then make its other ``indexes`` (the old ones went with the old table). Each
    statement goes through the fault seam like every other statement of the store."""
    names = ", ".join(column.split(" ", 1)[0] for column in columns)
    statements = (
        f'CREATE TABLE "{table}_new" ({", ".join(columns)}, PRIMARY KEY ({key})) WITHOUT ROWID',
        # In key order: the new B-tree fills page by page.
        f'INSERT INTO "{table}_new" ({names}) SELECT {names} FROM "{table}" ORDER BY {key}',
        f'DROP TABLE "{table}"',
        f'ALTER TABLE "{table}_new" RENAME TO "{table}"',
        *indexes,
    )
    _run_migration_statements(db, table, statements)


def _run_migration_statements(
    db: sqlite_utils.Database, table: str, statements: Sequence[str]
) -> None:
    """Run a table rebuild's statements, each through the fault seam like every other
    statement of the store."""
    for sql in statements:
        if _faults.SEAM.armed:
            _faults.storage_call("execute")
        try:
            db.execute(sql)
        except sqlite3.IntegrityError:
            # Schema 2 let a key cell be NULL (or repeat) only if the file was changed
            # outside pds; the new key refuses it, and the store cannot be migrated.
            raise StoreCorrupt(
                f"a stored {table} row has a missing or repeated key: the store was changed "
                "outside pds and cannot be migrated"
            ) from None
        if _faults.SEAM.armed:
            _faults.point("executed")


def _migrate_to_3(db: sqlite_utils.Database) -> None:
    """Rebuild the small-row tables keyed by something other than an integer as
    ``WITHOUT ROWID`` tables, with the columns, types, constraints and keys of schema 2.

    Schema 2 made them rowid tables plus an automatic unique index on the key, so every
    insert wrote two B-trees and every key lookup descended two; stored in key order, an
    insert writes one and a lookup descends one. Tables whose rows are larger than about a
    twentieth of a page stay as they are (``log_entries``, ``log_checkpoints``, ``links``,
    ``revocations``), and so does ``meta``, which every pds version reads first. (A primary
    key column of a WITHOUT ROWID table is NOT NULL whether it says so or not; here it
    says so.) The caller's transaction makes the whole rebuild all or nothing.
    """
    _rebuild_without_rowid(
        db,
        "log_nodes",
        [
            '"vault_id" TEXT NOT NULL',
            '"level" INTEGER NOT NULL',
            '"idx" INTEGER NOT NULL',
            '"hash" BLOB NOT NULL',
        ],
        '"vault_id", "level", "idx"',
    )
    _rebuild_without_rowid(
        db,
        "nonces",
        ['"nonce" BLOB NOT NULL', '"vault_id" TEXT NOT NULL', '"time" INTEGER NOT NULL'],
        '"nonce"',
        'CREATE INDEX "idx_nonces_time" ON "nonces" ("time")',
    )
    _rebuild_without_rowid(
        db,
        "link_keys",
        [
            '"link_id" BLOB NOT NULL',
            '"collection" TEXT NOT NULL',
            '"epoch" INTEGER NOT NULL',
            '"sealed" BLOB NOT NULL',
        ],
        '"link_id", "collection", "epoch"',
    )
    _rebuild_without_rowid(
        db, "link_uses", ['"link_id" BLOB NOT NULL', '"count" INTEGER'], '"link_id"'
    )


_TILE_HEIGHT = 4
"""Levels per band of ``log_nodes`` (schema 4): a tile holds the 30 nodes of levels
4b..4b+3 under one node of level 4b+4, about 2.3 KB, within a page or two."""


def _tile_key(level: str, index: str) -> tuple[str, str]:
    """SQL for the ``(band, tile)`` of the log node at ``(level, index)`` (SQL operands).

    Band ``b`` holds levels ``4b .. 4b+3``; a node's tile in it is the index of its
    ancestor at level ``4b+4``. Keyed by ``(vault_id, band, tile, level, idx)``, the
    siblings a proof's path needs at a band's four levels lie in one tile, so a proof deep
    in a large log touches about one page per band instead of one per level. The one
    definition: the migration, the inserts and the lookups all use it.
    """
    height = _TILE_HEIGHT
    return (
        f"({level}) / {height}",
        f"({index}) >> ((({level}) / {height} + 1) * {height} - ({level}))",
    )


_NODE_BAND, _NODE_TILE = _tile_key("?2", "?3")
_WANTED_BAND, _WANTED_TILE = _tile_key("wanted.level", "wanted.idx")


def _migrate_to_4(db: sqlite_utils.Database) -> None:
    """Key ``log_nodes`` by ``(vault_id, band, tile, level, idx)`` (see ``_tile_key``):
    two derived columns in front of ``level, idx``, so a proof's nodes cluster by tile.
    Same rows, same hashes; the caller's transaction makes it all or nothing."""
    band, tile = _tile_key('"level"', '"idx"')
    statements = (
        'CREATE TABLE "log_nodes_v4" ("vault_id" TEXT NOT NULL, "band" INTEGER NOT NULL, '
        '"tile" INTEGER NOT NULL, "level" INTEGER NOT NULL, "idx" INTEGER NOT NULL, '
        '"hash" BLOB NOT NULL, '
        'PRIMARY KEY ("vault_id", "band", "tile", "level", "idx")) WITHOUT ROWID',
        'INSERT INTO "log_nodes_v4" ("vault_id", "band", "tile", "level", "idx", "hash") '
        f'SELECT "vault_id", {band}, {tile}, "level", "idx", "hash" FROM "log_nodes" '
        "ORDER BY 1, 2, 3, 4, 5",
        'DROP TABLE "log_nodes"',
        'ALTER TABLE "log_nodes_v4" RENAME TO "log_nodes"',
    )
    _run_migration_statements(db, "log_nodes", statements)


def _migrate_to_5(db: sqlite_utils.Database) -> None:
    """Key ``revocations`` by ``(vault_id, link_id)`` instead of ``link_id`` alone, and the
    replay cache ``nonces`` by ``(vault_id, nonce)`` instead of the nonce alone.

    A revocation is the statement of one vault's owner and binds that vault only: keyed by
    the link alone, the owner of any vault in the store could revoke (by its id) a link of
    another vault, and that vault's own later revocation of it was then taken as already
    done. An invocation is signed for one vault: keyed by the nonce alone, a grantee of one
    vault that saw another vault's invocation in transit could spend its nonce first and
    have it refused as a replay. Rows stay as they are (each with its vault);
    ``revocations`` stays a rowid table (its rows are large), the key becomes its unique
    index; ``nonces`` stays ``WITHOUT ROWID``. Old processes' SQL still works against both
    (same columns). The caller's transaction makes it all or nothing.
    """
    statements = (
        'CREATE TABLE "revocations_new" ("link_id" BLOB NOT NULL, "vault_id" TEXT NOT NULL, '
        '"revoked_at" INTEGER NOT NULL, "statement" BLOB NOT NULL, "signature" BLOB NOT NULL, '
        'PRIMARY KEY ("vault_id", "link_id"))',
        'INSERT INTO "revocations_new" ("link_id", "vault_id", "revoked_at", "statement", '
        '"signature") SELECT "link_id", "vault_id", "revoked_at", "statement", "signature" '
        'FROM "revocations" ORDER BY "vault_id", "link_id"',
        'DROP TABLE "revocations"',
        'ALTER TABLE "revocations_new" RENAME TO "revocations"',
        'CREATE INDEX "idx_revocations_vault_id_revoked_at" '
        'ON "revocations" ("vault_id", "revoked_at")',
    )
    _run_migration_statements(db, "revocations", statements)
    _rebuild_without_rowid(
        db,
        "nonces",
        ['"nonce" BLOB NOT NULL', '"vault_id" TEXT NOT NULL', '"time" INTEGER NOT NULL'],
        '"vault_id", "nonce"',
        'CREATE INDEX "idx_nonces_time" ON "nonces" ("time")',
    )


# Migration k takes a store from schema version k - 1 to k. Append, never edit.
MIGRATIONS: list[Callable[[sqlite_utils.Database], None]] = [
    _migrate_to_1,
    _migrate_to_2,
    _migrate_to_3,
    _migrate_to_4,
    _migrate_to_5,
]

_RECORD_COLUMNS = (
    "vault_id, record_id, version, collection, created_at, epoch, batch_id, deleted, "
    "nonce, ciphertext, seq"
)
_META_COLUMNS = (
    "seq, vault_id, record_id, version, collection, created_at, epoch, batch_id, deleted, size"
)


@functools.cache
def _field_types(cls: Any) -> tuple[frozenset[type], ...]:
    """The exact types each field of a row class may hold, in field order."""
    hints = typing.get_type_hints(cls)
    result = []
    names = cls._fields if hasattr(cls, "_fields") else [f.name for f in dataclasses.fields(cls)]
    for name in names:
        hint = hints[name]
        allowed = typing.get_args(hint) if isinstance(hint, types.UnionType) else (hint,)
        result.append(frozenset(type(None) if a is None else a for a in allowed))
    return tuple(result)


def _typed(cls: type[R], values: Sequence[Any]) -> R:
    """Build a row and check every value's type: a cell rewritten with another SQLite
    storage class is a corrupt (or tampered) store, never a crash further on."""
    kind: Any = cls  # Classes are hashable; mypy cannot see it through the TypeVar.
    allowed = _field_types(kind)
    if len(values) > len(allowed):
        raise StoreCorrupt("a stored row has the wrong shape")
    for value, types_ in zip(values, allowed, strict=False):
        # Exact types: SQLite gives int, str, bytes, float or None; bool comes from _flag.
        if type(value) not in types_:
            raise StoreCorrupt("a stored value has the wrong type")
    return cls(*values)


def _flag(value: Any) -> bool:
    if type(value) is not int or value not in (0, 1):
        raise StoreCorrupt("a stored value has the wrong type")
    return bool(value)


def _epoch(row: Sequence[Any]) -> EpochRow:
    return _typed(EpochRow, (*row[:7], _flag(row[7])))


def _record(row: Sequence[Any]) -> RecordRow:
    # The hottest row (a served read of 100 records builds 100): its types are checked
    # inline, with the same rules as ``_typed``.
    if len(row) == 11:
        (
            vault_id,
            record_id,
            version,
            collection,
            created,
            epoch,
            batch,
            deleted,
            nonce,
            data,
            seq,
        ) = row
        if (
            type(vault_id) is str
            and type(record_id) is str
            and type(version) is int
            and type(collection) is str
            and type(created) is int
            and type(epoch) is int
            and type(batch) is bytes
            and (nonce is None or type(nonce) is bytes)
            and (data is None or type(data) is bytes)
            and type(seq) is int
        ):
            return RecordRow(
                vault_id,
                record_id,
                version,
                collection,
                created,
                epoch,
                batch,
                _flag(deleted),
                nonce,
                data,
                seq,
            )
    values = list(row)
    values[7] = _flag(values[7])
    return _typed(RecordRow, values)


def _meta(row: Sequence[Any]) -> RecordMeta:
    # A listing builds one per record listed: checked inline, as in ``_record``.
    if len(row) == 10:
        seq, vault_id, record_id, version, collection, created, epoch, batch, deleted, size = row
        if (
            type(seq) is int
            and type(vault_id) is str
            and type(record_id) is str
            and type(version) is int
            and type(collection) is str
            and type(created) is int
            and type(epoch) is int
            and type(batch) is bytes
            and type(size) is int
        ):
            return RecordMeta(
                seq,
                vault_id,
                record_id,
                version,
                collection,
                created,
                epoch,
                batch,
                _flag(deleted),
                size,
            )
    values = list(row)
    values[8] = _flag(values[8])
    return _typed(RecordMeta, values)


class _Cursor:
    """A cursor whose fetches raise pds errors (a fetch reads pages and decodes text, so it
    can meet corruption too), never with the stored bytes in the message."""

    __slots__ = ("_cursor",)

    def __init__(self, cursor: sqlite3.Cursor) -> None:
        self._cursor = cursor

    @property
    def rowcount(self) -> int:
        return self._cursor.rowcount

    @property
    def lastrowid(self) -> int | None:
        return self._cursor.lastrowid

    def fetchone(self) -> Any:
        return _fetch(self._cursor.fetchone)

    def fetchall(self) -> list[Any]:
        return list(_fetch(self._cursor.fetchall))

    def fetchmany(self, size: int) -> list[Any]:
        return list(_fetch(lambda: self._cursor.fetchmany(size)))

    def __iter__(self) -> Iterator[Any]:
        return iter(self.fetchall())


def _fetch(fetch: Callable[[], T]) -> T:
    try:
        return fetch()
    except sqlite3.Error as exc:
        raise _translate(exc) from None
    except UnicodeDecodeError:
        raise StoreCorrupt("a stored text value is not UTF-8") from None


class SQLiteBackend:
    """A pds store in one SQLite file. Not shareable between threads; open one per thread."""

    def __init__(
        self,
        path: Path,
        *,
        synchronous: Synchronous = "full",
        busy_timeout: float = 10.0,
        create: bool = True,
    ) -> None:
        self.path = path
        if not create and not path.exists():
            raise StoreNotFound(f"no store at {path}")
        self.is_new = False
        self._depth = 0
        self._on_commit: list[Callable[[], None]] = []
        self._busy_ms = int(busy_timeout * 1000)
        _check_wal_owner(path)
        try:
            self._conn = sqlite3.connect(str(path), timeout=busy_timeout, isolation_level=None)
        except sqlite3.Error as exc:
            raise _translate(exc) from None
        try:
            # Check first: a file that is not a pds store must be left exactly as it was.
            pending = self._check_schema(create)
            self._configure(synchronous)
            if pending is not None:
                self._migrate(pending)
                self.is_new = pending == 0
            if self.get_meta(STORE_ID) is None or self.get_meta(COMMITS) is None:
                # Stores made before the write-ahead log check get their id now.
                with self.transaction():
                    if self.get_meta(STORE_ID) is None:
                        self.set_meta(STORE_ID, secrets.token_hex(16))
                    if self.get_meta(COMMITS) is None:
                        self.set_meta(COMMITS, "0")
        except BaseException:
            self._conn.close()
            raise

    # -- plumbing

    def _run(self, fn: Callable[[], T]) -> T:
        try:
            return fn()
        except sqlite3.Error as exc:
            raise _translate(exc) from None

    def _failed(self, exc: sqlite3.Error) -> StoreError | NotAStore:
        """The pds error for a statement that failed.

        A statement of this pds failing on the schema itself (a table or column it names is
        gone, a NOT NULL column it does not fill) means a newer pds migrated the store
        while this process had it open: that is ``SchemaTooNew``, not a bare storage
        failure. The stored version is read only then, never on the way to a success.
        """
        error = _translate(exc)
        if type(error) is StoreError and isinstance(
            exc, sqlite3.IntegrityError | sqlite3.OperationalError
        ):
            try:
                row = self._conn.execute(
                    "SELECT value FROM meta WHERE key = 'schema_version'"
                ).fetchone()
            except sqlite3.Error:
                return error
            text = row[0] if row is not None else None
            if type(text) is str and text.isdigit() and int(text) > SCHEMA_VERSION:
                return SchemaTooNew(
                    f"a newer pds migrated the store to schema version {text} while this "
                    f"process had it open (this pds reads up to {SCHEMA_VERSION}); restart "
                    "the process with the newer pds"
                )
        return error

    def _execute(self, sql: str, params: Sequence[Any] = ()) -> _Cursor:
        try:
            if _faults.SEAM.armed:
                _faults.storage_call("execute")
            cursor = _Cursor(self._conn.execute(sql, params))
        except sqlite3.Error as exc:
            raise self._failed(exc) from None
        except UnicodeDecodeError:
            raise StoreCorrupt("a stored text value is not UTF-8") from None
        except UnicodeEncodeError:
            raise FormatError("text with characters UTF-8 cannot encode") from None
        if _faults.SEAM.armed:
            _faults.point("executed")
        return cursor

    def _executemany(self, sql: str, params: Iterable[Sequence[Any]]) -> None:
        try:
            if _faults.SEAM.armed:
                _faults.storage_call("executemany")
            self._conn.executemany(sql, params)
        except sqlite3.Error as exc:
            raise self._failed(exc) from None
        except UnicodeEncodeError:
            raise FormatError("text with characters UTF-8 cannot encode") from None
        if _faults.SEAM.armed:
            _faults.point("executed")

    def _configure(self, synchronous: Synchronous) -> None:
        mode = self._execute("PRAGMA journal_mode=WAL").fetchone()
        if mode is None or str(mode[0]).lower() != "wal":
            raise StoreError("the store could not switch to WAL mode")
        self._execute(f"PRAGMA synchronous={'FULL' if synchronous == 'full' else 'NORMAL'}")
        self._execute("PRAGMA secure_delete=ON")
        self._execute("PRAGMA foreign_keys=ON")

    def _check_schema(self, create: bool) -> int | None:
        """Return the schema version to migrate from (0: a new store), or ``None``."""
        tables = {
            row[0] for row in self._execute("SELECT name FROM sqlite_master WHERE type='table'")
        }
        if not tables:
            if not create:
                raise NotAStore("not a pds store (empty database)")
            return 0
        if "meta" not in tables:
            raise NotAStore("not a pds store (an SQLite database of another kind)")
        if self.get_meta("format") != STORE_FORMAT:
            raise NotAStore("not a pds store (unknown format marker)")
        version_text = self.get_meta("schema_version")
        if version_text is None or not version_text.isdigit():
            raise NotAStore("not a pds store (no schema version)")
        version = int(version_text)
        if version > SCHEMA_VERSION:
            raise SchemaTooNew(
                f"the store has schema version {version}; this pds reads up to {SCHEMA_VERSION}"
            )
        return version if version < SCHEMA_VERSION else None

    def _migrate(self, current: int) -> None:
        db = sqlite_utils.Database(self._conn, recursive_triggers=False, execute_plugins=False)
        with self.transaction():
            # Re-read inside the write lock: another process may have migrated meanwhile.
            tables = {
                r[0] for r in self._execute("SELECT name FROM sqlite_master WHERE type='table'")
            }
            if "meta" in tables:
                text = self.get_meta("schema_version")
                current = int(text) if text and text.isdigit() else current
            if current > SCHEMA_VERSION:
                # A newer pds migrated it while this one waited for the lock: writing this
                # version over it would hide the newer schema from both.
                raise SchemaTooNew(
                    f"the store has schema version {current}; this pds reads up to {SCHEMA_VERSION}"
                )
            if current == SCHEMA_VERSION:
                return  # another process migrated it meanwhile
            for version in range(current + 1, SCHEMA_VERSION + 1):
                self._run(lambda v=version: MIGRATIONS[v - 1](db))  # type: ignore[misc]
            self.set_meta("format", STORE_FORMAT)
            self.set_meta("schema_version", str(SCHEMA_VERSION))

    @contextmanager
    def transaction(self) -> Iterator[None]:
        if self._depth:
            self._depth += 1
            try:
                yield
            finally:
                self._depth -= 1
            return
        self._execute("BEGIN IMMEDIATE")
        self._depth = 1
        changes = self._conn.total_changes
        try:
            yield
            if self._conn.total_changes != changes:
                # Every commit rewrites the meta page, so the write-ahead log always holds
                # this store's id: a -wal copied beside another store is recognised.
                self._execute(
                    "UPDATE meta SET value = CAST(value AS INTEGER) + 1 WHERE key = ?", (COMMITS,)
                )
        except BaseException:
            self._depth = 0
            self._on_commit.clear()
            # The transaction may already be gone (SQLite rolls back on some errors itself).
            with contextlib.suppress(sqlite3.Error):
                self._conn.execute("ROLLBACK")
            raise
        self._depth = 0
        callbacks, self._on_commit = self._on_commit, []
        try:
            if _faults.SEAM.armed:
                _faults.storage_call("commit")
            self._conn.execute("COMMIT")
        except sqlite3.Error as exc:
            with contextlib.suppress(sqlite3.Error):
                self._conn.execute("ROLLBACK")
            raise _translate(exc) from None
        for callback in callbacks:
            callback()
        if _faults.SEAM.armed:
            _faults.point("committed")

    def in_transaction(self) -> bool:
        return self._depth > 0

    def after_commit(self, callback: Callable[[], None]) -> None:
        if self._depth:
            self._on_commit.append(callback)
        else:
            callback()

    @contextmanager
    def snapshot(self) -> Iterator[None]:
        if self._depth:
            yield
            return
        self._execute("BEGIN DEFERRED")
        self._depth = 1
        try:
            yield
        finally:
            self._depth = 0
            # Nothing was written; the snapshot is released either way. What it read was
            # committed: waiting callbacks run.
            callbacks, self._on_commit = self._on_commit, []
            with contextlib.suppress(sqlite3.Error):
                self._conn.execute("ROLLBACK")
            for callback in callbacks:
                callback()

    def close(self) -> None:
        self._conn.close()

    def checkpoint(self) -> None:
        """Copy the WAL into the database and truncate it, if no reader holds an older
        snapshot; otherwise SQLite checkpoints it later. Never waits: a waiting TRUNCATE
        checkpoint holds the write lock, and every writer would wait with it."""
        with contextlib.suppress(sqlite3.Error):
            self._conn.execute("PRAGMA busy_timeout = 0")
            try:
                self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            finally:
                self._conn.execute(f"PRAGMA busy_timeout = {self._busy_ms}")

    def integrity_check(self) -> list[str]:
        return [row[0] for row in self._execute("PRAGMA integrity_check")]

    def get_meta(self, key: str) -> str | None:
        row = self._execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def set_meta(self, key: str, value: str) -> None:
        self._execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, value))

    # -- vaults

    def insert_vault(self, row: VaultRow) -> None:
        self._execute(
            "INSERT INTO vaults (vault_id, created_at, identity_public, unlock, wrapped_master, "
            "wrapped_identity, destroyed_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (
                row.vault_id,
                row.created_at,
                row.identity_public,
                row.unlock,
                row.wrapped_master,
                row.wrapped_identity,
                row.destroyed_at,
            ),
        )

    def get_vault(self, vault_id: str) -> VaultRow | None:
        row = self._execute(
            "SELECT vault_id, created_at, identity_public, unlock, wrapped_master, "
            "wrapped_identity, destroyed_at, policy FROM vaults WHERE vault_id = ?",
            (vault_id,),
        ).fetchone()
        return None if row is None else _typed(VaultRow, row)

    def list_vaults(self) -> list[VaultRow]:
        rows = self._execute(
            "SELECT vault_id, created_at, identity_public, unlock, wrapped_master, "
            "wrapped_identity, destroyed_at, policy FROM vaults ORDER BY created_at, vault_id"
        ).fetchall()
        return [_typed(VaultRow, row) for row in rows]

    def update_vault_unlock(
        self, vault_id: str, unlock: bytes, wrapped_master: bytes, wrapped_identity: bytes
    ) -> None:
        self._execute(
            "UPDATE vaults SET unlock = ?, wrapped_master = ?, wrapped_identity = ? "
            "WHERE vault_id = ?",
            (unlock, wrapped_master, wrapped_identity, vault_id),
        )

    def erase_vault_keys(self, vault_id: str, destroyed_at: int) -> None:
        self._execute(
            "UPDATE vaults SET wrapped_master = NULL, wrapped_identity = NULL, destroyed_at = ? "
            "WHERE vault_id = ?",
            (destroyed_at, vault_id),
        )
        self._execute("UPDATE epochs SET sealed_owner = NULL WHERE vault_id = ?", (vault_id,))
        self._execute(
            "UPDATE batches SET sealed_reader = NULL, wrapped_host = NULL WHERE vault_id = ?",
            (vault_id,),
        )
        self._execute(
            "DELETE FROM link_keys WHERE link_id IN (SELECT link_id FROM links WHERE vault_id = ?)",
            (vault_id,),
        )

    def delete_vault_content(self, vault_id: str) -> None:
        self._execute("DELETE FROM records WHERE vault_id = ?", (vault_id,))
        self._execute("DELETE FROM batches WHERE vault_id = ?", (vault_id,))
        self._execute("DELETE FROM epochs WHERE vault_id = ?", (vault_id,))
        self._execute(
            "DELETE FROM link_uses WHERE link_id IN (SELECT link_id FROM links WHERE vault_id = ?)",
            (vault_id,),
        )
        self._execute("DELETE FROM links WHERE vault_id = ?", (vault_id,))
        self._execute("DELETE FROM nonces WHERE vault_id = ?", (vault_id,))

    # -- epochs

    _EPOCH_COLUMNS = (
        "vault_id, collection, epoch, public_key, created_at, signature, sealed_owner, seal_fields"
    )

    def insert_epoch(self, row: EpochRow) -> None:
        self._execute(
            f"INSERT INTO epochs ({self._EPOCH_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (
                row.vault_id,
                row.collection,
                row.epoch,
                row.public_key,
                row.created_at,
                row.signature,
                row.sealed_owner,
                int(row.seal_fields),
            ),
        )

    def current_epoch(self, vault_id: str, collection: str) -> EpochRow | None:
        row = self._execute(
            f"SELECT {self._EPOCH_COLUMNS} FROM epochs WHERE vault_id = ? AND collection = ? "
            "ORDER BY epoch DESC LIMIT 1",
            (vault_id, collection),
        ).fetchone()
        return None if row is None else _epoch(row)

    def get_epoch(self, vault_id: str, collection: str, epoch: int) -> EpochRow | None:
        row = self._execute(
            f"SELECT {self._EPOCH_COLUMNS} FROM epochs "
            "WHERE vault_id = ? AND collection = ? AND epoch = ?",
            (vault_id, collection, epoch),
        ).fetchone()
        return None if row is None else _epoch(row)

    def delete_epoch(self, vault_id: str, collection: str, epoch: int) -> None:
        self._execute(
            "DELETE FROM epochs WHERE vault_id = ? AND collection = ? AND epoch = ?",
            (vault_id, collection, epoch),
        )

    def iter_epochs(self, vault_id: str) -> Iterator[EpochRow]:
        cursor = self._execute(
            f"SELECT {self._EPOCH_COLUMNS} FROM epochs WHERE vault_id = ? "
            "ORDER BY collection, epoch",
            (vault_id,),
        )
        yield from (_epoch(row) for row in self._iterate(cursor))

    def list_collections(self, vault_id: str) -> list[str]:
        rows = self._execute(
            "SELECT DISTINCT collection FROM epochs WHERE vault_id = ? ORDER BY collection",
            (vault_id,),
        ).fetchall()
        return [row[0] for row in rows]

    # -- batches

    _BATCH_COLUMNS = (
        "vault_id, batch_id, collection, epoch, writer, created_at, manifest, signature, "
        "sealed_reader, wrapped_host"
    )

    def insert_batch(self, row: BatchRow) -> None:
        self._execute(
            f"INSERT INTO batches ({self._BATCH_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                row.vault_id,
                row.batch_id,
                row.collection,
                row.epoch,
                row.writer,
                row.created_at,
                row.manifest,
                row.signature,
                row.sealed_reader,
                row.wrapped_host,
            ),
        )

    def get_batch(self, vault_id: str, batch_id: bytes) -> BatchRow | None:
        row = self._execute(
            f"SELECT {self._BATCH_COLUMNS} FROM batches WHERE batch_id = ? AND vault_id = ?",
            (batch_id, vault_id),
        ).fetchone()
        return None if row is None else _typed(BatchRow, row)

    def iter_batches(self, vault_id: str) -> Iterator[BatchRow]:
        cursor = self._execute(
            f"SELECT {self._BATCH_COLUMNS} FROM batches WHERE vault_id = ? ORDER BY bseq",
            (vault_id,),
        )
        # Batch rows carry manifests (up to ~8 KB): fetch few at a time.
        yield from (_typed(BatchRow, row) for row in self._iterate(cursor, 8))

    # -- records

    def insert_records(self, rows: Sequence[RecordRow]) -> None:
        updates = [(row.vault_id, row.record_id) for row in rows if row.version > 1]
        if updates:
            self._executemany(
                "UPDATE records SET current = 0 "
                "WHERE vault_id = ? AND record_id = ? AND current = 1",
                updates,
            )
        self._executemany(
            "INSERT INTO records (vault_id, record_id, version, collection, created_at, "
            "epoch, batch_id, deleted, current, size, nonce, ciphertext) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, 1, ?, ?, ?)",
            [
                (
                    row.vault_id,
                    row.record_id,
                    row.version,
                    row.collection,
                    row.created_at,
                    row.epoch,
                    row.batch_id,
                    int(row.deleted),
                    len(row.ciphertext or b""),
                    row.nonce,
                    row.ciphertext,
                )
                for row in rows
            ],
        )

    def latest_versions(
        self, vault_id: str, record_ids: Sequence[str]
    ) -> dict[str, tuple[int, str]]:
        result: dict[str, tuple[int, str]] = {}
        for start in range(0, len(record_ids), _IN_CHUNK):
            chunk = list(record_ids[start : start + _IN_CHUNK])
            marks = ", ".join("?" * len(chunk))
            # SQLite takes the bare column (collection) from the row holding the MAX.
            rows = self._execute(
                "SELECT record_id, MAX(version), collection FROM records "
                f"WHERE vault_id = ? AND record_id IN ({marks}) GROUP BY record_id",
                [vault_id, *chunk],
            ).fetchall()
            for record_id, version, collection in rows:
                result[str(record_id)] = (int(version), str(collection))
        return result

    def latest_record(self, vault_id: str, record_id: str) -> RecordRow | None:
        row = self._execute(
            f"SELECT {_RECORD_COLUMNS} FROM records WHERE vault_id = ? AND record_id = ? "
            "ORDER BY version DESC LIMIT 1",
            (vault_id, record_id),
        ).fetchone()
        return None if row is None else _record(row)

    def record_history(self, vault_id: str, record_id: str) -> list[RecordRow]:
        rows = self._execute(
            f"SELECT {_RECORD_COLUMNS} FROM records WHERE vault_id = ? AND record_id = ? "
            "ORDER BY version",
            (vault_id, record_id),
        ).fetchall()
        return [_record(row) for row in rows]

    def erase_record_content(self, vault_id: str, record_id: str, below_version: int) -> None:
        self._execute(
            "UPDATE records SET nonce = NULL, ciphertext = NULL "
            "WHERE vault_id = ? AND record_id = ? AND version < ?",
            (vault_id, record_id, below_version),
        )

    def iter_batch_records(self, vault_id: str, batch_id: bytes) -> Iterator[RecordRow]:
        cursor = self._execute(
            f"SELECT {_RECORD_COLUMNS} FROM records WHERE batch_id = ? AND vault_id = ? "
            "ORDER BY seq",
            (batch_id, vault_id),
        )
        yield from (_record(row) for row in self._iterate(cursor))

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
        clauses = ["vault_id = ?", "current = 1"]
        params: list[Any] = [vault_id]
        if scope is not None and "*" not in scope:
            alternatives = []
            for pattern in scope:
                if pattern.endswith("/*"):
                    # substr, not LIKE: '_' in a collection name is not a wildcard.
                    prefix = pattern[:-1]
                    alternatives.append("substr(collection, 1, ?) = ?")
                    params.extend([len(prefix), prefix])
                else:
                    alternatives.append("collection = ?")
                    params.append(pattern)
            clauses.append(f"({' OR '.join(alternatives) or '0'})")
        if collection is not None:
            clauses.append("collection = ?")
            params.append(collection)
        if since is not None:
            clauses.append("created_at >= ?")
            params.append(since)
        if until is not None:
            clauses.append("created_at < ?")
            params.append(until)
        if after is not None:
            clauses.append("(created_at, seq) > (?, ?)")
            params.extend(after)
        params.append(limit)
        rows = self._execute(
            f"SELECT {_META_COLUMNS} FROM records WHERE {' AND '.join(clauses)} "
            "ORDER BY created_at, seq LIMIT ?",
            params,
        ).fetchall()
        return [_meta(r) for r in rows]

    def finish_import(self, vault_id: str) -> None:
        self._execute("UPDATE records SET current = 0 WHERE vault_id = ?", (vault_id,))
        self._execute(
            "UPDATE records SET current = 1 WHERE vault_id = ? AND version = "
            "(SELECT MAX(r.version) FROM records r "
            "WHERE r.vault_id = records.vault_id AND r.record_id = records.record_id)",
            (vault_id,),
        )

    def get_records(self, vault_id: str, record_ids: Sequence[str]) -> list[RecordRow]:
        latest: dict[str, RecordRow] = {}
        unique = list(dict.fromkeys(record_ids))
        for start in range(0, len(unique), _IN_CHUNK):
            chunk = unique[start : start + _IN_CHUNK]
            marks = ", ".join("?" * len(chunk))
            # Unordered (an ORDER BY here sorts in a temporary B-tree): the newest version
            # of each id is kept as the rows come.
            rows = self._execute(
                f"SELECT {_RECORD_COLUMNS} FROM records WHERE vault_id = ? "
                f"AND record_id IN ({marks})",
                [vault_id, *chunk],
            ).fetchall()
            for raw in rows:
                record = _record(raw)
                kept = latest.get(record.record_id)
                if kept is None or record.version > kept.version:
                    latest[record.record_id] = record
        return [latest[record_id] for record_id in unique if record_id in latest]

    def set_policy(self, vault_id: str, policy: bytes) -> None:
        self._execute("UPDATE vaults SET policy = ? WHERE vault_id = ?", (policy, vault_id))

    # -- tokens

    _LINK_COLUMNS = (
        "link_id, vault_id, parent_id, audience, not_before, expires, uses, created_at, "
        "sealed_token"
    )

    def insert_link(self, row: LinkRow) -> None:
        self._execute(
            f"INSERT OR IGNORE INTO links ({self._LINK_COLUMNS}) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                row.link_id,
                row.vault_id,
                row.parent_id,
                row.audience,
                row.not_before,
                row.expires,
                row.uses,
                row.created_at,
                row.sealed_token,
            ),
        )

    def get_link(self, link_id: bytes) -> LinkRow | None:
        row = self._execute(
            f"SELECT {self._LINK_COLUMNS} FROM links WHERE link_id = ?", (link_id,)
        ).fetchone()
        return None if row is None else _typed(LinkRow, row)

    def iter_links(self, vault_id: str) -> Iterator[LinkRow]:
        cursor = self._execute(
            f"SELECT {self._LINK_COLUMNS} FROM links WHERE vault_id = ? "
            "ORDER BY created_at, link_id",
            (vault_id,),
        )
        yield from (_typed(LinkRow, row) for row in self._iterate(cursor))

    def insert_link_keys(self, rows: Sequence[LinkKeyRow]) -> None:
        self._executemany(
            "INSERT OR IGNORE INTO link_keys (link_id, collection, epoch, sealed) "
            "VALUES (?, ?, ?, ?)",
            [(r.link_id, r.collection, r.epoch, r.sealed) for r in rows],
        )

    def shared_epochs(self, vault_id: str, at_most: int) -> dict[str, int]:
        rows = self._execute(
            "SELECT k.collection, MAX(k.epoch) FROM links AS l "
            "JOIN link_keys AS k ON k.link_id = l.link_id WHERE l.vault_id = ? "
            "AND k.epoch BETWEEN 1 AND ? GROUP BY k.collection",
            (vault_id, at_most),
        ).fetchall()
        found: dict[str, int] = {}
        for collection, epoch in rows:
            if type(collection) is not str or type(epoch) is not int:
                raise StoreCorrupt("a stored value has the wrong type")
            found[collection] = epoch
        return found

    def link_keys(self, link_id: bytes) -> list[LinkKeyRow]:
        rows = self._execute(
            "SELECT link_id, collection, epoch, sealed FROM link_keys WHERE link_id = ? "
            "ORDER BY collection, epoch",
            (link_id,),
        ).fetchall()
        return [_typed(LinkKeyRow, row) for row in rows]

    def insert_revocation(self, row: RevocationRow) -> None:
        # The vault's own row only: keyed by the link alone (schema 4), another vault's row
        # for the same link makes the insert fail rather than disappear.
        self._execute(
            "DELETE FROM revocations WHERE vault_id = ? AND link_id = ?",
            (row.vault_id, row.link_id),
        )
        self._execute(
            "INSERT INTO revocations (link_id, vault_id, revoked_at, statement, signature) "
            "VALUES (?, ?, ?, ?, ?)",
            (row.link_id, row.vault_id, row.revoked_at, row.statement, row.signature),
        )

    def delete_revocation(self, vault_id: str, link_id: bytes) -> None:
        self._execute(
            "DELETE FROM revocations WHERE vault_id = ? AND link_id = ?", (vault_id, link_id)
        )

    def revoked_among(self, vault_id: str, link_ids: Sequence[bytes]) -> list[bytes]:
        if not link_ids:
            return []
        marks = ", ".join("?" * len(link_ids))
        rows = self._execute(
            f"SELECT link_id FROM revocations WHERE vault_id = ? AND link_id IN ({marks})",
            [vault_id, *link_ids],
        ).fetchall()
        return [row[0] for row in rows]

    def iter_revocations(self, vault_id: str) -> Iterator[RevocationRow]:
        cursor = self._execute(
            "SELECT vault_id, link_id, revoked_at, statement, signature FROM revocations "
            "WHERE vault_id = ? ORDER BY revoked_at, link_id",
            (vault_id,),
        )
        yield from (_typed(RevocationRow, row) for row in self._iterate(cursor))

    def use_counts(self, link_ids: Sequence[bytes]) -> dict[bytes, int]:
        if not link_ids:
            return {}
        marks = ", ".join("?" * len(link_ids))
        rows = self._execute(
            f"SELECT link_id, count FROM link_uses WHERE link_id IN ({marks})", list(link_ids)
        ).fetchall()
        return {row[0]: int(row[1]) for row in rows}

    def add_uses(self, link_ids: Sequence[bytes]) -> None:
        self._executemany(
            "INSERT INTO link_uses (link_id, count) VALUES (?, 1) "
            "ON CONFLICT (link_id) DO UPDATE SET count = count + 1",
            [(link_id,) for link_id in link_ids],
        )

    def set_uses(self, link_id: bytes, count: int) -> None:
        self._execute(
            "INSERT OR REPLACE INTO link_uses (link_id, count) VALUES (?, ?)", (link_id, count)
        )

    def remember_nonce(self, vault_id: str, nonce: bytes, time: int, policy: bytes | None) -> bool:
        # The vault's state is checked by the same statement: inside the write transaction,
        # a destroy or a policy change cannot commit between this check and the serve's.
        cursor = self._execute(
            "INSERT OR IGNORE INTO nonces (nonce, vault_id, time) SELECT ?, ?, ? "
            "WHERE EXISTS (SELECT 1 FROM vaults WHERE vault_id = ? AND destroyed_at IS NULL "
            "AND policy IS ?)",
            (nonce, vault_id, time, vault_id, policy),
        )
        return cursor.rowcount == 1

    def prune_nonces(self, older_than: int) -> None:
        self._execute("DELETE FROM nonces WHERE time < ?", (older_than,))

    def log_size(self, vault_id: str) -> int:
        row = self._execute(
            "SELECT MAX(idx) FROM log_entries WHERE vault_id = ?", (vault_id,)
        ).fetchone()
        return 0 if row is None or row[0] is None else int(row[0]) + 1

    def append_log(
        self,
        vault_id: str,
        index: int,
        time: int,
        entry: bytes,
        nodes: Sequence[tuple[int, int, bytes]],
    ) -> None:
        self._execute(
            "INSERT INTO log_entries (vault_id, idx, time, entry) VALUES (?, ?, ?, ?)",
            (vault_id, index, time, entry),
        )
        self._executemany(
            "INSERT INTO log_nodes (vault_id, band, tile, level, idx, hash) "
            f"VALUES (?1, {_NODE_BAND}, {_NODE_TILE}, ?2, ?3, ?4)",
            [(vault_id, level, idx, digest) for level, idx, digest in nodes],
        )

    def log_node(self, vault_id: str, level: int, index: int) -> bytes | None:
        row = self._execute(
            f"SELECT hash FROM log_nodes WHERE vault_id = ?1 AND band = {_NODE_BAND} "
            f"AND tile = {_NODE_TILE} AND level = ?2 AND idx = ?3",
            (vault_id, level, index),
        ).fetchone()
        if row is None:
            return None
        if type(row[0]) is not bytes:
            # bytes() of a number is that many zero bytes, of text a TypeError.
            raise StoreCorrupt("a stored value has the wrong type")
        return row[0]

    def log_nodes(
        self, vault_id: str, coordinates: Sequence[tuple[int, int]]
    ) -> dict[tuple[int, int], bytes]:
        unique = list(dict.fromkeys(coordinates))
        found: dict[tuple[int, int], bytes] = {}
        for start in range(0, len(unique), _IN_CHUNK // 2):
            chunk = unique[start : start + _IN_CHUNK // 2]
            # The wanted coordinates as a table of constants, joined to the nodes: one
            # primary-key lookup per node in one statement (a row-value IN list would scan
            # the table; a UNION ALL of point queries costs ~10% more per proof).
            values = ", ".join(["(?, ?)"] * len(chunk))
            rows = self._execute(
                f"WITH wanted (level, idx) AS (VALUES {values}) "
                "SELECT n.level, n.idx, n.hash FROM wanted CROSS JOIN log_nodes AS n "
                f"ON n.vault_id = ? AND n.band = {_WANTED_BAND} AND n.tile = {_WANTED_TILE} "
                "AND n.level = wanted.level AND n.idx = wanted.idx",
                [*(n for coordinate in chunk for n in coordinate), vault_id],
            ).fetchall()
            for level, index, digest in rows:
                if type(level) is not int or type(index) is not int or type(digest) is not bytes:
                    raise StoreCorrupt("a stored value has the wrong type")
                found[(level, index)] = digest
        return found

    def iter_log(
        self, vault_id: str, start: int, end: int, *, newest_first: bool = False
    ) -> Iterator[tuple[int, bytes]]:
        order = "DESC" if newest_first else "ASC"
        # An entry is the host's bytes, whatever they are. A cell rewritten with another
        # storage class (TEXT, not UTF-8 even, or a number) is read as its bytes too, which
        # parse as no entry: the owner's view lists it as damaged and verification hashes
        # it as it is (a fork if a head covered other bytes there), where reading it as
        # text would raise (a TypeError, or StoreCorrupt for text that is not UTF-8) and
        # stop the owner's whole view at that one entry. A NULL (the host can rebuild the
        # table without its NOT NULL) is no bytes.
        cursor = self._execute(
            "SELECT idx, COALESCE(CAST(entry AS BLOB), x'') FROM log_entries "
            f"WHERE vault_id = ? AND idx >= ? AND idx < ? ORDER BY idx {order}",
            (vault_id, start, end),
        )
        yield from ((int(row[0]), bytes(row[1])) for row in self._iterate(cursor))

    def put_checkpoint(self, vault_id: str, size: int, time: int, note: str) -> None:
        self._execute(
            "INSERT OR REPLACE INTO log_checkpoints (vault_id, size, time, note) "
            "VALUES (?, ?, ?, ?)",
            (vault_id, size, time, note),
        )

    def latest_checkpoint(self, vault_id: str) -> str | None:
        row = self._execute(
            "SELECT note FROM log_checkpoints WHERE vault_id = ? ORDER BY size DESC LIMIT 1",
            (vault_id,),
        ).fetchone()
        return None if row is None else str(row[0])

    def _iterate(self, cursor: _Cursor, chunk: int = 256) -> Iterator[tuple[Any, ...]]:
        while True:
            rows = cursor.fetchmany(chunk)
            if not rows:
                return
            yield from rows
