"""Promise 10 under I/O faults: every write API fails cleanly and recovers.

For each write API the storage seam (``pds/_faults.py``) fails the k-th storage call of the
operation, for every k, once; then from the k-th call on, persistently, for a few k. Real
faults follow: a full database (``PRAGMA max_page_count``), a file size limit
(``RLIMIT_FSIZE``, in a forked child) and a database file the process may not write (a
forked child with another effective user). Each time:

* the call raises a ``StoreError`` subclass whose text holds none of the data, key or
  passphrase the test wrote (a canary);
* every table of the database is exactly as it was before the call;
* once the fault is lifted, the same call on the same objects succeeds, and the vault's
  log still verifies against its latest checkpoint.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import resource
import secrets
import signal
import sqlite3
import tempfile
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

import pds
from pds import _faults
from pds._store.sqlite import SQLiteBackend
from pds.errors import StoreError, StoreFull

CANARY = "canary-" + secrets.token_hex(8)
COLLECTION = "health"


@dataclass
class Scene:
    path: Path
    key_file: Path
    store: pds.Store
    vault: pds.Vault
    grantee: pds.Grantee
    root: Path
    counter: int = 0

    def next(self) -> int:
        self.counter += 1
        return self.counter


@pytest.fixture
def scene(tmp_path: Path) -> Iterator[Scene]:
    key_file = tmp_path / "owner.key"
    pds.SymmetricKey.create_file(key_file)
    path = tmp_path / "store.db"
    with pds.open_store(path) as store:
        vault = store.open_vault(store.create_vault(key_file=key_file))
        vault.unlock(key_file=key_file)
        vault.put(COLLECTION, {"secret": CANARY}, record_id="r1")
        vault.get("r1")  # an owner read: the log has an entry and a signed checkpoint
        grantee = pds.Grantee(pds.PrincipalKey.generate())
        yield Scene(path, key_file, store, vault, grantee, tmp_path)


def _dump(path: Path) -> list[tuple[str, list[str]]]:
    """Every row of every table, through a read-only connection of its own."""
    with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as conn:
        tables = [
            row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")
        ]
        return [
            (table, sorted(repr(row) for row in conn.execute(f'SELECT * FROM "{table}"')))
            for table in sorted(tables)
        ]


def _token(scene: Scene) -> pds.Token:
    return scene.vault.grant(
        scene.grantee.did,
        collections=[COLLECTION],
        purpose=f"care {CANARY}",
        expires=dt.timedelta(days=1),
    )


def _exported(scene: Scene) -> tuple[Path, Path]:
    """A fresh store to import into, and an export of the scene's vault."""
    n = scene.next()
    export = scene.root / f"vault-{n}.pdsx"
    if not export.exists():
        scene.vault.export(export)
    target = scene.root / f"import-{n}.db"
    with pds.open_store(target):
        pass
    return target, export


def _import(scene: Scene, arg: Any) -> object:
    target, export = arg
    with pds.open_store(target, create=False) as other:
        return other.import_vault(export, key_file=scene.key_file)


@dataclass(frozen=True)
class Operation:
    name: str
    act: Callable[[Scene, Any], object]
    prepare: Callable[[Scene], Any] = lambda scene: None
    target: Callable[[Scene, Any], Path] = lambda scene, arg: scene.path
    logged_attempt: bool = False
    """A release whose log entry is written first and stays if the release fails."""


