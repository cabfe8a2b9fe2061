"""The offline audit (design.md promise 9; issue 4 "The audit flags ..."): from an exported
package alone, every released access is judged against the tokens, the signed revocation
list and the signed log, and each one that no valid token authorised is listed with the
rule it breaks.

Bad accesses come from acting as a dishonest host: entries are appended straight into the
store's Merkle log (``MerkleLog.append`` in a backend transaction), with details shaped
exactly as ``_serve.Host._details`` writes them, and then the owner exports as usual. The
owner's checkpoint then covers them, so only the audit's judgement can catch them.
"""

from __future__ import annotations

import base64
import datetime as dt
import functools
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import threading
import tracemalloc
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgpack
import nacl.bindings as sodium
import pytest

import pds
from pds import _codec, _crypto, accesslog, audit, errors
from pds.accesslog import Checkpoint, LogEntry, MerkleLog
from pds.keys import SymmetricKey

T0_MS = 1_750_000_000_000
MINUTE_MS = 60_000
DAY_MS = 24 * 3600 * 1000
SKEW_MS = 5 * MINUTE_MS
PURPOSE = "benefit check"


class Clock:
    """A clock that moves only when told to; ``int(clock() * 1000)`` is exactly ``ms``."""

    def __init__(self, ms: int = T0_MS) -> None:
        self.ms = ms

    def __call__(self) -> float:
        return (self.ms + 0.5) / 1000

    def tick(self, ms: int = MINUTE_MS) -> None:
        self.ms += ms


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
    token: pds.Token
    tax: str
    health: str

    @property
    def vault_id(self) -> str:
        return self.vault.vault_id

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

    def export(self, name: str = "audit") -> Path:
        self.clock.tick()
        return audit.export_audit(self.vault, self.tmp / name)


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    clock = Clock()
    path = tmp_path / "store.db"
    store = pds.open_store(path, clock=clock)
    key_file = tmp_path / "owner.key"
    SymmetricKey.create_file(key_file)
    vault = store.open_vault(store.create_vault(key_file=key_file))
    vault.unlock(key_file=key_file)
    tax = vault.put("tax/2024", {"income": 41000}).record_id
    health = vault.put("health/visits", {"clinic": "north"}).record_id
    agency = pds.PrincipalKey.generate()
    clock.tick()
    token = vault.grant(
        agency.did, collections=["tax/*"], purpose=PURPOSE, expires=dt.timedelta(days=30)
    )
    grantee = pds.Grantee(agency, clock=clock)
    yield World(tmp_path, path, clock, store, vault, key_file, agency, grantee, token, tax, health)
    store.close()


def identity_public(vault: pds.Vault) -> bytes:
    return _crypto.parse_did_key(vault.did)


def forge_access(
    world: World,
    token: pds.Token | None,
    *,
    time: int | None = None,
    kind: str = "read",
    result: str = "released",
    purpose: str = PURPOSE,
    collection: str = "tax/2024",
    record: str | None = None,
    actor: str | None = None,
    chain: list[str] | None = None,
    link_id: bytes | None = None,
    changes: dict[str, Any] | None = None,
    signer: _crypto.SigningKey | None = None,
    disclose_after: int | None = None,
) -> int:
    """Append an access entry as a dishonest host would: no checks, straight into the log.

    ``changes`` overrides details (a value of ``...`` removes the key); ``signer`` signs
    the entry as the owner's pds signs its own."""
    world.clock.tick()
    backend = world.store.backend
    details = {
        "actor": actor or (token.leaf.audience_did if token else world.agency.did),
        "chain": chain if chain is not None else [i.hex() for i in token.link_ids] if token else [],
        "action": kind,
        "purpose": purpose,
        "basis": None,
        "collections": [collection],
        "records": [[record or world.tax, 1]],
        "request": os.urandom(16).hex(),
        "agent": None,
        "correlation": None,
        "defer": None,
        "result": result,
        "reason": None,
    }
    for key, value in (changes or {}).items():
        if value is ...:
            del details[key]
        else:
            details[key] = value
    owner = bytes(sodium.crypto_sign_ed25519_pk_to_curve25519(identity_public(world.vault)))
    with backend.transaction():
        return MerkleLog(backend, world.vault_id).append(
            time=world.clock.ms if time is None else time,
            kind=kind,
            result=result,
            link_id=link_id if link_id is not None else (token.link_id if token else None),
            details=details,
            owner_x25519_public=owner,
            rng=os.urandom,
            signer=signer,
            disclose_after=disclose_after,
        )


def rules(report: audit.AuditReport) -> list[tuple[int | None, str]]:
    return [(v.index, v.rule) for v in report.violations]


def honest_activity(world: World) -> None:
    world.read(world.token)
    world.read(world.token, action="list")
    with pytest.raises(errors.NotPermitted):
        world.read(world.token, collection="health/visits")
    world.clock.tick()
    world.vault.get(world.health)
    world.vault.revoke(world.token, reason="case closed")
    with pytest.raises(errors.Revoked):
        world.read(world.token)


# -- a clean log --------------------------------------------------------------------------


def test_a_clean_log_passes_with_the_right_counts(world: World) -> None:
    honest_activity(world)
    size_before_export = world.vault.log_size()
    report = audit.verify_audit(world.export())
    assert report.clean, report.violations
    assert report.vault_id == world.vault_id
    # two creates, grant, read, list, refused read, owner read, revoke, refused read, export.
    assert report.entries == size_before_export + 1 == 10
    assert (report.accesses, report.released, report.refused) == (4, 2, 2)
    assert report.undisclosed == 0
    assert report.to_dict()["counts"] == {
        "entries": 10,
        "accesses": 4,
        "released": 2,
        "refused": 2,
        "undisclosed": 0,
        "violations": 0,
    }


def test_the_package_layout(world: World) -> None:
    world.read(world.token)
    package = world.export()
    assert sorted(p.name for p in package.iterdir()) == sorted(audit.FILES)
    meta = json.loads((package / "vault.json").read_text())
    assert meta["format"] == "pds-audit/v1"
    assert meta["vault"] == world.vault_id
    assert meta["did"] == world.vault.did
    assert base64.b64decode(meta["identity"]) == identity_public(world.vault)
    head = Checkpoint.parse((package / "checkpoint.txt").read_text())
    head.verify(identity_public(world.vault))
    assert head.size == world.vault.log_size()
    lines = (package / "log.jsonl").read_text().splitlines()
    assert [json.loads(line)["index"] for line in lines] == list(range(head.size))
    tokens = json.loads((package / "tokens.json").read_text())
    assert [t["link"] for t in tokens] == [world.token.link_id.hex()]
    # An export into a non-empty directory is refused.
    with pytest.raises(errors.FormatError):
        audit.export_audit(world.vault, package)


