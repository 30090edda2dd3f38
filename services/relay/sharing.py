"""Sealed shares (issue #6, ADR 7): what a custody step shares with another agency, sealed
to that agency's public key.

A transfer of a case to an agency, or the referral of its allegation to the implicated
agency's investigating entity, lets the recipient see some of the case's personal data: what
the step shared, identifying items only under the survivor's disclosure consent
(``domain.need_to_know.shared_fields``), plus a transfer's note. The relay reads those
values from the case *as it was at that event's version*, seals their JSON with libsodium's
``crypto_box_seal`` (PyNaCl ``SealedBox``) to the recipient's registered X25519 key and
publishes the result on ``cbcm.v1.share.<recipient>.case.<event>`` (stream ``CBCM_SHARES``).
A value that was erased (crypto-shredded: ``domain.personal_data.ERASED``) is not sent; the
share names the field as erased.

This module builds shares (``Sharer``, for the relay); ``services.relay.share_keys`` opens
them (``open_share``, for recipients) and keeps the recipients' private keys
(``write_private_key``, ``read_private_key``: PEM PKCS#8, the format ``openssl pkey``
reads). Nothing here logs a value: log lines name agency codes, positions and field names
only.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final, cast
from uuid import UUID

import structlog
from eventsourcing.application import AggregateNotFoundError

from contracts.catalogue import encode_message, schema_id
from contracts.envelope import CloudEvent
from contracts.shares import (
    CASE_SHARE_WITHDRAWN,
    CASE_SHARED,
    WITHDRAWN_EVENT,
    CaseSharedV1,
    CaseShareWithdrawnV1,
    SharedFieldsV1,
    SharingEvent,
    encode_shared_fields,
)
from contracts.subjects import share_subject
from domain.case import Case
from domain.need_to_know import shared_fields
from domain.network import NETWORK_ID, Network, ShareKey
from domain.personal_data import is_erased
from services.relay.routing import Router
from services.relay.share_keys import (
    seal,
)

log = structlog.get_logger()

NOTE: Final = "note"
"""The field path of a transfer's note in a share."""

SHARING_STEPS: Final[dict[type[Any], tuple[str, SharingEvent]]] = {
    Case.Transferred: ("transferred", "org.psea.cbcm.case.transferred.v1"),
    Case.ReferredForInvestigation: (
        "referred_for_investigation",
        "org.psea.cbcm.case.referred_for_investigation.v1",
    ),
}
"""The custody steps that share personal data: their subject token and contract type."""


# ---------------------------------------------------------------------------------- values


def _given(value: str | None) -> bool:
    return value is not None and bool(value.strip())


def _allegation_value(case: Case, name: str) -> str | None:
    allegation = None if case.assessment is None else case.assessment.allegation
    return None if allegation is None else cast(str | None, getattr(allegation, name))


def _person_value(case: Case, person: str, name: str) -> str | None:
    details = getattr(case, person)
    return None if details is None else cast(str | None, getattr(details, name))


def case_value(case: Case, path: str) -> str | None:
    """The value of one personal field of ``case`` by its API path (``shared_fields``'s
    names). An unknown path is a bug, not an absent value: ``LookupError``."""
    head, _, rest = path.partition(".")
    if head == "narrative" and not rest:
        return case.narrative
    if head in ("survivor", "complainant") and rest in ("name", "phone", "email", "address"):
        return _person_value(case, head, rest)
    if head == "allegation" and rest in ("alleged_perpetrator", "incident_place_detail"):
        return _allegation_value(case, rest)
    raise LookupError(f"no personal field {path!r} of a case to share")


@dataclass(frozen=True)
class ShareContent:
    """What one custody step shares with its recipient, before sealing."""

    recipient: str
    event: str
    """The subject token of the step (``transferred``, ``referred_for_investigation``)."""
    event_type: SharingEvent
    values: dict[str, str] = field(default_factory=dict)
    erased: tuple[str, ...] = ()

    @property
    def empty(self) -> bool:
        return not self.values and not self.erased


