"""The access log (design.md promises 7 and 8; issue 4): what is logged, the person's view,
the Merkle tree over the stored entries, signed checkpoints, proofs, sealed details, and
tamper, truncation, rollback and fork detection against a pinned head.

Everything runs on real SQLite files with an injected clock. Stored bytes are read and
changed with raw ``sqlite3``; hashes are recomputed with ``hashlib`` and signatures checked
with PyNaCl directly, so the checks do not lean on the code they test.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import os
import shutil
import sqlite3
import struct
import tracemalloc
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import base58
import nacl.bindings as sodium
import nacl.exceptions
import nacl.signing
import pytest

import pds
from pds import _codec, accesslog, audit, errors, merkle
from pds._context import MAX_TIME_MS
from pds.accesslog import Checkpoint, LogEntry, MerkleLog, open_disclosed
from pds.keys import SymmetricKey

if TYPE_CHECKING:
    from tests.tokens_helpers import forge_invocation
else:
    from tokens_helpers import forge_invocation

T0_MS = 1_750_000_000_000
MINUTE_MS = 60_000
DAY_MS = 24 * 3600 * 1000
PURPOSE = "child allowance check"
AGENT = "case officer 4711"
CORRELATION = "case-2025-0042"


class Clock:
    """A clock that moves only when told to; ``int(clock() * 1000)`` is exactly ``ms``."""

    def __init__(self, ms: int = T0_MS) -> None:
        self.ms = ms

    def __call__(self) -> float:
        return (self.ms + 0.5) / 1000

    def tick(self, ms: int = MINUTE_MS) -> None:
        self.ms += ms

    def at(self, ms: int) -> dt.datetime:
        return dt.datetime.fromtimestamp(ms / 1000, tz=dt.UTC)


@dataclass
class World:
    tmp: Path
    path: Path
    clock: Clock
    store: pds.Store
    vault: pds.Vault
    key_file: Path
    agency: pds.PrincipalKey
    grantee: pds.Grantee

    @property
    def vault_id(self) -> str:
        return self.vault.vault_id

    def reopen(self) -> None:
        """Close and reopen the store (after its files were swapped underneath)."""
        self.store.close()
        self.store = pds.open_store(self.path, clock=self.clock)
        self.vault = self.store.open_vault(self.vault_id)
        self.vault.unlock(key_file=self.key_file)

    def grant(self, **caveats: Any) -> pds.Token:
        options: dict[str, Any] = {
            "collections": ["tax/*"],
            "purpose": PURPOSE,
            "expires": dt.timedelta(days=30),
        }
        options.update(caveats)
        self.clock.tick()
        return self.vault.grant(self.agency.did, **options)

    def read(self, token: pds.Token, **request: Any) -> pds.GrantedRead:
        self.clock.tick()
        return self.grantee.read(self.store, token, **request)


def open_world(tmp: Path, clock: Clock | None = None) -> World:
    clock = clock or Clock()
    tmp.mkdir(parents=True, exist_ok=True)
    path = tmp / "store.db"
    store = pds.open_store(path, clock=clock)
    key_file = tmp / "owner.key"
    SymmetricKey.create_file(key_file)
    vault = store.open_vault(store.create_vault(key_file=key_file))
    vault.unlock(key_file=key_file)
    agency = pds.PrincipalKey.generate()
    return World(tmp, path, clock, store, vault, key_file, agency, pds.Grantee(agency, clock=clock))


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    opened = open_world(tmp_path)
    yield opened
    opened.store.close()


def raw_entries(path: Path, vault_id: str) -> list[bytes]:
    with sqlite3.connect(path) as conn:
        rows = conn.execute(
            "SELECT idx, entry FROM log_entries WHERE vault_id = ? ORDER BY idx", (vault_id,)
        ).fetchall()
    conn.close()
    assert [row[0] for row in rows] == list(range(len(rows))), "stored indexes have a gap"
    return [bytes(row[1]) for row in rows]


def sql(path: Path, statement: str, *params: Any) -> int:
    conn = sqlite3.connect(path)
    try:
        with conn:
            changed = conn.execute(statement, params).rowcount
    finally:
        conn.close()
    return changed


def leaf(entry: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + entry).digest()


def identity_public(vault: pds.Vault) -> bytes:
    """The vault's Ed25519 key, decoded from its did:key without pds."""
    assert vault.did.startswith("did:key:z")
    raw = base58.b58decode(vault.did[len("did:key:z") :])
    assert raw[:2] == b"\xed\x01"
    return bytes(raw[2:])


def owner_x25519(vault: pds.Vault) -> tuple[bytes, bytes]:
    secret = vault._keys().x25519_secret
    public = bytes(sodium.crypto_sign_ed25519_pk_to_curve25519(identity_public(vault)))
    assert bytes(sodium.crypto_scalarmult_base(secret)) == public
    return secret, public


def when(entry: pds.AccessEntry) -> dt.datetime:
    """The entry's time (``None`` only for an entry whose stored bytes do not parse)."""
    assert entry.time is not None, entry.index
    return entry.time


def newest(vault: pds.Vault) -> pds.AccessEntry:
    return vault.log(limit=1).entries[0]


def populated(world: World) -> tuple[pds.Token, str]:
    record = world.vault.put("tax/2024", {"income": 41000})
    token = world.grant(basis="Child Benefit Act s.12")
    return token, record.record_id


# -- what is logged -----------------------------------------------------------------------


def test_a_grant_is_logged_with_its_caveats(world: World) -> None:
    token = world.grant(uses=3, basis="Child Benefit Act s.12")
    entry = newest(world.vault)
    assert (entry.kind, entry.result, entry.actor) == ("grant", "ok", world.vault.did)
    assert entry.details["owner"] is True
    assert entry.details["audience"] == world.agency.did
    assert entry.details["purposes"] == [PURPOSE]
    assert entry.details["collections"] == ["tax/*"]
    assert entry.details["uses"] == 3
    assert entry.purpose == PURPOSE
    assert entry.basis == "Child Benefit Act s.12"
    assert entry.link_ids == [token.link_id.hex()]
    assert entry.time == world.clock.at(world.clock.ms)


def test_a_released_token_read_is_logged_in_the_persons_terms(world: World) -> None:
    token, record_id = populated(world)
    before = world.vault.log_size()
    read = world.read(token, agent=AGENT, correlation=CORRELATION)
    assert [r.data for r in read.records] == [{"income": 41000}]
    assert world.vault.log_size() == before + 1
    assert read.access == before
    entry = newest(world.vault)
    assert entry.index == read.access
    assert (entry.kind, entry.result, entry.reason) == ("read", "released", None)
    assert entry.actor == world.agency.did
    assert entry.agent == AGENT
    assert entry.correlation == CORRELATION
    assert entry.purpose == PURPOSE
    assert entry.basis == "Child Benefit Act s.12"
    assert entry.collections == ["tax/2024"]
    assert entry.records == [(record_id, 1)]
    assert entry.link_ids == [token.link_id.hex()]
    assert entry.time == world.clock.at(world.clock.ms)
    assert entry.disclose_after is None


@pytest.mark.parametrize("cause", ["purpose", "collection", "revoked", "expired", "replay"])
def test_a_refused_read_is_logged_with_its_reason(world: World, cause: str) -> None:
    token, _ = populated(world)
    expected_error: type[errors.AccessDenied]
    if cause == "purpose":
        token = world.grant(purpose=[PURPOSE, "marketing"])
        request: dict[str, Any] = {"purpose": "fraud hunting"}
        expected_error, reason = errors.NotPermitted, "scope:purpose"
    elif cause == "collection":
        request = {"collection": "health/visits"}
        expected_error, reason = errors.NotPermitted, "scope:collection"
    elif cause == "revoked":
        world.vault.revoke(token, reason="moved away")
        request = {}
        expected_error, reason = errors.Revoked, "revoked"
    elif cause == "expired":
        world.clock.tick(31 * DAY_MS)
        request = {}
        expected_error, reason = errors.Expired, "expired"
    else:
        world.clock.tick()
        invocation = world.grantee.invoke(token)
        world.store.serve(invocation.to_bytes())
        before = world.vault.log_size()
        with pytest.raises(errors.Replayed):
            world.store.serve(invocation.to_bytes())
        assert world.vault.log_size() == before + 1
        entry = newest(world.vault)
        assert (entry.kind, entry.result, entry.reason) == ("read", "refused", "replay")
        assert entry.records == []
        return
    before = world.vault.log_size()
    with pytest.raises(expected_error):
        world.read(token, **request)
    assert world.vault.log_size() == before + 1
    entry = newest(world.vault)
    assert (entry.kind, entry.result, entry.reason) == ("read", "refused", reason)
    assert entry.actor == world.agency.did
    assert entry.records == []
    # Nothing was touched; what was asked for is kept.
    asked = request.get("collection")
    assert entry.collections == ([] if asked is None else [asked])
    assert entry.details["requested"] == {"collection": asked, "records": None}


