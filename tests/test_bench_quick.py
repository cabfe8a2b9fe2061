"""The benchmark suite keeps working: ``python -m bench --quick`` runs every figure and writes
well-formed JSON. Nothing here asserts anything about speed (CI machines are noisy)."""

from __future__ import annotations

import importlib.util
import json
import math
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parent.parent

FIGURES = (
    "put_many",
    "put_many_floor",
    "put",
    "put_floor",
    "verify_1",
    "verify_1_floor",
    "verify_3",
    "verify_8",
    "vs_biscuit",
    "vs_pymacaroons",
    "served_read_1",
    "served_read_1_floor",
    "served_read_100",
    "served_read_100_floor",
    "log_append",
    "log_inclusion",
    "log_consistency",
    "vault_open",
    "list",
    "export_rss",
    "import_rss",
    "vaults_open",
    "vaults_put",
    "vaults_read",
)
PEER_MODULES = {"vs_biscuit": "biscuit_auth", "vs_pymacaroons": "pymacaroons"}


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _check_stats(stats: Any) -> None:
    assert isinstance(stats, dict)
    for key in ("median", "min", "max"):
        assert _number(stats[key]), key
    assert stats["min"] <= stats["median"] <= stats["max"]
    assert stats["samples"] and all(_number(v) for v in stats["samples"])


def _run(
    module: str, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """``python -m module args`` from the repository, its output captured."""
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=110,
        check=False,
    )


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_quick_run_reports_every_figure(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    completed = _run("bench", "--quick", "--out", str(out))
    assert completed.returncode == 0, completed.stderr[-4000:]
    document = json.loads(out.read_text())
    assert document["meta"]["quick"] is True
    figures = {figure["name"]: figure for figure in document["figures"]}
    assert set(figures) == set(FIGURES)
    for name, figure in figures.items():
        module = PEER_MODULES.get(name)
        if module is not None and importlib.util.find_spec(module) is None:
            # A missing peer is reported as unavailable, never a crash.
            assert figure["available"] is False and figure["status"] == "unavailable"
            continue
        assert figure["available"] is True, (name, figure["unavailable"])
        _check_stats(figure["value"])
        _check_stats(figure["baseline"])
        assert _number(figure["ratio"]), name
        assert figure["ratio"] > 0, name
        low, high = figure["ratio_range"]
        assert _number(low) and _number(high), name
        assert figure["status"] in ("PASS", "MISS", "n/a"), name
        if figure["target"] is None:
            assert figure["status"] == "n/a"
        else:
            assert figure["target"]["op"] in (">=", "<=")
            assert _number(figure["target"]["value"])
    # The table went to stdout with one row per figure.
    for name in FIGURES:
        assert f"`{name}`" in completed.stdout


def test_unknown_figure_is_a_usage_error() -> None:
    completed = _run("bench", "--only", "no_such_figure")
    assert completed.returncode == 2
    assert "unknown figure" in completed.stderr


def test_missing_peers_are_reported_unavailable(tmp_path: Path) -> None:
    # Shadow both peers with packages that fail to import, as if they were not installed.
    for module in PEER_MODULES.values():
        package = tmp_path / "shadow" / module
        package.mkdir(parents=True)
        (package / "__init__.py").write_text(f"raise ImportError('no {module} here')\n")
    out = tmp_path / "peers.json"
    completed = _run(
        "bench",
        "--quick",
        "--only",
        "tokens",
        "--out",
        str(out),
        env={**os.environ, "PYTHONPATH": str(tmp_path / "shadow")},
    )
    assert completed.returncode == 0, completed.stderr[-4000:]
    figures = {figure["name"]: figure for figure in json.loads(out.read_text())["figures"]}
    for name in PEER_MODULES:
        assert figures[name]["status"] == "unavailable"
        assert "not installed" in figures[name]["unavailable"]
    assert figures["verify_1"]["status"] in ("PASS", "MISS")


WHATIF_CASES = {
    "raw executemany (baseline)": 3,
    "floor (current formats)": 3,
    "batch_aead": 3,
    "batch_aead_lean": 3,
    "piece: canonical msgpack of a record": 3,
    "piece: random base32 id": 3,
    "piece: insert into one B-tree": 3,
    "raw insert + commit (baseline)": 4,
    "floor (current schema)": 4,
    "floor_lean": 4,
}


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_whatif_quick_reports_every_case() -> None:
    completed = _run("bench.whatif", "--quick")
    assert completed.returncode == 0, completed.stderr[-4000:]
    rows = {}
    for line in completed.stdout.splitlines():
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        if cells[0] in WHATIF_CASES:
            rows[cells[0]] = [float(cell) for cell in cells[1:]]
    assert set(rows) == set(WHATIF_CASES)
    for name, columns in WHATIF_CASES.items():
        assert len(rows[name]) == columns - 1, name
        assert all(_number(value) and value > 0 for value in rows[name]), name
    # Read from the write-ahead log: the raw baseline writes about one page per commit,
    # a put's floor many more (a row in each table and index it touches).
    raw_frames = rows["raw insert + commit (baseline)"][2]
    assert raw_frames < 2
    assert rows["floor (current schema)"][2] > 3 * raw_frames
    assert rows["floor_lean"][2] > raw_frames
