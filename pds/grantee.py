"""The grantee's side: build invocations, open responses, delegate.

A ``Grantee`` holds a principal's private key. It signs invocations for tokens whose final
audience is that key, opens the host's responses (unsealing the collection epoch secrets
sealed to it, combining them with the per-record host shares released after logging), and
verifies every record's manifest signature, binding and hash before returning data.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from pds import _crypto, _envelope
from pds._context import (
    Clock,
    check_time_ms,
    datetime_to_ms,
    ms_to_datetime,
    ms_to_datetime_clamped,
    optional_ms,
    timedelta_to_ms,
)
from pds._ids import (
    check_collection,
    check_items,
    check_record_id,
    check_served_cursor,
    check_text_items,
)
from pds._store.base import BatchRow
from pds.capability import (
    MAX_CHAIN,
    Caveats,
    SealedKey,
    Token,
    carried_epochs,
    check_narrowing,
    collection_allowed,
    make_link,
    parse,
)
from pds.errors import FormatError, IntegrityError, WrongHolder
from pds.invocation import INVOCATION_SIGNATURE_LABEL, Invocation, Response, build_body, wire
from pds.keys import PrincipalKey
from pds.vault import Record

if TYPE_CHECKING:
    from pds.store import Store

__all__ = ["GrantedRead", "Grantee"]


@dataclass(frozen=True, slots=True)
class GrantedRead:
    """Records a grantee read (verified and decrypted), and the cursor for the next page."""

    records: list[Record]
    cursor: str | None
    access: int
    pending: list[tuple[str, str, int]] = field(default_factory=list)
    """``(record, collection, epoch)`` in scope whose key epoch the owner has not yet
    shared with this holder (``Vault.share_keys``); nothing of them was released."""


def _in_scope(caveats: Caveats, collection: str, created_at: int | None = None) -> bool:
    """Whether a record of ``collection`` created at ``created_at`` (ms) is one the host
    may serve under ``caveats``: the same collection matching and window as the host's."""
    if not collection_allowed(caveats.collections, collection):
        return False
    if created_at is None:
        return True
    start, end = caveats.window
    return (start is None or created_at >= start) and (end is None or created_at < end)


def _out_of_scope() -> IntegrityError:
    return IntegrityError("response-scope", "the response holds a record outside the token")


def _pending(resp: Response, caveats: Caveats) -> list[tuple[str, str, int]]:
    pending = []
    for entry in resp.pending:
        if not (
            isinstance(entry, list)
            and len(entry) == 3
            and isinstance(entry[0], str)
            and isinstance(entry[1], str)
            and type(entry[2]) is int
        ):
            raise IntegrityError("response", "malformed pending list in the response")
        if not _in_scope(caveats, entry[1]):
            raise _out_of_scope()
        pending.append((entry[0], entry[1], entry[2]))
    return pending


def _key_entries(entries: Sequence[Any]) -> list[tuple[str, int, bytes]]:
    """A response's ``keys``: ``[collection, epoch, sealed]`` entries, each well-formed."""
    kept = []
    for entry in entries:
        if not (
            isinstance(entry, (list, tuple))
            and len(entry) == 3
            and type(entry[0]) is str
            and type(entry[1]) is int
            and type(entry[2]) is bytes
        ):
            raise IntegrityError("response", "malformed key entry in the response")
        kept.append((entry[0], entry[1], entry[2]))
    return kept


def _link_keys(entries: Sequence[Any], caveats: Caveats) -> list[tuple[str, int, bytes]]:
    """The entries of a response's ``keys`` whose collection ``caveats`` cover. The others
    are ignored: the owner seals a link only the epochs of its scope, and a secret of
    another scope opens nothing this link may see."""
    return [
        entry
        for entry in _key_entries(entries)
        if collection_allowed(caveats.collections, entry[0])
    ]


def _granted(name: str) -> bool:
    """Every field is granted (a token without a ``fields`` caveat)."""
    return True


def _defer(until: datetime | None, reason: str | None) -> tuple[int, str] | None:
    if until is None and reason is None:
        return None
    if until is None or not reason:
        raise FormatError("deferred disclosure needs both a time and a reason")
    return datetime_to_ms(until), reason


