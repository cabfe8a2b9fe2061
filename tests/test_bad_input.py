"""Promise 11, library side: bad input gets a specific pds exception.

Wrong secrets, foreign or damaged files, unknown ids, invalid record data, malformed names,
cursors and limits, weak or tampered KDF parameters, a newer schema, and content access
while locked: each raises a specific ``pds.errors`` class (never a driver exception or a
bare ``TypeError``), and no message carries the passphrase or record data.
"""

from __future__ import annotations

import os
import random
import secrets
import shutil
import sqlite3
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta, tzinfo
from pathlib import Path
from typing import Any

import nacl.bindings
import nacl.exceptions
import pytest

import pds
from pds import _codec, errors
from pds._store.sqlite import SQLiteBackend
from pds.keys import SymmetricKey

KDF = pds.KdfParams.interactive()


def assert_clean(exc: BaseException, *secret_texts: str) -> None:
    """A pds error whose text holds none of ``secret_texts``."""
    assert isinstance(exc, errors.PDSError), type(exc)
    text = f"{exc!s} {exc!r}"
    for secret in secret_texts:
        assert secret not in text


def raises(error: type[BaseException], call: Callable[[], Any], *secret_texts: str) -> None:
    with pytest.raises(error) as info:
        call()
    assert_clean(info.value, *secret_texts)


# -- wrong secrets ---------------------------------------------------------------------


@pytest.fixture
def passphrase() -> str:
    return f"pass-{secrets.token_hex(16)}"


@pytest.fixture
def pass_vault(store: pds.Store, passphrase: str) -> str:
    return store.create_vault(passphrase=passphrase, kdf=KDF)


def test_wrong_passphrase(store: pds.Store, pass_vault: str, passphrase: str) -> None:
    vault = store.open_vault(pass_vault)
    wrong = f"wrong-{secrets.token_hex(16)}"
    raises(errors.WrongPassphrase, lambda: vault.unlock(passphrase=wrong), wrong, passphrase)
    raises(errors.WrongPassphrase, lambda: vault.unlock(passphrase=passphrase + " "), passphrase)
    raises(errors.WrongPassphrase, lambda: vault.unlock(passphrase=wrong.encode()), wrong)
    assert vault.is_locked
    vault.unlock(passphrase=passphrase)
    assert not vault.is_locked


def test_passphrase_is_normalised_to_nfc(store: pds.Store) -> None:
    composed = "caf\u00e9-" + secrets.token_hex(8)
    decomposed = composed.replace("\u00e9", "e\u0301")
    vault_id = store.create_vault(passphrase=composed, kdf=KDF)
    store.open_vault(vault_id).unlock(passphrase=decomposed)


def test_empty_or_non_text_passphrase_is_a_format_error(store: pds.Store) -> None:
    raises(errors.FormatError, lambda: store.create_vault(passphrase="", kdf=KDF))
    raises(errors.FormatError, lambda: store.create_vault(passphrase=b"", kdf=KDF))
    raises(errors.FormatError, lambda: store.create_vault(passphrase=12345, kdf=KDF))  # type: ignore[arg-type]
    # A lone surrogate: how Python shows bytes that were not UTF-8 (an environment variable).
    raises(errors.FormatError, lambda: store.create_vault(passphrase="pass\udcffword", kdf=KDF))


def test_wrong_key_file(store: pds.Store, vault: pds.Vault, tmp_path: Path) -> None:
    other = tmp_path / "other.key"
    SymmetricKey.create_file(other)
    fresh = store.open_vault(vault.vault_id)
    raises(errors.WrongKey, lambda: fresh.unlock(key_file=other))
    raises(errors.WrongKey, lambda: fresh.unlock(key_provider=SymmetricKey.generate()))
    assert fresh.is_locked


def test_passphrase_for_a_key_vault_and_key_for_a_passphrase_vault(
    store: pds.Store, vault: pds.Vault, owner_key_file: Path, pass_vault: str, passphrase: str
) -> None:
    raises(
        errors.WrongPassphrase,
        lambda: store.open_vault(vault.vault_id).unlock(passphrase=passphrase),
        passphrase,
    )
    raises(errors.WrongKey, lambda: store.open_vault(pass_vault).unlock(key_file=owner_key_file))


def test_exactly_one_owner_secret(store: pds.Store, owner_key_file: Path, passphrase: str) -> None:
    raises(errors.FormatError, store.create_vault)
    raises(
        errors.FormatError,
        lambda: store.create_vault(passphrase=passphrase, key_file=owner_key_file),
        passphrase,
    )
    vault_id = store.create_vault(key_file=owner_key_file)
    vault = store.open_vault(vault_id)
    raises(errors.FormatError, vault.unlock)
    raises(
        errors.FormatError,
        lambda: vault.unlock(key_file=owner_key_file, key_provider=SymmetricKey.generate()),
    )


@pytest.mark.parametrize("size", [0, 1, 16, 31, 33, 64])
def test_key_file_of_the_wrong_size(
    store: pds.Store, vault: pds.Vault, tmp_path: Path, size: int
) -> None:
    bad = tmp_path / "bad.key"
    bad.write_bytes(os.urandom(size))
    bad.chmod(0o600)  # private, so the size is what is refused
    raises(errors.FormatError, lambda: store.open_vault(vault.vault_id).unlock(key_file=bad))
    raises(errors.FormatError, lambda: store.create_vault(key_file=bad))
    raises(errors.FormatError, lambda: SymmetricKey.from_file(bad))


def test_missing_key_file(store: pds.Store, vault: pds.Vault, tmp_path: Path) -> None:
    missing = tmp_path / "missing.key"
    raises(errors.FormatError, lambda: store.open_vault(vault.vault_id).unlock(key_file=missing))
    raises(errors.FormatError, lambda: store.create_vault(key_file=missing))
    raises(errors.FormatError, lambda: SymmetricKey(b"short"))


# -- files that are not (whole) pds stores ---------------------------------------------


