"""Promise 1: nothing readable at rest.

Records, passphrases and keys carry unique random markers. After every kind of operation
(writes, updates, deletes, rotation, re-keying, export, lock, and operations that fail), the
raw bytes of the database, its WAL, shared-memory and journal files, the export file,
captured log and console output, and the text of every exception and returned object are
searched for each marker in raw, hex, base64 (standard and URL-safe, at every alignment) and
msgpack-encoded form. Secret key bytes (owner key file, host key file, the Argon2id-derived
key, and the secrets an unlocked vault holds in memory) must not reach the database either.
"""

from __future__ import annotations

import base64
import binascii
import copy
import logging
import pickle
import random
import secrets
import sqlite3
import struct
import traceback
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgpack
import pytest

import pds
from pds import _codec, _crypto, errors
from pds._owner import OwnerSecret
from pds.keys import PrincipalKey, SymmetricKey

KDF = pds.KdfParams.interactive()


# -- the scanner ------------------------------------------------------------------------


def _base64_cores(data: bytes) -> list[bytes]:
    """Substrings that appear in any base64 encoding of a stream containing ``data``.

    Base64 output depends on where ``data`` starts modulo 3, so each of the three
    alignments is encoded with a dummy prefix; the characters that mix prefix bits or bits
    of whatever follows ``data`` are cut off, leaving the part fixed by ``data`` alone.
    """
    cores = []
    for shift in range(3):
        skip = -(-8 * shift // 6)  # characters that hold prefix bits
        end = (8 * (shift + len(data))) // 6  # characters made only of ``data`` bits
        for encode in (base64.b64encode, base64.urlsafe_b64encode):
            cores.append(encode(b"\x00" * shift + data)[skip:end])
    return cores


def forms(secret: bytes) -> list[bytes]:
    """Every encoding under which ``secret`` is searched for."""
    packed = msgpack.packb(secret, use_bin_type=True)
    found = [secret, binascii.hexlify(secret), binascii.hexlify(secret).upper(), packed]
    found += _base64_cores(secret)
    found += _base64_cores(packed)
    return found


def text_forms(text: str) -> list[bytes]:
    raw = text.encode("utf-8")
    return [*forms(raw), msgpack.packb(text), *_base64_cores(msgpack.packb(text))]


def hits(haystack: bytes, needles: dict[str, list[bytes]]) -> list[str]:
    """Names of the needles found in ``haystack`` (with the form that matched)."""
    found = []
    for name, encodings in needles.items():
        for encoded in encodings:
            if len(encoded) >= 8 and encoded in haystack:
                found.append(f"{name} as {encoded[:16]!r}...")
                break
    return found


def exception_text(exc: BaseException) -> str:
    """``str``, ``repr`` and args of the exception and of every exception chained to it
    (``__cause__``, and ``__context__`` even where suppressed: a tool that ignores the
    suppression shows it), and the formatted traceback."""
    parts: list[str] = []
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        parts += [str(current), repr(current), *map(repr, current.args)]
        current = current.__cause__ or current.__context__
    parts += traceback.format_exception(exc)
    return "\n".join(parts)


def database_files(db: Path) -> list[Path]:
    """The database file and every companion SQLite may write beside it."""
    return sorted(
        p for p in db.parent.iterdir() if p.name.startswith(db.name) and p.suffix != ".hostkey"
    )


def read_all(paths: Iterable[Path]) -> bytes:
    return b"\x00".join(p.read_bytes() for p in paths)


def test_scanner_finds_every_form() -> None:
    """The scan is only as good as its forms: a marker planted in any form is found."""
    marker = secrets.token_hex(16).encode()
    needles = {"m": forms(marker)}
    rng = random.Random(7)
    planted = [
        marker,
        binascii.hexlify(marker),
        msgpack.packb(marker),
    ]
    for prefix_len in range(4):
        prefix = bytes(rng.randrange(256) for _ in range(prefix_len))
        suffix = bytes(rng.randrange(256) for _ in range(5))
        planted.append(base64.b64encode(prefix + marker + suffix))
        planted.append(base64.urlsafe_b64encode(prefix + msgpack.packb(marker) + suffix))
    for blob in planted:
        assert hits(b"noise" + blob + b"noise", needles), blob
    assert not hits(secrets.token_bytes(4096), needles)


# -- the scenario ----------------------------------------------------------------------


@dataclass
class Scenario:
    tmp: Path
    db: Path
    export: Path
    needles: dict[str, list[bytes]] = field(default_factory=dict)
    key_needles: dict[str, list[bytes]] = field(default_factory=dict)
    raised: list[BaseException] = field(default_factory=list)
    returned: list[Any] = field(default_factory=list)
    wal_snapshot: dict[str, bytes] = field(default_factory=dict)

    def marker(self, name: str) -> str:
        value = f"{name}-{secrets.token_hex(16)}"
        self.needles[name] = text_forms(value)
        return value

    def unicode_marker(self, name: str) -> str:
        value = f"ünïcødé-{secrets.token_hex(8)}-Ωμέγα-😀-数据-{secrets.token_hex(8)}"
        self.needles[name] = text_forms(value)
        return value

    def int_marker(self, name: str) -> int:
        value = secrets.randbelow(2**62) + 2**61
        self.needles[name] = [
            str(value).encode(),
            struct.pack(">q", value),
            msgpack.packb(value),
            *_base64_cores(struct.pack(">q", value)),
        ]
        return value

    def float_marker(self, name: str) -> float:
        value = random.SystemRandom().uniform(1e5, 1e6)
        self.needles[name] = [repr(value).encode(), struct.pack(">d", value)]
        return value

    def expect_error(self, error: type[BaseException], call: Any, *args: Any, **kw: Any) -> None:
        with pytest.raises(error) as info:
            call(*args, **kw)
        self.raised.append(info.value)


def _record(s: Scenario, tag: str) -> dict[str, Any]:
    """A record whose every kind of value (keys too) carries a marker."""
    return {
        "name": s.marker(f"{tag}.name"),
        s.marker(f"{tag}.key"): True,
        "nested": {
            "list": [s.marker(f"{tag}.list0"), {"deep": s.marker(f"{tag}.deep")}],
            "unicode": s.unicode_marker(f"{tag}.unicode"),
        },
        "count": s.int_marker(f"{tag}.int"),
        "amount": s.float_marker(f"{tag}.float"),
        "flags": [None, False, 0, -1.5],
    }


def _add_key_needles(s: Scenario, name: str, secret: bytes) -> None:
    s.key_needles[name] = forms(secret)


def _derived_passphrase_key(db: Path, vault_id: str, passphrase: str) -> bytes:
    with sqlite3.connect(db) as con:
        (unlock,) = con.execute(
            "SELECT unlock FROM vaults WHERE vault_id = ?", (vault_id,)
        ).fetchone()
    con.close()
    doc = _codec.decode(unlock)
    return _crypto.argon2id_key(
        passphrase.encode("utf-8"), doc["salt"], doc["opslimit"], doc["memlimit"]
    )


def _vault_memory_secrets(s: Scenario, tag: str, vault: pds.Vault) -> None:
    """The secrets an unlocked vault holds in memory must never be written anywhere."""
    keys = vault._owner
    assert keys is not None
    _add_key_needles(s, f"{tag}.master", keys.master)
    _add_key_needles(s, f"{tag}.identity-seed", keys.identity.seed)
    _add_key_needles(s, f"{tag}.x25519", keys.x25519_secret)
    for (collection, epoch, _), secret in keys.epoch_secrets.items():
        _add_key_needles(s, f"{tag}.epoch.{collection}.{epoch}", secret)
    for batch_id, share in keys.reader_shares.items():
        _add_key_needles(s, f"{tag}.reader.{batch_id.hex()}", share)
    for batch_id, share in vault._host_shares.items():
        _add_key_needles(s, f"{tag}.host.{batch_id.hex()}", share)


def run_scenario(tmp: Path, caplog: pytest.LogCaptureFixture) -> Scenario:
    caplog.set_level(logging.DEBUG)
    logging.getLogger().setLevel(logging.DEBUG)
    s = Scenario(tmp=tmp, db=tmp / "store.db", export=tmp / "vault.pdsx")
    (tmp / "other").mkdir()
    passphrase = s.marker("passphrase")
    new_passphrase = s.marker("new-passphrase")
    wrong_passphrase = s.marker("wrong-passphrase")
    owner_key_path = tmp / "owner.key"
    owner_key = SymmetricKey.create_file(owner_key_path)
    other_key_path = tmp / "other.key"
    SymmetricKey.create_file(other_key_path)
    principal_path = tmp / "principal.key"
    principal = PrincipalKey.create_file(principal_path)
    s.returned += [owner_key, principal, KDF]

    store = pds.open_store(s.db)
    s.returned.append(store)
    with store:
        _add_key_needles(s, "owner-key-file", owner_key_path.read_bytes())
        _add_key_needles(s, "other-key-file", other_key_path.read_bytes())
        _add_key_needles(s, "host-key-file", Path(f"{s.db}.hostkey").read_bytes())

        pass_id = store.create_vault(passphrase=passphrase, kdf=KDF)
        key_id = store.create_vault(key_file=owner_key_path)
        _add_key_needles(s, "argon2id-key", _derived_passphrase_key(s.db, pass_id, passphrase))
        by_pass = store.open_vault(pass_id)
        by_key = store.open_vault(key_id)
        by_pass.unlock(passphrase=passphrase)
        by_key.unlock(key_file=owner_key_path)
        s.returned += [by_pass, by_key]

        for tag, vault in (("p", by_pass), ("k", by_key)):
            single = vault.put("health/visits", _record(s, f"{tag}.single"))
            many = vault.put_many("benefits", [_record(s, f"{tag}.many{i}") for i in range(3)])
            updated = vault.put(
                "health/visits", _record(s, f"{tag}.update"), record_id=single.record_id
            )
            vault.delete(many[0].record_id)
            vault.rotate()
            after_rotation = vault.put("benefits", _record(s, f"{tag}.rotated"))
            s.returned += [single, *many, updated, after_rotation]
            s.returned.append(vault.get(single.record_id))
            s.returned += vault.history(single.record_id)
            s.returned += vault.history(many[0].record_id)
            s.returned.append(vault.list())
            # Failing operations while unlocked: invalid data around markers.
            s.expect_error(
                errors.InvalidRecordData,
                vault.put,
                "notes",
                {"ok": s.marker(f"{tag}.bad-set"), "bad": {s.marker(f"{tag}.in-set")}},
            )
            s.expect_error(
                errors.InvalidRecordData,
                vault.put,
                "notes",
                {"ok": s.marker(f"{tag}.bad-int"), "n": 2**70},
            )
            s.expect_error(
                errors.InvalidRecordData,
                vault.put,
                "notes",
                {"ok": s.marker(f"{tag}.bad-nan"), "n": float("nan")},
            )
            s.expect_error(
                errors.InvalidRecordData,
                vault.put,
                "notes",
                {1: s.marker(f"{tag}.non-str-key")},
            )
            s.expect_error(
                errors.FormatError,
                vault.put,
                f"bad collection {s.marker(f'{tag}.collection')}",
                {"x": 1},
            )
            _vault_memory_secrets(s, tag, vault)

        by_pass.rekey(passphrase=new_passphrase, kdf=KDF)
        _add_key_needles(
            s, "argon2id-key-new", _derived_passphrase_key(s.db, pass_id, new_passphrase)
        )
        by_pass.export(s.export)
        s.returned.append(store.list_vaults())

        # Failing operations: wrong secrets, locked vaults, weak parameters.
        fresh = store.open_vault(pass_id)
        s.expect_error(errors.WrongPassphrase, fresh.unlock, passphrase=wrong_passphrase)
        s.expect_error(errors.WrongPassphrase, fresh.unlock, passphrase=passphrase)
        s.expect_error(errors.WrongKey, fresh.unlock, key_file=owner_key_path)
        s.expect_error(errors.WrongKey, store.open_vault(key_id).unlock, key_file=other_key_path)
        s.expect_error(
            errors.WrongPassphrase, store.open_vault(key_id).unlock, passphrase=passphrase
        )
        s.expect_error(
            errors.WeakKdfParameters,
            store.create_vault,
            passphrase=s.marker("weak-passphrase"),
            kdf=pds.KdfParams(1, 8192),
        )
        with pds.open_store(tmp / "other" / "store.db") as other:
            s.expect_error(
                errors.WrongPassphrase,
                other.import_vault,
                s.export,
                passphrase=wrong_passphrase,
            )
            assert other.list_vaults() == []
        s.expect_error(errors.VaultExists, store.import_vault, s.export, passphrase=new_passphrase)
        by_pass.lock()
        s.expect_error(errors.VaultLocked, by_pass.put, "notes", _record(s, "locked-put"))
        s.expect_error(errors.VaultLocked, by_pass.get, "anything")
        s.returned.append(by_pass)

        # The WAL is still there: the store is open and nothing forced a checkpoint.
        wal = Path(f"{s.db}-wal")
        assert wal.exists() and wal.stat().st_size > 0
        s.wal_snapshot = {p.name: p.read_bytes() for p in database_files(s.db)}
    return s


@pytest.fixture
def scenario(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]
) -> Scenario:
    s = run_scenario(tmp_path, caplog)
    out, err = capfd.readouterr()
    s.returned.append(out + err + caplog.text)
    return s


