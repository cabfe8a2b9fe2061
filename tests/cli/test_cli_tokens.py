"""``pds grant/grants/revoke/revocations``, ``pds token inspect/verify/delegate`` and
``pds read``: happy paths in text and ``--json``, and the exit-code contract."""

from __future__ import annotations

import base64
import json
import os
import sqlite3
import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

import pds

if TYPE_CHECKING:
    from tests.cli.conftest import Cli, Granted

UNKNOWN_ID = "a" * 26


def _flip_last_signature_byte(token: str) -> str:
    """The same token with one bit of its last link's signature flipped.

    Canonical msgpack orders the token map's keys, so the bytes end with the last
    signature followed by ``"v": 1`` (three bytes)."""
    prefix = "pdst1_"
    encoded = token[len(prefix) :]
    raw = bytearray(base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4)))
    raw[-4] ^= 0x01
    return prefix + base64.urlsafe_b64encode(bytes(raw)).rstrip(b"=").decode()


# -- grant and grants -----------------------------------------------------------------


def test_grant_json(granted: Granted) -> None:
    cli = granted.cli
    document = cli.json(
        "grant",
        granted.vault,
        "--to",
        granted.agency_did,
        "-c",
        "health/visits",
        "-c",
        "income/*",
        "--purpose",
        "audit",
        "--purpose",
        "care",
        "--expires",
        "12h",
        "--not-before",
        "2030-01-01T00:00:00",
        "--fields",
        "clinic,date",
        "--uses",
        "3",
        "--ability",
        "read",
        "--basis",
        "Act 12 s. 4",
        "--defer",
        "10d",
        *granted.owner,
    )
    assert document["token"].startswith("pdst1_")
    assert len(document["link"]) == 64
    assert document["audience"] == granted.agency_did
    assert document["issuer"] == granted.vault_did
    assert document["vault"] == granted.vault
    assert document["collections"] == ["health/visits", "income/*"]
    assert document["purposes"] == ["audit", "care"]
    assert document["abilities"] == ["read"]
    assert document["fields"] == ["clinic", "date"]
    assert document["uses"] == 3
    assert document["basis"] == "Act 12 s. 4"
    assert document["defer_seconds"] == 10 * 86400
    # A naive date is UTC; a duration counts from --not-before.
    assert document["not_before"] == "2030-01-01T00:00:00.000Z"
    assert document["expires"] == "2030-01-01T12:00:00.000Z"
    parsed = pds.Token.from_text(document["token"])
    assert parsed.link_id.hex() == document["link"]


def test_grant_text_and_out_file(granted: Granted, tmp_path: Path) -> None:
    out = tmp_path / "second.token"
    day = (datetime.now(UTC) + timedelta(days=60)).date().isoformat()
    result = granted.cli.ok(
        "grant",
        granted.vault,
        "--to",
        granted.agency_did,
        "-c",
        "income/payslips",
        "--purpose",
        "check",
        "--expires",
        day,
        "--out",
        out,
        *granted.owner,
    )
    assert "granted a token" in result.stdout
    assert f"{day}T00:00:00.000Z" in result.stdout
    token_line = result.stdout.splitlines()[-1]
    assert token_line.startswith("token: pdst1_")
    assert out.read_text().strip() == token_line.removeprefix("token: ")
    # --out never overwrites a file.
    granted.cli.fails(
        1,
        "grant",
        granted.vault,
        "--to",
        granted.agency_did,
        "-c",
        "income/payslips",
        "--purpose",
        "check",
        "--expires",
        "1d",
        "--out",
        out,
        *granted.owner,
    )


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--expires", "soon"], "--expires"),
        (["--expires", "0d"], "--expires"),
        (["--expires", "1d", "--to", "did:web:example.org"], "--to"),
        (["--expires", "1d", "--uses", "0"], "--uses"),
        (["--expires", "1d", "--fields", "a,,b"], "--fields"),
        (["--expires", "1d", "--ability", "read,write"], "unknown ability"),
        (["--expires", "1d", "-c", "no//such"], "collection"),
    ],
)
def test_grant_malformed_input_exits_2(granted: Granted, args: list[str], fragment: str) -> None:
    base = ["grant", granted.vault, "--to", granted.agency_did, "-c", "income/*"]
    line = granted.cli.fails(2, *base, "--purpose", "p", *args, *granted.owner)
    assert fragment in line
    assert len(granted.cli.json("grants", granted.vault)["grants"]) == 1  # nothing granted


