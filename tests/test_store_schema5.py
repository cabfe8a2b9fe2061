"""Schema 5: ``revocations`` is keyed by ``(vault_id, link_id)`` and ``nonces`` by
``(vault_id, nonce)``: a revocation binds the vault whose owner signed it and no other, so
two vaults of one store may each revoke the same link id; an invocation is signed for one
vault, so the same nonce seen by two vaults is no replay. A schema-4 store is rekeyed that
way when it is opened, all or nothing.

Also here, because they concern the current schema whatever its number: the hot paths'
statements use the primary keys, and a process left running while a newer pds migrates the
store is told so. The old store is made and filled as ``migration_helpers.build_old`` says;
the tests of the migration itself run with pds pinned at schema 5.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import pytest

import pds
from pds._store.base import LinkKeyRow, RevocationRow
from pds._store.sqlite import SQLiteBackend
from pds.errors import Revoked, SchemaTooNew, StoreError

if TYPE_CHECKING:
    from tests import migration_helpers as helpers
else:
    import migration_helpers as helpers

REVOCATION_COLUMNS = [
    # (name, type, notnull, pk position)
    ("link_id", "BLOB", 1, 2),
    ("vault_id", "TEXT", 1, 1),
    ("revoked_at", "INTEGER", 1, 0),
    ("statement", "BLOB", 1, 0),
    ("signature", "BLOB", 1, 0),
]


NONCE_COLUMNS = [("nonce", "BLOB", 1, 2), ("vault_id", "TEXT", 1, 1), ("time", "INTEGER", 1, 0)]
REKEYED = ("revocations", "nonces")


@pytest.fixture
def pinned() -> Iterator[None]:
    with helpers.schema_at(5):
        yield


@pytest.fixture(scope="module")
def old_store(tmp_path_factory: pytest.TempPathFactory) -> helpers.Old:
    old = helpers.build_old(tmp_path_factory.mktemp("schema4"), 4)
    # Positive control: the schema-4 layout, keyed by the link alone, with a row.
    assert [c[5] for c in helpers.columns(old.pristine, "revocations")] == [1, 0, 0, 0, 0]
    assert [c[5] for c in helpers.columns(old.pristine, "nonces")] == [1, 0, 0]
    assert len(old.rows["revocations"]) == 1
    assert len(old.rows["nonces"]) >= 5
    return old


@pytest.fixture
def old(old_store: helpers.Old) -> helpers.Old:
    old_store.restore()
    old_store.clock.set(old_store.head.time)
    return old_store


def _columns(path: Path, table: str) -> list[tuple[Any, ...]]:
    return [(c[1], c[2], c[3], c[5]) for c in helpers.columns(path, table)]


def _assert_rekeyed(path: Path) -> None:
    assert _columns(path, "revocations") == REVOCATION_COLUMNS
    assert _columns(path, "nonces") == NONCE_COLUMNS
    tables = helpers.without_rowid(path)
    assert not tables["revocations"]  # large rows: a rowid table
    assert tables["nonces"]


def _assert_migrated(old: helpers.Old) -> None:
    """The file is at schema 5 with every row it had; revocations and nonces keyed by
    vault first."""
    assert helpers.schema_version(old.path) == 5
    _assert_rekeyed(old.path)
    assert helpers.rows(old.path) == old.rows
    assert helpers.integrity(old.path) == ["ok"]


def _assert_untouched(old: helpers.Old) -> None:
    assert helpers.schema_version(old.path) == 4
    assert [c[5] for c in helpers.columns(old.path, "revocations")] == [1, 0, 0, 0, 0]
    assert [c[5] for c in helpers.columns(old.path, "nonces")] == [1, 0, 0]
    assert helpers.rows(old.path) == old.rows
    assert helpers.integrity(old.path) == ["ok"]


def _check(old: helpers.Old) -> int:
    """Schema 4 untouched or schema 5 whole; the version it is at."""
    if helpers.schema_version(old.path) == 4:
        _assert_untouched(old)
        return 4
    _assert_migrated(old)
    return 5


# -- (a) a new store


def test_a_new_store_keys_revocations_and_nonces_by_vault(tmp_path: Path, pinned: None) -> None:
    new = tmp_path / "new.db"
    pds.open_store(new).close()
    assert helpers.schema_version(new) == 5
    _assert_rekeyed(new)
    # Nothing else changed from schema 4; the time indexes are made again, on the same
    # columns.
    with helpers.schema_at(4):
        four = tmp_path / "four.db"
        pds.open_store(four).close()
    assert {r for r in helpers.schema(new) if r[2] not in REKEYED} == {
        r for r in helpers.schema(four) if r[2] not in REKEYED
    }
    with helpers.raw(new) as conn:
        indexes = {
            str(name): [str(row[2]) for row in conn.execute(f'PRAGMA index_info("{name}")')]
            for table in REKEYED
            for (name,) in conn.execute(f"SELECT name FROM pragma_index_list('{table}')")
        }
    assert indexes == {
        "sqlite_autoindex_revocations_1": ["vault_id", "link_id"],
        "idx_revocations_vault_id_revoked_at": ["vault_id", "revoked_at"],
        "sqlite_autoindex_nonces_1": ["vault_id", "nonce"],  # a WITHOUT ROWID table's key
        "idx_nonces_time": ["time"],
    }


# -- (b) a schema-4 (or older) store is migrated when opened


def test_a_schema_4_store_is_rekeyed_on_open_and_keeps_working(
    old: helpers.Old, tmp_path: Path, pinned: None
) -> None:
    with old.open() as store:
        _assert_migrated(old)
        helpers.assert_works(old, store)
    new = tmp_path / "new.db"
    pds.open_store(new).close()
    assert helpers.schema(old.path) == helpers.schema(new)
    before = helpers.rows(old.path)
    with old.open():
        pass
    assert helpers.rows(old.path) == before


def test_a_schema_2_store_is_migrated_through_to_5_in_one_open(
    tmp_path: Path, pinned: None
) -> None:
    two = helpers.build_old(tmp_path / "two", 2)
    with two.open() as store:
        assert helpers.schema_version(two.path) == 5
        _assert_rekeyed(two.path)
        helpers.assert_works(two, store)


def test_after_the_migration_two_vaults_can_revoke_the_same_link(old: helpers.Old) -> None:
    """What the key is for. At schema 4 a second vault's revocation of a link another vault
    already revoked cannot be stored (the link alone is the key); at schema 5 each vault
    holds its own, and only the vault's own revocation refuses its tokens."""
    link_id = old.token.leaf.link_id
    with helpers.schema_at(4), old.open() as store:
        other = store.open_vault(store.create_vault(key_file=old.key_file))
        other.unlock(key_file=old.key_file)
        other.revoke(link_id)  # another owner revokes this vault's grant by its id
        with pytest.raises(StoreError):
            old.vault(store).revoke(old.token)  # schema 4: the key is taken
    with old.open() as store:
        assert helpers.schema_version(old.path) == helpers.CURRENT
        vault = old.vault(store)
        grantee = pds.Grantee(old.agency, clock=old.clock)
        old.clock.advance(1_000)
        assert len(grantee.read(store, old.token).records) == 4  # not this vault's revocation
        assert vault.revoke(old.token) == link_id
        old.clock.advance(1_000)
        with pytest.raises(Revoked):
            grantee.read(store, old.token)
    with helpers.raw(old.path) as conn:
        vaults = conn.execute(
            "SELECT vault_id FROM revocations WHERE link_id = ?", (link_id,)
        ).fetchall()
    assert sorted(v for (v,) in vaults) == sorted([old.vault_id, other.vault_id])