def test_a_line_by_another_key_under_the_vault_name_is_ignored(world: World) -> None:
    """C2SP signed-note: one name may have several keys, told apart by key id. A line by
    another key under the vault's name, before the vault's own, does not hide it; with only
    that line the package fails on the key."""
    world.read(world.token)
    package = world.export()
    path = package / "checkpoint.txt"
    text = path.read_text()
    body, own = text.split("\n\n")
    name = accesslog.origin(world.vault_id)
    stranger = _crypto.SigningKey.generate(os.urandom)
    raw = accesslog.key_id(name, stranger.public) + stranger.sign_raw(body.encode() + b"\n")
    other = f"\u2014 {name} {base64.b64encode(raw).decode()}\n"
    path.write_text(f"{body}\n\n{other}{own}")
    assert audit.verify_audit(package, vault_did=world.vault.did).clean
    path.write_text(f"{body}\n\n{other}")
    with pytest.raises(errors.InvalidProof) as failure:
        audit.verify_audit(package, vault_did=world.vault.did)
    assert failure.value.reason == "checkpoint-key"


def test_the_package_is_private_whatever_the_umask(world: World) -> None:
    """log.jsonl holds every entry's disclosure key: nobody but the owner may read it."""
    world.read(world.token)
    package = world.tmp / "private" / "package"
    previous = os.umask(0)
    try:
        audit.export_audit(world.vault, package)
    finally:
        os.umask(previous)
    assert package.stat().st_mode & 0o777 == 0o700
    assert {p.name: p.stat().st_mode & 0o777 for p in package.iterdir()} == dict.fromkeys(
        audit.FILES, 0o600
    )
    assert audit.verify_audit(package, vault_did=world.vault.did).clean


def test_verification_needs_no_store(world: World, tmp_path: Path) -> None:
    honest_activity(world)
    trusted = world.vault.checkpoint().to_text()
    forge_access(world, world.token, purpose="marketing")
    package = world.export()
    alone = tmp_path / "elsewhere" / "package"
    shutil.copytree(package, alone)
    (alone.parent / "trusted.txt").write_text(trusted)
    # Nothing but the package is left: no store, no host key, no owner key.
    world.store.close()
    for leftover in tmp_path.iterdir():
        if leftover.name != "elsewhere":
            if leftover.is_dir():
                shutil.rmtree(leftover)
            else:
                leftover.unlink()
    script = (
        "import json, sys\n"
        "from pds import audit\n"
        "report = audit.verify_audit(sys.argv[1], trusted_head=open(sys.argv[2]).read())\n"
        "print(json.dumps(report.to_dict()))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script, str(alone), str(alone.parent / "trusted.txt")],
        cwd=alone.parent,
        env={"PATH": os.environ.get("PATH", ""), "HOME": str(alone.parent)},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["vault"] == world.vault_id
    assert report["clean"] is False
    # The forged access comes after the revocation, and names a purpose never granted.
    assert [(v["entry"], v["rule"]) for v in report["violations"]] == [
        (9, "revoked"),
        (9, "wrong-purpose"),
    ]
    assert report["counts"]["entries"] == 11
    assert sorted(p.name for p in tmp_path.iterdir()) == ["elsewhere"]


# -- each kind of unauthorised access is flagged with its rule ----------------------------


def test_an_access_after_revocation_is_flagged(world: World) -> None:
    world.read(world.token)
    world.clock.tick()
    world.vault.revoke(world.token)
    index = forge_access(world, world.token)
    report = audit.verify_audit(world.export())
    assert rules(report) == [(index, "revoked")]
    assert report.released == 2


def test_an_access_logged_after_the_revocation_is_flagged_whatever_its_time(
    world: World,
) -> None:
    """The host serves the revoked token days later and stamps the entry before the
    revocation: the log's order, which the host cannot bend, shows it came after."""
    world.read(world.token)
    world.clock.tick(2 * DAY_MS)
    world.vault.revoke(world.token, reason="case closed")
    revoked_at = world.clock.ms
    world.clock.tick(3 * DAY_MS)
    index = forge_access(world, world.token, time=revoked_at - 3_600_000)
    report = audit.verify_audit(world.export())
    assert rules(report) == [(index, "revoked")]


def test_an_access_logged_before_the_revocation_is_not_flagged_whatever_its_time(
    world: World,
) -> None:
    """The serving process's clock runs two minutes ahead of the owner's (within the skew
    hosts may differ by): a read served and committed before the owner revokes carries a
    later time than the revocation, and was authorised."""
    host_clock = Clock(world.clock.ms + 2 * MINUTE_MS)
    host_store = pds.open_store(world.path, clock=host_clock)
    try:
        world.clock.tick()
        host_clock.tick()
        pds.Grantee(world.agency, clock=host_clock).read(host_store, world.token)
    finally:
        host_store.close()
    world.clock.tick(1000)
    world.vault.revoke(world.token)
    package = world.export()
    read, revoke = (
        LogEntry.parse(base64.b64decode(line["entry"])) for line in _lines(package)[3:5]
    )
    if (read.kind, revoke.kind) != ("read", "revoke") or read.time <= revoke.time:
        pytest.fail("precondition: the read is logged first with a later time")
    assert audit.verify_audit(package).clean


def test_an_access_in_the_revocations_millisecond_logged_before_it_is_not_flagged(
    world: World,
) -> None:
    world.read(world.token)
    world.vault.revoke(world.token)  # the same millisecond as the read
    assert audit.verify_audit(world.export()).clean


def test_a_revocation_without_a_counted_entry_counts_from_its_time(world: World) -> None:
    """A revoke entry that does not open does not count; the signed list's revocation
    does, from its ``revoked_at``, against the entries' times."""
    world.read(world.token)
    world.clock.tick()
    world.vault.revoke(world.token)
    revoke = world.vault.log_size() - 1
    # Logged after the revoke entry, stamped a millisecond before the revocation's time.
    before = forge_access(world, world.token, time=world.clock.ms - 1)
    after = forge_access(world, world.token)
    package = world.export()
    lines = _lines(package)
    lines[revoke]["key"] = lines[revoke - 1]["key"]
    _write_lines(package, lines)
    assert before < after
    assert rules(audit.verify_audit(package)) == [(revoke, "undecryptable"), (after, "revoked")]


# -- times bounded by the log's order (step 8.3) ------------------------------------------


def _at(ms: int) -> dt.datetime:
    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC)


def _serve_at(world: World, token: pds.Token, ms: int) -> int:
    """A serving process whose clock reads ``ms`` serves a read of ``token`` through the
    library, to a grantee whose clock agrees: a dishonest host that set its clock, or an
    honest one whose clock differs from the owner's. Returns the index of its entry."""
    host_clock = Clock(ms)
    host_store = pds.open_store(world.path, clock=host_clock)
    try:
        pds.Grantee(world.agency, clock=host_clock).read(host_store, token)
    finally:
        host_store.close()
    return world.vault.log_size() - 1


