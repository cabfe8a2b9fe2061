"""Thin, typed wrappers over libsodium (through PyNaCl) and the standard library's hashes.

This is the only module that touches cryptographic bindings. Everything here composes
standard primitives; nothing is invented:

* AEAD: XChaCha20-Poly1305 (IETF), 24-byte random nonces.
* Signatures: Ed25519, always over ``label || 0x00 || message`` so that no signature made
  for one purpose verifies for another.
* Sealing to a public key: libsodium's sealed box construction (X25519 + XSalsa20-Poly1305),
  built from ``crypto_box`` with a caller-supplied ephemeral key so that test vectors are
  reproducible; the output opens with libsodium's ``crypto_box_seal_open``.
* Key derivation: keyed BLAKE2b-256 with a 16-byte personalisation label (as libsodium's
  ``crypto_kdf`` does).
* Password hashing: Argon2id (libsodium ``crypto_pwhash``).
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import NoReturn, SupportsIndex

import base58
import nacl.bindings as sodium
import nacl.exceptions
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESSIV
from nacl.pwhash import argon2id

from pds.errors import FormatError, KeyDerivationFailed

Rng = Callable[[int], bytes]
"""A source of random bytes; ``os.urandom`` unless a test injects a deterministic one."""

KEY_SIZE = 32
NONCE_SIZE = sodium.crypto_aead_xchacha20poly1305_ietf_NPUBBYTES  # 24
TAG_SIZE = sodium.crypto_aead_xchacha20poly1305_ietf_ABYTES  # 16
SIGNATURE_SIZE = 64
PUBLIC_KEY_SIZE = 32
SALT_SIZE = argon2id.SALTBYTES  # 16

_SEAL_NONCE_SIZE = sodium.crypto_box_NONCEBYTES


class AuthenticationFailed(Exception):
    """A MAC, tag or signature did not verify. Callers translate it into a pds error."""


def system_rng(size: int) -> bytes:
    return os.urandom(size)


def constant_time_equal(a: bytes, b: bytes) -> bool:
    return hmac.compare_digest(a, b)


def sha256(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def sha256_hasher() -> hashlib._Hash:
    return hashlib.sha256()


# -- key derivation -------------------------------------------------------------------


def derive(key: bytes, label: bytes, message: bytes = b"") -> bytes:
    """Derive 32 bytes from ``key`` for the purpose named by ``label`` (at most 16 bytes)."""
    return hashlib.blake2b(message, key=key, digest_size=32, person=label).digest()


# -- AEAD -----------------------------------------------------------------------------


def aead_encrypt(key: bytes, nonce: bytes, plaintext: bytes, associated_data: bytes) -> bytes:
    if len(key) != KEY_SIZE or len(nonce) != NONCE_SIZE:
        raise FormatError("XChaCha20-Poly1305 takes a 32-byte key and a 24-byte nonce")
    return sodium.crypto_aead_xchacha20poly1305_ietf_encrypt(plaintext, associated_data, nonce, key)


def aead_decrypt(key: bytes, nonce: bytes, ciphertext: bytes, associated_data: bytes) -> bytes:
    if len(nonce) != NONCE_SIZE or len(ciphertext) < TAG_SIZE:
        raise AuthenticationFailed()
    try:
        return sodium.crypto_aead_xchacha20poly1305_ietf_decrypt(
            ciphertext, associated_data, nonce, key
        )
    except nacl.exceptions.CryptoError:
        raise AuthenticationFailed() from None


def wrap(key: bytes, secret: bytes, context: bytes, rng: Rng) -> bytes:
    """Encrypt a small secret under ``key``: ``nonce || ciphertext``, bound to ``context``."""
    nonce = rng(NONCE_SIZE)
    return nonce + aead_encrypt(key, nonce, secret, context)


def unwrap(key: bytes, wrapped: bytes, context: bytes) -> bytes:
    """Reverse ``wrap``. Raises ``AuthenticationFailed`` on any change or wrong key."""
    return aead_decrypt(key, wrapped[:NONCE_SIZE], wrapped[NONCE_SIZE:], context)


# -- X25519 and sealing ---------------------------------------------------------------


def x25519_keypair(rng: Rng) -> tuple[bytes, bytes]:
    """Return ``(public, secret)``."""
    secret = rng(KEY_SIZE)
    return sodium.crypto_scalarmult_base(secret), secret


def x25519_public(secret: bytes) -> bytes:
    return sodium.crypto_scalarmult_base(secret)


def seal(message: bytes, recipient: bytes, rng: Rng) -> bytes:
    """libsodium sealed box to ``recipient`` (an X25519 public key)."""
    ephemeral_public, ephemeral_secret = x25519_keypair(rng)
    nonce = hashlib.blake2b(ephemeral_public + recipient, digest_size=_SEAL_NONCE_SIZE).digest()
    try:
        return ephemeral_public + sodium.crypto_box(message, nonce, recipient, ephemeral_secret)
    except nacl.exceptions.CryptoError:  # libsodium refuses a low-order key (shared secret 0)
        raise FormatError("the recipient is not a usable X25519 public key") from None


SEALED_OVERHEAD = sodium.crypto_box_SEALBYTES  # 48: an X25519 public key and a 16-byte MAC
"""A sealed box is the ephemeral public key and a box, 48 bytes longer than its message."""

# Any scalar serves: X25519 clamps it to a multiple of 8, so the product is the point at
# infinity (all-zero output, which libsodium refuses) exactly for a point of small order.
_SMALL_ORDER_PROBE = hashlib.sha256(b"pds/x25519-small-order-probe").digest()


def x25519_box_key(public: bytes, secret: bytes) -> bytes:
    """``crypto_box_beforenm(public, secret)``: the HSalsa20 key of the X25519 shared
    secret. Raises ``AuthenticationFailed`` for a public key libsodium refuses (not 32
    bytes, or of small order: the shared secret would be zero and the key public)."""
    if not _all_bytes(public, secret) or len(public) != PUBLIC_KEY_SIZE:
        raise AuthenticationFailed()
    try:
        return bytes(sodium.crypto_box_beforenm(public, secret))
    except (nacl.exceptions.CryptoError, ValueError, RuntimeError):
        raise AuthenticationFailed() from None


def x25519_small_order(public: bytes) -> bool:
    """Whether libsodium refuses ``public`` (32 bytes) in a key exchange whatever the
    secret: a point of small order, whose shared secret with any key is zero."""
    try:
        sodium.crypto_scalarmult(_SMALL_ORDER_PROBE, public)
    except (nacl.exceptions.CryptoError, ValueError, RuntimeError):
        return True
    return False


def unseal(sealed: bytes, secret: bytes) -> bytes:
    """Open a sealed box with the recipient's X25519 secret key."""
    try:
        return sodium.crypto_box_seal_open(sealed, x25519_public(secret), secret)
    except (nacl.exceptions.CryptoError, nacl.exceptions.TypeError, ValueError):
        raise AuthenticationFailed() from None