@dataclass
class BuiltStore:
    db: Path
    key_file: Path
    vault_id: str
    content: bytes
    data: dict[str, dict[str, Any]]


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> BuiltStore:
    """A closed store (WAL checkpointed away) with a few hundred records.

    Randomness and time are injected, so the file is the same on every run and so is the
    outcome of every damage below."""
    tmp = tmp_path_factory.mktemp("built")
    rng = random.Random(1234).randbytes
    key_file = tmp / "owner.key"
    SymmetricKey.create_file(key_file, rng=rng)
    db = tmp / "store.db"
    data: dict[str, dict[str, Any]] = {}
    with pds.open_store(db, rng=rng, clock=lambda: 1_700_000_000.0) as store:
        vault_id = store.create_vault(key_file=key_file)
        vault = store.open_vault(vault_id)
        vault.unlock(key_file=key_file)
        for chunk in range(4):
            items = [{"chunk": chunk, "n": n, "pad": "z" * 200} for n in range(15)]
            for info, item in zip(vault.put_many(f"c{chunk % 2}", items), items, strict=True):
                data[info.record_id] = item
    assert not Path(f"{db}-wal").exists()
    return BuiltStore(db, key_file, vault_id, db.read_bytes(), data)


def _copy(built: BuiltStore, tmp: Path, content: bytes) -> Path:
    target = tmp / "copy.db"
    target.write_bytes(content)
    shutil.copy(f"{built.db}.hostkey", f"{target}.hostkey")
    return target


class _WrongRecord(Exception):
    """``get``/``history`` answered with another record's (verified) versions."""


def _read(vault: pds.Vault, record_id: str, data: dict[str, Any]) -> None:
    record = vault.get(record_id)
    history = vault.history(record_id)
    if {record.record_id, *(r.record_id for r in history)} != {record_id}:
        raise _WrongRecord(record_id)
    assert record.data == data
    assert [r.data for r in history] == [data]


def _every_operation(path: Path, built: BuiltStore) -> Iterator[str]:
    """Open and use a damaged copy completely, yielding a label per step that worked.

    Any step may raise a pds error; none may raise anything else or return wrong data."""
    with pds.open_store(path, create=False) as store:
        yield "open"
        store.list_vaults()
        vault = store.open_vault(built.vault_id)
        vault.unlock(key_file=built.key_file)
        yield "unlock"
        for info in vault.iter_records():
            if info.record_id in built.data:
                record = vault.get(info.record_id)
                if record.record_id != info.record_id:
                    raise _WrongRecord(info.record_id)
                assert record.data == built.data[info.record_id]
            else:
                # Listing is unverified metadata; a damaged id must not read as a record.
                with pytest.raises(errors.PDSError):
                    vault.get(info.record_id)
        for record_id, data in built.data.items():
            _read(vault, record_id, data)
        yield "read"


def _damaged_outcome(path: Path, built: BuiltStore) -> list[str]:
    steps: list[str] = []
    try:
        for step in _every_operation(path, built):
            steps.append(step)
    except errors.PDSError as exc:
        steps.append(type(exc).__name__)
    return steps


def _page_size(built: BuiltStore) -> int:
    return int.from_bytes(built.content[16:18], "big")


@pytest.mark.parametrize(
    "keep", [2, 16, 50, 99, 100, 101, 512, 4096, 4097, 8192, "half", "last-page"]
)
def test_truncated_store_is_refused_at_open(
    built: BuiltStore, tmp_path: Path, keep: int | str
) -> None:
    size = len(built.content)
    if keep == "half":
        keep = size // 2
    elif keep == "last-page":
        keep = size - _page_size(built)
    assert isinstance(keep, int)
    for create in (False, True):
        path = _copy(built, tmp_path, built.content[:keep])
        with pytest.raises((errors.NotAStore, errors.StoreCorrupt)) as info:
            pds.open_store(path, create=create)
        assert_clean(info.value)


def test_store_truncated_to_nothing_is_not_a_store(built: BuiltStore, tmp_path: Path) -> None:
    path = _copy(built, tmp_path, b"")
    raises(errors.NotAStore, lambda: pds.open_store(path, create=False))


@pytest.mark.parametrize(
    "cut",
    [
        1,
        17,
        pytest.param(
            512,
        ),
        pytest.param(
            4095,
        ),
    ],
)
def test_store_truncated_inside_its_last_page_never_returns_wrong_data(
    built: BuiltStore, tmp_path: Path, cut: int
) -> None:
    """SQLite cannot tell a short last page at open; whatever is read from it then must
    either verify exactly or be refused with a pds error."""
    path = _copy(built, tmp_path, built.content[:-cut])
    outcome = _damaged_outcome(path, built)
    assert outcome[-1] in {"read", "IntegrityError", "StoreCorrupt", "NotAStore"}, outcome


