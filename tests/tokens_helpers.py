"""Helpers shared by the capability-token suites (test_capability, test_serve,
test_revocation, test_token_fuzz, test_token_stateful).

Nothing here mocks the store: a ``World`` is a real SQLite store in a temporary directory,
opened with a clock the test advances explicitly. The "thief" helpers reconstruct, with
raw ``sqlite3``, ``hashlib`` and PyNaCl only, what someone holding a copy of the database
(and some keys) could compute; each test that uses them also runs them once with the real
key material as a positive control, so a failure to decrypt means missing keys, not a
wrong reconstruction.

Test modules import this file as ``tokens_helpers`` (pytest puts ``tests/`` on
``sys.path``); mypy sees it as ``tests.tokens_helpers``.
"""

from __future__ import annotations

import hashlib
import math
import os
import sqlite3
import subprocess
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import msgpack
import nacl.bindings as sodium
import nacl.exceptions

import pds
from pds import _codec, _crypto, capability
from pds import invocation as invocation_mod
from pds.keys import SymmetricKey

T0_MS = 1_750_000_000_000
"""A fixed wall-clock start (June 2025) for every suite that injects time."""

HOUR_MS = 3600 * 1000
DAY_MS = 24 * HOUR_MS


class ManualClock:
    """A clock that moves only when told to. ``int(clock() * 1000)`` is exactly ``ms``,
    which is how pds turns a clock reading into milliseconds."""

    def __init__(self, ms: int = T0_MS) -> None:
        self.ms = 0
        self._value = 0.0
        self.set(ms)

    def set(self, ms: int) -> None:
        value = ms / 1000
        while int(value * 1000) < ms:
            value = math.nextafter(value, math.inf)
        while int(value * 1000) > ms:
            value = math.nextafter(value, -math.inf)
        assert int(value * 1000) == ms
        self.ms = ms
        self._value = value

    def advance(self, ms: int) -> None:
        self.set(self.ms + ms)

    def __call__(self) -> float:
        return self._value


@dataclass
class World:
    """A real store file, its owner key file, a vault unlocked in it, and a manual clock."""

    directory: Path
    clock: ManualClock
    key_file: Path
    synchronous: Literal["full", "normal"]
    store: pds.Store
    vault: pds.Vault
    others: list[pds.Store] = field(default_factory=list)

    @property
    def db(self) -> Path:
        return self.directory / "store.db"

    def open_store(self) -> pds.Store:
        """Another ``Store`` object on the same file (closed by ``close``)."""
        opened = pds.open_store(self.db, clock=self.clock, synchronous=self.synchronous)
        self.others.append(opened)
        return opened

    def open_vault(self, store: pds.Store, vault_id: str | None = None) -> pds.Vault:
        vault = store.open_vault(vault_id or self.vault.vault_id)
        vault.unlock(key_file=self.key_file)
        return vault

    def reopen(self) -> None:
        """Close the main store and open it again: every in-memory cache is gone."""
        self.store.close()
        self.store = pds.open_store(self.db, clock=self.clock, synchronous=self.synchronous)
        self.vault = self.open_vault(self.store)

    def grantee(self, key: pds.PrincipalKey) -> pds.Grantee:
        return pds.Grantee(key, clock=self.clock)

    def close(self) -> None:
        self.store.close()
        for other in self.others:
            other.close()


def make_world(
    directory: Path,
    *,
    synchronous: Literal["full", "normal"] = "full",
    start_ms: int = T0_MS,
) -> World:
    directory.mkdir(parents=True, exist_ok=True)
    key_file = directory / "owner.key"
    SymmetricKey.create_file(key_file)
    clock = ManualClock(start_ms)
    store = pds.open_store(directory / "store.db", clock=clock, synchronous=synchronous)
    vault = store.open_vault(store.create_vault(key_file=key_file))
    vault.unlock(key_file=key_file)
    return World(directory, clock, key_file, synchronous, store, vault)


