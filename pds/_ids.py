"""Names and ids: validation of collection names and record ids, and new random ids."""

from __future__ import annotations

import base64
import re

from pds import _crypto
from pds.errors import FormatError

_ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,127}")
_SEGMENT = r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}"
_COLLECTION_PATTERN = re.compile(rf"{_SEGMENT}(/{_SEGMENT}){{0,7}}")


def check_collection(collection: str) -> str:
    if not isinstance(collection, str) or not _COLLECTION_PATTERN.fullmatch(collection):
        raise FormatError(
            "a collection name is 1-8 '/'-separated segments of letters, digits, '_', '.', '-'"
        )
    return collection


def check_record_id(record_id: str) -> str:
    if not isinstance(record_id, str) or not _ID_PATTERN.fullmatch(record_id):
        raise FormatError("a record id is 1-128 letters, digits, '.', '_', ':' or '-'")
    return record_id


def new_id(rng: _crypto.Rng) -> str:
    """A random 128-bit id as 26 lowercase base32 characters."""
    return base64.b32encode(rng(16)).decode("ascii").rstrip("=").lower()