# -- (c) all or nothing


def test_a_storage_failure_anywhere_in_the_migration_leaves_schema_4(
    old: helpers.Old, pinned: None
) -> None:
    added, failed = helpers.fail_each_storage_call(old, _check)
    # The migration's ten statements (create, copy, drop, rename, index; twice)...
    assert added >= 10, added
    # ...each failed once, leaving schema 4.
    assert failed >= added
    old.restore()
    with old.open() as store:
        helpers.assert_works(old, store)


@pytest.mark.slow
def test_a_crash_anywhere_in_the_migration_leaves_schema_4_or_5(
    old: helpers.Old, pinned: None
) -> None:
    outcomes = helpers.crash_at_each_point(old, _check)
    assert 4 in outcomes and 5 in outcomes, outcomes
    assert outcomes.count(4) >= 2 * 10
    old.restore()
    with old.open() as store:
        helpers.assert_works(old, store)


# -- the hot paths use the key


def test_hot_path_statements_use_the_primary_key_and_write_one_btree(
    tmp_path: Path,
) -> None:
    """EXPLAIN the statements the backend really runs: lookups search the table by its
    primary key (the nonce insert also reads its vault's row by key), and each insert into a
    small-row table writes the table alone (plus the time index for nonces)."""
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
                backend.insert_revocation(RevocationRow("v", b"r" * 32, 1, b"s", b"g"))
                assert backend.revoked_among("v", [b"r" * 32, b"l" * 32]) == [b"r" * 32]
                assert backend.revoked_among("w", [b"r" * 32]) == []
        finally:
            conn.set_trace_callback(None)
        # The revocation check (one per served read): the key's index alone, both columns.
        checks = [sql for sql in seen if sql.startswith("SELECT link_id FROM revocations")]
        assert len(checks) == 2
        for sql in checks:
            assert [row[3] for row in conn.execute(f"EXPLAIN QUERY PLAN {sql}")] == [
                "SEARCH revocations USING COVERING INDEX sqlite_autoindex_revocations_1 "
                "(vault_id=? AND link_id=?)"
            ], sql
        roots = {
            int(page): str(name)
            for name, page in conn.execute("SELECT name, rootpage FROM sqlite_master")
        }
        checked: dict[str, set[str]] = {}
        for sql in seen:
            table = next((t for t in helpers.SMALL_ROW_TABLES if f" {t} " in f"{sql} "), None)
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
                if table == "log_nodes" and step.startswith("SEARCH"):
                    # The whole key, not a range of the vault's nodes.
                    assert step.endswith(
                        "(vault_id=? AND band=? AND tile=? AND level=? AND idx=?)"
                    ), (sql, plan)
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


