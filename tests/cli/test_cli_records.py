"""``pds put/get/list/history/delete`` happy paths, in text and ``--json``."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

import pds

if TYPE_CHECKING:
    from tests.cli.conftest import Cli


def test_put_from_stdin_json(cli: Cli, vault_id: str) -> None:
    document = cli.put(vault_id, "health/visits", {"clinic": "north", "cost": 12.5})
    assert set(document) >= {"record", "version", "collection", "created_at", "size"}
    assert document["version"] == 1
    assert document["collection"] == "health/visits"
    assert document["vault"] == vault_id
    assert document["deleted"] is False
    assert document["epoch"] == 1


def test_put_from_a_file_text(cli: Cli, vault_id: str, tmp_path: Path) -> None:
    source = tmp_path / "record.json"
    source.write_text(json.dumps({"name": "Zoë", "items": [1, 2, {"deep": None}]}))
    result = cli.ok("put", vault_id, "notes", source)
    words = result.stdout.split()
    assert words[:2] == ["stored", "record"]
    assert words[3:] == ["version", "1", "in", "notes"]
    got = cli.json("get", vault_id, words[2])
    assert got["data"] == {"name": "Zoë", "items": [1, 2, {"deep": None}]}


def test_put_dash_reads_stdin(cli: Cli, vault_id: str) -> None:
    document = cli.json("put", vault_id, "notes", "-", input='{"a": true}')
    assert cli.json("get", vault_id, document["record"])["data"] == {"a": True}


def test_put_new_version(cli: Cli, vault_id: str, record: dict[str, Any]) -> None:
    updated = cli.put(vault_id, "health", {"v": 2}, "--record", record["record"])
    assert updated["record"] == record["record"]
    assert updated["version"] == 2
    assert cli.json("get", vault_id, record["record"])["data"] == {"v": 2}


def test_get_json(cli: Cli, vault_id: str, record: dict[str, Any]) -> None:
    got = cli.json("get", vault_id, record["record"])
    did = cli.json("vault", "list")["vaults"][0]["did"]
    assert got["record"] == record["record"]
    assert got["collection"] == "health"
    assert got["version"] == 1
    assert got["data"] == record["data"]
    assert got["created_at"] == record["created_at"]
    assert got["writer"] == did
    assert got["vault"] == vault_id
    assert got["epoch"] == 1


def test_get_text(cli: Cli, vault_id: str, record: dict[str, Any]) -> None:
    text = cli.ok("get", vault_id, record["record"]).stdout
    assert f"record     {record['record']}" in text
    assert "collection health" in text
    assert record["data"]["marker"] in text
    # The data is printed as JSON after the header lines.
    assert json.loads(text[text.index("{") :]) == record["data"]


def test_list_json_and_text_without_a_secret(
    cli: Cli, vault_id: str, record: dict[str, Any]
) -> None:
    other = cli.put(vault_id, "tax", {"year": 2024})
    listed = cli.json("list", vault_id, passphrase=False)
    assert listed["cursor"] is None
    assert listed["vault"] == vault_id
    assert [(r["record"], r["collection"], r["version"]) for r in listed["records"]] == [
        (record["record"], "health", 1),
        (other["record"], "tax", 1),
    ]
    assert all(r["size"] > 0 for r in listed["records"])
    assert all("data" not in r for r in listed["records"])
    text = cli.ok("list", vault_id, passphrase=False).stdout
    assert record["record"] in text and other["record"] in text
    assert record["data"]["marker"] not in text
    health = cli.json("list", vault_id, "--collection", "health", passphrase=False)
    assert [r["record"] for r in health["records"]] == [record["record"]]


def test_list_pages_with_a_cursor(cli: Cli, vault_id: str) -> None:
    ids = [cli.put(vault_id, "notes", {"n": n})["record"] for n in range(5)]
    seen: list[str] = []
    cursor: str | None = None
    pages = 0
    while True:
        extra = ["--cursor", cursor] if cursor is not None else []
        page = cli.json("list", vault_id, "--limit", "2", *extra, passphrase=False)
        seen += [r["record"] for r in page["records"]]
        pages += 1
        cursor = page["cursor"]
        if cursor is None:
            break
    assert seen == ids
    assert pages == 3
    text = cli.ok("list", vault_id, "--limit", "2").stdout
    assert f"more records: pds list {vault_id} --cursor " in text


def test_list_since_and_until(cli: Cli, vault_id: str, record: dict[str, Any]) -> None:
    created = datetime.fromisoformat(record["created_at"])
    before = (created - timedelta(days=1)).isoformat()
    after = (created + timedelta(days=1)).isoformat()
    assert len(cli.json("list", vault_id, "--since", before)["records"]) == 1
    assert cli.json("list", vault_id, "--since", after)["records"] == []
    assert cli.json("list", vault_id, "--until", before)["records"] == []
    # A timestamp without an offset is UTC; a plain date works too.
    naive = (created + timedelta(days=1)).astimezone(UTC).replace(tzinfo=None).isoformat()
    assert len(cli.json("list", vault_id, "--until", naive)["records"]) == 1
    assert cli.json("list", vault_id, "--until", "2000-01-01")["records"] == []
    assert "no records" in cli.ok("list", vault_id, "--until", "2000-01-01").stdout


def test_history_json_and_text(cli: Cli, vault_id: str, record: dict[str, Any]) -> None:
    cli.put(vault_id, "health", {"v": 2}, "--record", record["record"])
    history = cli.json("history", vault_id, record["record"])
    assert history["record"] == record["record"]
    versions = history["versions"]
    assert [v["version"] for v in versions] == [1, 2]
    assert [v["data"] for v in versions] == [record["data"], {"v": 2}]
    assert all(v["record"] == record["record"] for v in versions)
    text = cli.ok("history", vault_id, record["record"]).stdout
    assert "version 1" in text and "version 2" in text
    assert record["data"]["marker"] in text


def test_delete_json_and_history_after(cli: Cli, vault_id: str, record: dict[str, Any]) -> None:
    deleted = cli.json("delete", vault_id, record["record"])
    assert deleted["record"] == record["record"]
    assert deleted["version"] == 2
    assert deleted["deleted"] is True
    versions = cli.json("history", vault_id, record["record"])["versions"]
    assert [(v["version"], v["deleted"], v["erased"], v["data"]) for v in versions] == [
        (1, False, True, None),
        (2, True, False, None),
    ]
    assert cli.json("list", vault_id)["records"] == []
    line = cli.fails(1, "get", vault_id, record["record"])
    assert "deleted" in line
    # The raw store holds no trace of the erased content.
    raw = b"".join(p.read_bytes() for p in cli.store.parent.glob("pds.db*"))
    assert record["data"]["marker"].encode() not in raw


def test_delete_text(cli: Cli, vault_id: str, record: dict[str, Any]) -> None:
    text = cli.ok("delete", vault_id, record["record"]).stdout
    assert text.startswith(f"deleted record {record['record']} (tombstone version 2")


def test_records_written_by_the_cli_read_back_through_the_library(
    cli: Cli, vault_id: str, record: dict[str, Any]
) -> None:
    with pds.open_store(cli.store, create=False) as store:
        vault = store.open_vault(vault_id)
        vault.unlock(passphrase=cli.passphrase)
        assert vault.get(record["record"]).data == record["data"]


def test_put_record_must_exist_in_that_collection(
    cli: Cli, vault_id: str, record: dict[str, Any]
) -> None:
    assert cli.fails(1, "put", vault_id, "health", "--record", "b" * 26, input="{}") == (
        "error: no such record"
    )
    line = cli.fails(2, "put", vault_id, "tax", "--record", record["record"], input="{}")
    assert "is in collection 'health'" in line
    cli.ok("delete", vault_id, record["record"])
    cli.fails(1, "put", vault_id, "health", "--record", record["record"], input="{}")
    assert cli.json("list", vault_id)["records"] == []


def test_library_refuses_a_new_version_in_another_collection(tmp_path: Path) -> None:
    key_file = tmp_path / "owner.key"
    pds.SymmetricKey.create_file(key_file)
    with pds.open_store(tmp_path / "s.db") as store:
        vault = store.open_vault(store.create_vault(key_file=key_file))
        vault.unlock(key_file=key_file)
        first = vault.put("health", {"a": 1})
        with pytest.raises(pds.errors.FormatError):
            vault.put("public", {"a": 2}, record_id=first.record_id)