def test_a_list_is_logged(world: World) -> None:
    token, record_id = populated(world)
    listed = world.read(token, action="list")
    assert [r.record_id for r in listed.records] == [record_id]
    entry = newest(world.vault)
    assert (entry.kind, entry.result) == ("list", "released")
    assert entry.records == [(record_id, 1)]
    assert entry.actor == world.agency.did


def test_a_delegation_is_logged_when_first_seen(world: World) -> None:
    token, _ = populated(world)
    parent = world.grant(delegable=1)
    helper_key = pds.PrincipalKey.generate()
    helper = pds.Grantee(helper_key, clock=world.clock)
    child = world.grantee.delegate(parent, to=helper_key.did, expires=dt.timedelta(days=5))
    before = world.vault.log_size()
    world.clock.tick()
    helper.read(world.store, child)
    page = world.vault.log(limit=2).entries
    assert [e.kind for e in page] == ["read", "delegation"]
    read, delegation = page
    assert (delegation.result, delegation.actor) == ("ok", world.agency.did)
    assert delegation.details["audience"] == helper_key.did
    assert delegation.details["parent"] == parent.link_id.hex()
    assert delegation.link_ids == [child.link_id.hex()]
    assert read.actor == helper_key.did
    assert read.link_ids == [parent.link_id.hex(), child.link_id.hex()]
    # Seen once: a second read does not log the delegation again.
    world.clock.tick()
    helper.read(world.store, child)
    assert world.vault.log_size() == before + 3
    assert [e.kind for e in world.vault.log(limit=3).entries] == ["read", "read", "delegation"]
    assert token.link_id.hex() not in read.link_ids


def test_owner_operations_are_logged(world: World, tmp_path: Path) -> None:
    record = world.vault.put("tax/2024", {"income": 1})
    world.vault.put("tax/2024", {"income": 2}, record_id=record.record_id)
    token = world.grant()
    world.vault.get(record.record_id)
    world.vault.history(record.record_id)
    world.vault.revoke(token, reason="done")
    world.vault.rotate("tax/2024")
    world.vault.export(tmp_path / "vault.pdsx")
    new_key = tmp_path / "new-owner.key"
    SymmetricKey.create_file(new_key)
    world.vault.rekey(key_file=new_key)
    entries = world.vault.access_log()
    assert [e.kind for e in entries] == [
        "create",
        "grant",
        "owner-read",
        "owner-read",
        "revoke",
        "rotate",
        "export",
        "rekey",
    ]
    assert all(e.actor == world.vault.did and e.details["owner"] is True for e in entries)
    assert all(e.result == "ok" for e in entries)
    assert entries[0].collections == ["tax/2024"]
    get, history = entries[2], entries[3]
    assert get.records == [(record.record_id, 2)]
    assert get.collections == ["tax/2024"]
    assert history.records == [(record.record_id, 1), (record.record_id, 2)]
    revoke = entries[4]
    assert revoke.link_ids == [token.link_id.hex()]
    assert revoke.details["reason"] == "done"
    assert entries[5].details["epochs"] == {"tax/2024": 2}
    # Putting records is not an access: only a collection's first write logs (`create`).
    assert world.vault.log_size() == len(entries)


def test_import_continues_the_exported_log(world: World, tmp_path: Path) -> None:
    token, _ = populated(world)
    world.read(token)
    world.vault.export(tmp_path / "vault.pdsx")
    head = world.vault.latest_checkpoint()
    assert head is not None
    assert head.size == world.vault.log_size()
    with pds.open_store(tmp_path / "other.db", clock=world.clock) as other:
        vault_id = other.import_vault(tmp_path / "vault.pdsx", key_file=world.key_file)
        copy = other.open_vault(vault_id)
        copy.unlock(key_file=world.key_file)
        assert copy.log_size() == head.size + 1
        assert copy.log_root(head.size) == head.root
        copy.verify_log(head)
        assert newest(copy).kind == "import"
        assert [e.kind for e in copy.access_log()][:-1] == [
            e.kind for e in world.vault.access_log()
        ]


def test_destroy_is_logged_and_the_erased_log_still_verifies(world: World) -> None:
    token, record_id = populated(world)
    world.read(token)
    world.vault.get(record_id)
    pinned = world.vault.checkpoint()
    identity = identity_public(world.vault)
    world.clock.tick()
    world.vault.destroy()
    assert world.vault.is_locked
    log = MerkleLog(world.store.backend, world.vault_id)
    assert log.size() == pinned.size + 1
    last = log.entry(pinned.size)
    assert (last.kind, last.result) == ("destroy", "ok")
    # The leaves commit to ciphertext: the tree still verifies without any key.
    world.vault.verify_log(pinned)
    final = world.vault.latest_checkpoint()
    assert final is not None
    assert final.size == pinned.size + 1
    final.verify(identity)
    world.vault.verify_log(final)
    leaves = [leaf(e) for e in raw_entries(world.path, world.vault_id)]
    assert merkle.root(leaves) == final.root
    for index in range(final.size):
        entry, proof = world.vault.prove_inclusion(index, final.size)
        merkle.verify_inclusion(entry.leaf_hash, index, final.size, proof, final.root)
    merkle.verify_consistency(
        pinned.size,
        final.size,
        pinned.root,
        final.root,
        world.vault.prove_consistency(pinned.size, final.size),
    )
    # The details are gone with the keys.
    with pytest.raises(errors.PDSError):
        world.vault.unlock(key_file=world.key_file)


# -- the person's view: newest first, pages, filters --------------------------------------


def test_log_is_newest_first_and_paginates_with_before(world: World) -> None:
    token, record_id = populated(world)
    for _ in range(4):
        world.read(token)
        world.clock.tick()
        world.vault.get(record_id)
    everything = world.vault.access_log()
    assert len(everything) == world.vault.log_size() == 10
    assert [e.index for e in everything] == list(range(10))
    pages: list[list[int]] = []
    cursor: int | None = None
    for _ in range(5):  # bounded: a cursor that does not move must fail, not hang
        page = world.vault.log(limit=4, before=cursor)
        pages.append([e.index for e in page.entries])
        assert page.withheld == 0
        if page.cursor is None:
            break
        cursor = page.cursor
    assert pages == [[9, 8, 7, 6], [5, 4, 3, 2], [1, 0]]
    times = [when(e) for e in world.vault.log(limit=50).entries]
    assert times == sorted(times, reverse=True)
    assert world.vault.log(limit=50, before=0).entries == []
    with pytest.raises(errors.FormatError):
        world.vault.log(limit=0)


def test_log_filters_by_since_and_actor(world: World) -> None:
    token, record_id = populated(world)
    world.read(token)
    world.clock.tick()
    world.vault.get(record_id)
    cut = world.clock.ms + 1
    world.clock.tick()
    world.read(token)
    world.clock.tick()
    world.vault.get(record_id)
    recent = world.vault.log(since=world.clock.at(cut)).entries
    assert [(e.kind, e.actor) for e in recent] == [
        ("owner-read", world.vault.did),
        ("read", world.agency.did),
    ]
    assert all(when(e) >= world.clock.at(cut) for e in recent)
    agency = world.vault.log(actor=world.agency.did).entries
    assert [e.kind for e in agency] == ["read", "read"]
    owner = world.vault.log(actor=world.vault.did).entries
    assert [e.kind for e in owner] == ["owner-read", "owner-read", "grant", "create"]
    combined = world.vault.log(since=world.clock.at(cut), actor=world.agency.did).entries
    assert len(combined) == 1
    assert world.vault.log(actor=pds.PrincipalKey.generate().did).entries == []


def test_log_needs_the_owner(world: World) -> None:
    populated(world)
    world.vault.lock()
    with pytest.raises(errors.VaultLocked):
        world.vault.log()
    # The tree itself is public: its size and root need no secret.
    assert world.vault.log_size() == 2


# -- deferred disclosure ------------------------------------------------------------------


