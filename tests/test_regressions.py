"""Known failures of comparable systems, as regression tests (issue 5, suite 8).

Each test names, in its docstring, the class of historical failure it guards against. Many
of these classes are already covered, offline and at the chain level, by the suites that
own the feature; this module adds the variants they do not prove (through the real host,
with real grants, across processes, with other key types) and points to the others:

* signatures flipped, zeroed, by another key: ``test_capability.py``
  (``test_forged_zeroed_and_foreign_signatures_are_refused``);
* splicing links between chains built from fixed keys: ``test_capability.py``
  (``test_spliced_links_are_refused``);
* unknown caveats, abilities and versions in a root: ``test_capability.py``
  (``test_unknown_caveats_abilities_and_versions_are_refused``);
* the eight low-order Ed25519 points in a link or a did:key: ``test_capability.py``
  (``test_low_order_and_invalid_keys_are_malformed``,
  ``test_low_order_dids_are_refused_by_grant_and_delegate``);
* revocation seen by other ``Store`` objects and by a serving process, and a renamed
  revocations table: ``test_revocation.py``
  (``test_revocation_is_seen_by_every_store_object_and_process``,
  ``test_an_unreadable_revocation_store_denies_and_releases_nothing``);
* ``[a, b, c]`` against ``[a, b, c, c]``: ``test_merkle.py``
  (``test_duplicated_last_leaf_changes_the_root``).

A case that exposes a bug in pds is marked ``xfail(strict=True)`` with the reason.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import hashlib
import inspect
import json
import os
import re
import shutil
import sqlite3
import subprocess
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import base58
import msgpack
import nacl.bindings as sodium
import nacl.signing
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, x25519

import pds
from pds import _codec, _crypto, accesslog, capability, grantee, keys, merkle, vault
from pds import invocation as invocation_mod
from pds._store.sqlite import SQLiteBackend
from pds.errors import (
    AccessDenied,
    BrokenChain,
    FormatError,
    InvalidProof,
    InvalidSignature,
    MalformedToken,
    Revoked,
    StoreCorrupt,
    StoreError,
    WrongVault,
)
from pds.keys import SymmetricKey

if TYPE_CHECKING:
    from tests.tokens_helpers import (
        DAY_MS,
        World,
        link_document,
        make_world,
        raw,
        refusals,
        serve_in_another_process,
        sign_payload,
        signing_key,
        token_bytes,
        token_pairs,
    )
else:
    from tokens_helpers import (
        DAY_MS,
        World,
        link_document,
        make_world,
        raw,
        refusals,
        serve_in_another_process,
        sign_payload,
        signing_key,
        token_bytes,
        token_pairs,
    )

CHILD = Path(__file__).parent / "helpers" / "regression_child.py"
PURPOSE = "benefit check"


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    opened = make_world(tmp_path / "world")
    opened.vault.put("tax/2024", {"income": 41000})
    opened.vault.put("health/visits", {"clinic": "north"})
    yield opened
    opened.close()


def grant(world: World, key: pds.PrincipalKey, **overrides: Any) -> pds.Token:
    options: dict[str, Any] = {
        "collections": ["tax/*"],
        "purpose": PURPOSE,
        "expires": dt.timedelta(days=30),
    }
    options.update(overrides)
    return world.vault.grant(key.did, **options)


def released(world: World) -> list[int]:
    """Indices of the access-log entries that released something."""
    return [e.index for e in world.vault.access_log() if e.result == "released"]


def raw_invocation(
    token: bytes,
    signer: pds.PrincipalKey,
    *,
    time_ms: int,
    vault_id: str,
    changes: dict[str, Any] | None = None,
    args_changes: dict[str, Any] | None = None,
) -> bytes:
    """An invocation carrying ``token`` as raw bytes (which need not parse), signed by
    ``signer``, with optional extra or changed body and ``args`` entries."""
    body: dict[str, Any] = {
        "v": 1,
        "vault": vault_id,
        "token": token,
        "action": "read",
        "args": {
            "collection": None,
            "records": None,
            "since": None,
            "until": None,
            "limit": 100,
            "cursor": None,
        },
        "purpose": PURPOSE,
        "time": time_ms,
        "nonce": os.urandom(16),
        "agent": None,
        "correlation": None,
        "defer": None,
    }
    body.update(changes or {})
    body["args"].update(args_changes or {})
    encoded = _codec.encode(body)
    signature = signing_key(signer).sign(invocation_mod.INVOCATION_SIGNATURE_LABEL, encoded)
    return invocation_mod.wire(encoded, signature)


def refused_by_host(
    world: World, token: bytes, holder: pds.PrincipalKey, error: type[AccessDenied]
) -> AccessDenied:
    """Serve ``token`` as ``holder``; require ``error`` and that nothing was released."""
    before = released(world)
    request = raw_invocation(token, holder, time_ms=world.clock.ms, vault_id=world.vault.vault_id)
    with pytest.raises(error) as refused:
        world.store.serve(request)
    assert released(world) == before
    return refused.value


# -- 1. signatures removed, zeroed or replaced ---------------------------------------------

ED25519_ORDER = 2**252 + 27742317777372353535851937790883648493


def _malleated(signature: bytes) -> bytes:
    """The same signature with S replaced by S + L: it verifies in libraries that do not
    check that S is reduced (the malleability that let Bitcoin transactions be re-hashed)."""
    scalar = int.from_bytes(signature[32:], "little") + ED25519_ORDER
    return signature[:32] + scalar.to_bytes(32, "little")


def test_removed_signature_is_malformed_at_the_host(world: World) -> None:
    """Signature stripping (JWT "alg": "none", CVE-2015-9235): an unsigned link is malformed."""
    # A link whose signature is empty, nil or missing is malformed at parse time and at the
    # host; it is never treated as unsigned-but-valid.
    agency = pds.PrincipalKey.generate()
    token = grant(world, agency)
    ((payload, _),) = token_pairs(token)
    stripped = {
        "signature empty": _codec.encode({"v": 1, "links": [[payload, b""]]}),
        "signature nil": _codec.encode({"v": 1, "links": [[payload, None]]}),
        "signature missing": _codec.encode({"v": 1, "links": [[payload]]}),
        "payload alone": _codec.encode({"v": 1, "links": [payload]}),
    }
    for name, data in stripped.items():
        with pytest.raises(MalformedToken):
            pds.Token.from_bytes(data)
        refused = refused_by_host(world, data, agency, MalformedToken)
        assert refused.reason == "malformed", name
    assert len(world.grantee(agency).read(world.store, token).records) == 1


def test_zeroed_malleated_and_swapped_signatures_are_refused_by_the_host(world: World) -> None:
    """Replaced signatures (zeroed, malleated S+L, another valid one) are refused by the host."""
    # Each is refused with ``InvalidSignature`` and logged, and nothing is served. "Another
    # valid one" is a signature by the same issuer over other bytes: a sibling grant's root
    # signature, or a sibling delegation's. (Flipped bits and other signers, offline:
    # ``test_capability.py``.)
    agency, courier = pds.PrincipalKey.generate(), pds.PrincipalKey.generate()
    first = grant(world, agency, delegable=1)
    sibling = grant(world, agency, delegable=1)
    child = world.grantee(agency).delegate(first, to=courier.did)
    other_child = world.grantee(agency).delegate(first, to=courier.did, uses=3)
    (root, root_sig), (leaf, leaf_sig) = token_pairs(child)
    assert root == token_pairs(first)[0][0]
    sibling_sig = token_pairs(sibling)[0][1]
    other_leaf_sig = token_pairs(other_child)[1][1]
    # The positive control: the sibling signatures are valid over their own bytes.
    for good in (sibling, other_child):
        capability.verify_chain(
            good, vault_id=world.vault.vault_id, identity=_crypto.parse_did_key(world.vault.did)
        )
    cases = {
        "root zeroed": [(root, bytes(64)), (leaf, leaf_sig)],
        "root malleated": [(root, _malleated(root_sig)), (leaf, leaf_sig)],
        "root signature of a sibling grant": [(root, sibling_sig), (leaf, leaf_sig)],
        "leaf zeroed": [(root, root_sig), (leaf, bytes(64))],
        "leaf malleated": [(root, root_sig), (leaf, _malleated(leaf_sig))],
        "leaf signature of a sibling delegation": [(root, root_sig), (leaf, other_leaf_sig)],
    }
    before = len(refusals(world.vault))
    for name, pairs in cases.items():
        refused = refused_by_host(world, token_bytes(pairs), courier, InvalidSignature)
        assert refused.reason == "signature", name
    assert refusals(world.vault)[before:] == ["signature"] * len(cases)
    assert len(world.grantee(courier).read(world.store, child).records) == 1


# -- 2. the token choosing its own algorithm or key type -----------------------------------


def _p256_public(compressed: bool) -> bytes:
    key = ec.generate_private_key(ec.SECP256R1()).public_key()
    form = (
        serialization.PublicFormat.CompressedPoint
        if compressed
        else serialization.PublicFormat.UncompressedPoint
    )
    return key.public_bytes(serialization.Encoding.X962, form)


def _secp256k1_public() -> bytes:
    key = ec.generate_private_key(ec.SECP256K1()).public_key()
    return key.public_bytes(serialization.Encoding.X962, serialization.PublicFormat.CompressedPoint)


def _x25519_public() -> bytes:
    return x25519.X25519PrivateKey.generate().public_key().public_bytes_raw()


def _did(multicodec: bytes, key: bytes) -> str:
    return "did:key:z" + base58.b58encode(multicodec + key).decode("ascii")


FOREIGN_DIDS: dict[str, Callable[[], str]] = {
    "secp256k1-pub (0xe7)": lambda: _did(b"\xe7\x01", _secp256k1_public()),
    "p256-pub (0x1200)": lambda: _did(b"\x80\x24", _p256_public(compressed=True)),
    "p256-pub uncompressed": lambda: _did(b"\x80\x24", _p256_public(compressed=False)),
    "x25519-pub (0xec)": lambda: _did(b"\xec\x01", _x25519_public()),
    "ed25519-pub with a P-256 key": lambda: _did(b"\xed\x01", _p256_public(compressed=True)),
}


@pytest.mark.parametrize("kind", sorted(FOREIGN_DIDS))
def test_did_key_of_another_key_type_is_refused(kind: str, world: World) -> None:
    """Key-type confusion: a did:key of secp256k1, P-256 or X25519 is refused as an audience."""
    # An audience is an Ed25519 key whatever multicodec a did claims; grant and delegate
    # refuse others with ``FormatError`` and write nothing.
    did = FOREIGN_DIDS[kind]()
    with pytest.raises(FormatError):
        keys.public_key_from_did(did)
    with pytest.raises(FormatError):
        world.vault.grant(did, collections=["tax/*"], purpose=PURPOSE, expires=dt.timedelta(days=1))
    holder = pds.PrincipalKey.generate()
    token = grant(world, holder, delegable=1)
    known = world.vault.grants()
    with pytest.raises(FormatError):
        world.grantee(holder).delegate(token, to=did)
    assert world.vault.grants() == known


def _root_payload(world: World, audience: bytes, **changes: Any) -> dict[str, Any]:
    caveats = capability.Caveats(
        abilities=frozenset({"read"}),
        collections=("tax/*",),
        fields=None,
        window=(None, None),
        purposes=frozenset({PURPOSE}),
        basis=None,
        not_before=world.clock.ms,
        expires=world.clock.ms + DAY_MS,
        uses=None,
        depth=0,
    )
    doc = link_document(
        issuer=_crypto.parse_did_key(world.vault.did),
        audience=audience,
        vault_id=world.vault.vault_id,
        parent=None,
        caveats=caveats,
    )
    doc.update(changes)
    return doc


def _signed_by_vault(world: World, doc: dict[str, Any]) -> bytes:
    """Token bytes of one root link signed by the real vault identity key."""
    owner = world.vault._owner
    assert owner is not None
    payload = _codec.encode(doc)
    return token_bytes([(payload, sign_payload(owner.identity, payload))])


def test_a_token_cannot_name_its_algorithm_or_key_type(world: World) -> None:
    """Algorithm confusion (JWT alg/kty/jwk headers): a token cannot choose its algorithm or key."""
    # A link or token naming an algorithm, key type or embedded key is refused even when the
    # vault identity really signed it; an issuer or audience that is not a 32-byte
    # prime-order Ed25519 key (a P-256, secp256k1 or X25519 key) is refused with ``key``.
    agency = pds.PrincipalKey.generate()
    good = _root_payload(world, agency.public_key)
    pds.Token.from_bytes(_signed_by_vault(world, good))  # the positive control parses
    for extra in (
        {"alg": "ES256K"},
        {"alg": "none"},
        {"kty": "EC"},
        {"crv": "P-256"},
        {"jwk": {"kty": "OKP", "crv": "Ed25519", "x": "AA"}},
    ):
        data = _signed_by_vault(world, {**good, **extra})
        with pytest.raises(MalformedToken) as refused:
            pds.Token.from_bytes(data)
        assert refused.value.reason == "unknown-caveat", extra
        assert refused_by_host(world, data, agency, MalformedToken).reason == "unknown-caveat"
    envelope = _codec.decode(_signed_by_vault(world, good))
    for extra in ({"alg": "EdDSA"}, {"typ": "pdst"}):
        with pytest.raises(MalformedToken):
            pds.Token.from_bytes(_codec.encode({**envelope, **extra}))
    identity_x25519 = _crypto.ed25519_to_x25519(_crypto.parse_did_key(world.vault.did))
    for role, key in (
        ("aud", _p256_public(compressed=True)),
        ("aud", _p256_public(compressed=False)),
        ("aud", _secp256k1_public()),
        ("iss", _secp256k1_public()),
        ("iss", _p256_public(compressed=True)),
    ):
        with pytest.raises(MalformedToken) as refused:
            pds.Token.from_bytes(_signed_by_vault(world, {**good, role: key}))
        assert refused.value.reason == "key", (role, len(key))
    # The vault identity's X25519 form in ``iss``: whatever those 32 bytes decode to, they
    # are not the identity key, so the root is refused before any signature is trusted.
    with pytest.raises(AccessDenied):
        token = pds.Token.from_bytes(_signed_by_vault(world, {**good, "iss": identity_x25519}))
        capability.verify_chain(
            token, vault_id=world.vault.vault_id, identity=_crypto.parse_did_key(world.vault.did)
        )


# -- 3. a link transplanted from another chain ---------------------------------------------


def test_a_link_transplanted_from_another_chain_is_refused(world: World) -> None:
    """Proof splicing (macaroon/UCAN chains): a link grafted from another chain is refused."""
    # A delegation validly signed by the holder of one token, grafted onto another token the
    # same holder has (same issuer, so only the parent id tells), or onto another vault's
    # token, is refused by the host, and the grafted link is never registered.
    agency, courier = pds.PrincipalKey.generate(), pds.PrincipalKey.generate()
    narrow = grant(world, agency, collections=["tax/2024"], delegable=1)
    broad = grant(world, agency, collections=["*"], delegable=1)
    delegated = world.grantee(agency).delegate(narrow, to=courier.did)
    child_pair = token_pairs(delegated)[1]
    assert broad.leaf.audience == delegated.links[1].issuer
    other_id = world.store.create_vault(key_file=world.key_file)
    other = world.open_vault(world.store, other_id)
    foreign = other.grant(
        agency.did,
        collections=["*"],
        purpose=PURPOSE,
        expires=dt.timedelta(days=30),
        delegable=1,
    )
    known = {g.link_id for g in world.vault.grants()}
    grafted = token_bytes([token_pairs(broad)[0], child_pair])
    with pytest.raises(BrokenChain) as refused:
        capability.verify_chain(
            pds.Token.from_bytes(grafted),
            vault_id=world.vault.vault_id,
            identity=_crypto.parse_did_key(world.vault.did),
        )
    assert refused.value.reason == "chain"
    assert refused_by_host(world, grafted, courier, BrokenChain).reason == "chain"
    assert refusals(world.vault)[-1] == "chain"
    assert {g.link_id for g in world.vault.grants()} == known
    # Onto the other vault's token: the grafted link names this vault.
    cross = token_bytes([token_pairs(foreign)[0], child_pair])
    before = [e.index for e in other.access_log() if e.result == "released"]
    request = raw_invocation(cross, courier, time_ms=world.clock.ms, vault_id=other_id)
    with pytest.raises(WrongVault):
        world.store.serve(request)
    assert [e.index for e in other.access_log() if e.result == "released"] == before
    # The genuine delegation still works.
    assert len(world.grantee(courier).read(world.store, delegated).records) == 1


# -- 4. unknown caveats fail closed --------------------------------------------------------


def test_unknown_caveats_in_a_delegation_or_invocation_fail_closed(world: World) -> None:
    """Permissive caveat checkers (macaroons skipping unknown caveats): unknown keys fail closed."""
    # An unknown key in a delegated link (even one whose value is nil), an unknown or
    # reserved ability, or an unknown field in an invocation or its arguments is refused,
    # not ignored; nothing is served or registered. (Roots: ``test_capability.py``.)
    agency, courier = pds.PrincipalKey.generate(), pds.PrincipalKey.generate()
    parent = grant(world, agency, delegable=1)
    root_pair = token_pairs(parent)[0]
    child_caveats = capability.narrowed(parent.leaf.caveats)

    def child(**changes: Any) -> bytes:
        doc = link_document(
            issuer=agency.public_key,
            audience=courier.public_key,
            vault_id=world.vault.vault_id,
            parent=parent.link_id,
            caveats=child_caveats,
            salt=os.urandom(16),
        )
        doc.update(changes)
        payload = _codec.encode(doc)
        return token_bytes([root_pair, (payload, sign_payload(signing_key(agency), payload))])

    # The positive control: the same hand-built delegation without the extra key is served.
    good = child()
    request = raw_invocation(good, courier, time_ms=world.clock.ms, vault_id=world.vault.vault_id)
    served = world.store.serve(request)
    # It carries no sealed keys, so the record is listed as pending rather than released.
    assert len(served.records) + len(served.pending) == 1
    known = {g.link_id for g in world.vault.grants()}
    for name, changes, reason in (
        ("unknown key", {"max_amount": 500}, "unknown-caveat"),
        ("unknown key with a nil value", {"ip_range": None}, "unknown-caveat"),
        ("unknown key shaped like a known one", {"purposes": [PURPOSE]}, "unknown-caveat"),
        ("unknown ability", {"ability": ["admin", "read"]}, "unknown-caveat"),
        ("reserved ability", {"ability": ["deposit", "read"]}, "unknown-caveat"),
    ):
        data = child(**changes)
        with pytest.raises(MalformedToken) as parsed:
            pds.Token.from_bytes(data)
        assert parsed.value.reason == reason, name
        assert refused_by_host(world, data, courier, MalformedToken).reason == reason, name
    for name, body, args in (
        ("unknown invocation field", {"scope": "everything"}, {}),
        ("unknown invocation field, nil", {"on_behalf_of": None}, {}),
        ("unknown argument", {}, {"fields": ["income"]}),
    ):
        request = raw_invocation(
            good,
            courier,
            time_ms=world.clock.ms,
            vault_id=world.vault.vault_id,
            changes=body,
            args_changes=args,
        )
        before = released(world)
        with pytest.raises(MalformedToken):
            world.store.serve(request)
        assert released(world) == before, name
    assert {g.link_id for g in world.vault.grants()} == known


# -- 5. no signing API takes a separate public key -----------------------------------------

SIGNING_MODULES = (_crypto, keys, capability, accesslog, grantee, vault, invocation_mod)
PUBLIC_KEY_PARAMETER = re.compile(r"public|verify|(^|_)pk$|^iss(uer)?$|^identity_key$")


def _signing_callables() -> dict[str, Callable[..., Any]]:
    """Every function and method of pds's signing modules whose name says it signs, plus
    the public operations that sign on the caller's behalf."""
    found: dict[str, Callable[..., Any]] = {}
    for module in SIGNING_MODULES:
        for name, member in vars(module).items():
            if inspect.isfunction(member) and member.__module__ == module.__name__:
                candidates = [(name, member)]
            elif inspect.isclass(member) and member.__module__ == module.__name__:
                candidates = [
                    (f"{name}.{attr}", getattr(member, attr))
                    for attr, value in vars(member).items()
                    if isinstance(value, classmethod | staticmethod) or inspect.isfunction(value)
                ]
            else:
                continue
            for label, function in candidates:
                short = label.rsplit(".", 1)[-1]
                if re.search(r"(^|_)sign(_|$)|sign_raw|make_link", short) and "verify" not in short:
                    found[f"{module.__name__}.{label}"] = function
    # The constructors of signing keys: a seed (or a source of one) in, nothing else.
    found["pds._crypto.SigningKey.from_seed"] = _crypto.SigningKey.from_seed
    found["pds._crypto.SigningKey.generate"] = _crypto.SigningKey.generate
    found["pds.PrincipalKey.__init__"] = pds.PrincipalKey.__init__
    found["pds.PrincipalKey.generate"] = pds.PrincipalKey.generate
    found["pds.PrincipalKey.from_file"] = pds.PrincipalKey.from_file
    found["pds.Vault.grant"] = pds.Vault.grant
    found["pds.Vault.revoke"] = pds.Vault.revoke
    found["pds.Vault.checkpoint"] = pds.Vault.checkpoint
    found["pds.Grantee.invoke"] = pds.Grantee.invoke
    found["pds.Grantee.delegate"] = pds.Grantee.delegate
    return found