def test_grant_out_file_is_created_before_anything_is_granted(
    granted: Granted, tmp_path: Path
) -> None:
    cli = granted.cli
    base = ["grant", granted.vault, "--to", granted.agency_did, "-c", "income/*"]
    base += ["--purpose", "p", *granted.owner]
    entries = len(cli.json("log", granted.vault, *granted.owner)["entries"])
    existing = tmp_path / "existing.token"
    existing.write_text("keep me\n")
    line = cli.fails(1, *base, "--expires", "1d", "--out", existing)
    assert line == f"error: --out file {existing} exists (it is never overwritten)"
    assert existing.read_text() == "keep me\n"
    line = cli.fails(1, *base, "--expires", "1d", "--out", tmp_path / "missing" / "t.token")
    assert line.startswith("error: cannot create --out file ")
    # Neither was granted: no new link, no new log entry.
    assert len(cli.json("grants", granted.vault)["grants"]) == 1
    assert len(cli.json("log", granted.vault, *granted.owner)["entries"]) == entries
    # A grant the library refuses leaves no --out file behind.
    refused = tmp_path / "refused.token"
    assert cli.fails(1, *base, "--expires", "400d", "--out", refused) == (
        "error: access denied (lifetime)"
    )
    assert not refused.exists()
    # The token file is created 0600, like every other secret-bearing output.
    fresh = tmp_path / "fresh.token"
    document = cli.json(*base, "--expires", "1d", "--out", fresh)
    assert fresh.read_text() == document["token"] + "\n"
    assert fresh.stat().st_mode & 0o777 == 0o600


def test_delegate_out_file_is_created_first_and_removed_on_refusal(
    granted: Granted, tmp_path: Path
) -> None:
    cli = granted.cli
    _, sub_did = granted.principal("sub")
    base: list[str | Path] = ["token", "delegate", granted.token, "--key", granted.agency_key]
    base += ["--to", sub_did]
    refused = tmp_path / "refused.token"
    assert cli.fails(1, *base, "-c", "health/*", "--out", refused) == (
        "error: access denied (widened:collections)"
    )
    assert not refused.exists()
    line = cli.fails(1, *base, "--out", tmp_path / "missing" / "t.token")
    assert line.startswith("error: cannot create --out file ")
    fresh = tmp_path / "fresh.token"
    document = cli.json(*base, "--out", fresh)
    assert fresh.read_text() == document["token"] + "\n"
    assert fresh.stat().st_mode & 0o777 == 0o600


def test_grant_past_year_9999_is_refused_and_grants_still_lists(granted: Granted) -> None:
    cli = granted.cli
    base = ["grant", granted.vault, "--to", granted.agency_did, "-c", "income/*"]
    line = cli.fails(
        2,
        *base,
        "--purpose",
        "p",
        "--not-before",
        "9999-12-31",
        "--expires",
        "30d",
        *granted.owner,
    )
    assert line == "error: expires is after 9999-12-31T23:59:59.999Z"
    assert len(cli.json("grants", granted.vault)["grants"]) == 1
    # A link an earlier pds issued that far ahead is listed, its time shown as the latest.
    with sqlite3.connect(cli.store) as db:
        db.execute("UPDATE links SET expires = ?", (2**62,))
    db.close()
    (listed,) = cli.json("grants", granted.vault)["grants"]
    assert listed["expires"] == "9999-12-31T23:59:59.999Z"
    assert listed["status"] == "active"
    assert "9999-12-31T23:59:59.999Z" in cli.ok("grants", granted.vault).stdout


