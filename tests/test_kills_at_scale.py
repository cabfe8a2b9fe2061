"""Issue 5, suite 2: random kills at scale, across every write path, with concurrent readers.

One store grows for the whole run; a writer is SIGKILLed at a random moment, again and
again (``PDS_KILLS``, default 300; ``PDS_KILLS=5000`` for the long run), and nothing it
acknowledged may be lost.

- **Writers.** ``tests/helpers/kills_writer.py`` is a fork server: it imports pds once and
  forks one writer per kill, so a kill costs a ``fork`` (milliseconds) instead of an
  interpreter start and import (~0.15 s measured, which alone would be 45 s of the default
  run). Each writer opens its own store connection, unlocks the vault, says ``ready`` and
  then runs a random mix of ``put``, ``put_many``, updates, ``delete``, ``grant``,
  ``revoke``, ``rotate``, ``set_policy``, served reads (log append, nonce, use budget),
  refused served reads (the refusal is logged) and ``checkpoint``. Before each call it
  writes what it is about to do; after the call returns it writes the acknowledgement.
- **Kills.** One kill in ten lands while the writer is still opening the store and
  unlocking; the others at a random delay after ``ready`` (mostly within 30 ms, some up to
  half a second), i.e. anywhere inside a transaction, a commit or between calls.
- **Readers.** Two reader processes (``tests/helpers/kills_reader.py``) run for the whole
  test: owner ``list``/``get``/``history``, grantee served reads with a live grant, and log
  checks (latest checkpoint matches the log; consistency with the first checkpoint they
  saw). They must never see a half-done state: any unexpected exception fails the test.
- **After each kill** the parent, with the writer gone, checks the store against a model
  of everything acknowledged (the call in flight may have committed, whole or not at all;
  the model learns which):

  - ``PRAGMA integrity_check`` is ok; every new batch holds exactly the records its signed
    manifest lists; one current version per record, versions 1..n without gaps;
  - records, grants (links), revocations, key epochs, the vault policy and use budgets
    equal the model *exactly* (nothing lost, nothing extra), and every new access-log
    entry matches a write that committed (a grant, revoke or rotate entry for each grant,
    revocation or rotation; a released read entry for each served read, whose nonce is in
    the replay cache and whose use was counted);
  - the records written or touched in this round (and a few older ones) decrypt to the
    acknowledged data; a record deleted in flight has its older content erased;
  - a token revoked in this round is refused (``Revoked``) when served;
  - each rotation reached every grant live at the time and no revoked one;
  - every served read acknowledged has its entry, with its link, at its index (and an
    inclusion proof); every checkpoint the writer acknowledged, and every checkpoint
    stored since the last kill, matches the log; ``verify_log`` against the last
    acknowledged checkpoint passes (a full recomputation of the tree: after every kill of
    the default run; in longer runs after 300 evenly spaced kills, and a consistency proof
    from that checkpoint to the current head after the others);
  - the vault opens and unlocks.

``PDS_KILLS_SEED`` replays the parent's choices (kill moments, writer seeds); the timing of
the processes still varies from run to run. The seed is in every failure message.
"""

from __future__ import annotations

import json
import os
import queue
import random
import secrets
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import msgpack
import pytest

import pds
from pds import errors, merkle
from pds.accesslog import Checkpoint, LogEntry
from pds.keys import PrincipalKey, SymmetricKey, public_key_from_did

if TYPE_CHECKING:
    from tests.crash_helpers import half_written_batches
    from tests.helpers.kills_writer import COLLECTIONS, PURPOSE, data_digest, scope_collections
else:
    from crash_helpers import half_written_batches
    from helpers.kills_writer import COLLECTIONS, PURPOSE, data_digest, scope_collections

HELPERS = Path(__file__).parent / "helpers"
KILLS = int(os.environ.get("PDS_KILLS", "300"))
SEED = int(os.environ.get("PDS_KILLS_SEED", str(secrets.randbits(32))))
WRITER_GRANTEES = 3
READER_SCOPES = (["*"], ["health/*"])
WRITES = ("put", "put_many", "update", "delete")


@dataclass
class RecordModel:
    version: int
    data: dict[str, Any] | None
    """``None``: ``version`` is a tombstone."""
    collection: str


@dataclass
class LinkModel:
    scope: list[str]
    grantee: int
    """Index of the writer grantee key; -1 for a reader's grant."""
    uses: int | None
    token: str | None
    """``None`` for a grant that committed in flight (its token was never seen)."""
    used: int = 0
    revoked: bool = False

    def covers(self, collection: str) -> bool:
        return collection in scope_collections(self.scope)


