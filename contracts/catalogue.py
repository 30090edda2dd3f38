"""Every published message type, its ``data`` Struct and its JSON Schema.

``MESSAGE_TYPES`` is the one table of the published language: publishers look up the
``data`` layout of a type here, consumers decode with ``decode_message``, and
``cbcm contracts schema`` writes ``json_schemas()`` for integrators who do not use Python.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import msgspec

from contracts import audit, schema_documents, shares, statistics
from contracts.assistance_referral import (
    AssistanceReferralAcceptedV1,
    AssistanceReferralDeclinedByProviderV1,
    AssistanceReferralDeclinedBySurvivorV1,
    AssistanceReferralDeliveredV1,
    AssistanceReferralFollowedUpV1,
    AssistanceReferralMadeV1,
)
from contracts.case import (
    CaseAssessedV1,
    CaseAssistanceReferredV1,
    CaseClosedV1,
    CaseConsentGivenV1,
    CaseConsentWithdrawnV1,
    CaseFeedbackGivenV1,
    CaseFocalPointsAssignedV1,
    CaseInvestigationAcknowledgedV1,
    CaseInvestigationOutcomeRecordedV1,
    CaseMarkedAsDuplicateV1,
    CasePersonalDataErasedV1,
    CaseReceivedV1,
    CaseReferredForInvestigationV1,
    CaseReopenedV1,
    CaseTransferredV1,
)
from contracts.envelope import CloudEvent, EventData, message_type
from contracts.feedback import (
    FeedbackLoopClosedV1,
    FeedbackPersonalDataErasedV1,
    FeedbackReceivedV1,
    FeedbackRespondedV1,
)
from contracts.network import (
    NetworkAgencyRegisteredV1,
    NetworkAgencyShareKeyRegisteredV1,
    NetworkEstablishedV1,
    NetworkFocalPointAppointedV1,
    NetworkFocalPointWithdrawnV1,
    NetworkInvestigatingEntityDesignatedV1,
    NetworkPolicySetV1,
    NetworkServiceProviderRegisteredV1,
)
from contracts.notification import (
    NotificationGivenUpV1,
    NotificationSentV1,
    StaffContactChangedV1,
    StaffContactPersonalDataErasedV1,
    StaffContactRegisteredV1,
)
from contracts.prevention import (
    AwarenessActivityRecordedV1,
    AwarenessActivityWithdrawnV1,
    FocalPointReadinessAlternateAppointedV1,
    FocalPointReadinessAlternateWithdrawnV1,
    FocalPointReadinessOpenedV1,
    FocalPointReadinessTrainingCompletedV1,
    PreventionPolicyChangedV1,
    PreventionPolicySetV1,
    RiskAssessmentAssessedV1,
    RiskAssessmentMitigationAgreedV1,
    RiskAssessmentMitigationStatusChangedV1,
    RiskAssessmentReassessedV1,
    TrainingSessionRecordedV1,
    TrainingSessionWithdrawnV1,
    WorkPlanActivityPlannedV1,
    WorkPlanOpenedV1,
    WorkPlanProgressReportedV1,
)
from contracts.shares import SHARE_TYPES

MESSAGE_TYPES: dict[str, type[EventData]] = {
    message_type("case", "received"): CaseReceivedV1,
    message_type("case", "assessed"): CaseAssessedV1,
    message_type("case", "focal_points_assigned"): CaseFocalPointsAssignedV1,
    message_type("case", "transferred"): CaseTransferredV1,
    message_type("case", "consent_given"): CaseConsentGivenV1,
    message_type("case", "consent_withdrawn"): CaseConsentWithdrawnV1,
    message_type("case", "assistance_referred"): CaseAssistanceReferredV1,
    message_type("case", "referred_for_investigation"): CaseReferredForInvestigationV1,
    message_type("case", "investigation_acknowledged"): CaseInvestigationAcknowledgedV1,
    message_type("case", "investigation_outcome_recorded"): CaseInvestigationOutcomeRecordedV1,
    message_type("case", "feedback_given"): CaseFeedbackGivenV1,
    message_type("case", "marked_as_duplicate"): CaseMarkedAsDuplicateV1,
    message_type("case", "closed"): CaseClosedV1,
    message_type("case", "reopened"): CaseReopenedV1,
    message_type("case", "personal_data_erased"): CasePersonalDataErasedV1,
    message_type("assistance_referral", "made"): AssistanceReferralMadeV1,
    message_type("assistance_referral", "accepted"): AssistanceReferralAcceptedV1,
    message_type("assistance_referral", "declined_by_provider"): (
        AssistanceReferralDeclinedByProviderV1
    ),
    message_type("assistance_referral", "declined_by_survivor"): (
        AssistanceReferralDeclinedBySurvivorV1
    ),
    message_type("assistance_referral", "delivered"): AssistanceReferralDeliveredV1,
    message_type("assistance_referral", "followed_up"): AssistanceReferralFollowedUpV1,
    message_type("feedback", "received"): FeedbackReceivedV1,
    message_type("feedback", "responded"): FeedbackRespondedV1,
    message_type("feedback", "loop_closed"): FeedbackLoopClosedV1,
    message_type("feedback", "personal_data_erased"): FeedbackPersonalDataErasedV1,
    message_type("network", "established"): NetworkEstablishedV1,
    message_type("network", "policy_set"): NetworkPolicySetV1,
    message_type("network", "agency_registered"): NetworkAgencyRegisteredV1,
    message_type("network", "investigating_entity_designated"): (
        NetworkInvestigatingEntityDesignatedV1
    ),
    message_type("network", "focal_point_appointed"): NetworkFocalPointAppointedV1,
    message_type("network", "focal_point_withdrawn"): NetworkFocalPointWithdrawnV1,
    message_type("network", "service_provider_registered"): NetworkServiceProviderRegisteredV1,
    message_type("network", "agency_share_key_registered"): NetworkAgencyShareKeyRegisteredV1,
    message_type("training_session", "recorded"): TrainingSessionRecordedV1,
    message_type("training_session", "withdrawn"): TrainingSessionWithdrawnV1,
    message_type("awareness_activity", "recorded"): AwarenessActivityRecordedV1,
    message_type("awareness_activity", "withdrawn"): AwarenessActivityWithdrawnV1,
    message_type("focal_point_readiness", "opened"): FocalPointReadinessOpenedV1,
    message_type("focal_point_readiness", "alternate_appointed"): (
        FocalPointReadinessAlternateAppointedV1
    ),
    message_type("focal_point_readiness", "alternate_withdrawn"): (
        FocalPointReadinessAlternateWithdrawnV1
    ),
    message_type("focal_point_readiness", "training_completed"): (
        FocalPointReadinessTrainingCompletedV1
    ),
    message_type("risk_assessment", "assessed"): RiskAssessmentAssessedV1,
    message_type("risk_assessment", "reassessed"): RiskAssessmentReassessedV1,
    message_type("risk_assessment", "mitigation_agreed"): RiskAssessmentMitigationAgreedV1,
    message_type("risk_assessment", "mitigation_status_changed"): (
        RiskAssessmentMitigationStatusChangedV1
    ),
    message_type("work_plan", "opened"): WorkPlanOpenedV1,
    message_type("work_plan", "activity_planned"): WorkPlanActivityPlannedV1,
    message_type("work_plan", "progress_reported"): WorkPlanProgressReportedV1,
    message_type("prevention_policy", "set"): PreventionPolicySetV1,
    message_type("prevention_policy", "changed"): PreventionPolicyChangedV1,
    message_type("staff_contact", "registered"): StaffContactRegisteredV1,
    message_type("staff_contact", "changed"): StaffContactChangedV1,
    message_type("staff_contact", "personal_data_erased"): StaffContactPersonalDataErasedV1,
    message_type("notification", "sent"): NotificationSentV1,
    message_type("notification", "given_up"): NotificationGivenUpV1,
}
"""CloudEvents ``type`` -> the Struct of its ``data``."""

SCHEMA_TYPES: dict[str, type[EventData]] = {**MESSAGE_TYPES, **SHARE_TYPES}
"""Every type with a JSON Schema: the events of ``MESSAGE_TYPES`` and the sealed shares of
``contracts.shares.SHARE_TYPES`` (stream ``CBCM_SHARES``), which are not events."""

DOCUMENT_TYPES: dict[str, type[msgspec.Struct]] = {
    statistics.RELEASE_SCHEMA: statistics.StatisticsReleaseV1,
    audit.CHECKPOINT_SCHEMA: audit.AuditCheckpointV1,
    audit.COSIGNATURE_SCHEMA: audit.AuditCosignatureV1,
    audit.ERASURE_NOTICE_SCHEMA: audit.AuditErasureNoticeV1,
    shares.SHARED_FIELDS_SCHEMA: shares.SharedFieldsV1,
}
"""Published JSON Schemas of what is not a CloudEvent: the bodies sent as they are on
``cbcm.v1.stats.release.<period>``, ``cbcm.v1.audit.checkpoint``,
``cbcm.v1.audit.cosignature[.<agency>]`` and ``cbcm.v1.audit.erasure``, and the plaintext
inside a share's sealed box."""

