"""Capability tokens: chains of signed links, each narrowing its parent (``docs/spec/token.md``).

A root link is issued by the vault identity key to an audience (a principal's Ed25519 key).
Each later link is signed by the previous link's audience. Every link carries caveats:
abilities, scope (collections, fields, record time window), purposes (and an optional legal
basis), validity (not-before, expiry), an optional use budget and the delegation depth
left, plus the collection epoch secrets of its scope sealed to its audience.

Parsing here is strict and verification raises a specific ``AccessDenied`` subclass for
the first rule that fails. Nothing in a token chooses an algorithm: Ed25519, SHA-256 and
canonical msgpack are fixed by the version marker.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from pds import _codec, _crypto
from pds._ids import check_collection
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

__all__ = [
    "ABILITIES",
    "CLOCK_SKEW_MS",
    "Caveats",
    "Link",
    "Token",
    "check_request",
    "check_times",
    "collection_allowed",
    "parse",
    "verify_chain",
]

TOKEN_PREFIX = "pdst1_"  # noqa: S105 - a format marker, not a secret
TOKEN_VERSION = 1
LINK_SIGNATURE_LABEL = b"pds/link/v1"
LINK_ID_LABEL = b"pds/link-id/v1\x00"
REVOCATION_LABEL = b"pds/revocation/v1"
REVOCATION_LIST_LABEL = b"pds/revocation-list/v1"
MAX_CHAIN = 16
MAX_TOKEN_BYTES = 64 * 1024
CLOCK_SKEW_MS = 5 * 60 * 1000
"""Validity times are checked with this allowance either way (documented in the spec)."""

ABILITIES = frozenset({"read", "list", "delegate"})
"""Abilities this version understands. ``deposit`` and ``subscribe`` are reserved names:
a token carrying them is refused until the version that implements them."""
RESERVED_ABILITIES = frozenset({"deposit", "subscribe"})

_LINK_KEYS = frozenset(
    {
        "v",
        "vault",
        "iss",
        "aud",
        "parent",
        "ability",
        "collections",
        "fields",
        "window",
        "purpose",
        "basis",
        "nbf",
        "exp",
        "uses",
        "depth",
        "defer",
        "keys",
        "salt",
    }
)
_LINK_KEY_ORDER = tuple(sorted(_LINK_KEYS))
_MAX_ITEMS = 64
_MAX_TEXT = 256
MAX_KEYS = 4 * _MAX_ITEMS
"""Epoch secrets one link may carry; the rest of a scope's epochs reach the holder through
the host (``link_keys``, returned in responses)."""


@dataclass(frozen=True, slots=True)
class Caveats:
    """What a link allows. A child link's caveats must each be within its parent's."""

    abilities: frozenset[str]
    collections: tuple[str, ...]
    """Exact names, prefixes ``"tax/*"`` (anything below ``tax/``), or ``"*"`` (all)."""
    fields: frozenset[str] | None
    """Top-level fields a reader may see; ``None`` means all fields."""
    window: tuple[int | None, int | None]
    """Records whose ``created_at`` (ms) is in ``[start, end)``; ``None`` is unbounded."""
    purposes: frozenset[str]
    basis: str | None
    not_before: int
    expires: int
    uses: int | None
    depth: int
    defer: int | None = None
    """The longest a holder may defer disclosure of an access to the person (ms), or
    ``None``: accesses with this token are shown to the person at once."""

    def describe(self) -> dict[str, Any]:
        return {
            "abilities": sorted(self.abilities),
            "collections": list(self.collections),
            "fields": None if self.fields is None else sorted(self.fields),
            "window": list(self.window),
            "purposes": sorted(self.purposes),
            "basis": self.basis,
            "not_before": self.not_before,
            "expires": self.expires,
            "uses": self.uses,
            "depth": self.depth,
            "defer": self.defer,
        }


@dataclass(frozen=True, slots=True)
class SealedKey:
    """A collection epoch secret sealed to a link's audience."""

    collection: str
    epoch: int
    sealed: bytes = field(repr=False)