@dataclass
class Round:
    """What one kill's writer did, as the parent resolved it."""

    committed: Counter[str] = field(default_factory=Counter)
    touched: set[str] = field(default_factory=set)
    deleted: set[str] = field(default_factory=set)
    revoked: list[str] = field(default_factory=list)
    new_links: set[str] = field(default_factory=set)
    serves: list[dict[str, Any]] = field(default_factory=list)
    nonces: list[str] = field(default_factory=list)
    checkpoints: list[str] = field(default_factory=list)
    rotations: list[tuple[str, int, frozenset[str], frozenset[str]]] = field(default_factory=list)
    refused: int = 0
    inflight: str | None = None
    inflight_committed: bool | None = None
    inflight_refusal: bool = False


@dataclass
class Model:
    """Everything the writers had acknowledged (and in-flight calls that committed)."""

    records: dict[str, RecordModel] = field(default_factory=dict)
    links: dict[str, LinkModel] = field(default_factory=dict)
    epochs: dict[str, int] = field(default_factory=dict)
    policy_ms: int = 0
    checkpoint: str = ""
    checkpoints: list[str] = field(default_factory=list)
    log_seen: int = 0
    bseq_seen: int = 0

    def live_links(self) -> frozenset[str]:
        return frozenset(k for k, v in self.links.items() if not v.revoked)

    def revoked_links(self) -> frozenset[str]:
        return frozenset(k for k, v in self.links.items() if v.revoked)

    def write_record(
        self, record_id: str, version: int, data: dict[str, Any] | None, collection: str
    ) -> None:
        previous = self.records.get(record_id)
        expected = 1 if previous is None else previous.version + 1
        assert version == expected, (record_id, version, expected)
        if previous is not None:
            assert previous.data is not None, f"{record_id} written after its delete"
            assert previous.collection == collection, f"{record_id} moved collections"
        self.records[record_id] = RecordModel(version, data, collection)

    def rotate(self, epochs: dict[str, int], round_: Round) -> None:
        for collection, epoch in epochs.items():
            assert epoch == self.epochs[collection] + 1, (collection, epoch, self.epochs)
            self.epochs[collection] = epoch
            round_.rotations.append((collection, epoch, self.live_links(), self.revoked_links()))

    def apply(self, do: dict[str, Any], done: dict[str, Any], round_: Round) -> None:
        """Apply one acknowledged call, checking what it returned against the model."""
        op = done["done"]
        assert op == do["do"], (do, done)
        round_.committed[op] += 1
        if op in ("put", "put_many", "update"):
            assert len(done["ids"]) == len(do["data"])
            for (record_id, version), data in zip(done["ids"], do["data"], strict=True):
                if op == "update":
                    assert record_id == do["id"]
                    collection = self.records[record_id].collection
                else:
                    collection = do["collection"]
                self.write_record(record_id, version, data, collection)
                round_.touched.add(record_id)
        elif op == "delete":
            ((record_id, version),) = done["ids"]
            assert record_id == do["id"]
            self.write_record(record_id, version, None, self.records[record_id].collection)
            round_.touched.add(record_id)
            round_.deleted.add(record_id)
        elif op == "grant":
            assert done["link"] not in self.links
            self.links[done["link"]] = LinkModel(
                done["scope"], done["grantee"], done["uses"], done["token"]
            )
            round_.new_links.add(done["link"])
        elif op == "revoke":
            link = self.links[done["link"]]
            assert not link.revoked and link.grantee >= 0
            link.revoked = True
            round_.revoked.append(done["link"])
        elif op == "rotate":
            self.rotate(done["epochs"], round_)
        elif op == "set_policy":
            self.policy_ms = done["ms"]
        elif op == "serve":
            link = self.links[done["link"]]
            assert not link.revoked, "a revoked token was served"
            link.used += 1
            assert link.uses is None or link.used <= link.uses, "a spent budget was served"
            assert done["pending"] == 0, "a live grant lacks a key epoch"
            for record_id, version, digest in done["records"]:
                record = self.records[record_id]
                assert record.data is not None, f"served a deleted record {record_id}"
                assert version == record.version, f"served {record_id} v{version}, not current"
                if do["action"] == "read":
                    assert digest == data_digest(record.data), f"served other data {record_id}"
                assert link.covers(record.collection), f"served {record_id} out of scope"
            round_.serves.append(done)
            round_.nonces.append(do["nonce"])
        elif op == "serve_refused":
            link = self.links[done["link"]]
            expected = "Revoked" if link.revoked else "BudgetExhausted"
            assert done["refusal"] == expected, (done, expected)
            round_.refused += 1
        elif op == "checkpoint":
            head = Checkpoint.parse(done["checkpoint"])
            assert head.size >= Checkpoint.parse(self.checkpoint).size, "a checkpoint went back"
            self.checkpoint = done["checkpoint"]
            self.checkpoints.append(done["checkpoint"])
            round_.checkpoints.append(done["checkpoint"])
        else:
            raise AssertionError(f"unknown op {op}")


