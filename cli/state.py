"""What every command shares: the global state, common options and the owner's secret.

The owner's secret is never a command-line argument (arguments are visible to other users
in the process table and kept in shell history). It comes from, in this order:
``--key-file``, ``--passphrase-file``, the environment variable ``PDS_PASSPHRASE``, or a
hidden prompt on the terminal.
"""

from __future__ import annotations

import contextlib
import getpass
import os
import stat
import sys
import tempfile
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO, TextIO, TypeVar

import click

import pds

__all__ = [
    "DEFAULT_STORE",
    "NEW_PASSPHRASE_ENV",
    "PASSPHRASE_ENV",
    "STORE_ENV",
    "AppState",
    "InputError",
    "OwnerCredential",
    "Timestamp",
    "json_option",
    "kdf_option",
    "new_owner_credential",
    "owner_credential",
    "owner_options",
    "pass_state",
    "read_at_most",
    "read_file_at_most",
    "read_passphrase_file",
    "standard_input",
    "unlock",
    "unlocked_vault",
]

PASSPHRASE_ENV = "PDS_PASSPHRASE"  # noqa: S105 - a variable name, not a secret
NEW_PASSPHRASE_ENV = "PDS_NEW_PASSPHRASE"  # noqa: S105 - a variable name, not a secret
STORE_ENV = "PDS_STORE"
DEFAULT_STORE = "pds.db"
# A passphrase (the first line of its file) is at most this long: a larger one is a wrong
# file (or /dev/zero), never read whole.
MAX_PASSPHRASE_BYTES = 64 * 1024

F = TypeVar("F", bound=Callable[..., Any])


class InputError(click.ClickException):
    """Malformed or unreadable user input (a record file, a passphrase file): exit 2."""

    exit_code = 2


@dataclass
class AppState:
    """Global options, and the store opened for this invocation (closed with the context)."""

    store_location: str = DEFAULT_STORE
    debug: bool = False

    def open_store(self, *, create: bool = False) -> pds.Store:
        """Open the store named by ``--store``; ``create=False`` refuses to make a new one."""
        store = pds.open_store(self.store_location, create=create)
        click.get_current_context().call_on_close(store.close)
        return store

    def open_vault(self, vault_id: str) -> pds.Vault:
        """The vault ``vault_id`` of the store, locked."""
        return self.open_store().open_vault(vault_id)


pass_state = click.make_pass_decorator(AppState, ensure=True)


@dataclass(frozen=True)
class OwnerCredential:
    """Exactly one owner secret: a passphrase or a key file. Its repr hides the passphrase."""

    passphrase: str | None = field(default=None, repr=False)
    key_file: Path | None = None

    @property
    def method(self) -> str:
        return "passphrase" if self.passphrase is not None else "key"


def json_option(function: F) -> F:
    """``--json``: print one JSON document on stdout instead of text."""
    return click.option(
        "--json",
        "as_json",
        is_flag=True,
        help="Print exactly one JSON document on stdout instead of text.",
    )(function)


def owner_options(function: F) -> F:
    """``--passphrase-file`` and ``--key-file``: where the owner's secret comes from."""
    function = click.option(
        "--key-file",
        type=click.Path(dir_okay=False, path_type=Path),
        help="Unlock with this 32-byte owner key file instead of a passphrase.",
    )(function)
    return click.option(
        "--passphrase-file",
        type=click.Path(dir_okay=False, path_type=Path),
        help=f"Read the passphrase from the first line of this file (else ${PASSPHRASE_ENV}, "
        "else a hidden prompt).",
    )(function)


def kdf_option(function: F) -> F:
    """``--kdf``: the Argon2id preset for a new passphrase."""
    return click.option(
        "--kdf",
        type=click.Choice(["interactive", "moderate", "sensitive"]),
        default="moderate",
        show_default=True,
        help="Argon2id cost preset for a new passphrase (libsodium's names).",
    )(function)


def _size_text(size: int) -> str:
    for unit, name in ((1024 * 1024, "MiB"), (1024, "KiB")):
        if size % unit == 0:
            return f"{size // unit} {name}"
    return f"{size} bytes"


def _read_prefix(stream: BinaryIO, size: int) -> bytes:
    """At most ``size`` bytes from the start of ``stream`` (fewer at its end)."""
    chunks: list[bytes] = []
    missing = size
    while missing > 0:
        chunk = stream.read(missing)
        if not chunk:
            break
        chunks.append(chunk)
        missing -= len(chunk)
    return b"".join(chunks)