@dataclass(frozen=True, slots=True)
class Link:
    """One signed link. ``payload`` is exactly the signed bytes."""

    payload: bytes
    signature: bytes
    vault_id: str
    issuer: bytes
    audience: bytes
    parent: bytes | None
    caveats: Caveats
    keys: tuple[SealedKey, ...]
    link_id: bytes

    @property
    def audience_did(self) -> str:
        return _crypto.did_key(self.audience)

    @property
    def issuer_did(self) -> str:
        return _crypto.did_key(self.issuer)


@dataclass(frozen=True, slots=True)
class Token:
    """A parsed, *unverified* chain of links. Verify with ``verify_chain`` (the host does)."""

    links: tuple[Link, ...]

    @property
    def root(self) -> Link:
        return self.links[0]

    @property
    def leaf(self) -> Link:
        return self.links[-1]

    @property
    def link_id(self) -> bytes:
        """The final link's id: it commits to the whole chain (each link names its parent)."""
        return self.leaf.link_id

    @property
    def link_ids(self) -> tuple[bytes, ...]:
        return tuple(link.link_id for link in self.links)

    @property
    def vault_id(self) -> str:
        return self.root.vault_id

    def to_bytes(self) -> bytes:
        return _codec.encode(
            {"v": TOKEN_VERSION, "links": [[link.payload, link.signature] for link in self.links]}
        )

    def to_text(self) -> str:
        return TOKEN_PREFIX + _b64encode(self.to_bytes())

    def __str__(self) -> str:
        return self.to_text()

    def __repr__(self) -> str:
        return f"Token(link={self.link_id.hex()[:16]}…, links={len(self.links)})"

    @classmethod
    def from_text(cls, text: str) -> Token:
        """Parse the text form (``pdst1_…``). Raises ``MalformedToken``. Does not verify."""
        if not isinstance(text, str) or not text.startswith(TOKEN_PREFIX):
            raise MalformedToken("not a pds token (expected the pdst1_ prefix)")
        return cls.from_bytes(b64url_decode(text[len(TOKEN_PREFIX) :], MAX_TOKEN_BYTES))

    @classmethod
    def from_bytes(cls, data: bytes) -> Token:
        """Parse token bytes strictly. Raises ``MalformedToken``. Does not verify."""
        return _parse_unverified_token(data)

    def describe(self) -> dict[str, Any]:
        """A JSON-friendly view of every link, without any key material."""
        return {
            "link": self.link_id.hex(),
            "vault": self.vault_id,
            "links": [
                {
                    "link": link.link_id.hex(),
                    "parent": None if link.parent is None else link.parent.hex(),
                    "issuer": link.issuer_did,
                    "audience": link.audience_did,
                    **link.caveats.describe(),
                    "keys": [[key.collection, key.epoch] for key in link.keys],
                }
                for link in self.links
            ],
        }


def parse(token: Token | str | bytes) -> Token:
    if isinstance(token, Token):
        return token
    if isinstance(token, str):
        return Token.from_text(token)
    if isinstance(token, bytes):
        return Token.from_bytes(token)
    raise MalformedToken("a token is a Token, its text form or its bytes")


def _b64encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(text: str, max_bytes: int) -> bytes:
    """Decode unpadded base64url strictly: canonical only (re-encoding gives the same text).
    Raises ``MalformedToken``."""
    if len(text) > max_bytes * 2 or not text.isascii() or "=" in text:
        raise MalformedToken("malformed base64url")
    try:
        data = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        raise MalformedToken("malformed base64url") from None
    if _b64encode(data) != text:
        raise MalformedToken("non-canonical base64url")
    return data


def link_id(payload: bytes) -> bytes:
    return _crypto.sha256(LINK_ID_LABEL + payload)


# -- strict parsing ----------------------------------------------------------------------
#
# Every cold request parses an invocation and its token, so these parsers (and those in
# ``invocation``) are written for speed without dropping a rule. Each map: one comparison
# of its keys with the exact canonical key tuple (the fast path for well-formed input; on
# a mismatch a ``*_keys_error`` helper works out which rule failed, in the order the rules
# are listed there), then its values unpacked at once and each checked inline with exact
# types (the decoder yields only plain str, bytes, int, list and dict). Where an inline
# check fails, the helper that states the rule (``_text``, ``_int``) is called to decide
# and raise that rule's error, so each message lives in one place.


def _fail(message: str, reason: str = "malformed") -> MalformedToken:
    return MalformedToken(message, reason=reason)