def test_no_signing_api_takes_a_separate_public_key() -> None:
    """Double public key oracle (Ed25519 sign(sk, pk, msg) APIs): no signer takes a public key."""
    # Such APIs trusted the caller's public key, and two signatures of one message under
    # two public keys give away the secret scalar. No pds function or method that signs
    # has a parameter for the signer's public key (``audience`` is the recipient).
    found = _signing_callables()
    assert {
        "pds._crypto.SigningKey.sign",
        "pds._crypto.SigningKey.sign_raw",
        "pds.accesslog.Checkpoint.sign",
        "pds.capability.make_link",
    } <= set(found)
    offending = {
        name: parameter
        for name, function in found.items()
        for parameter in inspect.signature(function).parameters
        if PUBLIC_KEY_PARAMETER.search(parameter)
    }
    assert offending == {}


def test_signing_derives_the_public_key_from_the_secret() -> None:
    """Double public key oracle: pds signatures verify under the key derived from the seed."""
    for seed in (bytes(32), bytes(range(32)), os.urandom(32)):
        derived = bytes(nacl.signing.SigningKey(seed).verify_key)
        key = _crypto.SigningKey.from_seed(seed)
        assert key.public == derived
        principal = pds.PrincipalKey(key)
        assert principal.public_key == derived
        assert principal.did == _crypto.did_key(derived)
        message = os.urandom(40)
        nacl.signing.VerifyKey(derived).verify(b"label\x00" + message, key.sign(b"label", message))
        nacl.signing.VerifyKey(derived).verify(message, key.sign_raw(message))
        # A key object whose ``public`` field was replaced (if that is possible at all)
        # still signs as its seed's key: ``public`` is a label, never a signing input.
        other = _crypto.SigningKey.from_seed(os.urandom(32)).public
        try:
            relabelled = dataclasses.replace(key, public=other)
        except (FormatError, ValueError, TypeError):
            continue
        signature = relabelled.sign(b"label", message)
        nacl.signing.VerifyKey(derived).verify(b"label\x00" + message, signature)


