"""The portable export file of one vault (``docs/spec/export.md``).

Layout: the magic line ``pds-export/v1\\n``, then frames, each a 4-byte big-endian length
and one canonical msgpack map: ``vault``, every ``epoch``, then each ``batch`` followed by
its ``record`` frames, then ``end``, whose signature (by the vault identity key) covers
the SHA-256 of every byte before it. Export and import stream: memory use does not grow
with the vault.
"""

from __future__ import annotations

import contextlib
import io
import os
import stat
import struct
import tempfile
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from pds import _codec, _crypto, _envelope, _owner, capability, merkle
from pds._context import Context
from pds._ids import check_collection, check_record_id
from pds._store.base import (
    Backend,
    BatchRow,
    EpochRow,
    LinkKeyRow,
    LinkRow,
    RecordRow,
    RevocationRow,
    VaultRow,
)
from pds.accesslog import (
    Checkpoint,
    LogEntry,
    MerkleLog,
    check_extends,
    origin,
    revoked_digest,
    rotated_digest,
)
from pds.capability import Token, verify_chain
from pds.errors import AccessDenied, FormatError, IntegrityError, InvalidProof, VaultExists

if TYPE_CHECKING:
    from pds.vault import Vault

MAGIC = b"pds-export/v1\n"
END_SIGNATURE_LABEL = b"pds/export/v1"
HEADER_SIGNATURE_LABEL = b"pds/export-header/v1"
MAX_FRAME = 32 * 1024 * 1024
MAX_FRAME_CONTAINERS = 1024
"""Maps and arrays in one export frame (each frame is a flat map of scalars, with a small
map of counts in the last)."""
_LENGTH = struct.Struct(">I")

Progress = Callable[[int], None] | None


class _HashingWriter:
    def __init__(self, stream: IO[bytes]) -> None:
        self._stream = stream
        self._hash = _crypto.sha256_hasher()

    def write(self, data: bytes) -> None:
        self._hash.update(data)
        self._stream.write(data)

    def frame(self, document: dict[str, Any]) -> None:
        body = _codec.encode(document)
        if len(body) > MAX_FRAME:
            # The importer refuses it: a file reported as written must import.
            raise FormatError("a stored row is larger than an export frame may be (32 MiB)")
        self.write(_LENGTH.pack(len(body)) + body)

    def digest(self) -> bytes:
        return self._hash.digest()


def _end_statement(vault_id: str, digest: bytes, counts: dict[str, int]) -> bytes:
    return _codec.encode({"vault": vault_id, "digest": digest, "counts": counts})


def check_destination(destination: Any, protected: Iterable[str | os.PathLike[str]] = ()) -> None:
    """Refuse (``FormatError``) a destination the export cannot or must not write: a text
    file object; a path with a NUL character or in a directory that does not exist; a path
    that exists and is not a regular file (the export renames a new file over it, which
    would replace a FIFO, a device node or a socket instead of writing to it); or the same
    file as one of ``protected`` (the store's own files, the owner's key file)."""
    if hasattr(destination, "write"):
        if isinstance(destination, io.TextIOBase):
            raise FormatError("the export destination is a path or a binary file object")
        return
    if not isinstance(destination, str | os.PathLike):
        raise FormatError("the export destination is a path or a binary file object")
    path = Path(destination)
    if "\0" in str(path):
        raise FormatError("the export destination's path contains a NUL character")
    if not path.parent.is_dir():
        raise FormatError("the export destination's directory does not exist")
    try:
        mode = path.stat().st_mode
    except OSError:
        return  # Missing, or whatever else is wrong with it shows when the file is made.
    if not stat.S_ISREG(mode):
        raise FormatError("the export destination exists and is not a regular file")
    for other in protected:
        same = False
        with contextlib.suppress(OSError, ValueError):
            same = os.path.samefile(path, other)
        if same:
            raise FormatError(
                "the export destination is the store's own file or the owner's key file: "
                "it is not replaced"
            )


@contextmanager
def _open_destination(destination: Any) -> Iterator[IO[bytes]]:
    if hasattr(destination, "write"):
        yield destination
        return
    path = Path(destination)
    fd, temp_name = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent or Path("."))
    try:
        with os.fdopen(fd, "wb") as stream:
            yield stream
            stream.flush()
            os.fsync(stream.fileno())
        check_destination(path)  # again: it may have appeared since the export began
        os.replace(temp_name, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temp_name)
        raise


