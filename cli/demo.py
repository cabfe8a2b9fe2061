"""``pds demo``: the whole story, end to end, in a temporary store, narrated.

The demo is a list of steps (``STEPS``) run in order against one ``Demo`` state. Each step
narrates what it does (``demo.say``), records facts for ``--json`` (``demo.fact``) and
checks what it promises (``demo.check``); a failed check stops the demo with exit code 1.
Steps cover the vault (records, versions, rotation, export), capability tokens (grant,
read, delegate, revoke) and the access log (the person's view, an offline audit).
"""

from __future__ import annotations

import base64
import secrets
import shutil
import tempfile
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import click

import pds
from pds import audit, errors

from .log_cmds import describe_entry, entry_document
from .output import json_text, pretty_json
from .state import json_option

__all__ = ["STEPS", "Demo", "DemoFailed", "demo"]


class DemoFailed(click.ClickException):
    """A step of the demo did not behave as promised (exit code 1)."""

    exit_code = 1


@dataclass
class Demo:
    """The demo's state, shared by its steps, and its narration."""

    directory: Path
    as_json: bool
    passphrase: str = field(default_factory=lambda: secrets.token_urlsafe(24), repr=False)
    markers: list[str] = field(default_factory=list, repr=False)
    """Unique strings placed in record data: none may ever appear in a file at rest."""
    stores: list[pds.Store] = field(default_factory=list)
    store: pds.Store | None = None
    vault_id: str = ""
    records: dict[str, str] = field(default_factory=dict)
    """Demo record names (``"measles"``, ...) to record ids."""
    expected: dict[str, dict[str, Any]] = field(default_factory=dict, repr=False)
    """Record ids to the data their current version must decrypt to."""
    export_file: Path | None = None
    unlocked: pds.Vault | None = field(default=None, repr=False)
    principals: dict[str, pds.PrincipalKey] = field(default_factory=dict, repr=False)
    """Demo principals (``"agency"``, ``"processor"``) to their key pairs."""
    tokens: dict[str, pds.Token] = field(default_factory=dict, repr=False)
    """The agency's token and the processor's delegated one."""
    steps: list[dict[str, Any]] = field(default_factory=list)

    # -- narration

    def say(self, line: str = "") -> None:
        if not self.as_json:
            click.echo(f"    {line}" if line else "")

    def fact(self, **facts: Any) -> None:
        self.steps[-1]["details"].update(facts)

    def check(self, condition: bool, failure: str) -> None:
        if not condition:
            raise DemoFailed(f"demo step {len(self.steps)} failed: {failure}")

    @contextmanager
    def expect_refusal(self, error: type[errors.PDSError]) -> Iterator[None]:
        """The block must raise ``error``; narrate the refusal."""
        try:
            yield
        except error as exc:
            self.say(f"refused as expected: {type(exc).__name__}: {exc}")
            return
        raise DemoFailed(f"demo step {len(self.steps)} failed: expected {error.__name__}")

    # -- helpers for steps

    def open_store(self, name: str) -> pds.Store:
        store = pds.open_store(self.directory / name)
        self.stores.append(store)
        return store

    def vault(self, *, unlocked: bool = True) -> pds.Vault:
        """The demo vault: a fresh locked object, or the one unlocked object (Argon2id
        runs once)."""
        assert self.store is not None
        if unlocked and self.unlocked is not None:
            return self.unlocked
        opened = self.store.open_vault(self.vault_id)
        if unlocked:
            opened.unlock(passphrase=self.passphrase)
            self.unlocked = opened
        return opened

    def marker(self, label: str) -> str:
        value = f"{label}-{secrets.token_hex(8)}"
        self.markers.append(value)
        return value

    def close(self) -> None:
        if self.unlocked is not None:
            self.unlocked.lock()
            self.unlocked = None
        for store in self.stores:
            store.close()
        self.stores.clear()


Step = tuple[str, str, Callable[[Demo], None]]


def create_vault(demo: Demo) -> None:
    demo.store = demo.open_store("host-a.db")
    demo.vault_id = demo.store.create_vault(
        passphrase=demo.passphrase, kdf=pds.KdfParams.interactive()
    )
    opened = demo.vault(unlocked=False)
    demo.say(f"store   {demo.directory / 'host-a.db'} (host key beside it, 0600)")
    demo.say(f"vault   {demo.vault_id}")
    demo.say(f"did     {opened.did}")
    demo.say("unlock  a random passphrase through Argon2id (interactive preset, for speed)")
    demo.fact(vault=demo.vault_id, did=opened.did)


