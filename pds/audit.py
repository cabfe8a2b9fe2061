"""Offline audit: decide, from exported files and public keys alone, whether every logged
access was authorised (design.md promise 9; ``docs/spec/log.md`` describes the package).

``export_audit(vault, directory)`` writes the package (the owner must be unlocked: tokens
and entry details are sealed to the owner; the package discloses each entry with its own
key). ``verify_audit(directory)`` needs nothing but the package: it verifies the
checkpoint, the log's hashes against it, consistency with a trusted earlier head, every
token chain and revocation signature, and, for every access that released data, whether a
valid, unrevoked, in-scope, right-purpose token authorised it at that moment.
"""

from __future__ import annotations

import base64
import bisect
import contextlib
import errno
import json
import os
import stat
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from pds import _codec, _crypto, _export, accesslog, capability, merkle
from pds.accesslog import (
    OWNER_KINDS,
    Checkpoint,
    LogEntry,
    open_disclosed,
    origin,
    revoked_digest,
    verifier_key,
)
from pds.errors import AccessDenied, FormatError, IntegrityError, InvalidProof

if TYPE_CHECKING:
    from pds._owner import OwnerKeys
    from pds.vault import Vault

__all__ = ["AuditReport", "Violation", "export_audit", "verify_audit"]

PACKAGE_FORMAT = "pds-audit/v1"
FILES = ("vault.json", "checkpoint.txt", "tokens.json", "revocations.bin", "log.jsonl")
_ACCESS_KINDS = ("read", "list")
_REVOCATION_KEYS = frozenset({"v", "vault", "link", "revoked_at", "reason"})
UNOPENABLE_KEY = bytes(32)
"""The key written for an entry that has no disclosure key (``docs/spec/log.md``)."""


@dataclass(frozen=True, slots=True)
class Violation:
    index: int | None
    """The log entry concerned, or ``None`` for the package as a whole."""
    rule: str
    """``checkpoint`` (an entry was changed, added or removed), ``consistency``,
    ``malformed-entry`` (the bytes at the index do not parse as an entry of this vault at
    that index: the host wrote or changed them), ``unknown-token``, ``token-invalid``,
    ``expired``, ``not-yet-valid``, ``revoked``, ``out-of-scope``, ``wrong-purpose``,
    ``wrong-ability``, ``wrong-holder``, ``budget``, ``undecryptable``,
    ``revocation-missing``, ``revocation-record``, ``owner-signature``, ``owner-withheld``,
    ``withheld``."""
    message: str


@dataclass(slots=True)
class AuditReport:
    vault_id: str
    did: str = ""
    """The vault identity the package was verified against (its ``did:key``): the auditor
    compares it with the one obtained from the person, or passes that as ``vault_did``."""
    entries: int = 0
    accesses: int = 0
    released: int = 0
    refused: int = 0
    undisclosed: int = 0
    violations: list[Violation] = field(default_factory=list)

    @property
    def clean(self) -> bool:
        return not self.violations

    def to_dict(self) -> dict[str, Any]:
        return {
            "vault": self.vault_id,
            "did": self.did,
            "clean": self.clean,
            "counts": {
                "entries": self.entries,
                "accesses": self.accesses,
                "released": self.released,
                "refused": self.refused,
                "undisclosed": self.undisclosed,
                "violations": len(self.violations),
            },
            "violations": [
                {"entry": v.index, "rule": v.rule, "message": v.message} for v in self.violations
            ],
        }


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(text: Any, what: str) -> bytes:
    if not isinstance(text, str):
        raise FormatError(f"{what} is not base64 text")
    try:
        return base64.b64decode(text, validate=True)
    except ValueError:
        raise FormatError(f"{what} is not base64") from None


