from __future__ import annotations

import contextlib
import datetime as dt
import sqlite3
from pathlib import Path

import pytest

import pds
from pds import _owner, errors


def test_put_get_update_history(vault: pds.Vault) -> None:
    first = vault.put("health/visits", {"clinic": "north", "cost": 12.5})
    assert first.version == 1
    second = vault.put("health/visits", {"clinic": "south"}, record_id=first.record_id)
    assert second.version == 2
    current = vault.get(first.record_id)
    assert current.data == {"clinic": "south"}
    assert current.writer == vault.did
    assert [r.data for r in vault.history(first.record_id)] == [
        {"clinic": "north", "cost": 12.5},
        {"clinic": "south"},
    ]


def test_passphrase_unlock_and_rekey(store: pds.Store) -> None:
    vault_id = store.create_vault(passphrase="correct horse", kdf=pds.KdfParams.interactive())
    vault = store.open_vault(vault_id)
    with pytest.raises(errors.WrongPassphrase):
        vault.unlock(passphrase="wrong horse")
    vault.unlock(passphrase="correct horse")
    record = vault.put("notes", {"text": "hello"})
    vault.rekey(passphrase="battery staple", kdf=pds.KdfParams.interactive())
    reopened = store.open_vault(vault_id)
    with pytest.raises(errors.WrongPassphrase):
        reopened.unlock(passphrase="correct horse")
    reopened.unlock(passphrase="battery staple")
    assert reopened.get(record.record_id).data == {"text": "hello"}


def test_after_rekey_the_old_secret_opens_nothing_in_the_store(
    store: pds.Store, store_path: Path, tmp_path: Path
) -> None:
    """A rekey draws a new vault master key and re-wraps the identity key under it: the old
    secret with the old wrapped master key (as a leftover WAL page would hold it) yields a
    master key that opens nothing stored, and the old wraps are gone from the files."""
    old_key, new_key = tmp_path / "old.key", tmp_path / "new.key"
    pds.SymmetricKey.create_file(old_key)
    pds.SymmetricKey.create_file(new_key)
    vault_id = store.create_vault(key_file=old_key)
    vault = store.open_vault(vault_id)
    vault.unlock(key_file=old_key)
    record = vault.put("notes", {"text": "hello"})
    agency = pds.PrincipalKey.generate()
    token = vault.grant(agency.did, collections=["notes"], purpose="p", expires=dt.timedelta(1))
    before = store.backend.get_vault(vault_id)
    assert before is not None and before.wrapped_master and before.wrapped_identity
    did = vault.did
    vault.rekey(key_file=new_key)
    after = store.backend.get_vault(vault_id)
    assert after is not None
    assert after.wrapped_identity != before.wrapped_identity
    secret = _owner.OwnerSecret(None, old_key, None)
    old_master = _owner.unwrap_master(before.unlock, before.wrapped_master, secret, vault_id)
    with pytest.raises(errors.IntegrityError):
        _owner.open_owner_keys(old_master, after)
    for suffix in ("", "-wal"):
        path = Path(f"{store_path}{suffix}")
        if path.exists():
            data = path.read_bytes()
            assert before.wrapped_master not in data and before.wrapped_identity not in data
    # The same identity, records and grants, with the new secret only (this object and a
    # fresh one).
    reopened = store.open_vault(vault_id)
    with pytest.raises(errors.WrongKey):
        reopened.unlock(key_file=old_key)
    reopened.unlock(key_file=new_key)
    for opened in (vault, reopened):
        assert opened.did == did
        assert opened.get(record.record_id).data == {"text": "hello"}
        opened.checkpoint()
    assert len(pds.Grantee(agency).read(store, token).records) == 1
    vault.rekey(key_file=old_key)  # this object's keys follow its own rekey
    reopened = store.open_vault(vault_id)
    reopened.unlock(key_file=old_key)
    assert reopened.get(record.record_id).data == {"text": "hello"}


def test_export_import_round_trip(vault: pds.Vault, owner_key_file: Path, tmp_path: Path) -> None:
    kept = vault.put("a", {"n": 1})
    gone = vault.put("a", {"n": 2})
    vault.delete(gone.record_id)
    vault.rotate()
    later = vault.put("a", {"n": 3})
    vault.export(tmp_path / "v.pdsx")
    with pds.open_store(tmp_path / "other.db") as other:
        vault_id = other.import_vault(tmp_path / "v.pdsx", key_file=owner_key_file)
        copy = other.open_vault(vault_id)
        copy.unlock(key_file=owner_key_file)
        assert copy.get(kept.record_id).data == {"n": 1}
        assert copy.get(later.record_id).data == {"n": 3}
        with pytest.raises(errors.RecordDeleted):
            copy.get(gone.record_id)


def test_reader_share_is_sealed_once_per_epoch_and_unlock(
    store: pds.Store, vault: pds.Vault, owner_key_file: Path
) -> None:
    """An unlocked vault seals one reader share per collection epoch and reuses it; a new
    unlock or a new epoch draws a fresh one. Every record still reads back, owner and
    grantee alike (docs/spec/records.md)."""

    def sealed_readers() -> list[bytes]:
        with contextlib.closing(sqlite3.connect(store.path)) as conn:
            rows = conn.execute("SELECT sealed_reader FROM batches ORDER BY bseq").fetchall()
        return [row[0] for row in rows]

    first = vault.put("notes", {"n": 1})
    second = vault.put("notes", {"n": 2})
    vault.lock()
    vault.unlock(key_file=owner_key_file)
    third = vault.put("notes", {"n": 3})
    vault.rotate("notes")
    fourth = vault.put("notes", {"n": 4})
    readers = sealed_readers()
    assert len(readers) == 4
    assert readers[0] == readers[1]
    assert len({readers[1], readers[2], readers[3]}) == 3
    infos = [first, second, third, fourth]
    assert len({info.record_id for info in infos}) == 4

    reopened = store.open_vault(vault.vault_id)
    reopened.unlock(key_file=owner_key_file)
    assert [reopened.get(info.record_id).data for info in infos] == [{"n": n} for n in range(1, 5)]
    key = pds.PrincipalKey.generate()
    token = reopened.grant(
        key.did, collections=["notes"], purpose="care", expires=dt.timedelta(days=1)
    )
    read = pds.Grantee(key).read(store, token, collection="notes", purpose="care")
    assert sorted(str(record.data) for record in read.records) == [
        str({"n": n}) for n in range(1, 5)
    ]
