"""A fork server of writers for ``tests/test_kills_at_scale.py``: one interpreter start, many kills.

Usage: ``python kills_writer.py STORE VAULT_ID OWNER_KEY``

The server imports pds once, opens nothing, then reads one JSON command per line on stdin,
``{"seed": int, "state": path, "acks": path}``. For each it forks a writer child and
prints ``forked PID``; it waits for the child and prints ``reaped PID STATUS`` (the raw
``waitpid`` status) once the child is gone. Forking an interpreter that has already
imported pds costs milliseconds, where starting one costs ~0.15 s: that is what lets the
parent kill a writer hundreds of times in a few minutes. No SQLite connection exists in
the server when it forks; each child opens its own store.

A child reads the state file (grantee key files, tokens the parent knows to be live,
revoked or spent, and how many key epochs exist), opens the store, unlocks the vault,
prints ``ready PID`` and then performs a random mix of every write path forever, until
the parent SIGKILLs it: ``put``, ``put_many``, updates, ``delete``, ``grant``, ``revoke``,
``rotate``, ``set_policy``, served reads (``Store.serve``, which appends to the access log
and consumes nonces and use budgets), refused served reads (a revoked or spent token: the
refusal is logged), and ``checkpoint``.

For every call it appends two JSON lines to the acks file: ``{"do": OP, ...}`` *before*
calling the library (what is about to be written, so the parent can tell whether the call
in flight at the kill committed, and that it committed whole) and ``{"done": OP, ...}``
only *after* the call returned (an acknowledged write: it must survive the kill). Each
line is one ``write(2)``; a line torn by the kill has no final newline and is ignored.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import sys
import traceback
from datetime import timedelta
from pathlib import Path
from typing import Any

import pds
from pds import errors

COLLECTIONS = ("notes", "health/visits", "benefits")
SCOPES = (("*",), ("notes",), ("health/*",), ("benefits", "notes"))
PURPOSE = "care"
# A root grant carries the secret of every key epoch in its scope, at most 256 of them
# (docs/spec/token.md): rotation stops well below that so grants stay possible.
MAX_EPOCHS = 200
WEIGHTS = {
    "put": 16,
    "put_many": 8,
    "update": 16,
    "delete": 5,
    "grant": 6,
    "revoke": 4,
    "rotate": 3,
    "set_policy": 3,
    "serve": 25,
    "serve_refused": 4,
    "checkpoint": 8,
}


def data_digest(data: Any) -> str:
    """A short digest of a record's data, as the parent computes it for comparison."""
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]


def scope_collections(scope: list[str]) -> list[str]:
    """The collections of ``COLLECTIONS`` a grant scope covers."""
    return [
        c
        for c in COLLECTIONS
        if any(p in ("*", c) or (p.endswith("/*") and c.startswith(p[:-1])) for p in scope)
    ]


