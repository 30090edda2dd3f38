"""The published contracts, and the translation of stored domain events into them."""

from __future__ import annotations

import dataclasses
import enum
import json
import types
import typing
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import jsonschema_rs
import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import contracts.vocabulary as contract_vocabulary
import domain.actors
import domain.case
import domain.vocabulary
from contracts.catalogue import (
    DOCUMENT_TYPES,
    MESSAGE_TYPES,
    SCHEMA_TYPES,
    UnknownMessageType,
    all_json_schemas,
    decode_message,
    encode_message,
    json_schema,
    json_schemas,
    schema_id,
    write_json_schemas,
)
from contracts.envelope import CloudEvent, message_type, parse_message_type
from contracts.subjects import (
    AUDIT_CHECKPOINT_SUBJECT,
    STREAM,
    event_subject,
    stats_subject,
)
from domain.assistance import AssistanceReferral
from domain.case import Case
from domain.feedback import Feedback
from domain.network import Network
from domain.notification import Notification, StaffContact
from domain.personal_data import PersonDetails, personal_data_paths
from domain.prevention import (
    AwarenessActivity,
    FocalPointReadiness,
    PreventionPolicy,
    RiskAssessment,
    TrainingSession,
    WorkPlan,
)
from services.application.mechanism import ComplaintMechanism
from services.application.store import is_published
from services.relay.translation import (
    TRANSLATIONS,
    NoContractForEvent,
    coverage_problems,
    encode,
    published_event_classes,
    to_cloud_event,
)
from tests.canary import ERASED_AT_THE_END, new_canaries, walk_every_event_type
from tests.conftest import T0
from tests.unit.test_projections_total import any_message

SOURCE = "urn:cbcm:test-store"

DOMAIN_EVENT_CLASSES = [
    event_class
    for aggregate in (
        Case,
        AssistanceReferral,
        Feedback,
        Network,
        TrainingSession,
        AwarenessActivity,
        FocalPointReadiness,
        RiskAssessment,
        WorkPlan,
        PreventionPolicy,
        StaffContact,
        Notification,
    )
    for event_class in published_event_classes(aggregate)
]


# ---------------------------------------------------------------- helpers on types


def _unwrap(annotation: Any) -> list[Any]:
    """The member types of an optional, union or homogeneous tuple, Annotated stripped."""
    if typing.get_origin(annotation) is typing.Annotated:
        return _unwrap(typing.get_args(annotation)[0])
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        return [m for a in typing.get_args(annotation) for m in _unwrap(a)]
    if origin is tuple:
        return [m for a in typing.get_args(annotation) if a is not Ellipsis for m in _unwrap(a)]
    if annotation is type(None):
        return []
    return [annotation]


def _is_struct(t: Any) -> bool:
    return isinstance(t, type) and issubclass(t, msgspec.Struct)


def _contract_field_paths(struct: type[msgspec.Struct], prefix: str = "") -> set[str]:
    paths: set[str] = set()
    hints = typing.get_type_hints(struct)
    for name in struct.__struct_fields__:
        paths.add(prefix + name)
        for member in _unwrap(hints[name]):
            if _is_struct(member):
                paths |= _contract_field_paths(member, f"{prefix}{name}.")
    return paths


def _domain_type_of(cls: type, name: str) -> Any:
    """The type of a dataclass field, or the return type of a property of that name."""
    hints = typing.get_type_hints(cls)
    if name in hints:
        return hints[name]
    prop = getattr(cls, name, None)
    assert isinstance(prop, property), f"{cls.__qualname__} has no field or property {name}"
    return typing.get_type_hints(prop.fget)["return"]