def share_content(case: Case, event: Any) -> ShareContent | None:
    """What ``event`` shares, read from ``case`` as it was right after it (its version);
    ``None`` for an event that shares nothing with another agency."""
    step = SHARING_STEPS.get(type(event))
    if step is None:
        return None
    token, event_type = step
    extra: dict[str, str | None] = {}
    if isinstance(event, Case.Transferred):
        recipient = str(event.to_agency)
        paths = shared_fields(case, event.shared)
        extra[NOTE] = event.note
    else:
        investigation = case.investigation
        assert investigation is not None, "a referred case has its investigation"
        recipient = investigation.agency
        paths = shared_fields(case, investigation.shared)
    candidates = {path: case_value(case, path) for path in sorted(paths)} | extra
    values: dict[str, str] = {}
    erased: list[str] = []
    for path, value in candidates.items():
        if value is None or not _given(value):
            continue
        if is_erased(value):
            erased.append(path)
        else:
            values[path] = value
    return ShareContent(recipient, token, event_type, values, tuple(erased))


def share_message(
    content: ShareContent,
    key: ShareKey,
    *,
    case_id: UUID,
    version: int,
    position: int,
    time: datetime,
    source: str,
) -> tuple[str, bytes]:
    """The subject and encoded CloudEvent of a share, sealed to ``key``."""
    sealed = seal(
        key.public_key,
        encode_shared_fields(
            SharedFieldsV1(
                case_id=case_id,
                version=version,
                event_type=content.event_type,
                recipient=content.recipient,
                values=content.values,
            )
        ),
    )
    message = CloudEvent(
        id=f"{case_id}:{version}:{content.recipient}",
        source=source,
        type=CASE_SHARED,
        time=time,
        subject=str(case_id),
        dataschema=schema_id(CASE_SHARED),
        position=position,
        data=CaseSharedV1(
            case_id=case_id,
            version=version,
            event_type=content.event_type,
            recipient=content.recipient,
            key_id=key.key_id,
            fields=tuple(sorted(content.values)),
            erased=tuple(sorted(content.erased)),
            sealed=base64.b64encode(sealed).decode("ascii"),
        ),
    )
    subject = share_subject(content.recipient, "case", content.event, str(case_id))
    return subject, encode_message(message)


# ---------------------------------------------------------------------------------- relay


@dataclass(frozen=True)
class Share:
    """A sealed share ready to publish."""

    subject: str
    payload: bytes
    key: ShareKey | None = field(default=None, compare=False, repr=False)
    """The recipient's key it was sealed to (the one registered when its step was recorded)."""


class ShareKeys:
    """Each agency's registered share key as of the event being relayed.

    Like the router, it is fed every published event in log order: the first time it is
    asked, it loads the network as it was just before that position, then follows the key
    registrations as they pass. A share is thus sealed to the key registered when its custody
    step was recorded, whenever the relay gets to it.
    """

    def __init__(self, app: Any, router: Router) -> None:
        self._app = app
        self._router = router
        self._keys: dict[str, ShareKey] | None = None

    def observe(self, event: Any) -> None:
        """Follow a registration (call for every published event, in log order)."""
        if self._keys is not None and isinstance(event, Network.AgencyShareKeyRegistered):
            self._keys[event.agency] = ShareKey(public_key=event.public_key, key_id=event.key_id)

    def key_of(self, agency: str, position: int) -> ShareKey | None:
        """``agency``'s key as of ``position`` (None: it had registered none)."""
        if self._keys is None:
            self._keys = self._load(position)
        return self._keys.get(agency)

    def _load(self, position: int) -> dict[str, ShareKey]:
        version = self._router.version_before(NETWORK_ID, position)
        try:
            network = self._app.repository.get(NETWORK_ID, version=version)
        except AggregateNotFoundError:
            return {}
        return {
            code: record.share_key
            for code, record in network.agencies.items()
            if record.share_key is not None
        }


