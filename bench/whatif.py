"""What-if floors: the mandatory work of record-format and schema alternatives, timed
beside the raw baselines, so the owner can weigh a design change against a target
(bench/README.md, "Floors"). None of it is pds code or a figure of the record.

    python -m bench.whatif [--quick]

``put_many`` cases write one durable transaction of records; ``put`` cases one durable
transaction per record. Every case uses WAL and ``synchronous=FULL``, like the figures.

* ``floor``: the current formats' floors (``bench.records``), into a pds store's tables.
* ``batch_aead``: one XChaCha20-Poly1305 over each 128-record batch instead of one per
  record; the record rows carry no ciphertext (the batch's goes into a side table).
* ``..._lean``: the same into a leaner schema: records keep their unique key and one
  listing index (no batch index, no time index, no ``AUTOINCREMENT``), batches are a
  ``WITHOUT ROWID`` table keyed by id with one index.
* pieces: the per-record costs no format can avoid in Python (canonical msgpack of the
  record, its random base32 id, an insert into a single B-tree).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sqlite3
import statistics
import sys
import tempfile
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from time import perf_counter
from typing import Any

import msgpack
import nacl.bindings

from bench.fixtures import documents, open_owner_vault, raw_connection
from bench.measure import interleaved
from bench.records import (
    _BLOBS_TABLE,
    _FLOOR_INSERT,
    _floor_insert,
    _floor_put,
    _floor_rows,
    floor_encode,
    floor_record_id,
)

__all__ = ["main"]

_BATCH = 128
_VAULT, _COLLECTION, _NOW = "v" * 26, "health", 1_700_000_000_000

_LEAN_SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT);
INSERT INTO meta VALUES ('commits', '0');
CREATE TABLE batches (
    vault_id TEXT NOT NULL, batch_id BLOB PRIMARY KEY, collection TEXT NOT NULL,
    epoch INTEGER NOT NULL, writer BLOB NOT NULL, created_at INTEGER NOT NULL,
    manifest BLOB, signature BLOB, sealed_reader BLOB, wrapped_host BLOB
) WITHOUT ROWID;
CREATE INDEX batches_by_vault ON batches (vault_id, created_at);
CREATE TABLE records (
    seq INTEGER PRIMARY KEY, vault_id TEXT NOT NULL, record_id TEXT NOT NULL,
    version INTEGER NOT NULL, collection TEXT NOT NULL, created_at INTEGER NOT NULL,
    epoch INTEGER NOT NULL, batch_id BLOB NOT NULL, deleted INTEGER NOT NULL,
    current INTEGER NOT NULL, size INTEGER NOT NULL, nonce BLOB, ciphertext BLOB
);
CREATE UNIQUE INDEX records_key ON records (vault_id, record_id, version);
CREATE INDEX records_current_by_collection
    ON records (vault_id, collection, created_at, seq) WHERE current = 1;
"""
_BATCH_BLOBS = (
    "CREATE TABLE batch_blobs (batch_id BLOB PRIMARY KEY, nonce BLOB, ciphertext BLOB) "
    "WITHOUT ROWID"
)

Rows = list[tuple[Any, ...]]


def _batch_rows(docs: list[dict[str, Any]]) -> tuple[Rows, Rows]:
    """Each record encoded canonically with a random id; one AEAD per batch over the
    batch's encoded records; record rows without ciphertext, and one blob row per batch."""
    rows: Rows = []
    blobs: Rows = []
    for start in range(0, len(docs), _BATCH):
        batch_id, key = os.urandom(16), os.urandom(32)
        parts = []
        for doc in docs[start : start + _BATCH]:
            plaintext = floor_encode(doc)
            parts.append(plaintext)
            rows.append(
                (_VAULT, floor_record_id(), _COLLECTION, _NOW, batch_id, len(plaintext), None, None)
            )
        nonce = os.urandom(24)
        sealed = nacl.bindings.crypto_aead_xchacha20poly1305_ietf_encrypt(
            msgpack.packb(parts, use_bin_type=True), batch_id, nonce, key
        )
        hashlib.sha256(sealed).digest()
        blobs.append((batch_id, nonce, sealed))
    return rows, blobs


def _insert_batches(connection: sqlite3.Connection, rows: Rows, blobs: Rows) -> None:
    connection.execute("BEGIN IMMEDIATE")
    connection.executemany(_FLOOR_INSERT, rows)
    connection.executemany("INSERT INTO batch_blobs VALUES (?, ?, ?)", blobs)
    connection.execute("COMMIT")


_ONE_BTREE = (
    "CREATE TABLE one (vault_id TEXT, record_id TEXT, version INTEGER, batch_id BLOB, "
    "size INTEGER, PRIMARY KEY (vault_id, record_id, version)) WITHOUT ROWID"
)
_SCHEMAS = {
    "pds": _BATCH_BLOBS,  # beside a pds store's own tables
    "lean": _LEAN_SCHEMA + _BATCH_BLOBS + ";",
    "blobs": _BLOBS_TABLE,
    "one": _ONE_BTREE,
}


@contextmanager
def _database(directory: Path, schema: str) -> Iterator[sqlite3.Connection]:
    """A raw connection to a new database with one of ``_SCHEMAS`` (``"pds"``: a new pds
    store's tables, with the side table of batch blobs), removed on exit: the dirty pages
    of a removed file are never written back, so they cannot slow the next case's syncs."""
    with tempfile.TemporaryDirectory(dir=directory) as tmp:
        path = Path(tmp) / "store.db"
        if schema == "pds":
            open_owner_vault(path.parent).close()
        with raw_connection(path) as connection:
            connection.executescript(_SCHEMAS[schema])
            yield connection