@pytest.mark.parametrize(
    ("command", "args", "message"),
    [
        ("grant", ["--expires", "999999999w"], "'999999999w' is too long a duration"),
        ("grant", ["--expires", "1d", "--defer", "999999999w"], "too long a duration"),
        ("delegate", ["--expires", "999999999w"], "'999999999w' is too long a duration"),
        ("verify", ["--at", "0001-01-01T00:00:00+14:00"], "outside the years 1 to 9999"),
        ("verify", ["--at", "9999-12-31T23:59:59-14:00"], "outside the years 1 to 9999"),
        ("grant", ["--expires", "1d", "--not-before", "9999-12-31T23:00-14:00"], "outside"),
        (
            "delegate",
            ["--expires", "9999-12-31T23:00-01:00"],
            "'9999-12-31T23:00-01:00' is outside the years 1 to 9999 in UTC",
        ),
    ],
)
def test_durations_and_dates_out_of_range_exit_2(
    granted: Granted, command: str, args: list[str], message: str
) -> None:
    cli = granted.cli
    _, sub_did = granted.principal("sub")
    prefixes: dict[str, list[str | Path]] = {
        "grant": ["grant", granted.vault, "--to", sub_did, "-c", "income/*", "--purpose", "p"],
        "delegate": ["token", "delegate", granted.token, "--key", granted.agency_key],
        "verify": ["token", "verify", granted.token],
    }
    prefix = prefixes[command]
    if command == "delegate":
        prefix += ["--to", sub_did]
    owner = list(granted.owner) if command == "grant" else []
    line = cli.fails(2, *prefix, *args, *owner)
    assert message in line
    assert len(cli.json("grants", granted.vault)["grants"]) == 1


def test_grants_locked_and_unlocked(granted: Granted) -> None:
    cli = granted.cli
    locked = cli.json("grants", granted.vault)["grants"]
    assert len(locked) == 1
    item = locked[0]
    assert item["link"] == granted.link
    assert item["parent"] is None
    assert item["audience"] == granted.agency_did
    assert item["status"] == "active"
    assert item["uses"] is None
    assert item["used"] is None  # pds counts uses only for budgeted links
    assert item["purposes"] is None and item["collections"] is None
    unlocked = cli.json("grants", granted.vault, *granted.owner)["grants"][0]
    assert unlocked["purposes"] == ["child allowance check"]
    assert unlocked["collections"] == ["income/*"]
    text = cli.ok("grants", granted.vault).stdout
    assert "(locked)" in text and granted.link[:16] in text
    assert "child allowance check" in cli.ok("grants", granted.vault, *granted.owner).stdout


def test_grants_unlock_flag_and_use_counts(cli: Cli, vault_id: str, record: object) -> None:
    agency_did = cli.json("key", "new", cli.store.parent / "a.key")["did"]
    grant = cli.json(
        "grant",
        vault_id,
        "--to",
        agency_did,
        "-c",
        "health",
        "--purpose",
        "care",
        "--expires",
        "1d",
        "--uses",
        "2",
    )
    cli.json("read", "--token", grant["token"], "--key", cli.store.parent / "a.key")
    # --unlock takes the passphrase from $PDS_PASSPHRASE (or a prompt).
    listed = cli.json("grants", vault_id, "--unlock")["grants"][0]
    assert (listed["used"], listed["uses"], listed["purposes"]) == (1, 2, ["care"])
    assert cli.json("grants", vault_id, passphrase=False)["grants"][0]["purposes"] is None
    assert "1/2" in cli.ok("grants", vault_id).stdout


def test_unknown_vault_exits_1(granted: Granted) -> None:
    cli = granted.cli
    assert cli.fails(1, "grants", UNKNOWN_ID) == "error: no such vault"
    cli.fails(
        1,
        "grant",
        UNKNOWN_ID,
        "--to",
        granted.agency_did,
        "-c",
        "x",
        "--purpose",
        "p",
        "--expires",
        "1d",
        *granted.owner,
    )
    cli.fails(1, "revoke", UNKNOWN_ID, granted.link, *granted.owner)
    cli.fails(1, "log", UNKNOWN_ID, *granted.owner)
    cli.fails(1, "log", "head", UNKNOWN_ID)


# -- token inspect ----------------------------------------------------------------------


