"""Invocations (signed requests by a token's holder) and the host's responses.

An invocation binds the token, the action and its arguments, the vault id, a timestamp and
a random nonce, signed by the token's final audience (``docs/spec/token.md``). A response
carries ciphertext as stored, the batch manifests that authenticate it, the per-record host
shares released after the access was logged, and any epoch secrets sealed to the holder
since its link was issued.
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pds import _codec, _crypto
from pds.capability import Token, b64url_decode
from pds.errors import FormatError, MalformedToken, WrongHolder

__all__ = ["ACTIONS", "Invocation", "Response"]

INVOCATION_PREFIX = "pdsi1_"
INVOCATION_VERSION = 1
INVOCATION_SIGNATURE_LABEL = b"pds/invocation/v1"
RESPONSE_VERSION = 1
ACTIONS = frozenset({"read", "list"})
FRESHNESS_MS = 5 * 60 * 1000
"""An invocation is fresh if its time is within this window of the host's clock."""
MAX_INVOCATION_BYTES = 128 * 1024
MAX_REQUEST_RECORDS = 1000

_BODY_KEYS = frozenset(
    {
        "v",
        "vault",
        "token",
        "action",
        "args",
        "purpose",
        "time",
        "nonce",
        "agent",
        "correlation",
        "defer",
    }
)
_ARG_KEYS = frozenset({"collection", "records", "since", "until", "limit", "cursor"})
_BODY_KEY_ORDER = tuple(sorted(_BODY_KEYS))
_ARG_KEY_ORDER = tuple(sorted(_ARG_KEYS))
_OUTER_KEY_ORDER = ("body", "sig", "v")


def _fail(message: str, reason: str = "malformed") -> MalformedToken:
    return MalformedToken(message, reason=reason)


def _count(value: Any) -> bool:
    return type(value) is int and 0 <= value < 2**63


@dataclass(frozen=True, slots=True)
class Invocation:
    """A parsed invocation. ``body`` is exactly the signed bytes."""

    body: bytes
    signature: bytes
    vault_id: str
    token: Token
    action: str
    purpose: str
    time: int
    nonce: bytes
    collection: str | None
    records: tuple[str, ...] | None
    since: int | None
    until: int | None
    limit: int
    cursor: str | None
    agent: str | None = None
    """The person acting inside the holder's organisation (a case worker id, say)."""
    correlation: str | None = None
    """The holder's own reference for the request (a case number, say)."""
    defer: tuple[int, str] | None = None
    """``(disclose_after_ms, reason)``: show the access to the person only after that time."""

    @property
    def request_id(self) -> bytes:
        """SHA-256 of the signed body: names this request in the log and the response."""
        return _crypto.sha256(self.body)

    def to_bytes(self) -> bytes:
        return wire(self.body, self.signature)

    def to_text(self) -> str:
        return INVOCATION_PREFIX + base64.urlsafe_b64encode(self.to_bytes()).rstrip(b"=").decode()

    def __repr__(self) -> str:
        return f"Invocation(action={self.action!r}, request={self.request_id.hex()[:16]}…)"

    def verify_holder(self) -> None:
        """Check the signature over the body with the token's final audience (the holder).
        Raises ``WrongHolder``."""
        try:
            _crypto.verify(
                self.token.leaf.audience, INVOCATION_SIGNATURE_LABEL, self.body, self.signature
            )
        except _crypto.AuthenticationFailed:
            raise WrongHolder("the invocation is not signed by the token's holder") from None

    @classmethod
    def parse(
        cls, data: bytes | str, *, parse_token: Callable[[bytes], Token] = Token.from_bytes
    ) -> Invocation:
        """Parse an invocation (bytes or ``pdsi1_`` text) strictly. Does not verify it.

        ``parse_token`` parses the embedded token's bytes (a host passes one that reuses
        the parse of a token it has seen: parsing is a pure function of the bytes)."""
        if isinstance(data, str):
            if not data.startswith(INVOCATION_PREFIX):
                raise _fail("not a pds invocation (expected the pdsi1_ prefix)")
            data = b64url_decode(data[len(INVOCATION_PREFIX) :], MAX_INVOCATION_BYTES)
        if not isinstance(data, bytes) or len(data) > MAX_INVOCATION_BYTES:
            raise _fail("an invocation is at most 128 KiB")
        try:
            # decode_typed: every map's key order and every value are checked here.
            outer = _codec.decode_typed(data, max_size=MAX_INVOCATION_BYTES)
            # Fast path: exactly the keys, in canonical order (decode_typed leaves the key
            # order to us); otherwise _outer_keys_error names the rule that failed.
            if type(outer) is not dict or tuple(outer) != _OUTER_KEY_ORDER:
                raise _outer_keys_error(outer)
            body, signature, version = outer.values()
            if type(version) is not int or version != INVOCATION_VERSION:  # is_version
                raise _fail("unsupported invocation version", "version")
            if not isinstance(body, bytes) or not isinstance(signature, bytes):
                raise _fail("body and sig are bytes")
            if len(signature) != _crypto.SIGNATURE_SIZE:
                raise _fail("a signature is 64 bytes")
            doc = _codec.decode_typed(body, max_size=MAX_INVOCATION_BYTES)
        except MalformedToken:
            raise
        except FormatError:
            raise _fail("an invocation is not canonical msgpack") from None
        return _parse_body(body, signature, doc, parse_token)


