"""The statistics read model: what a coordinator reports to the HC, with nothing personal."""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import random
import sqlite3
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import msgspec
import pytest

from contracts.actors import ActorRef
from contracts.case import (
    AllegationV1,
    CaseAssessedV1,
    CaseClosedV1,
    CaseInvestigationAcknowledgedV1,
    CaseInvestigationOutcomeRecordedV1,
    CaseMarkedAsDuplicateV1,
    CaseReceivedV1,
    CaseReferredForInvestigationV1,
    CaseReopenedV1,
)
from contracts.catalogue import MESSAGE_TYPES, decode_message, encode_message
from contracts.envelope import CloudEvent, EventData
from contracts.feedback import FeedbackReceivedV1
from contracts.network import NetworkEstablishedV1, NetworkPolicySetV1, NetworkPolicyV1
from domain.personal_data import personal_data_paths
from projections.stats import (
    DEFAULT_THRESHOLD,
    Report,
    StatisticsProjection,
    UnknownCase,
    reports,
    threshold,
    to_csv,
    to_json,
)
from services.application.mechanism import ComplaintMechanism
from services.bootstrap import complaint_mechanism
from services.demo.walk import build_demo_network, walk_cases
from services.relay.translation import to_cloud_event
from services.settings import Settings

T0 = datetime(2026, 1, 10, 9, 0, tzinfo=UTC)
FOCAL_POINT = ActorRef(user="fp-unhcr-1", agency="unhcr", role="focal_point")
COORDINATOR = ActorRef(user="coord-1", agency="unhcr", role="coordinator")
TYPE_OF = {data_type: name for name, data_type in MESSAGE_TYPES.items()}


# ----------------------------------------------------------------------------- helpers


class Model:
    """A statistics model in memory, fed messages as a projector would feed them."""

    def __init__(self) -> None:
        self.db = sqlite3.connect(":memory:")
        self.projection = StatisticsProjection()
        self.projection.create_tables(self.db)
        self.versions: Counter[str] = Counter()

    def apply(self, data: EventData, *, at: datetime = T0) -> None:
        subject = str(next(v for v in msgspec.structs.asdict(data).values()))
        message: CloudEvent[Any] = CloudEvent(
            id=f"{subject}:{self.versions[subject] + 1}",
            source="test",
            type=TYPE_OF[type(data)],
            time=at,
            subject=subject,
            data=data,
        )
        self.versions[subject] += 1
        # Through the wire format, as the projector receives it.
        self.projection.apply(self.db, decode_message(encode_message(message)))

    def reports(self, k: int = 1) -> dict[str, Report]:
        return reports(self.db, k=k)


def row_totals(report: Report) -> dict[str, int | None]:
    return {row: cell.value for row, cell in zip(report.rows, report.row_totals, strict=True)}


def allegation(**changes: Any) -> AllegationV1:
    values: dict[str, Any] = {
        "allegation_type": "sexual_exploitation",
        "subtype": "transactional_sex",
        "child_involved": False,
        "implicated_agency": "wfp",
        "personnel_category": "un_staff",
        "incident_date": T0.date() - timedelta(days=2),
        "incident_area": "SS0101",
        "victim_sex": "female",
        "victim_age_band": "18+",
        "victim_category": "women",
    }
    values.update(changes)
    return AllegationV1(**values)


def receive(model: Model, *, at: datetime = T0, channel: str = "hotline") -> uuid.UUID:
    case_id = uuid.uuid4()
    model.apply(
        CaseReceivedV1(
            case_id=case_id,
            version=1,
            actor=FOCAL_POINT,
            received_at=at,
            channel=channel,  # type: ignore[arg-type]
            complainant_role="anonymous",
            immediate_safety_risk=False,
            has_complainant_details=False,
            has_survivor_details=False,
        ),
        at=at,
    )
    return case_id


def assess(
    model: Model, case_id: uuid.UUID, found: AllegationV1 | None = None, category: str = ""
) -> None:
    model.apply(
        CaseAssessedV1(
            case_id=case_id,
            version=2,
            actor=FOCAL_POINT,
            category=category or ("sea_allegation" if found else "other_sensitive"),  # type: ignore[arg-type]
            allegation=found,
        )
    )


