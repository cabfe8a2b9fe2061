"""Regenerate the capability-token and access-log test vectors deterministically.

    python tests/vectors/generate_tokens.py           rewrite tokens.json and log.json
    python tests/vectors/generate_tokens.py --check   exit 1 if a committed file differs

Outputs, next to this script:

* ``tokens.json`` (``docs/spec/token.md``): principals with their Ed25519 seeds, valid
  chains of one, two and three links (payloads, signatures, link ids, token text, the
  epoch secrets their sealed keys open to, the effective caveats), invalid tokens each
  labelled with the error class and reason code it must produce and the rule it breaks,
  one invocation, and a revocation statement and revocation list;
* ``log.json`` (``docs/spec/log.md``): the access log of one vault written by pds (every
  entry as stored, its public header, its decrypted details, the owner's signature over an
  entry the owner appended, its disclosure key and its leaf hash), the root at every size,
  every inclusion and consistency proof, the signed checkpoint, and invalid proofs,
  checkpoints and pinned-head checks, each labelled.

Determinism. Token vectors are built directly with ``pds.capability.make_link`` and
``pds._crypto.SigningKey``: principal ``i``'s Ed25519 seed is SHA-256(TOKEN_SEED || i as 8
bytes big-endian); salts, epoch secrets and the ephemeral keys of sealed boxes come from
SHA-256 in counter mode over TOKEN_SEED || " rng". The log vault is written by a real
store opened with such a counter-mode random source (over LOG_SEED) and a clock that steps
1.25 s per reading, as ``generate.py`` does, so every byte is the same on every run.

Invalid vectors change one thing in an otherwise valid token, re-signing with the right
key wherever the change must get past a signature, so each fails at exactly one rule.
Before writing anything the generator runs every vector through pds and stops if pds
disagrees with a label. A vector with a ``pds_deviation`` note is one where the spec and
pds disagree today (pds accepts what the spec refuses); the generator checks that pds
still disagrees, so the note cannot go stale unnoticed.

This script is separate from ``generate.py``, whose outputs it leaves untouched.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import io
import sqlite3
import sys
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgpack

import pds
from pds import _codec, _crypto, _serve, accesslog, capability, invocation, merkle
from pds.accesslog import Checkpoint, LogEntry, revoked_digest, rotated_digest
from pds.capability import Caveats, Link, SealedKey, Token
from pds.errors import AccessDenied, PDSError

if TYPE_CHECKING:
    from tests.vectors.common import (
        CounterRng,
        Json,
        SteppingClock,
        dump_json,
        hexed,
    )
else:  # run as a script: this folder is on sys.path
    from common import CounterRng, Json, SteppingClock, dump_json, hexed


HERE = Path(__file__).resolve().parent

TOKEN_SEED = b"pds token vectors v1"
LOG_SEED = b"pds log vectors v1"
OWNER_KEY = hashlib.sha256(b"pds log vectors: owner key").digest()
HOST_KEY = hashlib.sha256(b"pds log vectors: host key").digest()
NEW_OWNER_KEY = hashlib.sha256(b"pds log vectors: owner key after rekey").digest()

T0 = 1_735_689_600_000  # 2025-01-01T00:00:00Z, in ms
MINUTE = 60 * 1000
HOUR = 60 * MINUTE
DAY = 24 * HOUR
SKEW = capability.CLOCK_SKEW_MS
DEFAULT_MAX_LIFETIME_MS = _serve.DEFAULT_MAX_LIFETIME_MS


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


# -- token vectors ------------------------------------------------------------------------

PRINCIPALS = ("vault", "clinic", "lab", "courier", "mallory")
"""Principal ``i`` of this tuple has seed SHA-256(TOKEN_SEED || i); "vault" is the vault
identity key, "mallory" a key nobody granted anything."""


def principal_seed(index: int) -> bytes:
    return hashlib.sha256(TOKEN_SEED + index.to_bytes(8, "big")).digest()


def vault_name(label: bytes) -> str:
    digest = hashlib.sha256(TOKEN_SEED + b" " + label).digest()[:16]
    return base64.b32encode(digest).decode("ascii").rstrip("=").lower()


class Tokens:
    """The keys, epoch secrets and links behind every token vector."""

    def __init__(self) -> None:
        self.rng = CounterRng(TOKEN_SEED + b" rng")
        self.keys = {
            name: _crypto.SigningKey.from_seed(principal_seed(i))
            for i, name in enumerate(PRINCIPALS)
        }
        self.vault_id = vault_name(b"vault")
        self.other_vault_id = vault_name(b"other vault")
        self.epochs: dict[tuple[str, int], bytes] = {
            (collection, epoch): self.rng(32)
            for collection, epoch in (
                ("health/labs", 1),
                ("health/visits", 1),
                ("health/visits", 2),
                ("profile", 1),
            )
        }
        self.signers: dict[bytes, str] = {key.public: name for name, key in self.keys.items()}

    def pub(self, name: str) -> bytes:
        return self.keys[name].public

    def sealed(self, audience: str, pairs: Sequence[tuple[str, int]]) -> list[SealedKey]:
        recipient = _crypto.ed25519_to_x25519(self.pub(audience))
        return [
            SealedKey(c, e, _crypto.seal(self.epochs[(c, e)], recipient, self.rng))
            for c, e in pairs
        ]

    def link(
        self,
        signer: str,
        audience: str,
        parent: Link | None,
        caveats: Caveats,
        keys: Sequence[tuple[str, int]] = (),
        *,
        vault_id: str | None = None,
    ) -> Link:
        return capability.make_link(
            signer=self.keys[signer],
            vault_id=self.vault_id if vault_id is None else vault_id,
            audience=self.pub(audience),
            parent=parent,
            caveats=caveats,
            keys=self.sealed(audience, keys),
            salt=self.rng(16),
        )


def caveats(**changes: Any) -> Caveats:
    base = Caveats(
        abilities=frozenset({"list", "read"}),
        collections=("health/visits",),
        fields=None,
        window=(None, None),
        purposes=frozenset({"care"}),
        basis=None,
        not_before=T0,
        expires=T0 + 30 * DAY,
        uses=None,
        depth=0,
        defer=None,
    )
    return replace(base, **changes)


def token_bytes(links: Sequence[tuple[bytes, bytes]], version: Any = 1) -> bytes:
    return _codec.encode({"v": version, "links": [[p, s] for p, s in links]})


def text_of(data: bytes) -> str:
    return capability.TOKEN_PREFIX + b64url(data)


def pairs(*links: Link) -> list[tuple[bytes, bytes]]:
    return [(link.payload, link.signature) for link in links]


def resign(
    t: Tokens,
    link: Link,
    signer: str,
    change: Callable[[dict[str, Any]], None] | None = None,
    *,
    encode: Callable[[dict[str, Any]], bytes] = _codec.encode,
) -> tuple[bytes, bytes]:
    """``link``'s payload decoded, changed, re-encoded and signed (label pds/link/v1)."""
    doc = _codec.decode(link.payload)
    assert isinstance(doc, dict)
    if change is not None:
        change(doc)
    payload = encode(doc)
    return payload, t.keys[signer].sign(capability.LINK_SIGNATURE_LABEL, payload)


def setter(**values: Any) -> Callable[[dict[str, Any]], None]:
    def change(doc: dict[str, Any]) -> None:
        doc.update(values)

    return change


def context(
    t: Tokens,
    *,
    now: int = T0 + 2 * HOUR,
    max_lifetime_ms: int = DEFAULT_MAX_LIFETIME_MS,
    vault: str | None = None,
    identity: bytes | None = None,
) -> Json:
    return {
        "vault": t.vault_id if vault is None else vault,
        "identity": (t.pub("vault") if identity is None else identity).hex(),
        "now": now,
        "max_lifetime_ms": max_lifetime_ms,
    }


def link_json(t: Tokens, link: Link) -> Json:
    decoded = _codec.decode(link.payload)
    return {
        "issuer": t.signers[link.issuer],
        "audience": t.signers[link.audience],
        "payload": link.payload.hex(),
        "decoded": hexed(decoded),
        "signing_input": (capability.LINK_SIGNATURE_LABEL + b"\x00" + link.payload).hex(),
        "signature": link.signature.hex(),
        "link_id": link.link_id.hex(),
        "keys": [
            {
                "collection": key.collection,
                "epoch": key.epoch,
                "secret": t.epochs[(key.collection, key.epoch)].hex(),
            }
            for key in link.keys
        ],
    }


def valid_vector(t: Tokens, name: str, description: str, token: Token, ctx: Json) -> Json:
    data = token.to_bytes()
    return {
        "name": name,
        "description": description,
        "context": ctx,
        "token": token.to_text(),
        "token_bytes": data.hex(),
        "links": [link_json(t, link) for link in token.links],
        "effective": token.leaf.caveats.describe(),
    }


def invalid(
    name: str,
    rule: str,
    stage: str,
    text: str,
    ctx: Json,
    error: str,
    reason: str,
    deviation: str | None = None,
) -> Json:
    vector: Json = {
        "name": name,
        "rule": rule,
        "stage": stage,
        "context": ctx,
        "token": text,
        "expect": {"error": error, "reason": reason},
    }
    if deviation is not None:
        vector["pds_deviation"] = deviation
    return vector