def test_deferred_access_is_withheld_until_its_time(world: World) -> None:
    token, record_id = populated(world)
    deferring = world.grant(purpose="fraud inquiry", defer=dt.timedelta(days=10))
    until_ms = world.clock.ms + 5 * DAY_MS
    before = world.vault.log_size()
    read = world.read(
        deferring,
        purpose="fraud inquiry",
        defer_until=world.clock.at(until_ms),
        defer_reason="criminal investigation 17/25",
    )
    assert [r.record_id for r in read.records] == [record_id]
    # Committed now: the tree grows and the entry's leaf is there.
    assert world.vault.log_size() == before + 1
    entry, proof = world.vault.prove_inclusion(before)
    assert entry.kind == "read"
    assert entry.disclose_after == until_ms
    merkle.verify_inclusion(
        entry.leaf_hash, before, before + 1, proof, world.vault.log_root(before + 1)
    )
    # Not shown to the person yet, but counted (against the actor it concerns).
    page = world.vault.log()
    assert page.withheld == 1
    assert world.vault.log(actor=world.agency.did).withheld == 1
    assert world.vault.log(actor=world.vault.did).withheld == 0
    assert before not in [e.index for e in page.entries]
    assert before not in [e.index for e in world.vault.access_log()]
    shown = world.vault.log(include_deferred=True).entries[0]
    assert shown.index == before
    assert shown.defer_reason == "criminal investigation 17/25"
    assert shown.disclose_after == world.clock.at(until_ms)
    # A later ordinary access is shown while the deferred one stays withheld.
    world.read(token)
    page = world.vault.log()
    assert (page.withheld, page.entries[0].kind) == (1, "read")
    world.clock.ms = until_ms - 1
    assert world.vault.log().withheld == 1
    world.clock.ms = until_ms + 1
    page = world.vault.log()
    assert page.withheld == 0
    disclosed = next(e for e in page.entries if e.index == before)
    assert disclosed.actor == world.agency.did
    assert disclosed.purpose == "fraud inquiry"
    assert disclosed.defer_reason == "criminal investigation 17/25"
    assert before in [e.index for e in world.vault.access_log()]


@pytest.mark.parametrize("case", ["token without defer", "longer than allowed"])
def test_deferral_the_token_does_not_allow_is_refused(world: World, case: str) -> None:
    populated(world)
    if case == "token without defer":
        token = world.grant(purpose="fraud inquiry")
        days = 1
    else:
        token = world.grant(purpose="fraud inquiry", defer=dt.timedelta(days=10))
        days = 11
    before = world.vault.log_size()
    with pytest.raises(errors.NotPermitted) as refused:
        world.read(
            token,
            purpose="fraud inquiry",
            defer_until=world.clock.at(world.clock.ms + days * DAY_MS),
            defer_reason="investigation",
        )
    assert refused.value.reason == "scope:defer"
    assert world.vault.log_size() == before + 1
    entry = world.vault.log(include_deferred=True).entries[0]
    assert (entry.kind, entry.result, entry.reason) == ("read", "refused", "scope:defer")
    assert entry.records == []


def test_a_deferral_past_what_a_date_can_show_is_refused(world: World) -> None:
    """A token may allow deferrals of up to ~7,970 years; a holder asking to disclose after
    9999-12-31 is refused (and logged), so the person's log can always show every entry;
    the last millisecond a date can show is served and shown."""
    populated(world)
    token = world.grant(purpose="fraud inquiry", defer=dt.timedelta(milliseconds=MAX_TIME_MS))
    for disclose_after, served in ((MAX_TIME_MS + 1, False), (MAX_TIME_MS, True)):
        world.clock.tick()
        invocation = forge_invocation(
            token,
            world.agency,
            time_ms=world.clock.ms,
            purpose="fraud inquiry",
            defer=(disclose_after, "investigation"),
        )
        if served:
            world.store.serve(invocation)
        else:
            with pytest.raises(errors.NotPermitted) as refused:
                world.store.serve(invocation)
            assert refused.value.reason == "scope:defer"
    entries = world.vault.log(include_deferred=True).entries
    assert [(e.result, e.reason) for e in entries[:2]] == [
        ("released", None),
        ("refused", "scope:defer"),
    ]
    assert entries[0].disclose_after == dt.datetime(9999, 12, 31, 23, 59, 59, 999000, tzinfo=dt.UTC)
    assert world.vault.log().withheld == 1


@pytest.mark.parametrize("deferrable", [False, True])
def test_a_refusal_is_shown_at_once_whatever_deferral_it_asked(
    world: World, deferrable: bool
) -> None:
    """A holder cannot hide its refused attempts by asking for a deferral (a refusal of
    any kind, not only of the deferral itself)."""
    populated(world)
    defer = dt.timedelta(days=10) if deferrable else None
    token = world.grant(purpose="fraud inquiry", defer=defer)
    days = 3650 if not deferrable else 5
    request = {"collection": "health/visits"} if deferrable else {}
    with pytest.raises(errors.NotPermitted):
        world.read(
            token,
            purpose="fraud inquiry",
            defer_until=world.clock.at(world.clock.ms + days * DAY_MS),
            defer_reason="hide this",
            **request,
        )
    page = world.vault.log()
    assert page.withheld == 0
    newest_entry = page.entries[0]
    assert (newest_entry.kind, newest_entry.result) == ("read", "refused")
    assert newest_entry.disclose_after is None


def test_a_page_by_time_reads_past_an_entry_logged_out_of_time_order(world: World) -> None:
    """A request that read the clock, then waited for the write lock behind a later one, is
    logged after it with an earlier time (times are the ones the checks used, never moved).
    A page ``since`` a time reads on past such an entry: the later-stamped one is shown,
    and the earlier-stamped one is not."""
    token, record_id = populated(world)
    world.read(token)
    late = world.clock.ms
    world.clock.ms = late - 2 * MINUTE_MS  # the next appender's clock reads earlier
    world.vault.get(record_id)
    raw_times = [LogEntry.parse(raw).time for raw in raw_entries(world.path, world.vault_id)]
    assert raw_times[-2:] == [late, late - 2 * MINUTE_MS]  # stored as each was checked
    since = late - MINUTE_MS
    shown = world.vault.log(since=world.clock.at(since)).entries
    # The read (and the grant, a tick before it) are shown; the owner read is not.
    assert [(e.kind, e.result) for e in shown] == [("read", "released"), ("grant", "ok")]
    assert all(when(e) >= world.clock.at(since) for e in shown)


# -- the tree over the stored entries -----------------------------------------------------


def test_size_and_root_are_those_of_the_stored_entries(world: World) -> None:
    token, record_id = populated(world)
    sizes = [world.vault.log_size()]
    for step in range(12):
        if step % 3 == 0:
            world.vault.get(record_id)
        else:
            world.read(token)
        sizes.append(world.vault.log_size())
    assert sizes == list(range(2, 15))
    entries = raw_entries(world.path, world.vault_id)
    assert len(entries) == world.vault.log_size() == 14
    leaves = [leaf(e) for e in entries]
    for size in range(len(leaves) + 1):
        assert world.vault.log_root(size) == merkle.root(leaves[:size])
    assert world.vault.log_root() == merkle.root(leaves)
    with pytest.raises(errors.FormatError):
        world.vault.log_root(len(leaves) + 1)
    # Each stored entry parses to what the log shows, at its own index, for this vault.
    for index, raw in enumerate(entries):
        parsed = LogEntry.parse(raw)
        assert (parsed.index, parsed.vault_id) == (index, world.vault_id)
        assert parsed.leaf_hash == leaves[index]


def test_an_empty_log(world: World) -> None:
    assert world.vault.log_size() == 0
    assert world.vault.log_root() == hashlib.sha256(b"").digest()
    head = world.vault.checkpoint()
    assert (head.size, head.root) == (0, hashlib.sha256(b"").digest())
    world.vault.verify_log(head)
    page = world.vault.log()
    assert (page.entries, page.withheld, page.cursor) == ([], 0, None)


def test_proofs_verify_against_checkpoint_roots(world: World) -> None:
    token, record_id = populated(world)
    heads: list[Checkpoint] = []
    for step in range(36):
        if step % 4 == 0:
            world.read(token)
        else:
            world.clock.tick()
            world.vault.get(record_id)
        if step in (2, 6, 15, 23, 35):
            heads.append(world.vault.checkpoint())
    assert [h.size for h in heads] == [5, 9, 18, 26, 38]
    leaves = [leaf(e) for e in raw_entries(world.path, world.vault_id)]
    for head in heads:
        assert head.root == merkle.root(leaves[: head.size])
        for index in range(head.size):
            entry, proof = world.vault.prove_inclusion(index, head.size)
            assert entry.leaf_hash == leaves[index]
            assert proof == merkle.inclusion_proof(index, leaves[: head.size])
            merkle.verify_inclusion(entry.leaf_hash, index, head.size, proof, head.root)
    for i, old in enumerate(heads):
        for new in heads[i:]:
            proof = world.vault.prove_consistency(old.size, new.size)
            merkle.verify_consistency(old.size, new.size, old.root, new.root, proof)
    # Every (old size, size) pair matches the pure functions over the stored leaves.
    for size in range(1, len(leaves) + 1):
        for old_size in range(1, size + 1):
            assert world.vault.prove_consistency(old_size, size) == merkle.consistency_proof(
                old_size, leaves[:size]
            )
    # Default size is the current one.
    entry, proof = world.vault.prove_inclusion(3)
    merkle.verify_inclusion(entry.leaf_hash, 3, len(leaves), proof, merkle.root(leaves))
    for bad in ((-1, None), (38, 38), (0, 39), (5, 5)):
        with pytest.raises(errors.FormatError):
            world.vault.prove_inclusion(*bad)
    for bad_old, bad_size in ((0, 5), (6, 5), (1, 39)):
        with pytest.raises(errors.FormatError):
            world.vault.prove_consistency(bad_old, bad_size)