def test_a_signing_key_cannot_be_built_with_another_public_key() -> None:
    """Double public key oracle: a SigningKey cannot be built with another public key.

    If it could, two signatures of one message under two public keys would share R and
    differ in S, and (S1 - S2) / (c1 - c2) is the secret scalar."""
    seed = os.urandom(32)
    other = _crypto.SigningKey.from_seed(os.urandom(32)).public
    constructor: Any = _crypto.SigningKey
    with pytest.raises(TypeError):
        constructor(seed, other, seed + other)
    with pytest.raises(TypeError):
        constructor(seed, public=other)
    genuine = _crypto.SigningKey(seed)
    with pytest.raises(ValueError):
        dataclasses.replace(genuine, public=other)
    assert genuine.public == _crypto.SigningKey.from_seed(seed).public


# -- 6. low-order X25519 keys as delegates --------------------------------------------------

FIELD_PRIME = 2**255 - 19
X25519_SMALL_ORDER_U = {
    "u=0 (order 2)": 0,
    "u=1 (order 4)": 1,
    "order 8 (e0eb...)": int.from_bytes(
        bytes.fromhex("e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800"), "little"
    ),
    "order 8 (5f9c...)": int.from_bytes(
        bytes.fromhex("5f9c95bca3508c24b1d0b1559c83ef5b04445cc4581c8e86d8224eddd09f1157"), "little"
    ),
    "u=p-1": FIELD_PRIME - 1,
    "u=p (non-canonical 0)": FIELD_PRIME,
    "u=p+1 (non-canonical 1)": FIELD_PRIME + 1,
}
"""The u-coordinates libsodium refuses as X25519 public keys (the small-order points of
Curve25519 and their non-canonical encodings); each is also tried with the unused top bit
set, which X25519 ignores."""


