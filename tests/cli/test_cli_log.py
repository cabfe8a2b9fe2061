"""``pds log`` (the person's view), ``log head``, ``log prove``, ``log consistency``, and the
pinned-head check that detects a rolled-back or forked store."""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

import pds
from pds import _crypto, _export, accesslog, merkle
from pds.accesslog import Checkpoint, MerkleLog

if TYPE_CHECKING:
    # mypy reads pds_cli under its folder name (see conftest.py).
    from cli import heads
    from cli.heads import head_path, state_directory
    from tests.cli.conftest import Cli, Granted
else:
    from pds_cli import heads
    from pds_cli.heads import head_path, state_directory


def _agency_read(granted: Granted, *extra: str, store: Path | None = None) -> dict[str, Any]:
    document: dict[str, Any] = granted.cli.json(
        "read", "--token", granted.token, "--key", granted.agency_key, *extra, store=store
    )
    return document


def test_log_json_newest_first(granted: Granted) -> None:
    cli = granted.cli
    _agency_read(granted, "--agent", "clerk 17", "--correlation", "case-9")
    cli.fails(1, "read", "--token", granted.token, "--key", granted.agency_key, "-c", "health")
    document = cli.json("log", granted.vault, *granted.owner)
    entries = document["entries"]
    assert [entry["kind"] for entry in entries] == ["read", "read", "grant", "create", "create"]
    assert [entry["index"] for entry in entries] == [4, 3, 2, 1, 0]
    assert document["withheld"] == 0
    assert document["cursor"] is None
    refused, released, grant, visits, payslips = entries
    assert (visits["collections"], payslips["collections"]) == (
        ["health/visits"],
        ["income/payslips"],
    )
    assert visits["owner"] is True and visits["unsigned"] is False
    assert released["actor"] == granted.agency_did
    assert released["owner"] is False
    assert released["agent"] == "clerk 17"
    assert released["correlation"] == "case-9"
    assert released["action"] == "read"
    assert released["purpose"] == "child allowance check"
    assert released["collections"] == ["income/payslips"]
    assert released["records"] == [{"record": granted.payslip["record"], "version": 1}]
    assert released["result"] == "released"
    assert released["reason"] is None
    assert released["links"] == [granted.link]
    assert released["disclose_after"] is None
    assert (refused["result"], refused["reason"]) == ("refused", "scope:collection")
    assert grant["owner"] is True and grant["actor"] == granted.vault_did
    assert set(released) >= {
        "index",
        "time",
        "kind",
        "actor",
        "agent",
        "action",
        "purpose",
        "basis",
        "collections",
        "records",
        "result",
        "reason",
        "correlation",
        "disclose_after",
    }


def test_log_text_both_forms(granted: Granted) -> None:
    cli = granted.cli
    _agency_read(granted, "--agent", "clerk 17")
    short = cli.ok("log", granted.vault, *granted.owner).stdout
    explicit = cli.ok("log", "list", granted.vault, *granted.owner).stdout
    assert short == explicit
    first, second, third, fourth = short.splitlines()
    assert "(agent: clerk 17) read 1 record in income/payslips" in first
    assert "for 'child allowance check' — released" in first
    assert first.startswith(datetime.now(UTC).strftime("%Y-%m-%d"))
    assert "you (the owner) granted" in second
    assert third.endswith(
        "#1  you (the owner) created the collection health/visits (sealed field by field)"
    )
    assert "#0  you (the owner) created the collection income/payslips" in fourth
    # Global options and --json may come before VAULT.
    assert cli.json("log", "--key-file", granted.owner_key, granted.vault)["entries"]


def _host_appends(granted: Granted, kind: str, link_id: bytes | None, details: Any) -> int:
    """The host appends an entry, sealed to the owner's public key as anyone can, unsigned.
    Returns its index."""
    with pds.open_store(granted.cli.store) as store:
        backend = store.backend
        row = backend.get_vault(granted.vault)
        assert row is not None
        with backend.transaction():
            return MerkleLog(backend, granted.vault).append(
                time=int(datetime.now(UTC).timestamp() * 1000),
                kind=kind,
                result="ok",
                link_id=link_id,
                details=details,
                owner_x25519_public=_crypto.ed25519_to_x25519(row.identity_public),
                rng=os.urandom,
            )


def _host_forges_a_revoke_entry(granted: Granted) -> int:
    """A ``revoke`` entry for the agency's live link, as the host can append one."""
    details = {"actor": granted.vault_did, "owner": True, "link": granted.link}
    return _host_appends(granted, "revoke", bytes.fromhex(granted.link), details)


