"""The exit-code contract, one-line errors, ``--debug``, and secret hygiene."""

from __future__ import annotations

import os
import pty
import select
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
import pytest
from click.testing import CliRunner

import pds
from pds import errors

if TYPE_CHECKING:
    # mypy reads pds_cli under its folder name (see conftest.py).
    from cli.main import PdsGroup
    from cli.main import cli as pds_group
    from tests.cli.conftest import Cli
else:
    from pds_cli.main import PdsGroup
    from pds_cli.main import cli as pds_group

UNKNOWN_ID = "a" * 26


@pytest.fixture
def key_vault(cli: Cli, tmp_path: Path) -> tuple[str, Path]:
    key_file = tmp_path / "owner.key"
    document = cli.json("vault", "create", "--key-file", key_file, passphrase=False)
    return document["vault"], key_file


def test_wrong_passphrase_exits_1(cli: Cli, vault_id: str, record: dict[str, Any]) -> None:
    line = cli.fails(1, "get", vault_id, record["record"], env={"PDS_PASSPHRASE": "wrong"})
    assert line == "error: wrong passphrase for this vault"


def test_wrong_key_file_exits_1(cli: Cli, key_vault: tuple[str, Path], tmp_path: Path) -> None:
    vault, _ = key_vault
    other = tmp_path / "other.key"
    pds.SymmetricKey.create_file(other)
    cli.fails(1, "vault", "rotate", vault, "--key-file", other, passphrase=False)
    # A passphrase for a key vault, and a key for a passphrase vault, fail alike.
    cli.fails(1, "vault", "rotate", vault)


def test_key_file_for_a_passphrase_vault_exits_1(
    cli: Cli, vault_id: str, key_vault: tuple[str, Path]
) -> None:
    _, key_file = key_vault
    cli.fails(1, "vault", "rotate", vault_id, "--key-file", key_file)


def test_unknown_vault_exits_1(cli: Cli, vault_id: str) -> None:
    assert cli.fails(1, "get", UNKNOWN_ID, UNKNOWN_ID) == "error: no such vault"
    cli.fails(1, "list", UNKNOWN_ID)
    cli.fails(1, "vault", "export", UNKNOWN_ID, cli.store.parent / "x.pdsx")


def test_unknown_record_exits_1(cli: Cli, vault_id: str) -> None:
    assert cli.fails(1, "get", vault_id, UNKNOWN_ID) == "error: no such record"
    cli.fails(1, "history", vault_id, UNKNOWN_ID)
    cli.fails(1, "delete", vault_id, UNKNOWN_ID)


@pytest.mark.parametrize(
    "content",
    [
        '{"a": 1',
        "[1, 2]",
        '"text"',
        "",
        '{"a": NaN}',
        '{"a": 1, "a": 2}',
        '{"a": 1} trailing',
        '{"n": 1e400}',
    ],
)
def test_invalid_json_record_exits_2(cli: Cli, vault_id: str, content: str) -> None:
    cli.fails(2, "put", vault_id, "notes", input=content)
    assert cli.json("list", vault_id)["records"] == []


def test_error_messages_never_hold_record_data(cli: Cli, vault_id: str) -> None:
    marker = "do-not-print-this-value"
    cli.fails(2, "put", vault_id, "notes", input=f'{{"a": "{marker}", "a": "{marker}"}}')
    cli.fails(2, "put", vault_id, "notes", input=f'["{marker}"]')
    cli.fails(2, "put", vault_id, "notes", input=f'{{"{marker}": 1e999}}')
    assert marker not in cli.all_output()


def test_a_non_pds_file_as_store_exits_2(cli: Cli, tmp_path: Path) -> None:
    text_file = tmp_path / "notes.txt"
    text_file.write_text("not a database at all\n" * 100)
    line = cli.fails(2, "vault", "list", store=text_file)
    assert "not a pds store" in line
    other_db = tmp_path / "other.sqlite"
    with sqlite3.connect(other_db) as connection:
        connection.execute("CREATE TABLE t (x)")
    connection.close()
    cli.fails(2, "vault", "list", store=other_db)
    cli.fails(2, "vault", "create", "--kdf", "interactive", store=text_file)


