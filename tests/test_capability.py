"""Tokens offline: narrowing (promise 4), chain integrity, strict parsing (promise 11).

Chains here are built link by link with ``make_link`` and fixed Ed25519 keys, or by hand
(a payload map, re-signed) where a test needs a link ``make_link`` refuses to create, and
checked with ``verify_chain`` against a vault id and identity key of the test's choosing.
A few tests go through a real store to show the host and ``Vault.grant`` agree.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import base58
import msgpack
import nacl.bindings as sodium
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

import pds
from pds import _codec, _crypto, capability
from pds.capability import Caveats, SealedKey, Token, make_link, verify_chain
from pds.errors import (
    BrokenChain,
    CaveatWidened,
    Expired,
    FormatError,
    InvalidSignature,
    LifetimeExceeded,
    MalformedToken,
    NotPermitted,
    NotYetValid,
    UntrustedIssuer,
    WrongVault,
)

if TYPE_CHECKING:
    from tests.tokens_helpers import (
        DAY_MS,
        T0_MS,
        World,
        covers,
        link_document,
        make_world,
        refusals,
        sign_payload,
        token_bytes,
        token_pairs,
    )
else:
    from tokens_helpers import (
        DAY_MS,
        T0_MS,
        World,
        covers,
        link_document,
        make_world,
        refusals,
        sign_payload,
        token_bytes,
        token_pairs,
    )

VAULT = "vault-under-test"
IDENTITY = _crypto.SigningKey.from_seed(bytes([1]) * 32)
HOLDERS = [_crypto.SigningKey.from_seed(bytes([10 + i]) * 32) for i in range(20)]
"""``HOLDERS[i]`` is the audience of link ``i``; link ``i > 0`` is signed by ``HOLDERS[i-1]``."""
STRANGER = _crypto.SigningKey.from_seed(bytes([99]) * 32)
EXPIRES = T0_MS + 10 * DAY_MS

LOW_ORDER_AND_INVALID = {
    "identity": "01" + "00" * 31,
    "order-2": "ec" + "ff" * 30 + "7f",
    "order-4": "00" * 32,
    "order-4-signed": "00" * 31 + "80",
    "order-8-a": "c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac037a",
    "order-8-a-signed": "c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac03fa",
    "order-8-b": "26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc05",
    "order-8-b-signed": "26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc85",
    "non-canonical-y=p": "ed" + "ff" * 30 + "7f",
    "non-canonical-y=p+1": "ee" + "ff" * 30 + "7f",
}


def bad_points() -> dict[str, bytes]:
    points = {name: bytes.fromhex(value) for name, value in LOW_ORDER_AND_INVALID.items()}
    # A valid key plus a point of order 8: on the curve, but not in the prime-order subgroup.
    points["mixed-order"] = sodium.crypto_core_ed25519_add(HOLDERS[0].public, points["order-8-a"])
    return points


def base_caveats(depth: int) -> Caveats:
    """Every caveat set to a middle value, so each can be widened."""
    return Caveats(
        abilities=frozenset({"read", "delegate"}),
        collections=("a/b/*", "c"),
        fields=frozenset({"f1", "f2"}),
        window=(1000, 10**12),
        purposes=frozenset({"p1"}),
        basis="law-1",
        not_before=T0_MS,
        expires=EXPIRES,
        uses=10,
        depth=depth,
        defer=60_000,
    )


def build(
    caveats: Sequence[Caveats],
    *,
    keys: Sequence[Sequence[SealedKey]] | None = None,
    vault_id: str = VAULT,
    identity: _crypto.SigningKey = IDENTITY,
    salt: bytes = b"\x00" * 16,
) -> Token:
    links: list[capability.Link] = []
    for index, link_caveats in enumerate(caveats):
        links.append(
            make_link(
                signer=identity if index == 0 else HOLDERS[index - 1],
                vault_id=vault_id,
                audience=HOLDERS[index].public,
                parent=links[-1] if links else None,
                caveats=link_caveats,
                keys=keys[index] if keys is not None else (),
                salt=salt,
            )
        )
    return Token(tuple(links))


def straight_chain(length: int) -> list[Caveats]:
    """``length`` links, each equal to its parent except one less depth."""
    return [dataclasses.replace(base_caveats(length), depth=length - i) for i in range(length)]


def verify(token: Token, **kwargs: Any) -> Caveats:
    return verify_chain(token, vault_id=VAULT, identity=IDENTITY.public, **kwargs)


def reparse(data: bytes) -> Token:
    return Token.from_bytes(data)


# -- narrowing: every caveat widened at every position --------------------------------

Widen = Callable[[Caveats], Caveats]

WIDENINGS: list[tuple[str, str, Widen]] = [
    ("ability+list", "ability", lambda c: dataclasses.replace(c, abilities=c.abilities | {"list"})),
    ("collections:a/*", "collections", lambda c: dataclasses.replace(c, collections=("a/*", "c"))),
    ("collections:*", "collections", lambda c: dataclasses.replace(c, collections=("*",))),
    (
        "collections:exact-new",
        "collections",
        lambda c: dataclasses.replace(c, collections=("a/b/*", "c", "d")),
    ),
    (
        "collections:exact-beside-prefix",
        "collections",
        lambda c: dataclasses.replace(c, collections=("a/b/*", "a/x", "c")),
    ),
    (
        "collections:prefix-root-itself",
        "collections",
        lambda c: dataclasses.replace(c, collections=("a/b", "a/b/*", "c")),
    ),
    (
        "collections:sibling-prefix",
        "collections",
        lambda c: dataclasses.replace(c, collections=("a/bb/*", "c")),
    ),
    (
        "collections:exact-to-prefix",
        "collections",
        lambda c: dataclasses.replace(c, collections=("a/b/*", "c/*")),
    ),
    (
        "fields:extra",
        "fields",
        lambda c: dataclasses.replace(c, fields=frozenset({"f1", "f2", "f3"})),
    ),
    ("fields:all", "fields", lambda c: dataclasses.replace(c, fields=None)),
    ("window:start", "window", lambda c: dataclasses.replace(c, window=(999, 10**12))),
    ("window:end", "window", lambda c: dataclasses.replace(c, window=(1000, 10**12 + 1))),
    ("window:no-start", "window", lambda c: dataclasses.replace(c, window=(None, 10**12))),
    ("window:no-end", "window", lambda c: dataclasses.replace(c, window=(1000, None))),
    (
        "purpose:extra",
        "purpose",
        lambda c: dataclasses.replace(c, purposes=frozenset({"p1", "p2"})),
    ),
    ("purpose:other", "purpose", lambda c: dataclasses.replace(c, purposes=frozenset({"p2"}))),
    ("basis:other", "basis", lambda c: dataclasses.replace(c, basis="law-2")),
    ("basis:dropped", "basis", lambda c: dataclasses.replace(c, basis=None)),
    ("nbf:earlier", "nbf", lambda c: dataclasses.replace(c, not_before=c.not_before - 1)),
    ("exp:later", "exp", lambda c: dataclasses.replace(c, expires=c.expires + 1)),
    ("uses:more", "uses", lambda c: dataclasses.replace(c, uses=11)),
    ("uses:unlimited", "uses", lambda c: dataclasses.replace(c, uses=None)),
    ("defer:longer", "defer", lambda c: dataclasses.replace(c, defer=60_001)),
    ("depth:not-decremented", "depth", lambda c: dataclasses.replace(c, depth=c.depth + 1)),
]

POSITIONS = [(length, position) for length in (2, 3, 4) for position in range(1, length)]


@pytest.mark.parametrize(("length", "position"), POSITIONS, ids=str)
@pytest.mark.parametrize(("name", "caveat", "widen"), WIDENINGS, ids=[w[0] for w in WIDENINGS])
def test_every_caveat_widened_at_every_position_is_refused(
    length: int, position: int, name: str, caveat: str, widen: Widen
) -> None:
    chain = straight_chain(length)
    assert verify(build(chain)) == chain[-1]
    chain[position] = widen(chain[position])
    token = build(chain)
    with pytest.raises(CaveatWidened) as refused:
        verify(token)
    assert refused.value.reason == f"widened:{caveat}", name
    # The refusal survives a round trip through the wire form (nothing is re-derived).
    with pytest.raises(CaveatWidened):
        verify(reparse(token.to_bytes()))


@pytest.mark.parametrize("length", [1, 2, 3, 4])
def test_keys_outside_a_links_scope_are_refused_at_every_position(length: int) -> None:
    for position in range(length):
        keys: list[list[SealedKey]] = [[SealedKey("a/b/x", 1, b"sealed")] for _ in range(length)]
        keys[position] = [SealedKey("a/b/x", 1, b"sealed"), SealedKey("d", 1, b"outside")]
        token = build(straight_chain(length), keys=keys)
        with pytest.raises(CaveatWidened) as refused:
            verify(token)
        assert refused.value.reason == "widened:keys"


@pytest.mark.parametrize("length", [2, 3, 4])
def test_a_parent_without_the_delegate_ability_cannot_be_extended(length: int) -> None:
    for position in range(1, length):
        chain = straight_chain(length)
        parent = chain[position - 1]
        chain[position - 1] = dataclasses.replace(parent, abilities=frozenset({"read"}))
        chain[position] = dataclasses.replace(chain[position], abilities=frozenset({"read"}))
        with pytest.raises(CaveatWidened) as refused:
            verify(build(chain))
        assert refused.value.reason == "widened:depth"


def test_a_depth_zero_parent_cannot_be_extended() -> None:
    chain = [base_caveats(0), dataclasses.replace(base_caveats(0), depth=0)]
    with pytest.raises(CaveatWidened) as refused:
        verify(build(chain))
    assert refused.value.reason == "widened:depth"


NARROWINGS: list[tuple[str, dict[str, Any]]] = [
    ("collections:sub-prefix", {"collections": ("a/b/c/*",)}),
    ("collections:exact-below", {"collections": ("a/b/x", "a/b/y/z")}),
    ("collections:subset", {"collections": ("c",)}),
    ("fields", {"fields": frozenset({"f1"})}),
    ("window", {"window": (5000, 10**11)}),
    ("abilities", {"abilities": frozenset({"delegate"})}),
    ("basis-kept", {"basis": "law-1"}),
    ("nbf", {"not_before": T0_MS + 1}),
    ("exp", {"expires": EXPIRES - 1}),
    ("uses", {"uses": 1}),
    ("defer:shorter", {"defer": 1000}),
    ("defer:none", {"defer": None}),
]


@pytest.mark.parametrize(("name", "changes"), NARROWINGS, ids=[n[0] for n in NARROWINGS])
def test_narrowing_any_caveat_is_accepted_and_is_the_effective_scope(
    name: str, changes: dict[str, Any]
) -> None:
    for length in (2, 3, 4):
        for position in range(1, length):
            chain = straight_chain(length)
            for later in range(position, length):
                chain[later] = dataclasses.replace(chain[later], **changes)
            assert verify(build(chain)) == chain[-1], name


@pytest.mark.parametrize(
    ("parent", "child", "allowed"),
    [
        (("*",), ("*",), True),
        (("*",), ("a/*",), True),
        (("a/*",), ("a/b/*",), True),
        (("a/*",), ("a/b",), True),
        (("a/*",), ("a",), False),
        (("a/*",), ("*",), False),
        (("a/b/*",), ("a/*",), False),
        (("a",), ("a/*",), False),
        (("a",), ("a",), True),
        (("a", "b"), ("b",), True),
        (("tax/*",), ("taxes/*",), False),
        (("tax/*",), ("taxes",), False),
        (("tax/2024",), ("tax/2024/q1",), False),
    ],
)
def test_collection_patterns_narrow_by_segments(
    parent: tuple[str, ...], child: tuple[str, ...], allowed: bool
) -> None:
    root = dataclasses.replace(base_caveats(1), collections=parent)
    token = build([root, dataclasses.replace(root, collections=child, depth=0)])
    if allowed:
        assert verify(token).collections == child
    else:
        with pytest.raises(CaveatWidened) as refused:
            verify(token)
        assert refused.value.reason == "widened:collections"


# -- the narrowing property ------------------------------------------------------------

PATTERNS = ["*", "a/*", "a/b/*", "a/b", "a/c", "a", "b", "b/*"]
NAMES = ["a", "a/b", "a/c", "a/b/c", "b", "b/x", "zz-top", "a/zz-fresh", "a/b/zz-fresh", "b/zz"]
"""Every exact name in ``PATTERNS``, plus a name no pattern names exactly under each prefix:
containment over this finite universe is containment of the (infinite) pattern sets."""
ALL_FIELDS = ["f1", "f2", "f3", "other"]
ALL_PURPOSES = ["p1", "p2", "p3"]
TIMES = [0, 50, 100, 150, 200, 999, 1000, 1500, 2000, 2999, 3000, 4000]


def allowed_names(patterns: Sequence[str]) -> set[str]:
    return {name for name in NAMES if any(covers(p, name) for p in patterns)}


def oracle_failures(child: Caveats, parent: Caveats) -> set[str]:
    """Which caveats of ``child`` are wider than ``parent``'s (an independent model)."""
    failures = set()
    if "delegate" not in parent.abilities or parent.depth < 1 or child.depth >= parent.depth:
        failures.add("depth")
    if not child.abilities <= parent.abilities:
        failures.add("ability")
    if not allowed_names(child.collections) <= allowed_names(parent.collections):
        failures.add("collections")
    if parent.fields is not None and (child.fields is None or not child.fields <= parent.fields):
        failures.add("fields")
    (c_start, c_end), (p_start, p_end) = child.window, parent.window
    if (p_start is not None and (c_start is None or c_start < p_start)) or (
        p_end is not None and (c_end is None or c_end > p_end)
    ):
        failures.add("window")
    if not child.purposes <= parent.purposes:
        failures.add("purpose")
    if parent.basis is not None and child.basis != parent.basis:
        failures.add("basis")
    if child.not_before < parent.not_before:
        failures.add("nbf")
    if child.expires > parent.expires:
        failures.add("exp")
    if parent.uses is not None and (child.uses is None or child.uses > parent.uses):
        failures.add("uses")
    if child.defer is not None and (parent.defer is None or child.defer > parent.defer):
        failures.add("defer")
    return failures


