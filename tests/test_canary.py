"""Promise 1 across everything: a canary scan (issue 5, suite 7).

``test_leak_scan.py`` plants markers in records and passphrases and scans the database,
WAL, export, logs and exceptions after the vault operations. This module reuses its scanner
and widens the net to the rest of pds: every plaintext field, passphrase, label (legal
basis, agent, correlation, deferral reason) and purpose carries its own random canary
through the capability workload (grants, delegation, reads served by the host, revocation,
rotation, the access log and checkpoints, export and import, passphrase unlock), a set of
deliberately failing library calls, and a set of failing CLI commands (in process and as a
real ``pds`` process, with canaries in files, arguments and the environment). Then the
database, WAL, SHM and journal of every store, the host keys, the export, every file left
in the test's directory and in the temporary directory, the log records of every logger at
DEBUG (a handler on the root logger: the workload runs once per module, so ``caplog``
cannot hold it), the console output (fds 1 and 2, ``sys.stdout`` and ``sys.stderr``), the
CLI output, and the text of every raised exception are searched for each canary in raw
UTF-8, hex (both cases), base64 (standard and URL-safe, every alignment, padded or not),
msgpack, JSON-escaped and bytes-repr form. Zero hits.

What is host-visible by design is not a leak and serves as a positive control instead: a
revocation's reason is stored in clear (``docs/threat-model.md``), so the scan must find it
in the database; and a grantee reading a record legitimately gets the plaintext, so the
scan must find that in what the read returned.

A second test checks that no key-holding object shows key bytes in its ``str`` or ``repr``
(``SymmetricKey`` and ``PrincipalKey`` alone: ``test_leak_scan.py``).
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import io
import json
import logging
import os
import secrets
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgpack
import pytest
from click.testing import CliRunner

import pds
from pds import _codec, _crypto, _owner, capability, errors
from pds.keys import KdfParams, PrincipalKey, SymmetricKey

if TYPE_CHECKING:
    from cli.main import cli as pds_cli
    from cli.state import OwnerCredential
    from tests.test_leak_scan import database_files, exception_text, forms, hits, text_forms
else:
    from pds_cli.main import cli as pds_cli
    from pds_cli.state import OwnerCredential
    from test_leak_scan import database_files, exception_text, forms, hits, text_forms

KDF = KdfParams.interactive()
PDS_VARIABLES = ("PDS_STORE", "PDS_PASSPHRASE", "PDS_NEW_PASSPHRASE", "PDS_STATE_DIR")
PDS_COMMAND = [sys.executable, "-m", "pds_cli.main"]


# -- canaries and their encodings --------------------------------------------------------


def canary_forms(text: str) -> list[bytes]:
    """Every encoding a canary is searched in: ``text_forms`` (raw, hex in both cases,
    msgpack str and bin, base64 and URL-safe base64 of the raw and msgpack bytes at each of
    the three alignments, which covers padded and unpadded output), plus the JSON-escaped,
    ``repr(bytes)`` and ``unicode_escape`` spellings a message or a JSON document would use
    for a non-ASCII canary."""
    raw = text.encode("utf-8")
    found = [
        *text_forms(text),
        json.dumps(text)[1:-1].encode("ascii"),
        repr(raw)[2:-1].encode("ascii"),
        text.encode("unicode_escape"),
    ]
    return list(dict.fromkeys(found))


STEMS = ("cny.", "ćañ.")
"""Every canary starts with one of these, then its field name and 96 random bits."""


def _stem_forms() -> tuple[bytes, ...]:
    """The stems in every form ``canary_forms`` uses (base64: the characters a stem alone
    fixes, at each alignment): wherever a canary is, in any form, its stem is too."""
    found: set[bytes] = set()
    for stem in STEMS:
        raw = stem.encode("utf-8")
        found |= {
            raw,
            raw.hex().encode(),
            raw.hex().upper().encode(),
            json.dumps(stem)[1:-1].encode("ascii"),
            repr(raw)[2:-1].encode("ascii"),
            stem.encode("unicode_escape"),
        }
        for shift in range(3):
            skip, end = -(-8 * shift // 6), (8 * (shift + len(raw))) // 6
            for encode in (base64.b64encode, base64.urlsafe_b64encode):
                found.add(encode(b"\x00" * shift + raw)[skip:end])
    return tuple(sorted(found))


STEM_FORMS = _stem_forms()


@dataclass
class Canaries:
    """Random, unique markers, one per field, with their encodings."""

    needles: dict[str, list[bytes]] = field(default_factory=dict)
    values: dict[str, str] = field(default_factory=dict)

    def __call__(self, name: str, *, unicode: bool = False) -> str:
        """A new canary for ``name`` (ASCII, or with non-ASCII letters and an emoji)."""
        assert name not in self.values, name
        token = secrets.token_hex(12)
        value = f"cny.{name}.{token}" if not unicode else f"ćañ.{name}.{token}.Ωμέγα😀"
        self.values[name] = value
        self.needles[name] = canary_forms(value)
        return value

    def scan(self, haystack: bytes) -> list[str]:
        """The canaries found in ``haystack`` (``hits`` of ``test_leak_scan``), after a quick
        pass for the stems, which keeps the scan of large files fast."""
        if not any(form in haystack for form in STEM_FORMS):
            return []
        return hits(haystack, self.needles)


def key_forms(secret: bytes) -> list[bytes]:
    """A key's bytes in every encoding: ``forms`` of ``test_leak_scan`` (raw, hex in both
    cases, msgpack bin, base64 of both at each alignment), plus the escaped ``repr`` a
    default dataclass ``repr`` would print."""
    return [*forms(secret), repr(secret)[2:-1].encode("ascii")]


def scan(haystack: bytes, needles: dict[str, list[bytes]]) -> list[str]:
    return hits(haystack, needles)


def test_canary_forms_are_found_wherever_planted() -> None:
    """The scan is only as good as its forms: each form of a canary, planted in noise at
    any alignment, is found; random bytes are not."""
    canaries = Canaries()
    for unicode in (False, True):
        value = canaries(f"probe-{unicode}", unicode=unicode)
        raw = value.encode("utf-8")
        packed_str = msgpack.packb(value)
        planted = [
            raw,
            raw.hex().encode(),
            raw.hex().upper().encode(),
            packed_str,
            msgpack.packb(raw),
            json.dumps({"k": value}).encode("ascii"),
            repr(raw).encode("ascii"),
            str(ValueError(raw)).encode("ascii"),
        ]
        for prefix in range(3):
            for encode in (base64.b64encode, base64.urlsafe_b64encode):
                for inner in (raw, packed_str):
                    encoded = encode(b"\x07" * prefix + inner + b"\x09")
                    planted += [encoded, encoded.rstrip(b"=")]
        for blob in planted:
            assert canaries.scan(b"noise" + blob + b"noise"), blob
            assert any(form in blob for form in STEM_FORMS), blob
        assert not canaries.scan(secrets.token_bytes(1 << 16))


# -- the workload ------------------------------------------------------------------------


@dataclass
class Run:
    """Everything the workload left behind, for the scans."""

    root: Path
    canaries: Canaries = field(default_factory=Canaries)
    key_needles: dict[str, list[bytes]] = field(default_factory=dict)
    raised: list[BaseException] = field(default_factory=list)
    snapshots: dict[str, bytes] = field(default_factory=dict)
    console: str = ""
    logs: list[str] = field(default_factory=list)
    cli_outputs: list[str] = field(default_factory=list)
    cli_codes: list[int] = field(default_factory=list)
    granted_plaintext: list[Any] = field(default_factory=list)
    temp_files: list[Path] = field(default_factory=list)
    positive: dict[str, list[bytes]] = field(default_factory=dict)

    @property
    def inputs(self) -> Path:
        """Files the test itself writes canaries into (passphrase files, record input):
        the only place they are supposed to be."""
        return self.root / "inputs"

    def input_file(self, name: str, content: str) -> Path:
        path = self.inputs / name
        path.write_text(content, encoding="utf-8")
        return path

    def expect(
        self, error: type[BaseException], call: Callable[..., Any], *a: Any, **k: Any
    ) -> None:
        with pytest.raises(error) as info:
            call(*a, **k)
        self.raised.append(info.value)

    def add_key(self, name: str, secret: bytes) -> None:
        self.key_needles[name] = key_forms(secret)

    def snapshot(self, label: str, db: Path) -> None:
        """The database and its companions as they stand now (the store still open)."""
        for path in database_files(db):
            self.snapshots[f"{label}:{path.name}"] = path.read_bytes()


def _record(c: Canaries, tag: str) -> dict[str, Any]:
    """A record whose every kind of value, and every field name, carries a canary."""
    return {
        "name": c(f"{tag}.name"),
        c(f"{tag}.fieldname"): True,
        "nested": {"list": [c(f"{tag}.item"), {"deep": c(f"{tag}.deep", unicode=True)}]},
        "note": c(f"{tag}.note", unicode=True),
        "n": 7,
    }


def _vault_secrets(run: Run, tag: str, vault: pds.Vault) -> None:
    owner = vault._owner
    assert owner is not None
    run.add_key(f"{tag}.master", owner.master)
    run.add_key(f"{tag}.identity", owner.identity.seed)
    run.add_key(f"{tag}.x25519", owner.x25519_secret)
    for (collection, epoch, _), secret in owner.epoch_secrets.items():
        run.add_key(f"{tag}.epoch.{collection}.{epoch}", secret)
    for batch_id, share in owner.reader_shares.items():
        run.add_key(f"{tag}.reader.{batch_id.hex()}", share)
    for batch_id, share in vault._host_shares.items():
        run.add_key(f"{tag}.host.{batch_id.hex()}", share)


def _grantee_secrets(run: Run, tag: str, key: PrincipalKey, responses: list[pds.Response]) -> None:
    run.add_key(f"{tag}.seed", key._key.seed)
    run.add_key(f"{tag}.x25519", key._key.x25519_secret())
    for response in responses:
        for index, item in enumerate(response.records):
            if "host_share" in item:
                run.add_key(f"{tag}.h.{response.access}.{index}", bytes(item["host_share"]))
            for name, share in item.get("field_shares", []):
                run.add_key(f"{tag}.hf.{response.access}.{index}.{name}", bytes(share))


class FailingProvider:
    """A key provider whose unwrap fails with an exception carrying a canary."""

    def __init__(self, inner: SymmetricKey, message: str) -> None:
        self._inner = inner
        self._message = message

    @property
    def key_id(self) -> str:
        return self._inner.key_id

    def wrap(self, secret: bytes, *, context: bytes) -> bytes:
        return self._inner.wrap(secret, context=context)

    def unwrap(self, wrapped: bytes, *, context: bytes) -> bytes:
        raise RuntimeError(self._message)


def library_workload(run: Run) -> tuple[str, str, pds.Token, pds.Token, Path, Path]:
    """Every operation of the library with canaries in every field; returns the passphrase
    vault's id, its record id, the agency's token, the revoked delegation, and the agency's
    and courier's key files."""
    c = run.canaries
    db = run.root / "store" / "store.db"
    export = run.root / "exports" / "vault.pdsx"
    first_passphrase = c("passphrase", unicode=True)
    passphrase = c("new-passphrase")
    keys_dir = run.root / "keys"
    owner_key = SymmetricKey.create_file(keys_dir / "owner.key")
    agency = PrincipalKey.create_file(keys_dir / "agency.key")
    courier = PrincipalKey.create_file(keys_dir / "courier.key")
    run.add_key("owner-key-file", (keys_dir / "owner.key").read_bytes())
    with pds.open_store(db) as store:
        run.add_key("host-key", Path(f"{db}.hostkey").read_bytes())
        vault_id = store.create_vault(passphrase=first_passphrase, kdf=KDF)
        vault = store.open_vault(vault_id)
        vault.unlock(passphrase=first_passphrase)
        # Records: put, put_many, a new version, a deletion, a field-sealed collection.
        vault.create_collection("forms/intake", seal_fields=True)
        first = vault.put("health/visits", _record(c, "visit"))
        many = vault.put_many("benefits", [_record(c, f"benefit{i}") for i in range(3)])
        vault.put("health/visits", _record(c, "visit-v2"), record_id=first.record_id)
        vault.delete(many[0].record_id)
        vault.put(
            "forms/intake",
            {"allergies": [c("allergy")], "name": c("form.name", unicode=True), "x": {"y": 1}},
        )
        # Grants with canary purposes and labels, read by the host for a grantee.
        purposes = [c("purpose.a"), c("purpose.b", unicode=True)]
        token = vault.grant(
            agency.did,
            collections=["health/*", "benefits"],
            purpose=purposes,
            basis=c("basis", unicode=True),
            expires=dt.timedelta(days=30),
            delegable=1,
            defer=dt.timedelta(days=10),
        )
        fields_token = vault.grant(
            agency.did,
            collections=["forms/*"],
            purpose=c("purpose.fields"),
            fields=["name"],
            expires=dt.timedelta(days=1),
        )
        agency_grantee = pds.Grantee(agency)
        responses: list[pds.Response] = []

        def served(holder: pds.Grantee, used: pds.Token, **request: Any) -> None:
            invocation = holder.invoke(used, **request)
            response = store.serve(invocation.to_bytes())
            responses.append(response)
            read = holder.open(used, response, invocation=invocation)
            run.granted_plaintext += [record.data for record in read.records]

        served(
            agency_grantee,
            token,
            purpose=purposes[0],
            agent=c("agent", unicode=True),
            correlation=c("correlation"),
        )
        served(agency_grantee, token, purpose=purposes[1], action="list")
        served(
            agency_grantee,
            token,
            purpose=purposes[0],
            defer_until=dt.datetime.now(dt.UTC) + dt.timedelta(days=2),
            defer_reason=c("defer-reason", unicode=True),
        )
        served(agency_grantee, fields_token)
        delegated = agency_grantee.delegate(
            token, to=courier.did, purposes=[purposes[0]], collections=["health/*"]
        )
        courier_grantee = pds.Grantee(courier)
        served(courier_grantee, delegated, agent=c("courier-agent"))
        # Rotation, sharing, a write after it, the log and its checkpoints.
        vault.rotate()
        vault.share_keys()
        vault.put("benefits", _record(c, "after-rotation"))
        served(agency_grantee, token, purpose=purposes[0])
        reason = c("revocation-reason")
        run.positive["revocation-reason"] = run.canaries.needles.pop("revocation-reason")
        vault.revoke(delegated, reason=reason)
        pinned = vault.checkpoint()
        vault.log(include_deferred=True)
        vault.access_log()
        vault.prove_inclusion(0)
        vault.verify_log(pinned)
        vault.revocation_list()
        _vault_secrets(run, "vault", vault)
        _grantee_secrets(run, "agency", agency, responses)
        _grantee_secrets(run, "courier", courier, responses)
        # A second owner secret, then export, lock and unlock.
        vault.rekey(passphrase=passphrase, kdf=KDF)
        vault.export(export)
        vault.lock()
        vault.unlock(passphrase=passphrase)
        # A vault unlocked by a key provider.
        provider_vault = store.open_vault(store.create_vault(key_provider=owner_key))
        provider_vault.unlock(key_provider=owner_key)
        provider_vault.put("notes", _record(c, "provider"))
        run.snapshot("store-open", db)
        failing_library_calls(run, store, vault, token, agency, courier, owner_key)
        run.snapshot("store-after-failures", db)
        record_id = first.record_id
    fresh = run.root / "fresh" / "store.db"
    with pds.open_store(fresh) as other:
        run.expect(
            errors.WrongPassphrase,
            other.import_vault,
            export,
            passphrase=c("wrong-import-passphrase"),
        )
        imported = other.open_vault(other.import_vault(export, passphrase=passphrase))
        imported.unlock(passphrase=passphrase)
        imported.get(record_id)
        imported.history(record_id)
        imported.log()
        run.snapshot("fresh-open", fresh)
    return vault_id, record_id, token, delegated, keys_dir / "agency.key", keys_dir / "courier.key"