@dataclass
class Snapshot:
    """The store as SQLite sees it right after a kill (one read transaction)."""

    current: dict[str, tuple[int, bool, bytes, str]]
    links: dict[str, bytes | None]
    revoked: set[str]
    epochs: dict[str, int]
    link_keys: set[tuple[str, str, int]]
    uses: dict[str, int]
    policy_ms: int | None
    nonces: set[str]
    log_size: int
    entries: list[LogEntry]
    stored_checkpoints: list[str]


def _snapshot(db: Path, vault_id: str, model: Model, nonces: list[str]) -> Snapshot:
    con = sqlite3.connect(db, isolation_level=None)
    try:
        con.execute("BEGIN")
        assert con.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        # Every batch written since the last kill holds exactly what its signed manifest
        # lists (a batch is never half written).
        assert half_written_batches(con, model.bseq_seen) == []
        (latest,) = con.execute("SELECT MAX(bseq) FROM batches").fetchone()
        model.bseq_seen = max(model.bseq_seen, latest or 0)
        orphans = con.execute(
            "SELECT COUNT(*) FROM records WHERE batch_id NOT IN (SELECT batch_id FROM batches)"
        ).fetchone()[0]
        assert orphans == 0, "records without their batch"
        bad = con.execute(
            "SELECT record_id FROM records GROUP BY vault_id, record_id "
            "HAVING SUM(current) != 1 OR MAX(version) != MAX(CASE WHEN current THEN version END) "
            "OR COUNT(*) != MAX(version) OR MIN(version) != 1"
        ).fetchall()
        assert bad == [], f"records with a wrong current version or a gap: {bad}"
        current = {
            rid: (version, bool(deleted), batch_id, collection)
            for rid, version, deleted, batch_id, collection in con.execute(
                "SELECT record_id, version, deleted, batch_id, collection FROM records "
                "WHERE vault_id = ? AND current = 1",
                (vault_id,),
            )
        }
        links = {
            link.hex(): parent
            for link, parent in con.execute(
                "SELECT link_id, parent_id FROM links WHERE vault_id = ?", (vault_id,)
            )
        }
        revoked = {
            row[0].hex()
            for row in con.execute(
                "SELECT link_id FROM revocations WHERE vault_id = ?", (vault_id,)
            )
        }
        epochs = dict(
            con.execute(
                "SELECT collection, MAX(epoch) FROM epochs WHERE vault_id = ? GROUP BY collection",
                (vault_id,),
            ).fetchall()
        )
        link_keys = {
            (link.hex(), collection, epoch)
            for link, collection, epoch in con.execute(
                "SELECT link_id, collection, epoch FROM link_keys"
            )
        }
        uses = {link.hex(): count for link, count in con.execute("SELECT * FROM link_uses")}
        (policy,) = con.execute(
            "SELECT policy FROM vaults WHERE vault_id = ?", (vault_id,)
        ).fetchone()
        policy_ms = None if policy is None else msgpack.unpackb(policy)["max_token_lifetime_ms"]
        found = set()
        for nonce in nonces:
            if con.execute(
                "SELECT 1 FROM nonces WHERE nonce = ?", (bytes.fromhex(nonce),)
            ).fetchone():
                found.add(nonce)
        log_size = con.execute(
            "SELECT COALESCE(MAX(idx) + 1, 0) FROM log_entries WHERE vault_id = ?", (vault_id,)
        ).fetchone()[0]
        entries = []
        for idx, raw in con.execute(
            "SELECT idx, entry FROM log_entries WHERE vault_id = ? AND idx >= ? ORDER BY idx",
            (vault_id, model.log_seen),
        ):
            entry = LogEntry.parse(raw)
            assert (entry.index, entry.vault_id) == (idx, vault_id), "a log entry out of place"
            entries.append(entry)
        assert len(entries) == log_size - model.log_seen, "a gap in the log"
        notes = [
            row[0]
            for row in con.execute(
                "SELECT note FROM log_checkpoints WHERE vault_id = ? AND size >= ?",
                (vault_id, model.log_seen),
            )
        ]
        con.execute("COMMIT")
    finally:
        con.close()
    return Snapshot(
        current,
        links,
        revoked,
        epochs,
        link_keys,
        uses,
        policy_ms,
        found,
        log_size,
        entries,
        notes,
    )