def test_an_entry_whose_details_do_not_open_is_shown_damaged(granted: Granted) -> None:
    """The host appends an entry whose sealed details are not a box to the owner's key:
    the person's log still lists every entry, that one marked, from the library and the
    CLI alike (it used to raise, hiding the whole log)."""
    cli = granted.cli
    with pds.open_store(cli.store) as store:
        backend = store.backend
        with backend.transaction():
            log = MerkleLog(backend, granted.vault)
            index = log.size()
            now = int(datetime.now(UTC).timestamp() * 1000)
            raw = accesslog.encode_entry(
                vault_id=granted.vault,
                index=index,
                time=now,
                kind="read",
                result="released",
                link_id=bytes.fromhex(granted.link),
                disclose_after=None,
                sealed=os.urandom(96),
            )
            log.append_raw(index, now, raw)
    entries = cli.json("log", granted.vault, *granted.owner)["entries"]
    assert entries[0]["index"] == index and entries[0]["damaged"] is True
    assert len(entries) == index + 1 and not any(e["damaged"] for e in entries[1:])
    line = cli.ok("log", granted.vault, *granted.owner).stdout.splitlines()[0]
    assert f"#{index}" in line and "[DAMAGED: its details do not open" in line
    with pds.open_store(cli.store) as store:
        vault = store.open_vault(granted.vault)
        vault.unlock(key_file=granted.owner_key)
        damaged = [entry.index for entry in vault.access_log() if entry.damaged]
    assert damaged == [index]


GARBAGE = b"\xc1GARBAGE-FROM-THE-HOST"


def _host_garbles(granted: Granted, index: int) -> None:
    """The host overwrites the stored bytes of entry ``index`` with bytes that do not parse."""
    conn = sqlite3.connect(granted.cli.store)
    with conn:
        changed = conn.execute(
            "UPDATE log_entries SET entry = ? WHERE idx = ?", (GARBAGE, index)
        ).rowcount
    conn.close()
    assert changed == 1


DAMAGED_LINE = (
    "(time unknown)        #{}  [DAMAGED: the entry does not parse as one of this vault's "
    "log entries; the host wrote or changed it]"
)


def test_an_entry_that_does_not_parse_is_shown_damaged(granted: Granted) -> None:
    """The host appends garbage after its entry of an agency's read: `pds log` lists every
    entry (that one as DAMAGED, in one line, without its bytes), warns of nothing, signs and
    pins a head over the log as it is, and exits 0: the garbage is a leaf the host wrote,
    and the log verifies. It used to warn (log-entry), pin nothing and exit 1 for good (the
    log is append-only), and before that to print the WARNING alone."""
    cli = granted.cli
    _agency_read(granted)
    index = granted.cli.host_appends(granted.vault, GARBAGE)
    _agency_read(granted, "--agent", "clerk 17")
    pin = cli.state_dir / "heads" / f"{granted.vault}.checkpoint"
    pinned = Checkpoint.parse(pin.read_text())

    result = cli.ok("log", granted.vault, *granted.owner)
    assert result.stderr == ""
    lines = result.stdout.splitlines()
    assert [re.findall(r"  #(\d+)  ", line) for line in lines] == [
        ["5"],
        ["4"],
        ["3"],
        ["2"],
        ["1"],
        ["0"],
    ]
    assert index == 4 and lines[1] == DAMAGED_LINE.format(4)
    assert "(agent: clerk 17) read 1 record in income/payslips" in lines[0]
    assert "DAMAGED" not in "".join(lines[:1] + lines[2:])
    assert "GARBAGE" not in cli.all_output()
    moved = Checkpoint.parse(pin.read_text())
    assert (pinned.size, moved.size) == (3, 6)  # the new head commits to the garbage

    entries = cli.json("log", granted.vault, *granted.owner)["entries"]
    assert [entry["index"] for entry in entries] == [5, 4, 3, 2, 1, 0]
    damaged = entries[1]
    assert (damaged["damaged"], damaged["damage"], damaged["time"]) == (True, "entry", None)
    assert (damaged["kind"], damaged["actor"], damaged["result"]) == ("", "", "")
    assert [entry["damage"] for entry in entries] == [None, "entry", None, None, None, None]

    # Without a pinned head (first visit): the same.
    pin.unlink()
    assert cli.ok("log", granted.vault, *granted.owner).stdout.splitlines()[1] == lines[1]
    assert pin.exists()


