"""``cbcm audit case``: one case's whole history as custody steps, with the chain's evidence.

Replaying a case reads, straight from the store, every event of the case, of its assistance
referrals, of its personal-data read log, of its auditors' grants and of the notices sent or
given up about it (found through the case's index of notices, ``CaseNotices``, written in each
notice's own commit: key look-ups, never a scan of the log), and turns each into a *step*:
when, who (user, agency, role), who held the case after it, and one sentence in plain words
(for a notice: who was told as what, of what, how, when, delivered or not; never an address).
A notice the index names that the log does not hold, as a notice about this case, is a step
saying so and makes the replay not intact. Sentences name codes, ids, categories and field
names, never a personal value: they are safe for any auditor. The values are in each step's
``data``, redacted unless the replay reveals personal data (an auditor holding a grant for
the case), and every reveal is recorded in the case's read log before anything is shown.

For each event the replay gives the evidence that it is in the chain: its store position, its
link, whether that link recomputes from the link stored before it, and the first checkpoint
at or after it whose signed link the store still has (or "not yet covered by a checkpoint").
The replay as a whole is ``intact`` when ``services.audit.verify`` finds the chain intact
from the case's first event to the head, against the checkpoints given, and no version of the
case's records is missing; it is ``verified`` only when, besides, a checkpoint covers that
whole range (as ``cbcm audit verify --json`` says it): positions after the last checkpoint
recompute, but a rewrite of them with every link recomputed would not show yet.

The replay tolerates a damaged store: an event whose bytes no longer decode is a step saying
so (its evidence will say why), never a crash.
"""

from __future__ import annotations

import bisect
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

from eventsourcing.application import project_aggregate
from eventsourcing.persistence import MapperDeserialisationError, StoredEvent
from eventsourcing.sqlite import SQLiteApplicationRecorder
from eventsourcing.utils import TopicError, get_topic
from psycopg.sql import SQL, Identifier

from domain.actors import Actor, Role
from domain.assistance import AssistanceReferral
from domain.audit_grants import AuditGrants, audit_grants_id
from domain.case import Case
from domain.case_notices import CaseNotices, case_notices_id
from domain.errors import NotFound
from domain.need_to_know import CASE_PERSONAL_FIELDS, CaseAccess
from domain.notification import Notification
from domain.personal_data_reads import PersonalDataReads, reads_id
from domain.vocabulary import (
    Channel,
    ComplaintCategory,
    ConsentGiver,
    ConsentKind,
    FeedbackChannel,
    NotificationChannel,
    NotificationKind,
    SharedItem,
)
from services.api.schemas.cases import CaseOut
from services.api.views import case_view, history_event
from services.application.mechanism import ComplaintMechanism
from services.audit.custody import Custody
from services.audit.verify import Attested, Finding, verify
from services.event_store.chain import GENESIS, link_at, read_log

DAMAGED_EVENT = (MapperDeserialisationError, TopicError, LookupError, ValueError, TypeError)
"""What decoding a stored event whose bytes (or topic) were changed can raise."""

REPLAY_PURPOSE = "audit replay"
"""The purpose recorded with a read made by a replay that reveals personal data."""

UNNAMED_AUDITOR = Actor("auditor", "network", Role.AUDITOR)
"""Whom a replay without a named reader is shown as (it reveals nothing)."""


class ReplayError(ValueError):
    """The replay was asked for something the case's history cannot answer (a version out
    of range, a time before the case, both a version and a time)."""


# ---------------------------------------------------------------------------------- results


@dataclass(frozen=True)
class CheckpointRef:
    """The checkpoint that vouches for an event."""

    position: int
    signed_at: str


@dataclass(frozen=True)
class Evidence:
    """That one event is in the chain."""

    position: int
    link: str | None
    """The chain link at the event's position (hex); None: the event is not linked."""
    recomputes: bool
    """Whether the link recomputes from the event's stored bytes and the link before it."""
    checkpoint: CheckpointRef | None
    """The first checkpoint at or after the event whose signed link the store still has."""
    missing: bool = False
    """The event is named (a notice, by the case's index of notices, at ``position``) but the
    log does not hold it: its row was deleted, or moved to another record."""

    @property
    def attested(self) -> bool:
        return self.recomputes and self.checkpoint is not None and not self.missing

    @property
    def status(self) -> str:
        if self.missing:
            return (
                f"MISSING: named by the case's index of notices at position {self.position}, "
                "but the log does not hold it"
            )
        if self.link is None:
            return "not in the chain: its position has no link"
        if not self.recomputes:
            return "DAMAGED: its link does not recompute from the stored event"
        if self.checkpoint is None:
            return "not yet covered by a checkpoint"
        return (
            f"attested by the checkpoint at position {self.checkpoint.position} "
            f"signed {self.checkpoint.signed_at or 'by the network'}"
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "position": self.position,
            "link": self.link,
            "recomputes": self.recomputes,
            "checkpoint": None
            if self.checkpoint is None
            else {"position": self.checkpoint.position, "signed_at": self.checkpoint.signed_at},
            "attested": self.attested,
            "missing": self.missing,
            "status": self.status,
        }


