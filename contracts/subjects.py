"""NATS subject names of the published language.

Events go to ``cbcm.v1.evt.<agency>.<aggregate>.<event>`` where ``agency`` is the agency
holding the case: per-agency permissions on the NATS accounts are written on that token, so it
must be a plain code, never free text.
"""

from __future__ import annotations

import re
from typing import Final

STREAM: Final = "CBCM_EVENTS"
"""The JetStream stream that holds every published domain event."""

EVENT_SUBJECT_PREFIX: Final = "cbcm.v1.evt"
EVENT_SUBJECTS: Final = f"{EVENT_SUBJECT_PREFIX}.>"
"""The subjects the ``CBCM_EVENTS`` stream captures."""

STATS_SUBJECT_PREFIX: Final = "cbcm.v1.stats"
AUDIT_CHECKPOINT_SUBJECT: Final = "cbcm.v1.audit.checkpoint"
"""Signed audit checkpoints of the event log."""

PREVIOUS_POSITION_HEADER: Final = "Cbcm-Previous-Position"
"""The store position of the event published just before this one (0 for the first).

PostgreSQL positions have holes (a write refused by a concurrent one still consumed its
sequence number), so ``position == recorded + 1`` cannot tell a lost message from a hole in
the store; ``previous == recorded`` can."""

# Dots, spaces, '*' and '>' would split a token or act as wildcards; upper case is refused
# so that one agency cannot appear under two spellings.
_TOKEN = re.compile(r"^[a-z0-9_-]+$")


def _token(kind: str, value: str) -> str:
    if not _TOKEN.fullmatch(value):
        raise ValueError(
            f"{kind} {value!r} is not a subject token: use lowercase a-z, 0-9, _ and -"
        )
    return value


def event_subject(agency: str, aggregate: str, event: str) -> str:
    """The subject an event of ``aggregate`` held by ``agency`` is published on.

    >>> event_subject("unicef", "case", "received")
    'cbcm.v1.evt.unicef.case.received'
    """
    return ".".join(
        (
            EVENT_SUBJECT_PREFIX,
            _token("agency", agency),
            _token("aggregate", aggregate),
            _token("event", event),
        )
    )


def agency_event_subjects(agency: str) -> str:
    """The filter matching every event subject of ``agency`` (for its consumers and grants)."""
    return f"{EVENT_SUBJECT_PREFIX}.{_token('agency', agency)}.>"


def stats_subject(report: str) -> str:
    """The subject an anonymised statistics report is published on.

    >>> stats_subject("monthly_allegations")
    'cbcm.v1.stats.monthly_allegations'
    """
    return f"{STATS_SUBJECT_PREFIX}.{_token('report', report)}"


def release_subject(period: str) -> str:
    """The subject every version of the statistics release of ``period`` is published on
    (issue #14); the live reports are never published.

    >>> release_subject("2026-Q1")
    'cbcm.v1.stats.release.2026-q1'
    """
    return f"{STATS_SUBJECT_PREFIX}.release.{_token('period', period.lower())}"


SHARES_STREAM: Final = "CBCM_SHARES"
"""The JetStream stream of personal data shared with one agency, sealed to its public key.

Kept apart from ``CBCM_EVENTS`` so that the event messages carry no personal data at all, not
even encrypted, and so that shares can expire (``max_age``) where events are kept for ever."""

SHARE_SUBJECT_PREFIX: Final = "cbcm.v1.share"
SHARE_SUBJECTS: Final = f"{SHARE_SUBJECT_PREFIX}.>"
"""The subjects the ``CBCM_SHARES`` stream captures."""


def share_subject(agency: str, aggregate: str, event: str, record: str) -> str:
    """The subject personal data of ``record`` shared with ``agency`` by an event travels
    on, sealed (the record's id last, so that what was shared of one record can be withdrawn
    from the stream when its personal data is erased).

    >>> share_subject("unicef", "case", "transferred", "6f1e0c52-4a57-4d0e-9c86-1b7f3d2e9a44")
    'cbcm.v1.share.unicef.case.transferred.6f1e0c52-4a57-4d0e-9c86-1b7f3d2e9a44'
    """
    return ".".join(
        (
            SHARE_SUBJECT_PREFIX,
            _token("agency", agency),
            _token("aggregate", aggregate),
            _token("event", event),
            _token("record", record),
        )
    )


def record_shares(aggregate: str, event: str, record: str) -> str:
    """The filter matching what ``event`` shared of ``record`` with any agency.

    >>> record_shares("case", "transferred", "6f1e0c52-4a57-4d0e-9c86-1b7f3d2e9a44")
    'cbcm.v1.share.*.case.transferred.6f1e0c52-4a57-4d0e-9c86-1b7f3d2e9a44'
    """
    return ".".join(
        (
            SHARE_SUBJECT_PREFIX,
            "*",
            _token("aggregate", aggregate),
            _token("event", event),
            _token("record", record),
        )
    )


def agency_share_subjects(agency: str) -> str:
    """The filter matching every share sealed for ``agency``."""
    return f"{SHARE_SUBJECT_PREFIX}.{_token('agency', agency)}.>"


NETWORK_AGENCY: Final = "network"
"""The agency token of the network's own events (registry, policy) in their subjects."""

NETWORK_AGGREGATES: Final = frozenset(
    {"network", "work_plan", "prevention_policy", "staff_contact", "notification"}
)
"""The aggregates whose events travel under ``network``: the registry and policy, the
network's prevention work plan and prevention policy (issue #22), staff contacts and the
notifications sent (issue #18). Every other aggregate's events travel under an agency."""
