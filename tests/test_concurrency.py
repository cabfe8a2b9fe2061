"""Issue 5, suite 6: N processes x M mixed operations on one store.

``PDS_CONCURRENCY_PROCS`` processes (default 4) each run ``PDS_CONCURRENCY_OPS`` mixed
operations (default 500; ``tests/helpers/concurrency_worker.py``), all started at the same
moment on one store: puts into their own vault and into one vault they all share,
``put_many``, updates (of the same shared records by several processes at once), deletes,
grants, revocations, served reads (each invocation with its own nonce), key rotations and
checkpoints. Every process also serves the same pre-signed invocations, all at once.

Afterwards, with every process gone, the parent checks:

- **no lost write, nothing extra**: the record versions in the store are exactly the ones
  acknowledged, each with the acknowledged data (so no concurrent update was lost, and no
  call that failed left anything behind);
- **no duplicate nonce**: every served invocation's nonce is in the replay cache, each
  shared invocation was accepted by exactly one process and refused as ``Replayed`` by the
  others, every served read has its own log entry (no two at one index);
- **no log fork**: every checkpoint a process acknowledged, and every one stored, matches
  the final log at its size and is consistent with the final head; no two of one size have
  different roots; ``verify_log`` passes against the newest;
- grants, revocations (each refused at once by the revoking process, and by the parent
  afterwards), use budgets and key epochs match what was acknowledged;
- **busy**: every ``StoreBusy`` a caller saw is counted and reported. The library has no
  retry loop of its own: every write path starts with ``BEGIN IMMEDIATE`` and SQLite's busy
  handler makes it wait for the lock for up to ``busy_timeout`` (10 s by default); reads
  never wait (WAL). That wait is the library's retry, and it is safe for every operation
  (nothing was done before the lock is held). So under this load, with the default
  timeout, no operation may surface ``StoreBusy``. With ``busy_timeout=0``
  (``test_busy_errors_are_typed_and_change_nothing``) they do surface, always as
  ``StoreBusy``, and a failed call changes nothing (a retried invocation is not replayed).
"""

from __future__ import annotations

import json
import os
import secrets
import sqlite3
import subprocess
import sys
import threading
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

import pds
from pds import errors, merkle
from pds.accesslog import Checkpoint, LogEntry
from pds.keys import PrincipalKey, SymmetricKey, public_key_from_did

WORKER = Path(__file__).parent / "helpers" / "concurrency_worker.py"
PROCS = int(os.environ.get("PDS_CONCURRENCY_PROCS", "4"))
OPS = int(os.environ.get("PDS_CONCURRENCY_OPS", "500"))
REPLAYS = 16


@dataclass
class Run:
    """What the processes acknowledged, and what they reported."""

    acks: list[dict[str, Any]] = field(default_factory=list)
    busy: Counter[str] = field(default_factory=Counter)
    errors: list[dict[str, Any]] = field(default_factory=list)
    latency: dict[str, list[float]] = field(default_factory=dict)

    def of(self, op: str) -> list[dict[str, Any]]:
        return [ack for ack in self.acks if ack.get("op") == op]


@dataclass
class Setup:
    db: Path
    owner_key: Path
    own: list[str]
    shared: str
    grantee_files: list[Path]
    replay_link: str
    records: list[str]
    """The shared vault's records written before the run."""
    replay_nonces: list[str]
    config: Path


def _setup(tmp_path: Path, procs: int, ops: int, busy_timeout: float) -> Setup:
    db = tmp_path / "store.db"
    owner_key = tmp_path / "owner.key"
    SymmetricKey.create_file(owner_key)
    grantee_files = [tmp_path / f"grantee{i}.key" for i in range(procs)]
    for path in grantee_files:
        PrincipalKey.create_file(path)
    replayer = PrincipalKey.create_file(tmp_path / "replayer.key")
    with pds.open_store(db) as store:
        own = [store.create_vault(key_file=owner_key) for _ in range(procs)]
        shared = store.create_vault(key_file=owner_key)
        vault = store.open_vault(shared)
        vault.unlock(key_file=owner_key)
        infos = vault.put_many("shared", [{"w": -1, "n": n} for n in range(5)])
        infos.append(vault.put("common", {"w": -1, "n": 5}))
        token = vault.grant(
            replayer.did, collections=["*"], purpose="audit", expires=timedelta(hours=1)
        )
    grantee = pds.Grantee(replayer)
    invocations = [grantee.invoke(token, action="list") for _ in range(REPLAYS)]
    replays = [invocation.to_bytes().hex() for invocation in invocations]
    config = tmp_path / "config.json"
    config.write_text(
        json.dumps(
            {
                "store": str(db),
                "owner_key": str(owner_key),
                "own": own,
                "shared": shared,
                "grantees": [str(p) for p in grantee_files],
                "replays": replays,
                "ops": ops,
                "busy_timeout": busy_timeout,
                "seed": secrets.randbits(20),
            }
        )
    )
    records = [info.record_id for info in infos]
    return Setup(
        db,
        owner_key,
        own,
        shared,
        grantee_files,
        token.link_id.hex(),
        records,
        [invocation.nonce.hex() for invocation in invocations],
        config,
    )