def put_records(demo: Demo) -> None:
    opened = demo.vault()
    documents: dict[str, tuple[str, dict[str, Any]]] = {
        "measles": (
            "health/vaccinations",
            {"vaccine": "MMR", "date": "2019-05-14", "note": demo.marker("measles")},
        ),
        "tetanus": (
            "health/vaccinations",
            {"vaccine": "Td", "date": "2022-11-02", "note": demo.marker("tetanus")},
        ),
        "tax2024": (
            "tax/returns",
            {"year": 2024, "income": 41250, "note": demo.marker("tax")},
        ),
    }
    # Vaccinations are sealed field by field, so a grant can be limited to some fields by
    # cryptography (each field has its own key); tax returns are sealed whole.
    opened.create_collection("health/vaccinations", seal_fields=True)
    demo.say("health/vaccinations is sealed field by field; tax/returns record by record")
    for name, (collection, data) in documents.items():
        info = opened.put(collection, data)
        demo.records[name] = info.record_id
        demo.expected[info.record_id] = data
        demo.say(f"{collection:<20} record {info.record_id} version {info.version}")
    demo.fact(records={name: demo.records[name] for name in documents})


def list_locked(demo: Demo) -> None:
    locked = demo.vault(unlocked=False)
    page = locked.list()
    demo.say(f"the host lists {len(page.records)} records without any secret (metadata only):")
    for info in page.records:
        demo.say(f"  {info.record_id}  {info.collection:<20} v{info.version}  {info.size} bytes")
    demo.check(len(page.records) == 3, "the locked vault should list three records")
    with demo.expect_refusal(errors.VaultLocked):
        locked.get(demo.records["measles"])
    demo.fact(listed=len(page.records), content_while_locked="refused")


def get_record(demo: Demo) -> None:
    opened = demo.vault()
    record = opened.get(demo.records["measles"])
    demo.say(f"record {record.record_id}, verified (signed by {record.writer[:24]}...):")
    for line in pretty_json(record.data):
        demo.say(f"  {line}")
    demo.check(record.data == demo.expected[record.record_id], "decrypted data differs")
    demo.fact(record=record.record_id, version=record.version, writer=record.writer)


def update_and_history(demo: Demo) -> None:
    opened = demo.vault()
    record_id = demo.records["tetanus"]
    updated = {"vaccine": "Td", "date": "2022-11-02", "booster_due": "2032-11-02"}
    updated["note"] = demo.marker("tetanus-v2")
    info = opened.put("health/vaccinations", updated, record_id=record_id)
    demo.expected[record_id] = updated
    versions = opened.history(record_id)
    demo.say(f"record {record_id} updated: now version {info.version}; every version is kept:")
    for record in versions:
        demo.say(f"  version {record.version}: {sorted((record.data or {}).keys())}")
    demo.check([r.version for r in versions] == [1, 2], "history should hold versions 1 and 2")
    demo.check(opened.get(record_id).data == updated, "the current version should be the update")
    demo.fact(record=record_id, versions=len(versions))


def delete_record(demo: Demo) -> None:
    opened = demo.vault()
    record_id = demo.records["tax2024"]
    info = opened.delete(record_id)
    del demo.expected[record_id]
    demo.say(f"record {record_id} deleted: tombstone version {info.version}")
    with demo.expect_refusal(errors.RecordDeleted):
        opened.get(record_id)
    versions = opened.history(record_id)
    erased = [record.version for record in versions if record.erased]
    demo.say(f"history keeps the versions, content erased: versions {erased} hold no data")
    demo.check(all(record.data is None for record in versions), "deleted content remains")
    demo.fact(record=record_id, tombstone_version=info.version, erased_versions=erased)


def rotate_keys(demo: Demo) -> None:
    opened = demo.vault()
    epochs = opened.rotate()
    for name, epoch in sorted(epochs.items()):
        demo.say(f"collection {name} now writes with key epoch {epoch}")
    data = {"vaccine": "influenza", "date": "2025-10-20", "note": demo.marker("flu")}
    info = opened.put("health/vaccinations", data)
    demo.records["flu"] = info.record_id
    demo.expected[info.record_id] = data
    demo.say(f"a new record {info.record_id} uses epoch {info.epoch}; older ones keep theirs")
    old = opened.get(demo.records["measles"])
    demo.check(info.epoch == epochs["health/vaccinations"], "the new record uses the new epoch")
    demo.check(old.epoch == 1 and old.data is not None, "older records stay readable")
    demo.fact(epochs=epochs, new_record=info.record_id)


