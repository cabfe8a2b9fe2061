"""Keys that live outside the vault: owner secrets, the host key, principal key pairs.

* ``KeyProvider`` is the protocol a KMS or HSM implements to wrap the vault master key (as
  the owner's key-encryption key) or the host shares (as the host key).
* ``SymmetricKey`` is the built-in provider: a 32-byte key, typically from a key file.
* ``KdfParams`` are Argon2id parameters for passphrase-unlocked vaults.
* ``PrincipalKey`` is an Ed25519 key pair for a grantee, depositor or proxy; its public
  identity is a ``did:key``.

Key files are created with mode 0600 and never overwritten. No repr shows key bytes.
"""

from __future__ import annotations

import base64
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Protocol, runtime_checkable

from pds import _crypto
from pds.errors import FormatError, KeyProviderError, WeakKdfParameters, WrongKey

__all__ = ["KdfParams", "KeyProvider", "PrincipalKey", "SymmetricKey", "public_key_from_did"]


def public_key_from_did(did: str) -> bytes:
    """The Ed25519 public key a ``did:key`` names. Raises ``FormatError`` for anything that
    is not a canonical Ed25519 did:key of a valid, prime-order point."""
    return _crypto.parse_did_key(did)


@runtime_checkable
class KeyProvider(Protocol):
    """Wraps and unwraps small secrets under a key it keeps to itself (a KMS, an HSM, a file).

    ``wrap`` must authenticate ``context`` (an AEAD's associated data, say): pds passes the
    vault id and the purpose, so a wrapped key cannot be moved to another vault unnoticed.
    ``unwrap`` raises ``pds.errors.WrongKey`` when the wrapped bytes were not made by this
    provider's key for this context. Any other exception is reported as
    ``KeyProviderError``. ``key_id`` is a stable, non-secret name for the key.
    """

    @property
    def key_id(self) -> str: ...

    def wrap(self, secret: bytes, *, context: bytes) -> bytes: ...

    def unwrap(self, wrapped: bytes, *, context: bytes) -> bytes: ...


class SymmetricKey(_crypto.NotPickled):
    """A 32-byte key held in memory, wrapping with XChaCha20-Poly1305.

    Security: whoever reads the key file can unwrap everything wrapped under it; keep it
    0600 and off the database's disk where the threat model asks for that.
    """

    __slots__ = ("_key", "_key_id", "_rng")

    def __init__(self, key: bytes, *, rng: _crypto.Rng = _crypto.system_rng) -> None:
        if not isinstance(key, bytes) or len(key) != _crypto.KEY_SIZE:
            raise FormatError("a key is exactly 32 bytes")
        self._key = key
        self._rng = rng
        self._key_id = "k1:" + _crypto.derive(key, b"pds-key-id").hex()[:24]

    @classmethod
    def generate(cls, *, rng: _crypto.Rng = _crypto.system_rng) -> SymmetricKey:
        return cls(rng(_crypto.KEY_SIZE), rng=rng)

    @classmethod
    def from_file(
        cls, path: str | os.PathLike[str], *, rng: _crypto.Rng = _crypto.system_rng
    ) -> SymmetricKey:
        """Load a key file: exactly 32 raw bytes. Raises ``FormatError`` otherwise."""
        return cls(_read_key_file(_key_path(path)), rng=rng)

    @classmethod
    def create_file(
        cls, path: str | os.PathLike[str], *, rng: _crypto.Rng = _crypto.system_rng
    ) -> SymmetricKey:
        """Create a new key file (mode 0600; fails if the file exists) and return its key."""
        key = rng(_crypto.KEY_SIZE)
        write_secret_file(_key_path(path), key)
        return cls(key, rng=rng)

    @property
    def key_id(self) -> str:
        return self._key_id

    def wrap(self, secret: bytes, *, context: bytes) -> bytes:
        _check_bytes(secret=secret, context=context)
        return _crypto.wrap(self._key, secret, context, self._rng)

    def unwrap(self, wrapped: bytes, *, context: bytes) -> bytes:
        _check_bytes(wrapped=wrapped, context=context)
        try:
            return _crypto.unwrap(self._key, wrapped, context)
        except _crypto.AuthenticationFailed:
            raise WrongKey("the key does not unwrap this secret") from None

    def __repr__(self) -> str:
        return f"SymmetricKey(key_id={self._key_id!r})"


