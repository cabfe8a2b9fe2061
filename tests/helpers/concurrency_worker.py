"""One of N processes running mixed operations on one store; used by ``tests/test_concurrency.py``.

Usage: ``python concurrency_worker.py CONFIG INDEX``

CONFIG is a JSON file written by the parent: the store, the owner key file, this worker's
own vault and the vault every worker shares, one grantee key file per worker, the
operation count, the busy timeout, and a list of pre-signed invocations that every worker
serves (the same bytes: exactly one process may have each accepted).

It opens the store, unlocks both vaults, prints ``ready`` and waits for a line on stdin
(so the parent starts every worker at the same moment). Then it serves the replay
invocations in order, all at once (every worker races on each), then runs the mixed
operations: puts into its own and the shared vault, ``put_many``, updates of its own
records and of anyone's shared records (concurrent updates of one record), deletes of its
own records, grants on the shared vault to its grantee key, revocations (then the revoked
token is served at once and must be refused), served reads with its tokens (each
invocation has a fresh nonce), key rotations and checkpoints, with the remaining replay
invocations served again at fixed positions.

Every returned call prints one JSON line (an acknowledgement). A ``StoreBusy`` is counted
(``{"busy": op}``) and the call is retried with the same input, up to 200 times: a
failed call must have changed nothing, so a retried ``serve`` of the same invocation must
not be refused as ``Replayed``. Any other exception prints ``{"error": ...}`` (``untyped``
if it is not a ``PDSError``). At the end it prints ``{"latency": {op: [count, total_s,
max_s]}}``.
"""

from __future__ import annotations

import json
import random
import sys
import time
import traceback
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any, TypeVar

import pds
from pds import errors

T = TypeVar("T")
RETRIES = 200
OWN = "own"
SHARED = ("shared", "common")
WEIGHTS = {
    "put_own": 11,
    "put_shared": 12,
    "put_many": 6,
    "update_own": 9,
    "update_shared": 13,
    "delete_own": 3,
    "grant": 5,
    "revoke": 3,
    "serve": 22,
    "rotate": 2,
    "checkpoint": 8,
}


def _emit(doc: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(doc, sort_keys=True) + "\n")
    sys.stdout.flush()


