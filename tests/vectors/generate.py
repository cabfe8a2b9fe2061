"""Regenerate the pds test vectors deterministically.

    python tests/vectors/generate.py           rewrite the vector files
    python tests/vectors/generate.py --check   exit 1 if a committed file differs

Outputs, next to this script:

* ``encoding.json``: canonical msgpack encodings, valid and invalid (``docs/spec/encoding.md``);
* ``records.json``: the key hierarchy, record envelopes and batch manifests of one vault,
  plus invalid cases each labelled with the reason code it must fail with
  (``docs/spec/records.md``);
* ``export/vault.pdsx`` and ``export/export.json``: an export file of that vault, its
  expected plaintexts, and invalid variants described as edits (``docs/spec/export.md``).

Determinism: pds takes its randomness and its time from the store (``open_store(rng=...,
clock=...)``). Here randomness is SHA-256 in counter mode over a fixed seed and time is a
clock that steps 1.25 s per reading, the owner key and the host key are fixed bytes, so
every id, key, nonce and ephemeral sealing key, and so every output byte, is the same on
every run. (The owner key is given as a ``SymmetricKey`` provider rather than a key file,
because a key file's wrapping nonce would come from ``os.urandom``, not from the store's
rng.)

The vault: two records in ``health/visits`` (one with a given id, one with a random id),
an update, a record in ``profile``, a grant, a deletion, a rotation (which seals the new
epoch to the live grant), a record in the new epoch, a second grant that is revoked, a
field-sealed collection ``forms/intake`` (``create_collection(..., seal_fields=True)``) with
three records in one batch, and a grant limited to two of its fields; then an export.
Invalid record cases are built from one valid batch (whole-sealed, or field-sealed) by
changing one thing (re-signing the manifest with the identity key where the change must get
past the signature), so each fails at exactly one step.

Before writing anything, the generator checks that pds itself refuses every invalid case
with the labelled error; a vector whose label pds disagrees with stops the run.

Any change to the bytes pds writes, including the order in which it draws random bytes
(a new log entry, say), changes these files: ``tests/test_vectors.py`` then fails until
they are regenerated and the difference has been reviewed.
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import io
import struct
import sys
import tempfile
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgpack
import nacl.bindings

import pds
from pds import _codec, _crypto, _envelope, _export, _owner
from pds._store.base import BatchRow, EpochRow, RecordRow, VaultRow
from pds.errors import FormatError, IntegrityError, PDSError

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

SEED = b"pds test vectors v1"
OWNER_KEY = hashlib.sha256(b"pds test vectors: owner key").digest()
HOST_KEY = hashlib.sha256(b"pds test vectors: host key").digest()
UNTRUSTED_SEED = hashlib.sha256(b"pds test vectors: untrusted writer").digest()


# -- encoding vectors -------------------------------------------------------------------


def tagged(value: Any) -> Any:
    """A JSON form of a msgpack value: bytes as {"$bin": hex}, floats as {"$float": hex}."""
    if isinstance(value, bytes):
        return {"$bin": value.hex()}
    if isinstance(value, float):
        return {"$float": value.hex()}
    if isinstance(value, dict):
        return {key: tagged(item) for key, item in value.items()}
    if isinstance(value, list):
        return [tagged(item) for item in value]
    return value


def nested_arrays(levels: int) -> list[Any]:
    value: list[Any] = []
    for _ in range(levels - 1):
        value = [value]
    return value


def encoding_vectors() -> Json:
    valid_values: list[tuple[str, Any]] = [
        ("nil", None),
        ("false", False),
        ("true", True),
        ("positive fixint 0", 0),
        ("positive fixint 127", 127),
        ("uint8 128", 128),
        ("uint8 255", 255),
        ("uint16 256", 256),
        ("uint16 65535", 65535),
        ("uint32 65536", 65536),
        ("uint32 2^32-1", 2**32 - 1),
        ("uint64 2^32", 2**32),
        ("uint64 2^64-1, the largest integer", 2**64 - 1),
        ("negative fixint -1", -1),
        ("negative fixint -32", -32),
        ("int8 -33", -33),
        ("int8 -128", -128),
        ("int16 -129", -129),
        ("int16 -32768", -32768),
        ("int32 -32769", -32769),
        ("int32 -2^31", -(2**31)),
        ("int64 -2^31-1", -(2**31) - 1),
        ("int64 -2^63, the smallest integer", -(2**63)),
        ("float64 0.0", 0.0),
        ("float64 -0.0 (distinct from 0.0)", -0.0),
        ("float64 1.0 stays a float", 1.0),
        ("float64 12.5", 12.5),
        ("float64 1.5 (exact in float32, still float64)", 1.5),
        ("float64 0.1", 0.1),
        ("float64 largest finite", 1.7976931348623157e308),
        ("float64 smallest subnormal", 5e-324),
        ("fixstr empty", ""),
        ("fixstr a", "a"),
        ("fixstr 31 bytes", "x" * 31),
        ("str8 32 bytes", "x" * 32),
        ("str8 255 bytes", "x" * 255),
        ("str16 256 bytes", "x" * 256),
        ("fixstr non-ASCII, NFC", "P\u00e4\u00e4sy"),
        ("fixstr non-ASCII, NFD is kept as is", "Pa\u0308a\u0308sy"),
        ("fixstr outside the BMP", "\U0001f600"),
        ("bin8 empty", b""),
        ("bin8 one byte", b"\x00"),
        ("bin8 255 bytes", bytes(range(255))),
        ("bin16 256 bytes", bytes(256)),
        ("fixarray empty", []),
        ("fixarray 15", list(range(15))),
        ("array16 16", list(range(16))),
        ("fixmap empty", {}),
        ("fixmap sorted keys", {"a": 1, "b": 2}),
        (
            "keys sort by UTF-8 bytes: shorter prefix first, uppercase before lowercase",
            {"a": 0, "aa": 1, "B": 2, "b": 3, "~": 4},
        ),
        (
            "keys sort by UTF-8 bytes, not UTF-16: U+FFFF before U+1F600",
            {"\U0001f600": 1, "\uffff": 2, "\u00e9": 3, "z": 4},
        ),
        ("map16 16 keys", {f"k{i:02d}": i for i in range(16)}),
        (
            "nested document",
            {"name": "Aino", "tags": ["fi", "sv"], "visits": [{"cost": 12.5, "n": 1}], "x": None},
        ),
        ("65 nested arrays: the innermost is inside 64 containers", nested_arrays(65)),
        (
            "record binding",
            ["pds/record/v1", "vault", "health/visits", "visit-1", 2, 1, bytes(16), False],
        ),
    ]
    valid = []
    for name, value in valid_values:
        encoded = _codec.encode(value)
        decoded = _codec.decode(encoded)
        assert _codec.encode(decoded) == encoded, name
        valid.append({"name": name, "value": tagged(value), "encoded": encoded.hex()})

    too_deep = msgpack.packb(nested_arrays(66))
    invalid: list[tuple[str, str, bytes]] = [
        ("empty input", "a document is exactly one msgpack value", b""),
        ("truncated str8", "a document is exactly one msgpack value", bytes.fromhex("d90561")),
        ("truncated array", "a document is exactly one msgpack value", bytes.fromhex("9201")),
        ("trailing byte", "no bytes may follow the value", bytes.fromhex("0101")),
        ("trailing nil", "no bytes may follow the value", bytes.fromhex("80c0")),
        ("reserved byte 0xc1", "only defined msgpack types", bytes.fromhex("c1")),
        ("duplicate key", "map keys are unique", bytes.fromhex("82a16101a16102")),
        ("unsorted keys", "map keys sorted by UTF-8 bytes", bytes.fromhex("82a16201a16102")),
        (
            "keys sorted as UTF-16 would sort them",
            "map keys sorted by UTF-8 bytes",
            bytes.fromhex("82a4f09f9880c0a3efbfbfc0"),
        ),
        ("integer map key", "map keys are text", bytes.fromhex("810101")),
        ("binary map key", "map keys are text", bytes.fromhex("81c4016101")),
        ("nil map key", "map keys are text", bytes.fromhex("81c001")),
        ("uint8 for 5", "integers use the shortest encoding", bytes.fromhex("cc05")),
        ("uint16 for 255", "integers use the shortest encoding", bytes.fromhex("cd00ff")),
        ("uint32 for 65535", "integers use the shortest encoding", bytes.fromhex("ce0000ffff")),
        (
            "uint64 for 1",
            "integers use the shortest encoding",
            bytes.fromhex("cf0000000000000001"),
        ),
        ("int8 for 5", "non-negative integers use the unsigned forms", bytes.fromhex("d005")),
        ("int8 for 127", "non-negative integers use the unsigned forms", bytes.fromhex("d07f")),
        ("int16 for -1", "integers use the shortest encoding", bytes.fromhex("d1ffff")),
        ("int32 for -129", "integers use the shortest encoding", bytes.fromhex("d2ffffff7f")),
        (
            "int64 for -2^31",
            "integers use the shortest encoding",
            bytes.fromhex("d3ffffffff80000000"),
        ),
        ("float32 1.5", "floats are float64", bytes.fromhex("ca3fc00000")),
        ("float64 NaN", "floats are finite", bytes.fromhex("cb7ff8000000000000")),
        ("float64 +Infinity", "floats are finite", bytes.fromhex("cb7ff0000000000000")),
        ("float64 -Infinity", "floats are finite", bytes.fromhex("cbfff0000000000000")),
        ("str8 for a 1-byte string", "lengths use the shortest encoding", bytes.fromhex("d90161")),
        (
            "str16 for a 32-byte string",
            "lengths use the shortest encoding",
            bytes.fromhex("da0020") + b"x" * 32,
        ),
        ("bin16 for 1 byte", "lengths use the shortest encoding", bytes.fromhex("c50001ff")),
        ("array16 for 1 item", "lengths use the shortest encoding", bytes.fromhex("dc000101")),
        ("map16 for 1 entry", "lengths use the shortest encoding", bytes.fromhex("de0001a16101")),
        ("invalid UTF-8", "text is valid UTF-8", bytes.fromhex("a1ff")),
        ("UTF-8 encoded surrogate", "text is valid UTF-8", bytes.fromhex("a3eda080")),
        ("overlong UTF-8 NUL", "text is valid UTF-8", bytes.fromhex("a2c080")),
        ("fixext1", "no extension types", bytes.fromhex("d40100")),
        ("ext8 of length 0", "no extension types", bytes.fromhex("c70005")),
        ("timestamp32", "no extension types", bytes.fromhex("d6ff00000000")),
        ("66 nested arrays", "at most 64 enclosing containers", too_deep),
    ]
    rejected = []
    for name, rule, encoded in invalid:
        try:
            _codec.decode(encoded)
        except FormatError:
            rejected.append({"name": name, "rule": rule, "encoded": encoded.hex()})
            continue
        raise AssertionError(f"pds accepted the invalid encoding {name!r}")

    unencodable: list[tuple[str, str, Any]] = [
        ("NaN", "floats are finite", float("nan")),
        ("+Infinity", "floats are finite", float("inf")),
        ("2^64", "integers fit in 64 bits", 2**64),
        ("-2^63-1", "integers fit in 64 bits", -(2**63) - 1),
    ]
    refused = []
    for name, rule, value in unencodable:
        try:
            _codec.encode(value)
        except FormatError:
            refused.append({"name": name, "rule": rule, "value": tagged(value)})
            continue
        raise AssertionError(f"pds encoded {name!r}")

    return {
        "about": (
            "Canonical msgpack (docs/spec/encoding.md). 'valid': decoding 'encoded' yields "
            "'value' and encoding 'value' yields exactly 'encoded'. 'invalid': decoding MUST "
            "fail (pds raises FormatError); 'rule' names the rule broken. 'unencodable': "
            'encoding MUST fail. Values are JSON, except bytes as {"$bin": hex} and floats '
            'as {"$float": float.hex()}; JSON integers are integers.'
        ),
        "generator": "tests/vectors/generate.py",
        "valid": valid,
        "invalid": rejected,
        "unencodable": refused,
    }


# -- the vault behind the record and export vectors ---------------------------------------

PROFILE = {
    "name": "Aino Virtanen",
    "born": 1984,
    "languages": ["fi", "sv"],
    "verified": True,
    "guardian": None,
    "note": "P\u00e4\u00e4sy sallittu \u2014 \u2713",
}
VISIT_1_V1 = {"clinic": "north", "cost": 12.5, "date": "2025-01-02"}
VISIT_1_V2 = {"clinic": "north", "cost": 14.25, "date": "2025-01-02", "corrected": True}
SECOND_V1 = {"clinic": "east", "notes": "follow-up in two weeks"}
VISIT_2 = {"clinic": "south", "cost": 40, "date": "2025-02-10"}
FIELD_COLLECTION = "forms/intake"
INTAKE_1 = {
    "name": "Aino Virtanen",
    "allergies": ["penicillin"],
    "contact": {"phone": "+358 40 123 4567", "relation": "sister"},
    "smoker": False,
    "weight_kg": 61.5,
    "\u00e4idinkieli": "suomi",
}
INTAKE_2: dict[str, Any] = {"name": "Eero Korhonen", "allergies": [], "Notes": None}
INTAKE_3: dict[str, Any] = {}
FIELD_GRANT = ["allergies", "name"]


class Build:
    """One deterministic store and vault, and every secret needed to explain its bytes."""

    def __init__(self, directory: Path) -> None:
        self.rng = CounterRng(SEED)
        self.clock = SteppingClock()
        self.host_key = pds.SymmetricKey(HOST_KEY, rng=self.rng)
        self.store = pds.open_store(
            directory / "vectors.db", host_key=self.host_key, clock=self.clock, rng=self.rng
        )
        owner = pds.SymmetricKey(OWNER_KEY, rng=self.rng)
        self.vault_id = self.store.create_vault(key_provider=owner)
        self.vault = self.store.open_vault(self.vault_id)
        self.vault.unlock(key_provider=owner)
        vault = self.vault

        first = vault.put_many(
            "health/visits", [VISIT_1_V1, SECOND_V1], record_ids=["visit-1", None]
        )
        self.second_id = first[1].record_id
        vault.put("health/visits", VISIT_1_V2, record_id="visit-1")
        vault.put("profile", PROFILE, record_id="person")
        clinic = pds.PrincipalKey.generate(rng=self.rng)
        vault.grant(
            clinic.did,
            collections=["health/visits"],
            purpose="care",
            expires=timedelta(days=30),
        )
        vault.delete(self.second_id)
        # The rotation seals the new epoch's secret to the live grant (a link key).
        vault.rotate("health/visits")
        vault.put("health/visits", VISIT_2, record_id="visit-2")
        registry = pds.PrincipalKey.generate(rng=self.rng)
        revoked = vault.grant(
            registry.did, collections=["profile"], purpose="audit", expires=timedelta(days=7)
        )
        vault.revoke(revoked, reason="no longer needed")
        # A field-sealed collection: each top-level field under its own key and host share.
        vault.create_collection(FIELD_COLLECTION, seal_fields=True)
        vault.put_many(
            FIELD_COLLECTION,
            [INTAKE_1, INTAKE_2, INTAKE_3],
            record_ids=["intake-1", "intake-2", "intake-3"],
        )
        # A field-restricted grant, and a read with it through the host, which releases
        # the shares of the granted fields only.
        self.field_token = vault.grant(
            clinic.did,
            collections=[FIELD_COLLECTION],
            fields=FIELD_GRANT,
            purpose="care",
            expires=timedelta(days=30),
        )
        grantee = pds.Grantee(clinic, clock=self.clock, rng=self.rng)
        invocation = grantee.invoke(self.field_token, collection=FIELD_COLLECTION)
        self.field_response = self.store.serve(invocation.to_bytes())
        self.field_read = grantee.open(self.field_token, self.field_response, invocation=invocation)

        stream = io.BytesIO()
        vault.export(stream)
        self.export = stream.getvalue()

        backend = self.store.backend
        row = backend.get_vault(self.vault_id)
        assert row is not None
        self.vault_row: VaultRow = row
        self.epochs = list(backend.iter_epochs(self.vault_id))
        self.batches = list(backend.iter_batches(self.vault_id))
        self.records = {
            batch.batch_id: list(backend.iter_batch_records(self.vault_id, batch.batch_id))
            for batch in self.batches
        }
        keys = vault._keys()
        self.master = keys.master
        self.identity = keys.identity
        self.owner_x25519_secret = keys.x25519_secret
        self.owner_x25519_public = _crypto.x25519_public(keys.x25519_secret)
        self.epoch_secrets = {
            (epoch.collection, epoch.epoch): vault._epoch_secret(epoch.collection, epoch.epoch)
            for epoch in self.epochs
        }
        self.seals_fields = {
            (epoch.collection, epoch.epoch): epoch.seal_fields for epoch in self.epochs
        }
        self.untrusted = _crypto.SigningKey.from_seed(UNTRUSTED_SEED)

    def reader_share(self, batch: BatchRow) -> bytes:
        assert batch.sealed_reader is not None
        return _crypto.unseal(
            batch.sealed_reader, self.epoch_secrets[(batch.collection, batch.epoch)]
        )

    def host_share(self, batch: BatchRow) -> bytes:
        assert batch.wrapped_host is not None
        context = _envelope.host_wrap_context(self.vault_id, batch.batch_id)
        return self.host_key.unwrap(batch.wrapped_host, context=context)

    def close(self) -> None:
        self.store.close()


def epoch_json(build: Build, epoch: EpochRow) -> Json:
    certificate = _envelope.epoch_certificate(
        epoch.vault_id,
        epoch.collection,
        epoch.epoch,
        epoch.public_key,
        epoch.created_at,
        epoch.seal_fields,
    )
    return {
        "collection": epoch.collection,
        "epoch": epoch.epoch,
        "created_at": epoch.created_at,
        "public_key": epoch.public_key,
        "signature": epoch.signature,
        "sealed_owner": epoch.sealed_owner,
        "seal_fields": epoch.seal_fields,
        "certificate": certificate,
        "secret_key": build.epoch_secrets[(epoch.collection, epoch.epoch)],
    }


def batch_json(batch: BatchRow) -> Json:
    return {
        "batch_id": batch.batch_id,
        "collection": batch.collection,
        "epoch": batch.epoch,
        "writer": batch.writer,
        "created_at": batch.created_at,
        "manifest": batch.manifest,
        "signature": batch.signature,
        "sealed_reader": batch.sealed_reader,
        "wrapped_host": batch.wrapped_host,
    }


def record_json(record: RecordRow) -> Json:
    return {
        "record_id": record.record_id,
        "version": record.version,
        "collection": record.collection,
        "created_at": record.created_at,
        "epoch": record.epoch,
        "batch_id": record.batch_id,
        "deleted": record.deleted,
        "nonce": record.nonce,
        "ciphertext": record.ciphertext,
    }


def binding_of(vault_id: str, record: Json) -> bytes:
    return _envelope.binding(
        vault_id,
        record["collection"],
        record["record_id"],
        record["version"],
        record["epoch"],
        record["batch_id"],
        record["deleted"],
    )


FIELD_KEY_LABEL = b"pds-field-key1"


def field_vectors(
    reader_share: bytes, host_share: bytes, record_binding: bytes, ciphertext: bytes
) -> tuple[list[Json], dict[str, Any]]:
    """Every field of a field-sealed record, with the values a verifier must derive."""
    fields = []
    data: dict[str, Any] = {}
    for name, nonce, sealed in _envelope.parse_fields(ciphertext):
        bound = _envelope.field_binding(record_binding, name)
        share = _envelope.field_host_share(host_share, record_binding, name)
        key = _crypto.derive(reader_share, FIELD_KEY_LABEL, share + bound)
        plaintext = _crypto.aead_decrypt(key, nonce, sealed, bound)
        data[name] = _codec.decode(plaintext, json_only=True)
        fields.append(
            {
                "name": name,
                "field_binding": bound,
                "field_host_share": share,
                "field_key": key,
                "nonce": nonce,
                "ciphertext": sealed,
                "plaintext": plaintext,
                "value": data[name],
            }
        )
    return fields, data


def valid_case(build: Build, index: int, batch: BatchRow, name: str) -> Json:
    reader_share = build.reader_share(batch)
    host_share = build.host_share(batch)
    seal_fields = build.seals_fields[(batch.collection, batch.epoch)]
    records = []
    for row in build.records[batch.batch_id]:
        record = record_json(row)
        record_binding = binding_of(build.vault_id, record)
        expected: Json = {"binding": record_binding}
        if row.deleted:
            expected["entry_hash"] = _envelope.entry_hash(record_binding, b"", b"")
            expected["result"] = "deleted"
        elif row.nonce is None or row.ciphertext is None:
            expected["result"] = "erased"
        elif seal_fields:
            assert row.nonce == b""
            fields, data = field_vectors(reader_share, host_share, record_binding, row.ciphertext)
            expected.update(
                {
                    "entry_hash": _envelope.entry_hash(record_binding, row.nonce, row.ciphertext),
                    "fields": fields,
                    "data": data,
                    "result": "data",
                }
            )
        else:
            h = _envelope.host_share(host_share, record_binding)
            key = _envelope.record_key(reader_share, h, record_binding)
            plaintext = _crypto.aead_decrypt(key, row.nonce, row.ciphertext, record_binding)
            expected.update(
                {
                    "entry_hash": _envelope.entry_hash(record_binding, row.nonce, row.ciphertext),
                    "record_host_share": h,
                    "record_key": key,
                    "plaintext": plaintext,
                    "data": _codec.decode(plaintext),
                    "result": "data",
                }
            )
        record["expected"] = expected
        records.append(record)
    return {
        "name": name,
        "batch": batch_json(batch),
        "records": records,
        "expected": {
            "batch_number": index + 1,
            "seal_fields": seal_fields,
            "reader_share": reader_share,
            "host_share": host_share,
            "host_wrap_context": _envelope.host_wrap_context(build.vault_id, batch.batch_id),
            "manifest": hexed(_codec.decode(batch.manifest)),
        },
    }


def field_restricted_read(build: Build, case: Json) -> Json:
    """What the host released for the grant limited to FIELD_GRANT, and what it opens to."""
    response = build.field_response
    served = {item["record"]: item for item in response.records}
    opened = {record.record_id: record.data for record in build.field_read.records}
    records = []
    for record in case["records"]:
        item = served[record["record_id"]]
        assert "host_share" not in item
        names = [field["name"] for field in record["expected"]["fields"]]
        released = [name for name, _ in item["field_shares"]]
        assert released == [name for name in names if name in FIELD_GRANT]
        shares = {
            field["name"]: field["field_host_share"] for field in record["expected"]["fields"]
        }
        assert all(share == shares[name] for name, share in item["field_shares"])
        records.append(
            {
                "record_id": record["record_id"],
                "field_shares": item["field_shares"],
                "data": opened[record["record_id"]],
            }
        )
    return {
        "fields": FIELD_GRANT,
        "records": records,
    }


# -- invalid record cases ---------------------------------------------------------------


class CaseMaker:
    """Builds invalid cases from one valid single-record batch, each broken at one step."""

    def __init__(self, build: Build, base: Json) -> None:
        self.build = build
        self.base = base
        self.cases: list[Json] = []

    def fresh(self) -> Json:
        case = copy.deepcopy({"batch": self.base["batch"], "records": self.base["records"]})
        for record in case["records"]:
            record.pop("expected", None)
        return case

    @property
    def secrets(self) -> tuple[bytes, bytes]:
        expected = self.base["expected"]
        return expected["reader_share"], expected["host_share"]

    def add(self, name: str, expect: str, rule: str, case: Json) -> None:
        self.cases.append({"name": name, "expect": expect, "rule": rule, **case})

    def manifest_doc(self, case: Json) -> dict[str, Any]:
        doc: dict[str, Any] = _codec.decode(case["batch"]["manifest"])
        return doc

    def sign(
        self,
        case: Json,
        doc: dict[str, Any],
        *,
        key: _crypto.SigningKey | None = None,
        label: bytes = _envelope.BATCH_SIGNATURE_LABEL,
        encoded: bytes | None = None,
    ) -> None:
        signer = key or self.build.identity
        manifest = encoded if encoded is not None else _codec.encode(doc)
        case["batch"]["manifest"] = manifest
        case["batch"]["signature"] = signer.sign(label, manifest)

    def rehash(self, case: Json) -> dict[str, Any]:
        """A manifest document whose entries match the case's records as they now are."""
        doc = self.manifest_doc(case)
        entries = []
        for record in case["records"]:
            record_binding = binding_of(self.build.vault_id, record)
            entries.append(
                [
                    record["record_id"],
                    record["version"],
                    record["deleted"],
                    _envelope.entry_hash(
                        record_binding, record["nonce"] or b"", record["ciphertext"] or b""
                    ),
                ]
            )
        doc["entries"] = entries
        return doc

    def encrypt(
        self,
        case: Json,
        plaintext: bytes,
        *,
        key_binding: bytes | None = None,
        ad: bytes | None = None,
        host_share: bytes | None = None,
        without_host_share: bool = False,
    ) -> None:
        """Re-encrypt the case's record (with a fresh nonce) and re-sign a matching manifest."""
        record = case["records"][0]
        record_binding = binding_of(self.build.vault_id, record)
        reader, host = self.secrets
        kb = key_binding if key_binding is not None else record_binding
        h = _envelope.host_share(host_share if host_share is not None else host, kb)
        key = (
            _crypto.derive(reader, b"pds-record-key1", kb)
            if without_host_share
            else _envelope.record_key(reader, h, kb)
        )
        nonce = self.build.rng(_crypto.NONCE_SIZE)
        record["nonce"] = nonce
        record["ciphertext"] = _crypto.aead_encrypt(
            key, nonce, plaintext, ad if ad is not None else record_binding
        )
        self.sign(case, self.rehash(case))


