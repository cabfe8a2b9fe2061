"""``pds put/get/list/history/delete``: the records of a vault."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Any, NoReturn

import click

from pds.vault import MAX_RECORD_SIZE

from .heads import signing_vault
from .output import (
    emit,
    iso,
    pretty_json,
    record_document,
    record_info_document,
    table,
)
from .state import (
    AppState,
    InputError,
    Timestamp,
    json_option,
    owner_options,
    pass_state,
    read_at_most,
    read_file_at_most,
    standard_input,
)

__all__ = ["delete", "get", "history", "list_records", "put"]

# Vault.list refuses larger pages; checking here too turns a bad --limit into click's usage
# error that names the option.
MAX_LIST_LIMIT = 1000
# A record's JSON text is read only up to this size (its data may be at most 16 MiB once
# encoded; JSON spends up to six bytes on a character, and whitespace).
MAX_RECORD_INPUT = 4 * MAX_RECORD_SIZE


def _reject_constant(name: str) -> NoReturn:
    raise ValueError(f"{name} is not valid JSON")


def _unique_object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            # The key is named, never the value: record data stays out of messages.
            raise ValueError("duplicate key in a JSON object")
        result[key] = value
    return result


def read_record_document(source: str) -> dict[str, Any]:
    """Read one JSON object from ``source`` (a path, or ``-`` for stdin).

    Strict: NaN and Infinity, duplicate keys, trailing data and non-objects are refused
    (``InputError``, exit 2). Messages name the position, never the content.
    """
    name = "stdin" if source == "-" else source
    if source == "-":
        stdin = standard_input("the record")
        if stdin.isatty():
            click.echo("reading a JSON object from stdin (end with Ctrl-D)", err=True)
        try:
            raw = read_at_most(stdin.buffer, MAX_RECORD_INPUT, name)
        except OSError as exc:
            raise InputError(f"cannot read {name}: {exc.strerror}") from None
    else:
        raw = read_file_at_most(Path(source), MAX_RECORD_INPUT, name)
    try:
        document = json.loads(
            raw, object_pairs_hook=_unique_object, parse_constant=_reject_constant
        )
    except json.JSONDecodeError as exc:
        raise InputError(
            f"{name} is not valid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})"
        ) from None
    except UnicodeDecodeError:
        raise InputError(f"{name} is not UTF-8 text") from None
    except (ValueError, RecursionError) as exc:
        raise InputError(f"{name} is not valid JSON: {exc}") from None
    if not isinstance(document, dict):
        raise InputError(f"{name} must hold a JSON object, not {type(document).__name__}")
    return document


@click.command("put", short_help="Store a JSON object as a record (or a new version).")
@click.argument("vault_id", metavar="VAULT")
@click.argument("collection")
@click.argument("file", default="-", metavar="[FILE|-]")
@click.option(
    "--record",
    "record_id",
    metavar="ID",
    help="Write a new version of this existing record (same collection) instead of a new record.",
)
@owner_options
@json_option
@pass_state
def put(
    state: AppState,
    vault_id: str,
    collection: str,
    file: str,
    record_id: str | None,
    passphrase_file: Path | None,
    key_file: Path | None,
    as_json: bool,
) -> int:
    """Store one JSON object from FILE (or stdin) as a record of COLLECTION in VAULT.

    Prints the new record's id and version. With --record ID, appends a new version to
    that record; every earlier version is kept (see 'pds history').
    """
    # The record is read before the passphrase prompt, so piping it on stdin still works
    # with a prompt on the terminal.
    data = read_record_document(file)
    opened = signing_vault(state, vault_id, passphrase_file, key_file, changing=True)
    if opened is None:
        return 1
    if record_id is not None:
        # The library would accept any id here (and start a new record, or move the record
        # to another collection); --record promises a new version of an existing record.
        current = opened.get(record_id)
        if current.collection != collection:
            raise InputError(
                f"record {record_id} is in collection {current.collection!r}, not {collection!r}"
            )
    info = opened.put(collection, data, record_id=record_id)
    document = record_info_document(info)
    document["vault"] = opened.vault_id
    emit(
        as_json,
        document,
        f"stored record {info.record_id} version {info.version} in {info.collection}",
    )
    return 0


@click.command("get", short_help="Decrypt and print a record.")
@click.argument("vault_id", metavar="VAULT")
@click.argument("record_id", metavar="RECORD")
@owner_options
@json_option
@pass_state
def get(
    state: AppState,
    vault_id: str,
    record_id: str,
    passphrase_file: Path | None,
    key_file: Path | None,
    as_json: bool,
) -> int:
    """Decrypt and print the current version of RECORD, verified. Refused (WARNING, exit 1)
    if the store's log does not extend the head pinned on an earlier visit: the owner read
    is logged under a head the owner's key signs."""
    opened = signing_vault(state, vault_id, passphrase_file, key_file)
    if opened is None:
        return 1
    record = opened.get(record_id)
    document = record_document(record)
    document["vault"] = opened.vault_id
    lines = [
        f"record     {record.record_id}",
        f"collection {record.collection}",
        f"version    {record.version}",
        f"created    {iso(record.created_at)}",
        f"writer     {record.writer}",
        *pretty_json(record.data),
    ]
    emit(as_json, document, lines)
    return 0


