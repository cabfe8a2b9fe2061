"""Export and import: lossless, verifiable, all-or-nothing, streaming.

A vault with history (updates, deletes, rotations) survives export and import into
another store (another host key) with every record, version, tombstone, erased version,
epoch and piece of metadata equal. Any changed, missing or extra byte of the file is
refused with a pds error and leaves the target store without the vault. Export and import
stream: their peak Python memory stays far below the file size.
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import io
import json
import os
import random
import shutil
import sqlite3
import stat
import struct
import tracemalloc
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

import pds
from pds import _codec, _export, audit, errors
from pds.accesslog import Checkpoint, MerkleLog, revoked_digest, rotated_digest
from pds.keys import SymmetricKey

MAGIC = b"pds-export/v1\n"


class Clock:
    """A clock that advances one second per reading, so every write has its own time."""

    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        self.now += 1.0
        return self.now


@dataclass
class Source:
    tmp: Path
    db: Path
    key_file: Path
    vault_id: str
    ids: list[str] = field(default_factory=list)
    """Every record id ever written, deleted ones included."""


def _build(tmp: Path) -> Source:
    key_file = tmp / "owner.key"
    SymmetricKey.create_file(key_file)
    db = tmp / "source.db"
    with pds.open_store(db, clock=Clock()) as store:
        vault_id = store.create_vault(key_file=key_file)
        vault = store.open_vault(vault_id)
        vault.unlock(key_file=key_file)
        source = Source(tmp, db, key_file, vault_id)
        first = vault.put("health/visits", {"clinic": "north", "cost": 12.5, "tags": ["a"]})
        batch = vault.put_many("benefits", [{"n": n, "text": "ü" * n} for n in range(4)])
        vault.put("health/visits", {"clinic": "south"}, record_id=first.record_id)
        vault.delete(batch[1].record_id)
        vault.rotate()
        vault.put("benefits", {"n": 10}, record_id=batch[0].record_id)
        later = vault.put("notes", {"text": "after the first rotation"})
        vault.rotate("notes")
        vault.put("notes", {"text": "third epoch"}, record_id=later.record_id)
        vault.put("notes", {"text": "named"}, record_id="custom-id.1")
        vault.rotate("benefits")
        third = vault.put("benefits", {"n": 3, "epoch": "third"})
        vault.delete(later.record_id)
        big = vault.put_many("bulk", [{"i": i} for i in range(140)])  # two batches
        source.ids = [first.record_id, *(b.record_id for b in batch), later.record_id]
        source.ids += ["custom-id.1", third.record_id, *(b.record_id for b in big[::20])]
    return source


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Source:
    return _build(tmp_path_factory.mktemp("source"))


@pytest.fixture(scope="module")
def export_bytes(source: Source) -> bytes:
    buffer = io.BytesIO()
    with pds.open_store(source.db) as store:
        vault = store.open_vault(source.vault_id)
        vault.unlock(key_file=source.key_file)
        vault.export(buffer)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def small_export(tmp_path_factory: pytest.TempPathFactory) -> tuple[bytes, Path]:
    """A small vault's export, for the byte-by-byte loops: every frame kind, few bytes."""
    tmp = tmp_path_factory.mktemp("small")
    key_file = tmp / "owner.key"
    SymmetricKey.create_file(key_file)
    with pds.open_store(tmp / "small.db") as store:
        vault = store.open_vault(store.create_vault(key_file=key_file))
        vault.unlock(key_file=key_file)
        first = vault.put("c", {"a": 1})
        vault.put_many("c", [{"b": 2}, {"b": 3}])
        vault.put("c", {"a": 2}, record_id=first.record_id)
        vault.rotate()
        vault.put("d", {"z": "q"})
        buffer = io.BytesIO()
        vault.export(buffer)
    return buffer.getvalue(), key_file


def _snapshot(db: Path, vault_id: str, key_file: Path, ids: list[str]) -> dict[str, Any]:
    """Everything observable about a vault through the API."""
    with pds.open_store(db) as store:
        info = [v for v in store.list_vaults() if v.vault_id == vault_id]
        vault = store.open_vault(vault_id)
        vault.unlock(key_file=key_file)
        return {
            "info": info,
            "did": vault.did,
            "created_at": vault.created_at,
            "collections": vault.collections(),
            "list": list(vault.iter_records()),
            "history": {rid: vault.history(rid) for rid in ids},
        }


def _rows(db: Path, vault_id: str) -> dict[str, list[tuple[Any, ...]]]:
    """The vault's rows, minus store-local columns (sequence numbers, the host-key wrap)."""
    con = sqlite3.connect(db)
    try:
        return {
            "vault": con.execute(
                "SELECT vault_id, created_at, identity_public, unlock, wrapped_master, "
                "wrapped_identity, destroyed_at FROM vaults WHERE vault_id = ?",
                (vault_id,),
            ).fetchall(),
            "epochs": con.execute(
                "SELECT collection, epoch, public_key, created_at, signature, sealed_owner "
                "FROM epochs WHERE vault_id = ? ORDER BY collection, epoch",
                (vault_id,),
            ).fetchall(),
            "batches": con.execute(
                "SELECT batch_id, collection, epoch, writer, created_at, manifest, signature, "
                "sealed_reader FROM batches WHERE vault_id = ? ORDER BY batch_id",
                (vault_id,),
            ).fetchall(),
            "records": con.execute(
                # The size of erased content is store-local (the importer never saw it).
                "SELECT record_id, version, collection, created_at, epoch, batch_id, deleted, "
                "current, CASE WHEN ciphertext IS NULL THEN NULL ELSE size END, nonce, "
                "ciphertext FROM records WHERE vault_id = ? "
                "ORDER BY record_id, version",
                (vault_id,),
            ).fetchall(),
        }
    finally:
        con.close()


def _vault_rows_exist(db: Path, vault_id: str | None = None) -> int:
    con = sqlite3.connect(db)
    try:
        total = 0
        for table in ("vaults", "epochs", "batches", "records"):
            if vault_id is None:
                total += con.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]
            else:
                total += con.execute(
                    f"SELECT COUNT(*) FROM {table} WHERE vault_id = ?", (vault_id,)
                ).fetchone()[0]
        return int(total)
    finally:
        con.close()


# -- the round trip --------------------------------------------------------------------


