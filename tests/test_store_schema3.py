"""Schema 3: the small-row tables keyed by something other than an integer (``log_nodes``,
``nonces``, ``link_keys``, ``link_uses``) are ``WITHOUT ROWID`` tables, and a schema-2 store
is rebuilt that way when it is opened, all or nothing.

A schema-2 store is made by the store's own open path with only the first two migrations
(``SCHEMA_VERSION`` and ``MIGRATIONS`` patched for the duration), then filled through the
public API: records, a grant with a use budget, served reads (nonces, use counts, log
entries and subtree hashes), a rotation (epoch keys sealed to the grant) and a signed
checkpoint. The file is inspected with raw ``sqlite3``; nothing here mocks the store.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import shutil
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import pytest

import pds
from pds import _faults, merkle
from pds._store import sqlite as sqlite_store
from pds._store.base import LinkKeyRow
from pds._store.sqlite import SQLiteBackend
from pds.accesslog import Checkpoint
from pds.errors import Replayed, StoreCorrupt, StoreError

if TYPE_CHECKING:
    from tests.crash_helpers import in_child
    from tests.tokens_helpers import T0_MS, ManualClock
else:
    from crash_helpers import in_child
    from tokens_helpers import T0_MS, ManualClock

REBUILT = ("log_nodes", "nonces", "link_keys", "link_uses")
"""The tables schema 3 makes WITHOUT ROWID."""
KEPT = ("meta", "log_entries", "log_checkpoints", "links", "revocations", "records", "batches")
"""Tables whose rows are large (or ``meta``, the format anchor): rowid tables still."""
COLLECTION = "tax/2024"


# -- raw views of a store file


@contextlib.contextmanager
def _raw(path: Path) -> Iterator[sqlite3.Connection]:
    with contextlib.closing(sqlite3.connect(path)) as conn:
        yield conn


def _schema_version(path: Path) -> int:
    with _raw(path) as conn:
        (value,) = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
    return int(value)


def _without_rowid(path: Path) -> dict[str, bool]:
    """Each table's ``wr`` flag (SQLite 3.37+ ``pragma_table_list``)."""
    with _raw(path) as conn:
        rows = conn.execute(
            "SELECT name, wr FROM pragma_table_list WHERE schema = 'main' AND type = 'table'"
        ).fetchall()
    return {str(name): bool(wr) for name, wr in rows}


def _schema(path: Path) -> set[tuple[Any, ...]]:
    with _raw(path) as conn:
        rows = conn.execute("SELECT type, name, tbl_name, sql FROM sqlite_master").fetchall()
    return {tuple(row) for row in rows}


def _columns(path: Path, table: str) -> list[tuple[Any, ...]]:
    """``PRAGMA table_info`` rows: (cid, name, type, notnull, default, pk)."""
    with _raw(path) as conn:
        return [tuple(row) for row in conn.execute(f'PRAGMA table_info("{table}")')]


def _rows(path: Path) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every table, sorted; ``meta`` without the entries every open or every
    commit may change (the commit counter, the schema version)."""
    with _raw(path) as conn:
        tables = [
            row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")
        ]
        dump = {
            table: sorted(
                (tuple(row) for row in conn.execute(f'SELECT * FROM "{table}"')), key=repr
            )
            for table in tables
            if table != "sqlite_sequence"
        }
    dump["meta"] = [row for row in dump["meta"] if row[0] not in ("commits", "schema_version")]
    return dump


def _integrity(path: Path) -> list[str]:
    with _raw(path) as conn:
        return [row[0] for row in conn.execute("PRAGMA integrity_check")]


def _remove_wal(path: Path) -> None:
    for suffix in ("-wal", "-shm", "-journal"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)


# -- a schema-2 store, made by the store's own open path


@contextlib.contextmanager
def _schema_2() -> Iterator[None]:
    """While inside, this pds makes and opens stores at schema version 2, as the release
    before schema 3 did: the open path runs only the first two migrations."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(sqlite_store, "SCHEMA_VERSION", 2)
        patch.setattr(sqlite_store, "MIGRATIONS", sqlite_store.MIGRATIONS[:2])
        yield