def test_subtree_hashes_that_do_not_match_the_entries_are_listed_after_a_warning(
    granted: Granted,
) -> None:
    """The host overwrites its entry of an agency's read with garbage in place, leaving
    the stored subtree hashes as they were: the entries extend the pin, the cache does
    not match them (log-entry). `pds log` warns, lists every entry all the same (that one
    as DAMAGED), pins nothing and exits 1; a rollback still shows nothing."""
    cli = granted.cli
    _agency_read(granted)
    _agency_read(granted, "--agent", "clerk 17")
    pin = cli.state_dir / "heads" / f"{granted.vault}.checkpoint"
    pinned = pin.read_text()
    _host_garbles(granted, 3)

    result = cli("log", granted.vault, *granted.owner)
    assert result.exit_code == 1, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    assert result.stderr.splitlines() == [
        f"WARNING: the store's log for {granted.vault} does not verify (log-entry): its "
        "stored subtree hashes do not match its entries; the host changed them"
    ]
    lines = result.stdout.splitlines()
    assert [re.findall(r"  #(\d+)  ", line) for line in lines] == [
        ["4"],
        ["3"],
        ["2"],
        ["1"],
        ["0"],
    ]
    assert lines[1] == DAMAGED_LINE.format(3)
    assert "GARBAGE" not in cli.all_output()
    document = cli("log", granted.vault, "--json", *granted.owner)
    assert document.exit_code == 1
    entries = json.loads(document.stdout)["entries"]
    assert [entry["damage"] for entry in entries] == [None, "entry", None, None, None]
    assert pin.read_text() == pinned  # the pin stays where the log last verified

    # A rollback is still refused without a listing.
    conn = sqlite3.connect(cli.store)
    with conn:
        conn.execute("DELETE FROM log_entries WHERE idx >= 2")
        conn.execute("DELETE FROM log_nodes WHERE ((idx + 1) << level) > 2")
    conn.close()
    _warned(cli("log", granted.vault, *granted.owner), granted.vault)


def test_revoke_audience_past_an_entry_that_does_not_parse(granted: Granted) -> None:
    """`pds revoke --audience` revokes the grant it finds, then fails in one line saying
    the log does not verify (exit 1): the host changed an entry's bytes, not the subtree
    hashes over it. It used to fail on the entry first (exit 2)."""
    cli = granted.cli
    _agency_read(granted)
    _host_garbles(granted, 3)
    line = cli.fails(1, "revoke", granted.vault, "--audience", granted.agency_did, *granted.owner)
    assert line == (
        "error: revoked 1 link, but the log does not verify (log-entry): a grant to the "
        "audience in an entry the host changed or removed may not be revoked (revoke it by "
        "its token or link id)"
    )
    refused = cli("read", "--token", granted.token, "--key", granted.agency_key)
    assert refused.exit_code == 1 and "access denied (revoked)" in refused.stderr


def test_log_marks_an_owner_entry_the_host_wrote(granted: Granted) -> None:
    cli = granted.cli
    forged = _host_forges_a_revoke_entry(granted)
    entries = cli.json("log", granted.vault, *granted.owner)["entries"]
    assert [(e["index"], e["kind"], e["unsigned"]) for e in entries] == [
        (forged, "revoke", True),
        (2, "grant", False),
        (1, "create", False),
        (0, "create", False),
    ]
    first, *rest = cli.ok("log", granted.vault, *granted.owner).stdout.splitlines()
    assert "[NOT SIGNED by the vault key" in first
    assert len(rest) == 3 and all("NOT SIGNED" not in line for line in rest)
    # Repair takes nothing from it: the agency's token still reads.
    repaired = cli.json("vault", "repair", granted.vault, *granted.owner)
    assert (repaired["ignored"], repaired["restored"]) == ([forged], [])
    assert _agency_read(granted)["records"]


def test_log_filters_and_pages(granted: Granted) -> None:
    cli = granted.cli
    for _ in range(2):
        _agency_read(granted)
    page = cli.json("log", granted.vault, "--limit", "2", *granted.owner)
    assert [entry["index"] for entry in page["entries"]] == [4, 3]
    assert page["cursor"] == 3
    older = cli.json("log", granted.vault, "--before", str(page["cursor"]), *granted.owner)
    assert [entry["index"] for entry in older["entries"]] == [2, 1, 0]
    text = cli.ok("log", granted.vault, "--limit", "2", *granted.owner).stdout
    assert f"older entries: pds log {granted.vault} --before 3" in text
    by_actor = cli.json("log", granted.vault, "--actor", granted.agency_did, *granted.owner)
    assert {entry["actor"] for entry in by_actor["entries"]} == {granted.agency_did}
    # A typo is not an empty log.
    line = cli.fails(2, "log", granted.vault, "--actor", "did:key:typo", *granted.owner)
    assert "is not a did:key" in line
    future = cli.json("log", granted.vault, "--since", "2999-01-01", *granted.owner)
    assert future["entries"] == []
    cli.fails(2, "log", granted.vault, "--limit", "0", *granted.owner)


def test_deferred_entries_are_withheld(granted: Granted) -> None:
    cli = granted.cli
    agency_key = granted.agency_key
    deferring = cli.json(
        "grant",
        granted.vault,
        "--to",
        granted.agency_did,
        "-c",
        "income/*",
        "--purpose",
        "fraud investigation",
        "--basis",
        "Act 7 s. 2",
        "--expires",
        "30d",
        "--defer",
        "10d",
        *granted.owner,
    )
    until = (datetime.now(UTC) + timedelta(days=5)).isoformat()
    cli.json(
        "read",
        "--token",
        deferring["token"],
        "--key",
        agency_key,
        "--defer-until",
        until,
        "--defer-reason",
        "ongoing investigation",
    )
    document = cli.json("log", granted.vault, *granted.owner)
    assert document["withheld"] == 1
    kinds = [entry["kind"] for entry in document["entries"]]
    assert kinds == ["grant", "grant", "create", "create"]
    text = cli.ok("log", granted.vault, *granted.owner).stdout
    assert "1 entry is withheld" in text
    # Deferring longer than the token allows is refused.
    too_late = (datetime.now(UTC) + timedelta(days=20)).isoformat()
    line = cli.fails(
        1,
        "read",
        "--token",
        deferring["token"],
        "--key",
        agency_key,
        "--defer-until",
        too_late,
        "--defer-reason",
        "x",
    )
    assert line == "error: access denied (scope:defer)"


