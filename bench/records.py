"""Writing records: ``put_many`` against raw ``executemany``, single ``put`` against a raw
single-row commit. Both sides use WAL and ``synchronous=FULL`` (pds's default)."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import sqlite3
import statistics
import tempfile
from pathlib import Path
from time import perf_counter as _now
from typing import Any

import msgpack
import nacl.bindings

from bench.config import Config
from bench.fixtures import document, documents, json_size, open_owner_vault, raw_connection
from bench.measure import Figure, Target, interleaved, rate_figure

__all__ = ["FIGURES", "run"]

FIGURES = ("put_many", "put_many_floor", "put", "put_floor")

_BLOBS_TABLE = "CREATE TABLE blobs (id INTEGER PRIMARY KEY, data BLOB NOT NULL)"


def run(config: Config, workdir: Path, only: frozenset[str]) -> list[Figure]:
    figures = []
    if only & {"put_many", "put_many_floor"}:
        figures += [f for f in _put_many(config, workdir) if f.name in only]
    if only & {"put", "put_floor"}:
        figures += [f for f in _put(config, workdir, "put_floor" in only) if f.name in only]
    return figures


def _put_many(config: Config, workdir: Path) -> list[Figure]:
    count = config.put_many_records
    docs = documents(count)
    # The baseline stores the same records' JSON bytes (~300 B each) as blobs.
    blobs = [(json.dumps(doc, separators=(",", ":")).encode(),) for doc in docs]

    def pds_once() -> float:
        with tempfile.TemporaryDirectory(dir=workdir) as tmp:
            owner = open_owner_vault(Path(tmp))
            try:
                # Create the collection (its first key epoch) outside the timed call.
                owner.vault.put("health", document(-1))
                start = _now()
                owner.vault.put_many("health", docs)
                return _now() - start
            finally:
                owner.close()

    def baseline_once() -> float:
        with (
            tempfile.TemporaryDirectory(dir=workdir) as tmp,
            raw_connection(Path(tmp) / "raw.db") as connection,
        ):
            connection.execute(_BLOBS_TABLE)
            start = _now()
            connection.execute("BEGIN IMMEDIATE")
            connection.executemany("INSERT INTO blobs (data) VALUES (?)", blobs)
            connection.execute("COMMIT")
            return _now() - start

    floor_parts: list[tuple[float, float]] = []

    def floor_once() -> float:
        with tempfile.TemporaryDirectory(dir=workdir) as tmp:
            # A pds store file for its records table and indexes; the rows go in raw.
            open_owner_vault(Path(tmp)).close()
            with raw_connection(Path(tmp) / "store.db") as connection:
                start = _now()
                rows = _floor_rows(docs)
                middle = _now()
                _floor_insert(connection, rows)
                end = _now()
                floor_parts.append((middle - start, end - middle))
                return end - start

    pds_times, base_times, floor_times = interleaved(
        config.repeats, pds_once, baseline_once, floor_once
    )
    mean_size = sum(json_size(doc) for doc in docs) / count
    baseline_label = f"raw executemany of {count:,} blobs, one transaction"
    return [
        rate_figure(
            name="put_many",
            title=f"put_many of {count:,} records (~{mean_size:.0f} B JSON)",
            pds_seconds=pds_times,
            baseline_seconds=base_times,
            baseline_label=baseline_label,
            target=Target(">=", 0.40),
            unit="records/s",
            per=count,
            details={"records": count, "mean_json_bytes": mean_size},
        ),
        rate_figure(
            name="put_many_floor",
            title="put_many's floor: the record format's mandatory work, no pds code",
            pds_seconds=floor_times,
            baseline_seconds=base_times,
            baseline_label=baseline_label,
            target=None,
            unit="records/s",
            per=count,
            note=(
                "what any implementation of docs/spec/records.md must do per record in "
                "Python: encode, derive two keys, encrypt, hash, insert into the pds "
                "records table (its indexes)"
            ),
            details={
                "records": count,
                # Medians, in microseconds per record: encoding and cryptography, insert.
                "encode_encrypt_us": statistics.median(p[0] for p in floor_parts) / count * 1e6,
                "insert_us": statistics.median(p[1] for p in floor_parts) / count * 1e6,
            },
        ),
    ]


_FLOOR_INSERT = (
    "INSERT INTO records (vault_id, record_id, version, collection, created_at, epoch, "
    "batch_id, deleted, current, size, nonce, ciphertext) "
    "VALUES (?, ?, 1, ?, ?, 1, ?, 0, 1, ?, ?, ?)"
)


def floor_encode(doc: dict[str, Any]) -> bytes:
    """A flat record's canonical msgpack (its keys sorted), with msgpack alone."""
    return msgpack.packb(dict(sorted(doc.items())), use_bin_type=True)


