"""Fixtures for the CLI tests: a ``cli`` invoker over click's ``CliRunner`` with a real
store in ``tmp_path``, isolated from any ``PDS_*`` variables of the environment."""

from __future__ import annotations

import json
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from click.testing import CliRunner, Result

import pds
from pds.accesslog import MerkleLog

if TYPE_CHECKING:
    # setuptools installs the cli/ folder under the name pds_cli through an import hook
    # that mypy cannot follow, so mypy reads the same modules under their folder name.
    from cli.main import cli as pds_group
else:
    from pds_cli.main import cli as pds_group

PDS_VARIABLES = ("PDS_STORE", "PDS_PASSPHRASE", "PDS_NEW_PASSPHRASE", "PDS_STATE_DIR")


@dataclass
class Cli:
    """Runs ``pds`` in-process against ``store`` with ``passphrase`` in ``PDS_PASSPHRASE``
    and its pinned log heads in ``state_dir`` (``PDS_STATE_DIR``)."""

    store: Path
    passphrase: str
    state_dir: Path
    runner: CliRunner = field(default_factory=CliRunner)
    results: list[Result] = field(default_factory=list)
    """Every result so far, so a test can scan all output for secrets."""

    def __call__(
        self,
        *args: str | Path,
        input: str | bytes | None = None,
        env: Mapping[str, str | None] | None = None,
        passphrase: bool = True,
        store: Path | None = None,
        store_option: bool = True,
    ) -> Result:
        """Run ``pds --store STORE ARGS...`` (without ``--store`` if not ``store_option``)."""
        environment: dict[str, str | None] = dict.fromkeys(PDS_VARIABLES)
        environment["PDS_STATE_DIR"] = str(self.state_dir)
        if passphrase:
            environment["PDS_PASSPHRASE"] = self.passphrase
        environment.update(env or {})
        argv = ["--store", str(store or self.store)] if store_option else []
        argv += [str(arg) for arg in args]
        result = self.runner.invoke(pds_group, argv, input=input, env=environment)
        self.results.append(result)
        return result

    def ok(self, *args: str | Path, **kwargs: Any) -> Result:
        """Run and require exit code 0 and an empty stderr."""
        result = self(*args, **kwargs)
        assert result.exit_code == 0, (result.exit_code, result.stdout, result.stderr)
        return result

    def json(self, *args: str | Path, **kwargs: Any) -> Any:
        """Run with ``--json``: exit code 0, stdout is exactly one JSON document, and stderr
        is empty (no progress, no prompt: the secret comes from the environment)."""
        result = self.ok(*args, "--json", **kwargs)
        assert result.stderr == ""
        return json.loads(result.stdout)

    def fails(self, code: int, *args: str | Path, **kwargs: Any) -> str:
        """Run, require exit ``code``, exactly one ``error:`` line on stderr, nothing on
        stdout and no traceback; return the error line."""
        result = self(*args, **kwargs)
        assert result.exit_code == code, (result.exit_code, result.stdout, result.stderr)
        assert result.stdout == ""
        assert "Traceback" not in result.stderr
        lines = result.stderr.splitlines()
        assert len(lines) == 1, result.stderr
        assert lines[0].startswith("error: ")
        return lines[0]

    def host_appends(self, vault: str, raw: bytes) -> int:
        """The host appends ``raw`` to the vault's log, with its subtree hashes, as it
        appends its entries (no checks); return its index."""
        with pds.open_store(self.store) as store:
            backend = store.backend
            with backend.transaction():
                log = MerkleLog(backend, vault)
                index = log.size()
                log.append_raw(index, 0, raw)
        return index

    def put(self, vault: str, collection: str, data: Any, *extra: str) -> dict[str, Any]:
        """``pds put --json`` with ``data`` as JSON on stdin."""
        document: dict[str, Any] = self.json(
            "put", vault, collection, *extra, input=json.dumps(data)
        )
        return document

    def all_output(self) -> str:
        return "".join(result.stdout + result.stderr for result in self.results)


@pytest.fixture
def cli(tmp_path: Path) -> Cli:
    return Cli(
        store=tmp_path / "pds.db",
        passphrase=f"pw-{secrets.token_hex(12)}",
        state_dir=tmp_path / "state",
    )


@pytest.fixture
def vault_id(cli: Cli) -> str:
    """A passphrase vault (Argon2id at the INTERACTIVE floor, to keep the suite fast)."""
    document = cli.json("vault", "create", "--kdf", "interactive")
    vault: str = document["vault"]
    return vault


@pytest.fixture
def record(cli: Cli, vault_id: str) -> dict[str, Any]:
    """One record in ``health``; the returned dict holds the ``put`` output and ``data``."""
    data = {"vaccine": "MMR", "date": "2019-05-14", "marker": f"m-{secrets.token_hex(8)}"}
    document = cli.put(vault_id, "health", data)
    document["data"] = data
    return document


@dataclass
class Granted:
    """A key-file vault with records in two collections, an agency key, and a token granting
    the agency ``income/*`` for one purpose (written to ``token_file``)."""

    cli: Cli
    vault: str
    vault_did: str
    owner_key: Path
    agency_key: Path
    agency_did: str
    token: str
    token_file: Path
    link: str
    payslip: dict[str, Any]
    visit: dict[str, Any]

    @property
    def owner(self) -> tuple[str, str]:
        """The owner's secret option (a key file: no Argon2id, so the suite stays fast)."""
        return ("--key-file", str(self.owner_key))

    def principal(self, name: str) -> tuple[Path, str]:
        """A new principal key file in the test directory and its did:key."""
        path = self.owner_key.parent / f"{name}.key"
        document = self.cli.json("key", "new", path)
        return path, str(document["did"])


@pytest.fixture
def granted(cli: Cli, tmp_path: Path) -> Granted:
    owner_key = tmp_path / "owner.key"
    created = cli.json("vault", "create", "--key-file", owner_key)
    vault = created["vault"]
    owner = ("--key-file", str(owner_key))
    # Both collections seal fields one by one, so grants may be limited to fields.
    for name in ("income/payslips", "health/visits"):
        cli.json("vault", "collection", vault, name, "--seal-fields", *owner)
    payslip_data = {"employer": "ACME", "net": 2450.5, "marker": f"m-{secrets.token_hex(8)}"}
    payslip = cli.json("put", vault, "income/payslips", *owner, input=json.dumps(payslip_data))
    payslip["data"] = payslip_data
    visit_data = {"clinic": "north", "marker": f"m-{secrets.token_hex(8)}"}
    visit = cli.json("put", vault, "health/visits", *owner, input=json.dumps(visit_data))
    visit["data"] = visit_data
    agency_key = tmp_path / "agency.key"
    agency_did = cli.json("key", "new", agency_key)["did"]
    token_file = tmp_path / "agency.token"
    document = cli.json(
        "grant",
        vault,
        "--to",
        agency_did,
        "--collection",
        "income/*",
        "--purpose",
        "child allowance check",
        "--expires",
        "30d",
        "--delegable",
        "1",
        "--out",
        token_file,
        *owner,
    )
    return Granted(
        cli=cli,
        vault=vault,
        vault_did=created["did"],
        owner_key=owner_key,
        agency_key=agency_key,
        agency_did=agency_did,
        token=document["token"],
        token_file=token_file,
        link=document["link"],
        payslip=payslip,
        visit=visit,
    )