def subsets(items: Sequence[str]) -> st.SearchStrategy[frozenset[str]]:
    return st.frozensets(st.sampled_from(items), min_size=1, max_size=len(items))


@st.composite
def random_caveats(draw: st.DrawFn, parent: Caveats | None) -> Caveats:
    """Each caveat either kept from the parent (narrowing) or drawn at random (which may
    narrow or widen). How often a link keeps its parent's values varies per link."""
    keep_weight = draw(st.sampled_from([1, 7, 63]), label="keep weight")

    def pick(name: str, random: st.SearchStrategy[Any], kept: Any) -> Any:
        if parent is not None and draw(st.integers(0, keep_weight), label=f"keep {name}") > 0:
            return kept
        return draw(random, label=name)

    abilities = pick("ability", subsets(["read", "list", "delegate"]), parent and parent.abilities)
    collections = pick(
        "collections",
        st.lists(st.sampled_from(PATTERNS), min_size=1, max_size=3, unique=True).map(
            lambda items: tuple(sorted(items))
        ),
        parent and parent.collections,
    )
    fields = pick(
        "fields", st.none() | subsets(["f1", "f2", "f3"]), parent.fields if parent else None
    )
    window = pick(
        "window",
        st.tuples(st.sampled_from([None, 0, 1000, 1500]), st.sampled_from([None, 2000, 3000])),
        parent.window if parent else None,
    )
    purposes = pick("purpose", subsets(ALL_PURPOSES), parent and parent.purposes)
    basis = pick("basis", st.sampled_from([None, "b1", "b2"]), parent.basis if parent else None)
    not_before = pick("nbf", st.sampled_from([0, 100, 200]), parent and parent.not_before)
    expires = pick("exp", st.sampled_from([1000, 2000, 3000]), parent and parent.expires)
    uses = pick("uses", st.sampled_from([None, 1, 2, 3]), parent.uses if parent else None)
    depth = pick("depth", st.integers(0, 4), parent and max(parent.depth - 1, 0))
    defer = pick("defer", st.sampled_from([None, 1000, 2000]), parent.defer if parent else None)
    return Caveats(
        abilities=abilities,
        collections=collections,
        fields=fields,
        window=window,
        purposes=purposes,
        basis=basis,
        not_before=not_before,
        expires=expires,
        uses=uses,
        depth=depth,
        defer=defer,
    )