def _enumerations(domain_type: Any, contract_type: Any, where: str) -> list[tuple[str, Any, Any]]:
    """(where, domain enum, contract Literal) for every enum reachable in both types."""
    found: list[tuple[str, Any, Any]] = []
    domain_members = _unwrap(domain_type)
    contract_members = _unwrap(contract_type)
    for d in domain_members:
        if isinstance(d, type) and issubclass(d, enum.Enum):
            literals = [c for c in contract_members if typing.get_origin(c) is Literal]
            assert len(literals) == 1, f"{where}: domain {d.__name__} is not a Literal in contract"
            found.append((where, d, literals[0]))
        elif dataclasses.is_dataclass(d):
            structs = [c for c in contract_members if _is_struct(c)]
            assert len(structs) == 1, f"{where}: domain {d.__name__} is not a Struct in contract"
            struct = structs[0]
            contract_hints = typing.get_type_hints(struct)
            for name in struct.__struct_fields__:
                found += _enumerations(
                    _domain_type_of(d, name), contract_hints[name], f"{where}.{name}"
                )
    return found


def _fully_personal_fields(event_class: type) -> set[str]:
    """Top-level fields whose every leaf is personal (a ``PersonDetails``)."""
    hints = typing.get_type_hints(event_class)
    return {
        f.name for f in dataclasses.fields(event_class) if PersonDetails in _unwrap(hints[f.name])
    }


# ---------------------------------------------------------------- the catalogue


def test_every_domain_event_class_has_exactly_one_contract_type_and_every_type_a_domain_event():
    # given the event classes of every published aggregate and the contract catalogue
    # when each domain event class is paired with its contract type
    paired = {TRANSLATIONS[c].message_type for c in DOMAIN_EVENT_CLASSES}

    # then the pairing is one to one and covers the whole catalogue
    assert len(DOMAIN_EVENT_CLASSES) == 33 + 17 + 5  # prevention work (#22), notifications (#18)
    assert len(paired) == len(DOMAIN_EVENT_CLASSES)
    assert paired == set(MESSAGE_TYPES)
    assert coverage_problems() == []


def test_message_types_are_named_after_aggregate_and_event_in_snake_case():
    # given three domain event classes
    # when their contract types are looked up
    names = [
        TRANSLATIONS[c].message_type
        for c in (Case.Received, Case.FocalPointsAssigned, AssistanceReferral.DeclinedByProvider)
    ]

    # then they follow org.psea.cbcm.<aggregate>.<event>.v1
    assert names == [
        "org.psea.cbcm.case.received.v1",
        "org.psea.cbcm.case.focal_points_assigned.v1",
        "org.psea.cbcm.assistance_referral.declined_by_provider.v1",
    ]
    assert parse_message_type(names[2]) == ("assistance_referral", "declined_by_provider", 1)
    assert {parse_message_type(n).aggregate for n in MESSAGE_TYPES} == {
        "case",
        "assistance_referral",
        "feedback",
        "network",
        "training_session",
        "awareness_activity",
        "focal_point_readiness",
        "risk_assessment",
        "work_plan",
        "prevention_policy",
        "staff_contact",
        "notification",
    }


def test_a_message_type_name_with_an_unknown_aggregate_or_bad_event_is_refused():
    # given / when / then
    with pytest.raises(ValueError, match="unknown aggregate"):
        message_type("complaint", "received")
    with pytest.raises(ValueError, match="snake case"):
        message_type("case", "FocalPointsAssigned")
    with pytest.raises(ValueError, match="not a cbcm message type"):
        parse_message_type("com.example.case.received.v1")


def test_every_contract_enumeration_has_exactly_the_values_of_its_domain_enum():
    # given every field of every domain event and of the contract data it becomes
    pairs: list[tuple[str, Any, Any]] = []
    for event_class in DOMAIN_EVENT_CLASSES:
        data_type = TRANSLATIONS[event_class].data_type
        contract_hints = typing.get_type_hints(data_type)
        domain_hints = typing.get_type_hints(event_class)
        for name in data_type.__struct_fields__:
            if name in domain_hints:
                pairs += _enumerations(
                    domain_hints[name], contract_hints[name], f"{data_type.__name__}.{name}"
                )

    # when the Literal values are compared with the enum values
    mismatched = [
        where
        for where, domain_enum, literal in pairs
        if sorted(typing.get_args(literal)) != sorted(m.value for m in domain_enum)
    ]

    # then they are equal everywhere, nested values (actor, allegation) included
    assert pairs, "no enumeration was compared"
    assert {"CaseReceivedV1.actor.role", "CaseAssessedV1.allegation.victim_category"} <= {
        where for where, _, _ in pairs
    }
    assert mismatched == []