@dataclass
class Old:
    """A schema-2 store file with everything schema 3 rebuilds in it, and what to check
    it against."""

    path: Path
    pristine: Path
    key_file: Path
    clock: ManualClock
    vault_id: str
    agency: pds.PrincipalKey
    token: pds.Token
    served: bytes
    """An invocation the store served: replaying it must be refused."""
    head: Checkpoint
    rotated_record: str
    """A record written after the rotation: the grantee opens it with a sealed epoch key."""
    rows: dict[str, list[tuple[Any, ...]]]

    def restore(self) -> None:
        _remove_wal(self.path)
        shutil.copyfile(self.pristine, self.path)

    def open(self) -> pds.Store:
        return pds.open_store(self.path, clock=self.clock, create=False)

    def vault(self, store: pds.Store) -> pds.Vault:
        vault = store.open_vault(self.vault_id)
        vault.unlock(key_file=self.key_file)
        return vault


def _build_old(root: Path) -> Old:
    root.mkdir(parents=True, exist_ok=True)
    path = root / "store.db"
    key_file = root / "owner.key"
    pds.SymmetricKey.create_file(key_file)
    clock = ManualClock(T0_MS)
    agency = pds.PrincipalKey.generate()
    grantee = pds.Grantee(agency, clock=clock)
    with _schema_2(), pds.open_store(path, clock=clock) as store:
        vault = store.open_vault(store.create_vault(key_file=key_file))
        vault.unlock(key_file=key_file)
        for n in range(3):
            vault.put(COLLECTION, {"income": 1000 + n})
        token = vault.grant(
            agency.did,
            collections=["tax/*"],
            purpose="benefit check",
            expires=dt.timedelta(days=30),
            uses=100,
        )
        for _ in range(4):
            clock.advance(1_000)
            assert len(grantee.read(store, token).records) == 3
        clock.advance(1_000)
        invocation = grantee.invoke(token).to_bytes()
        assert len(store.serve(invocation).records) == 3
        vault.rotate(COLLECTION)  # seals the new epoch's key to the grant: link_keys rows
        rotated = vault.put(COLLECTION, {"income": 2000}).record_id
        for _ in range(3):
            clock.advance(1_000)
            vault.get(rotated)  # owner reads: more log entries and subtree hashes
        head = vault.checkpoint()
        vault.verify_log(head)
        vault_id = vault.vault_id
    old = Old(
        path=path,
        pristine=root / "pristine.db",
        key_file=key_file,
        clock=clock,
        vault_id=vault_id,
        agency=agency,
        token=token,
        served=invocation,
        head=head,
        rotated_record=rotated,
        rows=_rows(path),
    )
    # Positive control: this really is the schema-2 layout, with rows in every table that
    # schema 3 rebuilds.
    assert _schema_version(path) == 2
    flags = _without_rowid(path)
    assert not any(flags[table] for table in (*REBUILT, *KEPT))
    with _raw(path) as conn:
        autoindexes = {
            row[0]
            for row in conn.execute(
                "SELECT tbl_name FROM sqlite_master WHERE name LIKE 'sqlite_autoindex_%'"
            )
        }
    assert set(REBUILT) <= autoindexes
    for table in REBUILT:
        assert old.rows[table], f"no rows in {table}"
    assert len(old.rows["log_entries"]) == head.size >= 10
    _remove_wal(path)  # closed cleanly: the log was checkpointed into the file
    shutil.copyfile(path, old.pristine)
    return old


@pytest.fixture(scope="module")
def old_store(tmp_path_factory: pytest.TempPathFactory) -> Old:
    return _build_old(tmp_path_factory.mktemp("schema2"))


@pytest.fixture
def old(old_store: Old) -> Old:
    old_store.restore()
    old_store.clock.set(old_store.head.time)
    return old_store


def _assert_migrated(old: Old) -> None:
    """The file is at schema 3, laid out as a new store is, with every row it had."""
    assert _schema_version(old.path) == sqlite_store.SCHEMA_VERSION == 3
    flags = _without_rowid(old.path)
    assert all(flags[table] for table in REBUILT), flags
    assert not any(flags[table] for table in KEPT), flags
    assert _rows(old.path) == old.rows
    assert _integrity(old.path) == ["ok"]


