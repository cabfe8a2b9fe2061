"""Revocation (promise 5): immediate, covering every descendant, visible to every host
object and process on the store, signed for auditors, and (with rotation) cryptographic:
records written after revoke + rotate stay unreadable with everything the revoked party
ever held. A revocation store that cannot be read denies.
"""

from __future__ import annotations

import datetime as dt
import itertools
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import nacl.exceptions
import nacl.signing
import pytest

import pds
from pds import _codec, _crypto, capability
from pds.accesslog import MerkleLog
from pds.capability import Token
from pds.errors import FormatError, Revoked, StoreError

if TYPE_CHECKING:
    from tests.tokens_helpers import (
        DAY_MS,
        HOUR_MS,
        Hoard,
        World,
        copy_database,
        make_world,
        raw,
        real_batch_host_share,
        refusals,
        serve_in_another_process,
        stored_batch,
        stored_record,
        thief_decrypt,
        thief_record_host_share,
        thief_unseal,
    )
else:
    from tokens_helpers import (
        DAY_MS,
        HOUR_MS,
        Hoard,
        World,
        copy_database,
        make_world,
        raw,
        real_batch_host_share,
        refusals,
        serve_in_another_process,
        stored_batch,
        stored_record,
        thief_decrypt,
        thief_record_host_share,
        thief_unseal,
    )


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    opened = make_world(tmp_path / "world")
    yield opened
    opened.close()


def grant(world: World, key: pds.PrincipalKey, **overrides: Any) -> pds.Token:
    options: dict[str, Any] = {
        "collections": ["tax/*"],
        "purpose": "benefit check",
        "expires": dt.timedelta(days=30),
    }
    options.update(overrides)
    return world.vault.grant(key.did, **options)


def reads(world: World, key: pds.PrincipalKey, token: pds.Token, store: pds.Store) -> str:
    """``served`` or the refusal reason."""
    try:
        world.grantee(key).read(store, token)
    except pds.errors.AccessDenied as refused:
        return refused.reason
    return "served"


Chain = list[tuple[pds.PrincipalKey, pds.Token]]


def chain_of_three(world: World) -> Chain:
    """root -> middle -> leaf, each held by its own key, each seen by the host once."""
    world.vault.put("tax/a", {"n": 1})
    keys = [pds.PrincipalKey.generate() for _ in range(3)]
    root = grant(world, keys[0], delegable=2)
    middle = world.grantee(keys[0]).delegate(root, to=keys[1].did)
    leaf = world.grantee(keys[1]).delegate(middle, to=keys[2].did)
    chain = [(keys[0], root), (keys[1], middle), (keys[2], leaf)]
    for key, token in chain:
        assert reads(world, key, token, world.store) == "served"
    return chain


def test_revoking_a_root_refuses_its_holder_and_every_delegate(world: World) -> None:
    chain = chain_of_three(world)
    (root_key, root), (middle_key, middle) = chain[0], chain[1]
    # A further delegation the host has never seen is covered too.
    unseen_key = pds.PrincipalKey.generate()
    unseen = world.grantee(middle_key).delegate(middle, to=unseen_key.did)
    world.vault.revoke(root, reason="withdrawn")
    for key, token in [*chain, (unseen_key, unseen)]:
        assert reads(world, key, token, world.store) == "revoked"
    assert refusals(world.vault) == ["revoked"] * 4
    with pytest.raises(Revoked):
        world.grantee(root_key).read(world.store, root, action="list")


def test_revoking_a_middle_link_refuses_its_descendants_only(world: World) -> None:
    chain = chain_of_three(world)
    (root_key, root), (middle_key, middle), (leaf_key, leaf) = chain
    assert world.vault.revoke(middle.link_id.hex(), reason="case closed") == middle.link_id
    assert reads(world, middle_key, middle, world.store) == "revoked"
    assert reads(world, leaf_key, leaf, world.store) == "revoked"
    assert reads(world, root_key, root, world.store) == "served"
    # A new delegation from the still-valid root is served; one from the revoked link is not.
    fresh_key = pds.PrincipalKey.generate()
    fresh = world.grantee(root_key).delegate(root, to=fresh_key.did)
    assert reads(world, fresh_key, fresh, world.store) == "served"
    late_key = pds.PrincipalKey.generate()
    late = world.grantee(middle_key).delegate(middle, to=late_key.did)
    assert reads(world, late_key, late, world.store) == "revoked"