def test_markers_absent_from_database_and_wal_while_open(scenario: Scenario) -> None:
    assert {"store.db", "store.db-wal", "store.db-shm"} <= set(scenario.wal_snapshot)
    for name, content in scenario.wal_snapshot.items():
        assert not hits(content, scenario.needles), name


def test_markers_absent_from_database_after_close(scenario: Scenario) -> None:
    files = database_files(scenario.db)
    assert files, "the database is gone"
    for path in files:
        assert not hits(path.read_bytes(), scenario.needles), path.name


def test_markers_absent_from_export_file(scenario: Scenario) -> None:
    content = scenario.export.read_bytes()
    assert content.startswith(b"pds-export/v1\n")
    assert not hits(content, scenario.needles)


def test_markers_absent_from_logs_exceptions_and_reprs(scenario: Scenario) -> None:
    assert len(scenario.raised) >= 20
    for exc in scenario.raised:
        assert isinstance(exc, errors.PDSError)
        text = exception_text(exc).encode("utf-8")
        assert not hits(text, scenario.needles), exception_text(exc)
        assert not hits(text, scenario.key_needles), exception_text(exc)
    for obj in scenario.returned:
        text = (obj if isinstance(obj, str) else f"{obj!s}\n{obj!r}").encode("utf-8")
        assert not hits(text, scenario.needles), repr(obj)
        assert not hits(text, scenario.key_needles), repr(obj)


