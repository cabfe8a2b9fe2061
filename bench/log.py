"""The access log: append, inclusion proof and consistency proof as the log grows.

One vault's log is grown through the sizes (e.g. 1e3, 1e5, 1e6 entries) with
``MerkleLog.append_raw`` (the path import uses: it stores the entry and its subtree hashes).
At each size the repeats time, on the store's real tables:

* an append: ``MerkleLog.append`` with sealed details, as the host logs a read, many per
  transaction (so the figure is the O(log n) work, not the fsync, which is constant);
* an inclusion proof of a random entry, and a consistency proof from a random earlier size,
  in the tree of that size, from the stored subtree hashes.

The targets are logarithmic growth: the time at the largest size at most 3x the time at the
smallest. "Hashing alone" (the SHA-256 work the same operation needs at least: the leaf and
node hashes of an append, one node hash per proof element) is reported beside each.
"""

from __future__ import annotations

import hashlib
import os
import random
import statistics
from pathlib import Path
from time import perf_counter
from typing import Any

from bench.config import Config
from bench.fixtures import open_owner_vault
from bench.measure import Figure, Target, growth_figure
from pds import merkle
from pds._serve import owner_public_x25519
from pds.accesslog import MerkleLog, encode_entry

__all__ = ["FIGURES", "run"]

FIGURES = ("log_append", "log_inclusion", "log_consistency")

_BUILD_CHUNK = 10_000
_SEALED_BYTES = 600
"""About the size of a served read's sealed details."""


def _details(i: int) -> dict[str, Any]:
    return {
        "actor": "did:key:z6MkhaXgBZDvotDkL5257faiztiGiC2QtKLGpbnnEGta2doK",
        "chain": [os.urandom(32).hex()],
        "action": "read",
        "purpose": "care",
        "collections": ["health"],
        "records": [[f"rec-{i:08d}", 1]],
        "request": os.urandom(32).hex(),
        "result": "released",
    }


def run(config: Config, workdir: Path, only: frozenset[str]) -> list[Figure]:
    owner = open_owner_vault(workdir)
    rng = random.Random(6)
    backend = owner.store.backend
    vault_id = owner.vault_id
    log = MerkleLog(backend, vault_id)
    row = backend.get_vault(vault_id)
    if row is None:
        raise RuntimeError("the benchmark vault is missing")
    owner_public = owner_public_x25519(row)
    sealed = os.urandom(_SEALED_BYTES)
    time_ms = 1_700_000_000_000

    def grow_to(size: int) -> None:
        index = log.size()
        while index < size:
            with backend.transaction():
                for _ in range(min(_BUILD_CHUNK, size - index)):
                    entry = encode_entry(
                        vault_id=vault_id,
                        index=index,
                        time=time_ms,
                        kind="read",
                        result="released",
                        link_id=None,
                        disclose_after=None,
                        sealed=sealed,
                    )
                    log.append_raw(index, time_ms, entry)
                    index += 1

    def append_once() -> float:
        calls = config.append_calls
        details = [_details(i) for i in range(calls)]
        with backend.transaction():
            start = perf_counter()
            for item in details:
                log.append(
                    time=time_ms,
                    kind="read",
                    result="released",
                    link_id=None,
                    details=item,
                    owner_x25519_public=owner_public,
                    rng=os.urandom,
                )
            elapsed = perf_counter() - start
        return elapsed / calls

    def append_hashing(first: int) -> float:
        """Hashing alone for appends at indices first..: the leaf hash of an entry of the
        same size and one node hash per completed subtree."""
        calls = config.append_calls
        entry = os.urandom(len(sealed) + 200)
        left = os.urandom(32)
        start = perf_counter()
        for index in range(first, first + calls):
            node = hashlib.sha256(b"\x00" + entry).digest()
            position = index
            while position & 1:
                node = hashlib.sha256(b"\x01" + left + node).digest()
                position >>= 1
        return (perf_counter() - start) / calls

    def proofs_once(size: int) -> tuple[float, float, float, float]:
        samples = config.proof_samples
        indices = [rng.randrange(size) for _ in range(samples)]
        olds = [rng.randrange(1, size) for _ in range(samples)]
        start = perf_counter()
        paths = [log.inclusion(index, size) for index in indices]
        inclusion = (perf_counter() - start) / samples
        start = perf_counter()
        proofs = [log.consistency(old, size) for old in olds]
        consistency = (perf_counter() - start) / samples
        return (
            inclusion,
            consistency,
            _hashing(sum(len(p) for p in paths)) / samples,
            _hashing(sum(len(p) for p in proofs)) / samples,
        )

    results: dict[int, dict[str, list[float]]] = {}
    try:
        for size in config.log_sizes:
            grow_to(size)
            per_size: dict[str, list[float]] = {
                key: []
                for key in (
                    "append",
                    "append_hashing",
                    "inclusion",
                    "consistency",
                    "inclusion_hashing",
                    "consistency_hashing",
                )
            }
            for _ in range(config.repeats):
                inclusion, consistency, inclusion_hash, consistency_hash = proofs_once(size)
                per_size["inclusion"].append(inclusion)
                per_size["consistency"].append(consistency)
                per_size["inclusion_hashing"].append(inclusion_hash)
                per_size["consistency_hashing"].append(consistency_hash)
                per_size["append_hashing"].append(append_hashing(log.size()))
                per_size["append"].append(append_once())
            results[size] = per_size
            # Verify once that the proofs are right (outside the timed part).
            _check_proofs(log, size, rng)
    finally:
        owner.close()

    small, large = config.log_sizes[0], config.log_sizes[-1]
    figures = []
    for name, key, title in (
        ("log_append", "append", "log append (sealed entry + subtree hashes)"),
        ("log_inclusion", "inclusion", "log inclusion proof"),
        ("log_consistency", "consistency", "log consistency proof"),
    ):
        hashing_key = f"{key}_hashing"
        hashing = _median_us(results[large][hashing_key])
        note = f"hashing alone at {large:,}: {hashing:.2g} us"
        if key == "append":
            note += "; target from design.md (appends are O(log n)), commit excluded"
        figures.append(
            growth_figure(
                name=name,
                title=title,
                largest=results[large][key],
                smallest=results[small][key],
                sizes=(small, large),
                target=Target("<=", 3.0),
                note=note,
                details={
                    "sizes": list(config.log_sizes),
                    "median_us_by_size": {
                        str(size): _median_us(results[size][key]) for size in config.log_sizes
                    },
                    "hashing_alone_median_us_by_size": {
                        str(size): _median_us(results[size][hashing_key])
                        for size in config.log_sizes
                    },
                },
            )
        )
    return [figure for figure in figures if figure.name in only]


def _hashing(nodes: int) -> float:
    """Seconds for ``nodes`` RFC 6962 node hashes."""
    left, right = os.urandom(32), os.urandom(32)
    start = perf_counter()
    for _ in range(nodes):
        hashlib.sha256(b"\x01" + left + right).digest()
    return perf_counter() - start


def _median_us(values: list[float]) -> float:
    return statistics.median(values) * 1e6


def _check_proofs(log: MerkleLog, size: int, rng: random.Random) -> None:
    root = log.root(size)
    index = rng.randrange(size)
    merkle.verify_inclusion(
        log.entry(index).leaf_hash, index, size, log.inclusion(index, size), root
    )
    old = rng.randrange(1, size)
    merkle.verify_consistency(old, size, log.root(old), root, log.consistency(old, size))
