"""``pds vault ...`` happy paths, in text and ``--json``, against real stores."""

from __future__ import annotations

import os
import re
import sqlite3
import stat
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

import pds

if TYPE_CHECKING:
    from tests.cli.conftest import Cli, Granted

ISO = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")


def test_create_json(cli: Cli) -> None:
    document = cli.json("vault", "create", "--kdf", "interactive")
    assert re.fullmatch(r"[a-z2-7]{26}", document["vault"])
    assert document["did"].startswith("did:key:z6Mk")
    assert ISO.fullmatch(document["created_at"])
    assert document["unlock"] == "passphrase"
    assert document["kdf"] == "interactive"
    assert document["key_file"] is None
    assert cli.store.exists()
    with pds.open_store(cli.store, create=False) as store:
        assert [info.vault_id for info in store.list_vaults()] == [document["vault"]]


def test_create_text(cli: Cli) -> None:
    result = cli.ok("vault", "create", "--kdf", "interactive")
    assert result.stdout.startswith("created vault ")
    assert "did:key:z6Mk" in result.stdout
    assert "passphrase (Argon2id, interactive)" in result.stdout
    assert result.stderr == ""


def test_create_prompts_twice_for_the_passphrase(cli: Cli) -> None:
    secret = cli.passphrase
    result = cli.ok(
        "vault", "create", "--kdf", "interactive", input=f"{secret}\n{secret}\n", passphrase=False
    )
    assert result.stderr.count("Passphrase") == 1
    assert "Repeat for confirmation" in result.stderr
    vault = result.stdout.split()[2]
    # The prompted passphrase is the one that unlocks the vault.
    cli.ok("vault", "rotate", vault)


def test_create_with_a_new_key_file_creates_it_0600(cli: Cli, tmp_path: Path) -> None:
    key_file = tmp_path / "owner.key"
    document = cli.json("vault", "create", "--key-file", key_file, passphrase=False)
    assert document["unlock"] == "key"
    assert document["kdf"] is None
    assert document["key_file_created"] is True
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert len(key_file.read_bytes()) == 32
    # The key file unlocks it; no passphrase is asked for.
    cli.ok("put", document["vault"], "notes", "--key-file", key_file, input="{}", passphrase=False)


def test_create_with_an_existing_key_file(cli: Cli, tmp_path: Path) -> None:
    key_file = tmp_path / "owner.key"
    pds.SymmetricKey.create_file(key_file)
    document = cli.json("vault", "create", "--key-file", key_file)
    assert document["key_file_created"] is False
    assert document["unlock"] == "key"


def test_create_with_a_passphrase_file(cli: Cli, tmp_path: Path) -> None:
    secret_file = tmp_path / "secret.txt"
    secret_file.write_text("from a file\nsecond line is ignored\n")
    document = cli.json(
        "vault",
        "create",
        "--kdf",
        "interactive",
        "--passphrase-file",
        secret_file,
        passphrase=False,
    )
    with pds.open_store(cli.store, create=False) as store:
        store.open_vault(document["vault"]).unlock(passphrase="from a file")


def test_list_json_and_text(cli: Cli, tmp_path: Path) -> None:
    first = cli.json("vault", "create", "--kdf", "interactive")
    second = cli.json("vault", "create", "--key-file", tmp_path / "k")
    listed = cli.json("vault", "list", passphrase=False)["vaults"]
    by_id = {entry["vault"]: entry for entry in listed}
    assert set(by_id) == {first["vault"], second["vault"]}
    assert by_id[first["vault"]] == {
        "vault": first["vault"],
        "did": first["did"],
        "created_at": first["created_at"],
        "unlock": "passphrase",
        "destroyed": False,
    }
    assert by_id[second["vault"]]["unlock"] == "key"
    text = cli.ok("vault", "list", passphrase=False).stdout
    assert first["vault"] in text and second["vault"] in text
    assert "active" in text


def test_list_of_an_empty_store(cli: Cli) -> None:
    with pds.open_store(cli.store):
        pass
    assert cli.json("vault", "list") == {"vaults": []}
    assert "no vaults" in cli.ok("vault", "list").stdout


def test_passwd_from_env(cli: Cli, vault_id: str) -> None:
    new = "a new passphrase"
    document = cli.json(
        "vault", "passwd", vault_id, "--kdf", "interactive", env={"PDS_NEW_PASSPHRASE": new}
    )
    assert document == {
        "vault": vault_id,
        "unlock": "passphrase",
        "kdf": "interactive",
        "key_file": None,
        "key_file_created": False,
    }
    cli.fails(1, "vault", "rotate", vault_id)
    cli.ok("vault", "rotate", vault_id, env={"PDS_PASSPHRASE": new})