def test_token_inspect_json_without_key_material(granted: Granted) -> None:
    document = granted.cli.json("token", "inspect", granted.token)
    assert document == pds.Token.from_text(granted.token).describe()
    link = document["links"][0]
    assert link["issuer"] == granted.vault_did
    assert link["audience"] == granted.agency_did
    assert link["keys"] == [["income/payslips", 1]]  # named, never the sealed bytes


def test_token_inspect_text_stdin_and_file(cli: Cli, granted: Granted) -> None:
    from_file = cli.ok("token", "inspect", f"@{granted.token_file}", store_option=False).stdout
    from_stdin = cli.ok("token", "inspect", "-", input=granted.token + "\n").stdout
    assert from_file == from_stdin
    assert "not verified" in from_file
    assert "income/*" in from_file
    assert "sealed to the audience; not shown" in from_file


def test_token_commands_need_no_store(cli: Cli, granted: Granted, tmp_path: Path) -> None:
    missing = tmp_path / "missing.db"
    cli.ok("token", "inspect", granted.token, store=missing)
    cli.ok("token", "verify", granted.token, store=missing)
    assert not missing.exists()


@pytest.mark.parametrize(
    "token",
    ["nonsense", "pdst1_", "pdst1_!!!", "pdst1_gqVsaW5rc5A", "pdst2_abc"],
)
def test_malformed_token_exits_2(cli: Cli, token: str) -> None:
    cli.fails(2, "token", "inspect", token)
    cli.fails(2, "token", "verify", token)


def test_unreadable_token_file_exits_2(cli: Cli, tmp_path: Path) -> None:
    line = cli.fails(2, "token", "inspect", f"@{tmp_path / 'none.token'}")
    assert "cannot read token file" in line


# -- token verify -----------------------------------------------------------------------


def test_token_verify_valid(granted: Granted) -> None:
    cli = granted.cli
    document = cli.json("token", "verify", granted.token)
    assert document["valid"] is True
    assert document["reason"] is None
    assert document["issuer"] == granted.vault_did
    assert document["issuer_source"] == "root-link"
    assert document["holder"] == granted.agency_did
    assert document["clock_skew_seconds"] == 300
    assert "revocation" in document["not_checked"]
    assert document["effective"]["collections"] == ["income/*"]
    pinned = cli.json("token", "verify", granted.token, "--vault-did", granted.vault_did)
    assert pinned["issuer_source"] == "--vault-did"
    text = cli.ok("token", "verify", f"@{granted.token_file}").stdout
    assert text.startswith("valid: token")
    assert "taken from the root link" in text


def _verdict(cli: Cli, *args: str) -> dict[str, object]:
    result = cli("token", "verify", *args, "--json")
    assert result.exit_code == 1, (result.stdout, result.stderr)
    assert result.stderr == ""
    document: dict[str, object] = json.loads(result.stdout)
    assert document["valid"] is False
    return document


def test_token_verify_invalid_signature_exits_1(granted: Granted) -> None:
    forged = _flip_last_signature_byte(granted.token)
    assert _verdict(granted.cli, forged)["reason"] == "signature"
    text = granted.cli("token", "verify", forged)
    assert text.exit_code == 1
    assert text.stdout.startswith("invalid: signature")


def test_token_verify_wrong_vault_did_exits_1(granted: Granted) -> None:
    assert _verdict(granted.cli, granted.token, "--vault-did", granted.agency_did)["reason"] == (
        "issuer"
    )
    granted.cli.fails(2, "token", "verify", granted.token, "--vault-did", "did:key:nope")


def test_token_verify_times(granted: Granted) -> None:
    later = (datetime.now(UTC) + timedelta(days=40)).isoformat()
    assert _verdict(granted.cli, granted.token, "--at", later)["reason"] == "expired"
    earlier = (datetime.now(UTC) - timedelta(days=1)).isoformat()
    assert _verdict(granted.cli, granted.token, "--at", earlier)["reason"] == "not-yet-valid"
    # Within the documented skew (5 minutes) the token is already valid.
    skewed = (datetime.now(UTC) - timedelta(minutes=2)).isoformat()
    assert granted.cli.json("token", "verify", granted.token, "--at", skewed)["valid"] is True


# -- token delegate and read ------------------------------------------------------------