def flip(data: bytes, index: int, mask: int = 0x01) -> bytes:
    changed = bytearray(data)
    changed[index] ^= mask
    return bytes(changed)


def invalid_record_cases(build: Build, base: Json, other: Json) -> list[Json]:
    make = CaseMaker(build, base)
    rng = build.rng
    vault_id = build.vault_id
    plaintext = base["records"][0]["expected"]["plaintext"]
    epoch_key = (base["batch"]["collection"], base["batch"]["epoch"])
    epoch_row = next(e for e in build.epochs if (e.collection, e.epoch) == epoch_key)

    case = make.fresh()
    doc = make.manifest_doc(case)
    doc["writer"] = build.untrusted.public
    case["batch"]["writer"] = build.untrusted.public
    make.sign(case, doc, key=build.untrusted)
    make.add(
        "writer-not-trusted",
        "writer",
        "the batch writer must be a key the vault trusts (its identity key); a batch "
        "validly signed by another key is refused",
        case,
    )

    case = make.fresh()
    case["batch"]["signature"] = flip(case["batch"]["signature"], 5)
    make.add("signature-flipped", "batch-signature", "the manifest signature must verify", case)

    case = make.fresh()
    manifest = case["batch"]["manifest"]
    case["batch"]["manifest"] = flip(manifest, len(manifest) - 1)
    make.add(
        "manifest-byte-changed",
        "batch-signature",
        "the signature covers every manifest byte (here the last byte of an entry hash)",
        case,
    )

    case = make.fresh()
    make.sign(case, make.manifest_doc(case), label=_envelope.EPOCH_SIGNATURE_LABEL)
    make.add(
        "signature-wrong-label",
        "batch-signature",
        "the signature is over 'pds/batch/v1' || 0x00 || manifest; one made for another "
        "label (here pds/epoch/v1) does not verify",
        case,
    )

    case = make.fresh()
    manifest = case["batch"]["manifest"]
    case["batch"]["signature"] = nacl.bindings.crypto_sign(manifest, build.identity._expanded)[:64]
    make.add(
        "signature-without-label",
        "batch-signature",
        "the signature is over 'pds/batch/v1' || 0x00 || manifest, not the bare manifest",
        case,
    )

    case = make.fresh()
    doc = make.manifest_doc(case)
    doc["v"] = 2
    make.sign(case, doc)
    make.add("manifest-unknown-version", "manifest", "the manifest 'v' must be 1", case)

    case = make.fresh()
    doc = make.manifest_doc(case)
    doc["note"] = "unexpected"
    make.sign(case, doc)
    make.add("manifest-unknown-field", "manifest", "the manifest has exactly its 9 keys", case)

    case = make.fresh()
    doc = make.manifest_doc(case)
    del doc["reader"]
    make.sign(case, doc)
    make.add("manifest-missing-field", "manifest", "the manifest has exactly its 9 keys", case)

    case = make.fresh()
    doc = make.manifest_doc(case)
    unsorted = dict(reversed(list(doc.items())))
    make.sign(case, doc, encoded=msgpack.packb(unsorted, use_bin_type=True))
    make.add(
        "manifest-not-canonical",
        "manifest",
        "the signed manifest must be canonical msgpack (here: keys in reverse order)",
        case,
    )

    case = make.fresh()
    doc = make.manifest_doc(case)
    doc["entries"] = doc["entries"] + doc["entries"]
    make.sign(case, doc)
    make.add(
        "manifest-duplicate-entry",
        "manifest",
        "a (record id, version) pair appears at most once in a manifest",
        case,
    )

    case = make.fresh()
    doc = make.manifest_doc(case)
    doc["entries"][0][1] = str(doc["entries"][0][1])
    make.sign(case, doc)
    make.add(
        "manifest-entry-wrong-type",
        "manifest",
        "an entry is [text, integer, boolean, binary]; here the version is text",
        case,
    )

    case = make.fresh()
    case["batch"]["collection"] = "profile"
    make.add(
        "batch-collection-changed",
        "batch-binding",
        "the batch's stored collection, epoch, writer and time must equal the manifest's",
        case,
    )

    case = make.fresh()
    case["batch"]["created_at"] += 1
    make.add(
        "batch-time-changed",
        "batch-binding",
        "the batch's stored time must equal the manifest's created_at",
        case,
    )

    case = make.fresh()
    doc = make.manifest_doc(case)
    doc["vault"] = "another-vault"
    make.sign(case, doc)
    make.add(
        "manifest-of-another-vault",
        "batch-binding",
        "the manifest's vault must be the vault being read",
        case,
    )

    case = make.fresh()
    reader, _ = make.secrets
    epoch_public = epoch_row.public_key
    case["batch"]["sealed_reader"] = _crypto.seal(reader, epoch_public, rng)
    make.add(
        "sealed-reader-replaced",
        "batch-binding",
        "SHA-256(sealed_reader) must equal the manifest's reader; even a valid new seal of the "
        "same share is refused",
        case,
    )

    case = make.fresh()
    case["records"][0]["version"] += 1
    make.add(
        "record-version-replayed",
        "not-in-batch",
        "(record id, version) must be listed in the batch manifest: a row replayed under a "
        "higher version is refused",
        case,
    )

    case = make.fresh()
    case["records"][0]["record_id"] = "visit-9"
    make.add(
        "record-id-changed",
        "not-in-batch",
        "(record id, version) must be listed in the batch manifest",
        case,
    )

    case = make.fresh()
    case["records"][0]["deleted"] = True
    make.add(
        "record-marked-deleted",
        "record-binding",
        "the row's deleted flag must equal the manifest entry's",
        case,
    )

    case = make.fresh()
    case["records"][0]["created_at"] -= 1000
    make.add(
        "record-time-changed",
        "record-binding",
        "the row's created_at must equal the manifest's",
        case,
    )

    case = make.fresh()
    case["records"][0]["epoch"] = 2
    make.add(
        "record-epoch-changed",
        "record-binding",
        "the row's epoch must equal the manifest's",
        case,
    )

    case = make.fresh()
    case["records"][0]["nonce"] = None
    make.add(
        "record-half-erased",
        "record-binding",
        "nonce and ciphertext are both present or both absent (erased)",
        case,
    )

    case = make.fresh()
    ciphertext = case["records"][0]["ciphertext"]
    case["records"][0]["ciphertext"] = flip(ciphertext, 3)
    make.add(
        "ciphertext-flipped",
        "record-hash",
        "SHA-256(binding || nonce || ciphertext) must equal the manifest entry's hash",
        case,
    )

    case = make.fresh()
    case["records"][0]["nonce"] = flip(case["records"][0]["nonce"], 0, 0x80)
    make.add("nonce-flipped", "record-hash", "the entry hash covers the nonce", case)

    case = make.fresh()
    case["records"][0]["ciphertext"] = case["records"][0]["ciphertext"][:-1]
    make.add("ciphertext-truncated", "record-hash", "the entry hash covers every byte", case)

    case = make.fresh()
    donor = other["records"][0]
    case["records"][0]["nonce"] = donor["nonce"]
    case["records"][0]["ciphertext"] = donor["ciphertext"]
    make.add(
        "ciphertext-swapped",
        "record-hash",
        "a ciphertext moved from another record fails the entry hash",
        case,
    )

    replacement_public, replacement_secret = _crypto.x25519_keypair(rng)
    case = make.fresh()
    case["epoch"] = {
        "collection": epoch_row.collection,
        "epoch": epoch_row.epoch,
        "created_at": epoch_row.created_at,
        "public_key": replacement_public,
        "signature": epoch_row.signature,
        "sealed_owner": _crypto.seal(replacement_secret, build.owner_x25519_public, rng),
        "seal_fields": epoch_row.seal_fields,
    }
    make.add(
        "epoch-key-replaced",
        "epoch-signature",
        "the epoch certificate must be signed by the vault identity key: a replaced epoch "
        "public key is refused",
        case,
    )

    case = make.fresh()
    certificate = _envelope.epoch_certificate(
        vault_id, epoch_row.collection, epoch_row.epoch, epoch_row.public_key, epoch_row.created_at
    )
    case["epoch"] = {
        "collection": epoch_row.collection,
        "epoch": epoch_row.epoch,
        "created_at": epoch_row.created_at,
        "public_key": epoch_row.public_key,
        "signature": build.identity.sign(_envelope.BATCH_SIGNATURE_LABEL, certificate),
        "sealed_owner": epoch_row.sealed_owner,
        "seal_fields": epoch_row.seal_fields,
    }
    make.add(
        "epoch-certificate-wrong-label",
        "epoch-signature",
        "the certificate signature is over 'pds/epoch/v1' || 0x00 || certificate",
        case,
    )

    case = make.fresh()
    _, stranger_secret = _crypto.x25519_keypair(rng)
    case["epoch"] = {
        "collection": epoch_row.collection,
        "epoch": epoch_row.epoch,
        "created_at": epoch_row.created_at,
        "public_key": epoch_row.public_key,
        "signature": epoch_row.signature,
        "sealed_owner": _crypto.seal(stranger_secret, build.owner_x25519_public, rng),
        "seal_fields": epoch_row.seal_fields,
    }
    make.add(
        "epoch-secret-substituted",
        "epoch-secret",
        "the unsealed epoch secret must match the certified public key (anyone can seal a "
        "secret to the owner's public key)",
        case,
    )

    case = make.fresh()
    assert epoch_row.sealed_owner is not None
    case["epoch"] = {
        "collection": epoch_row.collection,
        "epoch": epoch_row.epoch,
        "created_at": epoch_row.created_at,
        "public_key": epoch_row.public_key,
        "signature": epoch_row.signature,
        "sealed_owner": flip(epoch_row.sealed_owner, 40),
        "seal_fields": epoch_row.seal_fields,
    }
    make.add(
        "epoch-sealed-secret-flipped",
        "epoch-secret",
        "the sealed epoch secret must open with the owner's X25519 key",
        case,
    )

    case = make.fresh()
    stranger_public, _ = _crypto.x25519_keypair(rng)
    case["batch"]["sealed_reader"] = _crypto.seal(reader, stranger_public, rng)
    doc = make.manifest_doc(case)
    doc["reader"] = _crypto.sha256(case["batch"]["sealed_reader"])
    make.sign(case, doc)
    make.add(
        "reader-share-sealed-to-another-key",
        "reader-share",
        "the reader share must open with the batch epoch's secret key",
        case,
    )

    case = make.fresh()
    record = case["records"][0]
    record["ciphertext"] = flip(record["ciphertext"], 3)
    make.sign(case, make.rehash(case))
    make.add(
        "aead-ciphertext-flipped-signed",
        "aead",
        "the XChaCha20-Poly1305 tag must verify, even when the writer signed the bad bytes",
        case,
    )

    case = make.fresh()
    record = case["records"][0]
    record["nonce"] = flip(record["nonce"], 23)
    make.sign(case, make.rehash(case))
    make.add("aead-nonce-changed-signed", "aead", "the AEAD nonce is the stored nonce", case)

    case = make.fresh()
    record = case["records"][0]
    wrong = dict(record, version=record["version"] - 1)
    make.encrypt(case, plaintext, key_binding=binding_of(vault_id, wrong))
    make.add(
        "aead-wrong-version-in-binding",
        "aead",
        "the record key and associated data come from the binding of the stored version: "
        "content sealed for version 1 does not open as version 2",
        case,
    )

    case = make.fresh()
    make.encrypt(case, plaintext, ad=b"")
    make.add(
        "aead-without-associated-data",
        "aead",
        "the associated data is the binding",
        case,
    )

    case = make.fresh()
    make.encrypt(case, plaintext, host_share=rng(32))
    make.add(
        "aead-wrong-host-share",
        "aead",
        "the record key needs the batch's wrapped host share H, not another one",
        case,
    )

    case = make.fresh()
    make.encrypt(case, plaintext, without_host_share=True)
    make.add(
        "aead-key-without-host-share",
        "aead",
        "the record key is KDF(R, 'pds-record-key1', h || binding); R alone is not enough",
        case,
    )

    case = make.fresh()
    make.encrypt(case, msgpack.packb({"z": 1, "a": 2}))
    make.add(
        "content-not-canonical",
        "content",
        "the decrypted content must be canonical msgpack (here: unsorted keys)",
        case,
    )

    case = make.fresh()
    make.encrypt(case, _codec.encode(["not", "a", "map"]))
    make.add("content-not-a-map", "content", "the decrypted content must be a map", case)

    case = make.fresh()
    make.encrypt(case, plaintext + b"\xc0")
    make.add(
        "content-trailing-bytes",
        "content",
        "the decrypted content is exactly one canonical msgpack value",
        case,
    )
    return make.cases


