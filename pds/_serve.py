"""The host side of a token read: verify, log, then release (design.md promises 5, 6, 7).

Every check runs before anything is released. The access entry, the nonce, the use counts
and any newly seen delegation commit in one transaction; only after that commit does the
host derive the per-record host shares and build the response. A refusal is logged in its
own transaction and raised.
"""

from __future__ import annotations

import base64
import struct
from dataclasses import dataclass
from typing import Any

from pds import _codec, _crypto, _envelope, _faults, capability
from pds._context import MAX_TIME_MS, Context
from pds._ids import check_served_cursor
from pds._owner import LRU, OwnerKeys
from pds._store.base import BatchRow, LinkKeyRow, LinkRow, RecordRow, VaultRow
from pds.accesslog import MerkleLog
from pds.errors import (
    AccessDenied,
    BudgetExhausted,
    FormatError,
    IntegrityError,
    NotPermitted,
    Replayed,
    Revoked,
    StaleInvocation,
    StoreError,
    VaultDestroyed,
    VaultNotFound,
)
from pds.invocation import FRESHNESS_MS, Invocation, Response

DEFAULT_MAX_LIFETIME_MS = 366 * 24 * 3600 * 1000


def max_lifetime_ms(row: VaultRow) -> int:
    if row.policy is None:
        return DEFAULT_MAX_LIFETIME_MS
    policy = _codec.decode(row.policy)
    return int(policy["max_token_lifetime_ms"])


def owner_public_x25519(row: VaultRow) -> bytes:
    return _crypto.ed25519_to_x25519(row.identity_public)


@dataclass(frozen=True, slots=True)
class _Selection:
    rows: list[RecordRow]
    cursor: str | None
    pending: list[RecordRow]
    """In scope, but in a key epoch not yet shared with the holder: nothing is released
    for these (the owner shares the epoch with ``Vault.share_keys``)."""
    sealed: dict[tuple[str, int], bool]
    """Whether each selected record's epoch seals fields one by one."""
    shared: list[LinkKeyRow]
    """Epoch secrets sealed to the holder's link since it was issued (sent back to it)."""


TOKEN_CACHE_BYTES = 8 * 1024
"""Tokens up to this size are kept parsed (the last 1,024: at most 8 MiB)."""

REGISTERED_LINKS = 65_536
"""Link ids a host remembers as stored (then looked up again: at most ~3 MiB)."""

PRUNE_EVERY_MS = 30_000
"""How often a host prunes the nonce cache (at most)."""

CURSOR_KEY_META = "listing_cursor_key"
"""The ``meta`` row holding the store's listing-cursor key, wrapped by the host key."""

_CURSOR_KEY_CONTEXT = b"pds/listing-cursor-key/v1"
_CURSOR_LABEL = b"pds/listing-cursor/v1"
_CURSOR_POSITION = struct.Struct(">qq")


