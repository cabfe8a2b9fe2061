"""The store: schema and durability settings, locations, key files, concurrency, the
host-blind owner side, and crypto-erasure."""

from __future__ import annotations

import json
import os
import secrets
import sqlite3
import stat
import subprocess
import sys
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any, cast

import pytest

import pds
from pds import _crypto, _envelope, errors
from pds._store.base import RecordRow
from pds._store.sqlite import SCHEMA_VERSION, SQLiteBackend
from pds.keys import PrincipalKey, SymmetricKey

HELPERS = Path(__file__).parent / "helpers"


def _raw(db: Path, sql: str, *params: Any) -> list[tuple[Any, ...]]:
    con = sqlite3.connect(db)
    try:
        return con.execute(sql, params).fetchall()
    finally:
        con.close()


def _mode(path: Path | str) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.fixture
def open_umask() -> Iterator[None]:
    """Key files must be 0600 even when the process umask would allow more."""
    previous = os.umask(0)
    try:
        yield
    finally:
        os.umask(previous)


# -- schema, journal, durability -------------------------------------------------------


def test_new_store_has_format_and_schema_version(tmp_path: Path) -> None:
    db = tmp_path / "store.db"
    pds.open_store(db).close()
    meta = dict(_raw(db, "SELECT key, value FROM meta"))
    assert meta["format"] == "pds-store"
    assert meta["schema_version"] == str(SCHEMA_VERSION)
    assert "host_key_id" in meta
    tables = {name for (name,) in _raw(db, "SELECT name FROM sqlite_master WHERE type='table'")}
    assert {"meta", "vaults", "epochs", "batches", "records"} <= tables


def test_store_is_in_wal_mode(tmp_path: Path, owner_key_file: Path) -> None:
    db = tmp_path / "store.db"
    with pds.open_store(db) as store:
        vault = store.open_vault(store.create_vault(key_file=owner_key_file))
        vault.unlock(key_file=owner_key_file)
        vault.put("notes", {"n": 1})
        # Committed pages sit in the write-ahead log while the store is open.
        assert Path(f"{db}-wal").exists()
        assert Path(f"{db}-wal").stat().st_size > 0
    # WAL mode is a property of the file: header bytes 18-19 are 2, and a new connection
    # reports it.
    assert db.read_bytes()[18:20] == b"\x02\x02"
    assert _raw(db, "PRAGMA journal_mode") == [("wal",)]


def _synchronous(store: pds.Store) -> int:
    # White-box: the connection is private; this is the only way to see the setting.
    backend = cast(SQLiteBackend, store.backend)
    return int(backend._conn.execute("PRAGMA synchronous").fetchone()[0])


def test_synchronous_is_full_by_default_and_normal_on_request(tmp_path: Path) -> None:
    with pds.open_store(tmp_path / "a.db") as store:
        assert _synchronous(store) == 2  # FULL
    with pds.open_store(tmp_path / "b.db", synchronous="normal") as store:
        assert _synchronous(store) == 1  # NORMAL
        vault_id = store.create_vault(passphrase="bulk load", kdf=pds.KdfParams.interactive())
        vault = store.open_vault(vault_id)
        vault.unlock(passphrase="bulk load")
        info = vault.put("notes", {"n": 1})
    with pds.open_store(tmp_path / "b.db") as store:
        assert _synchronous(store) == 2
        vault = store.open_vault(vault_id)
        vault.unlock(passphrase="bulk load")
        assert vault.get(info.record_id).data == {"n": 1}


@pytest.mark.parametrize("value", ["off", "OFF", "FULL", "Normal", "extra", "", None, 2])
def test_bad_synchronous_value_is_refused(tmp_path: Path, value: Any) -> None:
    with pytest.raises(errors.FormatError):
        pds.open_store(tmp_path / "store.db", synchronous=value)
    assert list(tmp_path.iterdir()) == []


