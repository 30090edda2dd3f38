"""Random small statistics read models for the release and attacker tests (issue #14):
cases written straight into the statistics read model's rows, as known at each run (late
cases arrive at a later run, duplicates are found at a later run)."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass

from hypothesis import strategies as st

from projections.stats import StatisticsProjection
from projections.stats.projection import quarter_of
from projections.stats.reports import case_status

MONTHS = [f"2026-{m:02d}" for m in range(1, 7)]
AGENCIES = ["unhcr", "wfp", "unicef"]
# Skewed on purpose: most cases fall in a few values, so small cells are everywhere.
SKEWED_CATEGORY = (
    ["sea_allegation"] * 6
    + ["other_sensitive"] * 2
    + [
        "non_sensitive_feedback",
        "not_yet_assessed",
    ]
)
SKEWED_TYPE = ["sexual_exploitation"] * 5 + ["sexual_abuse"] * 3 + ["other", "unknown"]
CHANNELS = ["hotline"] * 6 + ["sms_messaging"] * 2 + ["in_person", "complaint_box", "email"]
VICTIMS = ["women"] * 5 + ["girls"] * 3 + ["men", "boys", "unknown"]
SUBTYPES = ["unspecified"] * 4 + [
    "transactional_sex",
    "rape",
    "solicitation",
    "sexual_activity_with_child",
]
PERSONNEL = ["un_staff"] * 3 + ["implementing_partner_personnel"] * 2 + ["other"]
BANDS = ["0-3_days"] * 3 + ["over_1_month", "unknown", "6-14_days"]
LISTED_AREAS = ["SO22", "SO23"]
"""The areas the test network works in; ``XX99`` is an area outside the list."""
AREAS = ["SO22"] * 4 + ["SO23"] * 2 + ["XX99", None]
# (referred, acknowledged, outcome, closed)
PROGRESS = [
    (0, 0, None, 0),
    (1, 0, None, 0),
    (1, 1, None, 0),
    (1, 1, "substantiated", 1),
    (0, 0, None, 1),
]


TYPE_OF_SUBTYPE = {
    "transactional_sex": "sexual_exploitation",
    "exploitative_relationship": "sexual_exploitation",
    "solicitation": "sexual_exploitation",
    "rape": "sexual_abuse",
    "sexual_assault": "sexual_abuse",
    "sexual_activity_with_child": "sexual_abuse",
}
CHILD_VICTIMS = {"girls", "boys", "unknown_child"}


@dataclass
class Case:
    id: str
    month: str
    category: str
    allegation_type: str
    subtype: str
    channel: str
    implicated_agency: str
    personnel_category: str
    victim_category: str
    child: bool
    time_to_report: str
    progress: tuple[int, int, str | None, int]
    arrives: int  # 0: before the first release; 1, 2: late, before each later run
    duplicate_found: int | None  # found to be a duplicate before run 1 or 2, or never
    area: str | None = None

    def __post_init__(self) -> None:
        """Keep the domain's rules (``domain.case.Allegation.check``), as recorded cases do:
        a subtype belongs to its allegation type (else none is given), and a child victim or
        sexual activity with a child means a child is involved."""
        if self.subtype != "unspecified" and TYPE_OF_SUBTYPE[self.subtype] != self.allegation_type:
            self.subtype = "unspecified"
        if self.victim_category in CHILD_VICTIMS or self.subtype == "sexual_activity_with_child":
            self.child = True

    def facts(self, run: int) -> dict[str, str]:
        """The case as the attacker's ``count`` reads it, as known at ``run``."""
        duplicate = self.duplicate_found is not None and self.duplicate_found <= run
        facts = {
            "population": "duplicate" if duplicate else "incidents",
            "category": self.category,
            "month": self.month,
            "quarter": quarter_of(self.month),
        }
        if self.category == "sea_allegation":
            facts.update(
                allegation_type=self.allegation_type,
                subtype=self.subtype,
                channel=self.channel,
                implicated_agency=self.implicated_agency,
                personnel_category=self.personnel_category,
                victim_category=self.victim_category,
                child_involved="child_involved" if self.child else "no_child_involved",
                time_to_report=self.time_to_report,
                incident_area=(
                    "unknown"
                    if self.area is None
                    else self.area
                    if self.area in LISTED_AREAS
                    else "other_area"
                ),
                status=case_status(
                    referred=bool(self.progress[0]),
                    acknowledged=bool(self.progress[1]),
                    outcome=self.progress[2],
                    closed=bool(self.progress[3]),
                ),
            )
        return facts


