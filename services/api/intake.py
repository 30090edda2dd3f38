"""What the tools agencies already use send, as cbcm's own intake (issue #19, ADR 17).

Three shapes, each mapped onto the same request body the HTTP API takes at ``POST
/v1/cases`` (``ComplaintIn``) or ``POST /v1/feedback`` (``FeedbackIn``), so that what the
domain checks is checked once, the same way:

- **KoboToolbox** REST Services: one submission as Kobo posts it (question names as keys,
  group paths like ``grp_intake/narrative``, Kobo's own ``_uuid``, ``meta/instanceID``,
  ``end``, ``_submission_time`` and the rest).
- **RapidPro / TextIt** "Call webhook" action: the flow editor's default POST body
  (``contact``, ``flow``, ``results`` as ``{"value", "category"}``) with the run added
  (``run.uuid`` identifies the submission; the default body has no id of its own), or the
  legacy webhook payload (which has ``run``, ``path``, ``input``); results by their keys.
- **A hotline log**: records of a call log, as CSV with a header line or as JSON lines.

The question names, result keys and columns (``kind``, ``narrative``, ``complainant_role``...)
are documented in docs/integrator-guide.md; a form that uses them needs no code. Anything
else is refused with ``Malformed``, which names the fields at fault but never a value: a
value may be a survivor's name.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final, Literal

from pydantic import ValidationError

from domain.vocabulary import Channel
from services.api.schemas.cases import ComplaintIn, PersonIn
from services.api.schemas.feedback import FeedbackIn

Tool = Literal["kobo", "rapidpro", "hotline"]
Kind = Literal["complaint", "feedback"]

MOST_RECORDS: Final = 500
"""Records in one hotline log upload."""
LONGEST_ID: Final = 200

YES: Final = frozenset({"yes", "y", "true", "1", "oui", "si", "sí", "ndiyo"})
NO: Final = frozenset({"no", "n", "false", "0", "non", "hapana", ""})


class Malformed(ValueError):
    """A submission cbcm cannot record: ``reason`` is a fixed code (for the metric),
    ``fields`` the names at fault (never a value)."""

    def __init__(self, reason: str, detail: str, fields: tuple[str, ...] = ()) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail
        self.fields = fields


@dataclass(frozen=True)
class Submission:
    """One submission, mapped: what to record and the tool's id of it."""

    tool: Tool
    submission_id: str
    kind: Kind
    body: ComplaintIn | FeedbackIn
    issue_receipt: bool = False


# ------------------------------------------------------------------ shared


def _text(value: object, name: str) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise Malformed("invalid_value", f"{name} is not text", (name,))
    text = str(value).strip()
    return text or None


def _flag(value: object, name: str) -> bool:
    if isinstance(value, bool):
        return value
    text = (_text(value, name) or "").lower()
    if text in YES:
        return True
    if text in NO:
        return False
    raise Malformed("invalid_value", f"{name} is not yes or no", (name,))


def _instant(value: object, name: str) -> datetime | None:
    text = _text(value, name)
    if text is None:
        return None
    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise Malformed("invalid_value", f"{name} is not an ISO 8601 time", (name,)) from None
    # Kobo's _submission_time is UTC written without a zone.
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


def _submission_id(value: object, name: str) -> str:
    text = _text(value, name)
    if text is None:
        raise Malformed("missing_id", f"the submission has no {name}", (name,))
    if len(text) > LONGEST_ID:
        raise Malformed("invalid_value", f"{name} is longer than {LONGEST_ID}", (name,))
    return text


_SUBMITTED_AS = {"category": "feedback_category", "text": "feedback_text"}
"""Feedback fields under the names a form or a log gives them."""


def _fields_of(error: ValidationError) -> tuple[str, ...]:
    names = {".".join(str(p) for p in e.get("loc", ())) for e in error.errors()}
    return tuple(sorted(_SUBMITTED_AS.get(n, n) for n in names))


def _kind(value: object, name: str) -> Kind:
    text = (_text(value, name) or "").lower()
    if text == "complaint":
        return "complaint"
    if text == "feedback":
        return "feedback"
    if not text:
        raise Malformed("missing_field", f"{name} is missing", (name,))
    raise Malformed("unknown_kind", f"{name} is neither complaint nor feedback", (name,))


