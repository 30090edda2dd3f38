"""Shapes shared by every resource: write answers, problems, codes."""

from __future__ import annotations

from datetime import date, timedelta
from typing import Annotated, Any
from uuid import UUID

from pydantic import (
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    WithJsonSchema,
)

CODE = r"^[a-z0-9][a-z0-9_-]{0,31}$"
USER = r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$"
AREA = r"^[A-Za-z0-9._-]{1,24}$"

Code = Annotated[str, Field(pattern=CODE, examples=["unhcr"])]
UserId = Annotated[str, Field(pattern=USER, examples=["fp-unhcr-1"])]
AreaCode = Annotated[str, Field(pattern=AREA, examples=["SO2201"])]
Text = Annotated[str, Field(min_length=1, max_length=20_000)]
ShortText = Annotated[str, Field(min_length=1, max_length=2_000)]

# Request bodies take what their schema says and nothing pydantic would coerce into it: a
# boolean is true or false (not 0, "yes"), an integer a JSON integer (not "3", true), a
# date, time or duration ISO 8601 text (not a number read as seconds since 1970).
Flag = Annotated[bool, Field(strict=True)]
Count = Annotated[int, Field(strict=True)]


def _iso_text(value: object) -> object:
    if isinstance(value, int | float):
        raise ValueError("expected ISO 8601 text, not a number")
    return value


Instant = Annotated[AwareDatetime, BeforeValidator(_iso_text)]
Day = Annotated[date, BeforeValidator(_iso_text)]
Duration = Annotated[timedelta, BeforeValidator(_iso_text)]


def iso_duration(value: timedelta) -> str:
    """``value`` as an RFC 3339 duration in days and seconds (``P366D``, ``PT90S``,
    ``P1DT3600S``). pydantic's own writes 366 days as ``P1Y1D``, which RFC 3339's grammar
    refuses (a year may only be followed by months), so strict clients failed on it."""
    days = value.days
    if not value.seconds and not value.microseconds:
        return f"P{days}D"
    seconds = str(value.seconds)
    if value.microseconds:  # exact: six digits, trailing zeros dropped (no float, no 1e-06)
        seconds += f".{value.microseconds:06d}".rstrip("0")
    return f"P{days}DT{seconds}S" if days else f"PT{seconds}S"


DurationOut = Annotated[
    timedelta,
    PlainSerializer(iso_duration, return_type=str, when_used="json"),
    WithJsonSchema({"type": "string", "format": "duration"}),
]
"""A duration in an answer: RFC 3339 text in days and seconds."""


class Body(BaseModel):
    """Every request body: unknown fields are refused, not silently dropped."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=False)


class CaseCommand(Body):
    """A command on an existing case or referral."""

    expected_version: Count | None = Field(
        default=None,
        ge=1,
        description="the version the decision was based on; refused with 409 if it moved on",
    )


class WrittenOut(BaseModel):
    """What a write recorded."""

    id: UUID = Field(description="the aggregate written (a new case, referral, feedback...)")
    version: int = Field(description="its version after the write")
    position: int = Field(
        description="store position of the write; pass it as ?after= to read your write"
    )
    receipt_code: str | None = Field(
        default=None,
        description="the receipt code for the complainant (only when one was issued; shown "
        "once, never stored in clear)",
    )

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "id": "0f8fad5b-d9cb-469f-a165-70867728950e",
                    "version": 3,
                    "position": 1289,
                }
            ]
        }
    )


class ProblemOut(BaseModel):
    """RFC 9457 problem details."""

    type: str = "about:blank"
    title: str
    status: int
    detail: str
    instance: str | None = None
    current_version: int | None = Field(default=None, description="on 409 version conflicts")

    model_config = ConfigDict(extra="allow")


PROBLEM_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"model": ProblemOut, "content": {"application/problem+json": {}}, "description": d}
    for status, d in (
        (400, "bad request (e.g. a malformed Idempotency-Key)"),
        (401, "no valid bearer token"),
        (403, "the caller's role may not do this"),
        (404, "no such resource, or not visible to the caller"),
        (409, "refused by the state of the case (a business rule or a stale version)"),
        (422, "the request does not fit its schema or the domain's rules"),
        (503, "the event store or a read model is not available yet; retry"),
    )
}


class EmptyIn(Body):
    """No fields: the command is the whole request."""
