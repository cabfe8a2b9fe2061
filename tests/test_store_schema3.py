"""Schema 3: the small-row tables keyed by something other than an integer (``log_nodes``,
``nonces``, ``link_keys``, ``link_uses``) are ``WITHOUT ROWID`` tables, and a schema-2 store
is rebuilt that way when it is opened, all or nothing.

The schema-2 store is made and filled as ``migration_helpers.build_old`` says. Every test
here runs with pds pinned at schema 3 (the same patch, three migrations); that the migrated
store still does its job is checked by this pds unpinned, which migrates it on to the
current schema. What schema 4 changes in ``log_nodes`` is tested in
``test_store_schema4.py``. (A process of the schema-2 release left running while another
migrated the store to 3 kept serving, both writing the same columns; this pds writes schema
4's, so it can no longer play that process: see docs/concepts.md.)
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

import pds
from pds._store import sqlite as sqlite_store
from pds.errors import StoreCorrupt

if TYPE_CHECKING:
    from tests import migration_helpers as helpers
else:
    import migration_helpers as helpers

REBUILT = helpers.SMALL_ROW_TABLES
"""The tables schema 3 makes WITHOUT ROWID."""
KEPT = ("meta", "log_entries", "log_checkpoints", "links", "revocations", "records", "batches")
"""Tables whose rows are large (or ``meta``, the format anchor): rowid tables still."""


@pytest.fixture(autouse=True)
def _pinned_at_schema_3() -> Iterator[None]:
    with helpers.schema_at(3):
        yield


@pytest.fixture(scope="module")
def old_store(tmp_path_factory: pytest.TempPathFactory) -> helpers.Old:
    old = helpers.build_old(tmp_path_factory.mktemp("schema2"), 2)
    # Positive control: this really is the schema-2 layout, with rows in every table that
    # schema 3 rebuilds.
    flags = helpers.without_rowid(old.path)
    assert not any(flags[table] for table in (*REBUILT, *KEPT))
    with helpers.raw(old.path) as conn:
        autoindexes = {
            row[0]
            for row in conn.execute(
                "SELECT tbl_name FROM sqlite_master WHERE name LIKE 'sqlite_autoindex_%'"
            )
        }
    assert set(REBUILT) <= autoindexes
    for table in REBUILT:
        assert old.rows[table], f"no rows in {table}"
    assert len(old.rows["log_entries"]) == old.head.size >= 10
    return old


@pytest.fixture
def old(old_store: helpers.Old) -> helpers.Old:
    old_store.restore()
    old_store.clock.set(old_store.head.time)
    return old_store


def _assert_migrated(old: helpers.Old) -> None:
    """The file is at schema 3, laid out as a new store is, with every row it had."""
    assert helpers.schema_version(old.path) == sqlite_store.SCHEMA_VERSION == 3
    flags = helpers.without_rowid(old.path)
    assert all(flags[table] for table in REBUILT), flags
    assert not any(flags[table] for table in KEPT), flags
    assert helpers.rows(old.path) == old.rows
    assert helpers.integrity(old.path) == ["ok"]


def _assert_untouched(old: helpers.Old) -> None:
    """The file is the schema-2 store it was: same version, layout and rows."""
    assert helpers.schema_version(old.path) == 2
    assert not any(helpers.without_rowid(old.path)[table] for table in REBUILT)
    assert helpers.rows(old.path) == old.rows
    assert helpers.integrity(old.path) == ["ok"]


def _assert_works_at_current(old: helpers.Old) -> None:
    """This pds, unpinned, opens the store (migrating it on to the current schema) and
    what it holds still does its job. (Pinned at schema 3, this pds cannot write to a
    schema-3 store: it writes the current layout.)"""
    with helpers.schema_at(helpers.CURRENT), old.open() as store:
        assert helpers.schema_version(old.path) == helpers.CURRENT
        helpers.assert_works(old, store)


def _check(old: helpers.Old) -> int:
    """Schema 2 untouched or schema 3 whole; the version it is at."""
    if helpers.schema_version(old.path) == 2:
        _assert_untouched(old)
        return 2
    _assert_migrated(old)
    return 3


# -- (a) a new store


def test_a_new_store_keeps_small_rows_without_rowid(tmp_path: Path) -> None:
    path = tmp_path / "store.db"
    pds.open_store(path).close()
    assert helpers.schema_version(path) == sqlite_store.SCHEMA_VERSION == 3
    flags = helpers.without_rowid(path)
    assert all(flags[table] for table in REBUILT), flags
    assert not any(flags[table] for table in KEPT), flags
    with helpers.raw(path) as conn:
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
    old_store: helpers.Old, tmp_path: Path
) -> None:
    new = tmp_path / "store.db"
    pds.open_store(new).close()
    for table in REBUILT:
        before, after = helpers.columns(old_store.pristine, table), helpers.columns(new, table)
        # Same names, order, types, defaults and primary key positions...
        assert [(c[0], c[1], c[2], c[4], c[5]) for c in before] == [
            (c[0], c[1], c[2], c[4], c[5]) for c in after
        ], table
        # ...and the same NOT NULL constraints, plus NOT NULL on the key columns (which a
        # WITHOUT ROWID table enforces whatever its declaration says).
        for old_column, new_column in zip(before, after, strict=True):
            assert new_column[3] == (old_column[3] or bool(old_column[5])), (table, new_column)
    with helpers.raw(new) as conn:
        (sql,) = conn.execute("SELECT sql FROM sqlite_master WHERE name = 'idx_nonces_time'")
        assert sql[0] == 'CREATE INDEX "idx_nonces_time" ON "nonces" ("time")'


# -- (b) a schema-2 store is migrated when opened


def test_a_schema_2_store_is_rebuilt_on_open_and_keeps_working(
    old: helpers.Old, tmp_path: Path
) -> None:
    with old.open():
        _assert_migrated(old)
    # The migrated store is laid out exactly as a new one.
    new = tmp_path / "new.db"
    pds.open_store(new).close()
    assert helpers.schema(old.path) == helpers.schema(new)
    # Opening again migrates nothing more.
    with old.open():
        pass
    _assert_migrated(old)
    _assert_works_at_current(old)


def test_a_schema_2_store_with_a_tampered_key_is_refused_as_corrupt(old: helpers.Old) -> None:
    """A rowid table let a key cell be NULL (SQLite's legacy rule); only a change outside
    pds makes one, and the migration refuses it with a clear error, leaving schema 2."""
    with helpers.raw(old.path) as con:
        assert con.execute("UPDATE nonces SET nonce = NULL WHERE rowid = 1").rowcount == 1
        con.commit()
    with pytest.raises(StoreCorrupt, match="nonces row has a missing or repeated key"):
        old.open()
    assert helpers.schema_version(old.path) == 2
    assert not any(helpers.without_rowid(old.path)[table] for table in REBUILT)


# -- (c) all or nothing


def test_a_storage_failure_anywhere_in_the_migration_leaves_schema_2(old: helpers.Old) -> None:
    added, failed = helpers.fail_each_storage_call(old, _check)
    # Every statement of migration 3 is a storage call the seam can fail: 4 per table and
    # the nonces' index...
    assert added >= 4 * len(REBUILT) + 1, added
    # ...and each of them failed once, leaving schema 2.
    assert failed >= added
    old.restore()
    _assert_works_at_current(old)


@pytest.mark.slow
def test_a_crash_anywhere_in_the_migration_leaves_schema_2_or_3(old: helpers.Old) -> None:
    """A process ended at any crash point of the migrating open (no rollback, no cleanup)
    leaves the schema-2 store as it was or the whole schema-3 store; either opens."""
    outcomes = helpers.crash_at_each_point(old, _check)
    # Crashes landed before the commit (still schema 2) and after it (schema 3), and the
    # points inside the migration are among them.
    assert 2 in outcomes and 3 in outcomes, outcomes
    assert outcomes.count(2) >= 2 * (4 * len(REBUILT) + 1)
    old.restore()
    _assert_works_at_current(old)