def build(
    tool: Tool,
    submission_id: str,
    fields: Mapping[str, object],
    *,
    channel: Channel,
    received_at: datetime | None,
    complainant: PersonIn | None = None,
    issue_receipt: bool = False,
) -> Submission:
    """A submission from the documented field names (``fields``: name -> value)."""
    kind = _kind(fields.get("kind"), "kind")
    try:
        if kind == "complaint":
            risk = fields.get("immediate_safety_risk")
            values: dict[str, object] = {
                "received_at": _instant(fields.get("received_at"), "received_at") or received_at,
                "channel": _text(fields.get("channel"), "channel") or channel,
                "complainant_role": _text(fields.get("complainant_role"), "complainant_role"),
                "immediate_safety_risk": False
                if risk is None
                else _flag(risk, "immediate_safety_risk"),
                "narrative": _text(fields.get("narrative"), "narrative"),
                "complainant": complainant,
            }
            body: ComplaintIn | FeedbackIn = ComplaintIn.model_validate(_given(values))
        else:
            values = {
                "channel": _text(fields.get("channel"), "channel") or channel,
                "category": _text(fields.get("feedback_category"), "feedback_category"),
                "sector": _text(fields.get("sector"), "sector"),
                "concerned_agency": _text(fields.get("concerned_agency"), "concerned_agency"),
                "text": _text(fields.get("feedback_text"), "feedback_text"),
            }
            body = FeedbackIn.model_validate(_given(values))
    except ValidationError as e:
        raise Malformed("invalid_value", "the submission does not fit", _fields_of(e)) from None
    return Submission(tool, submission_id, kind, body, issue_receipt and kind == "complaint")


def _given(values: dict[str, object]) -> dict[str, object]:
    """Only the values given: a missing one is reported as missing, under its own name."""
    return {k: v for k, v in values.items() if v is not None}


def _object(raw: bytes) -> dict[str, Any]:
    try:
        value = json.loads(raw)
    except (ValueError, UnicodeDecodeError, RecursionError):
        # RecursionError: a body nested thousands deep (attack review of #19)
        raise Malformed("malformed_json", "the body is not JSON") from None
    if not isinstance(value, dict):
        raise Malformed("malformed_json", "the body is not a JSON object")
    return value


# ------------------------------------------------------------------ KoboToolbox


def _kobo_fields(submission: Mapping[str, Any]) -> dict[str, object]:
    """Question names without their group path; Kobo's own keys (``_x``, ``meta/...``,
    ``formhub/...``) are not questions."""
    fields: dict[str, object] = {}
    for key, value in submission.items():
        if not isinstance(key, str) or key.startswith("_") or key.startswith(("meta/", "formhub/")):
            continue
        name = key.rsplit("/", 1)[-1]
        if name in fields:
            raise Malformed("ambiguous_field", f"question {name} appears twice", (name,))
        fields[name] = value
    return fields


def from_kobo(raw: bytes, *, channel: Channel) -> Submission:
    """A KoboToolbox REST Services submission (JSON)."""
    submission = _object(raw)
    instance = submission.get("meta/instanceID")
    if isinstance(instance, str) and instance.startswith("uuid:"):
        instance = instance[len("uuid:") :]
    submission_id = _submission_id(submission.get("_uuid") or instance, "_uuid")
    fields = _kobo_fields(submission)
    name, phone = (
        _text(fields.get("complainant_name"), "complainant_name"),
        _text(fields.get("complainant_phone"), "complainant_phone"),
    )
    complainant = None if name is None and phone is None else _person(name=name, phone=phone)
    received = _instant(submission.get("end"), "end") or _instant(
        submission.get("_submission_time"), "_submission_time"
    )
    return build(
        "kobo",
        submission_id,
        fields,
        channel=channel,
        received_at=received,
        complainant=complainant,
    )


def _person(**values: str | None) -> PersonIn:
    try:
        return PersonIn(**values)
    except ValidationError as e:
        raise Malformed("invalid_value", "contact details do not fit", _fields_of(e)) from None


# ------------------------------------------------------------------ RapidPro / TextIt


def _result(value: object) -> object:
    """A flow result: ``{"value": ..., "category": ...}`` in the default body, or plain."""
    if isinstance(value, dict):
        category = value.get("category")
        given = value.get("value")
        # a categorised answer ("Yes", "Survivor") is what the flow decided; the raw text
        # (what the person typed) is the value of a free-text result
        if isinstance(category, str) and category and category not in ("All Responses", "Other"):
            return category.lower().replace(" ", "_")
        return given
    return value