# -- checkpoints: C2SP tlog-checkpoint signed notes ---------------------------------------


def test_checkpoint_is_a_c2sp_signed_note(world: World) -> None:
    token, _ = populated(world)
    world.read(token)
    head = world.vault.checkpoint()
    text = head.to_text()
    public = identity_public(world.vault)
    body, separator, signatures = text.partition("\n\n")
    assert separator
    lines = body.split("\n")
    origin = f"pds/vault/{world.vault_id}"
    assert lines[0] == origin
    assert lines[1] == str(world.vault.log_size()) == "3"
    assert base64.b64decode(lines[2], validate=True) == world.vault.log_root()
    assert lines[3] == f"time {world.clock.ms}"  # an extension line
    # The second and third: no revocation and no rotation yet, the digests of empty sets
    # (the rotations as an empty msgpack array, 0x90).
    empty = hashlib.sha256(b"pds/revoked/v1\x00").digest()
    assert lines[4] == f"revoked 0 {base64.b64encode(empty).decode()}"
    empty = hashlib.sha256(b"pds/rotated/v1\x00\x90").digest()
    assert lines[5] == f"rotated 0 {base64.b64encode(empty).decode()}"
    assert len(lines) == 6
    assert signatures.endswith("\n")
    (signature_line,) = signatures[:-1].split("\n")
    prefix = f"\u2014 {origin} "
    assert signature_line.startswith(prefix)
    blob = base64.b64decode(signature_line[len(prefix) :], validate=True)
    assert len(blob) == 4 + 64
    key_id = hashlib.sha256(origin.encode() + b"\n" + b"\x01" + public).digest()[:4]
    assert blob[:4] == key_id
    # Plain Ed25519 over the note body (every body line, each ending in a newline).
    nacl.signing.VerifyKey(public).verify((body + "\n").encode(), blob[4:])
    forged = (body.replace(f"\n{lines[1]}\n", "\n4\n", 1) + "\n").encode()
    with pytest.raises(nacl.exceptions.BadSignatureError):
        nacl.signing.VerifyKey(public).verify(forged, blob[4:])
    # The note round-trips, verifies with the vault key, and is what the store keeps.
    parsed = Checkpoint.parse(text)
    assert parsed == head
    parsed.verify(public)
    latest = world.vault.latest_checkpoint()
    assert latest is not None
    assert latest.to_text() == text
    # The verifier key string transparency tooling takes.
    encoded = base64.b64encode(b"\x01" + public).decode()
    assert accesslog.verifier_key(origin, public) == f"{origin}+{key_id.hex()}+{encoded}"


def test_checkpoint_does_not_verify_with_another_key_or_changed(world: World) -> None:
    populated(world)
    head = world.vault.checkpoint()
    public = identity_public(world.vault)
    other = open_world(world.tmp / "other")
    other.store.close()
    with pytest.raises(errors.InvalidProof):
        head.verify(identity_public(other.vault))
    text = head.to_text()
    for old, new in (
        (f"\n{head.size}\n", f"\n{head.size + 1}\n"),
        (f"time {head.time}", f"time {head.time + 1}"),
    ):
        with pytest.raises(errors.InvalidProof):
            Checkpoint.parse(text.replace(old, new, 1)).verify(public)
    other_root = base64.b64encode(hashlib.sha256(b"x").digest()).decode()
    with pytest.raises(errors.InvalidProof):
        Checkpoint.parse(text.replace(base64.b64encode(head.root).decode(), other_root, 1)).verify(
            public
        )
    for garbage in ("", "pds/vault/x\n1\n", text.replace("\u2014", "-"), text + "\r"):
        with pytest.raises(errors.FormatError):
            Checkpoint.parse(garbage)


def test_a_checkpoint_has_one_text(world: World) -> None:
    """Signature block lines must all be C2SP signature lines, none twice: a blank or
    stray line, or a repeated signature, would give one head several texts."""
    populated(world)
    text = world.vault.checkpoint().to_text()
    body, signatures = text.split("\n\n")
    cosigner = "\u2014 witness.example/w1 " + base64.b64encode(bytes(72)).decode() + "\n"
    assert Checkpoint.parse(body + "\n\n" + signatures + cosigner).to_text() == text
    for block in (
        signatures + "\n",
        signatures + "hello world\n",
        signatures + signatures,
        signatures + "\u2014 witness.example/w1  " + base64.b64encode(bytes(72)).decode() + "\n",
        signatures + "\u2014 w " + base64.b64encode(bytes(4)).decode() + "\n",
        "\n" + signatures,
    ):
        with pytest.raises(errors.FormatError):
            Checkpoint.parse(body + "\n\n" + block)


_NOTE = (
    "pds/vault/x\n{size}\n" + base64.b64encode(bytes(32)).decode() + "\ntime {time}\n\n"
    "\u2014 pds/vault/x " + base64.b64encode(bytes(68)).decode() + "\n"
)


@pytest.mark.parametrize(
    ("size", "time"),
    [
        ("\u00b2", "1"),  # superscript two: str.isdigit() accepts it, int() does not
        ("1", "\u00b9"),
        ("\u0663", "1"),  # ARABIC-INDIC DIGIT THREE: int() reads it as 3
        ("1", "\uff11"),  # FULLWIDTH DIGIT ONE
        ("01", "1"),
        ("1", "00"),
        ("", "1"),
        ("+1", "1"),
        ("1", "9223372036854775808"),  # 2^63
        ("9" * 40, "1"),
    ],
)
def test_checkpoint_numbers_are_canonical_ascii_decimal(size: str, time: str) -> None:
    assert Checkpoint.parse(_NOTE.format(size="1", time="1")).size == 1
    with pytest.raises(errors.FormatError):
        Checkpoint.parse(_NOTE.format(size=size, time=time))


def test_owner_operations_sign_a_checkpoint_host_reads_do_not(world: World) -> None:
    token, _ = populated(world)
    after_grant = world.vault.latest_checkpoint()
    assert after_grant is not None
    assert after_grant.size == 2
    world.read(token)
    latest = world.vault.latest_checkpoint()
    assert latest is not None
    assert latest.size == 2  # the host holds no signing key
    world.vault.verify_log(after_grant)


# -- entries are sealed; one entry at a time can be disclosed -----------------------------


def test_entry_details_are_sealed_and_open_one_by_one(world: World) -> None:
    token, record_id = populated(world)
    world.read(token, agent=AGENT, correlation=CORRELATION)
    with pytest.raises(errors.NotPermitted):
        world.read(token, collection="health/visits")
    world.vault.get(record_id)
    entries = raw_entries(world.path, world.vault_id)
    assert len(entries) == 5
    secrets = [
        PURPOSE,
        AGENT,
        CORRELATION,
        world.agency.did,
        world.vault.did,
        "Child Benefit Act",
        "tax/2024",
        "tax/*",
        record_id,
        "health/visits",
    ]
    for raw in entries:
        for secret in secrets:
            assert secret.encode() not in raw, secret
    with sqlite3.connect(world.path) as conn:
        (count,) = conn.execute("SELECT COUNT(*) FROM log_entries").fetchone()
    conn.close()
    assert count == 5
    # Neither the database nor its WAL holds the purpose, agent or correlation anywhere.
    files = [world.path, world.path.with_name(world.path.name + "-wal")]
    blob = b"".join(p.read_bytes() for p in files if p.exists())
    for secret in (PURPOSE, AGENT, CORRELATION):
        assert secret.encode() not in blob, secret
    secret_key, public_key = owner_x25519(world.vault)
    parsed = [LogEntry.parse(raw) for raw in entries]
    keys = [entry.disclosure_key(secret_key) for entry in parsed]
    for entry, key in zip(parsed, keys, strict=True):
        details = open_disclosed(entry.sealed, public_key, key)
        assert details == entry.open(secret_key)
    read = open_disclosed(parsed[2].sealed, public_key, keys[2])
    assert read["purpose"] == PURPOSE
    assert read["actor"] == world.agency.did
    assert read["agent"] == AGENT
    refused = open_disclosed(parsed[3].sealed, public_key, keys[3])
    assert (refused["result"], refused["reason"]) == ("refused", "scope:collection")
    # A disclosure key opens its own entry only.
    for i, entry in enumerate(parsed):
        for j, key in enumerate(keys):
            if i != j:
                with pytest.raises(errors.IntegrityError):
                    open_disclosed(entry.sealed, public_key, key)
    with pytest.raises(errors.IntegrityError):
        parsed[2].open(pds.PrincipalKey.generate()._key.x25519_secret())


