"""Export and import in constant memory: peak RSS at two vault sizes (e.g. 10 MB and 1 GB).

A vault is filled with ~4 KB incompressible records up to each size (MB of record content;
the export file is about that size). Each export (``Vault.export`` to a file) and each
import (``Store.import_vault`` into a new store) runs in a fresh child process that reports
its own peak RSS (``VmHWM``). Target: the peak at the large size within 1.5x of the peak at
the small size (streaming). The "floor" (a child that only opens the store and unlocks the
vault) is reported too: it is the interpreter plus pds, the part no streaming can remove.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

from bench.config import Config
from bench.fixtures import FILE_RECORD_CHARS, file_document, open_owner_vault
from bench.measure import Figure, Target, growth_figure

__all__ = ["FIGURES", "run"]

FIGURES = ("export_rss", "import_rss")

_CHUNK = 1_000
_REPO = Path(__file__).resolve().parent.parent


def _child(*args: str) -> dict[str, Any]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(_REPO), env.get("PYTHONPATH")]))
    completed = subprocess.run(
        [sys.executable, "-m", "bench.child", *args],
        cwd=_REPO,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if completed.returncode != 0:
        raise RuntimeError(f"bench.child {args[0]} failed: {completed.stderr.strip()[-2000:]}")
    result: dict[str, Any] = json.loads(completed.stdout.strip().splitlines()[-1])
    return result


def _build(directory: Path, megabytes: int) -> tuple[Path, str, Path, int]:
    """A store with one vault holding ``megabytes`` MB of record content."""
    directory.mkdir()
    owner = open_owner_vault(directory, synchronous="normal")
    try:
        records = -(-megabytes * 1_000_000 // FILE_RECORD_CHARS)
        written = 0
        while written < records:
            count = min(_CHUNK, records - written)
            owner.vault.put_many("letters", [file_document(written + i) for i in range(count)])
            written += count
        return owner.store.path, owner.vault_id, owner.key_path, records
    finally:
        owner.close()


def run(config: Config, workdir: Path, only: frozenset[str]) -> list[Figure]:
    sizes = config.export_megabytes
    built = {mb: _build(workdir / f"vault-{mb}mb", mb) for mb in sizes}
    export_kb: dict[int, list[float]] = {mb: [] for mb in sizes}
    import_kb: dict[int, list[float]] = {mb: [] for mb in sizes}
    export_seconds: dict[int, list[float]] = {mb: [] for mb in sizes}
    import_seconds: dict[int, list[float]] = {mb: [] for mb in sizes}
    floor_kb: dict[int, float] = {}
    file_bytes: dict[int, int] = {}
    for mb in sizes:
        store_path, vault_id, key_path, _ = built[mb]
        floor_kb[mb] = _child("floor", str(store_path), vault_id, str(key_path))["peak_rss_kb"]
    for repeat in range(config.export_repeats):
        for mb in sizes:
            store_path, vault_id, key_path, _ = built[mb]
            exported = workdir / f"export-{mb}mb.pds"
            target = workdir / f"import-{mb}mb-{repeat}"
            target.mkdir()
            try:
                if "export_rss" in only or not exported.exists():
                    result = _child(
                        "export", str(store_path), vault_id, str(key_path), str(exported)
                    )
                    export_kb[mb].append(result["peak_rss_kb"])
                    export_seconds[mb].append(result["seconds"])
                    file_bytes[mb] = exported.stat().st_size
                if "import_rss" in only:
                    result = _child(
                        "import", str(target / "store.db"), str(exported), str(key_path)
                    )
                    import_kb[mb].append(result["peak_rss_kb"])
                    import_seconds[mb].append(result["seconds"])
            finally:
                for path in target.iterdir():
                    path.unlink()
                target.rmdir()
    small, large = sizes
    figures = []
    for name, title, peaks, seconds in (
        ("export_rss", "export peak RSS", export_kb, export_seconds),
        ("import_rss", "import peak RSS", import_kb, import_seconds),
    ):
        if name not in only:
            continue
        figures.append(
            growth_figure(
                name=name,
                title=f"{title}, {large:,} MB vs {small:,} MB vault",
                largest=peaks[large],
                smallest=peaks[small],
                sizes=(small, large),
                target=Target("<=", 1.5),
                unit="MB",
                scale=1 / 1024,
                what="peak RSS",
                size_label=lambda mb: f"{mb:,} MB",
                note=f"a fresh child process per run; floor (open + unlock only): "
                f"{floor_kb[large] / 1024:.0f} MB",
                details={
                    "vault_megabytes": list(sizes),
                    "records_by_size": {str(mb): built[mb][3] for mb in sizes},
                    "export_file_bytes_by_size": {str(mb): n for mb, n in file_bytes.items()},
                    "floor_peak_rss_mb_by_size": {
                        str(mb): kb / 1024 for mb, kb in floor_kb.items()
                    },
                    "median_seconds_by_size": {
                        str(mb): statistics.median(seconds[mb]) for mb in sizes
                    },
                    "megabytes_per_second_at_largest": large / statistics.median(seconds[large]),
                },
            )
        )
    return figures