def test_secret_key_bytes_absent_from_database_and_export(scenario: Scenario) -> None:
    # Sanity: the in-memory secrets were really collected (epochs, shares of both vaults).
    assert len(scenario.key_needles) > 12
    for name, content in scenario.wal_snapshot.items():
        assert not hits(content, scenario.key_needles), name
    for path in [*database_files(scenario.db), scenario.export]:
        assert not hits(path.read_bytes(), scenario.key_needles), path.name


def test_record_repr_hides_data(vault: pds.Vault) -> None:
    secret = secrets.token_hex(16)
    info = vault.put("notes", {"text": secret})
    record = vault.get(info.record_id)
    assert record.data == {"text": secret}
    for text in (repr(record), str(record), repr(vault.history(info.record_id))):
        assert secret not in text
        assert "data=" not in text


def test_key_object_reprs_hide_key_bytes(tmp_path: Path) -> None:
    key_path = tmp_path / "k.key"
    key = SymmetricKey.create_file(key_path)
    raw = key_path.read_bytes()
    principal_path = tmp_path / "p.key"
    principal = PrincipalKey.create_file(principal_path)
    encoded_seed = principal_path.read_text("ascii").strip().split(":", 1)[1]
    seed = base64.urlsafe_b64decode(encoded_seed + "=" * (-len(encoded_seed) % 4))
    needles = {"symmetric": forms(raw), "principal-seed": forms(seed)}
    for obj in (key, SymmetricKey(raw), principal, PrincipalKey.from_file(principal_path)):
        text = f"{obj!s}\n{obj!r}".encode()
        assert not hits(text, needles), repr(obj)
    # The public identity may show; that is what a did:key is for.
    assert principal.did in repr(principal)


def test_objects_that_hold_a_secret_are_not_pickled_or_copied(vault: pds.Vault) -> None:
    """A pickle (a cache, a file, a multiprocessing queue) would carry the secret out of the
    process: keys, the owner's secret and an unlocked vault's keys refuse pickle and copy;
    objects holding one (a grantee) refuse through it."""
    principal = PrincipalKey.generate()
    holders: list[object] = [
        SymmetricKey.generate(),
        principal,
        principal._key,
        pds.Grantee(principal),
        vault._keys(),
        vault._keys().identity,
        OwnerSecret(passphrase="correct horse"),
    ]
    for holder in holders:
        for protocol in range(pickle.HIGHEST_PROTOCOL + 1):
            with pytest.raises(TypeError, match="holds a secret"):
                pickle.dumps(holder, protocol=protocol)
        for duplicate in (copy.copy, copy.deepcopy):
            if isinstance(holder, pds.Grantee):
                continue  # a shallow copy shares the key object; no secret is serialized
            with pytest.raises(TypeError, match="holds a secret"):
                duplicate(holder)
