"""Fuzzing tokens and invocations (promise 11 and issue 3's fuzz requirement).

Random bytes, random prefixed text, and valid tokens and invocations mutated byte-wise
(bit flips, truncation, extension, splices with other valid ones, overwrites, insertions,
deletions, repeats) go to ``Token.from_bytes``/``from_text``, ``verify_chain``,
``Invocation.parse`` and ``Store.serve``. Every failure must be a ``pds.errors.PDSError``;
no mutated token verifies and no mutated invocation is served. A last group re-signs link
payloads whose fields were replaced by arbitrary msgpack values, to reach the caveat
parser and the narrowing rules behind the signature check.

About 11,000 cases in the default run; serving is the slow part, so it gets the fewest.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import pytest
from hypothesis import HealthCheck, assume, event, given, settings
from hypothesis import strategies as st

import pds
from pds import _codec, _crypto, capability
from pds.capability import Token
from pds.errors import PDSError
from pds.invocation import Invocation

if TYPE_CHECKING:
    from tests.tokens_helpers import World, forge_invocation, make_world
else:
    from tokens_helpers import World, forge_invocation, make_world

# Nothing may hang: each test of this file gets at most 120 s (pytest-timeout).
pytestmark = pytest.mark.timeout(120)

FUZZ = settings(
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
NAMES = ["tax", "tax/a", "tax/b", "tax/a/x", "health", "other/x"]


@dataclasses.dataclass(repr=False)
class Corpus:
    world: World
    tokens: list[Token]
    holders: list[pds.PrincipalKey]
    """``holders[i]`` holds ``tokens[i]``."""
    signers: dict[bytes, _crypto.SigningKey]
    """Every key that signs links, by public key (the vault identity included)."""
    invocations: list[bytes]
    valid_tokens: set[bytes]
    """Every valid token's bytes, and those of every prefix of it (also valid chains)."""

    def __repr__(self) -> str:
        return f"Corpus({len(self.tokens)} tokens, {len(self.invocations)} invocations)"

    @property
    def token_bytes(self) -> list[bytes]:
        return [t.to_bytes() for t in self.tokens]

    def verify(self, token: Token) -> capability.Caveats:
        vault = self.world.vault
        return capability.verify_chain(
            token, vault_id=vault.vault_id, identity=_crypto.parse_did_key(vault.did)
        )


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Corpus]:
    world = make_world(tmp_path_factory.mktemp("fuzz"), synchronous="normal")
    vault = world.vault
    for collection in ("tax/a", "tax/b", "health"):
        # Sealed field by field, so field-restricted tokens can be granted and served.
        vault.create_collection(collection, seal_fields=True)
        vault.put_many(collection, [{"n": i, "text": f"{collection} {i}"} for i in range(3)])
    keys = [pds.PrincipalKey.generate() for _ in range(4)]
    root = vault.grant(
        keys[0].did,
        collections=["tax/*"],
        purpose=["p1", "p2"],
        expires=dt.timedelta(days=30),
        delegable=3,
    )
    everything = vault.grant(
        keys[3].did,
        collections=["*"],
        purpose="p1",
        expires=dt.timedelta(days=30),
        uses=1000,
        basis="law-1",
        fields=["n", "text"],
    )
    first = world.grantee(keys[0]).delegate(root, to=keys[1].did, collections=["tax/a"])
    second = world.grantee(keys[1]).delegate(first, to=keys[2].did, fields=["n"])
    tokens = [root, first, second, everything]
    holders = [keys[0], keys[1], keys[2], keys[3]]
    signers = {k.public_key: k._key for k in keys}
    identity = vault._keys().identity
    signers[identity.public] = identity
    invocations = []
    for token, holder in zip(tokens, holders, strict=True):
        grantee = world.grantee(holder)
        requests: list[dict[str, Any]] = [
            {},
            {"action": "list", "limit": 2},
            {"collection": "tax/a", "purpose": "p1"},
            {"records": ["abc", "def"], "purpose": "p1"},
            {"since": dt.datetime.fromtimestamp(1, tz=dt.UTC), "agent": "clerk 7"},
            # Well formed, not sealed by the store: refused by the host (scope:cursor).
            {"cursor": "A" * 43, "correlation": "case 42", "purpose": "p1"},
        ]
        for request in requests:
            options = dict(request)
            if len(token.leaf.caveats.purposes) > 1:
                options.setdefault("purpose", "p1")
            invocations.append(grantee.invoke(token, **options).to_bytes())
    valid = {Token(t.links[:n]).to_bytes() for t in tokens for n in range(1, len(t.links) + 1)}
    yield Corpus(world, tokens, holders, signers, invocations, valid)
    world.close()