def test_revocation_by_token_text_raw_id_and_twice(world: World) -> None:
    chain = chain_of_three(world)
    (_, root), (middle_key, middle), (leaf_key, leaf) = chain
    assert world.vault.revoke(leaf.to_text()) == leaf.link_id
    assert world.vault.revoke(middle.link_id) == middle.link_id
    assert world.vault.revoke(middle) == middle.link_id  # the first revocation stands
    assert reads(world, leaf_key, leaf, world.store) == "revoked"
    assert reads(world, middle_key, middle, world.store) == "revoked"
    body = _codec.decode(_codec.decode(world.vault.revocation_list())["body"])
    assert len(body["revocations"]) == 2
    for bad in ("not hex", "ab" * 31, b"\x00" * 31, "pdst1_garbage"):
        with pytest.raises(FormatError):
            world.vault.revoke(bad)
    assert root.link_id not in {
        _codec.decode(statement)["link"] for statement, _ in body["revocations"]
    }


def test_another_vaults_revocation_of_a_link_does_not_touch_this_vault(world: World) -> None:
    """A revocation binds the vault whose owner signed it. The owner of another vault in
    the same store, who learns a link id (every delegate can compute it), revokes it in
    their own vault (by id: a token of another vault is refused as a mistake): this
    vault's grant is still served and listed as active, its own
    revocation list and log are unchanged, and its owner's own revocation of the same link
    is then recorded, signed, logged and enforced (not taken as already done)."""
    chain = chain_of_three(world)
    (root_key, root), _, (leaf_key, leaf) = chain
    other = world.open_vault(world.store, world.store.create_vault(key_file=world.key_file))
    # A token of this vault given to the other one is a mistake, refused; bare ids are not.
    for token in (root, root.to_text()):
        with pytest.raises(FormatError, match="another vault"):
            other.revoke(token)
    assert other.revoke(root.link_id) == root.link_id
    assert other.revoke(leaf.link_id.hex()) == leaf.link_id
    for host in (world.store, world.open_store()):
        assert reads(world, root_key, root, host) == "served"
        assert reads(world, leaf_key, leaf, host) == "served"
    status = {g.link_id: g.status for g in world.vault.grants()}
    assert status[root.link_id.hex()] == status[leaf.link_id.hex()] == "active"
    own = _codec.decode(_codec.decode(world.vault.revocation_list())["body"])
    assert own["revocations"] == []
    size = world.vault.log_size()
    # This vault's owner revokes the same link: a revocation of its own, enforced.
    assert world.vault.revoke(root, reason="withdrawn") == root.link_id
    assert world.vault.log_size() == size + 1
    own = _codec.decode(_codec.decode(world.vault.revocation_list())["body"])
    assert [_codec.decode(statement)["link"] for statement, _ in own["revocations"]] == [
        root.link_id
    ]
    assert reads(world, root_key, root, world.store) == "revoked"
    assert reads(world, leaf_key, leaf, world.store) == "revoked"
    # The other vault's list holds its own two statements, about its own vault.
    theirs = _codec.decode(_codec.decode(other.revocation_list())["body"])
    statements = [_codec.decode(statement) for statement, _ in theirs["revocations"]]
    assert {s["link"] for s in statements} == {root.link_id, leaf.link_id}
    assert {s["vault"] for s in statements} == {other.vault_id}


def test_revocation_is_seen_by_every_store_object_and_process(world: World) -> None:
    chain = chain_of_three(world)
    (root_key, root), _, (leaf_key, leaf) = chain
    second = world.open_store()
    for host in (world.store, second):
        assert reads(world, root_key, root, host) == "served"  # each host has cached the chain
        assert reads(world, leaf_key, leaf, host) == "served"
    # The owner revokes through yet another Store object on the same file.
    owner_store = world.open_store()
    world.open_vault(owner_store).revoke(root, reason="withdrawn")
    for host in (world.store, second):
        assert reads(world, root_key, root, host) == "revoked"
        assert reads(world, leaf_key, leaf, host) == "revoked"
    for key, token in ((root_key, root), (leaf_key, leaf)):
        invocation = world.grantee(key).invoke(token).to_bytes()
        assert serve_in_another_process(world.db, invocation, world.clock.ms) == "Revoked revoked"
    world.reopen()
    assert reads(world, root_key, root, world.store) == "revoked"


