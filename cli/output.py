"""Printing results: one JSON document with ``--json``, human-friendly text otherwise.

Everything a command prints on success goes through ``emit``, so ``--json`` mode can
promise exactly one JSON document on stdout. Prompts, progress and errors go to stderr.
"""

from __future__ import annotations

import itertools
import json
import sys
import unicodedata
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from types import TracebackType
from typing import Any

import click

import pds

__all__ = [
    "RecordProgress",
    "emit",
    "iso",
    "json_text",
    "pretty_json",
    "printable",
    "record_document",
    "record_info_document",
    "stderr_is_terminal",
    "table",
]


def iso(moment: datetime) -> str:
    """An ISO 8601 UTC timestamp with millisecond precision, e.g. ``2025-01-31T12:00:00.000Z``."""
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def from_ms(ms: int) -> datetime | None:
    """A time in milliseconds since the Unix epoch (as tokens and the log store it), or
    ``None`` if no calendar date has it (tokens may carry times up to 2**63 ms)."""
    try:
        # Exact: no float on the way (``ms / 1000`` loses milliseconds past the 23rd century).
        return _EPOCH + timedelta(milliseconds=ms)
    except (OverflowError, ValueError):
        return None


def iso_ms(ms: int) -> str:
    """``iso`` of a time in milliseconds; past year 9999, the milliseconds themselves."""
    moment = from_ms(ms)
    return f"{ms} ms after 1970" if moment is None else iso(moment)


# Characters that must not reach a terminal as they are: controls (CR, newline, ESC that
# starts ANSI sequences, C1 controls such as CSI), format characters (bidirectional
# overrides, zero-width characters), line and paragraph separators, and lone surrogates
# (from undecodable file names, which stdout could not encode anyway).
_UNPRINTABLE_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Zl", "Zp"})


def printable(text: str) -> str:
    """``text`` safe to print on a terminal as one line: every control, format, line or
    paragraph separator and surrogate character is replaced by its escape (``\\u001b``,
    ``\\U000e0001``). Other characters, backslashes included, are kept as they are.

    Text that a grantee, a token or a file chose (agents, purposes, reasons, collection
    names, record ids, file names) goes through this before it is printed, so it cannot
    move the cursor, rewrite earlier lines, recolour or retitle the terminal, or forge a
    line. ``emit`` applies it to every text line, and the error funnel to every message.
    """
    if text.isprintable():
        # isprintable() is False for every category escaped here (and a few harmless ones,
        # such as non-breaking spaces, which the loop below keeps).
        return text
    escaped: list[str] = []
    for char in text:
        if unicodedata.category(char) in _UNPRINTABLE_CATEGORIES:
            code = ord(char)
            escaped.append(f"\\u{code:04x}" if code <= 0xFFFF else f"\\U{code:08x}")
        else:
            escaped.append(char)
    return "".join(escaped)


def json_text(document: Any) -> str:
    """``document`` as the indented JSON that ``--json`` prints: pure ASCII, every other
    character as a ``\\u`` escape. So the output is valid UTF-8 whatever it holds: a file
    name that is not UTF-8 reaches Python as lone surrogates (``\\udcff``), which would
    otherwise be written out as invalid bytes."""
    return json.dumps(document, indent=2, ensure_ascii=True)


def emit(as_json: bool, document: Mapping[str, Any], text: str | Iterable[str]) -> None:
    """Print the result of a command: ``document`` as JSON, or ``text`` for people.

    Each text item is printed as one line through ``printable``: a newline inside an item
    is shown escaped, so callers pass multi-line blocks as separate items.
    """
    if as_json:
        click.echo(json_text(document))
        return
    lines = [text] if isinstance(text, str) else list(text)
    for line in lines:
        click.echo(printable(line))


def pretty_json(data: Any, indent: str = "") -> list[str]:
    """``data`` as indented JSON lines for people, each prefixed with ``indent`` (non-ASCII
    text kept readable; ``emit`` escapes what a terminal must not see)."""
    rendered = json.dumps(data, indent=2, ensure_ascii=False)
    # split("\n"), not splitlines(): the latter would also break at separators inside
    # strings (U+0085, U+2028, ...), which must stay on their line and be shown escaped.
    return [indent + line for line in rendered.split("\n")]


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    """A plain left-aligned text table, two spaces between columns. Cells go through
    ``printable`` before they are measured, so escaped cells keep the columns aligned."""
    heads = [printable(header) for header in headers]
    cells = [[printable(cell) for cell in row] for row in rows]
    widths = [len(header) for header in heads]
    for row in cells:
        widths = [max(width, len(cell)) for width, cell in zip(widths, row, strict=True)]

    def line(items: Sequence[str]) -> str:
        return "  ".join(item.ljust(width) for item, width in zip(items, widths, strict=True))

    return [line(heads).rstrip()] + [line(row).rstrip() for row in cells]


def record_info_document(info: pds.RecordInfo) -> dict[str, Any]:
    """The JSON shape of a record's metadata (what ``put``, ``list`` and ``delete`` show)."""
    return {
        "record": info.record_id,
        "collection": info.collection,
        "version": info.version,
        "created_at": iso(info.created_at),
        "epoch": info.epoch,
        "deleted": info.deleted,
        "size": info.size,
    }


def record_document(record: pds.Record) -> dict[str, Any]:
    """The JSON shape of one decrypted record version (``get``, ``history``)."""
    return {
        "record": record.record_id,
        "collection": record.collection,
        "version": record.version,
        "created_at": iso(record.created_at),
        "epoch": record.epoch,
        "writer": record.writer,
        "deleted": record.deleted,
        "erased": record.erased,
        "data": record.data,
    }


def stderr_is_terminal() -> bool:
    stream = sys.stderr
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


class RecordProgress:
    """Counts records as a long operation reports them; draws a progress line on stderr
    only when stderr is a terminal and the command is not in ``--json`` mode.

    The total is not known in advance (an export holds every version of every record),
    so the bar shows a running count rather than a percentage.
    """

    def __init__(self, label: str, *, as_json: bool) -> None:
        self.count = 0
        self._label = label
        self._show = not as_json and stderr_is_terminal()
        self._bar: Any = None

    def __enter__(self) -> RecordProgress:
        if self._show:
            self._bar = click.progressbar(
                itertools.count(),
                label=self._label,
                show_pos=True,
                show_eta=False,
                file=sys.stderr,
            )
            self._bar.__enter__()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._bar is not None:
            self._bar.__exit__(exc_type, exc, tb)
            self._bar = None

    @property
    def callback(self) -> Callable[[int], None]:
        """The ``progress=`` callback: pds calls it with the running record count."""
        return self._advance

    def _advance(self, count: int) -> None:
        step = count - self.count
        self.count = count
        if self._bar is not None and step > 0:
            self._bar.update(step)
