"""The owner's heads record the vault's revocations and rotated key epochs
(docs/spec/log.md, "The revocation and rotation records").

The `revocations` and `epochs` tables are the host's. A host that drops a revocation would
have the owner's next rotation seal new key epochs to the revoked link; one that drops the
epoch a rotation made would have the owner write under the epoch the revoked grantee
holds. pds compares the stored rows with what the latest signed head records before it
shares a key epoch, writes, exports or writes an audit package. These tests drop, add and
restore rows the way a host could, with plain SQL on the store file, and watch what
reaches the revoked grantee.
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import hashlib
import io
import os
import sqlite3
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgpack
import pytest

import pds
from pds import _export, audit, errors
from pds._crypto import SigningKey
from pds.accesslog import Checkpoint, LogEntry, MerkleLog
from pds.keys import SymmetricKey
from pds.vault import Vault, _LoggedRecords

T0 = dt.datetime(2026, 3, 1, tzinfo=dt.UTC)


class Clock:
    def __init__(self) -> None:
        self.now = T0.timestamp()

    def __call__(self) -> float:
        return self.now

    def tick(self) -> None:
        self.now += 60


@dataclass
class World:
    path: Path
    key_file: Path
    clock: Clock
    store: pds.Store
    vault: pds.Vault
    revoked: pds.Grantee
    revoked_token: pds.Token
    live: pds.Grantee
    live_token: pds.Token

    def grant(self, grantee: pds.Grantee) -> pds.Token:
        self.clock.tick()
        return self.vault.grant(
            grantee.did,
            collections=["tax/*"],
            purpose="benefit check",
            expires=dt.timedelta(days=30),
        )

    def sql(self, statement: str, *params: Any) -> int:
        conn = sqlite3.connect(self.path)
        try:
            with conn:
                return conn.execute(statement, params).rowcount
        finally:
            conn.close()

    def drop_revocations(self) -> None:
        assert self.sql("DELETE FROM revocations WHERE vault_id = ?", self.vault.vault_id) == 1

    def sql_rows(self, statement: str, *params: Any) -> list[tuple[Any, ...]]:
        conn = sqlite3.connect(self.path)
        try:
            return conn.execute(statement, params).fetchall()
        finally:
            conn.close()

    def epochs_held(self, token: pds.Token, collection: str) -> set[int]:
        """The epochs of ``collection`` sealed to the token's holder in the store."""
        conn = sqlite3.connect(self.path)
        try:
            rows = conn.execute(
                "SELECT epoch FROM link_keys WHERE link_id = ? AND collection = ?",
                (token.link_id, collection),
            ).fetchall()
        finally:
            conn.close()
        return {row[0] for row in rows}

    def head(self) -> Checkpoint:
        head = self.vault.latest_checkpoint()
        assert head is not None
        return head


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    clock = Clock()
    path = tmp_path / "store.db"
    key_file = tmp_path / "owner.key"
    SymmetricKey.create_file(key_file)
    store = pds.open_store(path, clock=clock)
    vault = store.open_vault(store.create_vault(key_file=key_file))
    vault.unlock(key_file=key_file)
    vault.put("tax/2024", {"income": 41000}, record_id="return-2024")
    revoked = pds.Grantee(pds.PrincipalKey.generate(), clock=clock)
    live = pds.Grantee(pds.PrincipalKey.generate(), clock=clock)
    opened = World(path, key_file, clock, store, vault, revoked, None, live, None)  # type: ignore[arg-type]
    opened.revoked_token = opened.grant(revoked)
    opened.live_token = opened.grant(live)
    clock.tick()
    vault.revoke(opened.revoked_token, reason="consent withdrawn")
    yield opened
    store.close()


def expected_record(*link_ids: bytes) -> tuple[int, bytes]:
    """The revocation record computed from its definition, without pds."""
    ids = sorted(set(link_ids))
    return len(ids), hashlib.sha256(b"pds/revoked/v1\x00" + b"".join(ids)).digest()


def expected_rotations(**newest: int) -> tuple[int, bytes]:
    """The rotation record computed from its definition (msgpack, not pds's encoder)."""
    pairs = [[name, newest[name]] for name in sorted(newest, key=str.encode) if newest[name] > 1]
    encoded = msgpack.packb(pairs, use_bin_type=True)
    return len(pairs), hashlib.sha256(b"pds/rotated/v1\x00" + encoded).digest()


# -- what the heads record ----------------------------------------------------------------


def test_every_head_records_the_revocations_so_far(world: World) -> None:
    revoked = world.revoked_token.link_id
    after_revoke = world.head()
    assert after_revoke.size == world.vault.log_size()  # the revocation signed a head
    assert after_revoke.revoked == expected_record(revoked)
    line = f"revoked 1 {base64.b64encode(expected_record(revoked)[1]).decode()}\n"
    assert line in after_revoke.to_text()
    world.vault.get("return-2024")  # an owner read carries the record forward
    assert world.head().size == after_revoke.size + 1
    assert world.head().revoked == expected_record(revoked)
    other = world.grant(pds.Grantee(pds.PrincipalKey.generate()))
    world.vault.revoke(other)
    assert world.head().revoked == expected_record(revoked, other.link_id)
    assert world.vault.checkpoint().revoked == expected_record(revoked, other.link_id)


# -- a dropped revocation ------------------------------------------------------------------


def test_rotation_shares_new_epochs_with_live_links_only(world: World) -> None:
    """The baseline the attack below is measured against."""
    epochs = world.vault.rotate("tax/2024")
    assert epochs == {"tax/2024": 2}
    assert 2 in world.epochs_held(world.live_token, "tax/2024")
    assert 2 not in world.epochs_held(world.revoked_token, "tax/2024")


def test_after_a_dropped_revocation_no_new_epoch_reaches_the_revoked_link(world: World) -> None:
    world.drop_revocations()
    # The host serves the revoked token again (it decides what it serves)...
    world.clock.tick()
    world.revoked.read(world.store, world.revoked_token, collection="tax/2024")
    # ...but the owner's rotation and new collections share nothing: not to the revoked
    # link, and, since the record cannot be trusted, not to the live one either.
    assert world.vault.rotate("tax/2024") == {"tax/2024": 2}
    world.vault.put("tax/2025", {"income": 43000}, record_id="return-2025")
    world.vault.put("tax/2024", {"income": 41500}, record_id="return-2024")
    for token in (world.revoked_token, world.live_token):
        assert 2 not in world.epochs_held(token, "tax/2024")
        assert world.epochs_held(token, "tax/2025") == set()
    with pytest.raises(errors.IntegrityError) as refused:
        world.vault.share_keys()
    assert refused.value.reason == "revocations-changed"
    # What the revoked grantee gets from the colluding host: nothing it can open.
    world.clock.tick()
    read = world.revoked.read(world.store, world.revoked_token, collection="tax/2025")
    assert read.records == []
    assert [(p[0], p[1]) for p in read.pending] == [("return-2025", "tax/2025")]
    world.clock.tick()
    read = world.revoked.read(world.store, world.revoked_token, records=["return-2024"])
    assert read.records == []
    assert [p[0] for p in read.pending] == ["return-2024"]


def test_a_revocation_made_again_mends_the_record(world: World) -> None:
    world.drop_revocations()
    world.vault.rotate("tax/2024")
    world.clock.tick()
    world.vault.revoke(world.revoked_token, reason="again")
    assert world.head().size == world.vault.log_size()
    assert world.head().revoked == expected_record(world.revoked_token.link_id)
    assert world.vault.share_keys() == 1  # the live link's missed epoch, and only that
    assert 2 in world.epochs_held(world.live_token, "tax/2024")
    assert 2 not in world.epochs_held(world.revoked_token, "tax/2024")


def test_a_revocation_over_a_changed_record_signs_no_head(world: World) -> None:
    world.drop_revocations()
    before = world.head()
    holder = pds.Grantee(pds.PrincipalKey.generate(), clock=world.clock)
    other = world.grant(holder)
    with pytest.raises(errors.IntegrityError) as unrecorded:
        world.vault.revoke(other)  # the revocation is made and logged, and the owner told...
    assert unrecorded.value.reason == "revocation-unrecorded"
    world.clock.tick()
    with pytest.raises(errors.Revoked):
        holder.read(world.store, other)
    assert world.head().size < world.vault.log_size()  # ...but no head launders the drop
    assert world.head().revoked == before.revoked
    with pytest.raises(errors.IntegrityError):
        world.vault.share_keys()
    with pytest.raises(errors.IntegrityError):  # made again: still not recordable
        world.vault.revoke(other)
    # The owner mends it: the dropped revocation made again (still one short of the
    # record plus one), then this one again, which is the recorded set plus this link.
    world.clock.tick()
    with pytest.raises(errors.IntegrityError):
        world.vault.revoke(world.revoked_token)
    world.vault.revoke(other)
    assert world.head().size == world.vault.log_size()
    assert world.head().revoked == expected_record(world.revoked_token.link_id, other.link_id)
    assert world.vault.share_keys() == 0


def test_a_revocation_row_the_host_plants_stops_only_its_own_link(world: World) -> None:
    """A row whose statement does not verify is no revocation of the owner's: the records
    ignore it (it must not stop every grantee's keys), and its link, which the host now
    refuses, is left out of sharing like any link with a stored row."""
    planted = world.sql(
        "INSERT INTO revocations (vault_id, link_id, revoked_at, statement, signature) "
        "SELECT vault_id, ?, revoked_at, statement, signature FROM revocations",
        world.live_token.link_id,
    )
    assert planted == 1
    other = pds.Grantee(pds.PrincipalKey.generate(), clock=world.clock)
    other_token = world.grant(other)
    world.clock.tick()
    assert world.vault.rotate("tax/2024") == {"tax/2024": 2}
    assert 2 in world.epochs_held(other_token, "tax/2024")
    assert 2 not in world.epochs_held(world.live_token, "tax/2024")
    assert 2 not in world.epochs_held(world.revoked_token, "tax/2024")
    assert world.vault.share_keys() == 0
    # A genuine row changed is a dropped revocation, not a planted one.
    world.sql(
        "UPDATE revocations SET revoked_at = revoked_at + 1 WHERE link_id = ?",
        world.revoked_token.link_id,
    )
    with pytest.raises(errors.IntegrityError) as refused:
        world.vault.share_keys()
    assert refused.value.reason == "revocations-changed"