@st.composite
def random_chains(draw: st.DrawFn) -> tuple[list[Caveats], list[list[SealedKey]]]:
    length = draw(st.sampled_from([1, 2, 3, 3, 4, 4]), label="length")
    chain: list[Caveats] = []
    keys: list[list[SealedKey]] = []
    for index in range(length):
        caveats = draw(random_caveats(chain[-1] if chain else None))
        if index == 0 and draw(st.integers(0, 3), label="root may delegate") > 0:
            caveats = dataclasses.replace(
                caveats,
                abilities=caveats.abilities | {"delegate"},
                depth=max(caveats.depth, length - 1),
            )
        chain.append(caveats)
        names = draw(st.lists(st.sampled_from(NAMES), max_size=2, unique=True), label="keys")
        if draw(st.integers(0, 7), label="keys in scope") > 0:
            names = [n for n in names if n in allowed_names(caveats.collections)]
        keys.append([SealedKey(name, 1, b"sealed") for name in sorted(names)])
    return chain, keys


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(random_chains())
def test_verify_accepts_exactly_the_narrowing_chains(
    drawn: tuple[list[Caveats], list[list[SealedKey]]],
) -> None:
    chain, keys = drawn
    token = build(chain, keys=keys)
    expected: set[str] = set()
    for index, caveats in enumerate(chain):
        failures = oracle_failures(caveats, chain[index - 1]) if index else set()
        if not failures and not {k.collection for k in keys[index]} <= allowed_names(
            caveats.collections
        ):
            failures = {"keys"}
        if failures:
            expected = failures
            break
    event(
        f"length {len(chain)}: "
        + ("refused " + "/".join(sorted(expected)) if expected else "accepted")
    )
    if expected:
        with pytest.raises(CaveatWidened) as refused:
            verify(token)
        assert refused.value.reason in {f"widened:{name}" for name in expected}
        return
    effective = verify(token)
    assert effective == chain[-1]
    # The effective scope is the intersection of every link's: a request is inside the
    # final caveats exactly when every link of the chain allows it.
    for ability in ["read", "list", "delegate"]:
        for purpose in ALL_PURPOSES:
            for name in NAMES:
                inside = all(
                    ability in c.abilities
                    and purpose in c.purposes
                    and any(covers(p, name) for p in c.collections)
                    for c in chain
                )
                try:
                    capability.check_request(
                        effective, ability=ability, purpose=purpose, collection=name
                    )
                    permitted = True
                except NotPermitted:
                    permitted = False
                assert permitted == inside, (ability, purpose, name)
    for name in ALL_FIELDS:
        every = all(c.fields is None or name in c.fields for c in chain)
        assert (effective.fields is None or name in effective.fields) == every
    for moment in TIMES:
        in_every_window = all(
            (c.window[0] is None or moment >= c.window[0])
            and (c.window[1] is None or moment < c.window[1])
            for c in chain
        )
        start, end = effective.window
        assert ((start is None or moment >= start) and (end is None or moment < end)) == (
            in_every_window
        )
        valid_in_every_link = all(c.not_before <= moment < c.expires for c in chain)
        try:
            capability.check_times(token, moment, skew_ms=0)
            valid = True
        except (Expired, NotYetValid):
            valid = False
        assert valid == valid_in_every_link
    budgets = [c.uses for c in chain if c.uses is not None]
    if budgets:
        assert effective.uses is not None and effective.uses <= min(budgets)
    if len(chain) > 1:
        assert effective.depth <= chain[0].depth - (len(chain) - 1)


