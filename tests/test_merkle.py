"""``pds.merkle`` against an independent, naive RFC 6962 reference (design.md promise 8).

The reference below is written from the recursive definitions in RFC 6962 §2.1 (MTH, PATH,
PROOF/SUBPROOF) and nothing else: no iteration tricks, no bit arithmetic. Verification on
the reference side is the same recursion run backwards (rebuild the root from a path by
following the definition of PATH, rebuild both roots from a consistency proof by following
SUBPROOF), so "pds accepts a proof" can be compared with "the RFC's definition accepts it".

Known answers come from the Certificate Transparency reference test data
(transparency-dev/merkle, ``testonly/constants.go`` and ``proof/verify_test.go``): the eight
leaves ``""``, ``00``, ``10``, ``2021``, ``3031``, ``40414243``, ``5051525354555657``,
``606162636465666768696a6b6c6d6e6f`` and the tree heads, subtree hashes and proofs published
for them.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pds import merkle
from pds.errors import FormatError, InvalidProof

MAX_EXHAUSTIVE = 64

# -- the naive reference (RFC 6962 §2.1, written from the text) ---------------------------


def sha256(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def ref_leaf(entry: bytes) -> bytes:
    return sha256(b"\x00" + entry)


def ref_node(left: bytes, right: bytes) -> bytes:
    return sha256(b"\x01" + left + right)


def ref_k(n: int) -> int:
    """The largest power of two smaller than ``n`` (n > 1), by counting up."""
    k = 1
    while k * 2 < n:
        k *= 2
    return k


def ref_mth(entries: Sequence[bytes]) -> bytes:
    """MTH(D[n]) over the raw entries."""
    n = len(entries)
    if n == 0:
        return sha256(b"")
    if n == 1:
        return ref_leaf(entries[0])
    k = ref_k(n)
    return ref_node(ref_mth(entries[:k]), ref_mth(entries[k:]))


def ref_path(m: int, entries: Sequence[bytes]) -> list[bytes]:
    """PATH(m, D[n])."""
    n = len(entries)
    if n == 1:
        assert m == 0
        return []
    k = ref_k(n)
    if m < k:
        return [*ref_path(m, entries[:k]), ref_mth(entries[k:])]
    return [*ref_path(m - k, entries[k:]), ref_mth(entries[:k])]


def ref_subproof(m: int, entries: Sequence[bytes], complete: bool) -> list[bytes]:
    """SUBPROOF(m, D[n], b)."""
    n = len(entries)
    if m == n:
        return [] if complete else [ref_mth(entries)]
    k = ref_k(n)
    if m <= k:
        return [*ref_subproof(m, entries[:k], complete), ref_mth(entries[k:])]
    return [*ref_subproof(m - k, entries[k:], False), ref_mth(entries[:k])]


def ref_proof(m: int, entries: Sequence[bytes]) -> list[bytes]:
    """PROOF(m, D[n]) for 0 < m <= n."""
    return ref_subproof(m, entries, True)


def ref_root_from_path(leaf: bytes, m: int, n: int, path: Sequence[bytes]) -> bytes | None:
    """The root PATH(m, D[n]) leads to, read back along the definition; None if the path
    cannot be a PATH for (m, n) (wrong length, index outside)."""
    if not 0 <= m < n:
        return None
    if n == 1:
        return leaf if not path else None
    if not path:
        return None
    k = ref_k(n)
    sibling = path[-1]
    if m < k:
        left = ref_root_from_path(leaf, m, k, path[:-1])
        return None if left is None else ref_node(left, sibling)
    right = ref_root_from_path(leaf, m - k, n - k, path[:-1])
    return None if right is None else ref_node(sibling, right)


def ref_accepts_inclusion(leaf: bytes, m: int, n: int, path: Sequence[bytes], root: bytes) -> bool:
    if any(len(node) != 32 for node in [leaf, root, *path]):
        return False
    return ref_root_from_path(leaf, m, n, path) == root


def _ref_roots_from_subproof(
    m: int, n: int, proof: Sequence[bytes], complete: bool, old_root: bytes
) -> tuple[bytes, bytes] | None:
    """(MTH of the old part, MTH of the new part) that SUBPROOF(m, D[n], b) implies."""
    if m == n:
        if complete:
            return (old_root, old_root) if not proof else None
        return (proof[0], proof[0]) if len(proof) == 1 else None
    if not proof:
        return None
    k = ref_k(n)
    last = proof[-1]
    if m <= k:
        inner = _ref_roots_from_subproof(m, k, proof[:-1], complete, old_root)
        return None if inner is None else (inner[0], ref_node(inner[1], last))
    inner = _ref_roots_from_subproof(m - k, n - k, proof[:-1], False, old_root)
    if inner is None:
        return None
    return ref_node(last, inner[0]), ref_node(last, inner[1])


def ref_accepts_consistency(
    m: int, n: int, old_root: bytes, new_root: bytes, proof: Sequence[bytes]
) -> bool:
    if any(len(node) != 32 for node in [old_root, new_root, *proof]):
        return False
    if not 0 < m <= n:
        return False
    roots = _ref_roots_from_subproof(m, n, proof, True, old_root)
    return roots == (old_root, new_root)


# -- helpers ------------------------------------------------------------------------------


def entries_for(n: int, tag: bytes = b"e") -> list[bytes]:
    return [tag + i.to_bytes(4, "big") for i in range(n)]


def pds_accepts(check: Callable[[], None]) -> bool:
    try:
        check()
    except InvalidProof:
        return False
    return True


def flip(node: bytes, bit: int) -> bytes:
    data = bytearray(node)
    data[bit // 8] ^= 1 << (bit % 8)
    return bytes(data)


def sampled_bits(n: int, index: int, position: int) -> list[int]:
    """Every bit for small trees, otherwise four spread-out bits (deterministic)."""
    if n <= 8:
        return list(range(256))
    seed = (n * 131 + index * 17 + position * 7) % 256
    return sorted({0, 255, seed, (seed * 37 + 101) % 256})


SOME_HASH = bytes.fromhex("abacaba000000000000000000000000000000000000000000060061e00123456")


@pytest.fixture(scope="module")
def trees() -> dict[int, tuple[list[bytes], list[bytes], bytes]]:
    """For each size: the raw entries, their leaf hashes and the reference root."""
    result = {}
    for n in range(1, MAX_EXHAUSTIVE + 1):
        entries = entries_for(n)
        result[n] = (entries, [ref_leaf(e) for e in entries], ref_mth(entries))
    return result


Trees = dict[int, tuple[list[bytes], list[bytes], bytes]]

# -- the reference agrees with the published Certificate Transparency data ----------------

CT_LEAVES = [
    bytes.fromhex(h)
    for h in (
        "",
        "00",
        "10",
        "2021",
        "3031",
        "40414243",
        "5051525354555657",
        "606162636465666768696a6b6c6d6e6f",
    )
]
# RootHashes() for sizes 1..8, transparency-dev/merkle testonly/constants.go.
CT_ROOTS = [
    bytes.fromhex(h)
    for h in (
        "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
        "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
        "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
        "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
        "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
        "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
        "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
    )
]
# NodeHashes(): every complete subtree, [level][index], same file.
CT_NODES = [
    [
        "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
        "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
        "0298d122906dcfc10892cb53a73992fc5b9f493ea4c9badb27b791b4127a7fe7",
        "07506a85fd9dd2f120eb694f86011e5bb4662e5c415a62917033d4a9624487e7",
        "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
        "4271a26be0d8a84f0bd54c8c302e7cb3a3b5d1fa6780a40bcce2873477dab658",
        "b08693ec2e721597130641e8211e7eedccb4c26413963eee6c1e2ed16ffb1a5f",
        "46f6ffadd3d06a09ff3c5860d2755c8b9819db7df44251788c7d8e3180de8eb1",
    ],
    [
        "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
        "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
        "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
        "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
    ],
    [
        "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
    ],
    ["5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328"],
]
_N = [[bytes.fromhex(h) for h in level] for level in CT_NODES]
# proof/verify_test.go, with its 1-based leaf numbers turned into 0-based indexes.
CT_INCLUSION = [
    (0, 8, [_N[0][1], _N[1][1], _N[2][1]]),
    (5, 8, [_N[0][4], _N[1][3], _N[2][0]]),
    (2, 3, [_N[1][0]]),
    (1, 5, [_N[0][0], _N[1][1], _N[0][4]]),
]
CT_CONSISTENCY = [
    (1, 8, [_N[0][1], _N[1][1], _N[2][1]]),
    (6, 8, [_N[1][2], _N[1][3], _N[2][0]]),
    (2, 5, [_N[1][1], _N[0][4]]),
    (6, 7, [_N[1][2], _N[0][6], _N[2][0]]),
]


def test_empty_tree_root_is_sha256_of_nothing() -> None:
    sha256_of_nothing = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    assert merkle.EMPTY_ROOT.hex() == sha256_of_nothing
    assert merkle.root([]).hex() == sha256_of_nothing
    assert ref_mth([]).hex() == sha256_of_nothing


def test_leaf_and_node_hashes_are_domain_separated_sha256() -> None:
    for entry in CT_LEAVES:
        assert merkle.leaf_hash(entry) == sha256(b"\x00" + entry)
    left, right = sha256(b"l"), sha256(b"r")
    assert merkle.node_hash(left, right) == sha256(b"\x01" + left + right)
    # A leaf over 64 bytes never equals the node over the same 64 bytes.
    assert merkle.leaf_hash(left + right) != merkle.node_hash(left, right)


@pytest.mark.parametrize("size", range(1, 9))
def test_published_ct_roots(size: int) -> None:
    leaves = [merkle.leaf_hash(e) for e in CT_LEAVES[:size]]
    assert merkle.root(leaves) == CT_ROOTS[size - 1]
    assert ref_mth(CT_LEAVES[:size]) == CT_ROOTS[size - 1]


def test_published_ct_subtree_hashes() -> None:
    leaves = [merkle.leaf_hash(e) for e in CT_LEAVES]
    for level, nodes in enumerate(_N):
        width = 1 << level
        for index, node in enumerate(nodes):
            assert merkle.root(leaves[index * width : (index + 1) * width]) == node


@pytest.mark.parametrize(("index", "size", "proof"), CT_INCLUSION)
def test_published_ct_inclusion_proofs(index: int, size: int, proof: list[bytes]) -> None:
    leaves = [merkle.leaf_hash(e) for e in CT_LEAVES[:size]]
    assert merkle.inclusion_proof(index, leaves) == proof
    merkle.verify_inclusion(leaves[index], index, size, proof, CT_ROOTS[size - 1])


@pytest.mark.parametrize(("old", "size", "proof"), CT_CONSISTENCY)
def test_published_ct_consistency_proofs(old: int, size: int, proof: list[bytes]) -> None:
    leaves = [merkle.leaf_hash(e) for e in CT_LEAVES[:size]]
    assert merkle.consistency_proof(old, leaves) == proof
    merkle.verify_consistency(old, size, CT_ROOTS[old - 1], CT_ROOTS[size - 1], proof)


# -- every size 1..64: byte-identical to the reference, and verifying ---------------------


def test_roots_match_reference_for_every_size(trees: Trees) -> None:
    for n, (_, leaves, root) in trees.items():
        assert merkle.root(leaves) == root, n


def test_inclusion_proofs_match_reference_and_verify(trees: Trees) -> None:
    for n, (entries, leaves, root) in trees.items():
        for m in range(n):
            proof = merkle.inclusion_proof(m, leaves)
            assert proof == ref_path(m, entries), (m, n)
            assert ref_accepts_inclusion(leaves[m], m, n, proof, root)
            merkle.verify_inclusion(leaves[m], m, n, proof, root)


def test_consistency_proofs_match_reference_and_verify(trees: Trees) -> None:
    for n, (entries, leaves, root) in trees.items():
        for m in range(1, n + 1):
            proof = merkle.consistency_proof(m, leaves)
            assert proof == ref_proof(m, entries), (m, n)
            old_root = trees[m][2]
            assert ref_accepts_consistency(m, n, old_root, root, proof)
            merkle.verify_consistency(m, n, old_root, root, proof)


def test_path_variants_answer_from_a_subtree_function(trees: Trees) -> None:
    """The ``*_path`` forms a store uses give the same proofs from MTH(D[start:end])."""
    calls: list[tuple[int, int]] = []
    for n in (1, 5, 13, 32, 64):
        entries = trees[n][0]

        def subtree(start: int, end: int, entries: list[bytes] = entries) -> bytes:
            calls.append((start, end))
            assert 0 <= start < end <= len(entries)
            return ref_mth(entries[start:end])

        for m in range(n):
            assert merkle.inclusion_path(m, n, subtree) == ref_path(m, entries)
        for m in range(1, n + 1):
            assert merkle.consistency_path(m, n, subtree) == ref_proof(m, entries)
    assert calls


def test_proof_generation_rejects_impossible_arguments() -> None:
    leaves = [merkle.leaf_hash(e) for e in entries_for(4)]
    for index in (-1, 4, 5, True, 1.0, "1", None):
        with pytest.raises(FormatError):
            merkle.inclusion_proof(index, leaves)  # type: ignore[arg-type]
    for old in (0, -1, 5, True, 1.0, None):
        with pytest.raises(FormatError):
            merkle.consistency_proof(old, leaves)  # type: ignore[arg-type]


def test_verification_refuses_arguments_of_the_wrong_type() -> None:
    """An auditor's call with a bool, a float, text or None for a number, or a proof that
    is not a list, is an invalid proof, never a TypeError (and True is not 1)."""
    leaves = [merkle.leaf_hash(e) for e in entries_for(4)]
    root = merkle.root(leaves)
    proof = merkle.inclusion_proof(1, leaves)
    merkle.verify_inclusion(leaves[1], 1, 4, proof, root)
    for index, size, path in ((True, 4, proof), (1, 4.0, proof), ("1", 4, proof), (1, 4, None)):
        with pytest.raises(InvalidProof):
            merkle.verify_inclusion(leaves[1], index, size, path, root)  # type: ignore[arg-type]
    old_root = merkle.root(leaves[:1])
    consistency = merkle.consistency_proof(1, leaves)
    merkle.verify_consistency(1, 4, old_root, root, consistency)
    cases: list[tuple[Any, Any, Any]] = [(True, 4, consistency), (1, None, consistency)]
    cases.append((1, 4, "ab"))
    for old, size, path in cases:
        with pytest.raises(InvalidProof):
            merkle.verify_consistency(old, size, old_root, root, path)


# -- every mutated proof fails ------------------------------------------------------------


def inclusion_mutations(
    proof: list[bytes], root: bytes, leaf: bytes
) -> list[tuple[str, list[bytes]]]:
    """Changes to the proof itself that must always fail (index and size fixed)."""
    out: list[tuple[str, list[bytes]]] = [
        ("extended with the root", [*proof, root]),
        ("extended with garbage", [*proof, SOME_HASH]),
        ("extended with an empty node", [*proof, b""]),
        ("prefixed with the root", [root, *proof]),
        ("prefixed with the leaf", [leaf, *proof]),
    ]
    if proof:
        out += [
            ("truncated at the end", proof[:-1]),
            ("truncated at the front", proof[1:]),
            ("first node repeated", [proof[0], *proof]),
            ("a node too short", [proof[0][:31], *proof[1:]]),
            ("a node too long", [proof[0] + b"\x00", *proof[1:]]),
        ]
    if len(proof) > 1:
        out += [
            ("reversed", proof[::-1]),
            ("first two swapped", [proof[1], proof[0], *proof[2:]]),
            ("garbage inserted", [proof[0], SOME_HASH, *proof[1:]]),
        ]
    return out


def test_every_mutated_inclusion_proof_fails(trees: Trees) -> None:
    checked = 0
    for n, (_, leaves, root) in trees.items():
        for m in range(n):
            leaf = leaves[m]
            proof = merkle.inclusion_proof(m, leaves)

            def accepts(
                leaf: bytes, index: int, size: int, path: Sequence[bytes], expected: bytes
            ) -> bool:
                return pds_accepts(
                    lambda: merkle.verify_inclusion(leaf, index, size, path, expected)
                )

            # Each bit of each node (sampled above size 8).
            for position, node in enumerate(proof):
                for bit in sampled_bits(n, m, position):
                    mutated = [*proof]
                    mutated[position] = flip(node, bit)
                    assert not accepts(leaf, m, n, mutated, root), (n, m, position, bit)
                    checked += 1
            for bit in sampled_bits(n, m, -1):
                assert not accepts(flip(leaf, bit), m, n, proof, root)
                assert not accepts(leaf, m, n, proof, flip(root, bit))
            for name, mutated in inclusion_mutations(proof, root, leaf):
                if mutated == proof:
                    continue
                assert not ref_accepts_inclusion(leaf, m, n, mutated, root), name
                assert not accepts(leaf, m, n, mutated, root), (n, m, name)
                checked += 1
            # Wrong roots: empty tree, another size's, garbage.
            for other in (merkle.EMPTY_ROOT, SOME_HASH, trees[n % MAX_EXHAUSTIVE + 1][2]):
                assert not accepts(leaf, m, n, proof, other)
            # Wrong index: every other position, and outside the tree.
            for other_index in [*range(n), -1, n, n + 1]:
                if other_index != m:
                    assert not accepts(leaf, other_index, n, proof, root), (n, m, other_index)
            # Wrong size: pds agrees with the RFC definition for every other size, and the
            # halved and doubled sizes (which change the path's shape) always fail.
            for other_size in range(1, 2 * n + 2):
                if other_size == n:
                    continue
                expected = ref_accepts_inclusion(leaf, m, other_size, proof, root)
                assert accepts(leaf, m, other_size, proof, root) == expected, (n, m, other_size)
            for other_size in (n * 2, n // 2, 0):
                assert not accepts(leaf, m, other_size, proof, root), (n, m, other_size)
    assert checked > 10_000


def test_every_mutated_consistency_proof_fails(trees: Trees) -> None:
    checked = 0
    for n, (_, leaves, root) in trees.items():
        for m in range(1, n + 1):
            old_root = trees[m][2]
            proof = merkle.consistency_proof(m, leaves)

            def accepts(
                old: int, size: int, first: bytes, second: bytes, path: Sequence[bytes]
            ) -> bool:
                return pds_accepts(
                    lambda: merkle.verify_consistency(old, size, first, second, path)
                )

            for position, node in enumerate(proof):
                for bit in sampled_bits(n, m, position):
                    mutated = [*proof]
                    mutated[position] = flip(node, bit)
                    assert not accepts(m, n, old_root, root, mutated), (m, n, position, bit)
                    checked += 1
            for bit in sampled_bits(n, m, -1):
                assert not accepts(m, n, flip(old_root, bit), root, proof)
                assert not accepts(m, n, old_root, flip(root, bit), proof)
            mutations: list[tuple[str, list[bytes]]] = [
                ("extended with the old root", [*proof, old_root]),
                ("extended with the new root", [*proof, root]),
                ("extended with garbage", [*proof, SOME_HASH]),
                ("prefixed with the old root", [old_root, *proof]),
                ("prefixed with garbage", [SOME_HASH, *proof]),
                ("extended with an empty node", [*proof, b""]),
            ]
            if proof:
                mutations += [
                    ("emptied", []),
                    ("truncated at the end", proof[:-1]),
                    ("truncated at the front", proof[1:]),
                    ("first node repeated", [proof[0], *proof]),
                ]
            if len(proof) > 1:
                mutations += [
                    ("reversed", proof[::-1]),
                    ("first two swapped", [proof[1], proof[0], *proof[2:]]),
                ]
            for name, mutated in mutations:
                if mutated == proof:
                    continue
                assert not ref_accepts_consistency(m, n, old_root, root, mutated), name
                assert not accepts(m, n, old_root, root, mutated), (m, n, name)
                checked += 1
            if m != n:
                assert not accepts(m, n, root, old_root, proof), "swapped roots"
                assert not accepts(m, n, merkle.EMPTY_ROOT, root, proof)
                assert not accepts(m, n, old_root, SOME_HASH, proof)
                # A larger old size can never be proved consistent with a smaller tree.
                assert not accepts(n, m, root, old_root, proof)
            # Other pairs of sizes (as in transparency-dev's corrupted probes, and more):
            # pds agrees with the RFC definition.
            for other_old in {m - 1, m + 1, m ^ 2, 1, n, n + 1}:
                for other_size in {n - 1, n, n + 1, 2 * n, n // 2}:
                    if (other_old, other_size) == (m, n) or other_old < 1 or other_size < 1:
                        continue
                    expected = ref_accepts_consistency(other_old, other_size, old_root, root, proof)
                    got = accepts(other_old, other_size, old_root, root, proof)
                    assert got == expected, (m, n, other_old, other_size)
    assert checked > 5_000


def test_degenerate_consistency_cases() -> None:
    leaves = [merkle.leaf_hash(e) for e in entries_for(5)]
    root = merkle.root(leaves)
    # Same size: equal roots and an empty proof only.
    merkle.verify_consistency(5, 5, root, root, [])
    with pytest.raises(InvalidProof):
        merkle.verify_consistency(5, 5, root, root, [root])
    with pytest.raises(InvalidProof):
        merkle.verify_consistency(5, 5, root, SOME_HASH, [])
    # From the empty tree: its root and an empty proof only.
    merkle.verify_consistency(0, 5, merkle.EMPTY_ROOT, root, [])
    with pytest.raises(InvalidProof):
        merkle.verify_consistency(0, 5, merkle.EMPTY_ROOT, root, [root])
    with pytest.raises(InvalidProof):
        merkle.verify_consistency(0, 5, SOME_HASH, root, [])
    # Shrinking is never consistent.
    with pytest.raises(InvalidProof):
        merkle.verify_consistency(6, 5, root, root, [])


def test_degenerate_inclusion_cases() -> None:
    leaf = merkle.leaf_hash(b"only")
    merkle.verify_inclusion(leaf, 0, 1, [], leaf)
    for index, size in ((0, 0), (1, 1), (-1, 1), (2, 1)):
        with pytest.raises(InvalidProof):
            merkle.verify_inclusion(leaf, index, size, [], leaf)
    with pytest.raises(InvalidProof):
        merkle.verify_inclusion(b"", 0, 1, [], leaf)
    with pytest.raises(InvalidProof):
        merkle.verify_inclusion(leaf, 0, 1, [], b"")


# -- duplicated last leaf (the CVE-2012-2459 shape) ---------------------------------------


def test_duplicated_last_leaf_changes_the_root() -> None:
    a, b, c = (merkle.leaf_hash(x) for x in (b"a", b"b", b"c"))
    three, four = [a, b, c], [a, b, c, c]
    root3, root4 = merkle.root(three), merkle.root(four)
    assert root3 != root4
    assert ref_mth([b"a", b"b", b"c"]) == root3
    assert ref_mth([b"a", b"b", b"c", b"c"]) == root4
    for source, target_root in ((three, root4), (four, root3)):
        for index, leaf in enumerate(source):
            proof = merkle.inclusion_proof(index, source)
            for size in (3, 4):
                if index < size:
                    with pytest.raises(InvalidProof):
                        merkle.verify_inclusion(leaf, index, size, proof, target_root)
    # The 3-tree is a genuine prefix of the 4-tree, so that consistency proof is valid; it
    # must not pass for a claim that the two roots are the same tree.
    merkle.verify_consistency(3, 4, root3, root4, merkle.consistency_proof(3, four))
    with pytest.raises(InvalidProof):
        merkle.verify_consistency(4, 4, root3, root4, [])
    with pytest.raises(InvalidProof):
        merkle.verify_consistency(3, 3, root3, root4, [])


# -- property tests on larger random trees ------------------------------------------------


def _tree(n: int, salt: int) -> tuple[list[bytes], list[bytes]]:
    entries = [salt.to_bytes(4, "big") + i.to_bytes(4, "big") for i in range(n)]
    return entries, [ref_leaf(e) for e in entries]


_LARGE = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@_LARGE
@given(data=st.data(), n=st.integers(min_value=65, max_value=3000), salt=st.integers(0, 2**31))
def test_large_inclusion_matches_reference(data: st.DataObject, n: int, salt: int) -> None:
    entries, leaves = _tree(n, salt)
    m = data.draw(st.integers(0, n - 1), label="index")
    root = merkle.root(leaves)
    assert root == ref_mth(entries)
    proof = merkle.inclusion_proof(m, leaves)
    assert proof == ref_path(m, entries)
    merkle.verify_inclusion(leaves[m], m, n, proof, root)
    position = data.draw(st.integers(0, len(proof) - 1), label="node")
    bit = data.draw(st.integers(0, 255), label="bit")
    mutated = [*proof]
    mutated[position] = flip(proof[position], bit)
    with pytest.raises(InvalidProof):
        merkle.verify_inclusion(leaves[m], m, n, mutated, root)
    other = data.draw(st.integers(0, n - 1).filter(lambda i: i != m), label="other index")
    with pytest.raises(InvalidProof):
        merkle.verify_inclusion(leaves[m], other, n, proof, root)
    with pytest.raises(InvalidProof):
        merkle.verify_inclusion(leaves[m], m, n, proof[:-1], root)
    with pytest.raises(InvalidProof):
        merkle.verify_inclusion(leaves[m], m, n, [*proof, root], root)


@_LARGE
@given(data=st.data(), n=st.integers(min_value=65, max_value=3000), salt=st.integers(0, 2**31))
def test_large_consistency_matches_reference(data: st.DataObject, n: int, salt: int) -> None:
    entries, leaves = _tree(n, salt)
    m = data.draw(st.integers(1, n), label="old size")
    root, old_root = merkle.root(leaves), merkle.root(leaves[:m])
    assert old_root == ref_mth(entries[:m])
    proof = merkle.consistency_proof(m, leaves)
    assert proof == ref_proof(m, entries)
    merkle.verify_consistency(m, n, old_root, root, proof)
    if not proof:
        return
    position = data.draw(st.integers(0, len(proof) - 1), label="node")
    bit = data.draw(st.integers(0, 255), label="bit")
    mutated = [*proof]
    mutated[position] = flip(proof[position], bit)
    with pytest.raises(InvalidProof):
        merkle.verify_consistency(m, n, old_root, root, mutated)
    with pytest.raises(InvalidProof):
        merkle.verify_consistency(m, n, old_root, root, proof[:-1])
    with pytest.raises(InvalidProof):
        merkle.verify_consistency(m, n, old_root, root, [*proof, root])
    # A tree that differs in one entry after the old size is still consistent; one that
    # differs before it is not.
    changed = data.draw(st.integers(0, n - 1), label="changed entry")
    forked = [*leaves]
    forked[changed] = ref_leaf(b"forked")
    forked_root = merkle.root(forked)
    if changed < m:
        with pytest.raises(InvalidProof):
            merkle.verify_consistency(
                m, n, old_root, forked_root, merkle.consistency_proof(m, forked)
            )
    else:
        merkle.verify_consistency(m, n, old_root, forked_root, merkle.consistency_proof(m, forked))