def test_get_records_returns_each_ids_newest_version_in_the_order_given(
    tmp_path: Path,
) -> None:
    """Rows come back from SQLite in no promised order; the newest version of each id
    must win whatever the order, ids come back in the order asked, unknown ids are left
    out, and another vault's rows are never returned."""
    backend = SQLiteBackend(tmp_path / "store.db")
    try:

        def row(vault: str, record: str, version: int) -> RecordRow:
            return RecordRow(
                vault, record, version, "c", version, 1, b"b" * 16, False, b"n", b"v%d" % version
            )

        with backend.transaction():
            # Versions inserted out of order, and a row of another vault with a higher one.
            backend.insert_records([row("v", "a", 2), row("v", "b", 1), row("w", "a", 9)])
            backend.insert_records([row("v", "a", 3), row("v", "a", 1), row("v", "b", 2)])
        got = backend.get_records("v", ["b", "missing", "a", "b"])
        assert [(r.record_id, r.version, r.ciphertext) for r in got] == [
            ("b", 2, b"v2"),
            ("a", 3, b"v3"),
        ]
        assert all(r.vault_id == "v" for r in got)
    finally:
        backend.close()


# -- locations -------------------------------------------------------------------------


def test_sqlite_url_with_a_relative_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "sub").mkdir()
    with pds.open_store("sqlite:///sub/relative.db") as store:
        vault_id = store.create_vault(passphrase="p" * 8, kdf=pds.KdfParams.interactive())
    assert (tmp_path / "sub" / "relative.db").exists()
    assert (tmp_path / "sub" / "relative.db.hostkey").exists()
    with pds.open_store(tmp_path / "sub" / "relative.db", create=False) as store:
        assert [v.vault_id for v in store.list_vaults()] == [vault_id]


def test_sqlite_url_with_an_absolute_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    elsewhere = tmp_path / "cwd"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    target = tmp_path / "absolute.db"
    url = f"sqlite:///{target}"
    assert url.startswith("sqlite:////")
    with pds.open_store(url) as store:
        vault_id = store.create_vault(passphrase="p" * 8, kdf=pds.KdfParams.interactive())
    assert target.exists() and Path(f"{target}.hostkey").exists()
    assert list(elsewhere.iterdir()) == []
    with pds.open_store(str(target)) as store:
        assert [v.vault_id for v in store.list_vaults()] == [vault_id]


def test_plain_relative_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    pds.open_store("plain.db").close()
    assert (tmp_path / "plain.db").exists() and (tmp_path / "plain.db.hostkey").exists()


# -- key files -------------------------------------------------------------------------


@pytest.mark.usefixtures("open_umask")
def test_host_key_file_is_0600_and_kept(tmp_path: Path) -> None:
    db = tmp_path / "store.db"
    pds.open_store(db).close()
    key_path = Path(f"{db}.hostkey")
    assert _mode(key_path) == 0o600
    content = key_path.read_bytes()
    assert len(content) == 32
    pds.open_store(db).close()
    assert key_path.read_bytes() == content


@pytest.mark.usefixtures("open_umask")
def test_owner_key_file_is_0600_and_never_overwritten(tmp_path: Path) -> None:
    path = tmp_path / "owner.key"
    key = SymmetricKey.create_file(path)
    assert _mode(path) == 0o600
    content = path.read_bytes()
    assert len(content) == 32 and SymmetricKey.from_file(path).key_id == key.key_id
    with pytest.raises(errors.FormatError):
        SymmetricKey.create_file(path)
    assert path.read_bytes() == content
    other = tmp_path / "someone-elses.txt"
    other.write_text("precious")
    with pytest.raises(errors.FormatError):
        SymmetricKey.create_file(other)
    assert other.read_text() == "precious"


@pytest.mark.usefixtures("open_umask")
def test_principal_key_file_is_0600_and_never_overwritten(tmp_path: Path) -> None:
    path = tmp_path / "principal.key"
    key = PrincipalKey.create_file(path)
    assert _mode(path) == 0o600
    content = path.read_bytes()
    assert PrincipalKey.from_file(path).did == key.did
    assert key.did.startswith("did:key:z6Mk")
    with pytest.raises(errors.FormatError):
        PrincipalKey.create_file(path)
    assert path.read_bytes() == content


