"""Canonical msgpack (``pds._codec``): round trips, and strict decoding.

Everything pds signs or hashes goes through this codec, so two rules matter: ``encode``
is a function of the value alone (one value, one byte string), and ``decode`` accepts
exactly the bytes ``encode`` produces and raises ``FormatError`` (never anything else) for
every other input.
"""

from __future__ import annotations

import contextlib
import io
import math
import struct
import threading
from typing import Any

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import pds
from pds import _codec, _envelope, _export
from pds.errors import FormatError

INT_MIN, INT_MAX = -(2**63), 2**64 - 1

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(INT_MIN, INT_MAX)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text()
)
json_values = st.recursive(
    json_scalars,
    lambda children: (
        st.lists(children, max_size=6) | st.dictionaries(st.text(max_size=12), children, max_size=6)
    ),
    max_leaves=40,
)
any_values = st.recursive(
    json_scalars | st.binary(max_size=40),
    lambda children: (
        st.lists(children, max_size=6) | st.dictionaries(st.text(max_size=12), children, max_size=6)
    ),
    max_leaves=40,
)


def same(a: Any, b: Any) -> bool:
    """Equality that also tells -0.0 from 0.0 and floats from ints."""
    if isinstance(a, float) or isinstance(b, float):
        return type(a) is type(b) and a == b and math.copysign(1.0, a) == math.copysign(1.0, b)
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list | tuple) and isinstance(b, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    return type(a) is type(b) and a == b


def decode_or_format_error(data: bytes) -> Any:
    """Decode; the only exception allowed is FormatError. Returns None on FormatError."""
    try:
        value = _codec.decode(data)
    except FormatError:
        return None
    # Whatever decodes is canonical: it re-encodes to exactly the input.
    assert _codec.encode(value) == data
    return value


# -- round trips -----------------------------------------------------------------------


@given(any_values)
def test_round_trip(value: Any) -> None:
    encoded = _codec.encode(value)
    decoded = _codec.decode(encoded)
    assert same(decoded, value)
    assert _codec.encode(decoded) == encoded


@given(json_values)
def test_json_only_round_trip(value: Any) -> None:
    encoded = _codec.encode(value, json_only=True)
    assert encoded == _codec.encode(value)
    assert same(_codec.decode(encoded), value)


@given(st.dictionaries(st.text(max_size=8), json_values, min_size=2, max_size=8), st.randoms())
def test_encoding_does_not_depend_on_key_order(value: dict[str, Any], rnd: Any) -> None:
    items = list(value.items())
    rnd.shuffle(items)
    assert _codec.encode(dict(items)) == _codec.encode(value)


@given(st.dictionaries(st.text(max_size=8), st.integers(0, 9), min_size=2, max_size=8))
def test_keys_are_sorted_by_utf8_bytes(value: dict[str, int]) -> None:
    decoded = _codec.decode(_codec.encode(value))
    keys = list(decoded)
    assert keys == sorted(keys, key=lambda k: k.encode("utf-8"))


def test_keys_of_one_to_four_utf8_bytes_sort_bytewise() -> None:
    value = {"\U0001f600": 1, "\ue000": 2, "z": 3, "é": 4}
    assert list(_codec.decode(_codec.encode(value))) == ["z", "é", "\ue000", "\U0001f600"]


@pytest.mark.parametrize(
    ("value", "encoded"),
    [
        (None, b"\xc0"),
        (True, b"\xc3"),
        (False, b"\xc2"),
        (0, b"\x00"),
        (127, b"\x7f"),
        (128, b"\xcc\x80"),
        (-1, b"\xff"),
        (-33, b"\xd0\xdf"),
        (2**64 - 1, b"\xcf" + b"\xff" * 8),
        (-(2**63), b"\xd3\x80" + b"\x00" * 7),
        (1.5, b"\xcb" + struct.pack(">d", 1.5)),
        ("a", b"\xa1a"),
        (b"a", b"\xc4\x01a"),
        ([], b"\x90"),
        ({}, b"\x80"),
        ({"b": 1, "a": 2}, b"\x82\xa1a\x02\xa1b\x01"),
    ],
)
def test_known_encodings(value: Any, encoded: bytes) -> None:
    assert _codec.encode(value) == encoded
    assert same(_codec.decode(encoded), value)


# -- values encode refuses -------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [
        2**64,
        -(2**63) - 1,
        float("nan"),
        float("inf"),
        -float("inf"),
        {1: "x"},
        {b"k": "x"},
        {("a",): 1},
        {1, 2},
        object(),
        1j,
        {"a": [{"b": float("nan")}]},
    ],
    ids=repr,
)
def test_encode_refuses(value: Any) -> None:
    with pytest.raises(FormatError):
        _codec.encode(value)