# -- Ed25519 --------------------------------------------------------------------------


def _signing_input(label: bytes, message: bytes) -> bytes:
    return label + b"\x00" + message


class NotPickled:
    """A base for objects that hold a secret: ``pickle`` and ``copy`` refuse them with
    ``TypeError`` (as they do a lock or a file), so a secret never leaves the process in a
    pickle written to a cache, a file or a ``multiprocessing`` queue."""

    __slots__ = ()

    def __reduce_ex__(self, protocol: SupportsIndex) -> NoReturn:
        raise TypeError(f"{type(self).__name__} holds a secret: it is not pickled or copied")


class DeterministicAead(NotPickled):
    """AES-SIV (RFC 5297; 512-bit key: AES-256 for both halves) through OpenSSL: the same
    plaintext and associated data give the same ciphertext, and any other ciphertext fails
    its tag. For values that must be opaque and unforgeable but need no nonce (a listing
    cursor: 16 bytes in, 32 out). Its repr never shows the key."""

    __slots__ = ("_siv",)

    KEY_SIZE = 64

    def __init__(self, key: bytes) -> None:
        if len(key) != self.KEY_SIZE:
            raise FormatError("an AES-SIV key is 64 bytes")
        self._siv = AESSIV(key)

    def encrypt(self, plaintext: bytes, associated: list[bytes]) -> bytes:
        return self._siv.encrypt(plaintext, associated)

    def decrypt(self, ciphertext: bytes, associated: list[bytes]) -> bytes:
        """Raises ``AuthenticationFailed`` if the tag does not verify."""
        try:
            return self._siv.decrypt(ciphertext, associated)
        except (InvalidTag, ValueError):
            raise AuthenticationFailed from None

    def __repr__(self) -> str:
        return "DeterministicAead(<secret>)"