@st.composite
def networks(draw: st.DrawFn, max_cases: int = 80) -> list[Case]:
    n = draw(st.integers(min_value=5, max_value=max_cases))
    months = draw(st.lists(st.sampled_from(MONTHS), min_size=1, max_size=4, unique=True))
    cases = []
    for i in range(n):
        cases.append(
            Case(
                id=f"case-{i}",
                month=draw(st.sampled_from(months)),
                category=draw(st.sampled_from(SKEWED_CATEGORY)),
                allegation_type=draw(st.sampled_from(SKEWED_TYPE)),
                subtype=draw(st.sampled_from(SUBTYPES)),
                channel=draw(st.sampled_from(CHANNELS)),
                implicated_agency=draw(st.sampled_from([*AGENCIES, AGENCIES[0], "unknown"])),
                personnel_category=draw(st.sampled_from(PERSONNEL)),
                victim_category=draw(st.sampled_from(VICTIMS)),
                child=draw(st.booleans()),
                time_to_report=draw(st.sampled_from(BANDS)),
                progress=draw(st.sampled_from(PROGRESS)),
                arrives=draw(st.sampled_from([0, 0, 0, 0, 0, 1, 2])),
                duplicate_found=draw(st.sampled_from([None] * 8 + [1, 2])),
                area=draw(st.sampled_from(AREAS)),
            )
        )
    return cases


def nullable(value: str, *absent: str) -> str | None:
    return None if value in absent else value


def store(db: sqlite3.Connection, cases: Sequence[Case], run: int) -> None:
    """Bring the read model to what is known at ``run``."""
    for case in cases:
        if case.arrives > run:
            continue
        sea = case.category == "sea_allegation"
        referred, acknowledged, outcome, closed = case.progress
        db.execute(
            "INSERT OR REPLACE INTO stats_case (case_id, received_on, received_month, channel, "
            "category, allegation_type, subtype, child_involved, implicated_agency, "
            "personnel_category, victim_category, time_to_report, is_duplicate, referred, "
            "acknowledged, outcome, closed, incident_area) "
            "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
            (
                case.id,
                f"{case.month}-10",
                case.month,
                case.channel,
                nullable(case.category, "not_yet_assessed"),
                case.allegation_type if sea else None,
                nullable(case.subtype, "unspecified") if sea else None,
                int(case.child) if sea else None,
                nullable(case.implicated_agency, "unknown") if sea else None,
                case.personnel_category if sea else None,
                case.victim_category if sea else None,
                case.time_to_report if sea else None,
                int(case.duplicate_found is not None and case.duplicate_found <= run),
                referred,
                acknowledged,
                outcome,
                closed,
                case.area if sea else None,
            ),
        )


def model(threshold: int) -> sqlite3.Connection:
    db = sqlite3.connect(":memory:")
    StatisticsProjection().create_tables(db)
    for agency in AGENCIES:
        db.execute("INSERT INTO stats_agency (code) VALUES (?)", (agency,))
    for area in LISTED_AREAS:
        db.execute("INSERT INTO stats_area (code) VALUES (?)", (area,))
    db.execute("INSERT INTO stats_policy (id, suppression_threshold) VALUES (1, ?)", (threshold,))
    return db
