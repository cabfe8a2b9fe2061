"""Fuzz target ``audit``: the offline auditor (``audit.verify_audit``) on a changed package.

The package is the world's audit package. The first input byte picks what changes:

0-4. one of its files (``audit.FILES``) is replaced by the rest of the input;
5. the rest is the auditor's trusted head (``--trusted-head``);
6. the rest is the plaintext details of one released access in ``log.jsonl``, sealed there
   with a disclosure key of the input's choosing. Anyone can do this: the box needs no
   secret, and a changed entry only adds a ``checkpoint`` violation, so the auditor goes on
   to judge the details;
7. the rest is the body of ``revocations.bin``, signed with the world's identity key (what
   the vault's owner could sign);
8. as 6, but the details are the genuine ones with one field replaced (``fuzz._mutate``).

The report must come back (its JSON form too) or a ``PDSError`` be raised.
"""

from __future__ import annotations

import atexit
import base64
import functools
import hashlib
import json
import shutil
import tempfile
from pathlib import Path

import nacl.bindings as sodium

from fuzz._data import Data
from fuzz._mutate import replace_field
from fuzz._world import world
from fuzz.targets import fuzz_target
from pds import _codec, _crypto, accesslog, audit, capability

__all__ = ["TestOneInput"]

_EPHEMERAL = bytes(range(32))
_on_disk: dict[str, bytes] = {}


@functools.cache
def _package() -> tuple[Path, dict[str, bytes]]:
    """A scratch copy of the world's package (rewritten for every input) and its files."""
    source = world().audit_dir
    directory = Path(tempfile.mkdtemp(prefix="pds-fuzz-audit-"))
    atexit.register(shutil.rmtree, directory, True)
    return directory, {name: (source / name).read_bytes() for name in audit.FILES}


def _sealed_details(details: bytes, key: bytes) -> bytes:
    owner_public = _crypto.ed25519_to_x25519(world().identity.public)
    nonce = hashlib.blake2b(_EPHEMERAL + owner_public, digest_size=24).digest()
    return _EPHEMERAL + bytes(sodium.crypto_box_afternm(details, nonce, key))


def _released(log: bytes, choice: int) -> tuple[int, accesslog.LogEntry]:
    """The line number and entry of one access that released data."""
    released = []
    for number, line in enumerate(log.decode().splitlines()):
        entry = accesslog.LogEntry.parse(base64.b64decode(json.loads(line)["entry"]))
        if entry.kind in ("read", "list") and entry.link_id is not None:
            released.append((number, entry))
    return released[choice % len(released)]


def _with_details(log: bytes, choice: int, details: bytes) -> bytes:
    lines = log.decode().splitlines()
    number, entry = _released(log, choice)
    key = hashlib.sha256(b"disclosure key").digest()
    raw = accesslog.encode_entry(
        vault_id=entry.vault_id,
        index=entry.index,
        time=entry.time,
        kind=entry.kind,
        result="released",
        link_id=entry.link_id,
        disclose_after=entry.disclose_after,
        sealed=_sealed_details(details, key),
    )
    item = {"index": entry.index, "entry": base64.b64encode(raw).decode()}
    item["key"] = base64.b64encode(key).decode()
    lines[number] = json.dumps(item)
    return ("\n".join(lines) + "\n").encode()


@fuzz_target
def TestOneInput(data: bytes) -> None:
    directory, originals = _package()
    files = dict(originals)
    reader = Data(data)
    mode = reader.byte() % 9
    trusted: str | None = None
    if mode < len(audit.FILES):
        files[audit.FILES[mode]] = reader.rest()
    elif mode == 5:
        trusted = reader.rest().decode("utf-8", "surrogateescape")
    elif mode == 6:
        choice = reader.byte()
        files["log.jsonl"] = _with_details(files["log.jsonl"], choice, reader.rest())
    elif mode == 8:
        choice = reader.byte()
        _, entry = _released(files["log.jsonl"], choice)
        details = entry.open(world().vault._keys().x25519_secret)
        replace_field(details, reader)
        files["log.jsonl"] = _with_details(files["log.jsonl"], choice, _codec.encode(details))
    else:
        body = reader.rest()
        signature = world().identity.sign(capability.REVOCATION_LIST_LABEL, body)
        files["revocations.bin"] = _codec.encode({"body": body, "sig": signature})
    # Rewrite only what differs from the package as it is on disk (the last input's).
    for name, content in files.items():
        if _on_disk.get(name) != content:
            (directory / name).write_bytes(content)
            _on_disk[name] = content
    report = audit.verify_audit(directory, trusted_head=trusted)
    json.dumps(report.to_dict())