def test_round_trip_is_lossless(source: Source, export_bytes: bytes, tmp_path: Path) -> None:
    target = tmp_path / "target.db"
    with pds.open_store(target) as store:
        assert store.import_vault(io.BytesIO(export_bytes), key_file=source.key_file) == (
            source.vault_id
        )
    before = _snapshot(source.db, source.vault_id, source.key_file, source.ids)
    after = _snapshot(target, source.vault_id, source.key_file, source.ids)
    assert after == before
    # The history really holds what the round trip must keep.
    histories = before["history"].values()
    assert any(r.deleted for h in histories for r in h)
    assert any(r.erased for h in histories for r in h)
    assert {r.epoch for h in histories for r in h} == {1, 2, 3}
    assert _rows(target, source.vault_id) == _rows(source.db, source.vault_id)


def test_import_into_a_store_with_another_host_key(
    source: Source, export_bytes: bytes, tmp_path: Path
) -> None:
    host_key = SymmetricKey.generate()
    target = tmp_path / "target.db"
    with pds.open_store(target, host_key=host_key) as store:
        store.import_vault(io.BytesIO(export_bytes), key_file=source.key_file)
    con_source, con_target = sqlite3.connect(source.db), sqlite3.connect(target)
    wraps_source = dict(con_source.execute("SELECT batch_id, wrapped_host FROM batches"))
    wraps_target = dict(con_target.execute("SELECT batch_id, wrapped_host FROM batches"))
    con_source.close()
    con_target.close()
    assert wraps_source.keys() == wraps_target.keys()
    assert all(wraps_source[b] != wraps_target[b] for b in wraps_source)
    # The host shares were re-wrapped for this store: its own key reads them, the source
    # store's key file does not belong here.
    with pds.open_store(target, host_key=host_key) as store:
        vault = store.open_vault(source.vault_id)
        vault.unlock(key_file=source.key_file)
        assert all(vault.get(info.record_id).data is not None for info in vault.iter_records())
    source_host_key = SymmetricKey.from_file(f"{source.db}.hostkey")
    with pytest.raises(errors.HostKeyError):
        pds.open_store(target, host_key=source_host_key)


def test_export_of_an_import_round_trips_again(
    source: Source, export_bytes: bytes, tmp_path: Path
) -> None:
    second, third = tmp_path / "second.db", tmp_path / "third.db"
    with pds.open_store(second) as store:
        store.import_vault(io.BytesIO(export_bytes), key_file=source.key_file)
        vault = store.open_vault(source.vault_id)
        vault.unlock(key_file=source.key_file)
        vault.export(tmp_path / "again.pdsx")
    with pds.open_store(third) as store:
        store.import_vault(tmp_path / "again.pdsx", key_file=source.key_file)
    assert _snapshot(third, source.vault_id, source.key_file, source.ids) == _snapshot(
        source.db, source.vault_id, source.key_file, source.ids
    )


def test_passphrase_vault_round_trip_after_rekey(tmp_path: Path) -> None:
    kdf = pds.KdfParams.interactive()
    with pds.open_store(tmp_path / "a.db") as store:
        vault_id = store.create_vault(passphrase="first secret", kdf=kdf)
        vault = store.open_vault(vault_id)
        vault.unlock(passphrase="first secret")
        info = vault.put("c", {"x": "y"})
        vault.rekey(passphrase="second secret", kdf=kdf)
        vault.export(tmp_path / "v.pdsx")
    with pds.open_store(tmp_path / "b.db") as store:
        with pytest.raises(errors.WrongPassphrase):
            store.import_vault(tmp_path / "v.pdsx", passphrase="first secret")
        assert store.list_vaults() == []
        store.import_vault(tmp_path / "v.pdsx", passphrase="second secret")
        vault = store.open_vault(vault_id)
        vault.unlock(passphrase="second secret")
        assert vault.get(info.record_id).data == {"x": "y"}


def test_export_to_a_path_and_to_a_file_object(source: Source, tmp_path: Path) -> None:
    path = tmp_path / "by-path.pdsx"
    path.write_bytes(b"an older file that the export replaces")
    with pds.open_store(source.db) as store:
        vault = store.open_vault(source.vault_id)
        vault.unlock(key_file=source.key_file)
        counts: list[int] = []
        vault.export(path, progress=counts.append)
        with (tmp_path / "by-object.pdsx").open("wb") as stream:
            vault.export(stream)
        expected = list(vault.iter_records())
    assert path.read_bytes().startswith(MAGIC)
    assert counts and counts == list(range(1, len(counts) + 1))
    # No temporary file is left beside the export.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["by-object.pdsx", "by-path.pdsx"]
    with pds.open_store(tmp_path / "from-path.db") as store:
        store.import_vault(path, key_file=source.key_file)
        vault = store.open_vault(source.vault_id)
        vault.unlock(key_file=source.key_file)
        assert list(vault.iter_records()) == expected
    with (
        pds.open_store(tmp_path / "from-object.db") as store,
        (tmp_path / "by-object.pdsx").open("rb") as stream,
    ):
        store.import_vault(stream, key_file=source.key_file)
        vault = store.open_vault(source.vault_id)
        vault.unlock(key_file=source.key_file)
        assert list(vault.iter_records()) == expected


def test_failed_export_leaves_no_file(source: Source, tmp_path: Path) -> None:
    with pds.open_store(source.db) as store:
        vault = store.open_vault(source.vault_id)
        with pytest.raises(errors.VaultLocked):
            vault.export(tmp_path / "locked.pdsx")
    assert list(tmp_path.iterdir()) == []


def test_export_refuses_a_destination_that_is_not_a_regular_file(
    source: Source, tmp_path: Path
) -> None:
    """The export renames a new file over its destination path: a FIFO (or a device
    node, or a symlink to one) there is refused before anything is logged or written,
    and is still what it was."""
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    link = tmp_path / "link"
    link.symlink_to(fifo)
    with pds.open_store(source.db) as store:
        vault = store.open_vault(source.vault_id)
        vault.unlock(key_file=source.key_file)
        size = vault.log_size()
        for destination in (fifo, link, str(fifo)):
            with pytest.raises(errors.FormatError, match="not a regular file"):
                vault.export(destination)
        assert vault.log_size() == size
    assert stat.S_ISFIFO(fifo.stat().st_mode) and link.is_symlink()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["link", "pipe"]