ERRORS = {
    "malformed": "MalformedToken",
    "unknown-caveat": "MalformedToken",
    "version": "MalformedToken",
    "key": "MalformedToken",
    "vault": "WrongVault",
    "issuer": "UntrustedIssuer",
    "chain": "BrokenChain",
    "signature": "InvalidSignature",
    "widened": "CaveatWidened",
    "lifetime": "LifetimeExceeded",
    "not-yet-valid": "NotYetValid",
    "expired": "Expired",
}
"""The error class of each reason code (``widened:<caveat>`` is ``CaveatWidened``)."""


def pds_token_verdict(text: str, ctx: Json) -> tuple[str, str] | None:
    """What pds says about a token vector: ``None`` (valid) or (error class, reason)."""
    try:
        token = Token.from_text(text)
        capability.verify_chain(
            token,
            vault_id=ctx["vault"],
            identity=bytes.fromhex(ctx["identity"]),
            max_lifetime_ms=ctx["max_lifetime_ms"],
        )
        capability.check_times(token, ctx["now"])
    except AccessDenied as denied:
        return type(denied).__name__, denied.reason
    return None


def token_vectors() -> Json:
    t = Tokens()
    mk = t.link

    # -- valid chains
    root_a = mk(
        "vault",
        "clinic",
        None,
        caveats(collections=("health/visits", "profile")),
        [("health/visits", 1), ("health/visits", 2), ("profile", 1)],
    )
    root_b = mk(
        "vault",
        "clinic",
        None,
        caveats(
            abilities=frozenset({"delegate", "list", "read"}),
            collections=("health/*",),
            fields=frozenset({"clinic", "cost", "date"}),
            window=(T0 - 365 * DAY, T0 + 365 * DAY),
            purposes=frozenset({"billing", "care"}),
            basis="consent",
            uses=10,
            depth=2,
            defer=7 * DAY,
        ),
        [("health/labs", 1), ("health/visits", 1), ("health/visits", 2)],
    )
    good_child = caveats(
        abilities=frozenset({"delegate", "read"}),
        collections=("health/visits",),
        fields=frozenset({"clinic", "date"}),
        window=(T0 - 30 * DAY, T0 + 30 * DAY),
        purposes=frozenset({"care"}),
        basis="consent",
        not_before=T0 + HOUR,
        expires=T0 + 7 * DAY,
        uses=3,
        depth=1,
        defer=DAY,
    )
    visits = [("health/visits", 1), ("health/visits", 2)]
    b2 = mk(
        "clinic",
        "lab",
        root_b,
        replace(good_child, abilities=frozenset({"read"}), depth=0),
        visits,
    )
    c2 = mk("clinic", "lab", root_b, good_child, visits)
    c3_caveats = replace(
        good_child,
        abilities=frozenset({"read"}),
        fields=frozenset({"date"}),
        window=(T0 - 7 * DAY, T0),
        not_before=T0 + 2 * HOUR,
        expires=T0 + 3 * DAY,
        uses=1,
        depth=0,
        defer=None,
    )
    c3 = mk("lab", "courier", c2, c3_caveats, [("health/visits", 2)])
    root_star = mk(
        "vault",
        "clinic",
        None,
        caveats(collections=("*",), abilities=frozenset({"list"})),
        [],
    )
    token_a, token_b, token_c = Token((root_a,)), Token((root_b, b2)), Token((root_b, c2, c3))

    valid = [
        valid_vector(
            t,
            "one link",
            "A root grant: read and list two collections for one purpose, 30 days, not "
            "delegable; it carries the epoch secrets of both collections sealed to clinic.",
            token_a,
            context(t),
        ),
        valid_vector(
            t,
            "two links",
            "clinic delegates to lab, narrowing every caveat: one collection of the "
            "prefix, two of three fields, a shorter window, one of two purposes, the same "
            "basis, later nbf, earlier exp, 3 of 10 uses, depth 0, a shorter deferral.",
            token_b,
            context(t),
        ),
        valid_vector(
            t,
            "three links",
            "clinic delegates to lab with depth 1, lab delegates to courier: each link "
            "within its parent; the effective caveats are the last link's.",
            token_c,
            context(t, now=T0 + 3 * HOUR),
        ),
        valid_vector(
            t,
            "wildcard scope, no keys",
            "A root for every collection ('*') with only the list ability, carrying no "
            "sealed keys.",
            Token((root_star,)),
            context(t),
        ),
        valid_vector(
            t,
            "valid at the earliest instant the skew allows",
            "now = nbf - CLOCK_SKEW_MS: not before minus the allowance is still valid.",
            token_a,
            context(t, now=T0 - SKEW),
        ),
        valid_vector(
            t,
            "valid at the last instant the skew allows",
            "now = exp + CLOCK_SKEW_MS - 1: expiry plus the allowance, exclusive.",
            token_a,
            context(t, now=T0 + 30 * DAY + SKEW - 1),
        ),
        valid_vector(
            t,
            "lifetime exactly at the policy",
            "The root's exp - nbf equals max_lifetime_ms, which is allowed.",
            token_a,
            context(t, max_lifetime_ms=30 * DAY),
        ),
    ]

    bad: list[Json] = []
    ctx = context(t)
    text_a, text_b, text_c = token_a.to_text(), token_b.to_text(), token_c.to_text()

    def add(
        name: str,
        rule: str,
        text: str,
        reason: str,
        *,
        at: Json | None = None,
        deviation: str | None = None,
    ) -> None:
        error = ERRORS[reason.split(":", maxsplit=1)[0]]
        stage = {"MalformedToken": "parse", "NotYetValid": "times", "Expired": "times"}
        bad.append(
            invalid(
                name, rule, stage.get(error, "chain"), text, at or ctx, error, reason, deviation
            )
        )

    def chain_text(*links: tuple[bytes, bytes]) -> str:
        return text_of(token_bytes(list(links)))

    # -- narrowing: every caveat widened (link 2 of root_b unless said otherwise)
    def child(changes: dict[str, Any], keys: Sequence[tuple[str, int]] = visits) -> str:
        link = mk("clinic", "lab", root_b, replace(good_child, **changes), keys)
        return text_of(Token((root_b, link)).to_bytes())

    add(
        "depth: child depth equals its parent's",
        "a child's depth is at most its parent's depth - 1",
        child({"depth": 2}),
        "widened:depth",
    )
    root_nodelegate = mk(
        "vault", "clinic", None, caveats(depth=1, collections=("health/*",)), visits
    )
    add(
        "depth: parent lacks the delegate ability",
        "a link may have a child only if it has the delegate ability and depth >= 1",
        chain_text(
            *pairs(
                root_nodelegate,
                mk(
                    "clinic",
                    "lab",
                    root_nodelegate,
                    caveats(abilities=frozenset({"read"}), collections=("health/visits",)),
                    visits,
                ),
            )
        ),
        "widened:depth",
    )
    root_depth0 = mk(
        "vault",
        "clinic",
        None,
        caveats(abilities=frozenset({"delegate", "read"}), depth=0),
        visits,
    )
    add(
        "depth: parent has depth 0",
        "a link may have a child only if it has the delegate ability and depth >= 1",
        chain_text(
            *pairs(
                root_depth0,
                mk("clinic", "lab", root_depth0, caveats(abilities=frozenset({"read"})), visits),
            )
        ),
        "widened:depth",
    )
    add(
        "ability: child adds list",
        "a child's abilities are a subset of its parent's",
        chain_text(
            *pairs(
                root_b,
                c2,
                mk(
                    "lab",
                    "courier",
                    c2,
                    replace(c3_caveats, abilities=frozenset({"list", "read"})),
                    [],
                ),
            )
        ),
        "widened:ability",
    )
    add(
        "collections: a collection outside the parent's prefix",
        "each child pattern lies within a parent pattern",
        child({"collections": ("profile",)}, []),
        "widened:collections",
    )
    add(
        "collections: the bare prefix name",
        "'health/*' covers names below 'health/', not 'health' itself",
        child({"collections": ("health",)}, []),
        "widened:collections",
    )
    add(
        "collections: '*' under a prefix",
        "'*' lies only within '*'",
        child({"collections": ("*",)}, []),
        "widened:collections",
    )
    add(
        "collections: a sibling prefix",
        "'healthcare/*' is not within 'health/*'",
        child({"collections": ("healthcare/*",)}, []),
        "widened:collections",
    )
    add(
        "fields: child drops the field restriction",
        "if the parent restricts fields, the child restricts them to a subset",
        child({"fields": None}),
        "widened:fields",
    )
    add(
        "fields: child adds a field",
        "a child's fields are a subset of its parent's",
        child({"fields": frozenset({"clinic", "date", "notes"})}),
        "widened:fields",
    )
    add(
        "window: child start unbounded",
        "if the parent bounds the window's start, the child's start is bounded and not earlier",
        child({"window": (None, T0)}),
        "widened:window",
    )
    add(
        "window: child end later",
        "the child's window end is not later than the parent's",
        child({"window": (T0 - DAY, T0 + 366 * DAY)}),
        "widened:window",
    )
    add(
        "purpose: child adds a purpose",
        "a child's purposes are a subset of its parent's",
        child({"purposes": frozenset({"care", "research"})}),
        "widened:purpose",
    )
    add(
        "basis: child drops the basis",
        "if the parent names a basis, the child names the same",
        child({"basis": None}),
        "widened:basis",
    )
    add(
        "basis: child names another basis",
        "if the parent names a basis, the child names the same",
        child({"basis": "contract"}),
        "widened:basis",
    )
    add(
        "nbf: child valid earlier",
        "a child's nbf is not earlier than its parent's",
        child({"not_before": T0 - 1}),
        "widened:nbf",
    )
    add(
        "exp: child valid longer",
        "a child's exp is not later than its parent's",
        child({"expires": T0 + 30 * DAY + 1}),
        "widened:exp",
    )
    add(
        "uses: child drops the budget",
        "if the parent has a use budget, the child has one, not larger",
        child({"uses": None}),
        "widened:uses",
    )
    add(
        "uses: child budget larger",
        "if the parent has a use budget, the child has one, not larger",
        child({"uses": 11}),
        "widened:uses",
    )
    add(
        "defer: child defers longer",
        "a child's defer is at most its parent's",
        child({"defer": 7 * DAY + 1}),
        "widened:defer",
    )
    root_nodefer = mk(
        "vault",
        "clinic",
        None,
        caveats(abilities=frozenset({"delegate", "read"}), depth=1),
        visits,
    )
    add(
        "defer: parent allows no deferral",
        "a child may defer only if its parent may",
        chain_text(
            *pairs(
                root_nodefer,
                mk(
                    "clinic",
                    "lab",
                    root_nodefer,
                    caveats(abilities=frozenset({"read"}), defer=HOUR),
                    visits,
                ),
            )
        ),
        "widened:defer",
    )
    add(
        "keys: a child carries a key outside its scope",
        "every sealed key's collection is inside the link's own collections",
        child({}, [*visits, ("health/labs", 1)]),
        "widened:keys",
    )
    add(
        "keys: a root carries a key outside its scope",
        "every sealed key's collection is inside the link's own collections",
        chain_text(*pairs(mk("vault", "clinic", None, caveats(), [("profile", 1)]))),
        "widened:keys",
    )
    add(
        "exp: the third link outlives the second",
        "narrowing is checked against the immediate parent, not only the root",
        chain_text(
            *pairs(
                root_b,
                c2,
                mk("lab", "courier", c2, replace(c3_caveats, expires=T0 + 8 * DAY), []),
            )
        ),
        "widened:exp",
    )
    add(
        "purpose: the third link takes a purpose the second dropped",
        "narrowing is checked against the immediate parent, not only the root",
        chain_text(
            *pairs(
                root_b,
                c2,
                mk(
                    "lab",
                    "courier",
                    c2,
                    replace(c3_caveats, purposes=frozenset({"billing"})),
                    [],
                ),
            )
        ),
        "widened:purpose",
    )

    # -- the chain
    random_parent = hashlib.sha256(b"not a link").digest()
    add(
        "root names a parent",
        "the first link has parent nil",
        chain_text(resign(t, root_a, "vault", setter(parent=random_parent))),
        "chain",
    )
    add(
        "parent id of another link",
        "a link's parent is the link id of the link before it",
        chain_text(*pairs(root_b), resign(t, b2, "clinic", setter(parent=root_a.link_id))),
        "chain",
    )
    add(
        "issuer is not the parent's audience",
        "a link's iss is the audience of the link before it",
        chain_text(*pairs(root_b), resign(t, b2, "mallory", setter(iss=t.pub("mallory")))),
        "chain",
    )
    add(
        "links reordered",
        "the first link has parent nil",
        chain_text(*pairs(b2, root_b)),
        "chain",
    )
    add(
        "middle link removed",
        "a link's parent is the link id of the link before it",
        chain_text(*pairs(root_b, c3)),
        "chain",
    )
    add(
        "root link duplicated",
        "a link's parent is the link id of the link before it",
        chain_text(*pairs(root_b, root_b, b2)),
        "chain",
    )
    add(
        "link spliced from another chain",
        "a link's parent is the link id of the link before it",
        chain_text(*pairs(root_a, b2)),
        "chain",
    )

    # -- signatures, issuer, vault, lifetime
    def flip(signature: bytes, index: int = 0) -> bytes:
        return signature[:index] + bytes([signature[index] ^ 0x01]) + signature[index + 1 :]

    add(
        "root signature bit flipped",
        "each link's signature verifies under its iss with label pds/link/v1",
        chain_text((root_a.payload, flip(root_a.signature))),
        "signature",
    )
    add(
        "root signature zeroed",
        "each link's signature verifies under its iss with label pds/link/v1",
        chain_text((root_a.payload, bytes(64))),
        "signature",
    )
    add(
        "second link signature bit flipped",
        "each link's signature verifies under its iss with label pds/link/v1",
        chain_text(*pairs(root_b), (b2.payload, flip(b2.signature, 40))),
        "signature",
    )
    add(
        "root signed with another label",
        "the signing input is 'pds/link/v1' || 0x00 || payload",
        chain_text((root_a.payload, t.keys["vault"].sign(b"pds/invocation/v1", root_a.payload))),
        "signature",
    )
    add(
        "root signed without a label",
        "the signing input is 'pds/link/v1' || 0x00 || payload",
        chain_text((root_a.payload, t.keys["vault"].sign_raw(root_a.payload))),
        "signature",
    )
    changed_payload = _codec.encode(
        {**_codec.decode(root_a.payload), "purpose": ["cure"]}  # same length, still canonical
    )
    add(
        "root payload changed after signing",
        "the signature covers exactly the payload bytes",
        chain_text((changed_payload, root_a.signature)),
        "signature",
    )
    add(
        "root claims the vault as issuer but is signed by another key",
        "each link's signature verifies under its iss",
        chain_text(
            (
                root_a.payload,
                t.keys["mallory"].sign(capability.LINK_SIGNATURE_LABEL, root_a.payload),
            )
        ),
        "signature",
    )
    add(
        "root issued by another key",
        "the first link's iss is the vault identity key",
        chain_text(*pairs(mk("mallory", "clinic", None, caveats(), visits))),
        "issuer",
    )
    add(
        "token for another vault",
        "every link's vault is the vault being accessed",
        chain_text(
            *pairs(mk("vault", "clinic", None, caveats(), visits, vault_id=t.other_vault_id))
        ),
        "vault",
    )
    add(
        "second link names another vault",
        "every link's vault is the vault being accessed",
        chain_text(
            *pairs(root_b),
            resign(t, b2, "clinic", setter(vault=t.other_vault_id)),
        ),
        "vault",
    )
    add(
        "lifetime over the policy",
        "the root's exp - nbf is at most the vault's max_lifetime_ms",
        text_a,
        "lifetime",
        at=context(t, max_lifetime_ms=7 * DAY),
    )

    # -- time
    add(
        "expired",
        "now - CLOCK_SKEW_MS < exp for every link",
        text_a,
        "expired",
        at=context(t, now=T0 + 30 * DAY + SKEW),
    )
    add(
        "not yet valid",
        "now + CLOCK_SKEW_MS >= nbf for every link",
        text_a,
        "not-yet-valid",
        at=context(t, now=T0 - SKEW - 1),
    )
    add(
        "second link expired, root still valid",
        "now - CLOCK_SKEW_MS < exp for every link",
        text_b,
        "expired",
        at=context(t, now=T0 + 7 * DAY + SKEW),
    )
    add(
        "second link not yet valid, root valid",
        "now + CLOCK_SKEW_MS >= nbf for every link",
        text_b,
        "not-yet-valid",
        at=context(t, now=T0 + HOUR - SKEW - 1),
    )

    # -- strict parsing of the link payload (signed, so only parsing can refuse it)

    def root_with(change: Callable[[dict[str, Any]], None] | None, **kw: Any) -> str:
        return chain_text(resign(t, root_a, "vault", change, **kw))

    add(
        "unknown caveat",
        "a link payload has exactly the 18 known keys; an unknown key is refused",
        root_with(setter(region="eu")),
        "unknown-caveat",
    )
    add(
        "unknown ability",
        "abilities are read, list, delegate",
        root_with(setter(ability=["admin", "read"])),
        "unknown-caveat",
    )
    add(
        "reserved ability deposit",
        "deposit is reserved for a later version and refused",
        root_with(setter(ability=["deposit", "read"])),
        "unknown-caveat",
    )
    add(
        "reserved ability subscribe",
        "subscribe is reserved for a later version and refused",
        root_with(setter(ability=["read", "subscribe"])),
        "unknown-caveat",
    )
    add(
        "link version 2",
        "a link's v is the integer 1",
        root_with(setter(v=2)),
        "version",
    )
    add(
        "token version 2",
        "a token's v is the integer 1",
        text_of(token_bytes(pairs(root_a), version=2)),
        "version",
    )

    def drop(key: str) -> Callable[[dict[str, Any]], None]:
        def change(doc: dict[str, Any]) -> None:
            del doc[key]

        return change

    add(
        "missing field",
        "a link payload has exactly the 18 known keys",
        root_with(drop("salt")),
        "malformed",
    )
    shape_cases: list[tuple[str, str, dict[str, Any]]] = [
        ("abilities unsorted", "lists are sorted and unique", {"ability": ["read", "list"]}),
        ("purpose duplicated", "lists are sorted and unique", {"purpose": ["care", "care"]}),
        ("collections empty", "collections is a non-empty list", {"collections": []}),
        (
            "collection pattern with an inner wildcard",
            "a pattern is a collection name, a name followed by '/*', or '*'",
            {"collections": ["health/*/x"]},
        ),
        (
            "collection pattern '*/visits'",
            "a pattern is a collection name, a name followed by '/*', or '*'",
            {"collections": ["*/visits"]},
        ),
        ("fields empty", "fields is nil or a non-empty list", {"fields": []}),
        ("nbf equals exp", "nbf < exp", {"nbf": T0 + 30 * DAY}),
        ("window start equals end", "window start < end when both are set", {"window": [T0, T0]}),
        ("window of three items", "window is [start, end]", {"window": [None, None, None]}),
        ("uses 0", "uses is nil or an integer >= 1", {"uses": 0}),
        ("defer 0", "defer is nil or an integer >= 1", {"defer": 0}),
        ("depth negative", "depth is an integer >= 0", {"depth": -1}),
        ("nbf a float", "nbf is an integer", {"nbf": float(T0)}),
        ("exp a boolean", "exp is an integer", {"exp": True}),
        ("basis empty text", "basis is nil or text of 1 to 256 characters", {"basis": ""}),
        ("purpose too long", "text items are 1 to 256 characters", {"purpose": ["x" * 257]}),
        ("vault not text", "vault is text", {"vault": b"vault"}),
        ("parent of 31 bytes", "parent is nil or a 32-byte link id", {"parent": bytes(31)}),
        ("salt of 15 bytes", "salt is 16 bytes", {"salt": bytes(15)}),
        ("keys not a list", "keys is a list", {"keys": {}}),
        (
            "key entry of two items",
            "a key entry is [collection, epoch, sealed]",
            {"keys": [["health/visits", 1]]},
        ),
        (
            "key epoch 0",
            "a key's epoch is an integer >= 1",
            {"keys": [["health/visits", 0, bytes(80)]]},
        ),
        ("exp of 2^63", "every integer is below 2^63", {"exp": 2**63}),
        ("uses of 2^64 - 1", "every integer is below 2^63", {"uses": 2**64 - 1}),
    ]
    for name, rule, values in shape_cases:
        add(name, rule, root_with(setter(**values)), "malformed")

    def reverse_keys(doc: dict[str, Any]) -> None:
        keys = doc["keys"]
        doc["keys"] = list(reversed(keys))

    add(
        "keys unsorted",
        "keys are sorted by (collection, epoch) and unique",
        root_with(reverse_keys),
        "malformed",
    )
    low_order = b"\x01" + bytes(31)  # the neutral element: a point of small order
    add(
        "audience a small-order point",
        "iss and aud are valid Ed25519 public keys of prime order",
        root_with(setter(aud=low_order)),
        "key",
    )
    add(
        "issuer of 31 bytes",
        "iss and aud are 32-byte Ed25519 public keys",
        chain_text((resign(t, root_a, "vault", setter(iss=t.pub("vault")[:31]))[0], bytes(64))),
        "key",
    )

    def non_canonical_unsorted(doc: dict[str, Any]) -> bytes:
        packed: bytes = msgpack.packb(dict(reversed(list(doc.items()))), use_bin_type=True)
        return packed

    def non_canonical_depth(doc: dict[str, Any]) -> bytes:
        encoded = _codec.encode(doc)
        marker = b"\xa5depth\x00"
        assert encoded.count(marker) == 1
        return encoded.replace(marker, b"\xa5depth\xcc\x00")

    def trailing(doc: dict[str, Any]) -> bytes:
        return _codec.encode(doc) + b"\xc0"

    add(
        "payload map keys unsorted",
        "a link payload is canonical msgpack (map keys sorted by UTF-8 bytes)",
        root_with(None, encode=non_canonical_unsorted),
        "malformed",
    )
    add(
        "payload integer not in its shortest form",
        "a link payload is canonical msgpack (integers in their shortest form)",
        root_with(None, encode=non_canonical_depth),
        "malformed",
    )
    add(
        "payload with a trailing byte",
        "a link payload is exactly one msgpack value",
        root_with(None, encode=trailing),
        "malformed",
    )
    add(
        "payload not a map",
        "a link payload is a map",
        chain_text(
            (
                _codec.encode(["v", 1]),
                t.keys["vault"].sign(capability.LINK_SIGNATURE_LABEL, _codec.encode(["v", 1])),
            )
        ),
        "malformed",
    )
    add(
        "signature of 63 bytes",
        "a signature is 64 bytes",
        chain_text((root_a.payload, root_a.signature[:63])),
        "malformed",
    )
    add(
        "link of three items",
        "a link is [payload, signature]",
        text_of(_codec.encode({"v": 1, "links": [[root_a.payload, root_a.signature, b""]]})),
        "malformed",
    )
    add(
        "payload as text",
        "a link's payload is binary",
        text_of(_codec.encode({"v": 1, "links": [[root_a.payload.hex(), root_a.signature]]})),
        "malformed",
    )
    add(
        "no links",
        "a token has 1 to 16 links",
        text_of(token_bytes([])),
        "malformed",
    )
    add(
        "17 links",
        "a token has 1 to 16 links",
        text_of(token_bytes(pairs(root_a) * 17)),
        "malformed",
    )
    add(
        "token map with an extra key",
        "a token is a map of exactly v and links",
        text_of(_codec.encode({"v": 1, "links": [[root_a.payload, root_a.signature]], "x": 0})),
        "malformed",
    )
    outer_unsorted: bytes = msgpack.packb(
        {"v": 1, "links": [[root_a.payload, root_a.signature]]}, use_bin_type=True
    )
    add(
        "token map keys unsorted",
        "token bytes are canonical msgpack",
        text_of(outer_unsorted),
        "malformed",
    )
    add(
        "token bytes with a trailing byte",
        "token bytes are exactly one msgpack value",
        text_of(token_a.to_bytes() + b"\x00"),
        "malformed",
    )

    # -- the text form
    # A token whose base64url ends in a partial group, so that it has unused bits.
    text_t = next(
        text
        for text in (text_a, text_b, text_c, Token((root_star,)).to_text())
        if len(text[len(capability.TOKEN_PREFIX) :]) % 4
    )
    body_t = text_t[len(capability.TOKEN_PREFIX) :]
    dash = next(i for i, ch in enumerate(body_t) if ch in "-_")
    standard = {"-": "+", "_": "/"}[body_t[dash]]
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    last = alphabet.index(body_t[-1])
    spare_bits = {2: 4, 3: 2}[len(body_t) % 4]
    assert last % (1 << spare_bits) == 0
    text_cases = [
        ("wrong prefix", "the text starts with pdst1_", "pdst2_" + body_t),
        ("no prefix", "the text starts with pdst1_", body_t),
        ("prefix in capitals", "the prefix is lowercase", "PDST1_" + body_t),
        ("padding", "base64url without padding", text_t + "=" * (-len(body_t) % 4)),
        (
            "standard base64 alphabet",
            "the base64url alphabet (- and _), not + and /",
            capability.TOKEN_PREFIX + body_t[:dash] + standard + body_t[dash + 1 :],
        ),
        (
            "space inside",
            "no characters outside the base64url alphabet",
            capability.TOKEN_PREFIX + body_t[:40] + " " + body_t[40:],
        ),
        (
            "non-zero unused bits",
            "the final character's unused bits are zero (canonical base64url)",
            text_t[:-1] + alphabet[last + 1],
        ),
        (
            "impossible length",
            "a base64url length is never 1 more than a multiple of 4",
            text_t + "A" * ((1 - len(body_t)) % 4),
        ),
        (
            "non-ASCII character",
            "no characters outside the base64url alphabet",
            capability.TOKEN_PREFIX + body_t[:40] + "\u00e9" + body_t[41:],
        ),
        ("empty", "the text encodes a token", capability.TOKEN_PREFIX),
    ]
    for name, rule, text in text_cases:
        add(name, rule, text, "malformed")

    # -- version markers are exact integers; the text form is exact
    add(
        "link version true",
        "a link's v is the integer 1; true is a boolean, not an integer",
        root_with(setter(v=True)),
        "version",
    )
    add(
        "link version 1.0",
        "a link's v is the integer 1; 1.0 is a float",
        root_with(setter(v=1.0)),
        "version",
    )
    add(
        "token version true",
        "a token's v is the integer 1; true is a boolean, not an integer",
        text_of(token_bytes(pairs(root_a), version=True)),
        "version",
    )
    add(
        "trailing newline",
        "the text form is exactly the prefix and the base64url characters",
        text_t + "\n",
        "malformed",
    )

    # Every label must be what pds says (or, for a noted deviation, what it does not say).
    for vector in valid:
        verdict = pds_token_verdict(vector["token"], vector["context"])
        if verdict is not None:
            raise AssertionError(f"valid token {vector['name']!r}: pds says {verdict}")
        parsed = Token.from_text(vector["token"])
        assert parsed.to_text() == vector["token"]
    names = [vector["name"] for vector in bad]
    assert len(set(names)) == len(names), "vector names are unique"
    for vector in bad:
        verdict = pds_token_verdict(vector["token"], vector["context"])
        expected = (vector["expect"]["error"], vector["expect"]["reason"])
        if "pds_deviation" in vector:
            if verdict == expected:
                raise AssertionError(f"{vector['name']!r}: pds now agrees; drop the deviation")
        elif verdict != expected:
            raise AssertionError(f"invalid token {vector['name']!r}: pds says {verdict}")

    return {
        "about": (
            "Capability tokens (docs/spec/token.md). Each vector is verified with its "
            "'context': parse the text form, verify the chain for 'vault' with the root "
            "issuer 'identity' and the lifetime policy 'max_lifetime_ms', then check the "
            "times at 'now' (ms) with the clock-skew allowance. 'valid' vectors pass, and "
            "list every link (payload, decoded payload, signing input, signature, link id, "
            "and the epoch secret each sealed key opens to with the audience's key) and the "
            "effective caveats. 'invalid' vectors MUST fail with exactly 'expect' (the pds "
            "error class and reason code); 'stage' is where (parse, chain, times) and "
            "'rule' the rule broken. A 'pds_deviation' note marks a vector pds does not yet "
            "refuse as the spec requires. Binary values are lowercase hex."
        ),
        "generator": "tests/vectors/generate_tokens.py",
        "clock_skew_ms": SKEW,
        "default_max_lifetime_ms": DEFAULT_MAX_LIFETIME_MS,
        "principals": [
            {
                "name": name,
                "index": i,
                "seed": principal_seed(i).hex(),
                "public": t.pub(name).hex(),
                "did": _crypto.did_key(t.pub(name)),
            }
            for i, name in enumerate(PRINCIPALS)
        ],
        "vault": t.vault_id,
        "other_vault": t.other_vault_id,
        "epochs": [
            {
                "collection": collection,
                "epoch": epoch,
                "secret": secret.hex(),
                "public": _crypto.x25519_public(secret).hex(),
            }
            for (collection, epoch), secret in sorted(t.epochs.items())
        ],
        "valid": valid,
        "invalid": bad,
        "invocation": invocation_vector(t, token_b),
        "revocation": revocation_vector(t, root_b, c2),
    }