def test_revoke_all_by_audience(world: World) -> None:
    world.vault.put("tax/a", {"n": 1})
    agency, other, sub = (pds.PrincipalKey.generate() for _ in range(3))
    first = grant(world, agency)
    second = grant(world, agency, collections=["tax/a"], delegable=1)
    others = grant(world, other, delegable=1)
    to_agency = world.grantee(other).delegate(others, to=agency.did)
    from_agency = world.grantee(agency).delegate(second, to=sub.did)
    for key, token in ((agency, to_agency), (sub, from_agency)):
        assert reads(world, key, token, world.store) == "served"  # the host has seen them
    revoked = world.vault.revoke_all(audience=agency.did, reason="contract ended")
    assert set(revoked) == {first.link_id, second.link_id, to_agency.link_id}
    for key, token in ((agency, first), (agency, second), (agency, to_agency), (sub, from_agency)):
        assert reads(world, key, token, world.store) == "revoked"
    assert reads(world, other, others, world.store) == "served"
    with pytest.raises(FormatError):
        world.vault.revoke_all(audience="did:key:zNotAKey")


def test_revoke_all_reaches_a_grant_whose_link_row_the_host_hid(world: World) -> None:
    """The host hides one of the audience's link rows while the owner revokes all of its
    grants: the owner's signed grant entries in the log still name it."""
    world.vault.put("tax/a", {"n": 1})
    agency = pds.PrincipalKey.generate()
    shown, hidden = grant(world, agency), grant(world, agency, collections=["tax/a"])
    conn = sqlite3.connect(world.db)
    with conn:
        row = conn.execute("SELECT * FROM links WHERE link_id = ?", (hidden.link_id,)).fetchone()
        conn.execute("DELETE FROM links WHERE link_id = ?", (hidden.link_id,))
    revoked = world.vault.revoke_all(audience=agency.did)
    assert set(revoked) == {shown.link_id, hidden.link_id}
    with conn:
        conn.execute(f"INSERT INTO links VALUES ({', '.join('?' * len(row))})", row)
    conn.close()
    assert reads(world, agency, hidden, world.store) == "revoked"


def _garble_log_entry(world: World, index: int) -> None:
    """The host overwrites the stored bytes of entry ``index`` with bytes that do not parse."""
    conn = sqlite3.connect(world.db)
    with conn:
        changed = conn.execute(
            "UPDATE log_entries SET entry = ? WHERE vault_id = ? AND idx = ?",
            (b"\xc1garbage", world.vault.vault_id, index),
        ).rowcount
    conn.close()
    assert changed == 1


def _hide_link_row(world: World, link_id: bytes) -> None:
    conn = sqlite3.connect(world.db)
    with conn:
        assert conn.execute("DELETE FROM links WHERE link_id = ?", (link_id,)).rowcount == 1
    conn.close()


def test_revoke_all_reads_past_bytes_that_are_no_entry(world: World) -> None:
    """Bytes that are no entry, appended by the host (with their subtree hashes, as it
    appends its entries) under a head the owner signed since (a grant's): a leaf the host
    wrote, which the walk hashes and passes over (as ``verify_log`` does). revoke_all finds
    the grant past it whose link row the host hid, and revokes all."""
    world.vault.put("tax/a", {"n": 1})
    agency, other = pds.PrincipalKey.generate(), pds.PrincipalKey.generate()
    shown = grant(world, agency)
    assert reads(world, agency, shown, world.store) == "served"
    backend = world.store.backend
    with backend.transaction():
        log = MerkleLog(backend, world.vault.vault_id)
        log.append_raw(log.size(), 0, b"\xc1garbage")
    hidden = grant(world, agency, collections=["tax/a"])
    _hide_link_row(world, hidden.link_id)  # found only in the log, past the garbled entry
    others = grant(world, other)
    assert set(world.vault.revoke_all(audience=agency.did)) == {shown.link_id, hidden.link_id}
    for token in (shown, hidden):
        assert reads(world, agency, token, world.store) == "revoked"
    assert reads(world, other, others, world.store) == "served"


