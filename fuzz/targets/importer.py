"""Fuzz target ``importer``: ``Store.import_vault`` on mutated export files (``_export``).

The first input byte picks the mode (its value modulo 3), the rest is the export file:

* 0: imported as given. An export that imports is one the vault key signed (the end
  signature covers every byte before it), so the imported vault must then open, verify its
  log and read every record without any error at all.
* 1: first repaired as the vault's owner could (``repair``): the header, epoch
  certificates, batch manifests (with the digests of the records that follow them),
  revocations, the checkpoint (over the log frames present) and the end frame (digest,
  counts) are re-signed with the world's identity key, so mutations reach the checks
  behind the signatures. An import that succeeds may then hold whatever the owner signed,
  so reading it back may be refused, with a ``PDSError`` only.
* 2: the rest is not a file but a structured mutation (``fuzz._mutate``): one field of one
  frame of the world's genuine export is replaced (fields of the canonical documents that
  frames carry as bytes, such as log entries and manifests, included), then the file is
  repaired as in 1.

Imports go to a store of this process's own; after a successful import it is replaced by
an empty one, so every input meets the same empty store.
"""

from __future__ import annotations

import atexit
import contextlib
import hashlib
import io
import shutil
import struct
import tempfile
from pathlib import Path
from typing import Any

import pds
from fuzz._data import Data
from fuzz._mutate import replace_field
from fuzz._world import World, world
from fuzz.targets import fuzz_target
from pds import _codec, _envelope, _export, capability, merkle
from pds.accesslog import Checkpoint
from pds.errors import PDSError

__all__ = ["TestOneInput", "repair"]

_LENGTH = struct.Struct(">I")
# What a repair may run into on a mutated frame; the frame is then left as it is.
_REPAIR_ERRORS = (PDSError, TypeError, ValueError, KeyError, IndexError, AttributeError)

Frame = dict[str, Any] | bytes


def _split(data: bytes) -> tuple[list[Frame], bytes] | None:
    if not data.startswith(_export.MAGIC):
        return None
    frames: list[Frame] = []
    position = len(_export.MAGIC)
    while position + 4 <= len(data):
        (length,) = _LENGTH.unpack_from(data, position)
        if position + 4 + length > len(data):
            break
        raw = data[position + 4 : position + 4 + length]
        position += 4 + length
        try:
            document = _codec.decode(raw)
        except PDSError:
            document = None
        frames.append(document if isinstance(document, dict) else raw)
    return frames, data[position:]


def _repair_manifest(frame: dict[str, Any], records: list[dict[str, Any]], vault_id: str) -> None:
    manifest = _codec.decode(frame["manifest"])
    by_key = {(r["record"], r["version"]): r for r in records}
    for entry in manifest["entries"]:
        record = by_key.get((entry[0], entry[1]))
        if record is None or record["nonce"] is None or record["ciphertext"] is None:
            continue
        binding = _envelope.binding(
            vault_id,
            record["collection"],
            record["record"],
            record["version"],
            record["epoch"],
            record["batch"],
            record["deleted"],
        )
        entry[3] = _envelope.entry_hash(binding, record["nonce"], record["ciphertext"])
    manifest["reader"] = hashlib.sha256(frame["sealed_reader"]).digest()
    frame["manifest"] = _codec.encode(manifest)


def _repair_frame(
    frame: dict[str, Any], following: list[Frame], w: World, vault_id: str, log: list[bytes]
) -> None:
    signer = w.identity
    kind = frame.get("t")
    if kind == "vault":
        signed = {name: value for name, value in frame.items() if name != "signature"}
        frame["signature"] = signer.sign(_export.HEADER_SIGNATURE_LABEL, _codec.encode(signed))
    elif kind == "epoch":
        certificate = _envelope.epoch_certificate(
            vault_id,
            frame["collection"],
            frame["epoch"],
            frame["public_key"],
            frame["created_at"],
            frame["seal_fields"],
        )
        frame["signature"] = signer.sign(_envelope.EPOCH_SIGNATURE_LABEL, certificate)
    elif kind == "batch":
        records = []
        for item in following:
            if not isinstance(item, dict) or item.get("t") != "record":
                break
            records.append(item)
        _repair_manifest(frame, records, vault_id)
        frame["signature"] = signer.sign(_envelope.BATCH_SIGNATURE_LABEL, frame["manifest"])
    elif kind == "revocation":
        frame["signature"] = signer.sign(capability.REVOCATION_LABEL, frame["statement"])
    elif kind == "checkpoint":
        head = Checkpoint.parse(frame["note"])
        if head.size <= len(log):
            root = merkle.root([merkle.leaf_hash(entry) for entry in log[: head.size]])
            head = Checkpoint.sign(
                signer, vault_id, head.size, root, head.time, records=head.records
            )
        frame["note"] = head.to_text()


