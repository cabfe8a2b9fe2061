"""Record envelopes, write-batch manifests and epoch certificates (``docs/spec/records.md``).

A *batch* is up to ``BATCH_MAX`` record versions of one collection written together. It has
two fresh 32-byte shares:

* the reader share ``R``, sealed to the collection epoch's X25519 public key, so whoever
  holds the epoch secret (the owner, a grantee) can recover it;
* the host share ``H``, wrapped by the host key, which the host releases per record, as
  ``h = KDF(H, binding)``, only after the access is logged.

Each record version's key is ``KDF(R, h || binding)`` and its ciphertext is
XChaCha20-Poly1305 with the binding as associated data. The writer signs one manifest per
batch listing ``(record id, version, deleted, SHA-256(binding || nonce || ciphertext))``.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import msgpack

from pds import _codec, _crypto
from pds._store.base import BatchRow, EpochRow
from pds.errors import FormatError, IntegrityError

BATCH_MAX = 128
"""Records per batch: one seal, one host wrap and one signature are amortised over these."""

RECORD_LABEL = "pds/record/v1"
BATCH_SIGNATURE_LABEL = b"pds/batch/v1"
EPOCH_SIGNATURE_LABEL = b"pds/epoch/v1"
_HOST_SHARE_KDF = b"pds-host-share1"
_RECORD_KEY_KDF = b"pds-record-key1"
_HOST_WRAP_CONTEXT = b"pds/host-share/v1\x00"

# One msgpack packer per thread for bindings (no secret passes through it): building a
# packer costs about as much as packing a binding.
_packers = threading.local()


def binding(
    vault_id: str,
    collection: str,
    record_id: str,
    version: int,
    epoch: int,
    batch_id: bytes,
    deleted: bool,
) -> bytes:
    """The associated data that ties a ciphertext to its place: vault, collection, record,
    version, key epoch and batch."""
    if not (
        type(vault_id) is str
        and type(collection) is str
        and type(record_id) is str
        and type(version) is int
        and type(epoch) is int
        and type(batch_id) is bytes
        and type(deleted) is bool
        and 0 <= version < 2**63
        and 0 <= epoch < 2**63
    ):
        raise FormatError("a record binding field has the wrong type")
    # A flat array of text, integers, bytes and a boolean: msgpack's own encoding of it is
    # already the canonical one, so the generic canonicaliser is not needed on this hot path.
    try:
        packer: msgpack.Packer = _packers.packer
    except AttributeError:
        packer = _packers.packer = msgpack.Packer(use_bin_type=True)
    try:
        packed: bytes = packer.pack(
            [RECORD_LABEL, vault_id, collection, record_id, version, epoch, batch_id, deleted]
        )
    except UnicodeEncodeError:
        raise FormatError("a record binding field is not UTF-8 text") from None
    return packed


def host_share(batch_host_share: bytes, record_binding: bytes) -> bytes:
    """The per-record share the host releases after logging the access."""
    return _crypto.derive(batch_host_share, _HOST_SHARE_KDF, record_binding)


def record_key(reader_share: bytes, record_host_share: bytes, record_binding: bytes) -> bytes:
    return _crypto.derive(reader_share, _RECORD_KEY_KDF, record_host_share + record_binding)


def entry_hash(record_binding: bytes, nonce: bytes, ciphertext: bytes) -> bytes:
    return _crypto.sha256(record_binding + nonce + ciphertext)


def host_wrap_context(vault_id: str, batch_id: bytes) -> bytes:
    return _HOST_WRAP_CONTEXT + vault_id.encode("utf-8") + b"\x00" + batch_id


def seal_record(key: bytes, nonce: bytes, plaintext: bytes, record_binding: bytes) -> bytes:
    return _crypto.aead_encrypt(key, nonce, plaintext, record_binding)


def open_record(key: bytes, nonce: bytes, ciphertext: bytes, record_binding: bytes) -> Any:
    """Decrypt and decode a record's content. Raises ``IntegrityError`` on any change."""
    try:
        plaintext = _crypto.aead_decrypt(key, nonce, ciphertext, record_binding)
    except _crypto.AuthenticationFailed:
        raise IntegrityError("aead", "record ciphertext failed authentication") from None
    try:
        return _codec.decode(plaintext, json_only=True)
    except FormatError:
        raise IntegrityError("content", "record content is not canonical msgpack") from None