@st.composite
def mutated(draw: st.DrawFn, originals: list[bytes], donors: list[bytes]) -> bytes:
    """A valid document changed by one to four byte-level edits."""
    data = bytearray(draw(st.sampled_from(originals), label="original"))
    for _ in range(draw(st.integers(1, 4), label="edits")):
        if not data:
            data = bytearray(b"\x00")
        size = len(data)
        op = draw(
            st.sampled_from(
                ["flip", "truncate", "extend", "splice", "overwrite", "insert", "delete", "repeat"]
            ),
            label="op",
        )
        at = draw(st.integers(0, size - 1), label="at")
        if op == "flip":
            data[at] ^= 1 << draw(st.integers(0, 7), label="bit")
        elif op == "truncate":
            data = data[:at]
        elif op == "extend":
            data += draw(st.binary(min_size=1, max_size=64), label="tail")
        elif op == "splice":
            donor = draw(st.sampled_from(donors), label="donor")
            cut = draw(st.integers(0, len(donor)), label="cut")
            data = data[:at] + donor[cut:]
        elif op == "overwrite":
            chunk = draw(st.binary(min_size=1, max_size=8), label="chunk")
            data[at : at + len(chunk)] = chunk
        elif op == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=8), label="chunk")
        elif op == "delete":
            del data[at : at + draw(st.integers(1, 8), label="length")]
        else:
            end = draw(st.integers(at, size), label="end")
            data[end:end] = data[at:end]
    return bytes(data)


def never_verifies(corpus: Corpus, data: bytes) -> None:
    """Parse and verify ``data``: only pds errors, and nothing but a valid chain verifies."""
    try:
        token = Token.from_bytes(data)
    except PDSError as refused:
        event(f"parse: {type(refused).__name__}")
        return
    try:
        corpus.verify(token)
    except PDSError as refused:
        event(f"verify: {type(refused).__name__} {getattr(refused, 'reason', '')}")
        return
    assert data in corpus.valid_tokens, "a mutated token verified"


# -- random input ---------------------------------------------------------------------


@settings(FUZZ, max_examples=2500)
@given(data=st.binary(max_size=2048))
def test_random_bytes_are_refused_with_pds_errors(corpus: Corpus, data: bytes) -> None:
    never_verifies(corpus, data)
    with contextlib.suppress(PDSError):
        Invocation.parse(data)


BASE64URL = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"


@settings(FUZZ, max_examples=2000)
@given(
    prefix=st.sampled_from(["pdst1_", "pdsi1_", "pdst1", "", "pdst2_"]),
    body=st.text(max_size=400) | st.text(alphabet=BASE64URL + "=+/ \n", max_size=600),
)
def test_random_text_is_refused_with_pds_errors(corpus: Corpus, prefix: str, body: str) -> None:
    text = prefix + body
    try:
        token = Token.from_text(text)
    except PDSError:
        pass
    else:
        never_verifies(corpus, token.to_bytes())
    with contextlib.suppress(PDSError):
        Invocation.parse(text)


# -- mutated tokens -------------------------------------------------------------------


@st.composite
def mutated_tokens(draw: st.DrawFn, corpus: Corpus) -> bytes:
    originals = corpus.token_bytes
    return draw(mutated(originals, originals + corpus.invocations))


@settings(FUZZ, max_examples=3000)
@given(data=st.data())
def test_mutated_tokens_never_verify(corpus: Corpus, data: st.DataObject) -> None:
    candidate = data.draw(mutated_tokens(corpus))
    assume(candidate not in corpus.valid_tokens)
    never_verifies(corpus, candidate)