def test_export_never_replaces_the_store_or_the_key_file(source: Source, tmp_path: Path) -> None:
    """An export path that is the store's own database (or its write-ahead log, host key)
    or the key file that unlocked the vault is refused before anything is logged: renamed
    over it, the export would destroy the store or the only key that opens the vault."""
    db = tmp_path / "copy.db"
    key_file = tmp_path / "owner.key"
    shutil.copy(source.db, db)
    shutil.copy(source.db.with_name(source.db.name + ".hostkey"), tmp_path / "copy.db.hostkey")
    shutil.copy(source.key_file, key_file)
    kept = {path: path.read_bytes() for path in (db, key_file, tmp_path / "copy.db.hostkey")}
    with pds.open_store(db) as store:
        vault = store.open_vault(source.vault_id)
        vault.unlock(key_file=key_file)
        size = vault.log_size()
        for destination in (db, str(db), tmp_path / "copy.db.hostkey", key_file):
            with pytest.raises(errors.FormatError, match="not replaced"):
                vault.export(destination)
        wal = tmp_path / "copy.db-wal"
        if wal.exists():
            with pytest.raises(errors.FormatError, match="not replaced"):
                vault.export(wal)
        assert vault.log_size() == size
    assert {path: path.read_bytes() for path in kept} == kept


@pytest.mark.parametrize("case", ["text stream", "missing directory", "nul in path"])
def test_export_refuses_a_bad_destination_before_logging(
    source: Source, tmp_path: Path, case: str
) -> None:
    destination: Any = {
        "text stream": io.StringIO(),
        "missing directory": tmp_path / "missing" / "v.pdsx",
        "nul in path": str(tmp_path / "v\0.pdsx"),
    }[case]
    with pds.open_store(source.db) as store:
        vault = store.open_vault(source.vault_id)
        vault.unlock(key_file=source.key_file)
        size = vault.log_size()
        with pytest.raises(errors.FormatError):
            vault.export(destination)
        assert vault.log_size() == size  # nothing logged: no export took place


def test_import_of_a_path_with_a_nul_is_a_format_error(source: Source, tmp_path: Path) -> None:
    with pds.open_store(tmp_path / "t.db") as store, pytest.raises(errors.FormatError):
        store.import_vault(str(tmp_path / "v\0.pdsx"), key_file=source.key_file)


def test_import_progress_counts_records(
    source: Source, export_bytes: bytes, tmp_path: Path
) -> None:
    seen: list[int] = []
    with pds.open_store(tmp_path / "t.db") as store:
        store.import_vault(io.BytesIO(export_bytes), key_file=source.key_file, progress=seen.append)
    with sqlite3.connect(source.db) as con:
        (rows,) = con.execute(
            "SELECT COUNT(*) FROM records WHERE vault_id = ?", (source.vault_id,)
        ).fetchone()
    con.close()
    assert seen == list(range(1, rows + 1))


# -- refusals --------------------------------------------------------------------------


def test_importing_twice_is_refused(source: Source, export_bytes: bytes, tmp_path: Path) -> None:
    with pds.open_store(tmp_path / "t.db") as store:
        store.import_vault(io.BytesIO(export_bytes), key_file=source.key_file)
        before = _rows(tmp_path / "t.db", source.vault_id)
        with pytest.raises(errors.VaultExists):
            store.import_vault(io.BytesIO(export_bytes), key_file=source.key_file)
        assert _rows(tmp_path / "t.db", source.vault_id) == before
    with pds.open_store(source.db) as store, pytest.raises(errors.VaultExists):
        store.import_vault(io.BytesIO(export_bytes), key_file=source.key_file)


def test_wrong_owner_secret_is_refused(source: Source, export_bytes: bytes, tmp_path: Path) -> None:
    other = tmp_path / "other.key"
    SymmetricKey.create_file(other)
    with pds.open_store(tmp_path / "t.db") as store:
        with pytest.raises(errors.WrongKey):
            store.import_vault(io.BytesIO(export_bytes), key_file=other)
        with pytest.raises(errors.WrongPassphrase):
            store.import_vault(io.BytesIO(export_bytes), passphrase="not a key vault")
        with pytest.raises(errors.FormatError):
            store.import_vault(io.BytesIO(export_bytes))
        assert store.list_vaults() == []
    assert _vault_rows_exist(tmp_path / "t.db") == 0


def test_not_an_export_file(source: Source, tmp_path: Path) -> None:
    with pds.open_store(tmp_path / "t.db") as store:
        for content in (b"", b"pds-export/v2\n", b"hello", source.db.read_bytes()[:4096]):
            with pytest.raises(errors.FormatError):
                store.import_vault(io.BytesIO(content), key_file=source.key_file)
        with pytest.raises(errors.FormatError):
            store.import_vault(tmp_path / "missing.pdsx", key_file=source.key_file)
        assert store.list_vaults() == []


@dataclass
class Outcome:
    position: int
    error: BaseException


@pytest.fixture(scope="module")
def flip_outcomes(
    small_export: tuple[bytes, Path], tmp_path_factory: pytest.TempPathFactory
) -> list[Outcome]:
    """Import the small export once per byte, that byte XORed with a random non-zero mask."""
    data, key_file = small_export
    target = tmp_path_factory.mktemp("flips") / "target.db"
    rng = random.Random(4242)
    outcomes = []
    with pds.open_store(target) as store:
        for position in range(len(data)):
            changed = bytearray(data)
            changed[position] ^= rng.randrange(1, 256)
            try:
                store.import_vault(io.BytesIO(bytes(changed)), key_file=key_file)
            except Exception as exc:
                outcomes.append(Outcome(position, exc))
            else:
                pytest.fail(f"a flip at byte {position} was imported")
            assert store.list_vaults() == [], position
    assert _vault_rows_exist(target) == 0
    return outcomes


def _header_secret_ranges(data: bytes) -> list[range]:
    """Byte ranges of the header frame's vault id and wrapped master key values."""
    (length,) = struct.unpack(">I", data[len(MAGIC) : len(MAGIC) + 4])
    start = len(MAGIC) + 4
    header = _codec.decode(data[start : start + length])
    ranges = []
    for value in (header["vault"].encode(), header["wrapped_master"]):
        offset = data.index(value, start, start + length)
        ranges.append(range(offset, offset + len(value)))
    return ranges


def test_every_flipped_byte_is_refused_as_changed_or_malformed(
    small_export: tuple[bytes, Path], flip_outcomes: list[Outcome]
) -> None:
    data, _ = small_export
    assert len(flip_outcomes) == len(data) > 1000
    wrong = [
        (o.position, repr(o.error))
        for o in flip_outcomes
        if not isinstance(o.error, (errors.IntegrityError, errors.FormatError))
    ]
    assert wrong == []


