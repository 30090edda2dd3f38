"""The AsyncAPI document tells integrators every subject and message there is."""

from __future__ import annotations

import json
import re

from contracts.asyncapi import asyncapi_document
from contracts.catalogue import MESSAGE_TYPES, json_schema
from contracts.envelope import parse_message_type
from contracts.shares import CASE_SHARED
from contracts.subjects import SHARES_STREAM, STREAM, event_subject, share_subject


def test_document_is_asyncapi_3_and_json_serialisable() -> None:
    document = asyncapi_document()
    assert document["asyncapi"] == "3.0.0"
    assert STREAM in document["info"]["description"]
    assert json.loads(json.dumps(document)) == document


def test_every_message_type_has_its_schema_and_a_channel_on_its_subject() -> None:
    document = asyncapi_document()
    messages = document["components"]["messages"]
    for name in MESSAGE_TYPES:
        parsed = parse_message_type(name)
        key = name.replace("org.psea.cbcm.", "")
        assert messages[key]["payload"]["schema"] == json_schema(name)
        channel = document["channels"][f"{parsed.aggregate}.{parsed.event}"]
        subject = channel["address"].replace("{agency}", "unicef")
        assert subject == event_subject("unicef", parsed.aggregate, parsed.event)
        assert channel["messages"][key]["$ref"] == f"#/components/messages/{key}"


def test_operations_and_references_point_at_things_that_exist() -> None:
    document = asyncapi_document()
    text = json.dumps(document)
    # Refs inside the embedded JSON Schemas ("#/$defs/...") resolve against their own $id.
    for ref in re.findall(r'"\$ref": "#/((?:channels|components)/[^"]+)"', text):
        node = document
        for part in ref.split("/"):
            node = node[part]
    assert document["channels"]["statsRelease"]["address"] == "cbcm.v1.stats.release.{period}"
    assert "stats" not in document["channels"]  # live statistics are never published
    assert document["channels"]["auditCheckpoint"]["address"] == "cbcm.v1.audit.checkpoint"
    assert all(op["action"] == "receive" for op in document["operations"].values())


def test_the_share_channel_is_documented_with_its_schema_and_sealed_content() -> None:
    document = asyncapi_document()
    channel = document["channels"]["share.case"]
    assert channel["address"] == "cbcm.v1.share.{agency}.case.{event}.{case_id}"
    case_id = "6f1e0c52-4a57-4d0e-9c86-1b7f3d2e9a44"
    for event in channel["parameters"]["event"]["enum"]:
        address = channel["address"].format(agency="unicef", event=event, case_id=case_id)
        assert address == share_subject("unicef", "case", event, case_id)
    assert SHARES_STREAM in channel["description"]
    message = document["components"]["messages"]["case.shared.v1"]
    assert message["payload"]["schema"] == json_schema(CASE_SHARED)
    assert ":share" in message["headers"]["properties"]["Nats-Msg-Id"]["description"]
    sealed = document["components"]["schemas"]["sharedFields"]["schema"]
    assert set(sealed["$defs"]["SharedFieldsV1"]["required"]) >= {"case_id", "values"}
    assert "receive.share.case" in document["operations"]
