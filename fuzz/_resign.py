"""Repairing the signatures of mutated inputs, so the fuzzer reaches the checks behind them.

A mutated token fails at its first signature; everything after it (narrowing, scope, the
host's request checks) would stay out of reach. The targets therefore also re-sign what
they can with the world's keys: a link whose issuer is a world key gets a fresh signature
and the id of its (possibly changed) parent. This is what a holder of those keys could
produce, so a finding reachable only this way needs the key it used; the target says so.
"""

from __future__ import annotations

from pds import _codec, _crypto, capability
from pds.capability import Link, Token

__all__ = ["resign_token"]


def resign_token(token: Token, signers: dict[bytes, _crypto.SigningKey]) -> Token:
    """``token`` with each link's parent id set to its previous link's id, its issuer set to
    the previous link's audience (when that is a world key), and signed by its issuer where
    the issuer is a world key. Links signed by other keys are kept as they are."""
    links: list[Link] = []
    previous: Link | None = None
    for link in token.links:
        payload = link.payload
        if previous is not None:
            document = _codec.decode(payload)
            document["parent"] = previous.link_id
            if previous.audience in signers:
                document["iss"] = previous.audience
            payload = _codec.encode(document)
        issuer = _codec.decode(payload)["iss"]
        signer = signers.get(issuer) if isinstance(issuer, bytes) else None
        signature = (
            link.signature
            if signer is None
            else signer.sign(capability.LINK_SIGNATURE_LABEL, payload)
        )
        repaired = capability._parse_link(payload, signature)
        links.append(repaired)
        previous = repaired
    return Token(tuple(links))
