"""A stateful test of grant, delegate, revoke, rotate, read and reopen against a plain model.

The model is written from the rules (issue 3, design.md promises 4-6), not from the code:
for every read it predicts whether the host serves or refuses it, the ``AccessDenied``
subclass and reason of a refusal (checks in the documented order: validity time, holder,
scope, revocation, budget), and exactly which records (and which fields of each) a served
read returns. Every read's outcome must also be the newest entry of the vault's access log,
and ``grants()`` must report each known link's status as the model does.

Time is a manual clock the machine advances; the store is a real SQLite file.

Key epochs that reach a delegation late are kept out of this model on purpose (test_serve.py
covers them: such records come back as ``pending`` until ``Vault.share_keys``):

* a delegation made after a new key epoch lacks it unless its maker read that epoch first:
  the ``delegate`` rule is only enabled while no epoch was created since the chain's root
  was granted;
* a delegation the host has not seen when an epoch is created gets it only from
  ``share_keys``: each delegation is presented once right after it is made (a
  model-checked read), and every collection exists from the start, so only rotations
  create epochs.
"""

from __future__ import annotations

import datetime as dt
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hypothesis import HealthCheck, event, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

import pds
from pds import _crypto
from pds.capability import CLOCK_SKEW_MS
from pds.errors import AccessDenied

if TYPE_CHECKING:
    from tests.tokens_helpers import HOUR_MS, World, covers, forge_invocation, make_world
else:
    from tokens_helpers import HOUR_MS, World, covers, forge_invocation, make_world

COLLECTIONS = ["a", "b", "c/x", "c/y"]
PATTERNS = ["a", "b", "c/*", "c/x", "*"]
UNIVERSE = [*COLLECTIONS, "zz", "c/zz"]
"""Every collection, plus a name no pattern names exactly under each prefix (and at the
top): pattern containment over this set is containment of the pattern sets."""
PURPOSES = ["p1", "p2"]
FIELDS = ["f1", "f2", "f3"]
PRINCIPALS = 3


def allowed(patterns: tuple[str, ...] | list[str], name: str) -> bool:
    return any(covers(pattern, name) for pattern in patterns)


def names(patterns: tuple[str, ...] | list[str]) -> set[str]:
    return {name for name in UNIVERSE if allowed(patterns, name)}


@dataclass
class Held:
    """A token as the model sees it: who holds it and what its leaf allows."""

    token: pds.Token
    holder: int
    patterns: tuple[str, ...]
    purposes: frozenset[str]
    fields: frozenset[str] | None
    abilities: frozenset[str]
    depth: int
    expires: int
    uses: int | None
    chain: tuple[bytes, ...]
    root_epochs: int
    """How many key epochs existed when the chain's root was granted."""


@dataclass
class LinkModel:
    audience: int
    expires: int
    uses: int | None
    chain: tuple[bytes, ...]
    """This link's id and its ancestors', leaf first."""


def subset(draw: Any, items: list[str]) -> list[str]:
    chosen: list[str] = draw(st.lists(st.sampled_from(items), min_size=1, unique=True))
    return sorted(chosen)


class TokenMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.directory = Path(tempfile.mkdtemp(prefix="pds-stateful-"))
        self.world: World = make_world(self.directory, synchronous="normal")
        self.keys = [
            pds.PrincipalKey(_crypto.SigningKey.from_seed(bytes([40 + i]) * 32))
            for i in range(PRINCIPALS)
        ]
        self.records: dict[str, tuple[str, dict[str, Any]]] = {}
        self.held: list[Held] = []
        self.links: dict[bytes, LinkModel] = {}
        self.known: set[bytes] = set()
        """Links the host knows: grants, and delegations it has served."""
        self.revoked: set[bytes] = set()
        self.spent: dict[bytes, int] = {}
        self.epochs = 0

    def teardown(self) -> None:
        self.world.close()
        shutil.rmtree(self.directory, ignore_errors=True)

    @property
    def now(self) -> int:
        return self.world.clock.ms

    # -- writing --------------------------------------------------------------------

    @initialize(values=st.lists(st.integers(0, 99), min_size=4, max_size=4))
    def every_collection_exists(self, values: list[int]) -> None:
        for collection, value in zip(COLLECTIONS, values, strict=True):
            # Field-sealed, so grants restricted to fields are possible on every collection.
            self.world.vault.create_collection(collection, seal_fields=True)
            self._put(collection, {"f1": value, "f2": str(value), "f3": [value]})
        self.epochs = len(COLLECTIONS)

    def _put(self, collection: str, data: dict[str, Any], record_id: str | None = None) -> None:
        info = self.world.vault.put(collection, data, record_id=record_id)
        self.records[info.record_id] = (collection, data)

    @precondition(lambda self: len(self.records) < 50)
    @rule(
        kind=st.sampled_from(["new", "new", "update", "delete"]),
        collection=st.sampled_from(COLLECTIONS),
        data=st.dictionaries(st.sampled_from(FIELDS), st.integers(0, 9) | st.none()),
        choice=st.integers(0, 10**6),
    )
    def write(self, kind: str, collection: str, data: dict[str, Any], choice: int) -> None:
        """A new record, a new version of one (same collection), or a deletion."""
        if kind == "new" or not self.records:
            self._put(collection, data)
            return
        record_id = sorted(self.records)[choice % len(self.records)]
        if kind == "update":
            self._put(self.records[record_id][0], data, record_id)
        else:
            self.world.vault.delete(record_id)
            del self.records[record_id]

    # -- grants and delegations ------------------------------------------------------

    @rule(data=st.data())
    def grant(self, data: st.DataObject) -> None:
        holder = data.draw(st.integers(0, PRINCIPALS - 1), label="holder")
        patterns = subset(data.draw, PATTERNS)
        purposes = subset(data.draw, PURPOSES)
        fields = data.draw(
            st.none() | st.builds(sorted, st.sets(st.sampled_from(FIELDS), min_size=1)),
            label="fields",
        )
        abilities = subset(data.draw, ["read", "list"])
        delegable = data.draw(st.integers(0, 2), label="delegable")
        uses = data.draw(st.none() | st.integers(1, 4), label="uses")
        hours = data.draw(st.integers(1, 72), label="hours")
        token = self.world.vault.grant(
            self.keys[holder].did,
            collections=patterns,
            purpose=purposes,
            fields=fields,
            abilities=abilities,
            expires=dt.timedelta(hours=hours),
            uses=uses,
            delegable=delegable,
        )
        expires = self.now + hours * HOUR_MS
        self._remember(
            token,
            holder,
            tuple(patterns),
            frozenset(purposes),
            None if fields is None else frozenset(fields),
            frozenset(abilities) | ({"delegate"} if delegable else set()),
            delegable,
            expires,
            uses,
            self.epochs,
        )
        self.known.add(token.link_id)

    def _remember(
        self,
        token: pds.Token,
        holder: int,
        patterns: tuple[str, ...],
        purposes: frozenset[str],
        fields: frozenset[str] | None,
        abilities: frozenset[str],
        depth: int,
        expires: int,
        uses: int | None,
        root_epochs: int,
    ) -> Held:
        chain = tuple(reversed(token.link_ids))
        held = Held(
            token,
            holder,
            patterns,
            purposes,
            fields,
            abilities,
            depth,
            expires,
            uses,
            chain,
            root_epochs,
        )
        self.held.append(held)
        self.links[token.link_id] = LinkModel(holder, expires, uses, chain)
        # What the token says is what was asked for.
        leaf = token.leaf.caveats
        assert token.leaf.audience == self.keys[holder].public_key
        assert names(leaf.collections) == names(patterns)
        assert (leaf.purposes, leaf.fields, leaf.abilities) == (purposes, fields, abilities)
        assert (leaf.depth, leaf.expires, leaf.uses) == (depth, expires, uses)
        return held

    def _delegable(self) -> list[Held]:
        return [
            h
            for h in self.held
            if h.depth >= 1 and "delegate" in h.abilities and h.root_epochs == self.epochs
        ]

    @precondition(lambda self: bool(self._delegable()))
    @rule(data=st.data())
    def delegate(self, data: st.DataObject) -> None:
        parent = data.draw(st.sampled_from(self._delegable()), label="parent")
        audience = data.draw(st.integers(0, PRINCIPALS - 1), label="audience")
        inside = [p for p in PATTERNS if names([p]) <= names(parent.patterns)]
        patterns = subset(data.draw, inside)
        purposes = subset(data.draw, sorted(parent.purposes))
        narrow_fields = data.draw(st.booleans(), label="narrow fields")
        fields = parent.fields
        if narrow_fields:
            fields = frozenset(
                data.draw(st.sets(st.sampled_from(sorted(parent.fields or FIELDS)), min_size=1))
            )
        depth = data.draw(st.integers(0, parent.depth - 1), label="depth")
        abilities = set(subset(data.draw, sorted(parent.abilities - {"delegate"})))
        if depth:
            abilities.add("delegate")
        uses = data.draw(
            st.none() | st.integers(1, parent.uses if parent.uses is not None else 4),
            label="uses",
        )
        hours = data.draw(st.none() | st.integers(1, 48), label="hours")
        expires = parent.expires
        if hours is not None and self.now + hours * HOUR_MS < parent.expires:
            expires = self.now + hours * HOUR_MS
        token = self.world.grantee(self.keys[parent.holder]).delegate(
            parent.token,
            to=self.keys[audience].did,
            collections=patterns,
            purposes=purposes,
            fields=None if fields is None else sorted(fields),
            abilities=sorted(abilities),
            depth=depth,
            uses=uses,
            expires=dt.datetime.fromtimestamp(expires / 1000, tz=dt.UTC),
        )
        held = self._remember(
            token,
            audience,
            tuple(patterns),
            frozenset(purposes),
            fields,
            frozenset(abilities),
            depth,
            expires,
            parent.uses if uses is None else uses,
            parent.root_epochs,
        )
        # Present the delegation once, so the host knows it before any later epoch.
        action = "read" if "read" in held.abilities else "list"
        self._read(held, audience, action, min(purposes), None)

    # -- revocation, rotation, time, reopening ---------------------------------------

    @precondition(lambda self: bool(self.held))
    @rule(choice=st.integers(0, 10**6), depth=st.integers(0, 3), by_audience=st.booleans())
    def revoke(self, choice: int, depth: int, by_audience: bool) -> None:
        held = self.held[choice % len(self.held)]
        if by_audience:
            self.revoke_all(held.holder)
            return
        link_id = held.chain[min(depth, len(held.chain) - 1)]
        assert self.world.vault.revoke(link_id, reason="stateful") == link_id
        self.revoked.add(link_id)

    def revoke_all(self, audience: int) -> None:
        revoked = self.world.vault.revoke_all(audience=self.keys[audience].did)
        expected = {i for i in self.known if self.links[i].audience == audience}
        assert set(revoked) == expected
        self.revoked |= expected

    @rule(
        kind=st.sampled_from(["advance", "advance", "reopen", "rotate"]),
        hours=st.integers(0, 8),
        collection=st.sampled_from(COLLECTIONS),
    )
    def time_passes(self, kind: str, hours: int, collection: str) -> None:
        """The clock moves on, the host restarts (every cache gone), or the owner rotates
        every collection's key epoch and writes a record under the new one."""
        if kind == "advance":
            self.world.clock.advance(hours * HOUR_MS)
        elif kind == "reopen":
            self.world.reopen()
        else:
            rotated = self.world.vault.rotate()
            assert set(rotated) == set(COLLECTIONS)
            self.epochs += len(rotated)
            self._put(collection, {"f1": self.epochs, "f2": "after rotation"})

    # -- reading ---------------------------------------------------------------------

    @precondition(lambda self: bool(self.held))
    @rule(
        choice=st.integers(0, 10**6),
        reader=st.integers(0, PRINCIPALS - 1),
        action=st.sampled_from(["read", "list"]),
        purpose=st.sampled_from([*PURPOSES, "p3"]),
        collection=st.none() | st.sampled_from(COLLECTIONS),
    )
    def read(
        self, choice: int, reader: int, action: str, purpose: str, collection: str | None
    ) -> None:
        self._read(self.held[choice % len(self.held)], reader, action, purpose, collection)

    @precondition(lambda self: bool(self.held))
    @rule(
        choice=st.integers(0, 10**6),
        pick=st.integers(0, 10**6),
        collection=st.none() | st.sampled_from(COLLECTIONS),
    )
    def read_as_holder(self, choice: int, pick: int, collection: str | None) -> None:
        """The usual request: by the holder, for a purpose and an action it was granted."""
        held = self.held[choice % len(self.held)]
        purposes = sorted(held.purposes)
        actions = sorted(held.abilities - {"delegate"})
        self._read(
            held,
            held.holder,
            actions[pick % len(actions)],
            purposes[pick % len(purposes)],
            collection,
        )

    def _expect(
        self, held: Held, reader: int, action: str, purpose: str, collection: str | None
    ) -> tuple[str, str | None]:
        """(error class or "served", reason) as the rules say."""
        if any(self.now - CLOCK_SKEW_MS >= self.links[i].expires for i in held.chain):
            return "Expired", "expired"
        if reader != held.holder:
            return "WrongHolder", "holder"
        if action not in held.abilities:
            return "NotPermitted", "scope:ability"
        if purpose not in held.purposes:
            return "NotPermitted", "scope:purpose"
        if collection is not None and not allowed(held.patterns, collection):
            return "NotPermitted", "scope:collection"
        if any(i in self.revoked for i in held.chain):
            return "Revoked", "revoked"
        for i in held.chain:
            budget = self.links[i].uses
            if budget is not None and self.spent.get(i, 0) >= budget:
                return "BudgetExhausted", "budget"
        return "served", None

    def _read(
        self, held: Held, reader: int, action: str, purpose: str, collection: str | None
    ) -> None:
        expected, reason = self._expect(held, reader, action, purpose, collection)
        event(f"read: {expected}")
        key = self.keys[reader]
        try:
            if reader == held.holder:
                read = self.world.grantee(key).read(
                    self.world.store,
                    held.token,
                    action=action,
                    purpose=purpose,
                    collection=collection,
                )
                got = {r.record_id: r.data for r in read.records}
            else:
                invocation = forge_invocation(
                    held.token,
                    key,
                    action=action,
                    purpose=purpose,
                    collection=collection,
                    time_ms=self.now,
                )
                response = self.world.store.serve(invocation)
                got = {item["record"]: None for item in response.records}
            outcome, outcome_reason = "served", None
        except AccessDenied as refused:
            outcome, outcome_reason = type(refused).__name__, refused.reason
        assert (outcome, outcome_reason) == (expected, reason)
        newest = self.world.vault.log(limit=1).entries[0]
        assert (newest.result, newest.reason) == (
            ("released", None) if outcome == "served" else ("refused", reason)
        )
        if outcome != "served":
            return
        for link_id in held.chain:
            if self.links[link_id].uses is not None:
                self.spent[link_id] = self.spent.get(link_id, 0) + 1
            self.known.add(link_id)
        visible = {
            record_id: data
            for record_id, (record_collection, data) in self.records.items()
            if allowed(held.patterns, record_collection)
            and (collection is None or record_collection == collection)
        }
        if action == "list":
            assert got == dict.fromkeys(visible)
        elif held.fields is None:
            assert got == visible
        else:
            fields = held.fields
            assert got == {
                record_id: {k: v for k, v in data.items() if k in fields}
                for record_id, data in visible.items()
            }

    # -- the owner's view ------------------------------------------------------------

    @invariant()
    def grants_report_the_modelled_status(self) -> None:
        infos = {info.link_id: info for info in self.world.vault.grants()}
        assert set(infos) == {i.hex() for i in self.known}
        for link_id in self.known:
            link = self.links[link_id]
            if any(i in self.revoked for i in link.chain):
                status = "revoked"
            elif self.now >= link.expires:
                status = "expired"
            elif any(
                self.links[i].uses is not None and self.spent.get(i, 0) >= (self.links[i].uses or 0)
                for i in link.chain
            ):
                status = "exhausted"  # its own budget or an ancestor's is spent
            else:
                status = "active"
            info = infos[link_id.hex()]
            used = None if link.uses is None else self.spent.get(link_id, 0)
            assert (info.status, info.used) == (status, used)


TestTokenStateMachine = TokenMachine.TestCase
TestTokenStateMachine.settings = settings(
    max_examples=60,
    stateful_step_count=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