def failing_library_calls(
    run: Run,
    store: pds.Store,
    vault: pds.Vault,
    token: pds.Token,
    agency: PrincipalKey,
    courier: PrincipalKey,
    owner_key: SymmetricKey,
) -> None:
    """Library calls that fail, with canaries in what they were given."""
    c = run.canaries
    expect = run.expect
    fresh = store.open_vault(vault.vault_id)
    expect(errors.WrongPassphrase, fresh.unlock, passphrase=c("wrong-passphrase", unicode=True))
    expect(errors.WrongPassphrase, fresh.unlock, passphrase=c("wrong-bytes").encode())
    provider_id = store.create_vault(key_provider=owner_key)
    expect(
        errors.KeyProviderError,
        store.open_vault(provider_id).unlock,
        key_provider=FailingProvider(owner_key, c("provider-message")),
    )
    expect(
        errors.WeakKdfParameters,
        store.create_vault,
        passphrase=c("weak-passphrase"),
        kdf=KdfParams(1, 8192),
    )
    # Bad record data around canaries.
    expect(errors.InvalidRecordData, vault.put, "notes", {"a": c("bad.bytes").encode()})
    expect(errors.InvalidRecordData, vault.put, "notes", {"a": {c("bad.set")}})
    expect(errors.InvalidRecordData, vault.put, "notes", {"a": c("bad.nan"), "n": float("nan")})
    expect(errors.InvalidRecordData, vault.put, "notes", {3: c("bad.key")})
    expect(errors.InvalidRecordData, vault.put, "notes", [c("bad.list")])
    # Malformed tokens and invocations that carry canaries.
    expect(errors.MalformedToken, pds.Token.from_text, "pdst1_" + c("token.body"))
    expect(errors.MalformedToken, pds.Token.from_text, c("token.text"))
    expect(errors.MalformedToken, pds.Token.from_bytes, c("token.bytes").encode())
    expect(errors.MalformedToken, pds.Invocation.parse, "pdsi1_" + c("invocation.body"))
    expect(errors.MalformedToken, store.serve, c("served.bytes").encode())
    expect(errors.FormatError, pds.Response.from_bytes, _codec.encode({"x": c("response")}))
    owner = vault._owner
    assert owner is not None
    payload = dict(_codec.decode(token.root.payload))
    payload[c("caveat.key")] = c("caveat.value")
    forged = _codec.encode(payload)
    signature = owner.identity.sign(capability.LINK_SIGNATURE_LABEL, forged)
    expect(
        errors.MalformedToken,
        pds.Token.from_bytes,
        _codec.encode({"v": 1, "links": [[forged, signature]]}),
    )
    # Refused requests: the purpose is not granted, the lifetime is too long, a widening.
    agency_grantee = pds.Grantee(agency)
    expect(
        errors.NotPermitted,
        agency_grantee.read,
        store,
        token,
        purpose=c("purpose.not-granted"),
        correlation=c("refused.correlation"),
    )
    expect(
        errors.LifetimeExceeded,
        vault.grant,
        courier.did,
        collections=["benefits"],
        purpose=c("purpose.too-long"),
        basis=c("basis.too-long"),
        expires=dt.timedelta(days=4000),
    )
    expect(
        errors.FormatError,
        vault.grant,
        courier.did,
        collections=["benefits"],
        purpose=c("purpose.fields-refused"),
        fields=[c("fields.refused")],
        expires=dt.timedelta(days=1),
    )
    expect(
        errors.CaveatWidened,
        agency_grantee.delegate,
        token,
        to=courier.did,
        purposes=[c("purpose.widened")],
    )
    expect(
        errors.FormatError,
        vault.grant,
        c("did"),
        collections=["x"],
        purpose="p",
        expires=dt.timedelta(days=1),
    )
    expect(errors.FormatError, vault.revoke, c("revoke.link"), reason=c("revoke.reason"))
    expect(errors.VaultNotFound, store.open_vault, c("vault-id"))
    delegated = agency_grantee.delegate(token, to=courier.did, collections=["benefits"])
    vault.revoke(delegated)
    expect(
        errors.Revoked,
        pds.Grantee(courier).read,
        store,
        delegated,
        purpose=sorted(delegated.leaf.caveats.purposes)[0],
        agent=c("revoked.agent"),
        correlation=c("revoked.correlation", unicode=True),
    )