def sea_case(model: Model, *, at: datetime = T0, **changes: Any) -> uuid.UUID:
    case_id = receive(model, at=at)
    assess(model, case_id, allegation(**changes))
    return case_id


def policy(suppression_threshold: int) -> NetworkPolicyV1:
    day = timedelta(days=1)
    return NetworkPolicyV1(
        assess_within=day,
        offer_assistance_within=day,
        refer_for_investigation_within=day,
        acknowledge_within=7 * day,
        feedback_every=30 * day,
        assistance_acceptance_within=7 * day,
        suppression_threshold=suppression_threshold,
        personal_data_retention=365 * day,
    )


# ----------------------------------------------------------------------------- hand-built


def test_an_incident_reported_twice_is_counted_once() -> None:
    # given an SEA allegation, and a second report of the same incident linked to it
    model = Model()
    original = sea_case(model)
    duplicate = sea_case(model)
    model.apply(
        CaseMarkedAsDuplicateV1(
            case_id=duplicate, version=3, actor=FOCAL_POINT, original_case_id=original
        )
    )

    # when the coordinator reads the reports
    got = model.reports()

    # then the incident counts once, in the SEA figures and in the complaints received
    assert got["allegation_type_by_quarter"].total.value == 1
    assert got["victim_category_by_quarter"].total.value == 1
    assert got["complaint_category_by_quarter"].total.value == 1


def test_only_cases_assessed_as_sea_allegations_enter_the_sea_figures() -> None:
    # given one SEA allegation, one other sensitive complaint and one not yet assessed
    model = Model()
    sea_case(model)
    assess(model, receive(model), None, "other_sensitive")
    receive(model)

    # when the reports are read
    got = model.reports()

    # then SEA reports count one case, the complaints report all three by category
    assert got["allegation_type_by_quarter"].total.value == 1
    assert got["status_by_quarter"].total.value == 1
    assert row_totals(got["complaint_category_by_quarter"]) == {
        "sea_allegation": 1,
        "other_sensitive": 1,
        "non_sensitive_feedback": 0,
        "not_yet_assessed": 1,
    }


def test_each_case_has_the_status_its_investigation_reached() -> None:
    # given SEA allegations at every stage of the workflow
    model = Model()
    sea_case(model)  # not referred yet
    referred = sea_case(model)
    acknowledged = sea_case(model)
    outcomes = {o: sea_case(model) for o in ("substantiated", "not_substantiated")}
    closed_unreferred = sea_case(model)
    reopened = sea_case(model)
    for case_id in (referred, acknowledged, *outcomes.values()):
        model.apply(
            CaseReferredForInvestigationV1(
                case_id=case_id,
                version=3,
                actor=FOCAL_POINT,
                agency="wfp",
                entity="wfp-oig",
                shared=("allegation_summary",),
                identity_shared=False,
            )
        )
    model.apply(CaseInvestigationAcknowledgedV1(case_id=acknowledged, version=4, actor=COORDINATOR))
    for outcome, case_id in outcomes.items():
        model.apply(
            CaseInvestigationOutcomeRecordedV1(
                case_id=case_id,
                version=4,
                actor=COORDINATOR,
                outcome=outcome,  # type: ignore[arg-type]
            )
        )
    for case_id in (closed_unreferred, reopened):
        model.apply(
            CaseClosedV1(
                case_id=case_id,
                version=3,
                actor=FOCAL_POINT,
                reason="insufficient_information",
                no_outcome_reason_given=True,
                no_feedback_reason_given=True,
            )
        )
    model.apply(CaseReopenedV1(case_id=reopened, version=4, actor=FOCAL_POINT))

    # when the status report is read
    statuses = row_totals(model.reports()["status_by_quarter"])

    # then each case is where its investigation stands; a reopened case is open again
    assert statuses == {
        "under_preliminary_assessment": 2,
        "referred_pending_investigation": 1,
        "under_investigation": 1,
        "substantiated": 1,
        "not_substantiated": 1,
        "closed_other_reasons": 1,
    }