def test_passwd_prompts_twice_and_text(cli: Cli, vault_id: str) -> None:
    result = cli.ok("vault", "passwd", vault_id, "--kdf", "interactive", input="next\nnext\n")
    assert "New passphrase" in result.stderr
    assert "Repeat for confirmation" in result.stderr
    assert f"vault {vault_id} now unlocks with a passphrase" in result.stdout
    cli.ok("vault", "rotate", vault_id, env={"PDS_PASSPHRASE": "next"})


def test_passwd_to_a_key_file_and_back(cli: Cli, vault_id: str, tmp_path: Path) -> None:
    key_file = tmp_path / "new.key"
    document = cli.json("vault", "passwd", vault_id, "--new-key-file", key_file)
    assert document["unlock"] == "key"
    assert document["key_file_created"] is True
    cli.fails(1, "vault", "rotate", vault_id)
    cli.ok("vault", "rotate", vault_id, "--key-file", key_file, passphrase=False)
    secret_file = tmp_path / "secret"
    secret_file.write_text("back to a passphrase\n")
    cli.ok(
        "vault",
        "passwd",
        vault_id,
        "--key-file",
        key_file,
        "--new-passphrase-file",
        secret_file,
        "--kdf",
        "interactive",
        passphrase=False,
    )
    cli.ok("vault", "rotate", vault_id, env={"PDS_PASSPHRASE": "back to a passphrase"})


def test_passwd_keeps_the_records(cli: Cli, vault_id: str, record: dict[str, Any]) -> None:
    cli.ok("vault", "passwd", vault_id, "--kdf", "interactive", env={"PDS_NEW_PASSPHRASE": "n"})
    got = cli.json("get", vault_id, record["record"], env={"PDS_PASSPHRASE": "n"})
    assert got["data"] == record["data"]


def test_rotate_json_and_text(cli: Cli, vault_id: str) -> None:
    assert cli.json("vault", "rotate", vault_id) == {"vault": vault_id, "epochs": {}}
    cli.put(vault_id, "health", {"a": 1})
    cli.put(vault_id, "tax", {"b": 2})
    assert cli.json("vault", "rotate", vault_id)["epochs"] == {"health": 2, "tax": 2}
    assert cli.json("vault", "rotate", vault_id, "--collection", "tax")["epochs"] == {"tax": 3}
    text = cli.ok("vault", "rotate", vault_id, "-c", "health").stdout
    assert text == "rotated health to epoch 3\n"
    after = cli.put(vault_id, "health", {"c": 3})
    assert after["epoch"] == 3


def test_an_entry_the_host_appends_that_does_not_parse_blocks_nothing(
    cli: Cli, vault_id: str
) -> None:
    """A malformed entry the host appended after the pinned head: the pin check passes (it
    is a leaf the host wrote, hashed as it is), so rotation rotates in full, repair lists
    it as ignored, and writes go on. Every command that checks the pin first used to
    refuse from then on (log-entry), rotation after a revocation among them."""
    cli.put(vault_id, "health", {"a": 1})
    index = cli.host_appends(vault_id, b"\xc1")
    assert cli.json("vault", "rotate", vault_id) == {"vault": vault_id, "epochs": {"health": 2}}
    with sqlite3.connect(cli.store) as conn:
        epochs = sorted(conn.execute("SELECT epoch FROM epochs WHERE collection = 'health'"))
    conn.close()
    assert epochs == [(1,), (2,)]
    repaired = cli.json("vault", "repair", vault_id)
    assert (repaired["ignored"], repaired["checkpoint"]) == ([index], None)
    assert cli.put(vault_id, "health", {"b": 2})["epoch"] == 2


def test_export_and_import_carry_an_entry_that_does_not_parse(
    cli: Cli, vault_id: str, tmp_path: Path
) -> None:
    """`pds vault export` (which checks the pin first) writes a vault whose log holds
    garbage the host appended, and `pds vault import` (the file must extend the pin) takes
    it back as it is: the imported vault's log lists it as damaged. Both used to refuse."""
    cli.put(vault_id, "health", {"a": 1})
    index = cli.host_appends(vault_id, b"\xc1")
    cli.put(vault_id, "tax", {"b": 2})  # a new collection: a head signed over it
    exported = tmp_path / "v.pdsx"
    cli.json("vault", "export", vault_id, exported)
    other = tmp_path / "other.db"
    assert cli.json("vault", "import", exported, store=other)["vault"] == vault_id
    entries = cli.json("log", vault_id, store=other)["entries"]
    assert [(e["index"], e["damage"]) for e in entries if e["damaged"]] == [(index, "entry")]
    assert entries[0]["kind"] == "import"