def _entry_with_sealed(vault_id: str, sealed: bytes) -> bytes:
    return accesslog.encode_entry(
        vault_id=vault_id,
        index=0,
        time=T0_MS,
        kind="read",
        result="released",
        link_id=None,
        disclose_after=None,
        sealed=sealed,
    )


@pytest.mark.parametrize("size", [0, 1, 32, 47])
def test_a_sealed_too_short_for_a_sealed_box_is_refused(size: int) -> None:
    # sealed = epk (32) || box (MAC 16 || ciphertext): nothing shorter was ever sealed.
    with pytest.raises(errors.FormatError):
        LogEntry.parse(_entry_with_sealed("v", bytes(size)))
    assert len(LogEntry.parse(_entry_with_sealed("v", bytes(48))).sealed) == 48


def test_an_entry_of_many_containers_is_refused_without_building_them() -> None:
    """An entry is one flat map: an array of a million empty maps (1 MB) is refused while
    decoding, not after a million dicts (~64 MB) are built."""
    count = 1_000_000
    raw = b"\xdd" + struct.pack(">I", count) + b"\x80" * count
    tracemalloc.start()
    try:
        with pytest.raises(errors.FormatError):
            LogEntry.parse(raw)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 4 * len(raw), peak
    nested = _entry_with_sealed("v", bytes(48)).replace(b"\xa5vault\xa1v", b"\xa5vault\x91\x80")
    assert b"\x91\x80" in nested
    with pytest.raises(errors.FormatError):
        LogEntry.parse(nested)


SMALL_ORDER_X25519 = [
    bytes(32),
    bytes([1]) + bytes(31),
    bytes.fromhex("e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800"),
    bytes.fromhex("ec" + "ff" * 30 + "7f"),
]


@pytest.mark.parametrize("epk", SMALL_ORDER_X25519, ids=lambda epk: epk.hex()[:8])
def test_an_ephemeral_key_of_small_order_has_no_disclosure_key(world: World, epk: bytes) -> None:
    """The host writes access entries, so it can write one the owner cannot open. Its
    disclosure key is an IntegrityError (not a PyNaCl exception), and it opens for no
    auditor either, not even with the key its box was made with (the host's choice)."""
    secret, public = owner_x25519(world.vault)
    box_key = bytes(32)  # what export_audit writes for such an entry
    nonce = hashlib.blake2b(epk + public, digest_size=24).digest()
    box = bytes(sodium.crypto_box_afternm(_codec.encode({"purpose": "x"}), nonce, box_key))
    entry = LogEntry.parse(_entry_with_sealed(world.vault_id, epk + box))
    with pytest.raises(errors.IntegrityError) as no_key:
        entry.disclosure_key(secret)
    assert no_key.value.reason == "log-disclosure"
    with pytest.raises(errors.IntegrityError):
        entry.open(secret)
    with pytest.raises(errors.IntegrityError):
        open_disclosed(entry.sealed, public, box_key)


# -- tamper, truncation, rollback and fork against a pinned head --------------------------


@pytest.fixture
def pinned_world(world: World) -> tuple[World, Checkpoint]:
    """A log of 11 entries (create, grant, reads, owner reads) and a head pinned at its
    size."""
    token, record_id = populated(world)
    for step in range(9):
        if step % 2:
            world.read(token)
        else:
            world.clock.tick()
            world.vault.get(record_id)
    head = world.vault.checkpoint()
    assert head.size == 11
    world.vault.verify_log(head)
    return world, head


def _replace_entry(world: World, index: int, entry: bytes) -> None:
    changed = sql(
        world.path,
        "UPDATE log_entries SET entry = ? WHERE vault_id = ? AND idx = ?",
        entry,
        world.vault_id,
        index,
    )
    assert changed == 1


def _sealed_span(raw: bytes) -> range:
    """Where the sealed box lies inside an entry's bytes."""
    sealed = LogEntry.parse(raw).sealed
    position = raw.find(sealed)
    assert position > 0
    return range(position, position + len(sealed))


@pytest.mark.parametrize("index", [0, 5, 10])
def test_a_changed_byte_in_the_sealed_details_is_detected(
    pinned_world: tuple[World, Checkpoint], index: int
) -> None:
    world, head = pinned_world
    raw = raw_entries(world.path, world.vault_id)[index]
    for position in _sealed_span(raw)[::7]:
        changed = bytearray(raw)
        changed[position] ^= 0x01
        _replace_entry(world, index, bytes(changed))
        with pytest.raises(errors.InvalidProof):
            world.vault.verify_log(head)
        # The stored proof still leads to the pinned root, but not from the changed entry.
        entry, proof = world.vault.prove_inclusion(index, head.size)
        with pytest.raises(errors.InvalidProof):
            merkle.verify_inclusion(entry.leaf_hash, index, head.size, proof, head.root)
    _replace_entry(world, index, raw)
    world.vault.verify_log(head)
    entry, proof = world.vault.prove_inclusion(index, head.size)
    merkle.verify_inclusion(entry.leaf_hash, index, head.size, proof, head.root)


def test_every_changed_byte_of_an_entry_is_refused(
    pinned_world: tuple[World, Checkpoint],
) -> None:
    """Never silently accepted: each flipped byte is an integrity or format error."""
    world, head = pinned_world
    raw = raw_entries(world.path, world.vault_id)[4]
    for position in range(len(raw)):
        changed = bytearray(raw)
        changed[position] ^= 0x01
        _replace_entry(world, 4, bytes(changed))
        with pytest.raises((errors.IntegrityError, errors.FormatError)):
            world.vault.verify_log(head)
    _replace_entry(world, 4, raw)
    world.vault.verify_log(head)


def test_every_changed_byte_of_an_entry_is_an_invalid_proof(
    pinned_world: tuple[World, Checkpoint],
) -> None:
    world, head = pinned_world
    raw = raw_entries(world.path, world.vault_id)[4]
    for position in range(len(raw)):
        changed = bytearray(raw)
        changed[position] ^= 0x01
        _replace_entry(world, 4, bytes(changed))
        with pytest.raises(errors.InvalidProof):
            world.vault.verify_log(head)


def test_an_entry_rewritten_with_its_leaf_hash_is_detected(
    pinned_world: tuple[World, Checkpoint],
) -> None:
    world, head = pinned_world
    raw = raw_entries(world.path, world.vault_id)[2]
    changed = bytearray(raw)
    changed[-3] ^= 0x01
    _replace_entry(world, 2, bytes(changed))
    sql(
        world.path,
        "UPDATE log_nodes SET hash = ? WHERE vault_id = ? AND level = 0 AND idx = 2",
        leaf(bytes(changed)),
        world.vault_id,
    )
    with pytest.raises(errors.InvalidProof):
        world.vault.verify_log(head)


def test_the_owner_never_signs_a_rewrite_hidden_in_a_larger_subtree_hash(
    pinned_world: tuple[World, Checkpoint],
) -> None:
    """The host serves one more read (entry 11), then rewrites signed entry 9 and stores,
    as the hash of entries 8-11, the one of its rewrite. The root at the signed size (11)
    reads other nodes (8 entries, 2, 1) and still matches the head; the root at 12 reads
    the forged node. The owner must sign no head over it."""
    world, head = pinned_world
    backend = world.store.backend
    with backend.transaction():  # the host logs one access (entry 11), as serving does
        MerkleLog(backend, world.vault_id).append(
            time=world.clock.ms,
            kind="read",
            result="refused",
            link_id=None,
            details={"actor": world.agency.did},
            owner_x25519_public=sodium.crypto_sign_ed25519_pk_to_curve25519(
                identity_public(world.vault)
            ),
            rng=os.urandom,
        )
    raw = raw_entries(world.path, world.vault_id)
    assert len(raw) == 12
    forged = bytearray(raw[9])
    forged[-3] ^= 0x01
    _replace_entry(world, 9, bytes(forged))
    leaves = [leaf(entry) for entry in raw[8:12]]
    leaves[1] = leaf(bytes(forged))
    node = merkle.node_hash(
        merkle.node_hash(leaves[0], leaves[1]), merkle.node_hash(leaves[2], leaves[3])
    )
    assert sql(
        world.path,
        "UPDATE log_nodes SET hash = ? WHERE vault_id = ? AND level = 2 AND idx = 2",
        node,
        world.vault_id,
    )
    latest = world.vault.latest_checkpoint()
    assert latest == head  # its root (8 + 2 + 1 entries) reads no forged node
    with pytest.raises(errors.InvalidProof) as refused:
        world.vault.checkpoint()  # size 12: the root reads the forged node (8-11)
    assert refused.value.reason == "log-fork"
    world.clock.tick()
    world.vault.get(world.vault.list().records[0].record_id)  # logged, but no head signed
    assert world.vault.latest_checkpoint() == latest
    with pytest.raises(errors.InvalidProof):
        world.vault.verify_log(head)