# -- failing CLI commands ------------------------------------------------------------------


def cli_failures(
    run: Run,
    vault_id: str,
    record_id: str,
    token: pds.Token,
    revoked: pds.Token,
    agency_key: Path,
    courier_key: Path,
) -> None:
    """CLI commands that fail, with canaries in passphrases (environment and files), record
    input, tokens and options, run in process and as a real ``pds`` process."""
    c = run.canaries
    db = run.root / "store" / "store.db"
    passphrase = c.values["new-passphrase"]
    runner = CliRunner()
    state = run.root / "state"

    def pds_cli_run(
        code: int, *args: str, env: dict[str, str] | None = None, stdin: str = ""
    ) -> None:
        environment: dict[str, str | None] = dict.fromkeys(PDS_VARIABLES)
        environment["PDS_STATE_DIR"] = str(state)
        environment.update(env or {})
        result = runner.invoke(pds_cli, ["--store", str(db), *args], input=stdin, env=environment)
        run.cli_outputs.append(result.stdout + result.stderr + result.output)
        if result.exception is not None and not isinstance(result.exception, SystemExit):
            run.raised.append(result.exception)
        run.cli_codes.append(result.exit_code)
        assert result.exit_code == code, (args, result.exit_code, result.stderr)

    wrong = {"PDS_PASSPHRASE": c("cli.wrong-passphrase", unicode=True)}
    pds_cli_run(1, "get", vault_id, record_id, env=wrong)
    pds_cli_run(1, "--debug", "history", vault_id, record_id, env=wrong)
    pds_cli_run(
        1,
        "vault",
        "rotate",
        vault_id,
        "--passphrase-file",
        str(run.input_file("wrong.txt", c("cli.passphrase-file") + "\n")),
    )
    pds_cli_run(
        1,
        "vault",
        "passwd",
        vault_id,
        "--kdf",
        "interactive",
        env={**wrong, "PDS_NEW_PASSPHRASE": c("cli.new-passphrase")},
    )
    record = json.dumps({"a": c("cli.record.value"), c("cli.record.key"): 1})
    pds_cli_run(1, "put", vault_id, "notes", env=wrong, stdin=record)
    duplicated = f'{{"a": "{c("cli.dup.value")}", "a": 1}}'
    pds_cli_run(2, "put", vault_id, "notes", env={"PDS_PASSPHRASE": passphrase}, stdin=duplicated)
    pds_cli_run(
        1,
        "--store",
        str(run.root / "cli-import" / "store.db"),
        "vault",
        "import",
        str(run.root / "exports" / "vault.pdsx"),
        env={"PDS_PASSPHRASE": c("cli.import-passphrase")},
    )
    pds_cli_run(2, "token", "inspect", "pdst1_" + c("cli.token"))
    token_file = run.input_file("token.txt", "pdst1_" + c("cli.token-file") + "\n")
    pds_cli_run(2, "token", "verify", f"@{token_file}")
    for debug in ([], ["--debug"]):
        pds_cli_run(
            1,
            *debug,
            "read",
            "--token",
            revoked.to_text(),
            "--key",
            str(courier_key),
            "--agent",
            c(f"cli.revoked.agent{len(debug)}"),
            "--correlation",
            c(f"cli.revoked.correlation{len(debug)}", unicode=True),
        )
    pds_cli_run(
        1,
        "read",
        "--token",
        token.to_text(),
        "--key",
        str(agency_key),
        "--purpose",
        c("cli.purpose.not-granted"),
        "--defer-until",
        "2100-01-01",
        "--defer-reason",
        c("cli.defer-reason"),
    )
    courier_did = PrincipalKey.from_file(courier_key).did
    pds_cli_run(
        1,
        "grant",
        vault_id,
        "--to",
        courier_did,
        "--collection",
        "benefits",
        "--purpose",
        c("cli.grant.purpose"),
        "--basis",
        c("cli.grant.basis"),
        "--expires",
        "4000d",
        env={"PDS_PASSPHRASE": passphrase},
    )
    pds_cli_run(
        1,
        "token",
        "delegate",
        token.to_text(),
        "--key",
        str(agency_key),
        "--to",
        courier_did,
        "--purpose",
        c("cli.delegate.purpose"),
    )
    pds_cli_run(
        2,
        "revoke",
        vault_id,
        c("cli.revoke.link"),
        "--reason",
        c("cli.revoke.reason"),
        env={"PDS_PASSPHRASE": passphrase},
    )
    # The real console script: what a shell (and its logs) would see.
    for debug in ([], ["--debug"]):
        environment = {k: v for k, v in os.environ.items() if k not in PDS_VARIABLES}
        environment["PDS_PASSPHRASE"] = c(f"process.wrong-passphrase{len(debug)}")
        environment["PDS_STATE_DIR"] = str(state)
        done = subprocess.run(
            [*PDS_COMMAND, "--store", str(db), *debug, "get", vault_id, record_id],
            capture_output=True,
            env=environment,
            timeout=120,
            check=False,
        )
        run.cli_outputs.append((done.stdout + done.stderr).decode("utf-8", "replace"))
        run.cli_codes.append(done.returncode)
        assert done.returncode == 1, done.stderr


