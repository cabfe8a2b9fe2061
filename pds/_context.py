"""What a store hands to the vaults it opens: the backend, the host key, time and randomness."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from pds import _crypto
from pds._store.base import Backend
from pds.errors import FormatError, IntegrityError, KeyProviderError, PDSError, WrongKey
from pds.keys import KeyProvider

Clock = Callable[[], float]
"""Seconds since the Unix epoch, like ``time.time``; tests inject a fixed clock."""


HOST_KEY_SUFFIX = ".hostkey"
"""The default host key file is the store's path with this suffix."""


@dataclass(frozen=True, slots=True)
class Context:
    backend: Backend
    host_key: KeyProvider
    clock: Clock
    rng: _crypto.Rng

    def now_ms(self) -> int:
        return int(self.clock() * 1000)

    def host_wrap(self, secret: bytes, context: bytes) -> bytes:
        return call_provider(lambda: self.host_key.wrap(secret, context=context))

    def host_unwrap(self, wrapped: bytes, context: bytes) -> bytes:
        """Unwrap a host share. The host key was checked when the store opened, so a
        share that does not unwrap was changed: ``IntegrityError``."""
        try:
            return call_provider(lambda: self.host_key.unwrap(wrapped, context=context))
        except WrongKey:
            raise IntegrityError("host-share", "a host share failed authentication") from None


def call_provider(operation: Callable[[], bytes]) -> bytes:
    """Run a key provider call; anything it raises that is not a pds error is reported as
    ``KeyProviderError`` without its message, which could hold key material."""
    failed: str | None = None
    try:
        result = operation()
    except PDSError:
        raise
    except Exception as exc:
        failed = type(exc).__name__
    if failed is not None:
        # Raised outside the handler: the provider's exception is not even kept as the
        # suppressed ``__context__``, where a tool that ignores suppression would show it.
        raise KeyProviderError(f"key provider failed ({failed})")
    if not isinstance(result, bytes):
        raise KeyProviderError("key provider returned a non-bytes value")
    return result


MAX_TIME_MS = 253_402_300_799_999
"""9999-12-31T23:59:59.999Z, the last millisecond a ``datetime`` can hold. Tokens may carry
times up to 2**63 ms; pds issues none beyond this one (``check_time_ms``)."""

_LATEST = datetime(9999, 12, 31, 23, 59, 59, 999000, tzinfo=UTC)
_EARLIEST = datetime(1, 1, 1, tzinfo=UTC)
_EARLIEST_MS = -62_135_596_800_000
"""0001-01-01T00:00:00Z in milliseconds since the epoch."""


def check_time_ms(ms: int, what: str) -> int:
    """``ms`` if it is at most ``MAX_TIME_MS``; ``FormatError`` naming ``what`` otherwise.

    A time (or a duration added to one) that no calendar date can show would be signed into
    a token that every later listing of it must still display."""
    if ms > MAX_TIME_MS:
        raise FormatError(f"{what} is after 9999-12-31T23:59:59.999Z")
    return ms


def ms_to_datetime_clamped(ms: int) -> datetime:
    """Milliseconds since the epoch as an aware UTC datetime, a time past year 9999 (which a
    token from elsewhere may carry: its format allows up to 2**63 ms) shown as
    9999-12-31T23:59:59.999Z, the latest ``datetime`` with milliseconds, and one before
    year 1 (a stored time a host rewrote) as 0001-01-01T00:00:00Z. Never raises for an
    integer."""
    if ms > MAX_TIME_MS:
        return _LATEST
    if ms < _EARLIEST_MS:
        return _EARLIEST
    return ms_to_datetime(ms)


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MS = timedelta(milliseconds=1)


def ms_to_datetime(ms: int) -> datetime:
    """Milliseconds since the epoch as an aware UTC datetime, exactly (no float on the way:
    ``ms / 1000`` loses milliseconds past the 23rd century); ``FormatError`` if
    impossible."""
    try:
        return _EPOCH + timedelta(milliseconds=ms)
    except (OverflowError, ValueError, TypeError):
        raise FormatError("a timestamp is out of range") from None


def optional_ms(value: datetime | None) -> int | None:
    return None if value is None else datetime_to_ms(value)


def timedelta_to_ms(value: timedelta) -> int:
    """A duration in whole milliseconds, exactly (rounded down, as ``datetime_to_ms``)."""
    return value // _MS


def datetime_to_ms(value: datetime) -> int:
    if not isinstance(value, datetime):
        raise FormatError("a time must be a timezone-aware datetime")
    if value.utcoffset() is None:  # naive, or a tzinfo that gives no offset
        raise FormatError("datetimes must be timezone-aware")
    return (value - _EPOCH) // _MS
