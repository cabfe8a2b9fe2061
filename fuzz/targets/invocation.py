"""Fuzz target ``invocation``: the invocation decoder, and the host behind it.

The input is an invocation's bytes, or its text form when it starts with ``pdsi1_``. One
that parses must be exactly its canonical serialisation. Then, as its holder would, the
target repairs it with the world's keys (the token chain re-signed, a fresh nonce so the
host's replay check does not stop every mutation, the body signed by the token's final
audience) and has a host serve it (``Store.serve``, which verifies, logs and releases);
a served response is opened by the holder (``Grantee.open``). Each step may refuse with a
``PDSError``; nothing else may escape.
"""

from __future__ import annotations

import hashlib
import itertools

from fuzz._resign import resign_token
from fuzz._world import world
from fuzz.targets import fuzz_target
from pds import _codec
from pds.errors import PDSError
from pds.invocation import INVOCATION_SIGNATURE_LABEL, Invocation, wire

__all__ = ["TestOneInput"]

_nonces = itertools.count()


def _serve(invocation: Invocation) -> None:
    w = world("serve")
    token = resign_token(invocation.token, w.signers)
    document = _codec.decode(invocation.body)
    document["token"] = token.to_bytes()
    if len(invocation.nonce) == 16:
        counter = next(_nonces).to_bytes(8, "big")
        document["nonce"] = hashlib.sha256(b"nonce" + counter).digest()[:16]
    body = _codec.encode(document)
    signer = w.signers.get(token.leaf.audience)
    signature = (
        invocation.signature if signer is None else signer.sign(INVOCATION_SIGNATURE_LABEL, body)
    )
    request = Invocation.parse(wire(body, signature))
    response = w.store.serve(request.to_bytes())
    assert response.request_id == request.request_id, "a response answers another request"
    assert response.vault_id == request.vault_id, "a response from another vault"
    grantee = w.grantee(token.leaf.audience)
    assert grantee is not None, "served an invocation not signed by the token's holder"
    grantee.open(token, response.to_bytes(), invocation=request)


@fuzz_target
def TestOneInput(data: bytes) -> None:
    if data.startswith(b"pdsi1_"):
        text = data.decode("utf-8", "surrogateescape")
        invocation = Invocation.parse(text)
        assert invocation.to_text() == text, "an invocation's text parsed but is not canonical"
    else:
        invocation = Invocation.parse(data)
        assert invocation.to_bytes() == data, "invocation bytes parsed but are not canonical"
    assert Invocation.parse(invocation.to_bytes()) == invocation, "no round trip"
    repr(invocation)
    try:
        _serve(invocation)
    except PDSError:
        return