def export_audit(vault: Vault, directory: str | os.PathLike[str]) -> Path:
    """Write an audit package for ``vault`` into ``directory`` (created; must be empty).

    Raises ``InvalidProof`` (``log-fork``) and writes nothing if the stored log does not
    extend the latest signed checkpoint, or if the entries written do not hash to the
    checkpoint signed for the package (the files written so far are removed): the owner's
    key never vouches for a log the host rewrote; ``InvalidProof`` (``log-gap``) the same
    way for an index missing from the store. Raises ``IntegrityError`` (``link``,
    ``revocation``) the same way for a stored link whose token does not open or a stored
    revocation that does not verify. A stored entry that does not parse, or names another
    index or vault, is written as it is with the key ``null`` (it is no entry: nothing to
    disclose); the verifier reports it (``malformed-entry``).
    """
    keys = vault._keys()
    target = Path(directory)
    # The package discloses every entry's details (personal data): the directory is created
    # 0700 and every file 0600, whatever the umask. An existing empty directory keeps its
    # mode.
    target.mkdir(mode=0o700, parents=True, exist_ok=True)
    if any(target.iterdir()):
        raise FormatError(f"the audit directory {target} is not empty")
    try:
        _write_package(vault, keys, target)
    except BaseException:
        for name in FILES:
            with contextlib.suppress(FileNotFoundError):
                (target / name).unlink()
        raise
    return target


def _open_private(path: Path) -> IO[bytes]:
    """A new file, readable and writable by its owner only (0600, not the umask's mode)."""
    return os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "wb")


def _write_private(path: Path, data: str | bytes) -> None:
    with _open_private(path) as out:
        out.write(data.encode("utf-8") if isinstance(data, str) else data)


def _write_package(vault: Vault, keys: OwnerKeys, target: Path) -> None:
    with vault._ctx.backend.transaction():
        # A forked log, or revocations or epochs its latest head does not record: refused
        # before anything is logged.
        vault._check_records()
        vault._log("export", {"audit": True})
    head = vault.checkpoint()
    identity = vault._row.identity_public
    ctx = vault._ctx
    tokens = []
    for link in ctx.backend.iter_links(vault.vault_id):
        # A damaged stored row is an integrity failure, not a crash or bad input. A token
        # that opens but fails verification is the auditor's to judge (token-invalid).
        try:
            sealed = _crypto.unseal(link.sealed_token, keys.x25519_secret)
            token = capability.Token.from_bytes(sealed)
        except (_crypto.AuthenticationFailed, FormatError):
            raise IntegrityError("link", "a known link failed authentication") from None
        tokens.append({"link": link.link_id.hex(), "token": token.to_text()})
    # The verifier raises on a revocation that does not verify: refuse to sign such a list.
    for revocation in ctx.backend.iter_revocations(vault.vault_id):
        _export.verify_revocation_row(revocation, vault._row)
    _write_private(
        target / "vault.json",
        json.dumps(
            {
                "format": PACKAGE_FORMAT,
                "vault": vault.vault_id,
                "did": vault.did,
                "identity": _b64(identity),
                "verifier_key": verifier_key(origin(vault.vault_id), identity),
            },
            indent=2,
        )
        + "\n",
    )
    _write_private(target / "checkpoint.txt", head.to_text())
    _write_private(target / "tokens.json", json.dumps(tokens, indent=2) + "\n")
    _write_private(target / "revocations.bin", vault.revocation_list())
    # The entries are hashed as they are written: checkpoint() compared the stored subtree
    # hashes with the previous head, but those are a cache the host could rewrite apart
    # from the entries.
    builder = merkle.RootBuilder()
    with _open_private(target / "log.jsonl") as out:
        for index, raw in ctx.backend.iter_log(vault.vault_id, 0, head.size):
            if index != builder.size:
                raise InvalidProof("an entry is missing from the log", "log-gap")
            builder.add(merkle.leaf_hash(raw))
            entry = _entry_at(raw, index, vault.vault_id)
            key: bytes | None = None  # No entry (the host's bytes): nothing to disclose.
            if entry is not None:
                try:
                    key = entry.disclosure_key(keys.x25519_secret)
                except IntegrityError:
                    # An ephemeral key of small order (the host wrote the entry): nobody
                    # can open it, and the verifier refuses to whatever the key. A key of
                    # zeros, not null, so the entry is reported undecryptable rather than
                    # withheld.
                    key = UNOPENABLE_KEY
            line = {"index": index, "entry": _b64(raw), "key": None if key is None else _b64(key)}
            out.write((json.dumps(line) + "\n").encode("ascii"))
    if builder.size != head.size or builder.root() != head.root:
        raise InvalidProof("the stored log entries do not hash to the signed head", "log-fork")