def export_vault(demo: Demo) -> None:
    opened = demo.vault()
    demo.export_file = demo.directory / "vault.pdsx"
    counter: list[int] = [0]

    def progress(count: int) -> None:
        counter[0] = count

    opened.export(demo.export_file, progress=progress)
    size = demo.export_file.stat().st_size
    demo.say(f"exported {counter[0]} record versions ({size} bytes, signed) to {demo.export_file}")
    demo.fact(file=str(demo.export_file), records=counter[0], bytes=size)


def import_and_verify(demo: Demo) -> None:
    assert demo.export_file is not None
    other = demo.open_store("host-b.db")
    imported_id = other.import_vault(demo.export_file, passphrase=demo.passphrase)
    demo.check(imported_id == demo.vault_id, "the imported vault keeps its id")
    copy = other.open_vault(imported_id)
    copy.unlock(passphrase=demo.passphrase)
    original = demo.vault()
    listed = [info.record_id for info in copy.iter_records()]
    demo.check(
        listed == [info.record_id for info in original.iter_records()],
        "the imported vault lists different records",
    )
    for record_id, data in demo.expected.items():
        demo.check(copy.get(record_id).data == data, "an imported record decrypts differently")
        demo.check(
            len(copy.history(record_id)) == len(original.history(record_id)),
            "an imported record has a different history",
        )
    demo.say(
        f"imported into a second store with its own host key: {len(listed)} live records, "
        "each decrypted and compared, histories equal"
    )
    demo.fact(store=str(demo.directory / "host-b.db"), verified_records=len(listed))


GRANTED = "health/vaccinations"
PURPOSE = "school enrolment check"
PROJECTED = ("vaccine", "date")


def _grantee(demo: Demo, name: str) -> pds.Grantee:
    return pds.Grantee(demo.principals[name])


def create_principals(demo: Demo) -> None:
    for name, label in (("agency", "the school health service"), ("processor", "its processor")):
        path = demo.directory / f"{name}.key"
        principal = pds.PrincipalKey.create_file(path)
        demo.principals[name] = principal
        demo.say(f"{label:<26} {principal.did}  (key file {path.name}, 0600)")
    demo.fact(**{name: key.did for name, key in demo.principals.items()})


def grant_collection(demo: Demo) -> None:
    opened = demo.vault()
    # A record outside the grant: the agency must never see it.
    data = {"year": 2025, "income": 43100, "note": demo.marker("tax2025")}
    info = opened.put("tax/returns", data)
    demo.records["tax2025"] = info.record_id
    demo.expected[info.record_id] = data
    token = opened.grant(
        demo.principals["agency"].did,
        collections=[GRANTED],
        purpose=PURPOSE,
        expires=timedelta(days=30),
        delegable=1,
    )
    demo.tokens["agency"] = token
    caveats = token.links[-1].caveats
    demo.say(f"the person grants the agency {', '.join(sorted(caveats.abilities))} on {GRANTED}")
    demo.say(f"purpose '{PURPOSE}', for 30 days, delegable once; tax/returns is not granted")
    demo.say(f"token {token.to_text()[:40]}... ({len(token.to_text())} characters)")
    demo.say(f"link  {token.link_id.hex()}")
    demo.fact(link=token.link_id.hex(), collections=[GRANTED], purpose=PURPOSE, days=30)


def agency_reads(demo: Demo) -> None:
    assert demo.store is not None
    agency = _grantee(demo, "agency")
    result = agency.read(demo.store, demo.tokens["agency"], agent="nurse 12", correlation="E-1")
    collections = sorted({record.collection for record in result.records})
    for record in result.records:
        demo.say(f"{record.collection:<20} record {record.record_id}: {sorted(record.data or {})}")
    demo.say(f"only {GRANTED} came back; the host logged the access first (entry {result.access})")
    demo.check(collections == [GRANTED], "the agency received records outside its grant")
    demo.check(
        all(record.data == demo.expected[record.record_id] for record in result.records),
        "the agency decrypted different data",
    )
    demo.check(len(result.records) == 3, "the agency should read three vaccination records")
    demo.fact(records=len(result.records), collections=collections, access=result.access)