def _text(value: Any, what: str) -> str:
    if not isinstance(value, str) or not 0 < len(value) <= _MAX_TEXT:
        raise _fail(f"{what} must be non-empty text")
    return value


def _int(value: Any, what: str, minimum: int = 0) -> int:
    # Below 2**63: every integer a token carries fits a signed 64-bit column and timestamp.
    if type(value) is not int or not minimum <= value < 2**63:
        raise _fail(f"{what} must be an integer in [{minimum}, 2**63)")
    return value


def _text_list(value: Any, what: str, *, allow_empty: bool = False) -> list[str]:
    if not isinstance(value, list) or len(value) > _MAX_ITEMS or (not value and not allow_empty):
        raise _fail(f"{what} must be a non-empty list")
    # One pass: every item is text (that rule is reported first, whatever the order), and
    # each item is greater than the one before it, which is exactly "sorted and unique".
    ordered = True
    previous = None
    for item in value:
        if type(item) is not str or not 0 < len(item) <= _MAX_TEXT:
            _text(item, what)
        if previous is not None and item <= previous:
            ordered = False
        previous = item
    if not ordered:
        raise _fail(f"{what} must be sorted and unique")
    return value


def _public_key(value: Any, what: str) -> bytes:
    if not isinstance(value, bytes):
        raise _fail(f"{what} must be an Ed25519 public key")
    try:
        _crypto.check_ed25519_public(value)
    except FormatError:
        raise _fail(f"{what} is not a valid Ed25519 public key", "key") from None
    return value


def check_pattern(pattern: str) -> str:
    """Validate a collection pattern: an exact name, ``prefix/*`` or ``*``."""
    if pattern == "*":
        return pattern
    name = pattern[:-2] if pattern.endswith("/*") else pattern
    try:
        check_collection(name)
    except FormatError:
        raise _fail("invalid collection pattern") from None
    return pattern


def _caveats(
    ability: Any,
    collections: Any,
    fields: Any,
    window: Any,
    purpose: Any,
    basis: Any,
    nbf: Any,
    exp: Any,
    uses: Any,
    depth: Any,
    defer: Any,
) -> Caveats:
    # The rules apply in this order (the first that fails is reported).
    abilities = _text_list(ability, "ability")
    if not ABILITIES.issuperset(abilities):
        for name in abilities:
            if name in RESERVED_ABILITIES:
                raise _fail(f"ability {name!r} is not supported by this version", "unknown-caveat")
            if name not in ABILITIES:
                raise _fail("unknown ability", "unknown-caveat")
    patterns = _text_list(collections, "collections")
    for pattern in patterns:
        check_pattern(pattern)
    if fields is not None:
        fields = frozenset(_text_list(fields, "fields"))
    if not isinstance(window, list) or len(window) != 2:
        raise _fail("window must be [start, end]")
    start, end = window
    if start is not None:
        _int(start, "window start")
    if end is not None:
        _int(end, "window end")
    if start is not None and end is not None and start >= end:
        raise _fail("window start must be before its end")
    purposes = frozenset(_text_list(purpose, "purpose"))
    if basis is not None and (type(basis) is not str or not 0 < len(basis) <= _MAX_TEXT):
        basis = _text(basis, "basis")
    if type(nbf) is not int or not 0 <= nbf < 2**63:
        _int(nbf, "nbf")
    if type(exp) is not int or not 0 <= exp < 2**63:
        _int(exp, "exp")
    if nbf >= exp:
        raise _fail("nbf must be before exp")
    if uses is not None:
        _int(uses, "uses", 1)
    if type(depth) is not int or not 0 <= depth < 2**63:
        _int(depth, "depth")
    if defer is not None:
        _int(defer, "defer", 1)
    # Positional arguments (faster than keywords here), in field order.
    return Caveats(
        frozenset(abilities),  # abilities
        tuple(patterns),  # collections
        fields,
        (start, end),  # window
        purposes,
        basis,
        nbf,  # not_before
        exp,  # expires
        uses,
        depth,
        defer,
    )


def _link_keys_error(doc: Any) -> MalformedToken:
    """The error for a link payload whose keys are not exactly ``_LINK_KEY_ORDER``."""
    if not isinstance(doc, dict):
        return _fail("a link payload is a map")
    if set(doc) - _LINK_KEYS:
        return _fail("unknown caveat", "unknown-caveat")
    if set(doc) != _LINK_KEYS:
        return _fail("a link is missing a field")
    # The right keys, in another order than the canonical one.
    return _fail("a link payload is not canonical msgpack")