def test_corrupt_page_in_the_middle_of_the_records_table_is_a_pds_error(
    built: BuiltStore, tmp_path: Path
) -> None:
    with sqlite3.connect(built.db) as con:
        leaves = [
            page
            for (page,) in con.execute(
                "SELECT pageno FROM dbstat WHERE name = 'records' AND pagetype = 'leaf' "
                "ORDER BY pageno"
            )
        ]
    con.close()
    assert len(leaves) >= 3
    page = leaves[len(leaves) // 2]
    size = _page_size(built)
    content = bytearray(built.content)
    content[(page - 1) * size : page * size] = bytes(size)
    path = _copy(built, tmp_path, bytes(content))
    outcome = _damaged_outcome(path, built)
    assert outcome[-1] in {"StoreCorrupt", "IntegrityError"}, outcome


def _damage_schema(db: Path, name: bytes) -> None:
    """Replace the ``meta`` table's schema entry with an unparsable one named ``name``."""
    con = sqlite3.connect(db)
    con.execute("PRAGMA writable_schema = ON")
    con.execute(
        "UPDATE sqlite_master SET name = CAST(? AS TEXT), sql = 'CREATE TABLE broken(' "
        "WHERE name = 'meta'",
        (name,),
    )
    con.commit()
    con.close()


def test_unparsable_schema_is_a_pds_error(built: BuiltStore, tmp_path: Path) -> None:
    path = _copy(built, tmp_path, built.content)
    _damage_schema(path, b"meta")
    with pytest.raises((errors.StoreCorrupt, errors.NotAStore)) as info:
        pds.open_store(path, create=False)
    assert_clean(info.value)


def test_unparsable_schema_with_a_non_utf8_name_is_a_pds_error(
    built: BuiltStore, tmp_path: Path
) -> None:
    path = _copy(built, tmp_path, built.content)
    _damage_schema(path, b"m\xffeta")
    with pytest.raises((errors.StoreCorrupt, errors.NotAStore)):
        pds.open_store(path, create=False)


@pytest.mark.parametrize(
    ("table", "column"),
    [
        ("meta", "value"),
        ("records", "record_id"),
        ("records", "collection"),
        ("batches", "collection"),
    ],
)
def test_text_that_is_not_utf8_is_a_corrupt_store(
    built: BuiltStore, tmp_path: Path, table: str, column: str
) -> None:
    """SQLite keeps any bytes in a TEXT column; the driver cannot decode them. Its error
    quotes the bytes: pds says the store is corrupt, and quotes nothing."""
    path = _copy(built, tmp_path, built.content)
    con = sqlite3.connect(path)
    with con:
        unique = " || seq" if column == "record_id" else ""
        con.execute(f"UPDATE {table} SET {column} = CAST(x'ff80' || 'locked full'{unique} AS TEXT)")
    con.close()
    with pytest.raises(errors.StoreCorrupt) as info:
        for _ in _every_operation(path, built):
            pass
    assert "locked" not in str(info.value) and "\\x" not in repr(info.value)


def test_randomly_damaged_pages_never_return_wrong_data(built: BuiltStore, tmp_path: Path) -> None:
    """Garbage written over whole pages or scattered bytes: every outcome is a verified
    read or a pds error. Anything else (a driver exception, a TypeError, another record's
    data, wrong data for the right id) fails."""
    rng = random.Random(int(os.environ.get("PDS_DAMAGE_SEED", "20240611")))
    trials = int(os.environ.get("PDS_DAMAGE_TRIALS", "40"))
    size = _page_size(built)
    pages = len(built.content) // size
    outcomes: dict[str, int] = {}
    for _ in range(trials):
        content = bytearray(built.content)
        if rng.random() < 0.5:
            page = rng.randrange(1, pages)
            content[page * size : (page + 1) * size] = rng.randbytes(size)
        else:
            for _ in range(8):
                content[rng.randrange(100, len(content))] ^= rng.randrange(1, 256)
        path = _copy(built, tmp_path, bytes(content))
        for suffix in ("-wal", "-shm"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)
        outcome = _damaged_outcome(path, built)[-1]
        outcomes[outcome] = outcomes.get(outcome, 0) + 1
    # Every outcome above is a full verified read or a pds error (anything else raised);
    # check the damage really bit, and that undamaged parts still read.
    assert outcomes.get("read", 0) > 0, outcomes
    assert sum(outcomes.values()) - outcomes.get("read", 0) > 0, outcomes


def _other_sqlite_app(path: Path) -> None:
    con = sqlite3.connect(path)
    con.execute("CREATE TABLE contacts (name TEXT, phone TEXT)")
    con.execute("INSERT INTO contacts VALUES ('Ada', '555-0100')")
    con.commit()
    con.close()


def _foreign_files(tmp: Path) -> dict[str, Path]:
    files = {
        "random-bytes": tmp / "random.bin",
        "text": tmp / "notes.txt",
        "sqlite-app": tmp / "app.sqlite",
        "big-random": tmp / "big.bin",
    }
    files["random-bytes"].write_bytes(os.urandom(777))
    files["text"].write_text("dear diary\n" * 100, "utf-8")
    _other_sqlite_app(files["sqlite-app"])
    files["big-random"].write_bytes(os.urandom(3 * 4096))
    return files


@pytest.mark.parametrize("kind", ["random-bytes", "text", "sqlite-app", "big-random"])
@pytest.mark.parametrize("create", [False, True])
def test_foreign_file_is_not_a_store(tmp_path: Path, kind: str, create: bool) -> None:
    path = _foreign_files(tmp_path)[kind]
    raises(errors.NotAStore, lambda: pds.open_store(path, create=create))
    assert not Path(f"{path}.hostkey").exists()


def test_empty_file_with_create_false_is_not_a_store(tmp_path: Path) -> None:
    path = tmp_path / "empty.db"
    path.touch()
    raises(errors.NotAStore, lambda: pds.open_store(path, create=False))
    assert not Path(f"{path}.hostkey").exists()


def test_empty_file_with_create_true_becomes_a_store(tmp_path: Path) -> None:
    path = tmp_path / "empty.db"
    path.touch()
    with pds.open_store(path) as store:
        assert store.list_vaults() == []
    with pds.open_store(path, create=False) as store:
        assert store.list_vaults() == []


@pytest.mark.parametrize(
    ("kind", "create"), [("sqlite-app", False), ("sqlite-app", True), ("empty", False)]
)
def test_refused_file_is_left_unchanged(tmp_path: Path, kind: str, create: bool) -> None:
    """A file that is not a pds store is refused before anything is written to it."""
    if kind == "empty":
        path = tmp_path / "empty.db"
        path.touch()
    else:
        path = _foreign_files(tmp_path)[kind]
    before = path.read_bytes()
    with pytest.raises(errors.NotAStore):
        pds.open_store(path, create=create)
    assert path.read_bytes() == before


def test_missing_store_with_create_false(tmp_path: Path) -> None:
    path = tmp_path / "absent.db"
    with pytest.raises((errors.StoreError, errors.NotAStore)) as info:
        pds.open_store(path, create=False)
    assert_clean(info.value)
    assert sorted(tmp_path.iterdir()) == []


def test_directory_as_store(tmp_path: Path) -> None:
    with pytest.raises(errors.PDSError) as info:
        pds.open_store(tmp_path)
    assert_clean(info.value)


@pytest.mark.parametrize(
    "location", ["", "postgres://host/db", "sqlite://relative.db", "sqlite:///", "file:///x"]
)
def test_malformed_location(location: str) -> None:
    raises(errors.FormatError, lambda: pds.open_store(location))


def test_non_text_location() -> None:
    raises(errors.FormatError, lambda: pds.open_store(12345))  # type: ignore[arg-type]


# -- the host key ----------------------------------------------------------------------


def test_missing_host_key(tmp_path: Path) -> None:
    db = tmp_path / "store.db"
    pds.open_store(db).close()
    Path(f"{db}.hostkey").unlink()
    raises(errors.HostKeyError, lambda: pds.open_store(db))
    raises(errors.HostKeyError, lambda: pds.open_store(db, create=False))
    # Refusing does not quietly make a new host key that would orphan every record.
    assert not Path(f"{db}.hostkey").exists()


def test_host_key_of_another_store(tmp_path: Path) -> None:
    first, second = tmp_path / "one.db", tmp_path / "two.db"
    pds.open_store(first).close()
    pds.open_store(second).close()
    shutil.copy(f"{second}.hostkey", f"{first}.hostkey")
    raises(errors.HostKeyError, lambda: pds.open_store(first))
    raises(
        errors.HostKeyError,
        lambda: pds.open_store(second, host_key=SymmetricKey.generate()),
    )


@pytest.mark.parametrize("size", [0, 31, 33])
def test_host_key_file_of_the_wrong_size(tmp_path: Path, size: int) -> None:
    db = tmp_path / "store.db"
    pds.open_store(db).close()
    Path(f"{db}.hostkey").write_bytes(os.urandom(size))
    raises(errors.HostKeyError, lambda: pds.open_store(db))
    with pytest.raises(errors.HostKeyError) as refused:
        pds.open_store(db)
    assert str(refused.value) == f"the host key file {db}.hostkey is not a 32-byte key"


@pytest.mark.parametrize("path", ["key\0file", None, 42])
def test_key_file_paths_of_the_wrong_kind_are_format_errors(tmp_path: Path, path: Any) -> None:
    for operation in (
        lambda: SymmetricKey.from_file(path),
        lambda: SymmetricKey.create_file(path),
        lambda: pds.PrincipalKey.from_file(path),
        lambda: pds.PrincipalKey.create_file(path),
    ):
        raises(errors.FormatError, operation)


def test_symmetric_key_wrap_takes_bytes_only() -> None:
    key = SymmetricKey(os.urandom(32))
    raises(errors.FormatError, lambda: key.wrap("secret", context=b"c"))  # type: ignore[arg-type]
    raises(errors.FormatError, lambda: key.wrap(b"secret", context="c"))  # type: ignore[arg-type]
    raises(errors.FormatError, lambda: key.unwrap(None, context=b"c"))  # type: ignore[arg-type]
    assert key.unwrap(key.wrap(b"secret", context=b"c"), context=b"c") == b"secret"


def test_a_datetime_whose_zone_gives_no_offset_is_a_format_error(vault: pds.Vault) -> None:
    class NoOffset(tzinfo):
        def utcoffset(self, when: datetime | None) -> None:
            return None

        def dst(self, when: datetime | None) -> None:
            return None

        def tzname(self, when: datetime | None) -> str:
            return "nowhere"

    raises(errors.FormatError, lambda: vault.list(since=datetime(2026, 1, 1, tzinfo=NoOffset())))


def test_a_dangling_host_key_symlink_is_a_host_key_error(tmp_path: Path) -> None:
    """A new store whose host key path is a symlink to nothing: the key cannot be made
    there, nor read (was a bare FormatError)."""
    db = tmp_path / "store.db"
    Path(f"{db}.hostkey").symlink_to(tmp_path / "nowhere" / "key")
    with pytest.raises(errors.HostKeyError) as refused:
        pds.open_store(db)
    assert str(refused.value) == f"the host key file {db}.hostkey does not exist"


# -- unknown ids -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "vault_id", ["a" * 26, "", "x" * 65, "../../etc", "zz' OR 1=1 --", 42, None]
)
def test_unknown_vault(store: pds.Store, vault: pds.Vault, vault_id: Any) -> None:
    raises(errors.VaultNotFound, lambda: store.open_vault(vault_id))


