"""Running a piece of pds work in a forked child that ends at a chosen crash point, as a
power cut would end it (``pds._faults``): shared by the crash-point suites."""

from __future__ import annotations

import os
import traceback
from collections.abc import Callable

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
