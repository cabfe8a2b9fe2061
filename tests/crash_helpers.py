"""What the crash suites share: running a piece of pds work in a forked child that ends at
a chosen crash point, as a power cut would end it (``pds._faults``), and checking that no
batch was left half written."""

from __future__ import annotations

import os
import sqlite3
import traceback
from collections.abc import Callable

import msgpack

from pds import _faults


def in_child(crash_at: int | None, action: Callable[[], None]) -> bool:
    """Run ``action`` in a forked child armed to crash at point ``crash_at`` (``None``: no
    crash); True if it finished. The parent must hold no open database while it forks."""
    pid = os.fork()
    if pid == 0:
        code = 0
        try:
            _faults.arm_crash(crash_at)
            action()
        except BaseException:
            traceback.print_exc()
            code = 3
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    code = os.waitstatus_to_exitcode(status)
    if code == _faults.CRASH_EXIT_CODE:
        return False
    assert code == 0, f"the child failed with exit status {code} (not a crash point)"
    return True


def half_written_batches(con: sqlite3.Connection, after_bseq: int = 0) -> list[bytes]:
    """The ids of batches (after ``after_bseq``) whose stored records differ from what their
    signed manifest lists: a batch must be written whole or not at all."""
    broken = []
    for batch_id, manifest in con.execute(
        "SELECT batch_id, manifest FROM batches WHERE bseq > ?", (after_bseq,)
    ).fetchall():
        listed = {(e[0], e[1]) for e in msgpack.unpackb(manifest)["entries"]}
        stored = set(
            con.execute(
                "SELECT record_id, version FROM records WHERE batch_id = ?", (batch_id,)
            ).fetchall()
        )
        if stored != listed:
            broken.append(batch_id)
    return broken
