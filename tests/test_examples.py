"""The examples and the README's library snippet run as documented."""

from __future__ import annotations

import datetime as dt
import importlib.util
import os
import re
import socket
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pds

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


def _portal() -> Any:
    spec = importlib.util.spec_from_file_location(
        "portal_backend", ROOT / "examples" / "portal_backend.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_portal_backend_answers_every_failure_with_a_status_and_one_line(
    tmp_path: Path,
) -> None:
    """An idle connection does not hold the server; an unknown vault is refused like any
    other bad token (no 500, no traceback); bad lengths and methods are client errors."""
    portal = _portal()
    store_path = tmp_path / "portal.db"
    pds.open_store(store_path).close()
    server = portal.serve(0, store_path)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{server.server_port}/serve"
    idle = socket.create_connection(("127.0.0.1", server.server_port))
    try:
        # A genuine token of a vault in another store: this store has no such vault.
        holder = pds.PrincipalKey.generate()
        key_file = tmp_path / "owner.key"
        pds.SymmetricKey.create_file(key_file)
        with pds.open_store(tmp_path / "elsewhere.db") as elsewhere:
            vault = elsewhere.open_vault(elsewhere.create_vault(key_file=key_file))
            vault.unlock(key_file=key_file)
            token = vault.grant(
                holder.did, collections=["a"], purpose="p", expires=dt.timedelta(days=1)
            )
        invocation = pds.Grantee(holder).invoke(token).to_bytes()
        assert portal.post(url, invocation) == (403, b"denied: vault\n")
        request = urllib.request.Request(url, data=b"x", method="POST")
        request.add_header("Content-Length", "abc")
        assert _status(request) == 400
        assert _status(urllib.request.Request(url, method="GET")) == 405
    finally:
        idle.close()
        server.shutdown()
        server.server_close()


def _status(request: urllib.request.Request) -> int:
    try:
        with urllib.request.urlopen(request, timeout=10) as reply:
            return int(reply.status)
    except urllib.error.HTTPError as error:
        return int(error.code)