def _assert_untouched(old: Old) -> None:
    """The file is the schema-2 store it was: same version, layout and rows."""
    assert _schema_version(old.path) == 2
    assert not any(_without_rowid(old.path)[table] for table in REBUILT)
    assert _rows(old.path) == old.rows
    assert _integrity(old.path) == ["ok"]


def _assert_works(old: Old, store: pds.Store) -> None:
    """What the rebuilt tables hold still does its job."""
    vault = old.vault(store)
    # log_nodes: the log verifies against the head signed at schema 2, proofs check out.
    vault.verify_log(old.head)
    latest = vault.latest_checkpoint()
    assert latest == old.head
    for index in range(old.head.size):
        entry, proof = vault.prove_inclusion(index, old.head.size)
        merkle.verify_inclusion(entry.leaf_hash, index, old.head.size, proof, old.head.root)
    # nonces: the invocation served at schema 2 is a replay.
    with pytest.raises(Replayed) as refused:
        store.serve(old.served)
    assert refused.value.reason == "replay"
    # link_uses: the budget spent at schema 2 is still spent.
    link_id = old.token.leaf.link_id.hex()
    assert next(g.used for g in vault.grants() if g.link_id == link_id) == 5
    # link_keys: the grantee opens what was written after the rotation with the epoch key
    # sealed to its grant.
    old.clock.advance(1_000)
    grantee = pds.Grantee(old.agency, clock=old.clock)
    read = grantee.read(store, old.token, records=[old.rotated_record])
    assert read.pending == []
    assert [record.data for record in read.records] == [{"income": 2000}]
    # And the log grows on from the rebuilt subtree hashes.
    head = vault.checkpoint()
    assert head.size > old.head.size
    vault.verify_log(head)
    proof = vault.prove_consistency(old.head.size, head.size)
    merkle.verify_consistency(old.head.size, head.size, old.head.root, head.root, proof)


# -- (a) a new store


def test_a_new_store_keeps_small_rows_without_rowid(tmp_path: Path) -> None:
    path = tmp_path / "store.db"
    pds.open_store(path).close()
    assert _schema_version(path) == sqlite_store.SCHEMA_VERSION == 3
    flags = _without_rowid(path)
    assert all(flags[table] for table in REBUILT), flags
    assert not any(flags[table] for table in KEPT), flags
    with _raw(path) as conn:
        objects = {
            (kind, name): tbl
            for kind, name, tbl in conn.execute("SELECT type, name, tbl_name FROM sqlite_master")
        }
        for table in REBUILT:
            (sql,) = conn.execute(
                "SELECT sql FROM sqlite_master WHERE type = 'table' AND name = ?", (table,)
            ).fetchone()
            assert sql.endswith("WITHOUT ROWID")
            # No second B-tree for the key.
            assert ("index", f"sqlite_autoindex_{table}_1") not in objects
    # The one other index on them: the replay cache is pruned by time.
    indexes = {
        name for (kind, name), table in objects.items() if kind == "index" and table in REBUILT
    }
    assert indexes == {"idx_nonces_time"}
    assert objects["index", "idx_nonces_time"] == "nonces"


def test_the_rebuilt_tables_have_the_columns_and_keys_of_schema_2(
    old_store: Old, tmp_path: Path
) -> None:
    new = tmp_path / "store.db"
    pds.open_store(new).close()
    for table in REBUILT:
        before, after = _columns(old_store.pristine, table), _columns(new, table)
        # Same names, order, types, defaults and primary key positions...
        assert [(c[0], c[1], c[2], c[4], c[5]) for c in before] == [
            (c[0], c[1], c[2], c[4], c[5]) for c in after
        ], table
        # ...and the same NOT NULL constraints, plus NOT NULL on the key columns (which a
        # WITHOUT ROWID table enforces whatever its declaration says).
        for old_column, new_column in zip(before, after, strict=True):
            assert new_column[3] == (old_column[3] or bool(old_column[5])), (table, new_column)
    with _raw(new) as conn:
        (sql,) = conn.execute("SELECT sql FROM sqlite_master WHERE name = 'idx_nonces_time'")
        assert sql[0] == 'CREATE INDEX "idx_nonces_time" ON "nonces" ("time")'


