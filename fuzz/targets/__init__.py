"""One module per fuzzed surface, each exposing ``TestOneInput(data: bytes) -> None``.

``TestOneInput`` returns normally when the input was accepted or refused with a
``pds.errors.PDSError``; any other exception (an ``AssertionError`` from an invariant the
target checks included) escapes, and atheris reports it as a crash.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path

from fuzz import REPO_ROOT
from pds.errors import PDSError

__all__ = ["Finding", "fuzz_target", "in_project", "signature"]


def fuzz_target(function: Callable[[bytes], None]) -> Callable[[bytes], None]:
    """Wrap ``function`` so that a ``PDSError`` (the documented refusal) is not a finding."""

    @functools.wraps(function)
    def test_one_input(data: bytes) -> None:
        try:
            function(data)
        except PDSError:
            return

    return test_one_input


class Finding(AssertionError):
    """A broken contract whose message holds run-specific detail; ``key`` names the kind of
    failure stably, so the runner can tell a new finding from one it has seen."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(message)
        self.key = key


_PROJECT = tuple(str(REPO_ROOT / name) for name in ("pds", "cli"))


def in_project(filename: str) -> bool:
    """Whether ``filename`` is a module of pds or of its CLI (not a dependency, not fuzz/)."""
    return filename.startswith(_PROJECT)


def signature(exc: BaseException) -> str:
    """A stable name for a failure: the ``Finding`` key, or the exception type and the
    innermost function of pds or its CLI it passed through (a dependency's own checks are
    named by the pds function that called them). For an ``AssertionError`` raised from
    another exception, the signature of that cause."""
    if isinstance(exc, Finding):
        return exc.key
    if isinstance(exc, AssertionError) and exc.__cause__ is not None:
        return signature(exc.__cause__)
    innermost = project = None
    tb = exc.__traceback__
    while tb is not None:
        innermost = tb.tb_frame
        if in_project(innermost.f_code.co_filename):
            project = innermost
        tb = tb.tb_next
    frame = project or innermost
    where = "?"
    if frame is not None:
        where = f"{Path(frame.f_code.co_filename).name}:{frame.f_code.co_name}"
    if isinstance(exc, AssertionError):
        return f"AssertionError:{where}:{str(exc).split(chr(10))[0][:80]}"
    return f"{type(exc).__name__}:{where}"