def export_vault(
    vault: Vault, destination: Any, *, progress: Progress = None, pinned: Checkpoint | None = None
) -> None:
    """Write ``vault`` to ``destination`` from one read snapshot. ``pinned``, a verified
    head seen earlier, is checked again in the snapshot, against the root recomputed from
    the entries as they are written (the stored subtree hashes are a cache the host could
    have rewritten)."""
    keys = vault._keys()
    ctx = vault._ctx
    backend = ctx.backend
    owner_public = _crypto.x25519_public(keys.x25519_secret)
    counts = dict.fromkeys(_COUNTED.values(), 0)
    with backend.snapshot(), _open_destination(destination) as stream:
        row = vault._refresh()
        out = _HashingWriter(stream)
        out.write(MAGIC)
        header: dict[str, Any] = {
            "t": "vault",
            "vault": row.vault_id,
            "created_at": row.created_at,
            "identity": row.identity_public,
            "unlock": row.unlock,
            "wrapped_master": row.wrapped_master,
            "wrapped_identity": row.wrapped_identity,
            "policy": row.policy,
            "exported_at": ctx.now_ms(),
        }
        # The header is signed on its own too, so an importer authenticates it before it
        # uses the owner's secret: a changed header is an integrity failure, not a wrong key.
        header["signature"] = keys.identity.sign(HEADER_SIGNATURE_LABEL, _codec.encode(header))
        out.frame(header)
        # The importer's checks are applied while exporting (the rows a host stores are not
        # trusted): a damaged row fails the export, not a later import of a file reported
        # as written.
        epoch_order = _Ascending("an epoch")
        newest: dict[str, int] = {}
        for epoch in backend.iter_epochs(row.vault_id):
            epoch_order.check((epoch.collection.encode(), epoch.epoch))
            _envelope.verify_epoch_row(row.identity_public, epoch)
            newest[epoch.collection] = epoch.epoch  # ascending: the last is the newest
            out.frame(
                {
                    "t": "epoch",
                    "collection": epoch.collection,
                    "epoch": epoch.epoch,
                    "public_key": epoch.public_key,
                    "created_at": epoch.created_at,
                    "signature": epoch.signature,
                    "sealed_owner": epoch.sealed_owner,
                    "seal_fields": epoch.seal_fields,
                }
            )
            counts["epochs"] += 1
        for batch in backend.iter_batches(row.vault_id):
            # Verify before export: an export must never launder tampered rows.
            # Verify without caching: memory must not grow with the vault.
            manifest = vault._verify_batch(batch)
            # Every epoch row was verified above, in this snapshot.
            if backend.get_epoch(row.vault_id, batch.collection, batch.epoch) is None:
                raise IntegrityError("epoch-missing", "a batch's key epoch is missing")
            if batch.wrapped_host is None:
                raise vault._keys_missing()
            host_share = ctx.host_unwrap(
                batch.wrapped_host, _envelope.host_wrap_context(row.vault_id, batch.batch_id)
            )
            out.frame(
                {
                    "t": "batch",
                    "batch": batch.batch_id,
                    "collection": batch.collection,
                    "epoch": batch.epoch,
                    "writer": batch.writer,
                    "created_at": batch.created_at,
                    "manifest": batch.manifest,
                    "signature": batch.signature,
                    "sealed_reader": batch.sealed_reader,
                    "host_share": _crypto.seal(host_share, owner_public, ctx.rng),
                }
            )
            counts["batches"] += 1
            pending = set(manifest.entries)
            for record in backend.iter_batch_records(row.vault_id, batch.batch_id):
                document = {
                    "t": "record",
                    "batch": record.batch_id,
                    "record": record.record_id,
                    "version": record.version,
                    "collection": record.collection,
                    "created_at": record.created_at,
                    "epoch": record.epoch,
                    "deleted": record.deleted,
                    "nonce": record.nonce,
                    "ciphertext": record.ciphertext,
                }
                _check_record(document, manifest, pending, row.vault_id)
                out.frame(document)
                counts["records"] += 1
                if progress is not None:
                    progress(counts["records"])
            if pending:
                raise IntegrityError("export-incomplete", "a batch's records are missing")
        link_order = _Ascending("a link")
        for link in backend.iter_links(row.vault_id):
            link_order.check((link.created_at, link.link_id))
            document = {
                "t": "link",
                "link": link.link_id,
                "parent": link.parent_id,
                "audience": link.audience,
                "not_before": link.not_before,
                "expires": link.expires,
                "uses": link.uses,
                "created_at": link.created_at,
                "sealed_token": link.sealed_token,
            }
            try:
                _verify_link(document, keys, row)
            except FormatError:  # MalformedToken: for a stored row, damage, not bad input
                raise IntegrityError("link", "a known link's token is malformed") from None
            out.frame(document)
            counts["links"] += 1
            key_order = _Ascending("a link key")
            for key in backend.link_keys(link.link_id):
                try:
                    check_collection(key.collection)
                except FormatError:
                    raise IntegrityError("link", "a link key names no valid collection") from None
                key_order.check((key.collection.encode(), key.epoch))
                out.frame(
                    {
                        "t": "link_key",
                        "link": key.link_id,
                        "collection": key.collection,
                        "epoch": key.epoch,
                        "sealed": key.sealed,
                    }
                )
                counts["link_keys"] += 1
            used = backend.use_counts([link.link_id]).get(link.link_id, 0) if link.uses else 0
            if used:
                if link.uses is None or used > link.uses:
                    raise IntegrityError("link", "a link's use count exceeds its budget")
                # The budget spent so far travels with the link: an import must not
                # hand a spent token a fresh budget.
                out.frame({"t": "link_use", "link": link.link_id, "used": used})
        revocation_order = _Ascending("a revocation")
        revoked: list[bytes] = []
        for revocation in backend.iter_revocations(row.vault_id):
            revocation_order.check((revocation.revoked_at, revocation.link_id))
            verify_revocation_row(revocation, row)
            revoked.append(revocation.link_id)
            out.frame(
                {
                    "t": "revocation",
                    "link": revocation.link_id,
                    "revoked_at": revocation.revoked_at,
                    "statement": revocation.statement,
                    "signature": revocation.signature,
                }
            )
            counts["revocations"] += 1
        # The checkpoint is read first (same snapshot) so that the root at its size can be
        # recomputed from the entries as they stream out: the end signature must never
        # cover a log the host rewrote under a signed head.
        note = backend.latest_checkpoint(row.vault_id)
        head = None if note is None else _stored_head(note, row)
        check_records(head, revoked, newest)
        if pinned is not None:
            check_extends(MerkleLog(backend, row.vault_id), head, pinned)
        size = backend.log_size(row.vault_id)
        builder = merkle.RootBuilder()
        head_root = builder.root() if head is not None and head.size == 0 else None
        pinned_root = builder.root() if pinned is not None and pinned.size == 0 else None
        for index, entry in backend.iter_log(row.vault_id, 0, size):
            if index != builder.size:
                raise InvalidProof("an entry is missing from the log", "log-gap")
            # Written as stored, whether or not it parses as an entry of this log at its
            # index: one that does not is a leaf the host wrote (log.md, Entries), hashed
            # like any other and imported as it is.
            out.frame({"t": "log", "index": index, "entry": entry})
            counts["log"] += 1
            builder.add(merkle.leaf_hash(entry))
            if head is not None and builder.size == head.size:
                head_root = builder.root()
            if pinned is not None and builder.size == pinned.size:
                pinned_root = builder.root()
        if builder.size != size:
            raise InvalidProof("an entry is missing from the log", "log-gap")
        if pinned is not None and pinned_root != pinned.root:
            raise InvalidProof("the log does not extend the pinned head", "log-fork")
        if head is not None:
            if head_root != head.root:
                raise InvalidProof(
                    "the stored log does not extend its latest signed checkpoint", "log-fork"
                )
            out.frame({"t": "checkpoint", "note": note})
            counts["checkpoints"] += 1
        digest = out.digest()
        signature = keys.identity.sign(
            END_SIGNATURE_LABEL, _end_statement(row.vault_id, digest, counts)
        )
        out.frame({"t": "end", "counts": counts, "digest": digest, "signature": signature})


