"""Inputs are read only up to their limit (plus one byte), then refused (exit 2): a record,
a token, a passphrase file, a trusted head and key files given as an endless file
(``/dev/zero``, ``yes``) never fill memory.

An endless file is simulated: every path named ``endless*`` opens as a stream of up to
16 MiB that counts what was read from it (reading the real ``/dev/zero`` without the
bound would exhaust the machine's memory)."""

from __future__ import annotations

import io
import pathlib
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    # mypy reads pds_cli under its folder name (see conftest.py).
    from cli import records
    from cli.state import InputError, read_at_most
    from tests.cli.conftest import Cli, Granted
else:
    from pds_cli import records
    from pds_cli.state import InputError, read_at_most

AVAILABLE = 16 * 1024 * 1024
# What a bounded reader may read beyond its limit: one buffer of the stream.
SLACK = 64 * 1024


class Endless(io.RawIOBase):
    """``AVAILABLE`` bytes of ``fill``, counting what was read."""

    def __init__(self, fill: bytes) -> None:
        self.fill = fill
        self.served = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        size = min(len(buffer), AVAILABLE - self.served)
        chunk = (self.fill * (size // len(self.fill) + 1))[:size]
        buffer[:size] = chunk
        self.served += size
        return size


@pytest.fixture
def endless(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[Endless]]:
    opened: list[Endless] = []
    real_open = pathlib.Path.open

    def fake_open(self: Path, mode: str = "r", *args: Any, **kwargs: Any) -> Any:
        if not self.name.startswith("endless"):
            return real_open(self, mode, *args, **kwargs)
        stream = Endless(b"{}" if self.name.endswith(".json") else b"\0")
        opened.append(stream)
        buffered = io.BufferedReader(stream)
        return buffered if "b" in mode else io.TextIOWrapper(buffered, encoding="utf-8")

    monkeypatch.setattr(pathlib.Path, "open", fake_open)
    yield opened


def test_read_at_most_stops_after_the_limit() -> None:
    stream = Endless(b"y\n")
    with pytest.raises(InputError, match="stdin is larger than 1 KiB"):
        read_at_most(io.BufferedReader(stream), 1024, "stdin")
    assert stream.served <= 1025 + SLACK
    assert read_at_most(io.BytesIO(b"x" * 1024), 1024, "x") == b"x" * 1024


def test_a_record_is_read_up_to_its_limit(
    cli: Cli, vault_id: str, endless: list[Endless], monkeypatch: pytest.MonkeyPatch
) -> None:
    assert records.MAX_RECORD_INPUT == 64 * 1024 * 1024
    monkeypatch.setattr(records, "MAX_RECORD_INPUT", 1024 * 1024)
    line = cli.fails(2, "put", vault_id, "health", Path("endless.json"))
    assert line == "error: endless.json is larger than 1 MiB"
    assert endless[0].served <= 1024 * 1024 + 1 + SLACK
    line = cli.fails(2, "put", vault_id, "health", input=b"{}\n" * (512 * 1024))
    assert line == "error: stdin is larger than 1 MiB"


def test_a_passphrase_file_is_read_up_to_its_limit(
    cli: Cli, vault_id: str, endless: list[Endless], tmp_path: Path
) -> None:
    data = tmp_path / "r.json"
    data.write_text("{}")
    line = cli.fails(
        2, "put", vault_id, "health", data, "--passphrase-file", "endless", passphrase=False
    )
    assert line == "error: the first line of passphrase file endless is longer than 64 KiB"
    assert endless[0].served <= 64 * 1024 + 1 + SLACK


def test_token_and_trusted_head_are_read_up_to_their_limit(
    granted: Granted, endless: list[Endless], tmp_path: Path
) -> None:
    cli = granted.cli
    assert cli.fails(2, "token", "inspect", "@endless") == (
        "error: token file endless is larger than 128 KiB"
    )
    line = cli.fails(2, "token", "inspect", "-", input=b"x" * (256 * 1024))
    assert line == "error: token on stdin is larger than 128 KiB"
    line = cli.fails(2, "audit", "verify", tmp_path, "--trusted-head", "endless")
    assert line == "error: trusted head endless is larger than 16 KiB"
    assert cli.fails(2, "get", granted.vault, "a" * 26, "--key-file", "endless") == (
        "error: key file endless is not a 32-byte key"
    )
    line = cli.fails(2, "read", "--token", granted.token, "--key", "endless")
    assert line == "error: key file endless is not a pds principal key"
    assert len(endless) == 4  # the four files (the stdin one is no file)
    assert all(stream.served <= 256 * 1024 for stream in endless)