def _x25519_encodings() -> dict[str, bytes]:
    found = {}
    for name, u in X25519_SMALL_ORDER_U.items():
        encoded = u.to_bytes(32, "little")
        found[name] = encoded
        found[f"{name}, top bit set"] = encoded[:31] + bytes([encoded[31] | 0x80])
    return found


def _edwards_images(u: int) -> list[bytes]:
    """The Ed25519 encodings (both signs) of the points whose X25519 form is ``u``."""
    u %= FIELD_PRIME
    if (u + 1) % FIELD_PRIME == 0:
        return []
    y = (u - 1) * pow(u + 1, -1, FIELD_PRIME) % FIELD_PRIME
    encoded = y.to_bytes(32, "little")
    return [encoded, encoded[:31] + bytes([encoded[31] | 0x80])]


@pytest.mark.parametrize("name", sorted(_x25519_encodings()))
def test_low_order_x25519_keys_are_refused_as_delegates(name: str, world: World) -> None:
    """Small-order X25519 keys (all-zero shared secrets): refused as delegates, however named."""
    # Named by an X25519 did:key, by an Ed25519 did:key of the same bytes, or by the Ed25519
    # point that maps to it: grant and delegate refuse it with ``FormatError``, a link
    # audience with ``MalformedToken`` (``key``). (The Ed25519 list: ``test_capability``.)
    encoded = _x25519_encodings()[name]
    # The positive control: libsodium does refuse these as X25519 peers.
    with pytest.raises(RuntimeError):
        sodium.crypto_scalarmult(os.urandom(32), encoded)
    u = int.from_bytes(encoded[:31] + bytes([encoded[31] & 0x7F]), "little")
    candidates = {
        "x25519 did": _did(b"\xec\x01", encoded),
        "ed25519 did": _did(b"\xed\x01", encoded),
    }
    for index, image in enumerate(_edwards_images(u)):
        assert not sodium.crypto_core_ed25519_is_valid_point(image)
        candidates[f"edwards image {index}"] = _did(b"\xed\x01", image)
    holder = pds.PrincipalKey.generate()
    token = grant(world, holder, delegable=1)
    known = world.vault.grants()
    for label, did in candidates.items():
        with pytest.raises(FormatError):
            world.vault.grant(
                did, collections=["tax/*"], purpose=PURPOSE, expires=dt.timedelta(days=1)
            )
        with pytest.raises(FormatError):
            world.grantee(holder).delegate(token, to=did)
        assert world.vault.grants() == known, label
    for image in [encoded, *_edwards_images(u)]:
        with pytest.raises(FormatError):
            _crypto.ed25519_to_x25519(image)
        with pytest.raises(MalformedToken) as refused:
            pds.Token.from_bytes(_signed_by_vault(world, _root_payload(world, image)))
        assert refused.value.reason == "key"


