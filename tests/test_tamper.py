"""Promise 3: tamper-evident.

The store is changed with raw ``sqlite3`` between operations, the way a hostile or broken
host could change it, and a fresh ``Store``/``Vault`` is opened after every change so no
cache can mask it. Every read of an affected record (``get``, ``history``, and reading each
id that ``list`` shows) must raise ``IntegrityError`` with the reason code of the check that
caught it, and return no data; every other record must still read back exactly.
"""

from __future__ import annotations

import random
import sqlite3
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

import pds
from pds import errors
from pds.keys import SymmetricKey


@dataclass
class World:
    db: Path
    key_file: Path
    vault_a: str
    vault_b: str
    target: str
    """A one-version record alone in its batch, collection ``notes``."""
    multi: str
    """A record with two versions in two batches."""
    mates: list[str]
    """Three records written by one ``put_many`` (one batch)."""
    keyed: str
    """The only record of collection ``keyed`` (for epoch tampering)."""
    tombstoned: str
    in_b: str
    """A record of vault B, same collection name as ``target``."""
    expected: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    """(vault id, record id) -> current data, for every live record."""
    history: dict[str, list[dict[str, Any] | None]] = field(default_factory=dict)


def build(tmp: Path) -> World:
    key_file = tmp / "owner.key"
    SymmetricKey.create_file(key_file)
    db = tmp / "store.db"
    with pds.open_store(db) as store:
        a_id = store.create_vault(key_file=key_file)
        b_id = store.create_vault(key_file=key_file)
        a = store.open_vault(a_id)
        a.unlock(key_file=key_file)
        b = store.open_vault(b_id)
        b.unlock(key_file=key_file)
        controls = [a.put("notes", {"control": i, "text": "unchanged"}) for i in range(2)]
        target = a.put("notes", {"secret": "target content", "n": 1})
        multi_1 = a.put("notes", {"v": 1, "text": "first version"})
        multi_2 = a.put("notes", {"v": 2, "text": "second version"}, record_id=multi_1.record_id)
        # A new unlock: the mates' batch gets its own reader share (an unlocked vault reuses
        # one per epoch), so another batch's sealed share is a real substitution.
        a.lock()
        a.unlock(key_file=key_file)
        mates = a.put_many("notes", [{"mate": i, "text": "batch"} for i in range(3)])
        keyed = a.put("keyed", {"text": "epoch target"})
        gone = a.put("notes", {"text": "deleted soon"})
        a.delete(gone.record_id)
        in_b = b.put("notes", {"secret": "vault b content", "n": 2})
        world = World(
            db=db,
            key_file=key_file,
            vault_a=a_id,
            vault_b=b_id,
            target=target.record_id,
            multi=multi_1.record_id,
            mates=[m.record_id for m in mates],
            keyed=keyed.record_id,
            tombstoned=gone.record_id,
            in_b=in_b.record_id,
        )
        for vault_id, vault in ((a_id, a), (b_id, b)):
            for info in vault.iter_records():
                record = vault.get(info.record_id)
                assert record.data is not None
                world.expected[(vault_id, info.record_id)] = record.data
        world.history[multi_1.record_id] = [r.data for r in a.history(multi_1.record_id)]
        assert multi_2.version == 2
        assert len(controls) == 2
    return world


@pytest.fixture
def world(tmp_path: Path) -> World:
    return build(tmp_path)


@pytest.fixture(scope="module")
def shared_world(tmp_path_factory: pytest.TempPathFactory) -> World:
    """One world for the byte-flip loops; every flip is undone before the next."""
    return build(tmp_path_factory.mktemp("tamper"))


@contextmanager
def raw(world: World) -> Iterator[sqlite3.Connection]:
    con = sqlite3.connect(world.db, isolation_level=None)
    try:
        con.execute("BEGIN IMMEDIATE")
        yield con
        con.execute("COMMIT")
    finally:
        con.close()


def sql(world: World, statement: str, *params: Any) -> None:
    with raw(world) as con:
        assert con.execute(statement, params).rowcount >= 1, statement


def fetch(world: World, statement: str, *params: Any) -> Any:
    with raw(world) as con:
        row = con.execute(statement, params).fetchone()
    assert row is not None, statement
    return row[0] if len(row) == 1 else row


@contextmanager
def fresh(world: World) -> Iterator[tuple[pds.Vault, pds.Vault]]:
    with pds.open_store(world.db, create=False) as store:
        a = store.open_vault(world.vault_a)
        a.unlock(key_file=world.key_file)
        b = store.open_vault(world.vault_b)
        b.unlock(key_file=world.key_file)
        yield a, b


