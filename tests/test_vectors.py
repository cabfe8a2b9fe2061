"""The test vectors in ``tests/vectors/`` (``docs/spec/*.md``, section "Test vectors").

1. The committed generator reproduces every vector file byte for byte.
2. An independent verifier, written from the specs with only PyNaCl, hashlib and msgpack
   (no pds code), re-derives the key hierarchy, decrypts every valid record (field by field
   in a field-sealed collection), checks every manifest signature and entry hash, and
   refuses each invalid record at its labelled step.
3. The encoding vectors against ``pds._codec``.
4. The export vector imports with pds and yields the expected plaintexts; every invalid
   variant is refused with the expected error.
"""

from __future__ import annotations

import hashlib
import io
import itertools
import json
import math
import struct
import subprocess
import sys
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgpack
import nacl.bindings as sodium
import nacl.exceptions
import pytest

import pds
from pds import _codec, errors
from pds._store.base import BatchRow, EpochRow, RecordRow, VaultRow

VECTORS = Path(__file__).resolve().parent / "vectors"


def _load(name: str) -> dict[str, Any]:
    document: dict[str, Any] = json.loads((VECTORS / name).read_text("utf-8"))
    return document


ENCODING = _load("encoding.json")
RECORDS = _load("records.json")
EXPORT = _load("export/export.json")


# -- 1. the generator ---------------------------------------------------------------------