def test_unknown_record(vault: pds.Vault) -> None:
    vault.put("notes", {"n": 1})
    raises(errors.RecordNotFound, lambda: vault.get("no-such-record"))
    raises(errors.RecordNotFound, lambda: vault.history("no-such-record"))
    raises(errors.RecordNotFound, lambda: vault.delete("no-such-record"))


def test_deleted_record(vault: pds.Vault) -> None:
    secret = secrets.token_hex(16)
    info = vault.put("notes", {"secret": secret})
    vault.delete(info.record_id)
    raises(errors.RecordDeleted, lambda: vault.get(info.record_id), secret)
    raises(errors.RecordDeleted, lambda: vault.delete(info.record_id), secret)
    history = vault.history(info.record_id)
    assert [(r.version, r.deleted, r.erased, r.data) for r in history] == [
        (1, False, True, None),
        (2, True, False, None),
    ]


def test_record_of_another_vault_is_not_found(store: pds.Store, vault: pds.Vault) -> None:
    info = vault.put("notes", {"n": 1})
    other_id = store.create_vault(passphrase="other vault pass", kdf=KDF)
    other = store.open_vault(other_id)
    other.unlock(passphrase="other vault pass")
    raises(errors.RecordNotFound, lambda: other.get(info.record_id))
    raises(errors.RecordNotFound, lambda: other.history(info.record_id))


# -- record data -----------------------------------------------------------------------


class _Opaque:
    pass


def _deep(depth: int) -> dict[str, Any]:
    value: dict[str, Any] = {"leaf": True}
    for _ in range(depth):
        value = {"d": value}
    return value


def _cyclic() -> dict[str, Any]:
    value: dict[str, Any] = {}
    value["self"] = value
    return value