@dataclass(frozen=True, slots=True, repr=False, eq=False)
class SigningKey(NotPickled):
    """An Ed25519 private key. Its repr never shows the secret.

    Built from the seed alone: the public key is always derived from it, never passed in
    (a signer that accepts a separate public key leaks the secret scalar when the same
    message is signed under two public keys)."""

    seed: bytes
    public: bytes = field(init=False)
    _expanded: bytes = field(init=False)

    def __post_init__(self) -> None:
        if type(self.seed) is not bytes or len(self.seed) != KEY_SIZE:
            raise FormatError("an Ed25519 seed is 32 bytes")
        public, expanded = sodium.crypto_sign_seed_keypair(self.seed)
        object.__setattr__(self, "public", public)
        object.__setattr__(self, "_expanded", expanded)

    @classmethod
    def from_seed(cls, seed: bytes) -> SigningKey:
        return cls(seed)

    @classmethod
    def generate(cls, rng: Rng) -> SigningKey:
        return cls.from_seed(rng(KEY_SIZE))

    def sign(self, label: bytes, message: bytes) -> bytes:
        """Sign ``message`` for the purpose ``label``; the public key is this key's own."""
        signed = sodium.crypto_sign(_signing_input(label, message), self._expanded)
        return signed[:SIGNATURE_SIZE]

    def sign_raw(self, message: bytes) -> bytes:
        """Sign ``message`` as is, with no label. Only for formats that carry their own
        domain separation: C2SP signed notes (tree-head checkpoints), whose verifiers in
        other transparency tools expect a plain Ed25519 signature over the note text."""
        return sodium.crypto_sign(message, self._expanded)[:SIGNATURE_SIZE]

    def x25519_secret(self) -> bytes:
        """The X25519 secret key converted from this key (for opening sealed boxes)."""
        return sodium.crypto_sign_ed25519_sk_to_curve25519(self._expanded)

    def __repr__(self) -> str:
        return f"SigningKey(public={self.public.hex()[:16]}…, secret=<redacted>)"


def verify(public: bytes, label: bytes, message: bytes, signature: bytes) -> None:
    """Verify an Ed25519 signature made by ``SigningKey.sign``. Raises on failure.

    Anything that is not bytes (a decoded document may hold an integer, text or nil where
    a signature belongs) fails verification like a wrong signature, rather than raising a
    ``TypeError`` from the concatenation below."""
    if not _all_bytes(public, label, message, signature):
        raise AuthenticationFailed()
    if len(signature) != SIGNATURE_SIZE or len(public) != PUBLIC_KEY_SIZE:
        raise AuthenticationFailed()
    try:
        sodium.crypto_sign_open(signature + _signing_input(label, message), public)
    except (nacl.exceptions.BadSignatureError, nacl.exceptions.CryptoError, ValueError):
        raise AuthenticationFailed() from None


def verify_raw(public: bytes, message: bytes, signature: bytes) -> None:
    """Verify a ``SigningKey.sign_raw`` signature. Raises ``AuthenticationFailed`` (for
    inputs that are not bytes too)."""
    if not _all_bytes(public, message, signature):
        raise AuthenticationFailed()
    if len(signature) != SIGNATURE_SIZE or len(public) != PUBLIC_KEY_SIZE:
        raise AuthenticationFailed()
    try:
        sodium.crypto_sign_open(signature + message, public)
    except (nacl.exceptions.BadSignatureError, nacl.exceptions.CryptoError, ValueError):
        raise AuthenticationFailed() from None