def test_a_missing_store_exits_1(cli: Cli) -> None:
    line = cli.fails(1, "vault", "list")
    assert "no store" in line
    cli.fails(1, "list", UNKNOWN_ID)
    assert not cli.store.exists()  # only 'vault create' and 'vault import' make a store


@pytest.mark.parametrize("limit", ["0", "1001", "-1", "ten"])
def test_bad_limit_exits_2(cli: Cli, vault_id: str, limit: str) -> None:
    line = cli.fails(2, "list", vault_id, "--limit", limit)
    assert "--limit" in line
    assert "pds list --help" in line


@pytest.mark.parametrize(
    "args",
    [
        ["list", "VAULT", "--cursor", "nonsense"],
        ["list", "VAULT", "--since", "yesterday"],
        ["list", "VAULT", "--collection", "bad name!"],
        ["get", "VAULT", "bad id!"],
        ["put", "VAULT", "bad name!"],
        ["vault", "create", "--kdf", "weak"],
        ["vault", "frobnicate"],
        ["frobnicate"],
        ["get", "VAULT"],
        ["list", "VAULT", "--jsn"],
        ["vault", "rotate", "VAULT", "--passphrase-file", "a", "--key-file", "b"],
    ],
)
def test_usage_and_malformed_input_exit_2(cli: Cli, vault_id: str, args: list[str]) -> None:
    cli.fails(2, *[vault_id if arg == "VAULT" else arg for arg in args], input="{}")


def test_unreadable_user_files(
    cli: Cli, vault_id: str, key_vault: tuple[str, Path], tmp_path: Path
) -> None:
    missing = tmp_path / "missing"
    assert "cannot read" in cli.fails(2, "put", vault_id, "notes", missing)
    assert "cannot read" in cli.fails(
        2, "vault", "rotate", vault_id, "--passphrase-file", missing, passphrase=False
    )
    assert "cannot read" in cli.fails(2, "put", vault_id, "notes", tmp_path)  # a directory
    line = cli.fails(2, "vault", "rotate", key_vault[0], "--key-file", missing)
    assert "does not exist" in line
    fresh = tmp_path / "fresh.db"
    assert "cannot read" in cli.fails(2, "vault", "import", missing, store=fresh)
    assert not fresh.exists()  # checked before a store is made
    # An export into a directory that does not exist is refused before it is logged.
    line = cli.fails(2, "vault", "export", vault_id, tmp_path / "no" / "such" / "dir.pdsx")
    assert line == "error: the export destination's directory does not exist"


def test_debug_shows_the_traceback(cli: Cli, vault_id: str) -> None:
    result = cli("--debug", "get", vault_id, UNKNOWN_ID)
    assert result.exit_code == 1
    assert result.stdout == ""
    assert "Traceback (most recent call last)" in result.stderr
    assert "RecordNotFound" in result.stderr
    assert result.stderr.splitlines()[-1] == "error: no such record"
    usage = cli("--debug", "list", vault_id, "--limit", "0")
    assert usage.exit_code == 2
    assert "Traceback" in usage.stderr


def test_json_mode_errors_print_nothing_on_stdout(cli: Cli, vault_id: str) -> None:
    line = cli.fails(1, "get", vault_id, UNKNOWN_ID, "--json")
    assert line == "error: no such record"


def test_passphrase_is_never_an_argument(cli: Cli) -> None:
    cli.fails(2, "vault", "create", "--passphrase", "hunter2")
    cli.fails(2, "vault", "create", "--passphrase=hunter2")
    cli.fails(2, "vault", "create", "hunter2")

    def walk(command: click.Command) -> list[click.Option]:
        options = [p for p in command.params if isinstance(p, click.Option)]
        if isinstance(command, click.Group):
            for sub in command.commands.values():
                options += walk(sub)
        return options

    for option in walk(pds_group):
        for name in option.opts:
            if "passphrase" in name or "secret" in name:
                assert name.endswith("-file"), name