# -- 7. AEAD nonces never repeat, also after restoring an old export -----------------------

NONCE_WRITES = 100_000
WRITE_BATCH = 2_000


def _stored_nonces(db: Path) -> Iterator[tuple[bytes, tuple[Any, ...]]]:
    """``(nonce, what it encrypted)`` for every AEAD nonce in the database: record and
    field ciphertexts (each under its own derived key), and the wraps under the store's
    host key (named by its id) and the owner's keys."""
    host_key = SymmetricKey.from_file(f"{db}.hostkey").key_id
    con = sqlite3.connect(db)
    try:
        for vault_id, record_id, version, batch_id, nonce, ciphertext in con.execute(
            "SELECT vault_id, record_id, version, batch_id, nonce, ciphertext FROM records "
            "WHERE ciphertext IS NOT NULL"
        ):
            identity = (vault_id, record_id, version, bytes(batch_id))
            if nonce:
                yield bytes(nonce), ("record", *identity, bytes(ciphertext))
            else:
                for name, field_nonce, sealed in msgpack.unpackb(ciphertext, raw=False):
                    yield bytes(field_nonce), ("field", *identity, name, bytes(sealed))
        for batch_id, wrapped in con.execute("SELECT batch_id, wrapped_host FROM batches"):
            yield bytes(wrapped[:24]), ("host-wrap", host_key, bytes(batch_id), bytes(wrapped))
        for vault_id, master, identity in con.execute(
            "SELECT vault_id, wrapped_master, wrapped_identity FROM vaults"
        ):
            yield bytes(master[:24]), ("master-wrap", vault_id, bytes(master))
            yield bytes(identity[:24]), ("identity-wrap", vault_id, bytes(identity))
    finally:
        con.close()