def _outer_keys_error(outer: Any) -> MalformedToken:
    """The error for an invocation whose keys are not exactly ``_OUTER_KEY_ORDER``."""
    if not isinstance(outer, dict) or set(outer) != {"v", "body", "sig"}:
        return _fail("an invocation is a map of v, body and sig")
    return _fail("an invocation is not canonical msgpack")


def _body_keys_error(doc: Any) -> MalformedToken:
    """The error for a body whose keys (or whose arguments' keys) are not exactly
    ``_BODY_KEY_ORDER`` (``_ARG_KEY_ORDER``), or whose version is wrong: the first of
    these rules that fails, in this order."""
    if not isinstance(doc, dict):
        return _fail("an invocation body is a map")
    if set(doc) - _BODY_KEYS:
        return _fail("unknown invocation field", "unknown-caveat")
    if set(doc) != _BODY_KEYS or not _codec.is_version(doc["v"], INVOCATION_VERSION):
        return _fail("an invocation body is missing a field or has the wrong version")
    args = doc["args"]
    if not isinstance(args, dict) or set(args) != _ARG_KEYS:
        return _fail("invocation arguments are collection, records, since, until, limit, cursor")
    # The right keys, in another order than the canonical one.
    return _fail("an invocation body is not canonical msgpack")


def _parse_body(
    body: bytes, signature: bytes, doc: Any, parse_token: Callable[[bytes], Token]
) -> Invocation:
    # Fast path: the body's and the arguments' keys exactly, in canonical order, and the
    # version; on any mismatch _body_keys_error names the first rule that failed.
    if type(doc) is not dict or tuple(doc) != _BODY_KEY_ORDER:
        raise _body_keys_error(doc)
    # In _BODY_KEY_ORDER; every value is type-checked below.
    action, agent, args, correlation, defer, nonce, purpose, time, token_bytes, version, vault = (
        doc.values()
    )
    if type(version) is not int or version != INVOCATION_VERSION:  # _codec.is_version
        raise _body_keys_error(doc)
    if type(args) is not dict or tuple(args) != _ARG_KEY_ORDER:
        raise _body_keys_error(doc)
    collection, cursor, limit, records, since, until = args.values()  # _ARG_KEY_ORDER
    if type(token_bytes) is not bytes:
        raise _fail("the token is bytes")
    token = parse_token(token_bytes)
    if type(action) is not str or action not in ACTIONS:
        raise _fail("unknown action", "unknown-caveat")
    if not (
        type(vault) is str
        and type(purpose) is str
        and 0 < len(purpose) <= 256
        and type(time) is int
        and 0 <= time < 2**63  # _count
        and type(nonce) is bytes
        and len(nonce) == 16
        and (collection is None or type(collection) is str)
        and (since is None or _count(since))
        and (until is None or _count(until))
        and type(limit) is int
        and 1 <= limit <= MAX_REQUEST_RECORDS  # a _count in [1, MAX_REQUEST_RECORDS]
        and (cursor is None or (type(cursor) is str and len(cursor) < 64))
    ):
        raise _fail("an invocation field has the wrong type or range")
    if agent is not None and (type(agent) is not str or not 0 < len(agent) <= 256):
        raise _fail("agent is text of 1 to 256 characters")
    if correlation is not None and (
        type(correlation) is not str or not 0 < len(correlation) <= 256
    ):
        raise _fail("correlation is text of 1 to 256 characters")
    if defer is not None:
        if (
            type(defer) is not list
            or len(defer) != 2
            or not _count(defer[0])
            or type(defer[1]) is not str
            or not 0 < len(defer[1]) <= 256
        ):
            raise _fail("defer is [disclose_after, reason]")
        defer = (defer[0], defer[1])
    if records is not None:
        if type(records) is not list or not 0 < len(records) <= MAX_REQUEST_RECORDS:
            raise _fail("records is a list of record ids")
        for record in records:
            if type(record) is not str or not 0 < len(record) <= 128:
                raise _fail("records is a list of record ids")
        records = tuple(records)
    # Positional arguments (faster than keywords here), in field order.
    return Invocation(
        body,
        signature,
        vault,  # vault_id
        token,
        action,
        purpose,
        time,
        nonce,
        collection,
        records,
        since,
        until,
        limit,
        cursor,
        agent,
        correlation,
        defer,
    )


