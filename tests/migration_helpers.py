"""Helpers shared by the schema-migration suites (test_store_schema3, 4 and 5).

An old store is a store filled through the public API (records, a grant with a use budget,
served reads: nonces, use counts, log entries and subtree hashes; a rotation: epoch keys
sealed to the grant; a second grant, revoked; owner reads and a signed checkpoint), its
rows then copied into an empty store made by the store's own open path with only the first
``version`` migrations (``SCHEMA_VERSION`` and ``MIGRATIONS`` patched for the duration, as
the release that introduced that schema ran). Columns a later schema added are left out of
the copy; no schema so far changed what a kept column means. (This pds writes its current
layout, so it cannot fill an old one itself.) Files are inspected with raw ``sqlite3``;
nothing here mocks the store.

Test modules import this file as ``migration_helpers`` (pytest puts ``tests/`` on
``sys.path``); mypy sees it as ``tests.migration_helpers``.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import shutil
import sqlite3
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

import pds
from pds import _faults, merkle
from pds._store import sqlite as sqlite_store
from pds.accesslog import Checkpoint
from pds.errors import Replayed, Revoked, StoreError

if TYPE_CHECKING:
    from tests.crash_helpers import in_child
    from tests.tokens_helpers import T0_MS, ManualClock
else:
    from crash_helpers import in_child
    from tokens_helpers import T0_MS, ManualClock

COLLECTION = "tax/2024"
CURRENT = sqlite_store.SCHEMA_VERSION
"""This pds's schema version (read before any test patches it)."""
_MIGRATIONS = list(sqlite_store.MIGRATIONS)
SMALL_ROW_TABLES = ("log_nodes", "nonces", "link_keys", "link_uses")
"""The tables stored ``WITHOUT ROWID`` since schema 3."""


# -- raw views of a store file


@contextlib.contextmanager
def raw(path: Path) -> Iterator[sqlite3.Connection]:
    with contextlib.closing(sqlite3.connect(path)) as conn:
        yield conn


def schema_version(path: Path) -> int:
    with raw(path) as conn:
        (value,) = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
    return int(value)


def without_rowid(path: Path) -> dict[str, bool]:
    """Each table's ``wr`` flag (SQLite 3.37+ ``pragma_table_list``)."""
    with raw(path) as conn:
        rows = conn.execute(
            "SELECT name, wr FROM pragma_table_list WHERE schema = 'main' AND type = 'table'"
        ).fetchall()
    return {str(name): bool(wr) for name, wr in rows}


def schema(path: Path) -> set[tuple[Any, ...]]:
    """``sqlite_master`` rows, without SQLite's own ``sqlite_sequence``."""
    with raw(path) as conn:
        rows = conn.execute("SELECT type, name, tbl_name, sql FROM sqlite_master").fetchall()
    return {tuple(row) for row in rows if row[:2] != ("table", "sqlite_sequence")}


def columns(path: Path, table: str) -> list[tuple[Any, ...]]:
    """``PRAGMA table_info`` rows: (cid, name, type, notnull, default, pk)."""
    with raw(path) as conn:
        return [tuple(row) for row in conn.execute(f'PRAGMA table_info("{table}")')]


def rows(path: Path) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every table, sorted; ``meta`` without the entries every open or every
    commit may change (the commit counter, the schema version)."""
    with raw(path) as conn:
        tables = [
            row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")
        ]
        dump = {
            table: sorted(
                (tuple(row) for row in conn.execute(f'SELECT * FROM "{table}"')), key=repr
            )
            for table in tables
            if table != "sqlite_sequence"
        }
    dump["meta"] = [row for row in dump["meta"] if row[0] not in ("commits", "schema_version")]
    return dump


def integrity(path: Path) -> list[str]:
    with raw(path) as conn:
        return [row[0] for row in conn.execute("PRAGMA integrity_check")]


def remove_wal(path: Path) -> None:
    for suffix in ("-wal", "-shm", "-journal"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)


@contextlib.contextmanager
def schema_at(version: int) -> Iterator[None]:
    """While inside, this pds makes and opens stores at schema ``version``, as the release
    that introduced it did: the open path runs only the first ``version`` migrations."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(sqlite_store, "SCHEMA_VERSION", version)
        patch.setattr(sqlite_store, "MIGRATIONS", _MIGRATIONS[:version])
        yield