def _check_bytes(**values: Any) -> None:
    for name, value in values.items():
        if not isinstance(value, bytes):
            raise FormatError(f"{name} must be bytes")


def _key_path(path: Any) -> Path:
    """A key file's path: text or ``os.PathLike``, without a NUL (``FormatError``)."""
    if not isinstance(path, str | os.PathLike) or "\0" in str(path):
        raise FormatError("a key file is a path (text or os.PathLike) without NUL characters")
    return Path(path)


def write_secret_file(path: Path, content: bytes) -> None:
    """Create ``path`` with mode 0600 and write ``content``; never overwrite."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise FormatError(f"refusing to overwrite existing file {path}") from None
    except OSError as exc:
        raise KeyProviderError(f"cannot create key file {path}: {exc.strerror}") from None
    try:
        os.fchmod(fd, 0o600)
        view = memoryview(content)
        while view:
            written = os.write(fd, view)
            view = view[written:]
        os.fsync(fd)
    finally:
        os.close(fd)


# A principal key file is one short line (prefix, base64url seed, newline); anything
# longer is not one, and is not read further.
_MAX_PRINCIPAL_FILE = 4096


def _read_start(path: Path, size: int) -> bytes:
    """At most ``size`` bytes from the start of the file ``path``: a key file that is far
    too long (``/dev/zero``) is refused by its length without being read whole. A regular
    file that other users may access is refused unread (``FormatError``), as OpenSSH
    refuses such a private key: its key is no longer the owner's alone."""
    chunks: list[bytes] = []
    with path.open("rb") as stream:
        _check_private(path, stream)
        while size > 0:
            chunk = stream.read(size)
            if not chunk:
                break
            chunks.append(chunk)
            size -= len(chunk)
    return b"".join(chunks)


def _check_private(path: Path, stream: IO[bytes]) -> None:
    """Refuse a key file that grants its group or other users any access (POSIX only; a
    pipe or device, e.g. ``--key-file <(...)``, is not a stored copy and is let through)."""
    try:
        status = os.fstat(stream.fileno())
    except OSError:  # no file descriptor (io.UnsupportedOperation): not a stored file
        return
    mode = stat.S_IMODE(status.st_mode)
    if os.name == "posix" and stat.S_ISREG(status.st_mode) and mode & 0o077:
        raise FormatError(
            f"key file {path} is accessible by other users (mode {mode:04o}): "
            f"make it private (chmod 600) and consider the key exposed"
        )


def _read_key_file(path: Path) -> bytes:
    try:
        data = _read_start(path, _crypto.KEY_SIZE + 1)
    except FileNotFoundError:
        raise FormatError(f"key file {path} does not exist") from None
    except OSError as exc:
        raise FormatError(f"cannot read key file {path}: {exc.strerror}") from None
    if len(data) != _crypto.KEY_SIZE:
        raise FormatError(f"key file {path} is not a 32-byte key")
    return data


# The Argon2id ceiling. Stored parameters come from the host (the vault row) or from an
# export file's self-signed header, and are read before any secret is checked: without a
# ceiling, one crafted row makes every unlock or import take minutes and allocate as much
# as libsodium allows. Four times libsodium's SENSITIVE preset (4 passes, 1 GiB) in each
# dimension leaves room for stronger-than-SENSITIVE choices while bounding one unlock to
# 4 GiB and about 85 times MODERATE's work (16 passes over 4 GiB, against 3 over 256 MiB):
# tens of seconds, where the old ceiling (64 passes, 16 GiB) allowed minutes.
MAX_OPSLIMIT = 16
MAX_MEMLIMIT = 4 * 1024**3