def test_passphrases_are_never_echoed(cli: Cli, tmp_path: Path) -> None:
    first, second = cli.passphrase, f"{cli.passphrase}-next"
    created = cli.ok(
        "vault", "create", "--kdf", "interactive", input=f"{first}\n{first}\n", passphrase=False
    )
    vault = created.stdout.split()[2]
    data_file = tmp_path / "data.json"
    data_file.write_text('{"a": 1}')
    put = cli.ok("put", vault, "notes", data_file, "--json", input=f"{first}\n", passphrase=False)
    record = put.stdout.split('"record": "')[1].split('"')[0]
    cli.ok("get", vault, record, input=f"{first}\n", passphrase=False)
    cli.ok("history", vault, record, "--json", input=f"{first}\n", passphrase=False)
    cli.ok(
        "vault",
        "passwd",
        vault,
        "--kdf",
        "interactive",
        input=f"{first}\n{second}\n{second}\n",
        passphrase=False,
    )
    cli.fails(1, "get", vault, record)  # the old passphrase, from the environment
    cli("--debug", "get", vault, record)
    cli.ok("vault", "export", vault, tmp_path / "v.pdsx", env={"PDS_PASSPHRASE": second})
    cli.fails(1, "vault", "import", tmp_path / "v.pdsx", store=tmp_path / "b.db")
    cli.ok("list", vault)
    output = cli.all_output()
    assert "Passphrase" in output  # the prompts were shown ...
    assert first not in output  # ... and what was typed was not echoed
    assert second not in output


def test_no_secret_and_no_input_is_a_clear_error(cli: Cli, vault_id: str) -> None:
    result = cli("vault", "rotate", vault_id, input="", passphrase=False)
    assert result.exit_code == 2
    assert result.stdout == ""
    assert "Traceback" not in result.stderr
    # The prompt was shown; the error is the one line after it.
    assert result.stderr.startswith("Passphrase:")
    errors_shown = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors_shown) == 1
    assert "no passphrase entered" in errors_shown[0]
    assert "PDS_PASSPHRASE" in errors_shown[0]


# -- the funnel itself, with commands that fail in ways the real ones rarely do


def _funnel_with(failure: Callable[[], None]) -> PdsGroup:
    @click.group(cls=PdsGroup)
    @click.option("--debug", is_flag=True)
    @click.pass_context
    def group(ctx: click.Context, debug: bool) -> None:
        ctx.obj.debug = debug

    @group.command()
    def fail() -> None:
        failure()

    return group


def _raise(exc: BaseException) -> Callable[[], None]:
    def failure() -> None:
        raise exc

    return failure


@pytest.mark.parametrize(
    ("exc", "code", "message"),
    [
        (KeyboardInterrupt(), 130, "error: interrupted"),
        (RuntimeError("secret-detail"), 1, "error: unexpected RuntimeError"),
        (errors.IntegrityError("ciphertext"), 1, "error: integrity check failed (ciphertext)"),
        (errors.NotAStore("not a pds store"), 2, "error: not a pds store"),
        (errors.StoreBusy("the store is busy"), 1, "error: the store is busy"),
        (FileNotFoundError(2, "No such file or directory", "x.json"), 1, "error: No such file"),
        (errors.PDSError("line one\nline two"), 1, "error: line one line two"),
    ],
)
def test_funnel_maps_every_failure_to_one_line(exc: BaseException, code: int, message: str) -> None:
    result = CliRunner().invoke(_funnel_with(_raise(exc)), ["fail"])
    assert result.exit_code == code
    assert result.stdout == ""
    lines = result.stderr.strip("\n").splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(message)
    assert "secret-detail" not in result.stderr
    assert "Traceback" not in result.stderr
    debug = CliRunner().invoke(_funnel_with(_raise(exc)), ["--debug", "fail"])
    assert debug.exit_code == code
    assert "Traceback" in debug.stderr


