"""Many vaults in one store: per-vault open, put and read with 10k vaults vs 10.

Two stores are filled (bulk load, ``synchronous="normal"``), one with the small count of
vaults and one with the large count, each vault holding three records. Then, reopened with
the default settings (``synchronous=FULL``), the repeats alternate between the two stores;
each repeat draws vaults at random (with replacement) and times, per vault:

* open: ``Store.open_vault`` + ``Vault.unlock`` (owner key, no Argon2id);
* put: one durable ``Vault.put``;
* read: one ``Vault.get`` of an existing record (verified, decrypted, owner-read logged).

Target: each per-vault time with the large count within 1.5x of the small count.
"""

from __future__ import annotations

import random
import statistics
from pathlib import Path
from time import perf_counter

import pds
from bench.config import Config
from bench.fixtures import document, documents
from bench.measure import Figure, Target, growth_figure
from pds.keys import SymmetricKey

__all__ = ["FIGURES", "run"]

FIGURES = ("vaults_open", "vaults_put", "vaults_read")

_RECORDS_PER_VAULT = 3
_OPS = ("open", "put", "read")


def _fill(path: Path, count: int, key: SymmetricKey) -> dict[str, list[str]]:
    """``count`` vaults with three records each; their record ids by vault id."""
    vaults: dict[str, list[str]] = {}
    with pds.open_store(path, synchronous="normal") as store:
        for _ in range(count):
            vault_id = store.create_vault(key_provider=key)
            vault = store.open_vault(vault_id)
            vault.unlock(key_provider=key)
            infos = vault.put_many("health", documents(_RECORDS_PER_VAULT))
            vaults[vault_id] = [info.record_id for info in infos]
    return vaults


def run(config: Config, workdir: Path, only: frozenset[str]) -> list[Figure]:
    key = SymmetricKey.generate()
    rng = random.Random(6)
    small, large = config.vault_counts
    stores: dict[int, tuple[pds.Store, dict[str, list[str]]]] = {}
    samples: dict[int, dict[str, list[float]]] = {
        n: {op: [] for op in _OPS} for n in (small, large)
    }
    try:
        for count in (small, large):
            path = workdir / f"vaults-{count}.db"
            vaults = _fill(path, count, key)
            stores[count] = (pds.open_store(path), vaults)

        def measure(count: int) -> None:
            store, vaults = stores[count]
            chosen = rng.choices(sorted(vaults), k=config.vault_sample)
            totals = dict.fromkeys(_OPS, 0.0)
            for vault_id in chosen:
                start = perf_counter()
                vault = store.open_vault(vault_id)
                vault.unlock(key_provider=key)
                opened = perf_counter()
                vault.put("health", document(0))
                put = perf_counter()
                vault.get(rng.choice(vaults[vault_id]))
                read = perf_counter()
                totals["open"] += opened - start
                totals["put"] += put - opened
                totals["read"] += read - put
            for op in _OPS:
                samples[count][op].append(totals[op] / len(chosen))

        for repeat in range(config.repeats):
            order = (small, large) if repeat % 2 == 0 else (large, small)
            for count in order:
                measure(count)
    finally:
        for store, _ in stores.values():
            store.close()

    figures = []
    for op, title in (
        ("open", "per-vault open + unlock"),
        ("put", "per-vault durable put"),
        ("read", "per-vault get (owner read, logged)"),
    ):
        figures.append(
            growth_figure(
                name=f"vaults_{op}",
                title=f"{title}, {large:,} vaults vs {small:,}",
                largest=samples[large][op],
                smallest=samples[small][op],
                sizes=(small, large),
                target=Target("<=", 1.5),
                size_label=lambda n: f"{n:,} vaults",
                details={
                    "vault_counts": [small, large],
                    "vaults_per_repeat": config.vault_sample,
                    "median_us_by_count": {
                        str(n): statistics.median(samples[n][op]) * 1e6 for n in (small, large)
                    },
                },
            )
        )
    return [figure for figure in figures if figure.name in only]