def _write(vault_: pds.Vault, count: int, tag: str, updates: Sequence[str] = ()) -> int:
    """Write ``count`` records (the first ones new versions of ``updates``) in batches."""
    written = 0
    pending = list(updates)
    while written < count:
        size = min(WRITE_BATCH, count - written)
        ids: list[str | None] = [pending.pop() if pending else None for _ in range(size)]
        vault_.put_many(
            "notes", [{"tag": tag, "n": written + i} for i in range(size)], record_ids=ids
        )
        written += size
    return written


def test_aead_nonces_never_repeat_across_writes_and_restores(tmp_path: Path) -> None:
    """AEAD nonce reuse after a restore (the GCM nonce-reuse class): no (key, nonce) repeats."""
    # Over 100,000 record writes, an export, and two restores of the old state (the export
    # imported into a fresh store, and the database backup put back), each written to
    # further: no nonce encrypts two different things; a nonce shared between stores
    # belongs to the very same ciphertext, copied.
    key_file = tmp_path / "owner.key"
    SymmetricKey.create_file(key_file)
    origin = tmp_path / "origin.db"
    written = 0
    with pds.open_store(origin, synchronous="normal") as store:
        owner = store.open_vault(store.create_vault(key_file=key_file))
        owner.unlock(key_file=key_file)
        owner.create_collection("forms", seal_fields=True)
        owner.put_many("forms", [{"a": i, "b": str(i), "c": [i]} for i in range(500)])
        written += 500
        written += _write(owner, 19_500, "base")
        updated = [info.record_id for info in owner.list(collection="notes", limit=1000).records]
        export = tmp_path / "old.pdsx"
        owner.export(export)
        backup = tmp_path / "restored.db"
        with sqlite3.connect(origin) as source, sqlite3.connect(backup) as target:
            source.backup(target)
        source.close()
        target.close()
        shutil.copy(f"{origin}.hostkey", f"{backup}.hostkey")
        written += _write(owner, 30_000, "origin", updated)
        owner.rotate()
        written += _write(owner, 1_000, "origin-rotated")
    fresh = tmp_path / "fresh.db"
    with pds.open_store(fresh, synchronous="normal") as store:
        imported = store.open_vault(store.import_vault(export, key_file=key_file))
        imported.unlock(key_file=key_file)
        written += _write(imported, 25_000, "fresh", updated)
    with pds.open_store(backup, synchronous="normal") as store:
        restored = store.open_vault(store.list_vaults()[0].vault_id)
        restored.unlock(key_file=key_file)
        written += _write(restored, 24_000, "restored", updated)
    assert written >= NONCE_WRITES
    uses: dict[bytes, set[tuple[Any, ...]]] = {}
    total = 0
    for db in (origin, fresh, backup):
        for nonce, what in _stored_nonces(db):
            assert len(nonce) == 24
            uses.setdefault(nonce, set()).add(what)
            total += 1
    reused = {
        nonce.hex(): sorted(map(repr, what))[:2] for nonce, what in uses.items() if len(what) > 1
    }
    assert reused == {}
    # Sanity: the scan saw every record of every branch, and copies were recognised as such.
    assert total > NONCE_WRITES + 2 * 20_000
    assert len(uses) < total
    # Tens of megabytes of stores: do not leave them to pytest's retention on a shared disk.
    for path in tmp_path.iterdir():
        if path.suffix in (".db", ".pdsx", ".hostkey"):
            path.unlink()


# -- 8. revocation reaches another process and survives a restart --------------------------


