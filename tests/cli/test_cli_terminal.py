"""Text that others chose (a grantee's agent, correlation and defer reason, a token's
purposes, a record's data, file names) never reaches the owner's terminal with control or
format characters: text output shows them escaped, ``--json`` keeps them exact."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import unicodedata
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

import pds

if TYPE_CHECKING:
    # mypy reads pds_cli under its folder name (see conftest.py).
    from cli.log_cmds import describe_entry
    from cli.output import emit, iso_ms, json_text, printable
    from tests.cli.conftest import Granted
else:
    from pds_cli.log_cmds import describe_entry
    from pds_cli.output import emit, iso_ms, json_text, printable

UNSAFE = frozenset({"Cc", "Cf", "Cs", "Zl", "Zp"})

# A carriage return that rewrites the line, a newline that forges a log entry, an OSC
# sequence that retitles the terminal, a bidirectional override, a line separator, a C1
# CSI, a zero-width joiner and a tag character (astral, category Cf).
HOSTILE = (
    "clerk\r\x1b]0;owned\x07\n2026-01-01 00:00 UTC  #0  forged\u202e\u2028\x9b2J\u200d\U000e0041"
)


def _unsafe_chars(text: str) -> set[str]:
    """The characters of ``text`` a terminal must not see, line ends aside."""
    return {char for char in text.replace("\n", "") if unicodedata.category(char) in UNSAFE}


def test_printable_escapes_controls_and_format_characters() -> None:
    assert printable("plain text, é, — and \\ stay") == "plain text, é, — and \\ stay"
    escaped = printable(HOSTILE)
    assert _unsafe_chars(escaped) == set()
    assert "\\u000d" in escaped and "\\u001b" in escaped and "\\u000a" in escaped
    assert "\\u202e" in escaped and "\\u2028" in escaped and "\\u009b" in escaped
    assert "\\U000e0041" in escaped
    assert printable("\ud800") == "\\ud800"  # a lone surrogate (an undecodable file name)
    assert printable(escaped) == escaped


def test_log_text_escapes_what_a_grantee_chose(granted: Granted) -> None:
    cli = granted.cli
    document = cli.json(
        "read",
        "--token",
        granted.token,
        "--key",
        granted.agency_key,
        "--agent",
        HOSTILE,
        "--correlation",
        HOSTILE,
    )
    assert document["records"]
    # A refused request is logged too, with what the grantee sent.
    cli.fails(
        1,
        "read",
        "--token",
        granted.token,
        "--key",
        granted.agency_key,
        "-c",
        "health/visits",
        "--agent",
        HOSTILE,
    )
    text = cli.ok("log", granted.vault, *granted.owner).stdout
    assert _unsafe_chars(text) == set()
    lines = text.splitlines()
    assert len(lines) == 5  # one line per entry: nothing forged
    assert "(agent: clerk\\u000d\\u001b]0;owned\\u0007\\u000a2026-01-01" in lines[1]
    assert "[ref clerk\\u000d" in lines[1]
    # JSON keeps the exact text.
    entries = cli.json("log", granted.vault, *granted.owner)["entries"]
    assert entries[1]["agent"] == HOSTILE
    assert entries[1]["correlation"] == HOSTILE
    assert entries[0]["agent"] == HOSTILE


def test_deferred_entry_text_escapes_the_reason(capsys: pytest.CaptureFixture[str]) -> None:
    # The log withholds a deferred entry until its date, so the sentence is built here
    # from an entry as the library returns it.
    now = datetime.now(UTC)
    entry = pds.AccessEntry(
        index=4,
        time=now,
        kind="read",
        actor="did:key:z6MkqnCvDtcdQ9pbhfxtqvcLBC2d89LvnMtFboPzgQwHcAWa",
        agent=None,
        purpose="fraud\x1b]0;x\x07 check",
        basis="Act\r7",
        collections=["income/\u202epayslips"],
        records=[],
        link_ids=[],
        result="released",
        reason=None,
        correlation=None,
        fields=None,
        disclose_after=now - timedelta(days=1),
        defer_reason=HOSTILE,
        unsigned=False,
        details={},
    )
    emit(False, {}, [describe_entry(entry)])
    out = capsys.readouterr().out
    assert _unsafe_chars(out) == set()
    assert out.count("\n") == 1
    assert "disclosed after" in out and ": clerk\\u000d\\u001b]0;owned" in out


def test_token_text_escapes_purposes_and_basis(granted: Granted) -> None:
    cli = granted.cli
    result = cli.ok(
        "grant",
        granted.vault,
        "--to",
        granted.agency_did,
        "-c",
        "income/*",
        "--purpose",
        HOSTILE,
        "--basis",
        HOSTILE,
        "--expires",
        "1d",
        *granted.owner,
    )
    assert _unsafe_chars(result.stdout) == set()
    token = result.stdout.splitlines()[-1].removeprefix("token: ")
    for args in (
        ("token", "inspect", token),
        ("token", "verify", token),
        ("grants", granted.vault, *granted.owner),
        ("log", granted.vault, *granted.owner),
    ):
        shown = cli.ok(*args).stdout
        assert _unsafe_chars(shown) == set(), args
    described = cli.json("token", "inspect", token)
    assert described["links"][0]["purposes"] == [HOSTILE]
    assert described["links"][0]["basis"] == HOSTILE


def test_read_text_escapes_record_data(granted: Granted) -> None:
    cli = granted.cli
    hostile = {"employer": "ACME\u202e\x85\x1b]0;x\x07", "note": "a\u2029b"}
    cli.json("put", granted.vault, "income/payslips", *granted.owner, input=json.dumps(hostile))
    shown = cli.ok("read", "--token", granted.token, "--key", granted.agency_key).stdout
    assert _unsafe_chars(shown) == set()
    assert "ACME\\u202e\\u0085\\u001b]0;x\\u0007" in shown
    owner_view = cli.ok("list", granted.vault).stdout
    assert _unsafe_chars(owner_view) == set()


def test_error_lines_escape_what_the_user_gave(granted: Granted) -> None:
    line = granted.cli.fails(2, "put", granted.vault, "health", "no\x1b]0;x\x07\u202efile")
    assert _unsafe_chars(line) == set()
    assert line == "error: cannot read no\\u001b]0;x\\u0007\\u202efile: No such file or directory"


def test_json_output_is_ascii_and_valid_utf8() -> None:
    document = {"file": "x\udcff.key", "agent": HOSTILE, "name": "Zoë"}
    text = json_text(document)
    assert text.isascii()
    assert json.loads(text.encode("utf-8")) == document


def test_json_output_of_an_undecodable_file_name_is_utf8(tmp_path: Path) -> None:
    # The reported case: a file name that is not UTF-8, with stdout writing surrogates
    # back as the bytes they stand for (as in the C locale).
    env = {k: v for k, v in os.environ.items() if not k.startswith("PDS_")}
    env["PYTHONIOENCODING"] = "utf-8:surrogateescape"
    name = os.fsdecode(b"agency-\xff.key")
    result = subprocess.run(
        [sys.executable, "-m", "pds_cli.main", "key", "new", name, "--json"],
        cwd=tmp_path,
        capture_output=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    document = json.loads(result.stdout.decode("utf-8"))  # strict: valid UTF-8
    assert document["file"] == name


@pytest.mark.parametrize(
    ("ms", "shown"),
    [
        (9_030_800_344_567, "2256-03-05T03:39:04.567Z"),
        (253_402_300_799_999, "9999-12-31T23:59:59.999Z"),
        (253_402_300_800_000, "253402300800000 ms after 1970"),
    ],
)
def test_times_in_milliseconds_are_shown_exactly(ms: int, shown: str) -> None:
    """Through a float (ms / 1000), far-future times came out a millisecond early."""
    assert iso_ms(ms) == shown
