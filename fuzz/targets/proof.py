"""Fuzz target ``proof``: Merkle inclusion and consistency proof verification (``pds.merkle``).

The input (read with ``fuzz._data.Data``) describes a tree of up to 64 known leaves, a
proof kind, sizes and indexes (small or full 64-bit, possibly negative), and a proof whose
nodes are either the genuine ones or fuzzed bytes of any length; the leaf and roots are
genuine or fuzzed too. Verification must raise ``InvalidProof`` or accept, and it may
accept only what is true: with SHA-256, a proof that leads to a genuine root is the genuine
proof, of the genuine leaf (or old root). Genuine proofs must always be accepted.
"""

from __future__ import annotations

import functools

from fuzz._data import Data
from fuzz.targets import fuzz_target
from pds import merkle
from pds.errors import InvalidProof

__all__ = ["TestOneInput"]

MAX_LEAVES = 64


@functools.cache
def _leaves() -> tuple[bytes, ...]:
    return tuple(merkle.leaf_hash(b"entry %d" % i) for i in range(MAX_LEAVES))


@functools.cache
def _root(size: int) -> bytes:
    return merkle.root(_leaves()[:size])


def _number(data: Data, small: int) -> int:
    """Mostly small numbers (within the tree), sometimes any signed 64-bit one."""
    kind = data.byte() % 4
    if kind == 0:
        return data.uint(8) - (1 << 63)
    if kind == 1:
        return data.uint(8)
    return data.byte() % (small + 2)


def _hash(data: Data, genuine: bytes | None) -> bytes:
    if genuine is not None and data.flag():
        return genuine
    size = data.byte()
    return data.take(32 if size < 200 else size % 40)


def _proof(data: Data, genuine: list[bytes]) -> list[bytes]:
    count = data.byte() % 24
    return [_hash(data, genuine[i] if i < len(genuine) else None) for i in range(count)]


def _known(size: int) -> bool:
    return 0 <= size <= MAX_LEAVES


def _inclusion(data: Data) -> None:
    index, size = _number(data, MAX_LEAVES), _number(data, MAX_LEAVES)
    in_tree = _known(size) and 0 <= index < size
    genuine = merkle.inclusion_proof(index, _leaves()[:size]) if in_tree else []
    true_leaf = _leaves()[index] if in_tree else None
    true_root = _root(size) if _known(size) else None
    if in_tree:
        assert true_leaf is not None and true_root is not None
        merkle.verify_inclusion(true_leaf, index, size, genuine, true_root)
    leaf = _hash(data, true_leaf)
    root = _hash(data, true_root)
    proof = _proof(data, genuine)
    try:
        merkle.verify_inclusion(leaf, index, size, proof, root)
    except InvalidProof:
        return
    if true_root is not None and root == true_root:
        assert in_tree, "an inclusion proof outside the tree was accepted"
        assert leaf == true_leaf, "a proof included a leaf that is not in the tree"
        assert proof == genuine, "an inclusion proof other than the genuine one was accepted"


def _consistency(data: Data) -> None:
    old_size, size = _number(data, MAX_LEAVES), _number(data, MAX_LEAVES)
    in_tree = _known(size) and 0 < old_size < size
    genuine = merkle.consistency_proof(old_size, _leaves()[:size]) if in_tree else []
    true_old = _root(old_size) if _known(old_size) else None
    true_new = _root(size) if _known(size) else None
    if in_tree:
        assert true_old is not None and true_new is not None
        merkle.verify_consistency(old_size, size, true_old, true_new, genuine)
    old_root = _hash(data, true_old)
    new_root = _hash(data, true_new)
    proof = _proof(data, genuine)
    try:
        merkle.verify_consistency(old_size, size, old_root, new_root, proof)
    except InvalidProof:
        return
    assert 0 <= old_size <= size, "a consistency proof between impossible sizes was accepted"
    if true_new is not None and new_root == true_new and true_old is not None:
        assert old_root == true_old, "a proof made another old root consistent with the tree"
        if in_tree:
            assert proof == genuine, "a consistency proof other than the genuine one accepted"


@fuzz_target
def TestOneInput(data: bytes) -> None:
    reader = Data(data)
    if reader.flag():
        _consistency(reader)
    else:
        _inclusion(reader)
