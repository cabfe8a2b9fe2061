"""The examples and the README's library snippet run as documented."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _run(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *args], cwd=cwd, capture_output=True, text=True, timeout=120, check=False
    )


def test_quickstart_runs(tmp_path: Path) -> None:
    result = _run([str(ROOT / "examples" / "quickstart.py")], tmp_path)
    assert result.returncode == 0, result.stderr
    assert "the agency read [{'employer': 'ACME', 'net': 2450.0}]" in result.stdout
    assert "after revocation the agency is refused" in result.stdout
    assert re.search(r" read did:key:\S+ child allowance check released", result.stdout)
    assert re.search(r" read did:key:\S+ child allowance check refused", result.stdout)
    assert re.search(r" grant did:key:\S+ child allowance check ok", result.stdout)


def test_portal_backend_serves_over_http(tmp_path: Path) -> None:
    result = _run([str(ROOT / "examples" / "portal_backend.py")], tmp_path)
    assert result.returncode == 0, result.stderr
    assert "serve: 200" in result.stdout
    assert "the agency read over HTTP: [{'employer': 'ACME', 'net': 2450.0}]" in result.stdout
    assert "the same invocation again: 403 denied: replay" in result.stdout


def test_readme_library_snippet_runs(tmp_path: Path) -> None:
    readme = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", readme, flags=re.S)
    assert blocks, "the README has a Python example"
    env = dict(os.environ)
    for block in blocks:
        script = tmp_path / "snippet.py"
        script.write_text(block)
        result = subprocess.run(
            [sys.executable, str(script)],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=120,
            env=env,
            check=False,
        )
        assert result.returncode == 0, result.stderr