_BAD_DATA: dict[str, Callable[[str], Any]] = {
    "list": lambda m: [m],
    "string": lambda m: m,
    "none": lambda m: None,
    "int": lambda m: 7,
    "bytes-top": lambda m: m.encode(),
    "bytes-value": lambda m: {"ok": m, "b": b"\x00\x01"},
    "bytearray-value": lambda m: {"ok": m, "b": bytearray(b"x")},
    "nan": lambda m: {"ok": m, "x": float("nan")},
    "inf": lambda m: {"ok": m, "x": float("inf")},
    "-inf": lambda m: {"ok": m, "x": [float("-inf")]},
    "set": lambda m: {"ok": m, "x": {1, 2}},
    "frozenset": lambda m: {"ok": m, "x": frozenset()},
    "huge-int": lambda m: {"ok": m, "x": 2**64},
    "huge-negative-int": lambda m: {"ok": m, "x": -(2**63) - 1},
    "int-key": lambda m: {"ok": m, 1: "x"},
    "bytes-key": lambda m: {"ok": m, b"k": "x"},
    "tuple-key": lambda m: {"ok": m, ("a",): "x"},
    "nested-bad-key": lambda m: {"ok": m, "x": [{2: m}]},
    "too-deep": lambda m: {"ok": m, "x": _deep(100)},
    "cyclic": lambda m: {"ok": m, "x": _cyclic()},
    "object": lambda m: {"ok": m, "x": _Opaque()},
    "datetime": lambda m: {"ok": m, "x": datetime(2024, 1, 1)},
    "complex": lambda m: {"ok": m, "x": 1j},
}


@pytest.mark.parametrize("kind", sorted(_BAD_DATA))
def test_invalid_record_data(vault: pds.Vault, kind: str) -> None:
    marker = f"data-{secrets.token_hex(16)}"
    data = _BAD_DATA[kind](marker)
    raises(errors.InvalidRecordData, lambda: vault.put("notes", data), marker)
    raises(
        errors.InvalidRecordData,
        lambda: vault.put_many("notes", [{"fine": marker}, data]),
        marker,
    )
    # All or nothing: the valid item of the refused batch was not written.
    assert vault.list().records == []


def test_record_larger_than_the_limit(vault: pds.Vault) -> None:
    raises(errors.InvalidRecordData, lambda: vault.put("notes", {"x": "y" * (16 * 1024 * 1024)}))
    assert vault.list().records == []


def test_nesting_limit_is_the_same_for_writing_and_reading(vault: pds.Vault) -> None:
    """Whatever ``put`` accepts, ``get`` returns; the limit is a clean InvalidRecordData."""
    accepted = 0
    for depth in range(55, 70):
        data = _deep(depth)
        try:
            info = vault.put("notes", data)
        except errors.InvalidRecordData:
            continue
        accepted = max(accepted, depth)
        assert vault.get(info.record_id).data == data
    assert 55 <= accepted < 69


def test_update_into_another_collection_is_refused(vault: pds.Vault) -> None:
    info = vault.put("health", {"v": 1})
    raises(errors.FormatError, lambda: vault.put("benefits", {"v": 2}, record_id=info.record_id))
    raises(
        errors.FormatError,
        lambda: vault.put_many("benefits", [{"v": 2}], record_ids=[info.record_id]),
    )
    assert [(r.version, r.collection) for r in vault.history(info.record_id)] == [(1, "health")]
    assert "benefits" not in vault.collections()


def test_mismatched_put_many_ids(vault: pds.Vault) -> None:
    raises(errors.FormatError, lambda: vault.put_many("n", [{"a": 1}], record_ids=["a", "b"]))
    raises(
        errors.FormatError,
        lambda: vault.put_many("n", [{"a": 1}, {"a": 2}], record_ids=["same", "same"]),
    )
    assert vault.list().records == []


# -- names, ids, cursors, limits -------------------------------------------------------

BAD_COLLECTIONS = [
    "",
    "/",
    "a/",
    "/a",
    "a//b",
    ".hidden",
    "-dash",
    "with space",
    "tab\there",
    "new\nline",
    "é",
    "x" * 65,
    "/".join(["s"] * 9),
    "/".join(["s" * 64] * 4) + "/x",  # five good segments, 261 characters: over 256
    "a/../b",
    "nul\x00",
    42,
    None,
]
BAD_RECORD_IDS = ["", "-start", ".start", "a b", "a/b", "é", "x" * 129, "nul\x00", 42, None]


@pytest.mark.parametrize("collection", BAD_COLLECTIONS, ids=repr)
def test_bad_collection_name(vault: pds.Vault, collection: Any) -> None:
    if collection is None:
        # None means "no collection" for list; it is refused only where a name is needed.
        vault.list(collection=None)
    else:
        raises(errors.FormatError, lambda: vault.list(collection=collection))
        raises(errors.FormatError, lambda: vault.rotate(collection))
    raises(errors.FormatError, lambda: vault.put(collection, {"a": 1}))
    raises(errors.FormatError, lambda: vault.put_many(collection, [{"a": 1}]))
    assert vault.collections() == []


@pytest.mark.parametrize("record_id", BAD_RECORD_IDS, ids=repr)
def test_bad_record_id(vault: pds.Vault, record_id: Any) -> None:
    raises(errors.FormatError, lambda: vault.get(record_id))
    raises(errors.FormatError, lambda: vault.history(record_id))
    raises(errors.FormatError, lambda: vault.delete(record_id))
    if record_id is not None:  # None asks for a new id
        raises(errors.FormatError, lambda: vault.put("notes", {"a": 1}, record_id=record_id))
    assert vault.list().records == []


def test_good_names_at_the_limits(vault: pds.Vault) -> None:
    # Eight segments, three of the longest (64), 256 characters in all.
    collection = "/".join(["s" * 64, "t" * 64, "u" * 64, *["v" * 11] * 4, "w" * 13])
    assert len(collection) == 256 and len(collection.split("/")) == 8
    record_id = "R" + "x" * 127
    info = vault.put(collection, {"a": 1}, record_id=record_id)
    assert (info.collection, info.record_id) == (collection, record_id)
    assert vault.get(record_id).data == {"a": 1}


