"""``pds key ...``: principal key pairs (grantees, depositors, proxies)."""

from __future__ import annotations

from pathlib import Path

import click

import pds

from .output import emit
from .state import json_option

__all__ = ["key"]


@click.group()
def key() -> None:
    """Create principal key files (Ed25519, named by a did:key)."""


@key.command("new", short_help="Create an Ed25519 principal key file.")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@json_option
def new(file: Path, as_json: bool) -> None:
    """Create a new Ed25519 principal key file FILE (mode 0600) and print its did:key.

    FILE holds the secret key: whoever reads it acts as this principal. An existing file
    is never overwritten.
    """
    principal = pds.PrincipalKey.create_file(file)
    emit(
        as_json,
        {"did": principal.did, "file": str(file)},
        [f"created principal key {file} (mode 0600)", f"did: {principal.did}"],
    )
