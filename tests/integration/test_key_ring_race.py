"""Processes creating the key-encryption ring at the same moment (issue #12): on a fresh
``make run`` every service opens the store, and so the ring, at once; the relay died with a
``KeyRingError`` ("no active key-encryption key") while another process was writing it."""

from __future__ import annotations

import multiprocessing
from multiprocessing.synchronize import Barrier
from pathlib import Path

from services.event_store.personal_data.kek import KeyRingError, LocalKeyRing

PROCESSES = 8
ROUNDS = 5


def _open_ring(directory: str, barrier: Barrier) -> tuple[str, str, tuple[str, ...]] | str:
    barrier.wait()  # every process starts creating at the same moment
    try:
        ring = LocalKeyRing(Path(directory))
        return ring.ring_id, ring.active_id, ring.ids
    except KeyRingError as e:
        return f"KeyRingError: {e}"


def test_processes_creating_the_ring_at_once_all_succeed_with_the_same_ring(
    tmp_path: Path,
) -> None:
    context = multiprocessing.get_context("spawn")  # real, separate interpreters
    with context.Manager() as manager, context.Pool(PROCESSES) as pool:
        for round_ in range(ROUNDS):
            directory = tmp_path / f"kek-{round_}"  # empty, not even created
            barrier = manager.Barrier(PROCESSES)
            results = pool.starmap(_open_ring, [(str(directory), barrier)] * PROCESSES)
            failures = [r for r in results if isinstance(r, str)]
            assert failures == [], failures
            assert len(set(results)) == 1, results
            first = results[0]
            assert not isinstance(first, str)
            ring_id, active, ids = first
            assert ids == (active,)
            # and the ring on disk is that one: a process opening it later agrees
            later = LocalKeyRing(directory)
            assert (later.ring_id, later.active_id, later.ids) == (ring_id, active, ids)
            assert not [p.name for p in directory.iterdir() if p.name.endswith(".tmp")]