def check_records(head: Checkpoint | None, revoked: list[bytes], newest: dict[str, int]) -> None:
    """The revocations and the newest key epochs written or read must be those the
    checkpoint records (if it records them): a host must not drop one on its way into or
    out of an export. Raises ``IntegrityError`` (``revocations-changed``,
    ``epochs-changed``)."""
    if head is None or head.records is None:
        return
    if revoked_digest(revoked) != head.records[0]:
        raise IntegrityError(
            "revocations-changed", "the revocations differ from those the checkpoint records"
        )
    if rotated_digest(newest) != head.records[1]:
        raise IntegrityError(
            "epochs-changed", "the key epochs differ from those the checkpoint records"
        )


def _stored_head(note: str, row: VaultRow) -> Checkpoint:
    """The stored latest checkpoint, verified: signed by the vault's key, for its log."""
    head = Checkpoint.parse(note, row.identity_public)
    head.verify(row.identity_public)
    if head.origin != origin(row.vault_id):
        raise InvalidProof("the checkpoint is for another log", "checkpoint-origin")
    return head


class _Ascending:
    """The frames of a section in strictly ascending order of their key, as export.md's
    layout orders them (the exporter's store order, checked by both sides): a smaller key
    is ``export-order``, an equal one a repeated frame (``export-duplicate``). Holds one
    key, so the check costs no memory that grows with the vault."""

    def __init__(self, what: str) -> None:
        self._what = what
        self._last: tuple[Any, ...] | None = None

    def check(self, key: tuple[Any, ...]) -> None:
        if self._last is not None:
            if key == self._last:
                raise IntegrityError("export-duplicate", f"{self._what} frame appears twice")
            if key < self._last:
                raise IntegrityError("export-order", f"{self._what} frame is out of order")
        self._last = key


