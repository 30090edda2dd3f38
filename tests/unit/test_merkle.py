"""RFC 6962 hashing and proofs (issue #15) against a naive reference, for random tree sizes."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.audit.merkle import (
    EMPTY_ROOT,
    MemoryTree,
    ProofError,
    consistency_proof,
    inclusion_proof,
    leaf_hash,
    tree_hash,
    verify_consistency,
    verify_inclusion,
)


def naive_mth(entries: list[bytes]) -> bytes:
    """RFC 6962 2.1, word for word."""
    n = len(entries)
    if n == 0:
        return hashlib.sha256(b"").digest()
    if n == 1:
        return hashlib.sha256(b"\x00" + entries[0]).digest()
    k = 1
    while k * 2 < n:
        k *= 2
    return hashlib.sha256(b"\x01" + naive_mth(entries[:k]) + naive_mth(entries[k:])).digest()


def naive_path(m: int, entries: list[bytes]) -> list[bytes]:
    n = len(entries)
    if n == 1:
        return []
    k = 1
    while k * 2 < n:
        k *= 2
    if m < k:
        return [*naive_path(m, entries[:k]), naive_mth(entries[k:])]
    return [*naive_path(m - k, entries[k:]), naive_mth(entries[:k])]


def naive_subproof(m: int, entries: list[bytes], whole: bool) -> list[bytes]:
    n = len(entries)
    if m == n:
        return [] if whole else [naive_mth(entries)]
    k = 1
    while k * 2 < n:
        k *= 2
    if m <= k:
        return [*naive_subproof(m, entries[:k], whole), naive_mth(entries[k:])]
    return [*naive_subproof(m - k, entries[k:], False), naive_mth(entries[:k])]


def entries_of(n: int) -> list[bytes]:
    return [i.to_bytes(4, "big") * 8 for i in range(n)]


def test_the_empty_tree_and_known_vectors() -> None:
    assert tree_hash([]) == EMPTY_ROOT == naive_mth([])
    # RFC 6962 test vector (certificate-transparency-go): the tree of the empty leaf
    assert leaf_hash(b"").hex() == (
        "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d"
    )


@settings(max_examples=60, deadline=None)
@given(st.integers(min_value=1, max_value=300), st.data())
def test_roots_and_inclusion_proofs_match_the_reference(n: int, data: st.DataObject) -> None:
    entries = entries_of(n)
    tree = MemoryTree([leaf_hash(e) for e in entries])
    size = data.draw(st.integers(min_value=1, max_value=n))
    index = data.draw(st.integers(min_value=0, max_value=size - 1))
    root = tree.root(size)
    assert root == naive_mth(entries[:size]) == tree_hash(tree.leaves[:size])
    proof = inclusion_proof(index, size, tree)
    assert proof == naive_path(index, entries[:size])
    verify_inclusion(index, size, leaf_hash(entries[index]), proof, root)
    with pytest.raises(ProofError):
        verify_inclusion(index, size, leaf_hash(b"another entry"), proof, root)
    if proof:
        bad = list(proof)
        bad[data.draw(st.integers(min_value=0, max_value=len(bad) - 1))] = bytes(32)
        with pytest.raises(ProofError):
            verify_inclusion(index, size, leaf_hash(entries[index]), bad, root)
        with pytest.raises(ProofError):
            verify_inclusion(index, size, leaf_hash(entries[index]), proof[:-1], root)
    if size > 1:
        other = data.draw(st.integers(min_value=0, max_value=size - 1).filter(lambda i: i != index))
        with pytest.raises(ProofError):
            verify_inclusion(other, size, leaf_hash(entries[index]), proof, root)


@settings(max_examples=60, deadline=None)
@given(st.integers(min_value=1, max_value=300), st.data())
def test_consistency_proofs_match_the_reference_and_catch_forks(
    n: int, data: st.DataObject
) -> None:
    entries = entries_of(n)
    tree = MemoryTree([leaf_hash(e) for e in entries])
    old = data.draw(st.integers(min_value=1, max_value=n))
    proof = consistency_proof(old, n, tree)
    assert proof == (naive_subproof(old, entries, True) if old < n else [])
    verify_consistency(old, n, tree.root(old), tree.root(n), proof)
    # a fork: one entry at or after a random place differs in the new tree
    at = data.draw(st.integers(min_value=0, max_value=n - 1))
    forked = MemoryTree(
        [leaf_hash(e) for e in entries[:at]] + [leaf_hash(b"forged" + e) for e in entries[at:]]
    )
    fork_proof = consistency_proof(old, n, forked)
    if at < old:
        with pytest.raises(ProofError):
            verify_consistency(old, n, tree.root(old), forked.root(n), fork_proof)
    else:
        verify_consistency(old, n, tree.root(old), forked.root(n), fork_proof)


def test_consistency_refuses_a_smaller_tree_and_a_mismatched_equal_one() -> None:
    tree = MemoryTree([leaf_hash(e) for e in entries_of(10)])
    with pytest.raises(ProofError):
        verify_consistency(10, 9, tree.root(10), tree.root(9), [])
    with pytest.raises(ProofError):
        verify_consistency(10, 10, tree.root(10), tree.root(9), [])


@pytest.mark.soak
@settings(max_examples=1500, deadline=None)
@given(st.integers(min_value=1, max_value=3000), st.data())
def test_soak_proofs_for_larger_trees(n: int, data: st.DataObject) -> None:
    """``make soak``: the same properties over larger trees and many more examples."""
    tree = MemoryTree([leaf_hash(e) for e in entries_of(n)])
    old = data.draw(st.integers(min_value=1, max_value=n))
    index = data.draw(st.integers(min_value=0, max_value=n - 1))
    verify_consistency(old, n, tree.root(old), tree.root(n), consistency_proof(old, n, tree))
    proof = inclusion_proof(index, n, tree)
    verify_inclusion(index, n, tree.leaves[index], proof, tree.root())
    if n > 1:
        with pytest.raises(ProofError):
            verify_inclusion((index + 1) % n, n, tree.leaves[index], proof, tree.root())