def test_read_json_returns_only_the_granted_collection(granted: Granted) -> None:
    cli = granted.cli
    document = cli.json(
        "read",
        "--token",
        granted.token,
        "--key",
        granted.agency_key,
        "--agent",
        "clerk 17",
        "--correlation",
        "case-9",
    )
    assert [r["record"] for r in document["records"]] == [granted.payslip["record"]]
    record = document["records"][0]
    assert record["collection"] == "income/payslips"
    assert record["data"] == granted.payslip["data"]
    assert record["version"] == 1
    assert record["created_at"] == granted.payslip["created_at"]
    assert document["cursor"] is None
    assert isinstance(document["access"], int)


def test_read_text_list_and_filters(granted: Granted) -> None:
    cli = granted.cli
    text = cli.ok("read", "--token", f"@{granted.token_file}", "--key", granted.agency_key)
    assert granted.payslip["data"]["marker"] in text.stdout
    assert "access logged as entry" in text.stdout
    listed = cli.json(
        "read", "--token", granted.token, "--key", granted.agency_key, "--list", "--limit", "5"
    )
    assert [r["data"] for r in listed["records"]] == [None]
    by_id = cli.json(
        "read",
        "--token",
        granted.token,
        "--key",
        granted.agency_key,
        "--record",
        granted.payslip["record"],
        "--record",
        granted.visit["record"],  # outside the grant: silently absent
        "--purpose",
        "child allowance check",
    )
    assert [r["record"] for r in by_id["records"]] == [granted.payslip["record"]]
    empty = cli.ok(
        "read", "--token", granted.token, "--key", granted.agency_key, "--since", "2999-01-01"
    )
    assert "no records" in empty.stdout


def test_read_refusals_exit_1(granted: Granted) -> None:
    cli = granted.cli
    base: list[str | Path] = ["read", "--token", granted.token, "--key", granted.agency_key]
    line = cli.fails(1, *base, "--collection", "health/visits")
    assert line == "error: access denied (scope:collection)"
    assert cli.fails(1, *base, "--purpose", "marketing") == "error: access denied (scope:purpose)"


def test_read_with_the_wrong_key_exits_1(granted: Granted) -> None:
    other, _ = granted.principal("other")
    line = granted.cli.fails(1, "read", "--token", granted.token, "--key", other)
    assert line == "error: access denied (holder)"


def test_read_malformed_inputs_exit_2(granted: Granted, tmp_path: Path) -> None:
    cli = granted.cli
    cli.fails(2, "read", "--token", "pdst1_xyz", "--key", granted.agency_key)
    cli.fails(2, "read", "--token", granted.token, "--key", tmp_path / "missing.key")
    not_a_key = tmp_path / "bad.key"
    not_a_key.write_text("hello\n")
    not_a_key.chmod(0o600)
    cli.fails(2, "read", "--token", granted.token, "--key", not_a_key)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--cursor", "bad"], "error: malformed list cursor"),
        (["-c", "bad name!"], "error: a collection name is 1-8 '/'-separated segments"),
        (["--record", "bad id!"], "error: a record id is 1-128 letters"),
    ],
)
def test_read_malformed_request_exits_2_before_anything_is_sent(
    granted: Granted, args: list[str], message: str
) -> None:
    cli = granted.cli
    size = len(cli.json("log", granted.vault, *granted.owner)["entries"])
    line = cli.fails(2, "read", "--token", granted.token, "--key", granted.agency_key, *args)
    assert line.startswith(message)
    # Nothing reached the host: no refusal was logged.
    assert len(cli.json("log", granted.vault, *granted.owner)["entries"]) == size


def test_read_needs_an_existing_store(granted: Granted, tmp_path: Path) -> None:
    missing = tmp_path / "elsewhere.db"
    granted.cli.fails(
        1, "read", "--token", granted.token, "--key", granted.agency_key, store=missing
    )
    assert not missing.exists()