def test_export_and_import_round_trip(cli: Cli, vault_id: str, tmp_path: Path) -> None:
    first = cli.put(vault_id, "health", {"n": 1})
    second = cli.put(vault_id, "tax", {"n": 2})
    cli.put(vault_id, "health", {"n": 3}, "--record", first["record"])
    cli.ok("vault", "rotate", vault_id)
    cli.ok("delete", vault_id, second["record"])
    export_file = tmp_path / "vault.pdsx"
    exported = cli.json("vault", "export", vault_id, export_file)
    assert exported["vault"] == vault_id
    assert exported["records"] == 4  # two versions, one record, one tombstone
    assert exported["bytes"] == export_file.stat().st_size
    assert exported["file"] == str(export_file)

    other = tmp_path / "other" / "pds.db"
    other.parent.mkdir()
    imported = cli.json("vault", "import", export_file, store=other)
    assert imported["vault"] == vault_id
    assert imported["records"] == 4
    assert imported["did"] == cli.json("vault", "list")["vaults"][0]["did"]
    got = cli.json("get", vault_id, first["record"], store=other)
    assert got["data"] == {"n": 3}
    assert got["version"] == 2
    assert [r["record"] for r in cli.json("list", vault_id, store=other)["records"]] == [
        first["record"]
    ]


def test_export_and_import_text(cli: Cli, vault_id: str, tmp_path: Path) -> None:
    cli.put(vault_id, "health", {"n": 1})
    export_file = tmp_path / "vault.pdsx"
    result = cli.ok("vault", "export", vault_id, export_file)
    assert f"exported vault {vault_id}: 1 record versions" in result.stdout
    assert result.stderr == ""  # no progress bar: stderr is not a terminal
    other = tmp_path / "other.db"
    result = cli.ok("vault", "import", export_file, store=other)
    assert f"imported vault {vault_id} (1 record versions, verified)" in result.stdout
    assert result.stderr == ""


def test_import_needs_the_owner_secret(cli: Cli, vault_id: str, tmp_path: Path) -> None:
    export_file = tmp_path / "vault.pdsx"
    cli.ok("vault", "export", vault_id, export_file)
    other = tmp_path / "other.db"
    cli.fails(1, "vault", "import", export_file, store=other, env={"PDS_PASSPHRASE": "nope"})
    assert not other.exists()  # the store made for the failed import is removed
    # Importing into the store that already holds the vault is refused.
    line = cli.fails(1, "vault", "import", export_file)
    assert "already exists" in line


def test_import_of_a_damaged_export_is_refused(cli: Cli, vault_id: str, tmp_path: Path) -> None:
    cli.put(vault_id, "health", {"n": 1})
    export_file = tmp_path / "vault.pdsx"
    cli.ok("vault", "export", vault_id, export_file)
    content = bytearray(export_file.read_bytes())
    content[-40] ^= 0x01
    export_file.write_bytes(bytes(content))
    other = tmp_path / "other.db"
    cli.fails(1, "vault", "import", export_file, store=other)
    truncated = tmp_path / "truncated.pdsx"
    truncated.write_bytes(bytes(content[:100]))
    cli.fails(2, "vault", "import", truncated, store=other)
    assert not other.exists()  # no store is left behind by a failed import


def test_destroy_with_yes(cli: Cli, vault_id: str, record: dict[str, Any]) -> None:
    assert cli.json("vault", "destroy", vault_id, "--yes") == {
        "vault": vault_id,
        "destroyed": True,
    }
    listed = cli.json("vault", "list")["vaults"]
    assert listed[0]["destroyed"] is True
    cli.fails(1, "get", vault_id, record["record"])


def test_destroy_asks_for_confirmation(cli: Cli, vault_id: str) -> None:
    declined = cli("vault", "destroy", vault_id, input="n\n")
    assert declined.exit_code == 1
    assert declined.stdout == ""
    assert declined.stderr.splitlines()[-1] == "error: vault not destroyed: not confirmed"
    assert cli.json("vault", "list")["vaults"][0]["destroyed"] is False
    no_answer = cli("vault", "destroy", vault_id, input="")
    assert no_answer.exit_code == 1
    assert no_answer.stderr.splitlines()[-1] == "error: aborted"
    confirmed = cli.ok("vault", "destroy", vault_id, input="y\n")
    assert "Destroy vault" in confirmed.stderr
    assert confirmed.stdout == f"destroyed vault {vault_id}: its keys are erased\n"
    assert cli.json("vault", "list")["vaults"][0]["destroyed"] is True


def test_destroy_needs_the_owner_secret(cli: Cli, vault_id: str) -> None:
    cli.fails(1, "vault", "destroy", vault_id, "--yes", env={"PDS_PASSPHRASE": "wrong"})
    assert cli.json("vault", "list")["vaults"][0]["destroyed"] is False