@dataclass(frozen=True, slots=True)
class Manifest:
    vault_id: str
    batch_id: bytes
    collection: str
    epoch: int
    writer: bytes
    created_at: int
    reader_hash: bytes
    entries: dict[tuple[str, int], tuple[bool, bytes]]


def build_manifest(
    *,
    vault_id: str,
    batch_id: bytes,
    collection: str,
    epoch: int,
    writer: bytes,
    created_at: int,
    sealed_reader: bytes,
    entries: list[tuple[str, int, bool, bytes]],
) -> bytes:
    return _codec.encode(
        {
            "v": 1,
            "vault": vault_id,
            "batch": batch_id,
            "collection": collection,
            "epoch": epoch,
            "writer": writer,
            "created_at": created_at,
            "reader": _crypto.sha256(sealed_reader),
            "entries": [list(entry) for entry in entries],
        }
    )


_MANIFEST_KEYS = {
    "v",
    "vault",
    "batch",
    "collection",
    "epoch",
    "writer",
    "created_at",
    "reader",
    "entries",
}


def parse_manifest(data: bytes) -> Manifest:
    """Parse signed manifest bytes strictly. Raises ``IntegrityError`` if malformed."""
    try:
        doc = _codec.decode(data)
        if (
            not isinstance(doc, dict)
            or set(doc) != _MANIFEST_KEYS
            or not _codec.is_version(doc["v"], 1)
        ):
            raise FormatError("manifest shape")
        entries: dict[tuple[str, int], tuple[bool, bytes]] = {}
        for entry in doc["entries"]:
            record_id, version, deleted, digest = entry
            if not (
                isinstance(record_id, str)
                and _is_count(version)
                and isinstance(deleted, bool)
                and isinstance(digest, bytes)
                and len(digest) == 32
            ):
                raise FormatError("manifest entry")
            if (record_id, version) in entries:
                raise FormatError("duplicate manifest entry")
            entries[(record_id, version)] = (deleted, digest)
        manifest = Manifest(
            doc["vault"],
            doc["batch"],
            doc["collection"],
            doc["epoch"],
            doc["writer"],
            doc["created_at"],
            doc["reader"],
            entries,
        )
        if not (
            isinstance(manifest.vault_id, str)
            and isinstance(manifest.batch_id, bytes)
            and isinstance(manifest.collection, str)
            and _is_count(manifest.epoch)
            and isinstance(manifest.writer, bytes)
            and _is_count(manifest.created_at)
            and isinstance(manifest.reader_hash, bytes)
            and len(manifest.reader_hash) == 32
        ):
            raise FormatError("manifest field types")
        return manifest
    except (FormatError, TypeError, ValueError, KeyError):
        raise IntegrityError("manifest", "batch manifest is malformed") from None