# -- the hot paths use the key


def test_hot_path_statements_use_the_primary_key_and_write_one_btree(
    tmp_path: Path,
) -> None:
    """EXPLAIN the statements the backend really runs: lookups search the table by its
    primary key (the nonce insert also reads its vault's row by key), and each insert writes
    the table alone (plus the time index for nonces)."""
    with pds.open_store(tmp_path / "store.db") as store:
        backend = cast(SQLiteBackend, store.backend)
        conn = backend._conn  # White-box: the statements are the backend's own.
        # A live vault "v": a nonce is remembered only for one.
        conn.execute(
            "INSERT INTO vaults (vault_id, created_at, identity_public, unlock) "
            "VALUES ('v', 0, x'00', x'00')"
        )
        seen: list[str] = []
        conn.set_trace_callback(seen.append)
        try:
            with backend.transaction():
                backend.append_log("v", 0, 1, b"entry", [(0, 0, b"h" * 32), (1, 0, b"g" * 32)])
                assert backend.log_node("v", 1, 0) == b"g" * 32
                assert backend.log_nodes("v", [(0, 0), (1, 0), (2, 0)]) == {
                    (0, 0): b"h" * 32,
                    (1, 0): b"g" * 32,
                }
                assert backend.remember_nonce("v", b"n" * 16, 5, None)
                assert not backend.remember_nonce("v", b"n" * 16, 6, None)
                backend.prune_nonces(3)
                backend.insert_link_keys([LinkKeyRow(b"l" * 32, "c", 1, b"s")])
                assert [k.sealed for k in backend.link_keys(b"l" * 32)] == [b"s"]
                backend.add_uses([b"l" * 32])
                backend.add_uses([b"l" * 32])
                assert backend.use_counts([b"l" * 32]) == {b"l" * 32: 2}
        finally:
            conn.set_trace_callback(None)
        roots = {
            int(page): str(name)
            for name, page in conn.execute("SELECT name, rootpage FROM sqlite_master")
        }
        checked: dict[str, set[str]] = {}
        for sql in seen:
            table = next((t for t in REBUILT if f" {t} " in f"{sql} "), None)
            if table is None:
                continue
            plan = [row[3] for row in conn.execute(f"EXPLAIN QUERY PLAN {sql}")]
            for step in plan:
                if step == "SCAN CONSTANT ROW" or step.startswith("SCALAR SUBQUERY"):
                    continue  # The nonce insert's SELECT of its own values.
                if step in ("CO-ROUTINE wanted", "SCAN wanted") or (
                    step.startswith("SCAN ") and step.endswith(" CONSTANT ROWS")
                ):
                    continue  # The node lookup's table of wanted coordinates, in the query.
                if step.startswith("SEARCH vaults "):
                    # The nonce insert's check that the vault is live: by the vaults key.
                    assert step.endswith("(vault_id=?)") and sql.startswith("INSERT"), (sql, plan)
                    continue
                assert "sqlite_autoindex" not in step, (sql, plan)
                assert not step.startswith("SCAN"), (sql, plan)
                if step.startswith("SEARCH"):
                    assert "USING PRIMARY KEY" in step or "idx_nonces_time" in step, (sql, plan)
            written = {
                roots[int(row[3])]  # (addr, opcode, p1, p2 = the root page, ...)
                for row in conn.execute(f"EXPLAIN {sql}")
                if row[1] == "OpenWrite"
            }
            if sql.startswith(("INSERT", "DELETE")):
                expected = {table, "idx_nonces_time"} if table == "nonces" else {table}
                assert written == expected, (sql, written)
            checked.setdefault(table, set()).add(sql.split()[0])
    assert checked == {
        "log_nodes": {"INSERT", "SELECT", "WITH"},
        "nonces": {"INSERT", "DELETE"},
        "link_keys": {"INSERT", "SELECT"},
        "link_uses": {"INSERT", "SELECT"},
    }


# -- (b) a schema-2 store is migrated when opened


