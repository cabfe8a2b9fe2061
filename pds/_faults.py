"""A test-only fault seam: numbered crash points and failing storage calls.

The storage layer calls :func:`storage_call` before every SQL statement and commit and
:func:`point` after each; the vault and the host call :func:`point` at the moments where a
crash would matter most (after the access entry is written, after the commit and before the
key shares are released). Unless a test arms the seam, each call is one global flag check.

Crash points: ``PDS_TEST_CRASH_AT=k`` in the environment (read at import, so it reaches a
CLI or a child process) or :func:`arm_crash` ends the process with ``os._exit`` at the k-th
point, like a power cut at that instant: no ``finally`` blocks, no buffered output flushed,
no SQLite rollback. ``PDS_TEST_CRASH_TRACE=FILE`` appends ``k name`` per point passed, so a
test can tell how many points an operation has.

Storage faults: :func:`fail_storage` makes the k-th storage call (and, if ``persistent``, every
later one) raise SQLite's disk I/O error, which the storage layer translates like a real one.

Nothing here is reachable by data: only the process environment or test code arms it.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager

CRASH_EXIT_CODE = 86
"""The exit status of a process ended at a crash point."""


class _Seam:
    """The seam's state; ``armed`` is the one flag hot paths check."""

    def __init__(self) -> None:
        self.armed = False
        self.crash_at: int | None = None
        self.trace_fd: int | None = None
        self.passed = 0
        self.fail_at: int | None = None
        self.fail_persistent = False
        self.storage_calls = 0

    def update(self) -> None:
        self.armed = (
            self.crash_at is not None or self.trace_fd is not None or self.fail_at is not None
        )


SEAM = _Seam()


def arm_crash(k: int | None, *, trace: str | None = None) -> None:
    """Exit at the ``k``-th crash point from now (``None`` disarms); trace points to a file."""
    if SEAM.trace_fd is not None:
        os.close(SEAM.trace_fd)
        SEAM.trace_fd = None
    SEAM.crash_at, SEAM.passed = k, 0
    if trace:
        SEAM.trace_fd = os.open(trace, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    SEAM.update()


@contextmanager
def fail_storage(at: int, *, persistent: bool = False) -> Iterator[None]:
    """Inside the block, the ``at``-th storage call from its start fails with a disk I/O
    error (and every later one too if ``persistent``)."""
    SEAM.fail_at, SEAM.fail_persistent, SEAM.storage_calls = at, persistent, 0
    SEAM.update()
    try:
        yield
    finally:
        SEAM.fail_at = None
        SEAM.update()


def storage_calls() -> int:
    """How many storage calls the current or last :func:`fail_storage` block made."""
    return SEAM.storage_calls


def storage_call(name: str) -> None:
    """Called before a statement or commit: may fail it, then counts as a crash point."""
    if SEAM.fail_at is not None:
        SEAM.storage_calls += 1
        calls = SEAM.storage_calls
        if calls == SEAM.fail_at or (SEAM.fail_persistent and calls > SEAM.fail_at):
            raise sqlite3.OperationalError("disk I/O error")
    point(name)


def point(name: str) -> None:
    """A crash point: the process ends here if this is the armed one."""
    if SEAM.crash_at is None and SEAM.trace_fd is None:
        return
    SEAM.passed += 1
    if SEAM.trace_fd is not None:
        os.write(SEAM.trace_fd, f"{SEAM.passed} {name}\n".encode())
    if SEAM.passed == SEAM.crash_at:
        os._exit(CRASH_EXIT_CODE)


def _from_environment() -> None:
    at = os.environ.get("PDS_TEST_CRASH_AT", "")
    trace = os.environ.get("PDS_TEST_CRASH_TRACE") or None
    if at.isdigit() or trace:
        arm_crash(int(at) if at.isdigit() else None, trace=trace)


_from_environment()