# -- invocations built by hand ---------------------------------------------------------


def signing_key(key: pds.PrincipalKey | _crypto.SigningKey) -> _crypto.SigningKey:
    return key._key if isinstance(key, pds.PrincipalKey) else key


def forge_invocation(
    token: pds.Token,
    signer: pds.PrincipalKey | _crypto.SigningKey,
    *,
    time_ms: int,
    vault_id: str | None = None,
    action: str = "read",
    purpose: str | None = None,
    nonce: bytes | None = None,
    collection: str | None = None,
    records: list[str] | None = None,
    since: int | None = None,
    until: int | None = None,
    limit: int = 100,
    cursor: str | None = None,
    defer: tuple[int, str] | None = None,
) -> bytes:
    """An invocation signed by ``signer``, whoever that is: unlike ``Grantee.invoke`` it
    does not refuse a key that is not the token's holder, nor any argument value."""
    if purpose is None:
        purpose = sorted(token.leaf.caveats.purposes)[0]
    body = invocation_mod.build_body(
        vault_id=token.vault_id if vault_id is None else vault_id,
        token=token,
        action=action,
        purpose=purpose,
        time=time_ms,
        nonce=os.urandom(16) if nonce is None else nonce,
        collection=collection,
        records=records,
        since=since,
        until=until,
        limit=limit,
        cursor=cursor,
        defer=defer,
    )
    signature = signing_key(signer).sign(invocation_mod.INVOCATION_SIGNATURE_LABEL, body)
    return invocation_mod.wire(body, signature)


# -- another process ------------------------------------------------------------------

_SERVE_SCRIPT = """
import math, sys
from pathlib import Path
import pds

db, request, ms = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3])
value = ms / 1000
while int(value * 1000) < ms:
    value = math.nextafter(value, math.inf)
with pds.open_store(db, clock=lambda: value) as store:
    try:
        response = store.serve(request.read_bytes())
    except pds.errors.PDSError as exc:
        print(type(exc).__name__, getattr(exc, "reason", ""))
    else:
        print("served", len(response.records))
"""