def _host_logs(world: World, time: int, details: dict[str, Any]) -> None:
    """Append an access entry as the host can: any details, sealed to the owner's key."""
    backend = world.store.backend
    with backend.transaction():
        MerkleLog(backend, world.vault_id).append(
            time=time,
            kind="read",
            result="released",
            link_id=None,
            details=details,
            owner_x25519_public=sodium.crypto_sign_ed25519_pk_to_curve25519(
                identity_public(world.vault)
            ),
            rng=os.urandom,
        )


@pytest.mark.parametrize(
    "details",
    [
        {"records": [5]},
        {"records": [["a"]]},
        {"records": [["a", "x"]]},
        {"records": "ab"},
        {"collections": 7},
        {"collections": [1, "a"]},
        {"purposes": [1]},
        {"defer": [1]},
        {"chain": 5},
        {"actor": 5, "agent": ["x"], "fields": [None]},
    ],
    ids=repr,
)
def test_an_access_entry_of_the_wrong_shape_does_not_break_the_persons_view(
    world: World, details: dict[str, Any]
) -> None:
    """The host writes access entries: one whose details have the wrong shape shows as an
    entry with those values absent, and the log reads on past it."""
    populated(world)
    _host_logs(world, world.clock.ms, details)
    _host_logs(world, 2**62, {})  # a time no date can show: shown as the latest date
    entries = world.vault.access_log()
    odd, late = entries[-2:]
    assert (odd.records, odd.collections, odd.kind) == ([], [], "read")
    assert odd.link_ids == [] and odd.agent is None and odd.defer_reason is None
    assert when(late).year == 9999
    assert [e.kind for e in world.vault.log(limit=5).entries][:2] == ["read", "read"]


GARBLINGS = (
    "not msgpack",
    "empty",
    "sealed too short",
    "unknown kind",
    "another index",
    "another vault",
)


def _garbled(raws: list[bytes], index: int, how: str) -> bytes:
    """Entry ``index`` as a host could rewrite it so that it is no entry of this log there."""
    header = _codec.decode(raws[index])
    if how == "not msgpack":
        return b"\xc1"
    if how == "empty":
        return b""
    if how == "sealed too short":
        return _codec.encode({**header, "sealed": bytes(47)})
    if how == "unknown kind":
        return _codec.encode({**header, "kind": "steal"})
    if how == "another index":
        return raws[index - 1]  # a copy of the entry before it, which names its own index
    assert how == "another vault"
    return _codec.encode({**header, "vault": "another-vault"})


def _refused_everywhere_as_a_fork(world: World, head: Checkpoint) -> None:
    """Bytes under ``head`` were changed (into no entry): every verification says fork."""
    with pytest.raises(errors.InvalidProof) as refused:
        world.vault.verify_log(head)
    assert refused.value.reason == "log-fork"
    with pytest.raises(errors.InvalidProof) as repair:
        world.vault.repair()
    assert repair.value.reason == "log-fork"
    with pytest.raises(errors.InvalidProof) as exported:
        world.vault.export(world.tmp / "export")
    assert exported.value.reason == "log-fork"
    with pytest.raises(errors.InvalidProof) as audited:
        audit.export_audit(world.vault, world.tmp / "audit")
    assert audited.value.reason == "log-fork"
    with pytest.raises(errors.IntegrityError) as rotated:
        world.vault.rotate()
    assert rotated.value.reason == "rotation-incomplete"
    assert "(log-fork)" in str(rotated.value)


@pytest.mark.parametrize("how", GARBLINGS)
def test_an_entry_that_does_not_parse_is_listed_as_damaged(
    pinned_world: tuple[World, Checkpoint], how: str
) -> None:
    """The host rewrites one access entry (index 5, a read) so that it is no entry of this
    log there: the person's view lists every other entry as before, and that one, at its
    index, as damaged with nothing known of it; it used to raise, hiding the whole log.
    The pinned head covered other bytes there: every verification refuses the log as a
    fork (the bytes are hashed as they are, whether or not they parse)."""
    world, head = pinned_world
    before = world.vault.access_log()
    size = len(before)
    assert [e.kind for e in before[3:10:2]] == ["read"] * 4
    raws = raw_entries(world.path, world.vault_id)
    _replace_entry(world, 5, _garbled(raws, 5, how))

    after = world.vault.access_log()
    assert [e.index for e in after] == list(range(size))
    assert after[:5] + after[6:] == before[:5] + before[6:]
    damaged = after[5]
    assert (damaged.damaged, damaged.damage, damaged.time) == (True, "entry", None)
    assert (damaged.kind, damaged.result, damaged.actor, damaged.details) == ("", "", "", {})
    assert (damaged.link_ids, damaged.records, damaged.unsigned) == ([], [], False)
    assert damaged.disclose_after is None
    assert not any(e.damaged for e in before)

    page = world.vault.log(limit=50)
    assert (page.entries, page.withheld, page.cursor) == (after[::-1], 0, None)
    paged: list[pds.AccessEntry] = []
    cursors: list[int] = []
    cursor: int | None = None
    for _ in range(size):  # bounded: a cursor that does not move must fail, not hang
        page = world.vault.log(limit=3, before=cursor)
        paged += page.entries
        if page.cursor is None:
            break
        cursor = page.cursor
        cursors.append(cursor)
    assert paged == after[::-1]
    assert cursors == [8, 5, 2]
    # No actor to match; no time: a page since a time shows it where the page reaches it.
    assert [e.index for e in world.vault.log(actor=world.agency.did).entries] == [9, 7, 3]
    assert [e.index for e in world.vault.log(since=when(after[4])).entries] == list(
        range(10, 3, -1)
    )
    assert world.vault.log(since=world.clock.at(world.clock.ms + DAY_MS)).entries == []

    _refused_everywhere_as_a_fork(world, head)
    # A missing index is still refused, damaged entry or not.
    assert sql(world.path, "DELETE FROM log_entries WHERE idx = 8 AND vault_id = ?", world.vault_id)
    with pytest.raises(errors.IntegrityError) as gap:
        world.vault.log()
    assert gap.value.reason == "log-gap"


@pytest.mark.parametrize("value", ["'a text'", "12345"], ids=["text", "integer"])
def test_a_subtree_hash_of_another_storage_class_is_a_corrupt_store(
    world: World, value: str
) -> None:
    """The next append reads the stored hash of its left sibling: a cell the host rewrote
    as text or a number is ``StoreCorrupt`` (bytes() made 12,345 zero bytes of a number)."""
    token, _ = populated(world)
    size = world.vault.log_size()
    if size % 2 == 0:
        world.read(token)
        size += 1
    assert sql(
        world.path,
        f"UPDATE log_nodes SET hash = {value} WHERE vault_id = ? AND level = 0 AND idx = ?",
        world.vault_id,
        size - 1,
    )
    with pytest.raises(errors.StoreCorrupt):
        world.read(token)
    assert world.vault.log_size() == size


def test_an_inclusion_proof_of_an_entry_that_does_not_parse_is_refused(
    pinned_world: tuple[World, Checkpoint],
) -> None:
    world, _ = pinned_world
    sql(
        world.path,
        "UPDATE log_entries SET entry = x'c1' WHERE vault_id = ? AND idx = 5",
        world.vault_id,
    )
    with pytest.raises(errors.InvalidProof) as refused:
        world.vault.prove_inclusion(5)
    assert refused.value.reason == "log-entry"
    entry, _ = world.vault.prove_inclusion(4)
    assert entry.index == 4


def _host_appends(world: World, raw: bytes) -> int:
    """Append ``raw`` at the log's end as the host can (it writes access entries), with
    the stored subtree hashes made as for any entry; return its index."""
    backend = world.store.backend
    with backend.transaction():
        log = MerkleLog(backend, world.vault_id)
        index = log.size()
        log.append_raw(index, world.clock.ms, raw)
    return index