@click.command("list", short_help="List records, metadata only (no secret needed).")
@click.argument("vault_id", metavar="VAULT")
@click.option("--collection", "-c", help="Only records of this collection.")
@click.option(
    "--since",
    type=Timestamp(),
    help="Only records whose current version was written at or after this ISO 8601 time.",
)
@click.option(
    "--until",
    type=Timestamp(),
    help="Only records whose current version was written before this ISO 8601 time.",
)
@click.option(
    "--limit",
    type=click.IntRange(1, MAX_LIST_LIMIT),
    default=100,
    show_default=True,
    help="Records per page.",
)
@click.option("--cursor", help="Continue after the page that printed this cursor.")
@json_option
@pass_state
def list_records(
    state: AppState,
    vault_id: str,
    collection: str | None,
    since: datetime | None,
    until: datetime | None,
    limit: int,
    cursor: str | None,
    as_json: bool,
) -> None:
    """List the live records of VAULT, oldest first, one page (metadata only).

    Needs no secret: it shows only what the host can see anyway (ids, collections,
    versions, times, sizes), never content.
    """
    opened = state.open_vault(vault_id)
    page = opened.list(collection, since=since, until=until, limit=limit, cursor=cursor)
    documents = [record_info_document(info) for info in page.records]
    if page.records:
        lines = table(
            ["RECORD", "COLLECTION", "VERSION", "CREATED", "SIZE"],
            [
                [
                    info.record_id,
                    info.collection,
                    str(info.version),
                    iso(info.created_at),
                    str(info.size),
                ]
                for info in page.records
            ],
        )
    else:
        lines = ["no records"]
    if page.cursor is not None:
        lines.append(f"more records: pds list {vault_id} --cursor {page.cursor}")
    emit(as_json, {"vault": opened.vault_id, "records": documents, "cursor": page.cursor}, lines)


@click.command("history", short_help="Print every version of a record.")
@click.argument("vault_id", metavar="VAULT")
@click.argument("record_id", metavar="RECORD")
@owner_options
@json_option
@pass_state
def history(
    state: AppState,
    vault_id: str,
    record_id: str,
    passphrase_file: Path | None,
    key_file: Path | None,
    as_json: bool,
) -> int:
    """Print every version of RECORD, oldest first, each verified.

    The content of a deleted record's earlier versions is erased: they show no data.
    Refused (WARNING, exit 1) if the store's log does not extend the pinned head.
    """
    opened = signing_vault(state, vault_id, passphrase_file, key_file)
    if opened is None:
        return 1
    versions = opened.history(record_id)
    lines: list[str] = []
    for record in versions:
        if record.deleted:
            state_note = "deleted (tombstone)"
        elif record.erased:
            state_note = "content erased"
        else:
            state_note = ""
        lines.append(
            f"version {record.version}  {iso(record.created_at)}  {record.collection}  "
            f"epoch {record.epoch}  {state_note}".rstrip()
        )
        if record.data is not None:
            lines += pretty_json(record.data, indent="    ")
    document = {
        "vault": opened.vault_id,
        "record": record_id,
        "versions": [record_document(record) for record in versions],
    }
    emit(as_json, document, lines)
    return 0


@click.command("delete", short_help="Delete a record: tombstone, content erased.")
@click.argument("vault_id", metavar="VAULT")
@click.argument("record_id", metavar="RECORD")
@owner_options
@json_option
@pass_state
def delete(
    state: AppState,
    vault_id: str,
    record_id: str,
    passphrase_file: Path | None,
    key_file: Path | None,
    as_json: bool,
) -> int:
    """Delete RECORD: append a tombstone version and erase the content of every earlier
    version. The record's history (versions and times, no content) remains.
    """
    opened = signing_vault(state, vault_id, passphrase_file, key_file, changing=True)
    if opened is None:
        return 1
    info = opened.delete(record_id)
    document = record_info_document(info)
    document["vault"] = opened.vault_id
    emit(
        as_json,
        document,
        f"deleted record {info.record_id} (tombstone version {info.version}; content erased)",
    )
    return 0
