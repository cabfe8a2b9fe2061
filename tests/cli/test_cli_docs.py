"""Docs that cannot drift: every command has help text and a section in docs/cli.md that
names each of its options (after sqlite-utils' ``tests/test_docs.py``)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import click
import pytest

if TYPE_CHECKING:
    # mypy reads pds_cli under its folder name (see conftest.py).
    from cli.main import cli as pds_group
else:
    from pds_cli.main import cli as pds_group

DOCS = Path(__file__).resolve().parents[2] / "docs" / "cli.md"
HEADING = re.compile(r"^(#{1,6})\s+(.+?)\s*$")


def walk(command: click.Command, path: str) -> Iterator[tuple[str, click.Command]]:
    yield path, command
    if isinstance(command, click.Group):
        for name, sub in sorted(command.commands.items()):
            yield from walk(sub, f"{path} {name}")


COMMANDS = dict(walk(pds_group, "pds"))


def sections() -> dict[str, str]:
    """Each heading of docs/cli.md (backticks removed) to the text under it."""
    result: dict[str, str] = {}
    current: str | None = None
    for line in DOCS.read_text(encoding="utf-8").splitlines():
        match = HEADING.match(line)
        if match:
            current = match.group(2).replace("`", "").strip()
            result[current] = ""
        elif current is not None:
            result[current] += line + "\n"
    return result


def test_the_group_has_the_commands_of_the_issue() -> None:
    assert {
        "pds vault create",
        "pds vault list",
        "pds vault passwd",
        "pds vault rotate",
        "pds vault export",
        "pds vault import",
        "pds vault destroy",
        "pds put",
        "pds get",
        "pds list",
        "pds history",
        "pds delete",
        "pds key new",
        "pds demo",
        "pds grant",
        "pds grants",
        "pds revoke",
        "pds revocations",
        "pds token inspect",
        "pds token verify",
        "pds token delegate",
        "pds read",
        "pds log list",
        "pds log head",
        "pds log prove",
        "pds log consistency",
        "pds audit export",
        "pds audit verify",
    } <= set(COMMANDS)


@pytest.mark.parametrize("path", sorted(COMMANDS))
def test_every_command_has_help_text(path: str) -> None:
    command = COMMANDS[path]
    assert command.help and command.help.strip(), f"{path} has no help text"
    for param in command.params:
        if isinstance(param, click.Option) and param.name != "help":
            assert param.help, f"{path} {param.opts[0]} has no help text"


@pytest.mark.parametrize("path", sorted(COMMANDS))
def test_every_command_has_a_section_in_the_reference(path: str) -> None:
    documented = sections()
    assert path in documented, f"docs/cli.md has no section '## {path}'"
    text = documented[path]
    for param in COMMANDS[path].params:
        if isinstance(param, click.Option) and param.name not in ("help", "version"):
            long_names = [opt for opt in param.opts if opt.startswith("--")]
            assert any(name in text for name in long_names), (
                f"the section '{path}' of docs/cli.md does not mention {long_names[0]}"
            )


def test_every_command_section_names_a_real_command() -> None:
    stale = [
        heading
        for heading in sections()
        if heading == "pds" or heading.startswith("pds ")
        if heading not in COMMANDS
    ]
    assert stale == []


LEAF_COMMANDS = sorted(p for p, c in COMMANDS.items() if not isinstance(c, click.Group))


@pytest.mark.parametrize("path", LEAF_COMMANDS)
def test_every_command_takes_json(path: str) -> None:
    names = {opt for param in COMMANDS[path].params for opt in param.opts}
    assert "--json" in names