class Writer:
    """One child's state: the vault, the records it may update, the tokens it may use."""

    def __init__(self, store: pds.Store, vault: pds.Vault, state: dict[str, Any], seed: int):
        self.store = store
        self.vault = vault
        self.rng = random.Random(seed)
        self.seed = seed
        self.counter = 0
        self.live = {info.record_id: info.collection for info in vault.iter_records()}
        self.grantees = [pds.Grantee(pds.PrincipalKey.from_file(p)) for p in state["grantees"]]
        self.grantee_dids = [g.did for g in self.grantees]
        # Tokens: link hex -> {"token", "grantee", "uses", "used", "scope"}.
        self.tokens: dict[str, dict[str, Any]] = {t["link"]: t for t in state["tokens"]}
        self.revoked: dict[str, dict[str, Any]] = {t["link"]: t for t in state["revoked"]}
        self.epochs = int(state["epochs"])

    def document(self) -> dict[str, Any]:
        self.counter += 1
        return {
            "seed": self.seed,
            "n": self.counter,
            "pad": "x" * self.rng.randrange(0, 160),
            "nested": {"list": [self.counter, str(self.counter), None]},
        }

    def usable(self) -> list[str]:
        return sorted(
            link for link, t in self.tokens.items() if t["uses"] is None or t["used"] < t["uses"]
        )

    def choose(self) -> str:
        ops = list(WEIGHTS)
        op = self.rng.choices(ops, weights=[WEIGHTS[o] for o in ops])[0]
        if op in ("update", "delete") and not self.live:
            return "put"
        if op == "revoke" and not self.tokens:
            return "grant"
        if op == "serve" and not self.usable():
            return "grant"
        if op == "serve_refused" and len(self.usable()) == len(self.tokens) and not self.revoked:
            return "checkpoint"
        if op == "rotate" and self.epochs + len(COLLECTIONS) > MAX_EPOCHS:
            return "set_policy"
        return op

    def step(self, emit: Any) -> None:
        op = self.choose()
        rng = self.rng
        if op in ("put", "put_many"):
            collection = rng.choice(COLLECTIONS)
            items = [self.document() for _ in range(1 if op == "put" else rng.randrange(2, 6))]
            emit({"do": op, "collection": collection, "data": items})
            if op == "put":
                infos = [self.vault.put(collection, items[0])]
            else:
                infos = self.vault.put_many(collection, items)
            for info in infos:
                self.live[info.record_id] = collection
            emit({"done": op, "ids": [[i.record_id, i.version] for i in infos]})
        elif op == "update":
            record_id = rng.choice(sorted(self.live))
            data = self.document()
            emit({"do": op, "id": record_id, "data": [data]})
            info = self.vault.put(self.live[record_id], data, record_id=record_id)
            emit({"done": op, "ids": [[info.record_id, info.version]]})
        elif op == "delete":
            record_id = rng.choice(sorted(self.live))
            emit({"do": op, "id": record_id})
            info = self.vault.delete(record_id)
            del self.live[record_id]
            emit({"done": op, "ids": [[info.record_id, info.version]]})
        elif op == "grant":
            grantee = rng.randrange(len(self.grantees))
            scope = list(rng.choice(SCOPES))
            uses = rng.choice([None, None, 2, 5])
            emit({"do": op, "grantee": grantee, "scope": scope, "uses": uses})
            token = self.vault.grant(
                self.grantee_dids[grantee],
                collections=scope,
                purpose=PURPOSE,
                # Longer than any run, shorter than the shortest policy (2 days).
                expires=timedelta(hours=20),
                uses=uses,
            )
            link = token.link_id.hex()
            entry = {
                "link": link,
                "token": token.to_text(),
                "grantee": grantee,
                "uses": uses,
                "used": 0,
                "scope": scope,
            }
            self.tokens[link] = entry
            emit({"done": op, **entry})
        elif op == "revoke":
            link = rng.choice(sorted(self.tokens))
            emit({"do": op, "link": link})
            self.vault.revoke(link, reason="kills-at-scale")
            self.revoked[link] = self.tokens.pop(link)
            emit({"done": op, "link": link})
        elif op == "rotate":
            target = rng.choice([None, *COLLECTIONS, *COLLECTIONS])
            emit({"do": op, "collection": target})
            epochs = self.vault.rotate(target)
            self.epochs += len(epochs)
            emit({"done": op, "epochs": epochs})
        elif op == "set_policy":
            days = rng.randrange(2, 60)
            emit({"do": op, "ms": days * 86_400_000})
            self.vault.set_policy(max_token_lifetime=timedelta(days=days))
            emit({"done": op, "ms": days * 86_400_000})
        elif op == "serve":
            self.serve(emit)
        elif op == "serve_refused":
            self.serve_refused(emit)
        else:
            emit({"do": "checkpoint"})
            head = self.vault.checkpoint()
            emit({"done": "checkpoint", "checkpoint": head.to_text()})

    def serve(self, emit: Any) -> None:
        rng = self.rng
        link = rng.choice(self.usable())
        entry = self.tokens[link]
        grantee = self.grantees[entry["grantee"]]
        token = pds.Token.from_text(entry["token"])
        action = rng.choice(["read", "read", "list"])
        request: dict[str, Any] = {"action": action, "limit": rng.randrange(1, 25)}
        shape = rng.random()
        if shape < 0.4:
            request["collection"] = rng.choice(scope_collections(entry["scope"]))
        elif shape < 0.7 and self.live and action == "read":
            request["records"] = rng.sample(sorted(self.live), min(len(self.live), 4))
        invocation = grantee.invoke(token, **request)
        emit({"do": "serve", "link": link, "nonce": invocation.nonce.hex(), "action": action})
        response = self.store.serve(invocation.to_bytes())
        read = grantee.open(token, response, invocation=invocation)
        entry["used"] += 1
        records = [
            [r.record_id, r.version, None if r.data is None else data_digest(r.data)]
            for r in read.records
        ]
        emit(
            {
                "done": "serve",
                "link": link,
                "access": read.access,
                "action": action,
                "records": records,
                "pending": len(read.pending),
            }
        )

    def serve_refused(self, emit: Any) -> None:
        """Serve a token that must be refused (revoked, or its budget spent): the refusal
        is logged in its own transaction, another write path."""
        rng = self.rng
        spent = [link for link in sorted(self.tokens) if link not in self.usable()]
        link = rng.choice(sorted(self.revoked) + spent)
        entry = self.revoked.get(link) or self.tokens[link]
        expected = "Revoked" if link in self.revoked else "BudgetExhausted"
        grantee = self.grantees[entry["grantee"]]
        invocation = grantee.invoke(entry["token"], action="list")
        emit({"do": "serve_refused", "link": link, "nonce": invocation.nonce.hex()})
        try:
            self.store.serve(invocation.to_bytes())
        except errors.AccessDenied as exc:
            emit({"done": "serve_refused", "link": link, "refusal": type(exc).__name__})
            if type(exc).__name__ != expected:
                raise
            return
        raise AssertionError(f"a {expected} token was served")


def _writer(store_path: str, vault_id: str, owner_key: str, command: dict[str, Any]) -> None:
    fd = os.open(command["acks"], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)

    def emit(doc: dict[str, Any]) -> None:
        os.write(fd, (json.dumps(doc, sort_keys=True) + "\n").encode())

    try:
        state = json.loads(Path(command["state"]).read_text())
        with pds.open_store(store_path) as store:
            vault = store.open_vault(vault_id)
            vault.unlock(key_file=owner_key)
            writer = Writer(store, vault, state, int(command["seed"]))
            os.write(1, f"ready {os.getpid()}\n".encode())
            while True:
                writer.step(emit)
    except BaseException as exc:
        emit({"error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()})
        os._exit(3)


def main(argv: list[str]) -> None:
    store_path, vault_id, owner_key = argv
    os.write(1, b"server\n")
    while True:
        line = sys.stdin.readline()
        if not line:
            return
        command = json.loads(line)
        pid = os.fork()
        if pid == 0:
            # Never return into the server's loop or flush its inherited buffers.
            _writer(store_path, vault_id, owner_key, command)
            os._exit(0)
        os.write(1, f"forked {pid}\n".encode())
        _, status = os.waitpid(pid, 0)
        os.write(1, f"reaped {pid} {status}\n".encode())


if __name__ == "__main__":
    main(sys.argv[1:])
