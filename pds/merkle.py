"""Merkle trees exactly as RFC 6962 / RFC 9162 §2.1 define them, for auditors and the log.

Pure functions over leaf hashes, usable standalone::

    leaf = merkle.leaf_hash(entry_bytes)                 # SHA-256(0x00 || entry)
    root = merkle.root(leaves)                           # MTH(D[n])
    proof = merkle.inclusion_proof(index, leaves)        # PATH(m, D[n])
    merkle.verify_inclusion(leaf, index, len(leaves), proof, root)   # raises InvalidProof

The ``*_path`` variants take a ``subtree(start, end)`` function returning MTH(D[start:end])
instead of the leaves, so a store can answer from the subtree hashes it keeps in
O(log n) lookups per node without rehashing the log.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence

from pds.errors import FormatError, InvalidProof

__all__ = [
    "EMPTY_ROOT",
    "consistency_path",
    "consistency_proof",
    "inclusion_path",
    "inclusion_proof",
    "leaf_hash",
    "node_hash",
    "root",
    "verify_consistency",
    "verify_inclusion",
]

Subtree = Callable[[int, int], bytes]
"""``subtree(start, end)`` is MTH(D[start:end]) for ``start < end``."""

EMPTY_ROOT = hashlib.sha256(b"").digest()
HASH_SIZE = 32


def leaf_hash(entry: bytes) -> bytes:
    """SHA-256(0x00 || entry)."""
    return hashlib.sha256(b"\x00" + entry).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """SHA-256(0x01 || left || right)."""
    return hashlib.sha256(b"\x01" + left + right).digest()


def split(size: int) -> int:
    """The largest power of two smaller than ``size`` (``size`` >= 2)."""
    return 1 << ((size - 1).bit_length() - 1)


def _list_subtree(leaves: Sequence[bytes]) -> Subtree:
    def subtree(start: int, end: int) -> bytes:
        if end - start == 1:
            return leaves[start]
        k = split(end - start)
        return node_hash(subtree(start, start + k), subtree(start + k, end))

    return subtree


def root(leaves: Sequence[bytes]) -> bytes:
    """MTH of the leaf hashes (the empty tree's root is SHA-256 of the empty string)."""
    if not leaves:
        return EMPTY_ROOT
    return _list_subtree(leaves)(0, len(leaves))


class RootBuilder:
    """MTH of a stream of leaf hashes in O(log n) memory: ``add`` leaves in order, read
    ``root()`` at any size (the stack holds the complete subtrees, largest first)."""

    def __init__(self) -> None:
        self._stack: list[tuple[int, bytes]] = []
        self.size = 0

    def add(self, leaf: bytes) -> None:
        size, node = 1, leaf
        while self._stack and self._stack[-1][0] == size:
            left_size, left = self._stack.pop()
            size, node = left_size + size, node_hash(left, node)
        self._stack.append((size, node))
        self.size += 1

    def root(self) -> bytes:
        if not self._stack:
            return EMPTY_ROOT
        node = self._stack[-1][1]
        for _, left in reversed(self._stack[:-1]):
            node = node_hash(left, node)
        return node


def inclusion_path(index: int, size: int, subtree: Subtree) -> list[bytes]:
    """PATH(index, D[size]) from a subtree function (RFC 9162 §2.1.3.1). Raises
    ``FormatError`` for an index outside the tree."""
    _check_path(index, size)
    if not 0 <= index < size:
        raise FormatError("index outside the tree")
    path: list[bytes] = []
    start, end = 0, size
    while end - start > 1:
        k = split(end - start)
        if index < start + k:
            path.append(subtree(start + k, end))
            end = start + k
        else:
            path.append(subtree(start, start + k))
            start += k
    path.reverse()
    return path


def consistency_path(old_size: int, size: int, subtree: Subtree) -> list[bytes]:
    """PROOF(old_size, D[size]) from a subtree function (RFC 9162 §2.1.4.1). Raises
    ``FormatError`` for an old size outside 1..size."""
    _check_path(old_size, size)
    if not 0 < old_size <= size:
        raise FormatError("old size must be in 1..size")
    path: list[bytes] = []

    def subproof(m: int, start: int, end: int, complete: bool) -> None:
        n = end - start
        if m == n:
            if not complete:
                path.append(subtree(start, end))
            return
        k = split(n)
        if m <= k:
            subproof(m, start, start + k, complete)
            path.append(subtree(start + k, end))
        else:
            subproof(m - k, start + k, end, False)
            path.append(subtree(start, start + k))

    subproof(old_size, 0, size, True)
    return path


def inclusion_proof(index: int, leaves: Sequence[bytes]) -> list[bytes]:
    return inclusion_path(index, len(leaves), _list_subtree(leaves))


def consistency_proof(old_size: int, leaves: Sequence[bytes]) -> list[bytes]:
    return consistency_path(old_size, len(leaves), _list_subtree(leaves))


def _check_hashes(*values: bytes) -> None:
    if any(not isinstance(v, bytes) or len(v) != HASH_SIZE for v in values):
        raise InvalidProof("hashes are 32 bytes", "proof-format")


def _check_proof(proof: Sequence[bytes], *numbers: int) -> None:
    """A proof is a list (or tuple) of hashes; indexes and sizes are integers (a bool is
    not one) below 2^63."""
    if not isinstance(proof, list | tuple):
        raise InvalidProof("a proof is a list of hashes", "proof-format")
    if any(type(n) is not int or not 0 <= n < 2**63 for n in numbers):
        raise InvalidProof("indexes and sizes are integers from 0 to 2^63 - 1", "proof-index")


def _check_path(*numbers: int) -> None:
    if any(type(n) is not int for n in numbers):
        raise FormatError("indexes and sizes are integers")


def verify_inclusion(
    leaf: bytes, index: int, size: int, proof: Sequence[bytes], expected_root: bytes
) -> None:
    """Verify an inclusion proof (RFC 9162 §2.1.3.2). Raises ``InvalidProof``."""
    _check_proof(proof, index, size)
    _check_hashes(leaf, expected_root, *proof)
    if not 0 <= index < size:
        raise InvalidProof("the index is outside the tree", "proof-index")
    fn, sn, result = index, size - 1, leaf
    for node in proof:
        if sn == 0:
            raise InvalidProof("the proof is too long", "proof-length")
        if fn & 1 or fn == sn:
            result = node_hash(node, result)
            if not fn & 1:
                while not (fn & 1 or fn == 0):
                    fn >>= 1
                    sn >>= 1
        else:
            result = node_hash(result, node)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise InvalidProof("the proof is too short", "proof-length")
    if result != expected_root:
        raise InvalidProof("the inclusion proof does not lead to the root", "proof-root")


def verify_consistency(
    old_size: int, size: int, old_root: bytes, new_root: bytes, proof: Sequence[bytes]
) -> None:
    """Verify a consistency proof (RFC 9162 §2.1.4.2). Raises ``InvalidProof``."""
    _check_proof(proof, old_size, size)
    _check_hashes(old_root, new_root, *proof)
    if not 0 <= old_size <= size:
        raise InvalidProof("the old size is larger than the new one", "proof-index")
    if old_size == size:
        if proof or old_root != new_root:
            raise InvalidProof("equal sizes need equal roots and an empty proof", "proof-root")
        return
    if old_size == 0:
        if proof or old_root != EMPTY_ROOT:
            raise InvalidProof("the empty tree needs an empty proof", "proof-root")
        return
    if not proof:
        raise InvalidProof("the proof is empty", "proof-length")
    nodes = list(proof)
    if old_size & (old_size - 1) == 0:
        nodes.insert(0, old_root)
    fn, sn = old_size - 1, size - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    first = second = nodes[0]
    for node in nodes[1:]:
        if sn == 0:
            raise InvalidProof("the proof is too long", "proof-length")
        if fn & 1 or fn == sn:
            first = node_hash(node, first)
            second = node_hash(node, second)
            if not fn & 1:
                while not (fn & 1 or fn == 0):
                    fn >>= 1
                    sn >>= 1
        else:
            second = node_hash(second, node)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise InvalidProof("the proof is too short", "proof-length")
    if first != old_root or second != new_root:
        raise InvalidProof("the consistency proof does not match the roots", "proof-root")