def test_log_needs_the_owner(granted: Granted) -> None:
    granted.cli.fails(1, "log", granted.vault)  # a passphrase for a key-file vault


def test_log_head_json_text_and_pin(granted: Granted) -> None:
    cli = granted.cli
    stored = cli.json("log", "head", granted.vault)
    assert stored["signed_now"] is False
    assert stored["size"] == 3
    assert stored["checkpoint"].startswith(f"pds/vault/{granted.vault}\n3\n{stored['root']}\n")
    _agency_read(granted)
    # Without the owner, the newest stored checkpoint; with it, one signed now.
    assert cli.json("log", "head", granted.vault)["size"] == 3
    fresh = cli.json("log", "head", granted.vault, *granted.owner)
    assert fresh["signed_now"] is True
    assert fresh["size"] == 4
    pinned = cli.state_dir / "heads" / f"{granted.vault}.checkpoint"
    assert pinned.read_text() == fresh["checkpoint"]
    text = cli.ok("log", "head", granted.vault).stdout
    assert text == fresh["checkpoint"]  # exactly the signed note


def test_log_head_without_any_checkpoint(cli: Cli, tmp_path: Path) -> None:
    vault = cli.json("vault", "create", "--key-file", tmp_path / "o.key")["vault"]
    line = cli.fails(1, "log", "head", vault)
    assert "no signed checkpoint" in line
    assert cli.json("log", "head", vault, "--key-file", tmp_path / "o.key")["size"] == 0


def test_log_prove_and_consistency(granted: Granted) -> None:
    cli = granted.cli
    first = cli.json("log", "head", granted.vault, *granted.owner)
    _agency_read(granted)
    _agency_read(granted)
    head = cli.json("log", "head", granted.vault, *granted.owner)
    assert first["size"] == 3 and head["size"] == 5
    proof = cli.json("log", "prove", granted.vault, "--entry", "3")
    assert proof["verified"] is True
    assert (proof["index"], proof["size"], proof["root"]) == (3, 5, head["root"])
    leaf = merkle.leaf_hash(bytes.fromhex(proof["entry"]))
    assert base64.b64encode(leaf).decode() == proof["leaf_hash"]
    # Checked independently against the signed head's root.
    merkle.verify_inclusion(
        leaf,
        3,
        5,
        [base64.b64decode(node) for node in proof["proof"]],
        base64.b64decode(head["root"]),
    )
    at_size = cli.json("log", "prove", granted.vault, "--entry", "2", "--size", "3")
    assert at_size["root"] == first["root"] and at_size["verified"] is True
    alone = cli.json("log", "prove", granted.vault, "--entry", "0", "--size", "1")
    assert alone["proof"] == [] and alone["root"] == alone["leaf_hash"]
    text = cli.ok("log", "prove", granted.vault, "--entry", "4").stdout
    assert "entry 4 is in the log of size 5 (proof verified)" in text

    consistency = cli.json("log", "consistency", granted.vault, "--from", "3")
    assert (consistency["from"], consistency["to"]) == (3, 5)
    assert consistency["old_root"] == first["root"]
    assert consistency["new_root"] == head["root"]
    merkle.verify_consistency(
        3,
        5,
        base64.b64decode(first["root"]),
        base64.b64decode(head["root"]),
        [base64.b64decode(node) for node in consistency["proof"]],
    )
    text = cli.ok("log", "consistency", granted.vault, "--from", "4", "--to", "5").stdout
    assert "extends the log of size 4 (proof verified)" in text
    cli.fails(2, "log", "prove", granted.vault, "--entry", "5")
    cli.fails(2, "log", "prove", granted.vault, "--entry", "0", "--size", "9")
    cli.fails(2, "log", "consistency", granted.vault, "--from", "0")
    cli.fails(2, "log", "consistency", granted.vault, "--from", "6")


def _store_files(store: Path) -> list[Path]:
    return sorted(store.parent.glob(store.name + "*"))


def _copy_store(store: Path, target: Path) -> None:
    """Copy the database (and its WAL files and host key) to ``target``'s name."""
    for path in _store_files(store):
        shutil.copy2(path, target.parent / (target.name + path.name[len(store.name) :]))


def _restore_store(backup: Path, store: Path) -> None:
    for path in _store_files(store):
        path.unlink()
    _copy_store(backup, store)