def invocation_vector(t: Tokens, token: Token) -> Json:
    """One invocation by the two-link chain's holder (lab), with every optional field."""
    time = T0 + 2 * HOUR
    body = invocation.build_body(
        vault_id=t.vault_id,
        token=token,
        action="read",
        purpose="care",
        time=time,
        nonce=t.rng(16),
        collection="health/visits",
        records=["visit-1", "visit-2"],
        since=T0 - 7 * DAY,
        until=None,
        limit=50,
        cursor=None,
        agent="lab-tech-7",
        correlation="order-2291",
        defer=(time + 12 * HOUR, "result pending review"),
    )
    signature = t.keys["lab"].sign(invocation.INVOCATION_SIGNATURE_LABEL, body)
    wire = invocation.wire(body, signature)
    parsed = pds.Invocation.parse(invocation.INVOCATION_PREFIX + b64url(wire))
    assert parsed.request_id == hashlib.sha256(body).digest()
    return {
        "description": (
            "lab invokes the two-link token: a read of two records of health/visits, with "
            "an agent, a correlation id and a deferral of 12 hours (the token allows one "
            "day). 'host_now' is a host clock at which it is fresh."
        ),
        "signer": "lab",
        "host_now": time + 2 * MINUTE,
        "freshness_ms": invocation.FRESHNESS_MS,
        "body": body.hex(),
        "decoded": hexed(_codec.decode(body)),
        "signing_input": (invocation.INVOCATION_SIGNATURE_LABEL + b"\x00" + body).hex(),
        "signature": signature.hex(),
        "wire": wire.hex(),
        "text": invocation.INVOCATION_PREFIX + b64url(wire),
        "request_id": parsed.request_id.hex(),
    }