# -- running it all, with everything captured ----------------------------------------------


class Collector(logging.Handler):
    def __init__(self) -> None:
        super().__init__(level=logging.DEBUG)
        self.lines: list[str] = []
        self.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        text = self.format(record)
        if record.exc_info:
            text += "\n" + "".join(traceback.format_exception(*record.exc_info))
        self.lines.append(text)


@contextlib.contextmanager
def captured(run: Run) -> Iterator[None]:
    """Log records of every logger at DEBUG, and fds 1 and 2 and ``sys.stdout``/``stderr``."""
    collector = Collector()
    root = logging.getLogger()
    levels = {name: logger.level for name, logger in _loggers()}
    previous_root = root.level
    root.addHandler(collector)
    root.setLevel(logging.DEBUG)
    for _, logger in _loggers():
        logger.setLevel(logging.DEBUG)
    try:
        with _console(run):
            yield
    finally:
        root.removeHandler(collector)
        root.setLevel(previous_root)
        for name, logger in _loggers():
            logger.setLevel(levels.get(name, logging.NOTSET))
        run.logs = collector.lines


@contextlib.contextmanager
def _console(run: Run) -> Iterator[None]:
    """Everything written to fds 1 and 2, and to ``sys.stdout`` and ``sys.stderr``."""
    saved = [os.dup(1), os.dup(2)]
    text_out, text_err = io.StringIO(), io.StringIO()
    with tempfile.TemporaryFile() as sink:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(sink.fileno(), 1)
            os.dup2(sink.fileno(), 2)
            with contextlib.redirect_stdout(text_out), contextlib.redirect_stderr(text_err):
                yield
        finally:
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            for fd in saved:
                os.close(fd)
            sink.seek(0)
            console = sink.read().decode("utf-8", "replace")
            run.console = console + text_out.getvalue() + text_err.getvalue()