# -- chain integrity ------------------------------------------------------------------


def chain_of(length: int = 3, *, salt: bytes = b"\x00" * 16) -> Token:
    return build(straight_chain(length), salt=salt)


def with_pairs(token: Token, pairs: Sequence[tuple[bytes, bytes]]) -> Token:
    return reparse(token_bytes(pairs))


@pytest.mark.parametrize("position", [0, 1, 2])
def test_forged_zeroed_and_foreign_signatures_are_refused(position: int) -> None:
    token = chain_of(3)
    pairs = token_pairs(token)
    payload, signature = pairs[position]
    flipped = bytes([signature[0] ^ 0x01]) + signature[1:]
    other = sign_payload(STRANGER, payload)
    for bad in (flipped, bytes(64), other, signature[:32] + bytes(32)):
        forged = list(pairs)
        forged[position] = (payload, bad)
        with pytest.raises(InvalidSignature) as refused:
            verify(with_pairs(token, forged))
        assert refused.value.reason == "signature"


@pytest.mark.parametrize("position", [0, 1, 2])
def test_a_changed_payload_byte_breaks_the_signature(position: int) -> None:
    token = chain_of(3)
    pairs = token_pairs(token)
    payload, signature = pairs[position]
    # Change the salt's last byte: the payload stays well-formed, only the signature fails.
    changed = list(pairs)
    changed[position] = (payload[:-1] + bytes([payload[-1] ^ 0xFF]), signature)
    with pytest.raises(InvalidSignature):
        verify(with_pairs(token, changed))


def test_removed_reordered_and_duplicated_links_break_the_chain() -> None:
    token = chain_of(4)
    pairs = token_pairs(token)
    arrangements = {
        "root removed": pairs[1:],
        "middle removed": [pairs[0], pairs[2], pairs[3]],
        "two middle removed": [pairs[0], pairs[3]],
        "swapped 1-2": [pairs[0], pairs[2], pairs[1], pairs[3]],
        "swapped 0-1": [pairs[1], pairs[0], pairs[2], pairs[3]],
        "reversed": list(reversed(pairs)),
        "root duplicated": [pairs[0], *pairs],
        "middle duplicated": [pairs[0], pairs[1], pairs[1], pairs[2], pairs[3]],
        "leaf duplicated": [*pairs, pairs[3]],
    }
    for name, arrangement in arrangements.items():
        with pytest.raises(BrokenChain) as refused:
            verify(with_pairs(token, arrangement))
        assert refused.value.reason == "chain", name


def test_removing_the_leaf_leaves_the_previous_holders_token() -> None:
    token = chain_of(3)
    shorter = with_pairs(token, token_pairs(token)[:2])
    verify(shorter)
    assert shorter.leaf.audience == HOLDERS[1].public != token.leaf.audience


def test_spliced_links_are_refused() -> None:
    ours = chain_of(3, salt=b"\x01" * 16)
    theirs = chain_of(3, salt=b"\x02" * 16)
    assert ours.link_ids != theirs.link_ids
    mine, other = token_pairs(ours), token_pairs(theirs)
    for splice in (
        [mine[0], other[1], mine[2]],
        [mine[0], mine[1], other[2]],
        [other[0], mine[1], mine[2]],
    ):
        with pytest.raises(BrokenChain) as refused:
            verify(with_pairs(ours, splice))
        assert refused.value.reason == "chain"
    foreign = build(straight_chain(3), vault_id="another-vault")
    with pytest.raises(WrongVault) as wrong:
        verify(with_pairs(ours, [mine[0], mine[1], token_pairs(foreign)[2]]))
    assert wrong.value.reason == "vault"


def test_a_root_not_issued_by_the_vault_identity_is_untrusted() -> None:
    impostor = build(straight_chain(2), identity=STRANGER)
    with pytest.raises(UntrustedIssuer) as refused:
        verify(impostor)
    assert refused.value.reason == "issuer"
    # Signed by the stranger but naming the vault identity as issuer: the signature fails.
    root = link_document(
        issuer=IDENTITY.public,
        audience=HOLDERS[0].public,
        vault_id=VAULT,
        parent=None,
        caveats=base_caveats(1),
    )
    payload = _codec.encode(root)
    with pytest.raises(InvalidSignature):
        verify(reparse(token_bytes([(payload, sign_payload(STRANGER, payload))])))


