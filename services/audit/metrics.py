"""Prometheus metrics of the checkpoint publisher (``cbcm_checkpoint_*``) and of a witness
(``cbcm_witness_*``), in prometheus_client's default registry (issue #12).

Each set is registered the first time a publisher or a witness runs in the process, so a
process that runs neither (the relay, a projector) does not show them. Values are positions,
counts and times: never a store's content.

Alerting: the publisher signs only when the head moved, so an idle store's last checkpoint
ages for good; a checkpoint is overdue when ``cbcm_checkpoint_age_seconds`` is large *and*
``cbcm_checkpoint_head_position > cbcm_checkpoint_position``. A witness's
``cbcm_witness_contradictions_held`` above 0 is the alarm: a rewritten history.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from functools import cache

from prometheus_client import Counter, Gauge


@dataclass
class CheckpointMetrics:
    published: Counter
    position: Gauge
    head: Gauge
    signed_at: Gauge
    last_signed: float = 0.0

    def checkpointed(self, position: int, signed_at: float) -> None:
        """The last checkpoint of the store is at ``position``, signed at ``signed_at``
        (seconds since the epoch): published now, or found in the stream on start."""
        self.position.set(position)
        self.signed_at.set(signed_at)
        self.last_signed = signed_at

    def age(self) -> float:
        """Seconds since the last checkpoint was signed (NaN: none yet)."""
        return time.time() - self.last_signed if self.last_signed else math.nan


@cache
def checkpoint_metrics() -> CheckpointMetrics:
    """The publisher's metrics (registered on first use)."""
    metrics = CheckpointMetrics(
        published=Counter(
            "cbcm_checkpoint_published", "Checkpoints this publisher signed and published"
        ),
        position=Gauge(
            "cbcm_checkpoint_position", "Event store position of the last checkpoint of the store"
        ),
        head=Gauge(
            "cbcm_checkpoint_head_position",
            "The event store's head position as the publisher last read it",
        ),
        signed_at=Gauge(
            "cbcm_checkpoint_last_signed_timestamp_seconds",
            "When the last checkpoint of the store (published, or found in the stream on "
            "start) was signed, seconds since the epoch; 0: none yet",
        ),
    )
    Gauge(
        "cbcm_checkpoint_age_seconds",
        "Seconds since the last checkpoint of the store was signed (computed at scrape); "
        "NaN: none yet",
    ).set_function(metrics.age)
    return metrics


@dataclass(frozen=True)
class WitnessMetrics:
    held: Gauge
    contradictions_held: Gauge
    contradictions: Counter
    refused: Counter


CONTRADICTION_KINDS = ("link", "head_moved_back", "inconsistent")


@cache
def witness_metrics() -> WitnessMetrics:
    """The witness's metrics (registered on first use)."""
    contradictions = Counter(
        "cbcm_witness_contradictions_seen",
        "Validly signed checkpoints this witness process saw contradict the book: another "
        "link or root at a position or size held (link), a head that moved back "
        "(head_moved_back), a tree no consistency proof links to the one held: a fork or "
        "another store (inconsistent)",
        ["kind"],
    )
    for kind in CONTRADICTION_KINDS:
        contradictions.labels(kind=kind)
    return WitnessMetrics(
        held=Gauge("cbcm_witness_checkpoints_held", "Checkpoints the witness's book holds"),
        contradictions_held=Gauge(
            "cbcm_witness_contradictions_held",
            "Contradicting checkpoints the witness's book records (never decreases)",
        ),
        contradictions=contradictions,
        refused=Counter(
            "cbcm_witness_refused",
            "Messages refused: not a checkpoint, or a signature that does not verify",
        ),
    )