def test_every_contract_vocabulary_literal_mirrors_the_domain_enum_of_the_same_name():
    # given the domain's StrEnums and the contracts' Literal aliases
    domain_enums = {
        name: obj
        for module in (domain.vocabulary, domain.actors, domain.case)
        for name, obj in vars(module).items()
        if isinstance(obj, type) and issubclass(obj, enum.StrEnum) and obj is not enum.StrEnum
    }
    literals = {
        name: obj
        for name, obj in vars(contract_vocabulary).items()
        if typing.get_origin(obj) is Literal
    }

    vocabulary = {n for n, e in domain_enums.items() if e.__module__ == "domain.vocabulary"}

    # when they are paired by name
    # then every vocabulary enum has its Literal, and each Literal has exactly its values
    assert vocabulary <= set(literals)
    for name, literal in literals.items():
        assert name in domain_enums, f"contract Literal {name} mirrors no domain enum"
        values = typing.get_args(literal)
        assert len(values) == len(set(values))
        assert set(values) == {m.value for m in domain_enums[name]}, name


def test_no_contract_data_has_a_field_named_like_personal_data_of_its_domain_event():
    # given the personal-data paths the domain marks on each event class
    leaks: list[str] = []
    for event_class in DOMAIN_EVENT_CLASSES:
        personal = set(personal_data_paths(event_class)) | _fully_personal_fields(event_class)

        # when they are compared with the field paths of the contract data
        fields = _contract_field_paths(TRANSLATIONS[event_class].data_type)

        leaks += [f"{event_class.__qualname__}: {p}" for p in sorted(personal & fields)]

    # then none is published
    assert leaks == []
    assert "narrative" in personal_data_paths(Case.Received), "the check must see personal data"


def test_an_event_class_without_a_contract_is_refused_with_a_clear_error():
    # given an event class that no contract describes
    @dataclass(frozen=True)
    class Unpublished:
        originator_id: uuid.UUID
        originator_version: int
        timestamp: Any

    event = Unpublished(uuid.uuid4(), 1, T0)

    # when it is translated / then translation fails and names the class
    with pytest.raises(NoContractForEvent, match="Unpublished has no published contract"):
        to_cloud_event(event, source=SOURCE)


# ---------------------------------------------------------------- subjects


def test_event_subjects_name_agency_aggregate_and_event():
    # given / when
    subject = event_subject("ngo-b", "assistance_referral", "declined_by_provider")

    # then
    assert subject == "cbcm.v1.evt.ngo-b.assistance_referral.declined_by_provider"
    assert stats_subject("monthly") == "cbcm.v1.stats.monthly"
    assert STREAM == "CBCM_EVENTS"
    assert AUDIT_CHECKPOINT_SUBJECT == "cbcm.v1.audit.checkpoint"


@pytest.mark.parametrize("agency", ["UNICEF", "a.b", "a*", ">", "", "a b"])
def test_a_subject_token_that_could_split_or_match_other_subjects_is_refused(agency: str):
    # given a token with characters that are not plain lowercase code characters
    # when / then
    with pytest.raises(ValueError, match="not a subject token"):
        event_subject(agency, "case", "received")
    with pytest.raises(ValueError, match="not a subject token"):
        stats_subject(agency)


# ---------------------------------------------------------------- JSON Schemas