def test_a_token_for_another_vault_is_refused() -> None:
    with pytest.raises(WrongVault) as refused:
        verify(build(straight_chain(2), vault_id="another-vault"))
    assert refused.value.reason == "vault"
    # One middle link naming another vault is refused too, though correctly signed.
    token = chain_of(3)
    middle = link_document(
        issuer=HOLDERS[0].public,
        audience=HOLDERS[1].public,
        vault_id="another-vault",
        parent=token.links[0].link_id,
        caveats=token.links[1].caveats,
    )
    payload = _codec.encode(middle)
    pairs = token_pairs(token)
    pairs[1] = (payload, sign_payload(HOLDERS[0], payload))
    with pytest.raises(WrongVault):
        verify(with_pairs(token, pairs[:2]))


def test_parent_id_mismatch_and_issuer_not_parent_audience_break_the_chain() -> None:
    token = chain_of(2)
    root = token.links[0]
    cases = {
        "no parent id": (None, HOLDERS[0]),
        "wrong parent id": (b"\x07" * 32, HOLDERS[0]),
        "root id, issuer not its audience": (root.link_id, HOLDERS[3]),
    }
    for name, (parent, signer) in cases.items():
        doc = link_document(
            issuer=signer.public,
            audience=HOLDERS[1].public,
            vault_id=VAULT,
            parent=parent,
            caveats=token.links[1].caveats,
        )
        payload = _codec.encode(doc)
        pairs = [token_pairs(token)[0], (payload, sign_payload(signer, payload))]
        with pytest.raises(BrokenChain) as refused:
            verify(reparse(token_bytes(pairs)))
        assert refused.value.reason == "chain", name
    # A root that names a parent is not a root.
    doc = link_document(
        issuer=IDENTITY.public,
        audience=HOLDERS[0].public,
        vault_id=VAULT,
        parent=b"\x07" * 32,
        caveats=base_caveats(1),
    )
    payload = _codec.encode(doc)
    with pytest.raises(BrokenChain):
        verify(reparse(token_bytes([(payload, sign_payload(IDENTITY, payload))])))


# -- strict parsing -------------------------------------------------------------------


def signed_root(doc: dict[str, Any], *, raw_payload: bytes | None = None) -> bytes:
    payload = _codec.encode(doc) if raw_payload is None else raw_payload
    return token_bytes([(payload, sign_payload(IDENTITY, payload))])


def root_doc(**changes: Any) -> dict[str, Any]:
    doc = link_document(
        issuer=IDENTITY.public,
        audience=HOLDERS[0].public,
        vault_id=VAULT,
        parent=None,
        caveats=base_caveats(1),
    )
    doc.update(changes)
    return doc


def test_a_hand_built_root_matches_make_link() -> None:
    """The hand-built payloads below differ from a valid link only where a test says so."""
    built = build([base_caveats(1)])
    assert built.links[0].payload == _codec.encode(root_doc())
    verify(reparse(signed_root(root_doc())))


@pytest.mark.parametrize("name", sorted([*LOW_ORDER_AND_INVALID, "mixed-order"]))
@pytest.mark.parametrize("role", ["aud", "iss"])
def test_low_order_and_invalid_keys_are_malformed(name: str, role: str) -> None:
    point = bad_points()[name]
    with pytest.raises(MalformedToken) as refused:
        reparse(signed_root(root_doc(**{role: point})))
    assert refused.value.reason == "key"


@pytest.mark.parametrize("name", sorted([*LOW_ORDER_AND_INVALID, "mixed-order"]))
def test_low_order_dids_are_refused_by_grant_and_delegate(name: str, world: World) -> None:
    did = _crypto.did_key(bad_points()[name])
    with pytest.raises(FormatError):
        _crypto.parse_did_key(did)
    with pytest.raises(FormatError):
        world.vault.grant(did, collections=["a"], purpose="p", expires=dt.timedelta(days=1))
    assert world.vault.grants() == []
    holder = pds.PrincipalKey.generate()
    token = world.vault.grant(
        holder.did, collections=["a"], purpose="p", expires=dt.timedelta(days=1), delegable=1
    )
    with pytest.raises(FormatError):
        world.grantee(holder).delegate(token, to=did)


_BAD_DELEGATE_ARGUMENTS: dict[str, dict[str, Any]] = {
    "depth as text": {"depth": "0"},
    "negative uses": {"uses": -1},
    "uses as bool": {"uses": True},
    "collection not text": {"collections": [1]},
    "collections as one string": {"collections": "a"},
    "purpose not text": {"purposes": [None]},
    "fields not text": {"fields": [1, "a"]},
    "ability not text": {"abilities": [["read"]]},
    "window of one": {"window": (None,)},
    "defer as a number": {"defer": 60},
    "expires as a number": {"expires": 60},
}


@pytest.mark.parametrize("case", sorted(_BAD_DELEGATE_ARGUMENTS))
def test_delegate_refuses_arguments_of_the_wrong_type(case: str, world: World) -> None:
    holder = pds.PrincipalKey.generate()
    token = world.vault.grant(
        holder.did, collections=["a"], purpose="p", expires=dt.timedelta(days=1), delegable=2
    )
    to = pds.PrincipalKey.generate().did
    with pytest.raises(FormatError):
        world.grantee(holder).delegate(token, to=to, **_BAD_DELEGATE_ARGUMENTS[case])


@pytest.mark.parametrize("case", ["collections", "purpose", "abilities", "fields"])
def test_grant_refuses_items_that_are_not_text(case: str, world: World) -> None:
    options: dict[str, Any] = {"collections": ["a"], "purpose": "p"}
    options[case] = [1, "a"]
    with pytest.raises(FormatError):
        world.vault.grant(pds.PrincipalKey.generate().did, expires=dt.timedelta(days=1), **options)
    assert world.vault.grants() == []


