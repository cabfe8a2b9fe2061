"""Promise 10 at every instant: deterministic crash points (``pds/_faults.py``).

For each write path (put, update, put_many, delete, grant, revoke, rotate, serve, import)
the test restores one pristine store, forks a child that opens it, arms the seam to end the
process with ``os._exit`` at its k-th crash point (before and after every SQL statement and
commit, after an access entry is written, after the commit and before key shares are
released) and runs the operation. k goes up from 1 until the operation completes. After
every crash the parent checks the store:

* SQLite's ``integrity_check`` is ok, the store opens and the vault unlocks;
* every write acknowledged while building the pristine store is there, unchanged;
* the crashed operation is wholly there or wholly absent (records, grants, revocations,
  rotated epochs and the log entry that goes with each, in one transaction);
* the log root recomputed from its entries equals the latest signed checkpoint's.

Before the parent checks, a second child reopens the crashed store and is itself killed at
one of its own crash points (a crash during recovery), so recovery survives a crash too.
Finally one run goes through the ``pds`` CLI with ``PDS_TEST_CRASH_AT`` in its environment.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import shutil
import sqlite3
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

import pds
from pds import _faults
from pds.errors import RecordDeleted, RecordNotFound, Replayed, Revoked

if TYPE_CHECKING:
    from tests.crash_helpers import in_child
else:
    from crash_helpers import in_child

pytestmark = pytest.mark.slow

BASE_RECORDS = {f"r{n}": {"n": n, "text": f"record {n}"} for n in range(1, 6)}
MANY = 150  # more than one batch (BATCH_MAX is 128): all batches commit together or none
COLLECTION = "health"
MAX_POINTS = 2_000


@dataclass
class World:
    """A store built once and copied back before every attempt."""

    root: Path
    key_file: Path
    vault_id: str
    grantee_key: pds.PrincipalKey
    kept: pds.Token
    """A live grant (uses budget 1000) the serve and rotate checks read with."""
    doomed: pds.Token
    """The grant the revoke operation revokes."""
    invocation: bytes
    """A signed read with ``kept``, prepared before any attempt (same nonce every time)."""
    export_file: Path
    other_vault: str
    """The vault already in store B when an import runs."""
    pristine: dict[str, Path] = field(default_factory=dict)
    base_log: int = 0
    """The vault's log size in the pristine store."""
    base_used: int = 0
    """Requests served against ``kept`` in the pristine store."""

    def path(self, name: str) -> Path:
        return self.root / "live" / f"{name}.db"

    def restore(self) -> None:
        for name, saved in self.pristine.items():
            live = self.path(name)
            for suffix in ("-wal", "-shm", "-journal"):
                Path(f"{live}{suffix}").unlink(missing_ok=True)
            shutil.copyfile(saved, live)


