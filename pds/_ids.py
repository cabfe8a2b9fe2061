"""Names and ids: validation of collection names and record ids, and new random ids."""

from __future__ import annotations

import base64
import re
from collections.abc import Iterable, Mapping
from typing import Any

from pds import _crypto
from pds.errors import FormatError

_ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,127}")
_SEGMENT = r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}"
_COLLECTION_PATTERN = re.compile(rf"{_SEGMENT}(/{_SEGMENT}){{0,7}}")
MAX_COLLECTION = 256
"""Characters in a collection name: a token's text items (patterns, a sealed key's
collection) hold at most 256, so every collection can be granted by name."""


def check_collection(collection: str) -> str:
    if (
        not isinstance(collection, str)
        or len(collection) > MAX_COLLECTION
        or not _COLLECTION_PATTERN.fullmatch(collection)
    ):
        raise FormatError(
            "a collection name is 1-8 '/'-separated segments of letters, digits, '_', '.', "
            f"'-', at most {MAX_COLLECTION} characters in all"
        )
    return collection


def check_items(value: Any, what: str) -> list[Any]:
    """A list from an iterable argument of several items. A string (which would iterate
    as its characters), a mapping, bytes or a non-iterable raise ``FormatError``."""
    if isinstance(value, str | bytes | Mapping) or not isinstance(value, Iterable):
        raise FormatError(f"{what} must be a list (or another iterable) of items")
    return list(value)


def check_text_items(value: Any, what: str) -> list[str]:
    """``check_items`` whose items must all be text."""
    items = check_items(value, what)
    if not all(isinstance(item, str) for item in items):
        raise FormatError(f"{what} must be text items")
    return items


def check_record_id(record_id: str) -> str:
    if not isinstance(record_id, str) or not _ID_PATTERN.fullmatch(record_id):
        raise FormatError("a record id is 1-128 letters, digits, '.', '_', ':' or '-'")
    return record_id


def new_id(rng: _crypto.Rng) -> str:
    """A random 128-bit id as 26 lowercase base32 characters."""
    return base64.b32encode(rng(16)).decode("ascii").rstrip("=").lower()


_CURSOR_PATTERN = re.compile(r"[0-9]{1,18}\.[0-9]{1,18}")


def parse_cursor(cursor: str) -> tuple[int, int]:
    """A listing cursor ``"<created_at>.<seq>"``: ASCII digits only, each below 10**18."""
    if not isinstance(cursor, str) or not _CURSOR_PATTERN.fullmatch(cursor):
        raise FormatError("malformed list cursor")
    created_at, seq = cursor.split(".")
    return int(created_at), int(seq)


_SERVED_CURSOR_PATTERN = re.compile(r"[A-Za-z0-9_-]{43}")


def check_served_cursor(cursor: object) -> str:
    """A cursor a host returned with a listing page served by token: opaque to the holder,
    43 base64url characters (``docs/spec/token.md``). Checks the shape only."""
    if not isinstance(cursor, str) or not _SERVED_CURSOR_PATTERN.fullmatch(cursor):
        raise FormatError("malformed list cursor")
    return cursor