# -- invalid field-sealed cases -----------------------------------------------------------


def field_items(record: Json) -> list[list[Any]]:
    """The ``[name, nonce, ciphertext]`` items of a field-sealed record, as stored."""
    return [list(item) for item in _codec.decode(record["ciphertext"])]


def invalid_field_cases(build: Build, base: Json) -> list[Json]:
    """Cases built from the valid field-sealed batch; each breaks its first record
    (``intake-1``) at one step, re-signing the manifest so that the entry hash matches."""
    make = CaseMaker(build, base)
    rng = build.rng
    reader, host = make.secrets
    donor = base["records"][1]
    assert donor["record_id"] == "intake-2"

    def stored(case: Json, container: bytes) -> None:
        case["records"][0]["ciphertext"] = container
        make.sign(case, make.rehash(case))

    def reseal(
        case: Json,
        name: str,
        plaintext: bytes,
        *,
        share: bytes | None = None,
        key: bytes | None = None,
        ad: bytes | None = None,
    ) -> None:
        """Re-encrypt one field (a fresh nonce), with whichever derivation is given."""
        record = case["records"][0]
        record_binding = binding_of(build.vault_id, record)
        bound = _envelope.field_binding(record_binding, name)
        h_f = share if share is not None else _envelope.field_host_share(host, record_binding, name)
        k_f = key if key is not None else _crypto.derive(reader, FIELD_KEY_LABEL, h_f + bound)
        nonce = rng(_crypto.NONCE_SIZE)
        sealed = _crypto.aead_encrypt(k_f, nonce, plaintext, ad if ad is not None else bound)
        items = [
            [item_name, nonce, sealed] if item_name == name else [item_name, n, c]
            for item_name, n, c in field_items(record)
        ]
        stored(case, _codec.encode(items))

    case = make.fresh()
    items = field_items(case["records"][0])
    items[0][2] = flip(items[0][2], 2)
    stored(case, _codec.encode(items))
    make.add(
        "field-ciphertext-flipped-signed",
        "aead",
        "each field's XChaCha20-Poly1305 tag must verify, even when the writer signed the "
        "bad bytes",
        case,
    )

    case = make.fresh()
    items = field_items(case["records"][0])
    items[1][1] = flip(items[1][1], 23)
    stored(case, _codec.encode(items))
    make.add("field-nonce-changed-signed", "aead", "a field's AEAD nonce is its stored nonce", case)

    case = make.fresh()
    items = field_items(case["records"][0])
    names = [item[0] for item in items]
    first, second = names.index("allergies"), names.index("name")
    items[first][1:], items[second][1:] = items[second][1:], items[first][1:]
    stored(case, _codec.encode(items))
    make.add(
        "field-ciphertexts-swapped-between-names",
        "aead",
        "a field's key and associated data come from its field binding (binding || C(name)): "
        "a field ciphertext moved to another field name does not open",
        case,
    )

    case = make.fresh()
    items = field_items(case["records"][0])
    donor_items = {item[0]: item for item in field_items(donor)}
    items = [donor_items["name"] if item[0] == "name" else item for item in items]
    stored(case, _codec.encode(items))
    make.add(
        "field-moved-from-another-record",
        "aead",
        "a field sealed for another record (intake-2's name) does not open in this one",
        case,
    )

    case = make.fresh()
    items = field_items(case["records"][0])
    items[0][0] = "allergy"
    stored(case, _codec.encode(items))
    make.add(
        "field-renamed",
        "aead",
        "the field name is part of the field binding: a renamed field does not open",
        case,
    )

    case = make.fresh()
    stored(case, _codec.encode(list(reversed(field_items(case["records"][0])))))
    make.add(
        "fields-unsorted",
        "content",
        "the items are sorted by the UTF-8 bytes of their names",
        case,
    )

    case = make.fresh()
    items = field_items(case["records"][0])
    stored(case, _codec.encode([items[0], *items]))
    make.add("fields-duplicate-name", "content", "no field name appears twice", case)

    case = make.fresh()
    items = field_items(case["records"][0])
    stored(case, _codec.encode({item[0]: [item[1], item[2]] for item in items}))
    make.add(
        "fields-not-an-array",
        "content",
        "the stored ciphertext is an array of [name, nonce, ciphertext] items, not a map",
        case,
    )

    case = make.fresh()
    items = field_items(case["records"][0])
    stored(case, _codec.encode([[item[0], item[1] + item[2]] for item in items]))
    make.add(
        "field-item-of-two-elements",
        "content",
        "each item is exactly [name, nonce, ciphertext]",
        case,
    )

    case = make.fresh()
    items = field_items(case["records"][0])
    items[0][1] = items[0][1].hex()
    stored(case, _codec.encode(items))
    make.add(
        "field-nonce-as-text",
        "content",
        "each item is [text, binary, binary]; here the nonce is text",
        case,
    )

    case = make.fresh()
    items = field_items(case["records"][0])
    items_bytes = _codec.encode(items)
    # array16 for a short array: valid msgpack, not canonical.
    stored(case, b"\xdc" + len(items).to_bytes(2, "big") + items_bytes[1:])
    make.add(
        "fields-not-canonical",
        "content",
        "the stored ciphertext is canonical msgpack (here: an array16 header for 6 items)",
        case,
    )

    case = make.fresh()
    reseal(case, "smoker", msgpack.packb(False) + b"\xc0")
    make.add(
        "field-value-trailing-bytes",
        "content",
        "a field's plaintext is exactly one canonical msgpack value",
        case,
    )

    case = make.fresh()
    reseal(case, "contact", msgpack.packb({"relation": "sister", "phone": "+358"}))
    make.add(
        "field-value-not-canonical",
        "content",
        "a field's plaintext is canonical msgpack (here: unsorted keys)",
        case,
    )

    case = make.fresh()
    reseal(case, "name", _codec.encode(b"Aino"))
    make.add(
        "field-value-binary",
        "content",
        "field values are JSON-compatible: binary is refused",
        case,
    )

    record_binding = binding_of(build.vault_id, base["records"][0])
    value = _codec.encode(INTAKE_1["name"])

    case = make.fresh()
    reseal(case, "name", value, ad=record_binding)
    make.add(
        "field-ad-is-record-binding",
        "aead",
        "a field's associated data is its field binding, not the record binding",
        case,
    )

    case = make.fresh()
    reseal(
        case,
        "name",
        value,
        share=_crypto.derive(host, b"pds-field-share1", record_binding),
    )
    make.add(
        "field-share-without-name",
        "aead",
        "a field's host share is KDF(H, 'pds-field-share1', field binding): derived from the "
        "record binding alone it is another share",
        case,
    )

    case = make.fresh()
    h = _envelope.host_share(host, record_binding)
    reseal(case, "name", value, key=_envelope.record_key(reader, h, record_binding))
    make.add(
        "field-under-record-key",
        "aead",
        "a field is sealed under its field key, not the record key of a whole-sealed record",
        case,
    )

    case = make.fresh()
    record = case["records"][0]
    nonce = rng(_crypto.NONCE_SIZE)
    h = _envelope.host_share(host, record_binding)
    record["nonce"] = nonce
    record["ciphertext"] = _crypto.aead_encrypt(
        _envelope.record_key(reader, h, record_binding),
        nonce,
        _codec.encode(INTAKE_1),
        record_binding,
    )
    make.sign(case, make.rehash(case))
    make.add(
        "sealed-whole-in-a-field-sealed-collection",
        "content",
        "in a collection whose epoch certificate says fields, a record sealed whole (one "
        "AEAD under the record key) is not a field container",
        case,
    )

    epoch_row = next(e for e in build.epochs if (e.collection, e.epoch) == (FIELD_COLLECTION, 1))
    assert epoch_row.seal_fields
    case = make.fresh()
    case["epoch"] = {
        "collection": epoch_row.collection,
        "epoch": epoch_row.epoch,
        "created_at": epoch_row.created_at,
        "public_key": epoch_row.public_key,
        "signature": epoch_row.signature,
        "sealed_owner": epoch_row.sealed_owner,
        "seal_fields": False,
    }
    make.add(
        "epoch-fields-flag-cleared",
        "epoch-signature",
        "the certificate's 'fields' key is signed: an epoch row that drops it does not verify",
        case,
    )
    return make.cases