def assert_refused(
    vault: pds.Vault, record_id: str, reason: str | None, history_reason: str | None = None
) -> None:
    """Every read path of ``record_id`` raises ``IntegrityError`` with ``reason`` (for
    ``history``, ``history_reason`` where an older version fails a check first)."""
    with pytest.raises(errors.IntegrityError) as got:
        vault.get(record_id)
    if reason is not None:
        assert got.value.reason == reason
    with pytest.raises(errors.IntegrityError) as hist:
        vault.history(record_id)
    if (history_reason or reason) is not None:
        assert hist.value.reason == (history_reason or reason)


def check(
    world: World,
    refused: dict[tuple[str, str], str | None],
    *,
    missing: frozenset[tuple[str, str]] = frozenset(),
) -> None:
    """Open the store afresh: ``refused`` records raise ``IntegrityError`` on every read
    path, ``missing`` ones ``RecordNotFound``, and every other record reads back exactly,
    including every id ``list`` shows."""
    with fresh(world) as (a, b):
        vaults = {world.vault_a: a, world.vault_b: b}
        for (vault_id, record_id), reason in refused.items():
            assert_refused(vaults[vault_id], record_id, reason)
        for vault_id, record_id in missing:
            with pytest.raises(errors.RecordNotFound):
                vaults[vault_id].get(record_id)
        for vault_id, vault in vaults.items():
            for info in vault.iter_records():
                key = (vault_id, info.record_id)
                if key in refused or key not in world.expected:
                    with pytest.raises(errors.IntegrityError):
                        vault.get(info.record_id)
                else:
                    assert vault.get(info.record_id).data == world.expected[key]
        for key, data in world.expected.items():
            if key not in refused and key not in missing:
                assert vaults[key[0]].get(key[1]).data == data
        with pytest.raises(errors.RecordDeleted):
            a.get(world.tombstoned)


def record_where(
    world: World, record_id: str, version: int | None = None
) -> tuple[str, tuple[Any, ...]]:
    if version is None:
        version = fetch(world, "SELECT MAX(version) FROM records WHERE record_id = ?", record_id)
    return "record_id = ? AND version = ?", (record_id, version)


def _restore(world: World, content: bytes) -> None:
    for suffix in ("-wal", "-shm"):
        Path(f"{world.db}{suffix}").unlink(missing_ok=True)
    world.db.write_bytes(content)


FULL_SWEEP = 160
"""Cells up to this size get every byte flipped; longer ones (manifests) a sample."""


def flip_each_byte(
    world: World,
    table: str,
    column: str,
    where: str,
    params: tuple[Any, ...],
    verify: Callable[[], None],
) -> int:
    """Flip each byte of one blob cell in turn and ``verify``; return the cell size.

    Each byte is XORed with a seeded random non-zero mask, so single-bit and multi-bit
    changes are both exercised. Every flip starts from the pristine file (reads are
    logged, so the file grows with each check); cells longer than ``FULL_SWEEP`` bytes
    get their first and last 48 bytes and 64 seeded random positions between."""
    original: bytes = fetch(world, f"SELECT {column} FROM {table} WHERE {where}", *params)
    assert isinstance(original, bytes) and original
    pristine = world.db.read_bytes()
    assert not Path(f"{world.db}-wal").exists()
    rng = random.Random(f"{table}.{column}")
    positions = list(range(len(original)))
    if len(original) > FULL_SWEEP:
        middle = positions[48:-48]
        positions = positions[:48] + sorted(rng.sample(middle, 64)) + positions[-48:]
    try:
        for position in positions:
            _restore(world, pristine)
            changed = bytearray(original)
            changed[position] ^= rng.randrange(1, 256)
            sql(world, f"UPDATE {table} SET {column} = ? WHERE {where}", bytes(changed), *params)
            verify()
    finally:
        _restore(world, pristine)
    check(world, {})  # restored: everything reads again
    _restore(world, pristine)
    return len(original)


def check_affected(world: World, refused: dict[tuple[str, str], str | None]) -> None:
    """The lighter check of the flip loops: the affected records are refused on every
    read path, and an unaffected record still reads."""
    with fresh(world) as (a_vault, b_vault):
        vaults = {world.vault_a: a_vault, world.vault_b: b_vault}
        for (vault_id, record_id), reason in refused.items():
            assert_refused(vaults[vault_id], record_id, reason)
        control = (world.vault_a, world.multi)
        assert control not in refused
        assert a_vault.get(world.multi).data == world.expected[control]


def a(world: World, record_id: str) -> tuple[str, str]:
    return (world.vault_a, record_id)


# -- the untampered world -------------------------------------------------------------


def test_untampered_world_reads(world: World) -> None:
    check(world, {})
    with fresh(world) as (vault, _):
        assert [r.data for r in vault.history(world.multi)] == world.history[world.multi]


# -- record ciphertext and nonce -------------------------------------------------------