@dataclass(frozen=True)
class Step:
    """One recorded event of the case's custody trail."""

    record: str
    """Which record it is in: case, assistance referral, personal-data reads, audit grants."""
    aggregate_id: UUID
    version: int
    """The event's version in its record (for ``record == "case"``: the case's version)."""
    event: str
    """The event's type, e.g. ``Case.Transferred`` (``unreadable`` if it does not decode)."""
    at: datetime | None
    actor: Actor | None
    holder: str | None
    """The agency holding the case after this step."""
    summary: str
    data: dict[str, Any]
    """The event's fields, personal ones redacted unless the replay reveals them."""
    redacted: tuple[str, ...]
    evidence: Evidence
    notice: NoticeFacts | None = None
    """For a notification: who was told (account, role, agency), of what, how, and whether
    it was delivered (never an address: notices hold none)."""
    event_object: Any = field(default=None, repr=False, compare=False)
    """While the trail is built: a notice's event (its words need the holder then)."""

    def to_json(self) -> dict[str, Any]:
        return {
            "record": self.record,
            "aggregate_id": str(self.aggregate_id),
            "version": self.version,
            "event": self.event,
            "at": None if self.at is None else self.at.isoformat(),
            "actor": None
            if self.actor is None
            else {
                "user": self.actor.user,
                "agency": self.actor.agency,
                "role": str(self.actor.role),
            },
            "holder": self.holder,
            "summary": self.summary,
            "data": self.data,
            "redacted": list(self.redacted),
            "evidence": self.evidence.to_json(),
            "notice": None if self.notice is None else self.notice.to_json(),
        }


@dataclass(frozen=True)
class NoticeFacts:
    """What the log says of one notice about the case, in the reader's terms."""

    recipient: str
    """The account told (an account name, as actors are shown; never an address)."""
    role: str
    """What the account was told as: ``focal point``, ``investigating entity``, ``service
    provider`` (from the notice's kind)."""
    agency: str | None
    """The agency (or provider, or entity's agency) it was told for, from the case's own
    events (None: the case's events no longer say)."""
    kind: str
    urgent: bool
    count: int
    delivered: bool
    channels: tuple[str, ...]
    attempts: int
    reason: str | None
    """Why it was given up (``no_address``, ``send_failed``); None when delivered."""

    def to_json(self) -> dict[str, Any]:
        return {
            "recipient": self.recipient,
            "role": self.role,
            "agency": self.agency,
            "kind": self.kind,
            "urgent": self.urgent,
            "count": self.count,
            "delivered": self.delivered,
            "channels": list(self.channels),
            "attempts": self.attempts,
            "reason": self.reason,
        }


@dataclass(frozen=True)
class Verification:
    """The chain from the case's first event to the head, against the checkpoints."""

    verified: bool
    start: int
    head: int | None
    checked: int
    checkpoints: int
    findings: tuple[Finding, ...]
    missing: tuple[str, ...] = ()
    """Versions missing from the case's records (e.g. "case v3"), and notices the case's
    index names that the log does not hold as notices about this case."""
    intact: bool = False
    """Every link recomputes, every mark verifies, no version is missing (``verified``
    asks more: a checkpoint covers the whole range)."""
    uncovered: tuple[int, int] | None = None
    """The positions after the last one a checkpoint covers, to the head: their links
    recompute, but a rewrite of them with every link recomputed would not show yet."""

    def to_json(self) -> dict[str, Any]:
        return {
            "verified": self.verified,
            "intact": self.intact,
            "uncovered": None
            if self.uncovered is None
            else {"from": self.uncovered[0], "to": self.uncovered[1]},
            "from_position": self.start,
            "head": self.head,
            "checked": self.checked,
            "checkpoints": self.checkpoints,
            "findings": [
                {"kind": str(f.kind), "position": f.position, "detail": f.detail}
                for f in self.findings
            ],
            "missing": list(self.missing),
        }


@dataclass(frozen=True)
class CaseReplay:
    """A case's custody trail, its state at a version, and the evidence."""

    case_id: UUID
    version: int
    """The case's version now."""
    steps: tuple[Step, ...]
    state_version: int
    state_at: datetime | None
    state: CaseOut | None
    """The case at ``state_version`` as the auditor sees it (None: it cannot be rebuilt)."""
    state_note: str | None
    verification: Verification | None
    revealed: tuple[str, ...] = ()
    """Personal fields this replay showed (recorded in the read log before it was built)."""
    reader: Actor | None = None
    positions: tuple[int, ...] = ()
    """The store positions of every event of every record the replay read (the case's, its
    referrals', grants', read log's, its index of notices' and the notices'): what a bundle
    holds."""

    @property
    def verified(self) -> bool:
        return self.verification is not None and self.verification.verified

    def to_json(self) -> dict[str, Any]:
        return {
            "case_id": str(self.case_id),
            "version": self.version,
            "reader": None
            if self.reader is None
            else {
                "user": self.reader.user,
                "agency": self.reader.agency,
                "role": str(self.reader.role),
            },
            "personal_data": "shown" if self.revealed else "redacted",
            "steps": [dict(number=n, **s.to_json()) for n, s in enumerate(self.steps, 1)],
            "state": {
                "version": self.state_version,
                "at": None if self.state_at is None else self.state_at.isoformat(),
                "case": None if self.state is None else self.state.model_dump(mode="json"),
                "note": self.state_note,
            },
            "verification": None if self.verification is None else self.verification.to_json(),
        }


# ---------------------------------------------------------------------------------- words

ROLE_WORDS = {
    Role.INTAKE_OPERATOR: "intake operator",
    Role.FOCAL_POINT: "focal point",
    Role.COORDINATOR: "network coordinator",
    Role.INVESTIGATING_ENTITY: "investigating entity",
    Role.SERVICE_PROVIDER: "service provider",
    Role.AUDITOR: "auditor",
    Role.STATISTICS_READER: "statistics reader",
    Role.INTAKE_SERVICE: "intake service (an integration)",
}