def revocation_vector(t: Tokens, first: Link, second: Link) -> Json:
    """Revocation statements and a signed revocation list, encoded as ``Vault.revoke``
    and ``Vault.revocation_list`` encode them."""
    identity = t.keys["vault"]
    statements = []
    for link, revoked_at, reason in (
        (first, T0 + 3 * DAY, "consent withdrawn"),
        (second, T0 + 4 * DAY, ""),
    ):
        statement = _codec.encode(
            {
                "v": 1,
                "vault": t.vault_id,
                "link": link.link_id,
                "revoked_at": revoked_at,
                "reason": reason,
            }
        )
        statements.append((statement, identity.sign(capability.REVOCATION_LABEL, statement)))
    body = _codec.encode(
        {
            "v": 1,
            "vault": t.vault_id,
            "issued_at": T0 + 5 * DAY,
            "revocations": [[s, sig] for s, sig in statements],
        }
    )
    signature = identity.sign(capability.REVOCATION_LIST_LABEL, body)
    document = _codec.encode({"body": body, "sig": signature})
    return {
        "description": (
            "The vault revokes the root of the two-link chain (which revokes every "
            "descendant) and the three-link chain's second link, then issues its list."
        ),
        "statements": [
            {
                "statement": s.hex(),
                "decoded": hexed(_codec.decode(s)),
                "signature": sig.hex(),
            }
            for s, sig in statements
        ],
        "list": document.hex(),
        "list_body": body.hex(),
        "list_signature": signature.hex(),
    }