def repair(data: bytes, w: World) -> bytes:
    """Re-sign what the vault's owner signs in an export file (best effort, frame by
    frame: a frame too mangled to repair is kept as it is)."""
    split = _split(data)
    if split is None:
        return data
    frames, tail = split
    header = frames[0] if frames else None
    vault_id = header.get("vault") if isinstance(header, dict) else None
    if not isinstance(vault_id, str):
        vault_id = w.vault_id
    log = [
        f["entry"]
        for f in frames
        if isinstance(f, dict) and f.get("t") == "log" and isinstance(f.get("entry"), bytes)
    ]
    counts = dict.fromkeys(_export._COUNTED.values(), 0)
    out = io.BytesIO()
    out.write(_export.MAGIC)
    for position, frame in enumerate(frames):
        if isinstance(frame, dict):
            kind = frame.get("t")
            if kind == "end":
                digest = hashlib.sha256(out.getvalue()).digest()
                frame["counts"] = dict(counts)
                frame["digest"] = digest
                statement = _export._end_statement(vault_id, digest, counts)
                frame["signature"] = w.identity.sign(_export.END_SIGNATURE_LABEL, statement)
            else:
                with contextlib.suppress(*_REPAIR_ERRORS):
                    _repair_frame(frame, frames[position + 1 :], w, vault_id, log)
            try:
                body = _codec.encode(frame)
            except PDSError:
                continue
            if isinstance(kind, str) and kind in _export._COUNTED:
                counts[_export._COUNTED[kind]] += 1
        else:
            body = frame
        out.write(_LENGTH.pack(len(body)) + body)
    out.write(tail)
    return out.getvalue()


def _join(frames: list[Frame], tail: bytes) -> bytes:
    out = [_export.MAGIC]
    for frame in frames:
        body = _codec.encode(frame) if isinstance(frame, dict) else frame
        out.append(_LENGTH.pack(len(body)) + body)
    out.append(tail)
    return b"".join(out)


def field_mutated(w: World, data: Data) -> bytes:
    """The world's export with one field of one frame replaced, then repaired."""
    split = _split(w.export)
    assert split is not None
    frames, tail = split
    frame = frames[data.byte() % len(frames)]
    if isinstance(frame, dict):
        replace_field(frame, data)
    try:
        mutated = _join(frames, tail)
    except PDSError:
        return w.export
    return repair(mutated, w)


class _Destination:
    """This process's import store, replaced by an empty one after each successful import."""

    def __init__(self) -> None:
        self.directory = Path(tempfile.mkdtemp(prefix="pds-fuzz-import-"))
        self.generation = 0
        self.store = self._open()

    def _open(self) -> pds.Store:
        self.generation += 1
        path = self.directory / f"import-{self.generation}.db"
        return pds.open_store(path, synchronous="normal")

    def reset(self) -> None:
        self.store.close()
        for path in self.directory.iterdir():
            path.unlink()
        self.store = self._open()

    def close(self) -> None:
        self.store.close()
        shutil.rmtree(self.directory, ignore_errors=True)


_destination: _Destination | None = None


def _store() -> _Destination:
    global _destination  # noqa: PLW0603 - one import store per process, made on first use
    if _destination is None:
        _destination = _Destination()
        atexit.register(_destination.close)
    return _destination


def _read_back(store: pds.Store, vault_id: str, key_file: Path) -> None:
    vault = store.open_vault(vault_id)
    vault.unlock(key_file=key_file)
    head = vault.latest_checkpoint()
    if head is not None:
        vault.verify_log(head)
    for info in vault.iter_records():
        vault.history(info.record_id)
    vault.grants()
    vault.access_log()


@fuzz_target
def TestOneInput(data: bytes) -> None:
    if not data:
        return
    w = world()
    mode = data[0] % 3
    repaired = mode != 0
    if mode == 0:
        export = data[1:]
    elif mode == 1:
        export = repair(data[1:], w)
    else:
        export = field_mutated(w, Data(data[1:]))
    destination = _store()
    try:
        vault_id = destination.store.import_vault(io.BytesIO(export), key_file=w.key_file)
    except PDSError:
        return
    try:
        if repaired:
            with contextlib.suppress(PDSError):
                _read_back(destination.store, vault_id, w.key_file)
            return
        # An export that imports as given is one the vault key signed (the end signature
        # covers every byte before it): it must read back whole.
        try:
            _read_back(destination.store, vault_id, w.key_file)
        except PDSError as exc:
            raise AssertionError(f"an imported vault does not read back: {exc!r}") from exc
    finally:
        destination.reset()