def _warned(result: Any, vault: str) -> None:
    assert result.exit_code == 1, (result.stdout, result.stderr)
    assert result.stdout == ""
    assert "Traceback" not in result.stderr
    line = result.stderr.strip()
    assert line.startswith(f"WARNING: the store's log for {vault} does not extend the head seen on")
    assert "possible rollback or fork" in line


def test_log_prove_of_an_entry_the_host_garbled_is_a_store_error(granted: Granted) -> None:
    """The stored bytes at the index do not parse: the host's damage, one line and the
    integrity exit code, not the user's bad input (exit 2) nor a traceback."""
    _agency_read(granted)
    _host_garbles(granted, 3)
    line = granted.cli.fails(1, "log", "prove", granted.vault, "--entry", "3")
    assert "does not parse" in line and "GARBAGE" not in line


def test_a_rolled_back_store_is_detected(granted: Granted, tmp_path: Path) -> None:
    cli = granted.cli
    cli.json("log", granted.vault, *granted.owner)  # the person looks: the head is pinned
    backup = tmp_path / "backup" / "pds.db"
    backup.parent.mkdir()
    _copy_store(cli.store, backup)
    _agency_read(granted)
    _agency_read(granted)
    assert len(cli.json("log", granted.vault, *granted.owner)["entries"]) == 5
    _restore_store(backup, cli.store)  # the host rolls the store back

    _warned(cli("log", granted.vault, *granted.owner), granted.vault)
    _warned(cli("log", granted.vault, "--json", *granted.owner), granted.vault)
    _warned(cli("log", "head", granted.vault), granted.vault)
    # A grantee's read still works, with the warning on stderr.
    read = cli("read", "--token", granted.token, "--key", granted.agency_key)
    assert read.exit_code == 0
    assert "possible rollback or fork" in read.stderr
    pinned = cli.state_dir / "heads" / f"{granted.vault}.checkpoint"
    before = pinned.read_text()
    _warned(cli("log", granted.vault, *granted.owner), granted.vault)
    assert pinned.read_text() == before  # a warning never moves the pin

    # After a legitimate restore the owner may pin the store's head again.
    cli.json("log", "head", granted.vault, "--repin", *granted.owner)
    assert cli.json("log", granted.vault, *granted.owner)["entries"]


def _epochs(store: Path) -> list[tuple[str, int]]:
    conn = sqlite3.connect(store)
    try:
        return conn.execute("SELECT collection, epoch FROM epochs ORDER BY 1, 2").fetchall()
    finally:
        conn.close()


def test_a_store_rolled_back_past_a_revocation_shares_no_keys(
    granted: Granted, tmp_path: Path
) -> None:
    """The library cannot tell a store rolled back with the heads signed since a
    revocation from an older store; the head pinned by `pds revoke` can, and `rotate` and
    `share-keys` refuse before a new epoch reaches the revoked grant."""
    cli = granted.cli
    backup = tmp_path / "backup" / "pds.db"
    backup.parent.mkdir()
    _copy_store(cli.store, backup)
    cli.json("revoke", granted.vault, granted.link, *granted.owner)
    pinned = cli.state_dir / "heads" / f"{granted.vault}.checkpoint"
    assert "\nrevoked 1 " in pinned.read_text()  # the head that records the revocation
    _restore_store(backup, cli.store)  # the host rolls the revocation back, heads and all
    epochs = _epochs(cli.store)
    _warned(cli("vault", "rotate", granted.vault, *granted.owner), granted.vault)
    _warned(cli("vault", "share-keys", granted.vault, *granted.owner), granted.vault)
    assert _epochs(cli.store) == epochs  # nothing was rotated
    # Without the pin (another machine, or --repin after a legitimate restore) it runs.
    cli.json("log", "head", granted.vault, "--repin", *granted.owner)
    assert cli.json("vault", "rotate", granted.vault, *granted.owner)["epochs"]
    assert _epochs(cli.store) != epochs


def test_a_store_rolled_back_past_a_revocation_gets_no_new_collection_or_export(
    granted: Granted, tmp_path: Path
) -> None:
    """Creating a collection and exporting are logged, so the owner's key signs a head for
    each: on a store rolled back past the pin both are refused before the secret is asked
    for, and nothing is written (the export would carry the revocation undone)."""
    cli = granted.cli
    backup = tmp_path / "backup" / "pds.db"
    backup.parent.mkdir()
    _copy_store(cli.store, backup)
    cli.json("revoke", granted.vault, granted.link, *granted.owner)
    _restore_store(backup, cli.store)
    size = _log_size(cli.store)
    exported = tmp_path / "vault.pdsx"
    _warned(cli("vault", "collection", granted.vault, "notes", *granted.owner), granted.vault)
    _warned(cli("vault", "export", granted.vault, str(exported), *granted.owner), granted.vault)
    assert not exported.exists()
    assert ("notes", 1) not in _epochs(cli.store)
    assert _log_size(cli.store) == size  # nothing logged, no head signed
    cli.json("log", "head", granted.vault, "--repin", *granted.owner)
    assert cli.json("vault", "collection", granted.vault, "notes", *granted.owner)
    assert ("notes", 1) in _epochs(cli.store)
    assert cli.json("vault", "export", granted.vault, str(exported), *granted.owner)
    assert exported.exists()


