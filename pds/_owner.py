"""How the owner's secret (passphrase, key file or key provider) unlocks a vault.

The owner's secret never encrypts data directly. It yields a key-encryption key (KEK) that
wraps the vault master key; changing the passphrase (a rekey) draws a new master key and
re-wraps the identity key under it.
"""

from __future__ import annotations

import os
import unicodedata
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

from pds import _codec, _crypto
from pds._context import call_provider
from pds._store.base import VaultRow
from pds.errors import FormatError, IntegrityError, WrongKey, WrongPassphrase
from pds.keys import KdfParams, KeyProvider, SymmetricKey

Passphrase = str | bytes
KeyFile = str | os.PathLike[str]

_MASTER_CONTEXT = b"pds/master/v1\x00"
_IDENTITY_WRAP_KDF = b"pds-identity-wr1"
_IDENTITY_CONTEXT = b"pds/identity/v1\x00"
CACHE_SIZE = 4096


@dataclass(frozen=True, slots=True)
class OwnerSecret(_crypto.NotPickled):
    """Exactly one of the three ways to supply the owner's authority."""

    passphrase: Passphrase | None = None
    key_file: KeyFile | None = None
    key_provider: KeyProvider | None = None

    def __post_init__(self) -> None:
        given = [x for x in (self.passphrase, self.key_file, self.key_provider) if x is not None]
        if len(given) != 1:
            raise FormatError("give exactly one of passphrase, key_file or key_provider")
        if self.passphrase is not None and not isinstance(self.passphrase, str | bytes):
            raise FormatError("a passphrase is text or bytes")
        if self.key_file is not None and not isinstance(self.key_file, str | os.PathLike):
            raise FormatError("a key file is a path (text or os.PathLike)")

    def __repr__(self) -> str:
        return f"OwnerSecret(method={self.method!r})"

    @property
    def method(self) -> str:
        return "passphrase" if self.passphrase is not None else "key"


def _passphrase_bytes(passphrase: Passphrase) -> bytes:
    if isinstance(passphrase, str):
        # NFC so that the same passphrase typed on different systems derives the same key.
        try:
            data = unicodedata.normalize("NFC", passphrase).encode("utf-8")
        except UnicodeEncodeError:  # a lone surrogate: bytes that were not UTF-8
            raise FormatError("the passphrase is not valid Unicode text") from None
    elif isinstance(passphrase, bytes):
        data = passphrase
    else:
        raise FormatError("a passphrase is text or bytes")
    if not data:
        raise FormatError("the passphrase is empty")
    return data


def master_context(vault_id: str) -> bytes:
    return _MASTER_CONTEXT + vault_id.encode("utf-8")


def new_unlock(
    secret: OwnerSecret, kdf: KdfParams | None, rng: _crypto.Rng
) -> tuple[bytes, KeyProvider]:
    """Choose the unlock parameters for a new secret: ``(unlock document, KEK provider)``."""
    if kdf is not None and not isinstance(kdf, KdfParams):
        raise FormatError("kdf must be a pds.KdfParams")
    if secret.passphrase is not None:
        params = kdf or KdfParams.moderate()
        params.check_floor()
        salt = rng(_crypto.SALT_SIZE)
        document: dict[str, Any] = {
            "method": "passphrase",
            "kdf": "argon2id13",
            "opslimit": params.opslimit,
            "memlimit": params.memlimit,
            "salt": salt,
        }
        kek = _crypto.argon2id_key(_passphrase_bytes(secret.passphrase), salt, *_ops_mem(params))
        return _codec.encode(document), SymmetricKey(kek, rng=rng)
    # No key id is stored: it would let the host link vaults that share a key file.
    return _codec.encode({"method": "key"}), _key_provider(secret, rng)


def _ops_mem(params: KdfParams) -> tuple[int, int]:
    return params.opslimit, params.memlimit


def _key_provider(secret: OwnerSecret, rng: _crypto.Rng = _crypto.system_rng) -> KeyProvider:
    if secret.key_file is not None:
        return SymmetricKey.from_file(secret.key_file, rng=rng)
    assert secret.key_provider is not None
    return secret.key_provider


