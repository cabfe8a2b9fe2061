"""Sizes and repeat counts: the full run (the issue's sizes) and ``--quick``.

``--quick`` runs every figure through the same code paths with smaller sizes, so CI keeps
the suite working in well under a minute; its numbers are not the record.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

__all__ = ["FULL", "QUICK", "Config"]


@dataclass(frozen=True, slots=True)
class Config:
    quick: bool
    repeats: int
    """Repeats of every timed figure (the median, min and max are over these)."""

    put_many_records: int
    """Records in one ``put_many`` (and blobs in the baseline's ``executemany``)."""
    put_calls: int
    """Single durable ``put`` calls per repeat."""

    verify_calls: int
    """Cold verifications per chain length per repeat (and per peer)."""

    serve_one_calls: int
    serve_hundred_calls: int

    log_sizes: tuple[int, ...]
    """Log sizes at which appends and proofs are timed (the first is the baseline)."""
    proof_samples: int
    """Inclusion and consistency proofs per size per repeat (random indices)."""
    append_calls: int
    """Log appends per size per repeat."""

    vault_sizes: tuple[int, ...]
    """Records in the vault at which open and list are timed."""
    open_calls: int
    list_calls: int

    export_megabytes: tuple[int, int]
    """Vault sizes (MB of record content) for the export/import peak-RSS figure."""
    export_repeats: int

    vault_counts: tuple[int, int]
    """Vaults in one store for the per-vault open/put/read figure."""
    vault_sample: int
    """Vaults drawn (at random) per repeat at each count."""

    def with_repeats(self, repeats: int | None) -> Config:
        return self if repeats is None else replace(self, repeats=repeats)


FULL = Config(
    quick=False,
    repeats=7,
    put_many_records=10_000,
    put_calls=300,
    verify_calls=400,
    serve_one_calls=200,
    serve_hundred_calls=40,
    log_sizes=(1_000, 100_000, 1_000_000),
    proof_samples=300,
    append_calls=200,
    vault_sizes=(1_000, 100_000, 1_000_000),
    open_calls=200,
    list_calls=100,
    export_megabytes=(10, 1_000),
    export_repeats=3,
    vault_counts=(10, 10_000),
    vault_sample=20,
)

QUICK = Config(
    quick=True,
    repeats=3,
    put_many_records=2_000,
    put_calls=30,
    verify_calls=50,
    serve_one_calls=30,
    serve_hundred_calls=5,
    log_sizes=(1_000, 10_000),
    proof_samples=50,
    append_calls=30,
    vault_sizes=(1_000, 10_000),
    open_calls=30,
    list_calls=20,
    export_megabytes=(5, 20),
    export_repeats=1,
    vault_counts=(10, 100),
    vault_sample=10,
)