def test_grants_without_any_checkpoint_are_not_trusted(world: World) -> None:
    world.sql("DELETE FROM log_checkpoints")
    world.sql("DELETE FROM revocations")
    with pytest.raises(errors.IntegrityError) as refused:
        world.vault.share_keys()
    assert refused.value.reason == "checkpoint-missing"
    with pytest.raises(errors.IntegrityError) as refused:
        world.vault.put("tax/2024", {"income": 1})
    assert refused.value.reason == "checkpoint-missing"


def test_a_head_from_before_the_record_is_trusted_then_extended(world: World) -> None:
    """A head signed by an earlier pds (no `revoked` line) trusts the store once; the next
    head records what it holds."""
    head = world.head()
    legacy = Checkpoint.sign(
        world.vault._keys().identity,
        world.vault.vault_id,
        head.size,
        head.root,
        head.time,
        records=None,
    )
    world.sql(
        "UPDATE log_checkpoints SET note = ? WHERE vault_id = ? AND size = ?",
        legacy.to_text(),
        world.vault.vault_id,
        head.size,
    )
    assert world.head().revoked is None
    assert world.vault.share_keys() == 0
    world.vault.get("return-2024")
    assert world.head().revoked == expected_record(world.revoked_token.link_id)


# -- exports and audit packages ------------------------------------------------------------


def test_an_export_over_a_dropped_revocation_is_refused(world: World) -> None:
    world.drop_revocations()
    size = world.vault.log_size()
    with pytest.raises(errors.IntegrityError) as refused:
        world.vault.export(io.BytesIO())
    assert refused.value.reason == "revocations-changed"
    assert world.vault.log_size() == size  # refused before anything was logged
    with pytest.raises(errors.IntegrityError):
        audit.export_audit(world.vault, world.path.parent / "audit")


@pytest.mark.parametrize("dropped", ["revocations", "epochs"])
def test_an_import_whose_rows_differ_from_its_checkpoint_is_refused(
    world: World, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, dropped: str
) -> None:
    _rotated(world)
    if dropped == "revocations":
        world.drop_revocations()
    else:
        drop_newest_epoch(world, "tax/2024")
    # An exporter that skipped its checks (the owner signs whatever it is given).
    with monkeypatch.context() as patched:
        patched.setattr(Vault, "_check_records", lambda self: None)
        patched.setattr(pds._export, "check_records", lambda head, revoked, newest: None)
        exported = io.BytesIO()
        world.vault.export(exported)
    with pds.open_store(tmp_path / "other.db") as other:
        with pytest.raises(errors.IntegrityError) as refused:
            other.import_vault(io.BytesIO(exported.getvalue()), key_file=world.key_file)
        assert refused.value.reason == f"{dropped}-changed"
        assert other.list_vaults() == []