def _entry_at(raw: bytes, index: int, vault_id: str) -> LogEntry | None:
    """``raw`` parsed as entry ``index`` of ``vault_id``'s log, or ``None`` if it does not
    parse or names another index or vault: a leaf the host wrote (``docs/spec/log.md``,
    Entries), hashed as it is and no entry."""
    try:
        entry = LogEntry.parse(raw)
    except FormatError:
        return None
    return entry if entry.index == index and entry.vault_id == vault_id else None


# What the verifier reads of each package file, at most (docs/spec/log.md, "The audit
# package"): a package is not authenticated until it is read, and a file may be a FIFO that
# never ends, a link to /dev/zero or just huge.
MAX_VAULT_JSON = 64 * 1024
MAX_CHECKPOINT = 16 * 1024
"""A note is at most 4096 characters (``Checkpoint.parse``), UTF-8 at most 4 bytes each."""
MAX_TOKENS_JSON = 256 * 1024 * 1024
MAX_REVOCATIONS = 64 * 1024 * 1024
"""The canonical decoder's document limit, which the list's body must fit."""
MAX_LOG_LINE = 4 * -(-accesslog.MAX_ENTRY_BYTES // 3) + 1024
"""A line holds base64 of one entry (at most ``MAX_ENTRY_BYTES``), its index and key."""


@contextlib.contextmanager
def _package_file(root: Path, name: str) -> Iterator[IO[bytes]]:
    """Open a package file for reading: not through a symbolic link (``O_NOFOLLOW``),
    without blocking on a FIFO (``O_NONBLOCK``), and only if it is a regular file (the
    descriptor's own ``fstat``, so nothing can be swapped in between). Raises
    ``FormatError``."""
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
    flags |= getattr(os, "O_BINARY", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(root / name, flags)
    except FileNotFoundError:
        raise FormatError(f"the audit package lacks {name}") from None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise FormatError(f"{name} is a symbolic link, not a regular file") from None
        raise FormatError(f"{name} is not a readable file") from None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise FormatError(f"{name} is not a regular file")
        stream = os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise
    with stream:
        yield stream


def _read_bytes(root: Path, name: str, limit: int) -> bytes:
    """A whole package file of at most ``limit`` bytes. Raises ``FormatError``."""
    with _package_file(root, name) as stream:
        try:
            data = stream.read(limit + 1)
        except OSError:
            raise FormatError(f"{name} is not a readable file") from None
    if len(data) > limit:
        raise FormatError(f"{name} is larger than {limit} bytes")
    return data


def _utf8(data: bytes, what: str) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise FormatError(f"{what} is not readable UTF-8 text") from None


def _read_text(root: Path, name: str, limit: int) -> str:
    return _utf8(_read_bytes(root, name, limit), name)


def _log_lines(root: Path) -> Iterator[str]:
    """The lines of ``log.jsonl``, read one at a time, each at most ``MAX_LOG_LINE`` bytes
    (without its line feed). Raises ``FormatError``."""
    with _package_file(root, "log.jsonl") as stream:
        number = 0
        while True:
            number += 1
            try:
                line = stream.readline(MAX_LOG_LINE + 2)
            except OSError:
                raise FormatError("log.jsonl is not a readable file") from None
            if not line:
                return
            if line.endswith(b"\n"):
                line = line[:-1]
            if len(line) > MAX_LOG_LINE:
                raise FormatError(f"log.jsonl line {number} is longer than {MAX_LOG_LINE} bytes")
            yield _utf8(line, f"log.jsonl line {number}")


def _unique_names(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """A JSON object whose names are distinct: readers differ on which of a repeated name's
    values counts (Python's ``json`` keeps the last, others the first), so one package
    would show different content to different readers."""
    result = dict(pairs)
    if len(result) != len(pairs):
        raise _RepeatedName()
    return result


class _RepeatedName(Exception):
    pass


def _parse_json(text: str, what: str) -> Any:
    """``json.loads`` that raises only ``FormatError``: it raises ``RecursionError`` for
    deep nesting and a plain ``ValueError`` for an integer beyond Python's digit limit.
    An object that repeats a name is refused."""
    try:
        return json.loads(text, object_pairs_hook=_unique_names)
    except _RepeatedName:
        raise FormatError(f"{what} repeats a name in a JSON object") from None
    except (ValueError, RecursionError):
        raise FormatError(f"{what} is not valid JSON") from None


def _load_json(root: Path, name: str, limit: int) -> Any:
    return _parse_json(_read_text(root, name, limit), name)


def _revocations(data: bytes, vault_id: str, identity: bytes) -> dict[bytes, int]:
    try:
        outer = _codec.decode(data, max_containers=1)
        if not isinstance(outer, dict) or set(outer) != {"body", "sig"}:
            raise FormatError("shape")
        body, signature = outer["body"], outer["sig"]
        # token.md, revocation list step 1: body is binary, sig binary of 64 bytes.
        if type(body) is not bytes or type(signature) is not bytes or len(signature) != 64:
            raise FormatError("shape")
        doc = _codec.decode(body, max_containers=_codec.sparse_containers(body))
        if (
            not isinstance(doc, dict)
            or set(doc) != {"v", "vault", "issued_at", "revocations"}
            or not _codec.is_version(doc["v"], 1)
            or type(doc["issued_at"]) is not int
            or not isinstance(doc["revocations"], list)
        ):
            raise FormatError("shape")
    except (FormatError, KeyError, TypeError):
        raise FormatError("revocations.bin is not a revocation list") from None
    try:
        _crypto.verify(identity, capability.REVOCATION_LIST_LABEL, body, signature)
    except _crypto.AuthenticationFailed:
        raise IntegrityError("revocation-list", "the revocation list signature fails") from None
    if doc["vault"] != vault_id:
        raise IntegrityError("revocation-list", "the revocation list is for another vault")
    revoked: dict[bytes, int] = {}
    for entry in doc["revocations"]:
        if not (
            isinstance(entry, list)
            and len(entry) == 2
            and type(entry[0]) is bytes
            and type(entry[1]) is bytes
        ):
            raise FormatError("revocations.bin holds a malformed revocation")
        statement, sig = entry
        try:
            _crypto.verify(identity, capability.REVOCATION_LABEL, statement, sig)
        except _crypto.AuthenticationFailed:
            raise IntegrityError("revocation", "a revocation signature fails") from None
        item = _codec.decode(statement)
        # token.md, revocation statement: exactly these five keys, version 1.
        if not (
            isinstance(item, dict)
            and set(item) == _REVOCATION_KEYS
            and _codec.is_version(item["v"], 1)
            and type(item["link"]) is bytes
            and len(item["link"]) == 32
            and type(item["revoked_at"]) is int
            and type(item["reason"]) is str
        ):
            raise FormatError("revocations.bin holds a malformed revocation")
        if item.get("vault") != vault_id:
            raise IntegrityError("revocation", "a revocation is for another vault")
        revoked[item["link"]] = item["revoked_at"]
    return revoked


def verify_audit(
    directory: str | os.PathLike[str],
    *,
    trusted_head: str | None = None,
    vault_did: str | None = None,
) -> AuditReport:
    """Verify an audit package offline and report every violation.

    ``vault_did`` is the vault identity the auditor trusts (from the person, say); without
    it the package's own key is taken, and only ``trusted_head`` anchors trust. Raises
    ``FormatError`` for a malformed package and ``InvalidProof`` if the checkpoint's
    signature fails or the package is not the expected vault's (nothing can be trusted
    then). Everything else is reported.
    """
    root_dir = Path(directory)
    meta = _load_json(root_dir, "vault.json", MAX_VAULT_JSON)
    if not isinstance(meta, dict) or meta.get("format") != PACKAGE_FORMAT:
        raise FormatError("not a pds audit package (vault.json format)")
    vault_id = meta.get("vault")
    if not isinstance(vault_id, str):
        raise FormatError("vault.json lacks the vault id")
    identity = _unb64(meta.get("identity"), "identity")
    _crypto.check_ed25519_public(identity)
    did = _crypto.did_key(identity)
    # The did shown in vault.json is what a reader compares by eye: it must be the key's.
    if meta.get("did", did) != did:
        raise InvalidProof("vault.json names another did:key than its identity key", "identity")
    if vault_did is not None and _crypto.parse_did_key(vault_did) != identity:
        raise InvalidProof("the package is signed by another vault key", "identity")
    owner_public = _crypto.ed25519_to_x25519(identity)
    report = AuditReport(vault_id, did)

    head = Checkpoint.parse(_read_text(root_dir, "checkpoint.txt", MAX_CHECKPOINT), identity)
    head.verify(identity)
    if head.origin != origin(vault_id):
        raise InvalidProof("the checkpoint is for another log", "checkpoint-origin")

    entries: list[tuple[LogEntry, bytes | None]] = []
    leaves: list[bytes] = []
    for number, line in enumerate(_log_lines(root_dir)):
        item = _parse_json(line, f"log.jsonl line {number + 1}")
        if not isinstance(item, dict):
            raise FormatError(f"log.jsonl line {number + 1} is not an object")
        raw = _unb64(item.get("entry"), "entry")
        key = None if item.get("key") is None else _unb64(item["key"], "key")
        leaves.append(merkle.leaf_hash(raw))
        entry = _entry_at(raw, number, vault_id)
        if entry is None:
            # Hashed (step 4) but no entry: not an access, not the owner's. Only the host
            # (or whoever changed the package) can have written it.
            report.violations.append(
                Violation(
                    number,
                    "malformed-entry",
                    "the entry does not parse as one of this vault's log entries at its "
                    "index: the host wrote or changed it",
                )
            )
            continue
        entries.append((entry, key))
    report.entries = len(leaves)
    if len(leaves) != head.size or merkle.root(leaves) != head.root:
        report.violations.append(
            Violation(None, "checkpoint", "the log entries do not hash to the signed checkpoint")
        )
    if trusted_head is not None:
        _check_trusted(trusted_head, identity, vault_id, leaves, head, report)

    tokens: dict[bytes, capability.Token] = {}
    bad_tokens: dict[bytes, str] = {}
    token_list = _load_json(root_dir, "tokens.json", MAX_TOKENS_JSON)
    if not isinstance(token_list, list):
        raise FormatError("tokens.json is a list")
    for item in token_list:
        if not isinstance(item, dict) or not isinstance(item.get("token"), str):
            raise FormatError("tokens.json items are {link, token}")
        token = capability.Token.from_text(item["token"])
        # A copy that verifies wins over one that does not, in either order: anyone can
        # add a damaged copy of a valid chain to tokens.json.
        try:
            capability.verify_chain(token, vault_id=vault_id, identity=identity)
        except AccessDenied as denied:
            if token.link_id not in tokens:
                bad_tokens[token.link_id] = denied.reason
            continue
        tokens.setdefault(token.link_id, token)
        bad_tokens.pop(token.link_id, None)
    revoked = _revocations(
        _read_bytes(root_dir, "revocations.bin", MAX_REVOCATIONS), vault_id, identity
    )
    if head.revoked is not None and revoked_digest(revoked) != head.revoked:
        report.violations.append(
            Violation(
                None,
                "revocation-record",
                "the revocation list is not the set the checkpoint records",
            )
        )

    # Entries of the owner's kinds carry the owner's signature: the host, which can seal
    # anything to the owner's key, cannot sign one. One without it is the host's. The
    # signature covers the header's time, so a signed entry's time is the owner's word and
    # bounds when the accesses around it were checked (step 8.3).
    unsigned: set[int] = set()
    signed = _SignedTimes([], [])
    for entry, key in entries:
        if entry.kind not in OWNER_KINDS:
            continue
        if key is None:
            # export_audit discloses every owner entry (only accesses are deferred): a null
            # key here was edited in, and would take the entry's bound away unseen.
            report.violations.append(
                Violation(
                    entry.index,
                    "owner-withheld",
                    "the entry is of a kind only the owner appends, but its key is withheld",
                )
            )
            continue
        try:
            details = open_disclosed(entry.sealed, owner_public, key)
        except IntegrityError:
            unsigned.add(entry.index)
            report.violations.append(
                Violation(entry.index, "undecryptable", "the disclosed key does not open the entry")
            )
            continue
        if not entry.signed_by_owner(details, identity):
            unsigned.add(entry.index)
            report.violations.append(
                Violation(
                    entry.index,
                    "owner-signature",
                    "the entry is of a kind only the owner appends, but the owner did not sign it",
                )
            )
            continue
        signed.indexes.append(entry.index)
        signed.times.append(entry.time)

    # The signed log also records every revocation (its header names the link), and its
    # order is what the host cannot bend: an access logged after the owner's revoke entry
    # was appended after the revocation was committed (the host serves under the write
    # lock), whatever time it was stamped with, and one logged before it was served before.
    # A revocation counts from its first entry the owner signed (or whose details are not
    # disclosed); one the list omits counts all the same.
    revoked_at_index: dict[bytes, int] = {}
    for entry, _ in entries:
        if entry.kind == "revoke" and entry.link_id is not None and entry.index not in unsigned:
            if entry.link_id not in revoked:
                report.violations.append(
                    Violation(
                        entry.index,
                        "revocation-missing",
                        "the log records a revocation the revocation list omits",
                    )
                )
            revoked_at_index.setdefault(entry.link_id, entry.index)
    revocations = _Revocations(revoked, revoked_at_index)
    uses: Counter[bytes] = Counter()
    for entry, key in entries:
        if entry.kind not in _ACCESS_KINDS:
            continue
        report.accesses += 1
        if entry.result == "refused":
            report.refused += 1
            continue
        report.released += 1
        # Budgets count every released access, disclosed or not (the link id is public).
        used = tokens.get(entry.link_id) if entry.link_id is not None else None
        over_budget = used is not None and _spend(used, uses)
        if key is None:
            report.undisclosed += 1
            # Only a deferral not yet due may keep an access's key back (export_audit
            # discloses every other): a null key edited in would clear any verdict.
            if entry.disclose_after is None or entry.disclose_after <= head.time:
                report.violations.append(
                    Violation(
                        entry.index,
                        "withheld",
                        "the access's disclosure key is withheld though its disclosure is due",
                    )
                )
            if over_budget:
                report.violations.append(
                    Violation(entry.index, "budget", "the token's use budget was exceeded")
                )
            continue
        try:
            details = open_disclosed(entry.sealed, owner_public, key)
        except IntegrityError:
            report.violations.append(
                Violation(entry.index, "undecryptable", "the disclosed key does not open the entry")
            )
            # The budget counts need no details (step 8): an over-budget access is that too.
            if over_budget:
                report.violations.append(
                    Violation(entry.index, "budget", "the token's use budget was exceeded")
                )
            continue
        for rule, message in _judge(entry, details, tokens, bad_tokens, revocations, signed):
            report.violations.append(Violation(entry.index, rule, message))
        if over_budget:
            report.violations.append(
                Violation(entry.index, "budget", "the token's use budget was exceeded")
            )
    return report


def _check_trusted(
    text: str,
    identity: bytes,
    vault_id: str,
    leaves: list[bytes],
    head: Checkpoint,
    report: AuditReport,
) -> None:
    trusted = Checkpoint.parse(text, identity)
    trusted.verify(identity)
    if trusted.origin != origin(vault_id):
        raise InvalidProof("the trusted head is for another log", "checkpoint-origin")
    if trusted.size > len(leaves) or merkle.root(leaves[: trusted.size]) != trusted.root:
        report.violations.append(
            Violation(None, "consistency", "the log does not extend the trusted head")
        )
        return
    if 0 < trusted.size <= head.size:
        try:
            merkle.verify_consistency(
                trusted.size,
                head.size,
                trusted.root,
                head.root,
                merkle.consistency_proof(trusted.size, leaves[: head.size]),
            )
        except InvalidProof:
            report.violations.append(
                Violation(
                    None, "consistency", "the checkpoint is not consistent with the trusted head"
                )
            )


@dataclass(frozen=True, slots=True)
class _Revocations:
    listed: dict[bytes, int]
    """Link id to ``revoked_at``, from the signed revocation list."""
    logged: dict[bytes, int]
    """Link id to the index of the first counted ``revoke`` entry naming it."""

    def before(self, link_id: bytes, entry: LogEntry) -> bool:
        """Whether ``link_id`` was revoked before ``entry``: by the log's order if the log
        holds a counted revoke entry for it, else by the list's time (``revoked_at`` at or
        before the entry's time)."""
        index = self.logged.get(link_id)
        if index is not None:
            return index < entry.index
        revoked_at = self.listed.get(link_id)
        return revoked_at is not None and revoked_at <= entry.time


@dataclass(frozen=True, slots=True)
class _SignedTimes:
    """The index and ``time`` of every entry whose owner signature verified, in index
    order: the times the log's order vouches for (step 8.3).

    The owner's pds stamps its entry under the write lock; the host, once it holds the
    lock, checks an access's times at the ``time`` it stamps, then appends the entry.
    Times in index order agree to within ``CLOCK_SKEW_MS`` (the difference between
    clocks), so an access logged after a signed entry stamped ``T`` was checked no earlier
    than ``T - CLOCK_SKEW_MS`` by the host's clock, and one logged before it no later than
    ``T + CLOCK_SKEW_MS``, whatever time the host stamped on it."""

    indexes: list[int]
    times: list[int]

    def problems(self, token: capability.Token, entry: LogEntry) -> list[tuple[str, str]]:
        """``expired`` or ``not-yet-valid`` by the signed entries nearest ``entry`` on
        either side, for a token whose times pass at the entry's own time: a check at a
        later time can then fail only as expired, one at an earlier time only as not yet
        valid."""
        problems: list[tuple[str, str]] = []
        at = bisect.bisect_left(self.indexes, entry.index)
        if at > 0:
            earliest = self.times[at - 1] - capability.CLOCK_SKEW_MS
            if earliest > entry.time:
                problems += _times_at(token, earliest, "after", self.indexes[at - 1])
        if at < len(self.indexes):
            latest = self.times[at] + capability.CLOCK_SKEW_MS
            if latest < entry.time:
                problems += _times_at(token, latest, "before", self.indexes[at])
        return problems


def _times_at(token: capability.Token, now: int, side: str, index: int) -> list[tuple[str, str]]:
    try:
        capability.check_times(token, now)
    except AccessDenied as denied:
        return [
            (
                denied.reason,
                f"the token was {denied.reason} by the log's order: the access is logged "
                f"{side} the owner's entry {index}, whose time bounds when it was checked",
            )
        ]
    return []


def _judge(
    entry: LogEntry,
    details: dict[str, Any],
    tokens: dict[bytes, capability.Token],
    bad_tokens: dict[bytes, str],
    revocations: _Revocations,
    signed: _SignedTimes,
) -> list[tuple[str, str]]:
    """The rules one released access breaks (none if a valid token authorised it)."""
    link = entry.link_id
    if link is None or link in bad_tokens:
        reason = "no token" if link is None else bad_tokens[link]
        return [("token-invalid", f"the access's token does not verify ({reason})")]
    token = tokens.get(link)
    if token is None:
        return [("unknown-token", "the access names a token the package does not hold")]
    caveats = token.leaf.caveats
    problems: list[tuple[str, str]] = []
    try:
        capability.check_times(token, entry.time)
    except AccessDenied as denied:
        problems.append((denied.reason, f"the token was {denied.reason} at the time of access"))
    else:
        # The host stamps the time: the log's order bounds it (step 8.3).
        problems += signed.problems(token, entry)
    if any(revocations.before(link_id, entry) for link_id in token.link_ids):
        problems.append(("revoked", "a link of the token was revoked before the access"))
    if details.get("actor") != token.leaf.audience_did or details.get("chain") != [
        i.hex() for i in token.link_ids
    ]:
        problems.append(("wrong-holder", "the entry's actor or chain is not the token's"))
    purpose = details.get("purpose")
    if type(purpose) is not str or purpose not in caveats.purposes:
        problems.append(("wrong-purpose", "the purpose was not granted"))
    if entry.kind not in caveats.abilities:
        problems.append(("wrong-ability", f"the token does not grant {entry.kind!r}"))
    collections = details.get("collections")
    # A released access names what it released as a list of collection names (empty only
    # if it released no record); details of another shape (nil, missing, text, no name for
    # released records) cannot show it in scope: that is a violation too.
    if (
        not isinstance(collections, list)
        or (details.get("records") and not collections)
        or not all(
            type(c) is str and capability.collection_allowed(caveats.collections, c)
            for c in collections
        )
    ):
        problems.append(("out-of-scope", "a collection read is outside the token's scope"))
    return problems


def _spend(token: capability.Token, uses: Counter[bytes]) -> bool:
    """Count one use of every link of the chain; whether any budget is now exceeded."""
    exceeded = False
    for link in token.links:
        uses[link.link_id] += 1
        budget = link.caveats.uses
        if budget is not None and uses[link.link_id] > budget:
            exceeded = True
    return exceeded