def _grant_entry(world: World, link_id: bytes) -> int:
    (index,) = [
        e.index
        for e in world.vault.access_log()
        if e.kind == "grant" and link_id.hex() in e.link_ids
    ]
    return index


@pytest.mark.parametrize("change", ["garbled", "relabelled", "deleted"])
def test_revoke_all_says_when_the_host_changed_a_grant_entry(world: World, change: str) -> None:
    """A grant entry a head covers, whose link row the host hid, then changed (its bytes
    garbled, its kind made a read's) or deleted: the walk that reads it checks the log
    against the heads, so revoke_all revokes what it still finds and then says the log
    does not verify (``revocation-incomplete``): the hidden grant may not be revoked."""
    world.vault.put("tax/a", {"n": 1})
    agency = pds.PrincipalKey.generate()
    shown = grant(world, agency)
    hidden = grant(world, agency, collections=["tax/a"])
    grant(world, pds.PrincipalKey.generate())  # a head over the hidden grant's entry
    index = _grant_entry(world, hidden.link_id)
    _hide_link_row(world, hidden.link_id)
    conn = sqlite3.connect(world.db)
    with conn:
        where = "WHERE vault_id = ? AND idx = ?", (world.vault.vault_id, index)
        if change == "garbled":
            conn.execute(f"UPDATE log_entries SET entry = x'c1' {where[0]}", where[1])
        elif change == "relabelled":
            (raw,) = conn.execute(f"SELECT entry FROM log_entries {where[0]}", where[1]).fetchone()
            assert raw.count(b"\xa5grant") == 1
            relabelled = raw.replace(b"\xa5grant", b"\xa4read")
            conn.execute(f"UPDATE log_entries SET entry = ? {where[0]}", (relabelled, *where[1]))
        else:
            conn.execute(f"DELETE FROM log_entries {where[0]}", where[1])
    conn.close()
    with pytest.raises(pds.errors.IntegrityError) as incomplete:
        world.vault.revoke_all(audience=agency.did, reason="contract ended")
    assert incomplete.value.reason == "revocation-incomplete"
    message = str(incomplete.value)
    expected = "log-gap" if change == "deleted" else "log-fork"
    assert "revoked 1 link" in message and f"the log does not verify ({expected})" in message
    assert reads(world, agency, shown, world.store) == "revoked"


def test_revoke_all_on_a_changed_log_with_an_unrecorded_revocation_says_both(
    world: World,
) -> None:
    """A revocation no signed head can record is reported as such (the CLI holds writes
    back until a repair records it), and its message tells that the log does not verify."""
    world.vault.put("tax/a", {"n": 1})
    agency, earlier = pds.PrincipalKey.generate(), pds.PrincipalKey.generate()
    world.vault.revoke(grant(world, earlier))
    conn = sqlite3.connect(world.db)
    with conn:
        conn.execute("DELETE FROM revocations")  # the host drops the recorded revocation
    conn.close()
    token = grant(world, agency)
    _garble_log_entry(world, 0)  # under the heads: a fork
    with pytest.raises(pds.errors.IntegrityError) as unrecorded:
        world.vault.revoke_all(audience=agency.did)
    assert unrecorded.value.reason == "revocation-unrecorded"
    assert "the log does not verify (log-fork)" in str(unrecorded.value)
    assert reads(world, agency, token, world.store) == "revoked"