JSON_SCHEMA_DIALECT = schema_documents.JSON_SCHEMA_DIALECT
schema_id = schema_documents.schema_id
schema_document = schema_documents.schema_document

__all__ = [
    "DOCUMENT_TYPES",
    "JSON_SCHEMA_DIALECT",
    "MESSAGE_TYPES",
    "SCHEMA_TYPES",
    "UnknownMessageType",
    "all_json_schemas",
    "decode_message",
    "encode_message",
    "envelope_of",
    "json_schema",
    "json_schemas",
    "schema_file_name",
    "schema_id",
    "schema_text",
    "write_json_schemas",
]


class UnknownMessageType(ValueError):
    """A message names a type that is not in ``MESSAGE_TYPES``."""


class _Head(msgspec.Struct):
    type: str


def envelope_of(data_type: type[EventData]) -> type[CloudEvent[Any]]:
    """The CloudEvent type whose ``data`` is ``data_type`` (for typed decoding)."""
    envelope: type[CloudEvent[Any]] = CloudEvent[data_type]  # type: ignore[valid-type]
    return envelope


_head_decoder = msgspec.json.Decoder(_Head)
_decoders: dict[str, msgspec.json.Decoder[CloudEvent[Any]]] = {
    name: msgspec.json.Decoder(envelope_of(data_type)) for name, data_type in MESSAGE_TYPES.items()
}
_encoder = msgspec.json.Encoder()


