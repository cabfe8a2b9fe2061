"""Served reads: the host's side of a grantee's read, ``Store.serve(invocation)``.

The token is warm (its chain was verified once and is in the host's chain cache); every
invocation is fresh (its own nonce and time, signed by the holder outside the timed loop).
Each serve still checks times, the holder signature, revocation and the nonce, and commits
the access-log entry durably (``synchronous=FULL``) before releasing host shares.

Baselines, measured in the same repeat:

* 1 record: one Ed25519 verify (an invocation-sized message) + one durable single-row
  commit (a log-entry-sized row) + one primary-key select of a ~300-byte row.
* 100 records: a raw select of the same 100 rows (their nonces and ciphertexts, from the
  pds store file, one query) + the 1-record baseline.
"""

from __future__ import annotations

import hashlib
import itertools
import os
import random
import sqlite3
from contextlib import closing
from pathlib import Path
from time import perf_counter

import nacl.bindings

from bench.config import Config
from bench.fixtures import documents, open_owner_vault, raw_connection
from bench.measure import Figure, Target, interleaved, rate_figure
from bench.tokens import build_chains, signed_messages

__all__ = ["FIGURES", "run"]

FIGURES = ("served_read_1", "served_read_1_floor", "served_read_100", "served_read_100_floor")

_RECORDS = 200
_LOG_ROW_BYTES = 1_000
_DETAILS_BYTES = 600
_DETAILS_PER_RECORD = 56  # per record: its id in the request, [id, version] in the result
_BINDING_BYTES = 100