def test_grants_show_each_status(world: World) -> None:
    world.vault.put("tax/a", {"n": 1})
    keys = {name: pds.PrincipalKey.generate() for name in ("a", "r", "d", "e", "x", "n")}
    active = grant(world, keys["a"], purpose=["benefit check", "audit"])
    revoked = grant(world, keys["r"], delegable=1)
    descendant = world.grantee(keys["r"]).delegate(revoked, to=keys["d"].did)
    assert reads(world, keys["d"], descendant, world.store) == "served"
    expiring = grant(world, keys["e"], expires=dt.timedelta(hours=1))
    exhausted = grant(world, keys["x"], uses=1)
    assert reads(world, keys["x"], exhausted, world.store) == "served"
    later = grant(
        world,
        keys["n"],
        not_before=dt.datetime.fromtimestamp((world.clock.ms + 10 * DAY_MS) / 1000, tz=dt.UTC),
    )
    world.vault.revoke(revoked)
    world.clock.advance(2 * HOUR_MS)
    statuses = {info.link_id: info for info in world.vault.grants()}
    expected = {
        active: "active",
        revoked: "revoked",
        descendant: "revoked",
        expiring: "expired",
        exhausted: "exhausted",
        later: "not-yet-valid",
    }
    assert {k: v.status for k, v in statuses.items()} == {
        token.link_id.hex(): status for token, status in expected.items()
    }
    info = statuses[active.link_id.hex()]
    assert info.audience == keys["a"].did
    assert info.purposes == ["audit", "benefit check"]
    assert info.collections == ["tax/*"]
    assert statuses[descendant.link_id.hex()].parent == revoked.link_id.hex()
    assert (statuses[exhausted.link_id.hex()].uses, statuses[exhausted.link_id.hex()].used) == (
        1,
        1,
    )
    # Locked, the host-visible part is still listed; purposes and scope are not.
    locked = world.store.open_vault(world.vault.vault_id)
    assert {i.link_id: i.status for i in locked.grants()} == {
        k: v.status for k, v in statuses.items()
    }
    assert all(i.purposes is None and i.collections is None for i in locked.grants())


def test_the_revocation_list_verifies_with_the_vault_key_alone(world: World) -> None:
    chain = chain_of_three(world)
    world.vault.revoke(chain[2][1], reason="lost device")
    world.clock.advance(HOUR_MS)
    world.vault.revoke(chain[1][1], reason="case closed")
    world.clock.advance(HOUR_MS)
    signed = world.vault.revocation_list()
    identity = nacl.signing.VerifyKey(_crypto.parse_did_key(world.vault.did))
    outer = _codec.decode(signed)
    assert set(outer) == {"body", "sig"}
    identity.verify(b"pds/revocation-list/v1\x00" + outer["body"], outer["sig"])
    body = _codec.decode(outer["body"])
    assert body["v"] == 1
    assert body["vault"] == world.vault.vault_id
    assert body["issued_at"] == world.clock.ms
    statements = []
    for statement, signature in body["revocations"]:
        identity.verify(b"pds/revocation/v1\x00" + statement, signature)
        statements.append(_codec.decode(statement))
    assert [(s["link"], s["reason"], s["vault"]) for s in statements] == [
        (chain[2][1].link_id, "lost device", world.vault.vault_id),
        (chain[1][1].link_id, "case closed", world.vault.vault_id),
    ]
    assert [s["revoked_at"] for s in statements] == [
        world.clock.ms - 2 * HOUR_MS,
        world.clock.ms - HOUR_MS,
    ]
    # Any changed byte of the list fails, and so does another vault's key.
    changed = bytearray(outer["body"])
    changed[-1] ^= 1
    with pytest.raises(nacl.exceptions.BadSignatureError):
        identity.verify(b"pds/revocation-list/v1\x00" + bytes(changed), outer["sig"])
    stranger = nacl.signing.SigningKey.generate().verify_key
    with pytest.raises(nacl.exceptions.BadSignatureError):
        stranger.verify(b"pds/revocation-list/v1\x00" + outer["body"], outer["sig"])
    # Signatures are domain-separated: a statement's signature does not verify as a list.
    first_statement, first_signature = body["revocations"][0]
    with pytest.raises(nacl.exceptions.BadSignatureError):
        identity.verify(b"pds/revocation-list/v1\x00" + first_statement, first_signature)