def test_victims_are_counted_by_their_reporting_category() -> None:
    # given allegations about women, girls, a boy and an unknown child
    model = Model()
    for _ in range(2):
        sea_case(model)
    for _ in range(3):
        sea_case(
            model,
            victim_age_band="12-17",
            victim_category="girls",
            child_involved=True,
            allegation_type="sexual_abuse",
            subtype="sexual_activity_with_child",
        )
    sea_case(model, victim_sex="male", victim_age_band="0-11", victim_category="boys")
    sea_case(
        model,
        victim_sex="unknown",
        victim_age_band="unknown_child",
        victim_category="unknown_child",
    )

    # when the reports are read
    got = model.reports()

    # then the coordinator sees them by category, and the children involved
    victims = row_totals(got["victim_category_by_quarter"])
    assert victims == {
        "women": 2,
        "girls": 3,
        "men": 0,
        "boys": 1,
        "unknown_adult": 0,
        "unknown_child": 1,
        "unknown": 0,
    }
    assert row_totals(got["child_involved_by_quarter"]) == {
        "child_involved": 3,
        "no_child_involved": 4,
    }
    assert row_totals(got["allegation_type_by_quarter"])["sexual_abuse"] == 3


@pytest.mark.parametrize(
    ("days_before", "band"),
    [
        (0, "0-3_days"),
        (3, "0-3_days"),
        (4, "4-5_days"),
        (5, "4-5_days"),
        (6, "6-14_days"),
        (14, "6-14_days"),
        (15, "2_weeks-1_month"),
        (30, "2_weeks-1_month"),
        (31, "over_1_month"),
        (400, "over_1_month"),
        (None, "unknown"),
        (-2, "unknown"),
    ],
)
def test_time_from_incident_to_report_falls_in_its_band(days_before: int | None, band: str) -> None:
    # given an allegation whose incident was some days before the complaint was received
    model = Model()
    incident = None if days_before is None else T0.date() - timedelta(days=days_before)
    sea_case(model, incident_date=incident)

    # when the time-to-report report is read
    bands = row_totals(model.reports()["time_to_report_by_quarter"])

    # then the case is in its band and nowhere else
    assert bands[band] == 1
    assert sum(v or 0 for v in bands.values()) == 1


def test_a_reassessment_replaces_the_earlier_one() -> None:
    # given a case assessed as SEA, closed, reopened and assessed as other sensitive
    model = Model()
    case_id = sea_case(model)
    model.apply(CaseReopenedV1(case_id=case_id, version=3, actor=FOCAL_POINT))
    assess(model, case_id, None, "other_sensitive")

    # when the reports are read
    got = model.reports()

    # then it is no longer in the SEA figures
    assert got["allegation_type_by_quarter"].total.value == 0
    assert row_totals(got["complaint_category_by_quarter"])["other_sensitive"] == 1


def test_cases_are_counted_in_the_quarter_and_month_they_were_received() -> None:
    # given allegations received in January, March and May, none in April
    model = Model()
    for month in (1, 3, 3, 5):
        sea_case(model, at=datetime(2026, month, 15, tzinfo=UTC))

    # when the reports are read
    got = model.reports()

    # then quarters and months span the period without gaps
    by_quarter = got["allegation_type_by_quarter"]
    assert by_quarter.columns == ("2026-Q1", "2026-Q2")
    assert [c.value for c in by_quarter.column_totals] == [3, 1]
    by_month = got["sea_by_month"]
    assert by_month.columns == ("2026-01", "2026-02", "2026-03", "2026-04", "2026-05")
    assert [c.value for c in by_month.column_totals] == [1, 0, 2, 0, 1]


def test_feedback_is_counted_by_type_sector_and_agency() -> None:
    # given non-sensitive feedback for two agencies
    model = Model()
    for category, sector, agency in (
        ("service_complaint", "wash", "unicef"),
        ("service_complaint", "wash", "unicef"),
        ("information_request", "food_security", "wfp"),
        ("appreciation", "health", "unicef"),
    ):
        model.apply(
            FeedbackReceivedV1(
                feedback_id=uuid.uuid4(),
                version=1,
                actor=FOCAL_POINT,
                channel="complaint_box",
                category=category,  # type: ignore[arg-type]
                sector=sector,  # type: ignore[arg-type]
                concerned_agency=agency,
                source_case_id=None,
            )
        )

    # when the feedback reports are read
    got = model.reports()

    # then they are counted by type and sector, and by agency, apart from SEA figures
    by_sector = got["feedback_by_category_and_sector"]
    wash = by_sector.columns.index("wash")
    complaint = by_sector.rows.index("service_complaint")
    assert by_sector.cells[complaint][wash].value == 2
    assert by_sector.total.value == 4
    assert row_totals(got["feedback_by_agency"]) == {"unicef": 3, "wfp": 1}
    assert got["allegation_type_by_quarter"].total.value == 0