def _is_entry_at(raw: bytes, index: int, vault_id: str) -> bool:
    try:
        entry = LogEntry.parse(raw)
    except errors.FormatError:
        return False
    return (entry.index, entry.vault_id) == (index, vault_id)


def _appended_garbage(world: World, how: str) -> bytes:
    """Bytes the host could append at the log's end that are no entry of this log there."""
    raws = raw_entries(world.path, world.vault_id)
    size = len(raws)
    # A parseable entry at the next index (the last one's header moved on), then garbled.
    header = {**_codec.decode(raws[-1]), "index": size}
    return _garbled([*raws, _codec.encode(header)], size, how)


@pytest.mark.parametrize("how", GARBLINGS)
def test_an_appended_entry_that_does_not_parse_is_evidence_not_a_block(
    pinned_world: tuple[World, Checkpoint], how: str
) -> None:
    """The host appends bytes that are no entry of this log after the latest head, and the
    owner then signs a head over them (a grant). They are a leaf like any other: the log
    verifies against the old pin and the new head, repair and rotation read past it
    (repair lists it as ignored), and the view lists it as damaged. Every verification
    used to refuse the log for good (log-entry): the host could stop them at will."""
    world, head = pinned_world
    garbage = _appended_garbage(world, how)
    assert not _is_entry_at(garbage, head.size, world.vault_id)
    index = _host_appends(world, garbage)
    assert index == head.size
    world.grant()  # the owner signs a head over it
    latest = world.vault.latest_checkpoint()
    assert latest is not None and latest.size == index + 2
    raws = raw_entries(world.path, world.vault_id)
    assert raws[index] == garbage
    assert latest.root == merkle.root([leaf(raw) for raw in raws])  # hashed as it is

    fresh = world.store.open_vault(world.vault_id)
    fresh.verify_log(head)
    fresh.verify_log(latest)
    fresh.unlock(key_file=world.key_file)
    report = fresh.repair()
    assert (report.ignored, report.checkpoint) == ([index], None)
    assert fresh.rotate() == {"tax/2024": 2}
    fresh.verify_log(fresh.latest_checkpoint() or head)
    entries = fresh.access_log()
    assert [(e.index, e.damage) for e in entries] == [
        (i, "entry" if i == index else None) for i in range(len(entries))
    ]
    assert [e.kind for e in entries[index + 1 :]] == ["grant", "rotate"]


def test_a_stored_subtree_hash_the_host_changed_still_fails_verification(
    pinned_world: tuple[World, Checkpoint],
) -> None:
    """Past an entry that does not parse, the stored subtree hashes must still match the
    entries (log-entry): only the entries' bytes are taken as the host wrote them."""
    world, head = pinned_world
    index = _host_appends(world, b"\xc1")
    world.vault.verify_log(head)
    # Its leaf hash and every complete subtree over it: the root reads one of them.
    assert sql(
        world.path,
        "UPDATE log_nodes SET hash = ? WHERE vault_id = ? AND (idx << level) <= ? "
        "AND ? < ((idx + 1) << level)",
        bytes(32),
        world.vault_id,
        index,
        index,
    )
    with pytest.raises(errors.InvalidProof) as refused:
        world.vault.verify_log(head)
    assert refused.value.reason == "log-entry"


def test_a_log_of_nothing_but_a_host_leaf_needs_a_repair_before_its_first_head(
    world: World,
) -> None:
    """A vault with no head whose log holds only bytes that are no entry: they may be an
    owner entry the host garbled (and deleted the heads over), so the vault is taken as
    having lost its heads (checkpoint-missing), as for an unsigned entry of an owner's
    kind, until a repair signs a head over the log as it is. The repair now passes it."""
    assert (world.vault.log_size(), world.vault.latest_checkpoint()) == (0, None)
    index = _host_appends(world, b"\xc1")
    with pytest.raises(errors.IntegrityError) as missing:
        world.vault.checkpoint()
    assert missing.value.reason == "checkpoint-missing"
    report = world.vault.repair()
    assert report.ignored == [index] and report.checkpoint is not None
    world.vault.verify_log(report.checkpoint)
    world.vault.verify_log(world.vault.checkpoint())


@pytest.mark.parametrize(
    "value",
    ["'a text'", "CAST(x'c1ff' AS TEXT)", "12345", "2.5"],
    ids=["text", "text-not-utf8", "integer", "real"],
)
def test_an_entry_cell_of_another_storage_class_is_listed_as_damaged(
    pinned_world: tuple[World, Checkpoint], value: str
) -> None:
    """SQLite does not enforce column types: an entry the host rewrote as TEXT (UTF-8 or
    not) or a number is read as its bytes, which parse as no entry, so the person's view
    lists it as damaged (a TypeError or StoreCorrupt stopped it) and, the pinned head
    covering other bytes there, verification refuses the log as a fork."""
    world, head = pinned_world
    before = world.vault.access_log()
    sql(
        world.path,
        f"UPDATE log_entries SET entry = {value} WHERE vault_id = ? AND idx = 5",
        world.vault_id,
    )
    after = world.vault.access_log()
    assert [(e.index, e.damage) for e in after] == [
        (index, "entry" if index == 5 else None) for index in range(len(before))
    ]
    assert after[:5] + after[6:] == before[:5] + before[6:]
    assert [e.index for e in world.vault.log(limit=3).entries] == [10, 9, 8]
    _refused_everywhere_as_a_fork(world, head)


def test_an_entry_deleted_from_the_middle_is_detected(
    pinned_world: tuple[World, Checkpoint],
) -> None:
    world, head = pinned_world
    assert sql(world.path, "DELETE FROM log_entries WHERE idx = 3 AND vault_id = ?", world.vault_id)
    with pytest.raises(errors.InvalidProof):
        world.vault.verify_log(head)


def _drop_from(world: World, keep: int) -> None:
    """Delete every entry at or after ``keep`` and every subtree hash that covers one."""
    sql(
        world.path,
        "DELETE FROM log_entries WHERE vault_id = ? AND idx >= ?",
        world.vault_id,
        keep,
    )
    sql(
        world.path,
        "DELETE FROM log_nodes WHERE vault_id = ? AND ((idx + 1) << level) > ?",
        world.vault_id,
        keep,
    )


@pytest.mark.parametrize("keep", [10, 8, 1])
def test_dropping_the_last_entries_is_detected(
    pinned_world: tuple[World, Checkpoint], keep: int
) -> None:
    world, head = pinned_world
    _drop_from(world, keep)
    assert world.vault.log_size() == keep
    # What is left is a coherent, smaller log...
    remaining = [leaf(e) for e in raw_entries(world.path, world.vault_id)]
    assert len(remaining) == keep
    assert world.vault.log_root() == merkle.root(remaining)
    # ...which the pinned head exposes as truncated.
    with pytest.raises(errors.InvalidProof) as caught:
        world.vault.verify_log(head)
    assert caught.value.reason == "log-truncated"
    # The newest checkpoint the store keeps no longer matches its log either.
    with pytest.raises(errors.InvalidProof):
        world.vault.latest_checkpoint()


def test_truncating_and_regrowing_the_log_is_detected(
    pinned_world: tuple[World, Checkpoint],
) -> None:
    world, head = pinned_world
    _drop_from(world, 6)
    # The owner's key signs no head over a log that no longer extends the latest signed
    # one the store holds...
    with pytest.raises(errors.InvalidProof) as refused:
        world.vault.checkpoint()
    assert refused.value.reason == "log-fork"
    stored = world.store.backend.latest_checkpoint(world.vault_id)
    world.grant()
    assert world.store.backend.latest_checkpoint(world.vault_id) == stored
    # ...so the host hides the heads too: then only the pinned head catches the rewrite.
    sql(world.path, "DELETE FROM log_checkpoints WHERE vault_id = ? AND size > 6", world.vault_id)
    token = world.grant()
    while world.vault.log_size() < head.size + 2:
        world.read(token)
    with pytest.raises(errors.InvalidProof) as caught:
        world.vault.verify_log(head)
    assert caught.value.reason == "log-fork"
    # The vault object that signed the newer heads refuses the older ones now shown...
    with pytest.raises(errors.InvalidProof) as older:
        world.vault.checkpoint()
    assert older.value.reason == "checkpoint-missing"
    # ...while a fresh one (without a pin) sees the new history verify on its own terms.
    world.reopen()
    world.vault.verify_log(world.vault.checkpoint())