def _check_record(
    record: dict[str, Any],
    manifest: _envelope.Manifest,
    pending: set[tuple[str, int]],
    vault_id: str,
) -> None:
    """A record frame against its batch's verified manifest (import step 7, applied by the
    exporter too): pending in the batch (removed from ``pending``), bound and hashed as the
    manifest says. Raises ``IntegrityError``."""
    key = (record["record"], record["version"])
    if key not in pending:
        raise IntegrityError("not-in-batch", "a record is not pending in its batch")
    pending.discard(key)
    record_binding = _envelope.binding(
        vault_id,
        record["collection"],
        record["record"],
        record["version"],
        record["epoch"],
        record["batch"],
        record["deleted"],
    )
    _envelope.check_entry(
        manifest,
        record_id=record["record"],
        version=record["version"],
        deleted=record["deleted"],
        collection=record["collection"],
        epoch=record["epoch"],
        created_at=record["created_at"],
        record_binding=record_binding,
        nonce=record["nonce"],
        ciphertext=record["ciphertext"],
        # Whether erased content sits below a tombstone is checked when the record is
        # read; export and import keep the rows exactly as stored.
        erasable=True,
    )


def _verify_link(link: dict[str, Any], keys: _owner.OwnerKeys, row: VaultRow) -> None:
    """A link frame (import step 9, applied by the exporter too): its sealed token opens
    with the owner's key, verifies as a chain of this vault, and its last link is the
    frame's. Raises ``IntegrityError`` (``link``), or ``MalformedToken``."""
    try:
        token = Token.from_bytes(_crypto.unseal(link["sealed_token"], keys.x25519_secret))
    except _crypto.AuthenticationFailed:
        raise IntegrityError("link", "a known link failed authentication") from None
    try:
        verify_chain(token, vault_id=row.vault_id, identity=row.identity_public)
    except AccessDenied as denied:
        raise IntegrityError("link", f"a known link does not verify ({denied.reason})") from None
    leaf = token.leaf
    if (
        leaf.link_id != link["link"]
        or leaf.parent != link["parent"]
        or leaf.audience != link["audience"]
        or leaf.caveats.not_before != link["not_before"]
        or leaf.caveats.expires != link["expires"]
        or leaf.caveats.uses != link["uses"]
    ):
        raise IntegrityError("link", "a known link does not match its token")


def _verify_revocation(revocation: dict[str, Any], row: VaultRow) -> None:
    """A revocation frame (import step 10, applied by the exporter too): signed by the
    vault, and its statement names this vault, the link and the time. Raises
    ``IntegrityError`` (``revocation``)."""
    try:
        _crypto.verify(
            row.identity_public,
            capability.REVOCATION_LABEL,
            revocation["statement"],
            revocation["signature"],
        )
        statement = _codec.decode(revocation["statement"])
    except (_crypto.AuthenticationFailed, FormatError):
        raise IntegrityError("revocation", "a revocation failed authentication") from None
    if (
        not isinstance(statement, dict)
        or statement.get("vault") != row.vault_id
        or statement.get("link") != revocation["link"]
        or statement.get("revoked_at") != revocation["revoked_at"]
    ):
        raise IntegrityError("revocation", "a revocation does not match its statement")


def verify_revocation_row(revocation: RevocationRow, row: VaultRow) -> None:
    """A stored revocation, checked as an importer checks its frame."""
    _verify_revocation(
        {
            "link": revocation.link_id,
            "revoked_at": revocation.revoked_at,
            "statement": revocation.statement,
            "signature": revocation.signature,
        },
        row,
    )


# -- import ----------------------------------------------------------------------------