def test_a_chain_of_max_chain_links_cannot_be_delegated_further(world: World) -> None:
    """No parser accepts a token of more than MAX_CHAIN links: delegate refuses to make
    one, whatever depth the root allows."""
    holders = [pds.PrincipalKey.generate() for _ in range(capability.MAX_CHAIN + 1)]
    token = world.vault.grant(
        holders[0].did,
        collections=["a"],
        purpose="p",
        expires=dt.timedelta(days=1),
        delegable=capability.MAX_CHAIN + 4,
    )
    for index in range(1, capability.MAX_CHAIN):
        token = world.grantee(holders[index - 1]).delegate(token, to=holders[index].did)
    assert len(capability.Token.from_bytes(token.to_bytes()).links) == capability.MAX_CHAIN
    with pytest.raises(FormatError) as refused:
        world.grantee(holders[-2]).delegate(token, to=holders[-1].did)
    assert "at most 16 links" in str(refused.value)


def test_non_canonical_and_foreign_did_keys_are_refused() -> None:
    public = HOLDERS[0].public
    did = _crypto.did_key(public)
    assert _crypto.parse_did_key(did) == public
    encoded = did[len("did:key:z") :]
    variants = {
        "leading zero byte": "did:key:z1" + encoded,
        "upper-case multibase": "did:key:Z" + encoded,
        "base58btc of a longer key": "did:key:z"
        + base58.b58encode(b"\xed\x01" + public + b"\x00").decode(),
        "short key": "did:key:z" + base58.b58encode(b"\xed\x01" + public[:31]).decode(),
        "x25519 multicodec": "did:key:z" + base58.b58encode(b"\xec\x01" + public).decode(),
        "secp256k1 multicodec": "did:key:z" + base58.b58encode(b"\xe7\x01" + public).decode(),
        "trailing newline": did + "\n",
        "leading space": " " + did,
        "fragment": did + "#" + encoded,
        "non-base58 character": did[:-1] + "0",
        "upper-case method": "DID:KEY:z" + encoded,
        "did:web": "did:web:example.org",
        "empty": "",
    }
    for name, variant in variants.items():
        with pytest.raises(FormatError):
            _crypto.parse_did_key(variant)
        assert variant != did, name


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"scope": ["x"]}, "unknown-caveat"),
        ({"aaa": 1}, "unknown-caveat"),
        ({"ability": ["read", "write"]}, "unknown-caveat"),
        ({"ability": ["deposit", "read"]}, "unknown-caveat"),
        ({"ability": ["read", "subscribe"]}, "unknown-caveat"),
        ({"v": 2}, "version"),
    ],
    ids=["unknown-field", "unknown-field-first", "unknown-ability", "deposit", "subscribe", "v2"],
)
def test_unknown_caveats_abilities_and_versions_are_refused(
    changes: dict[str, Any], reason: str
) -> None:
    with pytest.raises(MalformedToken) as refused:
        reparse(signed_root(root_doc(**changes)))
    assert refused.value.reason == reason


@pytest.mark.parametrize("version", [True, 1.0], ids=["true", "float"])
def test_versions_must_be_the_integer_one(version: object) -> None:
    """``True == 1`` and ``1.0 == 1`` in Python: the version marker is the integer 1 only."""
    with pytest.raises(MalformedToken):
        reparse(signed_root(root_doc(v=version)))
    token = chain_of(1)
    with pytest.raises(MalformedToken):
        reparse(_codec.encode({"v": version, "links": [list(p) for p in token_pairs(token)]}))


MALFORMED_ROOTS: dict[str, dict[str, Any]] = {
    "salt 15 bytes": {"salt": b"\x00" * 15},
    "parent not 32 bytes": {"parent": b"\x01" * 31},
    "nbf at exp": {"nbf": EXPIRES, "exp": EXPIRES},
    "window start at end": {"window": [5, 5]},
    "window of three": {"window": [1, 2, 3]},
    "uses zero": {"uses": 0},
    "depth negative": {"depth": -1},
    "depth boolean": {"depth": True},
    "exp as text": {"exp": "tomorrow"},
    "collections unsorted": {"collections": ["c", "a/b/*"]},
    "collections duplicated": {"collections": ["c", "c"]},
    "collections empty": {"collections": []},
    "purpose empty": {"purpose": []},
    "fields empty": {"fields": []},
    "ability empty": {"ability": []},
    "collection pattern a/**": {"collections": ["a/**"]},
    "collection pattern */a": {"collections": ["*/a"]},
    "collection pattern a//b": {"collections": ["a//b"]},
    "collection pattern /a": {"collections": ["/a"]},
    "collection too long": {"collections": ["x" * 300]},
    "purpose too long": {"purpose": ["p" * 257]},
    "vault empty": {"vault": ""},
    "aud as text": {"aud": "did:key:z"},
    "key entry short": {"keys": [["c", 1]]},
    "key epoch zero": {"keys": [["c", 0, b"x"]]},
    "keys unsorted": {"keys": [["c", 2, b"x"], ["c", 1, b"x"]]},
}


@pytest.mark.parametrize("name", sorted(MALFORMED_ROOTS))
def test_malformed_caveat_values_are_refused(name: str) -> None:
    with pytest.raises(MalformedToken):
        reparse(signed_root(root_doc(**MALFORMED_ROOTS[name])))


def test_missing_fields_are_refused() -> None:
    for key in sorted(root_doc()):
        doc = root_doc()
        del doc[key]
        with pytest.raises(MalformedToken) as refused:
            reparse(signed_root(doc))
        assert refused.value.reason in {"malformed", "version"}, key


def noncanonical_encodings(value: dict[str, Any]) -> Iterator[tuple[str, bytes]]:
    canonical = _codec.encode(value)
    keys = sorted(value, reverse=True)
    yield "unsorted keys", msgpack.packb({k: value[k] for k in keys}, use_bin_type=True)
    yield "trailing byte", canonical + b"\x00"
    yield "trailing document", canonical + _codec.encode(1)
    # The map header widened to the next size up, with the same count.
    if canonical[0] & 0xF0 == 0x80:
        yield "map16 header", bytes([0xDE, 0x00, canonical[0] & 0x0F]) + canonical[1:]
    else:
        assert canonical[0] == 0xDE
        yield "map32 header", b"\xdf\x00\x00" + canonical[1:]
    index = canonical.index(b"\xa1v\x01") + 2
    yield "uint8 for a fixint", canonical[:index] + b"\xcc\x01" + canonical[index + 1 :]
    yield "truncated", canonical[:-1]


