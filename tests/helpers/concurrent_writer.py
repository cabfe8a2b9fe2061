"""Write records into two vaults of one store; used by ``tests/test_store.py``.

Usage: ``python concurrent_writer.py STORE KEY_FILE OWN_VAULT SHARED_VAULT COUNT TAG``

Prints ``ready`` once both vaults are unlocked, waits for a line on stdin (so the parent
can start two writers at the same moment), then makes COUNT single puts alternating
between its own vault and the shared one, printing one JSON line per acknowledged put.
"""

from __future__ import annotations

import json
import sys

import pds


def main(argv: list[str]) -> None:
    store_path, key_file, own_id, shared_id, count, tag = argv
    with pds.open_store(store_path) as store:
        vaults = []
        for vault_id in (own_id, shared_id):
            vault = store.open_vault(vault_id)
            vault.unlock(key_file=key_file)
            vaults.append(vault)
        sys.stdout.write("ready\n")
        sys.stdout.flush()
        sys.stdin.readline()
        for n in range(int(count)):
            vault = vaults[n % 2]
            data = {"writer": tag, "n": n}
            info = vault.put("shared" if n % 2 else "own", data)
            line = {"vault": vault.vault_id, "id": info.record_id, "data": data}
            sys.stdout.write(json.dumps(line) + "\n")
            sys.stdout.flush()


if __name__ == "__main__":
    main(sys.argv[1:])
