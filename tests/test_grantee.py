"""The grantee's side of a token read: what ``Grantee.open`` accepts from an untrusted host.

The host holds the store and the host key, so it can send any response it likes. Each test
takes a genuine response and changes it the way a dishonest host could, then checks that
the grantee refuses it (``IntegrityError`` with the reason ``docs/spec/token.md`` names,
"Opening a response") instead of returning data the owner never wrote or a record with a
field silently missing.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

import pds
from pds import _codec, _crypto
from pds.errors import IntegrityError
from pds.invocation import Invocation

if TYPE_CHECKING:
    from tests.tokens_helpers import World, make_world
else:
    from tokens_helpers import World, make_world


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    opened = make_world(tmp_path / "world")
    yield opened
    opened.close()


@pytest.fixture
def agency() -> pds.PrincipalKey:
    return pds.PrincipalKey.generate()


def grant(world: World, key: pds.PrincipalKey, **overrides: Any) -> pds.Token:
    options: dict[str, Any] = {
        "collections": ["tax/*"],
        "purpose": "benefit check",
        "expires": dt.timedelta(days=30),
    }
    options.update(overrides)
    return world.vault.grant(key.did, **options)


def served(
    world: World, grantee: pds.Grantee, token: pds.Token, **request: Any
) -> tuple[Invocation, dict[str, Any]]:
    """An invocation and the honest host's response to it, decoded for editing."""
    invocation = grantee.invoke(token, **request)
    response = world.store.serve(invocation.to_bytes())
    document = _codec.decode(response.to_bytes())
    assert isinstance(document, dict)
    return invocation, document


def tampered(document: dict[str, Any], change: Callable[[dict[str, Any]], None]) -> bytes:
    change(document)
    return _codec.encode(document)


# -- the response answers this request --------------------------------------------------


def test_a_read_answered_with_a_listing_is_refused(world: World, agency: pds.PrincipalKey) -> None:
    world.vault.put("tax/returns", {"income": 1000}, record_id="ret-2024")
    token = grant(world, agency)
    grantee = world.grantee(agency)
    invocation, document = served(world, grantee, token, records=["ret-2024"])

    def to_list(doc: dict[str, Any]) -> None:
        doc["action"] = "list"
        doc["batches"] = []
        doc["records"] = [
            {
                "record": "invented",
                "collection": "tax/returns",
                "version": 7,
                "created_at": 1,
                "epoch": 1,
            }
        ]

    with pytest.raises(IntegrityError) as refused:
        grantee.open(token, tampered(document, to_list), invocation=invocation)
    assert refused.value.reason == "response-binding"


def test_a_list_answered_with_a_read_is_refused(world: World, agency: pds.PrincipalKey) -> None:
    world.vault.put("tax/returns", {"income": 1000}, record_id="ret-2024")
    token = grant(world, agency)
    grantee = world.grantee(agency)
    listing = grantee.invoke(token, action="list")
    _, document = served(world, grantee, token, records=["ret-2024"])
    document["request"] = listing.request_id
    with pytest.raises(IntegrityError) as refused:
        grantee.open(token, _codec.encode(document), invocation=listing)
    assert refused.value.reason == "response-binding"


def test_honest_responses_to_both_actions_open(world: World, agency: pds.PrincipalKey) -> None:
    world.vault.put("tax/returns", {"income": 1000}, record_id="ret-2024")
    token = grant(world, agency)
    grantee = world.grantee(agency)
    for action, data in (("read", {"income": 1000}), ("list", None)):
        invocation = grantee.invoke(token, action=action)
        response = world.store.serve(invocation.to_bytes())
        read = grantee.open(token, response, invocation=invocation)
        assert [r.data for r in read.records] == [data]


# -- field-sealed records: no granted field is withheld ----------------------------------


def _without_shares(*names: str) -> Callable[[dict[str, Any]], None]:
    def change(doc: dict[str, Any]) -> None:
        for item in doc["records"]:
            item["field_shares"] = [pair for pair in item["field_shares"] if pair[0] not in names]

    return change