def test_help_and_version_exit_0(cli: Cli) -> None:
    assert "Usage:" in cli.ok("--help").stdout
    assert "Usage:" in cli.ok("vault", "create", "--help").stdout
    assert pds.__version__ in cli.ok("--version").stdout


# -- the real console script, in a subprocess


def _scripts() -> list[list[str]]:
    commands = [[sys.executable, "-m", "pds_cli.main"]]
    script = Path(sys.executable).parent / "pds"
    if script.exists():
        commands.append([str(script)])
    return commands


@pytest.mark.parametrize("command", _scripts(), ids=lambda c: Path(c[-1]).name)
def test_console_script_error_is_one_line(command: list[str], tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PDS_")}
    missing = subprocess.run(
        [*command, "--store", str(tmp_path / "missing.db"), "vault", "list", "--json"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert missing.returncode == 1
    assert missing.stdout == ""
    assert missing.stderr.splitlines() == [f"error: no store at {tmp_path / 'missing.db'}"]
    usage = subprocess.run(
        [*command, "--store", str(tmp_path / "missing.db"), "list", "x", "--limit", "0"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert usage.returncode == 2
    assert len(usage.stderr.splitlines()) == 1
    assert "Traceback" not in usage.stderr


def _run_on_a_terminal(args: list[str], env: dict[str, str]) -> tuple[int, str, str]:
    """Run ``pds`` with stderr on a pseudo-terminal; return (exit code, stdout, terminal)."""
    controller, terminal = pty.openpty()
    process = subprocess.Popen(
        [sys.executable, "-m", "pds_cli.main", *args],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=terminal,
        env=env,
    )
    os.close(terminal)
    captured = b""
    while True:
        ready, _, _ = select.select([controller], [], [], 60)
        if not ready:
            break
        try:
            chunk = os.read(controller, 4096)
        except OSError:  # EIO: the child closed the terminal
            break
        if not chunk:
            break
        captured += chunk
    assert process.stdout is not None
    stdout = process.stdout.read().decode()
    process.stdout.close()
    code = process.wait(timeout=60)
    os.close(controller)
    return code, stdout, captured.decode(errors="replace")


@pytest.mark.skipif(not hasattr(os, "openpty"), reason="needs a pseudo-terminal")
def test_progress_only_on_a_terminal_and_never_with_json(
    cli: Cli, vault_id: str, tmp_path: Path
) -> None:
    cli.put(vault_id, "notes", {"n": 1})
    env = {k: v for k, v in os.environ.items() if not k.startswith("PDS_")}
    env["PDS_PASSPHRASE"] = cli.passphrase
    store = ["--store", str(cli.store)]
    code, stdout, terminal = _run_on_a_terminal(
        [*store, "vault", "export", vault_id, str(tmp_path / "a.pdsx")], env
    )
    assert code == 0
    assert "exporting" in terminal
    assert stdout.startswith("exported vault")
    code, stdout, terminal = _run_on_a_terminal(
        [*store, "vault", "export", vault_id, str(tmp_path / "b.pdsx"), "--json"], env
    )
    assert code == 0
    assert terminal == ""
    assert stdout.lstrip().startswith("{")


def test_refusing_a_foreign_store_leaves_the_file_unchanged(cli: Cli, tmp_path: Path) -> None:
    other_db = tmp_path / "other.sqlite"
    with sqlite3.connect(other_db) as connection:
        connection.execute("CREATE TABLE t (x)")
    connection.close()
    empty = tmp_path / "empty.db"
    empty.touch()
    cli.fails(2, "vault", "list", store=other_db)
    cli.fails(2, "vault", "list", store=empty)
    with sqlite3.connect(other_db) as connection:
        mode = connection.execute("PRAGMA journal_mode").fetchone()[0]
    connection.close()
    assert (mode, empty.stat().st_size) == ("delete", 0)