def delegate_token(demo: Demo) -> None:
    agency = _grantee(demo, "agency")
    child = agency.delegate(
        demo.tokens["agency"],
        to=demo.principals["processor"].did,
        fields=list(PROJECTED),
        expires=timedelta(days=7),
    )
    demo.tokens["processor"] = child
    demo.say(f"the agency delegates to its processor, offline: fields {', '.join(PROJECTED)}")
    demo.say("only, for 7 days, and it may not delegate further")
    demo.say(f"link  {child.link_id.hex()} (chain of {len(child.links)} links)")
    demo.fact(link=child.link_id.hex(), fields=list(PROJECTED), days=7)


def processor_reads(demo: Demo) -> None:
    assert demo.store is not None
    processor = _grantee(demo, "processor")
    result = processor.read(demo.store, demo.tokens["processor"])
    for record in result.records:
        demo.say(f"{record.collection:<20} record {record.record_id}: {record.data}")
    demo.check(bool(result.records), "the processor should read records")
    demo.check(
        all(set(record.data or {}) <= set(PROJECTED) for record in result.records),
        "the processor saw fields outside its projection",
    )
    demo.say("the notes (and every other field) stay out of the processor's view")
    demo.fact(records=len(result.records), fields=list(PROJECTED))


def revoke_token(demo: Demo) -> None:
    opened = demo.vault()
    link = opened.revoke(demo.tokens["agency"], reason="consent withdrawn")
    statuses = {info.link_id: info.status for info in opened.grants()}
    demo.say(f"the person revokes the agency's link {link.hex()[:16]}... (consent withdrawn)")
    demo.say(
        f"grants now: agency {statuses.get(link.hex())}, processor "
        f"{statuses.get(demo.tokens['processor'].link_id.hex())} (revoked with its parent)"
    )
    demo.check(statuses.get(link.hex()) == "revoked", "the agency's grant is not revoked")
    demo.fact(revoked=link.hex(), statuses=statuses)


def refused_reads(demo: Demo) -> None:
    assert demo.store is not None
    with demo.expect_refusal(errors.Revoked):
        _grantee(demo, "agency").read(demo.store, demo.tokens["agency"])
    with demo.expect_refusal(errors.Revoked):
        _grantee(demo, "processor").read(demo.store, demo.tokens["processor"])
    demo.say("both refusals are in the person's log too")
    demo.fact(agency="refused (revoked)", processor="refused (revoked)")


def person_log(demo: Demo) -> None:
    opened = demo.vault()
    page = opened.log(limit=1000)
    accesses = [entry for entry in page.entries if entry.kind in ("read", "list")]
    demo.say("who read what, when and why (newest first):")
    for entry in accesses:
        demo.say(f"  {describe_entry(entry)}")
    others = Counter(entry.kind for entry in page.entries if entry.kind not in ("read", "list"))
    summary = ", ".join(f"{count} {kind}" for kind, count in sorted(others.items()))
    demo.say(f"and {sum(others.values())} other entries: {summary}")
    results = sorted(entry.result for entry in accesses)
    demo.check(results.count("released") == 2, "the log should hold the two released reads")
    demo.check(results.count("refused") == 2, "the log should hold the two refused reads")
    demo.fact(
        entries=[entry_document(entry) for entry in page.entries],
        withheld=page.withheld,
        size=opened.log_size(),
    )


def audit_package(demo: Demo) -> None:
    opened = demo.vault()
    directory = demo.directory / "audit"
    audit.export_audit(opened, directory)
    report = audit.verify_audit(directory)
    counts = report.to_dict()["counts"]
    demo.say(f"audit package written to {directory} and verified offline, from its files alone:")
    demo.say(
        f"{counts['entries']} log entries against the signed checkpoint, "
        f"{counts['accesses']} accesses ({counts['released']} released, "
        f"{counts['refused']} refused): {'clean' if report.clean else 'VIOLATIONS'}"
    )
    demo.check(report.clean, f"the audit found {counts['violations']} violation(s)")
    demo.fact(directory=str(directory), report=report.to_dict())


def _forms(value: bytes) -> list[bytes]:
    """Raw, hex and base64 renderings of a secret, as a leak would show them."""
    return [
        value,
        value.hex().encode("ascii"),
        base64.b64encode(value).rstrip(b"="),
        base64.urlsafe_b64encode(value).rstrip(b"="),
    ]