class _FrameReader:
    def __init__(self, stream: IO[bytes]) -> None:
        self._stream = stream
        self._hash = _crypto.sha256_hasher()

    def _read_exact(self, size: int) -> bytes:
        chunks = []
        remaining = size
        while remaining:
            chunk = self._stream.read(remaining)
            if not chunk:
                raise FormatError("the export file is truncated")
            chunks.append(chunk)
            remaining -= len(chunk)
        data = b"".join(chunks)
        self._hash.update(data)
        return data

    def magic(self) -> None:
        if self._stream.read(len(MAGIC)) != MAGIC:
            raise FormatError("not a pds export file (or an unsupported version)")
        self._hash.update(MAGIC)

    def digest_before_last_frame(self) -> bytes:
        """SHA-256 of every byte before the frame ``next`` returned last."""
        return self._before.digest()

    def next(self) -> dict[str, Any]:
        self._before = self._hash.copy()
        (length,) = _LENGTH.unpack(self._read_exact(_LENGTH.size))
        if length > MAX_FRAME:
            raise FormatError("export frame too large")
        # Not authenticated until the end: a frame is a flat map, so a few containers
        # bound the memory a crafted one of tiny maps could ask for (gigabytes).
        document = _codec.decode(
            self._read_exact(length), max_size=MAX_FRAME, max_containers=MAX_FRAME_CONTAINERS
        )
        if not isinstance(document, dict) or not isinstance(document.get("t"), str):
            raise FormatError("export frame is not a typed map")
        return document

    def at_eof(self) -> bool:
        return self._stream.read(1) == b""


_FIELDS: dict[str, dict[str, tuple[type, ...]]] = {
    "vault": {
        "t": (str,),
        "vault": (str,),
        "created_at": (int,),
        "identity": (bytes,),
        "unlock": (bytes,),
        "wrapped_master": (bytes,),
        "wrapped_identity": (bytes,),
        "policy": (bytes, type(None)),
        "exported_at": (int,),
        "signature": (bytes,),
    },
    "epoch": {
        "t": (str,),
        "collection": (str,),
        "epoch": (int,),
        "public_key": (bytes,),
        "created_at": (int,),
        "signature": (bytes,),
        "sealed_owner": (bytes,),
        "seal_fields": (bool,),
    },
    "batch": {
        "t": (str,),
        "batch": (bytes,),
        "collection": (str,),
        "epoch": (int,),
        "writer": (bytes,),
        "created_at": (int,),
        "manifest": (bytes,),
        "signature": (bytes,),
        "sealed_reader": (bytes,),
        "host_share": (bytes,),
    },
    "record": {
        "t": (str,),
        "batch": (bytes,),
        "record": (str,),
        "version": (int,),
        "collection": (str,),
        "created_at": (int,),
        "epoch": (int,),
        "deleted": (bool,),
        "nonce": (bytes, type(None)),
        "ciphertext": (bytes, type(None)),
    },
    "link": {
        "t": (str,),
        "link": (bytes,),
        "parent": (bytes, type(None)),
        "audience": (bytes,),
        "not_before": (int,),
        "expires": (int,),
        "uses": (int, type(None)),
        "created_at": (int,),
        "sealed_token": (bytes,),
    },
    "link_key": {
        "t": (str,),
        "link": (bytes,),
        "collection": (str,),
        "epoch": (int,),
        "sealed": (bytes,),
    },
    "link_use": {"t": (str,), "link": (bytes,), "used": (int,)},
    "revocation": {
        "t": (str,),
        "link": (bytes,),
        "revoked_at": (int,),
        "statement": (bytes,),
        "signature": (bytes,),
    },
    "log": {"t": (str,), "index": (int,), "entry": (bytes,)},
    "checkpoint": {"t": (str,), "note": (str,)},
    "end": {"t": (str,), "counts": (dict,), "digest": (bytes,), "signature": (bytes,)},
}
# The frames the end frame counts: frame kind -> its name in ``counts``.
_COUNTED = {
    "epoch": "epochs",
    "batch": "batches",
    "record": "records",
    "link": "links",
    "link_key": "link_keys",
    "revocation": "revocations",
    "log": "log",
    "checkpoint": "checkpoints",
}


def _check_shape(document: dict[str, Any], kind: str) -> dict[str, Any]:
    if document["t"] != kind:
        raise FormatError(f"expected a {kind} frame, found {document['t']!r:.20}")
    fields = _FIELDS[kind]
    if set(document) != set(fields):
        raise FormatError(f"{kind} frame has missing or unknown fields")
    for name, types in fields.items():
        value = document[name]
        if not isinstance(value, types) or (isinstance(value, bool) and bool not in types):
            raise FormatError(f"{kind} frame field {name!r} has the wrong type")
        if type(value) is int and not 0 <= value < 2**63:
            raise FormatError(f"{kind} frame field {name!r} is out of range")
    return document