def read_at_most(stream: BinaryIO, limit: int, label: str) -> bytes:
    """Everything ``stream`` holds, if that is at most ``limit`` bytes; ``InputError``
    (exit 2) otherwise. At most ``limit + 1`` bytes are read, so an endless input
    (``/dev/zero``, ``yes``) is refused without filling memory."""
    data = _read_prefix(stream, limit + 1)
    if len(data) > limit:
        raise InputError(f"{label} is larger than {_size_text(limit)}")
    return data


def read_file_at_most(path: Path, limit: int, label: str) -> bytes:
    """``read_at_most`` of the file ``path``; an unreadable file is ``InputError`` too."""
    try:
        with path.open("rb") as stream:
            return read_at_most(stream, limit, label)
    except OSError as exc:
        raise InputError(f"cannot read {label}: {exc.strerror}") from None


def read_passphrase_file(path: Path) -> str:
    """The first line of ``path``, without its line ending. Only the first line is read
    (at most ``MAX_PASSPHRASE_BYTES``)."""
    label = f"passphrase file {path}"
    try:
        with path.open("rb") as stream:
            data = _read_prefix(stream, MAX_PASSPHRASE_BYTES + 1)
    except OSError as exc:
        raise InputError(f"cannot read {label}: {exc.strerror}") from None
    first = data.split(b"\n", 1)[0]
    if len(first) > MAX_PASSPHRASE_BYTES:
        raise InputError(f"the first line of {label} is longer than 64 KiB")
    try:
        return first.decode("utf-8").rstrip("\r")
    except UnicodeDecodeError:
        raise InputError(f"{label} is not UTF-8 text") from None


def standard_input(what: str) -> TextIO:
    """The process's stdin, to read ``what`` from; ``InputError`` (exit 2) if it is closed
    (``<&-``: Python then has no ``sys.stdin`` at all)."""
    stream = sys.stdin
    if stream is None:
        raise InputError(f"cannot read {what} from stdin: it is closed")
    return stream


def _terminal_available() -> bool:
    """Whether the process has a controlling terminal (``/dev/tty``) to prompt on."""
    try:
        fd = os.open("/dev/tty", os.O_RDWR | os.O_NOCTTY)
    except OSError:
        return False
    os.close(fd)
    return True


def _read_line_without_terminal(stdin: TextIO, label: str) -> str | None:
    """The next line of ``stdin`` (not a terminal: nothing is echoed), without its line
    ending, after showing ``label`` on stderr; ``None`` at the end of input or for an empty
    line (no one is there to be asked again). At most ``MAX_PASSPHRASE_BYTES`` characters
    are read: a longer line is refused (``InputError``), never read whole.

    This is what getpass does without a terminal, minus its warnings that input may be
    echoed (it cannot be: there is no terminal to echo it)."""
    click.echo(f"{label}: ", nl=False, err=True)
    line = stdin.readline(MAX_PASSPHRASE_BYTES + 1)
    click.echo(err=True)
    value = line.rstrip("\n").rstrip("\r")
    if len(value) > MAX_PASSPHRASE_BYTES:
        raise InputError("the passphrase read from standard input is longer than 64 KiB")
    return value or None


def _prompt_passphrase(label: str, *, confirm: bool, env: str) -> str:
    no_passphrase = InputError(
        f"no passphrase entered (set ${env} or use a passphrase or key file option)"
    )
    stdin = sys.stdin
    if stdin is None:
        # Closed stdin: there is nothing to prompt on (getpass would fail on it).
        raise no_passphrase
    if not stdin.isatty() and not _terminal_available():
        value = _read_line_without_terminal(stdin, label)
        if value is None:
            raise no_passphrase
        if confirm:
            again = _read_line_without_terminal(stdin, "Repeat for confirmation")
            if again is None:
                raise no_passphrase
            if again != value:
                raise InputError("the two passphrases entered do not match")
        return value
    try:
        with warnings.catch_warnings():
            # Should getpass still fall back to stdin, its warning is noise on stderr.
            warnings.simplefilter("ignore", getpass.GetPassWarning)
            prompted: str = click.prompt(
                label,
                hide_input=True,
                confirmation_prompt=confirm,
                err=True,
                type=str,
            )
    except click.Abort:
        raise no_passphrase from None
    return prompted


