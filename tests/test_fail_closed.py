"""Log-then-release on every read path (design.md promise 7; issue 4 "Log-then-release").

If the access entry cannot be committed, nothing is released: the host derives no host
share, nothing is decrypted, no export file is written, and the failed attempt leaves no
trace in the log, the nonce table or the use budget. Failures are injected in two ways:
on one method of the log (``MerkleLog.append_raw``, or the backend's ``append_log``), and
by making the real SQLite database refuse writes (a read-only file, ``PRAGMA query_only``,
a lock held by another writer). Spies wrap, and still call, the code that releases or
decrypts; a positive control shows each spy does fire on a successful read.
"""

from __future__ import annotations

import datetime as dt
import io
import os
import shutil
import sqlite3
import stat
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

import pds
from pds import _envelope, _serve, accesslog, audit, errors
from pds._context import Context
from pds._store.sqlite import SQLiteBackend
from pds.keys import SymmetricKey

PURPOSE = "benefit check"


@dataclass
class Spies:
    """Counts calls to what releases or decrypts, and lets them run."""

    calls: dict[str, int] = field(default_factory=dict)

    def install(self, monkeypatch: pytest.MonkeyPatch, owner: Any, name: str) -> None:
        original: Callable[..., Any] = getattr(owner, name)
        label = f"{getattr(owner, '__name__', owner)}.{name}"
        self.calls[label] = 0

        def spy(*args: Any, **kwargs: Any) -> Any:
            self.calls[label] += 1
            return original(*args, **kwargs)

        monkeypatch.setattr(owner, name, spy)

    def total(self) -> int:
        return sum(self.calls.values())


@pytest.fixture
def spies(monkeypatch: pytest.MonkeyPatch) -> Spies:
    found = Spies()
    found.install(monkeypatch, _serve.Host, "_release")
    found.install(monkeypatch, _envelope, "open_record")
    found.install(monkeypatch, _envelope, "host_share")
    found.install(monkeypatch, Context, "host_unwrap")
    return found


def fail_appends(monkeypatch: pytest.MonkeyPatch, where: str = "log") -> list[int]:
    """Make every log append raise a pds ``StoreError``; returns the attempt counter."""
    attempts: list[int] = []

    def broken(*args: Any, **kwargs: Any) -> None:
        attempts.append(1)
        raise errors.StoreError("injected: the log cannot be written")

    if where == "log":
        monkeypatch.setattr(accesslog.MerkleLog, "append_raw", broken)
    else:
        monkeypatch.setattr(SQLiteBackend, "append_log", broken)
    return attempts


@dataclass
class Setup:
    store: pds.Store
    vault: pds.Vault
    agency: pds.PrincipalKey
    grantee: pds.Grantee
    token: pds.Token
    record_id: str
    key_file: Path


@pytest.fixture
def setup(store: pds.Store, vault: pds.Vault, owner_key_file: Path) -> Setup:
    record = vault.put("tax/2024", {"income": 41000})
    vault.put("tax/2023", {"income": 39000})
    agency = pds.PrincipalKey.generate()
    token = vault.grant(
        agency.did, collections=["tax/*"], purpose=PURPOSE, expires=dt.timedelta(days=30)
    )
    return Setup(store, vault, agency, pds.Grantee(agency), token, record.record_id, owner_key_file)


def log_rows(path: Path) -> int:
    conn = sqlite3.connect(path)
    try:
        (count,) = conn.execute("SELECT COUNT(*) FROM log_entries").fetchone()
    finally:
        conn.close()
    return int(count)


# -- the spies are wired: a successful read fires each of them ----------------------------


def test_positive_control_spies_fire_on_a_logged_read(setup: Setup, spies: Spies) -> None:
    before = setup.vault.log_size()
    read = setup.grantee.read(setup.store, setup.token)
    assert sorted(r.data["income"] for r in read.records if r.data) == [39000, 41000]
    assert setup.vault.log_size() == before + 1
    assert spies.calls["Host._release"] == 1
    assert spies.calls["Context.host_unwrap"] >= 1
    assert spies.calls["pds._envelope.open_record"] == 2
    fresh = setup.store.open_vault(setup.vault.vault_id)
    fresh.unlock(key_file=setup.key_file)
    fresh.get(setup.record_id)
    assert spies.calls["pds._envelope.open_record"] == 3