OPERATIONS = [
    Operation("put", lambda s, a: s.vault.put(COLLECTION, {"secret": CANARY, "n": s.next()})),
    Operation("update", lambda s, a: s.vault.put(COLLECTION, {"v": s.next()}, record_id="r1")),
    Operation(
        "put_many",
        lambda s, a: s.vault.put_many(COLLECTION, [{"secret": CANARY, "n": n} for n in range(140)]),
    ),
    Operation(
        "delete",
        lambda s, a: s.vault.delete(a),
        prepare=lambda s: s.vault.put(COLLECTION, {"secret": CANARY}).record_id,
    ),
    Operation("create_collection", lambda s, a: s.vault.create_collection(f"c{s.next()}")),
    Operation("grant", lambda s, a: _token(s)),
    Operation("revoke", lambda s, a: s.vault.revoke(a, reason=CANARY), prepare=_token),
    Operation("rotate", lambda s, a: s.vault.rotate(COLLECTION)),
    Operation(
        "set_policy",
        lambda s, a: s.vault.set_policy(max_token_lifetime=dt.timedelta(days=30 + s.next())),
    ),
    Operation(
        "serve",
        lambda s, a: s.store.serve(a),
        prepare=lambda s: s.grantee.invoke(_token(s), collection=COLLECTION).to_bytes(),
    ),
    Operation("get (logged)", lambda s, a: s.vault.get("r1")),
    Operation("checkpoint", lambda s, a: s.vault.checkpoint()),
    Operation("share_keys", lambda s, a: s.vault.share_keys()),
    Operation("create_vault", lambda s, a: s.store.create_vault(key_file=s.key_file)),
    Operation(
        "export",
        lambda s, a: s.vault.export(a),
        prepare=lambda s: s.root / f"out-{s.next()}.pdsx",
        logged_attempt=True,
    ),
    Operation("import", _import, prepare=_exported, target=lambda s, a: a[0]),
]


def _calls(scene: Scene, operation: Operation) -> int:
    """How many storage calls the operation makes at least, as it runs from now on: it runs
    three times, unfaulted, and the fewest calls of the last two runs count (a first run may
    do once-only work, such as a host's first prune of the replay cache; a logged operation
    writes one more subtree hash for each Merkle subtree its entry completes, none at an
    even index, so one of two runs in a row makes the fewest)."""
    operation.act(scene, operation.prepare(scene))
    counts = []
    for _ in range(2):
        arg = operation.prepare(scene)
        with _faults.fail_storage(10**9):
            operation.act(scene, arg)
            counts.append(_faults.storage_calls())
    return min(counts)


def _assert_clean(error: BaseException) -> None:
    text = f"{error!s} {error!r}"
    assert CANARY not in text
    assert "\n" not in str(error)


def _fails_cleanly(scene: Scene, operation: Operation, fault: Callable[[], Any]) -> None:
    """Under ``fault`` the operation raises a clean StoreError and changes nothing; with
    the fault lifted the same call succeeds."""
    arg = operation.prepare(scene)
    target = operation.target(scene, arg)
    before = _dump(target)
    with fault(), pytest.raises(StoreError) as raised:
        operation.act(scene, arg)
    _assert_clean(raised.value)
    after = _dump(target)
    changed = [a[0] for a, b in zip(after, before, strict=True) if a != b]
    if operation.logged_attempt and changed:
        # The attempt was logged before any byte left: that entry stays (promise 7).
        # (and the commit counter in meta that every commit bumps)
        assert set(changed) <= {"log_entries", "log_nodes", "log_checkpoints", "meta"}, changed
        entries = dict(after)["log_entries"]
        assert len(entries) == len(dict(before)["log_entries"]) + 1
        assert scene.vault.log(limit=1).entries[0].kind == operation.name
    else:
        assert not changed, f"{operation.name} changed {changed} and failed"
    if isinstance(arg, Path) and target != arg:
        assert not arg.exists(), "a failed export left a file behind"
    operation.act(scene, arg)
    checkpoint = scene.vault.latest_checkpoint()
    assert checkpoint is not None
    scene.vault.verify_log(checkpoint)


@pytest.mark.parametrize("operation", OPERATIONS, ids=lambda op: op.name)
def test_each_storage_call_failing_once_changes_nothing(scene: Scene, operation: Operation) -> None:
    calls = _calls(scene, operation)
    assert calls >= 2
    for k in range(1, calls + 1):
        _fails_cleanly(scene, operation, lambda k=k: _faults.fail_storage(k))  # type: ignore[misc]


