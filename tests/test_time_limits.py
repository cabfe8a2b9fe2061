"""Times that no ``datetime`` can show (past 9999-12-31T23:59:59.999Z): pds issues no grant
or delegation carrying one (``FormatError``), and listing a store that holds one (made by
an earlier pds, or elsewhere) still works."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest

import pds
from pds import errors
from pds._context import (
    MAX_TIME_MS,
    check_time_ms,
    datetime_to_ms,
    ms_to_datetime,
    ms_to_datetime_clamped,
)

LATEST = datetime(9999, 12, 31, 23, 59, 59, 999000, tzinfo=UTC)


def _grant(vault: pds.Vault, audience: str, **overrides: object) -> pds.Token:
    arguments: dict[str, object] = {
        "collections": ["health"],
        "purpose": "care",
        "expires": timedelta(days=30),
        "delegable": 1,
    }
    arguments.update(overrides)
    return vault.grant(audience, **arguments)  # type: ignore[arg-type]


def test_check_time_ms_and_the_clamp() -> None:
    assert check_time_ms(MAX_TIME_MS, "expires") == MAX_TIME_MS
    with pytest.raises(errors.FormatError, match="expires is after 9999-12-31"):
        check_time_ms(MAX_TIME_MS + 1, "expires")
    assert ms_to_datetime_clamped(2**63 - 1) == LATEST
    assert ms_to_datetime_clamped(MAX_TIME_MS + 1) == LATEST
    assert ms_to_datetime_clamped(0) == datetime(1970, 1, 1, tzinfo=UTC)
    # Exact to the millisecond up to the last one (a float division lost some past the
    # 23rd century: 9999-12-31T23:59:59.999 came back as ...59.998993).
    assert ms_to_datetime(MAX_TIME_MS) == LATEST == ms_to_datetime_clamped(MAX_TIME_MS)


@pytest.mark.parametrize(
    "ms", [0, 1, 1_735_696_800_123, 7_258_118_400_001, 100_000_000_000_007, MAX_TIME_MS]
)
def test_milliseconds_and_datetimes_convert_exactly(ms: int) -> None:
    moment = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(milliseconds=ms)
    assert ms_to_datetime(ms) == moment
    assert datetime_to_ms(moment) == ms
    assert datetime_to_ms(moment.astimezone(timezone(timedelta(hours=-9)))) == ms
    # A microsecond under the next millisecond is still this one.
    assert datetime_to_ms(moment + timedelta(microseconds=999)) == ms


@pytest.mark.parametrize(
    "overrides",
    [
        {"not_before": datetime(9999, 12, 31, tzinfo=UTC)},  # + 30 days: past year 9999
        {"expires": timedelta(days=999_999_999)},
        {"defer": timedelta(days=999_999_999)},
    ],
)
def test_grant_refuses_times_past_year_9999(vault: pds.Vault, overrides: dict[str, object]) -> None:
    holder = pds.PrincipalKey.generate()
    size = vault.log_size()
    with pytest.raises(errors.FormatError, match="after 9999-12-31"):
        _grant(vault, holder.did, **overrides)
    assert vault.grants() == []
    assert vault.log_size() == size


@pytest.mark.parametrize(
    "overrides",
    [{"expires": timedelta(days=999_999_999)}, {"defer": timedelta(days=999_999_999)}],
)
def test_delegate_refuses_times_past_year_9999(
    vault: pds.Vault, overrides: dict[str, object]
) -> None:
    holder = pds.PrincipalKey.generate()
    token = _grant(vault, holder.did)
    grantee = pds.Grantee(holder)
    with pytest.raises(errors.FormatError, match="after 9999-12-31"):
        grantee.delegate(token, to=pds.PrincipalKey.generate().did, **overrides)  # type: ignore[arg-type]


def test_grants_lists_a_stored_time_past_year_9999(vault: pds.Vault, store_path: Path) -> None:
    holder = pds.PrincipalKey.generate()
    token = _grant(vault, holder.did)
    # A link as an earlier pds issued it (--not-before 9999-12-31 --expires 30d).
    with sqlite3.connect(store_path) as db:
        db.execute("UPDATE links SET expires = ? WHERE link_id = ?", (2**62, token.link_id))
    db.close()
    vault.lock()  # locked, the list shows the stored rows (unlocked, each link's own bytes)
    (info,) = vault.grants()
    assert info.expires == LATEST
    assert info.status == "active"


def test_durations_are_exact_milliseconds(vault: pds.Vault) -> None:
    """A duration in float seconds times 1000 truncated 1.001 s to 1000 ms."""
    holder = pds.PrincipalKey.generate()
    token = _grant(
        vault,
        holder.did,
        expires=timedelta(seconds=1, milliseconds=1),
        defer=timedelta(milliseconds=1003),
    )
    caveats = token.root.caveats
    assert caveats.expires - caveats.not_before == 1001
    assert caveats.defer == 1003
    delegated = pds.Grantee(holder).delegate(
        token, to=pds.PrincipalKey.generate().did, defer=timedelta(milliseconds=1003)
    )
    assert delegated.leaf.caveats.defer == 1003
