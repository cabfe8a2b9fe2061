"""``python -m bench``: run the figures, print the table, optionally write JSON."""

from __future__ import annotations

import argparse
import json
import os
import platform
import sqlite3
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

from bench import export, log, records, scale, serve, tokens, vaults
from bench.child import peak_rss_kb
from bench.config import FULL, QUICK, Config
from bench.measure import Figure
from bench.report import table, to_json

__all__ = ["AREAS", "FIGURE_NAMES", "main"]

RunArea = Callable[[Config, Path, frozenset[str]], list[Figure]]


@dataclass(frozen=True, slots=True)
class Area:
    """A group of figures sharing their setup (one run function, one temporary directory)."""

    name: str
    figures: tuple[str, ...]
    run: RunArea


AREAS = (
    Area("records", records.FIGURES, records.run),
    Area("tokens", tokens.FIGURES, tokens.run),
    Area("serve", serve.FIGURES, serve.run),
    Area("log", log.FIGURES, log.run),
    Area("scale", scale.FIGURES, scale.run),
    Area("export", export.FIGURES, export.run),
    Area("vaults", vaults.FIGURES, vaults.run),
)
FIGURE_NAMES = tuple(name for area in AREAS for name in area.figures)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="Measure pds against raw SQLite, raw libsodium and peer token libraries.",
    )
    parser.add_argument(
        "--quick", action="store_true", help="small sizes, same code paths (CI; under a minute)"
    )
    parser.add_argument("--out", type=Path, help="write the results as JSON to this file")
    parser.add_argument(
        "--only",
        action="append",
        default=[],
        metavar="NAME",
        help="run only these figures or areas (repeatable, or comma-separated)",
    )
    parser.add_argument("--repeats", type=int, help="override the number of repeats")
    parser.add_argument("--list", action="store_true", help="list the figures and areas, then exit")
    return parser


def _selection(names: Sequence[str]) -> frozenset[str]:
    wanted = {part.strip() for name in names for part in name.split(",") if part.strip()}
    if not wanted:
        return frozenset(FIGURE_NAMES)
    selected: set[str] = set()
    for name in wanted:
        area = next((a for a in AREAS if a.name == name), None)
        if area is not None:
            selected.update(area.figures)
        elif name in FIGURE_NAMES:
            selected.add(name)
        else:
            raise ValueError(f"unknown figure or area {name!r} (see python -m bench --list)")
    return frozenset(selected)


def _version(distribution: str) -> str | None:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return None


def _meta(config: Config, started: datetime, seconds: float) -> dict[str, Any]:
    return {
        "started": started.isoformat(timespec="seconds"),
        "seconds": seconds,
        "quick": config.quick,
        "config": asdict(config),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "sqlite": sqlite3.sqlite_version,
        "bench_peak_rss_mb": peak_rss_kb() / 1024,
        "versions": {
            name: _version(name)
            for name in ("pds", "pynacl", "biscuit-python", "pymacaroons", "msgpack")
        },
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.list:
        for area in AREAS:
            print(f"{area.name}: {', '.join(area.figures)}")
        return 0
    if args.repeats is not None and args.repeats < 1:
        parser.error("--repeats must be at least 1")
    config = (QUICK if args.quick else FULL).with_repeats(args.repeats)
    try:
        only = _selection(args.only)
    except ValueError as exc:
        parser.error(str(exc))
    started = datetime.now(UTC)
    clock = time.perf_counter()
    figures: list[Figure] = []
    for area in AREAS:
        chosen = only & frozenset(area.figures)
        if not chosen:
            continue
        print(f"bench: {area.name} ({', '.join(sorted(chosen))}) ...", file=sys.stderr, flush=True)
        area_clock = time.perf_counter()
        with tempfile.TemporaryDirectory(prefix=f"pds-bench-{area.name}-") as tmp:
            produced = area.run(config, Path(tmp), chosen)
        print(
            f"bench: {area.name} done in {time.perf_counter() - area_clock:.1f} s",
            file=sys.stderr,
            flush=True,
        )
        order = {name: index for index, name in enumerate(area.figures)}
        figures.extend(sorted(produced, key=lambda figure: order[figure.name]))
    seconds = time.perf_counter() - clock
    print(table(figures))
    meta = _meta(config, started, seconds)
    kind = "quick" if config.quick else "full"
    print(f"\n{kind} run, {seconds:.0f} s, {meta['platform']}, {meta['cpus']} CPUs")
    if args.out is not None:
        document = to_json(figures, meta)
        args.out.write_text(json.dumps(document, indent=2) + "\n")
    return 0
