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
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import msgpack

from pds.errors import FormatError

_INT_MIN = -(2**63)
_INT_MAX = 2**64 - 1

# A decoded document may not nest deeper than this; it bounds recursion on hostile input.
MAX_DEPTH = 64


def _canonical(value: Any, depth: int, allow_bytes: bool = True) -> Any:
    # Exact type checks first (the common case, and the fastest); subclasses and other
    # mappings or sequences fall through to the isinstance checks below.
    kind = type(value)
    if kind is str or value is None or kind is bool:
        return value
    if kind is int:
        if not _INT_MIN <= value <= _INT_MAX:
            raise FormatError("integer out of the 64-bit range")
        return value
    if depth >= MAX_DEPTH and (kind is dict or kind is list) and value:
        raise FormatError("value nests too deeply")
    if kind is dict:
        for key in value:
            if type(key) is not str:
                raise FormatError("map keys must be text")
        # Code point order is UTF-8 byte order, so sorting the str keys is the rule.
        result = {}
        for key in sorted(value):
            item = value[key]
            leaf = type(item)
            # The common leaves (text, in-range integers, bytes where allowed, None) are
            # kept without a call; everything else is checked by the full rules.
            result[key] = (
                item
                if leaf is str
                or (leaf is int and _INT_MIN <= item <= _INT_MAX)
                or (leaf is bytes and allow_bytes)
                or item is None
                else _canonical(item, depth + 1, allow_bytes)
            )
        return result
    if kind is list:
        return [
            item
            if type(item) is str
            or (type(item) is int and _INT_MIN <= item <= _INT_MAX)
            or (type(item) is bytes and allow_bytes)
            else _canonical(item, depth + 1, allow_bytes)
            for item in value
        ]
    if depth > MAX_DEPTH:
        raise FormatError("value nests too deeply")
    if isinstance(value, bytes):
        if not allow_bytes:
            raise FormatError("binary values are not JSON-compatible")
        return value
    if isinstance(value, (bool, str)):
        return value
    if isinstance(value, int):
        if not _INT_MIN <= value <= _INT_MAX:
            raise FormatError("integer out of the 64-bit range")
        return int(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise FormatError("floats must be finite")
        return float(value)
    if isinstance(value, (Mapping, list, tuple)) and value and depth >= MAX_DEPTH:
        raise FormatError("value nests too deeply")
    if isinstance(value, Mapping):
        if not all(isinstance(key, str) for key in value):
            raise FormatError("map keys must be text")
        return {
            str(key): _canonical(value[key], depth + 1, allow_bytes)
            for key in sorted(value, key=str)
        }
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


def _reject_ext(code: int, data: bytes) -> Any:
    raise FormatError("extension types are not canonical")


def _check_tree(value: Any, json_only: bool) -> None:
    """What a plain re-encode cannot see: nesting deeper than ``MAX_DEPTH``, floats that are
    not finite, and (``json_only``) binary values. Iterative, so hostile depth is harmless;
    only containers are stacked."""
    _check_leaf(value, json_only)
    # A stack of iterators, one per open container (at most MAX_DEPTH + 1): pushing every
    # child up front would hold a second copy of a wide array's items.
    stack: list[Any] = []
    if (type(value) is dict or type(value) is list) and value:
        stack.append(iter(value.values() if type(value) is dict else value))
    while stack:
        for child in stack[-1]:
            kind = type(child)
            if kind is dict or kind is list:
                if not child:
                    continue
                if len(stack) >= MAX_DEPTH:  # the child's depth: non-empty past the limit
                    raise FormatError("value nests too deeply")
                stack.append(iter(child.values() if kind is dict else child))
                break
            if kind is float or (json_only and kind is bytes):
                _check_leaf(child, json_only)
        else:
            stack.pop()


def _check_leaf(value: Any, json_only: bool) -> None:
    if type(value) is float and not math.isfinite(value):
        raise FormatError("floats must be finite")
    if json_only and type(value) is bytes:
        raise FormatError("binary values are not JSON-compatible")


def _sorted_pairs(pairs: Sequence[tuple[Any, Any]]) -> dict[Any, Any]:
    result = {}
    previous: str | None = None
    for key, value in pairs:
        if type(key) is not str:
            raise FormatError("map keys must be text")
        # Code point order of str is the UTF-8 byte order the encoding rules name.
        if previous is not None and key <= previous:
            raise FormatError("map keys are not sorted and unique")
        previous = key
        result[key] = value
    return result


def is_version(value: Any, expected: int) -> bool:
    """Whether a decoded version marker is exactly the integer ``expected``.

    Python's ``True == 1`` and ``1.0 == 1`` would let other types pass a plain comparison.
    """
    return type(value) is int and value == expected


def _unpack(
    data: bytes,
    max_size: int,
    pairs_hook: Callable[[list[tuple[Any, Any]]], Any] | None = None,
    list_hook: Callable[[list[Any]], Any] | None = None,
) -> Any:
    """msgpack's C decoder with every limit set; its errors become ``FormatError``."""
    try:
        return msgpack.unpackb(
            data,
            raw=False,
            strict_map_key=True,
            object_pairs_hook=pairs_hook,
            list_hook=list_hook,
            ext_hook=_reject_ext,
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
    except MemoryError:
        # Each tiny container is a Python object many times its one byte: a document of
        # empty maps can ask for gigabytes.
        raise FormatError("the document takes too much memory to decode") from None


def decode_typed(data: bytes, *, max_size: int) -> Any:
    """Decode canonical msgpack for a parser that checks the rest itself: the exact sorted
    key list of every map (``tuple(doc) == keys``) and the type of every value, floats refused.

    This is ``decode`` without its Python hooks and tree walk (the parsers of tokens and
    invocations, the hottest path, visit every value anyway): msgpack's C decoder bounds
    the nesting, and a plain re-encode in C reproduces the input only if every encoding
    was minimal and no map key repeated. Raises ``FormatError``."""
    if type(data) is not bytes:
        raise FormatError("expected bytes")
    if len(data) > max_size:
        raise FormatError("document too large")
    value = _unpack(data, max_size)
    try:
        canonical = msgpack.packb(value, use_bin_type=True, use_single_float=False)
    except (OverflowError, ValueError, TypeError) as exc:  # msgpack's own nesting limit
        raise FormatError("not a valid msgpack document") from exc
    if canonical != data:
        raise FormatError("not in canonical form")
    return value


def sparse_containers(data: bytes) -> int:
    """A container budget for a document not yet authenticated whose maps and arrays each
    hold at least one value of a dozen bytes or more (a response, a revocation list): one
    per 16 bytes, so its decoding takes memory of the order of its size, not ~150 times."""
    return len(data) // 16 + 16


def decode(
    data: bytes,
    *,
    max_size: int = 64 * 1024 * 1024,
    json_only: bool = False,
    max_containers: int | None = None,
) -> Any:
    """Decode canonical msgpack strictly. Raises ``FormatError`` on anything non-canonical
    (and, with ``json_only``, on binary values), or with more than ``max_containers`` maps
    and arrays (counted while decoding: a bound on the memory an input that is not
    authenticated yet can take, each container being a Python object of ~60-200 bytes)."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise FormatError("expected bytes")
    data = bytes(data)
    if len(data) > max_size:
        raise FormatError("document too large")
    # Every map's keys are checked sorted (so unique) while decoding; then a plain re-encode
    # in C reproduces the input exactly when every other encoding was minimal (shortest
    # integers, float64, no extension types). The tree walk covers the rest.
    pairs_hook: Callable[[Sequence[tuple[Any, Any]]], dict[Any, Any]] = _sorted_pairs
    list_hook = None
    if max_containers is not None:
        budget = [max_containers]

        def spend() -> None:
            budget[0] -= 1
            if budget[0] < 0:
                raise FormatError("the document holds too many maps and arrays")

        def pairs_hook(pairs: Sequence[tuple[Any, Any]]) -> dict[Any, Any]:
            spend()
            return _sorted_pairs(pairs)

        def list_hook(items: list[Any]) -> list[Any]:
            spend()
            return items

    value = _unpack(data, max_size, pairs_hook, list_hook)
    _check_tree(value, json_only)
    try:
        canonical = msgpack.packb(value, use_bin_type=True, use_single_float=False)
    except (OverflowError, ValueError, TypeError) as exc:  # defensive: msgpack's own limits
        raise FormatError("not in canonical form") from exc
    if canonical != data:
        raise FormatError("not in canonical form")
    return value
