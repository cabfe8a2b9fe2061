"""The peer token libraries, set up for a verification of comparable power.

* biscuit-python: Ed25519 public-key tokens with Datalog. An authority block (the vault,
  rights per collection and ability, the purpose, an expiry check) plus one attenuation
  block (read only, one collection, a shorter expiry), serialized once. One verification
  parses the bytes with the root public key (checking both block signatures) and runs an
  authorizer with the request's facts, the current time and an ``allow`` policy.
* pymacaroons: HMAC-SHA256 chains with three first-party caveats (vault, operation,
  expiry). One verification deserializes and verifies with a ``Verifier`` satisfying the
  three. It needs the root secret, so it is *not* public-key verification: the row is
  reported for honesty, without a target.

A peer that fails to import (or whose API differs) raises ``PeerUnavailable``; its row is
then reported as unavailable instead of failing the run.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

__all__ = ["PeerUnavailable", "biscuit_verification", "macaroon_verification"]

_API_ERRORS = (ImportError, AttributeError, TypeError, ValueError)


class PeerUnavailable(Exception):
    """The peer library is missing or not usable here; the message says why."""


def biscuit_verification(vault_id: str) -> Callable[[], object]:
    """A function performing one cold biscuit verification (parse + authorize)."""
    try:
        # Imported here so a missing peer makes only its row unavailable.
        import biscuit_auth  # noqa: PLC0415
    except ImportError as exc:
        raise PeerUnavailable(f"biscuit-python is not installed ({exc})") from None
    try:
        return _biscuit(biscuit_auth, vault_id)
    except _API_ERRORS as exc:
        raise PeerUnavailable(f"biscuit-python API not as expected: {exc!r}") from None


def _biscuit(biscuit_auth: Any, vault_id: str) -> Callable[[], object]:
    root = biscuit_auth.KeyPair()
    public_key = root.public_key
    now = datetime.now(UTC)
    authority = biscuit_auth.BiscuitBuilder(
        """
        vault({vault});
        right({vault}, "health", "read");
        right({vault}, "health", "list");
        right({vault}, "labs", "read");
        purpose("care");
        check if time($t), $t < {expires};
        """,
        {"vault": vault_id, "expires": now + timedelta(days=30)},
    )
    token = authority.build(root.private_key)
    attenuation = biscuit_auth.BlockBuilder(
        """
        check if operation("read");
        check if collection("health");
        check if time($t), $t < {expires};
        """,
        {"expires": now + timedelta(days=7)},
    )
    data = bytes(token.append(attenuation).to_bytes())
    policy = """
        operation("read");
        collection("health");
        requested_purpose("care");
        allow if vault($v), right($v, $c, $op), collection($c), operation($op),
            requested_purpose($p), purpose($p);
    """
    builder_class = getattr(biscuit_auth, "AuthorizerBuilder", None)

    if builder_class is not None:
        # biscuit-python >= 0.4: build an authorizer for the token, then authorize. Its
        # default time limit (1 ms of Datalog) is a guard against hostile policies, and a
        # scheduling hiccup on a busy machine trips it ("Reached Datalog execution limits"):
        # a limit of one second, set per call (~0.2 us), keeps the run from failing.
        relaxed = builder_class(policy).limits()
        relaxed.max_time = timedelta(seconds=1)

        def verify() -> object:
            parsed = biscuit_auth.Biscuit.from_bytes(data, public_key)
            builder = builder_class(policy)
            builder.set_limits(relaxed)
            builder.set_time()
            return builder.build(parsed).authorize()

    else:
        # biscuit-python 0.3: the authorizer takes the token with add_token.
        def verify() -> object:
            parsed = biscuit_auth.Biscuit.from_bytes(data, public_key)
            authorizer = biscuit_auth.Authorizer(policy)
            authorizer.set_time()
            authorizer.add_token(parsed)
            return authorizer.authorize()

    verify()  # Raises if the token does not authorize: the loop must measure a success.
    return verify


def macaroon_verification(vault_id: str) -> Callable[[], object]:
    """A function performing one pymacaroons verification (deserialize + verify)."""
    try:
        import pymacaroons  # noqa: PLC0415 - imported here so a missing peer is one row
    except ImportError as exc:
        raise PeerUnavailable(f"pymacaroons is not installed ({exc})") from None
    try:
        return _macaroon(pymacaroons, vault_id)
    except _API_ERRORS as exc:
        raise PeerUnavailable(f"pymacaroons API not as expected: {exc!r}") from None


def _macaroon(pymacaroons: Any, vault_id: str) -> Callable[[], object]:
    key = os.urandom(32).hex()
    expires = (datetime.now(UTC) + timedelta(days=7)).isoformat()
    macaroon = pymacaroons.Macaroon(location="pds", identifier="grant-1", key=key)
    macaroon.add_first_party_caveat(f"vault = {vault_id}")
    macaroon.add_first_party_caveat("operation = read")
    macaroon.add_first_party_caveat(f"expires < {expires}")
    serialized = macaroon.serialize()

    def not_expired(caveat: str) -> bool:
        prefix = "expires < "
        if not caveat.startswith(prefix):
            return False
        return datetime.now(UTC) < datetime.fromisoformat(caveat[len(prefix) :])

    def verify() -> object:
        parsed = pymacaroons.Macaroon.deserialize(serialized)
        verifier = pymacaroons.Verifier()
        verifier.satisfy_exact(f"vault = {vault_id}")
        verifier.satisfy_exact("operation = read")
        verifier.satisfy_general(not_expired)
        return verifier.verify(parsed, key)

    if verify() is not True:
        raise PeerUnavailable("pymacaroons did not verify the benchmark macaroon")
    return verify