def test_every_message_type_has_a_json_schema_with_properties_and_required_fields():
    # given / when
    schemas = json_schemas()

    # then each schema describes a whole message of exactly one type: every event, and the
    # sealed share, which is not an event (no projector decodes it)
    assert list(schemas) == sorted(SCHEMA_TYPES)
    assert set(SCHEMA_TYPES) - set(MESSAGE_TYPES) == {
        "org.psea.cbcm.case.shared.v1",
        "org.psea.cbcm.case.share_withdrawn.v1",
    }
    for name, schema in schemas.items():
        assert schema["$id"].endswith(name)
        assert schema["title"] == name
        assert schema["description"]
        assert schema["type"] == "object"
        assert schema["properties"]["type"]["const"] == name
        assert {"specversion", "id", "source", "type", "time", "subject", "data"} <= set(
            schema["required"]
        )
        data_def = schema["$defs"][SCHEMA_TYPES[name].__name__]
        assert set(data_def["required"]) == set(SCHEMA_TYPES[name].__struct_fields__)
        assert set(data_def["properties"]) == set(SCHEMA_TYPES[name].__struct_fields__)


def test_written_schema_files_are_deterministic_and_read_back_as_the_schemas(tmp_path: Path):
    # given an output directory
    out = tmp_path / "schemas"

    # when the schemas are written twice
    first = write_json_schemas(out)
    first_bytes = [p.read_bytes() for p in first]
    second = write_json_schemas(out)

    # then one sorted file per published schema, identical each time, which reads back as
    # the schemas: every CloudEvent type and every body that is not one
    names = sorted({*SCHEMA_TYPES, *DOCUMENT_TYPES})
    assert [p.name for p in first] == [f"{n}.schema.json" for n in names]
    assert second == first
    assert [p.read_bytes() for p in second] == first_bytes
    assert first_bytes[0].startswith(b'{\n  "$schema"')
    assert {p.name.removesuffix(".schema.json"): json.loads(p.read_text()) for p in first} == (
        all_json_schemas()
    )


def _refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        own = [node["$ref"]] if "$ref" in node else []
        return own + [r for v in node.values() for r in _refs(v)]
    if isinstance(node, list):
        return [r for item in node for r in _refs(item)]
    return []


def test_every_published_schema_has_an_id_and_only_references_it_holds():
    # given every published schema, CloudEvents and the rest
    schemas = all_json_schemas()
    assert {
        "org.psea.cbcm.stats.release.v1",
        "org.psea.cbcm.audit.checkpoint.v1",
        "org.psea.cbcm.audit.cosignature.v1",
        "org.psea.cbcm.audit.erasure_notice.v1",
        "org.psea.cbcm.case.shared_fields.v1",
        "org.psea.cbcm.case.share_withdrawn.v1",
        "org.psea.cbcm.case.shared.v1",
    } <= set(schemas)
    for name, schema in schemas.items():
        # then each names itself, and each reference is a definition of the same document
        # (resolved alike whether a tool honours $id or not)
        assert schema["$id"] == schema_id(name) == f"urn:cbcm:schema:{name}"
        assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
        jsonschema_rs.meta.validate(schema)  # a valid draft 2020-12 schema
        assert schema["type"] == "object" and schema["properties"], name
        for ref in _refs(schema):
            assert ref.startswith("#/$defs/"), (name, ref)
            assert ref.removeprefix("#/$defs/") in schema["$defs"], (name, ref)


def test_the_statistics_release_schema_is_the_release_not_any_object():
    schema = all_json_schemas()["org.psea.cbcm.stats.release.v1"]
    assert set(schema["required"]) == {"release", "reports"}
    report = schema["$defs"]["StatisticsReportV1"]
    assert {"rows", "columns", "cells", "total"} <= set(report["required"])
    cell = schema["$defs"]["StatisticsCellV1"]["properties"]["value"]
    assert {"type": "null"} in cell["anyOf"]
    assert schema["$defs"]["ReleaseV1"]["properties"]["released_at"]["format"] == "date-time"