@pytest.mark.parametrize("column", ["ciphertext", "nonce"])
def test_every_flipped_byte_of_record_content_is_refused(shared_world: World, column: str) -> None:
    world = shared_world
    where, params = record_where(world, world.target)
    size = flip_each_byte(
        world,
        "records",
        column,
        where,
        params,
        lambda: check_affected(world, {a(world, world.target): "record-hash"}),
    )
    assert size == 24 if column == "nonce" else size > 16


@pytest.mark.parametrize(
    ("column", "change"),
    [
        ("ciphertext", "substr(ciphertext, 1, length(ciphertext) - 1)"),
        ("ciphertext", "CAST(ciphertext || x'00' AS BLOB)"),
        ("ciphertext", "x''"),
        ("nonce", "substr(nonce, 2)"),
        ("nonce", "CAST(nonce || x'00' AS BLOB)"),
        ("nonce", "x''"),
    ],
)
def test_resized_record_content_is_refused(world: World, column: str, change: str) -> None:
    where, params = record_where(world, world.target)
    sql(world, f"UPDATE records SET {column} = {change} WHERE {where}", *params)
    check(world, {a(world, world.target): "record-hash"})


@pytest.mark.parametrize("column", ["ciphertext", "nonce"])
def test_half_erased_record_content_is_refused(world: World, column: str) -> None:
    where, params = record_where(world, world.target)
    sql(world, f"UPDATE records SET {column} = NULL WHERE {where}", *params)
    check(world, {a(world, world.target): "record-binding"})


def test_erased_content_of_a_live_latest_version_is_refused(world: World) -> None:
    """Erasure is legitimate only below a tombstone; a host that nulls a live record's
    content is hiding it, and that is refused, not reported as erased."""
    where, params = record_where(world, world.target)
    sql(world, f"UPDATE records SET nonce = NULL, ciphertext = NULL WHERE {where}", *params)
    check(world, {a(world, world.target): "erased"})


def test_erased_content_of_an_older_live_version_is_refused(world: World) -> None:
    where, params = record_where(world, world.multi, 1)
    sql(world, f"UPDATE records SET nonce = NULL, ciphertext = NULL WHERE {where}", *params)
    with fresh(world) as (vault, _):
        with pytest.raises(errors.IntegrityError) as info:
            vault.history(world.multi)
        assert info.value.reason == "erased"
        # The current version itself is intact and still reads.
        assert vault.get(world.multi).data == world.expected[a(world, world.multi)]


def test_erased_versions_below_a_tombstone_read_as_erased(world: World) -> None:
    with fresh(world) as (vault, _):
        history = vault.history(world.tombstoned)
    assert [(r.version, r.deleted, r.erased, r.data) for r in history] == [
        (1, False, True, None),
        (2, True, False, None),
    ]


# -- bound metadata columns of a record ------------------------------------------------


@pytest.mark.parametrize(
    ("column", "value", "reason"),
    [
        ("collection", "other", "record-binding"),
        ("collection", "notes/sub", "record-binding"),
        ("version", 7, "not-in-batch"),
        ("version", -1, "record-binding"),
        ("epoch", 2, "record-binding"),
        ("epoch", 0, "record-binding"),
        ("created_at", None, "record-binding"),
        ("batch_id", b"\x00" * 16, "batch-missing"),
        ("deleted", 1, "record-binding"),
    ],
)
def test_changed_record_metadata_is_refused(
    world: World, column: str, value: Any, reason: str
) -> None:
    where, params = record_where(world, world.target)
    if column == "created_at":
        sql(world, f"UPDATE records SET created_at = created_at + 1 WHERE {where}", *params)
    else:
        sql(world, f"UPDATE records SET {column} = ? WHERE {where}", value, *params)
    check(world, {a(world, world.target): reason})


def test_older_version_rewritten_negative_fails_history_as_record_binding(
    world: World,
) -> None:
    """records.md: a row's binding is computed from its stored columns; a version no
    binding can hold is a changed row (``IntegrityError``), not malformed input."""
    where, params = record_where(world, world.multi, 1)
    sql(world, f"UPDATE records SET version = -5 WHERE {where}", *params)
    with fresh(world) as (vault, _):
        assert vault.get(world.multi).data == world.expected[a(world, world.multi)]
        with pytest.raises(errors.IntegrityError) as got:
            vault.history(world.multi)
        assert got.value.reason == "record-binding"


@pytest.mark.parametrize(
    ("stored", "shown"),
    [
        (2**63 - 1, datetime(9999, 12, 31, 23, 59, 59, 999000, tzinfo=UTC)),
        (-(2**63), datetime(1, 1, 1, tzinfo=UTC)),
    ],
    ids=["max", "min"],
)
def test_time_out_of_range_is_shown_clamped_and_the_listing_goes_on(
    world: World, stored: int, shown: datetime
) -> None:
    """One row with a ``created_at`` no datetime can hold is listed with its time clamped
    (the rest of the listing is not lost) and refused when read."""
    where, params = record_where(world, world.target)
    sql(world, f"UPDATE records SET created_at = ? WHERE {where}", stored, *params)
    check(world, {a(world, world.target): "record-binding"})
    with fresh(world) as (vault, _):
        listed = {info.record_id: info.created_at for info in vault.iter_records()}
    assert listed[world.target] == shown
    assert set(listed) == {key[1] for key in world.expected if key[0] == world.vault_a}