def _owner_entry_at(world: World, ms: int) -> int:
    """An entry only the owner appends, signed by its pds, stamped ``ms`` by its clock."""
    world.clock.ms = ms
    world.vault.get(world.tax)
    return world.vault.log_size() - 1


def _entry_time(package: Path, index: int) -> int:
    return LogEntry.parse(base64.b64decode(_lines(package)[index]["entry"])).time


def test_an_access_logged_after_an_owner_entry_past_the_expiry_is_expired_whatever_its_time(
    world: World,
) -> None:
    """A host serves an hour-long token a day after it expired, its clock set back into the
    hour: the entry's time passes, but the access is logged after an entry the owner
    signed a day after the expiry."""
    token = world.grant(expires=dt.timedelta(hours=1))
    world.read(token)
    expires = token.leaf.caveats.expires
    owner = _owner_entry_at(world, expires + DAY_MS)
    index = _serve_at(world, token, expires - MINUTE_MS)
    package = world.export()
    if index != owner + 1 or _entry_time(package, index) >= expires:
        pytest.fail("precondition: the access follows the owner's entry, stamped in time")
    report = audit.verify_audit(package)
    assert rules(report) == [(index, "expired")]
    assert f"the owner's entry {owner}" in report.violations[0].message


def test_an_access_logged_before_an_owner_entry_ahead_of_nbf_is_not_yet_valid_whatever_its_time(
    world: World,
) -> None:
    """A host serves a token five days before its ``nbf``, its clock set forward past it:
    the owner's entry logged after the access is stamped days before the ``nbf``."""
    not_before = world.clock.ms + 5 * DAY_MS
    token = world.grant(not_before=_at(not_before))
    index = _serve_at(world, token, not_before + MINUTE_MS)
    owner = _owner_entry_at(world, world.clock.ms + MINUTE_MS)
    report = audit.verify_audit(world.export())
    assert index + 1 == owner
    assert rules(report) == [(index, "not-yet-valid")]
    assert f"the owner's entry {owner}" in report.violations[0].message


def test_an_access_expired_by_its_own_time_and_by_the_order_is_reported_once(
    world: World,
) -> None:
    token = world.grant(expires=dt.timedelta(hours=1))
    expires = token.leaf.caveats.expires
    _owner_entry_at(world, expires + DAY_MS)
    index = forge_access(world, token, time=expires + SKEW_MS)
    report = audit.verify_audit(world.export())
    assert rules(report) == [(index, "expired")]
    assert report.violations[0].message == "the token was expired at the time of access"


def test_an_honest_access_after_an_owner_entry_past_the_expiry_within_the_skew_is_clean(
    world: World,
) -> None:
    """The serving process's clock runs four minutes behind the owner's (within the skew
    hosts may differ by). The owner's entry is stamped two minutes past the token's
    allowance; the read logged after it was checked, by the host's clock, inside it."""
    token = world.grant(expires=dt.timedelta(hours=1))
    expires = token.leaf.caveats.expires
    owner_time = expires + SKEW_MS + 2 * MINUTE_MS
    _owner_entry_at(world, owner_time)
    _serve_at(world, token, owner_time - 4 * MINUTE_MS)
    assert audit.verify_audit(world.export()).clean


def test_an_honest_access_before_an_owner_entry_ahead_of_nbf_within_the_skew_is_clean(
    world: World,
) -> None:
    """The serving process's clock runs four minutes ahead of the owner's. It serves a read
    four minutes before the token's ``nbf`` (inside the allowance); the owner's entry
    logged next is stamped eight minutes before it."""
    not_before = world.clock.ms + DAY_MS
    token = world.grant(not_before=_at(not_before))
    served = not_before - 4 * MINUTE_MS
    index = _serve_at(world, token, served)
    owner = _owner_entry_at(world, served - 4 * MINUTE_MS)
    assert index + 1 == owner
    assert audit.verify_audit(world.export()).clean


@pytest.mark.parametrize("late", [0, 1])
def test_an_owner_entry_bounds_a_later_access_by_its_time_less_the_skew(
    world: World, late: int
) -> None:
    """The last millisecond a host accepts the token (``time - skew < exp``): an owner
    entry before the access stamped the skew later is consistent with it, one a
    millisecond later is not."""
    token = world.grant(expires=dt.timedelta(hours=1))
    served = token.leaf.caveats.expires + SKEW_MS - 1
    _owner_entry_at(world, served + SKEW_MS + late)
    index = _serve_at(world, token, served)
    expected = [(index, "expired")] if late else []
    assert rules(audit.verify_audit(world.export())) == expected


def test_an_owner_entry_whose_key_was_withheld_is_a_violation(world: World) -> None:
    """The package's keys are not covered by the checkpoint: an editor who nulls the key
    of the owner's entry that bounds an expired access takes the bound away. export_audit
    discloses every owner entry, so a null key there is reported (``owner-withheld``)."""
    token = world.grant(expires=dt.timedelta(hours=1))
    expires = token.leaf.caveats.expires
    owner = _owner_entry_at(world, expires + SKEW_MS + SKEW_MS + DAY_MS)
    index = _serve_at(world, token, expires)
    package = world.export()
    assert rules(audit.verify_audit(package)) == [(index, "expired")]
    lines = _lines(package)
    lines[owner]["key"] = None
    _write_lines(package, lines)
    assert rules(audit.verify_audit(package)) == [(owner, "owner-withheld")]


def test_an_owner_kind_entry_the_owner_did_not_sign_bounds_nothing(world: World) -> None:
    """The host appends an owner read stamped a year ahead: its time is the host's word,
    not the owner's, and the honest read logged after it is not judged by it."""
    forged = forge_access(
        world, None, kind="owner-read", result="ok", time=world.clock.ms + 365 * DAY_MS
    )
    index = _serve_at(world, world.token, world.clock.ms + MINUTE_MS)
    assert index == forged + 1
    assert rules(audit.verify_audit(world.export())) == [(forged, "owner-signature")]


def test_an_access_outside_the_scope_is_flagged(world: World) -> None:
    index = forge_access(world, world.token, collection="health/visits", record=world.health)
    assert rules(audit.verify_audit(world.export())) == [(index, "out-of-scope")]


@pytest.mark.parametrize(
    "collections",
    [None, ..., "tax/2024", ["tax/2024", 5], []],
    ids=["nil", "missing", "text", "mixed", "empty"],
)
def test_an_access_without_a_list_of_collections_is_flagged(world: World, collections: Any) -> None:
    """A released access must name what it released as a list of collection names (none
    only when it released no record); any other shape cannot show the access in scope (it
    served a record, say, in health/)."""
    index = forge_access(
        world, world.token, record=world.health, changes={"collections": collections}
    )
    assert rules(audit.verify_audit(world.export())) == [(index, "out-of-scope")]