def test_after_revoke_and_rotate_new_records_resist_everything_the_revoked_party_held(
    world: World, tmp_path: Path
) -> None:
    agency, sub, control = (pds.PrincipalKey.generate() for _ in range(3))
    world.vault.put("tax/a", {"n": "old"})
    token = grant(world, agency, delegable=1)
    delegated = world.grantee(agency).delegate(token, to=sub.did)
    control_token = grant(world, control)
    hoard = Hoard(agency, [token])
    sub_hoard = Hoard(sub, [delegated])

    def collect(key: pds.PrincipalKey, used: pds.Token, into: Hoard, **request: Any) -> None:
        invocation = world.grantee(key).invoke(used, **request)
        response = world.store.serve(invocation.to_bytes())
        into.responses.append(response)
        world.grantee(key).open(used, response, invocation=invocation)

    collect(agency, token, hoard)
    collect(agency, token, hoard, action="list")
    collect(sub, delegated, sub_hoard)
    # A first rotation while still trusted: the party receives the newer epoch too.
    world.vault.rotate()
    world.vault.put("tax/a", {"n": "second epoch"})
    collect(agency, token, hoard)
    collect(sub, delegated, sub_hoard)
    assert {k[1] for k in world.grantee(agency).epoch_secrets(token, hoard.responses[-1].keys)} == {
        1,
        2,
    }
    world.vault.revoke(token, reason="withdrawn")
    assert world.vault.rotate() == {"tax/a": 3}
    secret = {"n": "after revocation", "ssn": "123-45-6789"}
    new = world.vault.put("tax/a", secret)
    assert new.epoch == 3
    for key, used in ((agency, token), (sub, delegated)):
        with pytest.raises(Revoked):
            world.grantee(key).read(world.store, used)
    # Everything the party held, plus (generously) a copy of the database: any sealed key
    # in it that opens with the party's keys is added to its material.
    stolen = tmp_path / "stolen.db"
    copy_database(world.db, stolen)
    x25519 = [pds.Grantee(k)._x25519 for k in (agency, sub)]
    con = sqlite3.connect(stolen)
    try:
        sealed_in_db = [bytes(r[0]) for r in con.execute("SELECT sealed FROM link_keys")]
        sealed_in_db += [bytes(r[0]) for r in con.execute("SELECT sealed_owner FROM epochs")]
    finally:
        con.close()
    from_db = {
        opened
        for sealed, secret_key in itertools.product(sealed_in_db, x25519)
        if (opened := thief_unseal(sealed, secret_key)) is not None
    }
    epoch_secrets = hoard.epoch_secrets() | sub_hoard.epoch_secrets() | from_db
    assert len(epoch_secrets) == 2  # epochs 1 and 2, nothing newer
    material = sorted(
        set(hoard.all_key_material()) | set(sub_hoard.all_key_material()) | epoch_secrets
    )
    record = stored_record(stolen, new.record_id)
    batch = stored_batch(stolen, record.batch_id)
    assert all(thief_unseal(batch.sealed_reader, s) is None for s in material)
    host_guesses = material + [thief_record_host_share(m, record) for m in material]
    host_guesses += [bytes(32), batch.wrapped_host[:32], batch.wrapped_host[-32:]]
    for reader, host in itertools.product(material, host_guesses):
        assert thief_decrypt(record, reader, host) is None
    # Positive controls: a grantee still trusted reads the record, and the same thief
    # pipeline with its epoch secret and the real host share decrypts it.
    control_read = world.grantee(control).read(world.store, control_token, records=[new.record_id])
    assert [r.data for r in control_read.records] == [secret]
    control_response = world.store.serve(world.grantee(control).invoke(control_token).to_bytes())
    control_secrets = Hoard(control, [control_token], [control_response]).epoch_secrets()
    readers = [r for s in control_secrets if (r := thief_unseal(batch.sealed_reader, s))]
    assert len(readers) == 1
    real = thief_record_host_share(
        real_batch_host_share(world.db, world.vault.vault_id, batch), record
    )
    assert thief_decrypt(record, readers[0], real) == _codec.encode(secret)


def test_an_unreadable_revocation_store_denies_and_releases_nothing(world: World) -> None:
    world.vault.put("tax/a", {"n": 1})
    agency = pds.PrincipalKey.generate()
    token = grant(world, agency)
    grantee = world.grantee(agency)
    grantee.read(world.store, token)
    released = [e.index for e in world.vault.access_log() if e.result == "released"]
    invocation = grantee.invoke(token).to_bytes()
    with raw(world.db) as con:
        con.execute("ALTER TABLE revocations RENAME TO revocations_gone")
    for host in (world.store, world.open_store()):
        with pytest.raises(StoreError) as failed:
            host.serve(invocation)
        assert not isinstance(failed.value, pds.errors.AccessDenied)
    assert [e.index for e in world.vault.access_log() if e.result == "released"] == released
    with raw(world.db) as con:
        con.execute("ALTER TABLE revocations_gone RENAME TO revocations")
    assert len(world.store.serve(invocation).records) == 1