@pytest.mark.parametrize("moment", ["after the check", "after the transaction"])
def test_an_export_checks_the_pin_again_when_the_store_changes_meanwhile(
    granted: Granted, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, moment: str
) -> None:
    """The host rolls the store back past the revocation once the command's own check has
    passed (while the secret is asked for), or once the export's transaction has committed
    (before its read snapshot): the export checks again, the first time against the head
    the check saw, the second against the pin, and the same WARNING is shown; no file."""
    cli = granted.cli
    backup = tmp_path / "backup" / "pds.db"
    backup.parent.mkdir()
    _copy_store(cli.store, backup)
    cli.json("revoke", granted.vault, granted.link, *granted.owner)

    def roll_back() -> None:
        source, target = sqlite3.connect(backup), sqlite3.connect(cli.store)
        source.backup(target)  # under the open store, as a host restores a backup
        source.close()
        target.close()

    if moment == "after the check":
        check = heads.check_or_warn

        def then_rolled_back(vault: pds.Vault, *, changing: bool = False) -> bool:
            ok = check(vault, changing=changing)
            assert ok
            roll_back()
            return ok

        monkeypatch.setattr(heads, "check_or_warn", then_rolled_back)
    else:
        export_vault = _export.export_vault

        def rolled_back_first(vault: pds.Vault, *args: Any, **kwargs: Any) -> None:
            roll_back()
            export_vault(vault, *args, **kwargs)

        monkeypatch.setattr(_export, "export_vault", rolled_back_first)
    exported = tmp_path / "vault.pdsx"
    _warned(cli("vault", "export", granted.vault, str(exported), *granted.owner), granted.vault)
    assert not exported.exists()
    assert _log_size(cli.store) == _log_size(backup)


def test_an_export_older_than_the_pin_is_not_imported(granted: Granted, tmp_path: Path) -> None:
    """An export made before a revocation would bring the revoked grant back: its import
    into another store is refused (exit 1, one line naming the pin), and nothing is left
    behind; with the pin removed (a legitimate restore) it imports, and pins its head."""
    cli = granted.cli
    old = tmp_path / "old.pdsx"
    cli.json("vault", "export", granted.vault, old, *granted.owner)
    cli.json("revoke", granted.vault, granted.link, *granted.owner)
    pin = cli.state_dir / "heads" / f"{granted.vault}.checkpoint"
    pinned = Checkpoint.parse(pin.read_text())
    elsewhere = tmp_path / "elsewhere" / "pds.db"
    elsewhere.parent.mkdir()
    line = cli.fails(1, "vault", "import", old, *granted.owner, store=elsewhere)
    assert line.startswith(
        f"error: the file does not extend the head of vault {granted.vault} pinned on "
    )
    assert f"(size {pinned.size}; log-truncated)" in line and str(pin) in line
    assert not elsewhere.exists() and not Path(f"{elsewhere}.hostkey").exists()
    pin.unlink()
    assert cli.json("vault", "import", old, *granted.owner, store=elsewhere)["vault"]
    assert Checkpoint.parse(pin.read_text()).root != pinned.root  # the import's own head


def test_a_pin_with_another_keys_line_first_is_the_vaults(granted: Granted) -> None:
    """A pinned note may carry lines by other keys under the vault's name (C2SP signed
    note); the vault's own line is found by its key id, so the pin still holds."""
    cli = granted.cli
    cli.json("log", "head", granted.vault, *granted.owner)
    pin = cli.state_dir / "heads" / f"{granted.vault}.checkpoint"
    body, own = pin.read_text().split("\n\n")
    name = body.split("\n")[0]
    stranger = _crypto.SigningKey.generate(os.urandom)
    raw = accesslog.key_id(name, stranger.public) + stranger.sign_raw(body.encode() + b"\n")
    pin.write_text(f"{body}\n\n\u2014 {name} {base64.b64encode(raw).decode()}\n{own}")
    cli.json("log", "head", granted.vault, *granted.owner)
    assert cli.json("vault", "rotate", granted.vault, *granted.owner)["epochs"]
    cli.json("vault", "repair", granted.vault, *granted.owner)


def _log_size(store: Path) -> int:
    conn = sqlite3.connect(store)
    try:
        (size,) = conn.execute("SELECT COUNT(*) FROM log_entries").fetchone()
    finally:
        conn.close()
    return int(size)