def test_every_flipped_byte_of_the_header_secrets_is_refused_as_changed(
    small_export: tuple[bytes, Path], flip_outcomes: list[Outcome]
) -> None:
    data, _ = small_export
    header = _header_secret_ranges(data)
    inside = [o for o in flip_outcomes if any(o.position in r for r in header)]
    assert len(inside) > 40
    assert all(isinstance(o.error, errors.PDSError) for o in inside)
    wrong = [
        (o.position, type(o.error).__name__)
        for o in inside
        if not isinstance(o.error, (errors.IntegrityError, errors.FormatError))
    ]
    assert wrong == []


def test_every_flip_raises_a_pds_error(flip_outcomes: list[Outcome]) -> None:
    assert [
        (o.position, repr(o.error))
        for o in flip_outcomes
        if not isinstance(o.error, errors.PDSError)
    ] == []


def test_truncation_at_every_offset_is_refused(
    small_export: tuple[bytes, Path], tmp_path: Path
) -> None:
    data, key_file = small_export
    with pds.open_store(tmp_path / "t.db") as store:
        for size in range(len(data)):
            with pytest.raises((errors.FormatError, errors.IntegrityError)):
                store.import_vault(io.BytesIO(data[:size]), key_file=key_file)
            assert store.list_vaults() == [], size
    assert _vault_rows_exist(tmp_path / "t.db") == 0


def _frames(data: bytes) -> Iterator[tuple[int, int]]:
    """(start, end) of each length-prefixed frame."""
    position = len(MAGIC)
    while position < len(data):
        (length,) = struct.unpack(">I", data[position : position + 4])
        yield position, position + 4 + length
        position += 4 + length


@pytest.mark.parametrize(
    "suffix",
    [b"\x00", b"trailing garbage", b"\x00\x00\x00\x00", "repeat-end", "repeat-file"],
    ids=repr,
)
def test_trailing_bytes_are_refused(
    small_export: tuple[bytes, Path], tmp_path: Path, suffix: bytes | str
) -> None:
    data, key_file = small_export
    if suffix == "repeat-end":
        start, end = list(_frames(data))[-1]
        extra = data[start:end]
    elif suffix == "repeat-file":
        extra = data
    else:
        assert isinstance(suffix, bytes)
        extra = suffix
    with pds.open_store(tmp_path / "t.db") as store:
        with pytest.raises((errors.FormatError, errors.IntegrityError)):
            store.import_vault(io.BytesIO(data + extra), key_file=key_file)
        assert store.list_vaults() == []


@pytest.mark.parametrize(
    ("which", "change"),
    [
        ("first-record", "drop"),
        ("first-record", "repeat"),
        ("last-record", "drop"),
        ("last-record", "repeat"),
        ("a-batch", "drop"),
        ("a-batch", "repeat"),
        ("an-epoch", "drop"),
        ("an-epoch", "repeat"),
    ],
)
def test_dropped_or_repeated_frames_are_refused(
    small_export: tuple[bytes, Path], tmp_path: Path, which: str, change: str
) -> None:
    data, key_file = small_export
    frames = list(_frames(data))
    kinds = [_codec.decode(data[s + 4 : e])["t"] for s, e in frames]
    index = {
        "first-record": kinds.index("record"),
        "last-record": len(kinds) - 1 - kinds[::-1].index("record"),
        "a-batch": kinds.index("batch"),
        "an-epoch": kinds.index("epoch"),
    }[which]
    start, end = frames[index]
    if change == "drop":
        variant = data[:start] + data[end:]
    else:
        variant = data[:end] + data[start:end] + data[end:]
    with pds.open_store(tmp_path / "t.db") as store:
        with pytest.raises((errors.FormatError, errors.IntegrityError)):
            store.import_vault(io.BytesIO(variant), key_file=key_file)
        assert store.list_vaults() == []


def test_out_of_range_integer_in_the_header_is_refused(
    small_export: tuple[bytes, Path], tmp_path: Path
) -> None:
    data, key_file = small_export
    start = len(MAGIC) + 4
    marker = data.index(b"\xaacreated_at\xcf", start) + len(b"\xaacreated_at\xcf")
    changed = data[:marker] + b"\xff" + data[marker + 1 :]
    with pds.open_store(tmp_path / "t.db") as store:
        with pytest.raises((errors.FormatError, errors.IntegrityError)):
            store.import_vault(io.BytesIO(changed), key_file=key_file)
        assert store.list_vaults() == []


# -- streaming memory ------------------------------------------------------------------

BIG_RECORDS = 20_000
# tracemalloc sees Python objects only (SQLite's page cache is outside it): a constant
# working set of about 1.8 MB here, well below the files measured.
MEMORY_FRACTION = 0.35


@pytest.fixture(scope="module")
def big_vault(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, str, Path]:
    tmp = tmp_path_factory.mktemp("big")
    key_file = tmp / "owner.key"
    SymmetricKey.create_file(key_file)
    db = tmp / "big.db"
    with pds.open_store(db, synchronous="normal") as store:
        vault_id = store.create_vault(key_file=key_file)
        vault = store.open_vault(vault_id)
        vault.unlock(key_file=key_file)
        for start in range(0, BIG_RECORDS, 1000):
            vault.put_many(
                f"c{start % 3}", [{"i": i, "text": "x" * 40} for i in range(start, start + 1000)]
            )
        vault.export(tmp / "big.pdsx")
    return db, key_file, vault_id, tmp / "big.pdsx"


def _peak(call: Any) -> int:
    tracemalloc.start()
    try:
        call()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_export_streams_in_constant_memory(
    big_vault: tuple[Path, Path, str, Path], tmp_path: Path
) -> None:
    """The peak is a small fraction of the file, and does not grow when the vault does."""
    db, key_file, vault_id, reference = big_vault
    size = reference.stat().st_size
    assert size > 3_000_000
    copy = tmp_path / "grown.db"
    shutil.copy(db, copy)
    shutil.copy(Path(f"{db}.hostkey"), Path(f"{copy}.hostkey"))
    with pds.open_store(copy, synchronous="normal") as store:
        vault = store.open_vault(vault_id)
        vault.unlock(key_file=key_file)
        peak = _peak(lambda: vault.export(tmp_path / "again.pdsx"))
        for _start in range(0, BIG_RECORDS, 1000):
            vault.put_many("grown", [{"i": i, "text": "y" * 40} for i in range(1000)])
        grown_peak = _peak(lambda: vault.export(tmp_path / "grown.pdsx"))
    assert (tmp_path / "grown.pdsx").stat().st_size > 1.8 * size
    assert peak < MEMORY_FRACTION * size, (peak, size)
    assert grown_peak < 1.15 * peak + 64 * 1024, (peak, grown_peak)


