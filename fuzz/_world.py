"""A small, real, deterministic vault that the targets fuzz against and the seeds come from.

``world(name)`` builds (once per process and name) a store in a temporary directory with a
fixed owner key file, a fixed clock and a counter-based random stream, so every build
holds the same bytes: the same vault id, identity key, tokens, invocations, log and export.
The seeds in ``fuzz/corpus/`` are written from it (``python -m fuzz.seeds``), and targets
that re-sign mutated inputs look up the private keys of the seeds' signers here.

Separate names give separate stores (same content), so a target that writes (serving
invocations appends to the log) does not change what another target sees.
"""

from __future__ import annotations

import atexit
import functools
import io
import shutil
import tempfile
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pds
from pds import _crypto, audit
from pds.invocation import Response
from pds.keys import SymmetricKey
from tests.vectors.common import CounterRng  # the vector generators' deterministic stream

__all__ = ["NOW_MS", "CounterRng", "World", "world"]

NOW_MS = 1_750_000_000_000
"""The fixed time of the world (June 2025), in ms. ``NOW_MS / 1000`` is exact in a float."""


def fixed_clock() -> float:
    return NOW_MS / 1000


@dataclass
class World:
    directory: Path
    key_file: Path
    """The owner's 32-byte key file (the same bytes in every build)."""
    store: pds.Store
    vault: pds.Vault
    identity: _crypto.SigningKey
    holders: list[pds.PrincipalKey]
    tokens: dict[str, pds.Token]
    invocations: dict[str, pds.Invocation]
    responses: dict[str, bytes]
    checkpoint: str
    export: bytes
    audit_dir: Path
    signers: dict[bytes, _crypto.SigningKey] = field(default_factory=dict)
    """Every key that signs in this world, by public key: the vault identity and holders."""

    @property
    def vault_id(self) -> str:
        return self.vault.vault_id

    @property
    def store_path(self) -> Path:
        return self.directory / "store.db"

    def grantee(self, public: bytes) -> pds.Grantee | None:
        """The grantee holding ``public``'s private key, if it is one of the holders."""
        for holder in self.holders:
            if holder.public_key == public:
                return pds.Grantee(holder, clock=fixed_clock, rng=CounterRng(b"grantee"))
        return None


def _build(directory: Path) -> World:
    rng = CounterRng(b"pds fuzz world")
    key_file = directory / "owner.key"
    SymmetricKey.create_file(key_file, rng=CounterRng(b"pds fuzz owner key"))
    store = pds.open_store(directory / "store.db", clock=fixed_clock, rng=rng, synchronous="normal")
    vault = store.open_vault(store.create_vault(key_file=key_file))
    vault.unlock(key_file=key_file)
    identity = vault._keys().identity
    holders = [pds.PrincipalKey.generate(rng=rng) for _ in range(3)]
    a, b, c = (pds.Grantee(h, clock=fixed_clock, rng=rng) for h in holders)

    vault.put("tax", {"year": 2024, "income": 41000, "note": "first"})
    vault.put("tax", {"year": 2025, "income": 43500})
    vault.create_collection("health", seal_fields=True)
    vault.put("health", {"n": 1, "blood": "0+", "allergies": ["pollen"]})

    now = datetime.fromtimestamp(NOW_MS / 1000, tz=UTC)
    root = vault.grant(
        a.did,
        collections=["tax", "health"],
        purpose=["benefits", "audit"],
        expires=timedelta(days=30),
        delegable=2,
        basis="law 1",
        defer=timedelta(days=1),
        window=(now - timedelta(days=365), None),
    )
    delegated = a.delegate(
        root,
        to=b.did,
        collections=["tax"],
        purposes=["benefits"],
        uses=50,
        depth=1,
        fields=["year", "income"],
    )
    chain3 = b.delegate(delegated, to=c.did, depth=0, expires=timedelta(days=7))
    fields = vault.grant(
        c.did,
        collections=["health"],
        purpose="care",
        expires=timedelta(days=2),
        fields=["n", "blood"],
        abilities=["read"],
    )
    revoked = vault.grant(b.did, collections=["*"], purpose="x", expires=timedelta(hours=1))
    vault.revoke(revoked, reason="test")
    tokens = {
        "root": root,
        "delegated": delegated,
        "chain3": chain3,
        "fields": fields,
        "revoked": revoked,
    }

    invocations = {
        "read": a.invoke(root, purpose="benefits", collection="tax"),
        "list": b.invoke(delegated, action="list", limit=10),
        "fields": c.invoke(fields, collection="health", agent="nurse 7", correlation="case 9"),
        "deferred": a.invoke(
            root,
            purpose="audit",
            records=["r1", "r2"],
            defer_until=now + timedelta(hours=2),
            defer_reason="investigation",
        ),
    }
    responses: dict[str, bytes] = {}
    for name in ("read", "list", "fields"):
        response: Response = store.serve(invocations[name].to_bytes())
        responses[name] = response.to_bytes()

    checkpoint = vault.checkpoint().to_text()
    out = io.BytesIO()
    vault.export(out)
    audit_dir = audit.export_audit(vault, directory / "audit")
    return World(
        directory=directory,
        key_file=key_file,
        store=store,
        vault=vault,
        identity=identity,
        holders=holders,
        tokens=tokens,
        invocations=invocations,
        responses=responses,
        checkpoint=checkpoint,
        export=out.getvalue(),
        audit_dir=audit_dir,
        signers={
            identity.public: identity,
            **{holder.public_key: holder._key for holder in holders},
        },
    )


@functools.cache
def world(name: str = "main") -> World:
    """The world called ``name``, built on first use in a temporary directory that is
    removed when the process exits."""
    directory = Path(tempfile.mkdtemp(prefix=f"pds-fuzz-{name}-"))
    built = _build(directory)

    def cleanup() -> None:
        built.store.close()
        shutil.rmtree(directory, ignore_errors=True)

    atexit.register(cleanup)
    return built
