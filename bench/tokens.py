"""Cold token verification: chains of 1, 3 and 8 links plus the invocation, against raw
Ed25519 verification, and against the peer token libraries.

One cold verification is what the host does for a token it has not seen, with no cache:
parse the invocation bytes strictly (which parses the token), ``verify_chain`` (every
link's signature, chain structure and narrowing), ``check_times``, and the invocation's
holder signature. The baseline is PyNaCl's ``crypto_sign_open`` run once per link plus
once for the invocation, on the very messages pds verifies (prepared outside the loop).
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import msgpack
import nacl.bindings

import pds
from bench.config import Config
from bench.fixtures import OwnerVault, documents, open_owner_vault
from bench.measure import Figure, Target, interleaved, rate_figure, seconds_per_call
from bench.peers import PeerUnavailable, biscuit_verification, macaroon_verification
from pds import capability
from pds._serve import max_lifetime_ms
from pds.capability import LINK_ID_LABEL, LINK_SIGNATURE_LABEL
from pds.invocation import INVOCATION_SIGNATURE_LABEL, Invocation

__all__ = ["CHAIN_LENGTHS", "FIGURES", "Chain", "build_chains", "run"]

CHAIN_LENGTHS = (1, 3, 8)
FIGURES = ("verify_1", "verify_1_floor", "verify_3", "verify_8", "vs_biscuit", "vs_pymacaroons")


@dataclass(frozen=True, slots=True)
class Chain:
    """A token of ``links`` links, its holder, and a signed invocation of it."""

    links: int
    token: pds.Token
    holder: pds.Grantee
    invocation: bytes


def build_chains(owner: OwnerVault, record_id: str, longest: int) -> list[Chain]:
    """A root grant delegated down to ``longest`` links (``Grantee.delegate``), each with
    an invocation reading ``record_id`` signed by that link's holder."""
    holders = [pds.Grantee(pds.PrincipalKey.generate()) for _ in range(longest)]
    token = owner.vault.grant(
        holders[0].did,
        collections=["health"],
        purpose="care",
        expires=timedelta(days=30),
        delegable=longest - 1,
    )
    chains = []
    for index, holder in enumerate(holders):
        if index:
            token = holders[index - 1].delegate(token, to=holder.did)
        invocation = holder.invoke(token, records=[record_id]).to_bytes()
        chains.append(Chain(index + 1, token, holder, invocation))
    return chains


def cold_verifier(store: pds.Store, vault_id: str) -> _ColdVerifier:
    row = store.backend.get_vault(vault_id)
    if row is None:
        raise RuntimeError("the benchmark vault is missing")
    return _ColdVerifier(vault_id, row.identity_public, max_lifetime_ms(row))


@dataclass(frozen=True, slots=True)
class _ColdVerifier:
    vault_id: str
    identity: bytes
    max_lifetime_ms: int

    def __call__(self, data: bytes) -> None:
        invocation = Invocation.parse(data)
        token = invocation.token
        capability.verify_chain(
            token,
            vault_id=self.vault_id,
            identity=self.identity,
            max_lifetime_ms=self.max_lifetime_ms,
        )
        capability.check_times(token, int(time.time() * 1000))
        invocation.verify_holder()


def signed_messages(chain: Chain) -> list[tuple[bytes, bytes]]:
    """``(signature || signed input, public key)`` for every Ed25519 check pds makes:
    one per link and one for the invocation."""
    invocation = Invocation.parse(chain.invocation)
    messages = [
        (
            link.signature + capability.LINK_SIGNATURE_LABEL + b"\x00" + link.payload,
            link.issuer,
        )
        for link in invocation.token.links
    ]
    messages.append(
        (
            invocation.signature + INVOCATION_SIGNATURE_LABEL + b"\x00" + invocation.body,
            invocation.token.leaf.audience,
        )
    )
    for signed, public in messages:
        # The baseline must verify exactly what pds verifies: check it once here.
        nacl.bindings.crypto_sign_open(signed, public)
    return messages


def raw_verify(messages: list[tuple[bytes, bytes]]) -> None:
    for signed, public in messages:
        nacl.bindings.crypto_sign_open(signed, public)


def _canonical_document(data: bytes) -> Any:
    """msgpack's C decoder, then the re-encode comparison that proves the bytes canonical
    (without it, two encodings of one link would have two link ids)."""
    value = msgpack.unpackb(data, raw=False, strict_map_key=True)
    if msgpack.packb(value, use_bin_type=True) != data:
        raise RuntimeError("the floor was given non-canonical bytes")
    return value