def _open_vault(store: pds.Store, world: World, vault_id: str | None = None) -> pds.Vault:
    vault = store.open_vault(vault_id or world.vault_id)
    vault.unlock(key_file=world.key_file)
    return vault


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> World:
    root = tmp_path_factory.mktemp("crash-points")
    (root / "live").mkdir()
    (root / "pristine").mkdir()
    key_file = root / "owner.key"
    pds.SymmetricKey.create_file(key_file)
    grantee_key = pds.PrincipalKey.generate()
    grantee = pds.Grantee(grantee_key)
    export_file = root / "vault.pdsx"
    with pds.open_store(root / "live" / "a.db") as store:
        vault_id = store.create_vault(key_file=key_file)
        vault = store.open_vault(vault_id)
        vault.unlock(key_file=key_file)
        for record_id, data in BASE_RECORDS.items():
            vault.put(COLLECTION, data, record_id=record_id)
        kept = vault.grant(
            grantee.did,
            collections=[COLLECTION],
            purpose="care",
            expires=dt.timedelta(days=1),
            uses=1000,
        )
        doomed = vault.grant(
            grantee.did, collections=[COLLECTION], purpose="audit", expires=dt.timedelta(days=1)
        )
        assert len(grantee.read(store, kept).records) == len(BASE_RECORDS)
        vault.export(export_file)
        invocation = grantee.invoke(kept, records=["r1"]).to_bytes()
    with pds.open_store(root / "live" / "b.db") as other:
        other_vault = other.create_vault(key_file=key_file)
        opened = other.open_vault(other_vault)
        opened.unlock(key_file=key_file)
        opened.put("notes", {"kept": True}, record_id="w1")
        opened.get("w1")  # an owner read: the log is not empty, a checkpoint is signed
    world = World(
        root, key_file, vault_id, grantee_key, kept, doomed, invocation, export_file, other_vault
    )
    with pds.open_store(world.path("a")) as store:
        vault = _open_vault(store, world)
        world.base_log = vault.log_size()
        kept_id = kept.leaf.link_id.hex()
        world.base_used = next(g.used or 0 for g in vault.grants() if g.link_id == kept_id)
    for name in ("a", "b"):
        saved = root / "pristine" / f"{name}.db"
        shutil.copyfile(world.path(name), saved)
        world.pristine[name] = saved
    return world


# -- running a child to its k-th crash point


def _count_points(action: Callable[[], None], trace: Path) -> int:
    trace.unlink(missing_ok=True)

    def traced() -> None:
        _faults.arm_crash(None, trace=str(trace))
        action()

    assert in_child(None, traced)
    return len(trace.read_text().splitlines())


# -- the operations and what "applied" means for each

UPDATED = {"n": 1, "text": "updated"}
MANY_IDS = [f"m{n}" for n in range(MANY)]
VAULT_TABLES = ("vaults", "epochs", "batches", "records", "links", "revocations", "log_entries")

Act = Callable[[pds.Store, pds.Vault, World], object]


def _record(vault: pds.Vault, record_id: str) -> dict[str, object] | None:
    """The record's current data; ``None`` if absent or deleted (logs an owner read)."""
    try:
        return dict(vault.get(record_id).data or {})
    except (RecordNotFound, RecordDeleted):
        return None


@contextmanager
def _opened(world: World) -> Iterator[tuple[pds.Store, pds.Vault]]:
    with pds.open_store(world.path("a"), create=False) as store:
        yield store, _open_vault(store, world)


def _log_grew(vault: pds.Vault, world: World) -> bool:
    """Whether the log has exactly one entry more than the pristine store's (checked
    before anything else is logged)."""
    size = vault.log_size()
    assert size in (world.base_log, world.base_log + 1), f"log size {size}"
    return size == world.base_log + 1


def _put_applied(world: World) -> bool:
    with _opened(world) as (_, vault):
        data = _record(vault, "x1")
        assert data in (None, {"new": 1}), data
        return data is not None


def _update_applied(world: World) -> bool:
    with _opened(world) as (_, vault):
        versions = [record.data for record in vault.history("r1")]
        assert versions in ([BASE_RECORDS["r1"]], [BASE_RECORDS["r1"], UPDATED]), versions
        return len(versions) == 2


def _put_many_applied(world: World) -> bool:
    with _opened(world) as (_, vault):
        page = vault.list(COLLECTION, limit=1000)
        present = {info.record_id for info in page.records} - set(BASE_RECORDS)
        assert present in (set(), set(MANY_IDS)), f"{len(present)} of {MANY} records"
        if present:
            assert _record(vault, MANY_IDS[-1]) == {"m": MANY - 1}
        return bool(present)


def _delete_applied(world: World) -> bool:
    with _opened(world) as (_, vault):
        data = _record(vault, "r2")
        assert data in (None, BASE_RECORDS["r2"]), data
        return data is None


def _grant_applied(world: World) -> bool:
    with _opened(world) as (_, vault):
        grew = _log_grew(vault, world)
        count = len(vault.grants())
        assert count == (3 if grew else 2), (grew, count)
        return grew


