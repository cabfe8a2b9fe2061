"""Writing records: ``put_many`` against raw ``executemany``, single ``put`` against a raw
single-row commit. Both sides use WAL and ``synchronous=FULL`` (pds's default)."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from time import perf_counter as _now

from bench.config import Config
from bench.fixtures import document, documents, json_size, open_owner_vault, raw_connection
from bench.measure import Figure, Target, interleaved, rate_figure

__all__ = ["FIGURES", "run"]

FIGURES = ("put_many", "put")

_BLOBS_TABLE = "CREATE TABLE blobs (id INTEGER PRIMARY KEY, data BLOB NOT NULL)"


def run(config: Config, workdir: Path, only: frozenset[str]) -> list[Figure]:
    figures = []
    if "put_many" in only:
        figures.append(_put_many(config, workdir))
    if "put" in only:
        figures.append(_put(config, workdir))
    return figures


def _put_many(config: Config, workdir: Path) -> Figure:
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

    pds_times, base_times = interleaved(config.repeats, pds_once, baseline_once)
    mean_size = sum(json_size(doc) for doc in docs) / count
    return rate_figure(
        name="put_many",
        title=f"put_many of {count:,} records (~{mean_size:.0f} B JSON)",
        pds_seconds=pds_times,
        baseline_seconds=base_times,
        baseline_label=f"raw executemany of {count:,} blobs, one transaction",
        target=Target(">=", 0.40),
        unit="records/s",
        per=count,
        details={"records": count, "mean_json_bytes": mean_size},
    )


def _put(config: Config, workdir: Path) -> Figure:
    calls = config.put_calls
    docs = documents(calls)
    blobs = [json.dumps(doc, separators=(",", ":")).encode() for doc in docs]
    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        directory = Path(tmp)
        owner = open_owner_vault(directory)
        try:
            owner.vault.put("health", document(-1))
            with raw_connection(directory / "raw.db") as connection:
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

                pds_times, base_times = interleaved(config.repeats, pds_once, baseline_once)
        finally:
            owner.close()
    return rate_figure(
        name="put",
        title="single put (durable commit)",
        pds_seconds=pds_times,
        baseline_seconds=base_times,
        baseline_label="raw single-row insert + commit",
        target=Target(">=", 0.50),
        unit="puts/s",
        details={"calls_per_repeat": calls},
    )