def floor_verify(data: bytes) -> None:
    """What the token and invocation formats (docs/spec/token.md) make any verifier do,
    with bare primitives and no rule checked: decode the invocation, its body, the token
    and each link payload canonically, hash each payload into its link id, and verify each
    link's signature and the invocation's over their labelled inputs. A lower bound for
    ``verify_*``: the parsers' rules (types, ranges, narrowing, times) come on top."""
    outer = _canonical_document(data)
    body = _canonical_document(outer["body"])
    token = _canonical_document(body["token"])
    for payload, signature in token["links"]:
        link = _canonical_document(payload)
        hashlib.sha256(LINK_ID_LABEL + payload).digest()
        nacl.bindings.crypto_sign_open(
            signature + LINK_SIGNATURE_LABEL + b"\x00" + payload, link["iss"]
        )
    nacl.bindings.crypto_sign_open(
        outer["sig"] + INVOCATION_SIGNATURE_LABEL + b"\x00" + outer["body"], link["aud"]
    )


def run(config: Config, workdir: Path, only: frozenset[str]) -> list[Figure]:
    owner = open_owner_vault(workdir)
    try:
        record_id = owner.vault.put_many("health", documents(3))[0].record_id
        chains = build_chains(owner, record_id, max(CHAIN_LENGTHS))
        verify = cold_verifier(owner.store, owner.vault_id)
        by_length = {chain.links: chain for chain in chains if chain.links in CHAIN_LENGTHS}
        calls = config.verify_calls
        measures = []
        for length in CHAIN_LENGTHS:
            data = by_length[length].invocation
            messages = signed_messages(by_length[length])
            verify(data)
            measures.append(lambda data=data: seconds_per_call(lambda: verify(data), calls))
            measures.append(
                lambda messages=messages: seconds_per_call(lambda: raw_verify(messages), calls)
            )
        one = by_length[1].invocation
        floor_verify(one)
        floor_index = len(measures)
        measures.append(lambda one=one: seconds_per_call(lambda: floor_verify(one), calls))
        # Where each peer's samples are, or why the peer is unavailable.
        peers: dict[str, int | str] = {}
        for name, factory in (
            ("biscuit", biscuit_verification),
            ("pymacaroons", macaroon_verification),
        ):
            try:
                peer = factory(owner.vault_id)
            except PeerUnavailable as exc:
                peers[name] = str(exc)
                continue
            peers[name] = len(measures)
            measures.append(lambda peer=peer: seconds_per_call(peer, calls))
        samples = interleaved(config.repeats, *measures)
    finally:
        owner.close()

    figures = []
    for index, length in enumerate(CHAIN_LENGTHS):
        checks = length + 1
        figures.append(
            rate_figure(
                name=f"verify_{length}",
                title=f"cold verification, {length}-link chain + invocation",
                pds_seconds=samples[2 * index],
                baseline_seconds=samples[2 * index + 1],
                baseline_label=f"raw PyNaCl Ed25519 verify x {checks}",
                target=Target(">=", 0.85),
                unit="verifications/s",
                details={
                    "calls_per_repeat": calls,
                    "invocation_bytes": len(by_length[length].invocation),
                    "ed25519_checks": checks,
                },
            )
        )
    figures.append(
        rate_figure(
            name="verify_1_floor",
            title="verify_1's floor: the formats' decoding, hashing and signatures, no rules",
            pds_seconds=samples[floor_index],
            baseline_seconds=samples[1],
            baseline_label="raw PyNaCl Ed25519 verify x 2",
            target=None,
            unit="verifications/s",
            note=(
                "the invocation, body, token and link decoded canonically by msgpack, the "
                "link id hashed, both signatures checked on their labelled inputs; no "
                "type, range, narrowing or time rule"
            ),
            details={"calls_per_repeat": calls},
        )
    )
    pds_one = samples[0]
    figures.append(
        _peer_figure(
            "vs_biscuit",
            "cold verification vs biscuit-python (1 link + invocation)",
            peers["biscuit"],
            samples,
            pds_one,
            baseline_label="biscuit: authority + 1 attenuation block, parse + authorize",
            target=Target(">=", 1.3),
            note="both verify two Ed25519 signatures (biscuit: two blocks; pds: link and "
            "invocation) and check scope and time",
            calls=calls,
        )
    )
    figures.append(
        _peer_figure(
            "vs_pymacaroons",
            "cold verification vs pymacaroons (1 link + invocation)",
            peers["pymacaroons"],
            samples,
            pds_one,
            baseline_label="pymacaroons: 3 first-party caveats, deserialize + verify",
            target=None,
            note="pymacaroons is HMAC-SHA256 with a shared root secret: no public-key "
            "verification, so the verifier can also mint tokens; reported without a target",
            calls=calls,
        )
    )
    return [figure for figure in figures if figure.name in only]


def _peer_figure(
    name: str,
    title: str,
    peer: int | str,
    samples: list[list[float]],
    pds_one: list[float],
    *,
    baseline_label: str,
    target: Target | None,
    note: str,
    calls: int,
) -> Figure:
    if isinstance(peer, str):
        return Figure.unavailable_row(name, title, peer, target=target, note=note)
    return rate_figure(
        name=name,
        title=title,
        pds_seconds=pds_one,
        baseline_seconds=samples[peer],
        baseline_label=baseline_label,
        target=target,
        unit="verifications/s",
        note=note,
        details={"calls_per_repeat": calls},
    )