def test_record_moved_to_another_batch_is_refused(world: World) -> None:
    mates_batch = fetch(world, "SELECT batch_id FROM records WHERE record_id = ?", world.mates[0])
    where, params = record_where(world, world.target)
    sql(world, f"UPDATE records SET batch_id = ? WHERE {where}", mates_batch, *params)
    check(world, {a(world, world.target): "not-in-batch"})


def test_tombstone_turned_back_into_a_live_record_is_refused(world: World) -> None:
    where, params = record_where(world, world.tombstoned)
    sql(world, f"UPDATE records SET deleted = 0, current = 1 WHERE {where}", *params)
    with fresh(world) as (vault, _):
        # history checks version 1 first: its content was erased, and no tombstone follows.
        assert_refused(vault, world.tombstoned, "record-binding", history_reason="erased")
        listed = {info.record_id for info in vault.iter_records()}
        assert world.tombstoned in listed


def test_renamed_record_id_is_refused_under_the_new_id(world: World) -> None:
    """A row moved to another record id no longer answers to its old id (RecordNotFound:
    no row carries that id any more) and is refused under the new one, because the batch
    manifest signed the original id."""
    where, params = record_where(world, world.target)
    sql(world, f"UPDATE records SET record_id = 'renamed' WHERE {where}", *params)
    check(
        world,
        {a(world, "renamed"): "not-in-batch"},
        missing=frozenset({a(world, world.target)}),
    )


def test_record_moved_to_another_vault_is_refused(world: World) -> None:
    """Moved to vault B, the row's batch is not found under B (``batch-missing``); vault A
    no longer has any row with that id (RecordNotFound)."""
    where, params = record_where(world, world.target)
    sql(world, f"UPDATE records SET vault_id = ? WHERE {where}", world.vault_b, *params)
    check(
        world,
        {(world.vault_b, world.target): "batch-missing"},
        missing=frozenset({a(world, world.target)}),
    )


def test_record_and_batch_moved_to_another_vault_are_refused(world: World) -> None:
    """Moving the batch along does not help: B does not trust A's identity as a writer."""
    batch_id = fetch(world, "SELECT batch_id FROM records WHERE record_id = ?", world.target)
    sql(world, "UPDATE records SET vault_id = ? WHERE batch_id = ?", world.vault_b, batch_id)
    sql(world, "UPDATE batches SET vault_id = ? WHERE batch_id = ?", world.vault_b, batch_id)
    check(
        world,
        {(world.vault_b, world.target): "writer"},
        missing=frozenset({a(world, world.target)}),
    )


# -- swaps and replays -----------------------------------------------------------------


def _swap_content(world: World, first: str, second: str) -> None:
    one = fetch(world, "SELECT nonce, ciphertext FROM records WHERE record_id = ?", first)
    two = fetch(world, "SELECT nonce, ciphertext FROM records WHERE record_id = ?", second)
    sql(world, "UPDATE records SET nonce = ?, ciphertext = ? WHERE record_id = ?", *two, first)
    sql(world, "UPDATE records SET nonce = ?, ciphertext = ? WHERE record_id = ?", *one, second)


def test_ciphertexts_swapped_within_a_vault_are_refused(world: World) -> None:
    _swap_content(world, world.target, world.mates[1])
    check(world, {a(world, world.target): "record-hash", a(world, world.mates[1]): "record-hash"})


def test_ciphertexts_swapped_between_vaults_are_refused(world: World) -> None:
    _swap_content(world, world.target, world.in_b)
    check(
        world,
        {a(world, world.target): "record-hash", (world.vault_b, world.in_b): "record-hash"},
    )


def test_older_ciphertext_replayed_into_newest_version_is_refused(world: World) -> None:
    old = fetch(
        world,
        "SELECT nonce, ciphertext FROM records WHERE record_id = ? AND version = 1",
        world.multi,
    )
    sql(
        world,
        "UPDATE records SET nonce = ?, ciphertext = ? WHERE record_id = ? AND version = 2",
        *old,
        world.multi,
    )
    check(world, {a(world, world.multi): "record-hash"})


def test_older_row_replayed_into_newest_version_is_refused(world: World) -> None:
    """The whole old row (its batch, time, epoch, content) copied over the newest version:
    the old batch's manifest lists version 1 only."""
    old = fetch(
        world,
        "SELECT batch_id, created_at, epoch, deleted, nonce, ciphertext FROM records "
        "WHERE record_id = ? AND version = 1",
        world.multi,
    )
    sql(
        world,
        "UPDATE records SET batch_id = ?, created_at = ?, epoch = ?, deleted = ?, nonce = ?, "
        "ciphertext = ? WHERE record_id = ? AND version = 2",
        *old,
        world.multi,
    )
    check(world, {a(world, world.multi): "not-in-batch"})