def test_delegate_then_the_delegate_reads_projected_fields(granted: Granted) -> None:
    cli = granted.cli
    sub_key, sub_did = granted.principal("sub")
    document = cli.json(
        "token",
        "delegate",
        granted.token,
        "--key",
        granted.agency_key,
        "--to",
        sub_did,
        "--fields",
        "employer",
        "--expires",
        "7d",
        "--uses",
        "2",
        store_option=False,
    )
    assert document["audience"] == sub_did
    assert document["issuer"] == granted.agency_did
    assert document["parent"] == granted.link
    assert document["fields"] == ["employer"]
    assert document["chain"] == 2
    assert document["delegable"] == 0
    assert "delegate" not in document["abilities"]
    verdict = cli.json("token", "verify", document["token"], "--vault-did", granted.vault_did)
    assert verdict["valid"] is True
    read = cli.json("read", "--token", document["token"], "--key", sub_key)
    assert [r["data"] for r in read["records"]] == [{"employer": "ACME"}]
    grants = cli.json("grants", granted.vault)["grants"]
    assert {g["link"]: g["parent"] for g in grants}[document["link"]] == granted.link


def test_delegate_text_and_refusals(granted: Granted, tmp_path: Path) -> None:
    cli = granted.cli
    sub_key, sub_did = granted.principal("sub")
    out = tmp_path / "sub.token"
    text = cli.ok(
        "token",
        "delegate",
        f"@{granted.token_file}",
        "--key",
        granted.agency_key,
        "--to",
        sub_did,
        "--purpose",
        "child allowance check",
        "--collection",
        "income/payslips",
        "--out",
        out,
    ).stdout
    assert "delegated token" in text
    assert out.read_text().strip() == text.splitlines()[-1].removeprefix("token: ")
    # Widening is refused with its reason; so is a key that does not hold the token.
    widen = cli.fails(
        1,
        "token",
        "delegate",
        granted.token,
        "--key",
        granted.agency_key,
        "--to",
        sub_did,
        "--collection",
        "health/*",
    )
    assert widen == "error: access denied (widened:collections)"
    holder = cli.fails(
        1, "token", "delegate", granted.token, "--key", sub_key, "--to", granted.agency_did
    )
    assert holder == "error: access denied (holder)"
    # The sub-holder may not delegate further (depth 0).
    deeper = cli.fails(
        1, "token", "delegate", f"@{out}", "--key", sub_key, "--to", granted.agency_did
    )
    assert deeper == "error: access denied (widened:depth)"


# -- revoke and revocations -------------------------------------------------------------


def test_revoke_then_read_is_refused(granted: Granted) -> None:
    cli = granted.cli
    document = cli.json(
        "revoke", granted.vault, granted.link, "--reason", "withdrawn", *granted.owner
    )
    assert document["revoked"] == [granted.link]
    assert document["reason"] == "withdrawn"
    line = cli.fails(1, "read", "--token", granted.token, "--key", granted.agency_key)
    assert line == "error: access denied (revoked)"
    assert cli.json("grants", granted.vault)["grants"][0]["status"] == "revoked"
    # Revoking again keeps the first revocation; a token (here from a file) names its link.
    again = cli.ok("revoke", granted.vault, f"@{granted.token_file}", *granted.owner)
    assert again.stdout.strip() == f"revoked {granted.link}"


def test_revoke_by_audience_and_delegations(granted: Granted) -> None:
    cli = granted.cli
    sub_key, sub_did = granted.principal("sub")
    child = cli.json(
        "token", "delegate", granted.token, "--key", granted.agency_key, "--to", sub_did
    )
    cli.json("read", "--token", child["token"], "--key", sub_key)  # the host learns of it
    revoked = cli.json("revoke", granted.vault, "--audience", granted.agency_did, *granted.owner)
    assert revoked["revoked"] == [granted.link]
    assert cli.fails(1, "read", "--token", child["token"], "--key", sub_key) == (
        "error: access denied (revoked)"
    )
    statuses = {g["link"]: g["status"] for g in cli.json("grants", granted.vault)["grants"]}
    assert statuses == {granted.link: "revoked", child["link"]: "revoked"}
    nothing = cli.ok("revoke", granted.vault, "--audience", granted.vault_did, *granted.owner)
    assert "nothing to revoke" in nothing.stdout