@pytest.mark.parametrize("limit", [0, -1, 1001, 10**9, 1.5, "10", None, True, False])
def test_bad_limit(vault: pds.Vault, limit: Any) -> None:
    raises(errors.FormatError, lambda: vault.list(limit=limit))
    raises(errors.FormatError, lambda: vault.log(limit=limit))


@pytest.mark.parametrize(
    "cursor", ["", "abc", "1", "1.2.3", "-1.2", "1.-2", "1.x", "9" * 25 + ".1", " 1.2", 12, b"1.2"]
)
def test_bad_cursor(vault: pds.Vault, cursor: Any) -> None:
    raises(errors.FormatError, lambda: vault.list(cursor=cursor))


def test_naive_datetimes_are_refused(vault: pds.Vault) -> None:
    raises(errors.FormatError, lambda: vault.list(since=datetime(2024, 1, 1)))
    raises(errors.FormatError, lambda: vault.list(until=datetime(2024, 1, 1)))


@pytest.mark.parametrize("when", ["2020", 1577836800, 1577836800.0, b"2020"], ids=repr)
def test_times_that_are_not_datetimes_are_refused(vault: pds.Vault, when: Any) -> None:
    raises(errors.FormatError, lambda: vault.list(since=when))
    raises(errors.FormatError, lambda: vault.list(until=when))
    raises(errors.FormatError, lambda: vault.log(since=when))


@pytest.mark.parametrize(
    "timeout", ["10", -1, -0.5, 300.001, 1e12, float("nan"), float("inf"), True, None], ids=repr
)
def test_bad_busy_timeout(tmp_path: Path, timeout: Any) -> None:
    """Not a number of seconds from 0 to 300 (the log's order tolerance, see
    ``MAX_BUSY_TIMEOUT``): refused before any file is made."""
    raises(errors.FormatError, lambda: pds.open_store(tmp_path / "s.db", busy_timeout=timeout))
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("timeout", [0, 0.5, 300])
def test_busy_timeout_bounds_are_accepted(tmp_path: Path, timeout: float) -> None:
    with pds.open_store(tmp_path / "s.db", busy_timeout=timeout) as store:
        assert store.list_vaults() == []


# -- arguments of the wrong type -------------------------------------------------------

_DID = pds.PrincipalKey.generate().did
_DAY = timedelta(days=1)

# Each call passes one argument of a type the public API does not take; each must raise
# ``FormatError`` (never TypeError, AttributeError, a bare ValueError or a nacl exception),
# and none may be taken as something else (a collection name "c" as the set of its letters).
# The store and vault are typed ``Any`` here: the wrong types are the point.
WRONG_TYPES: dict[str, Callable[[Any, Any, Path], Any]] = {
    "put_many items None": lambda st, v, p: v.put_many("c", None),
    "put_many items int": lambda st, v, p: v.put_many("c", 5),
    "put_many items one mapping": lambda st, v, p: v.put_many("c", {"a": 1}),
    "put_many record_ids int": lambda st, v, p: v.put_many("c", [{"a": 1}], record_ids=5),
    "put_many record_ids str": lambda st, v, p: v.put_many("c", [{"a": 1}], record_ids="r"),
    "create_collection seal_fields str": lambda st, v, p: v.create_collection(
        "z", seal_fields="no"
    ),
    "create_collection seal_fields int": lambda st, v, p: v.create_collection("z", seal_fields=1),
    "unlock key_file int": lambda st, v, p: st.open_vault(v.vault_id).unlock(key_file=5),
    "unlock key_file bytes": lambda st, v, p: st.open_vault(v.vault_id).unlock(
        key_file=str(p).encode()
    ),
    "unlock passphrase list": lambda st, v, p: st.open_vault(v.vault_id).unlock(passphrase=["x"]),
    "create_vault key_file int": lambda st, v, p: st.create_vault(key_file=5),
    "import_vault key_file int": lambda st, v, p: st.import_vault(p / "x.pdsx", key_file=5),
    "import_vault source None": lambda st, v, p: st.import_vault(None, key_file=p / "k"),
    "import_vault source int": lambda st, v, p: st.import_vault(5, key_file=p / "k"),
    "export destination None": lambda st, v, p: v.export(None),
    "export destination int": lambda st, v, p: v.export(5),
    "grant collections str": lambda st, v, p: v.grant(
        _DID, collections="c", purpose="p", expires=_DAY
    ),
    "grant collections None": lambda st, v, p: v.grant(
        _DID, collections=None, purpose="p", expires=_DAY
    ),
    "grant purpose int": lambda st, v, p: v.grant(_DID, collections=["c"], purpose=5, expires=_DAY),
    "grant expires int": lambda st, v, p: v.grant(_DID, collections=["c"], purpose="p", expires=5),
    "grant not_before str": lambda st, v, p: v.grant(
        _DID, collections=["c"], purpose="p", expires=_DAY, not_before="2020"
    ),
    "grant abilities None": lambda st, v, p: v.grant(
        _DID, collections=["c"], purpose="p", expires=_DAY, abilities=None
    ),
    "grant abilities str": lambda st, v, p: v.grant(
        _DID, collections=["c"], purpose="p", expires=_DAY, abilities="read"
    ),
    "grant window str": lambda st, v, p: v.grant(
        _DID, collections=["c"], purpose="p", expires=_DAY, window="ab"
    ),
    "grant delegable str": lambda st, v, p: v.grant(
        _DID, collections=["c"], purpose="p", expires=_DAY, delegable="1"
    ),
    "grant delegable bool": lambda st, v, p: v.grant(
        _DID, collections=["c"], purpose="p", expires=_DAY, delegable=True
    ),
    "grant defer int": lambda st, v, p: v.grant(
        _DID, collections=["c"], purpose="p", expires=_DAY, defer=5
    ),
    "set_policy int": lambda st, v, p: v.set_policy(max_token_lifetime=5),
    "log actor int": lambda st, v, p: v.log(actor=5),
    "log before str": lambda st, v, p: v.log(before="3"),
    "log_root str": lambda st, v, p: v.log_root("1"),
    "prove_inclusion str": lambda st, v, p: v.prove_inclusion("0"),
    "prove_inclusion bool": lambda st, v, p: v.prove_inclusion(False, True),
    "prove_consistency str": lambda st, v, p: v.prove_consistency("1"),
    "verify_log int": lambda st, v, p: v.verify_log(5),
    "KdfParams.named list": lambda st, v, p: pds.KdfParams.named([]),  # type: ignore[arg-type]
}