# -- log vectors --------------------------------------------------------------------------


def at(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, tz=UTC)


class LogBuild:
    """A vault whose log holds one entry of most kinds, written by pds itself."""

    def __init__(self, directory: Path) -> None:
        self.rng = CounterRng(LOG_SEED)
        self.clock = SteppingClock()
        self.store = pds.open_store(
            directory / "log.db",
            host_key=pds.SymmetricKey(HOST_KEY, rng=self.rng),
            clock=self.clock,
            rng=self.rng,
        )
        owner = pds.SymmetricKey(OWNER_KEY, rng=self.rng)
        self.vault_id = self.store.create_vault(key_provider=owner)
        vault = self.vault = self.store.open_vault(self.vault_id)
        vault.unlock(key_provider=owner)
        keys = vault._keys()
        self.identity = keys.identity
        self.owner_x25519_secret = keys.x25519_secret

        vault.put("health/visits", {"clinic": "north", "date": "2025-01-02"}, record_id="visit-1")
        vault.put("health/visits", {"clinic": "east", "date": "2025-01-03"}, record_id="visit-2")
        vault.put("profile", {"name": "Aino"}, record_id="person")
        clinic_key = pds.PrincipalKey.generate(rng=self.rng)
        lab_key = pds.PrincipalKey.generate(rng=self.rng)
        clinic = pds.Grantee(clinic_key, clock=self.clock, rng=self.rng)
        lab = pds.Grantee(lab_key, clock=self.clock, rng=self.rng)
        self.grantees = {"clinic": clinic_key.public_key, "lab": lab_key.public_key}
        token = vault.grant(
            clinic.did,
            collections=["health/*"],
            purpose=["care"],
            basis="consent",
            expires=timedelta(days=30),
            delegable=1,
            defer=timedelta(days=7),
        )
        clinic.read(
            self.store, token, collection="health/visits", agent="dr-lind", correlation="case-17"
        )
        clinic.read(self.store, token, action="list")
        delegated = clinic.delegate(token, to=lab.did, fields=["date"], expires=timedelta(days=2))
        now = at(int(self.clock() * 1000))
        lab.read(
            self.store,
            delegated,
            records=["visit-1"],
            defer_until=now + timedelta(days=1),
            defer_reason="result pending review",
        )
        self._refused(lambda: lab.read(self.store, delegated, purpose="billing"), "NotPermitted")
        vault.get("person")
        vault.revoke(token, reason="consent withdrawn")
        self._refused(lambda: lab.read(self.store, delegated), "Revoked")
        vault.rotate("health/visits")
        # A host drops the revocation row; the owner's repair signs it again from the log.
        dropped = sqlite3.connect(directory / "log.db")
        with dropped:
            dropped.execute("DELETE FROM revocations")
        dropped.close()
        vault.repair()
        vault.rekey(key_provider=pds.SymmetricKey(NEW_OWNER_KEY, rng=self.rng))
        vault.export(io.BytesIO())
        self.checkpoint = vault.checkpoint()

    @staticmethod
    def _refused(action: Callable[[], object], error: str) -> None:
        try:
            action()
        except PDSError as exc:
            assert type(exc).__name__ == error, exc
            return
        raise AssertionError("the read was expected to be refused")

    def close(self) -> None:
        self.store.close()


def pds_proof_verdict(check: Callable[[], None]) -> tuple[str, str] | None:
    try:
        check()
    except PDSError as exc:
        return type(exc).__name__, getattr(exc, "reason", "")
    return None


def log_vectors(directory: Path) -> Json:
    build = LogBuild(directory)
    try:
        return _log_vectors(build)
    finally:
        build.close()


LINES_RULE = (
    "the body is origin, size, root, a 'time <ms>' line, then a 'revoked <count> <digest>' "
    "and a 'rotated <count> <digest>' line, both of which a head signed before them lacks"
)