@contextmanager
def _open_source(source: Any) -> Iterator[IO[bytes]]:
    if hasattr(source, "read"):
        yield source
        return
    if not isinstance(source, str | os.PathLike):
        raise FormatError("the export source is a path or a binary file object")
    try:
        stream = open(Path(source), "rb")  # noqa: SIM115 - closed below
    except OSError as exc:
        raise FormatError(f"cannot read export file: {exc.strerror}") from None
    except ValueError:  # a NUL in the path
        raise FormatError("cannot read export file: the path contains a NUL character") from None
    with stream:
        yield stream


Pinned = Checkpoint | str | Callable[[str], Checkpoint | str | None] | None
"""A head seen earlier that an import must extend, or a function from the vault id to it."""


def _pinned_head(pinned: Pinned, row: VaultRow) -> Checkpoint | None:
    """The pinned head for the vault of ``row``, verified as its owner's for its log."""
    if callable(pinned):
        pinned = pinned(row.vault_id)
    if pinned is None:
        return None
    if not isinstance(pinned, str | Checkpoint):
        raise FormatError("pinned is a Checkpoint or its text")
    head = Checkpoint.parse(pinned, row.identity_public) if isinstance(pinned, str) else pinned
    head.verify(row.identity_public)
    if head.origin != origin(row.vault_id):
        raise InvalidProof("the pinned checkpoint is for another log", "checkpoint-origin")
    return head


def _check_pinned(
    backend: Backend,
    row: VaultRow,
    keys: _owner.OwnerKeys,
    pin: Checkpoint,
    newest: dict[str, int],
) -> None:
    """The imported log extends ``pin`` and its latest head is at least as large, with the
    same records at the same size (``check_extends``), and every revocation and rotation
    the owner signed in the entries the pin covers is in the file. A host that deleted a
    revocation and the heads signed since makes a store whose fresh export carries a head
    that agrees with its rows: only the pinned entries show what was lost."""
    log = MerkleLog(backend, row.vault_id)
    note = backend.latest_checkpoint(row.vault_id)
    check_extends(log, None if note is None else _stored_head(note, row), pin)
    revoked = {revocation.link_id for revocation in backend.iter_revocations(row.vault_id)}
    for _, entry in log.stored_entries(0, pin.size):
        # An entry that does not parse (or names another index or vault) is the host's:
        # the pin's root, checked above, covers its bytes; it records nothing the owner did.
        if entry is None or entry.kind not in ("revoke", "rotate"):
            continue
        details = entry.open_signed(keys.x25519_secret, row.identity_public)
        if details is None:
            continue  # the host's, or damaged: it cannot take anything away
        if entry.kind == "revoke" and entry.link_id not in revoked:
            raise IntegrityError(
                "revocations-changed", "a revocation the pinned head covers is not in the file"
            )
        epochs = details.get("epochs") if entry.kind == "rotate" else None
        for name, epoch in epochs.items() if isinstance(epochs, dict) else ():
            if isinstance(name, str) and type(epoch) is int and newest.get(name, 0) < epoch:
                raise IntegrityError(
                    "epochs-changed", "a key epoch the pinned head covers is not in the file"
                )