def _sealed_keys(value: Any) -> tuple[SealedKey, ...]:
    if not isinstance(value, list) or len(value) > MAX_KEYS:
        raise _fail("keys must be a list")
    keys: list[SealedKey] = []
    # As in _text_list: every entry is checked first, then the (collection, epoch) pairs
    # must be strictly increasing, that is sorted and unique.
    ordered = True
    previous: tuple[str, int] | None = None
    for entry in value:
        if not isinstance(entry, list) or len(entry) != 3 or not isinstance(entry[2], bytes):
            raise _fail("a key entry is [collection, epoch, sealed]")
        collection, epoch, sealed = entry
        if type(collection) is not str or not 0 < len(collection) <= _MAX_TEXT:
            collection = _text(collection, "key collection")
        if type(epoch) is not int or not 1 <= epoch < 2**63:
            _int(epoch, "epoch", 1)
        if previous is not None and (collection, epoch) <= previous:
            ordered = False
        previous = (collection, epoch)
        keys.append(SealedKey(collection, epoch, sealed))
    if not ordered:
        raise _fail("keys must be sorted and unique")
    return tuple(keys)


def _parse_link(payload: Any, signature: Any) -> Link:
    if not isinstance(payload, bytes) or not isinstance(signature, bytes):
        raise _fail("a link is [payload bytes, signature bytes]")
    if len(signature) != _crypto.SIGNATURE_SIZE:
        raise _fail("a signature is 64 bytes")
    try:
        doc = _codec.decode_typed(payload, max_size=MAX_TOKEN_BYTES)
    except FormatError:
        raise _fail("a link payload is not canonical msgpack") from None
    # Fast path: exactly the link's keys, in canonical order (decode_typed leaves the key
    # order to us); otherwise _link_keys_error names the rule that failed.
    if type(doc) is not dict or tuple(doc) != _LINK_KEY_ORDER:
        raise _link_keys_error(doc)
    # In _LINK_KEY_ORDER; every value is type-checked below.
    (
        ability,
        aud,
        basis,
        collections,
        defer,
        depth,
        exp,
        fields_value,
        iss,
        keys_value,
        nbf,
        parent,
        purpose,
        salt,
        uses,
        version,
        vault_id,
        window,
    ) = doc.values()
    if type(version) is not int or version != TOKEN_VERSION:  # _codec.is_version
        raise _fail("unsupported link version", "version")
    if type(vault_id) is not str or not 0 < len(vault_id) <= _MAX_TEXT:
        vault_id = _text(vault_id, "vault")
    if parent is not None and (type(parent) is not bytes or len(parent) != 32):
        raise _fail("parent must be a 32-byte link id")
    if type(salt) is not bytes or len(salt) != 16:
        raise _fail("salt must be 16 bytes")
    keys = _sealed_keys(keys_value)
    issuer = _public_key(iss, "iss")
    audience = _public_key(aud, "aud")
    caveats = _caveats(
        ability, collections, fields_value, window, purpose, basis, nbf, exp, uses, depth, defer
    )
    # Positional arguments (faster than keywords here), in field order.
    return Link(
        payload,
        signature,
        vault_id,
        issuer,
        audience,
        parent,
        caveats,
        keys,
        link_id(payload),
    )


def _token_keys_error(doc: Any) -> MalformedToken:
    """The error for a token whose keys are not exactly ``("links", "v")``."""
    if not isinstance(doc, dict) or set(doc) != {"v", "links"}:
        return _fail("a token is a map of v and links")
    return _fail("a token is not canonical msgpack")