class Sharer:
    """Builds the share of each custody step that shares personal data (for the relay; runs
    in its worker thread, since it reads the store)."""

    def __init__(self, app: Any, router: Router) -> None:
        self._app = app
        self.keys = ShareKeys(app, router)
        self.without_key = 0
        """How many shares were not sent because the recipient had no key (for tests, logs)."""
        self._told_without_key: set[str] = set()
        """Agencies whose missing key was logged, until they register one."""

    def share_of(self, event: Any, position: int, source: str) -> Share | None:
        """The share of the event stored at ``position``, if it shares personal data with a
        recipient that registered a key. Call for every published event, in log order.

        A step whose recipient has no key is counted as a share not sent (``without_key``),
        whatever it would have shared, and logged once per agency
        (``relay.share_without_key``, at its first position) and again only after the agency
        registered a key and is found without one once more."""
        self.keys.observe(event)
        if isinstance(event, Network.AgencyShareKeyRegistered):
            self._told_without_key.discard(event.agency)
        if type(event) not in SHARING_STEPS:
            return None
        # The recipient is named by the step itself: without its key nothing can be sealed,
        # and the case is not rebuilt (a backlog of transfers to agencies without keys cost
        # a case replay each).
        recipient = str(event.to_agency if isinstance(event, Case.Transferred) else event.agency)
        key = self.keys.key_of(recipient, position)
        if key is None:
            self.without_key += 1
            if recipient not in self._told_without_key:
                self._told_without_key.add(recipient)
                log.warning("relay.share_without_key", agency=recipient, position=position)
            return None
        case: Case = self._app.repository.get(event.originator_id, version=event.originator_version)
        content = share_content(case, event)
        if content is None or content.empty:
            return None
        return self._sealed(content, key, event, position, source)

    def reseal(self, share: Share, event: Any, position: int, source: str) -> Share | None:
        """``share`` sealed again, to the same key, from the store as it is now, its data
        keys read afresh: a share that waited (NATS down) across an erasure of the case
        carries what is left, not what was erased meanwhile."""
        keys = getattr(self._app, "data_keys", None)
        if keys is None or share.key is None:
            return share
        keys.forget_scope(event.originator_id)
        # the step itself (a transfer's note) is decoded afresh too
        fresh = next(
            iter(
                self._app.events.get(
                    event.originator_id,
                    gt=event.originator_version - 1,
                    lte=event.originator_version,
                )
            ),
            event,
        )
        case: Case = self._app.repository.get(event.originator_id, version=event.originator_version)
        content = share_content(case, fresh)
        if content is None or content.empty:
            return None
        return self._sealed(content, share.key, fresh, position, source)

    def _sealed(self, content: Any, key: ShareKey, event: Any, position: int, source: str) -> Share:
        subject, payload = share_message(
            content,
            key,
            case_id=event.originator_id,
            version=event.originator_version,
            position=position,
            time=event.timestamp,
            source=source,
        )
        return Share(subject, payload, key)


# ---------------------------------------------------------------------------------- opening


def withdrawal_notice(
    event: Any, *, recipient: str, position: int, source: str
) -> tuple[str, bytes]:
    """The subject and encoded CloudEvent telling ``recipient`` that what was shared with it
    of a case was withdrawn, after the case's personal data was erased (``event``)."""
    message = CloudEvent(
        id=f"{event.originator_id}:{event.originator_version}:withdrawn:{recipient}",
        source=source,
        type=CASE_SHARE_WITHDRAWN,
        time=event.timestamp,
        subject=str(event.originator_id),
        dataschema=schema_id(CASE_SHARE_WITHDRAWN),
        position=position,
        data=CaseShareWithdrawnV1(
            case_id=event.originator_id,
            version=event.originator_version,
            recipient=recipient,
            subjects=tuple(str(s) for s in event.subjects),  # type: ignore[misc]
            reason=str(event.reason),  # type: ignore[arg-type]
        ),
    )
    subject = share_subject(recipient, "case", WITHDRAWN_EVENT, str(event.originator_id))
    return subject, encode_message(message)
