"""A small reader of structured fuzz input, and the writer that builds seeds for it.

atheris' ``FuzzedDataProvider`` would do as a reader, but a pure-Python one keeps every
target replayable where atheris is not installed (pytest replays ``tests/regress/`` on any
platform), and its ``Builder`` twin writes seeds that decode to exactly the intended
structure. Reading never fails: past the end, numbers are 0 and byte strings are empty.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeVar

__all__ = ["Builder", "Data"]

T = TypeVar("T")


class Data:
    """Consumes an input front to back."""

    def __init__(self, data: bytes) -> None:
        self._data = data
        self._pos = 0

    def take(self, size: int) -> bytes:
        chunk = self._data[self._pos : self._pos + size]
        self._pos += len(chunk)
        return chunk

    def byte(self) -> int:
        chunk = self.take(1)
        return chunk[0] if chunk else 0

    def flag(self) -> bool:
        return bool(self.byte() & 1)

    def uint(self, size: int) -> int:
        """An unsigned big-endian integer of ``size`` bytes (short input: what is left)."""
        return int.from_bytes(self.take(size), "big")

    def choice(self, options: Sequence[T]) -> T:
        return options[self.byte() % len(options)]

    def chunk(self) -> bytes:
        """A byte string: a 2-byte big-endian length, then that many bytes."""
        return self.take(self.uint(2))

    def text(self) -> str:
        """A ``chunk`` as text; undecodable bytes become lone surrogates, as they do in the
        command-line arguments Python hands to click."""
        return self.chunk().decode("utf-8", "surrogateescape")

    def rest(self) -> bytes:
        return self.take(len(self._data))


class Builder:
    """Writes what ``Data`` reads, in the same order."""

    def __init__(self) -> None:
        self._parts: list[bytes] = []

    def byte(self, value: int) -> Builder:
        self._parts.append(bytes([value % 256]))
        return self

    def flag(self, value: bool) -> Builder:
        return self.byte(int(value))

    def uint(self, value: int, size: int) -> Builder:
        self._parts.append(value.to_bytes(size, "big"))
        return self

    def chunk(self, value: bytes) -> Builder:
        return self.uint(len(value), 2).raw(value)

    def text(self, value: str) -> Builder:
        return self.chunk(value.encode("utf-8", "surrogateescape"))

    def raw(self, value: bytes) -> Builder:
        self._parts.append(value)
        return self

    def build(self) -> bytes:
        return b"".join(self._parts)