@pytest.mark.parametrize("name", sorted(WRONG_TYPES))
def test_argument_of_the_wrong_type(
    store: pds.Store, vault: pds.Vault, tmp_path: Path, owner_key_file: Path, name: str
) -> None:
    vault.put("c", {"a": 1}, record_id="r1")
    vault.get("r1")  # an owner read: the access log is not empty
    (tmp_path / "k").write_bytes(owner_key_file.read_bytes())
    (tmp_path / "k").chmod(0o600)
    raises(errors.FormatError, lambda: WRONG_TYPES[name](store, vault, tmp_path))
    # Nothing was written or granted, and nothing was created.
    assert [r.record_id for r in vault.list().records] == ["r1"]
    assert vault.collections() == ["c"]
    assert vault.grants() == []
    assert len(store.list_vaults()) == 1


# -- KDF parameters, schema version ----------------------------------------------------


@pytest.mark.parametrize(
    ("opslimit", "memlimit"),
    [(1, KDF.memlimit), (KDF.opslimit, KDF.memlimit // 2), (0, 0), (KDF.opslimit - 1, 8192)],
)
def test_weak_kdf_parameters_at_create(store: pds.Store, opslimit: int, memlimit: int) -> None:
    raises(
        errors.WeakKdfParameters,
        lambda: store.create_vault(passphrase="p", kdf=pds.KdfParams(opslimit, memlimit)),
    )
    assert store.list_vaults() == []


def test_implausible_kdf_parameters_at_create(store: pds.Store) -> None:
    raises(
        errors.FormatError,
        lambda: store.create_vault(passphrase="p", kdf=pds.KdfParams(10**6, KDF.memlimit)),
    )
    raises(errors.FormatError, lambda: pds.KdfParams.named("paranoid"))
    raises(errors.FormatError, lambda: pds.KdfParams.named([]))  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("opslimit", "memlimit"),
    [
        (True, KDF.memlimit),
        (KDF.opslimit, True),
        ("3", KDF.memlimit),
        (KDF.opslimit, "x"),
        (2.5, KDF.memlimit),
        (float(KDF.opslimit), KDF.memlimit),
        (KDF.opslimit, float(KDF.memlimit)),
        (None, KDF.memlimit),
    ],
    ids=repr,
)
def test_kdf_parameters_must_be_integers(opslimit: Any, memlimit: Any) -> None:
    raises(errors.FormatError, lambda: pds.KdfParams(opslimit, memlimit))


def test_kdf_ceiling_is_sixteen_passes_and_four_gib() -> None:
    pds.KdfParams(16, 4 * 1024**3).check_floor()  # the ceiling itself is allowed
    raises(errors.FormatError, pds.KdfParams(17, KDF.memlimit).check_floor)
    raises(errors.FormatError, pds.KdfParams(KDF.opslimit, 4 * 1024**3 + 1024).check_floor)
    raises(errors.FormatError, pds.KdfParams(64, 16 * 1024**3).check_floor)


@pytest.mark.parametrize("kdf", ["moderate", (3, 2**28), 3], ids=repr)
def test_kdf_argument_of_the_wrong_type(store: pds.Store, vault: pds.Vault, kdf: Any) -> None:
    raises(errors.FormatError, lambda: store.create_vault(passphrase="p", kdf=kdf))
    raises(errors.FormatError, lambda: vault.rekey(passphrase="p", kdf=kdf))
    assert store.list_vaults()[0].unlock_method == "key"
    assert len(store.list_vaults()) == 1


@pytest.mark.parametrize(
    "failure",
    [
        nacl.exceptions.RuntimeError("Unexpected failure in key derivation"),
        MemoryError(),
        nacl.exceptions.TypeError("bad"),
    ],
    ids=lambda e: type(e).__name__,
)
def test_argon2id_failure_is_a_pds_error(
    store: pds.Store,
    pass_vault: str,
    passphrase: str,
    monkeypatch: pytest.MonkeyPatch,
    failure: BaseException,
) -> None:
    def fail(*args: Any, **kwargs: Any) -> bytes:
        raise failure

    monkeypatch.setattr(nacl.bindings, "crypto_pwhash_alg", fail)
    vault = store.open_vault(pass_vault)
    with pytest.raises(errors.KeyDerivationFailed) as info:
        vault.unlock(passphrase=passphrase)
    assert_clean(info.value, passphrase)
    assert "\n" not in str(info.value)
    assert info.value.__cause__ is None and info.value.__context__ is None
    assert vault.is_locked
    raises(errors.KeyDerivationFailed, lambda: store.create_vault(passphrase=passphrase, kdf=KDF))
    assert [v.vault_id for v in store.list_vaults()] == [pass_vault]


_UNLOCK_UNDER_RLIMIT = """
import resource, sys
import pds
with open("/proc/self/status") as status:
    size = next(int(line.split()[1]) * 1024 for line in status if line.startswith("VmSize:"))
limit = size + 256 * 1024 * 1024
resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
store = pds.open_store(sys.argv[1], create=False)
try:
    store.open_vault(sys.argv[2]).unlock(passphrase=sys.argv[3])
except Exception as exc:
    print(type(exc).__module__, type(exc).__name__)
else:
    print("unlocked")
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc, RLIMIT_AS")
def test_argon2id_out_of_memory_at_unlock_is_key_derivation_failed(
    store: pds.Store, store_path: Path, pass_vault: str, passphrase: str
) -> None:
    """A host raises the stored memlimit to 1 GiB (under the ceiling); a process with 256
    MiB of address space to spare cannot allocate it: a pds error, not a nacl one."""
    _rewrite_unlock(store_path, pass_vault, memlimit=1024**3)
    result = subprocess.run(
        [sys.executable, "-c", _UNLOCK_UNDER_RLIMIT, str(store_path), pass_vault, passphrase],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.stdout.split() == ["pds.errors", "KeyDerivationFailed"], result.stderr


def _rewrite_unlock(db: Path, vault_id: str, **changes: Any) -> None:
    con = sqlite3.connect(db)
    with con:
        (unlock,) = con.execute(
            "SELECT unlock FROM vaults WHERE vault_id = ?", (vault_id,)
        ).fetchone()
        document = _codec.decode(unlock)
        document.update(changes)
        con.execute(
            "UPDATE vaults SET unlock = ? WHERE vault_id = ?", (_codec.encode(document), vault_id)
        )
    con.close()


@pytest.mark.parametrize(
    "changes",
    [
        {"opslimit": 1},
        {"memlimit": 8192},
        {"opslimit": 1, "memlimit": 8192},
        {"opslimit": 0},
    ],
    ids=repr,
)
def test_weakened_stored_kdf_parameters_are_refused_at_unlock(
    store: pds.Store, store_path: Path, pass_vault: str, passphrase: str, changes: dict[str, int]
) -> None:
    _rewrite_unlock(store_path, pass_vault, **changes)
    raises(
        errors.WeakKdfParameters,
        lambda: store.open_vault(pass_vault).unlock(passphrase=passphrase),
        passphrase,
    )


@pytest.mark.parametrize(
    "changes",
    [
        {"opslimit": 10**6},
        {"opslimit": 17},
        {"opslimit": float(KDF.opslimit)},
        {"memlimit": float(KDF.memlimit)},
        {"kdf": "scrypt"},
        {"salt": b"short"},
        {"salt": "text"},
        {"method": "telepathy"},
        {"opslimit": "many"},
    ],
    ids=repr,
)
def test_malformed_stored_kdf_parameters_are_refused_at_unlock(
    store: pds.Store, store_path: Path, pass_vault: str, passphrase: str, changes: dict[str, Any]
) -> None:
    _rewrite_unlock(store_path, pass_vault, **changes)
    raises(
        errors.FormatError,
        lambda: store.open_vault(pass_vault).unlock(passphrase=passphrase),
        passphrase,
    )


def _meta(db: Path, key: str, value: str | None) -> None:
    con = sqlite3.connect(db)
    with con:
        if value is None:
            con.execute("DELETE FROM meta WHERE key = ?", (key,))
        else:
            con.execute("UPDATE meta SET value = ? WHERE key = ?", (value, key))
    con.close()


def _schema_version(db: Path) -> int:
    con = sqlite3.connect(db)
    (value,) = con.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
    con.close()
    return int(value)


def test_a_store_migrated_by_a_newer_pds_while_waiting_for_the_lock_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The schema version read before the write lock said "migrate"; a newer pds migrated
    the store meanwhile. This pds must not write its own version over the newer one."""
    db = tmp_path / "store.db"
    pds.open_store(db).close()
    newer = _schema_version(db) + 1
    _meta(db, "schema_version", str(newer))
    stale = SQLiteBackend._check_schema
    monkeypatch.setattr(SQLiteBackend, "_check_schema", lambda self, create: newer - 2)
    raises(errors.SchemaTooNew, lambda: pds.open_store(db))
    monkeypatch.setattr(SQLiteBackend, "_check_schema", stale)
    assert _schema_version(db) == newer


def test_newer_schema_is_refused(tmp_path: Path) -> None:
    db = tmp_path / "store.db"
    pds.open_store(db).close()
    _meta(db, "schema_version", str(_schema_version(db) + 1))
    raises(errors.SchemaTooNew, lambda: pds.open_store(db))
    raises(errors.SchemaTooNew, lambda: pds.open_store(db, create=False))


@pytest.mark.parametrize(
    ("key", "value"),
    [("format", "not-pds"), ("format", None), ("schema_version", None), ("schema_version", "x")],
)
def test_damaged_meta_is_not_a_store(tmp_path: Path, key: str, value: str | None) -> None:
    db = tmp_path / "store.db"
    pds.open_store(db).close()
    _meta(db, key, value)
    raises(errors.NotAStore, lambda: pds.open_store(db))


# -- locked vaults ---------------------------------------------------------------------


def _content_calls(
    subject: pds.Vault, record_id: str, secret: str, export_to: Path
) -> list[Callable[[], Any]]:
    """Every operation that touches content or keys."""
    return [
        lambda: subject.get(record_id),
        lambda: subject.history(record_id),
        lambda: subject.put("notes", {"secret": secret}),
        lambda: subject.put("notes", {"secret": secret}, record_id=record_id),
        lambda: subject.put_many("notes", [{"secret": secret}]),
        lambda: subject.delete(record_id),
        subject.rotate,
        lambda: subject.rotate("notes"),
        lambda: subject.export(export_to),
        lambda: subject.rekey(passphrase="new passphrase", kdf=KDF),
        subject.destroy,
    ]


def test_content_operations_on_a_locked_vault(
    store: pds.Store, vault: pds.Vault, tmp_path: Path
) -> None:
    secret = f"locked-{secrets.token_hex(16)}"
    info = vault.put("notes", {"secret": secret})
    vault.lock()
    assert vault.is_locked
    locked = store.open_vault(vault.vault_id)
    for subject in (vault, locked):
        for call in _content_calls(subject, info.record_id, secret, tmp_path / "locked.pdsx"):
            raises(errors.VaultLocked, call, secret)
    assert not (tmp_path / "locked.pdsx").exists()
    # Nothing changed while locked: one record, one version, the vault not destroyed.
    assert [r.record_id for r in locked.list().records] == [info.record_id]
    assert [v.destroyed for v in store.list_vaults()] == [False]