def wire(body: bytes, signature: bytes) -> bytes:
    """The transmitted form of a signed invocation body."""
    return _codec.encode({"v": INVOCATION_VERSION, "body": body, "sig": signature})


def build_body(
    *,
    vault_id: str,
    token: Token,
    action: str,
    purpose: str,
    time: int,
    nonce: bytes,
    collection: str | None,
    records: list[str] | None,
    since: int | None,
    until: int | None,
    limit: int,
    cursor: str | None,
    agent: str | None = None,
    correlation: str | None = None,
    defer: tuple[int, str] | None = None,
) -> bytes:
    return _codec.encode(
        {
            "v": INVOCATION_VERSION,
            "agent": agent,
            "correlation": correlation,
            "defer": None if defer is None else list(defer),
            "vault": vault_id,
            "token": token.to_bytes(),
            "action": action,
            "purpose": purpose,
            "time": time,
            "nonce": nonce,
            "args": {
                "collection": collection,
                "records": records,
                "since": since,
                "until": until,
                "limit": limit,
                "cursor": cursor,
            },
        }
    )


_RESPONSE_KEYS = frozenset(
    {"v", "vault", "request", "action", "batches", "records", "keys", "cursor", "access", "pending"}
)


@dataclass(frozen=True, slots=True)
class Response:
    """What the host returns for a served invocation. Contains no plaintext."""

    vault_id: str
    request_id: bytes
    action: str
    batches: list[dict[str, Any]] = field(repr=False)
    records: list[dict[str, Any]] = field(repr=False)
    keys: list[list[Any]] = field(repr=False)
    cursor: str | None
    access: int
    """The sequence number of the access-log entry written before this response."""
    pending: list[list[Any]] = field(default_factory=list)
    """``[record, collection, epoch]`` in scope but in a key epoch not yet shared with the
    holder: nothing of these is released."""

    def to_bytes(self) -> bytes:
        return _codec.encode(
            {
                "v": RESPONSE_VERSION,
                "vault": self.vault_id,
                "request": self.request_id,
                "action": self.action,
                "batches": self.batches,
                "records": self.records,
                "keys": self.keys,
                "cursor": self.cursor,
                "access": self.access,
                "pending": self.pending,
            }
        )

    @classmethod
    def from_bytes(cls, data: bytes) -> Response:
        try:
            doc = _codec.decode(data, max_containers=_codec.sparse_containers(data))
            if (
                not isinstance(doc, dict)
                or set(doc) != _RESPONSE_KEYS
                or not _codec.is_version(doc["v"], RESPONSE_VERSION)
            ):
                raise FormatError("response version or fields")
            if not (
                type(doc["vault"]) is str
                and type(doc["request"]) is bytes
                and doc["action"] in ACTIONS
                and all(type(doc[k]) is list for k in ("batches", "records", "keys", "pending"))
                and (doc["cursor"] is None or type(doc["cursor"]) is str)
                and _count(doc["access"])
            ):
                raise FormatError("a response field has the wrong type")
            return cls(
                vault_id=doc["vault"],
                request_id=doc["request"],
                action=doc["action"],
                batches=list(doc["batches"]),
                records=list(doc["records"]),
                keys=list(doc["keys"]),
                cursor=doc["cursor"],
                access=doc["access"],
                pending=list(doc["pending"]),
            )
        except (KeyError, TypeError) as exc:
            raise FormatError("malformed response") from exc