def test_an_access_with_the_wrong_purpose_is_flagged(world: World) -> None:
    index = forge_access(world, world.token, purpose="direct marketing")
    assert rules(audit.verify_audit(world.export())) == [(index, "wrong-purpose")]


def test_an_access_by_an_expired_token_is_flagged(world: World) -> None:
    expires = world.token.leaf.caveats.expires
    world.read(world.token)
    index = forge_access(world, world.token, time=expires + SKEW_MS + 1)
    assert rules(audit.verify_audit(world.export())) == [(index, "expired")]


def test_an_access_before_the_token_is_valid_is_flagged(world: World) -> None:
    later = world.grant(not_before=dt.datetime.fromtimestamp((T0_MS + 5 * DAY_MS) / 1000, dt.UTC))
    index = forge_access(world, later)
    assert rules(audit.verify_audit(world.export())) == [(index, "not-yet-valid")]


def test_an_access_beyond_the_use_budget_is_flagged(world: World) -> None:
    once = world.grant(uses=1)
    world.read(once)
    with pytest.raises(errors.BudgetExhausted):
        world.read(once)
    index = forge_access(world, once)
    assert rules(audit.verify_audit(world.export())) == [(index, "budget")]


def test_an_access_beyond_the_budget_with_a_key_that_does_not_open_is_both(world: World) -> None:
    """Budgets count released accesses from their headers, so one whose details do not
    open is over budget all the same (step 8)."""
    once = world.grant(uses=1)
    world.read(once)
    index = forge_access(world, once)
    package = world.export()
    lines = _lines(package)
    lines[index]["key"] = base64.b64encode(bytes(32)).decode()
    _write_lines(package, lines)
    assert rules(audit.verify_audit(package)) == [(index, "undecryptable"), (index, "budget")]


@pytest.mark.parametrize("position", ["after", "before"])
def test_a_damaged_copy_of_a_valid_token_does_not_taint_it(world: World, position: str) -> None:
    world.read(world.token)
    package = world.export()
    tokens = json.loads((package / "tokens.json").read_text())
    raw = bytearray(world.token.to_bytes())
    raw[raw.find(world.token.root.signature)] ^= 1
    damaged = pds.Token.from_bytes(bytes(raw))
    assert damaged.link_id == world.token.link_id
    item = {"link": damaged.link_id.hex(), "token": damaged.to_text()}
    tokens = [*tokens, item] if position == "after" else [item, *tokens]
    (package / "tokens.json").write_text(json.dumps(tokens))
    assert audit.verify_audit(package).clean
    # Alone, the damaged copy is what the package holds for the link.
    (package / "tokens.json").write_text(json.dumps([item]))
    assert rules(audit.verify_audit(package)) == [(3, "token-invalid")]


@pytest.mark.parametrize(
    "changes",
    [
        {"v": 2},
        {"v": True},
        {"extra": [1]},
        {"reason": ...},
        {"reason": None},
        {"link": b"\x01" * 31},
    ],
    ids=repr,
)
def test_a_revocation_statement_of_another_shape_is_refused(
    world: World, changes: dict[str, Any]
) -> None:
    """Signed by the owner's key, but not the statement token.md defines: exactly link,
    reason, revoked_at, v (1) and vault."""
    package = world.export()
    identity = world.vault._keys().identity
    fields: dict[str, Any] = {
        "v": 1,
        "vault": world.vault_id,
        "link": world.token.link_id,
        "revoked_at": world.clock.ms,
        "reason": "case closed",
    }
    for key, value in changes.items():
        if value is ...:
            del fields[key]
        else:
            fields[key] = value
    statement = _codec.encode(fields)
    signed = [statement, identity.sign(pds.capability.REVOCATION_LABEL, statement)]
    body = _codec.encode(
        {"v": 1, "vault": world.vault_id, "issued_at": world.clock.ms, "revocations": [signed]}
    )
    outer = {"body": body, "sig": identity.sign(pds.capability.REVOCATION_LIST_LABEL, body)}
    (package / "revocations.bin").write_bytes(_codec.encode(outer))
    with pytest.raises(errors.FormatError):
        audit.verify_audit(package)


def test_an_access_by_another_holder_is_flagged(world: World) -> None:
    stranger = pds.PrincipalKey.generate().did
    index = forge_access(world, world.token, actor=stranger)
    assert rules(audit.verify_audit(world.export())) == [(index, "wrong-holder")]


def test_an_ability_the_token_lacks_is_flagged(world: World) -> None:
    lister = world.grant(abilities=["list"])
    index = forge_access(world, lister, kind="read")
    assert rules(audit.verify_audit(world.export())) == [(index, "wrong-ability")]


def test_an_access_without_a_known_token_is_flagged(world: World) -> None:
    unknown = forge_access(world, world.token, link_id=os.urandom(32))
    untokened = forge_access(world, None)
    assert rules(audit.verify_audit(world.export())) == [
        (unknown, "unknown-token"),
        (untokened, "token-invalid"),
    ]


def test_several_bad_accesses_are_each_listed(world: World) -> None:
    honest_activity(world)  # revokes world.token at the end
    fresh = world.grant()
    world.read(fresh)
    bad_purpose = forge_access(world, fresh, purpose="curiosity")
    after_revoke = forge_access(world, world.token)
    both = forge_access(world, fresh, purpose="curiosity", collection="health/visits")
    report = audit.verify_audit(world.export())
    assert rules(report) == [
        (bad_purpose, "wrong-purpose"),
        (after_revoke, "revoked"),
        (both, "wrong-purpose"),
        (both, "out-of-scope"),
    ]
    # Refused attempts are counted, never judged as releases.
    assert (report.refused, report.released) == (2, 6)


def test_a_forged_refusal_is_not_a_violation(world: World) -> None:
    forge_access(world, world.token, result="refused", purpose="fraud hunting")
    report = audit.verify_audit(world.export())
    assert report.clean
    assert report.refused == 1


@pytest.mark.parametrize("signature", ["none", "another key", "copied"])
def test_an_owner_entry_the_owner_did_not_sign_is_flagged(world: World, signature: str) -> None:
    """The host appends a ``revoke`` entry for a live token (sealed to the owner's public
    key, as anyone can): the audit names it and does not take the revocation from it, so
    the token's later, authorised access is not flagged."""
    world.clock.tick()
    world.vault.get(world.tax)  # an owner-read entry, whose signature is copied below
    owner_read = world.vault.log_size() - 1
    secret = world.vault._keys().x25519_secret
    copied = next(
        iter(MerkleLog(world.store.backend, world.vault_id).entries(owner_read, owner_read + 1))
    )
    changes: dict[str, Any] = {"owner": True, "link": world.token.link_id.hex(), "reason": "x"}
    if signature == "copied":
        changes["signature"] = copied.open(secret)["signature"]
    forged = forge_access(
        world,
        world.token,
        kind="revoke",
        result="ok",
        changes=changes,
        signer=_crypto.SigningKey.generate(os.urandom) if signature == "another key" else None,
    )
    world.read(world.token)
    assert rules(audit.verify_audit(world.export())) == [(forged, "owner-signature")]