# -- loading cases into a store: pds's own verdict ----------------------------------------


def pds_verdict(directory: Path, build: Build, case: Json, label: str) -> str:
    """Load one case's rows into a fresh store and read it with pds; return what happened."""
    path = directory / f"case-{label}.db"
    with pds.open_store(path, host_key=pds.SymmetricKey(HOST_KEY), synchronous="normal") as store:
        backend = store.backend
        with backend.transaction():
            backend.insert_vault(build.vault_row)
            replacement = case.get("epoch")
            for stored in build.epochs:
                epoch = stored
                if replacement is not None and (stored.collection, stored.epoch) == (
                    replacement["collection"],
                    replacement["epoch"],
                ):
                    epoch = EpochRow(build.vault_id, **replacement)
                backend.insert_epoch(epoch)
            batch = case["batch"]
            # The rest of the vault is stored as written (erased content is valid only
            # below the record's tombstone, which may sit in another batch).
            for other in build.batches:
                if other.batch_id != batch["batch_id"]:
                    backend.insert_batch(other)
                    backend.insert_records(build.records[other.batch_id])
            backend.insert_batch(BatchRow(build.vault_id, **batch))
            backend.insert_records(
                [RecordRow(build.vault_id, **record_fields(r)) for r in case["records"]]
            )
        vault = store.open_vault(build.vault_id)
        vault.unlock(key_provider=pds.SymmetricKey(OWNER_KEY))
        try:
            for record in case["records"]:
                vault.history(record["record_id"])
        except IntegrityError as exc:
            return exc.reason
        except PDSError as exc:
            return type(exc).__name__
    return "valid"