def _scan(demo: Demo) -> tuple[int, int, list[str]]:
    needles = [(marker, form) for marker in demo.markers for form in _forms(marker.encode())]
    needles += [("the passphrase", form) for form in _forms(demo.passphrase.encode())]
    files = sorted(path for path in demo.directory.iterdir() if path.is_file())
    total = 0
    found: list[str] = []
    for path in files:
        content = path.read_bytes()
        total += len(content)
        found += [f"{label} in {path.name}" for label, form in needles if form in content]
    return len(files), total, found


def scan_at_rest(demo: Demo) -> None:
    # Scan twice: with the stores open (their WAL files hold the latest writes) and after
    # closing them (the WAL is checkpointed into the database files).
    files, size, found = _scan(demo)
    demo.close()
    files_after, size_after, found_after = _scan(demo)
    demo.check(not found and not found_after, f"plaintext found at rest: {len(found)} hits")
    demo.say(
        f"scanned every byte of the databases, WAL files, host keys and the export "
        f"({files} files, {size} bytes open; {files_after} files, {size_after} bytes closed)"
    )
    demo.say(
        f"none of the {len(demo.markers)} plaintext markers nor the passphrase appear "
        "(raw, hex or base64)"
    )
    demo.fact(
        files=files_after,
        bytes=size_after,
        markers=len(demo.markers),
        plaintext_found=len(found) + len(found_after),
    )


STEPS: list[Step] = [
    ("create-vault", "Create a store and a vault", create_vault),
    ("put", "Put records in two collections", put_records),
    ("list-locked", "List while locked: metadata only, no content", list_locked),
    ("get", "Unlock and read a record", get_record),
    ("update", "Update a record: a new version, history kept", update_and_history),
    ("delete", "Delete a record: tombstone, content erased", delete_record),
    ("rotate", "Rotate the collection keys", rotate_keys),
    ("export", "Export the vault to one portable file", export_vault),
    ("import", "Import it into a second store and verify", import_and_verify),
    ("principals", "Create an agency key and a processor key", create_principals),
    ("grant", "Grant the agency one collection, for a purpose, until a date", grant_collection),
    ("token-read", "The agency reads with its token: only that collection", agency_reads),
    ("delegate", "The agency delegates to a processor, fewer fields", delegate_token),
    ("delegate-read", "The processor reads: projected fields only", processor_reads),
    ("revoke", "The person revokes the agency's grant", revoke_token),
    ("refused", "Reads after revocation are refused", refused_reads),
    ("log", "The person's log: who read what, when, why", person_log),
    ("audit", "An audit package, verified offline: clean", audit_package),
    ("scan", "Nothing readable at rest", scan_at_rest),
]


def run_demo(directory: Path, *, as_json: bool) -> Demo:
    """Run every step in ``directory``; raise ``DemoFailed`` if one does not hold."""
    state = Demo(directory=directory, as_json=as_json)
    try:
        for number, (name, title, step) in enumerate(STEPS, start=1):
            state.steps.append({"step": number, "name": name, "title": title, "details": {}})
            if not as_json:
                click.echo(f"{number:>2}. {title}")
            step(state)
    finally:
        state.close()
    return state


@click.command("demo", short_help="Run the whole story end to end, narrated.")
@click.option(
    "--keep",
    is_flag=True,
    help="Keep the temporary directory (stores, host keys, export) for inspection.",
)
@json_option
def demo(keep: bool, as_json: bool) -> None:
    """Run the whole story end to end in a temporary store, narrated step by step.

    Creates a vault, stores, lists, reads, updates, deletes records, rotates keys,
    exports and imports the vault; grants an agency one collection, reads with its token,
    delegates to a processor with fewer fields, revokes, shows the refused reads, the
    person's log and a clean offline audit; and checks that no plaintext reached the disk.
    The global --store is not used. Exit code 0 means every step held.
    """
    directory = Path(tempfile.mkdtemp(prefix="pds-demo-"))
    try:
        if not as_json:
            click.echo(f"pds demo in {directory}\n")
        state = run_demo(directory, as_json=as_json)
    finally:
        if not keep:
            shutil.rmtree(directory, ignore_errors=True)
    document = {"ok": True, "directory": str(directory), "kept": keep, "steps": state.steps}
    if as_json:
        click.echo(json_text(document))
    else:
        click.echo("")
        click.echo(f"demo complete: all {len(STEPS)} steps held")
        if keep:
            click.echo(f"files kept in {directory}")
