"""The statistics release message (issue #14): what ``cbcm.v1.stats.release.<period>`` and
``GET /v1/stats/releases/{id}`` carry.

One message is one version of the release of one closed period: every report of that period
in the shape ``cbcm stats export --format json`` has always had, with a ``release`` object
beside them. Withheld counts are ``null`` with ``suppressed`` true; the protection guarantee
and its method are in ``docs/statistics.md``.
"""

from __future__ import annotations

from typing import Annotated, Any, Final

import msgspec

from contracts.schema_documents import struct_schema

RELEASE_SCHEMA: Final = "org.psea.cbcm.stats.release.v1"
"""The name of the release message's JSON Schema (a release is not a CloudEvent: it is
published as it is kept)."""

RELEASE_ID_PATTERN: Final = r"^[0-9]{4}(-q[1-4]|-[0-9]{2})?-v[1-9][0-9]*$"
"""``2026-q1-v2``, ``2026-03-v1``, ``2026-v1``: the period in lower case, then the version."""
PERIOD_PATTERN: Final = r"^[0-9]{4}(-Q[1-4]|-[0-9]{2})?$"
"""``2026-Q1``, ``2026-03`` or ``2026``."""

Count = Annotated[int, msgspec.Meta(ge=0)]


class StatisticsCellV1(msgspec.Struct, frozen=True, kw_only=True):
    """One published count: ``value`` is null exactly when ``suppressed`` is true."""

    value: Count | None
    suppressed: bool


class StatisticsReportV1(msgspec.Struct, frozen=True, kw_only=True):
    """One two-way table with its row totals, column totals and grand total."""

    report: str
    description: str
    rows_are: str
    columns_are: str
    suppression_threshold: Annotated[int, msgspec.Meta(ge=2)]
    rows: list[str]
    columns: list[str]
    cells: list[list[StatisticsCellV1]]
    row_totals: list[StatisticsCellV1]
    column_totals: list[StatisticsCellV1]
    total: StatisticsCellV1


class ReleaseProtectionV1(msgspec.Struct, frozen=True, kw_only=True):
    """The protection levels: a withheld count cannot be bounded above below its value plus
    ``upper``, nor below above its value minus ``lower`` (or zero)."""

    upper: Annotated[int, msgspec.Meta(ge=1)]
    lower: Annotated[int, msgspec.Meta(ge=1)]
    method: str


class HeldBackV1(msgspec.Struct, frozen=True, kw_only=True):
    """A report of the release whose every non-zero count is withheld, and why."""

    report: str
    reason: str


class ReleaseV1(msgspec.Struct, frozen=True, kw_only=True):
    """Which release, which version, and how it was protected."""

    id: Annotated[str, msgspec.Meta(pattern=RELEASE_ID_PATTERN)]
    period: Annotated[str, msgspec.Meta(pattern=PERIOD_PATTERN)]
    months: list[str]
    version: Annotated[int, msgspec.Meta(ge=1)]
    supersedes: Annotated[str, msgspec.Meta(pattern=RELEASE_ID_PATTERN)] | None
    released_at: Annotated[
        str,
        msgspec.Meta(
            description="when this version was released (RFC 3339, UTC)",
            extra_json_schema={"format": "date-time"},
        ),
    ]
    suppression_threshold: Annotated[int, msgspec.Meta(ge=2)]
    protection: ReleaseProtectionV1
    held_back: list[HeldBackV1]


class StatisticsReleaseV1(msgspec.Struct, frozen=True, kw_only=True):
    """One version of a statistics release: the release, and its reports by name."""

    release: ReleaseV1
    reports: dict[str, StatisticsReportV1]


_DECODER = msgspec.json.Decoder(StatisticsReleaseV1)


def decode_release(raw: bytes) -> StatisticsReleaseV1:
    """A release message from its JSON; ``msgspec.ValidationError`` if it is not one."""
    return _DECODER.decode(raw)


def release_json_schema() -> dict[str, Any]:
    """The published JSON Schema of a release message."""
    return struct_schema(StatisticsReleaseV1, RELEASE_SCHEMA)
