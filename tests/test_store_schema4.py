"""Schema 4: ``log_nodes`` is keyed by ``(vault_id, band, tile, level, idx)``, so the nodes
a proof reads in one band of four levels lie together, and a schema-3 store is rekeyed that
way when it is opened, all or nothing.

The old stores are made and filled as ``migration_helpers.build_old`` says; the schema-3
one has a log of over 256 entries, so its subtree hashes reach band 2. Every test here runs
with pds pinned at schema 4 (four migrations); what later schemas change is tested in their
own suites, and the current schema's hot paths in ``test_store_schema5.py``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

import pds

if TYPE_CHECKING:
    from tests import migration_helpers as helpers
else:
    import migration_helpers as helpers

NODE_COLUMNS = ["vault_id", "band", "tile", "level", "idx", "hash"]
OLD_NODE_COLUMNS = ["vault_id", "level", "idx", "hash"]


@pytest.fixture(autouse=True)
def _pinned_at_schema_4() -> Iterator[None]:
    with helpers.schema_at(4):
        yield


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
    assert helpers.schema_version(old.path) == 4
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
    assert helpers.schema_version(new) == 4
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