def _put_many_cases(directory: Path, count: int, repeats: int) -> list[tuple[str, float]]:
    docs = documents(count)
    blobs = [(json.dumps(doc, separators=(",", ":")).encode(),) for doc in docs]

    def timed(schema: str, work: Callable[[sqlite3.Connection], None]) -> Callable[[], float]:
        def measure() -> float:
            with _database(directory, schema) as connection:
                start = perf_counter()
                work(connection)
                return (perf_counter() - start) / count

        return measure

    def raw(connection: sqlite3.Connection) -> None:
        connection.execute("BEGIN IMMEDIATE")
        connection.executemany("INSERT INTO blobs (data) VALUES (?)", blobs)
        connection.execute("COMMIT")

    cases = {
        "raw executemany (baseline)": timed("blobs", raw),
        "floor (current formats)": timed("pds", lambda c: _floor_insert(c, _floor_rows(docs))),
        "batch_aead": timed("pds", lambda c: _insert_batches(c, *_batch_rows(docs))),
        "batch_aead_lean": timed("lean", lambda c: _insert_batches(c, *_batch_rows(docs))),
    }
    samples = interleaved(repeats, *cases.values())
    results = [(name, statistics.median(s)) for name, s in zip(cases, samples, strict=True)]

    def piece(work: Callable[[], object]) -> float:
        start = perf_counter()
        for _ in range(count):
            work()
        return (perf_counter() - start) / count

    doc = docs[0]
    results.append(
        (
            "piece: canonical msgpack of a record",
            piece(lambda: floor_encode(doc)),
        )
    )
    results.append(("piece: random base32 id", piece(floor_record_id)))
    with _database(directory, "one") as connection:
        keyed = [(_VAULT, floor_record_id(), os.urandom(16), 300) for _ in range(count)]
        start = perf_counter()
        connection.execute("BEGIN IMMEDIATE")
        connection.executemany("INSERT INTO one VALUES (?, ?, 1, ?, ?)", keyed)
        connection.execute("COMMIT")
        results.append(("piece: insert into one B-tree", (perf_counter() - start) / count))
    return results


def _frames_per_commit(connection: sqlite3.Connection, one: Callable[[int], None]) -> float:
    """WAL frames one call of ``one`` writes, read from the log's size over 20 calls that
    start from an empty log (untimed: a log that grows from empty is slower to sync)."""
    path = connection.execute("PRAGMA database_list").fetchone()[2]
    page = int(connection.execute("PRAGMA page_size").fetchone()[0])
    connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    for index in range(20):
        one(index)
    return Path(f"{path}-wal").stat().st_size / (page + 24) / 20


def _put_cases(directory: Path, calls: int, repeats: int) -> list[tuple[str, float, float]]:
    docs = documents(calls)
    blobs = [json.dumps(doc, separators=(",", ":")).encode() for doc in docs]
    _, key = nacl.bindings.crypto_sign_keypair()
    with (
        _database(directory, "blobs") as raw,
        _database(directory, "pds") as store,
        _database(directory, "lean") as lean,
    ):

        def raw_commit(index: int) -> None:
            raw.execute("BEGIN IMMEDIATE")
            raw.execute("INSERT INTO blobs (data) VALUES (?)", (blobs[index],))
            raw.execute("COMMIT")

        cases: list[tuple[str, sqlite3.Connection, Callable[[int], None]]] = [
            ("raw insert + commit (baseline)", raw, raw_commit),
            ("floor (current schema)", store, lambda i: _floor_put(store, docs[i], key)),
            ("floor_lean", lean, lambda i: _floor_put(lean, docs[i], key)),
        ]

        def timed(one: Callable[[int], None]) -> Callable[[], float]:
            def measure() -> float:
                start = perf_counter()
                for index in range(calls):
                    one(index)
                return (perf_counter() - start) / calls

            return measure

        samples = interleaved(repeats, *(timed(one) for _, _, one in cases))
        return [
            (label, statistics.median(times), _frames_per_commit(connection, one))
            for (label, connection, one), times in zip(cases, samples, strict=True)
        ]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.whatif", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small sizes (seconds)")
    args = parser.parse_args(argv)
    records, calls, repeats = (500, 30, 2) if args.quick else (10_000, 300, 5)
    with tempfile.TemporaryDirectory() as tmp:
        many = _put_many_cases(Path(tmp), records, repeats)
        single = _put_cases(Path(tmp), calls, repeats)
    base = many[0][1]
    print(f"put_many, {records:,} records in one transaction (medians of {repeats})")
    print("| case | us per record | rate / raw |")
    print("|---|---|---|")
    for name, seconds in many:
        print(f"| {name} | {seconds * 1e6:.2f} | {base / seconds:.3f} |")
    base = single[0][1]
    print(f"\nput, {calls} durable transactions of one record (medians of {repeats})")
    print("| case | us per put | rate / raw | WAL frames per put |")
    print("|---|---|---|---|")
    for name, seconds, per_put in single:
        print(f"| {name} | {seconds * 1e6:.1f} | {base / seconds:.2f} | {per_put:.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
