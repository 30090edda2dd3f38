"""RFC 6962 / RFC 9162 Merkle tree hashing and proofs (issue #15).

- leaf hash: SHA-256(0x00 || entry); node hash: SHA-256(0x01 || left || right);
- the tree hash of n leaves splits at the largest power of two below n (RFC 6962 2.1);
- inclusion and consistency proofs are built as RFC 6962 2.1.1 / 2.1.2 give them (PATH and
  SUBPROOF) and checked with the algorithms of RFC 9162 2.1.3.2 and 2.1.4.2.

Proof building asks a :class:`Hashes` source for the hash of any *aligned* subtree
(``level``, ``index``: the node over leaves ``index * 2**level`` to ``(index + 1) * 2**level``),
or of the leaves ``lo..hi`` for the rightmost, unbalanced part; it never needs more than
``O(log n)`` of them. :class:`MemoryTree` is such a source over a list of leaf hashes (tests, the
checks of a bundle); ``services.audit.tree`` is one backed by the tiles stored beside the log.

Pure: no I/O.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Protocol

__all__ = [
    "EMPTY_ROOT",
    "Hashes",
    "MemoryTree",
    "ProofError",
    "consistency_proof",
    "inclusion_proof",
    "leaf_hash",
    "node_hash",
    "root_from_subtrees",
    "tree_hash",
    "verify_consistency",
    "verify_inclusion",
]

EMPTY_ROOT = hashlib.sha256(b"").digest()
"""The root of the empty tree (RFC 6962: the hash of the empty string)."""


class ProofError(ValueError):
    """A proof that does not verify, or a request for one that cannot exist."""


def leaf_hash(entry: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + entry).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def _split(n: int) -> int:
    """The largest power of two smaller than ``n`` (n >= 2)."""
    return 1 << ((n - 1).bit_length() - 1)


def tree_hash(leaves: Sequence[bytes]) -> bytes:
    """MTH over leaf hashes (already hashed with :func:`leaf_hash`)."""
    n = len(leaves)
    if n == 0:
        return EMPTY_ROOT
    level = list(leaves)
    sha256 = hashlib.sha256
    # bottom-up over perfect subtrees, then fold the right edge: the same as RFC 6962's split
    while len(level) > 1:
        nxt = [
            sha256(b"\x01" + level[i] + level[i + 1]).digest() for i in range(0, len(level) - 1, 2)
        ]
        if len(level) % 2:
            nxt.append(level[-1])
        level = nxt
    return level[0]


def root_from_subtrees(perfect: Sequence[bytes]) -> bytes:
    """The root of a tree given the hashes of its perfect subtrees left to right, largest
    first (the binary decomposition of its size): node(P1, node(P2, ... node(Pk-1, Pk)))."""
    if not perfect:
        return EMPTY_ROOT
    root = perfect[-1]
    for h in reversed(perfect[:-1]):
        root = node_hash(h, root)
    return root


class Hashes(Protocol):
    def subtree(self, lo: int, hi: int) -> bytes:
        """MTH of the leaves ``lo <= i < hi``."""
        ...


class MemoryTree:
    """Leaf hashes in memory, with every aligned perfect subtree computed once."""

    def __init__(self, leaves: Sequence[bytes]) -> None:
        self.leaves = list(leaves)
        self._levels: list[list[bytes]] = [self.leaves]
        level = self.leaves
        while len(level) > 1:
            level = [node_hash(level[i], level[i + 1]) for i in range(0, len(level) - 1, 2)]
            self._levels.append(level)

    def subtree(self, lo: int, hi: int) -> bytes:
        n = hi - lo
        if n <= 0:
            return EMPTY_ROOT
        if n & (n - 1) == 0 and lo % n == 0:
            level = n.bit_length() - 1
            return self._levels[level][lo >> level]
        k = _split(n)
        return node_hash(self.subtree(lo, lo + k), self.subtree(lo + k, hi))

    def root(self, size: int | None = None) -> bytes:
        return self.subtree(0, len(self.leaves) if size is None else size)


def inclusion_proof(index: int, size: int, hashes: Hashes) -> list[bytes]:
    """RFC 6962 PATH(index, D[0:size]), leaf to root."""
    if not 0 <= index < size:
        raise ProofError(f"leaf {index} is not in a tree of {size}")
    proof: list[bytes] = []

    def path(m: int, lo: int, hi: int) -> None:
        n = hi - lo
        if n == 1:
            return
        k = _split(n)
        if m < k:
            path(m, lo, lo + k)
            proof.append(hashes.subtree(lo + k, hi))
        else:
            path(m - k, lo + k, hi)
            proof.append(hashes.subtree(lo, lo + k))

    path(index, 0, size)
    return proof


def consistency_proof(old: int, new: int, hashes: Hashes) -> list[bytes]:
    """RFC 6962 PROOF(old, D[0:new])."""
    if not 0 <= old <= new:
        raise ProofError(f"no consistency proof from {old} to {new}")
    if old in (0, new):
        return []
    proof: list[bytes] = []

    def subproof(m: int, lo: int, hi: int, whole: bool) -> None:
        n = hi - lo
        if m == n:
            if not whole:
                proof.append(hashes.subtree(lo, hi))
            return
        k = _split(n)
        if m <= k:
            subproof(m, lo, lo + k, whole)
            proof.append(hashes.subtree(lo + k, hi))
        else:
            subproof(m - k, lo + k, hi, False)
            proof.append(hashes.subtree(lo, lo + k))

    subproof(old, 0, new, True)
    return proof


def verify_inclusion(
    index: int, size: int, leaf: bytes, proof: Sequence[bytes], root: bytes
) -> None:
    """RFC 9162 2.1.3.2; ``ProofError`` unless ``leaf`` is at ``index`` of the tree ``root``."""
    if not 0 <= index < size:
        raise ProofError(f"leaf {index} is not in a tree of {size}")
    fn, sn = index, size - 1
    r = leaf
    for p in proof:
        if sn == 0:
            raise ProofError("the inclusion proof is too long")
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            if not fn & 1:
                while fn and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise ProofError("the inclusion proof is too short")
    if r != root:
        raise ProofError(f"leaf {index} is not in the tree of size {size} with that root")


def verify_consistency(
    old: int, new: int, old_root: bytes, new_root: bytes, proof: Sequence[bytes]
) -> None:
    """RFC 9162 2.1.4.2; ``ProofError`` unless the tree ``new_root`` of ``new`` leaves extends
    the tree ``old_root`` of ``old`` leaves."""
    if old > new or old < 0:
        raise ProofError(f"a tree of {new} cannot extend one of {old}")
    if old == new:
        if proof:
            raise ProofError("a proof between equal sizes must be empty")
        if old_root != new_root:
            raise ProofError(f"two different roots for the tree of size {old}")
        return
    if old == 0:
        if proof:
            raise ProofError("a proof from the empty tree must be empty")
        return
    if not proof:
        raise ProofError("the consistency proof is empty")
    path = list(proof)
    if old & (old - 1) == 0:  # a power of two: the old root is the first node
        path.insert(0, old_root)
    fn, sn = old - 1, new - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            raise ProofError("the consistency proof is too long")
        if fn & 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            if not fn & 1:
                while fn and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise ProofError("the consistency proof is too short")
    if fr != old_root:
        raise ProofError(f"the tree of size {new} does not extend the one of size {old} held")
    if sr != new_root:
        raise ProofError(f"the consistency proof does not lead to the root of size {new}")