def test_every_cloud_event_schema_pins_its_dataschema_and_times_are_date_times():
    for name in SCHEMA_TYPES:
        schema = json_schema(name)
        assert schema["properties"]["dataschema"]["const"] == schema_id(name)
        assert schema["properties"]["time"]["format"] == "date-time"
    received = json_schema("org.psea.cbcm.case.received.v1")["$defs"]["CaseReceivedV1"]
    assert received["properties"]["received_at"] == {"type": "string", "format": "date-time"}


# ---------------------------------------------------------------- a whole workflow


@dataclass
class Published:
    canaries: dict[str, str]
    stored: list[Any]
    messages: list[tuple[int, CloudEvent[Any], bytes]]


@pytest.fixture
def published(app: ComplaintMechanism) -> Published:
    """Every stored event of a full workflow, translated and encoded as the relay would."""
    canaries = new_canaries()
    walk_every_event_type(app, canaries)
    stored: list[Any] = []
    messages: list[tuple[int, CloudEvent[Any], bytes]] = []
    for notification in app.recorder.select_notifications(start=1, limit=10000):
        event = app.mapper.to_domain_event(notification)
        if not is_published(event):
            continue  # the mechanism's own records (a case's index of notices): the relay too
        message = to_cloud_event(event, source=SOURCE, position=notification.id)
        stored.append(event)
        messages.append((notification.id, message, encode(message)))
    return Published(canaries, stored, messages)


@pytest.mark.postgres
def test_no_personal_data_typed_into_any_field_reaches_a_published_message(published: Published):
    # given a store where every personal field of every event holds a unique canary
    stored_text = "\n".join(repr(e) for e in published.stored)
    assert all(
        c in stored_text for f, c in published.canaries.items() if f not in ERASED_AT_THE_END
    )

    # when every stored event is translated and encoded
    wire = b"\n".join(raw for _, _, raw in published.messages)

    # then no canary (not even its random part) is in any message
    leaked = [
        field
        for field, canary in published.canaries.items()
        if canary.encode() in wire or canary.removeprefix("CANARY-").encode() in wire
    ]
    assert leaked == []
    # ... and every event type was exercised
    assert {m.type for _, m, _ in published.messages} == set(MESSAGE_TYPES)


@pytest.mark.postgres
def test_published_messages_carry_the_non_personal_facts(published: Published):
    # given the translated workflow
    by_type: dict[str, list[dict[str, Any]]] = {}
    for _, _, raw in published.messages:
        message = json.loads(raw)
        by_type.setdefault(message["type"], []).append(message["data"])

    def first(event: str) -> dict[str, Any]:
        return by_type[f"org.psea.cbcm.{event}.v1"][0]

    # when / then the coded facts consumers need are there
    received = first("case.received")
    assert received["channel"] == "hotline"
    assert received["has_complainant_details"] is True
    assert received["has_survivor_details"] is True
    assert received["actor"] == {
        "user": "hotline-7",
        "agency": "agency-a",
        "role": "intake_operator",
    }
    allegation = first("case.assessed")["allegation"]
    assert allegation["implicated_agency"] == "ngo-b"
    assert allegation["incident_area"] == "SO1101"
    assert allegation["incident_date"] == "2026-02-20"
    assert allegation["victim_category"] == "women"
    assert "alleged_perpetrator" not in allegation
    assert first("case.transferred")["has_note"] is True
    assert first("case.referred_for_investigation")["identity_shared"] is True
    assert first("case.feedback_given") == {
        "case_id": first("case.feedback_given")["case_id"],
        "version": first("case.feedback_given")["version"],
        "actor": {"user": "fp-b1", "agency": "ngo-b", "role": "focal_point"},
        "channel": "sms",
    }
    closed = first("case.closed")
    assert closed["reason"] == "investigation_concluded"
    assert closed["no_outcome_reason_given"] is True
    assert closed["no_feedback_reason_given"] is True
    assert first("assistance_referral.declined_by_provider")["reason_given"] is True
    assert first("assistance_referral.made")["provider"] == "clinic-1"
    assert first("feedback.received")["sector"] == "wash"
    assert first("network.policy_set")["policy"]["suppression_threshold"] == 3
    assert first("network.established")["policy"]["acknowledge_within"] == "P7D"