def _all_bytes(*values: object) -> bool:
    return all(isinstance(value, bytes) for value in values)


def check_ed25519_public(public: bytes) -> None:
    """Reject keys that are not 32 bytes or are not a valid point of prime order."""
    if len(public) != PUBLIC_KEY_SIZE or not _is_valid_point(bytes(public)):
        raise FormatError("not a valid Ed25519 public key")


@functools.lru_cache(maxsize=4096)
def _is_valid_point(public: bytes) -> bool:
    # The check multiplies by the group order (~30 us); the same principals' keys recur in
    # every token a host sees, and the answer for given bytes never changes.
    return bool(sodium.crypto_core_ed25519_is_valid_point(public))


@functools.lru_cache(maxsize=4096)
def _to_x25519(public: bytes) -> bytes:
    return bytes(sodium.crypto_sign_ed25519_pk_to_curve25519(public))


def ed25519_to_x25519(public: bytes) -> bytes:
    """Convert a (checked) Ed25519 public key to the X25519 key used to seal to it."""
    check_ed25519_public(public)
    try:
        return _to_x25519(bytes(public))
    except (nacl.exceptions.CryptoError, nacl.exceptions.RuntimeError, ValueError) as exc:
        raise FormatError("not a valid Ed25519 public key") from exc


# -- did:key --------------------------------------------------------------------------

_ED25519_MULTICODEC = b"\xed\x01"
_DID_KEY_PREFIX = "did:key:z"


@functools.lru_cache(maxsize=4096)
def did_key(public: bytes) -> str:
    """Render an Ed25519 public key as ``did:key:z6Mk…`` (multicodec ed25519-pub, base58btc)."""
    return _DID_KEY_PREFIX + base58.b58encode(_ED25519_MULTICODEC + public).decode("ascii")


def parse_did_key(did: str) -> bytes:
    """Return the Ed25519 public key named by a ``did:key``. Raises ``FormatError``."""
    if not isinstance(did, str) or not did.startswith(_DID_KEY_PREFIX) or len(did) > 128:
        raise FormatError("not an Ed25519 did:key")
    try:
        raw = base58.b58decode(did[len(_DID_KEY_PREFIX) :])
    except ValueError as exc:
        raise FormatError("not an Ed25519 did:key") from exc
    if not raw.startswith(_ED25519_MULTICODEC) or len(raw) != 2 + PUBLIC_KEY_SIZE:
        raise FormatError("not an Ed25519 did:key")
    public = raw[2:]
    if did_key(public) != did:
        raise FormatError("not a canonical did:key")
    check_ed25519_public(public)
    return public


# -- Argon2id -------------------------------------------------------------------------


def argon2id_key(passphrase: bytes, salt: bytes, opslimit: int, memlimit: int) -> bytes:
    """The 32-byte Argon2id13 key. Raises ``KeyDerivationFailed`` if libsodium fails (most
    often it cannot allocate ``memlimit`` bytes); its message names only the failure."""
    failed: str | None = None
    try:
        return argon2id.kdf(KEY_SIZE, passphrase, salt, opslimit=opslimit, memlimit=memlimit)
    except (nacl.exceptions.CryptoError, MemoryError) as exc:
        failed = type(exc).__name__
    # Raised outside the handler, so the binding's exception is not kept as its context.
    raise KeyDerivationFailed(
        f"Argon2id key derivation failed ({failed}): not enough memory for its parameters?"
    )


ARGON2ID_MODERATE = (argon2id.OPSLIMIT_MODERATE, argon2id.MEMLIMIT_MODERATE)
ARGON2ID_INTERACTIVE = (argon2id.OPSLIMIT_INTERACTIVE, argon2id.MEMLIMIT_INTERACTIVE)
ARGON2ID_SENSITIVE = (argon2id.OPSLIMIT_SENSITIVE, argon2id.MEMLIMIT_SENSITIVE)
