"""``pds key new`` and ``pds demo``."""

from __future__ import annotations

import json
import shutil
import stat
from pathlib import Path
from typing import TYPE_CHECKING

import pds

if TYPE_CHECKING:
    from tests.cli.conftest import Cli


def test_key_new_json(cli: Cli, tmp_path: Path) -> None:
    key_file = tmp_path / "agency.key"
    document = cli.json("key", "new", key_file)
    assert document["did"].startswith("did:key:z6Mk")
    assert document["file"] == str(key_file)
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert pds.PrincipalKey.from_file(key_file).did == document["did"]
    assert not cli.store.exists()  # no store is needed or made


def test_key_new_text_and_never_overwrites(cli: Cli, tmp_path: Path) -> None:
    key_file = tmp_path / "agency.key"
    text = cli.ok("key", "new", key_file).stdout
    did = pds.PrincipalKey.from_file(key_file).did
    assert f"did: {did}" in text
    before = key_file.read_bytes()
    line = cli.fails(2, "key", "new", key_file)
    assert "refusing to overwrite" in line
    assert key_file.read_bytes() == before


def test_demo_text(cli: Cli) -> None:
    result = cli.ok("demo")
    assert "demo complete" in result.stdout
    for fragment in (
        "Create a store and a vault",
        "metadata only",
        "refused as expected: VaultLocked",
        "Rotate",
        "Export",
        "Import",
        "none of the",
        "only health/vaccinations came back",
        "refused as expected: Revoked",
        "who read what, when and why",
        "(agent: nurse 12) read 3 records in health/vaccinations",
        "— refused (revoked)",
        "clean",
    ):
        assert fragment in result.stdout
    assert not cli.store.exists()  # the demo never touches the --store


def test_demo_json(cli: Cli) -> None:
    result = cli.ok("demo", "--json")
    document = json.loads(result.stdout)
    assert document["ok"] is True
    names = [step["name"] for step in document["steps"]]
    assert names[0] == "create-vault"
    assert {"put", "list-locked", "get", "update", "delete", "rotate", "export", "import"} <= set(
        names
    )
    assert {"grant", "token-read", "delegate", "delegate-read", "revoke", "refused"} <= set(names)
    details = {step["name"]: step["details"] for step in document["steps"]}
    assert details["token-read"]["collections"] == ["health/vaccinations"]
    assert details["delegate-read"]["fields"] == ["vaccine", "date"]
    # The access log, in the person's terms: two released reads, two refusals.
    entries = details["log"]["entries"]
    reads = [entry for entry in entries if entry["kind"] == "read"]
    assert sorted(entry["result"] for entry in reads) == [
        "refused",
        "refused",
        "released",
        "released",
    ]
    assert {entry["purpose"] for entry in reads} == {"school enrolment check"}
    assert all(entry["time"] and entry["actor"].startswith("did:key:") for entry in entries)
    report = details["audit"]["report"]
    assert report["clean"] is True
    assert report["counts"]["violations"] == 0
    assert report["counts"]["accesses"] == 4
    scan = document["steps"][-1]["details"]
    assert scan["plaintext_found"] == 0
    assert scan["markers"] >= 4
    assert not Path(document["directory"]).exists()


def test_demo_keep(cli: Cli) -> None:
    document = json.loads(cli.ok("demo", "--json", "--keep").stdout)
    directory = Path(document["directory"])
    try:
        assert (directory / "host-a.db").exists()
        assert (directory / "vault.pdsx").exists()
        assert (directory / "audit" / "checkpoint.txt").exists()
    finally:
        shutil.rmtree(directory)