def test_import_streams_in_constant_memory(
    big_vault: tuple[Path, Path, str, Path], tmp_path: Path
) -> None:
    _, key_file, vault_id, export = big_vault
    size = export.stat().st_size
    with pds.open_store(tmp_path / "t.db", synchronous="normal") as store:
        peak = _peak(lambda: store.import_vault(export, key_file=key_file))
        vault = store.open_vault(vault_id)
        vault.unlock(key_file=key_file)
        assert sum(1 for _ in vault.iter_records()) == BIG_RECORDS
    assert peak < MEMORY_FRACTION * size, (peak, size)


def test_import_memory_does_not_grow_with_the_number_of_batches(tmp_path: Path) -> None:
    """export.md's memory bound holds for many small batches too: nothing per batch (its
    id, say) stays in memory; a repeated batch is found in the transaction instead."""
    key_file = tmp_path / "owner.key"
    SymmetricKey.create_file(key_file)
    exports = []
    with pds.open_store(tmp_path / "source.db", synchronous="normal") as store:
        vault = store.open_vault(store.create_vault(key_file=key_file))
        vault.unlock(key_file=key_file)
        for extra in (300, 2000):
            for i in range(extra):
                vault.put("c", {"i": i})  # one batch each
            buffer = io.BytesIO()
            vault.export(buffer)
            exports.append(buffer.getvalue())
    peaks = []
    for number, data in enumerate(exports):
        with pds.open_store(tmp_path / f"target{number}.db", synchronous="normal") as target:
            source = io.BytesIO(data)
            peaks.append(_peak(functools.partial(target.import_vault, source, key_file=key_file)))
    # 2,000 more batches: a set of their ids alone would add well over 100 KiB.
    assert peaks[1] < peaks[0] + 48 * 1024, peaks


# -- export verifies what it copies ------------------------------------------------------


def _flipped(blob: bytes, position: int = 40) -> bytes:
    changed = bytearray(blob)
    changed[position % len(changed)] ^= 0x01
    return bytes(changed)


@dataclass
class Granted:
    db: Path
    key_file: Path
    vault_id: str
    token: pds.Token


@pytest.fixture
def granted(tmp_path: Path) -> Granted:
    """A vault with a budgeted grant that was used, a key shared by a rotation, and a
    revoked grant: every row kind the export copies."""
    key_file = tmp_path / "owner.key"
    SymmetricKey.create_file(key_file)
    db = tmp_path / "granted.db"
    clock = Clock()
    with pds.open_store(db, clock=clock) as store:
        vault = store.open_vault(store.create_vault(key_file=key_file))
        vault.unlock(key_file=key_file)
        vault.put("tax/2024", {"income": 41000})
        agency = pds.PrincipalKey.generate()
        token = vault.grant(
            agency.did,
            collections=["tax/*"],
            purpose="check",
            uses=3,
            expires=dt.timedelta(days=30),
        )
        pds.Grantee(agency, clock=clock).read(store, token)
        vault.put("tax/2025", {"income": 42000})
        vault.rotate()  # shares the new epochs of tax/2024 and tax/2025: two link keys
        for _ in range(2):
            other = vault.grant(
                agency.did, collections=["tax/*"], purpose="check", expires=dt.timedelta(days=1)
            )
            vault.revoke(other, reason="done")
        return Granted(db, key_file, vault.vault_id, token)


def _sql(db: Path, statement: str, *params: Any) -> None:
    conn = sqlite3.connect(db)
    try:
        with conn:
            assert conn.execute(statement, params).rowcount >= 1
    finally:
        conn.close()


def _blob(db: Path, query: str) -> bytes:
    conn = sqlite3.connect(db)
    try:
        (value,) = conn.execute(query).fetchone()
    finally:
        conn.close()
    return bytes(value)


DAMAGE: list[Any] = [
    pytest.param(
        "UPDATE links SET sealed_token = ? WHERE link_id = ?",
        lambda g: (
            _flipped(_blob(g.db, "SELECT sealed_token FROM links LIMIT 1")),
            g.token.link_id,
        ),
        "link",
        id="link token",
    ),
    pytest.param(
        "UPDATE link_keys SET collection = ? WHERE collection = 'tax/2025'",
        lambda g: ("not a name",),
        "link",
        id="link key",
    ),
    pytest.param("UPDATE link_uses SET count = ?", lambda g: (4,), "link", id="use over budget"),
    pytest.param(
        "UPDATE revocations SET signature = ?",
        lambda g: (_flipped(_blob(g.db, "SELECT signature FROM revocations LIMIT 1"), 5),),
        "revocation",
        id="revocation",
    ),
    pytest.param(
        "UPDATE epochs SET signature = ? WHERE epoch = 1",
        lambda g: (_flipped(_blob(g.db, "SELECT signature FROM epochs WHERE epoch = 1"), 5),),
        "epoch-signature",
        id="epoch",
    ),
    pytest.param(
        "UPDATE records SET ciphertext = ?",
        lambda g: (_flipped(_blob(g.db, "SELECT ciphertext FROM records LIMIT 1"), 5),),
        "record-hash",
        id="record",
    ),
    pytest.param("DELETE FROM records", lambda g: (), "export-incomplete", id="record missing"),
]


@pytest.mark.parametrize(("statement", "params", "reason"), DAMAGE)
def test_export_refuses_a_damaged_row_and_leaves_no_file(
    granted: Granted, tmp_path: Path, statement: str, params: Any, reason: str
) -> None:
    """Every row the export copies is checked as the importer would check it: a damaged
    row fails the export (no file), not a later import of a file reported as written."""
    _sql(granted.db, statement, *params(granted))
    out = tmp_path / "out"
    out.mkdir()
    with pds.open_store(granted.db) as store:
        vault = store.open_vault(granted.vault_id)
        vault.unlock(key_file=granted.key_file)
        with pytest.raises(errors.IntegrityError) as caught:
            vault.export(out / "damaged.pdsx")
    assert caught.value.reason == reason
    assert list(out.iterdir()) == []


def test_an_undamaged_granted_vault_exports_and_imports(granted: Granted, tmp_path: Path) -> None:
    with pds.open_store(granted.db) as store:
        vault = store.open_vault(granted.vault_id)
        vault.unlock(key_file=granted.key_file)
        vault.export(tmp_path / "ok.pdsx")
    with pds.open_store(tmp_path / "target.db") as target:
        assert target.import_vault(tmp_path / "ok.pdsx", key_file=granted.key_file)