def encode_message(message: CloudEvent[Any]) -> bytes:
    """The message as CloudEvents structured-mode JSON."""
    return _encoder.encode(message)


_TYPE_KEY = b'"type":"'
_by_type_bytes: dict[bytes, tuple[str, msgspec.json.Decoder[CloudEvent[Any]]]] = {
    name.encode(): (name, decoder) for name, decoder in _decoders.items()
}


def _guessed(raw: bytes) -> CloudEvent[Any] | None:
    """The message decoded in one pass by the decoder of the first ``"type":"...`` in
    ``raw`` (where ``encode_message`` puts the envelope's, before ``data``), if that decoder
    takes it and the decoded envelope's ``type`` is that one; else ``None`` (the caller
    decodes as it would have: a ``type`` written otherwise, a nested one met first, a
    message that does not fit its type)."""
    at = raw.find(_TYPE_KEY)
    if at < 0:
        return None
    start = at + len(_TYPE_KEY)
    found = _by_type_bytes.get(raw[start : raw.find(b'"', start)])
    if found is None:
        return None
    name, decoder = found
    try:
        message = decoder.decode(raw)
    except (msgspec.DecodeError, msgspec.ValidationError):
        return None
    return message if message.type == name else None


def decode_message(raw: bytes) -> CloudEvent[Any]:
    """Decode and validate a message whose ``data`` layout its ``type`` names.

    Raises ``UnknownMessageType`` for a type this version of the contracts does not know,
    and ``msgspec.ValidationError`` when the message does not fit its type. (In one pass
    when the type is where ``encode_message`` writes it: ``_guessed``; the projectors decode
    every message of the stream.)
    """
    guessed = _guessed(raw)
    if guessed is not None:
        return guessed
    head = _head_decoder.decode(raw)
    try:
        decoder = _decoders[head.type]
    except KeyError:
        raise UnknownMessageType(f"no message type {head.type!r} in the contracts") from None
    return decoder.decode(raw)


def json_schema(name: str) -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of a whole message of type ``name``, envelope included.

    The envelope's ``type`` is pinned to ``name`` and its ``dataschema``, when present, to the
    schema's own ``$id``, so a schema validates one message type.
    """
    data_type = SCHEMA_TYPES[name]
    document = schema_document(msgspec.json.schema(envelope_of(data_type)), name)
    document["description"] = document["$defs"][data_type.__name__].get("description", "")
    properties = dict(document["properties"])
    properties["type"] = {"type": "string", "const": name}
    properties["dataschema"] = {
        "type": "string",
        "format": "uri",
        "const": schema_id(name),
        "description": "the $id of this schema (absent from messages published before it was)",
    }
    document["properties"] = properties
    # CloudEvents requires specversion; msgspec leaves it out of "required" only because
    # the Struct gives it a default.
    document["required"] = ["specversion", *document["required"]]
    return document


def json_schemas() -> dict[str, dict[str, Any]]:
    """The JSON Schema of every message type (events and shares), by type, in sorted order."""
    return {name: json_schema(name) for name in sorted(SCHEMA_TYPES)}


def all_json_schemas() -> dict[str, dict[str, Any]]:
    """Every published JSON Schema, by name, in sorted order: the CloudEvents of
    ``SCHEMA_TYPES`` and the documents of ``DOCUMENT_TYPES``."""
    documents = {
        name: schema_document(msgspec.json.schema(struct), name)
        for name, struct in DOCUMENT_TYPES.items()
    }
    return dict(sorted({**json_schemas(), **documents}.items()))


def schema_file_name(name: str) -> str:
    """The file the schema ``name`` is written to (``cbcm contracts schema --out``)."""
    return f"{name}.schema.json"


def schema_text(schema: dict[str, Any]) -> str:
    """A schema as it is written: two-space indent, UTF-8, a trailing newline."""
    return json.dumps(schema, indent=2, ensure_ascii=False) + "\n"


def write_json_schemas(out_dir: Path) -> list[Path]:
    """Write ``<name>.schema.json`` for every published schema (``all_json_schemas``) into
    ``out_dir``.

    The output is deterministic (sorted, two-space indent, trailing newline), so generated
    schemas can be committed and diffed. Other files in ``out_dir`` are left alone.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    for name, schema in all_json_schemas().items():
        path = out_dir / schema_file_name(name)
        path.write_text(schema_text(schema), encoding="utf-8")
        written.append(path)
    return written