def test_store_from_the_environment(
    cli: Cli, vault_id: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    listed = cli.json("vault", "list", store_option=False, env={"PDS_STORE": str(cli.store)})
    assert listed["vaults"][0]["vault"] == vault_id
    # --store wins over the environment.
    elsewhere = {"PDS_STORE": str(tmp_path / "elsewhere.db")}
    assert cli.json("vault", "list", env=elsewhere)["vaults"][0]["vault"] == vault_id
    # Without either, the store is ./pds.db.
    workdir = tmp_path / "workdir"
    workdir.mkdir()
    monkeypatch.chdir(workdir)
    cli.fails(1, "vault", "list", store_option=False)
    cli.ok("vault", "create", "--kdf", "interactive", store_option=False)
    assert (workdir / "pds.db").exists()
    assert (workdir / "pds.db.hostkey").exists()


def test_export_refuses_to_replace_what_is_not_a_regular_file(
    cli: Cli, vault_id: str, tmp_path: Path
) -> None:
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    link = tmp_path / "link-to-pipe"
    link.symlink_to(fifo)
    for target in (fifo, link):
        line = cli.fails(2, "vault", "export", vault_id, target)
        assert line == f"error: {target} exists and is not a regular file: it is not replaced"
    assert stat.S_ISFIFO(fifo.stat().st_mode)
    assert link.is_symlink()
    # A regular file is still replaced.
    existing = tmp_path / "old.pdsx"
    existing.write_text("old")
    assert cli.json("vault", "export", vault_id, existing)["bytes"] == existing.stat().st_size


def test_a_failed_create_leaves_no_store_or_key_file_behind(cli: Cli, tmp_path: Path) -> None:
    bad_key = tmp_path / "bad.key"
    bad_key.write_text("short\n")
    bad_key.chmod(0o600)
    line = cli.fails(2, "vault", "create", "--key-file", bad_key)
    assert line == f"error: key file {bad_key} is not a 32-byte key"
    cli.fails(1, "vault", "create", "--key-file", tmp_path / "missing" / "owner.key")
    assert not cli.store.exists()
    assert not Path(f"{cli.store}.hostkey").exists()
    # A store that cannot be used: the key file made for it is removed again.
    not_a_store = tmp_path / "other.db"
    not_a_store.write_text("not a store")
    new_key = tmp_path / "new.key"
    cli.fails(2, "vault", "create", "--key-file", new_key, store=not_a_store)
    assert not new_key.exists()


def test_a_key_file_others_may_read_is_refused_in_one_line(granted: Granted) -> None:
    cli = granted.cli
    granted.owner_key.chmod(0o644)
    line = cli.fails(2, "vault", "rotate", granted.vault, "--key-file", granted.owner_key)
    assert line == (
        f"error: key file {granted.owner_key} is accessible by other users (mode 0644): "
        "make it private (chmod 600) and consider the key exposed"
    )
    granted.owner_key.chmod(0o600)
    assert cli.json("vault", "rotate", granted.vault, "--key-file", granted.owner_key)


def test_export_refuses_to_replace_the_store_or_the_key_file(granted: Granted) -> None:
    cli = granted.cli
    for target in (cli.store, granted.owner_key):
        kept = target.read_bytes()
        line = cli.fails(2, "vault", "export", granted.vault, target, *granted.owner)
        assert line == (
            "error: the export destination is the store's own file or the owner's key file: "
            "it is not replaced"
        )
        assert target.read_bytes() == kept
    assert cli.json("vault", "list")["vaults"]  # the store is still a store


def test_a_failed_import_leaves_no_new_store_behind(
    cli: Cli, vault_id: str, tmp_path: Path
) -> None:
    export_file = tmp_path / "vault.pdsx"
    cli.json("vault", "export", vault_id, export_file)
    truncated = tmp_path / "truncated.pdsx"
    truncated.write_bytes(export_file.read_bytes()[:-40])
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    cli.fails(2, "vault", "import", truncated, store=fresh / "pds.db")
    assert list(fresh.iterdir()) == []  # no store, no host key
    # Into an existing store (here, one that holds the vault), a failed import leaves the
    # store as it was.
    cli.fails(1, "vault", "import", truncated)
    assert [v["vault"] for v in cli.json("vault", "list")["vaults"]] == [vault_id]


def test_rotate_refuses_a_collection_the_vault_does_not_have(granted: Granted) -> None:
    """A typo must not pass for the rotation of the collection meant."""
    cli = granted.cli
    line = cli.fails(2, "vault", "rotate", granted.vault, "-c", "income/payslip", *granted.owner)
    assert line.startswith("error: the vault has no collection 'income/payslip'")
    rotated = cli.json("vault", "rotate", granted.vault, "-c", "income/payslips", *granted.owner)
    assert list(rotated["epochs"]) == ["income/payslips"]
    everything = cli.json("vault", "rotate", granted.vault, *granted.owner)["epochs"]
    assert "income/payslip" not in everything  # the typo made no collection