def floor_record_id() -> str:
    """A random 128-bit record id as 26 lowercase base32 characters (docs/spec/records.md)."""
    return base64.b32encode(os.urandom(16)).decode("ascii").rstrip("=").lower()


def _floor_rows(
    docs: list[dict[str, Any]], hashes: list[bytes] | None = None
) -> list[tuple[Any, ...]]:
    """The per-record work of the record format (docs/spec/records.md) done with the bare
    primitives, as a lower bound for ``put_many``: canonical msgpack of a flat record (its
    keys sorted), a random id, the binding, the record's host share and key (two BLAKE2b),
    XChaCha20-Poly1305 with a random nonce and the manifest entry hash (appended to
    ``hashes`` if given); ``_floor_insert`` then inserts the rows into the pds records
    table, with all its indexes. Per-batch work (sealing, signing, the batch row) is left
    out: it is amortised over 128 records."""
    vault, collection, now = "v" * 26, "health", 1_700_000_000_000
    batch_id, reader, host = os.urandom(16), os.urandom(32), os.urandom(32)
    rows = []
    for doc in docs:
        plaintext = floor_encode(doc)
        record_id = floor_record_id()
        binding = msgpack.packb(
            ["pds/record/v1", vault, collection, record_id, 1, 1, batch_id, False],
            use_bin_type=True,
        )
        share = hashlib.blake2b(binding, key=host, digest_size=32, person=b"pds-host-share1")
        key = hashlib.blake2b(
            share.digest() + binding, key=reader, digest_size=32, person=b"pds-record-key1"
        ).digest()
        nonce = os.urandom(24)
        sealed = nacl.bindings.crypto_aead_xchacha20poly1305_ietf_encrypt(
            plaintext, binding, nonce, key
        )
        entry_hash = hashlib.sha256(binding + nonce + sealed).digest()
        if hashes is not None:
            hashes.append(entry_hash)
        rows.append((vault, record_id, collection, now, batch_id, len(sealed), nonce, sealed))
    return rows


def _floor_insert(connection: sqlite3.Connection, rows: list[tuple[Any, ...]]) -> None:
    connection.execute("BEGIN IMMEDIATE")
    connection.executemany(_FLOOR_INSERT, rows)
    connection.execute("COMMIT")


_FLOOR_BATCH_INSERT = (
    "INSERT INTO batches (vault_id, batch_id, collection, epoch, writer, created_at, "
    "manifest, signature, sealed_reader, wrapped_host) VALUES (?, ?, ?, 1, ?, ?, ?, ?, ?, ?)"
)
_FLOOR_COMMITS = "UPDATE meta SET value = CAST(value AS INTEGER) + 1 WHERE key = 'commits'"