def test_a_schema_2_store_is_rebuilt_on_open_and_keeps_working(old: Old, tmp_path: Path) -> None:
    with old.open() as store:
        _assert_migrated(old)
        _assert_works(old, store)
    # The migrated store is laid out exactly as a new one.
    new = tmp_path / "new.db"
    pds.open_store(new).close()
    assert {
        row for row in _schema(old.path) if row[0] != "table" or row[1] != "sqlite_sequence"
    } == {row for row in _schema(new) if row[0] != "table" or row[1] != "sqlite_sequence"}
    # Opening again migrates nothing more.
    before = _rows(old.path)
    with old.open():
        pass
    assert _rows(old.path) == before
    assert _schema_version(old.path) == 3


def test_a_schema_2_store_with_a_tampered_key_is_refused_as_corrupt(old: Old) -> None:
    """A rowid table let a key cell be NULL (SQLite's legacy rule); only a change outside
    pds makes one, and the migration refuses it with a clear error, leaving schema 2."""
    with _raw(old.path) as con:
        assert con.execute("UPDATE nonces SET nonce = NULL WHERE rowid = 1").rowcount == 1
        con.commit()
    with pytest.raises(StoreCorrupt, match="nonces row has a missing or repeated key"):
        old.open()
    assert _schema_version(old.path) == 2
    assert not any(_without_rowid(old.path)[table] for table in REBUILT)


def test_a_store_left_open_by_schema_2_code_works_after_another_opener_migrates(
    old: Old,
) -> None:
    """An older process that opened the store before the upgrade keeps serving: its
    statements are prepared again against the rebuilt tables."""
    with _schema_2():
        older = old.open()
    try:
        with old.open():
            pass
        _assert_migrated(old)
        _assert_works(old, older)
    finally:
        older.close()
    assert _schema_version(old.path) == 3


# -- (c) all or nothing


def _open_calls(old: Old) -> int:
    """How many storage calls opening the schema-2 store makes, migration included."""
    old.restore()
    with _faults.fail_storage(10**9):
        old.open().close()
        calls = _faults.storage_calls()
    old.restore()
    return calls


def test_a_storage_failure_anywhere_in_the_migration_leaves_schema_2(old: Old) -> None:
    calls = _open_calls(old)
    with _schema_2():
        old.restore()
        with _faults.fail_storage(10**9):
            old.open().close()
            plain = _faults.storage_calls()
    # Every statement of migration 3 is a storage call the seam can fail: 4 per table and
    # the nonces' index.
    assert calls - plain >= 4 * len(REBUILT) + 1, (calls, plain)
    failed = 0
    for k in range(1, calls + 1):
        old.restore()
        try:
            with _faults.fail_storage(k):
                old.open().close()
        except StoreError as error:
            assert "input/output" in str(error), error
            # Failed before the migration committed: untouched; after it: all there.
            if _schema_version(old.path) == 2:
                failed += 1
                _assert_untouched(old)
            else:
                _assert_migrated(old)
        else:
            _assert_migrated(old)
        # With the fault gone, the next open migrates it.
        with old.open():
            pass
        _assert_migrated(old)
    # Every statement of the migration transaction failed once, leaving schema 2.
    assert failed >= calls - plain
    old.restore()
    with old.open() as store:
        _assert_works(old, store)


@pytest.mark.slow
def test_a_crash_anywhere_in_the_migration_leaves_schema_2_or_3(old: Old) -> None:
    """A process ended at any crash point of the migrating open (no rollback, no cleanup)
    leaves the schema-2 store as it was or the whole schema-3 store; either opens."""

    def migrate() -> None:
        old.open().close()

    outcomes = []
    k = 1
    while True:
        old.restore()
        finished = in_child(k, migrate)
        if finished:
            break
        version = _schema_version(old.path)
        outcomes.append(version)
        if version == 2:
            _assert_untouched(old)
        else:
            _assert_migrated(old)
        with old.open():
            pass
        _assert_migrated(old)
        k += 1
        assert k < 1_000, "the open never finished"
    # Crashes landed before the commit (still schema 2) and after it (schema 3), and the
    # points inside the migration are among them.
    assert 2 in outcomes and 3 in outcomes, outcomes
    assert outcomes.count(2) >= 2 * (4 * len(REBUILT) + 1)
    old.restore()
    with old.open() as store:
        _assert_works(old, store)
