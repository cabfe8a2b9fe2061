"""Promise 10: crash-safe.

A child process (``tests/helpers/crash_writer.py``) writes records in a loop (single puts,
``put_many`` batches, updates, deletes) and prints each write only after the library call
returned. The parent kills it with SIGKILL at a random moment, then, with no connection
of its own left open, checks the store: SQLite's ``integrity_check`` is ok; every write the
child acknowledged is there at its version or one later (the write in flight at the kill
may or may not have committed, never half); every listed record and every batch is
whole and verifies; the vault still unlocks. ``PDS_CRASH_ITERATIONS`` (default 50) sets the
number of kills, ``PDS_CRASH_SEED`` replays a run.

Every record is read back after every kill while the store holds up to ``FULL_CHECK_LIMIT``
records (the default 50 kills leave about 900). Beyond that (the nightly's 1,000 kills grow
it to ~18,000 records) each kill reads back what the last child wrote, what its write in
flight changed and a random sample of the rest, and the last kill reads back everything:
reading all of a growing store after every kill made the long run quadratic.
"""

from __future__ import annotations

import json
import os
import random
import secrets
import signal
import sqlite3
import subprocess
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

import pds
from pds import errors

if TYPE_CHECKING:
    from tests.crash_helpers import half_written_batches
else:
    from crash_helpers import half_written_batches
from pds.keys import SymmetricKey

WRITER = Path(__file__).parent / "helpers" / "crash_writer.py"
ITERATIONS = int(os.environ.get("PDS_CRASH_ITERATIONS", "50"))
SEED = int(os.environ.get("PDS_CRASH_SEED", str(secrets.randbits(32))))
FULL_CHECK_LIMIT = 2_000
SAMPLE = 50


@dataclass
class Known:
    """What the parent knows to be committed for one record id."""

    version: int
    data: dict[str, Any] | None
    """The data of ``version``; ``None`` if that version is a tombstone."""