def test_generator_reproduces_the_vectors_byte_for_byte() -> None:
    result = subprocess.run(
        [sys.executable, str(VECTORS / "generate.py"), "--check"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr


# -- 2. an independent verifier: PyNaCl, hashlib and msgpack only -------------------------


class Refused(Exception):
    """Verification stopped at ``step`` (a reason code of docs/spec/records.md)."""

    def __init__(self, step: str) -> None:
        super().__init__(step)
        self.step = step


MAX_DEPTH = 64


def _sorted_maps(value: Any) -> Any:
    if isinstance(value, dict):
        items = sorted(value.items(), key=lambda item: str(item[0]).encode("utf-8"))
        return {key: _sorted_maps(item) for key, item in items}
    if isinstance(value, list | tuple):
        return [_sorted_maps(item) for item in value]
    return value


def canonical(value: Any) -> bytes:
    """Canonical msgpack: maps sorted by the UTF-8 bytes of their keys, shortest forms
    (msgpack's packer already picks them), float64 only, str and bin kept apart."""
    packed: bytes = msgpack.packb(_sorted_maps(value), use_bin_type=True, use_single_float=False)
    return packed


def _check_value(value: Any, depth: int, json_only: bool) -> None:
    if depth > MAX_DEPTH:
        raise ValueError("too deep")
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError("not finite")
    if isinstance(value, msgpack.ExtType | msgpack.Timestamp):
        raise ValueError("extension type")
    if json_only and isinstance(value, bytes):
        raise ValueError("binary in record content")
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise ValueError("map key is not text")
            _check_value(item, depth + 1, json_only)
    if isinstance(value, list):
        for item in value:
            _check_value(item, depth + 1, json_only)


def _unique_pairs(pairs: list[tuple[Any, Any]]) -> dict[Any, Any]:
    result = dict(pairs)
    if len(result) != len(pairs):
        raise ValueError("duplicate key")
    return result


def strict_decode(data: bytes, *, json_only: bool = False) -> Any:
    """Decode one canonical msgpack value; raise ValueError for anything else (and, with
    ``json_only``, for binary values: record content is JSON-compatible)."""
    try:
        value = msgpack.unpackb(
            data, raw=False, strict_map_key=False, object_pairs_hook=_unique_pairs
        )
    except (
        msgpack.ExtraData,
        msgpack.FormatError,
        msgpack.StackError,
        ValueError,
        TypeError,
    ) as exc:
        raise ValueError("not one msgpack value") from exc
    _check_value(value, 0, json_only)
    if canonical(value) != data:
        raise ValueError("not canonical")
    return value


def kdf(key: bytes, label: bytes, message: bytes = b"") -> bytes:
    """Keyed BLAKE2b-256 with the label, zero-padded to 16 bytes, as personalisation."""
    assert len(label) <= 16
    digest: bytes = sodium.crypto_generichash_blake2b_salt_personal(
        message, digest_size=32, key=key, person=label.ljust(16, b"\x00")
    )
    return digest


def signature_ok(public: bytes, label: bytes, message: bytes, signature: bytes) -> bool:
    if len(signature) != 64 or len(public) != 32:
        return False
    try:
        sodium.crypto_sign_open(signature + label + b"\x00" + message, public)
    except (nacl.exceptions.BadSignatureError, nacl.exceptions.CryptoError, ValueError):
        return False
    return True


def unseal(sealed: bytes, secret: bytes) -> bytes:
    public = sodium.crypto_scalarmult_base(secret)
    opened: bytes = sodium.crypto_box_seal_open(sealed, public, secret)
    return opened


def aead_open(key: bytes, nonce: bytes, ciphertext: bytes, ad: bytes) -> bytes:
    opened: bytes = sodium.crypto_aead_xchacha20poly1305_ietf_decrypt(ciphertext, ad, nonce, key)
    return opened


def unwrap(key: bytes, wrapped: bytes, context: bytes) -> bytes:
    """A SymmetricKey wrap: 24-byte nonce || XChaCha20-Poly1305(secret, AD = context)."""
    return aead_open(key, wrapped[:24], wrapped[24:], context)


_B58 = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"


def did_key(public: bytes) -> str:
    raw = b"\xed\x01" + public
    number = int.from_bytes(raw, "big")
    digits = ""
    while number:
        number, digit = divmod(number, 58)
        digits = _B58[digit] + digits
    zeros = len(raw) - len(raw.lstrip(b"\x00"))
    return "did:key:z" + "1" * zeros + digits


def epoch_certificate(vault_id: str, row: dict[str, Any]) -> bytes:
    """The signed certificate of an epoch row; ``fields`` only for a field-sealed one."""
    document = {
        "v": 1,
        "vault": vault_id,
        "collection": row["collection"],
        "epoch": row["epoch"],
        "public_key": row["public_key"],
        "created_at": row["created_at"],
    }
    if row.get("seal_fields"):
        document["fields"] = True
    return canonical(document)


def utf8_sorted(names: list[str]) -> bool:
    """Strictly increasing by UTF-8 bytes: sorted, and no name twice."""
    keys = [name.encode("utf-8") for name in names]
    return all(a < b for a, b in itertools.pairwise(keys))


def open_fields(
    ciphertext: bytes,
    reader_share: bytes,
    host_share: bytes | None,
    record_binding: bytes,
    released: dict[str, bytes] | None = None,
) -> list[dict[str, Any]]:
    """Open a field-sealed record's stored ciphertext, field by field (records.md,
    "Field-sealed records"). The field host shares are derived from the batch host share
    ``host_share`` (the owner) or taken from ``released`` (a grantee); a field without a
    share is skipped. Refuses with ``content`` or ``aead``."""
    try:
        items = strict_decode(ciphertext)
        if not isinstance(items, list):
            raise ValueError("not an array")
        for item in items:
            if not (
                isinstance(item, list)
                and len(item) == 3
                and isinstance(item[0], str)
                and isinstance(item[1], bytes)
                and isinstance(item[2], bytes)
            ):
                raise ValueError("not [text, binary, binary]")
    except ValueError:
        raise Refused("content") from None
    if not utf8_sorted([item[0] for item in items]):
        raise Refused("content")
    opened = []
    for name, nonce, sealed in items:
        field_binding = record_binding + canonical(name)
        if released is not None:
            if name not in released:
                continue
            field_share = released[name]
        else:
            assert host_share is not None
            field_share = kdf(host_share, b"pds-field-share1", field_binding)
        key = kdf(reader_share, b"pds-field-key1", field_share + field_binding)
        try:
            plaintext = aead_open(key, nonce, sealed, field_binding)
        except nacl.exceptions.CryptoError:
            raise Refused("aead") from None
        try:
            value = strict_decode(plaintext, json_only=True)
        except ValueError:
            raise Refused("content") from None
        opened.append(
            {
                "name": name,
                "field_binding": field_binding,
                "field_host_share": field_share,
                "field_key": key,
                "nonce": nonce,
                "ciphertext": sealed,
                "plaintext": plaintext,
                "value": value,
            }
        )
    return opened


def binding(vault_id: str, record: dict[str, Any]) -> bytes:
    return canonical(
        [
            "pds/record/v1",
            vault_id,
            record["collection"],
            record["record_id"],
            record["version"],
            record["epoch"],
            record["batch_id"],
            record["deleted"],
        ]
    )


_BINARY = {
    "batch_id",
    "writer",
    "manifest",
    "signature",
    "sealed_reader",
    "wrapped_host",
    "nonce",
    "ciphertext",
    "public_key",
    "sealed_owner",
    "certificate",
    "secret_key",
}


def unhex(row: dict[str, Any]) -> dict[str, Any]:
    return {
        key: bytes.fromhex(value) if key in _BINARY and isinstance(value, str) else value
        for key, value in row.items()
        if key != "expected"
    }


MANIFEST_KEYS = {"v", "vault", "batch", "collection", "epoch", "writer", "created_at", "reader"}


@dataclass
class Reader:
    """What an owner-side verifier holds: the vault's public rows and the owner's secrets."""

    vault_id: str
    identity_public: bytes
    owner_x25519_secret: bytes
    host_key: bytes
    epochs: dict[tuple[str, int], dict[str, Any]]

    def epoch_row(self, collection: str, epoch: int) -> dict[str, Any]:
        """The epoch row, its certificate verified (records.md steps 13.1 and 13.2)."""
        row = self.epochs.get((collection, epoch))
        if row is None:
            raise Refused("epoch-missing")
        certificate = epoch_certificate(self.vault_id, row)
        if not signature_ok(self.identity_public, b"pds/epoch/v1", certificate, row["signature"]):
            raise Refused("epoch-signature")
        return row

    def epoch_secret(self, collection: str, epoch: int) -> bytes:
        row = self.epoch_row(collection, epoch)
        try:
            secret = unseal(row["sealed_owner"], self.owner_x25519_secret)
        except (nacl.exceptions.CryptoError, ValueError):
            raise Refused("epoch-secret") from None
        if sodium.crypto_scalarmult_base(secret) != row["public_key"]:
            raise Refused("epoch-secret")
        return secret

    def manifest(self, batch: dict[str, Any]) -> dict[str, Any]:
        if batch["writer"] != self.identity_public:
            raise Refused("writer")
        if not signature_ok(
            batch["writer"], b"pds/batch/v1", batch["manifest"], batch["signature"]
        ):
            raise Refused("batch-signature")
        try:
            doc = strict_decode(batch["manifest"])
            assert isinstance(doc, dict) and set(doc) == MANIFEST_KEYS | {"entries"}
            assert doc["v"] == 1
            seen = set()
            for entry in doc["entries"]:
                record_id, version, deleted, digest = entry
                assert isinstance(record_id, str) and isinstance(digest, bytes)
                assert isinstance(version, int) and isinstance(deleted, bool)
                assert (record_id, version) not in seen
                seen.add((record_id, version))
        except (ValueError, AssertionError, TypeError):
            raise Refused("manifest") from None
        for field, column in [
            ("vault", self.vault_id),
            ("batch", batch["batch_id"]),
            ("collection", batch["collection"]),
            ("epoch", batch["epoch"]),
            ("writer", batch["writer"]),
            ("created_at", batch["created_at"]),
            ("reader", hashlib.sha256(batch["sealed_reader"]).digest()),
        ]:
            if doc[field] != column:
                raise Refused("batch-binding")
        return doc

    def read(self, batch: dict[str, Any], records: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Verify one batch and its stored record versions; return what each one yields."""
        doc = self.manifest(batch)
        entries = {(e[0], e[1]): (e[2], e[3]) for e in doc["entries"]}
        results = []
        for record in records:
            assert record["batch_id"] == batch["batch_id"]
            record_binding = binding(self.vault_id, record)
            entry = entries.get((record["record_id"], record["version"]))
            if entry is None:
                raise Refused("not-in-batch")
            if (entry[0], doc["collection"], doc["epoch"], doc["created_at"]) != (
                record["deleted"],
                record["collection"],
                record["epoch"],
                record["created_at"],
            ):
                raise Refused("record-binding")
            nonce, ciphertext = record["nonce"], record["ciphertext"]
            result: dict[str, Any] = {"binding": record_binding}
            if nonce is None and ciphertext is None:
                results.append({**result, "result": "erased"})
                continue
            if nonce is None or ciphertext is None:
                raise Refused("record-binding")
            entry_hash = hashlib.sha256(record_binding + nonce + ciphertext).digest()
            if entry_hash != entry[1]:
                raise Refused("record-hash")
            result["entry_hash"] = entry_hash
            if record["deleted"]:
                results.append({**result, "result": "deleted"})
                continue
            seal_fields = bool(self.epoch_row(batch["collection"], batch["epoch"])["seal_fields"])
            epoch_secret = self.epoch_secret(batch["collection"], batch["epoch"])
            try:
                reader_share = unseal(batch["sealed_reader"], epoch_secret)
            except (nacl.exceptions.CryptoError, ValueError):
                raise Refused("reader-share") from None
            context = (
                b"pds/host-share/v1\x00" + self.vault_id.encode() + b"\x00" + batch["batch_id"]
            )
            host_share = unwrap(self.host_key, batch["wrapped_host"], context)
            if seal_fields:
                # The record-level nonce is empty and unused; the entry hash covers it.
                fields = open_fields(ciphertext, reader_share, host_share, record_binding)
                results.append(
                    {
                        **result,
                        "reader_share": reader_share,
                        "host_share": host_share,
                        "host_wrap_context": context,
                        "fields": fields,
                        "data": {field["name"]: field["value"] for field in fields},
                        "result": "data",
                    }
                )
                continue
            record_host_share = kdf(host_share, b"pds-host-share1", record_binding)
            key = kdf(reader_share, b"pds-record-key1", record_host_share + record_binding)
            try:
                plaintext = aead_open(key, nonce, ciphertext, record_binding)
            except nacl.exceptions.CryptoError:
                raise Refused("aead") from None
            try:
                data = strict_decode(plaintext, json_only=True)
            except ValueError:
                raise Refused("content") from None
            if not isinstance(data, dict):
                raise Refused("content")
            results.append(
                {
                    **result,
                    "reader_share": reader_share,
                    "host_share": host_share,
                    "host_wrap_context": context,
                    "record_host_share": record_host_share,
                    "record_key": key,
                    "plaintext": plaintext,
                    "data": data,
                    "result": "data",
                }
            )
        return results


def _reader(epoch_override: dict[str, Any] | None = None) -> Reader:
    keys = RECORDS["keys"]
    epochs = {(e["collection"], e["epoch"]): unhex(e) for e in RECORDS["epochs"]}
    if epoch_override is not None:
        row = unhex(epoch_override)
        epochs[(row["collection"], row["epoch"])] = row
    return Reader(
        vault_id=RECORDS["vault"]["vault_id"],
        identity_public=bytes.fromhex(RECORDS["vault"]["identity_public"]),
        owner_x25519_secret=bytes.fromhex(keys["owner_x25519_secret"]),
        host_key=bytes.fromhex(keys["host_key"]),
        epochs=epochs,
    )


def test_key_hierarchy_vector_independently() -> None:
    keys = {
        k: v if k.endswith(("_did", "_id")) else bytes.fromhex(v)
        for k, v in RECORDS["keys"].items()
    }
    vault = RECORDS["vault"]
    vault_id = vault["vault_id"]
    unlock = bytes.fromhex(vault["unlock"])
    assert strict_decode(unlock) == vault["unlock_document"]
    assert vault["unlock_document"]["method"] == "key"
    # No key fingerprint is stored: it would let the host link vaults sharing a key file.
    assert vault["unlock_document"] == {"method": "key"}
    assert keys["host_key_id"] == "k1:" + kdf(keys["host_key"], b"pds-key-id")[:12].hex()

    master_context = b"pds/master/v1\x00" + vault_id.encode()
    assert bytes.fromhex(vault["master_context"]) == master_context
    master = unwrap(keys["owner_key"], bytes.fromhex(vault["wrapped_master"]), master_context)
    assert master == keys["vault_master_key"]
    identity_wrap_key = kdf(master, b"pds-identity-wr1")
    assert identity_wrap_key == keys["identity_wrap_key"]
    identity_context = b"pds/identity/v1\x00" + vault_id.encode()
    seed = unwrap(identity_wrap_key, bytes.fromhex(vault["wrapped_identity"]), identity_context)
    assert seed == keys["identity_seed"]
    public, expanded = sodium.crypto_sign_seed_keypair(seed)
    assert public == keys["identity_public"] == bytes.fromhex(vault["identity_public"])
    assert did_key(public) == RECORDS["keys"]["identity_did"]
    owner_secret = sodium.crypto_sign_ed25519_sk_to_curve25519(expanded)
    assert owner_secret == keys["owner_x25519_secret"]
    assert sodium.crypto_scalarmult_base(owner_secret) == keys["owner_x25519_public"]
    assert sodium.crypto_sign_ed25519_pk_to_curve25519(public) == keys["owner_x25519_public"]

    reader = _reader()
    for row in RECORDS["epochs"]:
        epoch = unhex(row)
        certificate = epoch_certificate(vault_id, epoch)
        assert certificate == epoch["certificate"]
        # Only a field-sealed collection's certificate has the "fields" key.
        assert ("fields" in strict_decode(certificate)) == epoch["seal_fields"]
        assert reader.epoch_secret(epoch["collection"], epoch["epoch"]) == epoch["secret_key"]
    assert any(row["seal_fields"] for row in RECORDS["epochs"])


@pytest.mark.parametrize("case", RECORDS["valid"], ids=lambda case: case["name"][:40])
def test_valid_record_vector_independently(case: dict[str, Any]) -> None:
    batch = unhex(case["batch"])
    records = [unhex(record) for record in case["records"]]
    results = _reader().read(batch, records)
    expected_batch = case["expected"]
    manifest = strict_decode(batch["manifest"])
    assert manifest["entries"] == [
        [e[0], e[1], e[2], bytes.fromhex(e[3])] for e in expected_batch["manifest"]["entries"]
    ]
    for record, result in zip(case["records"], results, strict=True):
        expected = record["expected"]
        assert result["result"] == expected["result"]
        assert result["binding"].hex() == expected["binding"]
        if "entry_hash" in expected:
            assert result["entry_hash"].hex() == expected["entry_hash"]
        if expected["result"] == "data":
            for name in ("reader_share", "host_share", "host_wrap_context"):
                assert result[name].hex() == expected_batch[name]
            if expected_batch["seal_fields"]:
                assert record["nonce"] == ""
                assert len(result["fields"]) == len(expected["fields"])
                for got, want in zip(result["fields"], expected["fields"], strict=True):
                    assert got["name"] == want["name"]
                    assert got["value"] == want["value"]
                    for name in (
                        "field_binding",
                        "field_host_share",
                        "field_key",
                        "nonce",
                        "ciphertext",
                        "plaintext",
                    ):
                        assert got[name].hex() == want[name], name
            else:
                for name in ("record_host_share", "record_key", "plaintext"):
                    assert result[name].hex() == expected[name]
            assert result["data"] == expected["data"]


def test_field_restricted_read_vector_independently() -> None:
    """A grantee holding the batch reader share and the released field host shares opens
    exactly the granted fields; the host released no share for any other field."""
    (case,) = [case for case in RECORDS["valid"] if case["expected"]["seal_fields"]]
    view = case["expected"]["field_restricted_read"]
    granted = set(view["fields"])
    reader_share = bytes.fromhex(case["expected"]["reader_share"])
    vault_id = RECORDS["vault"]["vault_id"]
    served = {item["record_id"]: item for item in view["records"]}
    assert set(served) == {record["record_id"] for record in case["records"]}
    for record in case["records"]:
        item = served[record["record_id"]]
        stored = unhex(record)
        names = [field["name"] for field in record["expected"]["fields"]]
        released = {name: bytes.fromhex(share) for name, share in item["field_shares"]}
        assert [name for name, _ in item["field_shares"]] == [n for n in names if n in granted]
        fields = open_fields(
            stored["ciphertext"], reader_share, None, binding(vault_id, stored), released
        )
        assert {field["name"]: field["value"] for field in fields} == item["data"]
        assert item["data"] == {
            name: value for name, value in record["expected"]["data"].items() if name in granted
        }


@pytest.mark.parametrize("case", RECORDS["invalid"], ids=lambda case: case["name"])
def test_invalid_record_vector_independently(case: dict[str, Any]) -> None:
    reader = _reader(case.get("epoch"))
    batch = unhex(case["batch"])
    records = [unhex(record) for record in case["records"]]
    with pytest.raises(Refused) as refused:
        reader.read(batch, records)
    assert refused.value.step == case["expect"], case["rule"]


def test_export_vector_independently() -> None:
    data = (VECTORS / "export" / EXPORT["file"]).read_bytes()
    assert len(data) == EXPORT["size"]
    assert hashlib.sha256(data).hexdigest() == EXPORT["sha256"]
    assert data.startswith(b"pds-export/v1\n")
    offset, documents, layout = 14, [], []
    while offset < len(data):
        (length,) = struct.unpack(">I", data[offset : offset + 4])
        document = strict_decode(data[offset + 4 : offset + 4 + length])
        layout.append({"offset": offset, "length": 4 + length, "t": document["t"]})
        documents.append((offset, document))
        offset += 4 + length
    assert offset == len(data)
    assert layout == EXPORT["frames"]
    kinds = [document["t"] for _, document in documents]
    assert kinds[0] == "vault" and kinds[-1] == "end"
    end_offset, end = documents[-1]
    plural = {
        "epoch": "epochs",
        "batch": "batches",
        "record": "records",
        "link": "links",
        "link_key": "link_keys",
        "revocation": "revocations",
        "log": "log",
        "checkpoint": "checkpoints",
    }
    counts = {name: kinds.count(kind) for kind, name in plural.items()}
    assert end["counts"] == counts == EXPORT["counts"]
    digest = hashlib.sha256(data[:end_offset]).digest()
    assert end["digest"] == digest
    header = documents[0][1]
    identity = header["identity"]
    statement = canonical({"vault": EXPORT["vault_id"], "digest": digest, "counts": counts})
    assert signature_ok(identity, b"pds/export/v1", statement, end["signature"])
    assert did_key(identity) == EXPORT["identity_did"]
    # The header is signed on its own: the frame without its signature.
    signed = canonical({name: value for name, value in header.items() if name != "signature"})
    assert signature_ok(identity, b"pds/export-header/v1", signed, header["signature"])
    # Every epoch frame's certificate (with "fields" for a field-sealed collection) verifies.
    epochs = [document for _, document in documents if document["t"] == "epoch"]
    for epoch in epochs:
        assert isinstance(epoch["seal_fields"], bool)
        certificate = epoch_certificate(EXPORT["vault_id"], epoch)
        assert signature_ok(identity, b"pds/epoch/v1", certificate, epoch["signature"])
    assert any(epoch["seal_fields"] for epoch in epochs)


# -- the same record vectors, read by pds -------------------------------------------------


def _vault_row() -> VaultRow:
    vault = RECORDS["vault"]
    return VaultRow(
        vault_id=vault["vault_id"],
        created_at=vault["created_at"],
        identity_public=bytes.fromhex(vault["identity_public"]),
        unlock=bytes.fromhex(vault["unlock"]),
        wrapped_master=bytes.fromhex(vault["wrapped_master"]),
        wrapped_identity=bytes.fromhex(vault["wrapped_identity"]),
    )


def _load_store(path: Path, cases: list[dict[str, Any]], epoch: dict[str, Any] | None) -> pds.Store:
    """A store holding the vector vault's rows, with ``cases``' batches and records."""
    host_key = pds.SymmetricKey(bytes.fromhex(RECORDS["keys"]["host_key"]))
    store = pds.open_store(path, host_key=host_key, synchronous="normal")
    vault_id = RECORDS["vault"]["vault_id"]
    backend = store.backend
    with backend.transaction():
        backend.insert_vault(_vault_row())
        epochs = {(e["collection"], e["epoch"]): unhex(e) for e in RECORDS["epochs"]}
        if epoch is not None:
            epochs[(epoch["collection"], epoch["epoch"])] = unhex(epoch)
        for row in epochs.values():
            fields = {k: row[k] for k in ("collection", "epoch", "public_key", "created_at")}
            backend.insert_epoch(
                EpochRow(
                    vault_id,
                    **fields,
                    signature=row["signature"],
                    sealed_owner=row["sealed_owner"],
                    seal_fields=row["seal_fields"],
                )
            )
        for case in cases:
            backend.insert_batch(BatchRow(vault_id, **unhex(case["batch"])))
            backend.insert_records([RecordRow(vault_id, **unhex(r)) for r in case["records"]])
    return store


def _owner_key_file(directory: Path) -> Path:
    path = directory / "owner.key"
    path.write_bytes(bytes.fromhex(RECORDS["keys"]["owner_key"]))
    path.chmod(0o600)  # pds refuses a key file other users may read
    return path


def test_valid_record_vectors_with_pds(tmp_path: Path) -> None:
    key_file = _owner_key_file(tmp_path)
    with _load_store(tmp_path / "valid.db", RECORDS["valid"], None) as store:
        vault = store.open_vault(RECORDS["vault"]["vault_id"])
        vault.unlock(key_file=key_file)
        for case in RECORDS["valid"]:
            for record in case["records"]:
                versions = {v.version: v for v in vault.history(record["record_id"])}
                opened = versions[record["version"]]
                expected = record["expected"]
                assert opened.deleted == (expected["result"] == "deleted")
                assert opened.erased == (expected["result"] == "erased")
                assert opened.data == expected.get("data")
                assert opened.writer == RECORDS["keys"]["identity_did"]


@pytest.mark.parametrize("case", RECORDS["invalid"], ids=lambda case: case["name"])
def test_invalid_record_vector_with_pds(tmp_path: Path, case: dict[str, Any]) -> None:
    key_file = _owner_key_file(tmp_path)
    with _load_store(tmp_path / "case.db", [case], case.get("epoch")) as store:
        vault = store.open_vault(RECORDS["vault"]["vault_id"])
        vault.unlock(key_file=key_file)
        with pytest.raises(errors.IntegrityError) as failure:
            for record in case["records"]:
                vault.history(record["record_id"])
        assert failure.value.reason == case["expect"], case["rule"]


# -- 3. encoding vectors against pds._codec -----------------------------------------------


def untag(value: Any) -> Any:
    if isinstance(value, dict):
        if set(value) == {"$bin"}:
            return bytes.fromhex(value["$bin"])
        if set(value) == {"$float"}:
            return float.fromhex(value["$float"])
        return {key: untag(item) for key, item in value.items()}
    if isinstance(value, list):
        return [untag(item) for item in value]
    return value


def _same_value(a: Any, b: Any) -> bool:
    """Equality that tells 0.0 from -0.0, 1 from 1.0 and True from 1."""
    if type(a) is not type(b):
        return False
    if isinstance(a, float):
        return bool(a.hex() == b.hex())
    if isinstance(a, dict):
        return list(a) == list(b) and all(_same_value(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(_same_value(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)


@pytest.mark.parametrize("vector", ENCODING["valid"], ids=lambda vector: vector["name"])
def test_valid_encoding(vector: dict[str, Any]) -> None:
    encoded = bytes.fromhex(vector["encoded"])
    value = untag(vector["value"])
    assert _codec.encode(value) == encoded
    decoded = _codec.decode(encoded)
    assert _same_value(decoded, _sorted_maps(value))
    assert _codec.encode(decoded) == encoded
    assert canonical(value) == encoded
    assert _same_value(strict_decode(encoded), decoded)


@pytest.mark.parametrize("vector", ENCODING["invalid"], ids=lambda vector: vector["name"])
def test_invalid_encoding(vector: dict[str, Any]) -> None:
    encoded = bytes.fromhex(vector["encoded"])
    with pytest.raises(errors.FormatError):
        _codec.decode(encoded)
    with pytest.raises(ValueError):
        strict_decode(encoded)


@pytest.mark.parametrize("vector", ENCODING["unencodable"], ids=lambda vector: vector["name"])
def test_unencodable_value(vector: dict[str, Any]) -> None:
    with pytest.raises(errors.FormatError):
        _codec.encode(untag(vector["value"]))


# -- 4. the export vector, imported by pds ------------------------------------------------


def _import(tmp_path: Path, data: bytes) -> tuple[pds.Store, str]:
    key_file = tmp_path / "owner.key"
    if not key_file.exists():
        key_file.write_bytes(bytes.fromhex(EXPORT["owner_key"]))
        key_file.chmod(0o600)
    store = pds.open_store(tmp_path / "imported.db", synchronous="normal")
    try:
        return store, store.import_vault(io.BytesIO(data), key_file=key_file)
    except BaseException:
        store.close()
        raise


def test_export_vector_imports_with_expected_plaintexts(tmp_path: Path) -> None:
    data = (VECTORS / "export" / EXPORT["file"]).read_bytes()
    store, vault_id = _import(tmp_path, data)
    with store:
        assert vault_id == EXPORT["vault_id"]
        vault = store.open_vault(vault_id)
        assert vault.did == EXPORT["identity_did"]
        vault.unlock(key_file=tmp_path / "owner.key")
        for history in EXPORT["histories"]:
            versions = vault.history(history["record_id"])
            assert len(versions) == len(history["versions"])
            for got, want in zip(versions, history["versions"], strict=True):
                assert got.version == want["version"]
                assert got.collection == want["collection"]
                assert got.epoch == want["epoch"]
                assert got.created_at == datetime.fromtimestamp(want["created_at"] / 1000, UTC)
                assert got.deleted == want["deleted"]
                assert got.erased == want["erased"]
                assert got.data == want["data"]
            latest = history["versions"][-1]
            if latest["deleted"]:
                with pytest.raises(errors.RecordDeleted):
                    vault.get(history["record_id"])
            else:
                assert vault.get(history["record_id"]).data == latest["data"]


def apply_edits(data: bytes, edits: list[dict[str, Any]]) -> bytes:
    out = bytearray(data)
    for edit in edits:
        if edit["op"] == "xor":
            out[edit["offset"]] ^= edit["mask"]
        elif edit["op"] == "truncate":
            del out[edit["length"] :]
        else:
            assert edit["op"] == "splice"
            offset = edit["offset"]
            out[offset : offset + edit["remove"]] = bytes.fromhex(edit["insert"])
    return bytes(out)


@pytest.mark.parametrize("variant", EXPORT["invalid"], ids=lambda variant: variant["name"])
def test_invalid_export_variant_is_refused(tmp_path: Path, variant: dict[str, Any]) -> None:
    data = apply_edits((VECTORS / "export" / EXPORT["file"]).read_bytes(), variant["edits"])
    expected = variant["expect"]
    with pytest.raises(errors.PDSError) as failure:
        store, _ = _import(tmp_path, data)
        store.close()
    assert type(failure.value).__name__ == expected["error"], variant["rule"]
    if "reason" in expected:
        assert isinstance(failure.value, errors.IntegrityError)
        assert failure.value.reason == expected["reason"], variant["rule"]
    with pds.open_store(tmp_path / "imported.db") as store:
        assert store.list_vaults() == []