def _log_vectors(build: LogBuild) -> Json:
    vault = build.vault
    backend = vault._ctx.backend
    raws = [raw for _, raw in backend.iter_log(build.vault_id, 0, vault.log_size())]
    entries = [LogEntry.parse(raw) for raw in raws]
    leaves = [entry.leaf_hash for entry in entries]
    n = len(leaves)
    owner_secret = build.owner_x25519_secret
    owner_public = _crypto.x25519_public(owner_secret)
    assert owner_public == _crypto.ed25519_to_x25519(build.identity.public)

    entry_docs = []
    for entry in entries:
        key = entry.disclosure_key(owner_secret)
        details = entry.open(owner_secret)
        assert accesslog.open_disclosed(entry.sealed, owner_public, key) == details
        header = _codec.decode(entry.raw)
        doc: Json = {
            "index": entry.index,
            "entry": entry.raw.hex(),
            "leaf_hash": entry.leaf_hash.hex(),
            "header": hexed(header),
            "details": {k: v for k, v in details.items() if k != "signature"},
            "disclosure_key": key.hex(),
        }
        if entry.kind in accesslog.OWNER_KINDS:
            assert entry.signed_by_owner(details, build.identity.public)
            doc["owner_statement"] = entry.owner_statement(details).hex()
            doc["owner_signature"] = details["signature"].hex()
        else:
            assert "signature" not in details
        entry_docs.append(doc)

    roots = [merkle.root(leaves[:size]) for size in range(n + 1)]
    for size in range(n + 1):
        assert vault.log_root(size) == roots[size]
    inclusion = []
    for size in range(1, n + 1):
        for index in range(size):
            proof = merkle.inclusion_proof(index, leaves[:size])
            assert vault.prove_inclusion(index, size)[1] == proof
            merkle.verify_inclusion(leaves[index], index, size, proof, roots[size])
            inclusion.append({"index": index, "size": size, "proof": hexed(proof)})
    consistency: list[Json] = [
        {"old_size": 0, "size": n, "proof": []},
        {"old_size": n, "size": n, "proof": []},
    ]
    for size in range(2, n + 1):
        for old in range(1, size):
            proof = merkle.consistency_proof(old, leaves[:size])
            assert vault.prove_consistency(old, size) == proof
            merkle.verify_consistency(old, size, roots[old], roots[size], proof)
            consistency.append({"old_size": old, "size": size, "proof": hexed(proof)})

    head = build.checkpoint
    assert head.size == n and head.root == roots[n]
    note = head.to_text()
    name = head.origin
    identity = build.identity
    key_id = accesslog.key_id(name, identity.public)
    mallory = _crypto.SigningKey.from_seed(hashlib.sha256(LOG_SEED + b" mallory").digest())

    def sign_body(body: str, signer: _crypto.SigningKey = identity, signer_name: str = name) -> str:
        signature = signer.sign_raw(body.encode())
        line = base64.b64encode(accesslog.key_id(signer_name, signer.public) + signature)
        return f"{body}\n\u2014 {signer_name} {line.decode()}\n"

    body = head.body
    lines = body.rstrip("\n").split("\n")
    origin_line, size_line, root_line, time_line, revoked_line, rotated_line = lines
    assert head.records is not None
    (revoked_count, revoked_hash), (rotated_count, rotated_hash) = head.records
    revoked_b64 = base64.b64encode(revoked_hash).decode()
    assert revoked_line == f"revoked {revoked_count} {revoked_b64}"
    assert rotated_line == f"rotated {rotated_count} {base64.b64encode(rotated_hash).decode()}"
    newest = rotations(entries, build)
    assert rotated_digest(newest) == head.records[1] and rotated_count >= 1
    root_b64 = base64.b64encode(head.root).decode()
    cosigned = body + "\n" + sign_body(body, mallory, "witness.example/w1").split("\n\n")[1]
    cosigned += note.split("\n\n")[1]
    # C2SP signed-note: one name may have several keys, told apart by key id.
    other_key_first = sign_body(body, mallory) + note.split("\n\n")[1]
    valid_checkpoints: list[Json] = [
        {"name": "the vault's checkpoint", "note": note},
        {
            "name": "with a cosignature line by another name before the vault's",
            "note": cosigned,
        },
        {
            "name": "with a line by another key under the vault's name before the vault's",
            "note": other_key_first,
        },
        {
            "name": "signed before heads recorded revocations and rotations (4 lines)",
            "note": sign_body(body.replace(f"{revoked_line}\n{rotated_line}\n", "")),
        },
    ]
    for item in valid_checkpoints:
        parsed = Checkpoint.parse(item["note"], identity.public)
        parsed.verify(identity.public)
        assert (parsed.size, parsed.root, parsed.time) == (head.size, head.root, head.time)

    signature_line = note.split("\n\n")[1]
    sig_b64 = signature_line.rsplit(" ", 1)[1].strip()
    sig_raw = base64.b64decode(sig_b64)
    flipped = sig_raw[:10] + bytes([sig_raw[10] ^ 1]) + sig_raw[11:]
    bad_root = base64.b64encode(bytes(32)).decode()
    # A root whose final base64 character has non-zero unused bits decodes to the same bytes.
    b64_alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    noncanonical_root = root_b64[:-2] + b64_alphabet[b64_alphabet.index(root_b64[-2]) + 1] + "="
    assert base64.b64decode(noncanonical_root) == head.root
    fmt = {"error": "FormatError"}
    bad_key = {"error": "InvalidProof", "reason": "checkpoint-key"}
    bad_sig = {"error": "InvalidProof", "reason": "checkpoint-signature"}
    invalid_checkpoints: list[Json] = [
        {
            "name": "CRLF line endings",
            "rule": "lines end with a single 0x0A",
            "note": note.replace("\n", "\r\n"),
            "expect": fmt,
        },
        {
            "name": "no blank line before the signatures",
            "rule": "the body ends with an empty line",
            "note": body + signature_line,
            "expect": fmt,
        },
        {
            "name": "no time line",
            "rule": LINES_RULE,
            "note": sign_body(
                f"{origin_line}\n{size_line}\n{root_line}\n{revoked_line}\n{rotated_line}\n"
            ),
            "expect": fmt,
        },
        {
            "name": "a revoked line without the rotated line",
            "rule": LINES_RULE,
            "note": sign_body(body.replace(rotated_line + "\n", "")),
            "expect": fmt,
        },
        {
            "name": "the rotated line before the revoked line",
            "rule": LINES_RULE,
            "note": sign_body(
                body.replace(
                    f"{revoked_line}\n{rotated_line}\n", f"{rotated_line}\n{revoked_line}\n"
                )
            ),
            "expect": fmt,
        },
        {
            "name": "a third extension line",
            "rule": LINES_RULE,
            "note": sign_body(body + "witness 1\n"),
            "expect": fmt,
        },
        {
            "name": "the revoked line before the time line",
            "rule": LINES_RULE,
            "note": sign_body(
                f"{origin_line}\n{size_line}\n{root_line}\n{revoked_line}\n{time_line}\n"
                f"{rotated_line}\n"
            ),
            "expect": fmt,
        },
        {
            "name": "revoked line with another keyword",
            "rule": "the revoked line is 'revoked', a space, the count, a space and the digest",
            "note": sign_body(body.replace("\nrevoked ", "\nrevocations ", 1)),
            "expect": fmt,
        },
        {
            "name": "revoked line without its digest",
            "rule": "the revoked line is 'revoked', a space, the count, a space and the digest",
            "note": sign_body(body.replace(revoked_line, f"revoked {revoked_count}", 1)),
            "expect": fmt,
        },
        {
            "name": "revoked count with a leading zero",
            "rule": "the count is decimal ASCII without leading zeros",
            "note": sign_body(
                body.replace(revoked_line, f"revoked 0{revoked_count} {revoked_b64}", 1)
            ),
            "expect": fmt,
        },
        {
            "name": "revoked digest of 31 bytes",
            "rule": "the digest is standard padded base64 of 32 bytes",
            "note": sign_body(
                body.replace(revoked_b64, base64.b64encode(revoked_hash[:31]).decode(), 1)
            ),
            "expect": fmt,
        },
        {
            "name": "origin of another kind of log",
            "rule": "the origin is 'pds/vault/' followed by the vault id",
            "note": sign_body(
                body.replace("pds/vault/", "example.com/log/", 1),
                identity,
                name.replace("pds/vault/", "example.com/log/", 1),
            ),
            "expect": fmt,
        },
        {
            "name": "size with a leading zero",
            "rule": "the size is decimal ASCII without leading zeros",
            "note": sign_body(body.replace(f"\n{size_line}\n", f"\n0{size_line}\n", 1)),
            "expect": fmt,
        },
        {
            "name": "size not a number",
            "rule": "the size is decimal ASCII without leading zeros",
            "note": sign_body(body.replace(f"\n{size_line}\n", "\n-1\n", 1)),
            "expect": fmt,
        },
        {
            "name": "time line with another keyword",
            "rule": "the extension line is 'time ' followed by decimal ms",
            "note": sign_body(body.replace("\ntime ", "\nTime ", 1)),
            "expect": fmt,
        },
        {
            "name": "root not base64",
            "rule": "the root is standard padded base64 of 32 bytes",
            "note": sign_body(body.replace(root_line, "!" * len(root_line), 1)),
            "expect": fmt,
        },
        {
            "name": "root of 31 bytes",
            "rule": "the root is standard padded base64 of 32 bytes",
            "note": sign_body(body.replace(root_line, base64.b64encode(head.root[:31]).decode())),
            "expect": fmt,
        },
        {
            "name": "signature line without its final newline",
            "rule": "every line ends with 0x0A",
            "note": note[:-1],
            "expect": fmt,
        },
        {
            "name": "signed only by another name",
            "rule": "a signature line by the origin's name is required",
            "note": sign_body(body, mallory, "witness.example/w1"),
            "expect": fmt,
        },
        {
            "name": "signature not base64",
            "rule": "the signature is standard base64 of key id || signature",
            "note": note.replace(sig_b64, "*" + sig_b64[1:]),
            "expect": fmt,
        },
        {
            "name": "signature of 67 bytes",
            "rule": "key id (4 bytes) || Ed25519 signature (64 bytes)",
            "note": note.replace(sig_b64, base64.b64encode(sig_raw[:67]).decode()),
            "expect": fmt,
        },
        {
            "name": "longer than 4096 characters",
            "rule": "a note is at most 4096 characters",
            "note": body
            + "\n"
            + (f"\u2014 filler {base64.b64encode(bytes(68)).decode()}\n" * 40)
            + signature_line,
            "expect": fmt,
        },
        {
            "name": "signed by another key under the vault's name",
            "rule": "the key id is SHA-256(origin || 0x0A || 0x01 || identity key)[:4]",
            "note": sign_body(body, mallory),
            "expect": bad_key,
        },
        {
            "name": "a failing line by the vault's key before a valid one",
            "rule": "the first line by the origin's name and key id decides",
            "note": note.replace(
                "\n\n" + signature_line,
                "\n\n"
                + signature_line.replace(sig_b64, base64.b64encode(flipped).decode())
                + signature_line,
            ),
            "expect": bad_sig,
        },
        {
            "name": "verified with another vault's key",
            "rule": "the key id is SHA-256(origin || 0x0A || 0x01 || identity key)[:4]",
            "note": note,
            "public": mallory.public.hex(),
            "expect": bad_key,
        },
        {
            "name": "size changed",
            "rule": "the signature covers the body exactly",
            "note": note.replace(f"\n{size_line}\n", f"\n{int(size_line) + 1}\n", 1),
            "expect": bad_sig,
        },
        {
            "name": "root changed",
            "rule": "the signature covers the body exactly",
            "note": note.replace(root_line, bad_root, 1),
            "expect": bad_sig,
        },
        {
            "name": "time changed",
            "rule": "the signature covers the body exactly",
            "note": note.replace(time_line, f"time {head.time + 1}", 1),
            "expect": bad_sig,
        },
        {
            "name": "signature bit flipped",
            "rule": "the Ed25519 signature verifies over the body",
            "note": note.replace(sig_b64, base64.b64encode(flipped).decode()),
            "expect": bad_sig,
        },
        {
            "name": "signature over a labelled input",
            "rule": "checkpoints are plain Ed25519 over the note body, without a pds label",
            "note": note.replace(
                sig_b64,
                base64.b64encode(
                    key_id + identity.sign(b"pds/checkpoint/v1", body.encode())
                ).decode(),
            ),
            "expect": bad_sig,
        },
        {
            "name": "time with a leading zero, signature over the canonical body",
            "rule": "the time is decimal ASCII without leading zeros",
            "note": note.replace(time_line, f"time 0{head.time}", 1),
            "expect": fmt,
        },
        {
            "name": "root with non-zero unused base64 bits, signature over the canonical body",
            "rule": "the root is canonical base64",
            "note": note.replace(root_line, noncanonical_root, 1),
            "expect": fmt,
        },
    ]
    for item in invalid_checkpoints:
        public = bytes.fromhex(item.get("public", identity.public.hex()))
        text = item["note"]

        def check(text: str = text, public: bytes = public) -> None:
            Checkpoint.parse(text, public).verify(public)

        verdict = pds_proof_verdict(check)
        wanted = item["expect"]
        got = (
            None
            if verdict is None
            else {
                "error": verdict[0],
                **({"reason": verdict[1]} if verdict[0] == "InvalidProof" else {}),
            }
        )
        if "pds_deviation" in item:
            if got == wanted:
                raise AssertionError(f"checkpoint {item['name']!r}: pds now agrees")
        elif got != wanted:
            raise AssertionError(f"checkpoint {item['name']!r}: pds says {got}")

    invalid_inclusion = _invalid_inclusion(entries, leaves, roots)
    invalid_consistency = _invalid_consistency(leaves, roots)
    pinned = _pinned_cases(build, entries, leaves, roots)

    return {
        "about": (
            "The access log of one vault (docs/spec/log.md), written by pds. 'entries' are "
            "the stored entry bytes with their public header, the details sealed to the "
            "owner (opened here; the owner's 'signature' key shown apart), the per-entry "
            "disclosure key and the leaf hash SHA-256(0x00 || entry); an entry the owner "
            "appends has 'owner_statement' (what the owner signs: the header with the "
            "details in place of 'sealed') and 'owner_signature', Ed25519 over "
            "'pds/owner-entry/v1' || 0x00 || statement. 'roots' holds MTH at every size; "
            "'inclusion' and 'consistency' every proof (RFC 9162 section 2.1) of this log, "
            "plus the two degenerate consistency cases pds accepts (old size 0, and equal sizes). "
            "'checkpoint' is the latest signed note. Each 'invalid_*' case and each "
            "'pinned' case that has 'expect' MUST fail with exactly that error (and reason); "
            "'rule' is the rule it breaks. A 'pds_deviation' note marks a case pds does not "
            "yet refuse as the spec requires. Binary values are lowercase hex."
        ),
        "generator": "tests/vectors/generate_tokens.py",
        "vault": build.vault_id,
        "origin": head.origin,
        "identity": {
            "seed": identity.seed.hex(),
            "public": identity.public.hex(),
            "did": _crypto.did_key(identity.public),
        },
        "owner_x25519": {"secret": owner_secret.hex(), "public": owner_public.hex()},
        "grantees": {name: key.hex() for name, key in build.grantees.items()},
        "key_id": key_id.hex(),
        "verifier_key": accesslog.verifier_key(name, identity.public),
        "empty_root": merkle.EMPTY_ROOT.hex(),
        "entries": entry_docs,
        "roots": [{"size": size, "root": root.hex()} for size, root in enumerate(roots)],
        "inclusion": inclusion,
        "consistency": consistency,
        "checkpoint": {
            "note": note,
            "body": body,
            "origin": head.origin,
            "size": head.size,
            "root": head.root.hex(),
            "time": head.time,
            "key_id": head.key_id.hex(),
            "signature": head.signature.hex(),
            "revoked": {
                "count": revoked_count,
                "digest": revoked_hash.hex(),
                "links": sorted(
                    e.link_id.hex() for e in entries if e.kind == "revoke" and e.link_id
                ),
            },
            "rotated": {
                "count": rotated_count,
                "digest": rotated_hash.hex(),
                "epochs": [[name, newest[name]] for name in sorted(newest, key=str.encode)],
            },
        },
        "valid_checkpoints": valid_checkpoints,
        "invalid_checkpoints": invalid_checkpoints,
        "invalid_inclusion": invalid_inclusion,
        "invalid_consistency": invalid_consistency,
        "pinned": pinned,
    }