def test_an_access_after_a_revocation_the_host_deleted_is_flagged(world: World) -> None:
    world.read(world.token)
    world.clock.tick()
    world.vault.revoke(world.token)
    conn = sqlite3.connect(world.path)
    with conn:
        conn.execute("DELETE FROM revocations")
    # The owner refuses to sign a package over revocations its latest head does not record.
    with pytest.raises(errors.IntegrityError) as refused:
        world.export()
    assert refused.value.reason == "revocations-changed"
    with conn:  # so the host drops the heads signed since the revocation too
        conn.execute("DELETE FROM log_checkpoints WHERE size > 4")
    conn.close()
    world.read(world.token)  # the host now serves the revoked token
    # The vault object that signed the deleted heads refuses the older store...
    with pytest.raises(errors.InvalidProof) as older:
        world.export()
    assert older.value.reason == "checkpoint-missing"
    # ...a fresh one (another process, no pin) signs the package, which the audit flags.
    world.vault = world.store.open_vault(world.vault_id)
    world.vault.unlock(key_file=world.key_file)
    kinds = [e.kind for e in world.vault.access_log()]
    if kinds != ["create", "create", "grant", "read", "revoke", "read"]:
        pytest.fail(f"precondition: the host did not serve the revoked token ({kinds})")
    assert rules(audit.verify_audit(world.export())) == [
        (4, "revocation-missing"),
        (5, "revoked"),
    ]


def _host_appends_raw(world: World, sealed: bytes, result: str = "released") -> int:
    """Append entry bytes as the host can (it writes access entries): any ``sealed``."""
    world.clock.tick()
    backend = world.store.backend
    with backend.transaction():
        log = MerkleLog(backend, world.vault_id)
        index = log.size()
        raw = accesslog.encode_entry(
            vault_id=world.vault_id,
            index=index,
            time=world.clock.ms,
            kind="read",
            result=result,
            link_id=world.token.link_id,
            disclose_after=None,
            sealed=sealed,
        )
        log.append_raw(index, world.clock.ms, raw)
    return index


@pytest.mark.parametrize("result", ["released", "refused"])
def test_an_entry_no_key_opens_does_not_stop_the_export(world: World, result: str) -> None:
    """An ephemeral key of small order: the owner's side refuses the key exchange. The
    package is still written, with a key of zeros, and the entry is undecryptable."""
    world.read(world.token)
    index = _host_appends_raw(world, bytes(32) + bytes(40), result)
    world.read(world.token)
    package = world.export()
    assert base64.b64decode(_lines(package)[index]["key"]) == bytes(32)
    report = audit.verify_audit(package)
    expected = [(index, "undecryptable")] if result == "released" else []
    assert rules(report) == expected
    assert report.released == 2 + (result == "released")


def test_an_entry_too_short_to_be_sealed_is_reported_malformed(world: World) -> None:
    """An entry whose ``sealed`` is too short does not parse: the package carries it with
    no key, and the verifier reports it (malformed-entry) and hashes it. The export used
    to refuse the log for good (log-entry): the host could stop every audit export."""
    world.read(world.token)
    index = _host_appends_raw(world, b"")
    world.read(world.token)
    package = world.export()
    assert _lines(package)[index]["key"] is None
    report = audit.verify_audit(package)
    assert rules(report) == [(index, "malformed-entry")]
    assert (report.entries, report.released) == (len(_lines(package)), 2)


def _garbage(world: World, how: str) -> bytes:
    """Bytes the host could append at the log's end that are no entry of this log there."""
    backend = world.store.backend
    size = backend.log_size(world.vault_id)
    previous = next(iter(backend.iter_log(world.vault_id, size - 1, size)))[1]
    if how == "not msgpack":
        return b"\xc1"
    if how == "another index":
        return previous
    assert how == "another vault"
    return _codec.encode({**_codec.decode(previous), "index": size, "vault": "other"})


@pytest.mark.parametrize("how", ["not msgpack", "another index", "another vault"])
def test_bytes_the_host_appends_that_are_no_entry_are_one_violation(world: World, how: str) -> None:
    """The host appends bytes that are no entry after the latest head; the owner's next
    head covers them. The package holds them with the key null; the audit reports exactly
    one malformed-entry at their index, hashes them (the checkpoint and a trusted head
    from before them hold), and judges the accesses around them as ever."""
    world.read(world.token)
    trusted = world.vault.latest_checkpoint()
    assert trusted is not None
    garbage = _garbage(world, how)
    backend = world.store.backend
    with backend.transaction():
        log = MerkleLog(backend, world.vault_id)
        index = log.size()
        log.append_raw(index, world.clock.ms, garbage)
    world.read(world.token)
    world.grant()  # a head signed over them
    package = world.export()
    line = _lines(package)[index]
    assert (line["index"], base64.b64decode(line["entry"]), line["key"]) == (index, garbage, None)
    report = audit.verify_audit(package, trusted_head=trusted.to_text())
    assert rules(report) == [(index, "malformed-entry")]
    assert (report.accesses, report.released) == (2, 2)


def test_a_package_line_changed_into_no_entry_is_reported_and_fails_the_checkpoint(
    world: World,
) -> None:
    """Changed after the export: the checkpoint no longer matches (the bytes are hashed
    as they are), and the line is reported as malformed; lines swapped name other
    indexes: each is malformed. Neither is a malformed package (they used to raise)."""
    world.read(world.token)
    package = world.export()
    lines = _lines(package)
    changed = [*lines[:3], {**lines[3], "entry": "AAAA", "key": None}, *lines[4:]]
    _write_lines(package, changed)
    assert rules(audit.verify_audit(package)) == [(3, "malformed-entry"), (None, "checkpoint")]
    _write_lines(package, [lines[1], lines[0], *lines[2:]])
    assert rules(audit.verify_audit(package)) == [
        (0, "malformed-entry"),
        (1, "malformed-entry"),
        (None, "checkpoint"),
    ]


# -- a changed package --------------------------------------------------------------------


def _lines(package: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (package / "log.jsonl").read_text().splitlines()]