@pytest.mark.parametrize("withheld", [("allergy",), ("allergy", "name", "severity")])
def test_a_withheld_field_of_an_unrestricted_token_is_refused(
    world: World, agency: pds.PrincipalKey, withheld: tuple[str, ...]
) -> None:
    world.vault.create_collection("health/allergies", seal_fields=True)
    data = {"name": "Ann", "allergy": "penicillin", "severity": "anaphylaxis"}
    world.vault.put("health/allergies", data, record_id="rec-1")
    token = grant(world, agency, collections=["health/*"])
    grantee = world.grantee(agency)
    invocation, document = served(world, grantee, token, records=["rec-1"])
    with pytest.raises(IntegrityError) as refused:
        grantee.open(token, tampered(document, _without_shares(*withheld)), invocation=invocation)
    assert refused.value.reason == "field-withheld"
    # Control: the honest response opens, every field.
    assert [r.data for r in grantee.read(world.store, token, records=["rec-1"]).records] == [data]


def test_a_withheld_granted_field_of_a_restricted_token_is_refused(
    world: World, agency: pds.PrincipalKey
) -> None:
    world.vault.create_collection("tax/2024", seal_fields=True)
    world.vault.put("tax/2024", {"income": 1, "name": "Ada", "address": "here"})
    token = grant(world, agency, fields=["income", "name"])
    grantee = world.grantee(agency)
    invocation, document = served(world, grantee, token)
    assert [pair[0] for pair in document["records"][0]["field_shares"]] == ["income", "name"]
    with pytest.raises(IntegrityError) as refused:
        grantee.open(token, tampered(document, _without_shares("name")), invocation=invocation)
    assert refused.value.reason == "field-withheld"


def test_a_granted_field_the_record_does_not_have_is_not_missing(
    world: World, agency: pds.PrincipalKey
) -> None:
    """Only stored fields need a share: the stored field names are signed by the owner."""
    world.vault.create_collection("tax/2024", seal_fields=True)
    world.vault.put("tax/2024", {"income": 1, "address": "here"})
    world.vault.put("tax/2024", {"address": "there"})
    token = grant(world, agency, fields=["income", "name"])
    read = world.grantee(agency).read(world.store, token)
    assert [r.data for r in read.records] == [{"income": 1}, {}]


# -- every record is inside the token's scope --------------------------------------------


def test_records_of_another_grant_are_refused(world: World, agency: pds.PrincipalKey) -> None:
    """One key holds two grants; the host answers a read with the first one's records and
    secrets, which that key can open. The second token does not cover them."""
    world.vault.put("health/visits", {"diagnosis": "secret"}, record_id="visit-1")
    world.vault.put("tax/returns", {"income": 1000}, record_id="ret-1")
    health = grant(world, agency, collections=["health/*"], purpose="treatment")
    tax = grant(world, agency)
    grantee = world.grantee(agency)
    _, other = served(world, grantee, health, records=["visit-1"])
    invocation, document = served(world, grantee, tax, records=["ret-1"])

    def swap(doc: dict[str, Any]) -> None:
        doc["batches"] = other["batches"]
        doc["records"] = other["records"]
        doc["keys"] = [[k.collection, k.epoch, k.sealed] for k in health.leaf.keys]

    with pytest.raises(IntegrityError) as refused:
        grantee.open(tax, tampered(document, swap), invocation=invocation)
    assert refused.value.reason == "response-scope"


