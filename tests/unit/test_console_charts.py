"""The console's SVG charts (issue #21): well-formed, labelled for assistive technology, and
their numbers are the release's own: a withheld cell is drawn as withheld, never with a bar or
a number."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from services.api.console.charts import Bar, bar_chart
from services.api.console.figures import release_tables
from services.statistics.releases import ledger_path, list_releases, open_ledger, release_due
from tests.statistics_cases import model, store
from tests.unit.test_statistics_releases import CASES, POLICY

SVG = "{http://www.w3.org/2000/svg}"


def _released(tmp_path: Path) -> list[dict[str, Any]]:
    db = model(5)
    store(db, CASES, 0)
    with open_ledger(ledger_path(tmp_path)) as ledger:
        release_due(db, ledger, POLICY, datetime(2026, 8, 15, tzinfo=UTC))
        return [json.loads(json.dumps(v.document)) for v in list_releases(ledger)]


def _bars(svg: str) -> list[tuple[str, str, bool, str]]:
    """(label, data-value, has a bar, the text written after the label) of each bar."""
    root = ET.fromstring(svg)
    found = []
    for g in root.iter(f"{SVG}g"):
        texts = [t.text or "" for t in g.findall(f"{SVG}text")]
        found.append(
            (
                g.attrib["data-label"],
                g.attrib["data-value"],
                g.find(f"{SVG}rect") is not None,
                texts[1],
            )
        )
    return found


def _labelled(svg: str) -> None:
    root = ET.fromstring(svg)
    assert root.attrib["role"] == "img"
    title, desc = root.find(f"{SVG}title"), root.find(f"{SVG}desc")
    assert title is not None and title.text
    assert desc is not None and desc.text
    assert root.attrib["aria-labelledby"] == f"{title.attrib['id']} {desc.attrib['id']}"


def test_every_report_of_a_release_is_drawn_with_the_releases_own_totals(
    tmp_path: Path,
) -> None:
    # given the published releases of a network with small cells
    documents = _released(tmp_path)
    assert documents
    withheld_seen = 0
    for document in documents:
        # when they are drawn
        tables = release_tables(document, lambda s: s)
        assert [t.name for t in tables] == sorted(document["reports"])
        for table in tables:
            report = document["reports"][table.name]
            # then each chart is well-formed SVG, labelled, one bar per row
            _labelled(table.chart)
            bars = _bars(table.chart)
            assert [b[0] for b in bars] == report["rows"]
            for (label, value, has_bar, text), total in zip(
                bars, report["row_totals"], strict=True
            ):
                if total["suppressed"]:
                    # a withheld total: no bar, no number, the word
                    withheld_seen += 1
                    assert (value, has_bar, text) == ("", False, "withheld"), label
                else:
                    assert value == text == str(total["value"]), label
                    assert has_bar
            # and the table holds the same values as the release, withheld ones empty
            for i, (_, cells, total) in enumerate(table.rows):
                assert [c.value for c in cells] == [
                    None if c["suppressed"] else c["value"] for c in report["cells"][i]
                ]
                assert total.suppressed == report["row_totals"][i]["suppressed"]
    assert withheld_seen > 0, "the test network must have withheld totals to check"


def test_a_cell_marked_suppressed_is_drawn_withheld_even_with_a_value_in_the_document(
    tmp_path: Path,
) -> None:
    # given a document that (wrongly) keeps a value beside the suppressed flag
    document = _released(tmp_path)[0]
    name = sorted(document["reports"])[0]
    document["reports"][name]["row_totals"][0] = {"value": 2, "suppressed": True}
    # when it is drawn, then the value is neither drawn nor written
    table = release_tables(document, lambda s: s)[0]
    _label, value, has_bar, text = _bars(table.chart)[0]
    assert (value, has_bar, text) == ("", False, "withheld")
    assert table.rows[0][2].value is None


@given(
    st.lists(
        st.tuples(
            st.text(min_size=1, max_size=40),
            st.one_of(st.none(), st.integers(min_value=0, max_value=10**6)),
        ),
        max_size=12,
    ),
    st.text(max_size=60),
)
def test_any_labels_and_values_make_well_formed_svg_with_those_values(
    rows: list[tuple[str, int | None]], title: str
) -> None:
    # XML 1.0 cannot carry most control characters at all: the labels are codes and words
    rows = [(label, value) for label, value in rows if label.isprintable()]
    title = "".join(c for c in title if c.isprintable())
    svg = bar_chart(
        chart_id="c",
        title=title or "t",
        description="d <b>&",
        bars=[Bar(label, value) for label, value in rows],
        withheld="withheld",
    )
    _labelled(svg)
    bars = _bars(svg)
    assert [b[0] for b in bars] == [label for label, _ in rows]
    assert [b[1] for b in bars] == ["" if v is None else str(v) for _, v in rows]
    assert "<script" not in svg.lower()


def test_a_label_cannot_inject_markup() -> None:
    svg = bar_chart(
        chart_id="c",
        title="</title><script>alert(1)</script>",
        description="x",
        bars=[Bar('"><script>alert(2)</script>', 3)],
        withheld="withheld",
    )
    root = ET.fromstring(svg)
    assert not list(root.iter(f"{SVG}script"))
    assert "<script>" not in svg


def test_a_target_is_drawn_as_a_mark_with_its_number() -> None:
    svg = bar_chart(
        chart_id="c",
        title="t",
        description="d",
        bars=[Bar("unhcr", 12, 40)],
        withheld="withheld",
        target_word="target",
    )
    line = ET.fromstring(svg).find(f".//{SVG}line")
    assert line is not None and line.attrib["data-target"] == "40"