def from_rapidpro(raw: bytes) -> Submission:
    """A RapidPro/TextIt "Call webhook" POST: the default body with ``run`` added, or the
    legacy payload."""
    payload = _object(raw)
    run = payload.get("run")
    if not isinstance(run, dict):
        # The flow editor's default body has no run: the one line to add is in the guide.
        raise Malformed(
            "missing_id",
            'the payload has no run: add "run", object("uuid", run.uuid, "created_on", '
            "run.created_on) to the webhook's body",
            ("run",),
        )
    submission_id = _submission_id(run.get("uuid"), "run.uuid")
    results = payload.get("results")
    if not isinstance(results, dict):
        raise Malformed("missing_field", "the payload has no results", ("results",))
    fields = {str(k): _result(v) for k, v in results.items()}
    # free text stays as typed: a category would replace the narrative with "All Responses"
    for free in ("narrative", "feedback_text", "concerned_agency"):
        if isinstance(results.get(free), dict):
            fields[free] = results[free].get("value")
    complainant = None
    if fields.get("contact_me") is not None and _flag(fields.get("contact_me"), "contact_me"):
        contact = payload.get("contact")
        urn = contact.get("urn") if isinstance(contact, dict) else None
        phone = _text(urn, "contact.urn")
        if phone is None:
            raise Malformed("missing_field", "contact_me without a contact URN", ("contact.urn",))
        complainant = _person(phone=phone.split(":", 1)[-1])
    receipt = fields.get("receipt")
    return build(
        "rapidpro",
        submission_id,
        fields,
        channel=Channel.SMS_MESSAGING,
        received_at=_instant(run.get("created_on"), "run.created_on"),
        complainant=complainant,
        issue_receipt=receipt is not None and _flag(receipt, "receipt"),
    )


# ------------------------------------------------------------------ hotline log

HOTLINE_COLUMNS: Final = (
    "call_id",
    "received_at",
    "kind",
    "complainant_role",
    "immediate_safety_risk",
    "narrative",
    "feedback_category",
    "sector",
    "concerned_agency",
    "feedback_text",
    "channel",
)


def _records(raw: bytes, content_type: str) -> Iterator[tuple[int, Mapping[str, object]]]:
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise Malformed("malformed_log", "the log is not UTF-8 text") from None
    if content_type.startswith("text/csv"):
        reader = csv.DictReader(io.StringIO(text, newline=""))
        unknown = set(reader.fieldnames or ()) - set(HOTLINE_COLUMNS)
        if not reader.fieldnames or "call_id" not in reader.fieldnames or unknown:
            raise Malformed(
                "malformed_log", "the CSV header is not the hotline log's", tuple(sorted(unknown))
            )
        try:
            for row in reader:
                if None in row:  # more cells than the header names
                    raise Malformed("malformed_log", f"line {reader.line_num} has extra cells")
                yield reader.line_num, row
        except csv.Error:
            raise Malformed("malformed_log", "the CSV cannot be read") from None
        return
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except (ValueError, RecursionError):
            raise Malformed("malformed_log", f"line {number} is not JSON") from None
        if not isinstance(record, dict):
            raise Malformed("malformed_log", f"line {number} is not a JSON object")
        unknown = set(record) - set(HOTLINE_COLUMNS)
        if unknown:
            raise Malformed(
                "malformed_log", f"line {number} has unknown fields", tuple(sorted(unknown))
            )
        yield number, record


def from_hotline(raw: bytes, content_type: str) -> list[tuple[int, Submission]]:
    """Every record of a hotline log (CSV or JSON lines), each with its line number; all or
    nothing: one record that does not fit refuses the whole log (``Malformed`` names its
    line)."""
    out: list[tuple[int, Submission]] = []
    seen: set[str] = set()
    for number, record in _records(raw, content_type):
        if len(out) >= MOST_RECORDS:
            raise Malformed("too_many_records", f"a log holds at most {MOST_RECORDS} records")
        try:
            call_id = _submission_id(record.get("call_id"), "call_id")
            if call_id in seen:
                raise Malformed("duplicate_id", "a call_id appears twice", ("call_id",))
            seen.add(call_id)
            submission = build(
                "hotline",
                call_id,
                {k: v for k, v in record.items() if v != ""},
                channel=Channel.HOTLINE,
                received_at=None,
            )
        except Malformed as e:
            raise Malformed(e.reason, f"line {number}: {e.detail}", e.fields) from None
        out.append((number, submission))
    if not out:
        raise Malformed("empty_log", "the log holds no record")
    return out
