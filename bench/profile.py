"""Profile the pds side of one figure's timed loop, and nothing else (no setup, no baseline).

    python -m bench.profile put_many [--sort tottime] [--limit 30]

Profiles with cProfile, which adds a cost per Python call: read the shares of time, not the
absolute numbers. Figures: put_many, put, verify_1, verify_3, verify_8 (vs_biscuit and
vs_pymacaroons time verify_1), served_read_1, served_read_100.
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import random
import sys
import tempfile
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from pathlib import Path

from bench.fixtures import OwnerVault, document, documents, open_owner_vault
from bench.tokens import build_chains, cold_verifier

__all__ = ["main"]

Workload = Callable[[], None]


def _put_many(owner: OwnerVault) -> Workload:
    docs = documents(10_000)
    owner.vault.put("health", document(-1))

    def run() -> None:
        owner.vault.put_many("health", docs)

    return run


def _put(owner: OwnerVault) -> Workload:
    docs = documents(500)
    owner.vault.put("health", document(-1))

    def run() -> None:
        for doc in docs:
            owner.vault.put("health", doc)

    return run


def _verify(length: int) -> Callable[[OwnerVault], Workload]:
    def setup(owner: OwnerVault) -> Workload:
        record_id = owner.vault.put_many("health", documents(3))[0].record_id
        chain = build_chains(owner, record_id, length)[-1]
        verify = cold_verifier(owner.store, owner.vault_id)

        def run() -> None:
            for _ in range(2_000):
                verify(chain.invocation)

        return run

    return setup


def _served(records: int, calls: int) -> Callable[[OwnerVault], Workload]:
    def setup(owner: OwnerVault) -> Workload:
        ids = [info.record_id for info in owner.vault.put_many("health", documents(200))]
        (chain,) = build_chains(owner, ids[0], 1)
        owner.store.serve(chain.invocation)
        rng = random.Random(6)
        invocations = [
            chain.holder.invoke(
                chain.token, records=ids[50:150] if records == 100 else [rng.choice(ids)]
            ).to_bytes()
            for _ in range(calls)
        ]

        def run() -> None:
            for invocation in invocations:
                owner.store.serve(invocation)

        return run

    return setup


WORKLOADS: dict[str, Callable[[OwnerVault], Workload]] = {
    "put_many": _put_many,
    "put": _put,
    "verify_1": _verify(1),
    "verify_3": _verify(3),
    "verify_8": _verify(8),
    "served_read_1": _served(1, 1_000),
    "served_read_100": _served(100, 200),
}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.profile", description=__doc__)
    parser.add_argument("figure", choices=sorted(WORKLOADS))
    parser.add_argument("--sort", default="tottime", choices=("tottime", "cumtime"))
    parser.add_argument("--limit", type=int, default=30)
    args = parser.parse_args(argv)
    with ExitStack() as stack:
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="pds-profile-")))
        owner = open_owner_vault(workdir)
        stack.callback(owner.close)
        workload = WORKLOADS[args.figure](owner)
        profiler = cProfile.Profile()
        profiler.runcall(workload)
    stats = pstats.Stats(profiler, stream=sys.stdout)
    stats.strip_dirs().sort_stats(args.sort).print_stats(args.limit)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