# -- (a) a failing append: the grantee read path ------------------------------------------


@pytest.mark.parametrize("where", ["log", "backend"])
@pytest.mark.parametrize("action", ["read", "list"])
def test_grantee_access_fails_closed_when_the_append_fails(
    setup: Setup,
    spies: Spies,
    monkeypatch: pytest.MonkeyPatch,
    store_path: Path,
    where: str,
    action: str,
) -> None:
    before = log_rows(store_path)
    attempts = fail_appends(monkeypatch, where)
    with pytest.raises(errors.StoreError):
        setup.grantee.read(setup.store, setup.token, action=action)
    assert attempts, "the append was never attempted"
    assert spies.total() == 0, spies.calls
    assert log_rows(store_path) == before


def test_raw_serve_fails_closed_and_rolls_the_request_back(
    setup: Setup, spies: Spies, monkeypatch: pytest.MonkeyPatch, store_path: Path
) -> None:
    budgeted = setup.vault.grant(
        setup.agency.did,
        collections=["tax/*"],
        purpose=PURPOSE,
        expires=dt.timedelta(days=30),
        uses=1,
    )
    invocation = setup.grantee.invoke(budgeted).to_bytes()
    before = log_rows(store_path)
    fail_appends(monkeypatch)
    with pytest.raises(errors.StoreError):
        setup.store.serve(invocation)
    assert spies.total() == 0, spies.calls
    assert log_rows(store_path) == before
    monkeypatch.undo()
    # Nothing of the failed attempt was committed: not its nonce (the same invocation is
    # served now), not its use (the budget of one is still there).
    response = setup.store.serve(invocation)
    assert len(response.records) == 2
    assert log_rows(store_path) == before + 1
    with pytest.raises(errors.BudgetExhausted):
        setup.grantee.read(setup.store, budgeted)


def test_first_use_of_a_delegation_fails_closed(
    setup: Setup, spies: Spies, monkeypatch: pytest.MonkeyPatch, store_path: Path
) -> None:
    parent = setup.vault.grant(
        setup.agency.did,
        collections=["tax/*"],
        purpose=PURPOSE,
        expires=dt.timedelta(days=30),
        delegable=1,
    )
    helper_key = pds.PrincipalKey.generate()
    child = setup.grantee.delegate(parent, to=helper_key.did)
    before = log_rows(store_path)
    known = {g.link_id for g in setup.vault.grants()}
    fail_appends(monkeypatch)
    with pytest.raises(errors.StoreError):
        pds.Grantee(helper_key).read(setup.store, child)
    assert spies.total() == 0, spies.calls
    assert log_rows(store_path) == before
    # The delegation was not registered either (it is logged in the same transaction).
    assert {g.link_id for g in setup.vault.grants()} == known


def test_a_refusal_that_cannot_be_logged_releases_nothing(
    setup: Setup, spies: Spies, monkeypatch: pytest.MonkeyPatch, store_path: Path
) -> None:
    before = log_rows(store_path)
    fail_appends(monkeypatch)
    with pytest.raises(errors.PDSError):
        setup.grantee.read(setup.store, setup.token, collection="health/visits")
    assert spies.total() == 0, spies.calls
    assert log_rows(store_path) == before


# -- (b) a store that cannot be written ---------------------------------------------------


def _read_only_copy(store_path: Path, target: Path) -> tuple[Path, SymmetricKey]:
    target.mkdir()
    for suffix in ("", "-wal"):
        source = store_path.with_name(store_path.name + suffix)
        if source.exists():
            shutil.copy2(source, target / source.name)
    copy = target / store_path.name
    copy.chmod(stat.S_IRUSR | stat.S_IRGRP | stat.S_IROTH)
    host_key = SymmetricKey.from_file(store_path.with_name(store_path.name + ".hostkey"))
    return copy, host_key


def _chmod_is_enforced(directory: Path) -> bool:
    """False when this process may write a 0444 file anyway (root, or CAP_DAC_OVERRIDE)."""
    probe = directory / "probe"
    probe.write_bytes(b"")
    probe.chmod(stat.S_IRUSR)
    try:
        with probe.open("ab"):
            return False
    except PermissionError:
        return True
    finally:
        probe.unlink()