def _proof_case(name: str, rule: str, expect: str, **fields: Any) -> Json:
    return {
        "name": name,
        "rule": rule,
        **hexed(fields),
        "expect": {"error": "InvalidProof", "reason": expect},
    }


def _check_proof_cases(cases: list[Json], kind: str) -> None:
    for case in cases:
        if kind == "inclusion":

            def check(case: Json = case) -> None:
                merkle.verify_inclusion(
                    bytes.fromhex(case["leaf"]),
                    case["index"],
                    case["size"],
                    [bytes.fromhex(p) for p in case["proof"]],
                    bytes.fromhex(case["root"]),
                )

        else:

            def check(case: Json = case) -> None:
                merkle.verify_consistency(
                    case["old_size"],
                    case["size"],
                    bytes.fromhex(case["old_root"]),
                    bytes.fromhex(case["root"]),
                    [bytes.fromhex(p) for p in case["proof"]],
                )

        verdict = pds_proof_verdict(check)
        expected = (case["expect"]["error"], case["expect"]["reason"])
        if verdict != expected:
            raise AssertionError(f"{kind} case {case['name']!r}: pds says {verdict}")


def _invalid_inclusion(
    entries: list[LogEntry], leaves: list[bytes], roots: list[bytes]
) -> list[Json]:
    n = len(leaves)
    index, size = 5, n
    proof = merkle.inclusion_proof(index, leaves)
    leaf, root = leaves[index], roots[size]
    flipped = [proof[0][:-1] + bytes([proof[0][-1] ^ 0x80]), *proof[1:]]
    tampered = bytearray(entries[index].raw)
    tampered[-1] ^= 0x01
    cases = [
        _proof_case(
            "a proof node with a flipped bit",
            "the path hashes to the root",
            "proof-root",
            leaf=leaf,
            index=index,
            size=size,
            proof=flipped,
            root=root,
        ),
        _proof_case(
            "the last proof node removed",
            "a proof has exactly the nodes the index and size require",
            "proof-length",
            leaf=leaf,
            index=index,
            size=size,
            proof=proof[:-1],
            root=root,
        ),
        _proof_case(
            "an extra proof node",
            "a proof has exactly the nodes the index and size require",
            "proof-length",
            leaf=leaf,
            index=index,
            size=size,
            proof=[*proof, roots[1]],
            root=root,
        ),
        _proof_case(
            "the proof of another index",
            "the path hashes to the root",
            "proof-root",
            leaf=leaf,
            index=index - 1,
            size=size,
            proof=proof,
            root=root,
        ),
        _proof_case(
            "the root of another size",
            "the path hashes to the root",
            "proof-root",
            leaf=leaf,
            index=index,
            size=size,
            proof=proof,
            root=roots[size - 1],
        ),
        _proof_case(
            "the leaf of another entry",
            "the path hashes to the root",
            "proof-root",
            leaf=leaves[index + 1],
            index=index,
            size=size,
            proof=proof,
            root=root,
        ),
        _proof_case(
            "an entry with one byte changed",
            "the leaf is SHA-256(0x00 || the entry bytes as stored)",
            "proof-root",
            leaf=merkle.leaf_hash(bytes(tampered)),
            index=index,
            size=size,
            proof=proof,
            root=root,
        ),
        _proof_case(
            "a tree size that needs a longer path",
            "a proof has exactly the nodes the index and size require",
            "proof-length",
            leaf=leaves[0],
            index=0,
            size=9,
            proof=merkle.inclusion_proof(0, leaves[:8]),
            root=roots[9],
        ),
        _proof_case(
            "index equal to the size",
            "0 <= index < size",
            "proof-index",
            leaf=leaf,
            index=size,
            size=size,
            proof=proof,
            root=root,
        ),
        _proof_case(
            "the empty tree",
            "0 <= index < size",
            "proof-index",
            leaf=leaf,
            index=0,
            size=0,
            proof=[],
            root=merkle.EMPTY_ROOT,
        ),
        _proof_case(
            "empty proof for a tree of two leaves",
            "a proof has exactly the nodes the index and size require",
            "proof-length",
            leaf=leaves[0],
            index=0,
            size=2,
            proof=[],
            root=roots[2],
        ),
        _proof_case(
            "a proof node of 31 bytes",
            "every hash is 32 bytes",
            "proof-format",
            leaf=leaf,
            index=index,
            size=size,
            proof=[proof[0][:31], *proof[1:]],
            root=root,
        ),
        _proof_case(
            "a tree of three leaves padded to four",
            "the last leaf is never repeated to fill a tree (RFC 6962, unlike Bitcoin)",
            "proof-length",
            leaf=leaves[2],
            index=2,
            size=3,
            proof=merkle.inclusion_proof(2, [*leaves[:3], leaves[2]]),
            root=merkle.root([*leaves[:3], leaves[2]]),
        ),
    ]
    _check_proof_cases(cases, "inclusion")
    return cases