# -- the batch row ---------------------------------------------------------------------


def _batch_of(world: World, record_id: str) -> bytes:
    value = fetch(world, "SELECT batch_id FROM records WHERE record_id = ?", record_id)
    assert isinstance(value, bytes)
    return value


def _mates_refused(world: World, reason: str | None) -> dict[tuple[str, str], str | None]:
    return {a(world, rid): reason for rid in world.mates}


@pytest.mark.parametrize(
    ("column", "reason"),
    [
        ("manifest", "batch-signature"),
        ("signature", "batch-signature"),
        ("sealed_reader", "batch-binding"),
        ("writer", "writer"),
    ],
)
def test_every_flipped_byte_of_a_batch_is_refused(
    shared_world: World, column: str, reason: str
) -> None:
    world = shared_world
    batch_id = _batch_of(world, world.mates[0])
    flip_each_byte(
        world,
        "batches",
        column,
        "batch_id = ?",
        (batch_id,),
        lambda: check_affected(world, _mates_refused(world, reason)),
    )


def test_every_flipped_byte_of_the_wrapped_host_share_is_refused(shared_world: World) -> None:
    world = shared_world
    batch_id = _batch_of(world, world.mates[0])
    flip_each_byte(
        world,
        "batches",
        "wrapped_host",
        "batch_id = ?",
        (batch_id,),
        lambda: check_affected(world, _mates_refused(world, "host-share")),
    )


def test_zeroed_wrapped_host_share_is_refused(world: World) -> None:
    batch_id = _batch_of(world, world.mates[0])
    sql(
        world,
        "UPDATE batches SET wrapped_host = zeroblob(length(wrapped_host)) WHERE batch_id = ?",
        batch_id,
    )
    check(world, _mates_refused(world, "host-share"))


def test_writer_replaced_by_another_vault_identity_is_refused(world: World) -> None:
    other_identity = fetch(
        world, "SELECT identity_public FROM vaults WHERE vault_id = ?", world.vault_b
    )
    sql(
        world,
        "UPDATE batches SET writer = ? WHERE batch_id = ?",
        other_identity,
        _batch_of(world, world.mates[0]),
    )
    check(world, _mates_refused(world, "writer"))


@pytest.mark.parametrize(
    ("assignment", "reason"),
    [
        ("created_at = created_at + 1", "batch-binding"),
        ("collection = 'keyed'", "batch-binding"),
        ("epoch = epoch + 1", "batch-binding"),
        ("batch_id = zeroblob(16)", "batch-missing"),
        ("vault_id = :other", "batch-missing"),
    ],
)
def test_changed_batch_columns_are_refused(world: World, assignment: str, reason: str) -> None:
    batch_id = _batch_of(world, world.mates[0])
    with raw(world) as con:
        con.execute(
            f"UPDATE batches SET {assignment} WHERE batch_id = :batch",
            {"batch": batch_id, "other": world.vault_b},
        )
    check(world, _mates_refused(world, reason))


# A crypto-erase NULLs every key column of a vault in one transaction and marks the vault
# destroyed. A NULL key column in a live vault is therefore a change to the stored bytes.
_KEY_COLUMNS = [
    ("batches", "sealed_reader"),
    ("batches", "wrapped_host"),
    ("epochs", "sealed_owner"),
]


def _null_key_column(world: World, table: str, column: str) -> list[str]:
    """NULL one key column; return the records it affects."""
    if table == "batches":
        sql(
            world,
            f"UPDATE batches SET {column} = NULL WHERE batch_id = ?",
            _batch_of(world, world.mates[0]),
        )
        return world.mates
    where, params = _keyed_epoch_where(world)
    sql(world, f"UPDATE epochs SET {column} = NULL WHERE {where}", *params)
    return [world.keyed]


@pytest.mark.parametrize(("table", "column"), _KEY_COLUMNS)
def test_nulled_key_column_never_returns_data(world: World, table: str, column: str) -> None:
    affected = _null_key_column(world, table, column)
    with fresh(world) as (vault, _):
        for record_id in affected:
            with pytest.raises(errors.PDSError):
                vault.get(record_id)
            with pytest.raises(errors.PDSError):
                vault.history(record_id)
        assert vault.get(world.target).data == world.expected[a(world, world.target)]


@pytest.mark.parametrize(("table", "column"), _KEY_COLUMNS)
def test_nulled_key_column_is_an_integrity_error(world: World, table: str, column: str) -> None:
    affected = _null_key_column(world, table, column)
    check(world, {a(world, rid): None for rid in affected})