def _rerun_without_capabilities(tmp_path: Path) -> None:
    """As root, run this same test in a child that drops every capability (so file modes
    bind it, CAP_DAC_OVERRIDE gone); skip if that cannot be arranged."""
    setpriv = shutil.which("setpriv")
    reason = (
        f"euid {os.geteuid()} may write a 0444 file (root or CAP_DAC_OVERRIDE), so a "
        "read-only store file cannot be simulated here; test_query_only_store_fails_closed "
        "and the injected append failures cover this path"
    )
    if setpriv is None or os.environ.get("PDS_TEST_CAPS_DROPPED"):
        pytest.skip(reason)
    result = subprocess.run(
        [
            setpriv,
            "--inh-caps=-all",
            "--bounding-set=-all",
            "--",
            sys.executable,
            "-m",
            "pytest",
            f"{__file__}::test_read_only_store_file_fails_closed",
            "-q",
            "-p",
            "no:cacheprovider",
            "--basetemp",
            str(tmp_path / "inner"),
        ],
        env={**os.environ, "PDS_TEST_CAPS_DROPPED": "1"},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    output = result.stdout + result.stderr
    if " passed" not in output and " failed" not in output:
        pytest.skip(f"{reason} (setpriv could not drop capabilities: {output.strip()[:200]})")
    assert result.returncode == 0, output
    assert "1 passed" in output, output


def test_read_only_store_file_fails_closed(
    setup: Setup, spies: Spies, store_path: Path, tmp_path: Path
) -> None:
    if not _chmod_is_enforced(tmp_path):
        _rerun_without_capabilities(tmp_path)
        return
    setup.store.close()
    copy, host_key = _read_only_copy(store_path, tmp_path / "ro")
    with pds.open_store(copy, create=False, host_key=host_key) as read_only:
        with pytest.raises(errors.StoreError):
            setup.grantee.read(read_only, setup.token)
        assert spies.total() == 0, spies.calls
        vault = read_only.open_vault(setup.vault.vault_id)
        vault.unlock(key_file=setup.key_file)
        with pytest.raises(errors.StoreError):
            vault.get(setup.record_id)
        assert spies.total() == 0, spies.calls
    assert log_rows(copy) == log_rows(store_path)


def _query_only(store: pds.Store) -> None:
    # The SQLite connection itself refuses every write from now on (SQLITE_READONLY), the
    # way a read-only file does for a non-root user. pds exposes no public switch for it.
    backend = store.backend
    assert isinstance(backend, SQLiteBackend)
    backend._conn.execute("PRAGMA query_only = ON")


def test_query_only_store_fails_closed(
    setup: Setup, spies: Spies, store_path: Path, tmp_path: Path
) -> None:
    before = log_rows(store_path)
    _query_only(setup.store)
    with pytest.raises(errors.StoreReadOnly):
        setup.grantee.read(setup.store, setup.token)
    with pytest.raises(errors.StoreError):
        setup.grantee.read(setup.store, setup.token, collection="health/visits")
    with pytest.raises(errors.StoreReadOnly):
        setup.vault.get(setup.record_id)
    with pytest.raises(errors.StoreReadOnly):
        setup.vault.export(tmp_path / "vault.pdsx")
    assert not (tmp_path / "vault.pdsx").exists()
    assert spies.total() == 0, spies.calls
    assert log_rows(store_path) == before


def test_store_locked_by_another_writer_fails_closed(
    setup: Setup, spies: Spies, store_path: Path
) -> None:
    before = log_rows(store_path)
    setup.store.close()
    other = sqlite3.connect(store_path, isolation_level=None)
    try:
        other.execute("BEGIN IMMEDIATE")
        with pds.open_store(store_path, busy_timeout=0.05) as busy:
            with pytest.raises(errors.StoreBusy):
                setup.grantee.read(busy, setup.token)
            assert spies.total() == 0, spies.calls
        other.execute("ROLLBACK")
    finally:
        other.close()
    assert log_rows(store_path) == before


# -- (c) owner reads log before decrypting ------------------------------------------------


@pytest.mark.parametrize("method", ["get", "history"])
def test_owner_reads_fail_closed(
    setup: Setup,
    spies: Spies,
    monkeypatch: pytest.MonkeyPatch,
    store_path: Path,
    method: str,
) -> None:
    vault = setup.store.open_vault(setup.vault.vault_id)
    vault.unlock(key_file=setup.key_file)
    before = log_rows(store_path)
    attempts = fail_appends(monkeypatch)
    with pytest.raises(errors.StoreError):
        getattr(vault, method)(setup.record_id)
    assert attempts
    assert spies.total() == 0, spies.calls
    assert log_rows(store_path) == before


# -- (d) exports log before writing -------------------------------------------------------


def test_export_to_a_path_fails_closed(
    setup: Setup, monkeypatch: pytest.MonkeyPatch, store_path: Path, tmp_path: Path
) -> None:
    before = log_rows(store_path)
    fail_appends(monkeypatch)
    target = tmp_path / "exports" / "vault.pdsx"
    target.parent.mkdir()
    with pytest.raises(errors.StoreError):
        setup.vault.export(target)
    assert list(target.parent.iterdir()) == []
    assert log_rows(store_path) == before


def test_export_to_a_stream_fails_closed(
    setup: Setup, monkeypatch: pytest.MonkeyPatch, store_path: Path
) -> None:
    fail_appends(monkeypatch)
    sink = io.BytesIO()
    with pytest.raises(errors.StoreError):
        setup.vault.export(sink)
    assert sink.getvalue() == b""


def test_audit_export_fails_closed(
    setup: Setup, monkeypatch: pytest.MonkeyPatch, store_path: Path, tmp_path: Path
) -> None:
    setup.grantee.read(setup.store, setup.token)
    before = log_rows(store_path)
    fail_appends(monkeypatch)
    with pytest.raises(errors.StoreError):
        audit.export_audit(setup.vault, tmp_path / "audit")
    written = list((tmp_path / "audit").iterdir()) if (tmp_path / "audit").exists() else []
    assert written == []
    assert log_rows(store_path) == before


# -- (e) logged but never delivered stays logged ------------------------------------------


class Delivery(Exception):
    """The response never left the host (a crash or a dropped connection after commit)."""


@pytest.fixture
def undelivered(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[int]]:
    entered: list[int] = []

    def crash(
        self: _serve.Host, invocation: Any, row: Any, selection: Any, batches: Any, access: int
    ) -> Any:
        entered.append(access)
        raise Delivery("lost after commit")

    monkeypatch.setattr(_serve.Host, "_release", crash)
    yield entered


def test_a_logged_read_that_is_never_delivered_stays_logged(
    setup: Setup, undelivered: list[int], store_path: Path, owner_key_file: Path
) -> None:
    before = setup.vault.log_size()
    with pytest.raises(Delivery):
        setup.grantee.read(setup.store, setup.token, correlation="lost-1")
    assert undelivered == [before]
    assert setup.vault.log_size() == before + 1
    entry = setup.vault.log(limit=1).entries[0]
    assert (entry.index, entry.kind, entry.result) == (before, "read", "released")
    assert entry.correlation == "lost-1"
    assert entry.actor == setup.agency.did
    # Committed, not just visible to this connection: a new process sees it.
    setup.store.close()
    with pds.open_store(store_path) as reopened:
        vault = reopened.open_vault(setup.vault.vault_id)
        vault.unlock(key_file=owner_key_file)
        assert vault.log_size() == before + 1
        assert vault.log(limit=1).entries[0].correlation == "lost-1"


def test_a_serve_inside_another_operation_on_the_store_is_refused(
    setup: Setup, spies: Spies
) -> None:
    """Joined to an export's snapshot (its progress callback) or an import's transaction,
    a served read's access entry, nonce and use count would commit only with them, after
    the shares were released, or never: it is refused, nothing released."""
    invocation = setup.grantee.invoke(setup.token).to_bytes()
    refused: list[Exception] = []

    def serve_now(_count: int) -> None:
        if not refused:
            with pytest.raises(errors.StoreError, match="transaction of its own") as caught:
                setup.store.serve(invocation)
            refused.append(caught.value)

    size = setup.vault.log_size()
    setup.vault.export(io.BytesIO(), progress=serve_now)
    assert refused
    # Nothing released (the export itself unwraps host shares, to seal them to the owner).
    assert spies.calls["Host._release"] == spies.calls["pds._envelope.host_share"] == 0
    assert setup.vault.log_size() == size + 1  # the export's own entry only
    # Outside any operation the same invocation is served, once.
    response = setup.grantee.open(setup.token, setup.store.serve(invocation))
    assert response.access == size + 1
    with pytest.raises(errors.Replayed):
        setup.store.serve(invocation)