CHANNEL_WORDS = {
    Channel.HOTLINE: "by hotline",
    Channel.SMS_MESSAGING: "by SMS or messaging",
    Channel.COMPLAINT_BOX: "through a complaint box",
    Channel.IN_PERSON: "in person",
    Channel.EMAIL: "by e-mail",
    Channel.WEB_FORM: "through the web form",
    Channel.COMMUNITY_LEADER: "through a community leader",
    Channel.STAFF_MANDATORY_REPORT: "as a staff member's mandatory report",
    Channel.INTERAGENCY_REFERRAL: "as a referral from another agency's mechanism",
}

FEEDBACK_CHANNEL_WORDS = {
    FeedbackChannel.RECEIPT_CODE: "through the receipt code",
    FeedbackChannel.PHONE: "by phone",
    FeedbackChannel.SMS: "by SMS",
    FeedbackChannel.IN_PERSON: "in person",
    FeedbackChannel.EMAIL: "by e-mail",
    FeedbackChannel.COMMUNITY_LEADER: "through a community leader",
}

CONSENT_WORDS = {
    ConsentKind.ASSISTANCE_REFERRAL: "be referred for assistance",
    ConsentKind.IDENTITY_DISCLOSURE: "the disclosure of identifying information for investigation",
    ConsentKind.CONTACT: "be contacted",
}

SHARED_WORDS = {
    SharedItem.ALLEGATION_SUMMARY: "allegation summary",
    SharedItem.NARRATIVE: "narrative",
    SharedItem.SURVIVOR_IDENTITY: "survivor's identity",
    SharedItem.COMPLAINANT_IDENTITY: "complainant's identity",
    SharedItem.CONTACT_DETAILS: "contact details",
    SharedItem.ALLEGED_PERPETRATOR_DETAILS: "alleged perpetrator details",
}


def words(value: object) -> str:
    """A vocabulary value in words: ``capacity``, ``implementing partner personnel``."""
    return str(value).replace("_", " ")


def actor_words(actor: Actor) -> str:
    """``fp-unhcr (focal point of unhcr)``."""
    role = ROLE_WORDS.get(actor.role, words(actor.role))
    if actor.role is Role.COORDINATOR or actor.role is Role.AUDITOR:
        return f"{actor.user} ({role}, {actor.agency})"
    if actor.role is Role.SERVICE_PROVIDER:
        return f"{actor.user} ({role} {actor.agency})"
    return f"{actor.user} ({role} of {actor.agency})"


def shared_words(shared: Sequence[SharedItem]) -> str:
    """``sharing: allegation summary; the survivor's identity was not shared``."""
    items = ", ".join(SHARED_WORDS.get(item, words(item)) for item in shared) or "nothing"
    identity = (
        "the survivor's identity was shared"
        if SharedItem.SURVIVOR_IDENTITY in shared
        else "the survivor's identity was not shared"
    )
    return f"sharing: {items}; {identity}"


def _short(referral_id: UUID) -> str:
    return str(referral_id)[:8]


def _personal_recorded(event: Any) -> str:
    out, _ = history_event(event, reveal_personal=False)
    return ", ".join(out.redacted)


def sentence(event: Any, services: dict[UUID, str]) -> str:
    """What one event did, in plain words, without any personal value."""
    who = actor_words(event.actor) if getattr(event, "actor", None) is not None else "someone"
    match event:
        case Case.Received():
            text = (
                f"{who} recorded a complaint received {CHANNEL_WORDS.get(event.channel, '')} "
                f"on {event.received_at.date().isoformat()}; complainant: "
                f"{words(event.complainant_role)}"
            )
            if event.immediate_safety_risk:
                text += "; immediate safety risk flagged"
            recorded = _personal_recorded(event)
            return text + (f"; personal data recorded: {recorded}" if recorded else "")
        case Case.Assessed():
            return f"{who} assessed it as {_assessment_words(event)}"
        case Case.FocalPointsAssigned():
            return f"{who} assigned the case to focal points {', '.join(event.focal_points)}"
        case Case.Transferred():
            text = (
                f"{who} transferred custody from {event.from_agency} to {event.to_agency} "
                f"(reason: {words(event.reason)}), {shared_words(event.shared)}"
            )
            return text + ("; with a note" if event.note else "")
        case Case.ConsentGiven():
            text = f"{who} recorded the survivor's consent to {CONSENT_WORDS[event.kind]}"
            if event.contact_methods:
                text += f" ({', '.join(words(m) for m in event.contact_methods)})"
            if event.given_by is ConsentGiver.CAREGIVER_BEST_INTEREST:
                text += ", given by a caregiver in the child's best interest"
            return text
        case Case.ConsentWithdrawn():
            return (
                f"{who} recorded that the survivor withdrew consent to {CONSENT_WORDS[event.kind]}"
            )
        case Case.AssistanceReferred():
            return (
                f"{who} referred the survivor to {event.provider} for "
                f"{words(event.service_type)} assistance (referral {_short(event.referral_id)})"
            )
        case Case.ReferredForInvestigation():
            return (
                f"{who} referred the allegation to {event.entity} (investigating entity of "
                f"{event.agency}), {shared_words(event.shared)}"
            )
        case Case.InvestigationAcknowledged():
            return f"{who} acknowledged receipt of the investigation referral"
        case Case.InvestigationOutcomeRecorded():
            return f"{who} recorded the investigation outcome: {words(event.outcome)}"
        case Case.FeedbackGiven():
            channel = FEEDBACK_CHANNEL_WORDS.get(event.channel, words(event.channel))
            return f"{who} gave the complainant feedback {channel}"
        case Case.MarkedAsDuplicate():
            return f"{who} linked the case as a duplicate of case {event.original_case_id}"
        case Case.Closed():
            text = f"{who} closed the case (reason: {words(event.reason)})"
            if event.no_outcome_reason:
                text += "; said why there is no investigation outcome"
            if event.no_feedback_reason:
                text += "; said why no feedback was given"
            return text
        case Case.Reopened():
            return f"{who} reopened the case, giving a reason"
        case AssistanceReferral.Accepted():
            return f"{who} accepted {_referral_words(event, services)}"
        case AssistanceReferral.DeclinedByProvider():
            text = f"{who} declined {_referral_words(event, services)}"
            return text + (", giving a reason" if event.reason else "")
        case AssistanceReferral.DeclinedBySurvivor():
            return f"{who} recorded that the survivor declined {_referral_words(event, services)}"
        case AssistanceReferral.Delivered():
            return f"{who} delivered the service of {_referral_words(event, services)}"
        case AssistanceReferral.FollowedUp():
            text = f"{who} followed up {_referral_words(event, services)} with the survivor"
            return text + ("; with a note" if event.note else "")
        case PersonalDataReads.Read():
            return f"{who} read personal data: {', '.join(event.fields)} ({event.purpose})"
        case AuditGrants.Granted():
            return (
                f"{who} granted auditor {event.auditor} access to the case's personal data, "
                "giving a reason"
            )
        case AuditGrants.Revoked():
            return f"{who} revoked auditor {event.auditor}'s access to the case's personal data"
    return f"{who}: {type(event).__qualname__}"