@pytest.mark.parametrize("column", ["wrapped_master", "wrapped_identity"])
def test_nulled_vault_key_is_an_integrity_error(world: World, column: str) -> None:
    sql(world, f"UPDATE vaults SET {column} = NULL WHERE vault_id = ?", world.vault_a)
    with pds.open_store(world.db) as store, pytest.raises(errors.IntegrityError):
        store.open_vault(world.vault_a).unlock(key_file=world.key_file)


def test_reader_share_of_another_batch_is_refused(world: World) -> None:
    donor = fetch(
        world,
        "SELECT sealed_reader FROM batches WHERE batch_id = ?",
        _batch_of(world, world.target),
    )
    sql(
        world,
        "UPDATE batches SET sealed_reader = ? WHERE batch_id = ?",
        donor,
        _batch_of(world, world.mates[0]),
    )
    check(world, _mates_refused(world, "batch-binding"))


def test_deleted_batch_row_is_refused(world: World) -> None:
    sql(world, "DELETE FROM batches WHERE batch_id = ?", _batch_of(world, world.mates[0]))
    check(world, _mates_refused(world, "batch-missing"))


# -- the epoch row ---------------------------------------------------------------------


def _keyed_epoch_where(world: World) -> tuple[str, tuple[Any, ...]]:
    return "vault_id = ? AND collection = 'keyed' AND epoch = 1", (world.vault_a,)


@pytest.mark.parametrize(
    ("column", "reason"),
    [
        ("public_key", "epoch-signature"),
        ("signature", "epoch-signature"),
        ("sealed_owner", "epoch-secret"),
    ],
)
def test_every_flipped_byte_of_an_epoch_is_refused(
    shared_world: World, column: str, reason: str
) -> None:
    world = shared_world
    where, params = _keyed_epoch_where(world)
    flip_each_byte(
        world,
        "epochs",
        column,
        where,
        params,
        lambda: check_affected(world, {a(world, world.keyed): reason}),
    )


@pytest.mark.parametrize(
    ("assignment", "reason"),
    [
        ("created_at = created_at + 1", "epoch-signature"),
        ("epoch = 5", "epoch-missing"),
        ("collection = 'elsewhere'", "epoch-missing"),
    ],
)
def test_changed_epoch_columns_are_refused(world: World, assignment: str, reason: str) -> None:
    where, params = _keyed_epoch_where(world)
    sql(world, f"UPDATE epochs SET {assignment} WHERE {where}", *params)
    check(world, {a(world, world.keyed): reason})


def test_epoch_key_of_another_collection_is_refused(world: World) -> None:
    """Substituting another (validly signed) epoch's key pair breaks this epoch's signature."""
    donor = fetch(
        world,
        "SELECT public_key, sealed_owner FROM epochs WHERE vault_id = ? AND collection = 'notes'",
        world.vault_a,
    )
    where, params = _keyed_epoch_where(world)
    sql(world, f"UPDATE epochs SET public_key = ?, sealed_owner = ? WHERE {where}", *donor, *params)
    check(world, {a(world, world.keyed): "epoch-signature"})


def test_write_to_a_collection_with_a_replaced_public_key_is_refused(world: World) -> None:
    """A host that swaps in a public key it controls must not receive new records."""
    where, params = _keyed_epoch_where(world)
    sql(
        world,
        f"UPDATE epochs SET public_key = (SELECT public_key FROM epochs WHERE vault_id = ? "
        f"AND collection = 'notes') WHERE {where}",
        world.vault_a,
        *params,
    )
    with fresh(world) as (vault, _):
        with pytest.raises(errors.IntegrityError) as info:
            vault.put("keyed", {"text": "must not be sealed to a foreign key"})
        assert info.value.reason == "epoch-signature"
        with pytest.raises(errors.IntegrityError):
            vault.put_many("keyed", [{"n": 1}, {"n": 2}])
    with raw(world) as con:
        count = con.execute(
            "SELECT COUNT(*) FROM records WHERE vault_id = ? AND collection = 'keyed'",
            (world.vault_a,),
        ).fetchone()[0]
    assert count == 1


def test_deleted_epoch_row_is_refused(world: World) -> None:
    where, params = _keyed_epoch_where(world)
    sql(world, f"DELETE FROM epochs WHERE {where}", *params)
    check(world, {a(world, world.keyed): "epoch-missing"})


# -- the vault row ---------------------------------------------------------------------


def test_replaced_identity_public_key_is_detected_at_unlock(world: World) -> None:
    other_identity = fetch(
        world, "SELECT identity_public FROM vaults WHERE vault_id = ?", world.vault_b
    )
    sql(
        world,
        "UPDATE vaults SET identity_public = ? WHERE vault_id = ?",
        other_identity,
        world.vault_a,
    )
    with pds.open_store(world.db) as store:
        vault = store.open_vault(world.vault_a)
        with pytest.raises(errors.IntegrityError) as info:
            vault.unlock(key_file=world.key_file)
        assert info.value.reason == "identity"
        assert vault.is_locked
        with pytest.raises(errors.VaultLocked):
            vault.get(world.target)