@pytest.mark.skipif(os.name != "posix", reason="POSIX file modes")
@pytest.mark.parametrize("mode", [0o640, 0o604, 0o644, 0o660, 0o606, 0o601, 0o610])
def test_a_key_file_others_may_access_is_refused_unread(tmp_path: Path, mode: int) -> None:
    """As OpenSSH refuses an unprotected private key: a key file its group or other users
    may read or write is no longer the owner's alone. The owner's key, a principal's and the
    host's are refused with the mode and the fix named, and nothing of the key."""
    db = tmp_path / "store.db"
    owner = tmp_path / "owner.key"
    SymmetricKey.create_file(owner)
    store = pds.open_store(db)
    vault_id = store.create_vault(key_file=owner)
    store.close()
    principal = tmp_path / "principal.key"
    PrincipalKey.create_file(principal)
    host = Path(f"{db}.hostkey")
    for path in (owner, principal, host):
        path.chmod(mode)
    with pytest.raises(errors.FormatError) as refused:
        SymmetricKey.from_file(owner)
    assert str(refused.value) == (
        f"key file {owner} is accessible by other users (mode {mode:04o}): make it private "
        "(chmod 600) and consider the key exposed"
    )
    assert owner.read_bytes().hex() not in str(refused.value)
    with pytest.raises(errors.FormatError):
        PrincipalKey.from_file(principal)
    with pytest.raises(errors.HostKeyError, match="accessible by other users"):
        pds.open_store(db)
    host.chmod(0o600)
    with pds.open_store(db) as store:
        with pytest.raises(errors.FormatError, match="accessible by other users"):
            store.open_vault(vault_id).unlock(key_file=owner)
        for path in (owner, principal):
            path.chmod(0o600)
        store.open_vault(vault_id).unlock(key_file=owner)
    PrincipalKey.from_file(principal)


def test_a_key_file_that_is_a_pipe_is_read(tmp_path: Path) -> None:
    """A pipe (``--key-file <(...)``) is not a stored copy of the key: its mode is not
    checked."""
    key = SymmetricKey.create_file(tmp_path / "owner.key")
    read, write = os.pipe()
    os.write(write, (tmp_path / "owner.key").read_bytes())
    os.close(write)
    try:
        assert SymmetricKey.from_file(f"/dev/fd/{read}").key_id == key.key_id
    finally:
        os.close(read)


def test_key_file_in_a_missing_directory(tmp_path: Path) -> None:
    with pytest.raises(errors.PDSError):
        SymmetricKey.create_file(tmp_path / "missing" / "owner.key")


# -- two processes ---------------------------------------------------------------------