NOTICE_WORDS = {
    NotificationKind.NEW_CASE: ("new case", "new cases"),
    NotificationKind.URGENT_CASE: (
        "urgent case (immediate safety risk)",
        "urgent cases (immediate safety risk)",
    ),
    NotificationKind.TRANSFER_RECEIVED: ("case transferred to them", "cases transferred to them"),
    NotificationKind.INVESTIGATION_REFERRAL: (
        "referral for investigation",
        "referrals for investigation",
    ),
    NotificationKind.ASSISTANCE_REFERRAL: ("assistance referral", "assistance referrals"),
    NotificationKind.ACTION_DUE_SOON: ("action due soon", "actions due soon"),
    NotificationKind.ACTION_OVERDUE: ("action overdue", "actions overdue"),
}

NOTICE_ROLES = {
    NotificationKind.INVESTIGATION_REFERRAL: Role.INVESTIGATING_ENTITY,
    NotificationKind.ASSISTANCE_REFERRAL: Role.SERVICE_PROVIDER,
}
"""Whom each kind of notice about a case goes to (every other kind: focal points)."""

NOTICE_CHANNEL_WORDS = {NotificationChannel.EMAIL: "by e-mail", NotificationChannel.SMS: "by SMS"}

NOTICE_REASON_WORDS = {
    "no_address": "no address registered",
    "send_failed": "every try failed",
}


