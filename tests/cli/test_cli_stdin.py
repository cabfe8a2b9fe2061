"""A closed stdin (``<&-``: Python then has no ``sys.stdin``) is missing input, never a
crash: exit 2 and one line where stdin was to be read, "not confirmed" at a confirmation;
and a prompt without a terminal prints no Python warning. Run as real processes, since the
stdin of an in-process runner cannot be closed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from tests.cli.conftest import Granted


def _run(
    granted: Granted, *args: str | Path, closed: bool = True, secret: bool = False
) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PDS_")}
    env["PDS_STATE_DIR"] = str(granted.cli.state_dir)
    if secret:
        env["PDS_PASSPHRASE"] = granted.cli.passphrase
    command = [sys.executable, "-m", "pds_cli.main", "--store", str(granted.cli.store)]
    command += [str(arg) for arg in args]
    if closed:
        # sh closes fd 0 and execs pds: Python starts with sys.stdin set to None.
        command = ["/bin/sh", "-c", 'exec "$@" <&-', "sh", *command]
    return subprocess.run(
        command,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
        # A new session has no controlling terminal: getpass cannot open /dev/tty.
        start_new_session=True,
    )


def _one_error(result: subprocess.CompletedProcess[str], code: int) -> str:
    assert result.returncode == code, (result.returncode, result.stdout, result.stderr)
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    return lines[0]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["put", "{vault}", "health", "--key-file", "{owner}"], "cannot read the record"),
        (["token", "inspect", "-"], "cannot read token from stdin: it is closed"),
        (["read", "--token", "-", "--key", "{agency}"], "cannot read token from stdin"),
        (["revoke", "{vault}", "-", "--key-file", "{owner}"], "cannot read token from stdin"),
        (["get", "{vault}", "a" * 26], "no passphrase entered"),
    ],
)
def test_closed_stdin_is_missing_input(granted: Granted, args: list[str], message: str) -> None:
    values = {"vault": granted.vault, "owner": granted.owner_key, "agency": granted.agency_key}
    line = _one_error(_run(granted, *(arg.format(**values) for arg in args)), 2)
    assert message in line


def test_closed_stdin_does_not_confirm_a_destroy(granted: Granted) -> None:
    line = _one_error(_run(granted, "vault", "destroy", granted.vault, *granted.owner), 1)
    assert line == "error: vault not destroyed: not confirmed (stdin is closed)"
    (listed,) = granted.cli.json("vault", "list")["vaults"]
    assert listed["destroyed"] is False


def test_a_prompt_without_a_terminal_prints_no_python_warning(granted: Granted) -> None:
    # stdin is /dev/null and there is no terminal: getpass falls back to stdin.
    result = _run(granted, "vault", "rotate", granted.vault, closed=False)
    assert result.returncode == 2
    assert "Warning" not in result.stderr  # getpass's GetPassWarning and "may be echoed"
    assert result.stderr.splitlines() == [
        "Passphrase: ",
        "error: no passphrase entered (set $PDS_PASSPHRASE or use a passphrase or key file option)",
    ]


def test_a_passphrase_on_stdin_without_a_terminal(granted: Granted, tmp_path: Path) -> None:
    store = tmp_path / "p.db"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PDS_")}
    env["PDS_STATE_DIR"] = str(granted.cli.state_dir)
    base = [sys.executable, "-m", "pds_cli.main", "--store", str(store), "vault"]

    def run(*args: str, given: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*base, *args],
            input=given,
            capture_output=True,
            text=True,
            env=env,
            timeout=60,
            check=False,
            start_new_session=True,
        )

    mismatch = run("create", "--kdf", "interactive", given="one\ntwo\n")
    assert mismatch.returncode == 2
    assert mismatch.stderr.splitlines()[-1] == ("error: the two passphrases entered do not match")
    # An empty line is no passphrase (no one is there to ask again: `yes ''` re-prompted
    # forever), and a line over 64 KiB is refused, never read whole.
    for given, message in (
        ("\nsecret\nsecret\n", "error: no passphrase entered"),
        ("x" * (64 * 1024 + 1), "error: the passphrase read from standard input is longer"),
    ):
        refused = run("create", "--kdf", "interactive", given=given)
        assert refused.returncode == 2
        assert refused.stderr.splitlines()[-1].startswith(message), refused.stderr
    created = run("create", "--kdf", "interactive", "--json", given="secret\nsecret\n")
    assert created.returncode == 0, created.stderr
    assert "Warning" not in created.stderr and "secret" not in created.stderr
    vault = json.loads(created.stdout)["vault"]
    assert run("rotate", vault, given="secret\n").returncode == 0
    assert run("rotate", vault, given="wrong\n").returncode == 1