@settings(FUZZ, max_examples=1000)
@given(data=st.data())
def test_mutated_token_texts_never_verify(corpus: Corpus, data: st.DataObject) -> None:
    original = data.draw(st.sampled_from(corpus.tokens)).to_text()
    chars = list(original)
    for _ in range(data.draw(st.integers(1, 3))):
        at = data.draw(st.integers(0, len(chars) - 1))
        op = data.draw(st.sampled_from(["replace", "delete", "insert", "truncate"]))
        new = data.draw(st.sampled_from(BASE64URL + "=+/.é \n"))
        if op == "replace":
            chars[at] = new
        elif op == "delete":
            del chars[at]
        elif op == "insert":
            chars.insert(at, new)
        else:
            del chars[at:]
        if not chars:
            break
    text = "".join(chars)
    try:
        token = Token.from_text(text)
    except PDSError:
        return
    # The text form is exact: another spelling of a valid token is not that token.
    if text != original:
        assert token.to_bytes() not in corpus.valid_tokens, text
    never_verifies(corpus, token.to_bytes())


# -- mutated invocations ----------------------------------------------------------------


@settings(FUZZ, max_examples=1500)
@given(data=st.data())
def test_mutated_invocations_parse_or_raise_pds_errors(corpus: Corpus, data: st.DataObject) -> None:
    candidate = data.draw(mutated(corpus.invocations, corpus.invocations + corpus.token_bytes))
    try:
        parsed = Invocation.parse(candidate)
    except PDSError:
        return
    # A mutation that still parses was re-encoded canonically: the bytes are what was parsed.
    assert parsed.to_bytes() == candidate


@settings(FUZZ, max_examples=1500)
@given(data=st.data())
def test_mutated_invocations_are_never_served(corpus: Corpus, data: st.DataObject) -> None:
    candidate = data.draw(mutated(corpus.invocations, corpus.invocations + corpus.token_bytes))
    assume(candidate not in corpus.invocations)
    with pytest.raises(PDSError) as refused:
        corpus.world.store.serve(candidate)
    event(f"serve: {type(refused.value).__name__} {getattr(refused.value, 'reason', '')}")


@settings(FUZZ, max_examples=1000)
@given(data=st.data())
def test_mutated_tokens_in_well_signed_invocations_are_never_served(
    corpus: Corpus, data: st.DataObject
) -> None:
    """The holder signs a correct invocation around a mutated token: the host must find the
    token itself bad."""
    index = data.draw(st.integers(0, len(corpus.tokens) - 1))
    original = corpus.tokens[index].to_bytes()
    candidate = data.draw(mutated([original], corpus.token_bytes))
    assume(candidate != original)
    try:
        token = Token.from_bytes(candidate)
    except PDSError:
        return
    holder = corpus.holders[index]
    invocation = forge_invocation(
        token, holder, purpose="p1", time_ms=corpus.world.clock.ms, action="list"
    )
    with pytest.raises(PDSError) as refused:
        corpus.world.store.serve(invocation)
    event(f"serve: {type(refused.value).__name__} {getattr(refused.value, 'reason', '')}")


# -- re-signed links with arbitrary field values ----------------------------------------


LEAVES = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=12)
    | st.binary(max_size=40)
)
VALUES = st.recursive(
    LEAVES,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=6), children, max_size=3)
    ),
    max_leaves=8,
)
PLAUSIBLE = st.sampled_from(
    [
        ["read"],
        ["list", "read"],
        ["delegate", "list", "read"],
        ["deposit"],
        ["*"],
        ["tax/*"],
        ["tax/a"],
        ["health"],
        ["tax/a", "tax/*"],
        ["n"],
        ["n", "text"],
        ["p1"],
        ["p2", "p1"],
        [None, None],
        [0, 10**13],
        [5, 5],
        0,
        1,
        2,
        3,
        10**13,
        2**63,
        b"\x00" * 32,
        b"\x00" * 16,
        "law-1",
        "law-2",
    ]
)