def test_a_record_outside_the_window_is_refused(world: World, agency: pds.PrincipalKey) -> None:
    world.vault.put("tax/returns", {"income": 1}, record_id="old")
    world.clock.advance(60_000)
    start = dt.datetime.fromtimestamp(world.clock.ms / 1000, dt.UTC)
    world.vault.put("tax/returns", {"income": 2}, record_id="new")
    everything = grant(world, agency)
    recent = grant(world, agency, window=(start, None))
    grantee = world.grantee(agency)
    assert [r.record_id for r in grantee.read(world.store, recent).records] == ["new"]
    _, broad = served(world, grantee, everything, records=["old"])
    invocation, document = served(world, grantee, recent, records=["old"])
    assert document["records"] == []

    def add_old(doc: dict[str, Any]) -> None:
        doc["batches"] = broad["batches"]
        doc["records"] = broad["records"]

    with pytest.raises(IntegrityError) as refused:
        grantee.open(recent, tampered(document, add_old), invocation=invocation)
    assert refused.value.reason == "response-scope"


@pytest.mark.parametrize(
    "entry",
    [
        {"collection": "health/visits", "created_at": 0},
        {"collection": "tax/returns", "created_at": -1},
    ],
)
def test_a_listed_record_outside_the_scope_is_refused(
    world: World, agency: pds.PrincipalKey, entry: dict[str, Any]
) -> None:
    world.vault.put("tax/returns", {"income": 1})
    token = grant(world, agency, window=(dt.datetime.fromtimestamp(0, dt.UTC), None))
    grantee = world.grantee(agency)
    invocation, document = served(world, grantee, token, action="list")
    assert len(document["records"]) == 1

    def add(doc: dict[str, Any]) -> None:
        doc["records"].append({**doc["records"][0], "record": "invented", **entry})

    with pytest.raises(IntegrityError) as refused:
        grantee.open(token, tampered(document, add), invocation=invocation)
    assert refused.value.reason == "response-scope"


def test_a_pending_record_outside_the_scope_is_refused(
    world: World, agency: pds.PrincipalKey
) -> None:
    world.vault.put("tax/returns", {"income": 1})
    token = grant(world, agency)
    grantee = world.grantee(agency)
    invocation, document = served(world, grantee, token)

    def add(doc: dict[str, Any]) -> None:
        doc["pending"] = [["invented", "health/visits", 1]]

    with pytest.raises(IntegrityError) as refused:
        grantee.open(token, tampered(document, add), invocation=invocation)
    assert refused.value.reason == "response-scope"


def test_link_keys_outside_the_scope_are_ignored(world: World, agency: pds.PrincipalKey) -> None:
    """A key entry of another collection is not even unsealed: this one would fail."""
    world.vault.put("tax/returns", {"income": 1})
    token = grant(world, agency)
    grantee = world.grantee(agency)
    invocation, document = served(world, grantee, token)

    def add(doc: dict[str, Any]) -> None:
        doc["keys"] = [["health/visits", 1, b"\x00" * 80]]

    read = grantee.open(token, tampered(document, add), invocation=invocation)
    assert [r.data for r in read.records] == [{"income": 1}]
    # Control: the same entry in the token's scope is unsealed, and fails.
    document["keys"] = [["tax/returns", 9, b"\x00" * 80]]
    with pytest.raises(IntegrityError) as refused:
        grantee.open(token, _codec.encode(document), invocation=invocation)
    assert refused.value.reason == "link-key"


# -- what a grantee remembers from a response --------------------------------------------


def _sealed_to(key: pds.PrincipalKey, secret: bytes) -> bytes:
    return _crypto.seal(
        secret, _crypto.ed25519_to_x25519(_crypto.parse_did_key(key.did)), _crypto.system_rng
    )


def _carried(token: pds.Token, holder: pds.PrincipalKey) -> dict[tuple[str, int], bytes]:
    """The epoch secrets a delegated link carries, as its holder unseals them."""
    return pds.Grantee(holder).epoch_secrets(token)


FAKE = b"\x42" * 32
"""An "epoch secret" the host chose, so it knows it."""


