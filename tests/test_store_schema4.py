"""Schema 4: ``log_nodes`` is keyed by ``(vault_id, band, tile, level, idx)``, so the nodes
a proof reads in one band of four levels lie together, and a schema-3 store is rekeyed that
way when it is opened, all or nothing. (Also here: the hot paths' statements use the
primary keys of the current schema.)

The old stores are made and filled as ``migration_helpers.build_old`` says; the schema-3
one has a log of over 256 entries, so its subtree hashes reach band 2.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import pytest

import pds
from pds._store.base import LinkKeyRow
from pds._store.sqlite import SQLiteBackend
from pds.errors import SchemaTooNew, StoreError

if TYPE_CHECKING:
    from tests import migration_helpers as helpers
else:
    import migration_helpers as helpers

NODE_COLUMNS = ["vault_id", "band", "tile", "level", "idx", "hash"]
OLD_NODE_COLUMNS = ["vault_id", "level", "idx", "hash"]


def expected_key(level: int, index: int) -> tuple[int, int]:
    """The ``(band, tile)`` of a node, as docs/concepts.md defines it: band ``b`` holds
    levels ``4b .. 4b+3``, and the tile is the index of the node's ancestor at level
    ``4b+4``. (An oracle in Python; the store computes it in SQL.)"""
    band = level // 4
    ancestor_level = 4 * band + 4
    return band, index >> (ancestor_level - level)


def _nodes(path: Path) -> list[tuple[Any, ...]]:
    with helpers.raw(path) as conn:
        return [
            tuple(row) for row in conn.execute(f"SELECT {', '.join(NODE_COLUMNS)} FROM log_nodes")
        ]


def _old_nodes(old: helpers.Old) -> list[tuple[Any, ...]]:
    """The old store's log_nodes rows, as (vault_id, level, idx, hash)."""
    assert [c[1] for c in helpers.columns(old.pristine, "log_nodes")] == OLD_NODE_COLUMNS
    return old.rows["log_nodes"]


@pytest.fixture(scope="module")
def old_store(tmp_path_factory: pytest.TempPathFactory) -> helpers.Old:
    old = helpers.build_old(tmp_path_factory.mktemp("schema3"), 3, owner_reads=260)
    # Positive control: the schema-3 layout, with nodes in three bands.
    assert old.head.size > 256
    assert max(row[1] for row in _old_nodes(old)) >= 8
    return old


@pytest.fixture
def old(old_store: helpers.Old) -> helpers.Old:
    old_store.restore()
    old_store.clock.set(old_store.head.time)
    return old_store


def _assert_migrated(old: helpers.Old) -> None:
    """The file is at schema 4 with every row it had; the nodes keyed by band and tile."""
    assert helpers.schema_version(old.path) == helpers.CURRENT == 4
    assert helpers.without_rowid(old.path)["log_nodes"]
    after = helpers.rows(old.path)
    nodes = sorted(
        (
            (vault_id, level, index, digest)
            for vault_id, _, _, level, index, digest in after.pop("log_nodes")
        ),
        key=repr,
    )
    before = dict(old.rows)
    assert nodes == before.pop("log_nodes")
    assert after == before
    for _, band, tile, level, index, _ in _nodes(old.path):
        assert (band, tile) == expected_key(level, index), (level, index)
    assert helpers.integrity(old.path) == ["ok"]


def _assert_untouched(old: helpers.Old) -> None:
    assert helpers.schema_version(old.path) == 3
    assert [c[1] for c in helpers.columns(old.path, "log_nodes")] == OLD_NODE_COLUMNS
    assert helpers.rows(old.path) == old.rows
    assert helpers.integrity(old.path) == ["ok"]


def _check(old: helpers.Old) -> int:
    """Schema 3 untouched or schema 4 whole; the version it is at."""
    if helpers.schema_version(old.path) == 3:
        _assert_untouched(old)
        return 3
    _assert_migrated(old)
    return 4


# -- (a) a new store


