"""A child process for the peak-RSS figures: one export, one import, or nothing (the floor).

Run as ``python -m bench.child <command> ...``; prints one JSON line with the process's peak
resident set size (``VmHWM`` from ``/proc/self/status``, or ``ru_maxrss``) and the seconds
the operation took. A fresh process per measurement, so each peak is that operation's own.
"""

from __future__ import annotations

import json
import resource
import sys
from pathlib import Path
from time import perf_counter

import pds

__all__ = ["main", "peak_rss_kb"]


def peak_rss_kb() -> int:
    """This process's peak resident set size in KiB."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # Linux reports KiB; macOS reports bytes.
    return peak // 1024 if sys.platform == "darwin" else peak


def main(argv: list[str]) -> int:
    command, *args = argv
    start = perf_counter()
    if command == "export":
        store_path, vault_id, key_file, destination = args
        with pds.open_store(store_path, create=False) as store:
            vault = store.open_vault(vault_id)
            vault.unlock(key_file=Path(key_file))
            start = perf_counter()
            vault.export(Path(destination))
    elif command == "import":
        store_path, source, key_file = args
        with pds.open_store(store_path) as store:
            start = perf_counter()
            store.import_vault(Path(source), key_file=Path(key_file))
    elif command == "floor":
        store_path, vault_id, key_file = args
        with pds.open_store(store_path, create=False) as store:
            store.open_vault(vault_id).unlock(key_file=Path(key_file))
    else:
        print(f"unknown command {command!r}", file=sys.stderr)
        return 2
    seconds = perf_counter() - start
    print(json.dumps({"peak_rss_kb": peak_rss_kb(), "seconds": seconds}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
