"""Fuzz target ``checkpoint``: the C2SP checkpoint (signed tree head) decoder and verifier.

The input is a checkpoint note's text (UTF-8; undecodable bytes become lone surrogates).
One that parses must start with exactly the body it rebuilds and must round-trip. It is
verified with the world's identity key, used as a pinned head (``Vault.verify_log``), and,
re-signed with the world's identity key (as the vault's owner could), checked against the
world's log again, which reaches the size and root comparisons behind the signature.
"""

from __future__ import annotations

import contextlib

from fuzz._world import world
from fuzz.targets import fuzz_target
from pds.accesslog import Checkpoint
from pds.errors import InvalidProof, PDSError

__all__ = ["TestOneInput"]

_ORIGIN_PREFIX = "pds/vault/"


@fuzz_target
def TestOneInput(data: bytes) -> None:
    w = world()
    text = data.decode("utf-8", "surrogateescape")
    head = Checkpoint.parse(text)
    assert text.startswith(head.body + "\n"), "a checkpoint parsed from other text than its body"
    assert Checkpoint.parse(head.to_text()) == head, "a checkpoint does not round-trip"
    repr(head)
    with contextlib.suppress(InvalidProof):
        head.verify(w.identity.public)
    with contextlib.suppress(PDSError):
        w.vault.verify_log(text)
    vault_id = head.origin[len(_ORIGIN_PREFIX) :]
    resigned = Checkpoint.sign(
        w.identity, vault_id, head.size, head.root, head.time, records=head.records
    )
    assert Checkpoint.parse(resigned.to_text()) == resigned
    genuine = w.vault.latest_checkpoint()
    assert genuine is not None
    try:
        w.vault.verify_log(resigned)
    except InvalidProof:
        # Anything the log does not extend is refused; the genuine head never is.
        assert (resigned.origin, resigned.size, resigned.root) != (
            genuine.origin,
            genuine.size,
            genuine.root,
        ), "the genuine head was refused"
    else:
        assert resigned.origin == genuine.origin, "a head of another log was accepted"
        assert resigned.size <= w.vault.log_size(), "a head beyond the log was accepted"
        assert resigned.root == w.vault.log_root(resigned.size), "a head of a fork was accepted"