@pytest.mark.parametrize("value", [{"a": [b"x"]}, {"a": b"x"}, [b"x"], b"x"], ids=repr)
def test_json_only_refuses_binary(value: Any) -> None:
    with pytest.raises(FormatError):
        _codec.encode(value, json_only=True)


def _reference(value: Any) -> Any:
    """The canonical form by its definition, slowly: every map's keys sorted by their
    UTF-8 bytes, recursively (msgpack already picks the shortest encodings)."""
    if isinstance(value, dict):
        return {k: _reference(value[k]) for k in sorted(value, key=lambda k: k.encode())}
    if isinstance(value, list):
        return [_reference(item) for item in value]
    return value


@given(any_values)
def test_encoding_matches_the_definition(value: Any) -> None:
    # The encoder's fast paths (leaves kept without a call) must not change a byte.
    expected = msgpack.packb(_reference(value), use_bin_type=True, use_single_float=False)
    assert _codec.encode(value) == expected


def _nested(depth: int) -> Any:
    value: Any = 0
    for _ in range(depth):
        value = [value]
    return value


def test_nesting_limit() -> None:
    limit = _codec.MAX_DEPTH
    assert _codec.decode(_codec.encode(_nested(limit))) == _nested(limit)
    with pytest.raises(FormatError):
        _codec.encode(_nested(limit + 1))
    too_deep = b"\x91" * (limit + 1) + b"\x00"
    with pytest.raises(FormatError):
        _codec.decode(too_deep)
    with pytest.raises(FormatError):
        _codec.decode(b"\x91" * 100_000 + b"\x00")


def test_cyclic_value_is_refused() -> None:
    value: list[Any] = []
    value.append(value)
    with pytest.raises(FormatError):
        _codec.encode(value)


# -- strict decoding -------------------------------------------------------------------


@given(any_values, st.binary(min_size=1, max_size=16))
def test_trailing_bytes_are_refused(value: Any, extra: bytes) -> None:
    with pytest.raises(FormatError):
        _codec.decode(_codec.encode(value) + extra)


@given(any_values, st.data())
def test_truncated_encodings_are_refused(value: Any, data: st.DataObject) -> None:
    encoded = _codec.encode(value)
    cut = data.draw(st.integers(0, len(encoded) - 1))
    with pytest.raises(FormatError):
        _codec.decode(encoded[:cut])


@given(st.text(max_size=10), json_values, json_values)
def test_duplicate_keys_are_refused(key: str, first: Any, second: Any) -> None:
    packed_key = msgpack.packb(key)
    raw = b"\x82" + packed_key + _codec.encode(first) + packed_key + _codec.encode(second)
    with pytest.raises(FormatError):
        _codec.decode(raw)


@given(st.lists(st.text(max_size=8), min_size=2, max_size=6, unique=True))
def test_unsorted_keys_are_refused(keys: list[str]) -> None:
    ordered = sorted(keys, key=lambda k: k.encode("utf-8"))
    unsorted = ordered[::-1]
    raw = bytes([0x80 | len(keys)]) + b"".join(msgpack.packb(k) + b"\x00" for k in unsorted)
    with pytest.raises(FormatError):
        _codec.decode(raw)
    canonical = bytes([0x80 | len(keys)]) + b"".join(msgpack.packb(k) + b"\x00" for k in ordered)
    assert _codec.decode(canonical) == dict.fromkeys(keys, 0)


_INT_FORMATS = [
    (b"\xcc", ">B", 0, 2**8 - 1),
    (b"\xcd", ">H", 0, 2**16 - 1),
    (b"\xce", ">I", 0, 2**32 - 1),
    (b"\xcf", ">Q", 0, 2**64 - 1),
    (b"\xd0", ">b", -(2**7), 2**7 - 1),
    (b"\xd1", ">h", -(2**15), 2**15 - 1),
    (b"\xd2", ">i", -(2**31), 2**31 - 1),
    (b"\xd3", ">q", -(2**63), 2**63 - 1),
]