def _read_acks(path: Path) -> list[dict[str, Any]]:
    """Every complete line (a line torn by the kill has no newline and was never acked)."""
    if not path.exists():
        return []
    pieces = path.read_text().split("\n")
    return [json.loads(line) for line in pieces[:-1]]


class Server:
    """The fork server and its control lines (read by a thread, so it never blocks)."""

    def __init__(self, db: Path, vault_id: str, owner_key: Path, stderr: IO[str]) -> None:
        env = dict(os.environ, PYTHONPATH=str(Path(pds.__file__).resolve().parent.parent))
        self.proc = subprocess.Popen(
            [sys.executable, str(HELPERS / "kills_writer.py"), str(db), vault_id, str(owner_key)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
            env=env,
        )
        self._lines: queue.Queue[str] = queue.Queue()
        self._events: list[tuple[str, int, str]] = []
        threading.Thread(target=self._read, daemon=True).start()
        assert self._lines.get(timeout=60) == "server"

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._lines.put(line.rstrip("\n"))
        self._lines.put("eof")

    def _pump(self, timeout: float) -> None:
        line = self._lines.get(timeout=timeout)
        assert line != "eof", "the fork server died"
        kind, pid, *rest = line.split()
        self._events.append((kind, int(pid), " ".join(rest)))

    def event(
        self, kinds: tuple[str, ...], pid: int | None, timeout: float = 60
    ) -> tuple[str, int, str]:
        """The first event of one of ``kinds`` (for ``pid``, or any), waiting for it."""
        deadline = time.monotonic() + timeout
        while True:
            for item in self._events:
                if item[0] in kinds and (pid is None or item[1] == pid):
                    return item
            self._pump(max(0.0, deadline - time.monotonic()))

    def reaped(self, pid: int) -> bool:
        while not self._lines.empty():
            self._pump(0)
        return any(kind == "reaped" and p == pid for kind, p, _ in self._events)

    def seen(self, kind: str, pid: int) -> bool:
        return any(k == kind and p == pid for k, p, _ in self._events)

    def forget(self, pid: int) -> None:
        self._events = [item for item in self._events if item[1] != pid]

    def fork(self, command: dict[str, Any]) -> int:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(command) + "\n")
        self.proc.stdin.flush()
        pid = self.event(("forked",), None)[1]
        self._events = [item for item in self._events if item[:2] != ("forked", pid)]
        return pid

    def close(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


class Reader:
    """A reader process and the lines it printed (read by a thread)."""

    def __init__(self, args: list[str]) -> None:
        env = dict(os.environ, PYTHONPATH=str(Path(pds.__file__).resolve().parent.parent))
        self.proc = subprocess.Popen(
            [sys.executable, str(HELPERS / "kills_reader.py"), *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=env,
        )
        self.lines: list[str] = []
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line)

    def errors(self) -> list[str]:
        return [line for line in self.lines if not line.startswith(('{"ready', '{"summary'))]

    def stop(self) -> dict[str, int]:
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self._thread.join(timeout=10)
        for line in self.lines:
            if line.startswith('{"summary'):
                summary: dict[str, int] = json.loads(line)["summary"]
                return summary
        return {}


def _resolve(
    do: dict[str, Any], snap: Snapshot, model: Model, vault: pds.Vault, round_: Round
) -> None:
    """Decide from the store whether the call in flight at the kill committed, check that it
    committed whole or not at all, and advance the model if it did."""
    op = do["do"]
    round_.inflight = op
    committed: bool | None = None
    if op in ("put", "put_many"):
        new = sorted(rid for rid in snap.current if rid not in model.records)
        committed = bool(new)
        if new:
            assert len(new) == len(do["data"]), "a put_many committed in part"
            assert len({snap.current[rid][2] for rid in new}) == 1, "in-flight put in two batches"
            found = []
            for rid in new:
                version, deleted, _, collection = snap.current[rid]
                assert (version, deleted, collection) == (1, False, do["collection"])
                data = vault.get(rid).data
                assert data is not None
                found.append((data["n"], rid, data))
            found.sort(key=lambda item: int(item[0]))
            assert [d for _, _, d in found] == do["data"], "the in-flight put has other data"
            for _, rid, data in found:
                model.write_record(rid, 1, data, do["collection"])
                round_.touched.add(rid)
    elif op in ("update", "delete"):
        rid = do["id"]
        known = model.records[rid]
        version, deleted, _, _ = snap.current[rid]
        assert version in (known.version, known.version + 1), (rid, version, known.version)
        committed = version == known.version + 1
        if committed:
            assert deleted == (op == "delete")
            data = None if op == "delete" else do["data"][0]
            model.write_record(rid, version, data, known.collection)
            round_.touched.add(rid)
            if op == "delete":
                round_.deleted.add(rid)
    elif op == "grant":
        new_links = set(snap.links) - set(model.links)
        assert len(new_links) <= 1, "more than one grant committed unacknowledged"
        committed = bool(new_links)
        for link in new_links:
            model.links[link] = LinkModel(do["scope"], do["grantee"], do["uses"], None)
            round_.new_links.add(link)
    elif op == "revoke":
        committed = do["link"] in snap.revoked
        if committed:
            model.links[do["link"]].revoked = True
            round_.revoked.append(do["link"])
    elif op == "rotate":
        targets = [do["collection"]] if do["collection"] else sorted(model.epochs)
        moved = {c for c in targets if snap.epochs[c] == model.epochs[c] + 1}
        assert moved in (set(), set(targets)), f"a rotation committed in part: {moved}"
        committed = bool(moved)
        if committed:
            model.rotate({c: model.epochs[c] + 1 for c in targets}, round_)
    elif op == "set_policy":
        assert snap.policy_ms in (model.policy_ms, do["ms"])
        committed = snap.policy_ms == do["ms"]
        model.policy_ms = do["ms"] if committed else model.policy_ms
    elif op == "serve":
        committed = do["nonce"] in snap.nonces
        if committed:
            model.links[do["link"]].used += 1
            round_.serves.append({"link": do["link"], "access": None, "action": do["action"]})
            round_.nonces.append(do["nonce"])
    elif op == "serve_refused":
        round_.inflight_refusal = True
    if committed:
        round_.committed[op] += 1
    round_.inflight_committed = committed


def _check_snapshot(snap: Snapshot, model: Model, round_: Round) -> None:
    """The store holds exactly what the model says: nothing lost, nothing extra."""
    assert set(snap.current) == set(model.records), (
        f"lost: {sorted(set(model.records) - set(snap.current))[:5]}, "
        f"extra: {sorted(set(snap.current) - set(model.records))[:5]}"
    )
    for rid, record in model.records.items():
        version, deleted, _, _ = snap.current[rid]
        assert (version, deleted) == (record.version, record.data is None), rid
    assert set(snap.links) == set(model.links), "grants lost or extra"
    assert all(parent is None for parent in snap.links.values())
    assert snap.revoked == set(model.revoked_links()), "revocations lost or extra"
    assert snap.epochs == model.epochs, (snap.epochs, model.epochs)
    assert snap.policy_ms == model.policy_ms
    for link_id, link in model.links.items():
        if link.uses is not None:
            assert snap.uses.get(link_id, 0) == link.used, f"use budget of {link_id[:12]}"
        else:
            assert link_id not in snap.uses
    assert set(round_.nonces) <= snap.nonces, "an acknowledged nonce is not in the replay cache"
    # Every rotation reached each grant live at that moment, and no revoked one.
    for collection, epoch, live, revoked in round_.rotations:
        for link_id in live:
            if model.links[link_id].covers(collection):
                assert (link_id, collection, epoch) in snap.link_keys, (
                    f"rotation {collection}#{epoch} missed a live grant"
                )
        for link_id in revoked:
            assert (link_id, collection, epoch) not in snap.link_keys, (
                f"rotation {collection}#{epoch} sealed to a revoked grant"
            )
    # The new log entries are exactly the writes that committed, all or nothing.
    writer_links = {k for k, v in model.links.items() if v.grantee >= 0}
    kinds: Counter[str] = Counter()
    released: dict[int, LogEntry] = {}
    refused = 0
    for entry in snap.entries:
        entry_link = None if entry.link_id is None else entry.link_id.hex()
        assert entry.kind in ("grant", "revoke", "rotate", "read", "list", "owner-read"), entry
        if entry.kind in ("grant", "revoke", "rotate"):
            kinds[entry.kind] += 1
        if entry.kind == "grant":
            assert entry_link in round_.new_links, "a grant entry without its grant"
        if entry.kind == "revoke":
            assert entry_link in round_.revoked, "a revoke entry without its revocation"
        if entry.kind in ("read", "list") and entry_link in writer_links:
            if entry.result == "released":
                released[entry.index] = entry
            else:
                refused += 1
    assert kinds["grant"] == round_.committed["grant"] == len(round_.new_links)
    assert kinds["revoke"] == round_.committed["revoke"] == len(round_.revoked)
    assert kinds["rotate"] == round_.committed["rotate"]
    assert len(released) == len(round_.serves), "served reads and their log entries differ"
    for serve in round_.serves:
        if serve["access"] is not None:
            entry = released[serve["access"]]
            assert entry.link_id is not None and entry.link_id.hex() == serve["link"]
            assert entry.kind == serve["action"]
    assert refused - round_.refused in ((0, 1) if round_.inflight_refusal else (0,)), refused


def _library_checks(
    store: pds.Store,
    vault: pds.Vault,
    model: Model,
    round_: Round,
    grantees: list[pds.Grantee],
    rng: random.Random,
    *,
    full_log: bool,
) -> None:
    # Records written in this round, and a sample of older ones, decrypt to what was acked.
    sample = set(round_.touched)
    sample.update(rng.sample(sorted(model.records), min(3, len(model.records))))
    for rid in sorted(sample):
        expected = model.records[rid]
        if expected.data is None:
            with pytest.raises(errors.RecordDeleted):
                vault.get(rid)
            if rid in round_.deleted:
                history = vault.history(rid)
                assert [r.version for r in history] == list(range(1, expected.version + 1))
                assert history[-1].deleted and all(r.erased for r in history[:-1])
        else:
            record = vault.get(rid)
            assert (record.version, record.data) == (expected.version, expected.data), rid
    # A token revoked in this round (or one revoked earlier) is refused.
    probes = list(round_.revoked)
    older = sorted(model.revoked_links() - set(probes))
    if older:
        probes.append(rng.choice(older))
    for link_id in probes:
        link = model.links[link_id]
        if link.token is not None:
            with pytest.raises(errors.Revoked):
                grantees[link.grantee].read(store, link.token, action="list")
    # Served reads: the entry at the acknowledged index is theirs, included in the tree.
    size = vault.log_size()
    root = vault.log_root(size)
    for serve in round_.serves:
        if serve["access"] is None:
            continue
        entry, proof = vault.prove_inclusion(serve["access"], size)
        merkle.verify_inclusion(entry.leaf_hash, serve["access"], size, proof, root)
        assert entry.link_id is not None and entry.link_id.hex() == serve["link"]
        assert (entry.kind, entry.result) == (serve["action"], "released")
    # Every checkpoint acknowledged in this round (and a few older ones) matches the log,
    # and the log verifies in full against the last one.
    heads = list(round_.checkpoints)
    heads += rng.sample(model.checkpoints, min(3, len(model.checkpoints)))
    for text in heads:
        head = Checkpoint.parse(text)
        assert vault.log_root(head.size) == head.root, "a log fork below a checkpoint"
    pinned = Checkpoint.parse(model.checkpoint)
    if full_log:
        vault.verify_log(pinned)
    else:
        # O(log n): the stored tree at the pinned size has the pinned root (checked above
        # for this round's checkpoints) and the current tree extends it.
        assert vault.log_root(pinned.size) == pinned.root, "the log forks below a checkpoint"
        merkle.verify_consistency(
            pinned.size, size, pinned.root, root, vault.prove_consistency(pinned.size, size)
        )
    latest = vault.latest_checkpoint()
    assert latest is not None and latest.size >= Checkpoint.parse(model.checkpoint).size


def _state(model: Model, grantee_files: list[Path]) -> dict[str, Any]:
    def doc(link_id: str) -> dict[str, Any]:
        link = model.links[link_id]
        return {
            "link": link_id,
            "token": link.token,
            "grantee": link.grantee,
            "uses": link.uses,
            "used": link.used,
            "scope": link.scope,
        }

    usable = [k for k, v in model.links.items() if v.grantee >= 0 and v.token is not None]
    live = [k for k in usable if not model.links[k].revoked]
    revoked = [k for k in usable if model.links[k].revoked]
    return {
        "grantees": [str(p) for p in grantee_files],
        "tokens": [doc(k) for k in live[-10:]],
        "revoked": [doc(k) for k in revoked[-5:]],
        "epochs": sum(model.epochs.values()),
    }


def _kill_delay(rng: random.Random) -> float:
    roll = rng.random()
    if roll < 0.7:
        return rng.uniform(0.0, 0.03)
    if roll < 0.95:
        return rng.uniform(0.03, 0.15)
    return rng.uniform(0.15, 0.5)


@pytest.mark.slow
@pytest.mark.timeout(max(300, KILLS * 2))
def test_random_kills_at_scale_lose_no_acknowledged_write(tmp_path: Path) -> None:
    rng = random.Random(SEED)
    check_rng = random.Random(SEED + 1)
    started = time.monotonic()
    db = tmp_path / "store.db"
    owner_key = tmp_path / "owner.key"
    SymmetricKey.create_file(owner_key)
    grantee_files = [tmp_path / f"grantee{i}.key" for i in range(WRITER_GRANTEES)]
    grantees = [pds.Grantee(PrincipalKey.create_file(path)) for path in grantee_files]
    model = Model()
    reader_args = []
    with pds.open_store(db) as store:
        vault_id = store.create_vault(key_file=owner_key)
        vault = store.open_vault(vault_id)
        vault.unlock(key_file=owner_key)
        for collection in COLLECTIONS:
            vault.create_collection(collection)
            model.epochs[collection] = 1
        vault.set_policy(max_token_lifetime=timedelta(days=30))
        model.policy_ms = 30 * 86_400_000
        for index, scope in enumerate(READER_SCOPES):
            key_file = tmp_path / f"reader{index}.key"
            token = vault.grant(
                PrincipalKey.create_file(key_file).did,
                collections=scope,
                purpose=PURPOSE,
                expires=timedelta(days=1),
            )
            (tmp_path / f"reader{index}.token").write_text(token.to_text())
            model.links[token.link_id.hex()] = LinkModel(scope, -1, None, token.to_text())
            reader_args.append(
                [
                    str(db),
                    vault_id,
                    str(owner_key),
                    str(key_file),
                    str(tmp_path / f"reader{index}.token"),
                    str(tmp_path / "stop"),
                    str(rng.randrange(2**31)),
                ]
            )
        model.checkpoint = vault.checkpoint().to_text()
        model.checkpoints.append(model.checkpoint)
        model.log_seen = vault.log_size()
    first_checkpoint = model.checkpoint

    stats: Counter[str] = Counter()
    server_log = (tmp_path / "server.stderr").open("w")
    server = Server(db, vault_id, owner_key, server_log)
    readers = [Reader(args) for args in reader_args]
    pid: int | None = None
    try:
        for kill in range(KILLS):
            context = f"kill {kill}, PDS_KILLS_SEED={SEED}"
            acks_path = tmp_path / f"acks{kill}.jsonl"
            state_path = tmp_path / "state.json"
            state_path.write_text(json.dumps(_state(model, grantee_files)))
            pid = server.fork(
                {"seed": rng.randrange(2**31), "state": str(state_path), "acks": str(acks_path)}
            )
            if rng.random() < 0.1:
                # While the writer opens the store and unlocks the vault.
                time.sleep(rng.uniform(0.0, 0.02))
            elif server.event(("ready", "reaped"), pid)[0] == "ready":
                time.sleep(_kill_delay(rng))
            if not server.reaped(pid):
                os.kill(pid, signal.SIGKILL)
            _, _, status_text = server.event(("reaped",), pid)
            stats["kills before ready"] += not server.seen("ready", pid)
            server.forget(pid)
            pid = None
            status = int(status_text)
            acks = _read_acks(acks_path)
            failures = [ack for ack in acks if "error" in ack]
            assert not failures, f"{context}: the writer failed:\n{failures[0]['traceback']}"
            assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL, (
                f"{context}: the writer ended with status {status}"
            )
            acks_path.unlink(missing_ok=True)
            checking = time.monotonic()
            try:
                _verify_round(
                    db,
                    vault_id,
                    owner_key,
                    model,
                    acks,
                    grantees,
                    check_rng,
                    stats,
                    # A full recomputation of the log costs O(size) each: about 300 of
                    # them per run, however many kills (every kill in the default run).
                    full_log=kill % max(1, KILLS // 300) == 0 or kill == KILLS - 1,
                )
            except Exception as exc:
                raise AssertionError(f"{context}: {type(exc).__name__}: {exc}") from exc
            stats["checking ms"] += int(1000 * (time.monotonic() - checking))
            for reader in readers:
                assert not reader.errors(), f"{context}: a reader saw: {reader.errors()[0]}"
    finally:
        if pid is not None and not server.reaped(pid):
            os.kill(pid, signal.SIGKILL)
        (tmp_path / "stop").touch()
        summaries = [reader.stop() for reader in readers]
        server.close()
        server_log.close()
    for reader in readers:
        assert not reader.errors(), f"PDS_KILLS_SEED={SEED}: a reader saw: {reader.errors()[0]}"
    # The whole log, from the first checkpoint on, and every acknowledged checkpoint.
    with pds.open_store(db, create=False, synchronous="normal") as store:
        vault = store.open_vault(vault_id)
        vault.unlock(key_file=owner_key)
        vault.verify_log(first_checkpoint)
        for text in model.checkpoints:
            head = Checkpoint.parse(text)
            assert vault.log_root(head.size) == head.root
        log_size = vault.log_size()
    elapsed = time.monotonic() - started
    print(
        f"\nkills={KILLS} seed={SEED} elapsed={elapsed:.1f}s records={len(model.records)} "
        f"links={len(model.links)} epochs={sum(model.epochs.values())} log={log_size} "
        f"readers={summaries} {dict(sorted(stats.items()))}"
    )
    assert stats["acked"] >= KILLS, stats
    if KILLS >= 100:
        # Every write path was acknowledged; kills landed inside many kinds of call, and
        # some after a commit but before its acknowledgement.
        for op in (*WRITES, "grant", "revoke", "rotate", "set_policy", "serve", "checkpoint"):
            assert stats[f"acked {op}"] > 0, (op, stats)
        in_flight = [k for k in stats if k.startswith("in flight ") and "committed" not in k]
        assert len(in_flight) >= 6, stats
        assert any(k.endswith(" committed") for k in stats), stats
        # The readers really read during the run, through every path.
        for summary in summaries:
            assert summary.get("owner") and summary.get("grantee") and summary.get("log")


def _verify_round(
    db: Path,
    vault_id: str,
    owner_key: Path,
    model: Model,
    acks: list[dict[str, Any]],
    grantees: list[pds.Grantee],
    rng: random.Random,
    stats: Counter[str],
    *,
    full_log: bool,
) -> None:
    round_ = Round()
    pending: dict[str, Any] | None = None
    for ack in acks:
        if "do" in ack:
            assert pending is None, "two calls in flight"
            pending = ack
        else:
            assert pending is not None, "an acknowledgement without its call"
            model.apply(pending, ack, round_)
            stats["acked"] += 1
            stats[f"acked {ack['done']}"] += 1
            pending = None
    nonces = list(round_.nonces)
    if pending is not None and pending["do"] == "serve":
        nonces.append(pending["nonce"])
    # The parent's own reads are logged (writes); their durability is not under test.
    with pds.open_store(db, create=False, synchronous="normal") as store:
        vault = store.open_vault(vault_id)
        vault.unlock(key_file=owner_key)
        snap = _snapshot(db, vault_id, model, nonces)
        if pending is not None:
            _resolve(pending, snap, model, vault, round_)
            stats[f"in flight {pending['do']}"] += 1
            if round_.inflight_committed:
                stats[f"in flight {pending['do']} committed"] += 1
        _check_snapshot(snap, model, round_)
        _library_checks(store, vault, model, round_, grantees, rng, full_log=full_log)
        identity = public_key_from_did(vault.did)
        for text in snap.stored_checkpoints:
            head = Checkpoint.parse(text)
            head.verify(identity)
            assert vault.log_root(head.size) == head.root, "a stored checkpoint forks the log"
        model.log_seen = vault.log_size()


def test_a_collection_rotated_many_times_can_still_be_granted(
    tmp_path: Path, owner_key_file: Path
) -> None:
    with pds.open_store(tmp_path / "store.db", synchronous="normal") as store:
        vault = store.open_vault(store.create_vault(key_file=owner_key_file))
        vault.unlock(key_file=owner_key_file)
        vault.put("notes", {"n": 1})
        for _ in range(256):
            vault.rotate("notes")
        holder = PrincipalKey.generate()
        token = vault.grant(
            holder.did, collections=["notes"], purpose=PURPOSE, expires=timedelta(hours=1)
        )
        read = pds.Grantee(holder).read(store, token)
        assert [record.data for record in read.records] == [{"n": 1}]
