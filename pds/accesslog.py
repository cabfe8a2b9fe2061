"""The access log: one append-only Merkle log per vault (``docs/spec/log.md``).

Every operation on a vault appends an entry: who (organisation, and the person acting),
what (collections, records, fields), when, why (purpose, legal basis, grant) and the
result. The details are sealed to the owner (personal data, encrypted at rest); the tree
commits to the entry bytes, ciphertext included, so proofs verify without any key and keep
verifying after the vault is crypto-erased. Tree heads are C2SP tlog-checkpoint signed
notes signed by the vault identity key.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TypeVar

import nacl.bindings as sodium
import nacl.exceptions

from pds import _codec, _crypto, merkle
from pds._context import ms_to_datetime
from pds._store.base import Backend
from pds.errors import FormatError, IntegrityError, InvalidProof

T = TypeVar("T")

__all__ = ["Checkpoint", "LogEntry"]

ENTRY_VERSION = 1
KINDS = frozenset(
    {
        "read",
        "list",
        "owner-read",
        "create",
        "grant",
        "delegation",
        "revoke",
        "rotate",
        "repair",
        "export",
        "import",
        "rekey",
        "destroy",
    }
)
RESULTS = frozenset({"released", "refused", "ok"})
OWNER_KINDS = KINDS - {"read", "list", "delegation"}
"""The kinds only the owner's pds appends: their details carry the owner's signature."""
OWNER_ENTRY_LABEL = b"pds/owner-entry/v1"
MAX_ENTRY_BYTES = 64 * 1024 * 1024
"""The largest entry a parser decodes (the canonical decoder's default document limit)."""
_ENTRY_KEYS = frozenset(
    {"v", "vault", "index", "time", "kind", "result", "link", "disclose_after", "sealed"}
)


@dataclass(frozen=True, slots=True)
class LogEntry:
    """One entry as stored and hashed. ``details`` needs the owner's key (``open``)."""

    raw: bytes = field(repr=False)
    vault_id: str
    index: int
    time: int
    kind: str
    result: str
    link_id: bytes | None
    disclose_after: int | None
    sealed: bytes = field(repr=False)

    @property
    def leaf_hash(self) -> bytes:
        return merkle.leaf_hash(self.raw)

    @property
    def when(self) -> datetime:
        return ms_to_datetime(self.time)

    @classmethod
    def parse(cls, raw: bytes) -> LogEntry:
        """Parse entry bytes strictly. Raises ``FormatError``.

        The header is one flat map: an entry holding any other map or array is refused
        while decoding (a container budget of one), before a crafted entry of millions of
        empty maps can take ~60 times its size in Python objects (an audit package's
        entries are not authenticated when they are parsed)."""
        doc = _codec.decode(raw, max_size=MAX_ENTRY_BYTES, max_containers=1)
        if (
            not isinstance(doc, dict)
            or set(doc) != _ENTRY_KEYS
            or not _codec.is_version(doc["v"], ENTRY_VERSION)
        ):
            raise FormatError("not a version 1 log entry")
        link, after = doc["link"], doc["disclose_after"]
        if not (
            isinstance(doc["vault"], str)
            and _is_int(doc["index"])
            and _is_int(doc["time"])
            and type(doc["kind"]) is str
            and doc["kind"] in KINDS
            and type(doc["result"]) is str
            and doc["result"] in RESULTS
            and (link is None or (isinstance(link, bytes) and len(link) == 32))
            and (after is None or _is_int(after))
            and isinstance(doc["sealed"], bytes)
            and len(doc["sealed"]) >= _crypto.SEALED_OVERHEAD
        ):
            raise FormatError("a log entry field has the wrong type")
        return cls(
            raw,
            doc["vault"],
            doc["index"],
            doc["time"],
            doc["kind"],
            doc["result"],
            link,
            after,
            doc["sealed"],
        )

    def open(self, owner_x25519_secret: bytes) -> dict[str, Any]:
        """Decrypt the details with the owner's X25519 secret. Raises ``IntegrityError``."""
        try:
            details = _codec.decode(_crypto.unseal(self.sealed, owner_x25519_secret))
        except (_crypto.AuthenticationFailed, FormatError):
            raise IntegrityError("log-entry", "a log entry failed authentication") from None
        if not isinstance(details, dict):
            raise IntegrityError("log-entry", "log entry details are not a map")
        return details

    def signed_by_owner(self, details: Mapping[str, Any], identity_public: bytes) -> bool:
        """Whether ``details`` (this entry's, opened) carry a valid owner signature over
        this entry: the owner's pds signs every entry it appends, so a host, which can seal
        anything to the owner's public key, cannot pass an entry off as the owner's."""
        signature = details.get("signature")
        if type(signature) is not bytes:
            return False
        try:
            statement = self.owner_statement(details)
            _crypto.verify(identity_public, OWNER_ENTRY_LABEL, statement, signature)
        except (FormatError, _crypto.AuthenticationFailed):
            return False
        return True

    def open_signed(
        self, owner_x25519_secret: bytes, identity_public: bytes
    ) -> dict[str, Any] | None:
        """The details, if they open with the owner's secret and carry the owner's signature
        over this entry; ``None`` otherwise (an entry the host wrote, or damaged)."""
        try:
            details = self.open(owner_x25519_secret)
        except IntegrityError:
            return None
        return details if self.signed_by_owner(details, identity_public) else None

    def owner_statement(self, details: Mapping[str, Any]) -> bytes:
        """What the owner signs for this entry (``docs/spec/log.md``): its header with
        ``details`` (all but ``signature``) in place of the sealed bytes."""
        header = _header(
            self.vault_id,
            self.index,
            self.time,
            self.kind,
            self.result,
            self.link_id,
            self.disclose_after,
        )
        return _owner_statement(header, details)

    def disclosure_key(self, owner_x25519_secret: bytes) -> bytes:
        """The per-entry box key that lets an auditor open exactly this entry's details.

        ``sealed`` is a libsodium sealed box: ``epk || box``. The key is
        ``crypto_box_beforenm(epk, owner_secret)``; with it, ``crypto_box_open_afternm`` and
        the nonce ``BLAKE2b-192(epk || owner_pk)`` open the box (``docs/spec/log.md``).

        Raises ``IntegrityError`` (``log-disclosure``) for an ``epk`` of small order, which
        the host could write (it writes access entries) but nobody can open: libsodium
        refuses the key exchange, the owner's ``open`` fails too.
        """
        try:
            return _crypto.x25519_box_key(self.sealed[:32], owner_x25519_secret)
        except _crypto.AuthenticationFailed:
            raise IntegrityError(
                "log-disclosure", "the entry's ephemeral key is not a usable X25519 key"
            ) from None


def _is_int(value: Any) -> bool:
    return type(value) is int and 0 <= value < 2**63


def open_disclosed(sealed: bytes, owner_x25519_public: bytes, key: bytes) -> dict[str, Any]:
    """Open an entry's details with a disclosure key (what an auditor does)."""
    if len(sealed) < _crypto.SEALED_OVERHEAD or len(key) != 32:
        raise IntegrityError("log-disclosure", "malformed disclosed entry")
    epk = sealed[:32]
    # An epk of small order opens for no owner (libsodium refuses the exchange, so the
    # owner's own view fails): it must not open for an auditor, whatever key is offered.
    if _crypto.x25519_small_order(epk):
        raise IntegrityError("log-disclosure", "the entry's ephemeral key is of small order")
    nonce = hashlib.blake2b(epk + owner_x25519_public, digest_size=24).digest()
    try:
        plaintext = sodium.crypto_box_open_afternm(sealed[32:], nonce, key)
        details = _codec.decode(plaintext)
    except (nacl.exceptions.CryptoError, FormatError):
        raise IntegrityError(
            "log-disclosure", "the disclosure key does not open this entry"
        ) from None
    if not isinstance(details, dict):
        raise IntegrityError("log-disclosure", "log entry details are not a map")
    return details


def _owner_statement(header: dict[str, Any], details: Mapping[str, Any]) -> bytes:
    """The entry's header with its details (all but ``signature``) in place of ``sealed``:
    what the owner signs."""
    unsigned = {key: value for key, value in details.items() if key != "signature"}
    return _codec.encode({**header, "details": unsigned})


def encode_entry(
    *,
    vault_id: str,
    index: int,
    time: int,
    kind: str,
    result: str,
    link_id: bytes | None,
    disclose_after: int | None,
    sealed: bytes,
) -> bytes:
    header = _header(vault_id, index, time, kind, result, link_id, disclose_after)
    header["sealed"] = sealed
    return _codec.encode(header)


def _header(
    vault_id: str,
    index: int,
    time: int,
    kind: str,
    result: str,
    link_id: bytes | None,
    disclose_after: int | None,
) -> dict[str, Any]:
    return {
        "v": ENTRY_VERSION,
        "vault": vault_id,
        "index": index,
        "time": time,
        "kind": kind,
        "result": result,
        "link": link_id,
        "disclose_after": disclose_after,
    }


class MerkleLog:
    """One vault's log over a backend. Appends and proofs read O(log n) stored hashes."""

    def __init__(self, backend: Backend, vault_id: str) -> None:
        self._backend = backend
        self._vault_id = vault_id

    def size(self) -> int:
        return self._backend.log_size(self._vault_id)

    def append(
        self,
        *,
        time: int,
        kind: str,
        result: str,
        link_id: bytes | None,
        details: Mapping[str, Any],
        owner_x25519_public: bytes,
        rng: _crypto.Rng,
        disclose_after: int | None = None,
        signer: _crypto.SigningKey | None = None,
    ) -> int:
        """Append an entry; call inside the transaction it must commit with. ``signer``,
        the owner's identity key, signs an entry the owner's pds appends."""
        index = self.size()
        header = _header(self._vault_id, index, time, kind, result, link_id, disclose_after)
        if signer is not None:
            statement = _owner_statement(header, details)
            details = {**details, "signature": signer.sign(OWNER_ENTRY_LABEL, statement)}
        header["sealed"] = _crypto.seal(_codec.encode(dict(details)), owner_x25519_public, rng)
        self.append_raw(index, time, _codec.encode(header))
        return index

    def append_raw(self, index: int, time: int, entry: bytes) -> None:
        """Store entry bytes at ``index`` (which must be the current size) with its hashes."""
        node = merkle.leaf_hash(entry)
        nodes = [(0, index, node)]
        level, position = 0, index
        while position & 1:
            left = self._node(level, position - 1)
            node = merkle.node_hash(left, node)
            level, position = level + 1, position >> 1
            nodes.append((level, position, node))
        self._backend.append_log(self._vault_id, index, time, entry, nodes)

    def _node(self, level: int, index: int) -> bytes:
        node = self._backend.log_node(self._vault_id, level, index)
        if node is None:
            raise IntegrityError("log-missing", "a log subtree hash is missing")
        return node

    def subtree(self, start: int, end: int) -> bytes:
        """MTH(D[start:end]) from stored complete subtrees (start is aligned as in RFC 9162)."""
        return self._prefetched(lambda subtree: subtree(start, end))

    def _prefetched(self, compute: Callable[[merkle.Subtree], T]) -> T:
        """Run ``compute`` over the stored subtree hashes, read in one query: a first pass
        only notes which complete subtrees it touches (the path depends on sizes alone)."""
        wanted: list[tuple[int, int]] = []

        def note(start: int, end: int) -> bytes:
            size = end - start
            if size & (size - 1) == 0 and start % size == 0:
                wanted.append((size.bit_length() - 1, start // size))
            else:
                k = merkle.split(size)
                note(start, start + k)
                note(start + k, end)
            return merkle.EMPTY_ROOT

        compute(note)
        nodes = self._backend.log_nodes(self._vault_id, wanted)

        def subtree(start: int, end: int) -> bytes:
            size = end - start
            if size & (size - 1) == 0 and start % size == 0:
                node = nodes.get((size.bit_length() - 1, start // size))
                if node is None:
                    raise IntegrityError("log-missing", "a log subtree hash is missing")
                return node
            k = merkle.split(size)
            return merkle.node_hash(subtree(start, start + k), subtree(start + k, end))

        return compute(subtree)

    def root(self, size: int | None = None) -> bytes:
        size = self.size() if size is None else size
        return merkle.EMPTY_ROOT if size == 0 else self.subtree(0, size)

    def inclusion(self, index: int, size: int) -> list[bytes]:
        return self._prefetched(lambda subtree: merkle.inclusion_path(index, size, subtree))

    def consistency(self, old_size: int, size: int) -> list[bytes]:
        return self._prefetched(lambda subtree: merkle.consistency_path(old_size, size, subtree))

    def entry(self, index: int) -> LogEntry:
        """The stored entry at ``index``. Raises ``IntegrityError`` (``log-missing``) if there
        is none, ``InvalidProof`` (``log-entry``) if its bytes do not parse as an entry at
        that index of this vault: the host wrote or changed them (not the caller's input)."""
        for _, raw in self._backend.iter_log(self._vault_id, index, index + 1):
            try:
                entry = LogEntry.parse(raw)
            except FormatError:
                raise InvalidProof("the stored log entry does not parse", "log-entry") from None
            if entry.index != index or entry.vault_id != self._vault_id:
                raise InvalidProof("the stored log entry is out of place", "log-entry")
            return entry
        raise IntegrityError("log-missing", "a log entry is missing")

    def entries(self, start: int, end: int, *, newest_first: bool = False) -> Iterator[LogEntry]:
        """The stored entries ``start <= index < end``. Raises ``FormatError`` at the first
        that does not parse."""
        for _, raw in self._backend.iter_log(self._vault_id, start, end, newest_first=newest_first):
            yield LogEntry.parse(raw)

    def stored_entries(
        self, start: int, end: int, *, newest_first: bool = False
    ) -> Iterator[tuple[int, LogEntry | None]]:
        """Each stored entry ``start <= index < end`` as ``(its index in the store, the
        entry)``: the entry is ``None`` where the stored bytes do not parse as a log entry,
        or parse as one that names another index or vault. The host writes access entries
        and can write such bytes; the owner's views show them as damaged rather than let
        one hide the rest, and verification (``Vault.verify_log``, repair, export, audit)
        hashes them as they are and takes them for no entry (``docs/spec/log.md``,
        Entries). An index missing from the store is skipped: the caller checks for gaps."""
        for index, raw in self._backend.iter_log(
            self._vault_id, start, end, newest_first=newest_first
        ):
            try:
                entry = LogEntry.parse(raw)
            except FormatError:
                yield index, None
                continue
            in_place = entry.index == index and entry.vault_id == self._vault_id
            yield index, entry if in_place else None


# -- checkpoints (C2SP tlog-checkpoint signed notes) --------------------------------------

_SIGNATURE_PREFIX = "\u2014 "
_ED25519_TYPE = b"\x01"


_SIGNATURE_LINE = re.compile("\u2014 [^ \\s]+ [A-Za-z0-9+/]+={0,2}")


def _signature_line(line: str) -> bool:
    """A signed note's signature line (C2SP signed-note): an em dash, a space, the key
    name (no spaces), a space and base64 of a key id and a signature (5 bytes at least)."""
    if _SIGNATURE_LINE.fullmatch(line) is None:
        return False
    try:
        return len(base64.b64decode(line.rsplit(" ", 1)[1], validate=True)) >= 5
    except (binascii.Error, ValueError):
        return False


def origin(vault_id: str) -> str:
    return f"pds/vault/{vault_id}"


def key_id(name: str, public: bytes) -> bytes:
    """The signed-note key id: SHA-256(name || 0x0A || 0x01 || public key)[:4]."""
    return hashlib.sha256(name.encode() + b"\n" + _ED25519_TYPE + public).digest()[:4]


def verifier_key(name: str, public: bytes) -> str:
    """The note verifier key string ``name+hex(key id)+base64(0x01 || key)``."""
    encoded = base64.b64encode(_ED25519_TYPE + public).decode()
    return f"{name}+{key_id(name, public).hex()}+{encoded}"


def _decimal(text: str) -> int:
    """A checkpoint number: ASCII decimal digits without leading zeros (C2SP
    tlog-checkpoint), below 2^63. ``str.isdigit`` would pass other scripts' digits and
    superscripts, which ``int`` then refuses or reads. Raises ``FormatError``."""
    if (
        not text
        or not text.isascii()
        or not text.isdecimal()
        or (len(text) > 1 and text[0] == "0")
        or len(text) > 19
        or int(text) >= 2**63
    ):
        raise FormatError("a checkpoint number is not canonical decimal")
    return int(text)


def _base64_32(text: str, what: str) -> bytes:
    """A checkpoint's base64 hash (the root, a record's digest). Raises ``FormatError``."""
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise FormatError(f"a checkpoint {what} is not base64") from None
    if len(raw) != 32:
        raise FormatError(f"a checkpoint {what} is 32 bytes")
    return raw


def _record_line(line: str, name: str) -> tuple[int, bytes]:
    """A ``<name> <count> <digest>`` extension line. Raises ``FormatError``."""
    parts = line.split(" ")
    if len(parts) != 3 or parts[0] != name:
        raise FormatError("not a pds checkpoint")
    return _decimal(parts[1]), _base64_32(parts[2], f"{name} digest")


REVOKED_LABEL = b"pds/revoked/v1"


def revoked_digest(link_ids: Iterable[bytes]) -> tuple[int, bytes]:
    """The count and digest of a set of revoked link ids that a checkpoint records:
    SHA-256("pds/revoked/v1" || 0x00 || the distinct 32-byte ids in ascending byte order)
    (``docs/spec/log.md``)."""
    ids = sorted(set(link_ids))
    digest = hashlib.sha256(REVOKED_LABEL + b"\x00")
    for link_id in ids:
        if type(link_id) is not bytes or len(link_id) != 32:
            raise FormatError("a link id is 32 bytes")
        digest.update(link_id)
    return len(ids), digest.digest()


ROTATED_LABEL = b"pds/rotated/v1"


def rotated_digest(newest: Mapping[str, int]) -> tuple[int, bytes]:
    """The count and digest of the rotated collections a checkpoint records: ``newest``
    maps each collection to its newest key epoch; those at epoch 2 or later are recorded,
    SHA-256("pds/rotated/v1" || 0x00 || C([[collection, epoch], ...])) with the pairs in
    ascending UTF-8 order of the names (``docs/spec/log.md``)."""
    pairs = sorted(
        ((name, epoch) for name, epoch in newest.items() if epoch >= 2),
        key=lambda pair: pair[0].encode("utf-8"),
    )
    encoded = _codec.encode([[name, epoch] for name, epoch in pairs])
    return len(pairs), hashlib.sha256(ROTATED_LABEL + b"\x00" + encoded).digest()


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """A signed tree head: origin, size, root hash, time and the records of the vault's
    revocations and rotated key epochs, signed by the vault key."""

    origin: str
    size: int
    root: bytes
    time: int
    signature: bytes = field(repr=False)
    key_id: bytes = field(default=b"", repr=False)
    """The 4-byte signed-note key id that precedes the signature."""
    revoked: tuple[int, bytes] | None = None
    """The ``revoked`` extension: how many links of the vault were revoked and the digest
    of their ids (``revoked_digest``); ``None`` in a head signed before it existed."""
    rotated: tuple[int, bytes] | None = None
    """The ``rotated`` extension: how many collections were rotated past their first key
    epoch and the digest of their newest epochs (``rotated_digest``); ``None`` with
    ``revoked``."""

    @property
    def body(self) -> str:
        root = base64.b64encode(self.root).decode()
        body = f"{self.origin}\n{self.size}\n{root}\ntime {self.time}\n"
        for name, record in (("revoked", self.revoked), ("rotated", self.rotated)):
            if record is not None:
                count, digest = record
                body += f"{name} {count} {base64.b64encode(digest).decode()}\n"
        return body

    def to_text(self) -> str:
        signature = base64.b64encode(self.key_id + self.signature).decode()
        return f"{self.body}\n{_SIGNATURE_PREFIX}{self.origin} {signature}\n"

    @classmethod
    def sign(
        cls,
        signer: _crypto.SigningKey,
        vault_id: str,
        size: int,
        root: bytes,
        time: int,
        *,
        records: tuple[tuple[int, bytes], tuple[int, bytes]] | None,
    ) -> Checkpoint:
        """Sign a head; ``records`` are its revocation and rotation records (``None`` only
        to make the heads of pds versions before them, for tests)."""
        name = origin(vault_id)
        revoked, rotated = records if records is not None else (None, None)
        unsigned = cls(name, size, root, time, b"", revoked=revoked, rotated=rotated)
        signature = signer.sign_raw(unsigned.body.encode())
        return cls(name, size, root, time, signature, key_id(name, signer.public), revoked, rotated)

    @property
    def records(self) -> tuple[tuple[int, bytes], tuple[int, bytes]] | None:
        """The revocation and rotation records, or ``None`` (a head of an earlier pds)."""
        if self.revoked is None or self.rotated is None:
            return None
        return self.revoked, self.rotated

    @classmethod
    def parse(cls, text: str, public: bytes | None = None) -> Checkpoint:
        """Parse a checkpoint note strictly (it is verified separately). Raises ``FormatError``.

        Of the signature lines by the origin's name, the one kept is the first whose key id
        is ``public``'s (C2SP signed-note: a verifier picks its key's line by name and key
        id and ignores the others), or the first of them when ``public`` is not given.
        With ``public``, a note with no line for its key raises ``InvalidProof``
        (``checkpoint-key``), as ``verify`` would."""
        if not isinstance(text, str) or len(text) > 4096 or "\r" in text:
            raise FormatError("not a pds checkpoint")
        try:
            text.encode("utf-8")  # a signed note is UTF-8: no lone surrogates
        except UnicodeEncodeError:
            raise FormatError("not a pds checkpoint (not UTF-8)") from None
        body, separator, signatures = text.partition("\n\n")
        lines = body.split("\n")
        if not separator or len(lines) not in (4, 6) or not signatures.endswith("\n"):
            raise FormatError("not a pds checkpoint")
        name, size_text, root_text, time_line = lines[:4]
        if not name.startswith("pds/vault/") or not time_line.startswith("time "):
            raise FormatError("not a pds checkpoint")
        size = _decimal(size_text)
        time = _decimal(time_line[5:])
        root = _base64_32(root_text, "root")
        revoked = rotated = None
        if len(lines) == 6:
            revoked = _record_line(lines[4], "revoked")
            rotated = _record_line(lines[5], "rotated")
        lines = signatures[:-1].split("\n")
        if len(set(lines)) != len(lines) or not all(map(_signature_line, lines)):
            # C2SP: the block is signature lines only; one note has one text.
            raise FormatError("a checkpoint signature line is malformed or repeated")
        prefix = _SIGNATURE_PREFIX + name + " "
        # Every line is well-formed base64 of 5 bytes at least (checked just above).
        signed = [
            base64.b64decode(line[len(prefix) :]) for line in lines if line.startswith(prefix)
        ]
        if not signed:
            raise FormatError("the checkpoint has no signature by its origin's key")
        if public is not None:
            wanted = key_id(name, public)
            signed = [raw for raw in signed if raw[:4] == wanted]
            if not signed:
                raise InvalidProof("the checkpoint is signed by another key", "checkpoint-key")
        raw = signed[0]
        if len(raw) != 4 + 64:
            raise FormatError("a checkpoint signature is 68 bytes")
        head = cls(name, size, root, time, raw[4:], raw[:4], revoked, rotated)
        # Verification signs the body rebuilt from the parsed values, so the text received
        # must be exactly that body: no leading zeros, non-ASCII digits or non-canonical
        # base64 may slip through unsigned.
        if head.body != body + "\n":
            raise FormatError("the checkpoint is not in canonical form")
        return head

    def verify(self, public: bytes) -> None:
        """Verify the signature with the vault's identity key. Raises ``InvalidProof``."""
        if self.key_id != key_id(self.origin, public):
            raise InvalidProof("the checkpoint is signed by another key", "checkpoint-key")
        try:
            _crypto.verify_raw(public, self.body.encode(), self.signature)
        except _crypto.AuthenticationFailed:
            raise InvalidProof(
                "the checkpoint signature does not verify", "checkpoint-signature"
            ) from None


def check_extends(log: MerkleLog, latest: Checkpoint | None, pin: Checkpoint) -> None:
    """Check that the stored ``log`` extends ``pin``, a head seen earlier, and that its
    ``latest`` verified head is at least as large, with the same records at the same size:
    a host that deleted the heads signed since, with the revocations and rotations they
    record, shows an older head over the same entries. Raises ``InvalidProof``
    (``log-truncated``, ``log-fork``, ``checkpoint-missing``, ``checkpoint-records``).
    The root is read from the stored subtree hashes, which a walk of the entries checks."""
    if log.size() < pin.size:
        raise InvalidProof("the log is shorter than the pinned head", "log-truncated")
    if log.root(pin.size) != pin.root:
        raise InvalidProof("the log does not extend the pinned head", "log-fork")
    if latest is None or latest.size < pin.size:
        raise InvalidProof(
            "the latest signed head is older than the pinned head", "checkpoint-missing"
        )
    if (
        latest.size == pin.size
        and None not in (latest.records, pin.records)
        and latest.records != pin.records
    ):
        raise InvalidProof(
            "the latest signed head records other revocations or epochs than the pinned head",
            "checkpoint-records",
        )