def _write_lines(package: Path, lines: list[dict[str, Any]]) -> None:
    (package / "log.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))


def _reencoded(raw: bytes, **changes: Any) -> bytes:
    entry = LogEntry.parse(raw)
    fields: dict[str, Any] = {
        "vault_id": entry.vault_id,
        "index": entry.index,
        "time": entry.time,
        "kind": entry.kind,
        "result": entry.result,
        "link_id": entry.link_id,
        "disclose_after": entry.disclose_after,
        "sealed": entry.sealed,
    }
    fields.update(changes)
    return accesslog.encode_entry(**fields)


@pytest.mark.parametrize(
    "change",
    ["earlier time", "refused turned released", "released turned refused", "sealed byte"],
)
def test_a_forged_entry_in_the_package_is_flagged(world: World, change: str) -> None:
    world.read(world.token)
    with pytest.raises(errors.NotPermitted):
        world.read(world.token, purpose="marketing")
    package = world.export()
    lines = _lines(package)
    index = {"refused turned released": 2, "sealed byte": 0}.get(change, 1)
    raw = base64.b64decode(lines[index]["entry"])
    if change == "earlier time":
        forged = _reencoded(raw, time=LogEntry.parse(raw).time - DAY_MS)
    elif change == "refused turned released":
        forged = _reencoded(raw, result="released")
    elif change == "released turned refused":
        forged = _reencoded(raw, result="refused")
    else:
        sealed = LogEntry.parse(raw).sealed
        at = raw.find(sealed) + len(sealed) // 2
        forged = raw[:at] + bytes([raw[at] ^ 1]) + raw[at + 1 :]
    assert forged != raw
    lines[index]["entry"] = base64.b64encode(forged).decode()
    _write_lines(package, lines)
    report = audit.verify_audit(package)
    assert (None, "checkpoint") in rules(report)
    assert not report.clean


def test_a_dropped_last_entry_is_flagged(world: World) -> None:
    world.read(world.token)
    package = world.export()
    _write_lines(package, _lines(package)[:-1])
    assert rules(audit.verify_audit(package)) == [(None, "checkpoint")]


def test_a_swapped_disclosure_key_is_flagged(world: World) -> None:
    world.read(world.token)
    world.read(world.token)
    package = world.export()
    lines = _lines(package)
    lines[3]["key"], lines[4]["key"] = lines[4]["key"], lines[3]["key"]
    _write_lines(package, lines)
    assert rules(audit.verify_audit(package)) == [(3, "undecryptable"), (4, "undecryptable")]


@pytest.mark.parametrize("deferred", [None, "due", "not due"])
def test_a_withheld_disclosure_key_is_counted_and_a_violation_unless_deferred(
    world: World, deferred: str | None
) -> None:
    """A null key on an access clears its verdict (here a wrong purpose): only a deferral
    not yet due at the checkpoint's time may keep a key back; any other is ``withheld``."""
    disclose_after = {None: None, "due": world.clock.ms, "not due": world.clock.ms + DAY_MS}
    index = forge_access(
        world, world.token, purpose="direct marketing", disclose_after=disclose_after[deferred]
    )
    package = world.export()
    lines = _lines(package)
    lines[index]["key"] = None
    _write_lines(package, lines)
    report = audit.verify_audit(package)
    assert rules(report) == ([] if deferred == "not due" else [(index, "withheld")])
    assert (report.undisclosed, report.released) == (1, 1)


# -- trusted heads: rewrites and rollbacks ------------------------------------------------


def _rewrite_from(world: World, keep: int) -> None:
    """A dishonest host's rewrite: drop history from ``keep`` on, then append a new one.

    It deletes the signed heads beyond ``keep`` too: the owner's key refuses to sign over a
    log that does not extend the latest stored head, so only a host that hides the heads
    gets a package signed, and only a head pinned outside the store catches it. The
    revocations made in the dropped history go too: the heads record them, and a package is
    refused over stored revocations that differ from its latest head's."""
    revoked_at = world.vault.access_log()[keep].time
    assert revoked_at is not None
    conn = sqlite3.connect(world.path)
    with conn:
        conn.execute(
            "DELETE FROM revocations WHERE vault_id = ? AND revoked_at >= ?",
            (world.vault_id, int(revoked_at.timestamp() * 1000)),
        )
        conn.execute(
            "DELETE FROM log_checkpoints WHERE vault_id = ? AND size > ?", (world.vault_id, keep)
        )
        conn.execute(
            "DELETE FROM log_entries WHERE vault_id = ? AND idx >= ?", (world.vault_id, keep)
        )
        conn.execute(
            "DELETE FROM log_nodes WHERE vault_id = ? AND ((idx + 1) << level) > ?",
            (world.vault_id, keep),
        )
    conn.close()


def test_an_earlier_trusted_head_passes(world: World) -> None:
    world.read(world.token)
    trusted = world.vault.checkpoint().to_text()
    world.read(world.token)
    report = audit.verify_audit(world.export(), trusted_head=trusted)
    assert report.clean, report.violations
    # The package's own head is a trusted head too.
    package = world.tmp / "audit"
    assert audit.verify_audit(package, trusted_head=(package / "checkpoint.txt").read_text()).clean


def test_a_trusted_head_from_before_a_rewrite_is_flagged(world: World) -> None:
    honest_activity(world)
    trusted = world.vault.checkpoint()
    assert trusted.size == 9
    _rewrite_from(world, 5)
    # Another owner process (the one that signed the trusted head would refuse the older
    # heads the rewrite left) keeps using the vault.
    world.vault = world.store.open_vault(world.vault_id)
    world.vault.unlock(key_file=world.key_file)
    for _ in range(6):
        world.clock.tick()
        world.vault.get(world.tax)
    package = world.export()
    assert audit.verify_audit(package).clean  # alone, the rewritten log looks fine
    report = audit.verify_audit(package, trusted_head=trusted.to_text())
    assert rules(report) == [(None, "consistency")]


def test_a_package_older_than_the_trusted_head_is_flagged(world: World) -> None:
    world.read(world.token)
    package = world.export()
    world.read(world.token)
    newer = world.vault.checkpoint().to_text()
    assert rules(audit.verify_audit(package, trusted_head=newer)) == [(None, "consistency")]


@pytest.mark.parametrize("case", ["another key", "another vault", "changed"])
def test_a_trusted_head_that_does_not_verify_is_refused(world: World, case: str) -> None:
    world.read(world.token)
    head = world.vault.checkpoint()
    package = world.export()
    if case == "another key":
        text = Checkpoint.sign(
            _crypto.SigningKey.generate(_crypto.system_rng),
            world.vault_id,
            head.size,
            head.root,
            head.time,
            records=head.records,
        ).to_text()
    elif case == "another vault":
        other = world.store.open_vault(world.store.create_vault(key_file=world.key_file))
        other.unlock(key_file=world.key_file)
        text = other.checkpoint().to_text()
    else:
        text = head.to_text().replace(f"\n{head.size}\n", f"\n{head.size - 1}\n", 1)
    with pytest.raises(errors.InvalidProof):
        audit.verify_audit(package, trusted_head=text)


# -- the package's checkpoint must be the vault's ------------------------------------------


@pytest.mark.parametrize("case", ["signed by another key", "key id forged", "changed body"])
def test_a_checkpoint_not_signed_by_the_vault_is_refused(world: World, case: str) -> None:
    world.read(world.token)
    package = world.export()
    head = Checkpoint.parse((package / "checkpoint.txt").read_text())
    impostor = _crypto.SigningKey.generate(_crypto.system_rng)
    if case == "signed by another key":
        text = Checkpoint.sign(
            impostor, world.vault_id, head.size, head.root, head.time, records=head.records
        ).to_text()
    elif case == "key id forged":
        signed = Checkpoint.sign(
            impostor, world.vault_id, head.size, head.root, head.time, records=head.records
        )
        text = Checkpoint(
            head.origin,
            head.size,
            head.root,
            head.time,
            signed.signature,
            head.key_id,
            head.revoked,
            head.rotated,
        ).to_text()
    else:
        text = head.to_text().replace(f"time {head.time}", f"time {head.time + 1}", 1)
    (package / "checkpoint.txt").write_text(text)
    with pytest.raises(errors.InvalidProof):
        audit.verify_audit(package)


def test_a_package_of_another_vault_is_refused(world: World) -> None:
    world.read(world.token)
    package = world.export()
    other = world.store.open_vault(world.store.create_vault(key_file=world.key_file))
    other.unlock(key_file=world.key_file)
    other_package = audit.export_audit(other, world.tmp / "other")
    shutil.copy2(other_package / "checkpoint.txt", package / "checkpoint.txt")
    with pytest.raises(errors.InvalidProof):
        audit.verify_audit(package)
    shutil.copy2(other_package / "revocations.bin", package / "revocations.bin")
    meta = json.loads((package / "vault.json").read_text())
    other_meta = json.loads((other_package / "vault.json").read_text())
    meta["identity"] = other_meta["identity"]
    (package / "vault.json").write_text(json.dumps(meta))
    with pytest.raises(errors.InvalidProof):
        audit.verify_audit(package)


def test_the_expected_vault_key_pins_the_package(world: World) -> None:
    world.read(world.token)
    package = world.export()
    assert audit.verify_audit(package, vault_did=world.vault.did).clean
    other = world.store.open_vault(world.store.create_vault(key_file=world.key_file))
    other.unlock(key_file=world.key_file)
    with pytest.raises(errors.InvalidProof):
        audit.verify_audit(package, vault_did=other.did)
    # A package wholly made by another vault (self-consistent) is refused too.
    impostor = audit.export_audit(other, world.tmp / "impostor")
    assert audit.verify_audit(impostor).clean
    with pytest.raises(errors.InvalidProof):
        audit.verify_audit(impostor, vault_did=world.vault.did)


def test_a_revocation_list_signed_by_another_key_is_refused(world: World) -> None:
    world.vault.revoke(world.token)
    package = world.export()
    other = world.store.open_vault(world.store.create_vault(key_file=world.key_file))
    other.unlock(key_file=world.key_file)
    (package / "revocations.bin").write_bytes(other.revocation_list())
    with pytest.raises(errors.IntegrityError):
        audit.verify_audit(package)


# -- a malformed package is a FormatError -------------------------------------------------


@pytest.fixture
def package(world: World) -> Path:
    world.read(world.token)
    world.vault.revoke(world.token)
    return world.export()


@pytest.mark.parametrize("missing", audit.FILES)
def test_a_missing_file_is_a_format_error(package: Path, missing: str) -> None:
    (package / missing).unlink()
    with pytest.raises(errors.FormatError):
        audit.verify_audit(package)


def test_a_missing_directory_is_a_format_error(tmp_path: Path) -> None:
    with pytest.raises(errors.FormatError):
        audit.verify_audit(tmp_path / "nowhere")


def _repeated_name_in_vault_json(package: Path) -> bytes:
    text = (package / "vault.json").read_text()
    meta = json.loads(text)
    # The same value twice: only the repetition is wrong.
    return text.replace('"vault": ', f'"vault": "{meta["vault"]}", "vault": ', 1).encode()


def _repeated_key_in_a_line(package: Path) -> bytes:
    lines = (package / "log.jsonl").read_text().splitlines()
    lines[3] = lines[3][:-1] + ', "key": null}'
    return ("\n".join(lines) + "\n").encode()


def _repeated_token_in_tokens_json(package: Path) -> bytes:
    item = json.loads((package / "tokens.json").read_text())[0]
    token = json.dumps(item["token"])
    return f'[{{"token": {token}, "token": {token}}}]'.encode()


def _with_list_sig(package: Path, *, sig: Any) -> bytes:
    outer = msgpack.unpackb((package / "revocations.bin").read_bytes())
    return bytes(msgpack.packb({"body": outer["body"], "sig": sig}))


MALFORMED: list[Any] = [
    pytest.param("vault.json", b"{not json", id="vault.json garbage"),
    pytest.param("vault.json", b"[]", id="vault.json a list"),
    pytest.param("vault.json", b'{"format": "pds-audit/v2"}', id="vault.json unknown format"),
    pytest.param("vault.json", b"\xff\xfe", id="vault.json not utf-8"),
    pytest.param("tokens.json", b"{not json", id="tokens.json garbage"),
    pytest.param("tokens.json", b"{}", id="tokens.json not a list"),
    pytest.param("tokens.json", b"[1]", id="tokens.json item not a map"),
    pytest.param("tokens.json", b'[{"token": "pdst1_AAAA"}]', id="tokens.json bad token"),
    pytest.param("tokens.json", b"[{}]", id="tokens.json item without token"),
    pytest.param("tokens.json", b'[{"token": 5}]', id="tokens.json token not text"),
    pytest.param("log.jsonl", b"{not json\n", id="log.jsonl garbage"),
    pytest.param("log.jsonl", b'{"entry": "!!"}\n', id="log.jsonl entry not base64"),
    pytest.param("log.jsonl", b"[]\n", id="log.jsonl line not a map"),
    pytest.param("log.jsonl", b"5\n", id="log.jsonl line a number"),
    pytest.param(
        "log.jsonl",
        b"\xff\xfe\n",
        id="log.jsonl not utf-8",
    ),
    pytest.param("checkpoint.txt", b"garbage", id="checkpoint.txt garbage"),
    pytest.param(
        "checkpoint.txt",
        b"\xff\xfe",
        id="checkpoint.txt not utf-8",
    ),
    pytest.param("revocations.bin", b"\xff\x00garbage", id="revocations.bin garbage"),
    pytest.param("revocations.bin", b"", id="revocations.bin empty"),
    pytest.param(
        "revocations.bin",
        msgpack.packb({"body": 1, "sig": 2}),
        id="revocations.bin wrong field types",
    ),
    # The real signed body under a `sig` that is not 64 bytes of binary: the shape check
    # refuses it (token.md, revocation list step 1), it never reaches the signature check.
    *(
        pytest.param(
            "revocations.bin",
            functools.partial(_with_list_sig, sig=sig),
            id=f"revocations.bin sig {label}",
        )
        for label, sig in [
            ("an integer", 0),
            ("nil", None),
            ("text", "x" * 64),
            ("63 bytes", b"\x00" * 63),
            ("65 bytes", b"\x00" * 65),
        ]
    ),
    # json.loads raises RecursionError for deep nesting and ValueError (not a
    # JSONDecodeError) for an integer longer than Python's digit limit.
    pytest.param("vault.json", b"[" * 100_000 + b"]" * 100_000, id="vault.json deep"),
    pytest.param("tokens.json", b"[" * 100_000 + b"]" * 100_000, id="tokens.json deep"),
    pytest.param("log.jsonl", b"[" * 100_000 + b"]" * 100_000 + b"\n", id="log.jsonl deep"),
    pytest.param("tokens.json", b"1" * 5000, id="tokens.json huge integer"),
    # A repeated name: readers differ on which value counts (Python's json keeps the last).
    pytest.param("vault.json", _repeated_name_in_vault_json, id="vault.json repeated name"),
    pytest.param("log.jsonl", _repeated_key_in_a_line, id="log.jsonl repeated name"),
    pytest.param("tokens.json", _repeated_token_in_tokens_json, id="tokens.json repeated name"),
    pytest.param("log.jsonl", b"1" * 5000 + b"\n", id="log.jsonl huge integer"),
]


@pytest.mark.parametrize(("name", "content"), MALFORMED)
def test_a_malformed_file_is_a_format_error(package: Path, name: str, content: Any) -> None:
    data = content(package) if callable(content) else content
    (package / name).write_bytes(data)
    with pytest.raises(errors.FormatError):
        audit.verify_audit(package)


@pytest.mark.parametrize("name", audit.FILES)
def test_a_directory_in_place_of_a_file_is_a_format_error(package: Path, name: str) -> None:
    (package / name).unlink()
    (package / name).mkdir()
    with pytest.raises(errors.FormatError):
        audit.verify_audit(package)


# -- package files are read as bounded regular files --------------------------------------


@pytest.mark.parametrize("name", audit.FILES)
def test_a_fifo_in_place_of_a_file_is_refused_without_waiting(package: Path, name: str) -> None:
    (package / name).unlink()
    os.mkfifo(package / name)
    outcome: list[BaseException | None] = []

    def verify() -> None:
        try:
            audit.verify_audit(package)
            outcome.append(None)
        except BaseException as exc:
            outcome.append(exc)

    thread = threading.Thread(target=verify, daemon=True)
    thread.start()
    thread.join(10)
    if thread.is_alive():  # a writer that opens and closes ends the blocked read (EOF)
        os.close(os.open(package / name, os.O_WRONLY | os.O_NONBLOCK))
        thread.join(10)
        pytest.fail(f"verify_audit waited on a FIFO {name}")
    assert len(outcome) == 1 and isinstance(outcome[0], errors.FormatError), outcome


@pytest.mark.parametrize("name", audit.FILES)
@pytest.mark.parametrize("target", ["the same file", "/dev/null", "nowhere"])
def test_a_symbolic_link_in_place_of_a_file_is_refused(
    package: Path, name: str, target: str
) -> None:
    """Even to the very file: a package is files, and a link may lead anywhere (a device
    that never ends, such as /dev/zero, which a test must not read to show it)."""
    if target == "the same file":
        moved = package.parent / f"moved-{name}"
        (package / name).rename(moved)
        target = str(moved)
    else:
        (package / name).unlink()
    os.symlink(target, package / name)
    with pytest.raises(errors.FormatError):
        audit.verify_audit(package)


LIMITS = {
    "vault.json": "MAX_VAULT_JSON",
    "checkpoint.txt": "MAX_CHECKPOINT",
    "tokens.json": "MAX_TOKENS_JSON",
    "revocations.bin": "MAX_REVOCATIONS",
}


@pytest.mark.parametrize("name", sorted(LIMITS))
def test_a_file_over_its_limit_is_refused(
    package: Path, name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    size = (package / name).stat().st_size
    monkeypatch.setattr(audit, LIMITS[name], size)
    audit.verify_audit(package)  # a file of exactly the limit is read
    monkeypatch.setattr(audit, LIMITS[name], size - 1)
    with pytest.raises(errors.FormatError) as refused:
        audit.verify_audit(package)
    assert "larger than" in str(refused.value)


def test_the_documented_limits() -> None:
    assert audit.MAX_VAULT_JSON == 64 * 1024
    assert audit.MAX_CHECKPOINT == 4 * 4096  # the note limit, in UTF-8 bytes at most
    assert audit.MAX_TOKENS_JSON == 256 * 1024 * 1024
    assert audit.MAX_REVOCATIONS == 64 * 1024 * 1024
    assert audit.MAX_LOG_LINE == 4 * (64 * 1024 * 1024 // 3 + 1) + 1024


def _peak_while_refused(package: Path) -> int:
    """The peak of Python allocations while ``verify_audit`` refuses ``package``."""
    tracemalloc.start()
    try:
        with pytest.raises(errors.FormatError):
            audit.verify_audit(package)
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_a_huge_file_is_read_only_to_its_limit(package: Path) -> None:
    # A sparse file far past the limit (32 MiB; a link to /dev/zero never ends): read to
    # the limit and refused, not loaded whole.
    with (package / "vault.json").open("r+b") as out:
        out.truncate(32 * 1024**2)
    peak = _peak_while_refused(package)
    assert peak < 4 * audit.MAX_VAULT_JSON


def test_log_lines_are_read_one_at_a_time_within_the_limit(
    package: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    longest = max(len(line) for line in (package / "log.jsonl").read_bytes().split(b"\n"))
    monkeypatch.setattr(audit, "MAX_LOG_LINE", longest)
    assert audit.verify_audit(package).entries == 6
    monkeypatch.setattr(audit, "MAX_LOG_LINE", longest - 1)
    with pytest.raises(errors.FormatError) as refused:
        audit.verify_audit(package)
    assert "longer than" in str(refused.value)
    # One endless line (no line feed) is refused at the limit, not read whole.
    monkeypatch.setattr(audit, "MAX_LOG_LINE", 4096)
    with (package / "log.jsonl").open("r+b") as out:
        out.truncate(32 * 1024**2)
    peak = _peak_while_refused(package)
    assert peak < 1024 * 1024