def unwrap_master(
    unlock: bytes, wrapped_master: bytes, secret: OwnerSecret, vault_id: str
) -> bytes:
    """Recover the vault master key. Raises ``WrongPassphrase`` or ``WrongKey``."""
    try:
        document = _codec.decode(unlock)
        method = document["method"]
    except (FormatError, KeyError, TypeError):
        raise FormatError("the vault's unlock parameters are malformed") from None
    context = master_context(vault_id)
    if method == "passphrase":
        if secret.passphrase is None:
            raise WrongKey("this vault is unlocked with a passphrase, not a key")
        try:
            if document["kdf"] != "argon2id13":
                raise FormatError("unknown KDF")
            params = KdfParams(document["opslimit"], document["memlimit"])
            salt = document["salt"]
            if not isinstance(salt, bytes) or len(salt) != _crypto.SALT_SIZE:
                raise FormatError("bad salt")
        except (KeyError, TypeError, ValueError):  # FormatError is a ValueError
            raise FormatError("the vault's unlock parameters are malformed") from None
        params.check_floor()
        kek = _crypto.argon2id_key(_passphrase_bytes(secret.passphrase), salt, *_ops_mem(params))
        try:
            master = SymmetricKey(kek).unwrap(wrapped_master, context=context)
        except WrongKey:
            raise WrongPassphrase("wrong passphrase for this vault") from None
    elif method == "key":
        if secret.passphrase is not None:
            raise WrongPassphrase("this vault is unlocked with a key, not a passphrase")
        provider = _key_provider(secret)
        master = call_provider(lambda: provider.unwrap(wrapped_master, context=context))
    else:
        raise FormatError("the vault's unlock method is unknown")
    if len(master) != _crypto.KEY_SIZE:
        raise WrongKey("the key provider returned a key of the wrong size")
    return master


class LRU(OrderedDict[Any, Any]):
    """A small bounded cache of unwrapped shares and verified manifests."""

    def __init__(self, maxsize: int = CACHE_SIZE) -> None:
        super().__init__()
        self.maxsize = maxsize

    def remember(self, key: Any, value: Any) -> None:
        self[key] = value
        self.move_to_end(key)
        while len(self) > self.maxsize:
            self.popitem(last=False)


@dataclass(slots=True, repr=False)
class OwnerKeys(_crypto.NotPickled):
    """The owner's unlocked secrets; held only while the vault is unlocked."""

    master: bytes
    identity: _crypto.SigningKey
    x25519_secret: bytes
    # ``(collection, epoch, epoch public key) -> secret``: keyed by the public key too, so a
    # secret cached for an epoch row that was rolled back (a write that failed after making
    # the collection's first epoch) is never taken for the row another writer made since.
    epoch_secrets: dict[tuple[str, int, bytes], bytes] = field(default_factory=dict)
    reader_shares: LRU = field(default_factory=LRU)
    # The reader share this writer seals into its batches, per collection epoch:
    # ``(collection, epoch, epoch public key) -> (R, sealed R)`` (see ``Vault._write_batch``).
    writer_shares: dict[tuple[str, int, bytes], tuple[bytes, bytes]] = field(default_factory=dict)


def _identity_context(vault_id: str) -> bytes:
    return _IDENTITY_CONTEXT + vault_id.encode("utf-8")


def wrap_identity(master: bytes, seed: bytes, vault_id: str, rng: _crypto.Rng) -> bytes:
    """Wrap the vault identity seed under a key derived from the vault master key."""
    return _crypto.wrap(
        _crypto.derive(master, _IDENTITY_WRAP_KDF), seed, _identity_context(vault_id), rng
    )


def open_owner_keys(master: bytes, row: VaultRow) -> OwnerKeys:
    """Unwrap the identity key with the master key and check it against the stored public key."""
    if row.wrapped_identity is None:
        raise IntegrityError("identity", "the vault identity key is missing")
    wrap_key = _crypto.derive(master, _IDENTITY_WRAP_KDF)
    try:
        seed = _crypto.unwrap(wrap_key, row.wrapped_identity, _identity_context(row.vault_id))
    except _crypto.AuthenticationFailed:
        raise IntegrityError("identity", "the vault identity key failed authentication") from None
    identity = _crypto.SigningKey.from_seed(seed)
    if not _crypto.constant_time_equal(identity.public, row.identity_public):
        raise IntegrityError("identity", "the stored identity public key was replaced")
    return OwnerKeys(master, identity, identity.x25519_secret())