def _plant_link(world: World, token: pds.Token, *, expires: int) -> None:
    """The host writes a ``links`` row for ``token`` (sealed to the owner, as pds stores
    a known link), claiming ``expires``: the table is the host's to write."""
    owner_public = _crypto.ed25519_to_x25519(world.vault._row.identity_public)
    with raw(world.db) as con:
        con.execute(
            "INSERT INTO links (link_id, vault_id, parent_id, audience, not_before, expires, "
            "uses, created_at, sealed_token) VALUES (?, ?, NULL, ?, 0, ?, NULL, 0, ?)",
            (
                token.link_id,
                world.vault.vault_id,
                token.leaf.audience,
                expires,
                _crypto.seal(token.to_bytes(), owner_public, _crypto.system_rng),
            ),
        )


def test_epoch_secrets_go_only_to_links_the_owner_signed_and_that_are_live(
    world: World,
) -> None:
    """Rotation, a new collection and ``share_keys`` seal epoch secrets only to links whose
    own signed bytes verify against the vault's identity key and are unexpired: a link row
    the host forged (a token it signed itself for this vault) or edited (an expired grant's
    expiry raised) gets nothing, old epochs included."""
    world.vault.put("tax/a", {"n": 1})
    thief, expired_holder, honest = (pds.PrincipalKey.generate() for _ in range(3))
    signer = _crypto.SigningKey.generate(_crypto.system_rng)
    forged = Token(
        (
            capability.make_link(
                signer=signer,
                vault_id=world.vault.vault_id,
                audience=thief.public_key,
                parent=None,
                caveats=capability.Caveats(
                    abilities=frozenset({"read"}),
                    collections=("*",),
                    fields=None,
                    window=(None, None),
                    purposes=frozenset({"p"}),
                    basis=None,
                    not_before=0,
                    expires=world.clock.ms + 30 * DAY_MS,
                    uses=None,
                    depth=0,
                ),
                keys=[],
                salt=bytes(16),
            ),
        )
    )
    _plant_link(world, forged, expires=world.clock.ms + 30 * DAY_MS)
    short = grant(world, expired_holder, expires=dt.timedelta(hours=1))
    control = grant(world, honest)
    world.clock.advance(2 * HOUR_MS)
    with raw(world.db) as con:
        con.execute(
            "UPDATE links SET expires = ? WHERE link_id = ?",
            (world.clock.ms + 30 * DAY_MS, short.link_id),
        )
    world.vault.rotate("tax/a")
    world.vault.put("tax/new", {"n": 2})  # a new collection: its first epoch is shared
    world.vault.share_keys()

    def sealed_to(token: pds.Token) -> set[tuple[str, int]]:
        with raw(world.db) as con:
            rows = con.execute(
                "SELECT collection, epoch FROM link_keys WHERE link_id = ?", (token.link_id,)
            ).fetchall()
        return {(str(c), int(e)) for c, e in rows}

    assert sealed_to(control) == {("tax/a", 2), ("tax/new", 1)}  # the positive control
    assert sealed_to(forged) == set()
    assert sealed_to(short) == set()
    # The owner's list of grants judges them the same way: the forged row is invalid, the
    # edited one expired (at its signed expiry); while locked, only the rows are shown.
    shown = {g.link_id: g for g in world.vault.grants()}
    assert shown[forged.link_id.hex()].status == "invalid"
    assert shown[short.link_id.hex()].status == "expired"
    assert shown[short.link_id.hex()].expires == dt.datetime.fromtimestamp(
        short.leaf.caveats.expires / 1000, dt.UTC
    )
    assert shown[control.link_id.hex()].status == "active"
    world.vault.lock()
    assert {g.link_id: g.status for g in world.vault.grants()}[forged.link_id.hex()] == "active"