def _revoke_then_drop_it_and_its_heads(granted: Granted) -> Checkpoint:
    """`pds revoke` (which pins the head recording it); then the host deletes the
    revocation and the heads signed since, the pinned one included. Returns the pin."""
    cli = granted.cli
    cli.json("revoke", granted.vault, granted.link, *granted.owner)
    pinned = Checkpoint.parse((cli.state_dir / "heads" / f"{granted.vault}.checkpoint").read_text())
    conn = sqlite3.connect(cli.store)
    with conn:
        conn.execute("DELETE FROM log_checkpoints WHERE size >= ?", (pinned.size,))
        conn.execute("DELETE FROM revocations")
    conn.close()
    return pinned


def test_heads_deleted_past_the_pin_are_caught_though_the_entries_remain(
    granted: Granted,
) -> None:
    """The host keeps the log's entries (so they still extend the pin) but deletes the
    revocation and the heads signed since, the pinned one included."""
    cli = granted.cli
    _revoke_then_drop_it_and_its_heads(granted)
    _warned(cli("vault", "rotate", granted.vault, *granted.owner), granted.vault)
    _warned(cli("vault", "share-keys", granted.vault, *granted.owner), granted.vault)


def test_repair_rebuilds_what_the_host_deleted(granted: Granted) -> None:
    """After the deletion above, `vault repair` signs the revocation again from the log
    (which still extends the pin) and a head over it; rotate and share-keys run again, and
    the revoked grant gets no new epoch."""
    cli = granted.cli
    pinned = _revoke_then_drop_it_and_its_heads(granted)
    repaired = cli.json("vault", "repair", granted.vault, *granted.owner)
    assert repaired["restored"] == [granted.link]
    assert repaired["removed"] == repaired["removed_epochs"] == repaired["unverified_epochs"] == []
    assert repaired["epochs"] == {}
    head = Checkpoint.parse(repaired["checkpoint"])
    assert head.size == pinned.size + 1 and head.revoked == pinned.revoked
    assert cli.json("vault", "rotate", granted.vault, *granted.owner)["epochs"]
    conn = sqlite3.connect(cli.store)
    try:
        held = conn.execute(
            "SELECT epoch FROM link_keys WHERE link_id = ? AND collection = 'income/payslips'",
            (bytes.fromhex(granted.link),),
        ).fetchall()
    finally:
        conn.close()
    assert (2,) not in held
    log = cli("log", granted.vault, *granted.owner)
    assert "you (the owner) repaired the vault's records (1 revocation restored)" in log.stdout
    again = cli("vault", "repair", granted.vault, *granted.owner)
    assert again.exit_code == 0
    assert again.stdout.strip() == "nothing to repair: the store holds what the log records"


def test_an_unrecorded_revocation_holds_writes_and_sharing_until_a_repair(
    granted: Granted,
) -> None:
    """A revocation that no head could record (the host had dropped another one) could be
    undone by the host: put, delete, rotate and share-keys wait for `vault repair`."""
    cli = granted.cli
    cli.json("revoke", granted.vault, granted.link, *granted.owner)
    _, other_did = granted.principal("other")
    other = cli.json(
        "grant",
        granted.vault,
        "--to",
        other_did,
        "--collection",
        "income/*",
        "--purpose",
        "audit",
        "--expires",
        "30d",
        *granted.owner,
    )
    conn = sqlite3.connect(cli.store)
    with conn:
        conn.execute("DELETE FROM revocations")  # the host drops the first revocation
    conn.close()
    result = cli("revoke", granted.vault, other["link"], *granted.owner)
    assert result.exit_code == 1, (result.stdout, result.stderr)
    assert "revocation-unrecorded" in result.stderr or "no signed head" in result.stderr
    marker = cli.state_dir / "heads" / f"{granted.vault}.unrecorded"
    assert marker.exists()
    record = json.dumps({"employer": "ACME", "net": 1})
    for args in (
        ("put", granted.vault, "income/payslips"),
        ("vault", "rotate", granted.vault),
        ("vault", "share-keys", granted.vault),
    ):
        refused = cli(*args, *granted.owner, input=record)
        assert refused.exit_code == 1, (args, refused.stdout, refused.stderr)
        assert refused.stdout == ""
        assert f"run 'pds vault repair {granted.vault}' first" in refused.stderr
    repaired = cli.json("vault", "repair", granted.vault, *granted.owner)
    assert repaired["restored"] == [granted.link]
    assert not marker.exists()
    assert cli.json("put", granted.vault, "income/payslips", *granted.owner, input=record)


def test_repair_refuses_a_store_rolled_back_past_the_pin(granted: Granted, tmp_path: Path) -> None:
    cli = granted.cli
    backup = tmp_path / "backup" / "pds.db"
    backup.parent.mkdir()
    _copy_store(cli.store, backup)
    cli.json("revoke", granted.vault, granted.link, *granted.owner)
    _restore_store(backup, cli.store)
    result = cli("vault", "repair", granted.vault, *granted.owner)
    assert result.exit_code == 1, (result.stdout, result.stderr)
    assert result.stdout == ""
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert "pinned checkpoint" in result.stderr