def import_vault(
    ctx: Context,
    source: Any,
    secret: _owner.OwnerSecret,
    *,
    progress: Progress = None,
    pinned: Pinned = None,
) -> str:
    backend = ctx.backend
    with _open_source(source) as stream:
        reader = _FrameReader(stream)
        reader.magic()
        header = _check_shape(reader.next(), "vault")
        vault_id: str = header["vault"]
        check_record_id(vault_id)
        signed = {name: value for name, value in header.items() if name != "signature"}
        try:
            _crypto.check_ed25519_public(header["identity"])
            _crypto.verify(
                header["identity"],
                HEADER_SIGNATURE_LABEL,
                _codec.encode(signed),
                header["signature"],
            )
        except (_crypto.AuthenticationFailed, FormatError):
            raise IntegrityError(
                "export-header", "the export header failed authentication"
            ) from None
        if backend.get_vault(vault_id) is not None:
            raise VaultExists("a vault with this id already exists in the store")
        row = VaultRow(
            vault_id=vault_id,
            created_at=header["created_at"],
            identity_public=header["identity"],
            unlock=header["unlock"],
            wrapped_master=header["wrapped_master"],
            wrapped_identity=header["wrapped_identity"],
            policy=header["policy"],
        )
        pin = _pinned_head(pinned, row)
        master = _owner.unwrap_master(row.unlock, header["wrapped_master"], secret, vault_id)
        keys = _owner.open_owner_keys(master, row)
        counts = dict.fromkeys(_COUNTED.values(), 0)
        epoch_order = _Ascending("an epoch")
        newest: dict[str, int] = {}
        pending: set[tuple[str, int]] = set()
        manifest: _envelope.Manifest | None = None
        with backend.transaction():
            backend.insert_vault(row)
            document = reader.next()
            while document["t"] == "epoch":
                epoch = _check_shape(document, "epoch")
                check_collection(epoch["collection"])
                epoch_order.check((epoch["collection"].encode(), epoch["epoch"]))
                epoch_row = EpochRow(
                    vault_id,
                    epoch["collection"],
                    epoch["epoch"],
                    epoch["public_key"],
                    epoch["created_at"],
                    epoch["signature"],
                    epoch["sealed_owner"],
                    epoch["seal_fields"],
                )
                _envelope.verify_epoch_row(row.identity_public, epoch_row)
                backend.insert_epoch(epoch_row)
                newest[epoch_row.collection] = epoch_row.epoch  # ascending, checked above
                counts["epochs"] += 1
                document = reader.next()
            while document["t"] in ("batch", "record"):
                if document["t"] == "batch":
                    if pending:
                        raise IntegrityError("export-incomplete", "a batch's records are missing")
                    batch = _check_shape(document, "batch")
                    # Looked up in the transaction, not kept in memory: memory must not grow
                    # with the number of batches.
                    if backend.get_batch(vault_id, batch["batch"]) is not None:
                        raise IntegrityError("export-duplicate", "a batch appears twice")
                    if backend.get_epoch(vault_id, batch["collection"], batch["epoch"]) is None:
                        raise IntegrityError("epoch-missing", "a batch's key epoch is missing")
                    batch_row = BatchRow(
                        vault_id,
                        batch["batch"],
                        batch["collection"],
                        batch["epoch"],
                        batch["writer"],
                        batch["created_at"],
                        batch["manifest"],
                        batch["signature"],
                        batch["sealed_reader"],
                        None,
                    )
                    manifest = _envelope.verify_batch(
                        batch_row,
                        vault_id=vault_id,
                        authorized_writers=frozenset({row.identity_public}),
                    )
                    try:
                        host_share = _crypto.unseal(batch["host_share"], keys.x25519_secret)
                    except _crypto.AuthenticationFailed:
                        raise IntegrityError(
                            "host-share", "a batch host share failed authentication"
                        ) from None
                    wrapped_host = ctx.host_wrap(
                        host_share, _envelope.host_wrap_context(vault_id, batch["batch"])
                    )
                    backend.insert_batch(replace(batch_row, wrapped_host=wrapped_host))
                    pending = set(manifest.entries)
                    counts["batches"] += 1
                else:
                    record = _check_shape(document, "record")
                    if manifest is None or record["batch"] != manifest.batch_id:
                        raise IntegrityError("export-order", "a record is outside its batch")
                    _check_record(record, manifest, pending, vault_id)
                    backend.insert_records(
                        [
                            RecordRow(
                                vault_id,
                                record["record"],
                                record["version"],
                                record["collection"],
                                record["created_at"],
                                record["epoch"],
                                record["batch"],
                                record["deleted"],
                                record["nonce"],
                                record["ciphertext"],
                            )
                        ]
                    )
                    counts["records"] += 1
                    if progress is not None:
                        progress(counts["records"])
                document = reader.next()
            if pending:
                raise IntegrityError("export-incomplete", "a batch's records are missing")
            document = _import_tail(ctx, reader, document, row, keys, counts, newest)
            end = _check_shape(document, "end")
            if not _crypto.constant_time_equal(end["digest"], reader.digest_before_last_frame()):
                raise IntegrityError("export-digest", "the export file was changed")
            if end["counts"] != counts:
                raise IntegrityError("export-incomplete", "the export file is incomplete")
            try:
                _crypto.verify(
                    row.identity_public,
                    END_SIGNATURE_LABEL,
                    _end_statement(vault_id, end["digest"], counts),
                    end["signature"],
                )
            except _crypto.AuthenticationFailed:
                raise IntegrityError(
                    "export-signature", "the export signature is invalid"
                ) from None
            if not reader.at_eof():
                raise FormatError("trailing bytes after the end of the export")
            backend.finish_import(vault_id)
            if pin is not None:
                _check_pinned(backend, row, keys, pin, newest)
            log = MerkleLog(backend, vault_id)
            now = ctx.now_ms()
            size = 1 + log.append(
                time=now,
                kind="import",
                result="ok",
                link_id=None,
                details={"actor": _crypto.did_key(row.identity_public), "owner": True},
                owner_x25519_public=_crypto.x25519_public(keys.x25519_secret),
                rng=ctx.rng,
                signer=keys.identity,
            )
            records = (
                revoked_digest(r.link_id for r in backend.iter_revocations(vault_id)),
                rotated_digest(newest),
            )
            head = Checkpoint.sign(
                keys.identity, vault_id, size, log.root(size), now, records=records
            )
            backend.put_checkpoint(vault_id, size, now, head.to_text())
    return vault_id