@pytest.mark.parametrize("column", ["identity_public", "wrapped_identity"])
def test_every_flipped_byte_of_the_identity_is_detected_at_unlock(
    shared_world: World, column: str
) -> None:
    world = shared_world

    def verify() -> None:
        with pds.open_store(world.db) as store:
            vault = store.open_vault(world.vault_a)
            with pytest.raises(errors.IntegrityError) as info:
                vault.unlock(key_file=world.key_file)
            assert info.value.reason == "identity"

    flip_each_byte(world, "vaults", column, "vault_id = ?", (world.vault_a,), verify)


def test_every_flipped_byte_of_the_wrapped_master_key_fails_unlock(shared_world: World) -> None:
    """The wrapped master key is authenticated by the owner's key: a change is
    indistinguishable from a wrong key, and the vault stays locked."""
    world = shared_world

    def verify() -> None:
        with pds.open_store(world.db) as store:
            vault = store.open_vault(world.vault_a)
            with pytest.raises(errors.WrongKey):
                vault.unlock(key_file=world.key_file)
            assert vault.is_locked

    flip_each_byte(world, "vaults", "wrapped_master", "vault_id = ?", (world.vault_a,), verify)


# -- cells whose SQLite storage class was changed ----------------------------------------

# SQLite does not enforce column types: ``blob || blob`` is TEXT, and any tool can store
# TEXT or INTEGER in a BLOB column. Such a cell is a changed byte like any other and must
# be refused with a pds error, never a driver exception or a TypeError.
_TYPE_CHANGES = {
    "text": "'a valid utf-8 text value'",
    "bad-utf8-text": "CAST({column} || x'ff' AS TEXT)",
    "integer": "12345",
}
# Columns whose storage class a host might change: every change must be a pds error.
_RETYPED = [
    ("records", "nonce"),
    ("records", "ciphertext"),
    ("batches", "manifest"),
    ("batches", "signature"),
    ("batches", "sealed_reader"),
    ("batches", "wrapped_host"),
    ("batches", "writer"),
    ("epochs", "public_key"),
    ("epochs", "signature"),
    ("epochs", "sealed_owner"),
    ("vaults", "identity_public"),
    ("vaults", "wrapped_master"),
    ("vaults", "wrapped_identity"),
    ("vaults", "unlock"),
]


def _type_change_cases() -> list[Any]:
    return [
        pytest.param(table, column, kind, id=f"{table}.{column}-{kind}")
        for table, column in _RETYPED
        for kind in _TYPE_CHANGES
    ]


@pytest.mark.parametrize(("table", "column", "kind"), _type_change_cases())
def test_blob_cell_with_another_storage_class_is_refused(
    world: World, table: str, column: str, kind: str
) -> None:
    value = _TYPE_CHANGES[kind].format(column=column)
    if table == "records":
        where, params = record_where(world, world.target)
        affected = [world.target]
    elif table == "batches":
        where, params = "batch_id = ?", (_batch_of(world, world.mates[0]),)
        affected = world.mates
    elif table == "epochs":
        where, params = _keyed_epoch_where(world)
        affected = [world.keyed]
    else:
        where, params = "vault_id = ?", (world.vault_a,)
        affected = []
    sql(world, f"UPDATE {table} SET {column} = {value} WHERE {where}", *params)
    with pds.open_store(world.db) as store:
        if table == "vaults":
            # Opening or unlocking: a retyped vault row is refused at one or the other.
            with pytest.raises(errors.PDSError):
                store.open_vault(world.vault_a).unlock(key_file=world.key_file)
            return
        vault = store.open_vault(world.vault_a)
        vault.unlock(key_file=world.key_file)
        for record_id in affected:
            with pytest.raises(errors.PDSError):
                vault.get(record_id)
            with pytest.raises(errors.PDSError):
                vault.history(record_id)
        assert vault.get(world.multi).data == world.expected[a(world, world.multi)]


# A listing reads these columns of every current row without a key (it works while
# locked): a retyped cell is refused as a corrupt store, never returned or a TypeError.
# (Values a column's affinity would convert back, like '2' into an INTEGER column, are
# not a change of storage class.)
_LISTED_RETYPES = [
    ("record_id", "x'01'"),
    ("version", "'two'"),
    ("created_at", "'soon'"),
    ("epoch", "1.5"),
    ("batch_id", "'text, not bytes'"),
    ("deleted", "2"),
    ("deleted", "'no'"),
    ("size", "x'00'"),
]