def record_fields(record: Json) -> Json:
    return {key: value for key, value in record.items() if key != "expected"}


# -- export vectors -----------------------------------------------------------------------


def frames(data: bytes) -> list[tuple[int, int, dict[str, Any]]]:
    """(offset of the length prefix, total frame length, document) for every frame."""
    offset = len(_export.MAGIC)
    result = []
    while offset < len(data):
        (length,) = struct.unpack(">I", data[offset : offset + 4])
        document = _codec.decode(data[offset + 4 : offset + 4 + length])
        result.append((offset, 4 + length, document))
        offset += 4 + length
    return result


def map_value_offset(data: bytes, offset: int, field: str) -> int:
    """Offset of the encoded value of ``field`` in the msgpack map that starts at ``offset``."""
    unpacker = msgpack.Unpacker(raw=False)
    unpacker.feed(data[offset:])
    for _ in range(unpacker.read_map_header()):
        if unpacker.unpack() == field:
            return offset + unpacker.tell()
        unpacker.skip()
    raise KeyError(field)


class Locator:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.frames = frames(data)

    def frame(self, kind: str, index: int = 0) -> tuple[int, int, dict[str, Any]]:
        return [f for f in self.frames if f[2]["t"] == kind][index]

    def value(self, kind: str, field: str, index: int = 0) -> int:
        """Offset of the first byte of a field's encoded value inside a frame."""
        start, _, _ = self.frame(kind, index)
        return map_value_offset(self.data, start + 4, field)

    def payload(self, kind: str, field: str, index: int = 0) -> int:
        """Offset of the first payload byte of a binary field (after its bin8/bin16 header)."""
        offset = self.value(kind, field, index)
        header = {0xC4: 2, 0xC5: 3, 0xC6: 5}[self.data[offset]]
        return offset + header