class Child:
    """The writer process and the lines it printed (read by a thread, so it never blocks
    on a full pipe while the parent waits)."""

    def __init__(self, db: Path, vault_id: str, key_file: Path, seed: int) -> None:
        self.lines: list[str] = []
        self.ready = threading.Event()
        # The child imports the same pds as this process.
        env = dict(os.environ, PYTHONPATH=str(Path(pds.__file__).resolve().parent.parent))
        self.proc = subprocess.Popen(
            [sys.executable, str(WRITER), str(db), vault_id, str(key_file), str(seed)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if line == "ready\n":
                self.ready.set()
            self.lines.append(line)
        self.ready.set()

    def kill_after(self, delay: float) -> None:
        """SIGKILL the child ``delay`` seconds from now (the random kill moment)."""
        try:
            self.proc.wait(timeout=delay)
        except subprocess.TimeoutExpired:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()
        self._reader.join()
        assert self.proc.stderr is not None
        stderr = self.proc.stderr.read()
        self.proc.stderr.close()
        assert self.proc.returncode == -signal.SIGKILL, f"the writer died by itself:\n{stderr}"

    def acks(self) -> list[dict[str, Any]]:
        """Every complete acknowledgement line (a torn last line was never acknowledged)."""
        return [
            json.loads(line) for line in self.lines if line.endswith("\n") and line != "ready\n"
        ]


def _raw_checks(db: Path) -> dict[str, tuple[int, bytes]]:
    """SQLite-level checks; returns record id -> (highest version, its batch id)."""
    con = sqlite3.connect(db)
    try:
        assert con.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        # Every batch has exactly the records its signed manifest lists, no more, no less.
        assert half_written_batches(con) == []
        orphans = con.execute(
            "SELECT COUNT(*) FROM records WHERE batch_id NOT IN (SELECT batch_id FROM batches)"
        ).fetchone()[0]
        assert orphans == 0, "records without their batch"
        # One current version per record, and it is the highest one.
        bad_current = con.execute(
            "SELECT record_id FROM records GROUP BY vault_id, record_id "
            "HAVING SUM(current) != 1 OR MAX(version) != MAX(CASE WHEN current THEN version END)"
        ).fetchall()
        assert bad_current == [], bad_current
        # Versions of a record are 1..n without gaps.
        gaps = con.execute(
            "SELECT record_id FROM records GROUP BY vault_id, record_id "
            "HAVING COUNT(*) != MAX(version) OR MIN(version) != 1"
        ).fetchall()
        assert gaps == [], gaps
        rows = con.execute(
            "SELECT r.record_id, r.version, r.batch_id FROM records r WHERE r.current = 1"
        ).fetchall()
    finally:
        con.close()
    return {record_id: (version, batch_id) for record_id, version, batch_id in rows}


def _verify(
    db: Path, vault_id: str, key_file: Path, known: dict[str, Known], read: set[str] | None
) -> None:
    """Check the reopened store against what was acknowledged, then advance ``known`` to
    the committed state (including the write in flight, if it committed). Every record is
    listed; the known ones in ``read`` (all of them if ``None``) are also read back."""
    latest = _raw_checks(db)
    for record_id, k in known.items():
        assert record_id in latest, f"acknowledged record {record_id} is gone"
        assert latest[record_id][0] in (k.version, k.version + 1), record_id
    ahead = [rid for rid, k in known.items() if latest[rid][0] > k.version]
    new = [rid for rid in latest if rid not in known]
    # Only the one call in flight at the kill may have committed unacknowledged: an update
    # or delete of one record, or one put/put_many of new records (one batch).
    assert len(ahead) + (1 if new else 0) <= 1, (ahead, new)
    assert len({latest[rid][1] for rid in new}) <= 1, "unacknowledged writes in two batches"
    # The parent's own reads are logged (writes); their durability is not under test.
    with pds.open_store(db, create=False, synchronous="normal") as store:
        vault = store.open_vault(vault_id)
        vault.unlock(key_file=key_file)
        listed = set()
        for info in vault.iter_records():
            listed.add(info.record_id)
            if read is not None and info.record_id in known and info.record_id not in read:
                continue
            record = vault.get(info.record_id)
            assert record.version == info.version
            expected = known.get(info.record_id)
            if expected is not None and info.record_id not in ahead:
                assert (record.version, record.data) == (expected.version, expected.data)
        for record_id in [*ahead, *new]:
            history = vault.history(record_id)
            assert [r.version for r in history] == list(range(1, len(history) + 1))
            last = history[-1]
            known[record_id] = Known(last.version, None if last.deleted else last.data)
            if record_id in ahead and last.deleted:
                # The delete in flight committed: earlier content is erased, never torn.
                assert all(r.erased for r in history[:-1])
        for record_id, k in known.items():
            if k.data is None:
                assert record_id not in listed
                if read is None or record_id in read:
                    with pytest.raises(errors.RecordDeleted):
                        vault.get(record_id)
            else:
                assert record_id in listed, f"acknowledged record {record_id} is not listed"


def _apply(known: dict[str, Known], acks: list[dict[str, Any]]) -> None:
    for ack in acks:
        record_id, version = ack["id"], ack["version"]
        previous = known.get(record_id)
        assert previous is None or version > previous.version, ack
        known[record_id] = Known(version, ack.get("data") if ack["op"] == "put" else None)


@pytest.mark.slow
def test_sigkill_at_random_moments_loses_no_acknowledged_write(tmp_path: Path) -> None:
    rng = random.Random(SEED)
    db = tmp_path / "store.db"
    key_file = tmp_path / "owner.key"
    SymmetricKey.create_file(key_file)
    with pds.open_store(db) as store:
        vault_id = store.create_vault(key_file=key_file)
    known: dict[str, Known] = {}
    total_acks = 0
    kills_before_ready = 0
    for iteration in range(ITERATIONS):
        context = f"iteration {iteration}, PDS_CRASH_SEED={SEED}"
        child = Child(db, vault_id, key_file, rng.randrange(2**31))
        if rng.random() < 0.1:
            # Sometimes kill while the store is being opened and the vault unlocked.
            child.kill_after(rng.uniform(0.0, 0.3))
            kills_before_ready += not child.ready.is_set()
        else:
            assert child.ready.wait(timeout=60), context
            child.kill_after(rng.uniform(0.0, 0.05))
        acks = child.acks()
        total_acks += len(acks)
        read: set[str] | None = None
        if len(known) > FULL_CHECK_LIMIT and iteration < ITERATIONS - 1:
            read = {ack["id"] for ack in acks}
            read.update(rng.sample(sorted(known), SAMPLE))
        try:
            _apply(known, acks)
            _verify(db, vault_id, key_file, known, read)
        except AssertionError as exc:
            raise AssertionError(f"{context}: {exc}") from exc
    # The loop did real work: many writes were acknowledged and checked.
    assert total_acks >= ITERATIONS, (total_acks, SEED)
    assert len(known) > 10
