"""What both vector generators share: a deterministic random stream, a stepping clock, and
the JSON rendering of vectors. Imported as ``common`` when a generator runs as a script."""

from __future__ import annotations

import hashlib
import json
from typing import Any

CLOCK_START = 1_735_689_600.0  # 2025-01-01T00:00:00Z
CLOCK_STEP = 1.25  # a multiple of 1/4 s, so every reading converts to whole ms exactly

Json = dict[str, Any]


class CounterRng:
    """SHA-256(seed || counter as 8 bytes big-endian), counter = 0, 1, 2, ..., as one stream."""

    def __init__(self, seed: bytes) -> None:
        self._seed = seed
        self._counter = 0
        self._buffer = b""

    def __call__(self, size: int) -> bytes:
        while len(self._buffer) < size:
            block = self._seed + self._counter.to_bytes(8, "big")
            self._buffer += hashlib.sha256(block).digest()
            self._counter += 1
        out, self._buffer = self._buffer[:size], self._buffer[size:]
        return out


class SteppingClock:
    """Returns CLOCK_START, then CLOCK_START + CLOCK_STEP, ... (seconds, like time.time)."""

    def __init__(self) -> None:
        self._readings = 0

    def __call__(self) -> float:
        value = CLOCK_START + CLOCK_STEP * self._readings
        self._readings += 1
        return value


def hexed(value: Any) -> Any:
    """Bytes become lowercase hex, recursively; everything else is kept."""
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, dict):
        return {key: hexed(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [hexed(item) for item in value]
    return value


def dump_json(document: Json) -> bytes:
    return (json.dumps(document, indent=2, ensure_ascii=False) + "\n").encode("utf-8")
