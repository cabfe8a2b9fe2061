"""Child processes for ``tests/test_regressions.py``.

Usage::

    python regression_child.py revoke STORE KEY_FILE VAULT LINK_HEX NOW_MS
    python regression_child.py closed-fds MODE STORE KEY_FILE RESULT_JSON PROBE_DIR

``revoke`` opens the store with a clock fixed at NOW_MS, unlocks the vault with the owner
key file, revokes the link, and prints the revoked link id in hex.

``closed-fds`` starts with file descriptors 0, 1 and 2 closed (MODE ``all``), or with 0
and 1 on probe files in PROBE_DIR and only 2 closed (MODE ``stderr``); then it creates the
store, a vault and records, reads them back, and makes a stray write to fd 2 (as a warning
or a traceback printed to stderr would) between writes. It never prints: it records which
file each low descriptor pointed to at every step, and the outcome of the stray write, as
JSON in RESULT_JSON (opened before the descriptors are closed), and ends with ``os._exit``.
"""

from __future__ import annotations

import json
import math
import os
import sys
from pathlib import Path

import pds

STRAY = b"STRAY-WRITE-TO-FD-2;" * 64
"""What the stray write puts on fd 2; the parent looks for it in the database files."""

RECORDS_PER_BATCH = 200


def _fixed_clock(ms: int) -> float:
    value = ms / 1000
    while int(value * 1000) < ms:
        value = math.nextafter(value, math.inf)
    while int(value * 1000) > ms:
        value = math.nextafter(value, -math.inf)
    return value


def revoke(store_path: str, key_file: str, vault_id: str, link_hex: str, now_ms: str) -> None:
    moment = _fixed_clock(int(now_ms))
    with pds.open_store(store_path, clock=lambda: moment) as store:
        vault = store.open_vault(vault_id)
        vault.unlock(key_file=key_file)
        revoked = vault.revoke(link_hex, reason="revoked by another process")
    sys.stdout.write(revoked.hex() + "\n")


def _low_descriptors() -> dict[int, str]:
    found: dict[int, str] = {}
    for fd in (0, 1, 2):
        try:
            found[fd] = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            found[fd] = "<closed>"
    return found


def closed_fds(mode: str, store_path: str, key_file: str, result: str, probes: str) -> None:
    out = os.open(result, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    for fd in (0, 1, 2):
        os.close(fd)
    if mode == "stderr":
        # The probes take fds 0 and 1 (the lowest free numbers); 2 stays closed, so the
        # next file anyone opens would get it.
        assert os.open(Path(probes) / "fd0", os.O_RDWR | os.O_CREAT, 0o600) == 0
        assert os.open(Path(probes) / "fd1", os.O_RDWR | os.O_CREAT, 0o600) == 1
    else:
        assert mode == "all", mode
    try:
        document = _exercise(store_path, key_file)
    except BaseException as exc:  # Reported to the parent: stderr is gone.
        document = {"error": f"{type(exc).__name__}: {exc}"}
    os.write(out, json.dumps(document).encode("utf-8"))
    os.close(out)
    # No interpreter shutdown: nothing may be flushed to fds 0-2 on the way out.
    os._exit(0)


def _exercise(store_path: str, key_file: str) -> dict[str, object]:
    steps: dict[str, dict[int, str]] = {"start": _low_descriptors()}
    stray = "not attempted"
    with pds.open_store(store_path) as store:
        steps["opened"] = _low_descriptors()
        vault = store.open_vault(store.create_vault(key_file=key_file))
        vault.unlock(key_file=key_file)
        first = vault.put_many("notes", [{"n": n} for n in range(RECORDS_PER_BATCH)])
        steps["written"] = _low_descriptors()
        try:
            os.write(2, STRAY)
            stray = "written"
        except OSError as exc:
            stray = f"refused: {exc.strerror}"
        second = vault.put_many(
            "notes", [{"n": n} for n in range(RECORDS_PER_BATCH, 2 * RECORDS_PER_BATCH)]
        )
        ids = [info.record_id for info in (*first, *second)]
        read = [(vault.get(record_id).data or {})["n"] for record_id in ids]
        steps["read"] = _low_descriptors()
    return {"steps": steps, "stray": stray, "ids": ids, "read": read}


def main(argv: list[str]) -> None:
    command, *rest = argv
    if command == "revoke":
        revoke(*rest)
    elif command == "closed-fds":
        closed_fds(*rest)
    else:
        raise SystemExit(f"unknown command {command!r}")


if __name__ == "__main__":
    main(sys.argv[1:])