@dataclass(frozen=True, slots=True)
class KdfParams:
    """Argon2id cost parameters (libsodium's ``crypto_pwhash`` opslimit and memlimit).

    ``moderate()`` is the default; ``interactive()`` is the floor: weaker parameters are
    refused when a vault is created and when stored parameters are read back, and so are
    parameters above ``MAX_OPSLIMIT`` or ``MAX_MEMLIMIT`` (a host could otherwise make every
    unlock take minutes and gigabytes). Both values must be ``int`` (not ``bool``):
    ``FormatError`` otherwise.
    """

    opslimit: int
    memlimit: int

    def __post_init__(self) -> None:
        if type(self.opslimit) is not int or type(self.memlimit) is not int:
            raise FormatError("Argon2id opslimit and memlimit must be integers")

    @classmethod
    def moderate(cls) -> KdfParams:
        return cls(*_crypto.ARGON2ID_MODERATE)

    @classmethod
    def interactive(cls) -> KdfParams:
        return cls(*_crypto.ARGON2ID_INTERACTIVE)

    @classmethod
    def sensitive(cls) -> KdfParams:
        return cls(*_crypto.ARGON2ID_SENSITIVE)

    @classmethod
    def named(cls, name: str) -> KdfParams:
        """``"interactive"``, ``"moderate"`` or ``"sensitive"``."""
        presets = {"interactive": cls.interactive, "moderate": cls.moderate}
        presets["sensitive"] = cls.sensitive
        if not isinstance(name, str) or name not in presets:
            raise FormatError(f"unknown KDF preset {name!r}")
        return presets[name]()

    def check_floor(self) -> None:
        """Raise ``WeakKdfParameters`` if weaker than libsodium's INTERACTIVE preset, and
        ``FormatError`` if above ``MAX_OPSLIMIT`` passes or ``MAX_MEMLIMIT`` bytes."""
        floor_ops, floor_mem = _crypto.ARGON2ID_INTERACTIVE
        if self.opslimit < floor_ops or self.memlimit < floor_mem:
            raise WeakKdfParameters(
                f"Argon2id parameters below the floor (opslimit >= {floor_ops}, "
                f"memlimit >= {floor_mem} bytes)"
            )
        if self.opslimit > MAX_OPSLIMIT or self.memlimit > MAX_MEMLIMIT:
            raise FormatError(
                f"Argon2id parameters above the ceiling (opslimit <= {MAX_OPSLIMIT}, "
                f"memlimit <= {MAX_MEMLIMIT} bytes)"
            )


_PRINCIPAL_PREFIX = "pds-ed25519-secret-v1:"


class PrincipalKey(_crypto.NotPickled):
    """An Ed25519 key pair for a grantee, depositor or proxy, named by its ``did:key``.

    The file form is one line, ``pds-ed25519-secret-v1:`` followed by the base64url seed.
    Encryption to the principal uses the X25519 key converted from the Ed25519 key.
    """

    __slots__ = ("_key",)

    def __init__(self, signing_key: _crypto.SigningKey) -> None:
        self._key = signing_key

    @classmethod
    def generate(cls, *, rng: _crypto.Rng = _crypto.system_rng) -> PrincipalKey:
        return cls(_crypto.SigningKey.generate(rng))

    @classmethod
    def create_file(
        cls, path: str | os.PathLike[str], *, rng: _crypto.Rng = _crypto.system_rng
    ) -> PrincipalKey:
        """Create a new principal key file (0600; never overwrites)."""
        key = cls.generate(rng=rng)
        seed = base64.urlsafe_b64encode(key._key.seed).rstrip(b"=").decode("ascii")
        write_secret_file(_key_path(path), f"{_PRINCIPAL_PREFIX}{seed}\n".encode("ascii"))
        return key

    @classmethod
    def from_file(cls, path: str | os.PathLike[str]) -> PrincipalKey:
        try:
            data = _read_start(_key_path(path), _MAX_PRINCIPAL_FILE + 1)
            if len(data) > _MAX_PRINCIPAL_FILE:
                raise FormatError(f"key file {path} is not a pds principal key")
            text = data.decode("ascii").strip()
        except FileNotFoundError:
            raise FormatError(f"key file {path} does not exist") from None
        except (OSError, UnicodeDecodeError):
            raise FormatError(f"key file {path} is not a pds principal key") from None
        if not text.startswith(_PRINCIPAL_PREFIX):
            raise FormatError(f"key file {path} is not a pds principal key")
        encoded = text[len(_PRINCIPAL_PREFIX) :]
        try:
            seed = base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4))
        except ValueError:
            raise FormatError(f"key file {path} is not a pds principal key") from None
        if len(seed) != _crypto.KEY_SIZE:
            raise FormatError(f"key file {path} is not a pds principal key")
        return cls(_crypto.SigningKey.from_seed(seed))

    @property
    def did(self) -> str:
        return _crypto.did_key(self._key.public)

    @property
    def public_key(self) -> bytes:
        return self._key.public

    def __repr__(self) -> str:
        return f"PrincipalKey(did={self.did!r})"