def _revoke_applied(world: World) -> bool:
    with _opened(world) as (store, vault):
        grew = _log_grew(vault, world)
        doomed = world.doomed.leaf.link_id.hex()
        status = next(g.status for g in vault.grants() if g.link_id == doomed)
        assert status == ("revoked" if grew else "active"), (grew, status)
        grantee = pds.Grantee(world.grantee_key)
        if grew:
            with pytest.raises(Revoked):
                grantee.read(store, world.doomed)
        else:
            assert len(grantee.read(store, world.doomed).records) == len(BASE_RECORDS)
        return grew


def _rotate_applied(world: World) -> bool:
    with _opened(world) as (store, vault):
        grew = _log_grew(vault, world)
        info = vault.put(COLLECTION, {"after": "rotation"})
        assert info.epoch == (2 if grew else 1), (grew, info.epoch)
        # The live grant reads what is written in the new epoch: rotation sealed the new
        # epoch's key to it in the same transaction.
        read = pds.Grantee(world.grantee_key).read(store, world.kept, records=[info.record_id])
        assert read.pending == []
        assert [record.data for record in read.records] == [{"after": "rotation"}]
        return grew


def _serve_applied(world: World) -> bool:
    with _opened(world) as (store, vault):
        grew = _log_grew(vault, world)
        kept = world.kept.leaf.link_id.hex()
        used = next(g.used for g in vault.grants() if g.link_id == kept)
        assert used == world.base_used + (1 if grew else 0), (grew, used)
        if grew:
            with pytest.raises(Replayed):
                store.serve(world.invocation)
        else:
            store.serve(world.invocation)
        return grew


def _import_applied(world: World) -> bool:
    with pds.open_store(world.path("b"), create=False) as store:
        present = world.vault_id in {info.vault_id for info in store.list_vaults()}
        if present:
            vault = _open_vault(store, world)
            checkpoint = vault.latest_checkpoint()
            assert checkpoint is not None
            vault.verify_log(checkpoint)
            for record_id, data in BASE_RECORDS.items():
                assert _record(vault, record_id) == data
    if not present:
        with contextlib.closing(sqlite3.connect(world.path("b"))) as conn:
            for table in VAULT_TABLES:
                (count,) = conn.execute(
                    f"SELECT COUNT(*) FROM {table} WHERE vault_id = ?", (world.vault_id,)
                ).fetchone()
                assert count == 0, f"{count} rows of a rolled-back import in {table}"
    return present


def _grant(store: pds.Store, vault: pds.Vault, world: World) -> object:
    return vault.grant(
        pds.Grantee(world.grantee_key).did,
        collections=[COLLECTION],
        purpose="research",
        expires=dt.timedelta(days=1),
    )


OPERATIONS: dict[str, tuple[str, Act, Callable[[World], bool]]] = {
    "put": ("a", lambda s, v, w: v.put(COLLECTION, {"new": 1}, record_id="x1"), _put_applied),
    "update": ("a", lambda s, v, w: v.put(COLLECTION, UPDATED, record_id="r1"), _update_applied),
    "put_many": (
        "a",
        lambda s, v, w: v.put_many(
            COLLECTION, [{"m": n} for n in range(MANY)], record_ids=MANY_IDS
        ),
        _put_many_applied,
    ),
    "delete": ("a", lambda s, v, w: v.delete("r2"), _delete_applied),
    "grant": ("a", _grant, _grant_applied),
    "revoke": ("a", lambda s, v, w: v.revoke(w.doomed), _revoke_applied),
    "rotate": ("a", lambda s, v, w: v.rotate(COLLECTION), _rotate_applied),
    "serve": ("a", lambda s, v, w: s.serve(w.invocation), _serve_applied),
    "import": (
        "b",
        lambda s, v, w: s.import_vault(w.export_file, key_file=w.key_file),
        _import_applied,
    ),
}