class Host:
    """Serves invocations for every vault in a store. Holds a cache of verified chains."""

    def __init__(self, ctx: Context) -> None:
        self._ctx = ctx
        self._chains = LRU()
        # Unwrapped batch host shares: the host key is in this process anyway, and
        # unwrapping costs an AEAD per batch per request.
        self._host_shares = LRU()
        # Batch rows and whether an epoch seals fields, by vault: a store never changes
        # either once written, except to crypto-erase a destroyed vault, and every request
        # checks under the write lock that its vault is live (the nonce insert) before it
        # uses them.
        self._batch_rows = LRU()
        self._seals_fields = LRU()
        # Links this host has seen committed to the store (links are never removed while
        # their vault can be served), so a warm request skips their lookups. Bounded: a
        # holder may delegate without end, and each new link would stay here for good.
        self._registered = LRU(maxsize=REGISTERED_LINKS)
        self._pruned = 0
        # Parsed tokens by their exact bytes (parsing is pure, tokens are immutable): a
        # holder sends the same token with every request. Verification is cached apart.
        self._tokens = LRU(maxsize=1024)
        # The listing-cursor key by its wrapped form as stored (a key made in a transaction
        # that rolled back is never looked up again).
        self._cursor_keys = LRU(maxsize=4)

    def _parse_token(self, data: bytes) -> capability.Token:
        token: capability.Token | None = self._tokens.get(data)
        if token is None:
            token = capability.Token.from_bytes(data)
            if len(data) <= TOKEN_CACHE_BYTES:
                self._tokens.remember(data, token)
        return token

    def serve(self, data: bytes | str) -> Response:
        backend = self._ctx.backend
        if backend.in_transaction():
            # Joined to another operation's transaction (a serve from an export's or an
            # import's callback), the access would commit only with it, after the shares
            # were released, or never: logged first means committed first.
            raise StoreError(
                "a served read needs a transaction of its own: it cannot run inside another "
                "operation on the same store (serve from another Store object)"
            )
        invocation = Invocation.parse(data, parse_token=self._parse_token)
        row = backend.get_vault(invocation.vault_id)
        if row is None:
            raise VaultNotFound("no such vault")
        if row.destroyed_at is not None:
            raise VaultDestroyed("the vault was destroyed")
        now = self._ctx.now_ms()
        try:
            caveats = self._check(invocation, row, now)
            with backend.transaction():
                now = self._restamp(invocation, caveats, now)
                selection = self._admit(invocation, row, caveats, now)
                # Everything the response needs is read now: once the access is committed,
                # releasing it reads nothing more, so it cannot fail on the store.
                batches = self._batches(row, selection.rows)
                access = self._log(invocation, row, now, selection.rows, "released", None)
                if _faults.SEAM.armed:
                    _faults.point("serve: access entry written, not committed")
        except AccessDenied as denied:
            self._log_refusal(invocation, row, denied)
            raise
        if _faults.SEAM.armed:
            _faults.point("serve: access committed, shares not released")
        # Registered links are committed now (never on a rolled-back request).
        for link_id in invocation.token.link_ids:
            self._registered.remember(link_id, True)
        # The access is committed: only now are host shares derived and released.
        return self._release(invocation, row, selection, batches, access)

    def _restamp(self, invocation: Invocation, caveats: capability.Caveats, checked: int) -> int:
        """The time to check and log the request at, read again once the write lock is
        held (the log's order): the wait for the lock does not count, so entries' times
        follow their order to within the clocks' difference (``docs/spec/log.md``). The
        times, freshness and deferral checked at ``checked`` are checked again at it."""
        now = self._ctx.now_ms()
        if now != checked:
            capability.check_times(invocation.token, now)
            if abs(now - invocation.time) > FRESHNESS_MS:
                raise StaleInvocation("the invocation is outside the freshness window")
            _check_defer(invocation, caveats, now)
        return now

    def _check(self, invocation: Invocation, row: VaultRow, now: int) -> capability.Caveats:
        token = invocation.token
        # The verdict depends on the vault (id, identity key, policy) as much as on the
        # token: all of them are in the key, so a token verified for one vault never
        # skips a check for another, and a tightened policy applies at once.
        # The token is named by each link's id (a hash of its payload) and signature.
        cache_key = (
            invocation.vault_id,
            row.identity_public,
            row.policy,
            _crypto.sha256(b"".join(link.link_id + link.signature for link in token.links)),
        )
        caveats: capability.Caveats | None = self._chains.get(cache_key)
        if caveats is None:
            caveats = capability.verify_chain(
                token,
                vault_id=invocation.vault_id,
                identity=row.identity_public,
                max_lifetime_ms=max_lifetime_ms(row),
            )
            self._chains.remember(cache_key, caveats)
        capability.check_times(token, now)
        invocation.verify_holder()
        if abs(now - invocation.time) > FRESHNESS_MS:
            raise StaleInvocation("the invocation is outside the freshness window")
        capability.check_request(
            caveats,
            ability=invocation.action,
            purpose=invocation.purpose,
            collection=invocation.collection,
        )
        _check_defer(invocation, caveats, now)
        return caveats

    def _admit(
        self, invocation: Invocation, row: VaultRow, caveats: capability.Caveats, now: int
    ) -> _Selection:
        backend = self._ctx.backend
        token = invocation.token
        if backend.revoked_among(row.vault_id, list(token.link_ids)):
            raise Revoked("a link of this token was revoked")
        budgeted = [link.link_id for link in token.links if link.caveats.uses is not None]
        if budgeted:
            spent = backend.use_counts(budgeted)
            for link in token.links:
                budget = link.caveats.uses
                if budget is not None and spent.get(link.link_id, 0) >= budget:
                    raise BudgetExhausted("the token's use budget is spent")
        if not backend.remember_nonce(row.vault_id, invocation.nonce, invocation.time, row.policy):
            caveats = self._recheck(invocation, row, now)
        if now - self._pruned >= PRUNE_EVERY_MS:
            # Nonces older than twice the freshness window guard nothing (such invocations
            # are stale anyway): pruning them now and then keeps the cache small.
            backend.prune_nonces(now - 2 * FRESHNESS_MS)
            self._pruned = now
        if budgeted:
            backend.add_uses(budgeted)
        self._register_links(token, row, now)
        return self._select(invocation, row, caveats)

    def _recheck(self, invocation: Invocation, row: VaultRow, now: int) -> capability.Caveats:
        """The nonce was refused: a replay, or the vault changed after ``row`` was read and
        checked (the nonce insert compares it under the write lock). Nothing is logged or
        released for a destroyed vault; a changed policy is checked again, under the lock."""
        backend = self._ctx.backend
        current = self._live_vault(row.vault_id)
        if current.policy == row.policy:
            raise Replayed("this invocation was seen before")
        caveats = self._check(invocation, current, now)
        if not backend.remember_nonce(
            current.vault_id, invocation.nonce, invocation.time, current.policy
        ):
            raise Replayed("this invocation was seen before")
        return caveats

    def _register_links(self, token: capability.Token, row: VaultRow, now: int) -> None:
        """Remember delegations the first time they are seen, with the keys they carry, so
        revocation by audience and key rotation can reach them."""
        backend = self._ctx.backend
        owner = owner_public_x25519(row)
        for index, link in enumerate(token.links):
            if link.link_id in self._registered or backend.get_link(link.link_id) is not None:
                continue
            prefix = capability.Token(token.links[: index + 1])
            if link.parent is not None:
                MerkleLog(backend, row.vault_id).append(
                    time=now,
                    kind="delegation",
                    result="ok",
                    link_id=link.link_id,
                    details={
                        "actor": link.issuer_did,
                        "audience": link.audience_did,
                        "parent": link.parent.hex(),
                        "purposes": sorted(link.caveats.purposes),
                        "collections": list(link.caveats.collections),
                        "fields": None
                        if link.caveats.fields is None
                        else sorted(link.caveats.fields),
                        "expires": link.caveats.expires,
                    },
                    owner_x25519_public=owner,
                    rng=self._ctx.rng,
                )
            backend.insert_link(
                LinkRow(
                    link_id=link.link_id,
                    vault_id=row.vault_id,
                    parent_id=link.parent,
                    audience=link.audience,
                    not_before=link.caveats.not_before,
                    expires=link.caveats.expires,
                    uses=link.caveats.uses,
                    created_at=now,
                    sealed_token=_crypto.seal(prefix.to_bytes(), owner, self._ctx.rng),
                )
            )

    def _select(
        self, invocation: Invocation, row: VaultRow, caveats: capability.Caveats
    ) -> _Selection:
        backend = self._ctx.backend
        start, end = caveats.window
        since = _max_opt(invocation.since, start)
        until = _min_opt(invocation.until, end)

        sealed: dict[tuple[str, int], bool] = {}

        def seals_fields(record: RecordRow) -> bool:
            marker = (record.collection, record.epoch)
            if marker not in sealed:
                sealed[marker] = self._epoch_seals_fields(row.vault_id, *marker)
            return sealed[marker]

        def visible(record: RecordRow) -> bool:
            return (
                not record.deleted
                and capability.collection_allowed(caveats.collections, record.collection)
                and (since is None or record.created_at >= since)
                and (until is None or record.created_at < until)
                and (invocation.collection is None or record.collection == invocation.collection)
                # A field-restricted token reads only records sealed field by field: a
                # whole-record key would open every field.
                and (caveats.fields is None or seals_fields(record))
            )

        # The epochs whose secrets the holder has: in its own link, or shared since.
        leaf = invocation.token.leaf
        shared = backend.link_keys(leaf.link_id)
        keyed = {(k.collection, k.epoch) for k in leaf.keys}
        keyed.update((k.collection, k.epoch) for k in shared)

        def split(rows: list[RecordRow], cursor: str | None) -> _Selection:
            ready = [r for r in rows if (r.collection, r.epoch) in keyed]
            waiting = [r for r in rows if (r.collection, r.epoch) not in keyed]
            for record in ready:
                seals_fields(record)
            return _Selection(ready, cursor, waiting, sealed, shared)

        if invocation.records is not None:
            rows = [r for r in backend.get_records(row.vault_id, invocation.records) if visible(r)]
            return split(rows, None)
        after = None
        if invocation.cursor is not None:
            after = self._open_cursor(invocation, row)
        metas = backend.list_records(
            row.vault_id,
            collection=invocation.collection,
            since=since,
            until=until,
            after=after,
            limit=invocation.limit + 1,
            scope=caveats.collections,
        )
        page = metas[: invocation.limit]
        cursor = None
        if len(metas) > invocation.limit:
            cursor = self._seal_cursor(invocation, row, page[-1].created_at, page[-1].seq)
        wanted = [
            m.record_id
            for m in page
            if not m.deleted and capability.collection_allowed(caveats.collections, m.collection)
        ]
        rows = [r for r in backend.get_records(row.vault_id, wanted) if visible(r)]
        return split(rows, cursor)

    # -- listing cursors: the position (created_at, seq) sealed under a store key, so a
    # holder learns nothing from it (seq counts every record version the store wrote) and
    # cannot make one of its own (docs/spec/token.md, "Listing cursors").

    def _cursor_aead(self, *, create: bool) -> _crypto.DeterministicAead | None:
        """The store's cursor key (called inside the serve's write transaction), or
        ``None`` if there is none. With ``create``, one is made and stored (wrapped by the
        host key) if there is none or the stored text is not even base64 (the host's row:
        replacing it only invalidates the cursors given out). One that does not unwrap is
        ``IntegrityError`` (``cursor-key``), as a host share would be: a provider holding
        other key material must not make processes replace each other's key."""
        backend = self._ctx.backend
        stored = backend.get_meta(CURSOR_KEY_META)
        wrapped: bytes | None = None
        if stored is not None:
            found: _crypto.DeterministicAead | None = self._cursor_keys.get(stored)
            if found is not None:
                return found
            try:
                wrapped = base64.b64decode(stored, validate=True)
            except ValueError:
                wrapped = None
        if wrapped is not None and stored is not None:
            try:
                aead = _crypto.DeterministicAead(
                    self._ctx.host_unwrap(wrapped, _CURSOR_KEY_CONTEXT)
                )
            except (IntegrityError, FormatError):
                raise IntegrityError(
                    "cursor-key", "the store's listing-cursor key does not unwrap"
                ) from None
            self._cursor_keys.remember(stored, aead)
            return aead
        if not create:
            return None
        key = self._ctx.rng(_crypto.DeterministicAead.KEY_SIZE)
        stored = base64.b64encode(self._ctx.host_wrap(key, _CURSOR_KEY_CONTEXT)).decode()
        backend.set_meta(CURSOR_KEY_META, stored)
        aead = _crypto.DeterministicAead(key)
        self._cursor_keys.remember(stored, aead)
        return aead

    @staticmethod
    def _cursor_context(invocation: Invocation, row: VaultRow) -> list[bytes]:
        # Bound to the vault and the holder's link: a cursor is good for the listing it
        # came from, not for another vault's or another holder's.
        return [_CURSOR_LABEL, row.vault_id.encode(), invocation.token.link_id]

    def _seal_cursor(self, invocation: Invocation, row: VaultRow, created_at: int, seq: int) -> str:
        aead = self._cursor_aead(create=True)
        assert aead is not None
        sealed = aead.encrypt(
            _CURSOR_POSITION.pack(created_at, seq), self._cursor_context(invocation, row)
        )
        return _encode_cursor(sealed)

    def _open_cursor(self, invocation: Invocation, row: VaultRow) -> tuple[int, int]:
        """The position a cursor this store sealed for this listing names; ``NotPermitted``
        (``scope:cursor``) for anything else."""
        cursor = invocation.cursor
        malformed = NotPermitted("malformed cursor", reason="scope:cursor")
        try:
            cursor = check_served_cursor(cursor)
        except FormatError:
            raise malformed from None
        sealed = base64.urlsafe_b64decode(cursor + "=")
        # One text per cursor: the last character's two spare bits must be zero.
        if _encode_cursor(sealed) != cursor:
            raise malformed
        aead = self._cursor_aead(create=False)
        if aead is None:
            raise malformed
        try:
            position = aead.decrypt(sealed, self._cursor_context(invocation, row))
        except _crypto.AuthenticationFailed:
            raise malformed from None
        created_at, seq = _CURSOR_POSITION.unpack(position)
        return created_at, seq

    def _details(
        self,
        invocation: Invocation,
        records: list[RecordRow],
        result: str,
        reason: str | None,
    ) -> dict[str, Any]:
        token = invocation.token
        requested = {
            "collection": invocation.collection,
            "records": list(invocation.records) if invocation.records is not None else None,
        }
        collections = sorted({r.collection for r in records})
        if result == "refused" and invocation.collection is not None:
            collections = [invocation.collection]
        return {
            "actor": token.leaf.audience_did,
            "requested": requested,
            "chain": [link_id.hex() for link_id in token.link_ids],
            "action": invocation.action,
            "purpose": invocation.purpose,
            "basis": token.leaf.caveats.basis,
            "fields": None
            if token.leaf.caveats.fields is None
            else sorted(token.leaf.caveats.fields),
            "collections": collections,
            "records": [[r.record_id, r.version] for r in records],
            "request": invocation.request_id.hex(),
            "agent": invocation.agent,
            "correlation": invocation.correlation,
            "defer": None if invocation.defer is None else list(invocation.defer),
            "result": result,
            "reason": reason,
        }

    def _log(
        self,
        invocation: Invocation,
        row: VaultRow,
        now: int,
        records: list[RecordRow],
        result: str,
        reason: str | None,
    ) -> int:
        return MerkleLog(self._ctx.backend, row.vault_id).append(
            time=now,
            kind=invocation.action,
            result=result,
            link_id=invocation.token.link_id,
            details=self._details(invocation, records, result, reason),
            owner_x25519_public=owner_public_x25519(row),
            rng=self._ctx.rng,
            # Only a served request may defer its disclosure (its token allowed it); a
            # refusal is shown to the person at once, whatever the request asked.
            disclose_after=(
                invocation.defer[0]
                if invocation.defer is not None and result == "released"
                else None
            ),
        )

    def _log_refusal(self, invocation: Invocation, row: VaultRow, denied: AccessDenied) -> None:
        with self._ctx.backend.transaction():
            # A destroy may have committed since the vault row was read: its log ends
            # with the destroy entry.
            self._live_vault(row.vault_id)
            # Stamped under the lock, as a served access is (``_restamp``).
            now = self._ctx.now_ms()
            self._log(invocation, row, now, [], "refused", denied.reason)

    def _live_vault(self, vault_id: str) -> VaultRow:
        """The vault's row as stored now; ``VaultDestroyed`` if it is gone or destroyed
        (called under the write lock, after a check made before it)."""
        current = self._ctx.backend.get_vault(vault_id)
        if current is None or current.destroyed_at is not None:
            raise VaultDestroyed("the vault was destroyed") from None
        return current

    def _batch_share(self, row: VaultRow, batch: BatchRow) -> bytes:
        if batch.wrapped_host is None:
            raise IntegrityError("key-missing", "a served record's host share is missing")
        marker = (batch.batch_id, batch.wrapped_host)
        cached: bytes | None = self._host_shares.get(marker)
        if cached is None:
            cached = self._ctx.host_unwrap(
                batch.wrapped_host, _envelope.host_wrap_context(row.vault_id, batch.batch_id)
            )
            self._host_shares.remember(marker, cached)
        return cached

    def _epoch_seals_fields(self, vault_id: str, collection: str, epoch: int) -> bool:
        marker = (vault_id, collection, epoch)
        cached: bool | None = self._seals_fields.get(marker)
        if cached is None:
            found = self._ctx.backend.get_epoch(vault_id, collection, epoch)
            if found is None:
                return False  # not remembered: a missing epoch is not a stored fact
            cached = found.seal_fields
            self._seals_fields.remember(marker, cached)
        return cached

    def _batches(self, row: VaultRow, records: list[RecordRow]) -> dict[bytes, BatchRow]:
        batches: dict[bytes, BatchRow] = {}
        for record in records:
            if record.batch_id not in batches:
                marker = (row.vault_id, record.batch_id)
                found: BatchRow | None = self._batch_rows.get(marker)
                if found is None:
                    found = self._ctx.backend.get_batch(row.vault_id, record.batch_id)
                    if found is None:
                        raise IntegrityError("batch-missing", "a served record's batch is missing")
                    self._batch_rows.remember(marker, found)
                batches[record.batch_id] = found
        return batches

    def _release(
        self,
        invocation: Invocation,
        row: VaultRow,
        selection: _Selection,
        batches: dict[bytes, BatchRow],
        access: int,
    ) -> Response:
        shares: dict[bytes, bytes] = {}
        fields = invocation.token.leaf.caveats.fields
        reading = invocation.action == "read"
        vault_id = row.vault_id
        records: list[dict[str, Any]] = []
        for record in selection.rows:
            batch = batches[record.batch_id]
            item: dict[str, Any] = {
                "record": record.record_id,
                "version": record.version,
                "collection": record.collection,
                "created_at": record.created_at,
                "epoch": record.epoch,
                "batch": record.batch_id,
                "size": len(record.ciphertext or b""),
            }
            if reading and record.nonce is not None and batch.wrapped_host:
                batch_share = shares.get(batch.batch_id)
                if batch_share is None:
                    batch_share = shares[batch.batch_id] = self._batch_share(row, batch)
                binding = _envelope.binding(
                    vault_id,
                    record.collection,
                    record.record_id,
                    record.version,
                    record.epoch,
                    record.batch_id,
                    record.deleted,
                )
                item["nonce"] = record.nonce
                item["ciphertext"] = record.ciphertext
                if selection.sealed.get((record.collection, record.epoch)):
                    # Only the granted fields' shares leave the host.
                    item["field_shares"] = [
                        [name, _envelope.field_host_share(batch_share, binding, name)]
                        for name in _envelope.field_names(record.ciphertext or b"")
                        if fields is None or name in fields
                    ]
                else:
                    item["host_share"] = _envelope.host_share(batch_share, binding)
            records.append(item)
        batch_docs = []
        if reading:
            batch_docs = [
                {
                    "batch": b.batch_id,
                    "collection": b.collection,
                    "epoch": b.epoch,
                    "writer": b.writer,
                    "created_at": b.created_at,
                    "manifest": b.manifest,
                    "signature": b.signature,
                    "sealed_reader": b.sealed_reader,
                }
                for b in batches.values()
            ]
        keys = [[k.collection, k.epoch, k.sealed] for k in selection.shared]
        return Response(
            vault_id=row.vault_id,
            request_id=invocation.request_id,
            action=invocation.action,
            batches=batch_docs,
            records=records,
            keys=keys,
            cursor=selection.cursor,
            access=access,
            pending=[[r.record_id, r.collection, r.epoch] for r in selection.pending],
        )