def owner_credential(
    passphrase_file: Path | None, key_file: Path | None, *, confirm: bool = False
) -> OwnerCredential:
    """Resolve the owner's secret. ``confirm`` asks twice when prompting (a new secret)."""
    if passphrase_file is not None and key_file is not None:
        raise click.UsageError("give --passphrase-file or --key-file, not both")
    if key_file is not None:
        return OwnerCredential(key_file=key_file)
    if passphrase_file is not None:
        return OwnerCredential(passphrase=read_passphrase_file(passphrase_file))
    from_env = os.environ.get(PASSPHRASE_ENV)
    if from_env:
        return OwnerCredential(passphrase=from_env)
    return OwnerCredential(
        passphrase=_prompt_passphrase("Passphrase", confirm=confirm, env=PASSPHRASE_ENV)
    )


def new_owner_credential(
    new_passphrase_file: Path | None, new_key_file: Path | None
) -> OwnerCredential:
    """Resolve the new secret for ``vault passwd`` (``PDS_NEW_PASSPHRASE`` or a prompt)."""
    if new_passphrase_file is not None and new_key_file is not None:
        raise click.UsageError("give --new-passphrase-file or --new-key-file, not both")
    if new_key_file is not None:
        return OwnerCredential(key_file=new_key_file)
    if new_passphrase_file is not None:
        return OwnerCredential(passphrase=read_passphrase_file(new_passphrase_file))
    from_env = os.environ.get(NEW_PASSPHRASE_ENV)
    if from_env:
        return OwnerCredential(passphrase=from_env)
    return OwnerCredential(
        passphrase=_prompt_passphrase("New passphrase", confirm=True, env=NEW_PASSPHRASE_ENV)
    )


def unlock(vault: pds.Vault, credential: OwnerCredential) -> None:
    """Unlock ``vault`` with the owner's credential (raises ``UnlockFailed`` if wrong)."""
    vault.unlock(passphrase=credential.passphrase, key_file=credential.key_file)


def check_replaceable(file: Path) -> None:
    """Refuse (exit 2) an output file that exists and is not a regular file: a new file is
    renamed over it (``replace_file``, an export), which would replace a FIFO, a device node
    or a socket (not write to it)."""
    try:
        mode = file.stat().st_mode
    except FileNotFoundError:
        return
    except OSError as exc:
        raise InputError(f"cannot use {file}: {exc.strerror}") from None
    if not stat.S_ISREG(mode):
        raise InputError(f"{file} exists and is not a regular file: it is not replaced")


def replace_file(path: Path, data: bytes) -> None:
    """Write ``data`` to a new file beside ``path`` (mode 0600), ``fsync`` it and rename
    it over ``path``: a reader sees the old file or the whole new one, never a part."""
    try:
        handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    except OSError as exc:  # named by the user's path, not the temporary one
        raise click.ClickException(f"cannot write {path}: {exc.strerror}") from None
    try:
        with os.fdopen(handle, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise


def unlocked_vault(
    state: AppState, vault_id: str, passphrase_file: Path | None, key_file: Path | None
) -> pds.Vault:
    """Open ``vault_id`` (failing fast if it does not exist), then ask for and check the
    owner's secret."""
    vault = state.open_vault(vault_id)
    unlock(vault, owner_credential(passphrase_file, key_file))
    return vault


# click >= 8.5 makes ParamType generic; subscripting it would fail on the older clicks that
# pyproject allows, so the type arguments stay implicit.
class Timestamp(click.ParamType):  # type: ignore[type-arg]
    """An ISO 8601 date or timestamp, as an aware datetime in UTC; one without a UTC offset
    is taken as UTC."""

    name = "timestamp"

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> datetime:
        if isinstance(value, datetime):
            moment = value
        else:
            try:
                moment = datetime.fromisoformat(str(value))
            except ValueError:
                self.fail(f"{value!r} is not an ISO 8601 timestamp", param, ctx)
        if moment.tzinfo is None:
            return moment.replace(tzinfo=UTC)
        try:
            # In UTC, as every time is shown; an offset can push a date past year 1 or 9999.
            return moment.astimezone(UTC)
        except OverflowError:
            self.fail(f"{value!r} is outside the years 1 to 9999 in UTC", param, ctx)
