"""Write records in a loop until killed; used by ``tests/test_crash.py``.

Usage: ``python crash_writer.py STORE VAULT_ID KEY_FILE SEED``

Prints ``ready`` once the vault is unlocked, then one JSON line per acknowledged write,
flushed only after the library call has returned (so every printed line is a write the
library reported as committed)::

    {"op": "put", "id": ..., "version": ..., "data": {...}}
    {"op": "delete", "id": ..., "version": ...}

It mixes single puts, ``put_many`` of a few records, updates of earlier records, and
occasional deletes, forever; the parent kills it with SIGKILL.
"""

from __future__ import annotations

import json
import random
import sys
from typing import Any

import pds


def _ack(op: str, info: pds.RecordInfo, data: dict[str, Any] | None = None) -> None:
    line: dict[str, Any] = {"op": op, "id": info.record_id, "version": info.version}
    if data is not None:
        line["data"] = data
    sys.stdout.write(json.dumps(line, sort_keys=True) + "\n")
    sys.stdout.flush()


def main(argv: list[str]) -> None:
    store_path, vault_id, key_file, seed = argv
    rng = random.Random(int(seed))
    with pds.open_store(store_path) as store:
        vault = store.open_vault(vault_id)
        vault.unlock(key_file=key_file)
        # Live record id -> its collection (an update keeps the record where it is).
        live = {info.record_id: info.collection for info in vault.iter_records()}
        sys.stdout.write("ready\n")
        sys.stdout.flush()
        counter = 0

        def document() -> dict[str, Any]:
            nonlocal counter
            counter += 1
            return {
                "seed": int(seed),
                "n": counter,
                "text": "x" * rng.randrange(0, 3000),
                "nested": {"list": [counter, str(counter), None]},
            }

        while True:
            choice = rng.random()
            collection = rng.choice(["notes", "health/visits", "benefits"])
            if choice < 0.35 or not live:
                data = document()
                info = vault.put(collection, data)
                live[info.record_id] = collection
                _ack("put", info, data)
            elif choice < 0.6:
                items = [document() for _ in range(rng.randrange(2, 6))]
                infos = vault.put_many(collection, items)
                for info, data in zip(infos, items, strict=True):
                    live[info.record_id] = collection
                    _ack("put", info, data)
            elif choice < 0.9:
                record_id = rng.choice(sorted(live))
                data = document()
                info = vault.put(live[record_id], data, record_id=record_id)
                _ack("put", info, data)
            else:
                record_id = rng.choice(sorted(live))
                del live[record_id]
                info = vault.delete(record_id)
                _ack("delete", info)


if __name__ == "__main__":
    main(sys.argv[1:])
