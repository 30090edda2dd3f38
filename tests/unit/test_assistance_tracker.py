"""The survivor-assistance tracker: consents, referral statuses and times, and gaps."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from uuid import UUID, uuid4

import pytest

from contracts.actors import ActorRef
from contracts.assistance_referral import (
    AssistanceReferralAcceptedV1,
    AssistanceReferralDeclinedByProviderV1,
    AssistanceReferralDeliveredV1,
    AssistanceReferralFollowedUpV1,
    AssistanceReferralMadeV1,
)
from contracts.case import (
    CaseAssessedV1,
    CaseClosedV1,
    CaseConsentGivenV1,
    CaseConsentWithdrawnV1,
    CaseReopenedV1,
    CaseTransferredV1,
)
from contracts.network import NetworkPolicyV1, NetworkServiceProviderRegisteredV1
from projections.assistance import SERVICE_TYPES, AssistanceProjection, gaps, tracker
from projections.base import DEFAULT_POLICY
from tests.unit.projection_messages import COORDINATOR, NETWORK_ID, Feed, allegation, fp, hours

CLINIC = ActorRef(user="clinic-cw-1", agency="clinic", role="service_provider")


@pytest.fixture
def feed(tmp_path: Path) -> Feed:
    f = Feed(AssistanceProjection(), tmp_path / "assistance.sqlite3")
    f.send(
        NetworkServiceProviderRegisteredV1,
        hours(-100),
        NETWORK_ID,
        actor=COORDINATOR,
        code="clinic",
        name="Clinic",
        service_types=("medical", "psychosocial"),
        areas=("SS0101", "SS0102"),
    )
    f.send(
        NetworkServiceProviderRegisteredV1,
        hours(-99),
        NETWORK_ID,
        actor=COORDINATOR,
        code="everything",
        name="Everything but legal",
        service_types=tuple(s for s in SERVICE_TYPES if s != "legal"),
        areas=("SS0102",),
    )
    return f


def sea_case(feed: Feed, area: str = "SS0101", at_h: float = 0) -> UUID:
    case = feed.receive(hours(at_h))
    feed.send(
        CaseAssessedV1,
        hours(at_h + 1),
        case,
        actor=fp("unhcr"),
        category="sea_allegation",
        allegation=allegation(incident_area=area),
    )
    return case


def consent(feed: Feed, case: UUID, at_h: float, kind: str = "assistance_referral") -> None:
    feed.send(
        CaseConsentGivenV1,
        hours(at_h),
        case,
        actor=fp("unhcr"),
        kind=kind,
        given_by="survivor",
        contact_methods=("phone",) if kind == "contact" else (),
    )


def refer(feed: Feed, case: UUID, at_h: float, service: str = "medical") -> UUID:
    referral = uuid4()
    feed.send(
        AssistanceReferralMadeV1,
        hours(at_h),
        referral,
        actor=fp("unhcr"),
        case_id=case,
        service_type=service,
        provider="clinic",
        area="SS0101",
        contact_shared=False,
    )
    return referral


def test_a_case_shows_its_consents_and_each_referral_status_with_its_time(feed: Feed) -> None:
    case = sea_case(feed)
    consent(feed, case, 2)
    consent(feed, case, 2.5, "contact")
    medical = refer(feed, case, 3)
    psychosocial = refer(feed, case, 4, "psychosocial")
    feed.send(AssistanceReferralAcceptedV1, hours(5), medical, actor=CLINIC)
    feed.send(AssistanceReferralDeliveredV1, hours(30), medical, actor=CLINIC)
    feed.send(AssistanceReferralFollowedUpV1, hours(80), medical, actor=fp("unhcr"), has_note=True)
    feed.send(
        AssistanceReferralDeclinedByProviderV1,
        hours(6),
        psychosocial,
        actor=CLINIC,
        reason_given=False,
    )
    feed.send(CaseConsentWithdrawnV1, hours(90), case, actor=fp("unhcr"), kind="contact")

    seen = tracker(feed.db, case, now=hours(100))
    assert seen is not None
    assert seen.area == "SS0101" and seen.agency == "unhcr" and seen.is_open
    assert [(c.kind, c.given, c.at) for c in seen.consents] == [
        ("assistance_referral", True, hours(2)),
        ("contact", True, hours(2.5)),
        ("contact", False, hours(90)),
    ]
    assert seen.current_consents == {"assistance_referral": True, "contact": False}
    assert seen.assistance_consented
    first, second = seen.referrals
    assert (first.referral_id, first.status, first.status_at) == (medical, "followed_up", hours(80))
    assert [(s.status, s.at) for s in first.history] == [
        ("referred", hours(3)),
        ("accepted", hours(5)),
        ("delivered", hours(30)),
        ("followed_up", hours(80)),
    ]
    assert first.since_referral == timedelta(hours=97)
    assert (second.referral_id, second.status) == (psychosocial, "declined_by_provider")
    assert not first.acceptance_overdue and not second.acceptance_overdue


def test_a_consented_case_lacks_the_services_no_provider_offers_in_its_area(feed: Feed) -> None:
    sparse = sea_case(feed, "SS0101")
    covered = sea_case(feed, "SS0102")
    unconsented = sea_case(feed, "SS0101")
    consent(feed, sparse, 2)
    consent(feed, covered, 2)
    consent(feed, unconsented, 2, "identity_disclosure")

    now = hours(10)
    sparse_view = tracker(feed.db, sparse, now=now)
    assert sparse_view is not None
    missing = {g.service_type for g in sparse_view.gaps}
    assert missing == set(SERVICE_TYPES) - {"medical", "psychosocial"}
    assert {g.kind for g in sparse_view.gaps} == {"no_provider"}
    covered_view = tracker(feed.db, covered, now=now)
    assert covered_view is not None
    assert [(g.kind, g.service_type, g.area) for g in covered_view.gaps] == [
        ("no_provider", "legal", "SS0102")
    ]
    assert {(g.case_id, g.service_type) for g in gaps(feed.db, now=now)} == {
        (sparse, s) for s in missing
    } | {(covered, "legal")}

    # A withdrawn consent, or a closed case, has no pathway gap; a reopened one has again.
    feed.send(
        CaseConsentWithdrawnV1, hours(11), sparse, actor=fp("unhcr"), kind="assistance_referral"
    )
    feed.send(
        CaseClosedV1,
        hours(12),
        covered,
        actor=fp("unhcr"),
        reason="other",
        no_outcome_reason_given=True,
        no_feedback_reason_given=True,
    )
    assert gaps(feed.db, now=now) == []
    feed.send(CaseReopenedV1, hours(13), covered, actor=fp("unhcr"))
    assert [g.service_type for g in gaps(feed.db, now=now)] == ["legal"]


def test_a_referral_waiting_beyond_the_policy_is_a_gap(feed: Feed) -> None:
    case = sea_case(feed, "SS0102")  # every service but legal is on the pathway there
    consent(feed, case, 2)
    waiting = refer(feed, case, 3)
    answered = refer(feed, case, 3, "psychosocial")
    feed.send(AssistanceReferralAcceptedV1, hours(5), answered, actor=CLINIC)

    def late(now_h: float) -> list[tuple[str, UUID | None, timedelta | None]]:
        return [
            (g.kind, g.referral_id, g.waiting)
            for g in gaps(feed.db, now=hours(now_h))
            if g.kind == "not_accepted"
        ]

    assert late(3 + 72) == []  # exactly at the deadline: not yet late
    assert late(3 + 73) == [("not_accepted", waiting, timedelta(hours=73))]
    seen = tracker(feed.db, case, now=hours(76))
    assert seen is not None
    assert [(g.kind, g.referral_id) for g in seen.gaps if g.kind == "not_accepted"] == [
        ("not_accepted", waiting)
    ]
    assert [r.acceptance_overdue for r in seen.referrals] == [True, False]

    values = {f: getattr(DEFAULT_POLICY, f) for f in DEFAULT_POLICY.__struct_fields__}
    values["assistance_acceptance_within"] = timedelta(hours=200)
    feed.policy(hours(101), NetworkPolicyV1(**values))
    assert late(76) == []

    feed.send(AssistanceReferralAcceptedV1, hours(300), waiting, actor=CLINIC)
    assert late(400) == []


def test_gaps_follow_custody_and_an_unknown_case_is_none(feed: Feed) -> None:
    case = sea_case(feed)
    consent(feed, case, 2)
    feed.send(
        CaseTransferredV1,
        hours(3),
        case,
        actor=fp("unhcr"),
        from_agency="unhcr",
        to_agency="wfp",
        reason="capacity",
        shared=("allegation_summary",),
        has_note=False,
    )
    now = hours(4)
    assert gaps(feed.db, now=now, agency="unhcr") == []
    assert {g.case_id for g in gaps(feed.db, now=now, agency="wfp")} == {case}
    assert tracker(feed.db, UUID(int=5), now=now) is None


def test_a_case_without_an_incident_area_takes_its_referrals_area(feed: Feed) -> None:
    case = sea_case(feed, area=None)  # type: ignore[arg-type]
    consent(feed, case, 2)
    assert tracker(feed.db, case, now=hours(3)).gaps == ()  # type: ignore[union-attr]
    refer(feed, case, 3)
    seen = tracker(feed.db, case, now=hours(4))
    assert seen is not None and seen.area == "SS0101"
    assert {g.service_type for g in seen.gaps if g.kind == "no_provider"} == set(SERVICE_TYPES) - {
        "medical",
        "psychosocial",
    }
