"""The witness's rules (issue #15) under random sequences: appends checkpointed with their
consistency proofs are kept and cosigned; forks (a rival tree that differs somewhere before the
size held), cut-off tails and replays of another log are alarms, never kept, never cosigned;
whatever comes, the tree held is always the genuine log's latest checkpoint."""

from __future__ import annotations

import tempfile
from datetime import UTC, datetime
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st

from contracts.audit import AuditCheckpointV1
from services.audit.checkpoints import TreeHead, sign_checkpoint
from services.audit.keys import LogIdentity
from services.audit.merkle import MemoryTree, consistency_proof, leaf_hash
from services.audit.note import COSIGNATURE_TYPE, Verifier, check_cosignature, parse_note
from services.audit.witness import ALARMS, Cosigner, Outcome, WitnessBook
from services.event_store.chain import ChainRow

ORIGIN = "cbcm.test/log/rules"
KEY = Ed25519PrivateKey.generate()
WITNESS = Cosigner("w.witness.cbcm.invalid", Ed25519PrivateKey.generate())
LOG = LogIdentity(ORIGIN, KEY.public_key())

step = st.one_of(
    st.tuples(st.just("append"), st.integers(min_value=1, max_value=40)),
    st.tuples(st.just("fork"), st.integers(min_value=1, max_value=40)),
    st.tuples(st.just("cut"), st.integers(min_value=1, max_value=10)),
    st.tuples(st.just("other_log"), st.integers(min_value=1, max_value=5)),
)


def checkpoint(
    tree: MemoryTree, size: int, previous: int, origin: str = ORIGIN
) -> AuditCheckpointV1:
    proof = tuple(consistency_proof(previous, size, tree)) if 0 < previous <= size else ()
    head = TreeHead(origin, size, tree.root(size), previous, proof)
    row = ChainRow(size, size - 1, tree.root(size))  # the chain part: not what is judged here
    return sign_checkpoint(KEY, "0123456789abcdef", row, datetime.now(UTC), head)


@settings(max_examples=40, deadline=None)
@given(st.lists(step, min_size=1, max_size=12), st.randoms(use_true_random=False))
def test_random_appends_and_forks(steps: list[tuple[str, int]], rng: object) -> None:
    leaves = [leaf_hash(b"genesis")]
    held = 0
    with tempfile.TemporaryDirectory() as tmp, WitnessBook.open(Path(tmp) / "b.sqlite3") as book:
        first = checkpoint(MemoryTree(leaves), 1, 0)
        assert book.record([first], log=LOG, cosigner=WITNESS) == [(Outcome.RECORDED, None)]
        held = 1
        raised = 0
        for kind, n in steps:
            if kind == "append":
                leaves += [leaf_hash(f"{len(leaves) + i}".encode()) for i in range(n)]
                cp = checkpoint(MemoryTree(leaves), len(leaves), held)
                [(outcome, _)] = book.record([cp], log=LOG, cosigner=WITNESS)
                assert outcome is Outcome.RECORDED
                held = len(leaves)
                continue
            if kind == "fork":
                at = rng.randrange(held)  # type: ignore[attr-defined]
                rival = [*leaves[:at], leaf_hash(b"forged"), *leaves[at + 1 :]]
                rival += [leaf_hash(f"r{i}".encode()) for i in range(n)]
                cp = checkpoint(MemoryTree(rival), len(rival), held)
            elif kind == "cut":
                size = max(1, held - n)
                cp = checkpoint(MemoryTree(leaves), size, 0)
                if size == held:
                    continue
            else:
                cp = checkpoint(MemoryTree(leaves), len(leaves), held, origin="cbcm.test/other")
            [(outcome, _)] = book.record([cp], log=LOG, cosigner=WITNESS)
            assert outcome in ALARMS or outcome is Outcome.UNPROVABLE, (kind, outcome)
            raised += 1
        latest = book.tree_head(ORIGIN)
        assert latest is not None
        assert (latest.size, latest.root) == (held, MemoryTree(leaves).root(held))
        text, signatures = parse_note(latest.note)
        cosigner = Verifier(WITNESS.name, COSIGNATURE_TYPE, WITNESS.key.public_key())
        assert any(check_cosignature(text, s, cosigner) for s in signatures)
        assert len({(a["kind"], a["size"], a["held_size"]) for a in book.alarms()}) <= raised
        assert bool(book.alarms()) == bool(raised)


def test_the_networks_own_witness_and_one_that_can_read_the_key_are_not_independent(
    tmp_path: Path,
) -> None:
    from services.audit.keys import load_signing_key  # noqa: PLC0415
    from services.audit.witness import is_independent  # noqa: PLC0415
    from services.settings import Settings  # noqa: PLC0415

    elsewhere = Settings(data_dir=tmp_path / "agency-data")
    assert is_independent(elsewhere, "unicef")
    assert not is_independent(elsewhere, "local")  # the network's own (cbcm serve)
    beside = Settings(data_dir=tmp_path / "network-data")
    load_signing_key(beside)  # the log's key in its data dir, readable by this process
    assert not is_independent(beside, "unicef")


@pytest.mark.soak
@settings(max_examples=400, deadline=None)
@given(st.lists(step, min_size=1, max_size=30), st.randoms(use_true_random=False))
def test_soak_random_appends_and_forks(steps: list[tuple[str, int]], rng: object) -> None:
    """``make soak``: longer sequences, many more of them."""
    test_random_appends_and_forks.hypothesis.inner_test(steps, rng)  # type: ignore[attr-defined]
