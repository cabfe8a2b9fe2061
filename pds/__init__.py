"""pds: a personal data store.

An encrypted per-person vault of records. The host stores ciphertext it cannot read; the
owner unlocks with a passphrase, a key file or a key provider.

    >>> import pds
    >>> store = pds.open_store("pds.db")                      # doctest: +SKIP
    >>> vault_id = store.create_vault(passphrase="...")       # doctest: +SKIP
"""

from pds import errors
from pds.capability import Caveats, Token
from pds.grantee import GrantedRead, Grantee
from pds.invocation import Invocation, Response
from pds.keys import KdfParams, KeyProvider, PrincipalKey, SymmetricKey
from pds.store import Store, VaultInfo, open_store
from pds.vault import (
    AccessEntry,
    GrantInfo,
    Record,
    RecordInfo,
    RecordPage,
    RepairReport,
    Vault,
)

__version__ = "0.1.0"

__all__ = [
    "AccessEntry",
    "Caveats",
    "GrantInfo",
    "GrantedRead",
    "Grantee",
    "Invocation",
    "KdfParams",
    "KeyProvider",
    "PrincipalKey",
    "Record",
    "RecordInfo",
    "RecordPage",
    "RepairReport",
    "Response",
    "Store",
    "SymmetricKey",
    "Token",
    "Vault",
    "VaultInfo",
    "__version__",
    "errors",
    "open_store",
]
