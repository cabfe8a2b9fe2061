"""Fuzz target ``token``: the token decoder and verifier (``pds.capability``).

The input is a token's bytes, or its text form when it starts with ``pdst1_``. A token that
parses must be exactly its canonical serialisation. It is then verified as given (against
the world's vault and, as ``pds token verify`` does without ``--vault-did``, against its
own root issuer) and again after ``resign_token`` repaired its parent ids and signatures
with the world's keys, which lets mutated caveats reach the narrowing rules. Whenever a
chain verifies, the effective caveats must lie inside every link's caveats (promise 4).
"""

from __future__ import annotations

from collections.abc import Sequence

from fuzz._resign import resign_token
from fuzz._world import NOW_MS, World, world
from fuzz.targets import fuzz_target
from pds import capability
from pds.capability import Caveats, Token
from pds.errors import AccessDenied

__all__ = ["TestOneInput"]


def _pattern_within(pattern: str, parents: Sequence[str]) -> bool:
    """An independent statement of the collection-pattern rule of ``docs/spec/token.md``."""
    for parent in parents:
        if parent == "*":
            return True
        if parent.endswith("/*"):
            prefix = parent[:-1]
            if pattern != "*" and pattern.startswith(prefix):
                return True
        elif pattern == parent:
            return True
    return False


def _check_attenuation(token: Token, effective: Caveats) -> None:
    """Promise 4: the effective caveats lie inside those of every link of the chain."""
    assert effective == token.leaf.caveats, "verify_chain returned other than the leaf caveats"
    count = len(token.links)
    for position, link in enumerate(token.links):
        bound = link.caveats
        below = count - 1 - position
        assert effective.abilities <= bound.abilities, "abilities widened"
        assert effective.purposes <= bound.purposes, "purposes widened"
        assert all(_pattern_within(p, bound.collections) for p in effective.collections), (
            "collections widened"
        )
        if bound.fields is not None:
            assert effective.fields is not None, "fields widened to all"
            assert effective.fields <= bound.fields, "fields widened"
        start, end = effective.window
        if bound.window[0] is not None:
            assert start is not None and start >= bound.window[0], "window start widened"
        if bound.window[1] is not None:
            assert end is not None and end <= bound.window[1], "window end widened"
        assert effective.not_before >= bound.not_before, "not-before widened"
        assert effective.expires <= bound.expires, "expiry widened"
        if bound.uses is not None:
            assert effective.uses is not None, "uses widened to unlimited"
            assert effective.uses <= bound.uses, "uses widened"
        assert effective.depth <= bound.depth - below, "delegation depth widened"
        if effective.defer is not None:
            assert bound.defer is not None, "deferral widened"
            assert effective.defer <= bound.defer, "deferral widened"
        if bound.basis is not None:
            assert effective.basis == bound.basis, "legal basis changed"
        if position:
            parent = token.links[position - 1]
            assert "delegate" in parent.caveats.abilities, "delegated without the ability"
            assert link.parent == parent.link_id, "parent id not checked"
            assert link.issuer == parent.audience, "issuer not checked"
        for key in link.keys:
            assert capability.collection_allowed(bound.collections, key.collection), (
                "a sealed key outside its link's scope"
            )


def _verify(token: Token, w: World) -> bool:
    """Verify as the host and as ``pds token verify`` would; whether the world's vault
    accepted it."""
    accepted = False
    anchors = [
        (w.vault_id, w.identity.public),
        (token.vault_id, token.root.issuer),
    ]
    for vault_id, identity in anchors:
        try:
            effective = capability.verify_chain(
                token,
                vault_id=vault_id,
                identity=identity,
                max_lifetime_ms=366 * 24 * 3600 * 1000,
            )
        except AccessDenied:
            continue
        assert token.root.issuer == identity, "a root issued by another key verified"
        assert all(link.vault_id == vault_id for link in token.links), "another vault's link"
        _check_attenuation(token, effective)
        accepted = accepted or identity == w.identity.public
        try:
            capability.check_times(token, NOW_MS)
        except AccessDenied:
            continue
        for ability in sorted(effective.abilities | {"read"}):
            for purpose in sorted(effective.purposes | {"other"}):
                for collection in (None, "tax", "tax/a", "health"):
                    try:
                        capability.check_request(
                            effective, ability=ability, purpose=purpose, collection=collection
                        )
                    except AccessDenied:
                        continue
                    assert ability in effective.abilities and purpose in effective.purposes
    return accepted


@fuzz_target
def TestOneInput(data: bytes) -> None:
    w = world()
    if data.startswith(b"pdst1_"):
        text = data.decode("utf-8", "surrogateescape")
        token = Token.from_text(text)
        assert token.to_text() == text, "a token's text form parsed but is not canonical"
    else:
        token = Token.from_bytes(data)
        assert token.to_bytes() == data, "token bytes parsed but are not canonical"
    assert Token.from_bytes(token.to_bytes()) == token, "a token does not round-trip"
    repr(token)
    token.describe()
    accepted = _verify(token, w)
    resigned = resign_token(token, w.signers)
    if accepted:
        # Ed25519 signatures are deterministic: re-signing a valid chain changes nothing.
        assert resigned == token, "re-signing a verified token changed it"
    else:
        _verify(resigned, w)
