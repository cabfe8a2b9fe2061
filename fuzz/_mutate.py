"""Structure-aware mutation: replace one field of a real document by a fuzzed value.

Byte-level mutation of a signed or canonical document rarely keeps it well-formed enough to
reach the code that uses each field, and almost never turns a text field into a list. Here
the input chooses a field of a genuine document (descending into nested maps, and into
canonical msgpack maps carried as bytes, such as a log entry inside an export frame) and a
new value for it, written as canonical msgpack; so every type confusion is two or three
input bytes away.
"""

from __future__ import annotations

from typing import Any

from fuzz._data import Data
from pds import _codec
from pds.errors import PDSError

__all__ = ["fuzzed_value", "replace_field"]

MAX_DEPTH = 3


def fuzzed_value(data: Data) -> Any:
    """A ``chunk`` read as canonical msgpack, or kept as bytes when it is not."""
    raw = data.chunk()
    try:
        return _codec.decode(raw)
    except PDSError:
        return raw


def replace_field(document: dict[str, Any], data: Data, depth: int = 0) -> None:
    """Replace (or, past the last key, add) one field of ``document`` in place."""
    keys = sorted(document)
    index = data.byte() % (len(keys) + 1)
    if index == len(keys):
        document[data.text()] = fuzzed_value(data)
        return
    key = keys[index]
    current = document[key]
    if depth < MAX_DEPTH and data.flag():
        if isinstance(current, dict):
            replace_field(current, data, depth + 1)
            return
        if isinstance(current, bytes):
            try:
                inner = _codec.decode(current)
            except PDSError:
                inner = None
            if isinstance(inner, dict):
                replace_field(inner, data, depth + 1)
                document[key] = _codec.encode(inner)
                return
        if isinstance(current, list) and current:
            position = data.byte() % len(current)
            if isinstance(current[position], dict):
                replace_field(current[position], data, depth + 1)
            else:
                current[position] = fuzzed_value(data)
            return
    document[key] = fuzzed_value(data)
