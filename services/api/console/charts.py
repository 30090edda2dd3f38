"""Charts drawn on the server as SVG: readable without JavaScript, nothing from elsewhere.

Each chart is a horizontal bar chart (one bar per row: the row's label, its bar and its value
written out), with a ``<title>`` and a ``<desc>`` the page names through ``aria-labelledby``,
and the page puts the same numbers in a table next to it: the chart is for the eye, the table
for a screen reader and for copying.

A withheld value (a statistics cell suppressed to protect a small count) gets no bar and no
number: the word the caller gives ("withheld") is written where the value would be, so the
chart never shows more than the release published. Hand-written rather than a plotting
library: some fifty lines of SVG, no dependency to keep, and the output is exactly what the
tests read back.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final
from xml.sax.saxutils import escape, quoteattr

ROW_HEIGHT: Final = 26
BAR_HEIGHT: Final = 18
BAR_AREA: Final = 300
"""Width of the longest bar, in SVG user units (the chart scales to the page's width)."""
CHAR_WIDTH: Final = 7.5
"""An estimate of one character's width at the chart's 13-unit font: labels get room for
their longest, up to LABEL_MAX characters (longer labels are cut with an ellipsis; the table
next to the chart has them whole)."""
LABEL_MAX: Final = 28
VALUE_ROOM: Final = 90
BAR_COLOUR: Final = "#1f5f8b"
TARGET_COLOUR: Final = "#b00020"
TEXT_COLOUR: Final = "#1a1a1a"


@dataclass(frozen=True)
class Bar:
    """One row of a chart: its label, its value (None: withheld) and an optional target
    drawn as a mark across the bar."""

    label: str
    value: float | None
    target: float | None = None


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


def _label(text: str) -> str:
    return text if len(text) <= LABEL_MAX else text[: LABEL_MAX - 1] + "…"


def bar_chart(
    *,
    chart_id: str,
    title: str,
    description: str,
    bars: Sequence[Bar],
    withheld: str,
    target_word: str = "",
) -> str:
    """An inline SVG bar chart of ``bars``. ``chart_id`` makes the ids of its title and
    description (unique on the page); ``withheld`` is written for a value that is None;
    ``target_word`` labels a bar's target ("target 40")."""
    label_room = int(max((len(_label(b.label)) for b in bars), default=4) * CHAR_WIDTH) + 12
    known = [v for b in bars for v in (b.value, b.target) if v is not None]
    top = max(known, default=0) or 1
    width = label_room + BAR_AREA + VALUE_ROOM
    height = max(len(bars), 1) * ROW_HEIGHT + 8
    title_id, desc_id = f"{chart_id}-title", f"{chart_id}-desc"
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" role="img" class="chart" '
        f'aria-labelledby="{title_id} {desc_id}" viewBox="0 0 {width} {height}" '
        f'width="{width}" height="{height}" font-family="sans-serif" font-size="13">',
        f'<title id="{title_id}">{escape(title)}</title>',
        f'<desc id="{desc_id}">{escape(description)}</desc>',
    ]
    for i, bar in enumerate(bars):
        y = 4 + i * ROW_HEIGHT
        text_y = y + BAR_HEIGHT - 4
        value_attr = "" if bar.value is None else _number(bar.value)
        parts.append(f'<g class="bar" data-label={quoteattr(bar.label)} data-value="{value_attr}">')
        parts.append(
            f'<text x="{label_room - 6}" y="{text_y}" text-anchor="end" '
            f'fill="{TEXT_COLOUR}">{escape(_label(bar.label))}</text>'
        )
        if bar.value is None:
            parts.append(
                f'<text x="{label_room + 4}" y="{text_y}" fill="{TEXT_COLOUR}" '
                f'font-style="italic">{escape(withheld)}</text>'
            )
        else:
            length = round(BAR_AREA * max(bar.value, 0) / top, 1)
            parts.append(
                f'<rect x="{label_room}" y="{y}" width="{length}" height="{BAR_HEIGHT}" '
                f'fill="{BAR_COLOUR}"/>'
            )
            parts.append(
                f'<text x="{label_room + length + 6}" y="{text_y}" fill="{TEXT_COLOUR}">'
                f"{_number(bar.value)}</text>"
            )
        if bar.target is not None:
            at = round(label_room + BAR_AREA * max(bar.target, 0) / top, 1)
            parts.append(
                f'<line class="target" x1="{at}" x2="{at}" y1="{y - 2}" y2="{y + BAR_HEIGHT + 2}" '
                f'stroke="{TARGET_COLOUR}" stroke-width="3" data-target="{_number(bar.target)}">'
                f"<title>{escape(target_word)} {_number(bar.target)}</title></line>"
            )
        parts.append("</g>")
    parts.append("</svg>")
    return "".join(parts)  # every text above is escaped: the page inserts it as it is