@pytest.mark.postgres
def test_a_message_is_identified_by_aggregate_and_version_and_timed_by_the_store(
    published: Published,
):
    # given the translated workflow
    # when each message is set against the event it came from
    for (position, message, _), event in zip(published.messages, published.stored, strict=True):
        # then the envelope says which fact it is, where it is and when it was recorded
        assert message.id == f"{event.originator_id}:{event.originator_version}"
        assert message.subject == str(event.originator_id)
        assert message.time == event.timestamp
        assert message.source == SOURCE
        assert message.position == position
        assert message.data.version == event.originator_version
        # and names the schema it follows
        assert message.dataschema == schema_id(message.type)


@pytest.mark.postgres
def test_every_published_message_is_valid_against_the_schema_its_dataschema_names(
    published: Published,
):
    # given the published schemas, by $id, with formats checked (date-time, uuid, uri)
    by_id = {schema["$id"]: schema for schema in all_json_schemas().values()}
    validators = {
        schema_ref: jsonschema_rs.validator_for(schema, validate_formats=True)
        for schema_ref, schema in by_id.items()
    }
    # when each message of the workflow is validated by the schema its dataschema names
    for _, _, raw in published.messages:
        body = json.loads(raw)
        # then it is valid
        validators[body["dataschema"]].validate(body)


@pytest.mark.postgres
def test_a_published_message_decodes_back_into_its_typed_envelope(published: Published):
    # given the encoded messages of the workflow
    for _, message, raw in published.messages:
        # when each is decoded with the contracts only
        typed = msgspec.json.decode(raw, type=CloudEvent[MESSAGE_TYPES[message.type]])
        generic = decode_message(raw)

        # then it is the message that was published, data typed by its type
        assert typed == message
        assert generic == message
        assert type(generic.data) is MESSAGE_TYPES[message.type]


def test_a_message_of_an_unknown_type_is_refused_when_decoded():
    # given a message of a type these contracts do not know
    raw = json.dumps({"type": "org.psea.cbcm.case.teleported.v1"}).encode()

    # when / then
    with pytest.raises(UnknownMessageType, match="teleported"):
        decode_message(raw)


def _two_step(raw: bytes) -> CloudEvent[Any]:
    """``decode_message`` as it was before its one-pass guess: the type, then the message."""
    head = msgspec.json.decode(raw, type=dict[str, Any])
    return msgspec.json.decode(raw, type=CloudEvent[MESSAGE_TYPES[head["type"]]])


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(message=any_message, other=st.sampled_from(sorted(MESSAGE_TYPES)), layout=st.integers(0, 3))
def test_decoding_in_one_pass_gives_what_two_passes_give(
    message: CloudEvent[Any], other: str, layout: int
) -> None:
    """``decode_message`` guesses the decoder from the first ``"type":"`` in the bytes (issue
    #16: one decode a message for the rebuilds). Whatever the layout, a nested ``type`` met
    first naming another message type, or the envelope naming a type its data does not fit,
    it decodes exactly what the type-then-message decoding does, or refuses as it does."""
    body = json.loads(encode_message(message))
    if layout == 1:  # data first, with a key "type" naming another message type
        rest = {k: v for k, v in body.items() if k != "data"}
        body = {"data": {"type": other, **body["data"]}, **rest}
    elif layout == 2:  # the envelope names another type (the data may not fit it)
        body = {**body, "type": other}
    elif layout == 3:  # another writer: spaces, data first
        body = {"data": body["data"], **body}
    raw = json.dumps(body, separators=(", ", ": ") if layout == 3 else (",", ":")).encode()
    try:
        expected = _two_step(raw)
    except msgspec.ValidationError:
        with pytest.raises(msgspec.ValidationError):
            decode_message(raw)
        return
    decoded = decode_message(raw)
    assert decoded == expected
    assert type(decoded.data) is type(expected.data)