def run(config: Config, workdir: Path, only: frozenset[str]) -> list[Figure]:
    owner = open_owner_vault(workdir)
    rng = random.Random(6)
    try:
        infos = owner.vault.put_many("health", documents(_RECORDS))
        record_ids = [info.record_id for info in infos]
        (chain,) = build_chains(owner, record_ids[0], 1)
        holder, token = chain.holder, chain.token
        # Warm the host: the chain is verified and cached, the link registered.
        owner.store.serve(chain.invocation)
        invocation_message, invocation_key = signed_messages(chain)[-1]

        with (
            raw_connection(workdir / "baseline.db") as base,
            closing(
                # Read-only, so the baseline select cannot disturb the store.
                sqlite3.connect(f"{owner.store.path.resolve().as_uri()}?mode=ro", uri=True)
            ) as pds_file,
        ):
            base.execute("CREATE TABLE log (id INTEGER PRIMARY KEY, entry BLOB NOT NULL)")
            # The floor's other writes, WITHOUT ROWID as in a pds store (with shorter
            # node keys: no vault id, band or tile).
            base.execute(
                "CREATE TABLE nonces (nonce BLOB PRIMARY KEY, time INTEGER NOT NULL) WITHOUT ROWID"
            )
            base.execute("CREATE INDEX nonces_time ON nonces (time)")
            base.execute(
                "CREATE TABLE nodes (level INTEGER, idx INTEGER, hash BLOB NOT NULL, "
                "PRIMARY KEY (level, idx)) WITHOUT ROWID"
            )
            base.execute("CREATE TABLE records (id INTEGER PRIMARY KEY, data BLOB NOT NULL)")
            base.execute("BEGIN")
            base.executemany(
                "INSERT INTO records (data) VALUES (?)",
                [(os.urandom(300),) for _ in range(_RECORDS)],
            )
            base.execute("COMMIT")
            entry = os.urandom(_LOG_ROW_BYTES)

            def baseline_one_op() -> None:
                nacl.bindings.crypto_sign_open(invocation_message, invocation_key)
                base.execute("BEGIN IMMEDIATE")
                base.execute("INSERT INTO log (entry) VALUES (?)", (entry,))
                base.execute("COMMIT")
                base.execute(
                    "SELECT data FROM records WHERE id = ?", (rng.randrange(1, _RECORDS + 1),)
                ).fetchone()

            vault_row = owner.store.backend.get_vault(owner.vault_id)
            if vault_row is None:
                raise RuntimeError("the benchmark vault is missing")
            owner_x25519 = nacl.bindings.crypto_sign_ed25519_pk_to_curve25519(
                vault_row.identity_public
            )
            log_size = itertools.count()
            host_share = os.urandom(32)

            def floor_op(details: bytes, bindings: list[bytes]) -> None:
                """What the access-log design makes every served read do, with the bare
                primitives: the baseline's verify, durable commit and select, plus sealing
                the details to the owner, the Merkle leaf and node hashes, the nonce and
                node rows in the same commit, and one host share per record released."""
                nacl.bindings.crypto_sign_open(invocation_message, invocation_key)
                sealed = nacl.bindings.crypto_box_seal(details, owner_x25519)
                index = next(log_size)
                leaf = hashlib.sha256(b"\x00" + sealed).digest()
                nodes = [(0, index, leaf)]
                if index & 1:
                    nodes.append((1, index >> 1, hashlib.sha256(b"\x01" + leaf + leaf).digest()))
                base.execute("BEGIN IMMEDIATE")
                base.execute("INSERT INTO nonces VALUES (?, ?)", (os.urandom(16), index))
                base.execute("INSERT INTO log (entry) VALUES (?)", (sealed,))
                base.executemany("INSERT INTO nodes VALUES (?, ?, ?)", nodes)
                base.execute("COMMIT")
                base.execute(
                    "SELECT data FROM records WHERE id = ?", (rng.randrange(1, _RECORDS + 1),)
                ).fetchone()
                for binding in bindings:
                    hashlib.blake2b(
                        binding, key=host_share, digest_size=32, person=b"pds-host-share1"
                    )

            details_one = os.urandom(_DETAILS_BYTES)
            bindings_one = [os.urandom(_BINDING_BYTES)]
            details_hundred = os.urandom(_DETAILS_BYTES + 100 * _DETAILS_PER_RECORD)
            bindings_hundred = [os.urandom(_BINDING_BYTES) for _ in range(100)]

            def floor_one() -> float:
                start = perf_counter()
                for _ in range(config.serve_one_calls):
                    floor_op(details_one, bindings_one)
                return (perf_counter() - start) / config.serve_one_calls

            def pds_one() -> float:
                invocations = [
                    holder.invoke(token, records=[rng.choice(record_ids)]).to_bytes()
                    for _ in range(config.serve_one_calls)
                ]
                start = perf_counter()
                for invocation in invocations:
                    owner.store.serve(invocation)
                return (perf_counter() - start) / len(invocations)

            def baseline_one() -> float:
                start = perf_counter()
                for _ in range(config.serve_one_calls):
                    baseline_one_op()
                return (perf_counter() - start) / config.serve_one_calls

            hundred = record_ids[50:150]
            marks = ", ".join("?" * len(hundred))
            select_hundred = (
                "SELECT nonce, ciphertext FROM records "
                f"WHERE vault_id = ? AND current = 1 AND record_id IN ({marks})"
            )
            select_params = [owner.vault_id, *hundred]
            if len(pds_file.execute(select_hundred, select_params).fetchall()) != len(hundred):
                raise RuntimeError("the baseline select does not find the 100 records")

            def pds_hundred() -> float:
                invocations = [
                    holder.invoke(token, records=hundred).to_bytes()
                    for _ in range(config.serve_hundred_calls)
                ]
                start = perf_counter()
                for invocation in invocations:
                    response = owner.store.serve(invocation)
                    if len(response.records) != len(hundred):
                        raise RuntimeError("the served read did not release 100 records")
                return (perf_counter() - start) / len(invocations)

            def baseline_hundred() -> float:
                start = perf_counter()
                for _ in range(config.serve_hundred_calls):
                    pds_file.execute(select_hundred, select_params).fetchall()
                    baseline_one_op()
                return (perf_counter() - start) / config.serve_hundred_calls

            def floor_hundred() -> float:
                start = perf_counter()
                for _ in range(config.serve_hundred_calls):
                    pds_file.execute(select_hundred, select_params).fetchall()
                    floor_op(details_hundred, bindings_hundred)
                return (perf_counter() - start) / config.serve_hundred_calls

            measures = []
            if "served_read_1" in only:
                measures += [pds_one, baseline_one]
            if "served_read_1_floor" in only:
                measures += [floor_one, baseline_one]
            if "served_read_100" in only:
                measures += [pds_hundred, baseline_hundred]
            if "served_read_100_floor" in only:
                measures += [floor_hundred, baseline_hundred]
            samples = interleaved(config.repeats, *measures)
    finally:
        owner.close()

    figures = []
    if "served_read_1" in only:
        pds_times, base_times, samples = samples[0], samples[1], samples[2:]
        figures.append(
            rate_figure(
                name="served_read_1",
                title="served read of 1 record (warm token, durable log append)",
                pds_seconds=pds_times,
                baseline_seconds=base_times,
                baseline_label="Ed25519 verify + durable 1-row commit + PK select",
                target=Target(">=", 0.60),
                unit="reads/s",
                details={"calls_per_repeat": config.serve_one_calls},
            )
        )
    if "served_read_1_floor" in only:
        floor_times, floor_base, samples = samples[0], samples[1], samples[2:]
        figures.append(
            rate_figure(
                name="served_read_1_floor",
                title="served read's floor: the access-log design's mandatory work, no pds code",
                pds_seconds=floor_times,
                baseline_seconds=floor_base,
                baseline_label="Ed25519 verify + durable 1-row commit + PK select",
                target=None,
                unit="reads/s",
                note=(
                    "the baseline plus what every served read must add by design: the "
                    "details sealed to the owner (a sealed box), the Merkle hashes, the "
                    "nonce and node rows in the same durable commit, the host share"
                ),
                details={"calls_per_repeat": config.serve_one_calls},
            )
        )
    if "served_read_100" in only:
        figures.append(
            rate_figure(
                name="served_read_100",
                title="served read of 100 records (warm token, durable log append)",
                pds_seconds=samples[0],
                baseline_seconds=samples[1],
                baseline_label="raw select of the 100 rows + the 1-record baseline",
                target=Target(">=", 0.50),
                unit="reads/s",
                details={"calls_per_repeat": config.serve_hundred_calls},
            )
        )
        samples = samples[2:]
    if "served_read_100_floor" in only:
        figures.append(
            rate_figure(
                name="served_read_100_floor",
                title="served read of 100's floor: the design's mandatory work, no pds code",
                pds_seconds=samples[0],
                baseline_seconds=samples[1],
                baseline_label="raw select of the 100 rows + the 1-record baseline",
                target=None,
                unit="reads/s",
                note=(
                    "the served_read_1 floor with details listing 100 records, plus the "
                    "baseline's select of the 100 rows and a host share for each"
                ),
                details={"calls_per_repeat": config.serve_hundred_calls},
            )
        )
    return figures