def test_revocation_by_another_process_is_seen_at_once(world: World) -> None:
    """Stale revocation caches: a revocation made by another process is enforced at once."""
    # Process A serves a token and caches its chain; the owner revokes in process B; A's
    # next read is refused, as is a third process's, and A's after reopening the store.
    agency, courier = pds.PrincipalKey.generate(), pds.PrincipalKey.generate()
    token = grant(world, agency, delegable=1)
    child = world.grantee(agency).delegate(token, to=courier.did)
    for key, used in ((agency, token), (courier, child)):
        for _ in range(2):  # the second read is served from the cached chain
            assert len(world.grantee(key).read(world.store, used).records) == 1
    done = subprocess.run(
        [
            sys.executable,
            str(CHILD),
            "revoke",
            str(world.db),
            str(world.key_file),
            world.vault.vault_id,
            token.link_id.hex(),
            str(world.clock.ms),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == token.link_id.hex()
    for key, used in ((agency, token), (courier, child)):
        with pytest.raises(Revoked):
            world.grantee(key).read(world.store, used)
        request = world.grantee(key).invoke(used).to_bytes()
        assert serve_in_another_process(world.db, request, world.clock.ms) == "Revoked revoked"
    statuses = {info.link_id: info.status for info in world.vault.grants()}
    assert statuses[token.link_id.hex()] == "revoked"
    world.reopen()
    for key, used in ((agency, token), (courier, child)):
        with pytest.raises(Revoked):
            world.grantee(key).read(world.store, used)


# -- 9. an unreadable revocation store denies ----------------------------------------------


def _revocation_pages(db: Path, which: str) -> tuple[int, list[int]]:
    """The page size and the root pages of the revocations table and/or its indexes."""
    con = sqlite3.connect(db)
    try:
        con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        (page_size,) = con.execute("PRAGMA page_size").fetchone()
        rows = con.execute(
            "SELECT type, rootpage FROM sqlite_master WHERE tbl_name = 'revocations'"
        ).fetchall()
    finally:
        con.close()
    wanted = {"indexes": {"index"}, "everything": {"index", "table"}}[which]
    return int(page_size), [int(page) for kind, page in rows if kind in wanted and page]


@pytest.mark.parametrize("damage", ["indexes", "everything", "column renamed"])
def test_an_unreadable_revocation_store_denies(damage: str, world: World) -> None:
    """Fail-open revocation checks (a lookup error read as "not revoked"): unreadable denies."""
    # With the revocations table's pages corrupted, or its key column renamed, the host
    # raises a ``StoreError`` (``StoreCorrupt`` for a corrupt page), never an
    # ``AccessDenied`` that reads like a policy answer, and releases nothing. (A renamed
    # table: ``test_revocation.py``.)
    agency, other = pds.PrincipalKey.generate(), pds.PrincipalKey.generate()
    token = grant(world, agency)
    world.vault.revoke(grant(world, other), reason="a row in the table")
    assert len(world.grantee(agency).read(world.store, token).records) == 1
    before = released(world)
    world.close()
    if damage == "column renamed":
        with raw(world.db) as con:
            con.execute("ALTER TABLE revocations RENAME COLUMN link_id TO revoked_link")
    else:
        page_size, pages = _revocation_pages(world.db, damage)
        assert pages
        with world.db.open("r+b") as handle:
            for page in pages:
                handle.seek((page - 1) * page_size)
                handle.write(b"\xff" * page_size)
    world.store = pds.open_store(world.db, clock=world.clock)
    world.vault = world.open_vault(world.store)
    request = world.grantee(agency).invoke(token).to_bytes()
    with pytest.raises(StoreError) as failed:
        world.store.serve(request)
    assert not isinstance(failed.value, AccessDenied)
    if damage != "column renamed":
        assert isinstance(failed.value, StoreCorrupt)
    assert released(world) == before


# -- 10. Merkle trees with duplicated leaves -----------------------------------------------


def _bitcoin_root(leaves: Sequence[bytes]) -> bytes:
    """Bitcoin's merkle root (the vulnerable shape): an odd last node is paired with
    itself at every level."""
    level = list(leaves)
    while len(level) > 1:
        if len(level) % 2:
            level.append(level[-1])
        level = [
            hashlib.sha256(hashlib.sha256(a + b).digest()).digest()
            for a, b in zip(level[::2], level[1::2], strict=True)
        ]
    return level[0]


def _bitcoin_collisions(leaves: Sequence[bytes]) -> list[list[bytes]]:
    """Longer leaf lists with the same Bitcoin root: the last 2^k leaves repeated."""
    found = []
    for k in range(len(leaves).bit_length()):
        longer = [*leaves, *leaves[-(2**k) :]]
        if _bitcoin_root(longer) == _bitcoin_root(leaves):
            found.append(longer)
    return found


@pytest.mark.parametrize("size", [3, 5, 6, 7, 9, 10, 11, 13])
def test_duplicated_subtrees_change_the_merkle_root(size: int) -> None:
    """CVE-2012-2459 (Bitcoin's duplicated Merkle leaves and subtrees): roots and proofs differ."""
    # Every list that collides with the original under Bitcoin's odd-node duplication has
    # another RFC 6962 root, and no inclusion proof from one tree verifies against the
    # other. (``[a, b, c]`` against ``[a, b, c, c]`` alone: ``test_merkle.py``.)
    leaves = [merkle.leaf_hash(f"entry {i}".encode()) for i in range(size)]
    collisions = _bitcoin_collisions(leaves)
    assert collisions, "the construction should collide under Bitcoin's rule"
    root = merkle.root(leaves)
    for longer in collisions:
        longer_root = merkle.root(longer)
        assert longer_root != root
        for index in range(size, len(longer)):
            proof = merkle.inclusion_proof(index, longer)
            merkle.verify_inclusion(longer[index], index, len(longer), proof, longer_root)
            for claimed in (size, len(longer)):
                with pytest.raises(InvalidProof):
                    merkle.verify_inclusion(longer[index], index, claimed, proof, root)
        for index in range(size):
            proof = merkle.inclusion_proof(index, leaves)
            with pytest.raises(InvalidProof):
                merkle.verify_inclusion(leaves[index], index, size, proof, longer_root)
        with pytest.raises(InvalidProof):
            merkle.verify_consistency(len(longer), len(longer), root, longer_root, [])


# -- 11. a foreign WAL beside the database -------------------------------------------------


def _integrity(store: pds.Store) -> list[str]:
    backend = store.backend
    assert isinstance(backend, SQLiteBackend)
    return backend.integrity_check()


def _store_with_records(path: Path, key_file: Path, tag: str, count: int) -> tuple[str, list[str]]:
    with pds.open_store(path) as store:
        opened = store.open_vault(store.create_vault(key_file=key_file))
        opened.unlock(key_file=key_file)
        ids = [info.record_id for info in opened.put_many("notes", [{"tag": tag}] * count)]
        store.backend.checkpoint()
        ids += [info.record_id for info in opened.put_many("notes", [{"tag": tag}] * 3)]
    return opened.vault_id, ids


def _reads(path: Path, key_file: Path, vault_id: str, ids: list[str]) -> list[str]:
    with pds.open_store(path, create=False) as store:
        opened = store.open_vault(vault_id)
        opened.unlock(key_file=key_file)
        assert _integrity(store) == ["ok"]
        return [str((opened.get(record_id).data or {})["tag"]) for record_id in ids]


@pytest.mark.parametrize(
    "foreign", ["part of another store", "all of another store", "another SQLite database"]
)
def test_a_foreign_wal_is_refused(foreign: str, tmp_path: Path) -> None:
    """Mismatched WAL (SQLite's WAL beside the wrong database): a foreign -wal never mixes data."""
    # Opening fails with StoreCorrupt before SQLite could checkpoint the foreign pages into
    # the store; the store file is unchanged, and its own data reads once the log is moved.
    key_file = tmp_path / "owner.key"
    SymmetricKey.create_file(key_file)
    ours = tmp_path / "ours" / "store.db"
    theirs = tmp_path / "theirs" / "store.db"
    ours.parent.mkdir()
    theirs.parent.mkdir()
    our_vault, our_ids = _store_with_records(ours, key_file, "ours", 50)
    assert not Path(f"{ours}-wal").exists()
    # Their WAL, as it stands while their store is open: the last writes only, or
    # (never checkpointed) the whole database.
    with pds.open_store(theirs) as other:
        opened = other.open_vault(other.create_vault(key_file=key_file))
        opened.unlock(key_file=key_file)
        opened.put_many("notes", [{"tag": "theirs"}] * 50)
        if foreign == "part of another store":
            other.backend.checkpoint()
            opened.put_many("notes", [{"tag": "theirs"}] * 3)
        if foreign != "another SQLite database":
            shutil.copy(f"{theirs}-wal", f"{ours}-wal")
    if foreign == "another SQLite database":
        with contextlib.closing(sqlite3.connect(tmp_path / "plain.db")) as plain:
            plain.execute("PRAGMA journal_mode=WAL")
            plain.execute("CREATE TABLE t (v TEXT)")
            plain.executemany("INSERT INTO t VALUES (?)", [("x" * 500,)] * 100)
            plain.commit()
            shutil.copy(tmp_path / "plain.db-wal", f"{ours}-wal")
    before = ours.read_bytes()
    with pytest.raises(StoreCorrupt, match="belongs to another database"):
        pds.open_store(ours)
    assert ours.read_bytes() == before, "the refused log was copied into the store"
    for leftover in (Path(f"{ours}-wal"), Path(f"{ours}-shm")):
        leftover.unlink(missing_ok=True)
    assert _reads(ours, key_file, our_vault, our_ids) == ["ours"] * len(our_ids)


@pytest.mark.parametrize("path", ["odd characters", "symlink"])
def test_a_foreign_wal_is_refused_whatever_the_store_path(tmp_path: Path, path: str) -> None:
    """The ownership probe opens the store by URI: '?', '#', '%' and spaces in the path
    must not make it look at another file (and so skip the check). SQLite follows a
    symlinked database name to the log beside the real file: the probe must look there
    too, or the foreign pages are replayed and checkpointed in."""
    key_file = tmp_path / "owner.key"
    SymmetricKey.create_file(key_file)
    ours = tmp_path / ("our?store #1 100%" if path == "odd characters" else "data") / "store.db"
    theirs = tmp_path / "theirs" / "store.db"
    ours.parent.mkdir()
    theirs.parent.mkdir()
    our_vault, our_ids = _store_with_records(ours, key_file, "ours", 5)
    opened_as, host_key = ours, None
    if path == "symlink":
        opened_as = tmp_path / "link.db"
        opened_as.symlink_to(ours)
        host_key = SymmetricKey.from_file(f"{ours}.hostkey")
    with pds.open_store(theirs) as other:
        opened = other.open_vault(other.create_vault(key_file=key_file))
        opened.unlock(key_file=key_file)
        opened.put_many("notes", [{"tag": "theirs"}] * 5)
        shutil.copy(f"{theirs}-wal", f"{ours}-wal")
    with pytest.raises(StoreCorrupt, match="belongs to another database"):
        pds.open_store(opened_as, host_key=host_key)
    Path(f"{ours}-wal").unlink()
    Path(f"{ours}-shm").unlink(missing_ok=True)
    # The store's own write-ahead log (another connection still open) passes the probe.
    with pds.open_store(opened_as, host_key=host_key) as first:
        first.open_vault(our_vault).unlock(key_file=key_file)
        assert Path(f"{ours}-wal").exists()
        assert _reads(ours, key_file, our_vault, our_ids) == ["ours"] * len(our_ids)


# -- 12. file descriptors 0-2 closed -------------------------------------------------------


@pytest.mark.parametrize("mode", ["stderr", "all"])
def test_closed_standard_descriptors_never_hold_the_database(mode: str, tmp_path: Path) -> None:
    """Closed-stderr corruption (a database on fd 2 overwritten by a message): never on 0-2."""
    # With fd 2 (or 0, 1 and 2) closed, no store file lands on fds 0-2 (SQLite puts
    # /dev/null there), a stray stderr write goes nowhere near the database, pds writes
    # nothing to probe files on 0 and 1, and every record reads back intact.
    key_file = tmp_path / "owner.key"
    SymmetricKey.create_file(key_file)
    db = tmp_path / "store.db"
    result = tmp_path / "result.json"
    done = subprocess.run(
        [
            sys.executable,
            str(CHILD),
            "closed-fds",
            mode,
            str(db),
            str(key_file),
            str(result),
            str(tmp_path),
        ],
        capture_output=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done
    document = json.loads(result.read_text())
    assert "error" not in document, document
    store_files = {str(db), f"{db}-wal", f"{db}-shm", f"{db}-journal", f"{db}.hostkey"}
    for step, descriptors in document["steps"].items():
        for fd, target in descriptors.items():
            assert target not in store_files, (step, fd, target)
    assert document["steps"]["written"]["2"] in ("/dev/null", "<closed>"), document
    if mode == "stderr":
        assert (tmp_path / "fd0").read_bytes() == b""
        assert (tmp_path / "fd1").read_bytes() == b""
    assert document["read"] == list(range(len(document["ids"])))
    for path in db.parent.iterdir():
        if path.name.startswith(db.name):
            assert b"STRAY-WRITE" not in path.read_bytes(), path.name
    with pds.open_store(db, create=False) as store:
        assert _integrity(store) == ["ok"]
        (info,) = store.list_vaults()
        opened = store.open_vault(info.vault_id)
        opened.unlock(key_file=key_file)
        assert [(opened.get(i).data or {})["n"] for i in document["ids"]] == document["read"]


def test_a_rolled_back_first_epoch_is_not_remembered_by_the_vault_object(world: World) -> None:
    """A write that failed after making a new collection's first epoch (the record id
    belongs to another collection) rolled the epoch back; the vault object kept its secret.
    When another object (another process) then made the real first epoch, the first one
    read the new records as tampered and sealed the wrong secret into its grants."""
    first = world.vault
    first.put("tax/2024", {"n": 1}, record_id="r1")
    with pytest.raises(FormatError):
        first.put("letters", {"x": 1}, record_id="r1")  # r1 lives in tax/2024
    assert "letters" not in first.collections()
    with pds.open_store(world.db, clock=world.clock) as other_store:
        other = other_store.open_vault(first.vault_id)
        other.unlock(key_file=world.key_file)
        other.put("letters", {"x": 2}, record_id="n1")
    assert first.get("n1").data == {"x": 2}
    agency = pds.PrincipalKey.generate()
    token = grant(world, agency, collections=["letters"])
    read = world.grantee(agency).read(world.store, token, records=["n1"])
    assert [record.data for record in read.records] == [{"x": 2}]