@pytest.mark.parametrize("operation", OPERATIONS, ids=lambda op: op.name)
def test_storage_failing_persistently_changes_nothing(scene: Scene, operation: Operation) -> None:
    calls = _calls(scene, operation)
    for k in sorted({1, (calls + 1) // 2, calls}):
        _fails_cleanly(
            scene,
            operation,
            lambda k=k: _faults.fail_storage(k, persistent=True),  # type: ignore[misc]
        )


def _backend(scene: Scene) -> SQLiteBackend:
    backend = scene.store.backend
    assert isinstance(backend, SQLiteBackend)
    return backend


@contextlib.contextmanager
def _page_limit(scene: Scene) -> Iterator[None]:
    """The database may not grow by a single page (a full disk, for this connection)."""
    conn = _backend(scene)._conn
    (pages,) = conn.execute("PRAGMA page_count").fetchone()
    conn.execute(f"PRAGMA max_page_count = {pages}")
    try:
        yield
    finally:
        conn.execute("PRAGMA max_page_count = 4294967294")


BIG = [{"secret": CANARY, "pad": "x" * 3000} for _ in range(200)]


def test_a_full_database_raises_store_full_and_recovers(scene: Scene) -> None:
    grow = Operation("put_many (600 KB)", lambda s, a: s.vault.put_many(COLLECTION, BIG))
    _fails_cleanly(scene, grow, lambda: _page_limit(scene))
    with _page_limit(scene), pytest.raises(StoreFull):
        scene.vault.put_many(COLLECTION, BIG)


def _in_child(body: Callable[[], None]) -> None:
    """Run ``body`` in a forked child (process-wide limits and identities stay there)."""
    pid = os.fork()
    if pid == 0:
        code = 0
        try:
            body()
        except BaseException:
            traceback.print_exc()
            code = 1
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, "the child's checks failed (stderr above)"


def test_a_file_size_limit_fails_cleanly_and_recovers(scene: Scene) -> None:
    scene.store.close()

    def body() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        _soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
        with pds.open_store(scene.path, create=False) as store:
            vault = store.open_vault(scene.vault.vault_id)
            vault.unlock(key_file=scene.key_file)
            child = Scene(scene.path, scene.key_file, store, vault, scene.grantee, scene.root)
            sizes = [
                Path(f"{scene.path}{suffix}").stat().st_size
                for suffix in ("", "-wal", "-shm")
                if Path(f"{scene.path}{suffix}").exists()
            ]

            @contextlib.contextmanager
            def limited() -> Iterator[None]:
                resource.setrlimit(resource.RLIMIT_FSIZE, (max(sizes) + 8192, hard))
                try:
                    yield
                finally:
                    resource.setrlimit(resource.RLIMIT_FSIZE, (hard, hard))

            grow = Operation("put_many (600 KB)", lambda s, a: s.vault.put_many(COLLECTION, BIG))
            _fails_cleanly(child, grow, limited)

    _in_child(body)


def test_a_database_file_this_user_may_not_write_fails_cleanly(scene: Scene) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root to switch the effective user of a forked child")
    vault_id = scene.vault.vault_id
    scene.store.close()
    # A directory anyone may enter, with the database owned by root and mode 0644; the key
    # files are the other user's own, 0600 (pds refuses a key file others may read).
    shared = Path(tempfile.mkdtemp(prefix="pds-ro-"))
    try:
        shared.chmod(0o755)
        (shared / "store.db").write_bytes(scene.path.read_bytes())
        (shared / "store.db").chmod(0o644)
        path = shared / "store.db"
        before = _dump(path)
        readable_key = shared / "owner.key"
        sources = {"store.db.hostkey": scene.path.parent / "store.db.hostkey"}
        sources["owner.key"] = scene.key_file
        for name, source in sources.items():
            (shared / name).write_bytes(source.read_bytes())
            (shared / name).chmod(0o600)
            os.chown(shared / name, 65534, 65534)

        def body() -> None:
            os.setegid(65534)
            os.seteuid(65534)
            with pytest.raises(StoreError) as raised, pds.open_store(path, create=False) as store:
                vault = store.open_vault(vault_id)
                vault.unlock(key_file=readable_key)
                vault.put(COLLECTION, {"secret": CANARY})
            _assert_clean(raised.value)
            os.seteuid(0)
            os.setegid(0)
            assert _dump(path) == before
            with pds.open_store(path, create=False) as store:
                vault = store.open_vault(vault_id)
                vault.unlock(key_file=readable_key)
                vault.put(COLLECTION, {"secret": CANARY})

        _in_child(body)
    finally:
        for item in shared.iterdir():
            item.unlink()
        shared.rmdir()
