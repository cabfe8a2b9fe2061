"""Project Wycheproof vectors run through pds's own crypto wrappers (``pds._crypto``).

The files in ``tests/vectors/wycheproof/`` are unmodified upstream copies (see the README
there). Every test case of each file is a parameter here, and a count test checks that the
number of cases run equals the file's ``numberOfTests``, so a group that stops loading fails.

XChaCha20-Poly1305 (315 cases)
    ``aead_encrypt`` and ``aead_decrypt`` take the nonce from the caller, so both directions
    are checked: a valid case encrypts to exactly ``ct || tag`` and decrypts to ``msg``, both
    directly and through ``wrap``/``unwrap`` (``nonce || ct || tag``, with an injected rng
    that hands out the vector's nonce). An invalid case (modified tag) makes ``aead_decrypt``
    and ``unwrap`` raise ``AuthenticationFailed`` and return nothing. A case with a nonce that
    is not 24 bytes makes ``aead_decrypt`` raise ``AuthenticationFailed`` and
    ``aead_encrypt`` raise ``FormatError``.

Ed25519 (151 cases)
    pds signs C2SP notes with ``SigningKey.sign_raw`` and verifies them with ``verify_raw``
    (plain Ed25519 over the message); everything else goes through ``sign``/``verify`` with a
    ``label || 0x00`` prefix. The vectors are plain Ed25519, so ``verify_raw`` must accept
    each valid case and raise ``AuthenticationFailed`` for each invalid one, and the labelled
    ``verify`` must refuse every vector signature. Every public key in the file must pass
    pds's own validity check (``check_ed25519_public``) and round-trip through ``did:key``;
    a key the check refused would have to have no accepted signature. This file carries no
    private keys, so the signing check uses the four cases that are RFC 8032 section 7.1
    test vectors, with the secret seeds printed in the RFC: ``sign_raw`` must reproduce the
    vector's signature and the seed must derive the vector's public key.

"acceptable" results
    Neither file has any today. Should a future copy bring some, pds's rule is deny by
    default: an acceptable case must be refused like an invalid one. If a wrapper accepts
    one, the test fails and a person decides, rather than the suite quietly allowing it.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from pds import _crypto
from pds._crypto import AuthenticationFailed
from pds.errors import FormatError

WYCHEPROOF = Path(__file__).resolve().parent / "vectors" / "wycheproof"
XCHACHA_FILE = WYCHEPROOF / "xchacha20_poly1305_test.json"
ED25519_FILE = WYCHEPROOF / "ed25519_test.json"

# The files must stay byte-for-byte the upstream copies (README: commit ids and counts).
PINNED_SHA256 = {
    XCHACHA_FILE.name: "592f1155149b3a9828093361e3f4f481c3793e939406091ab26c59adfc843525",
    ED25519_FILE.name: "752d2ea7d7c6cf4736381b6cbacb61f8182b126ab7cd9b058f00c50084975536",
}

RESULTS = frozenset({"valid", "invalid", "acceptable"})

# Cases where a pds wrapper disagrees with Wycheproof: tcId -> reason. Each becomes a strict
# xfail, so fixing the wrapper (or the vector) turns the run red until the entry is removed.
XCHACHA_DISAGREEMENTS: dict[int, str] = {}
ED25519_DISAGREEMENTS: dict[int, str] = {}

# RFC 8032 section 7.1 secret seeds for the Wycheproof cases that reproduce its test vectors
# (the comments in the file name "draft-josefsson-eddsa-ed25519-02: Test 1/2/3/1024").
RFC8032_SEEDS: dict[int, str] = {
    80: "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60",
    81: "4ccd089b28ff96da9db6c346ec114e0f5b8a319f35aba624da8cf6ed4fb8a6fb",
    82: "c5aa8df43f9f837bedb7442f31dcb7b166d38535076f094b85ce3a2e0b4458f7",
    83: "f5e5767cf153319517630f226876b86c8160cc583bc013744c6bf255f5cc0ee5",
}


@dataclass(frozen=True, slots=True)
class AeadCase:
    tc_id: int
    comment: str
    flags: tuple[str, ...]
    key: bytes
    nonce: bytes
    aad: bytes
    msg: bytes
    ct: bytes
    tag: bytes
    result: str


@dataclass(frozen=True, slots=True)
class EddsaCase:
    tc_id: int
    comment: str
    flags: tuple[str, ...]
    public_key: bytes
    msg: bytes
    sig: bytes
    result: str


def _load(path: Path) -> dict[str, Any]:
    document: dict[str, Any] = json.loads(path.read_text("utf-8"))
    return document


def _common(test: dict[str, Any]) -> tuple[int, str, tuple[str, ...], str]:
    result = str(test["result"])
    assert result in RESULTS, f"tcId {test['tcId']}: unknown result {result!r}"
    return int(test["tcId"]), str(test["comment"]), tuple(test["flags"]), result


def _aead_cases(document: dict[str, Any]) -> list[AeadCase]:
    cases = []
    for group in document["testGroups"]:
        # A group of another type would be skipped silently by a lenient loader; refuse it so
        # the count test cannot be satisfied by accident.
        assert group["type"] == "AeadTest", group["type"]
        for test in group["tests"]:
            tc_id, comment, flags, result = _common(test)
            cases.append(
                AeadCase(
                    tc_id=tc_id,
                    comment=comment,
                    flags=flags,
                    key=bytes.fromhex(test["key"]),
                    nonce=bytes.fromhex(test["iv"]),
                    aad=bytes.fromhex(test["aad"]),
                    msg=bytes.fromhex(test["msg"]),
                    ct=bytes.fromhex(test["ct"]),
                    tag=bytes.fromhex(test["tag"]),
                    result=result,
                )
            )
    return cases


def _eddsa_cases(document: dict[str, Any]) -> list[EddsaCase]:
    cases = []
    for group in document["testGroups"]:
        assert group["type"] == "EddsaVerify", group["type"]
        assert group["publicKey"]["curve"] == "edwards25519"
        public_key = bytes.fromhex(group["publicKey"]["pk"])
        for test in group["tests"]:
            tc_id, comment, flags, result = _common(test)
            cases.append(
                EddsaCase(
                    tc_id=tc_id,
                    comment=comment,
                    flags=flags,
                    public_key=public_key,
                    msg=bytes.fromhex(test["msg"]),
                    sig=bytes.fromhex(test["sig"]),
                    result=result,
                )
            )
    return cases


XCHACHA = _load(XCHACHA_FILE)
ED25519 = _load(ED25519_FILE)
XCHACHA_CASES = _aead_cases(XCHACHA)
ED25519_CASES = _eddsa_cases(ED25519)


def _params(cases: list[AeadCase] | list[EddsaCase], disagreements: dict[int, str]) -> list[Any]:
    params = []
    for case in cases:
        marks = []
        if case.tc_id in disagreements:
            marks.append(pytest.mark.xfail(strict=True, reason=disagreements[case.tc_id]))
        label = "-".join(case.flags) or "noflag"
        params.append(
            pytest.param(case, id=f"tc{case.tc_id:03d}-{case.result}-{label}", marks=marks)
        )
    return params


def _accepted(result: str) -> bool:
    """Whether pds must accept a case with this Wycheproof result (acceptable: deny)."""
    return result == "valid"


def _fixed_rng(nonce: bytes) -> Callable[[int], bytes]:
    def rng(size: int) -> bytes:
        assert size == _crypto.NONCE_SIZE
        return nonce

    return rng


# -- the files themselves -------------------------------------------------------------


@pytest.mark.parametrize("path", [XCHACHA_FILE, ED25519_FILE], ids=lambda p: p.name)
def test_vector_file_is_the_pinned_upstream_copy(path: Path) -> None:
    assert hashlib.sha256(path.read_bytes()).hexdigest() == PINNED_SHA256[path.name]


@pytest.mark.parametrize(
    ("document", "cases", "algorithm"),
    [
        (XCHACHA, XCHACHA_CASES, "XCHACHA20-POLY1305"),
        (ED25519, ED25519_CASES, "EDDSA"),
    ],
    ids=["xchacha20-poly1305", "ed25519"],
)
def test_every_case_in_the_file_is_run(
    document: dict[str, Any], cases: list[AeadCase] | list[EddsaCase], algorithm: str
) -> None:
    assert document["algorithm"] == algorithm
    assert len(cases) == document["numberOfTests"]
    assert len({case.tc_id for case in cases}) == len(cases)


# -- XChaCha20-Poly1305 ---------------------------------------------------------------


@pytest.mark.parametrize("case", _params(XCHACHA_CASES, XCHACHA_DISAGREEMENTS))
def test_xchacha20_poly1305(case: AeadCase) -> None:
    sealed = case.ct + case.tag
    if _accepted(case.result):
        assert _crypto.aead_encrypt(case.key, case.nonce, case.msg, case.aad) == sealed
        assert _crypto.aead_decrypt(case.key, case.nonce, sealed, case.aad) == case.msg
        wrapped = _crypto.wrap(case.key, case.msg, case.aad, _fixed_rng(case.nonce))
        assert wrapped == case.nonce + sealed
        assert _crypto.unwrap(case.key, wrapped, case.aad) == case.msg
        return

    with pytest.raises(AuthenticationFailed):
        _crypto.aead_decrypt(case.key, case.nonce, sealed, case.aad)
    if len(case.nonce) == _crypto.NONCE_SIZE:
        with pytest.raises(AuthenticationFailed):
            _crypto.unwrap(case.key, case.nonce + sealed, case.aad)
    else:
        # unwrap's framing always cuts a 24-byte nonce, so a wrong-size nonce can only reach
        # the lower-level calls; no ciphertext comes back.
        assert "InvalidNonceSize" in case.flags
        with pytest.raises(FormatError):
            _crypto.aead_encrypt(case.key, case.nonce, case.msg, case.aad)


# -- Ed25519 --------------------------------------------------------------------------


@pytest.mark.parametrize("case", _params(ED25519_CASES, ED25519_DISAGREEMENTS))
def test_ed25519_verify_raw(case: EddsaCase) -> None:
    if _accepted(case.result):
        _crypto.verify_raw(case.public_key, case.msg, case.sig)
    else:
        with pytest.raises(AuthenticationFailed):
            _crypto.verify_raw(case.public_key, case.msg, case.sig)
    # Labelled signatures cover label || 0x00 || message, so no plain Ed25519 signature,
    # valid or not, may pass the labelled check (domain separation).
    with pytest.raises(AuthenticationFailed):
        _crypto.verify(case.public_key, b"wycheproof", case.msg, case.sig)


def test_ed25519_vector_keys_and_pds_key_checks_agree() -> None:
    cases_by_key: dict[bytes, list[EddsaCase]] = {}
    for case in ED25519_CASES:
        cases_by_key.setdefault(case.public_key, []).append(case)
    refused = []
    for public_key, cases in cases_by_key.items():
        try:
            _crypto.check_ed25519_public(public_key)
        except FormatError:
            refused.append(public_key)
            # A key pds refuses everywhere else must not have a signature verify_raw takes.
            for case in cases:
                with pytest.raises(AuthenticationFailed):
                    _crypto.verify_raw(case.public_key, case.msg, case.sig)
            with pytest.raises(FormatError):
                _crypto.parse_did_key(_crypto.did_key(public_key))
            continue
        assert _crypto.parse_did_key(_crypto.did_key(public_key)) == public_key
        assert len(_crypto.ed25519_to_x25519(public_key)) == _crypto.PUBLIC_KEY_SIZE
    # Every key in this file is a valid prime-order point, and every one carries at least one
    # valid signature; if a future copy adds low-order keys the branch above covers them.
    assert refused == []
    assert all(any(c.result == "valid" for c in cases) for cases in cases_by_key.values())


@pytest.mark.parametrize("tc_id", sorted(RFC8032_SEEDS))
def test_ed25519_sign_raw_reproduces_rfc8032_vectors(tc_id: int) -> None:
    (case,) = [c for c in ED25519_CASES if c.tc_id == tc_id]
    assert case.result == "valid" and "Ktv" in case.flags
    key = _crypto.SigningKey.from_seed(bytes.fromhex(RFC8032_SEEDS[tc_id]))
    assert key.public == case.public_key
    assert key.sign_raw(case.msg) == case.sig
    # The labelled signer signs a different input, so it must not produce the raw signature.
    labelled = key.sign(b"wycheproof", case.msg)
    assert labelled != case.sig
    _crypto.verify(case.public_key, b"wycheproof", case.msg, labelled)


# Not from Wycheproof (its Ed25519 file has no weak keys): the small-order points and
# non-canonical encodings of libsodium's blocklist, to show that the validity check and
# verify_raw refuse the same keys. With a small-order key, R = identity and S = 0 is the
# signature a lenient (cofactored) verifier accepts for every message.
WEAK_PUBLIC_KEYS = {
    "identity": "01" + "00" * 31,
    "order-2": "ec" + "ff" * 30 + "7f",
    "order-4": "00" * 32,
    "order-4-negated": "00" * 31 + "80",
    "order-8": "c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac037a",
    "order-8-other": "26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc05",
    "non-canonical-y=p": "ed" + "ff" * 30 + "7f",
    "non-canonical-y=p+1": "ee" + "ff" * 30 + "7f",
}
UNIVERSAL_FORGERY = bytes.fromhex("01" + "00" * 63)


@pytest.mark.parametrize("encoded", list(WEAK_PUBLIC_KEYS.values()), ids=list(WEAK_PUBLIC_KEYS))
def test_weak_ed25519_keys_are_refused_by_check_and_verify(encoded: str) -> None:
    public_key = bytes.fromhex(encoded)
    with pytest.raises(FormatError):
        _crypto.check_ed25519_public(public_key)
    with pytest.raises(FormatError):
        _crypto.ed25519_to_x25519(public_key)
    with pytest.raises(AuthenticationFailed):
        _crypto.verify_raw(public_key, b"any message", UNIVERSAL_FORGERY)


@pytest.mark.parametrize("bad", [None, 0, "x" * 64, bytearray(64), [b"\x00"] * 64])
@pytest.mark.parametrize("position", ["public", "message", "signature"])
def test_verify_fails_on_inputs_that_are_not_bytes(bad: object, position: str) -> None:
    # A decoded document may hold any type where a key or signature belongs: verification
    # fails (AuthenticationFailed) rather than raising TypeError from within.
    key = _crypto.SigningKey.from_seed(bytes(32))
    args: dict[str, object] = {
        "public": key.public,
        "message": b"message",
        "signature": key.sign(b"label", b"message"),
    }
    _crypto.verify(args["public"], b"label", args["message"], args["signature"])  # type: ignore[arg-type]
    args[position] = bad
    with pytest.raises(AuthenticationFailed):
        _crypto.verify(args["public"], b"label", args["message"], args["signature"])  # type: ignore[arg-type]
    args["signature"] = key.sign_raw(b"message") if position != "signature" else bad
    with pytest.raises(AuthenticationFailed):
        _crypto.verify_raw(args["public"], args["message"], args["signature"])  # type: ignore[arg-type]