def _floor_put(connection: sqlite3.Connection, doc: dict[str, Any], signing_key: bytes) -> None:
    """One put's mandatory work with the bare primitives, as a lower bound for ``put``:
    the record's own work (``_floor_rows``), the batch manifest (canonical msgpack over the
    entry) and its Ed25519 signature, the batch host share wrapped under the host key
    (XChaCha20-Poly1305), then one durable transaction that inserts the batch row and the
    record row into the pds tables (all their indexes) and bumps the store's commit
    counter (the foreign write-ahead-log check, docs/threat-model.md#durability). The
    reader share is sealed once per key epoch (docs/spec/records.md), so not here."""
    hashes: list[bytes] = []
    ((vault, record_id, collection, now, batch_id, size, nonce, sealed),) = _floor_rows(
        [doc], hashes
    )
    sealed_reader = os.urandom(80)
    manifest = msgpack.packb(
        {
            "batch": batch_id,
            "collection": collection,
            "created_at": now,
            "entries": [[record_id, 1, False, hashes[0]]],
            "epoch": 1,
            "reader": hashlib.sha256(sealed_reader).digest(),
            "v": 1,
            "vault": vault,
            "writer": signing_key[32:],
        },
        use_bin_type=True,
    )
    signature = nacl.bindings.crypto_sign(manifest, signing_key)[:64]
    wrap_nonce = os.urandom(24)
    wrapped_host = wrap_nonce + nacl.bindings.crypto_aead_xchacha20poly1305_ietf_encrypt(
        os.urandom(32), b"pds/host-share/v1\x00" + batch_id, wrap_nonce, signing_key[:32]
    )
    connection.execute("BEGIN IMMEDIATE")
    connection.execute(
        _FLOOR_BATCH_INSERT,
        (
            vault,
            batch_id,
            collection,
            signing_key[32:],
            now,
            manifest,
            signature,
            sealed_reader,
            wrapped_host,
        ),
    )
    connection.execute(
        _FLOOR_INSERT, (vault, record_id, collection, now, batch_id, size, nonce, sealed)
    )
    connection.execute(_FLOOR_COMMITS)
    connection.execute("COMMIT")


def _put(config: Config, workdir: Path, with_floor: bool) -> list[Figure]:
    calls = config.put_calls
    docs = documents(calls)
    blobs = [json.dumps(doc, separators=(",", ":")).encode() for doc in docs]
    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        directory = Path(tmp)
        owner = open_owner_vault(directory)
        # A second pds store file for the floor's rows (its tables and indexes).
        open_owner_vault(directory, name="floor.db").close()
        _, signing_key = nacl.bindings.crypto_sign_keypair()
        try:
            owner.vault.put("health", document(-1))
            with (
                raw_connection(directory / "raw.db") as connection,
                raw_connection(directory / "floor.db") as floor,
            ):
                connection.execute(_BLOBS_TABLE)

                def pds_once() -> float:
                    start = _now()
                    for doc in docs:
                        owner.vault.put("health", doc)
                    return (_now() - start) / calls

                def baseline_once() -> float:
                    start = _now()
                    for blob in blobs:
                        connection.execute("BEGIN IMMEDIATE")
                        connection.execute("INSERT INTO blobs (data) VALUES (?)", (blob,))
                        connection.execute("COMMIT")
                    return (_now() - start) / calls

                def floor_once() -> float:
                    start = _now()
                    for doc in docs:
                        _floor_put(floor, doc, signing_key)
                    return (_now() - start) / calls

                measures = [pds_once, baseline_once] + ([floor_once] if with_floor else [])
                samples = interleaved(config.repeats, *measures)
        finally:
            owner.close()
    figures = [
        rate_figure(
            name="put",
            title="single put (durable commit)",
            pds_seconds=samples[0],
            baseline_seconds=samples[1],
            baseline_label="raw single-row insert + commit",
            target=Target(">=", 0.50),
            unit="puts/s",
            details={"calls_per_repeat": calls},
        )
    ]
    if with_floor:
        figures.append(
            rate_figure(
                name="put_floor",
                title="put's floor: the record and batch formats' mandatory work, no pds code",
                pds_seconds=samples[2],
                baseline_seconds=samples[1],
                baseline_label="raw single-row insert + commit",
                target=None,
                unit="puts/s",
                note=(
                    "the record's work as in put_many_floor, the batch manifest and its "
                    "signature, the host share's wrap, then the batch and record rows and "
                    "the commit counter in one durable transaction into a pds store's tables"
                ),
                details={"calls_per_repeat": calls},
            )
        )
    return figures
