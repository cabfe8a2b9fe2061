"""pds: a personal data store.

An encrypted per-person vault of records. The host stores ciphertext it cannot read; the
owner unlocks with a passphrase, a key file or a key provider.

    >>> import pds
    >>> store = pds.open_store("pds.db")                      # doctest: +SKIP
    >>> vault_id = store.create_vault(passphrase="...")       # doctest: +SKIP
"""

from pds import errors
from pds.keys import KdfParams, KeyProvider, PrincipalKey, SymmetricKey
from pds.store import Store, VaultInfo, open_store
from pds.vault import Record, RecordInfo, RecordPage, Vault

__version__ = "0.1.0"

__all__ = [
    "KdfParams",
    "KeyProvider",
    "PrincipalKey",
    "Record",
    "RecordInfo",
    "RecordPage",
    "Store",
    "SymmetricKey",
    "Vault",
    "VaultInfo",
    "__version__",
    "errors",
    "open_store",
]