def _loggers() -> list[tuple[str, logging.Logger]]:
    return [
        (name, logger)
        for name, logger in logging.root.manager.loggerDict.items()
        if isinstance(logger, logging.Logger)
    ]


def _temp_listing(directory: Path, since: float) -> list[Path]:
    """Files under ``directory`` modified since ``since`` (not the tool runner's own)."""
    found = []
    for current, dirs, files in os.walk(directory, onerror=lambda _: None):
        dirs[:] = [d for d in dirs if not d.startswith("bash_")]
        for name in files:
            path = Path(current) / name
            # Other processes create and delete files here too: skip what vanishes.
            with contextlib.suppress(OSError):
                status = path.stat()
                if status.st_mtime >= since and path.is_file() and status.st_size < 64 << 20:
                    found.append(path)
    return found


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Run:
    root = tmp_path_factory.mktemp("canary")
    for name in ("store", "fresh", "exports", "keys", "inputs", "state", "tempdir", "cli-import"):
        (root / name).mkdir()
    result = Run(root)
    started = time.time() - 1
    system_temp = Path(tempfile.gettempdir())
    previous_tempdir = tempfile.tempdir
    tempfile.tempdir = str(root / "tempdir")
    try:
        with captured(result):
            vault_id, record_id, token, revoked, agency_key, courier_key = library_workload(result)
            cli_failures(result, vault_id, record_id, token, revoked, agency_key, courier_key)
    finally:
        tempfile.tempdir = previous_tempdir
    base = Path(str(tmp_path_factory.getbasetemp()))
    result.temp_files = [
        path for path in _temp_listing(system_temp, started) if base not in path.parents
    ]
    return result


