"""Shared setup: record documents, owner vaults and raw SQLite baselines.

Owner vaults here unlock with a 32-byte key (``SymmetricKey``), not a passphrase: Argon2id
is deliberately slow and would swamp every per-vault figure with a constant.
"""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import pds
from pds.keys import SymmetricKey

__all__ = [
    "OwnerVault",
    "document",
    "documents",
    "file_document",
    "json_size",
    "open_owner_vault",
    "raw_connection",
]


def document(i: int) -> dict[str, Any]:
    """A ~300-byte JSON record (a heart-rate observation)."""
    return {
        "type": "observation",
        "code": "8867-4",
        "subject": f"patient-{i:06d}",
        "value": 60 + i % 40,
        "unit": "beats/min",
        "effective": f"2024-05-01T10:{i % 60:02d}:00Z",
        "performer": "Dr. Example Practitioner",
        "note": "resting heart rate measured after five minutes seated; no medication",
        "device": f"wrist-sensor-{i % 10_000:04d}",
        "status": "final",
    }


def documents(count: int, start: int = 0) -> list[dict[str, Any]]:
    return [document(i) for i in range(start, start + count)]


def json_size(doc: dict[str, Any]) -> int:
    return len(json.dumps(doc, separators=(",", ":")).encode())


FILE_RECORD_CHARS = 4_000


def file_document(i: int) -> dict[str, Any]:
    """A ~4 KB record of incompressible text (a scanned letter, say), for the export sizes."""
    return {"i": i, "kind": "letter", "body": os.urandom(FILE_RECORD_CHARS // 2).hex()}


@dataclass(slots=True)
class OwnerVault:
    store: pds.Store
    vault: pds.Vault
    owner_key: SymmetricKey
    key_path: Path

    @property
    def vault_id(self) -> str:
        return self.vault.vault_id

    def close(self) -> None:
        self.store.close()


def open_owner_vault(
    directory: Path,
    *,
    name: str = "store.db",
    synchronous: Literal["full", "normal"] = "full",
) -> OwnerVault:
    """A new store in ``directory`` with one unlocked vault (owner key in a key file)."""
    key_path = directory / f"{name}.owner.key"
    owner_key = SymmetricKey.create_file(key_path)
    store = pds.open_store(directory / name, synchronous=synchronous)
    vault_id = store.create_vault(key_provider=owner_key)
    vault = store.open_vault(vault_id)
    vault.unlock(key_provider=owner_key)
    return OwnerVault(store, vault, owner_key, key_path)


@contextmanager
def raw_connection(path: Path) -> Iterator[sqlite3.Connection]:
    """A raw ``sqlite3`` connection with pds's journal and sync settings: WAL and
    ``synchronous=FULL`` (every commit durable), autocommit so transactions are explicit."""
    connection = sqlite3.connect(str(path), isolation_level=None)
    try:
        mode = connection.execute("PRAGMA journal_mode=WAL").fetchone()
        if mode is None or str(mode[0]).lower() != "wal":
            raise RuntimeError("the baseline database could not switch to WAL")
        connection.execute("PRAGMA synchronous=FULL")
        yield connection
    finally:
        connection.close()