def _invalid_consistency(leaves: list[bytes], roots: list[bytes]) -> list[Json]:
    n = len(leaves)
    old, size = 5, n
    proof = merkle.consistency_proof(old, leaves)
    flipped = [*proof[:-1], proof[-1][:-1] + bytes([proof[-1][-1] ^ 0x01])]
    base = {"old_size": old, "size": size, "old_root": roots[old], "root": roots[size]}
    cases = [
        _proof_case(
            "a proof node with a flipped bit",
            "the proof hashes to both roots",
            "proof-root",
            **{**base, "proof": flipped},
        ),
        _proof_case(
            "the last proof node removed",
            "a proof has exactly the nodes the sizes require",
            "proof-length",
            **{**base, "proof": proof[:-1]},
        ),
        _proof_case(
            "an extra proof node",
            "a proof has exactly the nodes the sizes require",
            "proof-length",
            **{**base, "proof": [*proof, roots[1]]},
        ),
        _proof_case(
            "roots swapped",
            "the proof hashes to both roots",
            "proof-root",
            **{**base, "old_root": roots[size], "root": roots[old], "proof": proof},
        ),
        _proof_case(
            "old root of another size",
            "the proof hashes to both roots",
            "proof-root",
            **{**base, "old_root": roots[old - 1], "proof": proof},
        ),
        _proof_case(
            "a power-of-two old size with a wrong old root",
            "for an old size that is a power of two the old root is the proof's first node",
            "proof-root",
            old_size=4,
            size=size,
            old_root=roots[3],
            root=roots[size],
            proof=merkle.consistency_proof(4, leaves),
        ),
        _proof_case(
            "old size larger than the size",
            "0 <= old size <= size",
            "proof-index",
            old_size=size,
            size=old,
            old_root=roots[size],
            root=roots[old],
            proof=proof,
        ),
        _proof_case(
            "empty proof between different sizes",
            "a proof between sizes 0 < m < n is never empty",
            "proof-length",
            **{**base, "proof": []},
        ),
        _proof_case(
            "equal sizes with a non-empty proof",
            "equal sizes need an empty proof and equal roots",
            "proof-root",
            old_size=size,
            size=size,
            old_root=roots[size],
            root=roots[size],
            proof=[roots[1]],
        ),
        _proof_case(
            "equal sizes with different roots",
            "equal sizes need an empty proof and equal roots",
            "proof-root",
            old_size=size,
            size=size,
            old_root=roots[size - 1],
            root=roots[size],
            proof=[],
        ),
        _proof_case(
            "old size 0 with a non-empty proof",
            "from the empty tree the proof is empty and the old root is SHA-256('')",
            "proof-root",
            old_size=0,
            size=size,
            old_root=merkle.EMPTY_ROOT,
            root=roots[size],
            proof=proof,
        ),
        _proof_case(
            "old size 0 with another old root",
            "from the empty tree the proof is empty and the old root is SHA-256('')",
            "proof-root",
            old_size=0,
            size=size,
            old_root=roots[1],
            root=roots[size],
            proof=[],
        ),
        _proof_case(
            "a root of 33 bytes",
            "every hash is 32 bytes",
            "proof-format",
            **{**base, "root": roots[size] + b"\x00", "proof": proof},
        ),
    ]
    _check_proof_cases(cases, "consistency")
    return cases


def rotations(entries: list[LogEntry], build: LogBuild) -> dict[str, int]:
    """The newest epoch of every collection a ``rotate`` entry among ``entries`` names."""
    newest: dict[str, int] = {}
    for entry in entries:
        if entry.kind == "rotate":
            for collection, epoch in entry.open(build.owner_x25519_secret)["epochs"].items():
                newest[collection] = max(epoch, newest.get(collection, 0))
    return newest


def _pinned_cases(
    build: LogBuild, entries: list[LogEntry], leaves: list[bytes], roots: list[bytes]
) -> list[Json]:
    """A head pinned earlier against the log the host shows now: extension, rollback, fork."""
    n = len(leaves)
    identity = build.identity
    pinned_size = 8
    pin_time = entries[pinned_size - 1].time

    def records(size: int) -> tuple[tuple[int, bytes], tuple[int, bytes]]:
        """What the owner's head at ``size`` records, from the entries before it."""
        revoked = [e.link_id for e in entries[:size] if e.link_id and e.kind == "revoke"]
        return revoked_digest(revoked), rotated_digest(rotations(entries[:size], build))

    pinned = Checkpoint.sign(
        identity,
        build.vault_id,
        pinned_size,
        roots[pinned_size],
        pin_time,
        records=records(pinned_size),
    )
    latest = build.checkpoint
    # A fork: a copy of the store in which entry 6 was rewritten (its time moved by 1 ms)
    # and the log then grew to the same size, its head signed by the owner on that copy.
    forged = dict(_codec.decode(entries[6].raw))
    forged["time"] += 1
    fork_leaves = [*leaves[:6], merkle.leaf_hash(_codec.encode(forged)), *leaves[7:]]
    fork_root = merkle.root(fork_leaves)
    fork_head = Checkpoint.sign(
        identity, build.vault_id, n, fork_root, latest.time, records=records(n)
    )
    rollback_size = 6
    rollback_head = Checkpoint.sign(
        identity,
        build.vault_id,
        rollback_size,
        roots[rollback_size],
        entries[5].time,
        records=records(rollback_size),
    )
    cases: list[Json] = [
        {
            "name": "the log extends the pinned head",
            "pinned": pinned.to_text(),
            "current": latest.to_text(),
            "proof": hexed(merkle.consistency_proof(pinned_size, leaves)),
        },
        {
            "name": "rollback: the store was restored to an older copy",
            "rule": "the current size is at least the pinned size",
            "pinned": pinned.to_text(),
            "current": rollback_head.to_text(),
            "proof": [],
            "expect": {"error": "InvalidProof", "reason": "proof-index"},
        },
        {
            "name": "fork: entry 6 rewritten on another copy",
            "rule": "the current head is consistent with the pinned head",
            "pinned": pinned.to_text(),
            "current": fork_head.to_text(),
            "proof": hexed(merkle.consistency_proof(pinned_size, fork_leaves)),
            "expect": {"error": "InvalidProof", "reason": "proof-root"},
        },
    ]
    for case in cases:
        old = Checkpoint.parse(case["pinned"])
        new = Checkpoint.parse(case["current"])
        old.verify(identity.public)
        new.verify(identity.public)

        def check(old: Checkpoint = old, new: Checkpoint = new, case: Json = case) -> None:
            merkle.verify_consistency(
                old.size, new.size, old.root, new.root, [bytes.fromhex(p) for p in case["proof"]]
            )

        verdict = pds_proof_verdict(check)
        expected = None if "expect" not in case else tuple(case["expect"].values())
        if verdict != expected:
            raise AssertionError(f"pinned case {case['name']!r}: pds says {verdict}")
    return cases


# -- main -------------------------------------------------------------------------------


def generate() -> dict[Path, bytes]:
    with tempfile.TemporaryDirectory(prefix="pds-token-vectors-") as temp:
        return {
            HERE / "tokens.json": dump_json(token_vectors()),
            HERE / "log.json": dump_json(log_vectors(Path(temp))),
        }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    parser.add_argument(
        "--check", action="store_true", help="compare with the files on disk; write nothing"
    )
    args = parser.parse_args(argv)
    outputs = generate()
    if args.check:
        stale = [path for path, content in outputs.items() if not _same(path, content)]
        for path in stale:
            print(f"differs: {path.relative_to(HERE)}", file=sys.stderr)
        return 1 if stale else 0
    for path, content in outputs.items():
        path.write_bytes(content)
    return 0


def _same(path: Path, content: bytes) -> bool:
    return path.exists() and path.read_bytes() == content


if __name__ == "__main__":
    sys.exit(main())