def test_the_threshold_is_the_networks_latest_policy() -> None:
    # given no policy yet
    model = Model()
    assert threshold(model.db) == DEFAULT_THRESHOLD
    network_id = uuid.uuid4()

    # when the network is established with 3, then its policy set to 7
    model.apply(
        NetworkEstablishedV1(
            network_id=network_id, version=1, actor=COORDINATOR, name="N", policy=policy(3)
        )
    )
    established = threshold(model.db)
    model.apply(
        NetworkPolicySetV1(network_id=network_id, version=2, actor=COORDINATOR, policy=policy(7))
    )

    # then the threshold follows the policy
    assert (established, threshold(model.db)) == (3, 7)


def test_small_counts_in_reports_are_withheld_and_never_carried() -> None:
    # given three allegations in one quarter
    model = Model()
    for _ in range(3):
        sea_case(model)

    # when the reports are made with a threshold of 5
    report = model.reports(k=5)["allegation_type_by_quarter"]

    # then the 3 is null with its flag, in the cell and in every total
    assert report.total.value is None and report.total.suppressed
    row = report.rows.index("sexual_exploitation")
    assert report.cells[row][0].value is None and report.cells[row][0].suppressed
    exported = to_csv({"r": report}) + to_json({"r": report})
    assert ",3," not in exported and '"value": 3' not in exported


def test_a_fact_about_a_case_never_received_stops_the_projection() -> None:
    # given an empty model
    model = Model()

    # when an assessment arrives for a case it never saw received
    # then it refuses, rather than drop the allegation from the figures
    with pytest.raises(UnknownCase):
        assess(model, uuid.uuid4(), allegation())


def test_dropped_tables_are_gone_and_can_be_created_again() -> None:
    # given a model with a case
    model = Model()
    sea_case(model)

    # when its tables are dropped and created again (a rebuild)
    model.projection.drop_tables(model.db)
    model.projection.create_tables(model.db)

    # then it starts empty
    assert model.reports()["allegation_type_by_quarter"].total.value == 0


# ----------------------------------------------------------------------------- a real run


@dataclass
class Run:
    app: ComplaintMechanism
    model: Model
    cases: dict[uuid.UUID, str]
    feedback: list[uuid.UUID]
    personal: set[str]


def _personal_values(value: object, paths: tuple[str, ...]) -> Iterator[str]:
    for path in paths:
        current: object = value
        for name in path.split("."):
            current = getattr(current, name, None)
        if isinstance(current, str):
            yield current
        elif dataclasses.is_dataclass(current):
            for f in dataclasses.fields(current):
                inner = getattr(current, f.name)
                if isinstance(inner, str):
                    yield inner


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Run]:
    """A demo network and 80 cases walked by the real application, every stored event
    translated as the relay does and applied to a statistics model."""
    tmp: Path = tmp_path_factory.mktemp("stats")
    settings = Settings(data_dir=tmp / "data", event_store=f"sqlite:///{tmp / 'events.sqlite3'}")
    app = complaint_mechanism(settings)
    start = datetime(2025, 9, 1, tzinfo=UTC)
    build_demo_network(app, start)
    walked = walk_cases(app, 80, random.Random(5), start + timedelta(hours=1))
    model = Model()
    personal: set[str] = set()
    for notification in app.recorder.select_notifications(start=1, limit=1_000_000):
        event = app.mapper.to_domain_event(notification)
        personal.update(_personal_values(event, personal_data_paths(type(event))))
        message = to_cloud_event(event, source="test", position=notification.id)
        model.projection.apply(model.db, decode_message(encode_message(message)))
    model.db.commit()
    yield Run(app, model, walked.cases, walked.feedback_items, personal)
    app.close()