# -- the scans ------------------------------------------------------------------------------


def test_no_canary_in_any_store_file(run: Run) -> None:
    """Database, WAL, SHM and journal of every store, open and closed, and the host keys."""
    found = {}
    stored = {**run.snapshots}
    for db in sorted(run.root.rglob("*.db")):
        for path in [*database_files(db), Path(f"{db}.hostkey")]:
            if path.exists():
                stored[f"closed:{path.relative_to(run.root)}"] = path.read_bytes()
    assert any(name.endswith("-wal") for name in stored)
    assert any(name.endswith(".hostkey") for name in stored)
    for name, content in stored.items():
        leaks = run.canaries.scan(content)
        if not name.endswith(".hostkey"):  # a host key file holds the host key, and no other
            leaks += scan(content, run.key_needles)
        if leaks:
            found[name] = leaks
    assert found == {}
    # Positive control: a revocation's reason is host-visible by design, and is found.
    assert any(scan(content, run.positive) for content in stored.values())


def test_no_canary_in_the_export(run: Run) -> None:
    """The export file carries ciphertext only (promise 1; export.md)."""
    content = (run.root / "exports" / "vault.pdsx").read_bytes()
    assert content.startswith(b"pds-export/v1\n")
    assert run.canaries.scan(content) == []
    assert scan(content, run.key_needles) == []