# -- an old store, made by the store's own open path


@dataclass
class Old:
    """A store file at an older schema with rows in every table, and what to check it
    against."""

    version: int
    path: Path
    pristine: Path
    key_file: Path
    clock: ManualClock
    vault_id: str
    agency: pds.PrincipalKey
    token: pds.Token
    served: bytes
    """An invocation the store served: replaying it must be refused."""
    head: Checkpoint
    rotated_record: str
    """A record written after the rotation: the grantee opens it with a sealed epoch key."""
    revoked: pds.Token
    """A grant to ``agency`` that the owner revoked: refused in every schema."""
    rows: dict[str, list[tuple[Any, ...]]]

    def restore(self) -> None:
        remove_wal(self.path)
        shutil.copyfile(self.pristine, self.path)

    def open(self) -> pds.Store:
        return pds.open_store(self.path, clock=self.clock, create=False)

    def vault(self, store: pds.Store) -> pds.Vault:
        vault = store.open_vault(self.vault_id)
        vault.unlock(key_file=self.key_file)
        return vault


def build_old(root: Path, version: int, *, owner_reads: int = 3) -> Old:
    """A store at schema ``version``, closed cleanly (its write-ahead log checkpointed), with
    a copy to restore it from. Each owner read appends a log entry."""
    root.mkdir(parents=True, exist_ok=True)
    path = root / "store.db"
    key_file = root / "owner.key"
    pds.SymmetricKey.create_file(key_file)
    clock = ManualClock(T0_MS)
    agency = pds.PrincipalKey.generate()
    grantee = pds.Grantee(agency, clock=clock)
    current = root / "current.db"
    with schema_at(CURRENT), pds.open_store(current, clock=clock) as store:
        vault = store.open_vault(store.create_vault(key_file=key_file))
        vault.unlock(key_file=key_file)
        for n in range(3):
            vault.put(COLLECTION, {"income": 1000 + n})
        token = vault.grant(
            agency.did,
            collections=["tax/*"],
            purpose="benefit check",
            expires=dt.timedelta(days=30),
            uses=100,
        )
        for _ in range(4):
            clock.advance(1_000)
            assert len(grantee.read(store, token).records) == 3
        clock.advance(1_000)
        invocation = grantee.invoke(token).to_bytes()
        assert len(store.serve(invocation).records) == 3
        revoked = vault.grant(
            agency.did, collections=["tax/*"], purpose="audit", expires=dt.timedelta(days=30)
        )
        vault.revoke(revoked)  # a revocations row
        vault.rotate(COLLECTION)  # seals the new epoch's key to the grant: link_keys rows
        rotated = vault.put(COLLECTION, {"income": 2000}).record_id
        for _ in range(owner_reads):
            clock.advance(1_000)
            vault.get(rotated)  # owner reads: more log entries and subtree hashes
        head = vault.checkpoint()
        vault.verify_log(head)
        vault_id = vault.vault_id
    _copy_into_schema(current, path, version)
    pristine = root / "pristine.db"
    shutil.copyfile(path, pristine)
    return Old(
        version=version,
        path=path,
        pristine=pristine,
        key_file=key_file,
        clock=clock,
        vault_id=vault_id,
        agency=agency,
        token=token,
        served=invocation,
        head=head,
        rotated_record=rotated,
        revoked=revoked,
        rows=rows(path),
    )


def _copy_into_schema(source: Path, path: Path, version: int) -> None:
    """Make ``path`` an empty store at schema ``version`` (the old migrations), then copy
    every row of the store at ``source`` into it, and its host key beside it."""
    with schema_at(version):
        pds.open_store(path).close()
    shutil.copyfile(f"{source}.hostkey", f"{path}.hostkey")
    remove_wal(source)  # closed cleanly: its log was checkpointed into the file
    with raw(path) as conn:
        conn.execute("ATTACH DATABASE ? AS source", (str(source),))
        tables = [
            str(row[0])
            for row in conn.execute(
                "SELECT name FROM main.sqlite_master WHERE type = 'table' "
                "AND name != 'sqlite_sequence'"
            )
        ]
        for table in tables:
            names = ", ".join(f'"{column[1]}"' for column in columns(path, table))
            conn.execute(f'DELETE FROM main."{table}"')
            conn.execute(
                f'INSERT INTO main."{table}" ({names}) SELECT {names} FROM source."{table}"'
            )
        conn.execute("UPDATE main.meta SET value = ? WHERE key = 'schema_version'", (str(version),))
        conn.commit()
        conn.execute("DETACH DATABASE source")
    remove_wal(path)
    assert schema_version(path) == version
    assert integrity(path) == ["ok"]


