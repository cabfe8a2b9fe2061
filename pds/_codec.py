"""Canonical msgpack: the one encoding for everything pds signs, hashes or stores.

Canonical form (see ``docs/spec/encoding.md``):

* maps have text keys, sorted by their UTF-8 bytes, no duplicates;
* integers use the shortest msgpack encoding and fit in a signed or unsigned 64-bit range;
* floats are always float64 and finite;
* text is ``str`` (UTF-8), binary is ``bin``; no extension types, no timestamps.

``decode`` is strict: it rejects trailing bytes, duplicate keys and any encoding that
``encode`` would not have produced, by re-encoding and comparing bytes.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import msgpack

from pds.errors import FormatError

_INT_MIN = -(2**63)
_INT_MAX = 2**64 - 1

# A decoded document may not nest deeper than this; it bounds recursion on hostile input.
MAX_DEPTH = 64


def _canonical(value: Any, depth: int, allow_bytes: bool = True) -> Any:
    if depth > MAX_DEPTH:
        raise FormatError("value nests too deeply")
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, bytes):
        if not allow_bytes:
            raise FormatError("binary values are not JSON-compatible")
        return value
    if isinstance(value, int):
        if not _INT_MIN <= value <= _INT_MAX:
            raise FormatError("integer out of the 64-bit range")
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise FormatError("floats must be finite")
        return value
    if isinstance(value, Mapping):
        items = []
        for key, item in value.items():
            if not isinstance(key, str):
                raise FormatError("map keys must be text")
            items.append((key.encode("utf-8"), key, _canonical(item, depth + 1, allow_bytes)))
        items.sort(key=lambda entry: entry[0])
        return {key: item for _, key, item in items}
    if isinstance(value, (list, tuple)):
        return [_canonical(item, depth + 1, allow_bytes) for item in value]
    raise FormatError(f"cannot encode a value of type {type(value).__name__}")


def encode(value: Any, *, json_only: bool = False) -> bytes:
    """Encode ``value`` canonically. Raises ``FormatError`` for unsupported values.

    With ``json_only``, binary values are refused too (record data must be JSON-compatible).
    """
    canonical = _canonical(value, 0, not json_only)
    try:
        return msgpack.packb(
            canonical,
            use_bin_type=True,
            use_single_float=False,
            strict_types=False,
        )
    except (OverflowError, ValueError, TypeError) as exc:  # defensive: msgpack's own limits
        raise FormatError("value cannot be encoded") from exc


def _reject_duplicates(pairs: Sequence[tuple[Any, Any]]) -> dict[Any, Any]:
    result = dict(pairs)
    if len(result) != len(pairs):
        raise FormatError("duplicate map key")
    return result


def is_version(value: Any, expected: int) -> bool:
    """Whether a decoded version marker is exactly the integer ``expected``.

    Python's ``True == 1`` and ``1.0 == 1`` would let other types pass a plain comparison.
    """
    return type(value) is int and value == expected


def decode(data: bytes, *, max_size: int = 64 * 1024 * 1024, json_only: bool = False) -> Any:
    """Decode canonical msgpack strictly. Raises ``FormatError`` on anything non-canonical
    (and, with ``json_only``, on binary values)."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise FormatError("expected bytes")
    data = bytes(data)
    if len(data) > max_size:
        raise FormatError("document too large")
    try:
        value = msgpack.unpackb(
            data,
            raw=False,
            strict_map_key=True,
            object_pairs_hook=_reject_duplicates,
            max_bin_len=max_size,
            max_str_len=max_size,
            max_array_len=max_size,
            max_map_len=max_size,
            max_ext_len=0,
        )
    except FormatError:
        raise
    except (
        msgpack.ExtraData,
        msgpack.FormatError,
        msgpack.StackError,
        ValueError,
        TypeError,
    ) as exc:
        raise FormatError("not a valid msgpack document") from exc
    except RecursionError as exc:
        raise FormatError("value nests too deeply") from exc
    if encode(value, json_only=json_only) != data:
        raise FormatError("not in canonical form")
    return value