def serve_in_another_process(db: Path, data: bytes, now_ms: int) -> str:
    """Serve ``data`` from a new Python process on the same store file; return what it
    printed: ``served <n records>`` or ``<error class> <reason>``."""
    request = db.with_name(f"request-{os.urandom(4).hex()}.bin")
    request.write_bytes(data)
    done = subprocess.run(
        [sys.executable, "-c", _SERVE_SCRIPT, str(db), str(request), str(now_ms)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


# -- raw database access ---------------------------------------------------------------


@contextmanager
def raw(db: Path) -> Iterator[sqlite3.Connection]:
    """A plain sqlite3 connection in one immediate transaction, committed on exit."""
    con = sqlite3.connect(db, isolation_level=None)
    try:
        con.execute("BEGIN IMMEDIATE")
        yield con
        con.execute("COMMIT")
    finally:
        con.close()


def copy_database(source: Path, target: Path) -> None:
    """What a thief copying the database gets: every committed page (WAL included)."""
    with sqlite3.connect(source) as src, sqlite3.connect(target) as dst:
        src.backup(dst)
    src.close()
    dst.close()


@dataclass(frozen=True)
class StoredRecord:
    vault_id: str
    record_id: str
    version: int
    collection: str
    epoch: int
    batch_id: bytes
    nonce: bytes
    ciphertext: bytes


@dataclass(frozen=True)
class StoredBatch:
    batch_id: bytes
    collection: str
    epoch: int
    sealed_reader: bytes
    wrapped_host: bytes


def stored_record(db: Path, record_id: str) -> StoredRecord:
    con = sqlite3.connect(db)
    try:
        row = con.execute(
            "SELECT vault_id, record_id, version, collection, epoch, batch_id, nonce, ciphertext "
            "FROM records WHERE record_id = ? ORDER BY version DESC LIMIT 1",
            (record_id,),
        ).fetchone()
    finally:
        con.close()
    assert row is not None, record_id
    return StoredRecord(*row)


def stored_batches(db: Path, collection: str | None = None) -> list[StoredBatch]:
    con = sqlite3.connect(db)
    try:
        rows = con.execute(
            "SELECT batch_id, collection, epoch, sealed_reader, wrapped_host FROM batches "
            "WHERE ? IS NULL OR collection = ? ORDER BY bseq",
            (collection, collection),
        ).fetchall()
    finally:
        con.close()
    return [StoredBatch(*row) for row in rows]


def stored_batch(db: Path, batch_id: bytes) -> StoredBatch:
    (batch,) = [b for b in stored_batches(db) if b.batch_id == batch_id]
    return batch


# -- a thief's decryption, with PyNaCl and hashlib only ---------------------------------


def thief_unseal(sealed: bytes, x25519_secret: bytes) -> bytes | None:
    """libsodium ``crypto_box_seal_open``; ``None`` if it does not open."""
    try:
        public = sodium.crypto_scalarmult_base(x25519_secret)
        opened: bytes = sodium.crypto_box_seal_open(sealed, public, x25519_secret)
    except (nacl.exceptions.CryptoError, nacl.exceptions.TypeError, ValueError):
        return None
    return opened


def thief_binding(record: StoredRecord) -> bytes:
    packed: bytes = msgpack.packb(
        [
            "pds/record/v1",
            record.vault_id,
            record.collection,
            record.record_id,
            record.version,
            record.epoch,
            record.batch_id,
            False,
        ],
        use_bin_type=True,
    )
    return packed


def _kdf(key: bytes, label: bytes, message: bytes) -> bytes:
    return hashlib.blake2b(message, key=key, digest_size=32, person=label).digest()


def thief_record_host_share(batch_host_share: bytes, record: StoredRecord) -> bytes:
    return _kdf(batch_host_share, b"pds-host-share1", thief_binding(record))


def thief_decrypt_field(
    record: StoredRecord, name: str, reader_share: bytes, host_share: bytes
) -> bytes | None:
    """Try to open one field of a field-sealed record; ``None`` if AEAD fails."""
    bound = thief_binding(record) + msgpack.packb(name, use_bin_type=True)
    key = _kdf(reader_share, b"pds-field-key1", host_share + bound)
    for item_name, nonce, sealed in msgpack.unpackb(record.ciphertext, raw=False):
        if item_name != name:
            continue
        try:
            plaintext: bytes = sodium.crypto_aead_xchacha20poly1305_ietf_decrypt(
                sealed, bound, nonce, key
            )
        except nacl.exceptions.CryptoError:
            return None
        return plaintext
    raise KeyError(name)


def thief_decrypt(record: StoredRecord, reader_share: bytes, host_share: bytes) -> bytes | None:
    """Try to open a record's ciphertext; ``None`` if AEAD authentication fails."""
    binding = thief_binding(record)
    key = _kdf(reader_share, b"pds-record-key1", host_share + binding)
    try:
        plaintext: bytes = sodium.crypto_aead_xchacha20poly1305_ietf_decrypt(
            record.ciphertext, binding, record.nonce, key
        )
    except nacl.exceptions.CryptoError:
        return None
    return plaintext


def host_key(world_db: Path) -> SymmetricKey:
    """The real host key (only the positive controls use it: a thief does not have it)."""
    return SymmetricKey.from_file(world_db.with_name(world_db.name + ".hostkey"))


def real_batch_host_share(db: Path, vault_id: str, batch: StoredBatch) -> bytes:
    context = b"pds/host-share/v1\x00" + vault_id.encode() + b"\x00" + batch.batch_id
    return host_key(db).unwrap(batch.wrapped_host, context=context)


# -- what a grantee accumulates ---------------------------------------------------------


@dataclass
class Hoard:
    """Everything a principal ever received: its key, tokens and every response."""

    key: pds.PrincipalKey
    tokens: list[pds.Token] = field(default_factory=list)
    responses: list[pds.Response] = field(default_factory=list)

    def epoch_secrets(self) -> set[bytes]:
        grantee = pds.Grantee(self.key)
        secrets: set[bytes] = set()
        for token in self.tokens:
            secrets |= set(grantee.epoch_secrets(token).values())
            for response in self.responses:
                for entry in response.keys:
                    opened = thief_unseal(bytes(entry[2]), grantee._x25519)
                    if opened is not None:
                        secrets.add(opened)
        return secrets

    def host_shares(self) -> set[bytes]:
        shares = {
            bytes(item["host_share"])
            for response in self.responses
            for item in response.records
            if "host_share" in item
        }
        shares |= {
            bytes(share)
            for response in self.responses
            for item in response.records
            for _, share in item.get("field_shares", [])
        }
        return shares

    def sealed_readers(self) -> set[bytes]:
        return {
            bytes(batch["sealed_reader"])
            for response in self.responses
            for batch in response.batches
        }

    def reader_shares(self) -> set[bytes]:
        """Every batch reader share any of its epoch secrets opens."""
        shares = set()
        for sealed in self.sealed_readers():
            for secret in self.epoch_secrets():
                opened = thief_unseal(sealed, secret)
                if opened is not None:
                    shares.add(opened)
        return shares

    def all_key_material(self) -> list[bytes]:
        """Every 32-byte secret it holds, for brute-force combination."""
        material = {signing_key(self.key).seed, pds.Grantee(self.key)._x25519}
        material |= self.epoch_secrets() | self.host_shares() | self.reader_shares()
        return sorted(material)


# -- links built by hand ---------------------------------------------------------------


def link_document(
    *,
    issuer: bytes,
    audience: bytes,
    vault_id: str,
    parent: bytes | None,
    caveats: capability.Caveats,
    keys: Sequence[capability.SealedKey] = (),
    salt: bytes = b"\x00" * 16,
) -> dict[str, Any]:
    """The payload map ``make_link`` would sign, for tests that then bend it."""
    return {
        "v": 1,
        "vault": vault_id,
        "iss": issuer,
        "aud": audience,
        "parent": parent,
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
        "keys": [[k.collection, k.epoch, k.sealed] for k in keys],
        "salt": salt,
    }


def sign_payload(signer: _crypto.SigningKey, payload: bytes) -> bytes:
    return signer.sign(capability.LINK_SIGNATURE_LABEL, payload)


def token_bytes(pairs: Sequence[tuple[bytes, bytes]]) -> bytes:
    """Token bytes from ``(payload, signature)`` pairs, with no check at all."""
    return _codec.encode({"v": 1, "links": [[payload, signature] for payload, signature in pairs]})


def token_pairs(token: pds.Token) -> list[tuple[bytes, bytes]]:
    return [(link.payload, link.signature) for link in token.links]


def covers(pattern: str, name: str) -> bool:
    """Whether a collection pattern covers ``name``: an independent reading of the rules
    (exact name, ``prefix/*`` for anything strictly below ``prefix``, ``*``), by segments."""
    if pattern == "*":
        return True
    if pattern.endswith("/*"):
        prefix = pattern[:-2].split("/")
        segments = name.split("/")
        return len(segments) > len(prefix) and segments[: len(prefix)] == prefix
    return pattern == name


def refusals(vault: pds.Vault) -> list[str | None]:
    """Reasons of the refused entries of the vault's access log, oldest first."""
    return [entry.reason for entry in vault.access_log() if entry.result == "refused"]


def log_entry(vault: pds.Vault, access: int) -> pds.AccessEntry:
    """The access-log entry a response names (``Response.access``)."""
    (entry,) = [entry for entry in vault.access_log() if entry.index == access]
    return entry