@settings(FUZZ, max_examples=2000)
@given(data=st.data())
def test_re_signed_links_with_arbitrary_fields(corpus: Corpus, data: st.DataObject) -> None:
    index = data.draw(st.integers(0, len(corpus.tokens) - 1))
    token = corpus.tokens[index]
    position = data.draw(st.integers(0, len(token.links) - 1))
    link = token.links[position]
    doc: dict[str, Any] = _codec.decode(link.payload)
    for _ in range(data.draw(st.integers(1, 3))):
        key = data.draw(st.sampled_from([*sorted(doc), "extra"]))
        if data.draw(st.integers(0, 9)) == 0:
            doc.pop(key, None)
        else:
            doc[key] = data.draw(PLAUSIBLE | VALUES)
    try:
        payload = _codec.encode(doc)
    except PDSError:
        return
    signer = corpus.signers[link.issuer]
    signature = signer.sign(capability.LINK_SIGNATURE_LABEL, payload)
    pairs = [[lk.payload, lk.signature] for lk in token.links[:position]]
    pairs.append([payload, signature])
    candidate = _codec.encode({"v": 1, "links": pairs})
    try:
        parsed = Token.from_bytes(candidate)
        effective = corpus.verify(parsed)
    except PDSError as refused:
        event(f"refused: {type(refused).__name__} {getattr(refused, 'reason', '')}")
        return
    event("accepted")
    # Accepted: it must be a genuine narrowing of every link before it.
    for name in NAMES:
        if capability.collection_allowed(effective.collections, name):
            assert all(
                capability.collection_allowed(lk.caveats.collections, name) for lk in parsed.links
            )
    assert all(effective.purposes <= lk.caveats.purposes for lk in parsed.links)
    assert all(effective.abilities <= lk.caveats.abilities for lk in parsed.links)
    assert all(effective.expires <= lk.caveats.expires for lk in parsed.links)
    # And the host answers it with a pds error or a response, never anything else.
    holder_key = parsed.leaf.audience
    holder = next((k for k in corpus.holders if k.public_key == holder_key), None)
    if holder is None:
        return
    invocation = forge_invocation(
        parsed,
        holder,
        purpose=sorted(effective.purposes)[0],
        time_ms=corpus.world.clock.ms,
        action=data.draw(st.sampled_from(["read", "list"])),
    )
    try:
        corpus.world.store.serve(invocation)
        event("served")
    except PDSError as refused:
        event(f"serve: {type(refused).__name__} {getattr(refused, 'reason', '')}")


# -- well-signed invocations with arbitrary arguments -----------------------------------

INT64 = st.integers(min_value=0, max_value=2**63 - 1)


@settings(FUZZ, max_examples=600)
@given(data=st.data())
def test_well_signed_invocations_with_arbitrary_arguments(
    corpus: Corpus, data: st.DataObject
) -> None:
    index = data.draw(st.integers(0, len(corpus.tokens) - 1))
    token, holder = corpus.tokens[index], corpus.holders[index]
    text = st.text(max_size=20)

    def pick(usual: st.SearchStrategy[Any], odd: st.SearchStrategy[Any]) -> Any:
        """Usually a plausible value, one time in six an odd one."""
        return data.draw(odd if data.draw(st.integers(0, 5)) == 0 else usual)

    arguments: dict[str, Any] = {
        "action": pick(st.sampled_from(["read", "list"]), st.sampled_from(["delegate", ""])),
        "purpose": pick(st.sampled_from(["p1", "p2"]), st.sampled_from(["other", ""]) | text),
        "collection": pick(st.none() | st.sampled_from(NAMES), text),
        "records": pick(st.none(), st.lists(text, max_size=3)),
        "since": pick(st.none(), INT64),
        "until": pick(st.none(), INT64),
        "limit": pick(st.integers(1, 1000), st.integers(-2, 1002)),
        "cursor": pick(
            st.none(),
            text
            | st.builds("{}.{}".format, INT64, INT64)
            | st.just("9.9.9")
            | st.text(BASE64URL, min_size=43, max_size=43),
        ),
        "time_ms": corpus.world.clock.ms
        + pick(st.integers(-1000, 1000), st.integers(-600_000, 600_000)),
        # ``None``: a fresh random nonce (a drawn one would often repeat and be refused).
        "nonce": pick(st.none(), st.binary(max_size=17)),
    }
    invocation = forge_invocation(token, holder, **arguments)
    try:
        response = corpus.world.store.serve(invocation)
    except PDSError as refused:
        event(f"serve: {type(refused).__name__} {getattr(refused, 'reason', '')}")
        return
    event("served")
    assert response.action == arguments["action"]