def test_revoke_usage_errors_exit_2(granted: Granted) -> None:
    cli = granted.cli
    cli.fails(2, "revoke", granted.vault, *granted.owner)
    cli.fails(2, "revoke", granted.vault, granted.link, "--audience", granted.agency_did)
    cli.fails(2, "revoke", granted.vault, "not-a-link", *granted.owner)
    cli.fails(2, "revoke", granted.vault, "ab" * 16, *granted.owner)


def test_revoke_refuses_a_token_of_another_vault(granted: Granted, tmp_path: Path) -> None:
    cli = granted.cli
    other_key = tmp_path / "other-owner.key"
    other = cli.json("vault", "create", "--key-file", other_key)["vault"]
    foreign = cli.json(
        "grant",
        other,
        "--to",
        granted.agency_did,
        "-c",
        "*",
        "--purpose",
        "p",
        "--expires",
        "1d",
        "--key-file",
        other_key,
    )
    entries = len(cli.json("log", granted.vault, *granted.owner)["entries"])
    for source in (foreign["token"], "-"):
        line = cli.fails(2, "revoke", granted.vault, source, *granted.owner, input=foreign["token"])
        assert line == f"error: the token is for vault {other}, not {granted.vault}"
    assert cli.json("revoke", granted.vault, granted.token, *granted.owner)["revoked"] == [
        granted.link
    ]
    # Nothing was revoked for the foreign token, in either vault.
    assert len(cli.json("log", granted.vault, *granted.owner)["entries"]) == entries + 1
    (listed,) = cli.json("grants", other)["grants"]
    assert listed["status"] == "active"


def test_revocations_file(granted: Granted, tmp_path: Path) -> None:
    cli = granted.cli
    target = tmp_path / "revocations.bin"
    cli.json("revoke", granted.vault, granted.link, *granted.owner)
    document = cli.json("revocations", granted.vault, target, *granted.owner)
    assert document == {"vault": granted.vault, "file": str(target), "bytes": target.stat().st_size}
    assert bytes.fromhex(granted.link) in target.read_bytes()
    text = cli.ok("revocations", granted.vault, target, *granted.owner).stdout
    assert "signed revocation list" in text
    cli.fails(1, "revocations", granted.vault, target)  # a passphrase for a key-file vault


def test_revocations_file_is_replaced_whole_and_never_a_fifo(
    granted: Granted, tmp_path: Path
) -> None:
    cli = granted.cli
    target = tmp_path / "revocations.bin"
    target.write_bytes(b"an older list")
    before = target.stat().st_ino
    cli.json("revocations", granted.vault, target, *granted.owner)
    # A new file renamed over the old one: a reader never sees half of each.
    assert target.stat().st_ino != before
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".revocations")] == []
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    # Refused before the secret is asked for (none is given): no write blocks on a FIFO.
    line = cli.fails(2, "revocations", granted.vault, fifo, passphrase=False)
    assert line == f"error: {fifo} exists and is not a regular file: it is not replaced"
    assert stat.S_ISFIFO(fifo.stat().st_mode)
    missing = tmp_path / "missing" / "revocations.bin"
    line = cli.fails(1, "revocations", granted.vault, missing, *granted.owner)
    assert line == f"error: cannot write {missing}: No such file or directory"


def test_read_lists_records_whose_key_epoch_is_not_shared_yet(granted: Granted) -> None:
    """A delegation the host has not seen misses the epoch a rotation made: `read` says
    which records in scope it could not read yet, instead of omitting them."""
    cli = granted.cli
    sub_key, sub_did = granted.principal("sub")
    delegated = cli.json(
        "token", "delegate", granted.token, "--key", granted.agency_key, "--to", sub_did
    )["token"]
    cli.json("vault", "rotate", granted.vault, "-c", "income/payslips", *granted.owner)
    later = cli.json("put", granted.vault, "income/payslips", *granted.owner, input='{"n": 1}')
    base = ["read", "--token", delegated, "--key", sub_key, "-c", "income/payslips"]
    document = cli.json(*base)
    assert [r["record"] for r in document["records"]] == [granted.payslip["record"]]
    assert document["pending"] == [
        {"record": later["record"], "collection": "income/payslips", "epoch": later["epoch"]}
    ]
    assert "1 record in scope not yet readable" in cli.ok(*base).stdout