def test_a_rejected_response_plants_no_epoch_secret(world: World, agency: pds.PrincipalKey) -> None:
    world.vault.put("tax/returns", {"income": 1}, record_id="t1")
    token = grant(world, agency, delegable=1)
    grantee = world.grantee(agency)
    invocation, document = served(world, grantee, token)

    def plant(doc: dict[str, Any]) -> None:
        doc["keys"] = [["tax/returns", 2, _sealed_to(agency, FAKE)]]
        doc["records"] = [{"garbage": 1}]

    with pytest.raises(IntegrityError):
        grantee.open(token, tampered(document, plant), invocation=invocation)
    helper = pds.PrincipalKey.generate()
    delegated = grantee.delegate(token, to=helper.did)
    assert sorted(_carried(delegated, helper)) == [("tax/returns", 1)]
    # The real epoch 2 still reaches the delegate, through the owner.
    world.vault.rotate("tax/returns")
    world.vault.put("tax/returns", {"income": 2}, record_id="t2")
    assert world.grantee(helper).read(world.store, delegated, records=["t1"]).records
    assert world.vault.share_keys() == 1
    read = world.grantee(helper).read(world.store, delegated, records=["t2"])
    assert [r.data for r in read.records] == [{"income": 2}]


def test_an_accepted_response_teaches_only_secrets_it_proved(
    world: World, agency: pds.PrincipalKey
) -> None:
    """A secret is learned only if it opened an owner-signed reader share of its own epoch
    in that response: an extra entry (a future epoch, another collection in scope) or an
    epoch none of whose batches was served is not remembered."""
    token = grant(world, agency, delegable=1)
    world.vault.put("tax/returns", {"income": 1}, record_id="old")
    world.vault.rotate("tax/returns")
    world.vault.put("tax/returns", {"income": 2}, record_id="new")
    grantee = world.grantee(agency)
    invocation, document = served(world, grantee, token, records=["old"])
    assert [(k[0], k[1]) for k in document["keys"]] == [("tax/returns", 1), ("tax/returns", 2)]

    def add(doc: dict[str, Any]) -> None:
        doc["keys"] += [
            ["tax/returns", 3, _sealed_to(agency, FAKE)],
            ["tax/other", 1, _sealed_to(agency, FAKE)],
        ]

    read = grantee.open(token, tampered(document, add), invocation=invocation)
    assert [r.data for r in read.records] == [{"income": 1}]
    helper = pds.PrincipalKey.generate()
    carried = _carried(grantee.delegate(token, to=helper.did), helper)
    # Epoch 1 opened the served batch; epoch 2 was sent but opened nothing here.
    assert sorted(carried) == [("tax/returns", 1)]
    # Once a batch of epoch 2 is served, epoch 2 is learned, and passed on.
    assert [r.data for r in grantee.read(world.store, token, records=["new"]).records] == [
        {"income": 2}
    ]
    carried = _carried(grantee.delegate(token, to=helper.did), helper)
    assert sorted(carried) == [("tax/returns", 1), ("tax/returns", 2)]
    assert FAKE not in carried.values()
    delegated = grantee.delegate(token, to=helper.did)
    read = world.grantee(helper).read(world.store, delegated)
    assert sorted(r.data["income"] for r in read.records if r.data) == [1, 2]


def test_a_response_never_replaces_a_secret_already_held(
    world: World, agency: pds.PrincipalKey
) -> None:
    token = grant(world, agency, delegable=1)
    world.vault.put("tax/returns", {"income": 1}, record_id="t1")
    grantee = world.grantee(agency)
    honest = grantee.read(world.store, token)
    assert [r.data for r in honest.records] == [{"income": 1}]
    helper = pds.PrincipalKey.generate()
    genuine = _carried(grantee.delegate(token, to=helper.did), helper)
    assert sorted(genuine) == [("tax/returns", 1)]
    invocation, document = served(world, grantee, token)

    def replace(doc: dict[str, Any]) -> None:
        doc["keys"] = [["tax/returns", 1, _sealed_to(agency, FAKE)]]

    # The secret held is used (and opens the batch); the offered one is ignored.
    read = grantee.open(token, tampered(document, replace), invocation=invocation)
    assert [r.data for r in read.records] == [{"income": 1}]
    assert _carried(grantee.delegate(token, to=helper.did), helper) == genuine