def assert_works(old: Old, store: pds.Store) -> None:
    """What the old store holds still does its job in ``store``."""
    vault = old.vault(store)
    # log_nodes: the log verifies against the head signed at the old schema, proofs check
    # out.
    vault.verify_log(old.head)
    latest = vault.latest_checkpoint()
    assert latest == old.head
    for index in range(old.head.size):
        entry, proof = vault.prove_inclusion(index, old.head.size)
        merkle.verify_inclusion(entry.leaf_hash, index, old.head.size, proof, old.head.root)
    # nonces: the invocation served at the old schema is a replay.
    with pytest.raises(Replayed) as refused:
        store.serve(old.served)
    assert refused.value.reason == "replay"
    # link_uses: the budget spent at the old schema is still spent.
    link_id = old.token.leaf.link_id.hex()
    assert next(g.used for g in vault.grants() if g.link_id == link_id) == 5
    # link_keys: the grantee opens what was written after the rotation with the epoch key
    # sealed to its grant.
    old.clock.advance(1_000)
    grantee = pds.Grantee(old.agency, clock=old.clock)
    read = grantee.read(store, old.token, records=[old.rotated_record])
    assert read.pending == []
    assert [record.data for record in read.records] == [{"income": 2000}]
    # revocations: the grant revoked at the old schema is refused.
    with pytest.raises(Revoked):
        grantee.read(store, old.revoked)
    # And the log grows on from the stored subtree hashes.
    head = vault.checkpoint()
    assert head.size > old.head.size
    vault.verify_log(head)
    proof = vault.prove_consistency(old.head.size, head.size)
    merkle.verify_consistency(old.head.size, head.size, old.head.root, head.root, proof)


# -- all or nothing


FileCheck = Callable[[Old], int]
"""Asserts the file is either the old store untouched or the whole migrated one; returns
its schema version."""


def _open_calls(old: Old) -> int:
    """How many storage calls opening the old store makes, migration included."""
    old.restore()
    with _faults.fail_storage(10**9):
        old.open().close()
        calls = _faults.storage_calls()
    old.restore()
    return calls


def fail_each_storage_call(old: Old, check: FileCheck) -> tuple[int, int]:
    """Open the old store once with each storage call of the migrating open failing in
    turn; check the file after each, and that the next open (no fault) migrates it.
    Returns (storage calls the migration adds to an open, opens that left the old schema)."""
    calls = _open_calls(old)
    with schema_at(old.version):
        plain = _open_calls(old)
    failed = 0
    for k in range(1, calls + 1):
        old.restore()
        try:
            with _faults.fail_storage(k):
                old.open().close()
        except StoreError as error:
            assert "input/output" in str(error), error
            # Failed before the migration committed: untouched; after it: all there.
            if check(old) == old.version:
                failed += 1
        else:
            assert check(old) == sqlite_store.SCHEMA_VERSION
        # With the fault gone, the next open migrates it.
        with old.open():
            pass
        assert check(old) == sqlite_store.SCHEMA_VERSION
    return calls - plain, failed


def crash_at_each_point(old: Old, check: FileCheck) -> list[int]:
    """End a process at each crash point of the migrating open (no rollback, no cleanup);
    check the file after each, and that the next open migrates it. Returns the schema
    version each crash left."""

    def migrate() -> None:
        old.open().close()

    outcomes = []
    k = 1
    while True:
        old.restore()
        if in_child(k, migrate):
            break
        outcomes.append(check(old))
        with old.open():
            pass
        assert check(old) == sqlite_store.SCHEMA_VERSION
        k += 1
        assert k < 1_000, "the open never finished"
    return outcomes
