"""Option types and input readers shared by the token, log and audit commands.

* ``Duration``: an integer and a unit, ``30d``, ``12h``, ``90m``, ``45s``, ``2w``.
* ``Expiry``: a ``Duration`` or an ISO 8601 date or timestamp (without a UTC offset, UTC).
* ``CommaList``: ``a,b,c`` as a list of non-empty names.
* ``read_token`` / ``load_token``: a token given as its text, ``-`` (stdin) or ``@FILE``.
* ``DidKey``: a ``did:key`` argument, checked for its shape (the library checks the key).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import click

import pds
from pds import capability

from .state import InputError, Timestamp, read_at_most, read_file_at_most, standard_input

__all__ = [
    "CommaList",
    "DidKey",
    "Duration",
    "Expiry",
    "load_token",
    "optional_list",
    "read_token",
    "read_user_text",
]

_DURATION = re.compile(r"(\d{1,9})([smhdw])")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}
# did:key with a base58btc (multibase "z") key: the library parses and checks the key
# itself; this only turns an obviously wrong value into a usage error that names the option.
_DID_KEY = re.compile(r"did:key:z[1-9A-HJ-NP-Za-km-z]{40,120}")
# A token's text: base64url of at most MAX_TOKEN_BYTES, with room for whitespace around it.
MAX_TOKEN_TEXT = 2 * capability.MAX_TOKEN_BYTES


def parse_duration(text: str) -> timedelta | None:
    """``30d`` as a timedelta, or ``None`` if ``text`` is not a duration. A duration longer
    than a ``timedelta`` holds (999999999 days) is ``click.BadParameter`` (exit 2)."""
    match = _DURATION.fullmatch(text.strip())
    if match is None:
        return None
    amount, unit = int(match.group(1)), match.group(2)
    try:
        return timedelta(**{_UNITS[unit]: amount})
    except OverflowError:
        raise click.BadParameter(f"{text!r} is too long a duration") from None


# click >= 8.5 makes ParamType generic; subscripting it would fail on the older clicks that
# pyproject allows, so the type arguments stay implicit (as for Timestamp in state.py).
class Duration(click.ParamType):  # type: ignore[type-arg]
    """A positive duration: an integer and one of s, m, h, d, w (``30d``, ``12h``)."""

    name = "duration"

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> timedelta:
        if isinstance(value, timedelta):
            return value
        duration = parse_duration(str(value))
        if duration is None or duration <= timedelta(0):
            self.fail(
                f"{value!r} is not a duration (an integer and s, m, h, d or w: 30d, 12h)",
                param,
                ctx,
            )
        return duration


class Expiry(click.ParamType):  # type: ignore[type-arg]
    """A duration (``30d``) or an ISO 8601 date or timestamp (without an offset: UTC)."""

    name = "duration|date"

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> timedelta | datetime:
        if isinstance(value, timedelta | datetime):
            return value
        duration = parse_duration(str(value))
        if duration is not None:
            if duration <= timedelta(0):
                self.fail("a duration must be positive", param, ctx)
            return duration
        try:
            datetime.fromisoformat(str(value))
        except ValueError:
            self.fail(
                f"{value!r} is neither a duration (30d, 12h) nor an ISO 8601 date", param, ctx
            )
        # The text, not the datetime: an error then shows what the user typed.
        return Timestamp().convert(str(value), param, ctx)


class CommaList(click.ParamType):  # type: ignore[type-arg]
    """Comma-separated names: ``read,list``. Empty items are refused."""

    name = "a,b,..."

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> list[str]:
        if isinstance(value, list):
            return value
        items = [item.strip() for item in str(value).split(",")]
        if not items or any(not item for item in items):
            self.fail(f"{value!r} is not a comma-separated list of names", param, ctx)
        return items


class DidKey(click.ParamType):  # type: ignore[type-arg]
    """A principal's ``did:key`` (Ed25519, as ``pds key new`` prints it)."""

    name = "did"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> str:
        text = str(value).strip()
        if not _DID_KEY.fullmatch(text):
            self.fail(f"{value!r} is not a did:key (did:key:z6Mk...)", param, ctx)
        return text


def read_user_text(source: str, what: str, limit: int) -> str:
    """The text of ``source``: ``-`` reads stdin, ``@FILE`` reads FILE, anything else is the
    text itself. An unreadable file, or more than ``limit`` bytes, is malformed input (exit
    2); no more than ``limit + 1`` bytes are read."""
    if source == "-":
        label = f"{what} on stdin"
        data = read_at_most(standard_input(what).buffer, limit, label)
    elif source.startswith("@"):
        label = f"{what} file {source[1:]}"
        data = read_file_at_most(Path(source[1:]), limit, label)
    else:
        return source
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise InputError(f"{label} is not UTF-8 text") from None


def read_token(source: str) -> str:
    """A token's text from an argument (the text, ``-`` for stdin, ``@FILE``), stripped."""
    return read_user_text(source, "token", MAX_TOKEN_TEXT).strip()


def load_token(source: str) -> pds.Token:
    """Parse (not verify) a token. Raises ``MalformedToken`` (exit 2)."""
    return pds.Token.from_text(read_token(source))


def optional_list(values: Sequence[str]) -> list[str] | None:
    """A repeated option's values, or ``None`` if it was not given (keep the parent's)."""
    return list(values) if values else None
