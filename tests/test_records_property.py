"""Property tests of records: what goes in comes out, and pages cover everything once.

Hypothesis and function-scoped fixtures do not mix, so each example opens its own store
in a temporary directory (a key-file vault: unlocking costs no Argon2id).
"""

from __future__ import annotations

import math
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import pds
from pds.keys import SymmetricKey

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=40)
)
json_values = st.recursive(
    json_scalars,
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=10), children, max_size=5)
    ),
    max_leaves=25,
)
json_objects = st.dictionaries(st.text(max_size=12), json_values, max_size=8)
collections = st.sampled_from(["notes", "health/visits", "a/b/c", "x_1.y-2"])

SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


class Clock:
    """Seconds since the epoch, advanced by the test (several writes may share a time)."""

    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


@contextmanager
def fresh_vault(clock: Clock | None = None) -> Iterator[pds.Vault]:
    with tempfile.TemporaryDirectory() as directory:
        tmp = Path(directory)
        key_file = tmp / "owner.key"
        SymmetricKey.create_file(key_file)
        kwargs: dict[str, Any] = {} if clock is None else {"clock": clock}
        with pds.open_store(tmp / "store.db", **kwargs) as store:
            vault = store.open_vault(store.create_vault(key_file=key_file))
            vault.unlock(key_file=key_file)
            yield vault


def same(a: Any, b: Any) -> bool:
    """Equality that also tells -0.0 from 0.0, floats from ints and True from 1."""
    if isinstance(a, float) or isinstance(b, float):
        return type(a) is type(b) and a == b and math.copysign(1, a) == math.copysign(1, b)
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    return type(a) is type(b) and a == b


@SETTINGS
@given(json_objects, collections)
def test_put_get_round_trip(data: dict[str, Any], collection: str) -> None:
    with fresh_vault() as vault:
        info = vault.put(collection, data)
        record = vault.get(info.record_id)
        assert same(record.data, data)
        assert (record.record_id, record.collection, record.version) == (
            info.record_id,
            collection,
            1,
        )
        assert record.writer == vault.did
        assert not record.deleted and not record.erased


@SETTINGS
@given(st.lists(json_objects, min_size=1, max_size=6), st.lists(json_objects, max_size=4))
def test_versions_round_trip(first: list[dict[str, Any]], updates: list[dict[str, Any]]) -> None:
    """Every version of every record reads back, after put_many and updates."""
    with fresh_vault() as vault:
        infos = vault.put_many("notes", first)
        target = infos[0].record_id
        for update in updates:
            vault.put("notes", update, record_id=target)
        history = vault.history(target)
        assert [r.version for r in history] == list(range(1, len(updates) + 2))
        assert all(same(r.data, d) for r, d in zip(history, [first[0], *updates], strict=True))
        for info, data in zip(infos[1:], first[1:], strict=True):
            assert same(vault.get(info.record_id).data, data)


@SETTINGS
@given(json_objects)
def test_locked_vault_reopened_reads_the_same(data: dict[str, Any]) -> None:
    with tempfile.TemporaryDirectory() as directory:
        tmp = Path(directory)
        key_file = tmp / "owner.key"
        SymmetricKey.create_file(key_file)
        with pds.open_store(tmp / "store.db") as store:
            vault_id = store.create_vault(key_file=key_file)
            vault = store.open_vault(vault_id)
            vault.unlock(key_file=key_file)
            record_id = vault.put("notes", data).record_id
        with pds.open_store(tmp / "store.db") as store:
            vault = store.open_vault(vault_id)
            vault.unlock(key_file=key_file)
            assert same(vault.get(record_id).data, data)


# -- pagination ------------------------------------------------------------------------

operations = st.lists(
    st.tuples(
        st.sampled_from(["put", "put_many", "update", "delete"]),
        st.sampled_from(["a", "b", "c/d"]),
        st.integers(0, 2),  # seconds to advance the clock before the operation
        st.integers(0, 10_000),  # picks a record for update/delete
    ),
    min_size=1,
    max_size=40,
)


def _run(vault: pds.Vault, clock: Clock, ops: list[tuple[str, str, int, int]]) -> dict[str, str]:
    """Apply ``ops``; return live record id -> collection."""
    live: dict[str, str] = {}
    for counter, (op, collection, advance, pick) in enumerate(ops, start=1):
        clock.now += advance
        if op == "put" or (op in ("update", "delete") and not live):
            live[vault.put(collection, {"n": counter}).record_id] = collection
        elif op == "put_many":
            for info in vault.put_many(collection, [{"n": counter, "i": i} for i in range(3)]):
                live[info.record_id] = collection
        elif op == "update":
            # A record's versions stay in its collection.
            record_id = sorted(live)[pick % len(live)]
            vault.put(live[record_id], {"n": counter}, record_id=record_id)
        else:
            record_id = sorted(live)[pick % len(live)]
            vault.delete(record_id)
            del live[record_id]
    return live


def _all_pages(
    vault: pds.Vault, limits: list[int], **filters: Any
) -> tuple[list[pds.RecordInfo], int]:
    seen: list[pds.RecordInfo] = []
    cursor: str | None = None
    pages = 0
    while True:
        limit = limits[pages % len(limits)]
        page = vault.list(limit=limit, cursor=cursor, **filters)
        pages += 1
        assert len(page.records) <= limit
        seen.extend(page.records)
        if page.cursor is None:
            return seen, pages
        cursor = page.cursor
        assert pages < 10_000


@SETTINGS
@given(operations, st.lists(st.integers(1, 7), min_size=1, max_size=5))
def test_pages_return_every_live_record_exactly_once(
    ops: list[tuple[str, str, int, int]], limits: list[int]
) -> None:
    clock = Clock()
    with fresh_vault(clock) as vault:
        live = _run(vault, clock, ops)
        seen, _ = _all_pages(vault, limits)
        ids = [info.record_id for info in seen]
        assert sorted(ids) == sorted(live)
        assert len(set(ids)) == len(ids)
        assert [info.created_at for info in seen] == sorted(info.created_at for info in seen)
        assert all(not info.deleted for info in seen)
        for info in seen:
            current = vault.get(info.record_id)
            assert (current.version, current.collection) == (info.version, info.collection)
        assert [info.record_id for info in vault.iter_records()] == ids
        for collection in ("a", "b", "c/d"):
            in_collection, _ = _all_pages(vault, limits, collection=collection)
            assert sorted(i.record_id for i in in_collection) == sorted(
                rid for rid, c in live.items() if c == collection
            )


@SETTINGS
@given(operations, st.integers(0, 90), st.integers(0, 90), st.integers(1, 5))
def test_time_window_is_since_inclusive_until_exclusive(
    ops: list[tuple[str, str, int, int]], start: int, length: int, limit: int
) -> None:
    clock = Clock()
    with fresh_vault(clock) as vault:
        _run(vault, clock, ops)
        everything, _ = _all_pages(vault, [1000])
        since = datetime.fromtimestamp(1_700_000_000 + start, tz=UTC)
        until = datetime.fromtimestamp(1_700_000_000 + start + length, tz=UTC)
        window, _ = _all_pages(vault, [limit], since=since, until=until)
        assert [i.record_id for i in window] == [
            i.record_id for i in everything if since <= i.created_at < until
        ]