def _parse_unverified_token(data: bytes) -> Token:
    """Parse token bytes: shape and encodings only. No signature or narrowing is checked."""
    if not isinstance(data, bytes) or len(data) > MAX_TOKEN_BYTES:
        raise _fail("a token is at most 64 KiB of bytes")
    try:
        doc = _codec.decode_typed(data, max_size=MAX_TOKEN_BYTES)
    except FormatError:
        raise _fail("a token is not canonical msgpack") from None
    if type(doc) is not dict or tuple(doc) != ("links", "v"):  # fast path, as in _parse_link
        raise _token_keys_error(doc)
    links, version = doc.values()
    if type(version) is not int or version != TOKEN_VERSION:  # _codec.is_version
        raise _fail("unsupported token version", "version")
    if not isinstance(links, list) or not 1 <= len(links) <= MAX_CHAIN:
        raise _fail(f"a token has 1 to {MAX_CHAIN} links")
    parsed = []
    for entry in links:
        if not isinstance(entry, list) or len(entry) != 2:
            raise _fail("a link is [payload, signature]")
        parsed.append(_parse_link(entry[0], entry[1]))
    return Token(tuple(parsed))


# -- narrowing ---------------------------------------------------------------------------


def carried_epochs(
    epochs: Iterable[tuple[str, int]],
) -> tuple[list[tuple[str, int]], list[tuple[str, int]]]:
    """Split a scope's ``(collection, epoch)`` pairs into those a link carries (at most
    ``MAX_KEYS``, the newest of each collection first, in link order) and the older rest."""
    pairs = sorted(set(epochs))
    newest: dict[str, int] = {}
    for collection, epoch in pairs:
        newest[collection] = max(epoch, newest.get(collection, epoch))
    by_age = sorted(pairs, key=lambda pair: (newest[pair[0]] - pair[1], pair))
    return sorted(by_age[:MAX_KEYS]), sorted(by_age[MAX_KEYS:])


def collection_allowed(patterns: Iterable[str], collection: str) -> bool:
    """Whether ``collection`` is inside any of ``patterns``."""
    for pattern in patterns:
        if pattern in ("*", collection):
            return True
        if pattern.endswith("/*") and collection.startswith(pattern[:-1]):
            return True
    return False


def _pattern_within(child: str, parents: Sequence[str]) -> bool:
    if child == "*":
        return "*" in parents
    if child.endswith("/*"):
        prefix = child[:-1]
        return any(
            parent == "*" or (parent.endswith("/*") and prefix.startswith(parent[:-1]))
            for parent in parents
        )
    return collection_allowed(parents, child)


def _within_window(
    child: tuple[int | None, int | None], parent: tuple[int | None, int | None]
) -> bool:
    (child_start, child_end), (parent_start, parent_end) = child, parent
    if parent_start is not None and (child_start is None or child_start < parent_start):
        return False
    return not (parent_end is not None and (child_end is None or child_end > parent_end))


def check_narrowing(child: Caveats, parent: Caveats) -> None:
    """Raise ``CaveatWidened`` (reason ``widened:<caveat>``) unless ``child`` ⊆ ``parent``."""

    def widened(caveat: str) -> CaveatWidened:
        return CaveatWidened(f"the link widens its parent's {caveat}", reason=f"widened:{caveat}")

    if "delegate" not in parent.abilities or parent.depth < 1:
        raise widened("depth")
    if child.depth > parent.depth - 1:
        raise widened("depth")
    if not child.abilities <= parent.abilities:
        raise widened("ability")
    if not all(_pattern_within(pattern, parent.collections) for pattern in child.collections):
        raise widened("collections")
    if parent.fields is not None and (child.fields is None or not child.fields <= parent.fields):
        raise widened("fields")
    if not _within_window(child.window, parent.window):
        raise widened("window")
    if not child.purposes <= parent.purposes:
        raise widened("purpose")
    if parent.basis is not None and child.basis != parent.basis:
        raise widened("basis")
    if child.not_before < parent.not_before:
        raise widened("nbf")
    if child.expires > parent.expires:
        raise widened("exp")
    if parent.uses is not None and (child.uses is None or child.uses > parent.uses):
        raise widened("uses")
    if child.defer is not None and (parent.defer is None or child.defer > parent.defer):
        raise widened("defer")


# -- verification ------------------------------------------------------------------------


