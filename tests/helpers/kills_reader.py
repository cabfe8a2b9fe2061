"""Read a vault while writers are being killed; used by ``tests/test_kills_at_scale.py``.

Usage: ``python kills_reader.py STORE VAULT_ID OWNER_KEY GRANTEE_KEY TOKEN_FILE STOP_FILE SEED``

Until STOP_FILE exists, it mixes, with short pauses:

- owner reads: list a page, then ``get`` (or ``history``) one listed record, which must
  verify and decrypt (a record deleted in between may raise ``RecordNotFound``);
- grantee reads: ``Store.serve`` with the token in TOKEN_FILE (a live grant the writer
  never revokes), opened and verified by ``Grantee.open``; nothing may be pending, since
  rotation shares each new key epoch with live grants in the same transaction;
- log checks: the newest stored checkpoint must match the stored log
  (``latest_checkpoint``), and the log must stay consistent with the first checkpoint this
  process saw (a consistency proof, and now and then a full ``verify_log``).

Any other exception is a half-done state seen by a reader: it prints
``{"error": ..., "op": ...}`` and goes on. At the end it prints ``{"summary": {op: count}}``.
"""

from __future__ import annotations

import json
import os
import random
import sys
import time
import traceback
from pathlib import Path
from typing import Any

import pds
from pds import errors, merkle


def _emit(doc: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(doc, sort_keys=True) + "\n")
    sys.stdout.flush()


def main(argv: list[str]) -> None:
    store_path, vault_id, owner_key, grantee_key, token_file, stop_file, seed = argv
    rng = random.Random(int(seed))
    token = pds.Token.from_text(Path(token_file).read_text().strip())
    grantee = pds.Grantee(pds.PrincipalKey.from_file(grantee_key))
    counts: dict[str, int] = {}
    with pds.open_store(store_path) as store:
        vault = store.open_vault(vault_id)
        vault.unlock(key_file=owner_key)
        pinned = vault.latest_checkpoint()
        assert pinned is not None
        _emit({"ready": os.getpid()})
        while not os.path.exists(stop_file):
            choice = rng.random()
            op = "owner" if choice < 0.4 else "grantee" if choice < 0.8 else "log"
            try:
                if op == "owner":
                    page = vault.list(
                        rng.choice([None, "notes", "health/visits", "benefits"]),
                        limit=rng.randrange(1, 30),
                    )
                    if page.records:
                        info = rng.choice(page.records)
                        try:
                            if rng.random() < 0.8:
                                record = vault.get(info.record_id)
                                assert record.version >= info.version, "an older version"
                                assert isinstance(record.data, dict) and "n" in record.data
                            else:
                                history = vault.history(info.record_id)
                                versions = [r.version for r in history]
                                assert versions == list(range(1, len(history) + 1)), versions
                        except errors.RecordNotFound:
                            op = "owner-raced-delete"
                elif op == "grantee":
                    action = rng.choice(["read", "read", "list"])
                    read = grantee.read(store, token, action=action, limit=rng.randrange(1, 20))
                    assert not read.pending, f"{len(read.pending)} records pending"
                    if action == "read":
                        assert all(isinstance(r.data, dict) and "n" in r.data for r in read.records)
                else:
                    head = vault.latest_checkpoint()
                    assert head is not None and head.size >= pinned.size
                    size = vault.log_size()
                    merkle.verify_consistency(
                        pinned.size,
                        size,
                        pinned.root,
                        vault.log_root(size),
                        vault.prove_consistency(pinned.size, size),
                    )
                    if rng.random() < 0.05:
                        vault.verify_log(pinned)
                        op = "log-full"
            except Exception as exc:
                _emit(
                    {
                        "error": f"{type(exc).__name__}: {exc}",
                        "op": op,
                        "traceback": traceback.format_exc(),
                    }
                )
            counts[op] = counts.get(op, 0) + 1
            time.sleep(rng.uniform(0.005, 0.03))
    _emit({"summary": counts})


if __name__ == "__main__":
    main(sys.argv[1:])