def _spawn(args: list[str]) -> subprocess.Popen[str]:
    env = dict(os.environ, PYTHONPATH=str(Path(pds.__file__).resolve().parent.parent))
    return subprocess.Popen(
        [sys.executable, str(HELPERS / "concurrent_writer.py"), *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def test_two_processes_writing_concurrently_lose_nothing(
    tmp_path: Path, owner_key_file: Path
) -> None:
    db = tmp_path / "store.db"
    with pds.open_store(db) as store:
        own = [store.create_vault(key_file=owner_key_file) for _ in range(2)]
        shared = store.create_vault(key_file=owner_key_file)
    count = 200
    children = [
        _spawn([str(db), str(owner_key_file), own[i], shared, str(count), f"w{i}"])
        for i in range(2)
    ]
    for child in children:
        assert child.stdout is not None
        assert child.stdout.readline() == "ready\n"
    for child in children:  # both start writing at once
        assert child.stdin is not None
        child.stdin.write("go\n")
        child.stdin.flush()
    acks: list[dict[str, Any]] = []
    for child in children:
        out, err = child.communicate(timeout=120)
        assert child.returncode == 0, err
        acks += [json.loads(line) for line in out.splitlines()]
    assert len(acks) == 2 * count
    with pds.open_store(db) as store:
        vaults = {}
        for vault_id in [*own, shared]:
            vaults[vault_id] = store.open_vault(vault_id)
            vaults[vault_id].unlock(key_file=owner_key_file)
        for ack in acks:
            assert vaults[ack["vault"]].get(ack["id"]).data == ack["data"]
        counts = {vid: sum(1 for _ in v.iter_records()) for vid, v in vaults.items()}
    assert counts == {own[0]: count // 2, own[1]: count // 2, shared: count}
    assert _raw(db, "PRAGMA integrity_check") == [("ok",)]


# -- host-blind, owner side ------------------------------------------------------------


def test_locked_vault_lists_metadata_but_no_content_path_opens(
    tmp_path: Path, owner_key_file: Path
) -> None:
    marker = f"content-{secrets.token_hex(16)}"
    db = tmp_path / "store.db"
    with pds.open_store(db) as store:
        vault_id = store.create_vault(key_file=owner_key_file)
        vault = store.open_vault(vault_id)
        vault.unlock(key_file=owner_key_file)
        infos = [vault.put("health/visits", {"note": marker, "i": i}) for i in range(3)]
        vault.put("health/visits", {"note": marker, "v": 2}, record_id=infos[0].record_id)
        vault.delete(infos[1].record_id)
    # A process holding the store (and its host key) but no owner secret.
    with pds.open_store(db) as store:
        vault = store.open_vault(vault_id)
        assert vault.is_locked
        listed = vault.list().records
        assert sorted(i.record_id for i in listed) == sorted(
            [infos[0].record_id, infos[2].record_id]
        )
        assert {i.collection for i in listed} == {"health/visits"}
        assert {i.record_id: i.version for i in listed}[infos[0].record_id] == 2
        assert all(i.size > 0 for i in listed)
        assert vault.collections() == ["health/visits"]
        visible = repr((listed, vault.collections(), store.list_vaults(), vault, vault.did))
        assert marker not in visible
        for call in (
            lambda: vault.get(infos[0].record_id),
            lambda: vault.history(infos[0].record_id),
            lambda: vault.put("health/visits", {"x": 1}),
            lambda: vault.put_many("health/visits", [{"x": 1}]),
            lambda: vault.delete(infos[2].record_id),
            vault.rotate,
            lambda: vault.export(tmp_path / "out.pdsx"),
            vault.destroy,
        ):
            with pytest.raises(errors.VaultLocked):
                call()
        assert not (tmp_path / "out.pdsx").exists()


def test_host_material_alone_does_not_decrypt(tmp_path: Path, owner_key_file: Path) -> None:
    """Everything the host holds (the database and its host key) opens no record: the
    record key also needs the reader share, sealed to the collection epoch's key."""
    db = tmp_path / "store.db"
    with pds.open_store(db) as store:
        vault_id = store.create_vault(key_file=owner_key_file)
        vault = store.open_vault(vault_id)
        vault.unlock(key_file=owner_key_file)
        vault.put_many("notes", [{"n": n} for n in range(3)])
    host_key = SymmetricKey.from_file(f"{db}.hostkey")
    batches = dict(_raw(db, "SELECT batch_id, wrapped_host FROM batches"))
    rows = _raw(
        db,
        "SELECT collection, record_id, version, epoch, batch_id, deleted, nonce, ciphertext "
        "FROM records WHERE vault_id = ?",
        vault_id,
    )
    assert rows
    for collection, record_id, version, epoch, batch_id, deleted, nonce, ciphertext in rows:
        batch_share = host_key.unwrap(
            batches[batch_id], context=_envelope.host_wrap_context(vault_id, batch_id)
        )
        binding = _envelope.binding(
            vault_id, collection, record_id, version, epoch, batch_id, bool(deleted)
        )
        record_share = _envelope.host_share(batch_share, binding)
        guesses = [
            batch_share,
            record_share,
            _envelope.record_key(bytes(32), record_share, binding),
            _envelope.record_key(batch_share, record_share, binding),
        ]
        for key in guesses:
            with pytest.raises(_crypto.AuthenticationFailed):
                _crypto.aead_decrypt(key, nonce, ciphertext, binding)


# -- destroy ---------------------------------------------------------------------------


def _key_material(db: Path, vault_id: str) -> dict[str, bytes]:
    """Every wrapped or sealed key (and every ciphertext) of one vault, as stored."""
    found: dict[str, bytes] = {}
    queries = {
        "vault": "SELECT wrapped_master, wrapped_identity FROM vaults WHERE vault_id = ?",
        "epoch": "SELECT sealed_owner FROM epochs WHERE vault_id = ?",
        "batch": "SELECT sealed_reader, wrapped_host FROM batches WHERE vault_id = ?",
        "record": "SELECT ciphertext FROM records WHERE vault_id = ? AND ciphertext != x''",
    }
    for kind, query in queries.items():
        for n, row in enumerate(_raw(db, query, vault_id)):
            for m, value in enumerate(row):
                if value:
                    found[f"{kind}{n}.{m}"] = bytes(value)
    return found


def _database_bytes(db: Path) -> bytes:
    return b"".join(
        p.read_bytes()
        for p in db.parent.iterdir()
        if p.name.startswith(db.name) and not p.name.endswith(".hostkey")
    )


def test_destroy_crypto_erases_the_vault(tmp_path: Path, owner_key_file: Path) -> None:
    db = tmp_path / "store.db"
    with pds.open_store(db) as store:
        doomed_id = store.create_vault(key_file=owner_key_file)
        kept_id = store.create_vault(key_file=owner_key_file)
        kept_records = {}
        for vault_id in (doomed_id, kept_id):
            vault = store.open_vault(vault_id)
            vault.unlock(key_file=owner_key_file)
            infos = vault.put_many("notes", [{"n": n, "pad": "p" * 200} for n in range(200)])
            vault.rotate()
            vault.put("notes", {"after": "rotation"})
            vault.delete(infos[0].record_id)
            if vault_id == kept_id:
                kept_records = {i.record_id: vault.get(i.record_id).data for i in infos[1:]}
            else:
                vault.export(tmp_path / "doomed.pdsx")
    keys = _key_material(db, doomed_id)
    assert len(keys) > 200
    kept_keys = _key_material(db, kept_id)

    with pds.open_store(db) as store:
        doomed = store.open_vault(doomed_id)
        doomed.unlock(key_file=owner_key_file)
        doomed.destroy()
        assert doomed.is_locked
        # Scanned with the store still open (WAL present) and the other vault untouched.
        content = _database_bytes(db)
        assert [name for name, value in keys.items() if value in content] == []
        assert all(value in content for value in kept_keys.values())
        with pytest.raises(errors.VaultDestroyed):
            store.open_vault(doomed_id).unlock(key_file=owner_key_file)
        with pytest.raises(errors.VaultDestroyed):
            store.open_vault(doomed_id).list()
        assert {v.vault_id: v.destroyed for v in store.list_vaults()} == {
            doomed_id: True,
            kept_id: False,
        }
        kept = store.open_vault(kept_id)
        kept.unlock(key_file=owner_key_file)
        assert {rid: kept.get(rid).data for rid in kept_records} == kept_records

    content = _database_bytes(db)
    assert [name for name, value in keys.items() if value in content] == []
    for table in ("epochs", "batches", "records"):
        assert _raw(db, f"SELECT COUNT(*) FROM {table} WHERE vault_id = ?", doomed_id) == [(0,)]
    with pds.open_store(db) as store:
        with pytest.raises((errors.VaultDestroyed, errors.VaultNotFound)):
            store.open_vault(doomed_id).unlock(key_file=owner_key_file)
        # The id stays reserved: the vault's own export cannot bring it back.
        with pytest.raises(errors.VaultExists):
            store.import_vault(tmp_path / "doomed.pdsx", key_file=owner_key_file)
    assert _raw(db, "PRAGMA integrity_check") == [("ok",)]


@pytest.mark.parametrize("content_deleted", [True, False], ids=["destroyed", "erased-only"])
def test_a_vault_destroyed_by_another_process_refuses_an_unlocked_object(
    tmp_path: Path, owner_key_file: Path, monkeypatch: pytest.MonkeyPatch, content_deleted: bool
) -> None:
    """A Vault object unlocked before another Store (another process, in production)
    destroyed the vault still holds its keys in memory: every owner call refuses with
    VaultDestroyed, and none is logged after the destroy entry. Without
    ``content_deleted`` the destroy stopped after its first commit (the crypto-erase), as
    if its process died there: the records' rows are still in the file."""
    db = tmp_path / "store.db"
    with pds.open_store(db) as store, pds.open_store(db) as other:
        vault_id = store.create_vault(key_file=owner_key_file)
        vault = store.open_vault(vault_id)
        vault.unlock(key_file=owner_key_file)
        record_id = vault.put("notes", {"n": 1}).record_id
        assert vault.get(record_id).data == {"n": 1}
        doomed = other.open_vault(vault_id)
        doomed.unlock(key_file=owner_key_file)
        if not content_deleted:
            monkeypatch.setattr(other.backend, "delete_vault_content", lambda vault_id: None)
        doomed.destroy()
        entries = _raw(db, "SELECT COUNT(*) FROM log_entries WHERE vault_id = ?", vault_id)
        calls: dict[str, Callable[[], object]] = {
            "get": lambda: vault.get(record_id),
            "history": lambda: vault.history(record_id),
            "list": lambda: vault.list("notes"),
            "put": lambda: vault.put("notes", {"n": 2}),
            "delete": lambda: vault.delete(record_id),
            "checkpoint": vault.checkpoint,
            "grant": lambda: vault.grant(
                PrincipalKey.generate().did,
                collections=["notes"],
                purpose="p",
                expires=timedelta(days=1),
            ),
        }
        ran = []
        for name, call in calls.items():
            try:
                call()
            except errors.VaultDestroyed:
                continue
            ran.append(name)
        assert ran == []
        assert _raw(db, "SELECT COUNT(*) FROM log_entries WHERE vault_id = ?", vault_id) == entries