def _import_tail(
    ctx: Context,
    reader: _FrameReader,
    document: dict[str, Any],
    row: VaultRow,
    keys: _owner.OwnerKeys,
    counts: dict[str, int],
    newest: dict[str, int],
) -> dict[str, Any]:
    """Import links, their keys, revocations, the log and its checkpoint (checked against
    the imported revocations and ``newest`` epochs); return the next frame (which must be
    ``end``)."""
    backend = ctx.backend
    vault_id = row.vault_id
    # Each link's keys and use count follow it directly, so only the current link is kept.
    link_order = _Ascending("a link")
    current: dict[str, Any] | None = None
    key_order = _Ascending("a link key")
    use_seen = False
    while document["t"] in ("link", "link_key", "link_use"):
        if document["t"] == "link":
            link = _check_shape(document, "link")
            link_order.check((link["created_at"], link["link"]))
            _verify_link(link, keys, row)
            if backend.get_link(link["link"]) is not None:
                raise IntegrityError("export-duplicate", "a link appears twice")
            backend.insert_link(
                LinkRow(
                    link["link"],
                    vault_id,
                    link["parent"],
                    link["audience"],
                    link["not_before"],
                    link["expires"],
                    link["uses"],
                    link["created_at"],
                    link["sealed_token"],
                )
            )
            current, key_order, use_seen = link, _Ascending("a link key"), False
            counts["links"] += 1
        elif document["t"] == "link_use":
            use = _check_shape(document, "link_use")
            if current is None or use["link"] != current["link"] or use_seen:
                raise IntegrityError("export-order", "a link's use count is not after the link")
            budget = current["uses"]
            if budget is None or not 0 < use["used"] <= budget:
                raise FormatError("a link's use count is outside its budget")
            backend.set_uses(use["link"], use["used"])
            use_seen = True
        else:
            key = _check_shape(document, "link_key")
            if current is None or key["link"] != current["link"] or use_seen:
                raise IntegrityError("export-order", "a link key is not after its link")
            check_collection(key["collection"])
            key_order.check((key["collection"].encode(), key["epoch"]))
            backend.insert_link_keys(
                [LinkKeyRow(key["link"], key["collection"], key["epoch"], key["sealed"])]
            )
            counts["link_keys"] += 1
        document = reader.next()
    revocation_order = _Ascending("a revocation")
    revoked: list[bytes] = []
    while document["t"] == "revocation":
        revocation = _check_shape(document, "revocation")
        revocation_order.check((revocation["revoked_at"], revocation["link"]))
        if backend.revoked_among(vault_id, [revocation["link"]]):
            raise IntegrityError("export-duplicate", "a revocation appears twice")
        _verify_revocation(revocation, row)
        backend.insert_revocation(
            RevocationRow(
                vault_id,
                revocation["link"],
                revocation["revoked_at"],
                revocation["statement"],
                revocation["signature"],
            )
        )
        revoked.append(revocation["link"])
        counts["revocations"] += 1
        document = reader.next()
    log = MerkleLog(backend, vault_id)
    time = 0
    while document["t"] == "log":
        item = _check_shape(document, "log")
        index = counts["log"]
        if item["index"] != index:
            raise IntegrityError("log-order", "log entries are out of order")
        try:
            entry: LogEntry | None = LogEntry.parse(item["entry"])
        except FormatError:
            entry = None
        if entry is not None and entry.index == index and entry.vault_id == vault_id:
            time = entry.time
        # Otherwise the bytes are no entry of this log at this index: a leaf the host
        # wrote (log.md, Entries), imported as it is (the end signature and the checkpoint
        # cover it). Nothing dates it but its place: its time column (which nothing reads)
        # gets the time stored for the entry before it, 0 for the first.
        log.append_raw(index, time, item["entry"])
        counts["log"] += 1
        document = reader.next()
    if document["t"] == "checkpoint":
        note = _check_shape(document, "checkpoint")["note"]
        head = Checkpoint.parse(note, row.identity_public)
        head.verify(row.identity_public)
        if head.origin != origin(vault_id) or head.size > counts["log"]:
            raise IntegrityError("checkpoint", "the checkpoint is not for this log")
        # At size 0 the root is SHA-256(""): a size-0 head with another root fails too.
        if log.root(head.size) != head.root:
            raise IntegrityError("checkpoint", "the log does not match its signed checkpoint")
        check_records(head, revoked, newest)
        backend.put_checkpoint(vault_id, head.size, head.time, note)
        counts["checkpoints"] += 1
        document = reader.next()
    return document