def _is_count(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def verify_batch(
    batch: BatchRow, *, vault_id: str, authorized_writers: frozenset[bytes]
) -> Manifest:
    """Check a batch's signature and that its columns match what was signed."""
    return verify_manifest(
        manifest_bytes=batch.manifest,
        signature=batch.signature,
        vault_id=vault_id,
        batch_id=batch.batch_id,
        collection=batch.collection,
        epoch=batch.epoch,
        writer=batch.writer,
        created_at=batch.created_at,
        sealed_reader=batch.sealed_reader,
        authorized_writers=authorized_writers,
    )


def verify_manifest(
    *,
    manifest_bytes: bytes,
    signature: bytes,
    vault_id: str,
    batch_id: bytes,
    collection: str,
    epoch: int,
    writer: bytes,
    created_at: int,
    sealed_reader: bytes | None,
    authorized_writers: frozenset[bytes],
) -> Manifest:
    """Check a batch's signature and that its stored columns match what was signed."""
    if writer not in authorized_writers:
        raise IntegrityError("writer", "batch written by a key this vault does not trust")
    try:
        _crypto.verify(writer, BATCH_SIGNATURE_LABEL, manifest_bytes, signature)
    except _crypto.AuthenticationFailed:
        raise IntegrityError("batch-signature", "batch manifest signature is invalid") from None
    manifest = parse_manifest(manifest_bytes)
    if (
        manifest.vault_id != vault_id
        or manifest.batch_id != batch_id
        or manifest.collection != collection
        or manifest.epoch != epoch
        or manifest.writer != writer
        or manifest.created_at != created_at
    ):
        raise IntegrityError("batch-binding", "batch does not match its signed manifest")
    if sealed_reader is not None and not _crypto.constant_time_equal(
        _crypto.sha256(sealed_reader), manifest.reader_hash
    ):
        raise IntegrityError("batch-binding", "batch reader share does not match its manifest")
    return manifest


def check_entry(
    manifest: Manifest,
    *,
    record_id: str,
    version: int,
    deleted: bool,
    collection: str,
    epoch: int,
    created_at: int,
    record_binding: bytes,
    nonce: bytes | None,
    ciphertext: bytes | None,
    erasable: bool = False,
) -> None:
    """Check one stored record version against its batch's verified manifest.

    Erased content (``nonce is None``) cannot be hashed; its metadata is still checked, and
    it is accepted only where ``erasable`` (a later version of the record is a tombstone):
    otherwise the host would be hiding a live record.
    """
    entry = manifest.entries.get((record_id, version))
    if entry is None:
        raise IntegrityError("not-in-batch", "record version is not in its batch manifest")
    if (
        entry[0] != deleted
        or manifest.collection != collection
        or manifest.epoch != epoch
        or manifest.created_at != created_at
    ):
        raise IntegrityError("record-binding", "record metadata does not match its batch")
    if nonce is None or ciphertext is None:
        if nonce is not None or ciphertext is not None:
            raise IntegrityError("record-binding", "record content is half erased")
        if not (deleted or erasable):
            raise IntegrityError("erased", "the content of a live record version is missing")
        return
    if not _crypto.constant_time_equal(entry_hash(record_binding, nonce, ciphertext), entry[1]):
        raise IntegrityError("record-hash", "record ciphertext does not match its manifest")


def epoch_certificate(
    vault_id: str,
    collection: str,
    epoch: int,
    public_key: bytes,
    created_at: int,
    seal_fields: bool = False,
) -> bytes:
    document: dict[str, Any] = {
        "v": 1,
        "vault": vault_id,
        "collection": collection,
        "epoch": epoch,
        "public_key": public_key,
        "created_at": created_at,
    }
    if seal_fields:
        # Present only for field-sealed collections, so every other certificate keeps the
        # form it always had.
        document["fields"] = True
    return _codec.encode(document)


def verify_epoch_row(identity: bytes, row: EpochRow) -> None:
    """Check an epoch row against the certificate the vault identity key signed."""
    verify_epoch(
        identity,
        vault_id=row.vault_id,
        collection=row.collection,
        epoch=row.epoch,
        public_key=row.public_key,
        created_at=row.created_at,
        signature=row.signature,
        seal_fields=row.seal_fields,
    )


def verify_epoch(
    identity: bytes,
    *,
    vault_id: str,
    collection: str,
    epoch: int,
    public_key: bytes,
    created_at: int,
    signature: bytes,
    seal_fields: bool = False,
) -> None:
    certificate = epoch_certificate(
        vault_id, collection, epoch, public_key, created_at, seal_fields
    )
    try:
        _crypto.verify(identity, EPOCH_SIGNATURE_LABEL, certificate, signature)
    except _crypto.AuthenticationFailed:
        raise IntegrityError(
            "epoch-signature", "collection key epoch is not signed by the vault"
        ) from None


# -- field-sealed records -----------------------------------------------------------------
#
# In a collection whose epoch certificate says ``fields``, each top-level field of a record
# is its own AEAD ciphertext under its own key, derived from its own host share, so a host
# can release the shares of some fields only: a field-restricted grantee then holds no key
# for the others. The stored ciphertext is ``C([[name, nonce, ciphertext], ...])`` sorted by
# name; the record-level nonce is empty.

_FIELD_SHARE_KDF = b"pds-field-share1"
_FIELD_KEY_KDF = b"pds-field-key1"


def field_binding(record_binding: bytes, name: str) -> bytes:
    return record_binding + _codec.encode(name)


def field_host_share(batch_host_share: bytes, record_binding: bytes, name: str) -> bytes:
    return _crypto.derive(batch_host_share, _FIELD_SHARE_KDF, field_binding(record_binding, name))


def seal_fields(
    data: Mapping[str, Any],
    reader_share: bytes,
    batch_host_share: bytes,
    record_binding: bytes,
    rng: _crypto.Rng,
) -> bytes:
    items = []
    for name in sorted(data, key=lambda key: key.encode("utf-8")):
        bound = field_binding(record_binding, name)
        share = _crypto.derive(batch_host_share, _FIELD_SHARE_KDF, bound)
        key = _crypto.derive(reader_share, _FIELD_KEY_KDF, share + bound)
        nonce = rng(_crypto.NONCE_SIZE)
        value = _codec.encode(data[name], json_only=True)
        items.append([name, nonce, _crypto.aead_encrypt(key, nonce, value, bound)])
    return _codec.encode(items)


def field_names(ciphertext: bytes) -> list[str]:
    return [name for name, _, _ in parse_fields(ciphertext)]


def parse_fields(ciphertext: bytes) -> list[tuple[str, bytes, bytes]]:
    """The ``(name, nonce, ciphertext)`` items of a field-sealed record. Raises
    ``IntegrityError`` if malformed (the bytes were already checked against the manifest)."""
    try:
        items = _codec.decode(ciphertext)
        result = []
        for name, nonce, sealed in items:
            if not (
                isinstance(name, str) and isinstance(nonce, bytes) and isinstance(sealed, bytes)
            ):
                raise FormatError("field item")
            result.append((name, nonce, sealed))
    except (FormatError, TypeError, ValueError):
        raise IntegrityError("content", "a field-sealed record is malformed") from None
    names = [name for name, _, _ in result]
    if names != sorted(set(names), key=lambda key: key.encode("utf-8")):
        raise IntegrityError("content", "a field-sealed record's fields are not sorted")
    return result


def open_fields(
    ciphertext: bytes,
    reader_share: bytes,
    shares: Mapping[str, bytes],
    record_binding: bytes,
    *,
    required: Callable[[str], bool] | None = None,
) -> dict[str, Any]:
    """Decrypt the fields whose host shares are given; the others stay sealed.

    With ``required``, a stored field it holds for that has no share raises
    ``IntegrityError`` (``field-withheld``): a grantee must not mistake a field the host
    withheld for one the owner never wrote (the stored names are signed, the shares not).
    """
    data: dict[str, Any] = {}
    for name, nonce, sealed in parse_fields(ciphertext):
        share = shares.get(name)
        if share is None:
            if required is not None and required(name):
                raise IntegrityError("field-withheld", "the share of a granted field is missing")
            continue
        bound = field_binding(record_binding, name)
        key = _crypto.derive(reader_share, _FIELD_KEY_KDF, share + bound)
        try:
            plaintext = _crypto.aead_decrypt(key, nonce, sealed, bound)
        except _crypto.AuthenticationFailed:
            raise IntegrityError("aead", "a record field failed authentication") from None
        try:
            data[name] = _codec.decode(plaintext, json_only=True)
        except FormatError:
            raise IntegrityError("content", "a record field is not canonical msgpack") from None
    return data