def test_non_canonical_token_bytes_are_refused() -> None:
    token = chain_of(2)
    outer = {"v": 1, "links": [[p, s] for p, s in token_pairs(token)]}
    assert _codec.encode(outer) == token.to_bytes()
    for name, encoding in noncanonical_encodings(outer):
        with pytest.raises(MalformedToken):
            reparse(encoding)
        assert encoding != token.to_bytes(), name
    duplicated = b"\x83" + token.to_bytes()[1:] + b"\xa1v\x01"
    with pytest.raises(MalformedToken):
        reparse(duplicated)


def test_non_canonical_link_payloads_are_refused_even_when_signed() -> None:
    doc = root_doc()
    for name, payload in noncanonical_encodings(doc):
        with pytest.raises(MalformedToken):
            reparse(signed_root(doc, raw_payload=payload))
        assert payload != _codec.encode(doc), name


def test_token_envelope_rules() -> None:
    token = chain_of(2)
    pairs = token_pairs(token)
    cases: dict[str, Any] = {
        "version 2": {"v": 2, "links": [[p, s] for p, s in pairs]},
        "no links": {"v": 1, "links": []},
        "extra key": {"v": 1, "links": [[p, s] for p, s in pairs], "x": 1},
        "link of three": {"v": 1, "links": [[pairs[0][0], pairs[0][1], b""]]},
        "signature 63 bytes": {"v": 1, "links": [[pairs[0][0], pairs[0][1][:63]]]},
        "payload as a map": {"v": 1, "links": [[{"v": 1}, pairs[0][1]]]},
        "not a map": [1, 2],
    }
    for name, value in cases.items():
        with pytest.raises(MalformedToken):
            reparse(_codec.encode(value))
        assert name
    long_chain = build(straight_chain(16))
    verify(long_chain)
    seventeen = [*token_pairs(long_chain), token_pairs(long_chain)[-1]]
    with pytest.raises(MalformedToken):
        reparse(token_bytes(seventeen))
    with pytest.raises(MalformedToken):
        reparse(b"\x00" * (capability.MAX_TOKEN_BYTES + 1))
    for not_bytes in (bytearray(token.to_bytes()), memoryview(token.to_bytes()), None, 5):
        with pytest.raises(MalformedToken):
            Token.from_bytes(not_bytes)  # type: ignore[arg-type]


def test_text_form_prefix_and_base64_are_strict() -> None:
    # A token whose base64 text ends in a partial group, so its last character has unused
    # bits (a second spelling of the same bytes).
    token = next(
        t
        for t in (build(straight_chain(2), vault_id="v" * k) for k in range(1, 8))
        if len(t.to_text()[len("pdst1_") :]) % 4 in (2, 3)
    )
    text = token.to_text()
    assert text.startswith("pdst1_")
    assert Token.from_text(text).to_bytes() == token.to_bytes()
    body = text[len("pdst1_") :]
    last = body[-1]
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    # The final character encodes unused low bits; setting them is a second spelling.
    other_last = next(
        c for c in alphabet if c != last and alphabet.index(c) >> 2 == alphabet.index(last) >> 2
    )
    variants = {
        "no prefix": body,
        "other version": "pdst2_" + body,
        "upper-case prefix": "PDST1_" + body,
        "invocation prefix": "pdsi1_" + body,
        "padding": text + "=" * (-len(body) % 4 or 4),
        "unused bits set": text[:-1] + other_last,
        "standard alphabet": "pdst1_" + body.replace("-", "+").replace("_", "/"),
        "inserted dot": text[:10] + "." + text[10:],
        "non-ascii": text[:10] + "é" + text[10:],
        "truncated": text[:-3],
        "empty": "pdst1_",
        "trailing newline": text + "\n",
        "leading space": "pdst1_ " + body,
    }
    for name, variant in variants.items():
        if variant == text:
            continue
        with pytest.raises(MalformedToken):
            Token.from_text(variant)
        assert name
    with pytest.raises(MalformedToken):
        Token.from_text(token.to_bytes())  # type: ignore[arg-type]
    assert capability.parse(text).to_bytes() == token.to_bytes()
    with pytest.raises(MalformedToken):
        capability.parse(42)  # type: ignore[arg-type]


def test_describe_shows_no_key_material() -> None:
    sealed = b"\xaa" * 48
    token = build(straight_chain(2), keys=[[SealedKey("c", 1, sealed)], []])
    description = repr(token.describe()) + repr(token)
    assert sealed.hex() not in description
    assert "\\xaa" not in description


# -- lifetime against the vault's policy ----------------------------------------------


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    opened = make_world(tmp_path / "world")
    yield opened
    opened.close()


def test_lifetime_over_the_given_maximum_is_refused() -> None:
    token = chain_of(2)
    lifetime = token.root.caveats.expires - token.root.caveats.not_before
    verify(token, max_lifetime_ms=lifetime)
    with pytest.raises(LifetimeExceeded) as refused:
        verify(token, max_lifetime_ms=lifetime - 1)
    assert refused.value.reason == "lifetime"


def test_grant_over_the_vault_policy_is_refused_and_leaves_nothing(world: World) -> None:
    holder = pds.PrincipalKey.generate()
    with pytest.raises(LifetimeExceeded):
        world.vault.grant(holder.did, collections=["a"], purpose="p", expires=dt.timedelta(367))
    world.vault.set_policy(max_token_lifetime=dt.timedelta(days=1))
    with pytest.raises(LifetimeExceeded):
        world.vault.grant(holder.did, collections=["a"], purpose="p", expires=dt.timedelta(2))
    with pytest.raises(LifetimeExceeded):
        world.vault.grant(
            holder.did,
            collections=["a"],
            purpose="p",
            not_before=dt.datetime.fromtimestamp(T0_MS / 1000 + 3600, tz=dt.UTC),
            expires=dt.datetime.fromtimestamp(T0_MS / 1000 + 3600 + 86401, tz=dt.UTC),
        )
    assert world.vault.grants() == []
    world.vault.grant(holder.did, collections=["a"], purpose="p", expires=dt.timedelta(days=1))
    assert len(world.vault.grants()) == 1