def _run(world: World, name: str, act: Act) -> Callable[[], None]:
    def run() -> None:
        with pds.open_store(world.path(name), create=False) as store:
            vault_id = world.vault_id if name == "a" else world.other_vault
            act(store, _open_vault(store, world, vault_id), world)

    return run


def _reopen(world: World, name: str) -> Callable[[], None]:
    """What a process does first after a crash: open, unlock, read, check the log."""

    def reopen() -> None:
        with pds.open_store(world.path(name), create=False) as store:
            vault_id = world.vault_id if name == "a" else world.other_vault
            vault = _open_vault(store, world, vault_id)
            vault.list(limit=10)
            checkpoint = vault.latest_checkpoint()
            assert checkpoint is not None
            vault.verify_log(checkpoint)

    return reopen


def _check_store(world: World, name: str) -> None:
    """What holds after any crash: the file is sound, acknowledged writes are all there,
    the log recomputes to its latest signed head."""
    path = world.path(name)
    with contextlib.closing(sqlite3.connect(path)) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
    with pds.open_store(path, create=False) as store:
        vault_id = world.vault_id if name == "a" else world.other_vault
        vault = _open_vault(store, world, vault_id)
        checkpoint = vault.latest_checkpoint()
        assert checkpoint is not None
        vault.verify_log(checkpoint)
        if name == "a":
            # r1 and r2 are what update and delete change; their checks cover them.
            for record_id in ("r3", "r4", "r5"):
                assert _record(vault, record_id) == BASE_RECORDS[record_id]
            assert len(vault.grants()) >= 2
        else:
            assert _record(vault, "w1") == {"kept": True}


@pytest.mark.parametrize("operation", list(OPERATIONS))
def test_a_crash_at_every_point_leaves_the_operation_whole_or_absent(
    world: World, operation: str
) -> None:
    name, act, applied = OPERATIONS[operation]
    world.restore()
    reopen_points = _count_points(_reopen(world, name), world.root / "trace")
    assert reopen_points > 5
    outcomes: list[bool] = []
    for k in range(1, MAX_POINTS):
        world.restore()
        if in_child(k, _run(world, name, act)):
            # No crash point left: the operation completed; it must be there.
            assert applied(world)
            _check_store(world, name)
            print(f"{operation}: completed after {k - 1} crash points")
            break
        # A crash while recovering from the crash, at a point that moves with k.
        assert not in_child(1 + (k - 1) % reopen_points, _reopen(world, name))
        outcomes.append(applied(world))
        _check_store(world, name)
    else:
        pytest.fail(f"{operation} did not complete within {MAX_POINTS} crash points")
    # Early crashes lose the operation, crashes after its commit keep it: both happened.
    assert outcomes, "the operation passed no crash point"
    assert outcomes[0] is False
    assert outcomes[-1] is True, "no crash point after the commit"
    assert outcomes == sorted(outcomes), "applied, then absent again at a later point"


def test_the_environment_variable_arms_a_crash_in_the_cli(world: World, tmp_path: Path) -> None:
    world.restore()
    document = tmp_path / "record.json"
    document.write_text('{"via": "cli"}')
    command = [
        sys.executable, "-c", "from pds_cli.main import main; main()",
        "--store", str(world.path("a")),
        "put", world.vault_id, COLLECTION, str(document), "--key-file", str(world.key_file),
    ]  # fmt: skip
    trace = tmp_path / "trace"
    env = dict(os.environ, PDS_TEST_CRASH_TRACE=str(trace))
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    points = len(trace.read_text().splitlines())
    assert points > 4
    world.restore()
    env = dict(os.environ, PDS_TEST_CRASH_AT=str(points // 2))
    crashed = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    assert crashed.returncode == _faults.CRASH_EXIT_CODE
    assert crashed.stdout == ""
    _check_store(world, "a")
