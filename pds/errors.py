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
    │   └── InvalidProof                 a Merkle proof or checkpoint does not verify
    ├── HostKeyError                     the host key is missing or is not this store's
    ├── KeyProviderError                 a caller-supplied key provider failed
    ├── KeyDerivationFailed              Argon2id could not run (out of memory, say)
    ├── AccessDenied                     a token or invocation was refused (``reason``)
    │   ├── MalformedToken (FormatError) not a well-formed token/invocation; unknown caveat
    │   ├── InvalidSignature             a link or invocation signature fails
    │   ├── BrokenChain                  issuer is not the parent's audience / parent id
    │   ├── UntrustedIssuer              root not signed by the vault identity key
    │   ├── WrongVault                   token or invocation for another vault
    │   ├── CaveatWidened                a link grants more than its parent
    │   ├── NotYetValid, Expired         outside the validity window
    │   ├── LifetimeExceeded             longer than the vault policy allows
    │   ├── BudgetExhausted              use budget spent
    │   ├── Revoked                      a link of the chain is revoked
    │   ├── WrongHolder                  invocation not signed by the final audience
    │   ├── StaleInvocation, Replayed    freshness window, nonce seen before
    │   └── NotPermitted                 request outside the granted scope or purpose
    └── StoreError                       the storage layer failed
        ├── StoreNotFound                no store there, and none was to be made
        ├── StoreBusy                    another writer held the lock for too long
        ├── StoreReadOnly                the database cannot be written
        │   └── StoreFull                the disk, a file size limit or max_page_count
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


class InvalidProof(IntegrityError):
    """A Merkle inclusion or consistency proof, or a checkpoint, does not verify."""

    def __init__(self, message: str = "the proof does not verify", reason: str = "proof") -> None:
        super().__init__(reason, message)


class HostKeyError(PDSError):
    """The host key is missing, unreadable, or does not belong to this store."""


class KeyProviderError(PDSError):
    """A caller-supplied key provider failed to wrap or unwrap a key."""


class KeyDerivationFailed(PDSError):
    """Argon2id failed inside libsodium with parameters pds accepts: the process could not
    get the memory they ask for, typically. Nothing was unlocked or written; the same
    parameters may work with more memory."""


class StoreError(PDSError):
    """The storage layer failed."""


class StoreNotFound(StoreError):
    """No store at the location, and ``open_store(create=False)`` was asked not to make one."""


class StoreBusy(StoreError):
    """Another connection held the write lock for longer than the busy timeout."""


class StoreReadOnly(StoreError):
    """The store cannot be written (read-only file or directory, or full)."""


class StoreFull(StoreReadOnly):
    """The disk, the process's file size limit or the database's page limit is reached;
    the write was rolled back and can be retried once there is room."""


class StoreCorrupt(StoreError):
    """The database reports corruption."""


class SchemaTooNew(StoreError):
    """The store was written by a newer version of pds and cannot be opened safely."""


__all__ = [
    "FormatError",
    "HostKeyError",
    "IntegrityError",
    "InvalidProof",
    "InvalidRecordData",
    "KeyDerivationFailed",
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
    "StoreFull",
    "StoreNotFound",
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


class AccessDenied(PDSError):
    """A token or invocation was refused. ``reason`` names the rule that failed.

    Every refusal of a request raises a subclass; callers that must not leak which check
    failed catch ``AccessDenied`` and report only that.
    """

    reason = "denied"

    def __init__(self, message: str | None = None, *, reason: str | None = None) -> None:
        if reason is not None:
            self.reason = reason
        super().__init__(message or f"access denied ({self.reason})")


class MalformedToken(AccessDenied, FormatError):
    """The token or invocation bytes are not a well-formed, canonical, known-version document
    (including an unknown caveat: deny by default)."""

    reason = "malformed"


class InvalidSignature(AccessDenied):
    """A link or invocation signature does not verify."""

    reason = "signature"


class BrokenChain(AccessDenied):
    """A link's issuer is not its parent's audience, or its parent id does not match."""

    reason = "chain"


class UntrustedIssuer(AccessDenied):
    """The root link is not issued by the vault's identity key."""

    reason = "issuer"


class WrongVault(AccessDenied):
    """The token or invocation names another vault."""

    reason = "vault"


class CaveatWidened(AccessDenied):
    """A link grants more than its parent (``reason`` is ``widened:<caveat>``)."""

    reason = "widened"


class NotYetValid(AccessDenied):
    reason = "not-yet-valid"


class Expired(AccessDenied):
    reason = "expired"


class LifetimeExceeded(AccessDenied):
    """The token's validity is longer than the vault's policy allows."""

    reason = "lifetime"


class BudgetExhausted(AccessDenied):
    """A link's use budget is spent."""

    reason = "budget"


class Revoked(AccessDenied):
    """A link of the chain (the token itself or an ancestor) was revoked."""

    reason = "revoked"


class WrongHolder(AccessDenied):
    """The invocation is not signed by the token's final audience."""

    reason = "holder"


class StaleInvocation(AccessDenied):
    """The invocation's timestamp is outside the freshness window."""

    reason = "stale"


class Replayed(AccessDenied):
    """The invocation's nonce was seen before."""

    reason = "replay"


class NotPermitted(AccessDenied):
    """The request asks for an ability, collection, record, field, time or purpose the
    token does not grant."""

    reason = "scope"


__all__ += [
    "AccessDenied",
    "BrokenChain",
    "BudgetExhausted",
    "CaveatWidened",
    "Expired",
    "InvalidSignature",
    "LifetimeExceeded",
    "MalformedToken",
    "NotPermitted",
    "NotYetValid",
    "Replayed",
    "Revoked",
    "StaleInvocation",
    "UntrustedIssuer",
    "WrongHolder",
    "WrongVault",
]