@pytest.mark.parametrize(("column", "value"), _LISTED_RETYPES)
def test_listed_cell_with_another_storage_class_is_refused(
    world: World, column: str, value: str
) -> None:
    where, params = record_where(world, world.target)
    sql(world, f"UPDATE records SET {column} = {value} WHERE {where}", *params)
    with pds.open_store(world.db) as store:
        vault = store.open_vault(world.vault_a)
        with pytest.raises(errors.StoreCorrupt):
            vault.list(limit=1000)


# -- answers for another record id ---------------------------------------------------------


def test_store_answering_for_another_record_id_is_refused(tmp_path: Path) -> None:
    key_file = tmp_path / "owner.key"
    SymmetricKey.create_file(key_file)
    db = tmp_path / "store.db"
    with pds.open_store(db) as store:
        vault_id = store.create_vault(key_file=key_file)
        vault = store.open_vault(vault_id)
        vault.unlock(key_file=key_file)
        vault.put("people", {"name": "Alice, upper case"}, record_id="Alice")
        for version in range(3):
            vault.put("people", {"name": f"alice v{version + 1}"}, record_id="alice")
    con = sqlite3.connect(db)
    con.execute("DROP INDEX idx_records_vault_id_record_id_version")
    (schema,) = con.execute("SELECT sql FROM sqlite_master WHERE name = 'records'").fetchone()
    changed = schema.replace("record_id TEXT NOT NULL", "record_id TEXT NOT NULL COLLATE NOCASE")
    assert changed != schema
    con.execute("PRAGMA writable_schema = ON")
    con.execute("UPDATE sqlite_master SET sql = ? WHERE name = 'records'", (changed,))
    con.commit()
    con.close()
    con = sqlite3.connect(db)
    con.execute("REINDEX")
    con.commit()
    assert con.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
    con.close()
    with pds.open_store(db) as store:
        vault = store.open_vault(vault_id)
        vault.unlock(key_file=key_file)
        try:
            record = vault.get("Alice")
        except errors.IntegrityError:
            pass
        else:
            assert (record.record_id, record.data) == ("Alice", {"name": "Alice, upper case"})
        try:
            history = vault.history("Alice")
        except errors.IntegrityError:
            pass
        else:
            assert [r.record_id for r in history] == ["Alice"]


# -- host-visible metadata that cannot be a time -------------------------------------------


@pytest.mark.parametrize("value", [10**17, -(10**17), "'noon'", "x'00'"])
def test_record_time_that_is_not_a_time_is_a_pds_error_in_list(world: World, value: Any) -> None:
    """An integer no datetime can hold is listed clamped (the listing goes on) and refused
    when read; a value that is no integer at all makes the row malformed."""
    where, params = record_where(world, world.target)
    sql(world, f"UPDATE records SET created_at = {value} WHERE {where}", *params)
    with fresh(world) as (vault, _):
        if isinstance(value, int):
            listed = {info.record_id: info.created_at for info in vault.iter_records()}
            assert listed[world.target].year == (9999 if value > 0 else 1)
            assert_refused(vault, world.target, "record-binding")
        else:
            with pytest.raises(errors.PDSError):
                list(vault.iter_records())
            with pytest.raises(errors.StoreCorrupt):
                vault.get(world.target)


@pytest.mark.parametrize("value", [10**17, "'noon'"])
def test_vault_time_that_is_not_a_time_is_a_pds_error(world: World, value: Any) -> None:
    sql(world, f"UPDATE vaults SET created_at = {value} WHERE vault_id = ?", world.vault_a)
    with pds.open_store(world.db) as store, pytest.raises(errors.PDSError):
        store.list_vaults()


def test_a_null_log_entry_is_listed_as_damaged(world: World) -> None:
    """SQLite enforces NOT NULL only as the table declares it: a host that rebuilds
    ``log_entries`` without it and sets an entry to NULL gets it listed as damaged in the
    owner's view (it was a TypeError from ``bytes(None)`` that hid the whole log)."""
    with raw(world) as con:
        (schema,) = con.execute(
            "SELECT sql FROM sqlite_master WHERE type = 'table' AND name = 'log_entries'"
        ).fetchone()
        assert '"entry" BLOB NOT NULL' in schema
        con.execute("ALTER TABLE log_entries RENAME TO old_entries")
        con.execute(schema.replace('"entry" BLOB NOT NULL', '"entry" BLOB'))
        con.execute("INSERT INTO log_entries SELECT * FROM old_entries")
        con.execute("DROP TABLE old_entries")
        changed = con.execute(
            "UPDATE log_entries SET entry = NULL WHERE vault_id = ? AND idx = 1", (world.vault_a,)
        ).rowcount
        assert changed == 1
    with fresh(world) as (a, _):
        entries = a.access_log()
        assert [e.index for e in entries] == list(range(len(entries)))
        assert [e.index for e in entries if e.damaged] == [1]
        assert [e.index for e in a.log(limit=3).entries] == [len(entries) - 1 - i for i in range(3)]