@given(st.data())
def test_non_minimal_integers_are_refused(data: st.DataObject) -> None:
    prefix, fmt, low, high = data.draw(st.sampled_from(_INT_FORMATS))
    value = data.draw(st.integers(low, high))
    raw = prefix + struct.pack(fmt, value)
    if _codec.encode(value) == raw:
        assert _codec.decode(raw) == value
    else:
        with pytest.raises(FormatError):
            _codec.decode(raw)


@given(st.text(max_size=31))
def test_non_minimal_string_headers_are_refused(text: str) -> None:
    body = text.encode("utf-8")
    for raw in (
        b"\xd9" + struct.pack(">B", len(body)) + body,
        b"\xda" + struct.pack(">H", len(body)) + body,
        b"\xdb" + struct.pack(">I", len(body)) + body,
    ):
        if raw != _codec.encode(text):
            with pytest.raises(FormatError):
                _codec.decode(raw)


@given(st.lists(st.integers(0, 100), max_size=15))
def test_non_minimal_array_headers_are_refused(items: list[int]) -> None:
    body = b"".join(_codec.encode(i) for i in items)
    for raw in (
        b"\xdc" + struct.pack(">H", len(items)) + body,
        b"\xdd" + struct.pack(">I", len(items)) + body,
    ):
        with pytest.raises(FormatError):
            _codec.decode(raw)


@given(st.floats(width=32, allow_nan=False))
def test_float32_is_refused(value: float) -> None:
    with pytest.raises(FormatError):
        _codec.decode(b"\xca" + struct.pack(">f", value))