class Grantee:
    """A principal acting with tokens granted to it. Its repr shows only its did."""

    def __init__(
        self,
        key: PrincipalKey,
        *,
        clock: Clock = time.time,
        rng: _crypto.Rng = _crypto.system_rng,
    ) -> None:
        self._key = key._key
        self._x25519 = self._key.x25519_secret()
        self._clock = clock
        self._rng = rng
        # Epoch secrets received in responses, by the link they were sealed for: only
        # those that opened an owner-signed reader share of their epoch (``open``).
        self._learned: dict[bytes, dict[tuple[str, int], bytes]] = {}

    def __repr__(self) -> str:
        return f"Grantee(did={self.did!r})"

    @property
    def did(self) -> str:
        return _crypto.did_key(self._key.public)

    def _own(self, token: Token | str | bytes) -> Token:
        parsed = parse(token)
        if not _crypto.constant_time_equal(parsed.leaf.audience, self._key.public):
            raise WrongHolder("this token was not granted to this key")
        return parsed

    def invoke(
        self,
        token: Token | str | bytes,
        *,
        action: str = "read",
        purpose: str | None = None,
        collection: str | None = None,
        records: Sequence[str] | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        limit: int = 100,
        cursor: str | None = None,
        agent: str | None = None,
        correlation: str | None = None,
        defer_until: datetime | None = None,
        defer_reason: str | None = None,
    ) -> Invocation:
        """Sign a request. ``purpose`` defaults to the token's only purpose.

        ``agent`` names the person acting in the holder's organisation and ``correlation``
        the holder's reference; both appear in the person's log. ``defer_until`` (with a
        ``defer_reason``) asks that the person be shown this access only after that time;
        the token must allow deferral that long. A malformed ``collection``, record id or
        ``cursor`` raises ``FormatError`` here, before anything is signed or sent (the host
        would refuse it, and log the refusal).
        """
        parsed = self._own(token)
        if collection is not None:
            check_collection(collection)
        if records is not None:
            records = check_items(records, "records")
            for record_id in records:
                check_record_id(record_id)
        if cursor is not None:
            check_served_cursor(cursor)
        purposes = parsed.leaf.caveats.purposes
        if purpose is None:
            if len(purposes) != 1:
                raise FormatError("the token grants several purposes: name one")
            (purpose,) = purposes
        body = build_body(
            vault_id=parsed.vault_id,
            token=parsed,
            action=action,
            purpose=purpose,
            time=int(self._clock() * 1000),
            nonce=self._rng(16),
            collection=collection,
            records=list(records) if records is not None else None,
            since=optional_ms(since),
            until=optional_ms(until),
            limit=limit,
            cursor=cursor,
            agent=agent,
            correlation=correlation,
            defer=_defer(defer_until, defer_reason),
        )
        signature = self._key.sign(INVOCATION_SIGNATURE_LABEL, body)
        return Invocation.parse(wire(body, signature))

    def epoch_secrets(
        self, token: Token, extra: Sequence[Sequence[Any]] = ()
    ) -> dict[tuple[str, int], bytes]:
        """Unseal the epoch secrets addressed to this key: from its own link and from a
        response (epochs created after the link was issued)."""
        entries = [(k.collection, k.epoch, k.sealed) for k in token.leaf.keys]
        return self._unseal(entries + _key_entries(extra))

    def _unseal(self, entries: Sequence[tuple[str, int, bytes]]) -> dict[tuple[str, int], bytes]:
        secrets: dict[tuple[str, int], bytes] = {}
        for collection, epoch, sealed in entries:
            try:
                secrets[(collection, epoch)] = _crypto.unseal(sealed, self._x25519)
            except _crypto.AuthenticationFailed:
                raise IntegrityError(
                    "link-key", "a sealed epoch secret failed authentication"
                ) from None
        return secrets

    def open(
        self,
        token: Token | str | bytes,
        response: Response | bytes,
        *,
        invocation: Invocation | None = None,
    ) -> GrantedRead:
        """Verify and decrypt a response from an untrusted host (``docs/spec/token.md``,
        "Opening a response"). Raises ``IntegrityError`` on any mismatch, and returns
        nothing then.

        With ``invocation`` (``read`` passes it), the response must answer that request:
        its request id and its action (``response-binding``). In a field-sealed
        collection, every stored field the token grants must have arrived with its share
        (``field-withheld``); the stored field names are signed by the owner. Every record
        (listed, served or pending) and every served batch must be inside the token's
        collections and every record inside its window (``response-scope``); link keys
        of other collections in the response are ignored.

        Once the whole response verified, the epoch secrets its ``keys`` carried that
        opened the reader share of an owner-signed batch of their own epoch (and only
        those, never replacing one already held) are remembered for ``delegate``.
        """
        parsed = self._own(token)
        resp = response if isinstance(response, Response) else Response.from_bytes(response)
        if invocation is not None:
            if resp.request_id != invocation.request_id:
                raise IntegrityError("response-binding", "the response answers another request")
            # A host could otherwise answer a read with a listing of records it made up:
            # listing metadata is not signed by the owner.
            if resp.action != invocation.action:
                raise IntegrityError("response-binding", "the response is for another action")
        if resp.vault_id != parsed.vault_id:
            raise IntegrityError("response-binding", "the response is for another vault")
        if resp.cursor is not None:
            # Handed back to the host as it is, and shown (the CLI prints a command to
            # page on): only what a host returns, 43 base64url characters.
            try:
                check_served_cursor(resp.cursor)
            except FormatError:
                raise IntegrityError("response", "the response's cursor is malformed") from None
        identity = parsed.root.issuer
        # The last link's caveats are the effective ones: every link is within its parent.
        caveats = parsed.leaf.caveats
        fields = caveats.fields
        if resp.action == "list":
            listed = []
            for item in resp.records:
                if not (
                    isinstance(item, dict)
                    and type(item.get("record")) is str
                    and type(item.get("collection")) is str
                    and all(type(item.get(k)) is int for k in ("version", "created_at", "epoch"))
                ):
                    raise IntegrityError("response", "malformed record in the response")
                if not _in_scope(caveats, item["collection"], item["created_at"]):
                    raise _out_of_scope()
                listed.append(
                    Record(
                        record_id=item["record"],
                        collection=item["collection"],
                        version=item["version"],
                        # Clamped, like the owner's listing: a time out of range is
                        # shown, and fails only a read of that record.
                        created_at=ms_to_datetime_clamped(item["created_at"]),
                        epoch=item["epoch"],
                        writer="",
                        deleted=False,
                        erased=False,
                        data=None,
                    )
                )
            return GrantedRead(listed, resp.cursor, resp.access, _pending(resp, caveats))
        # A secret already held (in the link, or learned from an earlier response and
        # proven then) is used rather than one the response offers for the same epoch.
        held = {**self._learned.get(parsed.link_id, {}), **self.epoch_secrets(parsed)}
        offered = self._unseal(_link_keys(resp.keys, caveats))
        secrets = {**offered, **held}
        # Epochs whose secret opened the reader share of a batch the owner signed.
        proven: set[tuple[str, int]] = set()
        batches: dict[bytes, tuple[_envelope.Manifest, bytes, bytes]] = {}
        for doc in resp.batches:
            try:
                batch = BatchRow(
                    parsed.vault_id,
                    doc["batch"],
                    doc["collection"],
                    doc["epoch"],
                    doc["writer"],
                    doc["created_at"],
                    doc["manifest"],
                    doc["signature"],
                    doc["sealed_reader"],
                    None,
                )
                manifest = _envelope.verify_batch(
                    batch, vault_id=parsed.vault_id, authorized_writers=frozenset({identity})
                )
            except (KeyError, TypeError):
                raise IntegrityError("response", "malformed batch in the response") from None
            if not _in_scope(caveats, manifest.collection):
                raise _out_of_scope()
            secret = secrets.get((manifest.collection, manifest.epoch))
            if secret is None:
                raise IntegrityError("link-key", "no epoch secret for a served batch")
            if type(doc["sealed_reader"]) is not bytes or type(doc["writer"]) is not bytes:
                raise IntegrityError("response", "malformed batch in the response")
            try:
                reader_share = _crypto.unseal(doc["sealed_reader"], secret)
            except _crypto.AuthenticationFailed:
                raise IntegrityError(
                    "reader-share", "a reader share failed authentication"
                ) from None
            proven.add((manifest.collection, manifest.epoch))
            batches[manifest.batch_id] = (manifest, reader_share, doc["writer"])
        records = []
        for item in resp.records:
            try:
                manifest, reader_share, writer = batches[item["batch"]]
                binding = _envelope.binding(
                    parsed.vault_id,
                    item["collection"],
                    item["record"],
                    item["version"],
                    item["epoch"],
                    item["batch"],
                    False,
                )
                _envelope.check_entry(
                    manifest,
                    record_id=item["record"],
                    version=item["version"],
                    deleted=False,
                    collection=item["collection"],
                    epoch=item["epoch"],
                    created_at=item["created_at"],
                    record_binding=binding,
                    nonce=item["nonce"],
                    ciphertext=item["ciphertext"],
                )
                # The collection and time were just checked against the owner's manifest.
                if not _in_scope(caveats, manifest.collection, manifest.created_at):
                    raise _out_of_scope()
                if "field_shares" in item:
                    # A field-sealed record: only the fields whose shares were released
                    # can be opened, whatever the token says; and every stored field the
                    # token grants must have been released, or the host would be hiding it.
                    field_shares = {}
                    for name, share in item["field_shares"]:
                        if not isinstance(name, str) or not isinstance(share, bytes):
                            raise TypeError("field share")
                        field_shares[name] = share
                    data = _envelope.open_fields(
                        item["ciphertext"],
                        reader_share,
                        field_shares,
                        binding,
                        required=_granted if fields is None else fields.__contains__,
                    )
                else:
                    key = _envelope.record_key(reader_share, item["host_share"], binding)
                    data = _envelope.open_record(key, item["nonce"], item["ciphertext"], binding)
            except (KeyError, TypeError, ValueError):
                raise IntegrityError("response", "malformed record in the response") from None
            if not isinstance(data, dict):
                raise IntegrityError("content", "record content is not an object")
            if fields is not None:
                data = {name: value for name, value in data.items() if name in fields}
            records.append(
                Record(
                    record_id=item["record"],
                    collection=item["collection"],
                    version=item["version"],
                    created_at=ms_to_datetime(item["created_at"]),
                    epoch=item["epoch"],
                    writer=_crypto.did_key(writer),
                    deleted=False,
                    erased=False,
                    data=data,
                )
            )
        pending = _pending(resp, caveats)
        # The whole response verified: remember the epochs it shared after the link was
        # issued, so a delegation made later can pass them on. Only a secret that opened
        # an owner-signed reader share of its own epoch is the owner's (anyone can seal a
        # box to this key), and a response never replaces a secret already held.
        fresh = {pair: offered[pair] for pair in proven if pair in offered and pair not in held}
        if fresh:
            self._learned.setdefault(parsed.link_id, {}).update(fresh)
        return GrantedRead(records, resp.cursor, resp.access, pending)

    def read(self, store: Store, token: Token | str | bytes, **request: Any) -> GrantedRead:
        """Invoke, have ``store`` serve it, and open the response (one process, for tests,
        the CLI and embedded use)."""
        invocation = self.invoke(token, **request)
        return self.open(token, store.serve(invocation.to_bytes()), invocation=invocation)

    def delegate(
        self,
        token: Token | str | bytes,
        *,
        to: str,
        collections: Sequence[str] | None = None,
        purposes: Sequence[str] | None = None,
        abilities: Sequence[str] | None = None,
        fields: Sequence[str] | None = None,
        window: tuple[datetime | None, datetime | None] | None = None,
        not_before: datetime | None = None,
        expires: datetime | timedelta | None = None,
        uses: int | None = None,
        depth: int | None = None,
        defer: timedelta | None = None,
    ) -> Token:
        """Extend the chain to ``to`` (a did:key), narrowing any caveat given.

        Raises ``CaveatWidened`` if anything would widen, ``FormatError`` for an argument
        of the wrong type, a start, expiry or ``defer`` past 9999-12-31T23:59:59.999Z, or a
        token that already has ``MAX_CHAIN`` links (no parser accepts a longer one); the
        epoch secrets this key holds for the narrowed scope are re-sealed to the new
        audience.
        """
        parsed = self._own(token)
        if len(parsed.links) >= MAX_CHAIN:
            raise FormatError(f"a token has at most {MAX_CHAIN} links: this one cannot grow")
        collections = None if collections is None else check_text_items(collections, "collections")
        purposes = None if purposes is None else check_text_items(purposes, "purposes")
        abilities = None if abilities is None else check_text_items(abilities, "abilities")
        fields = None if fields is None else check_text_items(fields, "fields")
        if window is not None and (not isinstance(window, tuple) or len(window) != 2):
            raise FormatError("window is a (start, end) pair of datetimes or None")
        if expires is not None and not isinstance(expires, datetime | timedelta):
            raise FormatError("expires is a datetime or a timedelta")
        if defer is not None and not isinstance(defer, timedelta):
            raise FormatError("defer is a timedelta")
        for name, number in (("uses", uses), ("depth", depth)):
            if number is not None and (type(number) is not int or not 0 <= number < 2**63):
                raise FormatError(f"{name} is a non-negative integer")
        parent = parsed.leaf
        audience = _crypto.parse_did_key(to)
        base = parent.caveats
        now = int(self._clock() * 1000)
        if isinstance(expires, timedelta):
            expires_ms: int = now + timedelta_to_ms(expires)
        elif expires is not None:
            expires_ms = datetime_to_ms(expires)
        else:
            expires_ms = base.expires
        caveats = Caveats(
            abilities=frozenset(abilities) if abilities is not None else base.abilities,
            collections=tuple(sorted(set(collections)))
            if collections is not None
            else base.collections,
            fields=frozenset(fields) if fields is not None else base.fields,
            window=(
                (optional_ms(window[0]), optional_ms(window[1]))
                if window is not None
                else base.window
            ),
            purposes=frozenset(purposes) if purposes is not None else base.purposes,
            basis=base.basis,
            not_before=datetime_to_ms(not_before) if not_before is not None else base.not_before,
            expires=expires_ms,
            uses=uses if uses is not None else base.uses,
            depth=depth if depth is not None else max(base.depth - 1, 0),
            defer=timedelta_to_ms(defer) if defer is not None else base.defer,
        )
        # Inherited values are checked too: a parent made elsewhere may carry a later time.
        check_time_ms(caveats.not_before, "not_before")
        check_time_ms(caveats.expires, "expires")
        if caveats.defer is not None:
            check_time_ms(caveats.defer, "defer")
        if caveats.depth == 0 and abilities is None:
            # A link that may not delegate further does not carry the ability to.
            caveats = replace(caveats, abilities=caveats.abilities - {"delegate"})
        check_narrowing(caveats, base)
        recipient = _crypto.ed25519_to_x25519(audience)
        known = {**self._learned.get(parsed.link_id, {}), **self.epoch_secrets(parsed)}
        # A link carries at most MAX_KEYS epochs (the newest); older ones in scope reach
        # the delegate once the owner shares them (``Vault.share_keys``): until then its
        # reads list those records as pending.
        carried, _ = carried_epochs(
            pair for pair in known if collection_allowed(caveats.collections, pair[0])
        )
        keys = [
            SealedKey(
                collection, epoch, _crypto.seal(known[collection, epoch], recipient, self._rng)
            )
            for collection, epoch in carried
        ]
        link = make_link(
            signer=self._key,
            vault_id=parsed.vault_id,
            audience=audience,
            parent=parent,
            caveats=caveats,
            keys=keys,
            salt=self._rng(16),
        )
        return Token((*parsed.links, link))