def _check_defer(invocation: Invocation, caveats: capability.Caveats, now: int) -> None:
    if invocation.defer is not None and (
        caveats.defer is None
        or invocation.defer[0] - now > caveats.defer
        # No date can show a later one: the person's log must be able to show it.
        or invocation.defer[0] > MAX_TIME_MS
    ):
        raise NotPermitted("the token does not allow this deferral", reason="scope:defer")


def _encode_cursor(sealed: bytes) -> str:
    return base64.urlsafe_b64encode(sealed).decode().rstrip("=")


def open_link(link: LinkRow, keys: OwnerKeys, vault_id: str) -> capability.Token | None:
    """The token a stored link row holds, judged from its own signed bytes: ``None`` unless
    the copy sealed to the owner opens, names this link and verifies against the owner's
    identity key (vault, signatures, narrowing). The ``links`` table is the host's: a row
    it forged (a token it signed itself, sealed to the owner's public key, which anyone
    can do) or edited (an expiry raised) must be judged by the token, not the row."""
    try:
        token = capability.Token.from_bytes(_crypto.unseal(link.sealed_token, keys.x25519_secret))
        if token.link_id != link.link_id:
            return None
        capability.verify_chain(token, vault_id=vault_id, identity=keys.identity.public)
    except (_crypto.AuthenticationFailed, AccessDenied):
        return None
    return token