def test_a_store_rolled_back_past_a_rotation_takes_no_writes(
    granted: Granted, tmp_path: Path
) -> None:
    """Rolled back with the heads signed since, the store's newest epoch would be the one
    the revoked grant holds; `put` and `delete` refuse before asking for the secret."""
    cli = granted.cli
    backup = tmp_path / "backup" / "pds.db"
    backup.parent.mkdir()
    _copy_store(cli.store, backup)
    cli.json("revoke", granted.vault, granted.link, *granted.owner)
    cli.json("vault", "rotate", granted.vault, *granted.owner)  # pins the rotation's head
    _restore_store(backup, cli.store)
    epochs = _epochs(cli.store)
    record = json.dumps({"employer": "ACME", "net": 2500})
    result = cli("put", granted.vault, "income/payslips", input=record, passphrase=False)
    _warned(result, granted.vault)
    _warned(cli("delete", granted.vault, granted.payslip["record"]), granted.vault)
    assert _epochs(cli.store) == epochs
    # An owner read would sign a head over the rolled-back log: refused too.
    _warned(cli("get", granted.vault, granted.payslip["record"], *granted.owner), granted.vault)


def test_a_forked_store_is_detected(granted: Granted, tmp_path: Path) -> None:
    cli = granted.cli
    fork = tmp_path / "fork.db"
    _copy_store(cli.store, fork)
    _agency_read(granted)
    cli.json("log", granted.vault, *granted.owner)  # pins the head of the first copy
    # The other copy appends something else: the same size, a different history (a read
    # is served there, with a WARNING: the host's, not the owner's, to refuse).
    read = cli("read", "--token", granted.token, "--key", granted.agency_key, store=fork)
    assert read.exit_code == 0 and "WARNING" in read.stderr
    _warned(cli("log", granted.vault, *granted.owner, store=fork), granted.vault)
    assert cli.json("log", granted.vault, *granted.owner)["entries"]


def test_log_group_help(cli: Cli) -> None:
    group = cli.ok("log", "--help").stdout
    assert "VAULT [OPTIONS] | COMMAND [ARGS]" in group
    assert "head" in group and "prove" in group
    assert "--before" in cli.ok("log", "list", "--help").stdout


def test_the_state_directory(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("PDS_STATE_DIR", raising=False)
    monkeypatch.delenv("XDG_STATE_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert state_directory() == tmp_path / "home" / ".local" / "state" / "pds"
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "xdg"))
    assert state_directory() == tmp_path / "xdg" / "pds"
    monkeypatch.setenv("PDS_STATE_DIR", str(tmp_path / "explicit"))
    assert state_directory() == tmp_path / "explicit"
    assert head_path("abc") == tmp_path / "explicit" / "heads" / "abc.checkpoint"
    assert head_path("../etc/passwd") is None  # never part of a file name


def test_a_corrupt_pin_is_malformed_input(granted: Granted) -> None:
    pinned = granted.cli.state_dir / "heads" / f"{granted.vault}.checkpoint"
    pinned.parent.mkdir(parents=True, exist_ok=True)
    pinned.write_text("garbage\n")
    line = granted.cli.fails(2, "log", granted.vault, *granted.owner)
    assert "is not a checkpoint" in line


def test_log_shows_an_entry_of_the_wrong_shape_the_host_wrote(granted: Granted) -> None:
    """The host can seal any details to the owner's key: `pds log` still lists the log."""
    details = {"owner": True, "collections": [1, ["x"]], "audience": 7}
    _host_appends(granted, "grant", None, details)
    cli = granted.cli
    lines = cli.ok("log", granted.vault, *granted.owner).stdout.splitlines()
    assert len(lines) == 4 and "NOT SIGNED" in lines[0]
    assert cli.json("log", granted.vault, *granted.owner)["entries"][0]["collections"] == []


def test_owner_reads_and_grants_refuse_a_log_that_does_not_extend_the_pin(
    granted: Granted,
) -> None:
    """After the host rolls the store back past the pinned head, `get`, `history` and
    `grant` would have the owner's key sign a head that contradicts the pinned one: they
    warn and refuse before the secret is asked for."""
    cli = granted.cli
    pinned = _revoke_then_drop_it_and_its_heads(granted)
    conn = sqlite3.connect(cli.store)
    with conn:  # the host also cuts the log back to before the revocation
        conn.execute("DELETE FROM log_entries WHERE idx >= ?", (pinned.size - 1,))
        conn.execute("DELETE FROM log_nodes WHERE ((idx + 1) << level) > ?", (pinned.size - 1,))
    conn.close()
    record = granted.payslip["record"]
    _, other = granted.principal("other")
    for command in (
        ("get", granted.vault, record),
        ("history", granted.vault, record),
        ("grant", granted.vault, "--to", other, "-c", "income/*", "--purpose", "p"),
    ):
        result = (
            cli(*command, "--expires", "1d", *granted.owner)
            if command[0] == "grant"
            else (cli(*command, *granted.owner))
        )
        assert result.exit_code == 1 and result.stdout == ""
        assert "WARNING" in result.stderr