def apply_edits(data: bytes, edits: list[Json]) -> bytes:
    out = bytearray(data)
    for edit in edits:
        if edit["op"] == "xor":
            out[edit["offset"]] ^= edit["mask"]
        elif edit["op"] == "truncate":
            del out[edit["length"] :]
        elif edit["op"] == "splice":
            offset = edit["offset"]
            out[offset : offset + edit["remove"]] = bytes.fromhex(edit["insert"])
        else:
            raise ValueError(edit["op"])
    return bytes(out)


def xor(offset: int, mask: int = 0x01) -> Json:
    return {"op": "xor", "offset": offset, "mask": mask}


def splice(offset: int, remove: int, insert: bytes = b"") -> Json:
    return {"op": "splice", "offset": offset, "remove": remove, "insert": insert.hex()}


def reframe(document: dict[str, Any], *, canonical: bool = True) -> bytes:
    body = _codec.encode(document) if canonical else msgpack.packb(document, use_bin_type=True)
    return struct.pack(">I", len(body)) + body


def export_invalid(data: bytes) -> list[Json]:
    at = Locator(data)
    variants: list[Json] = []

    def add(name: str, rule: str, edits: list[Json], error: str, reason: str | None = None) -> None:
        expect: Json = {"error": error}
        if reason is not None:
            expect["reason"] = reason
        variants.append({"name": name, "rule": rule, "edits": edits, "expect": expect})

    vault_start, vault_length, vault_doc = at.frame("vault")
    end_start = at.frame("end")[0]
    first_batch_start = at.frame("batch", 0)[0]
    second_batch_start = at.frame("batch", 1)[0]
    third_batch_start = at.frame("batch", 2)[0]
    record_start, record_length, _ = at.frame("record", 0)
    last_batch_start = at.frame("batch", -1)[0]
    last_record_start, last_record_length, _ = at.frame("record", -1)

    add("magic-changed", "the file starts with 'pds-export/v1\\n'", [xor(12, 0x03)], "FormatError")
    add(
        "empty-file",
        "the file starts with the magic",
        [{"op": "truncate", "length": 0}],
        "FormatError",
    )
    add(
        "truncated-in-vault-frame",
        "every frame is complete",
        [{"op": "truncate", "length": vault_start + 20}],
        "FormatError",
    )
    add(
        "truncated-in-record-frame",
        "every frame is complete",
        [{"op": "truncate", "length": record_start + record_length // 2}],
        "FormatError",
    )
    add(
        "end-frame-missing",
        "the file ends with an end frame",
        [{"op": "truncate", "length": end_start}],
        "FormatError",
    )
    add(
        "trailing-byte",
        "no bytes follow the end frame",
        [splice(len(data), 0, b"\x00")],
        "FormatError",
    )
    add(
        "frame-too-large",
        "a frame's length is at most 32 MiB",
        [splice(vault_start, 4, struct.pack(">I", _export.MAX_FRAME + 1))],
        "FormatError",
    )
    add(
        "frame-not-canonical",
        "each frame body is canonical msgpack (here: the vault frame's keys unsorted)",
        [
            splice(
                vault_start,
                vault_length,
                reframe(dict(reversed(vault_doc.items())), canonical=False),
            )
        ],
        "FormatError",
    )
    add(
        "vault-frame-unknown-field",
        "each frame has exactly its fields",
        [splice(vault_start, vault_length, reframe({**vault_doc, "comment": "hello"}))],
        "FormatError",
    )
    add(
        "vault-frame-wrong-type",
        "each field has its type (here created_at as text)",
        [
            splice(
                vault_start,
                vault_length,
                reframe({**vault_doc, "created_at": str(vault_doc["created_at"])}),
            )
        ],
        "FormatError",
    )
    add(
        "vault-frame-missing",
        "the first frame is the vault frame",
        [splice(vault_start, vault_length)],
        "FormatError",
    )
    add(
        "wrapped-master-flipped",
        "the header is signed by the vault key and verified before the owner's secret is used",
        [xor(at.payload("vault", "wrapped_master") + 30)],
        "IntegrityError",
        "export-header",
    )
    add(
        "vault-id-changed",
        "the header (and in it the vault id) is signed by the vault key",
        [xor(at.value("vault", "vault") + 1, 0x01)],
        "IntegrityError",
        "export-header",
    )
    add(
        "unlock-method-changed",
        "the header (and in it the unlock document) is signed by the vault key",
        [xor(at.payload("vault", "unlock") + len(vault_doc["unlock"]) - 1, 0x01)],
        "IntegrityError",
        "export-header",
    )
    add(
        "wrapped-identity-flipped",
        "the header (and in it the wrapped identity seed) is signed by the vault key",
        [xor(at.payload("vault", "wrapped_identity") + 30)],
        "IntegrityError",
        "export-header",
    )
    add(
        "identity-replaced",
        "the header signature must verify under the stated identity public key",
        [xor(at.payload("vault", "identity") + 7)],
        "IntegrityError",
        "export-header",
    )
    add(
        "exported-at-changed",
        "the header (and in it the export time) is signed by the vault key",
        [xor(at.value("vault", "exported_at") + 8)],
        "IntegrityError",
        "export-header",
    )
    add(
        "epoch-signature-flipped",
        "each epoch certificate is signed by the vault identity key",
        [xor(at.payload("epoch", "signature") + 10)],
        "IntegrityError",
        "epoch-signature",
    )
    add(
        "epoch-public-key-flipped",
        "each epoch certificate is signed by the vault identity key",
        [xor(at.payload("epoch", "public_key") + 10)],
        "IntegrityError",
        "epoch-signature",
    )
    add(
        "epoch-sealed-secret-flipped",
        "sealed epoch secrets are covered by the end digest",
        [xor(at.payload("epoch", "sealed_owner") + 40)],
        "IntegrityError",
        "export-digest",
    )
    sealed_epoch = next(
        index
        for index, frame in enumerate(f for f in at.frames if f[2]["t"] == "epoch")
        if frame[2]["seal_fields"]
    )
    add(
        "epoch-seal-fields-cleared",
        "an epoch's seal_fields is part of its signed certificate (the 'fields' key)",
        [xor(at.value("epoch", "seal_fields", sealed_epoch), 0x01)],
        "IntegrityError",
        "epoch-signature",
    )
    epoch_start, epoch_length, _ = at.frame("epoch", 0)
    add(
        "epoch-frame-removed",
        "every batch's (collection, epoch) has an epoch frame before it",
        [splice(epoch_start, epoch_length)],
        "IntegrityError",
        "epoch-missing",
    )
    add(
        "batch-signature-flipped",
        "each batch manifest is signed by the writer",
        [xor(at.payload("batch", "signature") + 10)],
        "IntegrityError",
        "batch-signature",
    )
    add(
        "batch-manifest-flipped",
        "the signature covers every manifest byte",
        [xor(at.payload("batch", "manifest") + 20)],
        "IntegrityError",
        "batch-signature",
    )
    add(
        "batch-writer-flipped",
        "the writer is the vault identity key",
        [xor(at.payload("batch", "writer") + 3)],
        "IntegrityError",
        "writer",
    )
    add(
        "batch-time-changed",
        "the batch frame's fields equal the signed manifest's",
        [xor(at.value("batch", "created_at") + 8)],
        "IntegrityError",
        "batch-binding",
    )
    add(
        "batch-sealed-reader-flipped",
        "SHA-256(sealed_reader) equals the manifest's reader",
        [xor(at.payload("batch", "sealed_reader") + 50)],
        "IntegrityError",
        "batch-binding",
    )
    add(
        "batch-host-share-flipped",
        "the host share must open with the owner's X25519 key",
        [xor(at.payload("batch", "host_share") + 50)],
        "IntegrityError",
        "host-share",
    )
    add(
        "record-ciphertext-flipped",
        "SHA-256(binding || nonce || ciphertext) equals the manifest entry",
        [xor(at.payload("record", "ciphertext") + 5)],
        "IntegrityError",
        "record-hash",
    )
    add(
        "record-nonce-flipped",
        "SHA-256(binding || nonce || ciphertext) equals the manifest entry",
        [xor(at.payload("record", "nonce") + 5)],
        "IntegrityError",
        "record-hash",
    )
    add(
        "record-version-changed",
        "(record id, version) is a pending entry of the current batch",
        [xor(at.value("record", "version"), 0x03)],
        "IntegrityError",
        "not-in-batch",
    )
    add(
        "record-deleted-flag-flipped",
        "the record's deleted flag equals the manifest entry's",
        [xor(at.value("record", "deleted"), 0x01)],
        "IntegrityError",
        "record-binding",
    )
    add(
        "record-time-changed",
        "the record's created_at equals the manifest's",
        [xor(at.value("record", "created_at") + 8)],
        "IntegrityError",
        "record-binding",
    )
    add(
        "record-frame-removed",
        "every manifest entry has its record frame before the next batch or the end",
        [splice(last_record_start, last_record_length)],
        "IntegrityError",
        "export-incomplete",
    )
    add(
        "record-before-any-batch",
        "record frames follow their batch frame",
        [
            splice(record_start, record_length),
            splice(first_batch_start, 0, data[record_start : record_start + record_length]),
        ],
        "IntegrityError",
        "export-order",
    )
    add(
        "batch-removed",
        "the end digest covers every frame: dropping a whole batch is detected",
        [splice(last_batch_start, end_start - last_batch_start)],
        "IntegrityError",
        "export-digest",
    )
    add(
        "batches-swapped",
        "the end digest fixes the order of frames",
        [
            splice(
                first_batch_start,
                third_batch_start - first_batch_start,
                data[second_batch_start:third_batch_start]
                + data[first_batch_start:second_batch_start],
            )
        ],
        "IntegrityError",
        "export-digest",
    )
    link_start = at.frame("link", 0)[0]
    link_key_start, link_key_length, _ = at.frame("link_key", 0)
    add(
        "link-sealed-token-flipped",
        "a link's token, sealed to the owner, must open and verify",
        [xor(at.payload("link", "sealed_token") + 60)],
        "IntegrityError",
        "link",
    )
    add(
        "link-expiry-changed",
        "a link frame's columns equal the token it carries",
        [xor(at.value("link", "expires") + 8)],
        "IntegrityError",
        "link",
    )
    add(
        "link-key-before-its-link",
        "a link_key frame follows its link frame",
        [
            splice(link_key_start, link_key_length),
            splice(link_start, 0, data[link_key_start : link_key_start + link_key_length]),
        ],
        "IntegrityError",
        "export-order",
    )
    add(
        "link-key-sealed-secret-flipped",
        "sealed link keys are covered by the end digest",
        [xor(at.payload("link_key", "sealed") + 40)],
        "IntegrityError",
        "export-digest",
    )
    add(
        "revocation-signature-flipped",
        "a revocation statement is signed by the vault identity key",
        [xor(at.payload("revocation", "signature") + 10)],
        "IntegrityError",
        "revocation",
    )
    add(
        "revocation-time-changed",
        "a revocation frame's time equals its signed statement's",
        [xor(at.value("revocation", "revoked_at") + 8)],
        "IntegrityError",
        "revocation",
    )
    first_log = at.frame("log", 0)
    second_log = at.frame("log", 1)
    last_log = at.frame("log", -1)
    entry_start = at.payload("log", "entry", 1)
    add(
        "log-entry-sealed-details-flipped",
        "the log must hash to the signed checkpoint's root",
        [xor(map_value_offset(data, entry_start, "sealed") + 2 + 40)],
        "IntegrityError",
        "checkpoint",
    )
    add(
        "log-entries-swapped",
        "log frames are in index order from 0",
        [
            splice(
                first_log[0],
                first_log[1] + second_log[1],
                data[second_log[0] : second_log[0] + second_log[1]]
                + data[first_log[0] : first_log[0] + first_log[1]],
            )
        ],
        "IntegrityError",
        "log-order",
    )
    add(
        "last-log-entry-removed",
        "the checkpoint's tree size is at most the number of log entries",
        [splice(last_log[0], last_log[1])],
        "IntegrityError",
        "checkpoint",
    )
    checkpoint_start, checkpoint_length, checkpoint_doc = at.frame("checkpoint")
    note = checkpoint_doc["note"]
    position = len(note) - 6  # inside the base64 signature on the note's last line
    forged = note[:position] + ("B" if note[position] == "A" else "A") + note[position + 1 :]
    add(
        "checkpoint-signature-changed",
        "the checkpoint note is signed by the vault identity key",
        [splice(checkpoint_start, checkpoint_length, reframe({**checkpoint_doc, "note": forged}))],
        "InvalidProof",
        "checkpoint-signature",
    )
    add(
        "checkpoint-removed",
        "the end digest covers every frame",
        [splice(checkpoint_start, checkpoint_length)],
        "IntegrityError",
        "export-digest",
    )
    add(
        "end-digest-flipped",
        "the end digest is SHA-256 of every byte before the end frame",
        [xor(at.payload("end", "digest") + 1)],
        "IntegrityError",
        "export-digest",
    )
    count_at = map_value_offset(data, at.value("end", "counts"), "records")
    add(
        "end-counts-changed",
        "the end counts equal the frames read",
        [xor(count_at, 0x01)],
        "IntegrityError",
        "export-incomplete",
    )
    add(
        "end-signature-flipped",
        "the end signature by the vault identity key verifies",
        [xor(at.payload("end", "signature") + 9)],
        "IntegrityError",
        "export-signature",
    )
    add(
        "end-frame-type-changed",
        "the frame after the last record is the end frame",
        [xor(at.value("end", "t") + 1, 0x20)],
        "FormatError",
    )
    return variants


def import_verdict(directory: Path, data: bytes, label: str) -> tuple[str, str | None]:
    path = directory / f"import-{label}.db"
    with pds.open_store(path, host_key=pds.SymmetricKey(HOST_KEY), synchronous="normal") as store:
        try:
            store.import_vault(io.BytesIO(data), key_provider=pds.SymmetricKey(OWNER_KEY))
        except IntegrityError as exc:
            return type(exc).__name__, exc.reason
        except PDSError as exc:
            return type(exc).__name__, None
    return "imported", None


def export_vectors(build: Build, directory: Path) -> Json:
    data = build.export
    at = Locator(data)
    histories = []
    record_ids: list[str] = []
    for batch in build.batches:
        for record in build.records[batch.batch_id]:
            if record.record_id not in record_ids:
                record_ids.append(record.record_id)
    for record_id in record_ids:
        versions = []
        for version in build.vault.history(record_id):
            versions.append(
                {
                    "version": version.version,
                    "collection": version.collection,
                    "epoch": version.epoch,
                    "created_at": round(version.created_at.timestamp() * 1000),
                    "deleted": version.deleted,
                    "erased": version.erased,
                    "data": version.data,
                }
            )
        histories.append({"record_id": record_id, "versions": versions})

    invalid = export_invalid(data)
    for number, variant in enumerate(invalid):
        mutated = apply_edits(data, variant["edits"])
        error, reason = import_verdict(directory, mutated, str(number))
        expect = variant["expect"]
        if (error, reason) != (expect["error"], expect.get("reason")):
            raise AssertionError(f"export variant {variant['name']}: pds says {error} {reason}")
    assert import_verdict(directory, data, "valid") == ("imported", None)

    return {
        "about": (
            "An export file (docs/spec/export.md) of the vault in records.json. Import "
            "'file' with the owner key 'owner_key' (a 32-byte key file's content); the "
            "imported vault has 'histories' (oldest version first; deleted versions have no "
            "data, earlier versions of a deleted record are erased). Each 'invalid' variant "
            "applies 'edits' to the file in order (xor: out[offset] ^= mask; truncate: keep "
            "the first 'length' bytes; splice: replace 'remove' bytes at 'offset' by "
            "'insert'); its import MUST fail with 'expect' (a pds.errors class and, for "
            "IntegrityError, the reason code)."
        ),
        "generator": "tests/vectors/generate.py",
        "file": "vault.pdsx",
        "size": len(data),
        "sha256": hashlib.sha256(data).hexdigest(),
        "owner_key": OWNER_KEY.hex(),
        "vault_id": build.vault_id,
        "identity_did": _crypto.did_key(build.identity.public),
        "frames": [
            {"offset": offset, "length": length, "t": document["t"]}
            for offset, length, document in at.frames
        ],
        "counts": at.frame("end")[2]["counts"],
        "histories": histories,
        "invalid": invalid,
    }


# -- records.json -----------------------------------------------------------------------


def records_vectors(build: Build, directory: Path) -> Json:
    names = [
        "two new records in a new collection (one random id, one given id)",
        "an update: visit-1 version 2",
        "a record in a second collection",
        "a deletion: a tombstone version; the earlier version's content is erased",
        "after rotation: a record in epoch 2",
        "a field-sealed collection: each top-level field under its own key and host share "
        "(six fields, three fields, none)",
    ]
    assert len(names) == len(build.batches)
    valid = [valid_case(build, i, batch, names[i]) for i, batch in enumerate(build.batches)]
    base = valid[1]
    other = valid[2]
    assert len(base["records"]) == 1 and len(other["records"]) == 1
    field_base = valid[5]
    assert field_base["batch"]["collection"] == FIELD_COLLECTION
    assert field_base["expected"]["seal_fields"]
    field_base["expected"]["field_restricted_read"] = field_restricted_read(build, field_base)

    invalid = invalid_record_cases(build, base, other) + invalid_field_cases(build, field_base)
    for number, case in enumerate(invalid):
        verdict = pds_verdict(directory, build, case, str(number))
        if verdict != case["expect"]:
            raise AssertionError(f"record case {case['name']}: pds says {verdict}")
    for number, case in enumerate(valid):
        verdict = pds_verdict(directory, build, case, f"valid-{number}")
        if verdict != "valid":
            raise AssertionError(f"valid record case {number}: pds says {verdict}")

    row = build.vault_row
    identity_wrap_key = _crypto.derive(build.master, b"pds-identity-wr1")
    return {
        "about": (
            "Record envelopes and batch manifests (docs/spec/records.md) of one vault, "
            "written by pds with deterministic randomness. 'keys' holds every secret, from "
            "the owner key down; 'vault' and 'epochs' are the stored rows; each 'valid' case "
            "is one write batch with its records as stored, and the values a verifier must "
            "derive ('expected'); in a field-sealed collection (its epoch's 'seal_fields') "
            "'expected.fields' gives, per field, its binding, host share, key, nonce, "
            "ciphertext and plaintext, and 'expected.field_restricted_read' the field host "
            "shares the host released to a grant limited to some fields, and what they open "
            "to. Each 'invalid' case replaces one batch (and possibly the "
            "epoch row it names) and MUST fail verification at the step whose reason code is "
            "'expect'; 'rule' is the rule it breaks. Binary values are lowercase hex."
        ),
        "generator": "tests/vectors/generate.py",
        "keys": hexed(
            {
                "owner_key": OWNER_KEY,
                "host_key": HOST_KEY,
                "host_key_id": build.host_key.key_id,
                "vault_master_key": build.master,
                "identity_wrap_key": identity_wrap_key,
                "identity_seed": build.identity.seed,
                "identity_public": build.identity.public,
                "identity_did": _crypto.did_key(build.identity.public),
                "owner_x25519_secret": build.owner_x25519_secret,
                "owner_x25519_public": build.owner_x25519_public,
            }
        ),
        "vault": hexed(
            {
                "vault_id": row.vault_id,
                "created_at": row.created_at,
                "identity_public": row.identity_public,
                "unlock": row.unlock,
                "unlock_document": _codec.decode(row.unlock),
                "master_context": _owner.master_context(row.vault_id),
                "wrapped_master": row.wrapped_master,
                "identity_context": b"pds/identity/v1\x00" + row.vault_id.encode(),
                "wrapped_identity": row.wrapped_identity,
            }
        ),
        "epochs": [hexed(epoch_json(build, epoch)) for epoch in build.epochs],
        "valid": hexed(valid),
        "invalid": hexed(invalid),
    }


# -- main -------------------------------------------------------------------------------


def generate() -> dict[Path, bytes]:
    with tempfile.TemporaryDirectory(prefix="pds-vectors-") as temp:
        directory = Path(temp)
        build = Build(directory)
        try:
            outputs = {
                HERE / "encoding.json": dump_json(encoding_vectors()),
                HERE / "records.json": dump_json(records_vectors(build, directory)),
                HERE / "export" / "export.json": dump_json(export_vectors(build, directory)),
                HERE / "export" / "vault.pdsx": build.export,
            }
        finally:
            build.close()
    return outputs


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
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
    return 0


def _same(path: Path, content: bytes) -> bool:
    return path.exists() and path.read_bytes() == content


if __name__ == "__main__":
    sys.exit(main())
