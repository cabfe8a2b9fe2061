"""Exceptions raised by pds.

Every exception pds raises on purpose derives from ``PDSError``. The tree::

    PDSError
    ├── FormatError (ValueError)         malformed input: documents, files, ids, record data
    │   ├── InvalidRecordData            data that is not JSON-compatible or too large
    │   ├── NotAStore                    the file is not a pds store (or is truncated)
    │   └── WeakKdfParameters            Argon2id parameters below the floor
    ├── NotFound (LookupError)
    │   ├── VaultNotFound
    │   └── RecordNotFound
    │       └── RecordDeleted            the record's latest version is a tombstone
    ├── VaultExists                      an import or create would overwrite a vault
    ├── UnlockFailed                     the owner's secret did not unlock the vault
    │   ├── WrongPassphrase
    │   └── WrongKey                     wrong key file or key provider
    ├── VaultLocked                      content access needs the owner's secret
    ├── VaultDestroyed                   the vault was crypto-erased
    ├── IntegrityError                   stored or imported bytes were changed (``reason``)
    ├── HostKeyError                     the host key is missing or is not this store's
    ├── KeyProviderError                 a caller-supplied key provider failed
    └── StoreError                       the storage layer failed
        ├── StoreBusy                    another writer held the lock for too long
        ├── StoreReadOnly                the database cannot be written
        ├── StoreCorrupt                 SQLite reports a malformed database
        └── SchemaTooNew                 the store was written by a newer pds

Messages never contain secrets, record contents or passphrases. Where a failure has
several causes that should look alike to an attacker (an integrity failure, say), the
exception carries a ``reason`` code that tests and auditors can read.
"""

from __future__ import annotations


class PDSError(Exception):
    """Base class of every error pds raises on purpose."""


class FormatError(PDSError, ValueError):
    """Input is malformed: not the format, version or shape pds expects."""


class InvalidRecordData(FormatError):
    """Record data is not JSON-compatible, or is too large."""


class NotAStore(FormatError):
    """The location is not a pds store: another kind of file, or a truncated one."""


class WeakKdfParameters(FormatError):
    """Argon2id parameters are weaker than the floor pds accepts."""


class NotFound(PDSError, LookupError):
    """The requested object does not exist."""


class VaultNotFound(NotFound):
    """No vault with this id exists in the store."""


class RecordNotFound(NotFound):
    """No record with this id exists in the vault."""


class RecordDeleted(RecordNotFound):
    """The record exists, but its latest version is a deletion tombstone."""


class VaultExists(PDSError):
    """A vault with this id already exists in the store."""


class UnlockFailed(PDSError):
    """The owner's secret did not unlock the vault."""


class WrongPassphrase(UnlockFailed):
    """The passphrase does not unlock this vault."""


class WrongKey(UnlockFailed):
    """The key file or key provider does not unlock this vault."""


class VaultLocked(PDSError):
    """The operation needs the owner's secret: unlock the vault first."""


class VaultDestroyed(PDSError):
    """The vault was crypto-erased; nothing in it can be read or written."""


class IntegrityError(PDSError):
    """Stored or imported bytes fail authentication: they were changed, moved or replayed.

    ``reason`` is a short machine-readable code naming the check that failed, for tests and
    auditors. It never contains data.
    """

    def __init__(self, reason: str, message: str | None = None) -> None:
        self.reason = reason
        super().__init__(message or f"integrity check failed ({reason})")


class HostKeyError(PDSError):
    """The host key is missing, unreadable, or does not belong to this store."""


class KeyProviderError(PDSError):
    """A caller-supplied key provider failed to wrap or unwrap a key."""


class StoreError(PDSError):
    """The storage layer failed."""


class StoreBusy(StoreError):
    """Another connection held the write lock for longer than the busy timeout."""


class StoreReadOnly(StoreError):
    """The store cannot be written (read-only file, directory or disk full)."""


class StoreCorrupt(StoreError):
    """The database reports corruption."""


class SchemaTooNew(StoreError):
    """The store was written by a newer version of pds and cannot be opened safely."""


__all__ = [
    "FormatError",
    "HostKeyError",
    "IntegrityError",
    "InvalidRecordData",
    "KeyProviderError",
    "NotAStore",
    "NotFound",
    "PDSError",
    "RecordDeleted",
    "RecordNotFound",
    "SchemaTooNew",
    "StoreBusy",
    "StoreCorrupt",
    "StoreError",
    "StoreReadOnly",
    "UnlockFailed",
    "VaultDestroyed",
    "VaultExists",
    "VaultLocked",
    "VaultNotFound",
    "WeakKdfParameters",
    "WrongKey",
    "WrongPassphrase",
]