def test_no_canary_in_any_file_left_behind(run: Run) -> None:
    """Every other file the workload wrote in its directory (pinned log heads, CLI stores,
    temporary files), and every file created in the system temporary directory meanwhile."""
    files = [
        path
        for path in run.root.rglob("*")
        if path.is_file() and run.inputs not in path.parents and path.suffix != ".pdsx"
    ]
    assert any(path.suffix == ".key" for path in files)
    found = {}
    for path in [*files, *run.temp_files]:
        try:
            content = path.read_bytes()
        except OSError:  # another process's temporary file, gone meanwhile
            continue
        leaks = run.canaries.scan(content)
        # Key files hold their own key, by definition; nothing else may hold any key. (The
        # system directory is shared with other processes: only canaries are looked for.)
        if path.suffix not in (".key", ".hostkey") and path in files:
            leaks += scan(content, run.key_needles)
        if leaks:
            found[str(path)] = leaks
    assert found == {}


def test_no_canary_in_logs_or_console(run: Run) -> None:
    """Every log record of every logger at DEBUG, and everything written to fds 1 and 2 and
    to ``sys.stdout``/``sys.stderr`` while the workload ran (the real ``pds`` processes
    included, through the CLI output scan below)."""
    text = ("\n".join(run.logs) + run.console).encode("utf-8")
    assert run.canaries.scan(text) == []
    assert scan(text, run.key_needles) == []


def test_no_canary_in_cli_output(run: Run) -> None:
    """Failing CLI commands print one error line (a traceback with --debug), never a
    passphrase, record value, token or label they were given."""
    assert len(run.cli_outputs) >= 15
    assert all(code != 0 for code in run.cli_codes)
    assert any("Traceback" in output for output in run.cli_outputs)
    for output in run.cli_outputs:
        assert run.canaries.scan(output.encode("utf-8")) == [], output
        assert scan(output.encode("utf-8"), run.key_needles) == [], output


def test_no_canary_in_exception_text(run: Run) -> None:
    """``str``, ``repr``, args and traceback of every exception raised, with its chain as
    Python shows it; each is a pds error."""
    assert len(run.raised) >= 25
    for exc in run.raised:
        assert isinstance(exc, errors.PDSError), repr(exc)
        text = exception_text(exc).encode("utf-8")
        assert run.canaries.scan(text) == [], exception_text(exc)
        assert scan(text, run.key_needles) == [], exception_text(exc)


