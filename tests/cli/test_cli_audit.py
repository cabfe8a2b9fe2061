"""``pds audit export`` and ``pds audit verify``: a clean package exits 0, a tampered one 1,
a malformed one 2; verification needs no store."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from tests.cli.conftest import Granted


@pytest.fixture
def package(granted: Granted, tmp_path: Path) -> Path:
    """An audit package after a released read, a revocation and a refused read."""
    cli = granted.cli
    cli.json("read", "--token", granted.token, "--key", granted.agency_key)
    cli.json("revoke", granted.vault, granted.link, *granted.owner)
    cli.fails(1, "read", "--token", granted.token, "--key", granted.agency_key)
    directory = tmp_path / "audit"
    cli.json("audit", "export", granted.vault, directory, *granted.owner)
    return directory


def test_audit_export_json_and_text(granted: Granted, tmp_path: Path) -> None:
    cli = granted.cli
    directory = tmp_path / "first"
    document = cli.json("audit", "export", granted.vault, directory, *granted.owner)
    assert document["vault"] == granted.vault
    assert document["directory"] == str(directory)
    assert document["files"] == [
        "checkpoint.txt",
        "log.jsonl",
        "revocations.bin",
        "tokens.json",
        "vault.json",
    ]
    assert document["entries"] == 4  # two collections made, the grant, the export itself
    assert (directory / "checkpoint.txt").read_text() == document["checkpoint"]
    # The export's checkpoint is now the pinned head.
    pinned = cli.state_dir / "heads" / f"{granted.vault}.checkpoint"
    assert pinned.read_text() == document["checkpoint"]
    text = cli.ok("audit", "export", granted.vault, tmp_path / "second", *granted.owner).stdout
    assert "wrote the audit package" in text
    assert f"pds audit verify {tmp_path / 'second'}" in text
    # A directory that is not empty is refused.
    line = cli.fails(2, "audit", "export", granted.vault, directory, *granted.owner)
    assert "not empty" in line


def test_audit_verify_clean(granted: Granted, package: Path, tmp_path: Path) -> None:
    cli = granted.cli
    missing = tmp_path / "no-store.db"
    document = cli.json("audit", "verify", package, store=missing)
    assert not missing.exists()  # offline: no store is opened or made
    assert document["clean"] is True
    assert document["vault"] == granted.vault
    counts = document["counts"]
    assert counts["accesses"] == 2
    assert (counts["released"], counts["refused"], counts["violations"]) == (1, 1, 0)
    assert document["violations"] == []
    text = cli.ok("audit", "verify", package).stdout
    assert text.startswith(f"audit of vault {granted.vault}: clean")


def test_audit_verify_with_a_trusted_head(granted: Granted, tmp_path: Path) -> None:
    cli = granted.cli
    head = tmp_path / "head.txt"
    head.write_text(cli.ok("log", "head", granted.vault).stdout)
    cli.json("read", "--token", granted.token, "--key", granted.agency_key)
    directory = tmp_path / "audit"
    cli.json("audit", "export", granted.vault, directory, *granted.owner)
    document = cli.json("audit", "verify", directory, "--trusted-head", head)
    assert document["clean"] is True
    assert document["trusted_head"] == str(head)
    assert (
        "consistent with the trusted head"
        in cli.ok("audit", "verify", directory, "--trusted-head", head).stdout
    )


def _report(granted: Granted, directory: Path, code: int) -> dict[str, Any]:
    result = granted.cli("audit", "verify", directory, "--json")
    assert result.exit_code == code, (result.stdout, result.stderr)
    assert result.stderr == ""
    document: dict[str, Any] = json.loads(result.stdout)
    return document


def test_a_truncated_log_is_a_violation(granted: Granted, package: Path) -> None:
    log = package / "log.jsonl"
    lines = log.read_text().splitlines(keepends=True)
    log.write_text("".join(lines[:-1]))
    document = _report(granted, package, 1)
    assert document["clean"] is False
    assert [v["rule"] for v in document["violations"]] == ["checkpoint"]
    text = granted.cli("audit", "verify", package)
    assert text.exit_code == 1
    assert "VIOLATION package: checkpoint" in text.stdout


def test_a_swapped_disclosure_key_is_a_violation(granted: Granted, package: Path) -> None:
    log = package / "log.jsonl"
    items = [json.loads(line) for line in log.read_text().splitlines()]
    # The released read is entry 1; give it the grant's key, which cannot open it.
    items[1]["key"] = items[0]["key"]
    log.write_text("".join(json.dumps(item) + "\n" for item in items))
    document = _report(granted, package, 1)
    assert [(v["entry"], v["rule"]) for v in document["violations"]] == [(1, "undecryptable")]


def test_the_vault_key_is_printed_and_can_be_pinned(granted: Granted, package: Path) -> None:
    cli = granted.cli
    assert cli.json("audit", "verify", package)["did"] == granted.vault_did
    assert (
        f"vault key:   {granted.vault_did} (the package's own"
        in cli.ok("audit", "verify", package).stdout
    )
    pinned = cli.json("audit", "verify", package, "--vault-did", granted.vault_did)
    assert pinned["clean"] is True
    _, other = granted.principal("other")
    line = cli.fails(1, "audit", "verify", package, "--vault-did", other)
    assert "another vault key" in line


def test_a_package_naming_another_did_than_its_key_is_refused(
    granted: Granted, package: Path
) -> None:
    """A reader compares the did in vault.json by eye: it must be the package's key."""
    meta_path = package / "vault.json"
    meta = json.loads(meta_path.read_text())
    _, meta["did"] = granted.principal("impostor")
    meta_path.write_text(json.dumps(meta))
    line = granted.cli.fails(1, "audit", "verify", package)
    assert "another did:key" in line


