"""Vault open and ``list(collection)`` as the vault grows (e.g. 1e3, 1e5, 1e6 records).

One vault is filled through the sizes with ``put_many`` (a bulk load, ``synchronous=
"normal"``): a collection ``small`` of 100 records first, then ``health`` records up to the
size. At each size a freshly opened store (default settings) times:

* vault open: ``Store.open_vault`` + ``Vault.unlock`` with the owner's key (no Argon2id);
* list: ``Vault.list("small", limit=100)``, a result of 100 records in a vault of N.

Targets: opening is flat (at most 1.5x from the smallest to the largest size); listing is
proportional to the result, not to the vault, so the same 100-record result stays within
1.5x too. The first 100-record page of the large collection, and a 1000-record page (which
should cost about 10x the 100-record page), are reported as details.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable
from pathlib import Path
from time import perf_counter

import pds
from bench.config import Config
from bench.fixtures import documents, open_owner_vault
from bench.measure import Figure, Target, growth_figure, interleaved, seconds_per_call
from pds.keys import SymmetricKey

__all__ = ["FIGURES", "run"]

FIGURES = ("vault_open", "list")

_SMALL = 100
_CHUNK = 10_000


def run(config: Config, workdir: Path, only: frozenset[str]) -> list[Figure]:
    owner = open_owner_vault(workdir, synchronous="normal")
    vault_id, key = owner.vault_id, owner.owner_key
    results: dict[int, dict[str, list[float]]] = {}
    open_store_seconds: dict[str, float] = {}
    try:
        owner.vault.put_many("small", documents(_SMALL))
        written = _SMALL
        for size in config.vault_sizes:
            while written < size:
                count = min(_CHUNK, size - written)
                owner.vault.put_many("health", documents(count, start=written))
                written += count
            start = perf_counter()
            store = pds.open_store(owner.store.path)
            open_store_seconds[str(size)] = perf_counter() - start
            try:
                results[size] = _measure(config, store, vault_id, key)
            finally:
                store.close()
    finally:
        owner.close()

    small, large = config.vault_sizes[0], config.vault_sizes[-1]

    def medians_us(name: str) -> dict[str, float]:
        return {
            str(size): statistics.median(results[size][name]) * 1e6 for size in config.vault_sizes
        }

    figures = [
        growth_figure(
            name="vault_open",
            title="vault open (open_vault + unlock)",
            largest=results[large]["open"],
            smallest=results[small]["open"],
            sizes=(small, large),
            target=Target("<=", 1.5),
            details={
                "sizes": list(config.vault_sizes),
                "median_us_by_size": medians_us("open"),
                "open_store_seconds_by_size": open_store_seconds,
            },
        ),
        growth_figure(
            name="list",
            title="list(collection), 100-record result",
            largest=results[large]["list_small"],
            smallest=results[small]["list_small"],
            sizes=(small, large),
            target=Target("<=", 1.5),
            note="a 100-record collection listed in a vault of N records",
            details={
                "sizes": list(config.vault_sizes),
                "median_us_by_size": medians_us("list_small"),
                "first_page_100_of_large_collection_us_by_size": medians_us("list_page_100"),
                "first_page_1000_of_large_collection_us_by_size": medians_us("list_page_1000"),
                "page_1000_over_page_100_at_largest": statistics.median(
                    results[large]["list_page_1000"]
                )
                / statistics.median(results[large]["list_page_100"]),
            },
        ),
    ]
    return [figure for figure in figures if figure.name in only]


def _measure(
    config: Config, store: pds.Store, vault_id: str, key: SymmetricKey
) -> dict[str, list[float]]:
    """The repeats at one vault size: open, the small collection, and two pages."""
    vault = store.open_vault(vault_id)
    vault.unlock(key_provider=key)
    if len(vault.list("small", limit=100).records) != _SMALL:
        raise RuntimeError("the small collection does not list 100 records")

    def open_vault() -> None:
        store.open_vault(vault_id).unlock(key_provider=key)

    def lister(collection: str, limit: int) -> Callable[[], float]:
        return lambda: seconds_per_call(
            lambda: vault.list(collection, limit=limit), config.list_calls
        )

    samples = interleaved(
        config.repeats,
        lambda: seconds_per_call(open_vault, config.open_calls),
        lister("small", 100),
        lister("health", 100),
        lister("health", 1000),
    )
    return dict(
        zip(("open", "list_small", "list_page_100", "list_page_1000"), samples, strict=True)
    )