# -- (d) a newer pds migrates the store under a running process


def _future_migration(path: Path, kind: str, *, bump: bool = True) -> None:
    """What a later schema could do, done with raw ``sqlite3`` by "a newer pds": add a
    NOT NULL column to ``log_nodes`` (this pds's log appends leave it empty), or rename a
    column of ``records`` (this pds's reads name the old one); then record the version."""
    with helpers.raw(path) as conn:
        if kind == "new column":
            conn.executescript(
                'CREATE TABLE "log_nodes_v5" ("vault_id" TEXT NOT NULL, "band" INTEGER NOT '
                'NULL, "tile" INTEGER NOT NULL, "level" INTEGER NOT NULL, "idx" INTEGER NOT '
                'NULL, "hash" BLOB NOT NULL, "extra" BLOB NOT NULL, PRIMARY KEY ("vault_id", '
                '"band", "tile", "level", "idx")) WITHOUT ROWID;'
                'INSERT INTO "log_nodes_v5" SELECT *, x\'\' FROM "log_nodes";'
                'DROP TABLE "log_nodes"; ALTER TABLE "log_nodes_v5" RENAME TO "log_nodes";'
            )
        else:
            conn.execute('ALTER TABLE "records" RENAME COLUMN "ciphertext" TO "sealed"')
        if bump:
            conn.execute(
                "UPDATE meta SET value = ? WHERE key = 'schema_version'",
                (str(helpers.CURRENT + 1),),
            )
        conn.commit()


def _log_size(path: Path) -> int:
    with helpers.raw(path) as conn:
        (count,) = conn.execute("SELECT COUNT(*) FROM log_entries").fetchone()
    return int(count)


@pytest.mark.parametrize("kind", ["new column", "renamed column"])
@pytest.mark.parametrize("bump", [True, False], ids=["newer", "same version"])
def test_a_process_open_while_a_newer_pds_migrates_is_told_schema_too_new(
    tmp_path: Path, kind: str, bump: bool
) -> None:
    path = tmp_path / "store.db"
    key_file = tmp_path / "owner.key"
    pds.SymmetricKey.create_file(key_file)
    agency = pds.PrincipalKey.generate()
    with pds.open_store(path) as store:
        vault = store.open_vault(store.create_vault(key_file=key_file))
        vault.unlock(key_file=key_file)
        record = vault.put("tax/2024", {"income": 1}).record_id
        token = vault.grant(
            agency.did, collections=["tax/*"], purpose="benefit check", expires=dt.timedelta(days=1)
        )
        grantee = pds.Grantee(agency)
        # Positive control: both operations work before the migration.
        assert vault.get(record).data == {"income": 1}
        assert len(grantee.read(store, token).records) == 1
        _future_migration(path, kind, bump=bump)
        size = _log_size(path)
        for operation in (lambda: vault.get(record), lambda: grantee.read(store, token)):
            with pytest.raises(StoreError) as failed:
                operation()
            if bump:
                assert type(failed.value) is SchemaTooNew
                assert f"schema version {helpers.CURRENT + 1}" in str(failed.value)
                assert "restart the process with the newer pds" in str(failed.value)
            else:
                # The same failure without a newer version stored stays a storage failure.
                assert type(failed.value) is StoreError, failed.value
            assert _log_size(path) == size  # refused whole: nothing logged
    if bump:
        # And a new open refuses the store, as before.
        with pytest.raises(SchemaTooNew):
            pds.open_store(path, create=False)
