"""The ``pds`` command line: a thin client of the public ``pds`` API.

Every command runs through one error funnel (``PdsGroup.main``), which holds the exit-code
contract:

* 0: the command succeeded.
* 1: the operation failed (``pds.errors.PDSError``: wrong passphrase, unknown vault or
  record, integrity failure, missing store, a refused token: ``access denied (<reason>)``),
  a verification found a violation (``token verify``, ``audit verify``, a log that does not
  extend the pinned head), or the user aborted a confirmation.
* 2: usage error or malformed input (click usage errors, ``pds.errors.FormatError`` and its
  subclasses, unreadable or invalid input files).
* 130: interrupted (Ctrl-C).

A failure prints exactly one line, ``error: <message>``, on stderr and nothing on stdout.
pds messages never hold secrets or record data; for any other exception only its type is
shown, since its message could. ``--debug`` adds the traceback.
"""

from __future__ import annotations

import contextlib
import os
import sys
import traceback
from collections.abc import Sequence
from typing import Any

import click

import pds
from pds import errors

from .audit_cmds import audit_group
from .demo import demo
from .grant_cmds import grant, grants, revocations, revoke
from .key_cmds import key
from .log_cmds import log
from .output import printable
from .records import delete, get, history, list_records, put
from .state import DEFAULT_STORE, STORE_ENV, AppState
from .token_cmds import read, token
from .vault_cmds import vault

__all__ = ["EXIT_FAILURE", "EXIT_INTERRUPTED", "EXIT_OK", "EXIT_USAGE", "PdsGroup", "cli", "main"]

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


def _one_line(message: str) -> str:
    """The message on one line, with any character a terminal must not see escaped."""
    return printable(" ".join(message.split()))


def _report(message: str, exc: BaseException | None, *, debug: bool) -> None:
    if debug and exc is not None:
        traceback.print_exception(exc, file=sys.stderr)
    click.echo(f"error: {_one_line(message)}", err=True)


def _usage_message(exc: click.UsageError) -> str:
    message = exc.format_message()
    if exc.ctx is not None:
        message = f"{message} (see '{exc.ctx.command_path} --help')"
    return message


def _silence_stdout() -> None:
    # The reader of our stdout went away (``pds list | head``): point stdout at /dev/null
    # so the interpreter's final flush does not fail a second time.
    with contextlib.suppress(OSError, ValueError, AttributeError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)


class PdsGroup(click.Group):
    """The root group; its ``main`` is the one error funnel of the CLI."""

    def main(
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        windows_expand_args: bool = True,
        **extra: Any,
    ) -> Any:
        if not standalone_mode:
            return super().main(
                args,
                prog_name,
                complete_var,
                standalone_mode=False,
                windows_expand_args=windows_expand_args,
                **extra,
            )
        state = extra.get("obj")
        if not isinstance(state, AppState):
            state = AppState()
            extra["obj"] = state
        code = self._run(state, args, prog_name, complete_var, windows_expand_args, extra)
        sys.exit(code)

    def _run(
        self,
        state: AppState,
        args: Sequence[str] | None,
        prog_name: str | None,
        complete_var: str | None,
        windows_expand_args: bool,
        extra: dict[str, Any],
    ) -> int:
        try:
            result = super().main(
                args,
                prog_name,
                complete_var,
                standalone_mode=False,
                windows_expand_args=windows_expand_args,
                **extra,
            )
        except errors.FormatError as exc:
            _report(str(exc), exc, debug=state.debug)
            return EXIT_USAGE
        except errors.AccessDenied as exc:
            # A refused token or request: the reason code names the rule that failed, as
            # the host logged it; the message adds nothing a grantee should rely on.
            _report(f"access denied ({exc.reason})", exc, debug=state.debug)
            return EXIT_FAILURE
        except errors.PDSError as exc:
            _report(str(exc), exc, debug=state.debug)
            return EXIT_FAILURE
        except click.exceptions.NoArgsIsHelpError as exc:
            exc.show()
            return exc.exit_code
        except click.UsageError as exc:
            _report(_usage_message(exc), exc, debug=state.debug)
            return exc.exit_code
        except click.ClickException as exc:
            _report(exc.format_message(), exc, debug=state.debug)
            return exc.exit_code
        except click.Abort as exc:
            if isinstance(exc.__cause__, KeyboardInterrupt):
                _report("interrupted", exc, debug=state.debug)
                return EXIT_INTERRUPTED
            _report("aborted", exc, debug=state.debug)
            return EXIT_FAILURE
        except KeyboardInterrupt as exc:
            _report("interrupted", exc, debug=state.debug)
            return EXIT_INTERRUPTED
        except BrokenPipeError:
            _silence_stdout()
            return EXIT_FAILURE
        except OSError as exc:
            # A file the user named (an export destination, say) could not be used. The
            # file name and the system's reason are shown, nothing else.
            message = exc.strerror or type(exc).__name__
            if exc.filename:
                message = f"{message}: {exc.filename}"
            _report(message, exc, debug=state.debug)
            return EXIT_FAILURE
        except Exception as exc:
            # Not a pds error: its message could hold anything, so only its type is shown.
            _report(
                f"unexpected {type(exc).__name__} (rerun with --debug for the traceback)",
                exc,
                debug=state.debug,
            )
            return EXIT_FAILURE
        return result if isinstance(result, int) else EXIT_OK


@click.group(cls=PdsGroup, name="pds")
@click.option(
    "--store",
    "store_location",
    envvar=STORE_ENV,
    default=DEFAULT_STORE,
    show_default=True,
    metavar="PATH",
    help=f"The store: a path or sqlite:///path (env ${STORE_ENV}).",
)
@click.option("--debug", is_flag=True, help="Show the traceback when a command fails.")
@click.version_option(pds.__version__, prog_name="pds")
@click.pass_context
def cli(ctx: click.Context, store_location: str, debug: bool) -> None:
    """pds: a personal data store of encrypted per-person vaults.

    The owner's secret is never a command-line argument: it comes from --key-file,
    --passphrase-file, $PDS_PASSPHRASE, or a hidden prompt. Every command takes --json
    to print exactly one JSON document on stdout. Exit codes: 0 ok, 1 failure, 2 usage
    error or malformed input.
    """
    state = ctx.ensure_object(AppState)
    state.store_location = store_location
    state.debug = debug


cli.add_command(vault)
cli.add_command(put)
cli.add_command(get)
cli.add_command(list_records)
cli.add_command(history)
cli.add_command(delete)
cli.add_command(key)
cli.add_command(grant)
cli.add_command(grants)
cli.add_command(revoke)
cli.add_command(revocations)
cli.add_command(token)
cli.add_command(read)
cli.add_command(log)
cli.add_command(audit_group)
cli.add_command(demo)


def main() -> None:
    """Console-script entry point."""
    cli.main(prog_name="pds")


if __name__ == "__main__":
    main()