def test_an_audit_list_that_is_not_the_recorded_set_is_flagged(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    world.drop_revocations()
    with monkeypatch.context() as patched:
        patched.setattr(Vault, "_check_revocations", lambda self: None)
        package = audit.export_audit(world.vault, world.path.parent / "audit")
    rules = [violation.rule for violation in audit.verify_audit(package).violations]
    assert "revocation-record" in rules
    assert "revocation-missing" in rules


# -- a dropped epoch ----------------------------------------------------------------------


def _rotated(world: World) -> None:
    """The owner rotates after the revocation, as it should: epoch 2 reaches the live
    grant only."""
    world.clock.tick()
    assert world.vault.rotate("tax/2024") == {"tax/2024": 2}
    assert world.head().rotated == expected_rotations(**{"tax/2024": 2})
    assert 2 in world.epochs_held(world.live_token, "tax/2024")
    assert 2 not in world.epochs_held(world.revoked_token, "tax/2024")


def test_heads_record_the_rotated_epochs(world: World) -> None:
    assert world.head().rotated == expected_rotations()  # nothing rotated yet
    _rotated(world)
    world.vault.put("tax/2025", {"income": 1})  # a new collection, at its first epoch
    world.vault.rotate()
    world.vault.get("return-2024")
    assert world.head().rotated == expected_rotations(**{"tax/2024": 3, "tax/2025": 2})


def drop_newest_epoch(world: World, collection: str) -> None:
    dropped = world.sql(
        "DELETE FROM epochs WHERE vault_id = ? AND collection = ? AND epoch = "
        "(SELECT MAX(epoch) FROM epochs WHERE vault_id = ? AND collection = ?)",
        world.vault.vault_id,
        collection,
        world.vault.vault_id,
        collection,
    )
    assert dropped == 1


@pytest.mark.parametrize("process", ["the same vault object", "a new process"])
def test_a_write_under_a_dropped_epochs_predecessor_is_refused(world: World, process: str) -> None:
    _rotated(world)
    world.vault.put("tax/2024", {"income": 42000}, record_id="return-2025")  # under epoch 2
    drop_newest_epoch(world, "tax/2024")  # the host: epoch 1, which the revoked one holds
    vault = world.vault
    if process == "a new process":
        vault = pds.open_store(world.path, clock=world.clock).open_vault(vault.vault_id)
        vault.unlock(key_file=world.key_file)
    for write in (
        lambda: vault.put("tax/2024", {"income": 43000}),
        lambda: vault.put_many("tax/2024", [{"income": 44000}]),
        lambda: vault.delete("return-2025"),
    ):
        with pytest.raises(errors.IntegrityError) as refused:
            write()
        assert refused.value.reason == "epochs-changed"
    # Nothing was written under epoch 1 after the rotation.
    conn = sqlite3.connect(world.path)
    try:
        versions = conn.execute(
            "SELECT COUNT(*) FROM records WHERE collection = 'tax/2024' AND epoch = 1"
        ).fetchone()[0]
    finally:
        conn.close()
    assert versions == 1  # the record written before the rotation only


def test_a_collection_whose_epochs_were_all_dropped_is_not_created_again(world: World) -> None:
    _rotated(world)
    world.sql("DELETE FROM epochs WHERE collection = 'tax/2024'")
    with pytest.raises(errors.IntegrityError) as refused:
        world.vault.put("tax/2024", {"income": 1})
    assert refused.value.reason == "epochs-changed"


def test_writes_follow_a_rotation_made_by_another_process(world: World) -> None:
    """The newest epochs are kept per vault object; a write that finds a newer one checks
    the store against the latest head again, and goes on."""
    world.vault.put("tax/2024", {"income": 1})
    other_store = pds.open_store(world.path, clock=world.clock)
    other = other_store.open_vault(world.vault.vault_id)
    other.unlock(key_file=world.key_file)
    other.rotate("tax/2024")
    other.put("tax/2026", {"income": 2})  # a collection made elsewhere, at its first epoch
    info = world.vault.put("tax/2024", {"income": 3})
    assert info.epoch == 2
    assert world.vault.put("tax/2026", {"income": 4}).epoch == 1
    other_store.close()


def test_a_rotation_made_again_after_a_dropped_epoch_mends_the_record(world: World) -> None:
    _rotated(world)
    drop_newest_epoch(world, "tax/2024")
    # Not a new epoch 2: the live link holds the dropped epoch 2's secret under that number
    # and would take it for the new one's.
    assert world.vault.rotate("tax/2024") == {"tax/2024": 3}
    assert world.head().size == world.vault.log_size()  # signed: the recorded state, moved on
    assert world.head().rotated == expected_rotations(**{"tax/2024": 3})
    assert world.vault.put("tax/2024", {"income": 5}, record_id="after").epoch == 3
    assert 3 in world.epochs_held(world.live_token, "tax/2024")
    assert 3 not in world.epochs_held(world.revoked_token, "tax/2024")
    world.clock.tick()
    read = world.live.read(world.store, world.live_token, records=["after"])
    assert [record.data for record in read.records] == [{"income": 5}]


def test_an_export_over_a_dropped_epoch_is_refused(world: World) -> None:
    _rotated(world)
    world.sql("DELETE FROM epochs WHERE collection = 'tax/2024' AND epoch = 2")
    size = world.vault.log_size()
    with pytest.raises(errors.IntegrityError) as refused:
        world.vault.export(io.BytesIO())
    assert refused.value.reason == "epochs-changed"
    with pytest.raises(errors.IntegrityError) as refused:
        audit.export_audit(world.vault, world.path.parent / "audit")
    assert refused.value.reason == "epochs-changed"
    assert world.vault.log_size() == size  # refused before anything was logged


def test_on_a_forked_log_writes_that_must_check_the_epochs_are_refused(world: World) -> None:
    """The records cannot be read from a head the log contradicts; a host that could
    skip the checks by forking its log would skip them at will."""
    _rotated(world)
    drop_newest_epoch(world, "tax/2024")
    # The host also rewrites a stored subtree hash: the log no longer extends the head.
    assert world.sql("UPDATE log_nodes SET hash = zeroblob(32)")
    vault = pds.open_store(world.path, clock=world.clock).open_vault(world.vault.vault_id)
    vault.unlock(key_file=world.key_file)
    with pytest.raises(errors.InvalidProof) as refused:
        vault.put("tax/2024", {"income": 6})
    assert refused.value.reason == "log-fork"
    with pytest.raises(errors.InvalidProof):
        vault.share_keys()
    before = _link_keys(world)
    with pytest.raises(errors.IntegrityError) as unrecorded:
        vault.rotate("tax/2024")  # goes on, shares nothing, and says it is not recorded
    assert unrecorded.value.reason == "rotation-unrecorded"
    assert _link_keys(world) == before


def _link_keys(world: World) -> list[tuple[bytes, str, int, bytes]]:
    conn = sqlite3.connect(world.path)
    try:
        return conn.execute("SELECT * FROM link_keys ORDER BY 1, 2, 3").fetchall()
    finally:
        conn.close()


def test_a_revocation_row_the_host_planted_does_not_preempt_a_revocation(world: World) -> None:
    """A host that expects a revocation plants a row for the link (with another link's
    statement): had `revoke` taken it for a revocation already made, it would have signed
    nothing and recorded nothing, and the host could later delete its row and serve the
    link, and have new epochs shared with it, again."""
    live = world.live_token.link_id
    world.sql(
        "INSERT INTO revocations (vault_id, link_id, revoked_at, statement, signature) "
        "SELECT vault_id, ?, revoked_at, statement, signature FROM revocations",
        live,
    )
    size = world.vault.log_size()
    world.clock.tick()
    assert world.vault.revoke(world.live_token, reason="moved away") == live
    assert world.vault.log_size() == size + 1  # made and logged...
    assert world.head().size == size + 1  # ...and recorded
    assert world.head().revoked == expected_record(world.revoked_token.link_id, live)
    statement = world.vault.revocation_list()
    assert b"moved away" in statement  # the owner's own statement replaced the planted one
    world.sql("DELETE FROM revocations WHERE link_id = ?", live)  # the host's undo
    with pytest.raises(errors.IntegrityError) as refused:
        world.vault.share_keys()
    assert refused.value.reason == "revocations-changed"
    world.vault.revoke(world.live_token)  # made again, and recorded: the store is mended
    assert world.vault.share_keys() == 0
    # Revoking a link whose own, recorded revocation is stored stays a no-op.
    size = world.vault.log_size()
    world.vault.revoke(world.revoked_token)
    assert world.vault.log_size() == size


# -- from the review of this change (each a way round the checks above) ---------------------


@pytest.mark.parametrize("rotated_by", ["this vault object", "another process"])
def test_a_long_lived_vault_object_notices_a_dropped_epoch(world: World, rotated_by: str) -> None:
    """The newest epochs a vault object checked are valid only under the head it checked
    them against: a rotation signs a new head, so the next write checks again."""
    world.vault.put("tax/2024", {"income": 1})  # checked: epoch 1
    if rotated_by == "this vault object":
        world.vault.rotate("tax/2024")
    else:
        other = pds.open_store(world.path, clock=world.clock)
        vault = other.open_vault(world.vault.vault_id)
        vault.unlock(key_file=world.key_file)
        vault.rotate("tax/2024")
        other.close()
    drop_newest_epoch(world, "tax/2024")  # back to epoch 1, which this object checked
    with pytest.raises(errors.IntegrityError) as refused:
        world.vault.put("tax/2024", {"income": 2})
    assert refused.value.reason == "epochs-changed"


def test_a_planted_epoch_row_neither_blocks_nor_unrecords_a_rotation(world: World) -> None:
    """An epoch row whose certificate does not verify is no epoch of the owner's: the
    rotation is recorded all the same, and dropping its epoch later is caught."""
    world.sql(
        "INSERT INTO epochs (vault_id, collection, epoch, public_key, created_at, signature, "
        "sealed_owner, seal_fields) SELECT vault_id, 'junk', 7, public_key, created_at, "
        "signature, sealed_owner, seal_fields FROM epochs WHERE collection = 'tax/2024'"
    )
    _rotated(world)  # signs a head recording tax/2024 at 2
    assert world.head().size == world.vault.log_size()
    world.sql("DELETE FROM epochs WHERE collection = 'junk'")
    drop_newest_epoch(world, "tax/2024")
    fresh = pds.open_store(world.path, clock=world.clock).open_vault(world.vault.vault_id)
    fresh.unlock(key_file=world.key_file)
    with pytest.raises(errors.IntegrityError) as refused:
        fresh.put("tax/2024", {"income": 3})
    assert refused.value.reason == "epochs-changed"


def _revoke_under_a_garbled_head(world: World) -> Checkpoint:
    """The host garbles the latest head's text while the owner revokes the live link (the
    owner is told it is unrecorded), then restores the head. Returns that head."""
    head = world.head()
    note = head.to_text()
    world.sql(
        "UPDATE log_checkpoints SET note = ? WHERE size = ?",
        note.replace(f"time {head.time}", f"time 0{head.time}"),
        head.size,
    )
    with pytest.raises(errors.IntegrityError) as unrecorded:
        world.vault.revoke(world.live_token)
    assert unrecorded.value.reason == "revocation-unrecorded"
    world.sql("UPDATE log_checkpoints SET note = ? WHERE size = ?", note, head.size)
    return head


def test_a_revocation_under_a_garbled_head_is_not_silently_unrecorded(world: World) -> None:
    """The host garbles the latest head's text while the owner revokes, then restores it:
    the revocation could not be recorded, and the owner is told."""
    head = _revoke_under_a_garbled_head(world)
    assert world.vault.latest_checkpoint() == head
    assert world.vault.log_size() == head.size + 1  # made and logged, under no head


def test_deleted_heads_are_not_replaced_by_records_counted_from_the_store(world: World) -> None:
    """With every head deleted (and a revocation), the owner's next operation must not
    sign a head whose records the host chose."""
    world.sql("DELETE FROM log_checkpoints")
    world.drop_revocations()
    size = world.vault.log_size()
    world.vault.get("return-2024")  # an owner read: logged, but no head signed
    assert world.vault.log_size() == size + 1
    with pytest.raises(errors.InvalidProof) as older:  # this object saw the deleted heads
        world.vault.latest_checkpoint()
    assert older.value.reason == "checkpoint-missing"
    assert _fresh_vault(world).latest_checkpoint() is None
    with pytest.raises(errors.IntegrityError) as refused:
        world.vault.rotate("tax/2024")
    assert refused.value.reason == "rotation-unrecorded"
    assert 2 not in world.epochs_held(world.revoked_token, "tax/2024")
    with pytest.raises(errors.IntegrityError) as refused:
        world.vault.checkpoint()  # nor when the owner asks for one
    assert refused.value.reason == "checkpoint-missing"
    assert _fresh_vault(world).latest_checkpoint() is None


# -- repair: the records rebuilt from the log ----------------------------------------------


def _revoked_at(world: World) -> dict[bytes, int]:
    conn = sqlite3.connect(world.path)
    try:
        rows = conn.execute("SELECT link_id, revoked_at FROM revocations").fetchall()
    finally:
        conn.close()
    return {bytes(row[0]): row[1] for row in rows}


def _fresh_vault(world: World) -> pds.Vault:
    """The vault as a new process sees it (no per-object cache of what was verified)."""
    store = pds.open_store(world.path, clock=world.clock)
    vault = store.open_vault(world.vault.vault_id)
    vault.unlock(key_file=world.key_file)
    return vault


def test_repair_restores_revocations_the_host_dropped(world: World) -> None:
    """Two dropped revocations cannot be made again one at a time (each must be the
    recorded set plus one link); repair signs both again from the log."""
    holder = pds.Grantee(pds.PrincipalKey.generate(), clock=world.clock)
    other = world.grant(holder)
    world.clock.tick()
    world.vault.revoke(other, reason="contract ended")
    first = _revoked_at(world)
    assert world.sql("DELETE FROM revocations") == 2
    world.clock.tick()
    with pytest.raises(errors.IntegrityError) as unrecorded:
        world.vault.revoke(other)  # made again (its row is back), but not recordable
    assert unrecorded.value.reason == "revocation-unrecorded"
    assert world.sql("DELETE FROM revocations") == 1
    size = world.vault.log_size()
    report = world.vault.repair()
    ids = sorted([world.revoked_token.link_id, other.link_id])
    assert report.restored == [link_id.hex() for link_id in ids]
    assert (report.removed, report.epochs, report.removed_epochs) == ([], {}, [])
    assert report.checkpoint is not None and report.checkpoint == world.head()
    assert world.vault.log_size() == size + 1  # the repair entry, under a head
    assert world.head().size == size + 1
    assert world.head().revoked == expected_record(*ids)
    # Dated now: the owner signs no time an entry chose (the audit takes the earlier of the
    # statement's and the log entry's).
    repaired = _revoked_at(world)
    assert set(repaired) == set(first)
    assert set(repaired.values()) == {int(world.clock() * 1000)}
    # Signed with a fixed reason: the owner never signs text an entry may have chosen.
    listed = world.vault.revocation_list()
    assert listed.count(b"restored by repair from the access log") == 2
    assert b"contract ended" not in listed
    world.clock.tick()
    with pytest.raises(errors.Revoked):
        holder.read(world.store, other)
    # The store is mended: rotations share again, with the live link only.
    assert world.vault.rotate("tax/2024") == {"tax/2024": 2}
    assert 2 in world.epochs_held(world.live_token, "tax/2024")
    assert 2 not in world.epochs_held(world.revoked_token, "tax/2024")
    assert 2 not in world.epochs_held(other, "tax/2024")
    assert [e.kind for e in world.vault.access_log()][-3:] == ["repair", "read", "rotate"]
    world.vault.export(io.BytesIO())  # every check of the records passes


def test_repair_mends_a_revocation_whose_record_the_host_escaped(world: World) -> None:
    """The host garbles the latest head while the owner revokes (the owner is told it is
    unrecorded), restores the head and deletes the row: a head later carrying the old
    record would let a rotation share with the link. Repair finds the revocation in the
    log's unheaded tail."""
    _revoke_under_a_garbled_head(world)
    assert world.sql("DELETE FROM revocations WHERE link_id = ?", world.live_token.link_id)
    vault = _fresh_vault(world)
    report = vault.repair()
    assert report.restored == [world.live_token.link_id.hex()]
    assert vault.latest_checkpoint() is not None
    assert vault.latest_checkpoint().revoked == expected_record(  # type: ignore[union-attr]
        world.revoked_token.link_id, world.live_token.link_id
    )
    vault.rotate("tax/2024")
    assert 2 not in world.epochs_held(world.live_token, "tax/2024")


def test_repair_removes_a_revocation_row_the_host_planted(world: World) -> None:
    live = world.live_token.link_id
    world.sql(
        "INSERT INTO revocations (vault_id, link_id, revoked_at, statement, signature) "
        "SELECT vault_id, ?, revoked_at, statement, signature FROM revocations",
        live,
    )
    world.clock.tick()
    with pytest.raises(errors.Revoked):  # the host refuses the link over its own row
        world.live.read(world.store, world.live_token, collection="tax/2024")
    with pytest.raises(errors.IntegrityError) as refused:
        world.vault.export(io.BytesIO())
    assert refused.value.reason == "revocation"
    report = world.vault.repair()
    assert report.removed == [live.hex()]
    assert report.restored == []
    assert set(_revoked_at(world)) == {world.revoked_token.link_id}
    world.clock.tick()
    read = world.live.read(world.store, world.live_token, collection="tax/2024")
    assert [r.record_id for r in read.records] == ["return-2024"]
    world.vault.export(io.BytesIO())


def test_repair_makes_a_new_epoch_for_a_dropped_one(world: World) -> None:
    """The newest epoch is dropped and a junk row put at the next number (another epoch's
    certificate): the junk row is left in place (a row whose certificate fails may be the
    owner's own, damaged, and its secret's only copy) and passed by the new epoch; one
    numbered where pds makes no epochs is deleted."""
    _rotated(world)
    drop_newest_epoch(world, "tax/2024")
    for number in (3, 2**40):
        world.sql(
            "INSERT INTO epochs (vault_id, collection, epoch, public_key, created_at, "
            "signature, sealed_owner, seal_fields) SELECT vault_id, collection, ?, public_key, "
            "created_at, signature, sealed_owner, seal_fields FROM epochs "
            "WHERE collection = 'tax/2024' AND epoch = 1",
            number,
        )
    vault = _fresh_vault(world)
    with pytest.raises(errors.IntegrityError):
        vault.put("tax/2024", {"income": 2})
    report = vault.repair()
    assert report.removed_epochs == [("tax/2024", 2**40)]
    assert report.unverified_epochs == [("tax/2024", 3)]
    # Past every number used: the live link holds the lost epoch 2's key under its number.
    assert report.epochs == {"tax/2024": 4}
    assert report.restored == report.removed == []
    assert vault.latest_checkpoint().rotated == expected_rotations(  # type: ignore[union-attr]
        **{"tax/2024": 4}
    )
    assert vault.put("tax/2024", {"income": 2}).epoch == 4
    # The new epoch reached the live link, never the revoked one.
    assert 4 in world.epochs_held(world.live_token, "tax/2024")
    assert 4 not in world.epochs_held(world.revoked_token, "tax/2024")
    world.clock.tick()
    read = world.live.read(world.store, world.live_token, collection="tax/2024")
    incomes = {record.data["income"] for record in read.records if record.data is not None}
    assert incomes == {41000, 2}  # the record under epoch 1, and the one under the new epoch
    # The junk row stays; a later repair reports it and changes nothing.
    again = vault.repair()
    assert again.checkpoint is None and again.unverified_epochs == [("tax/2024", 3)]


def test_a_damaged_epoch_row_is_kept(world: World) -> None:
    """A one-field change makes the owner's own epoch row fail its certificate: deleting it
    would lose its secret for good. Repair leaves it and, the collection being the owner's
    (its signed ``create`` entry says so), gives writes a new epoch past it."""
    world.sql("UPDATE epochs SET created_at = created_at + 1 WHERE collection = 'tax/2024'")
    vault = _fresh_vault(world)
    report = vault.repair()
    assert report.unverified_epochs == [("tax/2024", 1)]
    assert (report.removed_epochs, report.epochs) == ([], {"tax/2024": 2})
    assert report.checkpoint is not None
    assert vault.put("tax/2024", {"income": 3}).epoch == 2
    assert 2 not in world.epochs_held(world.revoked_token, "tax/2024")
    world.sql("UPDATE epochs SET created_at = created_at - 1 WHERE epoch = 1")  # restored
    assert _fresh_vault(world).get("return-2024").data == {"income": 41000}


def test_epoch_numbers_past_the_largest_pds_makes_are_ignored(world: World) -> None:
    """A host's link_keys row or forged entry naming a huge epoch number neither moves the
    numbering (where a later repair could not follow it) nor overflows SQLite."""
    from pds.vault import MAX_EPOCH

    for number in (MAX_EPOCH + 1, 2**63 - 1):
        world.sql(
            "INSERT INTO link_keys (link_id, collection, epoch, sealed) VALUES (?, ?, ?, ?)",
            world.live_token.link_id,
            "tax/2024",
            number,
            b"junk",
        )
    assert world.vault.rotate("tax/2024") == {"tax/2024": 2}
    world.sql(
        "INSERT INTO link_keys (link_id, collection, epoch, sealed) VALUES (?, ?, ?, ?)",
        world.live_token.link_id,
        "tax/2024",
        MAX_EPOCH,
        b"junk",
    )
    # Past it, the numbering falls back to the first free number past the newest verified
    # epoch: one planted number cannot stop the owner rotating after a revocation.
    assert world.vault.rotate("tax/2024") == {"tax/2024": 3}
    assert world.vault.put("tax/2024", {"income": 1}).epoch == 3


def test_repair_signs_a_head_where_the_host_deleted_them_all(world: World) -> None:
    world.sql("DELETE FROM log_checkpoints")
    world.drop_revocations()
    with pytest.raises(errors.IntegrityError) as refused:
        world.vault.share_keys()
    assert refused.value.reason == "checkpoint-missing"
    report = world.vault.repair()
    assert report.restored == [world.revoked_token.link_id.hex()]
    assert world.head().size == world.vault.log_size()
    assert world.head().revoked == expected_record(world.revoked_token.link_id)
    assert world.vault.share_keys() == 0


def test_repair_with_nothing_to_mend_writes_nothing(world: World) -> None:
    _rotated(world)
    size, head = world.vault.log_size(), world.head()
    report = world.vault.repair()
    assert report == pds.RepairReport([], [], {}, [], [], [], None)
    assert (world.vault.log_size(), world.head()) == (size, head)


def test_repair_of_a_new_vault_writes_nothing(tmp_path: Path) -> None:
    key_file = tmp_path / "owner.key"
    SymmetricKey.create_file(key_file)
    store = pds.open_store(tmp_path / "store.db")
    vault = store.open_vault(store.create_vault(key_file=key_file))
    vault.unlock(key_file=key_file)
    assert vault.repair().checkpoint is None
    assert (vault.log_size(), vault.latest_checkpoint()) == (0, None)
    vault.put("tax/2024", {"income": 1})  # logs `create`, under a head
    size, head = vault.log_size(), vault.latest_checkpoint()
    assert vault.repair().checkpoint is None
    assert (vault.log_size(), vault.latest_checkpoint()) == (size, head)
    store.close()


def test_repair_refuses_a_log_that_does_not_extend_its_heads(world: World) -> None:
    """Repairing from a rewritten log would sign what the host wrote."""
    pinned = world.head()
    world.vault.get("return-2024")
    # The host drops the newest entry and head (a rollback the store alone cannot show).
    size = world.vault.log_size()
    world.sql("DELETE FROM log_checkpoints WHERE size = ?", size)
    world.sql("DELETE FROM log_entries WHERE idx = ?", size - 1)
    world.sql("DELETE FROM log_nodes WHERE ((idx + 1) << level) > ?", size - 1)
    world.drop_revocations()
    unpinned = _fresh_vault(world).latest_checkpoint()
    assert unpinned is not None and unpinned.size == pinned.size
    # Rewritten entry bytes (the subtree hashes left alone) fail against the head.
    world.sql("UPDATE log_entries SET entry = CAST(entry || x'00' AS BLOB) WHERE idx = 0")
    vault = _fresh_vault(world)
    with pytest.raises(errors.InvalidProof) as refused:
        vault.repair(pinned=pinned)
    assert refused.value.reason in {"log-entry", "log-fork"}
    assert _revoked_at(world) == {}  # nothing written


def test_repair_against_a_pin_the_log_no_longer_extends_is_refused(world: World) -> None:
    world.vault.get("return-2024")
    pinned = world.head()
    size = world.vault.log_size()
    world.sql("DELETE FROM log_checkpoints WHERE size = ?", size)
    world.sql("DELETE FROM log_entries WHERE idx = ?", size - 1)
    world.sql("DELETE FROM log_nodes WHERE ((idx + 1) << level) > ?", size - 1)
    vault = _fresh_vault(world)
    vault.repair()  # against the store's own (older) latest head: nothing to mend
    with pytest.raises(errors.InvalidProof) as refused:
        vault.repair(pinned=pinned.to_text())
    assert refused.value.reason == "log-truncated"


def test_a_later_repair_keeps_what_an_earlier_one_recorded_beyond_the_log(world: World) -> None:
    """A revocation whose entry the host removed from the unheaded tail, but whose row
    stayed, is recorded by repair (listed in its entry): a later repair restores it even
    after the row is gone."""
    head = _revoke_under_a_garbled_head(world)
    world.sql("DELETE FROM log_entries WHERE idx >= ?", head.size)  # the tail rewritten
    world.sql("DELETE FROM log_nodes WHERE ((idx + 1) << level) > ?", head.size)
    vault = _fresh_vault(world)
    assert vault.log_size() == head.size
    report = vault.repair()
    assert report.restored == []
    live = world.live_token.link_id
    assert vault.latest_checkpoint().revoked == expected_record(  # type: ignore[union-attr]
        world.revoked_token.link_id, live
    )
    world.sql("DELETE FROM revocations WHERE link_id = ?", live)
    again = _fresh_vault(world).repair()
    assert again.restored == [live.hex()]
    assert live in _revoked_at(world)


def _host_appends(
    store: pds.Store,
    vault_id: str,
    entries: list[tuple[str, bytes | None, dict[str, Any]]],
    *,
    signer: SigningKey | None = None,
) -> None:
    """Append entries as a host can (details sealed to the owner's public key, which
    anyone can do): (kind, link id, details) each, in one transaction; signed by
    ``signer`` if given (only the owner's key makes them the owner's)."""
    from pds import _serve

    ctx = store._ctx
    row = ctx.backend.get_vault(vault_id)
    assert row is not None
    with ctx.backend.transaction():
        for kind, link_id, details in entries:
            MerkleLog(ctx.backend, vault_id).append(
                time=ctx.now_ms(),
                kind=kind,
                result="ok",
                link_id=link_id,
                details=details,
                owner_x25519_public=_serve.owner_public_x25519(row),
                rng=ctx.rng,
                signer=signer,
            )


def test_repair_ignores_entries_the_owner_did_not_sign(world: World) -> None:
    """The host can append entries that look like the owner's (sealed to its public key),
    unsigned, signed with another key, or carrying a signature copied from the owner's
    own revoke entry: repair takes nothing from them and lists them."""
    live = world.live_token.link_id
    vault_id = world.vault.vault_id
    owner_secret = world.vault._keys().x25519_secret
    log = MerkleLog(world.store._ctx.backend, vault_id)
    genuine = next(e for e in log.entries(0, world.vault.log_size()) if e.kind == "revoke")
    copied = genuine.open(owner_secret)["signature"]
    assert genuine.signed_by_owner(genuine.open(owner_secret), world.vault._row.identity_public)
    start = world.vault.log_size()
    _host_appends(
        world.store,
        vault_id,
        [("revoke", live, {"link": live.hex(), "reason": "forged"})],
    )
    _host_appends(
        world.store,
        vault_id,
        [("rotate", None, {"actor": world.vault.did, "owner": True, "epochs": {"tax/2024": 9}})],
        signer=SigningKey.generate(os.urandom),
    )
    _host_appends(
        world.store,
        vault_id,
        [("revoke", live, {"link": live.hex(), "reason": "forged", "signature": copied})],
    )
    report = world.vault.repair()
    assert report.ignored == [start, start + 1, start + 2]
    assert (report.restored, report.epochs) == ([], {})
    assert report.checkpoint is None  # nothing to mend: nothing written
    read = world.live.read(world.store, world.live_token, records=["return-2024"])
    assert [record.data for record in read.records] == [{"income": 41000}]


def test_repair_takes_only_well_formed_records_from_signed_entries(world: World) -> None:
    """Even entries the owner's key signed (a faulty pds, say) give repair only valid link
    ids and epoch numbers of valid collection names."""
    live = world.live_token.link_id
    spaced = f"{live.hex()[:2]} {live.hex()[2:62]} "  # 64 characters, 31 bytes of hex
    assert len(spaced) == 64
    _host_appends(
        world.store,
        world.vault.vault_id,
        [
            ("revoke", live, {"link": live.hex(), "reason": "faulty"}),
            (
                "rotate",
                None,
                {"epochs": {"tax/2024": 9, "../bad": 3, "tax/x": "9", "tax/y": 2**40}},
            ),
            (
                "repair",
                None,
                {"unlogged": [spaced, 7, "zz" * 32], "newest": [["tax/2024", 3]]},
            ),
            ("create", None, {"collections": [["tax/2024"], {"a": 1}, "../x"], "seal_fields": 1}),
        ],
        signer=world.vault._keys().identity,
    )
    report = world.vault.repair()
    assert report.ignored == []
    assert report.restored == [live.hex()]
    assert report.epochs == {"tax/2024": 10}
    assert world.head().rotated == expected_rotations(**{"tax/2024": 10})


def test_hiding_every_link_row_does_not_make_the_vault_look_unused(world: World) -> None:
    """The host deletes the heads and the revocation and hides every link row, so that the
    vault looks as if it never had a grant: a fresh process must not sign a head counted
    from that store (it would drop the revocation), nor write or rotate; once the links
    are back, the revoked link gets no new epoch."""
    conn = sqlite3.connect(world.path)
    with conn:
        links = conn.execute("SELECT * FROM links").fetchall()
        conn.execute("DELETE FROM log_checkpoints")
        conn.execute("DELETE FROM links")
        conn.execute("DELETE FROM revocations")
    store = pds.open_store(world.path, clock=world.clock)
    vault = store.open_vault(world.vault.vault_id)
    vault.unlock(key_file=world.key_file)
    vault.get("return-2024")  # logged, but no head counted from the store is signed
    assert vault.latest_checkpoint() is None
    for operation in (vault.checkpoint, lambda: vault.put("tax/2024", {"income": 1})):
        with pytest.raises(errors.IntegrityError) as refused:
            operation()
        assert refused.value.reason == "checkpoint-missing"
    with conn:
        marks = ", ".join("?" * len(links[0]))
        conn.executemany(f"INSERT INTO links VALUES ({marks})", links)
    conn.close()
    with pytest.raises(errors.IntegrityError) as unrecorded:
        vault.rotate("tax/2024")
    assert unrecorded.value.reason == "rotation-unrecorded"
    assert world.epochs_held(world.revoked_token, "tax/2024") == set()
    store.close()


def _epoch_flags(world: World, collection: str) -> dict[int, int]:
    conn = sqlite3.connect(world.path)
    try:
        query = "SELECT epoch, seal_fields FROM epochs WHERE collection = ?"
        return dict(conn.execute(query, (collection,)))
    finally:
        conn.close()


def _hidden_during(world: World, collection: str, operation: Any) -> Any:
    """Run ``operation`` while the host hides every epoch row of ``collection``, then put
    the rows back."""
    conn = sqlite3.connect(world.path)
    try:
        with conn:
            rows = conn.execute("SELECT * FROM epochs WHERE collection = ?", (collection,))
            hidden = rows.fetchall()
            conn.execute("DELETE FROM epochs WHERE collection = ?", (collection,))
        assert hidden
        try:
            return operation()
        finally:
            with conn:
                marks = ", ".join("?" * len(hidden[0]))
                conn.executemany(f"INSERT INTO epochs VALUES ({marks})", hidden)
    finally:
        conn.close()


def test_a_rotation_of_all_collections_reaches_one_whose_rows_the_host_hides(
    world: World,
) -> None:
    """After the revocation the owner rotates every collection; the host hides the rows of
    the one still at its first epoch (which the revoked link holds), so that the store
    lists none. The owner's signed ``create`` entry names it: it is rotated all the same,
    and what the owner writes to it next is sealed under an epoch the revoked link lacks."""
    world.clock.tick()
    world.vault.create_collection("tax/sealed", seal_fields=True)
    world.clock.tick()
    rotated = _hidden_during(world, "tax/2024", world.vault.rotate)
    assert rotated == {"tax/2024": 2, "tax/sealed": 2}
    assert world.head().rotated == expected_rotations(**{"tax/2024": 2, "tax/sealed": 2})
    assert world.vault.put("tax/2024", {"income": 1}, record_id="after").epoch == 2
    assert world.epochs_held(world.revoked_token, "tax/2024") == set()
    assert 2 in world.epochs_held(world.live_token, "tax/2024")
    # A hidden field-sealed collection keeps its sealing (from its `create` entry).
    _hidden_during(world, "tax/sealed", world.vault.rotate)
    assert _epoch_flags(world, "tax/sealed") == {1: 1, 2: 1, 3: 1}


def test_a_rotation_of_all_collections_takes_only_the_owners_create_entries(
    world: World,
) -> None:
    """The host can append ``create`` entries sealed to the owner's public key: unsigned,
    signed by another key, or naming no valid collection, they make no collection."""
    vault_id = world.vault.vault_id
    owner = {"actor": world.vault.did, "owner": True, "seal_fields": False}
    _host_appends(world.store, vault_id, [("create", None, {**owner, "collections": ["tax/a"]})])
    _host_appends(
        world.store,
        vault_id,
        [("create", None, {**owner, "collections": ["tax/b"]})],
        signer=SigningKey.generate(os.urandom),
    )
    _host_appends(
        world.store,
        vault_id,
        [
            ("create", None, {**owner, "collections": ["../bad", 7]}),
            ("create", None, {**owner, "collections": "tax/d"}),
            ("create", None, {**owner, "collections": ["tax/c"]}),
        ],
        signer=world.vault._keys().identity,
    )
    assert world.vault.rotate() == {"tax/2024": 2, "tax/c": 2}


@pytest.mark.parametrize("how", ["rewritten", "deleted"])
def test_a_rotation_over_a_create_entry_the_host_changed_says_so(world: World, how: str) -> None:
    """The host also rewrites (or deletes) the ``create`` entry of the collection it hides,
    leaving the stored subtree hashes as they were, and puts everything back afterwards:
    the rotation still rotates what it can see, and says it could not read the log."""
    world.clock.tick()
    world.vault.put("tax/2025", {"income": 1})
    vault_id = world.vault.vault_id
    (raw,) = world.sql_rows(
        "SELECT entry FROM log_entries WHERE vault_id = ? AND idx = 0", vault_id
    )
    assert LogEntry.parse(raw[0]).kind == "create"
    if how == "rewritten":
        changed = raw[0].replace(b"create", b"export")  # the same length
        world.sql("UPDATE log_entries SET entry = ? WHERE idx = 0", changed)
    else:
        world.sql("DELETE FROM log_entries WHERE idx = 0")
    with pytest.raises(errors.IntegrityError) as incomplete:
        _hidden_during(world, "tax/2024", world.vault.rotate)
    assert incomplete.value.reason == "rotation-incomplete"
    assert _epoch_flags(world, "tax/2025") == {1: 0, 2: 0}  # the visible one is rotated
    world.sql(
        "INSERT OR REPLACE INTO log_entries (vault_id, idx, time, entry) VALUES (?, 0, ?, ?)",
        vault_id,
        LogEntry.parse(raw[0]).time,
        raw[0],
    )
    # Once the log reads again, a rotation of all reaches the collection left behind.
    assert world.vault.rotate() == {"tax/2024": 2, "tax/2025": 3}
    assert world.epochs_held(world.revoked_token, "tax/2024") == set()


def test_a_rotation_reads_the_log_inside_its_write_transaction(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Between a walk of the log and the rotation, a host could swap the log away and back
    (the walk would find no entry and no head to check it against) while it hides a
    collection's rows: the walk must run under the rotation's write lock, where no other
    connection can change the store."""
    refused: list[str] = []
    visit = _LoggedRecords.visit

    def write_meanwhile(self: _LoggedRecords, entry: LogEntry) -> None:
        if not refused:
            conn = sqlite3.connect(world.path, timeout=0)
            try:
                with conn:
                    conn.execute("DELETE FROM log_checkpoints")
            except sqlite3.OperationalError as exc:
                refused.append(str(exc))
            finally:
                conn.close()
        visit(self, entry)

    monkeypatch.setattr(_LoggedRecords, "visit", write_meanwhile)
    assert world.vault.rotate() == {"tax/2024": 2}
    assert refused == ["database is locked"]
    assert world.vault.latest_checkpoint() is not None


def test_a_malformed_entry_the_host_appends_does_not_stop_a_rotation(world: World) -> None:
    """A rotation after a revocation is never blocked: one entry that does not parse is a
    leaf the host wrote, hashed and passed over, so the rotation reads the whole log and
    completes (it used to raise rotation-incomplete, and a pinned one to refuse)."""
    pinned = world.head()
    backend = world.store.backend
    with backend.transaction():
        log = MerkleLog(backend, world.vault.vault_id)
        log.append_raw(log.size(), 0, b"\xc1")  # not msgpack
    assert world.vault.rotate(pinned=pinned) == {"tax/2024": 2}
    assert _epoch_flags(world, "tax/2024") == {1: 0, 2: 0}
    assert world.vault.put("tax/2024", {"income": 1}).epoch == 2
    world.vault.verify_log(pinned)


def test_a_hidden_field_sealed_collection_keeps_its_sealing(world: World) -> None:
    """The flag of a collection whose rows are gone comes from its signed ``create``
    entry: in a rotation by name, and in a repair that makes a lost epoch again."""
    world.clock.tick()
    world.vault.create_collection("forms/a", seal_fields=True)
    assert _hidden_during(world, "forms/a", lambda: world.vault.rotate("forms/a")) == {"forms/a": 2}
    assert _epoch_flags(world, "forms/a") == {1: 1, 2: 1}
    world.sql("DELETE FROM epochs WHERE collection = 'forms/a'")
    report = world.vault.repair()
    assert report.epochs == {"forms/a": 3}
    assert _epoch_flags(world, "forms/a") == {3: 1}


def test_repair_makes_a_first_epoch_the_host_dropped_again(world: World) -> None:
    """Every row of a collection still at its first epoch is gone (the revoked link holds
    that epoch): its ``create`` entry tells repair, which makes a new epoch past it."""
    world.sql("DELETE FROM epochs WHERE collection = 'tax/2024'")
    report = world.vault.repair()
    assert report.epochs == {"tax/2024": 2}
    assert world.vault.put("tax/2024", {"income": 1}).epoch == 2
    assert world.epochs_held(world.revoked_token, "tax/2024") == set()


def test_a_collections_first_epoch_is_logged_and_signed(world: World) -> None:
    start = world.vault.log_size()
    world.clock.tick()
    world.vault.create_collection("tax/sealed", seal_fields=True)
    world.vault.put("tax/2025", {"income": 1})
    world.vault.put("tax/2025", {"income": 2})  # the collection exists: nothing logged
    entries = world.vault.access_log()[start:]
    assert [(e.kind, e.unsigned) for e in entries] == [("create", False), ("create", False)]
    assert [(e.collections, e.details["seal_fields"]) for e in entries] == [
        (["tax/sealed"], True),
        (["tax/2025"], False),
    ]
    assert world.head().size == start + 2


def test_repair_refuses_a_log_regrown_past_a_pinned_head(world: World) -> None:
    """The host deletes the head that records the revocation, cuts the log back to the
    head before it and grows it again to the same size with its own entry: the store is
    consistent with itself (and repair without a pin finds nothing to mend), but not with
    the head the owner pinned."""
    pinned = world.head()
    size = pinned.size
    world.sql("DELETE FROM log_checkpoints WHERE size >= ?", size)
    world.sql("DELETE FROM log_entries WHERE idx >= ?", size - 1)
    world.sql("DELETE FROM log_nodes WHERE ((idx + 1) << level) > ?", size - 1)
    world.drop_revocations()
    store = pds.open_store(world.path, clock=world.clock)
    owner_read = {"action": "read", "collections": [], "records": []}
    _host_appends(store, world.vault.vault_id, [("owner-read", None, owner_read)])
    vault = store.open_vault(world.vault.vault_id)
    vault.unlock(key_file=world.key_file)
    assert vault.log_size() == size
    assert vault.repair().checkpoint is None
    with pytest.raises(errors.InvalidProof) as refused:
        vault.repair(pinned=pinned)
    assert refused.value.reason == "log-fork"
    store.close()


def test_an_identity_key_swapped_under_an_unlocked_vault_is_refused(world: World) -> None:
    """A host that swaps in its own identity key after the owner unlocked could sign
    "latest" heads recording no revocation; the vault object keeps the key it first read."""
    from pds import _crypto
    from pds.accesslog import MerkleLog, revoked_digest, rotated_digest

    host_key = _crypto.SigningKey.from_seed(b"\x07" * 32)
    vault_id = world.vault.vault_id
    world.sql("UPDATE vaults SET identity_public = ? WHERE vault_id = ?", host_key.public, vault_id)
    world.drop_revocations()
    log = MerkleLog(world.store._ctx.backend, vault_id)
    size = log.size()
    now = int(world.clock() * 1000) + 1
    forged = Checkpoint.sign(
        host_key,
        vault_id,
        size,
        log.root(size),
        now,
        records=(revoked_digest([]), rotated_digest({})),
    )
    world.sql(
        "INSERT OR REPLACE INTO log_checkpoints (vault_id, size, time, note) VALUES (?, ?, ?, ?)",
        vault_id,
        size,
        now,
        forged.to_text(),
    )
    world.clock.tick()
    with pytest.raises(errors.IntegrityError) as refused:
        world.vault.rotate("tax/2024")
    assert refused.value.reason == "identity"
    assert 2 not in world.epochs_held(world.revoked_token, "tax/2024")
    with pytest.raises(errors.IntegrityError):
        world.vault.repair()


def test_a_rotation_keeps_the_field_sealing_of_the_newest_verified_epoch(world: World) -> None:
    """A newer row the host planted (another epoch's certificate, the flag flipped) must not
    decide how the new epoch seals records."""
    world.sql(
        "INSERT INTO epochs (vault_id, collection, epoch, public_key, created_at, signature, "
        "sealed_owner, seal_fields) SELECT vault_id, collection, 2, public_key, created_at, "
        "signature, sealed_owner, 1 FROM epochs WHERE collection = 'tax/2024'"
    )
    assert world.vault.rotate("tax/2024") == {"tax/2024": 3}
    assert _epoch_flags(world, "tax/2024") == {1: 0, 2: 1, 3: 0}
    assert world.vault.put("tax/2024", {"income": 1}).epoch == 3


def test_a_rotation_the_host_undoes_is_caught_by_the_writer_and_mended_by_repair(
    world: World,
) -> None:
    """The host hides the newest epoch (rows and the links' keys) before the owner's
    rotation after a revocation, so the rotation makes that number again; it cannot be
    recorded, the owner is told, and this vault object writes nothing until a repair, which
    sees the number made twice in the log and passes it with a new epoch. The host then
    putting the old epoch back (which the revoked link holds) changes nothing."""
    _rotated(world)  # epoch 2, recorded; both grants got it (the revoked one earlier)
    world.sql(
        "INSERT INTO link_keys (link_id, collection, epoch, sealed) SELECT ?, collection, "
        "epoch, sealed FROM link_keys WHERE link_id = ?",
        world.revoked_token.link_id,
        world.live_token.link_id,
    )  # as if the revoked link had received epoch 2 before its revocation
    conn = sqlite3.connect(world.path)
    try:
        old_row = conn.execute("SELECT * FROM epochs WHERE epoch = 2").fetchone()
        links = conn.execute("SELECT * FROM links").fetchall()
    finally:
        conn.close()
    world.sql("DELETE FROM epochs WHERE epoch = 2")
    world.sql("DELETE FROM link_keys")
    world.sql("DELETE FROM links")
    world.clock.tick()
    with pytest.raises(errors.IntegrityError) as unrecorded:
        world.vault.rotate("tax/2024")
    assert unrecorded.value.reason == "rotation-unrecorded"
    # The host undoes it: the old epoch 2 back, the new one gone.
    world.sql("DELETE FROM epochs WHERE epoch = 2")
    marks = ", ".join("?" * len(old_row))
    world.sql(f"INSERT INTO epochs VALUES ({marks})", *old_row)
    for link in links:
        world.sql(f"INSERT INTO links VALUES ({', '.join('?' * len(link))})", *link)
    with pytest.raises(errors.IntegrityError) as refused:
        world.vault.put("tax/2024", {"income": 9})
    assert refused.value.reason == "rotation-unrecorded"
    report = world.vault.repair()
    assert report.epochs == {"tax/2024": 3}
    assert world.vault.put("tax/2024", {"income": 9}, record_id="after").epoch == 3
    world.clock.tick()
    with pytest.raises(errors.Revoked):
        world.revoked.read(world.store, world.revoked_token, records=["after"])
    assert 3 not in world.epochs_held(world.revoked_token, "tax/2024")


@dataclass
class _Granted:
    """A store at ``path`` with one unlocked vault holding a record of ``tax/2024``, and a
    live grant over ``tax/*``."""

    store: pds.Store
    vault: pds.Vault
    key_file: Path
    path: Path
    token: pds.Token


def _granted(tmp_path: Path, clock: Clock) -> _Granted:
    key_file = tmp_path / "owner.key"
    SymmetricKey.create_file(key_file)
    path = tmp_path / "store.db"
    store = pds.open_store(path, clock=clock)
    vault = store.open_vault(store.create_vault(key_file=key_file))
    vault.unlock(key_file=key_file)
    vault.put("tax/2024", {"income": 1})
    holder = pds.Grantee(pds.PrincipalKey.generate(), clock=clock)
    token = vault.grant(holder.did, collections=["tax/*"], purpose="p", expires=dt.timedelta(1))
    return _Granted(store, vault, key_file, path, token)


def test_a_store_rolled_back_under_a_long_lived_vault_object_shares_nothing(
    tmp_path: Path,
) -> None:
    """The host restores a copy of the store from before a revocation, heads and all, under
    the vault object that signed the newer heads: without a pin the store alone cannot show
    it, but that object remembers the head it signed."""
    clock = Clock()
    granted = _granted(tmp_path, clock)
    store, vault, path, token = granted.store, granted.vault, granted.path, granted.token
    snapshot = sqlite3.connect(tmp_path / "snapshot.db")
    source = sqlite3.connect(path)
    source.backup(snapshot)
    source.close()
    clock.tick()
    vault.revoke(token)
    target = sqlite3.connect(path)
    snapshot.backup(target)  # the host rolls the store back
    target.close()
    snapshot.close()
    clock.tick()
    with pytest.raises(errors.InvalidProof) as older:
        vault.latest_checkpoint()
    assert older.value.reason == "checkpoint-missing"
    with pytest.raises(errors.IntegrityError) as unrecorded:
        vault.rotate("tax/2024")
    assert unrecorded.value.reason == "rotation-unrecorded"
    conn = sqlite3.connect(path)
    try:
        shared = conn.execute(
            "SELECT epoch FROM link_keys WHERE link_id = ?", (token.link_id,)
        ).fetchall()
    finally:
        conn.close()
    assert shared == []  # the new epoch was not sealed to the link revoked before
    store.close()


def _copy_database(source: Path, target: Path) -> None:
    """Copy the SQLite database ``source`` over ``target`` (open connections to it see the
    copy: the way a host restores a backup under a running pds)."""
    into = sqlite3.connect(target)
    origin = sqlite3.connect(source)
    try:
        origin.backup(into)
    finally:
        origin.close()
        into.close()


def _revoked_with_a_copy(tmp_path: Path, clock: Clock) -> tuple[_Granted, Path, Checkpoint]:
    """``_granted``, a copy of its store the host keeps, then its grant revoked; the copy's
    path and the head recording the revocation (the pin)."""
    granted = _granted(tmp_path, clock)
    before = tmp_path / "before-revocation.db"
    _copy_database(granted.path, before)
    clock.tick()
    granted.vault.revoke(granted.token)
    pin = granted.vault.latest_checkpoint()
    assert pin is not None
    return granted, before, pin


def _revoked_then_rolled_back(tmp_path: Path, clock: Clock) -> tuple[_Granted, Checkpoint]:
    """``_revoked_with_a_copy``; then, with the store closed, the host restores its copy
    from before the revocation, heads and all."""
    granted, before, pin = _revoked_with_a_copy(tmp_path, clock)
    granted.store.close()
    _copy_database(before, granted.path)
    return granted, pin


def _revoked_then_heads_deleted(tmp_path: Path, clock: Clock) -> tuple[_Granted, Checkpoint]:
    """``_granted``; its grant revoked and the head recording that returned as the pin;
    then, with the store closed, the host keeps the log's entries but deletes the
    revocation and every head from the pinned one on."""
    granted = _granted(tmp_path, clock)
    with granted.store:
        granted.vault.revoke(granted.token)
        pin = granted.vault.latest_checkpoint()
    assert pin is not None
    conn = sqlite3.connect(granted.path)
    with conn:
        conn.execute("DELETE FROM log_checkpoints WHERE size >= ?", (pin.size,))
        conn.execute("DELETE FROM revocations")
    conn.close()
    return granted, pin


def test_a_rotation_with_a_pin_refuses_a_store_rolled_back_past_it(tmp_path: Path) -> None:
    """A fresh vault object has seen no head, so only a pin shows the host's copy of the
    store from before a revocation: with it the rotation makes nothing (it would share the
    new epoch with the revoked link); without it, it goes ahead."""
    clock = Clock()
    granted, pin = _revoked_then_rolled_back(tmp_path, clock)
    path, token, key_file = granted.path, granted.token, granted.key_file
    vault_id = granted.vault.vault_id

    def shared_with_the_link() -> list[int]:
        conn = sqlite3.connect(path)
        try:
            rows = conn.execute(
                "SELECT epoch FROM link_keys WHERE link_id = ? AND collection = 'tax/2024'",
                (token.link_id,),
            ).fetchall()
        finally:
            conn.close()
        return sorted(row[0] for row in rows)

    clock.tick()
    store = pds.open_store(path, clock=clock)
    fresh = store.open_vault(vault_id)
    fresh.unlock(key_file=key_file)
    for pinned in (pin, pin.to_text()):
        for collection in ("tax/2024", None):
            with pytest.raises(errors.InvalidProof) as refused:
                fresh.rotate(collection, pinned=pinned)
            assert refused.value.reason == "log-truncated"
    assert shared_with_the_link() == []  # nothing made (the grant carries epoch 1)
    assert fresh.rotate(pinned=None) == {"tax/2024": 2}
    assert shared_with_the_link() == [2]  # what the pin was for
    store.close()


def test_a_rotation_with_a_pin_refuses_a_store_whose_newer_heads_were_deleted(
    tmp_path: Path,
) -> None:
    """The host keeps the log's entries but deletes the revocation and every head from the
    pinned one on: the log still extends the pin, and the older head left agrees with the
    rows. The pin's size shows the heads are missing: nothing is made or shared."""
    granted, pin = _revoked_then_heads_deleted(tmp_path, Clock())
    key_file, path, token = granted.key_file, granted.path, granted.token
    vault_id = granted.vault.vault_id
    with pds.open_store(path) as store:
        fresh = store.open_vault(vault_id)
        fresh.unlock(key_file=key_file)
        for collection in ("tax/2024", None):
            with pytest.raises(errors.InvalidProof) as refused:
                fresh.rotate(collection, pinned=pin)
            assert refused.value.reason == "checkpoint-missing"
        epochs = [row.epoch for row in store._ctx.backend.iter_epochs(vault_id)]
        shared = store._ctx.backend.link_keys(token.link_id)
    assert epochs == [1] and shared == []


def _after_rollback(path: Path, link_id: bytes) -> tuple[set[tuple[str, int]], set[str]]:
    """The key epochs sealed to ``link_id`` and the stored heads."""
    conn = sqlite3.connect(path)
    try:
        shared = conn.execute(
            "SELECT collection, epoch FROM link_keys WHERE link_id = ?", (link_id,)
        ).fetchall()
        heads = conn.execute("SELECT note FROM log_checkpoints").fetchall()
    finally:
        conn.close()
    return set(shared), {note for (note,) in heads}


_OWNER_OPERATIONS: dict[str, Callable[[pds.Vault], Any]] = {
    "create_collection": lambda vault: vault.create_collection("tax/2025"),
    "first put to a collection": lambda vault: vault.put("tax/2026", {"n": 1}),
    "put_many": lambda vault: vault.put_many("tax/2027", [{"n": 3}, {"n": 4}]),
    "rotate one": lambda vault: vault.rotate("tax/2024"),
    "rotate all": lambda vault: vault.rotate(),
    "grant": lambda vault: vault.grant(
        pds.PrincipalKey.generate().did, collections=["tax/*"], purpose="p", expires=dt.timedelta(1)
    ),
    "checkpoint": lambda vault: vault.checkpoint(),
}


@pytest.mark.parametrize("operation", sorted(_OWNER_OPERATIONS))
@pytest.mark.parametrize("setup", [_revoked_then_rolled_back, _revoked_then_heads_deleted])
def test_a_vault_opened_with_a_pin_gives_a_rolled_back_store_no_key_and_no_head(
    tmp_path: Path,
    setup: Callable[[Path, Clock], tuple[_Granted, Checkpoint]],
    operation: str,
) -> None:
    """``Store.open_vault(pinned=)``: the fresh vault object holds the pin as a head it saw,
    so whatever the owner does next on a store rolled back past a revocation (or with the
    revocation and the heads since deleted), no key epoch reaches the revoked link and the
    owner's key signs no head over the rollback. Without the pin a new collection's first
    epoch, or a rotation's, goes to the revoked link (the next test)."""
    clock = Clock()
    granted, pin = setup(tmp_path, clock)
    before = _after_rollback(granted.path, granted.token.link_id)
    clock.tick()
    with pds.open_store(granted.path, clock=clock) as store:
        vault = store.open_vault(granted.vault.vault_id, pinned=pin.to_text())
        vault.unlock(key_file=granted.key_file)
        with contextlib.suppress(errors.InvalidProof, errors.IntegrityError):
            _OWNER_OPERATIONS[operation](vault)
        latest = store._ctx.backend.latest_checkpoint(vault.vault_id)
    assert _after_rollback(granted.path, granted.token.link_id) == before
    assert latest is None or Checkpoint.parse(latest).size < pin.size


@pytest.mark.parametrize("operation", sorted(_OWNER_OPERATIONS))
@pytest.mark.parametrize("past_the_pin", [0, 1], ids=["same-size", "larger"])
def test_a_pin_is_not_traded_for_a_head_of_another_branch(
    tmp_path: Path, operation: str, past_the_pin: int
) -> None:
    """The host rolls the store back past a revocation, and an owner session without the
    pin (another device) signs heads on that branch up to the pin's size or past it. The
    object opened with the pin must not take those owner-signed heads for its own branch:
    nothing reaches the revoked link and it signs nothing (``log-fork``)."""
    clock = Clock()
    granted, pin = _revoked_then_rolled_back(tmp_path, clock)
    vault_id = granted.vault.vault_id
    with pds.open_store(granted.path, clock=clock) as store:
        unpinned = store.open_vault(vault_id)
        unpinned.unlock(key_file=granted.key_file)
        record_id = unpinned.list("tax/2024").records[0].record_id
        while (head := unpinned.latest_checkpoint()) is None or head.size < pin.size + past_the_pin:
            unpinned.get(record_id)
        assert head.size == pin.size + past_the_pin and head.root != pin.root
    before = _after_rollback(granted.path, granted.token.link_id)
    clock.tick()
    with pds.open_store(granted.path, clock=clock) as store:
        vault = store.open_vault(vault_id, pinned=pin)
        vault.unlock(key_file=granted.key_file)
        with contextlib.suppress(errors.InvalidProof, errors.IntegrityError):
            _OWNER_OPERATIONS[operation](vault)
        with pytest.raises(errors.InvalidProof) as refused:
            vault.latest_checkpoint()
        assert refused.value.reason == "log-fork"
    assert _after_rollback(granted.path, granted.token.link_id) == before


@pytest.mark.parametrize(
    "operation", ["create_collection", "first put to a collection", "rotate one"]
)
def test_without_a_pin_a_fresh_vault_object_trusts_the_rolled_back_store(
    tmp_path: Path, operation: str
) -> None:
    """What the pin is for: a fresh object without one has nothing to compare the store
    with, and shares the new epoch with the link the owner revoked."""
    clock = Clock()
    granted, _ = _revoked_then_rolled_back(tmp_path, clock)
    before, _ = _after_rollback(granted.path, granted.token.link_id)
    with pds.open_store(granted.path, clock=clock) as store:
        vault = store.open_vault(granted.vault.vault_id)
        vault.unlock(key_file=granted.key_file)
        _OWNER_OPERATIONS[operation](vault)
    after, _ = _after_rollback(granted.path, granted.token.link_id)
    assert after - before


def test_verify_log_leaves_the_vault_object_holding_the_pin(tmp_path: Path) -> None:
    """A pin verified with ``verify_log`` (the log still extends it: the host kept the
    entries and deleted the revocation and the heads since) is held as seen: a new
    collection made next shares nothing with the revoked link and no head is signed."""
    granted, pin = _revoked_then_heads_deleted(tmp_path, Clock())
    before = _after_rollback(granted.path, granted.token.link_id)
    with pds.open_store(granted.path) as store:
        vault = store.open_vault(granted.vault.vault_id)
        vault.unlock(key_file=granted.key_file)
        vault.verify_log(pin)
        vault.create_collection("tax/2025")
        with pytest.raises(errors.InvalidProof) as refused:
            vault.put("tax/2026", {"n": 1})
        assert refused.value.reason == "checkpoint-missing"
    assert _after_rollback(granted.path, granted.token.link_id) == before


def test_an_older_pin_on_another_branch_than_the_held_head_is_refused(tmp_path: Path) -> None:
    """A vault object holds head S; the host rolls the store back, and a session without
    S signs heads P, then more, on the new branch. The log extends P, but P is not on S's
    branch: verifying P must not pass for an object that holds S (log-fork)."""
    granted = _granted(tmp_path, Clock())
    copy = tmp_path / "branch-point.db"
    _copy_database(granted.path, copy)
    for _ in range(2):
        granted.vault.get(granted.vault.list("tax/2024").records[0].record_id)
    held = granted.vault.latest_checkpoint()
    assert held is not None
    _copy_database(copy, granted.path)
    with pds.open_store(granted.path) as store:
        other = store.open_vault(granted.vault.vault_id)
        other.unlock(key_file=granted.key_file)
        other.put("tax/2025", {"n": 1})
        pin = other.latest_checkpoint()
        assert pin is not None and pin.size < held.size
        record_id = other.list("tax/2024").records[0].record_id
        while other.log_size() < held.size:
            other.get(record_id)  # an owner read: an entry and a head
    with pytest.raises(errors.InvalidProof) as refused:
        granted.vault.verify_log(pin)
    assert refused.value.reason == "log-fork"
    granted.store.close()


def test_a_pin_of_another_vault_or_not_a_pin_is_refused_at_open(tmp_path: Path) -> None:
    granted = _granted(tmp_path, Clock())
    other = granted.store.open_vault(granted.store.create_vault(key_file=granted.key_file))
    other.unlock(key_file=granted.key_file)
    other.put("a", {"n": 1})
    foreign = other.latest_checkpoint()
    assert foreign is not None
    vault_id = granted.vault.vault_id
    for bad, error in (
        (foreign, errors.InvalidProof),
        (foreign.to_text(), errors.InvalidProof),
        ("not a checkpoint", errors.FormatError),
        (b"bytes", errors.FormatError),
    ):
        with pytest.raises(error):
            granted.store.open_vault(vault_id, pinned=bad)  # type: ignore[arg-type]
    granted.store.close()


@dataclass
class _Forked:
    """Two copies of one store, ``first`` and ``second``, each written to after the copy,
    so the owner signed a head on each (``heads``, in that order)."""

    key_file: Path
    vault_id: str
    first: Path
    second: Path
    heads: list[Checkpoint]


def _forked(tmp_path: Path) -> _Forked:
    key_file = tmp_path / "owner.key"
    SymmetricKey.create_file(key_file)
    first, second = tmp_path / "first.db", tmp_path / "second.db"
    with pds.open_store(first) as store:
        vault_id = store.create_vault(key_file=key_file)
        vault = store.open_vault(vault_id)
        vault.unlock(key_file=key_file)
        vault.put("a", {"n": 1})
    _copy_database(first, second)
    Path(f"{second}.hostkey").write_bytes(Path(f"{first}.hostkey").read_bytes())
    Path(f"{second}.hostkey").chmod(0o600)
    heads: list[Checkpoint] = []
    for path in (first, second):
        with pds.open_store(path) as store:
            vault = store.open_vault(vault_id)
            vault.unlock(key_file=key_file)
            vault.put("b", {"n": str(path)})
            head = vault.latest_checkpoint()
            assert head is not None
            heads.append(head)
    return _Forked(key_file, vault_id, first, second, heads)


def test_a_rotation_with_a_pin_refuses_a_log_that_forks_from_it(tmp_path: Path) -> None:
    """Two copies of one store, each written to after the copy: a head of one is not
    extended by the other's log, so a rotation there with that pin makes nothing."""
    forked = _forked(tmp_path)
    key_file, vault_id, second, heads = (
        forked.key_file,
        forked.vault_id,
        forked.second,
        forked.heads,
    )
    with pds.open_store(second) as store:
        vault = store.open_vault(vault_id)
        vault.unlock(key_file=key_file)
        epochs = [(row.collection, row.epoch) for row in store._ctx.backend.iter_epochs(vault_id)]
        with pytest.raises(errors.InvalidProof) as refused:
            vault.rotate(pinned=heads[0])
        assert refused.value.reason == "log-fork"
        after = [(row.collection, row.epoch) for row in store._ctx.backend.iter_epochs(vault_id)]
        assert after == epochs  # nothing made
        assert vault.rotate(pinned=heads[1]) == {"a": 2, "b": 2}


def _status(store: pds.Store, vault_id: str, key_file: Path, token: pds.Token) -> str:
    vault = store.open_vault(vault_id)
    vault.unlock(key_file=key_file)
    (grant,) = [g for g in vault.grants() if g.link_id == token.link_id.hex()]
    return grant.status


def test_an_export_with_a_pin_the_log_extends_is_written_and_imports(tmp_path: Path) -> None:
    """The honest case: the log extends a head pinned before the revocation, and the one
    pinned at it; the export is written, and imports under the newer pin."""
    clock = Clock()
    granted = _granted(tmp_path, clock)
    vault, key_file = granted.vault, granted.key_file
    older = vault.latest_checkpoint()
    vault.revoke(granted.token)
    pin = vault.latest_checkpoint()
    assert older is not None and pin is not None
    with granted.store:
        for pinned in (older, older.to_text(), pin):
            buffer = io.BytesIO()
            vault.export(buffer, pinned=pinned)
            assert buffer.getvalue()
        vault.export(tmp_path / "vault.pdsx", pinned=pin.to_text())
    with pds.open_store(tmp_path / "target.db", clock=clock) as target:
        vault_id = target.import_vault(tmp_path / "vault.pdsx", key_file=key_file, pinned=pin)
        assert _status(target, vault_id, key_file, granted.token) == "revoked"


def test_an_export_with_a_pin_refuses_a_store_rolled_back_past_it(tmp_path: Path) -> None:
    """A fresh vault object has seen no head, so only a pin shows the host's copy of the
    store from before a revocation: with it the export logs nothing (the owner's key would
    sign a head over the rolled-back log for the file) and writes no file; without it, the
    file carries the revoked grant live again."""
    clock = Clock()
    granted, pin = _revoked_then_rolled_back(tmp_path, clock)
    key_file, vault_id = granted.key_file, granted.vault.vault_id
    out = tmp_path / "out"
    out.mkdir()
    clock.tick()
    with pds.open_store(granted.path, clock=clock) as store:
        fresh = store.open_vault(vault_id)
        fresh.unlock(key_file=key_file)
        size = fresh.log_size()
        for pinned in (pin, pin.to_text()):
            buffer = io.BytesIO()
            for destination in (out / "vault.pdsx", buffer):
                with pytest.raises(errors.InvalidProof) as refused:
                    fresh.export(destination, pinned=pinned)
                assert refused.value.reason == "log-truncated"
            assert buffer.getvalue() == b""
        assert fresh.log_size() == size  # nothing logged, no head signed
        assert list(out.iterdir()) == []
        fresh.export(out / "vault.pdsx")
    with pds.open_store(tmp_path / "target.db", clock=clock) as target:
        target.import_vault(out / "vault.pdsx", key_file=key_file)
        assert _status(target, vault_id, key_file, granted.token) == "active"  # the pin's use


def test_an_export_with_a_pin_refuses_a_store_whose_newer_heads_were_deleted(
    tmp_path: Path,
) -> None:
    """The host keeps the log's entries but deletes the revocation and every head from the
    pinned one on: the log extends the pin, and the older head left agrees with the rows
    (checkpoint-missing). Once another client of the owner's signs a head over the store as
    left, it is of the pin's size but records no revocation (checkpoint-records)."""
    granted, pin = _revoked_then_heads_deleted(tmp_path, Clock())
    out = tmp_path / "out"
    out.mkdir()
    with pds.open_store(granted.path) as store:
        fresh = store.open_vault(granted.vault.vault_id)
        fresh.unlock(key_file=granted.key_file)
        size = fresh.log_size()
        with pytest.raises(errors.InvalidProof) as refused:
            fresh.export(out / "vault.pdsx", pinned=pin)
        assert refused.value.reason == "checkpoint-missing"
        head = fresh.checkpoint()
        assert head.size == pin.size and head.revoked != pin.revoked
        with pytest.raises(errors.InvalidProof) as refused:
            fresh.export(out / "vault.pdsx", pinned=pin.to_text())
        assert refused.value.reason == "checkpoint-records"
        assert fresh.log_size() == size
        assert fresh.latest_checkpoint() == head  # no head signed for an export
    assert list(out.iterdir()) == []


def _swapped_for_the_snapshot(
    monkeypatch: pytest.MonkeyPatch, store: pds.Store, path: Path, copy: Path
) -> None:
    """Have the host put ``copy`` in place of the store at ``path`` once the export's
    transaction has committed, just before its read snapshot begins."""
    backend = store.backend
    snapshot = backend.snapshot
    swapped: list[bool] = []

    @contextmanager
    def swapped_first() -> Iterator[None]:
        if not swapped:
            swapped.append(True)
            _copy_database(copy, path)
        with snapshot():
            yield

    monkeypatch.setattr(backend, "snapshot", swapped_first)


@pytest.mark.parametrize("pinned", [True, False], ids=["pinned", "held-head"])
def test_an_export_checks_its_read_snapshot_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, pinned: bool
) -> None:
    """The file is written from a read snapshot taken after the export's transaction: a
    host that restores its copy from before the revocation in between is caught there, and
    the file removed. Without a pin, by the heads the vault object holds (it signed the
    revocation's, and the export's)."""
    granted, before, pin = _revoked_with_a_copy(tmp_path, Clock())
    out = tmp_path / "out"
    out.mkdir()
    with granted.store:
        _swapped_for_the_snapshot(monkeypatch, granted.store, granted.path, before)
        with pytest.raises(errors.InvalidProof) as refused:
            granted.vault.export(out / "vault.pdsx", pinned=pin if pinned else None)
    assert refused.value.reason == "log-truncated"
    assert list(out.iterdir()) == []


def test_an_export_with_a_pin_anchors_its_walk_of_the_entries(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Swapped in for the export's snapshot: the other copy of a forked store, whose
    entries hash to the head the owner signed on it, with this copy's subtree hashes, which
    hash to the pin. Only the root recomputed from the entries at the pin's size shows the
    fork. (Through ``Vault.export`` the export's own head, which the object then holds,
    refuses the swapped copy first, as too short: the snapshot is written directly here.)"""
    forked = _forked(tmp_path)
    conn = sqlite3.connect(forked.second)
    with conn:
        conn.execute("ATTACH DATABASE ? AS first", (str(forked.first),))
        conn.execute("DELETE FROM main.log_nodes")
        conn.execute("INSERT INTO main.log_nodes SELECT * FROM first.log_nodes")
    conn.close()
    out = tmp_path / "out"
    out.mkdir()
    with pds.open_store(forked.first) as store:
        vault = store.open_vault(forked.vault_id)
        vault.unlock(key_file=forked.key_file)
        _swapped_for_the_snapshot(monkeypatch, store, forked.first, forked.second)
        with pytest.raises(errors.InvalidProof) as refused:
            _export.export_vault(vault, out / "vault.pdsx", pinned=forked.heads[0])
    assert refused.value.reason == "log-fork"
    assert list(out.iterdir()) == []


def test_repair_lets_a_vault_object_go_on_after_its_heads_were_deleted(world: World) -> None:
    """The heads this object signed are deleted (the log kept): it refuses the older store
    until a repair, anchored on the head it remembers, signs a new one."""
    _rotated(world)
    world.vault.get("return-2024")  # a head with the same records as the one before it
    size = world.vault.log_size()
    world.sql("DELETE FROM log_checkpoints WHERE size >= ?", size)
    with pytest.raises(errors.InvalidProof):
        world.vault.latest_checkpoint()
    report = world.vault.repair()
    assert (report.restored, report.epochs) == ([], {})
    assert report.checkpoint is not None and report.checkpoint.size == size + 1
    assert world.head().rotated == expected_rotations(**{"tax/2024": 2})
    assert world.vault.put("tax/2024", {"income": 2}).epoch == 2
