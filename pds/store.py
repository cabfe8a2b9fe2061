"""Opening a store and managing the vaults in it.

``open_store(location)`` opens (or creates) a store: many per-person vaults in one
database, plus the host key kept outside it. The default backend is SQLite.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import Any, Literal

from pds import _codec, _crypto, _export, _owner, capability
from pds._context import HOST_KEY_SUFFIX, Clock, Context, call_provider, ms_to_datetime
from pds._ids import check_record_id, new_id
from pds._owner import wrap_identity
from pds._serve import Host
from pds._store.base import Backend, VaultRow
from pds._store.sqlite import SQLiteBackend
from pds.accesslog import Checkpoint
from pds.errors import FormatError, HostKeyError, VaultNotFound
from pds.invocation import Response
from pds.keys import KdfParams, KeyProvider, SymmetricKey
from pds.vault import Vault

__all__ = ["Store", "VaultInfo", "open_store"]


@dataclass(frozen=True, slots=True)
class VaultInfo:
    """What the host knows about a vault without any secret."""

    vault_id: str
    did: str
    created_at: datetime
    unlock_method: str
    """``"passphrase"`` or ``"key"`` (a key file or a key provider)."""
    destroyed: bool


def _parse_location(location: str | os.PathLike[str]) -> Path:
    if isinstance(location, os.PathLike):
        return Path(location)
    if not isinstance(location, str) or not location:
        raise FormatError("a store location is a path or a sqlite:/// URL")
    if "://" in location:
        scheme, _, rest = location.partition("://")
        if scheme != "sqlite" or not rest.startswith("/") or len(rest) < 2:
            raise FormatError("unsupported store location (use a path or sqlite:///path)")
        # As in SQLAlchemy: sqlite:///relative.db and sqlite:////absolute/path.db.
        return Path(rest[1:])
    return Path(location)


MAX_BUSY_TIMEOUT = capability.CLOCK_SKEW_MS / 1000
"""The longest wait for the write lock ``open_store`` accepts (300 s): a served request is
checked again once it holds the lock, and its invocation is stale by then after a longer
wait (``FRESHNESS_MS``, 5 minutes)."""


def open_store(
    location: str | os.PathLike[str],
    *,
    host_key: KeyProvider | None = None,
    create: bool = True,
    synchronous: Literal["full", "normal"] = "full",
    busy_timeout: float = 10.0,
    clock: Clock = time.time,
    rng: _crypto.Rng = _crypto.system_rng,
) -> Store:
    """Open the store at ``location`` (a path, or ``sqlite:///path``).

    ``host_key`` wraps the host shares of record keys. By default it is the key file
    ``<location>.hostkey`` beside the database, created (0600) with a new store. It must
    not live in the database: a copy of the database alone must not release anything.

    ``synchronous="normal"`` relaxes durability for bulk loads (a power cut may lose the
    last transactions, never corrupt the store). ``busy_timeout`` is how long an operation
    waits for another process's write lock, in seconds, at most ``MAX_BUSY_TIMEOUT``
    (then ``StoreBusy``). ``create=False`` refuses to make a new store. Raises
    ``NotAStore`` for a file that is not a pds store, ``HostKeyError`` if the host key is
    missing or belongs to another store, ``FormatError`` for a bad argument.
    """
    path = _parse_location(location)
    if synchronous not in ("full", "normal"):
        raise FormatError("synchronous is 'full' or 'normal'")
    # NaN fails both comparisons; a bool is not a number of seconds.
    if type(busy_timeout) not in (int, float) or not 0 <= busy_timeout <= MAX_BUSY_TIMEOUT:
        raise FormatError(f"busy_timeout is a number of seconds from 0 to {MAX_BUSY_TIMEOUT:g}")
    backend = SQLiteBackend(path, synchronous=synchronous, busy_timeout=busy_timeout, create=create)
    try:
        key = host_key if host_key is not None else _default_host_key(path, backend, rng)
        _check_host_key(backend, key)
    except BaseException:
        backend.close()
        raise
    return Store(Context(backend, key, clock, rng), path)


def _default_host_key(path: Path, backend: SQLiteBackend, rng: _crypto.Rng) -> KeyProvider:
    key_path = path.with_name(path.name + HOST_KEY_SUFFIX)
    if key_path.exists():
        return _host_key_file(key_path)
    if backend.get_meta("host_key_id") is not None:
        raise HostKeyError(f"the host key file {key_path} is missing")
    try:
        return SymmetricKey.create_file(key_path, rng=rng)
    except FormatError:
        # Another process created it between our check and our create (or the path is a
        # dangling symlink).
        return _host_key_file(key_path)


def _host_key_file(key_path: Path) -> KeyProvider:
    """The host key file, or ``HostKeyError`` saying why not (missing, unreadable, not a
    32-byte key)."""
    try:
        return SymmetricKey.from_file(key_path)
    except FormatError as exc:
        raise HostKeyError(f"the host {exc}") from None


def _check_host_key(backend: SQLiteBackend, key: KeyProvider) -> None:
    key_id = call_provider(lambda: key.key_id.encode("utf-8")).decode("utf-8")
    stored = backend.get_meta("host_key_id")
    if stored is None:
        with backend.transaction():
            stored = backend.get_meta("host_key_id")
            if stored is None:
                backend.set_meta("host_key_id", key_id)
                stored = key_id
    if stored != key_id:
        raise HostKeyError("the host key does not belong to this store")


class Store:
    """A store of vaults. Use as a context manager, or call ``close()``.

    Not thread-safe: open one ``Store`` per thread or process; SQLite serialises writers.
    """

    def __init__(self, context: Context, path: Path) -> None:
        self._ctx = context
        self.path = path
        self._host = Host(context)

    def __repr__(self) -> str:
        return f"Store({str(self.path)!r})"

    def __enter__(self) -> Store:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        self._ctx.backend.close()

    @property
    def backend(self) -> Backend:
        return self._ctx.backend

    def create_vault(
        self,
        *,
        passphrase: str | bytes | None = None,
        key_file: str | os.PathLike[str] | None = None,
        key_provider: KeyProvider | None = None,
        kdf: KdfParams | None = None,
    ) -> str:
        """Create a vault unlocked by exactly one owner secret; return its id.

        With a passphrase, Argon2id uses ``kdf`` (libsodium MODERATE by default; weaker
        than INTERACTIVE raises ``WeakKdfParameters``).
        """
        secret = _owner.OwnerSecret(passphrase, key_file, key_provider)
        rng = self._ctx.rng
        vault_id = new_id(rng)
        unlock, provider = _owner.new_unlock(secret, kdf, rng)
        master = rng(_crypto.KEY_SIZE)
        identity = _crypto.SigningKey.generate(rng)
        wrapped_master = call_provider(
            lambda: provider.wrap(master, context=_owner.master_context(vault_id))
        )
        wrapped_identity = wrap_identity(master, identity.seed, vault_id, rng)
        row = VaultRow(
            vault_id=vault_id,
            created_at=self._ctx.now_ms(),
            identity_public=identity.public,
            unlock=unlock,
            wrapped_master=wrapped_master,
            wrapped_identity=wrapped_identity,
        )
        with self._ctx.backend.transaction():
            self._ctx.backend.insert_vault(row)
        return vault_id

    def open_vault(self, vault_id: str, *, pinned: Checkpoint | str | None = None) -> Vault:
        """The vault with this id, locked. Raises ``VaultNotFound``.

        ``pinned`` is a head of this vault seen earlier (a ``Checkpoint`` or its note
        text, e.g. the CLI's pin), verified with the vault's identity key (``InvalidProof``
        or ``FormatError`` if it is not this vault's). The vault object then holds it as if
        it had signed it: every operation refuses a store whose latest signed head is
        older than it (``InvalidProof``, ``checkpoint-missing``), signs no head over a log
        that does not extend it (``log-fork``), and shares no key epoch while the store's
        revocations cannot be checked against it; so a store the host rolled back to before
        a revocation cannot get a new collection's, a rotation's or any other key to the
        revoked link, nor a head signed over the rollback. Without it, a fresh object
        trusts the store's latest head (``docs/threat-model.md``, "Rollback")."""
        try:
            # Vault ids follow the record id rule (import checks them with it).
            check_record_id(vault_id)
        except FormatError:
            raise VaultNotFound("no such vault") from None
        row = self._ctx.backend.get_vault(vault_id)
        if row is None:
            raise VaultNotFound("no such vault")
        vault = Vault(self._ctx, row)
        if pinned is not None:
            vault._trust_head(vault._pinned_head(pinned))
        return vault

    def list_vaults(self) -> list[VaultInfo]:
        return [_info(row) for row in self._ctx.backend.list_vaults()]

    def serve(self, invocation: bytes | str) -> Response:
        """Serve a grantee's invocation, as the host, without any owner secret.

        Verifies the token chain, times, holder signature, freshness, scope and purpose,
        revocation, use budget and nonce; then writes the access entry and commits; only
        then derives and releases the per-record host shares. Raises an ``AccessDenied``
        subclass (after logging the refusal) or ``MalformedToken``.
        """
        return self._host.serve(invocation)

    def import_vault(
        self,
        source: Any,
        *,
        passphrase: str | bytes | None = None,
        key_file: str | os.PathLike[str] | None = None,
        key_provider: KeyProvider | None = None,
        progress: Callable[[int], None] | None = None,
        pinned: _export.Pinned = None,
    ) -> str:
        """Import a vault exported by ``Vault.export``; return its id.

        The owner's secret is needed to re-wrap the host shares under this store's host
        key. Everything is verified (signatures, hashes, completeness) before the single
        transaction commits; on any failure nothing is imported. Raises ``FormatError``
        for a malformed file, ``IntegrityError`` for a changed one, ``VaultExists``.

        ``pinned`` is a head of the vault seen earlier (e.g. the CLI's pin), or a function
        from the vault id the file names to that vault's head (or ``None``). The file must
        then carry a log that extends it and a signed head at least as large (of the same
        records, at its size): an older export would bring back what was revoked or
        rotated since, under a head the owner's key signs for the import. Otherwise
        ``InvalidProof`` (``log-truncated``, ``log-fork``, ``checkpoint-missing``,
        ``checkpoint-records``) and nothing is imported; and so if a revocation or rotation
        the owner signed in the entries the pin covers is not in the file
        (``IntegrityError``, ``revocations-changed``, ``epochs-changed``).
        """
        secret = _owner.OwnerSecret(passphrase, key_file, key_provider)
        return _export.import_vault(self._ctx, source, secret, progress=progress, pinned=pinned)


def _info(row: VaultRow) -> VaultInfo:
    try:
        method = str(_codec.decode(row.unlock)["method"])
    except (FormatError, KeyError, TypeError):
        method = "unknown"
    return VaultInfo(
        vault_id=row.vault_id,
        did=_crypto.did_key(row.identity_public),
        created_at=ms_to_datetime(row.created_at),
        unlock_method=method,
        destroyed=row.destroyed_at is not None,
    )