class Worker:
    def __init__(self, config: dict[str, Any], index: int) -> None:
        self.index = index
        self.rng = random.Random(config["seed"] * 100 + index)
        self.busy_timeout = float(config["busy_timeout"])
        self.latency: dict[str, list[float]] = {}
        self.store = self.retry("open", lambda: self._open(config["store"]))
        self.own = self.retry("open", lambda: self._vault(config["own"][index], config))
        self.shared = self.retry("open", lambda: self._vault(config["shared"], config))
        self.grantee = pds.Grantee(pds.PrincipalKey.from_file(config["grantees"][index]))
        self.replays: list[bytes] = [bytes.fromhex(text) for text in config["replays"]]
        self.ops = int(config["ops"])
        self.counter = 0
        self.own_live: dict[str, str] = {}
        self.shared_known: dict[str, str] = {}
        # Live tokens of this worker: link hex -> [token, uses, used].
        self.tokens: dict[str, list[Any]] = {}

    def _open(self, path: str) -> pds.Store:
        return pds.open_store(path, busy_timeout=self.busy_timeout)

    def _vault(self, vault_id: str, config: dict[str, Any]) -> pds.Vault:
        vault = self.store.open_vault(vault_id)
        vault.unlock(key_file=config["owner_key"])
        return vault

    def retry(self, op: str, call: Callable[[], T]) -> T:
        """Run ``call``; on ``StoreBusy`` count it and run it again (it changed nothing)."""
        for _ in range(RETRIES):
            started = time.monotonic()
            try:
                result = call()
            except errors.StoreBusy:
                _emit({"busy": op})
                time.sleep(self.rng.uniform(0, 0.002))
                continue
            elapsed = time.monotonic() - started
            stats = self.latency.setdefault(op, [0, 0.0, 0.0])
            stats[0] += 1
            stats[1] += elapsed
            stats[2] = max(stats[2], elapsed)
            return result
        raise AssertionError(f"{op} stayed busy {RETRIES} times")

    def document(self) -> dict[str, Any]:
        self.counter += 1
        return {"w": self.index, "n": self.counter, "pad": "y" * self.rng.randrange(0, 64)}

    def ack_write(self, vault: pds.Vault, infos: list[pds.RecordInfo], data: list[Any]) -> None:
        for info, item in zip(infos, data, strict=True):
            _emit(
                {
                    "op": "delete" if info.deleted else "write",
                    "vault": vault.vault_id,
                    "id": info.record_id,
                    "version": info.version,
                    "collection": info.collection,
                    "data": item,
                }
            )

    def serve_replay(self, k: int) -> None:
        def attempt() -> dict[str, Any]:
            try:
                response = self.store.serve(self.replays[k])
            except errors.Replayed:
                return {"result": "Replayed"}
            return {"result": "ok", "access": response.access}

        _emit({"op": "replay", "k": k, **self.retry("replay", attempt)})

    def refresh_shared(self) -> None:
        for info in self.retry("list", lambda: list(self.shared.iter_records())):
            self.shared_known[info.record_id] = info.collection

    def step(self, op: str) -> None:
        rng = self.rng
        if op in ("update_own", "delete_own") and not self.own_live:
            op = "put_own"
        if op == "update_shared" and not self.shared_known:
            op = "put_shared"
        if op in ("revoke", "serve") and not self.tokens:
            op = "grant"
        if op == "put_own":
            data = self.document()
            info = self.retry(op, lambda: self.own.put(OWN, data))
            self.own_live[info.record_id] = OWN
            self.ack_write(self.own, [info], [data])
        elif op == "put_shared":
            data = self.document()
            collection = rng.choice(SHARED)
            info = self.retry(op, lambda: self.shared.put(collection, data))
            self.shared_known[info.record_id] = collection
            self.ack_write(self.shared, [info], [data])
        elif op == "put_many":
            vault = rng.choice([self.own, self.shared])
            collection = OWN if vault is self.own else rng.choice(SHARED)
            items = [self.document() for _ in range(rng.randrange(2, 6))]
            infos = self.retry(op, lambda: vault.put_many(collection, items))
            known = self.own_live if vault is self.own else self.shared_known
            known.update((info.record_id, collection) for info in infos)
            self.ack_write(vault, infos, items)
        elif op == "update_own":
            record_id = rng.choice(sorted(self.own_live))
            data = self.document()
            info = self.retry(op, lambda: self.own.put(OWN, data, record_id=record_id))
            self.ack_write(self.own, [info], [data])
        elif op == "update_shared":
            if rng.random() < 0.1:
                self.refresh_shared()
            record_id = rng.choice(sorted(self.shared_known))
            collection = self.shared_known[record_id]
            data = self.document()
            info = self.retry(op, lambda: self.shared.put(collection, data, record_id=record_id))
            self.ack_write(self.shared, [info], [data])
        elif op == "delete_own":
            record_id = rng.choice(sorted(self.own_live))
            info = self.retry(op, lambda: self.own.delete(record_id))
            del self.own_live[record_id]
            self.ack_write(self.own, [info], [None])
        elif op == "grant":
            uses = rng.choice([None, None, 3])
            scope = rng.choice([["*"], ["shared"], ["common", "shared"]])
            token = self.retry(
                op,
                lambda: self.shared.grant(
                    self.grantee.did,
                    collections=scope,
                    purpose="audit",
                    expires=timedelta(hours=1),
                    uses=uses,
                ),
            )
            self.tokens[token.link_id.hex()] = [token, uses, 0]
            _emit({"op": "grant", "link": token.link_id.hex(), "token": token.to_text()})
        elif op == "revoke":
            link = rng.choice(sorted(self.tokens))
            token = self.tokens.pop(link)[0]
            self.retry(op, lambda: self.shared.revoke(link))
            # Revocation is immediate: the very next request with it is refused.
            denied = ""
            try:
                self.retry("serve_revoked", lambda: self.grantee.read(self.store, token))
            except errors.Revoked as exc:
                denied = type(exc).__name__
            _emit({"op": "revoke", "link": link, "denied": denied})
        elif op == "serve":
            self.serve(rng.choice(sorted(self.tokens)))
        elif op == "rotate":
            vault = rng.choice([self.own, self.shared])
            collection = OWN if vault is self.own else rng.choice(SHARED)
            epochs = self.retry(op, lambda: vault.rotate(collection))
            _emit({"op": "rotate", "vault": vault.vault_id, "epochs": epochs})
        else:
            vault = self.shared if rng.random() < 0.8 else self.own
            head = self.retry(op, vault.checkpoint)
            _emit({"op": "checkpoint", "vault": vault.vault_id, "text": head.to_text()})

    def serve(self, link: str) -> None:
        token, uses, used = self.tokens[link]
        action = self.rng.choice(["read", "read", "list"])
        invocation = self.grantee.invoke(token, action=action, limit=self.rng.randrange(1, 20))
        if uses is not None and used >= uses:
            try:
                self.retry("serve_spent", lambda: self.store.serve(invocation.to_bytes()))
            except errors.BudgetExhausted:
                del self.tokens[link]
                _emit({"op": "spent", "link": link})
                return
            raise AssertionError("a spent token was served")
        response = self.retry("serve", lambda: self.store.serve(invocation.to_bytes()))
        read = self.grantee.open(token, response, invocation=invocation)
        self.tokens[link][2] += 1
        _emit(
            {
                "op": "serve",
                "vault": self.shared.vault_id,
                "link": link,
                "nonce": invocation.nonce.hex(),
                "access": read.access,
                "action": action,
                "records": [[r.record_id, r.version] for r in read.records],
                "pending": len(read.pending),
            }
        )

    def run(self) -> None:
        # Every worker serves the same invocations in the same order at the same moment.
        burst = len(self.replays) // 2
        for k in range(burst):
            self.serve_replay(k)
        later = {
            (i + 1) * self.ops // (len(self.replays) - burst + 1): burst + i
            for i in range(len(self.replays) - burst)
        }
        ops = list(WEIGHTS)
        weights = [WEIGHTS[op] for op in ops]
        for n in range(self.ops):
            if n in later:
                self.serve_replay(later[n])
            op = self.rng.choices(ops, weights=weights)[0]
            try:
                self.step(op)
            except Exception as exc:
                _emit(
                    {
                        "error": f"{type(exc).__name__}: {exc}",
                        "op": op,
                        "untyped": not isinstance(exc, errors.PDSError),
                        "traceback": traceback.format_exc(),
                    }
                )
        _emit({"latency": self.latency})


def main(argv: list[str]) -> None:
    config_path, index = argv
    config = json.loads(Path(config_path).read_text())
    worker = Worker(config, int(index))
    _emit({"ready": int(index)})
    sys.stdin.readline()
    try:
        worker.run()
    finally:
        worker.store.close()


if __name__ == "__main__":
    main(sys.argv[1:])
