"""Fuzz target ``cli``: the ``pds`` command line (``pds_cli``), through click's ``CliRunner``.

The input (read with ``fuzz._data.Data``) picks a command and its arguments; file contents
and free-form arguments come from the input. The commands only read, except ``vault
import``, which writes to a store of its own (replaced after a successful import), and
``log head``, which pins a head in a state directory emptied before every run:

0. ``token inspect @FILE``            4. ``log consistency VAULT --from N [--to M]``
1. ``token inspect TOKEN``            5. ``log head VAULT`` with a fuzzed pinned head
2. ``token verify @FILE [--vault-did D] [--at T]``   6. ``vault import FILE --key-file K``
3. ``log prove VAULT --entry N [--size M]``          7. ``audit verify DIR --trusted-head F``
8. a read-only command followed by fuzzed arguments.

The CLI's contract (``cli/main.py``): the exit code is 0, 1 or 2; no exception escapes the
error funnel; no traceback and no "unexpected <exception>" message is printed; and with
``--json``, what is printed on stdout is one JSON document.
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from click.testing import CliRunner

if TYPE_CHECKING:
    # setuptools installs the cli/ folder as pds_cli through an import hook that mypy
    # cannot follow, so mypy reads the same modules under their folder name.
    from cli.main import cli
else:
    from pds_cli.main import cli

from fuzz._data import Data
from fuzz._world import World, world
from fuzz.targets import Finding, fuzz_target, in_project, signature

__all__ = ["COMMANDS", "TestOneInput"]

COMMANDS = (
    "inspect-file",
    "inspect-text",
    "verify",
    "prove",
    "consistency",
    "head",
    "import",
    "audit",
    "argv",
)
# First words of the free-form command lines: none of them writes outside the scratch
# directories (no import, export, put, grant, revoke, destroy, delegate --out).
_READ_ONLY = (
    ("token", "inspect"),
    ("token", "verify"),
    ("log", "prove"),
    ("log", "consistency"),
    ("log", "head"),
    ("log",),
    ("audit", "verify"),
    ("vault", "list"),
    ("list",),
    ("get",),
    ("history",),
    ("grants",),
    ("revocations",),
    ("read",),
    (),
)
_WORDS = (
    "--json",
    "--help",
    "--entry",
    "--size",
    "--from",
    "--to",
    "--at",
    "--vault-did",
    "--trusted-head",
    "--since",
    "--limit",
    "--before",
    "--collection",
    "--purpose",
    "-",
    "0",
    "1",
    "-1",
    "99999999999999999999",
)
_FUNNEL_UNEXPECTED = "rerun with --debug for the traceback"


@dataclass
class _Scratch:
    directory: Path
    """The working directory of every run: files an argument names land here."""
    state: Path
    """$PDS_STATE_DIR: pinned heads (emptied before every run)."""
    import_store: Path
    input_file: Path
    world: World


@functools.cache
def _scratch() -> _Scratch:
    directory = Path(tempfile.mkdtemp(prefix="pds-fuzz-cli-"))
    atexit.register(shutil.rmtree, directory, True)
    (directory / "work").mkdir()
    return _Scratch(
        directory=directory / "work",
        state=directory / "state",
        import_store=directory / "import.db",
        input_file=directory / "input",
        world=world("cli"),
    )


@contextlib.contextmanager
def _inside(directory: Path) -> Iterator[None]:
    previous = os.getcwd()
    os.chdir(directory)
    try:
        yield
    finally:
        os.chdir(previous)


def _arg(data: Data) -> str:
    """A command-line argument: text without NUL, which no argv element can hold."""
    return data.text().replace("\x00", "")


def _vault(data: Data, w: World) -> str:
    return w.vault_id if data.flag() else _arg(data)


def _command(data: Data, scratch: _Scratch) -> tuple[list[str], bool]:
    """The command line, and whether it asks for ``--json`` (not as a fuzzed word)."""
    w = scratch.world
    mode = data.byte() % len(COMMANDS)
    options = data.byte()
    args: list[str]
    if mode == 0:
        args = ["token", "inspect", f"@{scratch.input_file}"]
    elif mode == 1:
        args = ["token", "inspect", _arg(data)]
    elif mode == 2:
        args = ["token", "verify", f"@{scratch.input_file}"]
        if options & 2:
            args += ["--vault-did", w.vault.did if data.flag() else _arg(data)]
        if options & 4:
            args += ["--at", _arg(data)]
    elif mode == 3:
        args = ["log", "prove", _vault(data, w), "--entry", _arg(data)]
        if options & 2:
            args += ["--size", _arg(data)]
    elif mode == 4:
        args = ["log", "consistency", _vault(data, w), "--from", _arg(data)]
        if options & 2:
            args += ["--to", _arg(data)]
    elif mode == 5:
        vault_id = _vault(data, w)
        heads = scratch.state / "heads"
        heads.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(OSError, ValueError):
            (heads / f"{vault_id}.checkpoint").write_bytes(data.rest())
        args = ["log", "head", vault_id]
        if options & 2:
            args.append("--repin")
    elif mode == 6:
        args = [
            "--store",
            str(scratch.import_store),
            "vault",
            "import",
            str(scratch.input_file),
            "--key-file",
            str(w.key_file),
        ]
    elif mode == 7:
        args = ["audit", "verify", str(w.audit_dir), "--trusted-head", str(scratch.input_file)]
    else:
        args = list(data.choice(_READ_ONLY))
        for _ in range(data.byte() % 8):
            args.append(data.choice(_WORDS) if data.flag() else _arg(data))
    as_json = bool(options & 1) and mode != len(COMMANDS) - 1
    if as_json:
        args.append("--json")
    scratch.input_file.write_bytes(data.rest())
    return args, as_json


def _reset(scratch: _Scratch) -> None:
    shutil.rmtree(scratch.state, ignore_errors=True)
    for path in scratch.directory.iterdir():
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink()


@fuzz_target
def TestOneInput(data: bytes) -> None:
    scratch = _scratch()
    _reset(scratch)
    args, as_json = _command(Data(data), scratch)
    env = {
        "PDS_STATE_DIR": str(scratch.state),
        "PDS_STORE": str(scratch.world.store_path),
        "PDS_PASSPHRASE": None,
        "PDS_NEW_PASSPHRASE": None,
    }
    runner = CliRunner()
    with _inside(scratch.directory):
        result = runner.invoke(cli, args, env=env, catch_exceptions=True)
    if result.exit_code == 0 and args[:2] == ["--store", str(scratch.import_store)]:
        # A vault was imported: start the next import from an empty store again.
        for path in scratch.import_store.parent.glob(scratch.import_store.name + "*"):
            path.unlink()
    stdout, stderr = result.stdout, result.stderr
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise Finding(
            f"cli:escaped:{signature(result.exception)}",
            f"pds {args!r} raised {result.exception!r} past the error funnel",
        ) from result.exception
    if result.exit_code not in (0, 1, 2):
        raise Finding(f"cli:exit:{result.exit_code}", f"pds {args!r} exited {result.exit_code}")
    if "Traceback" in stdout + stderr:
        raise Finding("cli:traceback", f"pds {args!r} printed a traceback")
    if _FUNNEL_UNEXPECTED in stderr:
        # The funnel hides the exception; run again with --debug to name where it came from.
        with _inside(scratch.directory):
            again = runner.invoke(cli, ["--debug", *args], env=env, catch_exceptions=True)
        where = _raiser(again.stderr)
        raise Finding(
            f"cli:unexpected:{where}",
            f"pds {args!r} failed with {stderr.strip()!r}; raised at {where}",
        )
    if as_json and stdout.strip():
        try:
            json.loads(stdout)
        except ValueError:
            raise Finding(
                f"cli:json:{' '.join(args[:2])}", f"pds {args!r} --json printed other than JSON"
            ) from None


def _raiser(traceback_text: str) -> str:
    """``Type:file:function`` of the innermost frame of a printed traceback."""
    frames = re.findall(r'File "([^"]+)", line \d+, in (\S+)', traceback_text)
    lines = [line for line in traceback_text.splitlines() if line and not line[0].isspace()]
    kind = next(
        (line.split(":")[0] for line in reversed(lines) if not line.startswith("error:")), "?"
    )
    if not frames:
        return kind
    project = [frame for frame in frames if in_project(frame[0])]
    path, function = (project or frames)[-1]
    return f"{kind}:{Path(path).name}:{function}"