def test_grantees_did_receive_the_plaintext(run: Run) -> None:
    """Positive control: what a grantee reads is the plaintext, canaries included; the scan
    above is of storage, logs, outputs and errors, not of legitimate reads."""
    returned = json.dumps(run.granted_plaintext, ensure_ascii=False).encode("utf-8")
    for name in ("visit-v2.name", "benefit1.note", "form.name"):
        assert scan(returned, {name: run.canaries.needles[name]}), name
    assert not scan(returned, {"allergy": run.canaries.needles["allergy"]})  # not granted


# -- key objects ----------------------------------------------------------------------------


def test_key_objects_redact_their_key_bytes(tmp_path: Path) -> None:
    """``str`` and ``repr`` of every object that holds key material show none of it, in any
    encoding: signing keys, owner secrets and keys, KDF-derived keys, the store context,
    vaults, grantees, tokens, links, invocations, responses and reads."""
    passphrase = f"pass-{secrets.token_hex(12)}"
    key_file = tmp_path / "owner.key"
    owner_file_key = SymmetricKey.create_file(key_file)
    with pds.open_store(tmp_path / "store.db") as store:
        vault_id = store.create_vault(passphrase=passphrase, kdf=KDF)
        vault = store.open_vault(vault_id)
        vault.unlock(passphrase=passphrase)
        vault.create_collection("forms", seal_fields=True)
        vault.put("notes", {"a": 1})
        vault.put("forms", {"name": "x", "dob": "y"})
        agency = PrincipalKey.generate()
        token = vault.grant(
            agency.did, collections=["*"], purpose="p", expires=dt.timedelta(days=1)
        )
        grantee = pds.Grantee(agency)
        invocation = grantee.invoke(token)
        response = store.serve(invocation.to_bytes())
        read = grantee.open(token, response, invocation=invocation)
        vault.get(read.records[0].record_id)
        row = store.backend.get_vault(vault_id)
        assert row is not None
        unlock = _codec.decode(row.unlock)
        kek = _crypto.argon2id_key(
            passphrase.encode(), unlock["salt"], unlock["opslimit"], unlock["memlimit"]
        )
        owner = vault._owner
        assert owner is not None
        secrets_held: dict[str, bytes] = {
            "passphrase": passphrase.encode(),
            "owner-key-file": key_file.read_bytes(),
            "host-key": Path(f"{tmp_path / 'store.db'}.hostkey").read_bytes(),
            "argon2id-kek": kek,
            "master": owner.master,
            "identity-seed": owner.identity.seed,
            "owner-x25519": owner.x25519_secret,
            "agency-seed": agency._key.seed,
            "agency-x25519": grantee._x25519,
        }
        for (collection, epoch, _), secret in owner.epoch_secrets.items():
            secrets_held[f"epoch {collection} {epoch}"] = secret
        for batch_id, share in vault._host_shares.items():
            secrets_held[f"host share {batch_id.hex()}"] = share
        for item in response.records:
            if "host_share" in item:
                secrets_held[f"h {item['record']}"] = bytes(item["host_share"])
            for name, share in item.get("field_shares", []):
                secrets_held[f"h_f {item['record']} {name}"] = bytes(share)
        needles = {name: key_forms(secret) for name, secret in secrets_held.items()}
        needles["passphrase"] = canary_forms(passphrase)
        objects: dict[str, object] = {
            "SigningKey": owner.identity,
            "agency SigningKey": agency._key,
            "OwnerKeys": owner,
            "OwnerSecret(passphrase)": _owner.OwnerSecret(passphrase=passphrase),
            "OwnerSecret(key_file)": _owner.OwnerSecret(key_file=key_file),
            "OwnerSecret(key_provider)": _owner.OwnerSecret(key_provider=owner_file_key),
            "OwnerCredential": OwnerCredential(passphrase=passphrase),
            "KdfParams": KDF,
            "SymmetricKey(argon2id kek)": SymmetricKey(kek),
            "SymmetricKey(host key)": store._ctx.host_key,
            "Context": store._ctx,
            "Store": store,
            "Vault (unlocked)": vault,
            "Vault (locked)": store.open_vault(vault_id),
            "Grantee": grantee,
            "Token": token,
            "Link": token.root,
            "SealedKey": token.root.keys[0],
            "Caveats": token.root.caveats,
            "Invocation": invocation,
            "Response": response,
            "GrantedRead": read,
            "Record": read.records[0],
            "Checkpoint": vault.checkpoint(),
        }
        assert len(needles) > 12
        # The positive control: a naive repr of a key holder would be caught.
        naive = f"OwnerKeys(master={owner.master!r}, x25519={owner.x25519_secret.hex()})"
        assert len(scan(naive.encode(), needles)) == 2
        found = {}
        for label, obj in objects.items():
            text = f"{obj!s}\n{obj!r}".encode()
            leaks = scan(text, needles)
            if leaks:
                found[label] = leaks
        assert found == {}