def over_lifetime(token: capability.Token, max_lifetime: int) -> bool:
    """Whether the token's root outlives the vault's lifetime policy (a served read refuses
    it with ``LifetimeExceeded``)."""
    root = token.root.caveats
    return root.expires - root.not_before > max_lifetime


def live_links(ctx: Context, row: VaultRow, keys: OwnerKeys, now: int) -> list[capability.Token]:
    """The known links (as their tokens) that verify (``open_link``), are within the
    lifetime policy, unexpired by their own links' times and unrevoked, ancestors included:
    the ones trusted with key epochs."""
    backend = ctx.backend
    policy = max_lifetime_ms(row)
    tokens = []
    for link in list(backend.iter_links(row.vault_id)):
        token = open_link(link, keys, row.vault_id)
        if token is None or over_lifetime(token, policy):
            continue  # A link we cannot read back or verify is not trusted with new keys.
        if min(each.caveats.expires for each in token.links) <= now:
            continue
        if backend.revoked_among(row.vault_id, list(token.link_ids)):
            continue
        tokens.append(token)
    return tokens


def share_epoch(
    ctx: Context,
    row: VaultRow,
    keys: OwnerKeys,
    collection: str,
    epoch: int,
    secret: bytes,
    now: int,
) -> None:
    """Seal a new epoch secret to every known, live link whose scope covers the collection."""
    for token in live_links(ctx, row, keys, now):
        if capability.collection_allowed(token.leaf.caveats.collections, collection):
            seal_to_link(ctx, token.leaf, collection, epoch, secret)


def seal_to_link(
    ctx: Context, link: capability.Link, collection: str, epoch: int, secret: bytes
) -> None:
    recipient = _crypto.ed25519_to_x25519(link.audience)
    ctx.backend.insert_link_keys(
        [LinkKeyRow(link.link_id, collection, epoch, _crypto.seal(secret, recipient, ctx.rng))]
    )


def _max_opt(a: int | None, b: int | None) -> int | None:
    if a is None:
        return b
    return a if b is None else max(a, b)


def _min_opt(a: int | None, b: int | None) -> int | None:
    if a is None:
        return b
    return a if b is None else min(a, b)
