"""Shared fixtures. Vaults here unlock with a key file (fast); passphrase tests use the
Argon2id floor (``KdfParams.interactive()``) so the suite stays quick."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

import pds
from pds.keys import SymmetricKey


@pytest.fixture
def store_path(tmp_path: Path) -> Path:
    return tmp_path / "store.db"


@pytest.fixture
def store(store_path: Path) -> Iterator[pds.Store]:
    with pds.open_store(store_path) as opened:
        yield opened


@pytest.fixture
def owner_key_file(tmp_path: Path) -> Path:
    path = tmp_path / "owner.key"
    SymmetricKey.create_file(path)
    return path


@pytest.fixture
def vault(store: pds.Store, owner_key_file: Path) -> pds.Vault:
    vault_id = store.create_vault(key_file=owner_key_file)
    opened = store.open_vault(vault_id)
    opened.unlock(key_file=owner_key_file)
    return opened
