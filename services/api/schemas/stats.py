"""Shapes of the statistics endpoints (issue #14)."""

from __future__ import annotations

from enum import StrEnum

from pydantic import BaseModel, Field

from contracts.statistics import PERIOD_PATTERN, RELEASE_ID_PATTERN

RELEASE_OR_PERIOD = r"^[0-9]{4}(-q[1-4]|-[0-9]{2})?(-v[1-9][0-9]{0,5})?$"
"""A release version (``2026-q1-v2``) or a release (``2026-q1``: its latest version)."""


class ReleaseFormat(StrEnum):
    json = "json"
    csv = "csv"
    xlsx = "xlsx"


class HeldBack(BaseModel):
    report: str
    reason: str


class ReleaseSummary(BaseModel):
    """One version of a statistics release, as listed."""

    id: str = Field(pattern=RELEASE_ID_PATTERN, examples=["2026-q1-v2"])
    period: str = Field(pattern=PERIOD_PATTERN, examples=["2026-Q1"])
    version: int = Field(ge=1)
    released_at: str
    supersedes: str | None
    latest: bool = Field(description="whether no later version of this release exists")
    held_back: list[HeldBack]


class ReleaseList(BaseModel):
    """Every release version, by period then version."""

    releases: list[ReleaseSummary]