def test_a_real_run_gives_the_coordinator_the_domains_own_counts(run: Run) -> None:
    # given the cases of a real run, as the domain itself holds them
    cases = [run.app.get_case(case_id) for case_id in run.cases]
    incidents = [c for c in cases if c.duplicate_of is None]
    sea = [c for c in incidents if c.is_sea_allegation]
    assert len(incidents) < len(cases), "the run should include duplicate reports"

    # when the coordinator reads the statistics (no suppression, to compare counts)
    got = run.model.reports(k=1)

    # then every count is the domain's, each incident counted once
    allegations = [c.assessment.allegation for c in sea if c.assessment and c.assessment.allegation]
    assert row_totals(got["status_by_quarter"]) == {
        status: sum(1 for c in sea if c.status.value == status)
        for status in got["status_by_quarter"].rows
    }
    assert row_totals(got["victim_category_by_quarter"]) == {
        category: sum(1 for a in allegations if a.victim_category.value == category)
        for category in got["victim_category_by_quarter"].rows
    }
    assert row_totals(got["allegation_type_by_quarter"]) == {
        kind: sum(1 for a in allegations if a.allegation_type.value == kind)
        for kind in got["allegation_type_by_quarter"].rows
    }
    assert row_totals(got["channel_by_quarter"]) == {
        channel: sum(1 for c in sea if c.channel.value == channel)
        for channel in got["channel_by_quarter"].rows
    }
    assert got["complaint_category_by_quarter"].total.value == len(incidents)
    for name in ("time_to_report_by_quarter", "implicated_agency_by_quarter", "sea_by_month"):
        assert got[name].total.value == len(sea)
    assert got["feedback_by_agency"].total.value == len(run.feedback)
    feedback = Counter(
        (f.category.value, f.sector.value) for f in map(run.app.get_feedback, run.feedback)
    )
    by_sector = got["feedback_by_category_and_sector"]
    for (category, sector), count in feedback.items():
        cell = by_sector.cells[by_sector.rows.index(category)][by_sector.columns.index(sector)]
        assert cell.value == count


def test_exports_of_a_real_run_hold_no_personal_data(run: Run) -> None:
    # given the personal data typed into the run (names, phones, narratives, notes, ...)
    personal = {value for value in run.personal if len(value.strip()) >= 5}
    assert any("Example" in value or "Sample" in value for value in personal)
    assert any(value.startswith("[DEMO]") for value in personal)

    # when the statistics are exported with the network's threshold
    got = run.model.reports(k=threshold(run.model.db))
    exported = to_csv(got) + to_json(got)

    # then no personal value, and no case or feedback identifier, is in the exports
    assert [value for value in personal if value in exported] == []
    identifiers = [str(i) for i in [*run.cases, *run.feedback]]
    assert [i for i in identifiers if i in exported] == []


def test_exports_of_a_real_run_are_consistent_csv_and_json(run: Run) -> None:
    # given the reports of a real run with the network's threshold (the demo's: 5)
    got = run.model.reports(k=threshold(run.model.db))

    # when exported both ways
    rows = list(csv.DictReader(io.StringIO(to_csv(got))))
    document = json.loads(to_json(got))["reports"]

    # then both carry every report, suppressed values empty/null with their flag
    assert set(document) == set(got) == {row["report"] for row in rows}
    assert any(row["suppressed"] == "true" for row in rows)
    for row in rows:
        assert (row["value"] == "") == (row["suppressed"] == "true")
    for report in document.values():
        for cell in [c for line in report["cells"] for c in line] + [report["total"]]:
            assert (cell["value"] is None) == cell["suppressed"]
    expected_cells = sum((len(r.rows) + 1) * (len(r.columns) + 1) for r in got.values())
    assert len(rows) == expected_cells
    # ... and they carry no generation time: the same model gives the same bytes
    assert to_csv(got) == to_csv(run.model.reports(k=threshold(run.model.db)))


def test_apply_leaves_the_transaction_to_the_runner() -> None:
    # given a model whose runner has applied one case and committed
    model = Model()
    sea_case(model)
    model.db.commit()

    # when a second case is applied and the runner rolls back instead of committing
    sea_case(model)
    model.db.rollback()

    # then only the committed case is there: apply never commits on its own
    assert model.reports()["allegation_type_by_quarter"].total.value == 1