@pytest.mark.parametrize(
    ("statement", "params", "reason"), [DAMAGE[0], DAMAGE[3]], ids=["link token", "revocation"]
)
def test_audit_export_of_a_damaged_row_is_an_integrity_error(
    granted: Granted, tmp_path: Path, statement: str, params: Any, reason: str
) -> None:
    """The package would not verify (or export_audit crashed with a raw crypto error)."""
    _sql(granted.db, statement, *params(granted))
    with pds.open_store(granted.db) as store:
        vault = store.open_vault(granted.vault_id)
        vault.unlock(key_file=granted.key_file)
        with pytest.raises(errors.IntegrityError) as caught:
            audit.export_audit(vault, tmp_path / "package")
    assert caught.value.reason == reason
    assert list((tmp_path / "package").iterdir()) == []


# -- the order of frames inside a section ------------------------------------------------


def _documents(data: bytes) -> list[dict[str, Any]]:
    return [_codec.decode(data[start + 4 : end]) for start, end in _frames(data)]


def _exported_documents(granted: Granted) -> list[dict[str, Any]]:
    """The granted vault exported as its owner exports it, as decoded frames."""
    buffer = io.BytesIO()
    with pds.open_store(granted.db) as store:
        vault = store.open_vault(granted.vault_id)
        vault.unlock(key_file=granted.key_file)
        vault.export(buffer)
    return _documents(buffer.getvalue())


def _resigned(documents: list[dict[str, Any]], granted: Granted) -> bytes:
    """The file an exporter holding the vault key would write with these frames: the end
    frame recomputed and signed, so only the importer's own checks can refuse it."""
    body = [d for d in documents if d["t"] != "end"]
    counts = dict.fromkeys(_export._COUNTED.values(), 0)
    for document in body:
        if document["t"] in _export._COUNTED:
            counts[_export._COUNTED[document["t"]]] += 1
    data = MAGIC
    for document in body:
        encoded = _codec.encode(document)
        data += struct.pack(">I", len(encoded)) + encoded
    digest = hashlib.sha256(data).digest()
    with pds.open_store(granted.db) as store:
        vault = store.open_vault(granted.vault_id)
        vault.unlock(key_file=granted.key_file)
        signature = vault._keys().identity.sign(
            _export.END_SIGNATURE_LABEL, _export._end_statement(granted.vault_id, digest, counts)
        )
    end = _codec.encode({"t": "end", "counts": counts, "digest": digest, "signature": signature})
    return data + struct.pack(">I", len(end)) + end


