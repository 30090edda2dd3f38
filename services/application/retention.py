"""Retention: personal data is kept only as long as network policy says (``cbcm retention run``).

A forwarded feedback item is kept by its own loop's retention (the concerned agency may still
be answering it), not erased with its case.

A closed case whose closure is older than the policy's ``personal_data_retention`` has the
personal data of everyone in it erased (crypto-shredded: the data keys are destroyed, the log
is never rewritten), and so does community feedback whose loop was closed that long ago. A
case reopened since is kept until it is closed again and that closure is as old. Running it
twice erases nothing the second time.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from uuid import UUID

from eventsourcing.utils import get_topic

from domain.actors import Actor, Role
from domain.case import Case
from domain.errors import DomainError
from domain.feedback import Feedback
from domain.personal_data import DataSubject
from domain.vocabulary import ErasureReason
from services.application.commands import expecting
from services.application.mechanism import ComplaintMechanism

RETENTION_ACTOR = Actor("cbcm-retention", "network", Role.COORDINATOR)
"""Who applies the policy: the network itself, in the coordinator's role."""

EVERYONE = tuple(DataSubject)
CLOCK_SKEW = timedelta(minutes=5)


@dataclass
class RetentionReport:
    """What one run erased (identifiers only, never values)."""

    at: datetime
    retention_days: float
    cases: list[UUID] = field(default_factory=list)
    records: int = 0
    """Other records of those cases whose keys went with them (referrals, grants...)."""
    feedback: list[UUID] = field(default_factory=list)
    refused: list[tuple[UUID, str]] = field(default_factory=list)
    """Due ones the domain refused, with its reason (nothing is erased silently or not)."""
    last_position: int = 0

    @property
    def erased(self) -> int:
        return len(self.cases) + len(self.feedback)


def _stored(app: ComplaintMechanism, topics: list[str]) -> Iterator[tuple[UUID, str]]:
    start = 1
    while True:
        batch = app.recorder.select_notifications(start=start, limit=1000, topics=topics)
        if not batch:
            return
        for n in batch:
            yield UUID(str(n.originator_id)), n.topic
        start = batch[-1].id + 1


def due_cases(app: ComplaintMechanism) -> list[UUID]:
    """Cases whose last step among closure, reopening and a full erasure is a closure (only
    those can be due; the domain checks the date)."""
    closed, reopened, erased = (
        get_topic(Case.Closed),
        get_topic(Case.Reopened),
        get_topic(Case.PersonalDataErased),
    )
    last: dict[UUID, str] = {}
    for case_id, topic in _stored(app, [closed, reopened, erased]):
        last[case_id] = topic
    return [case_id for case_id, topic in last.items() if topic in (closed, erased)]


def _due_feedback(app: ComplaintMechanism) -> list[UUID]:
    closed, erased = get_topic(Feedback.LoopClosed), get_topic(Feedback.PersonalDataErased)
    last: dict[UUID, str] = {}
    for feedback_id, topic in _stored(app, [closed, erased]):
        last[feedback_id] = topic
    return [f for f, topic in last.items() if topic == closed]


def run_retention(
    app: ComplaintMechanism, *, at: datetime, dry_run: bool = False, actor: Actor = RETENTION_ACTOR
) -> RetentionReport:
    """Erase what the policy no longer lets the network keep, as of ``at`` (now: only a dry
    run may look ahead, an erasure stamped in the future would freeze the case until then)."""
    if not dry_run and at > datetime.now(UTC) + CLOCK_SKEW:
        raise ValueError("retention erases as of now; only a dry run may look ahead")
    policy = app.network().policy
    retention = policy.personal_data_retention
    report = RetentionReport(at=at, retention_days=retention.total_seconds() / 86400)
    for case_id in due_cases(app):
        case = app.get_case(case_id)
        if case.closure is None or case.closure.closed_at + retention > at:
            continue
        if not app.has_live_personal_data((case_id, *app.records_of(case))):
            continue  # erased already (a record added since has a live key: due again)
        if dry_run:
            report.cases.append(case_id)
            continue
        try:
            written = app.erase_personal_data(
                expecting(case_id, case.version),
                actor=actor,
                subjects=EVERYONE,
                reason=ErasureReason.RETENTION_EXPIRED,
                at=max(at, case.modified_on),
            )
        except DomainError as e:
            report.refused.append((case_id, type(e).__name__))
            continue
        report.cases.append(case_id)
        erased = app.get_case(case_id)
        report.records += len(_last_erasure(app, erased).records)
        report.last_position = max(report.last_position, written.position)
    for feedback_id in _due_feedback(app):
        feedback = app.get_feedback(feedback_id)
        if not app.has_live_personal_data((feedback_id,)):
            continue
        assert feedback.loop_closed_at is not None
        if feedback.loop_closed_at + retention > at:
            continue
        if dry_run:
            report.feedback.append(feedback_id)
            continue
        try:
            written = app.erase_feedback(
                feedback_id,
                actor=actor,
                reason=ErasureReason.RETENTION_EXPIRED,
                at=max(at, feedback.modified_on),
            )
        except DomainError as e:
            report.refused.append((feedback_id, type(e).__name__))
            continue
        report.feedback.append(feedback_id)
        report.last_position = max(report.last_position, written.position)
    return report


def _last_erasure(app: ComplaintMechanism, case: Case) -> Case.PersonalDataErased:
    for event in reversed(app.case_history(case.id)):
        if isinstance(event, Case.PersonalDataErased):
            return event
    raise LookupError(f"case {case.id} has no erasure")