def _deadline(compact: str) -> str:
    """``20260303T080000Z`` (how a reminder's subject names its deadline) as ISO 8601."""
    try:
        moment = datetime.strptime(compact, "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
    except ValueError:
        return compact
    return moment.isoformat(timespec="minutes")


def _tries(n: int) -> str:
    return f"{n} {'try' if n == 1 else 'tries'}"


def notice_facts(event: Any, case: dict[int, Any | None], holder: str | None) -> NoticeFacts:
    """Who a notice about the case told, for which agency, of what, how, and its outcome.

    The agency is the case's own: the receiving or holding agency (``holder``: the agency
    holding the case when the notice was recorded), the agency a transfer went to, the
    implicated agency of a referral for investigation, the provider of an assistance
    referral (the notice's subject names the case's version or the referral)."""
    kind = NotificationKind(event.kind)
    role = NOTICE_ROLES.get(kind, Role.FOCAL_POINT)
    agency: str | None = holder
    subject, _, rest = event.about.partition(":")
    version = int(rest[1:]) if rest.startswith("v") and rest[1:].isdigit() else None
    if kind is NotificationKind.TRANSFER_RECEIVED and version is not None:
        step = case.get(version)
        agency = str(step.to_agency) if isinstance(step, Case.Transferred) else None
    elif kind is NotificationKind.INVESTIGATION_REFERRAL and version is not None:
        step = case.get(version)
        agency = str(step.agency) if isinstance(step, Case.ReferredForInvestigation) else None
    elif kind is NotificationKind.ASSISTANCE_REFERRAL:
        agency = next(
            (
                str(e.provider)
                for e in case.values()
                if isinstance(e, Case.AssistanceReferred) and str(e.referral_id) == subject
            ),
            None,
        )
    sent = isinstance(event, Notification.Sent)
    return NoticeFacts(
        recipient=event.recipient,
        role=str(role),
        agency=agency,
        kind=kind.value,
        urgent=bool(event.urgent),
        count=int(event.count),
        delivered=sent,
        channels=tuple(str(c) for c in event.channels) if sent else (),
        attempts=int(event.attempts),
        reason=None if sent else str(event.reason),
    )


def notice_sentence(event: Any, facts: NoticeFacts) -> str:
    """``focal point fp-unhcr-1 of unhcr alerted: 1 urgent case (immediate safety risk), by
    e-mail, at 2026-03-02T08:01:00+00:00; delivered after 1 try`` (no address, no content)."""
    kind = NotificationKind(facts.kind)
    one, many = NOTICE_WORDS.get(kind, (words(kind), words(kind)))
    what = f"{facts.count} {one if facts.count == 1 else many}"
    if kind in (NotificationKind.ACTION_DUE_SOON, NotificationKind.ACTION_OVERDUE):
        _, action, due = [*event.about.split(":"), "", ""][:3]
        if action:
            what += f" ({words(action)}, due {_deadline(due)})" if due else f" ({words(action)})"
    role = ROLE_WORDS.get(Role(facts.role), words(facts.role))
    of = f" of {facts.agency}" if facts.agency else ""
    at = event.timestamp.isoformat(timespec="seconds")
    if facts.delivered:
        how = " and ".join(
            NOTICE_CHANNEL_WORDS.get(NotificationChannel(c), c) for c in facts.channels
        )
        return (
            f"{role} {facts.recipient}{of} alerted: {what}, {how}, at {at}; "
            f"delivered after {_tries(facts.attempts)}"
        )
    reason = NOTICE_REASON_WORDS.get(facts.reason or "", words(facts.reason or "unknown"))
    return (
        f"{role} {facts.recipient}{of} NOT alerted: {what}, given up at {at}, "
        f"undelivered after {_tries(facts.attempts)} ({reason})"
    )


def _referral_words(event: Any, services: dict[UUID, str]) -> str:
    service = services.get(event.originator_id)
    kind = f"{service} " if service else ""
    return f"the {kind}referral {_short(event.originator_id)}"


def _assessment_words(event: Case.Assessed) -> str:
    if event.category is ComplaintCategory.OTHER_SENSITIVE:
        return "another sensitive complaint (for the agency's own procedures)"
    if event.category is ComplaintCategory.NON_SENSITIVE_FEEDBACK:
        return "non-sensitive feedback (for the agency's feedback mechanism)"
    a = event.allegation
    if a is None:
        return "an SEA allegation"
    kind = words(a.allegation_type) + (f", {words(a.subtype)}" if a.subtype else "")
    implicated = a.implicated_agency or "not known"
    child = "; a child is involved" if a.child_involved else ""
    return (
        f"an SEA allegation ({kind}; implicated agency: {implicated}, "
        f"{words(a.personnel_category)}; victim: {words(a.victim_category)}{child})"
    )


# ---------------------------------------------------------------------------------- the store


@dataclass
class _Record:
    """One aggregate's stored events, decoded where they still decode."""

    name: str
    aggregate_id: UUID
    rows: list[tuple[int, StoredEvent]]
    events: list[Any | None] = field(default_factory=list)
    """Per row: the domain event, or None if its bytes no longer decode."""
    named_at: int | None = None
    """A notice's record: the position of the index entry that names it."""
    named_on: datetime | None = None
    """A notice's record: when the index entry that names it was recorded."""

    @property
    def decoded(self) -> list[Any]:
        return [e for e in self.events if e is not None]

    def missing_versions(self) -> list[int]:
        versions = [row.originator_version for _, row in self.rows]
        top = max(versions, default=0)
        return sorted(set(range(1, top + 1)) - set(versions))


def stored_with_positions(recorder: Any, aggregate_id: UUID) -> list[tuple[int, StoredEvent]]:
    """An aggregate's stored events, each with its store position, in version order."""
    table = recorder.events_table_name
    if isinstance(recorder, SQLiteApplicationRecorder):
        statement = (
            "SELECT rowid, originator_version, topic, state "  # noqa: S608 - library's table
            f"FROM {table} WHERE originator_id = ? ORDER BY originator_version"
        )
        with recorder.datastore.transaction(commit=False) as c:
            c.execute(statement, (aggregate_id.hex,))
            rows = c.fetchall()
        return [
            (int(r[0]), StoredEvent(aggregate_id, int(r[1]), str(r[2]), bytes(r[3]))) for r in rows
        ]
    query = SQL(
        "SELECT notification_id, originator_version, topic, state FROM {}.{} "
        "WHERE originator_id = %s ORDER BY originator_version"
    ).format(Identifier(recorder.datastore.schema), Identifier(table))
    with recorder.datastore.transaction(commit=False) as curs:
        curs.execute(query, (aggregate_id,))
        found = curs.fetchall()
    return [
        (
            int(r["notification_id"]),
            StoredEvent(aggregate_id, int(r["originator_version"]), r["topic"], bytes(r["state"])),
        )
        for r in found
    ]


def _load_record(app: ComplaintMechanism, name: str, aggregate_id: UUID) -> _Record:
    record = _Record(name, aggregate_id, stored_with_positions(app.recorder, aggregate_id))
    for _, stored in record.rows:
        try:
            record.events.append(app.mapper.to_domain_event(stored))
        except DAMAGED_EVENT:  # reported as a step, not raised
            record.events.append(None)
    return record


class _Evidence:
    """Evidence for positions, and the checkpoints that vouch for them."""

    def __init__(self, recorder: Any, checkpoints: Iterable[Attested]) -> None:
        self.recorder = recorder
        self.checkpoints = sorted(checkpoints, key=lambda c: c.position)
        self._positions = [c.position for c in self.checkpoints]
        self._matches: dict[int, bool] = {}

    def _holds(self, checkpoint: Attested) -> bool:
        """Whether the store still has the link the checkpoint signed."""
        if checkpoint.position not in self._matches:
            row = link_at(self.recorder, checkpoint.position)
            self._matches[checkpoint.position] = row is not None and row.link == checkpoint.link
        return self._matches[checkpoint.position]

    def covering(self, position: int) -> Attested | None:
        for checkpoint in self.checkpoints[bisect.bisect_left(self._positions, position) :]:
            if self._holds(checkpoint):
                return checkpoint
        return None

    def of(self, position: int) -> Evidence:
        row = next(iter(read_log(self.recorder, position, batch=1)), None)
        if row is None or row.position != position or row.chain is None:
            return Evidence(position, None, False, None)
        chain = row.chain
        recomputes = False
        if row.has_event:
            if chain.previous_position == 0:
                previous: bytes | None = GENESIS
            else:
                before = link_at(self.recorder, chain.previous_position)
                previous = None if before is None else before.link
            recomputes = (
                previous is not None
                and not row.unreadable
                and row.link_from(previous) == chain.link
            )
            # a link rewritten with its event shows only in the next row: vouch for an
            # event only if the chain goes on from its link
            after = next(iter(read_log(self.recorder, position + 1, batch=1)), None)
            if recomputes and after is not None and after.chain is not None and after.has_event:
                recomputes = (
                    after.chain.previous_position == position
                    and not after.unreadable
                    and after.link_from(chain.link) == after.chain.link
                )
        checkpoint = self.covering(position)
        return Evidence(
            position,
            chain.link.hex(),
            recomputes,
            None
            if checkpoint is None
            else CheckpointRef(checkpoint.position, checkpoint.signed_at),
        )


# ---------------------------------------------------------------------------------- replay

_NOT_STEPS = (
    PersonalDataReads.Started,
    AuditGrants.Started,
    AssistanceReferral.Made,
    CaseNotices.Started,
    CaseNotices.Indexed,
)
"""Events that record no custody fact of their own (a record opened; a referral's opening is
the case's ``AssistanceReferred`` step; the index of notices, whose notices are the steps)."""

NOTICE_INDEX = "notice index"
NOTICE = "notification"


def _records(app: ComplaintMechanism, case_id: UUID) -> list[_Record]:
    """The case's record first, then its referrals', its grants', its index of notices and
    the notices it names, and its read log's (last: a replay that reveals reloads it).

    The notices are found through the case's index (``CaseNotices``, written in each notice's
    own commit): two key look-ups per notice, however long the log, instead of a scan of
    every notice of the network."""
    case = _load_record(app, "case", case_id)
    if not case.rows or not case.rows[0][1].topic.startswith(f"{get_topic(Case)}."):
        raise NotFound(f"no case {case_id}")
    referrals = [e.referral_id for e in case.decoded if isinstance(e, Case.AssistanceReferred)]
    records = [case]
    records += [_load_record(app, "assistance referral", r) for r in referrals]
    records.append(_load_record(app, "audit grants", audit_grants_id(case_id)))
    index = _load_record(app, NOTICE_INDEX, case_notices_id(case_id))
    records.append(index)
    for (position, _), entry in zip(index.rows, index.events, strict=True):
        if isinstance(entry, CaseNotices.Indexed):
            for notice_id in entry.notices:
                notice = _load_record(app, NOTICE, notice_id)
                notice.named_at, notice.named_on = position, entry.timestamp
                records.append(notice)
    records.append(_load_record(app, "personal-data reads", reads_id(case_id)))
    return records


def _notice_problem(record: _Record, case_id: UUID) -> str | None:
    """Why a notice the case's index names is not, in the log, a notice about this case."""
    if record.name != NOTICE:
        return None
    where = f"named at position {record.named_at}"
    if not record.rows:
        return f"notification {record.aggregate_id} ({where}): not in the log"
    first = record.events[0]
    if first is None:
        return None  # an unreadable event: its step and the chain's evidence say so
    if not isinstance(first, Notification.Sent | Notification.GivenUp):
        return f"notification {record.aggregate_id} ({where}): the record is not a notice"
    if first.case_id != case_id:
        return f"notification {record.aggregate_id} ({where}): it is about another case"
    return None


def _case_versions(record: _Record) -> dict[int, Any | None]:
    """The case's events by version (None: stored but no longer decodes)."""
    return {
        stored.originator_version: event
        for (_, stored), event in zip(record.rows, record.events, strict=True)
    }


def _state_version(
    case: dict[int, Any | None], at_version: int | None, as_of: datetime | None
) -> int:
    current = max(case)
    if at_version is not None and as_of is not None:
        raise ReplayError("give a version or a time, not both")
    if at_version is not None:
        if not 1 <= at_version <= current:
            raise ReplayError(f"the case has versions 1 to {current}, not {at_version}")
        return at_version
    if as_of is not None:
        if as_of.tzinfo is None or as_of.utcoffset() is None:
            raise ReplayError("the time must carry a time zone (e.g. 2026-03-02T10:00:00+00:00)")
        before = [v for v, e in case.items() if e is not None and e.timestamp <= as_of]
        if not before:
            raise ReplayError(f"the case was not yet recorded at {as_of.isoformat()}")
        return max(before)
    return current


def _state(
    case: dict[int, Any | None], version: int, access: CaseAccess
) -> tuple[CaseOut | None, datetime | None, str | None, tuple[str, ...]]:
    """The case at ``version`` as ``access`` shows it, when it and its time, a note if it
    cannot be rebuilt, and the personal fields it shows."""
    broken = [v for v in range(1, version + 1) if case.get(v) is None]
    if broken:
        return None, None, f"the case cannot be rebuilt: its v{broken[0]} is damaged", ()
    events: list[Any] = [case[v] for v in range(1, version + 1)]
    rebuilt: Case | None = project_aggregate(None, events)
    assert rebuilt is not None
    view, revealed = case_view(rebuilt, access)
    return view, events[-1].timestamp, None, revealed


def replay_case(
    app: ComplaintMechanism,
    case_id: UUID,
    *,
    at_version: int | None = None,
    as_of: datetime | None = None,
    checkpoints: Iterable[Attested] = (),
    reveal_personal: bool = False,
    reader: Actor | None = None,
    verify_chain: bool = True,
) -> CaseReplay:
    """The case's custody trail, its state at ``at_version`` (or the last version at or
    before ``as_of``; default: now) and, for each event, the chain's evidence.

    ``reveal_personal`` shows personal values (to ``reader``, required then: the read is
    recorded in the case's read log before the replay is built). Whether the reader may see
    them is the caller's decision (``app.audit_grantees``). ``verify_chain`` False skips the
    verification of the chain as a whole (the per-event evidence is still given).

    Raises ``NotFound`` for an unknown case, ``ReplayError`` for a version or time the
    history cannot answer.
    """
    if reveal_personal and reader is None:
        raise ValueError("a replay that reveals personal data names its reader")
    checkpoints = list(checkpoints)
    records = _records(app, case_id)
    case = _case_versions(records[0])
    version = _state_version(case, at_version, as_of)
    access = CaseAccess(
        reader or UNNAMED_AUDITOR,
        frozenset(CASE_PERSONAL_FIELDS if reveal_personal else ()),
    )
    state, state_at, note, revealed = _state(case, version, access)

    shown: set[str] = set(revealed)
    data: dict[tuple[Any, int], tuple[dict[str, Any], tuple[str, ...]]] = {}
    for record in records:
        for (_, stored), event in zip(record.rows, record.events, strict=True):
            if event is None or isinstance(event, _NOT_STEPS):
                continue
            out, opened = history_event(event, reveal_personal)
            shown.update(opened)
            dumped = out.model_dump(mode="json")
            data[(stored.originator_id, stored.originator_version)] = (
                dumped["data"],
                tuple(out.redacted),
            )
    if shown:
        assert reader is not None
        app.record_personal_data_read(
            case_id,
            actor=reader,
            fields=tuple(sorted(shown)),
            purpose=REPLAY_PURPOSE,
            at=datetime.now(UTC),
        )
        # the replay shows its own read
        records[-1] = _load_record(app, "personal-data reads", reads_id(case_id))

    evidence = _Evidence(app.recorder, checkpoints)
    steps = _steps(records, data, evidence)
    verification = _verification(app, records, checkpoints) if verify_chain else None
    return CaseReplay(
        case_id=case_id,
        version=max(case),
        steps=steps,
        state_version=version,
        state_at=state_at,
        state=state,
        state_note=note,
        verification=verification,
        revealed=tuple(sorted(shown)),
        reader=reader,
        positions=tuple(sorted(p for record in records for p, _ in record.rows)),
    )


def case_steps(
    app: ComplaintMechanism, case_id: UUID, *, checkpoints: Iterable[Attested] = ()
) -> tuple[Step, ...]:
    """The case's custody trail alone (no state, no verification, nothing revealed)."""
    records = _records(app, case_id)
    data: dict[tuple[Any, int], tuple[dict[str, Any], tuple[str, ...]]] = {}
    return _steps(records, data, _Evidence(app.recorder, checkpoints))


def _steps(
    records: list[_Record],
    data: dict[tuple[Any, int], tuple[dict[str, Any], tuple[str, ...]]],
    evidence: _Evidence,
) -> tuple[Step, ...]:
    services = {
        e.originator_id: words(e.service_type)
        for record in records
        for e in record.decoded
        if isinstance(e, AssistanceReferral.Made)
    }
    case_id = records[0].aggregate_id
    case = _case_versions(records[0])
    # (time, position, step, the agency holding the case from this step on, if it changes)
    unsorted: list[tuple[datetime | None, int, Step, str | None]] = []
    for record in records:
        last_at: datetime | None = record.named_on
        problem = _notice_problem(record, case_id)
        if record.name == NOTICE and not record.rows:
            assert record.named_at is not None
            step = Step(
                record=NOTICE,
                aggregate_id=record.aggregate_id,
                version=1,
                event="missing",
                at=record.named_on,
                actor=None,
                holder=None,
                summary=(
                    f"a notice about this case (notification {record.aggregate_id}), named by "
                    f"the case's index of notices at position {record.named_at}, is MISSING "
                    "from the log: its row was deleted or changed"
                ),
                data={},
                redacted=(),
                evidence=Evidence(record.named_at, None, False, None, missing=True),
            )
            unsorted.append((record.named_on, record.named_at, step, None))
            continue
        for (position, stored), event in zip(record.rows, record.events, strict=True):
            if event is not None and isinstance(event, _NOT_STEPS):
                last_at = event.timestamp
                continue
            if event is None:
                topic = stored.topic.rpartition(":")[2]
                step = Step(
                    record=record.name,
                    aggregate_id=record.aggregate_id,
                    version=stored.originator_version,
                    event="unreadable",
                    at=None,
                    actor=None,
                    holder=None,
                    summary=(
                        f"the stored {record.name} event v{stored.originator_version} "
                        f"({topic}) no longer decodes: its bytes were changed"
                    ),
                    data={},
                    redacted=(),
                    evidence=evidence.of(position),
                )
                # an unreadable event keeps its place after the one before it
                unsorted.append((last_at, position, step, None))
                continue
            last_at = event.timestamp
            shown, redacted = data.get((stored.originator_id, stored.originator_version), ({}, ()))
            if record.name == NOTICE and problem is not None:
                step = Step(
                    record=NOTICE,
                    aggregate_id=record.aggregate_id,
                    version=stored.originator_version,
                    event=type(event).__qualname__,
                    at=getattr(event, "timestamp", None),
                    actor=None,
                    holder=None,
                    summary=(
                        "the case's index of notices names a record that is not a notice "
                        f"about this case ({problem}): the log was changed"
                    ),
                    data={},
                    redacted=(),
                    evidence=evidence.of(position),
                )
                unsorted.append((step.at, position, step, None))
                continue
            step = Step(
                record=record.name,
                aggregate_id=record.aggregate_id,
                version=stored.originator_version,
                event=type(event).__qualname__,
                at=event.timestamp,
                actor=getattr(event, "actor", None),
                holder=None,
                summary=sentence(event, services),
                data=shown,
                redacted=redacted,
                evidence=evidence.of(position),
                event_object=event if record.name == NOTICE else None,
            )
            unsorted.append((event.timestamp, position, step, _new_holder(event)))
    # merged by time; events of one transaction, or of one time, by store position
    unsorted.sort(key=lambda t: (t[0] is not None, t[0] or datetime.min, t[1]))
    holder: str | None = None
    steps = []
    for _, _, step, changed in unsorted:
        holder = changed or holder
        notice = None
        text = step.summary
        if isinstance(step.event_object, Notification.Sent | Notification.GivenUp):
            notice = notice_facts(step.event_object, case, holder)
            text = notice_sentence(step.event_object, notice)
        summary = text + (f"; held by {holder}" if holder else "")
        steps.append(
            replace(step, holder=holder, summary=summary, notice=notice, event_object=None)
        )
    return tuple(steps)


def _new_holder(event: Any) -> str | None:
    if isinstance(event, Case.Received):
        return str(event.actor.agency)
    if isinstance(event, Case.Transferred):
        return str(event.to_agency)
    return None


def _verification(
    app: ComplaintMechanism, records: list[_Record], checkpoints: list[Attested]
) -> Verification:
    positions = [position for record in records for position, _ in record.rows]
    positions += [r.named_at for r in records if r.named_at is not None and not r.rows]
    start = min(positions)
    # To the head, not only to the checkpoint covering the case's last event: a cut-off or
    # rewritten tail could have removed later steps of this very case, and only the chain
    # after that checkpoint, held to the later checkpoints, shows it.
    custody = Custody.of(app).only(record.aggregate_id for record in records)
    report = verify(app.recorder, start=start, stop=None, checkpoints=checkpoints, custody=custody)
    missing = tuple(f"{record.name} v{v}" for record in records for v in record.missing_versions())
    case_id = records[0].aggregate_id
    missing += tuple(
        problem for record in records if (problem := _notice_problem(record, case_id)) is not None
    )
    intact = report.intact and not missing
    # "verified" only for what a checkpoint covers, as `cbcm audit verify --json` says it
    return Verification(
        verified=intact and report.uncovered is None,
        intact=intact,
        uncovered=report.uncovered,
        start=start,
        head=report.head,
        checked=report.checked,
        checkpoints=report.checkpoints,
        findings=tuple(sorted(report.findings, key=lambda f: f.position)),
        missing=missing,
    )


# ---------------------------------------------------------------------------------- text


def _plain(value: Any) -> str:
    if isinstance(value, dict | list):
        return json.dumps(value, ensure_ascii=False, separators=(", ", ": "))
    return str(value)


def render_text(replay: CaseReplay) -> str:
    """The replay for a person: numbered steps, the state, the evidence."""
    lines = []
    if replay.revealed:
        shown = "personal data shown (the read is recorded in the case's read log)"
    else:
        shown = "personal data redacted"
    lines.append(f"Case {replay.case_id}: version {replay.version}; {shown}")
    lines.append("")
    lines.append("Custody steps:")
    for number, step in enumerate(replay.steps, 1):
        when = "time unknown" if step.at is None else step.at.isoformat(timespec="seconds")
        where = f"v{step.version}" if step.record == "case" else step.record
        lines.append(f"{number:4}. {when}  [{where}]  {step.summary}")
        e = step.evidence
        link = "no link" if e.link is None else f"link {e.link[:16]}..."
        lines.append(f"        evidence: position {e.position}, {link}, {e.status}")
    lines.append("")
    at = "" if replay.state_at is None else f" ({replay.state_at.isoformat(timespec='seconds')})"
    lines.append(f"State at version {replay.state_version}{at}:")
    if replay.state is None:
        lines.append(f"  {replay.state_note}")
    else:
        for name, value in replay.state.model_dump(mode="json").items():
            if name == "redacted" or value in (None, [], {}):
                continue
            lines.append(f"  {name}: {_plain(value)}")
        if replay.state.redacted:
            lines.append(f"  redacted: {', '.join(replay.state.redacted)}")
    lines.append("")
    lines.extend(_evidence_lines(replay))
    return "\n".join(lines)


def _evidence_lines(replay: CaseReplay) -> list[str]:
    events = [s.evidence for s in replay.steps]
    attested = sum(1 for e in events if e.attested)
    damaged = sum(1 for e in events if not e.recomputes and not e.missing)
    missing = sum(1 for e in events if e.missing)
    uncovered = sum(1 for e in events if e.recomputes and e.checkpoint is None)
    lines = [
        f"Evidence: {len(events)} events; {attested} attested by a checkpoint, "
        f"{uncovered} not yet covered by a checkpoint, {damaged} whose link does not recompute"
        + (f", {missing} MISSING from the log." if missing else ".")
    ]
    v = replay.verification
    if v is None:
        return lines
    lines.append(
        f"Chain from position {v.start} to the head ({v.head}): {v.checked} positions checked "
        f"against {v.checkpoints} checkpoint(s): " + _verdict(v)
    )
    lines.extend(f"  {f.kind} at position {f.position}: {f.detail}" for f in v.findings)
    lines.extend(f"  missing: {m}" for m in v.missing)
    return lines


def _verdict(v: Verification) -> str:
    if not v.intact:
        return "NOT VERIFIED."
    if v.uncovered is not None:
        first, last = v.uncovered
        return (
            f"INTACT, NOT YET VERIFIED: every link recomputes, but no checkpoint covers "
            f"positions {first} to {last} yet (a rewrite of them with every link recomputed "
            "would not show)."
        )
    return "VERIFIED."