def test_a_new_store_keys_log_nodes_by_band_and_tile(tmp_path: Path) -> None:
    new = tmp_path / "new.db"
    pds.open_store(new).close()
    assert helpers.schema_version(new) == helpers.CURRENT == 4
    # (cid, name, type, notnull, default, pk): the key is the first five columns, in order.
    assert [(c[1], c[2], c[3], c[5]) for c in helpers.columns(new, "log_nodes")] == [
        ("vault_id", "TEXT", 1, 1),
        ("band", "INTEGER", 1, 2),
        ("tile", "INTEGER", 1, 3),
        ("level", "INTEGER", 1, 4),
        ("idx", "INTEGER", 1, 5),
        ("hash", "BLOB", 1, 0),
    ]
    assert helpers.without_rowid(new)["log_nodes"]
    # Nothing else changed from schema 3.
    with helpers.schema_at(3):
        three = tmp_path / "three.db"
        pds.open_store(three).close()
    assert {r for r in helpers.schema(new) if r[2] != "log_nodes"} == {
        r for r in helpers.schema(three) if r[2] != "log_nodes"
    }
    assert {r[:2] for r in helpers.schema(new) if r[2] == "log_nodes"} == {("table", "log_nodes")}


def test_a_proof_reads_one_tile_per_band(old: helpers.Old) -> None:
    """What the key is for: the siblings on any leaf's path through a complete tree of
    2**8 leaves (levels 0..7, two bands) lie in two tiles, as the stored rows say."""
    with old.open():
        pass
    keys = {
        (level, index): (band, tile)
        for _, band, tile, level, index, _ in _nodes(old.path)
        if level < 8 and (index + 1) << level <= 256
    }
    for leaf in range(256):
        siblings = [((leaf >> level) ^ 1) for level in range(8)]
        tiles = {keys[level, index] for level, index in enumerate(siblings)}
        assert len(tiles) == 2, (leaf, tiles)


# -- (b) a schema-3 (or older) store is migrated when opened


def test_a_schema_3_store_is_rekeyed_on_open_and_keeps_working(
    old: helpers.Old, tmp_path: Path
) -> None:
    with old.open() as store:
        _assert_migrated(old)
        helpers.assert_works(old, store)
    # Appended at schema 4: every node (migrated or new) is keyed as defined.
    for _, band, tile, level, index, _ in _nodes(old.path):
        assert (band, tile) == expected_key(level, index), (level, index)
    # Laid out exactly as a new store.
    new = tmp_path / "new.db"
    pds.open_store(new).close()
    assert helpers.schema(old.path) == helpers.schema(new)
    # Opening again migrates nothing more.
    before = helpers.rows(old.path)
    with old.open():
        pass
    assert helpers.rows(old.path) == before


def test_a_schema_2_store_is_migrated_through_3_to_4_in_one_open(tmp_path: Path) -> None:
    two = helpers.build_old(tmp_path / "two", 2)
    assert not helpers.without_rowid(two.path)["log_nodes"]
    with two.open() as store:
        _assert_migrated(two)
        helpers.assert_works(two, store)


# -- (c) all or nothing


def test_a_storage_failure_anywhere_in_the_migration_leaves_schema_3(old: helpers.Old) -> None:
    added, failed = helpers.fail_each_storage_call(old, _check)
    # The migration's four statements (create, copy, drop, rename) each a storage call...
    assert added >= 4, added
    # ...and each failed once, leaving schema 3.
    assert failed >= added
    old.restore()
    with old.open() as store:
        helpers.assert_works(old, store)


@pytest.mark.slow
def test_a_crash_anywhere_in_the_migration_leaves_schema_3_or_4(old: helpers.Old) -> None:
    outcomes = helpers.crash_at_each_point(old, _check)
    assert 3 in outcomes and 4 in outcomes, outcomes
    assert outcomes.count(3) >= 2 * 4
    old.restore()
    with old.open() as store:
        helpers.assert_works(old, store)


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