def _rewrite_with_hashes(world: World, index: int) -> None:
    """A host's rewrite of entry ``index`` with every stored subtree hash recomputed, so
    the stored tree is coherent, just no longer the one the owner signed."""
    raws = raw_entries(world.path, world.vault_id)
    changed = bytearray(raws[index])
    changed[_sealed_span(raws[index])[5]] ^= 0x01
    raws[index] = bytes(changed)
    sql(world.path, "DELETE FROM log_entries WHERE vault_id = ?", world.vault_id)
    sql(world.path, "DELETE FROM log_nodes WHERE vault_id = ?", world.vault_id)
    backend = world.store.backend
    with backend.transaction():
        log = MerkleLog(backend, world.vault_id)
        for position, raw in enumerate(raws):
            log.append_raw(position, LogEntry.parse(raw).time, raw)


def _sign_or_export(world: World, operation: str) -> Path:
    """Run an owner operation that signs a new head; return where its output would go."""
    output = world.tmp / f"out-{operation}"
    if operation == "checkpoint":
        world.vault.checkpoint()
    elif operation == "export":
        world.vault.export(output)
    else:
        audit.export_audit(world.vault, output)
    return output


@pytest.mark.parametrize("operation", ["checkpoint", "export", "audit"])
def test_the_owner_signs_no_head_over_a_rewritten_log(
    pinned_world: tuple[World, Checkpoint], operation: str
) -> None:
    """What exists to hand out a signed head refuses a log that does not extend the
    latest one the owner signed."""
    world, head = pinned_world
    _rewrite_with_hashes(world, 2)
    stored = world.store.backend.latest_checkpoint(world.vault_id)
    size = world.vault.log_size()
    with pytest.raises(errors.InvalidProof) as caught:
        _sign_or_export(world, operation)
    assert caught.value.reason == "log-fork"
    # Nothing was appended or signed, and nothing was written.
    assert world.store.backend.latest_checkpoint(world.vault_id) == stored
    assert world.vault.log_size() == size
    output = world.tmp / f"out-{operation}"
    assert not output.exists() or not any(output.iterdir())
    assert not list(world.tmp.glob(".out-*"))
    with pytest.raises(errors.InvalidProof):
        world.vault.verify_log(head)


@pytest.mark.parametrize("operation", ["grant", "owner read", "revoke", "rotate", "destroy"])
def test_owner_operations_on_a_rewritten_log_are_logged_but_sign_no_head(
    pinned_world: tuple[World, Checkpoint], operation: str
) -> None:
    """The other owner operations go on (a revocation or a destroy must not wait for the
    host to mend its log) and append their entry, but the owner's key signs no head over
    the rewritten log: the latest checkpoint stays the one the host contradicts."""
    world, head = pinned_world
    token = world.grant()
    _rewrite_with_hashes(world, 2)
    stored = world.store.backend.latest_checkpoint(world.vault_id)
    size = world.vault.log_size()
    vault = world.vault
    if operation == "grant":
        world.grant()
    elif operation == "owner read":
        vault.get(vault.list("tax/2024").records[0].record_id)
    elif operation == "revoke":
        with pytest.raises(errors.IntegrityError) as unrecorded:
            vault.revoke(token)  # made and logged, but no head records it: said so
        assert unrecorded.value.reason == "revocation-unrecorded"
        with pytest.raises(errors.Revoked):
            world.read(token)
        size += 1  # the refused read is logged too
    elif operation == "rotate":
        with pytest.raises(errors.IntegrityError) as unrecorded:
            vault.rotate("tax/2024")
        assert unrecorded.value.reason == "rotation-unrecorded"
    else:
        vault.destroy()
        with pytest.raises(errors.VaultDestroyed):
            world.store.open_vault(world.vault_id).unlock(key_file=world.key_file)
    assert world.store.backend.latest_checkpoint(world.vault_id) == stored
    assert MerkleLog(world.store.backend, world.vault_id).size() == size + 1
    with pytest.raises(errors.InvalidProof) as caught:
        vault.latest_checkpoint()
    assert caught.value.reason == "log-fork"
    with pytest.raises(errors.InvalidProof):
        vault.verify_log(head)


@pytest.mark.parametrize("operation", ["export", "audit"])
def test_an_export_refuses_entries_that_do_not_hash_to_the_signed_head(
    pinned_world: tuple[World, Checkpoint], operation: str
) -> None:
    """An entry rewritten without its stored hashes passes the stored-subtree check
    (``latest_checkpoint``); the export recomputes the tree from the entries it ships."""
    world, _ = pinned_world
    raw = raw_entries(world.path, world.vault_id)[4]
    changed = bytearray(raw)
    changed[_sealed_span(raw)[5]] ^= 0x01
    _replace_entry(world, 4, bytes(changed))
    assert world.vault.latest_checkpoint() is not None
    with pytest.raises(errors.InvalidProof) as caught:
        _sign_or_export(world, operation)
    assert caught.value.reason == "log-fork"
    output = world.tmp / f"out-{operation}"
    assert not output.exists() or not any(output.iterdir())
    assert not list(world.tmp.glob(".out-*"))


def _copy_store(world: World, target: Path) -> list[Path]:
    """Copy the database and its WAL (what a backup of a live store holds)."""
    target.mkdir(parents=True, exist_ok=True)
    copied = []
    for suffix in ("", "-wal"):
        source = world.path.with_name(world.path.name + suffix)
        if source.exists():
            copied.append(Path(shutil.copy2(source, target / source.name)))
    shutil.copy2(world.path.with_name(world.path.name + ".hostkey"), target)
    return copied


def _restore(world: World, backup: Path) -> None:
    world.store.close()
    for suffix in ("-wal", "-shm"):
        world.path.with_name(world.path.name + suffix).unlink(missing_ok=True)
    for suffix in ("", "-wal"):
        saved = backup / (world.path.name + suffix)
        if saved.exists():
            shutil.copy2(saved, world.path.with_name(saved.name))
    world.reopen()


@pytest.mark.parametrize("regrow", [False, True])
def test_restoring_an_older_copy_of_the_store_is_detected(
    world: World, tmp_path: Path, regrow: bool
) -> None:
    token, record_id = populated(world)
    world.read(token)
    assert _copy_store(world, tmp_path / "backup")
    older_size = world.vault.log_size()
    for _ in range(3):
        world.read(token)
        world.clock.tick()
        world.vault.get(record_id)
    pinned = world.vault.checkpoint()
    world.vault.verify_log(pinned)
    _restore(world, tmp_path / "backup")
    assert world.vault.log_size() == older_size
    if regrow:
        while world.vault.log_size() < pinned.size + 1:
            world.clock.tick()
            world.vault.get(record_id)
    with pytest.raises(errors.InvalidProof) as caught:
        world.vault.verify_log(pinned)
    assert caught.value.reason == ("log-fork" if regrow else "log-truncated")


def test_forked_copies_do_not_verify_against_each_other(world: World, tmp_path: Path) -> None:
    token, record_id = populated(world)
    world.read(token)
    common = world.vault.checkpoint()
    _copy_store(world, tmp_path / "fork")
    fork_store = pds.open_store(tmp_path / "fork" / world.path.name, clock=world.clock)
    try:
        fork = fork_store.open_vault(world.vault_id)
        fork.unlock(key_file=world.key_file)
        # Each copy appends the same number of entries, differently.
        world.read(token)
        world.clock.tick()
        world.vault.get(record_id)
        world.clock.tick()
        fork.get(record_id)
        fork.get(record_id)
        assert world.vault.log_size() == fork.log_size() == common.size + 2
        head_a, head_b = world.vault.checkpoint(), fork.checkpoint()
        assert head_a.root != head_b.root
        world.vault.verify_log(head_a)
        fork.verify_log(head_b)
        for vault in (world.vault, fork):
            vault.verify_log(common)
        with pytest.raises(errors.InvalidProof):
            fork.verify_log(head_a)
        with pytest.raises(errors.InvalidProof):
            world.vault.verify_log(head_b)
        # No consistency proof links the two heads either.
        with pytest.raises(errors.InvalidProof):
            merkle.verify_consistency(
                head_a.size,
                head_b.size,
                head_a.root,
                head_b.root,
                fork.prove_consistency(head_a.size),
            )
    finally:
        fork_store.close()


def test_a_head_of_another_vault_or_key_is_refused(
    pinned_world: tuple[World, Checkpoint],
) -> None:
    world, head = pinned_world
    other = world.store.open_vault(world.store.create_vault(key_file=world.key_file))
    other.unlock(key_file=world.key_file)
    with pytest.raises(errors.InvalidProof):
        other.verify_log(head)
    impostor = Checkpoint.sign(
        other._keys().identity,
        world.vault_id,
        head.size,
        head.root,
        head.time,
        records=head.records,
    )
    with pytest.raises(errors.InvalidProof):
        world.vault.verify_log(impostor)
    world.vault.verify_log(head.to_text())