def _swap_first_two(documents: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    first, second = [i for i, d in enumerate(documents) if d["t"] == kind][:2]
    swapped = list(documents)
    swapped[first], swapped[second] = swapped[second], swapped[first]
    return swapped


def _use_before_keys(documents: list[dict[str, Any]]) -> list[dict[str, Any]]:
    use = next(i for i, d in enumerate(documents) if d["t"] == "link_use")
    key = next(i for i, d in enumerate(documents) if d["t"] == "link_key")
    moved = list(documents)
    moved.insert(key, moved.pop(use))
    return moved


def _links_swapped(documents: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The first two links, each with its keys and use count, in the other order."""
    start = next(i for i, d in enumerate(documents) if d["t"] == "link")
    end = next(i for i, d in enumerate(documents) if d["t"] == "revocation")
    groups: list[list[dict[str, Any]]] = []
    for document in documents[start:end]:
        if document["t"] == "link":
            groups.append([])
        groups[-1].append(document)
    groups[0], groups[1] = groups[1], groups[0]
    return documents[:start] + [d for g in groups for d in g] + documents[end:]


def _empty_checkpoint(documents: list[dict[str, Any]], granted: Granted) -> list[dict[str, Any]]:
    with pds.open_store(granted.db) as store:
        vault = store.open_vault(granted.vault_id)
        vault.unlock(key_file=granted.key_file)
        note = Checkpoint.sign(
            vault._keys().identity,
            granted.vault_id,
            0,
            b"\x42" * 32,
            1,
            records=(revoked_digest([]), rotated_digest({})),
        )
    return [
        {"t": "checkpoint", "note": note.to_text()} if d["t"] == "checkpoint" else d
        for d in documents
    ]


def _batch_repeated_later(documents: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The first batch with its records again after the last batch (not adjacent)."""
    start = next(i for i, d in enumerate(documents) if d["t"] == "batch")
    end = next(i for i in range(start + 1, len(documents)) if documents[i]["t"] != "record")
    last = next(i for i, d in enumerate(documents) if d["t"] == "link")
    return documents[:last] + documents[start:end] + documents[last:]


REORDERED: list[Any] = [
    pytest.param(lambda d, g: _batch_repeated_later(d), "export-duplicate", id="batch again"),
    pytest.param(lambda d, g: _swap_first_two(d, "epoch"), "export-order", id="epochs"),
    pytest.param(lambda d, g: _links_swapped(d), "export-order", id="links"),
    pytest.param(lambda d, g: _swap_first_two(d, "link_key"), "export-order", id="link keys"),
    pytest.param(lambda d, g: _use_before_keys(d), "export-order", id="use before keys"),
    pytest.param(lambda d, g: _swap_first_two(d, "revocation"), "export-order", id="revocations"),
    pytest.param(_empty_checkpoint, "checkpoint", id="size-0 checkpoint, root not H('')"),
]


@pytest.mark.parametrize(("change", "reason"), REORDERED)
def test_frames_out_of_order_in_their_section_are_refused(
    granted: Granted, tmp_path: Path, change: Any, reason: str
) -> None:
    """export.md: frames are ordered inside their section too, and an importer refuses any
    other order, even in a file the vault key signed (another exporter's, say)."""
    documents = _exported_documents(granted)
    with pds.open_store(tmp_path / "control.db") as target:
        target.import_vault(io.BytesIO(_resigned(documents, granted)), key_file=granted.key_file)
    with pds.open_store(tmp_path / "target.db") as target:
        with pytest.raises(errors.IntegrityError) as caught:
            target.import_vault(
                io.BytesIO(_resigned(change(documents, granted), granted)),
                key_file=granted.key_file,
            )
        assert caught.value.reason == reason
        assert target.list_vaults() == []


# -- bytes in the log that are no entry ----------------------------------------------------


def _host_appends_then_owner_signs(granted: Granted, how: str) -> tuple[int, bytes, Checkpoint]:
    """The host appends bytes that are no entry of the log at their index (with the
    stored subtree hashes made as for any entry); then the owner reads a record, which
    signs a head over them. Returns their index, the bytes and that head."""
    with pds.open_store(granted.db) as store:
        vault = store.open_vault(granted.vault_id)
        vault.unlock(key_file=granted.key_file)
        backend = store.backend
        with backend.transaction():
            log = MerkleLog(backend, granted.vault_id)
            index = log.size()
            previous = next(iter(backend.iter_log(granted.vault_id, index - 1, index)))[1]
            header = _codec.decode(previous)
            garbage = {
                "not msgpack": b"\xc1",
                "empty": b"",
                "another index": previous,
                "another vault": _codec.encode({**header, "index": index, "vault": "other"}),
            }[how]
            log.append_raw(index, 1234, garbage)
        vault.get(vault.list("tax/2024").records[0].record_id)
        head = vault.latest_checkpoint()
    assert head is not None and head.size == index + 2
    return index, garbage, head


def _log_rows(db: Path, vault_id: str) -> list[tuple[int, int, bytes]]:
    conn = sqlite3.connect(db)
    try:
        rows = conn.execute(
            "SELECT idx, time, entry FROM log_entries WHERE vault_id = ? ORDER BY idx",
            (vault_id,),
        ).fetchall()
    finally:
        conn.close()
    return [(index, time, bytes(entry)) for index, time, entry in rows]


@pytest.mark.parametrize("how", ["not msgpack", "empty", "another index", "another vault"])
def test_bytes_the_host_wrote_that_are_no_entry_export_and_import_as_they_are(
    granted: Granted, tmp_path: Path, how: str
) -> None:
    """An export carries them in their log frame as stored; an import (with a pin past
    them, so its walk of the pinned entries passes them too) appends them as they are: the
    imported log has the same entries and root, and lists them as damaged. Both refused
    the vault for good (log-entry, FormatError, log-order): the log is append-only."""
    index, garbage, head = _host_appends_then_owner_signs(granted, how)
    with pds.open_store(granted.db) as store:
        vault = store.open_vault(granted.vault_id)
        vault.unlock(key_file=granted.key_file)
        vault.export(tmp_path / "v.pdsx", pinned=head)
    data = (tmp_path / "v.pdsx").read_bytes()
    frames = [d for d in _documents(data) if d["t"] == "log"]
    assert (frames[index]["index"], frames[index]["entry"]) == (index, garbage)

    with pds.open_store(tmp_path / "target.db") as target:
        assert target.import_vault(io.BytesIO(data), key_file=granted.key_file, pinned=head)
        imported = target.open_vault(granted.vault_id)
        imported.verify_log(head)  # the same root at the head's size
        imported.unlock(key_file=granted.key_file)
        entries = imported.access_log()
        assert [e.index for e in entries if e.damaged] == [index]
        assert entries[index].damage == "entry"
        assert entries[-1].kind == "import"
    source, copied = (
        _log_rows(granted.db, granted.vault_id),
        _log_rows(tmp_path / "target.db", granted.vault_id),
    )
    assert [entry for _, _, entry in copied[: len(frames)]] == [e for _, _, e in source]
    # Stored with the time stored for the entry before it: nothing dates it but its place.
    assert copied[index][1] == copied[index - 1][1] == source[index - 1][1] != source[index][1]


def test_bytes_that_are_no_entry_changed_in_a_file_fail_its_head(
    granted: Granted, tmp_path: Path
) -> None:
    """The head check over the file is unchanged: such bytes are hashed like any entry,
    so changing them in a file (even one re-signed with the vault key) fails the file's
    checkpoint, and nothing is imported."""
    index, _, head = _host_appends_then_owner_signs(granted, "not msgpack")
    documents = _exported_documents(granted)
    frame = next(d for d in documents if d["t"] == "log" and d["index"] == index)
    frame["entry"] = b"\xc2"
    with pds.open_store(tmp_path / "target.db") as target:
        with pytest.raises(errors.IntegrityError) as caught:
            target.import_vault(
                io.BytesIO(_resigned(documents, granted)), key_file=granted.key_file
            )
        assert caught.value.reason == "checkpoint"
        assert target.list_vaults() == []
    assert head.size == index + 2


def test_a_field_sealed_record_too_large_to_export_is_refused_when_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Sealed field by field, each field adds its nonce, tag and name: a record of many
    small fields can outgrow its plaintext several times over. It is refused when written
    (over ``MAX_STORED_SIZE``, here made small), so every stored record fits an export
    frame, and nothing of its batch is stored."""
    monkeypatch.setattr(pds.vault, "MAX_STORED_SIZE", 4096)
    key_file = tmp_path / "owner.key"
    SymmetricKey.create_file(key_file)
    with pds.open_store(tmp_path / "s.db") as store:
        vault = store.open_vault(store.create_vault(key_file=key_file))
        vault.unlock(key_file=key_file)
        vault.create_collection("forms", seal_fields=True)
        many = {f"f{i}": i for i in range(100)}  # ~0.6 KB of plaintext, ~6 KB sealed
        assert len(json.dumps(many)) < 4096
        with pytest.raises(errors.InvalidRecordData, match="24 MiB"):
            vault.put_many("forms", [{"a": 1}, many])
        assert list(vault.iter_records()) == []
        vault.put("forms", {f"f{i}": i for i in range(40)})  # below the bound: stored


def test_an_export_frame_too_large_to_import_fails_the_export(
    source: Source, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A stored row larger than an import accepts (a record stored before the bound
    above) fails the export, which leaves no file: a file reported as written imports."""
    monkeypatch.setattr(pds._export, "MAX_FRAME", 200)
    with pds.open_store(source.db) as store:
        vault = store.open_vault(source.vault_id)
        vault.unlock(key_file=source.key_file)
        with pytest.raises(errors.FormatError, match="larger than an export frame"):
            vault.export(tmp_path / "v.pdsx")
    assert list(tmp_path.iterdir()) == []


def test_an_import_with_a_pin_refuses_an_export_older_than_it(tmp_path: Path) -> None:
    """An export made before a revocation, imported after it: the file's log and heads are
    older than the head pinned at the revocation, so with that pin nothing is imported (the
    revoked grant would be live again, under a head the owner's key signs for the import);
    the same file with an older pin, or none, imports."""
    key_file = tmp_path / "owner.key"
    SymmetricKey.create_file(key_file)
    clock = Clock()
    with pds.open_store(tmp_path / "source.db", clock=clock) as store:
        vault_id = store.create_vault(key_file=key_file)
        vault = store.open_vault(vault_id)
        vault.unlock(key_file=key_file)
        vault.put("tax", {"income": 1})
        holder = pds.Grantee(pds.PrincipalKey.generate(), clock=clock)
        token = vault.grant(holder.did, collections=["tax"], purpose="p", expires=dt.timedelta(9))
        before = vault.latest_checkpoint()
        old = io.BytesIO()
        vault.export(old)
        vault.revoke(token)
        pin = vault.latest_checkpoint()
        newer = io.BytesIO()
        vault.export(newer)
    assert before is not None and pin is not None
    target = tmp_path / "target.db"
    cases: list[tuple[Any, str]] = [
        (pin, "log-truncated"),
        (pin.to_text(), "log-truncated"),
        (lambda vault: pin if vault == vault_id else None, "log-truncated"),
    ]
    with pds.open_store(target, clock=clock) as store:
        for pinned, reason in cases:
            with pytest.raises(errors.InvalidProof) as refused:
                store.import_vault(io.BytesIO(old.getvalue()), key_file=key_file, pinned=pinned)
            assert refused.value.reason == reason
            assert store.list_vaults() == []  # nothing imported
        # The pin of another vault is refused as such.
        other = pds.open_store(tmp_path / "other.db")
        other_vault = other.open_vault(other.create_vault(key_file=key_file))
        other_vault.unlock(key_file=key_file)
        other_vault.put("x", {"y": 1})
        foreign = other_vault.latest_checkpoint()
        other.close()
        with pytest.raises(errors.InvalidProof):
            store.import_vault(io.BytesIO(old.getvalue()), key_file=key_file, pinned=foreign)
        assert store.list_vaults() == []
        # The newer export extends the pin; the older one extends the head before.
        assert (
            store.import_vault(io.BytesIO(newer.getvalue()), key_file=key_file, pinned=pin)
            == vault_id
        )
        imported = store.open_vault(vault_id)
        imported.unlock(key_file=key_file)
        imported.verify_log(pin)
    with pds.open_store(tmp_path / "third.db", clock=clock) as store:
        assert (
            store.import_vault(io.BytesIO(old.getvalue()), key_file=key_file, pinned=before)
            == vault_id
        )


def test_an_import_with_a_pin_refuses_a_log_that_forks_from_it(tmp_path: Path) -> None:
    """The same vault's store copied, and each copy written to after the copy: an export of
    one does not extend the other's head (log-fork)."""
    key_file = tmp_path / "owner.key"
    SymmetricKey.create_file(key_file)
    first = tmp_path / "first.db"
    with pds.open_store(first) as store:
        vault_id = store.create_vault(key_file=key_file)
        vault = store.open_vault(vault_id)
        vault.unlock(key_file=key_file)
        vault.put("a", {"n": 1})
    second = tmp_path / "second.db"
    for suffix in ("", ".hostkey"):
        shutil.copy(f"{first}{suffix}", f"{second}{suffix}")
    heads = []
    files = []
    for path, collection in ((first, "b"), (second, "c")):
        with pds.open_store(path) as store:
            vault = store.open_vault(vault_id)
            vault.unlock(key_file=key_file)
            vault.put(collection, {"n": 2})
            heads.append(vault.latest_checkpoint())
            buffer = io.BytesIO()
            vault.export(buffer)
            files.append(buffer.getvalue())
    with pds.open_store(tmp_path / "target.db") as store:
        with pytest.raises(errors.InvalidProof) as refused:
            store.import_vault(io.BytesIO(files[1]), key_file=key_file, pinned=heads[0])
        assert refused.value.reason == "log-fork"
        assert store.list_vaults() == []


def _pinned_then_undone(tmp_path: Path, revoke: bool) -> tuple[Path, str, Checkpoint, bytes]:
    """A vault whose grant was revoked (or whose collection was rotated), the head after it
    pinned; then the host deletes the revocation (the new epoch) and every head from the
    pinned one on, and the owner exports the store as the host left it (its rows agree with
    the head left). Returns the key file, vault id, pin and export."""
    key_file = tmp_path / "owner.key"
    SymmetricKey.create_file(key_file)
    path = tmp_path / "store.db"
    with pds.open_store(path) as store:
        vault_id = store.create_vault(key_file=key_file)
        vault = store.open_vault(vault_id)
        vault.unlock(key_file=key_file)
        vault.put("tax", {"income": 1})
        if revoke:
            holder = pds.Grantee(pds.PrincipalKey.generate())
            expires = dt.timedelta(9)
            vault.revoke(vault.grant(holder.did, collections=["tax"], purpose="p", expires=expires))
        else:
            vault.rotate("tax")
        pin = vault.latest_checkpoint()
    assert pin is not None
    conn = sqlite3.connect(path)
    with conn:
        conn.execute("DELETE FROM log_checkpoints WHERE size >= ?", (pin.size,))
        conn.execute("DELETE FROM revocations" if revoke else "DELETE FROM epochs WHERE epoch = 2")
    conn.close()
    with pds.open_store(path) as store:
        vault = store.open_vault(vault_id)
        vault.unlock(key_file=key_file)
        buffer = io.BytesIO()
        vault.export(buffer)
    return key_file, vault_id, pin, buffer.getvalue()


@pytest.mark.parametrize(
    ("revoke", "reason"), [(True, "revocations-changed"), (False, "epochs-changed")]
)
def test_an_import_with_a_pin_refuses_what_the_pinned_entries_record_missing(
    tmp_path: Path, revoke: bool, reason: str
) -> None:
    """The export's head is newer than the pin (the export signed one) and agrees with its
    rows, but the entries the pin covers hold the owner's signed revoke or rotate entry: a
    file without that revocation or epoch is refused, nothing imported."""
    key_file, vault_id, pin, data = _pinned_then_undone(tmp_path, revoke)
    with pds.open_store(tmp_path / "target.db") as store:
        with pytest.raises(errors.IntegrityError) as refused:
            store.import_vault(io.BytesIO(data), key_file=key_file, pinned=pin)
        assert refused.value.reason == reason
        assert store.list_vaults() == []
        # Without the pin the store cannot tell: it imports (what the pin is for).
        assert store.import_vault(io.BytesIO(data), key_file=key_file) == vault_id
