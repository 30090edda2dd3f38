"""The AsyncAPI document tells integrators every subject, message, header and schema there is,
in a form that tools which ignore a schema's own ``$id`` resolve too."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from contracts import asyncapi
from contracts.asyncapi import (
    CHECKPOINT_MSG_ID_PATTERN,
    EVENT_MSG_ID_PATTERN,
    MSG_ID_HEADER,
    RELEASE_HEADER,
    SHARE_MSG_ID_PATTERN,
    WITHDRAWN_MSG_ID_PATTERN,
    asyncapi_document,
    component_key,
)
from contracts.audit import checkpoint_msg_id
from contracts.catalogue import DOCUMENT_TYPES, MESSAGE_TYPES, all_json_schemas
from contracts.envelope import parse_message_type
from contracts.schema_documents import schema_document
from contracts.shares import CASE_SHARE_WITHDRAWN, CASE_SHARED
from contracts.subjects import (
    PREVIOUS_POSITION_HEADER,
    SHARES_STREAM,
    STREAM,
    event_subject,
    share_subject,
)
from services.audit.checkpoints import MSG_ID_HEADER as CHECKPOINT_MSG_ID_HEADER
from services.projector.publication import RELEASE_HEADER as PUBLISHED_RELEASE_HEADER
from services.relay.relay import EXPECTED_LAST_SEQUENCE_HEADER, MessageId
from services.relay.relay import MSG_ID_HEADER as RELAY_MSG_ID_HEADER


def _resolve(document: dict[str, Any], ref: str) -> Any:
    assert ref.startswith("#/"), ref
    node: Any = document
    for part in ref.removeprefix("#/").split("/"):
        node = node[part]
    return node


def _all(node: Any, key: str) -> list[Any]:
    if isinstance(node, dict):
        own = [node[key]] if key in node else []
        return own + [found for value in node.values() for found in _all(value, key)]
    if isinstance(node, list):
        return [found for item in node for found in _all(item, key)]
    return []


def test_document_is_asyncapi_3_and_json_serialisable() -> None:
    document = asyncapi_document()
    assert document["asyncapi"] == "3.0.0"
    assert STREAM in document["info"]["description"]
    assert json.loads(json.dumps(document)) == document


def test_every_reference_resolves_in_the_document_itself_and_no_schema_carries_an_id() -> None:
    # given the document
    document = asyncapi_document()
    # when every $ref is followed from the document's root (as the AsyncAPI tools do)
    refs = _all(document, "$ref")
    assert any(r.startswith("#/components/schemas/") for r in refs)
    for ref in refs:
        # then it lands on something
        assert _resolve(document, ref) is not None
    # and no embedded schema has an $id that a JSON Schema tool would resolve against instead
    assert _all(document, "$id") == []
    assert "$defs" not in json.dumps(document)


def test_every_message_type_has_its_schema_and_a_channel_on_its_subject() -> None:
    document = asyncapi_document()
    messages = document["components"]["messages"]
    schemas = document["components"]["schemas"]
    for name in MESSAGE_TYPES:
        parsed = parse_message_type(name)
        key = name.replace("org.psea.cbcm.", "")
        assert messages[key]["payload"] == {"$ref": f"#/components/schemas/{key}"}
        assert schemas[key]["properties"]["type"]["const"] == name
        assert messages[key]["x-cbcm-schema-id"] == f"urn:cbcm:schema:{name}"
        channel = document["channels"][f"{parsed.aggregate}.{parsed.event}"]
        subject = channel["address"].replace("{agency}", "unicef")
        assert subject == event_subject("unicef", parsed.aggregate, parsed.event)
        assert channel["messages"][key]["$ref"] == f"#/components/messages/{key}"


def test_every_published_schema_is_a_component_with_the_same_definitions() -> None:
    schemas = asyncapi_document()["components"]["schemas"]
    for name, standalone in all_json_schemas().items():
        component = schemas[component_key(name)]
        assert component["properties"].keys() == standalone["properties"].keys()
        for def_name, definition in standalone.get("$defs", {}).items():
            rewritten = json.loads(
                json.dumps(definition).replace('"#/$defs/', '"#/components/schemas/')
            )
            assert schemas[def_name] == rewritten
    for name in DOCUMENT_TYPES:
        assert component_key(name) in schemas


def test_the_bodies_that_are_not_cloud_events_keep_their_earlier_names() -> None:
    # earlier documents named them so; a tool referring to them keeps working
    components = asyncapi_document()["components"]
    assert components["messages"]["statisticsRelease"]["name"] == "StatisticsReleaseV1"
    assert components["messages"]["auditCheckpoint"]["name"] == "AuditCheckpointV1"
    assert {"auditCheckpoint", "sharedFields", "statisticsRelease"} <= set(components["schemas"])


def test_every_subject_has_a_channel_and_an_operation() -> None:
    document = asyncapi_document()
    addresses = {c["address"] for c in document["channels"].values()}
    assert {
        "cbcm.v1.stats.release.{period}",
        "cbcm.v1.audit.checkpoint",
        "cbcm.v1.audit.cosignature",
        "cbcm.v1.audit.cosignature.{witness}",
        "cbcm.v1.audit.erasure",
        "cbcm.v1.share.{agency}.case.{event}.{case_id}",
    } <= addresses
    assert "stats" not in document["channels"]  # live statistics are never published
    operated = {
        op["channel"]["$ref"].removeprefix("#/channels/") for op in document["operations"].values()
    }
    assert operated == set(document["channels"])
    assert all(op["action"] == "receive" for op in document["operations"].values())
    release = document["components"]["messages"]["statisticsRelease"]
    schema = _resolve(document, release["payload"]["$ref"])
    assert schema != {"type": "object"} and set(schema["required"]) == {"release", "reports"}


def test_the_share_channel_is_documented_with_its_schema_and_sealed_content() -> None:
    document = asyncapi_document()
    channel = document["channels"]["share.case"]
    assert channel["address"] == "cbcm.v1.share.{agency}.case.{event}.{case_id}"
    case_id = "6f1e0c52-4a57-4d0e-9c86-1b7f3d2e9a44"
    for event in channel["parameters"]["event"]["enum"]:
        address = channel["address"].format(agency="unicef", event=event, case_id=case_id)
        assert address == share_subject("unicef", "case", event, case_id)
    assert SHARES_STREAM in channel["description"]
    assert "components.schemas.sharedFields" in channel["description"]
    message = document["components"]["messages"][component_key(CASE_SHARED)]
    assert _resolve(document, message["payload"]["$ref"])["properties"]["type"]["const"] == (
        CASE_SHARED
    )
    sealed = document["components"]["schemas"]["sharedFields"]
    assert set(sealed["required"]) >= {"case_id", "values"}
    assert "receive.share.case" in document["operations"]


# ---------------------------------------------------------------- headers as they are sent


def test_the_documented_header_names_are_those_the_services_send() -> None:
    document = asyncapi_document()
    messages = document["components"]["messages"]
    assert MSG_ID_HEADER == RELAY_MSG_ID_HEADER == CHECKPOINT_MSG_ID_HEADER
    assert RELEASE_HEADER == PUBLISHED_RELEASE_HEADER
    event = messages["case.received.v1"]["headers"]
    assert set(event["properties"]) == {
        MSG_ID_HEADER,
        PREVIOUS_POSITION_HEADER,
        EXPECTED_LAST_SEQUENCE_HEADER,
        "Nats-Expected-Stream",  # nats-py's, for publish(stream=...)
    }
    assert set(event["required"]) == {MSG_ID_HEADER, PREVIOUS_POSITION_HEADER}
    assert "gap" in event["properties"][PREVIOUS_POSITION_HEADER]["description"]
    assert set(messages[component_key(CASE_SHARE_WITHDRAWN)]["headers"]["properties"]) == {
        MSG_ID_HEADER,
        "Nats-Expected-Stream",
    }
    assert set(messages["statisticsRelease"]["headers"]["properties"]) == {RELEASE_HEADER}
    assert set(messages["auditCosignature"]["headers"]["properties"]) == {"Nats-Expected-Stream"}


STORES = st.text("0123456789abcdef", min_size=16, max_size=16)
POSITIONS = st.integers(1, 2**63 - 1)
AGENCIES = st.from_regex(r"[a-z0-9_-]{1,32}", fullmatch=True)
PATTERNS = {
    "event": EVENT_MSG_ID_PATTERN,
    "share": SHARE_MSG_ID_PATTERN,
    "withdrawn": WITHDRAWN_MSG_ID_PATTERN,
    "checkpoint": CHECKPOINT_MSG_ID_PATTERN,
}


def _kinds_matching(value: str) -> set[str]:
    return {kind for kind, pattern in PATTERNS.items() if re.fullmatch(pattern, value)}


@given(STORES, POSITIONS, AGENCIES, st.sampled_from(["event", "share", "withdrawn"]))
def test_every_relay_message_id_matches_the_documented_pattern_of_its_kind_only(
    store: str, position: int, agency: str, kind: Any
) -> None:
    value = str(MessageId(store, position, kind, agency if kind == "withdrawn" else None))
    assert _kinds_matching(value) == {kind}


@given(STORES, POSITIONS, st.text("0123456789abcdef", min_size=64, max_size=64), st.text())
def test_a_checkpoint_id_has_the_four_documented_parts(
    store: str, position: int, link: str, signature: str
) -> None:
    value = checkpoint_msg_id(store, position, link, signature)
    assert len(value.split(":")) == 4
    assert _kinds_matching(value) == {"checkpoint"}


def test_two_schemas_defining_one_name_differently_are_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # given two published documents whose definitions of "ActorRef" differ (two Structs of
    # one name in two modules), which components/schemas would silently merge
    first = {"$schema": "s", "$id": "a", "type": "object", "properties": {},
             "$defs": {"ActorRef": {"type": "object"}}}  # fmt: skip
    second = {**first, "$id": "b", "$defs": {"ActorRef": {"type": "string"}}}
    monkeypatch.setattr(
        asyncapi,
        "all_json_schemas",
        lambda: {"org.psea.cbcm.a.v1": first, "org.psea.cbcm.b.v1": second},
    )
    # when the components are made, then it fails naming the definition
    with pytest.raises(ValueError, match="ActorRef is defined twice"):
        asyncapi.component_schemas()


def test_a_schema_whose_reference_would_not_resolve_is_refused() -> None:
    generated = {
        "$ref": "#/$defs/Root",
        "$defs": {"Root": {"type": "object", "properties": {"x": {"$ref": "#/$defs/Gone"}}}},
    }
    with pytest.raises(ValueError, match="Gone"):
        schema_document(generated, "org.psea.cbcm.root.v1")