def _run(setup: Setup, procs: int) -> Run:
    env = dict(os.environ, PYTHONPATH=str(Path(pds.__file__).resolve().parent.parent))
    children = [
        subprocess.Popen(
            [sys.executable, str(WORKER), str(setup.config), str(index)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        for index in range(procs)
    ]
    run = Run()
    try:
        for child in children:
            assert child.stdout is not None
            line = child.stdout.readline()
            # Opening the store may meet another worker's open (with busy_timeout=0 it is
            # reported, and retried, before the worker is ready).
            while line.startswith('{"busy"'):
                run.busy[json.loads(line)["busy"]] += 1
                line = child.stdout.readline()
            assert line.startswith('{"ready"'), line + (child.stderr.read() if child.stderr else "")
        for child in children:  # every process starts at once
            assert child.stdin is not None
            child.stdin.write("go\n")
            child.stdin.flush()
        for index, child in enumerate(children):
            out, err = child.communicate(timeout=600)
            assert child.returncode == 0, f"worker {index} failed:\n{err}"
            for line in out.splitlines():
                doc = json.loads(line)
                doc["worker"] = index
                if "busy" in doc:
                    run.busy[doc["busy"]] += 1
                elif "error" in doc:
                    run.errors.append(doc)
                elif "latency" in doc:
                    for op, (count, total, worst) in doc["latency"].items():
                        mine = run.latency.setdefault(op, [0, 0.0, 0.0])
                        mine[0] += count
                        mine[1] += total
                        mine[2] = max(mine[2], worst)
                else:
                    run.acks.append(doc)
    finally:
        for child in children:
            if child.poll() is None:
                child.kill()
                child.wait()
    return run


def _report(run: Run) -> str:
    latency = ", ".join(
        f"{op} n={int(c)} mean={1000 * t / max(c, 1):.1f}ms max={1000 * m:.0f}ms"
        for op, (c, t, m) in sorted(run.latency.items())
    )
    return f"busy={dict(run.busy)}; latency: {latency}"


def _check(setup: Setup, run: Run) -> None:
    untyped = [e for e in run.errors if e["untyped"]]
    assert not untyped, f"untyped errors: {untyped[0]['traceback']}"
    assert not run.errors, f"unexpected errors: {run.errors[0]['traceback']}"
    vault_ids = [*setup.own, setup.shared]

    # -- Records: exactly the acknowledged versions, each with its data.
    acked: dict[tuple[str, str, int], dict[str, Any] | None] = {}
    for ack in run.of("write") + run.of("delete"):
        key = (ack["vault"], ack["id"], ack["version"])
        assert key not in acked, f"two writes acknowledged as one version: {key}"
        acked[key] = ack["data"]
    con = sqlite3.connect(setup.db)
    try:
        stored = {
            (vault_id, record_id, version)
            for vault_id, record_id, version in con.execute(
                "SELECT vault_id, record_id, version FROM records"
            )
        }
        nonces = {row[0].hex() for row in con.execute("SELECT nonce FROM nonces")}
        links = {row[0].hex() for row in con.execute("SELECT link_id FROM links")}
        revoked = {row[0].hex() for row in con.execute("SELECT link_id FROM revocations")}
        uses = {row[0].hex(): row[1] for row in con.execute("SELECT link_id, count FROM link_uses")}
        epochs = {
            (vault_id, collection): epoch
            for vault_id, collection, epoch in con.execute(
                "SELECT vault_id, collection, MAX(epoch) FROM epochs GROUP BY 1, 2"
            )
        }
        stored_heads = con.execute("SELECT vault_id, size, note FROM log_checkpoints").fetchall()
        entries = [
            LogEntry.parse(row[0])
            for row in con.execute("SELECT entry FROM log_entries ORDER BY vault_id, idx")
        ]
    finally:
        con.close()
    extra = stored - set(acked) - {(setup.shared, rid, 1) for rid in setup.records}
    assert not extra, f"versions that no process acknowledged: {sorted(extra)[:5]}"
    lost = set(acked) - stored
    assert not lost, f"acknowledged writes lost: {sorted(lost)[:5]}"

    with pds.open_store(setup.db, create=False, synchronous="normal") as store:
        vaults = {}
        for vault_id in vault_ids:
            vaults[vault_id] = store.open_vault(vault_id)
            vaults[vault_id].unlock(key_file=setup.owner_key)
        by_record: dict[tuple[str, str], list[int]] = defaultdict(list)
        for vault_id, record_id, version in acked:
            by_record[(vault_id, record_id)].append(version)
        for (vault_id, record_id), versions in by_record.items():
            history = vaults[vault_id].history(record_id)
            for version in versions:
                record = history[version - 1]
                assert record.version == version
                data = acked[(vault_id, record_id, version)]
                if data is None:
                    assert record.deleted
                elif not record.erased:
                    assert record.data == data, (vault_id, record_id, version)
                else:  # Only a later delete erases content.
                    assert history[-1].deleted
        # Some shared records were updated by several processes: every version was kept.
        writers: dict[tuple[str, str], set[int]] = defaultdict(set)
        for (vault_id, record_id, _), data in acked.items():
            if vault_id == setup.shared and data is not None:
                writers[(vault_id, record_id)].add(data["w"])
        if len(setup.own) > 1:
            assert any(len(w) > 1 for w in writers.values()), "no record written by two"

        # -- Served reads and replays: one nonce, one log entry, each.
        serves = run.of("serve")
        assert all(ack["pending"] == 0 for ack in serves), "a live grant lacks a key epoch"
        # Exactly the accepted invocations' nonces are remembered: a call that failed
        # (refused, or StoreBusy) consumed none.
        accepted = {ack["nonce"] for ack in serves} | set(setup.replay_nonces)
        assert accepted == nonces, "nonces lost from, or extra in, the replay cache"
        assert len({ack["nonce"] for ack in serves}) == len(serves)
        accesses: dict[tuple[str, int], str] = {}
        for ack in serves:
            at = (ack["vault"], ack["access"])
            assert at not in accesses, f"two served reads logged at one index: {at}"
            accesses[at] = ack["link"]
            for record_id, version in ack["records"]:
                assert (ack["vault"], record_id, version) in stored
        by_k: dict[int, list[str]] = defaultdict(list)
        for ack in run.of("replay"):
            by_k[ack["k"]].append(ack["result"])
            if ack["result"] == "ok":
                at = (setup.shared, ack["access"])
                assert at not in accesses, f"two served reads logged at one index: {at}"
                accesses[at] = setup.replay_link
        assert sorted(by_k) == list(range(REPLAYS))
        for k, results in by_k.items():
            assert sorted(results) == ["Replayed"] * (len(results) - 1) + ["ok"], (k, results)
        for (vault_id, index), link in accesses.items():
            entry = vaults[vault_id].prove_inclusion(index)[0]
            assert entry.link_id is not None and entry.link_id.hex() == link
            assert entry.result == "released" and entry.kind in ("read", "list")
        # Nothing extra either: the log holds one entry per acknowledged grant, revocation,
        # rotation and released read (the setup's grant aside), and no other release.
        logged = Counter(
            (e.vault_id, e.kind)
            for e in entries
            if e.kind in ("grant", "revoke", "rotate")
            or (e.kind in ("read", "list") and e.result == "released")
        )
        expected: Counter[tuple[str, str]] = Counter({(setup.shared, "grant"): 1})
        expected.update((setup.shared, kind) for kind in ("grant", "revoke") for _ in run.of(kind))
        expected.update((ack["vault"], "rotate") for ack in run.of("rotate"))
        for vault_id, _ in accesses:
            expected[(vault_id, "read")] += 1  # reads and lists, counted together
        for (vault_id, kind), count in list(logged.items()):
            if kind == "list":
                logged[(vault_id, "read")] += count
                del logged[(vault_id, kind)]
        assert logged == expected, (logged, expected)

        # -- Grants, revocations, budgets, epochs.
        grants = {ack["link"]: ack["token"] for ack in run.of("grant")}
        assert set(grants) | {setup.replay_link} == links, "grants lost or extra"
        for ack in run.of("revoke"):
            assert ack["denied"] == "Revoked", "a token was served after its revocation"
        assert {ack["link"] for ack in run.of("revoke")} == revoked
        served_by_link = Counter(ack["link"] for ack in serves)
        for ack in run.of("grant"):
            token = pds.Token.from_text(ack["token"])
            if token.leaf.caveats.uses is not None:
                assert uses.get(ack["link"], 0) == served_by_link[ack["link"]], "a lost use"
        granted_by = {ack["link"]: ack["worker"] for ack in run.of("grant")}
        for ack in run.of("revoke")[:5]:
            key_file = setup.grantee_files[granted_by[ack["link"]]]
            grantee = pds.Grantee(PrincipalKey.from_file(key_file))
            with pytest.raises(errors.Revoked):
                grantee.read(store, grants[ack["link"]])
        # Concurrent rotations of one collection each made their own epoch, all kept. (A
        # rotation of a collection nothing was written to yet makes its first epoch.)
        rotated: dict[tuple[str, str], list[int]] = defaultdict(list)
        for ack in run.of("rotate"):
            for collection, epoch in ack["epochs"].items():
                rotated[(ack["vault"], collection)].append(epoch)
        for collection_key, epoch in epochs.items():
            made = rotated[collection_key]
            assert len(set(made)) == len(made), f"two rotations made one epoch: {made}"
            assert epoch - len(made) in (0, 1) and epoch >= max(made, default=1), (
                collection_key,
                epoch,
                made,
            )

        # -- One linear log per vault.
        heads: dict[str, list[Checkpoint]] = defaultdict(list)
        for ack in run.of("checkpoint"):
            heads[ack["vault"]].append(Checkpoint.parse(ack["text"]))
        for vault_id, _, note in stored_heads:
            heads[vault_id].append(Checkpoint.parse(note))
        assert heads[setup.shared], "no checkpoint of the shared vault"
        for vault_id, vault_heads in heads.items():
            vault = vaults[vault_id]
            identity = public_key_from_did(vault.did)
            size = vault.log_size()
            root = vault.log_root(size)
            roots: dict[int, bytes] = {}
            for head in vault_heads:
                head.verify(identity)
                assert roots.setdefault(head.size, head.root) == head.root, "a forked log"
                assert vault.log_root(head.size) == head.root, "a checkpoint off the log"
                if head.size:
                    merkle.verify_consistency(
                        head.size, size, head.root, root, vault.prove_consistency(head.size)
                    )
            vault.verify_log(max(vault_heads, key=lambda h: h.size))


@pytest.mark.slow
def test_processes_running_mixed_operations_lose_nothing_and_fork_nothing(
    tmp_path: Path,
) -> None:
    setup = _setup(tmp_path, PROCS, OPS, busy_timeout=10.0)
    run = _run(setup, PROCS)
    report = _report(run)
    print(f"\n{PROCS} processes x {OPS} operations: {len(run.acks)} acknowledged; {report}")
    _check(setup, run)
    # The busy handler (the library's retry) absorbs all contention at this load.
    assert not run.busy, f"StoreBusy surfaced although the library waits for the lock: {report}"


@pytest.mark.slow
def test_busy_errors_are_typed_and_change_nothing(tmp_path: Path) -> None:
    """With no busy wait at all, contention surfaces as ``StoreBusy`` (never a raw
    ``sqlite3`` error), and a call that raised it changed nothing."""
    ops = max(OPS // 5, 50)
    setup = _setup(tmp_path, PROCS, ops, busy_timeout=0.0)
    run = _run(setup, PROCS)
    report = _report(run)
    print(f"\n{PROCS} processes x {ops} operations, busy_timeout=0: {report}")
    _check(setup, run)
    if PROCS > 1:
        assert sum(run.busy.values()) > 0, "no contention at all: the test proved nothing"


def test_a_delete_does_not_stall_other_writers_behind_a_reader(
    tmp_path: Path, owner_key_file: Path
) -> None:
    db = tmp_path / "store.db"
    timeout = 1.0
    ready, go = threading.Event(), threading.Event()
    outcome: list[tuple[str, float]] = []

    def other_writer(vault_id: str) -> None:
        # Another writer, with its own connection (a store is not shared between threads).
        with pds.open_store(db, busy_timeout=timeout) as other:
            vault = other.open_vault(vault_id)
            vault.unlock(key_file=owner_key_file)
            ready.set()
            go.wait()
            time.sleep(0.05)  # Once the delete has committed and is checkpointing.
            started = time.monotonic()
            try:
                vault.put("notes", {"n": 2})
                outcome.append(("ok", time.monotonic() - started))
            except errors.StoreBusy:
                outcome.append(("StoreBusy", time.monotonic() - started))

    with (
        pds.open_store(db, busy_timeout=timeout) as store,
        pds.open_store(db, busy_timeout=timeout) as reader,
    ):
        vault_id = store.create_vault(key_file=owner_key_file)
        vault = store.open_vault(vault_id)
        vault.unlock(key_file=owner_key_file)
        doomed = vault.put("notes", {"n": 1})
        thread = threading.Thread(target=other_writer, args=(vault_id,))
        thread.start()
        assert ready.wait(timeout=30)
        # A reader holds a snapshot, as an export does for its whole length.
        with reader.backend.snapshot():
            reader.backend.log_size(vault_id)
            vault.put("notes", {"n": 3})  # A commit that reader does not see.
            started = time.monotonic()
            go.set()
            vault.delete(doomed.record_id)
            deleted_in = time.monotonic() - started
            thread.join()
    assert deleted_in < timeout / 2, f"the delete took {deleted_in:.2f}s"
    assert outcome[0][0] == "ok" and outcome[0][1] < timeout / 2, outcome