def test_a_forged_checkpoint_exits_1(granted: Granted, package: Path) -> None:
    checkpoint = package / "checkpoint.txt"
    text = checkpoint.read_text()
    body, signature = text.split("\n\n", 1)
    lines = body.split("\n")
    lines[1] = str(int(lines[1]) - 1)  # claim a shorter log under the same signature
    checkpoint.write_text("\n".join(lines) + "\n\n" + signature)
    line = granted.cli.fails(1, "audit", "verify", package)
    assert "signature" in line


@pytest.mark.parametrize(
    ("name", "content"),
    [
        ("vault.json", "{not json"),
        ("vault.json", '{"format": "something-else"}'),
        ("checkpoint.txt", "hello\n"),
        ("log.jsonl", "{broken\n"),
        ("tokens.json", '{"a": 1}'),
    ],
)
def test_a_malformed_package_exits_2(
    granted: Granted, package: Path, name: str, content: str
) -> None:
    (package / name).write_text(content)
    granted.cli.fails(2, "audit", "verify", package)


def test_missing_package_files_exit_2(granted: Granted, package: Path, tmp_path: Path) -> None:
    granted.cli.fails(2, "audit", "verify", tmp_path / "nowhere")
    (package / "log.jsonl").unlink()
    assert "lacks log.jsonl" in granted.cli.fails(2, "audit", "verify", package)


def test_a_malformed_trusted_head_exits_2(granted: Granted, package: Path, tmp_path: Path) -> None:
    head = tmp_path / "head.txt"
    head.write_text("not a checkpoint\n")
    granted.cli.fails(2, "audit", "verify", package, "--trusted-head", head)
    granted.cli.fails(2, "audit", "verify", package, "--trusted-head", tmp_path / "none.txt")


# Library gaps: verify_audit lets a non-pds exception escape for these malformed packages,
# so the CLI reports "unexpected KeyError/AttributeError" and exits 1 instead of 2.
def test_a_token_item_without_a_token_exits_2(granted: Granted, package: Path) -> None:
    (package / "tokens.json").write_text('[{"link": "00"}]')
    granted.cli.fails(2, "audit", "verify", package)


def test_a_log_line_that_is_not_an_object_exits_2(granted: Granted, package: Path) -> None:
    (package / "log.jsonl").write_text("1\n")
    granted.cli.fails(2, "audit", "verify", package)


def test_bytes_the_host_appends_that_are_no_entry_are_a_violation_not_a_refusal(
    granted: Granted, tmp_path: Path
) -> None:
    """The host appends garbage to the log: `pds audit export` writes the package (it
    used to refuse for good, log-entry), and `pds audit verify` reports one violation at
    its index (exit 1), not a malformed package (exit 2)."""
    cli = granted.cli
    index = cli.host_appends(granted.vault, b"\xc1")
    directory = tmp_path / "audit"
    cli.json("audit", "export", granted.vault, directory, *granted.owner)
    result = cli("audit", "verify", directory, "--json")
    assert result.exit_code == 1, (result.stdout, result.stderr)
    document = json.loads(result.stdout)
    assert [(v["entry"], v["rule"]) for v in document["violations"]] == [(index, "malformed-entry")]
    text = cli("audit", "verify", directory).stdout
    assert f"  VIOLATION entry {index}: malformed-entry: the entry does not parse" in text