def test_grant_of_a_reserved_ability_is_refused_and_leaves_nothing(world: World) -> None:
    holder = pds.PrincipalKey.generate()
    for abilities in (["deposit"], ["read", "subscribe"], ["write"]):
        with pytest.raises(MalformedToken) as refused:
            world.vault.grant(
                holder.did,
                collections=["a"],
                purpose="p",
                expires=dt.timedelta(days=1),
                abilities=abilities,
            )
        assert refused.value.reason == "unknown-caveat"
    for collections in (["a/**"], [], ["/x"]):
        with pytest.raises(FormatError):
            world.vault.grant(
                holder.did, collections=collections, purpose="p", expires=dt.timedelta(days=1)
            )
    assert world.vault.grants() == []


def test_a_lowered_policy_refuses_tokens_already_issued(world: World) -> None:
    holder = pds.PrincipalKey.generate()
    world.vault.put("a", {"x": 1})
    token = world.vault.grant(
        holder.did, collections=["a"], purpose="p", expires=dt.timedelta(days=30)
    )
    world.vault.set_policy(max_token_lifetime=dt.timedelta(days=7))
    host = world.open_store()
    with pytest.raises(LifetimeExceeded):
        world.grantee(holder).read(host, token)
    assert refusals(world.vault) == ["lifetime"]


def test_a_lowered_policy_refuses_tokens_the_host_has_already_served(world: World) -> None:
    holder = pds.PrincipalKey.generate()
    world.vault.put("a", {"x": 1})
    token = world.vault.grant(
        holder.did, collections=["a"], purpose="p", expires=dt.timedelta(days=30)
    )
    grantee = world.grantee(holder)
    assert len(grantee.read(world.store, token).records) == 1
    world.vault.set_policy(max_token_lifetime=dt.timedelta(days=7))
    with pytest.raises(LifetimeExceeded):
        grantee.read(world.store, token)


# -- the same rules through a store and the grantee API --------------------------------


def test_the_host_refuses_a_widened_delegation_and_logs_why(world: World) -> None:
    holder, delegate = pds.PrincipalKey.generate(), pds.PrincipalKey.generate()
    world.vault.create_collection("a", seal_fields=True)
    world.vault.put("a", {"f1": 1, "f2": 2})
    token = world.vault.grant(
        holder.did,
        collections=["a"],
        purpose="p",
        fields=["f1"],
        expires=dt.timedelta(days=1),
        delegable=1,
    )
    grantee = world.grantee(holder)
    with pytest.raises(CaveatWidened) as early:
        grantee.delegate(token, to=delegate.did, fields=["f1", "f2"])
    assert early.value.reason == "widened:fields"
    for widening, reason in (
        ({"collections": ["*"]}, "widened:collections"),
        ({"purposes": ["p", "q"]}, "widened:purpose"),
        ({"expires": dt.timedelta(days=2)}, "widened:exp"),
        ({"abilities": ["read", "list", "delegate"], "depth": 1}, "widened:depth"),
    ):
        with pytest.raises(CaveatWidened) as refused:
            grantee.delegate(token, to=delegate.did, **widening)
        assert refused.value.reason == reason
    # Signed by the holder without the grantee API's own check: the host refuses it.
    widened = dataclasses.replace(token.leaf.caveats, fields=None, depth=0)
    link = make_link(
        signer=holder._key,
        vault_id=token.vault_id,
        audience=delegate.public_key,
        parent=token.leaf,
        caveats=widened,
        keys=token.leaf.keys,
        salt=b"\x05" * 16,
    )
    forged = Token((*token.links, link))
    with pytest.raises(CaveatWidened) as served:
        world.grantee(delegate).read(world.store, forged)
    assert served.value.reason == "widened:fields"
    assert refusals(world.vault) == ["widened:fields"]


def test_the_longest_collection_name_can_be_granted_and_one_longer_is_refused(
    world: World,
) -> None:
    """A collection name holds at most 256 characters, as a token's text items do: the
    longest one is written, granted by name, by ``*`` and by its parent's ``p/*``, delegated
    and read; one character more is refused when written (it could never be granted)."""
    longest = "/".join(["a" * 64, "b" * 64, "c" * 64, "d" * 61])
    assert len(longest) == 256
    parent = longest.rsplit("/", 1)[0] + "/*"
    world.vault.put(longest, {"n": 1})
    holder, delegate = pds.PrincipalKey.generate(), pds.PrincipalKey.generate()
    for collections in ([longest], ["*"], [parent]):
        token = world.vault.grant(
            holder.did,
            collections=collections,
            purpose="p",
            expires=dt.timedelta(days=1),
            delegable=1,
        )
        world.clock.advance(1_000)
        assert [r.data for r in world.grantee(holder).read(world.store, token).records] == [
            {"n": 1}
        ]
        narrower = world.grantee(holder).delegate(token, to=delegate.did, collections=[longest])
        world.clock.advance(1_000)
        assert len(world.grantee(delegate).read(world.store, narrower).records) == 1
    for too_long in (longest + "e", "/".join(["a" * 64] * 5)):
        with pytest.raises(FormatError) as refused:
            world.vault.put(too_long, {"n": 1})
        assert "at most 256 characters" in str(refused.value)
    assert world.vault.collections() == [longest]


def test_a_grant_over_a_policy_tightened_since_is_listed_as_over_policy(world: World) -> None:
    """The owner's own tightening is not the host's forgery: unlocked, the grant is listed
    ``over-policy`` (and refused when used), never ``invalid``."""
    holder = pds.PrincipalKey.generate()
    world.vault.put("a", {"n": 1})
    token = world.vault.grant(
        holder.did, collections=["a"], purpose="p", expires=dt.timedelta(days=30)
    )
    assert [g.status for g in world.vault.grants()] == ["active"]
    world.vault.set_policy(max_token_lifetime=dt.timedelta(days=1))
    assert [g.status for g in world.vault.grants()] == ["over-policy"]
    with pytest.raises(LifetimeExceeded):
        world.grantee(holder).read(world.store, token)
    world.vault.lock()
    assert [g.status for g in world.vault.grants()] == ["active"]  # rows only, while locked