def verify_chain(
    token: Token,
    *,
    vault_id: str,
    identity: bytes,
    max_lifetime_ms: int | None = None,
) -> Caveats:
    """Verify everything in a chain that does not depend on time or host state.

    Checks, in order, for each link: vault id; root issuer is ``identity`` (else
    ``UntrustedIssuer``), or parent id and issuer match the previous link (``BrokenChain``);
    the signature (``InvalidSignature``); narrowing against the parent (``CaveatWidened``);
    that sealed keys stay inside the link's scope. Then the root's lifetime against the vault
    policy (``LifetimeExceeded``). Returns the final link's caveats (the effective ones).
    Time (``check_times``), revocation and budgets are the caller's next steps.
    """
    previous: Link | None = None
    for link in token.links:
        if link.vault_id != vault_id:
            raise WrongVault("the token is for another vault")
        if previous is None:
            if link.parent is not None:
                raise BrokenChain("the root link names a parent")
            if not _crypto.constant_time_equal(link.issuer, identity):
                raise UntrustedIssuer("the root link is not issued by the vault's identity key")
        else:
            if link.parent != previous.link_id:
                raise BrokenChain("a link's parent id does not match the previous link")
            if link.issuer != previous.audience:
                raise BrokenChain("a link's issuer is not its parent's audience")
        try:
            _crypto.verify(link.issuer, LINK_SIGNATURE_LABEL, link.payload, link.signature)
        except _crypto.AuthenticationFailed:
            raise InvalidSignature("a link signature does not verify") from None
        if previous is not None:
            check_narrowing(link.caveats, previous.caveats)
        for key in link.keys:
            if not collection_allowed(link.caveats.collections, key.collection):
                raise CaveatWidened("a link carries keys outside its scope", reason="widened:keys")
        previous = link
    root = token.root.caveats
    if max_lifetime_ms is not None and root.expires - root.not_before > max_lifetime_ms:
        raise LifetimeExceeded("the token's lifetime exceeds the vault's policy")
    return token.leaf.caveats


def check_times(token: Token, now_ms: int, skew_ms: int = CLOCK_SKEW_MS) -> None:
    """Raise ``NotYetValid`` or ``Expired`` if ``now`` is outside any link's validity."""
    for link in token.links:
        if now_ms + skew_ms < link.caveats.not_before:
            raise NotYetValid("the token is not yet valid")
        if now_ms - skew_ms >= link.caveats.expires:
            raise Expired("the token has expired")


def check_request(
    caveats: Caveats,
    *,
    ability: str,
    purpose: str,
    collection: str | None,
) -> None:
    """Raise ``NotPermitted`` unless the request is inside the effective caveats."""
    if ability not in caveats.abilities:
        raise NotPermitted(f"the token does not grant {ability!r}", reason="scope:ability")
    if purpose not in caveats.purposes:
        raise NotPermitted("the token does not grant this purpose", reason="scope:purpose")
    if collection is not None and not collection_allowed(caveats.collections, collection):
        raise NotPermitted("the collection is outside the token's scope", reason="scope:collection")


# -- creating links ----------------------------------------------------------------------


def make_link(
    *,
    signer: _crypto.SigningKey,
    vault_id: str,
    audience: bytes,
    parent: Link | None,
    caveats: Caveats,
    keys: Sequence[SealedKey],
    salt: bytes,
) -> Link:
    """Sign a new link. The signer's public key is its own; it is never a parameter."""
    ordered = sorted(keys, key=lambda k: (k.collection, k.epoch))
    payload = _codec.encode(
        {
            "v": TOKEN_VERSION,
            "vault": vault_id,
            "iss": signer.public,
            "aud": audience,
            "parent": None if parent is None else parent.link_id,
            "ability": sorted(caveats.abilities),
            "collections": sorted(set(caveats.collections)),
            "fields": None if caveats.fields is None else sorted(caveats.fields),
            "window": list(caveats.window),
            "purpose": sorted(caveats.purposes),
            "basis": caveats.basis,
            "nbf": caveats.not_before,
            "exp": caveats.expires,
            "uses": caveats.uses,
            "depth": caveats.depth,
            "defer": caveats.defer,
            "keys": [[k.collection, k.epoch, k.sealed] for k in ordered],
            "salt": salt,
        }
    )
    signature = signer.sign(LINK_SIGNATURE_LABEL, payload)
    # Round-trip through the strict parser so a bad caveat fails here, not at the verifier.
    return _parse_link(payload, signature)


def narrowed(parent: Caveats, **changes: Any) -> Caveats:
    """``parent`` with ``changes`` applied and depth reduced by one unless given."""
    changes.setdefault("depth", max(parent.depth - 1, 0))
    return replace(parent, **changes)
