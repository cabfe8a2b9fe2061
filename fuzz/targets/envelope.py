"""Fuzz target ``envelope``: the canonical codec and the record envelope decoders.

The first input byte picks the decoder, the rest is its input:

0. ``_codec.decode`` (plain and ``json_only``); a value that decodes must encode back to
   exactly the input bytes (the codec's canonical-form promise).
1. ``_envelope.parse_manifest``; a manifest that parses, signed by the world's identity,
   must pass ``verify_manifest`` with the columns it names, and each of its entries must
   then check against a record bound to it (``check_entry``) or be refused.
2. ``_envelope.parse_fields`` / ``open_fields`` (a field-sealed record's ciphertext).
3. ``Response.from_bytes``, then ``Grantee.open`` by the holder of one of the world's
   tokens: a host's response is untrusted input to the grantee.
4. ``LogEntry.parse``, ``LogEntry.open`` with the owner's key and ``open_disclosed``.
5. a genuine response of the world with one field replaced (``fuzz._mutate``), opened by
   its holder (``Grantee.open``).
"""

from __future__ import annotations

from typing import Any

from fuzz._data import Data
from fuzz._mutate import replace_field
from fuzz._world import world
from fuzz.targets import fuzz_target
from pds import _codec, _crypto, _envelope, accesslog
from pds.errors import IntegrityError, PDSError
from pds.invocation import Response

__all__ = ["MODES", "TestOneInput"]

MODES = ("codec", "manifest", "fields", "response", "log-entry", "response-field")


def _has_bytes(value: Any) -> bool:
    if isinstance(value, bytes):
        return True
    if isinstance(value, dict):
        return any(_has_bytes(item) for item in value.values())
    if isinstance(value, list):
        return any(_has_bytes(item) for item in value)
    return False


def _codec_mode(data: bytes) -> None:
    try:
        value = _codec.decode(data)
    except PDSError:
        value = None
    else:
        assert _codec.encode(value) == data, "a decoded value does not re-encode to its bytes"
    try:
        plain = _codec.decode(data, json_only=True)
    except PDSError:
        return
    assert plain == value, "json_only decoding changed the value"
    assert not _has_bytes(plain), "json_only decoding let binary through"
    assert _codec.encode(plain, json_only=True) == data, "json_only value does not re-encode"


def _manifest_mode(data: bytes) -> None:
    w = world()
    manifest = _envelope.parse_manifest(data)
    signer = w.identity
    signature = signer.sign(_envelope.BATCH_SIGNATURE_LABEL, data)
    try:
        verified = _envelope.verify_manifest(
            manifest_bytes=data,
            signature=signature,
            vault_id=manifest.vault_id,
            batch_id=manifest.batch_id,
            collection=manifest.collection,
            epoch=manifest.epoch,
            writer=manifest.writer,
            created_at=manifest.created_at,
            sealed_reader=None,
            authorized_writers=frozenset({signer.public}),
        )
    except IntegrityError:
        assert manifest.writer != signer.public, "a correctly signed manifest was refused"
        return
    assert verified == manifest
    for (record_id, version), (deleted, _digest) in list(manifest.entries.items())[:8]:
        binding = _envelope.binding(
            manifest.vault_id,
            manifest.collection,
            record_id,
            version,
            manifest.epoch,
            manifest.batch_id,
            deleted,
        )
        try:
            _envelope.check_entry(
                manifest,
                record_id=record_id,
                version=version,
                deleted=deleted,
                collection=manifest.collection,
                epoch=manifest.epoch,
                created_at=manifest.created_at,
                record_binding=binding,
                nonce=b"\x00" * 24,
                ciphertext=b"",
            )
        except IntegrityError as refused:
            assert refused.reason == "record-hash", f"unexpected refusal {refused.reason}"


def _fields_mode(data: bytes) -> None:
    names = _envelope.field_names(data)
    shares = {name: bytes(32) for name in names[:4]}
    opened = _envelope.open_fields(data, bytes(32), shares, b"binding")
    assert not opened, "a field opened under a key nobody derived"


def _response_mode(data: bytes) -> None:
    if not data:
        return
    w = world()
    name = ("root", "delegated", "fields")[data[0] % 3]
    response = Response.from_bytes(data[1:])
    token = w.tokens[name]
    grantee = w.grantee(token.leaf.audience)
    assert grantee is not None
    grantee.open(token, response)


def _log_entry_mode(data: bytes) -> None:
    w = world()
    reader = Data(data)
    key = reader.take(32)
    raw = reader.rest()
    entry = accesslog.LogEntry.parse(raw)
    assert accesslog.LogEntry.parse(entry.raw) == entry
    secret = w.vault._keys().x25519_secret
    try:
        details = entry.open(secret)
    except IntegrityError:
        pass
    else:
        assert isinstance(details, dict)
    owner_public = _crypto.x25519_public(secret)
    accesslog.open_disclosed(entry.sealed, owner_public, key)


def _response_field_mode(data: bytes) -> None:
    w = world()
    reader = Data(data)
    name, holder = (("read", "root"), ("list", "delegated"), ("fields", "fields"))[
        reader.byte() % 3
    ]
    document = _codec.decode(w.responses[name])
    replace_field(document, reader)
    token = w.tokens[holder]
    grantee = w.grantee(token.leaf.audience)
    assert grantee is not None
    grantee.open(token, _codec.encode(document))


_MODES = (
    _codec_mode,
    _manifest_mode,
    _fields_mode,
    _response_mode,
    _log_entry_mode,
    _response_field_mode,
)


@fuzz_target
def TestOneInput(data: bytes) -> None:
    if not data:
        return
    _MODES[data[0] % len(_MODES)](data[1:])