@pytest.mark.parametrize("value", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_float64_is_refused(value: float) -> None:
    with pytest.raises(FormatError):
        _codec.decode(b"\xcb" + struct.pack(">d", value))


@pytest.mark.parametrize(
    "raw",
    [
        b"\xd4\x01\x00",  # fixext 1
        b"\xd6\xff\x00\x00\x00\x00",  # timestamp 32
        b"\xc7\x00\x05",  # ext 8, empty
        b"\xc1",  # never used
        b"\xa2\xff\xfe",  # invalid UTF-8 text
        b"\x81\x01\x02",  # integer map key
        b"\x81\xc4\x01k\x02",  # binary map key
        b"\x81\x90\x02",  # array map key
        b"",
    ],
    ids=repr,
)
def test_invalid_documents_are_refused(raw: bytes) -> None:
    with pytest.raises(FormatError):
        _codec.decode(raw)


@pytest.mark.parametrize("raw", [b"\xdd\x03\xff\xff\xff", b"\xdf\x03\xff\xff\xff"])
def test_huge_declared_lengths_are_refused(raw: bytes) -> None:
    with pytest.raises(FormatError):
        _codec.decode(raw)


def test_size_limit_and_input_type() -> None:
    encoded = _codec.encode("x" * 100)
    assert _codec.decode(encoded, max_size=len(encoded)) == "x" * 100
    with pytest.raises(FormatError):
        _codec.decode(encoded, max_size=len(encoded) - 1)
    for wrong in ("text", 5, None, ["\x00"]):
        with pytest.raises(FormatError):
            _codec.decode(wrong)  # type: ignore[arg-type]
    # Annotated ``bytes``, but any bytes-like object is accepted at run time.
    assert _codec.decode(bytearray(b"\x01")) == 1  # type: ignore[arg-type]
    assert _codec.decode(memoryview(b"\x01")) == 1  # type: ignore[arg-type]


@settings(max_examples=500)
@given(st.binary(max_size=64))
def test_random_bytes_raise_only_format_error(raw: bytes) -> None:
    decode_or_format_error(raw)


@settings(max_examples=300)
@given(any_values, st.data())
def test_mutated_encodings_raise_only_format_error(value: Any, data: st.DataObject) -> None:
    encoded = bytearray(_codec.encode(value))
    for _ in range(data.draw(st.integers(1, 3))):
        position = data.draw(st.integers(0, len(encoded) - 1))
        encoded[position] ^= data.draw(st.integers(1, 255))
    decode_or_format_error(bytes(encoded))


# -- decode_typed: the hot-path decoder of tokens and invocations ----------------------
#
# It leaves two checks to its callers, whose parsers type every value: the key order of
# each map (``has_keys``) and non-finite floats (no float is a valid token value). Every
# other refusal of ``decode`` holds for it too.


def _typed(raw: bytes) -> Any:
    return _codec.decode_typed(raw, max_size=1 << 20)


@given(any_values)
def test_typed_round_trip(value: Any) -> None:
    assert _typed(_codec.encode(value)) == value


@given(any_values, st.binary(min_size=1, max_size=16))
def test_typed_refuses_trailing_bytes(value: Any, extra: bytes) -> None:
    with pytest.raises(FormatError):
        _typed(_codec.encode(value) + extra)


@given(any_values, st.data())
def test_typed_refuses_truncated_encodings(value: Any, data: st.DataObject) -> None:
    encoded = _codec.encode(value)
    with pytest.raises(FormatError):
        _typed(encoded[: data.draw(st.integers(0, len(encoded) - 1))])


@given(st.text(max_size=10), json_values, json_values)
def test_typed_refuses_duplicate_keys(key: str, first: Any, second: Any) -> None:
    packed_key = msgpack.packb(key)
    raw = b"\x82" + packed_key + _codec.encode(first) + packed_key + _codec.encode(second)
    with pytest.raises(FormatError):
        _typed(raw)


@given(st.lists(st.text(max_size=8), min_size=2, max_size=6, unique=True))
def test_typed_leaves_key_order_to_the_parser(keys: list[str]) -> None:
    """decode_typed keeps the encoded key order: the parsers compare it with the canonical
    key tuple of their map."""
    ordered = tuple(sorted(keys, key=lambda k: k.encode("utf-8")))
    unsorted = ordered[::-1]
    raw = bytes([0x80 | len(keys)]) + b"".join(msgpack.packb(k) + b"\x00" for k in unsorted)
    decoded = _typed(raw)
    assert type(decoded) is dict
    assert tuple(decoded) == unsorted != ordered


@given(st.data())
def test_typed_refuses_non_minimal_integers(data: st.DataObject) -> None:
    prefix, fmt, low, high = data.draw(st.sampled_from(_INT_FORMATS))
    value = data.draw(st.integers(low, high))
    raw = prefix + struct.pack(fmt, value)
    if _codec.encode(value) == raw:
        assert _typed(raw) == value
    else:
        with pytest.raises(FormatError):
            _typed(raw)


@pytest.mark.parametrize(
    "raw",
    [
        b"\xd9\x01a",  # str 8 for a 1-byte string
        b"\xdc\x00\x01\x01",  # array 16 for one item
        b"\xca\x3f\x80\x00\x00",  # float32
        b"\xd4\x01\x00",  # fixext 1
        b"\xc1",  # never used
        b"\xa2\xff\xfe",  # invalid UTF-8 text
        b"\x81\x01\x02",  # integer map key
        b"\x91" * 100_000 + b"\x00",  # nesting beyond msgpack's own bound
        b"\xdd\x03\xff\xff\xff",  # huge declared length
        b"",
    ],
    ids=repr,
)
def test_typed_refuses_invalid_documents(raw: bytes) -> None:
    with pytest.raises(FormatError):
        _typed(raw)


def test_typed_size_limit_and_input_type() -> None:
    encoded = _codec.encode("x" * 100)
    with pytest.raises(FormatError):
        _codec.decode_typed(encoded, max_size=len(encoded) - 1)
    for wrong in ("text", 5, None, bytearray(b"\x01")):
        with pytest.raises(FormatError):
            _codec.decode_typed(wrong, max_size=100)  # type: ignore[arg-type]


@settings(max_examples=500)
@given(st.binary(max_size=64))
def test_typed_random_bytes_raise_only_format_error(raw: bytes) -> None:
    # Any other exception type fails the test.
    with contextlib.suppress(FormatError):
        _typed(raw)


# -- record bindings (packed by a reused per-thread packer) ---------------------------


def _binding_fields(n: int) -> tuple[str, str, str, int, int, bytes, bool]:
    return (
        f"v{n}",
        "a/é" * (n % 3 + 1),
        f"r{n}",
        n * 7919 % 2**63,
        n % 5,
        bytes([n % 256]) * 16,
        n % 2 == 1,
    )


def test_a_binding_is_the_canonical_encoding_of_its_fields_in_every_thread() -> None:
    """``binding`` packs with a packer kept per thread: each result is still exactly the
    canonical encoding of its fields, in threads packing at the same time, and after a
    pack that failed half-way (a lone surrogate cannot be UTF-8)."""
    with pytest.raises(FormatError):
        _envelope.binding("v", "\ud800", "r", 1, 1, b"b", False)
    wrong: list[int] = []

    def pack(offset: int) -> None:
        for n in range(offset, offset + 2_000):
            fields = _binding_fields(n)
            if _envelope.binding(*fields) != _codec.encode([_envelope.RECORD_LABEL, *fields]):
                wrong.append(n)

    threads = [threading.Thread(target=pack, args=(k * 2_000,)) for k in range(4)]
    for thread in threads:
        thread.start()
    pack(8_000)
    for thread in threads:
        thread.join()
    assert wrong == []
    top = ("v", "c", "r", 2**63 - 1, 2**63 - 1, b"", True)
    assert _envelope.binding(*top) == _codec.encode([_envelope.RECORD_LABEL, *top])


def test_a_container_budget_bounds_a_document_of_tiny_maps() -> None:
    """Each empty map is one byte of input and a Python object of ~100: a document that is
    not authenticated yet is decoded with a budget of containers, counted while decoding."""
    flood = b"\xdc" + struct.pack(">H", 5000) + b"\x80" * 5000  # array16 of 5000 empty maps
    assert _codec.decode(flood) == [{}] * 5000
    assert _codec.decode(flood, max_containers=5001) == [{}] * 5000
    with pytest.raises(FormatError, match="too many maps and arrays"):
        _codec.decode(flood, max_containers=1000)
    nested = msgpack.packb([[1, [2]], {"a": [3]}])
    assert _codec.decode(nested, max_containers=5) == [[1, [2]], {"a": [3]}]
    with pytest.raises(FormatError):
        _codec.decode(nested, max_containers=4)


def test_running_out_of_memory_while_decoding_is_a_format_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def exhausted(*args: Any, **kwargs: Any) -> Any:
        raise MemoryError

    monkeypatch.setattr(msgpack, "unpackb", exhausted)
    with pytest.raises(FormatError, match="too much memory"):
        _codec.decode(b"\x80")


def test_an_export_frame_of_tiny_maps_is_refused_before_it_grows(tmp_path: Any) -> None:
    """An export file is authenticated only at its end: its frames are decoded with a small
    container budget (a crafted frame of empty maps would take ~150 times its size)."""
    frame = b"\xdd" + struct.pack(">I", 100_000) + b"\x80" * 100_000
    crafted = _export.MAGIC + struct.pack(">I", len(frame)) + frame
    key_file = tmp_path / "owner.key"
    pds.SymmetricKey.create_file(key_file)
    with pds.open_store(tmp_path / "s.db") as store:
        with pytest.raises(FormatError, match="too many maps and arrays"):
            store.import_vault(io.BytesIO(crafted), key_file=key_file)
        assert store.list_vaults() == []


def test_sealing_to_a_low_order_key_is_a_format_error() -> None:
    """libsodium refuses a zero shared secret; the caller gets a pds error, not PyNaCl's."""
    from pds import _crypto

    for recipient in (bytes(32), b"\x01" + bytes(31)):
        with pytest.raises(FormatError, match="not a usable X25519"):
            _crypto.seal(b"secret", recipient, lambda n: bytes(range(n)))


def test_host_responses_and_revocation_lists_are_decoded_on_a_container_budget(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A grantee parses the host's response, and an auditor a package's revocation list,
    before anything in them is authenticated: both decode on a container budget."""
    from pds import audit
    from pds.invocation import Response

    budgets: list[int | None] = []
    original = _codec.decode

    def spy(data: bytes, **options: Any) -> Any:
        budgets.append(options.get("max_containers"))
        return original(data, **options)

    monkeypatch.setattr(_codec, "decode", spy)
    flood = b"\xdd" + struct.pack(">I", 70_000) + b"\x80" * 70_000
    with pytest.raises(FormatError):
        Response.from_bytes(flood)
    assert budgets == [_codec.sparse_containers(flood)] and _codec.sparse_containers(flood) < 70_000
    budgets.clear()
    listing = msgpack.packb({"body": flood, "sig": bytes(64)}, use_bin_type=True)
    with pytest.raises(FormatError, match="not a revocation list"):
        audit._revocations(listing, "v", bytes(32))
    assert budgets == [1, _codec.sparse_containers(flood)]
