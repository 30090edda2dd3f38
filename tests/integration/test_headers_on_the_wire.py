"""Every header the services send is in the AsyncAPI document (issue #19): the events the real
relay publishes, the checkpoint the real publisher signs and the cosignature a real witness
adds, read back from their streams on a real nats-server and held to the document's header
schema made strict (no header it does not name), their bodies to the schema of their type."""

from __future__ import annotations

import asyncio
import json
import random
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import jsonschema_rs
import nats.js.errors
import pytest
from nats.aio.client import Client as NatsClient

from contracts.asyncapi import asyncapi_document, component_key
from contracts.audit import (
    AUDIT_STREAM,
    CHECKPOINT_SCHEMA,
    CHECKPOINT_SUBJECT,
    COSIGNATURE_SCHEMA,
    COSIGNATURE_SUBJECT,
    ERASURE_NOTICE_SCHEMA,
    ERASURE_NOTICE_SUBJECT,
)
from contracts.catalogue import all_json_schemas
from contracts.subjects import STREAM
from services.audit.checkpoints import checkpoint_once
from services.audit.keys import load_log_origin, load_signing_key
from services.audit.witness import run_witness
from services.bootstrap import complaint_mechanism
from services.demo.walk import build_demo_network, walk_cases
from services.nats.server import EmbeddedNats
from services.relay.relay import Relay, ensure_stream
from services.settings import Settings
from tests.integration.test_relay import wait_until

START = datetime(2025, 9, 1, tzinfo=UTC)
BY_SUBJECT = {
    CHECKPOINT_SUBJECT: CHECKPOINT_SCHEMA,
    COSIGNATURE_SUBJECT: COSIGNATURE_SCHEMA,
    ERASURE_NOTICE_SUBJECT: ERASURE_NOTICE_SCHEMA,
}


def strict_headers() -> dict[str, Any]:
    """Message component key -> a validator of its headers that refuses any other header."""
    return {
        key: jsonschema_rs.validator_for({**message["headers"], "additionalProperties": False})
        for key, message in asyncapi_document()["components"]["messages"].items()
    }


async def stored(nc: NatsClient, stream: str) -> list[tuple[str, dict[str, str], bytes]]:
    js = nc.jetstream()
    info = await js.stream_info(stream)
    out = []
    for seq in range(info.state.first_seq, info.state.last_seq + 1):
        try:
            raw = await js.get_msg(stream, seq)
        except nats.js.errors.NotFoundError:
            continue
        assert raw.subject is not None and raw.data is not None
        out.append((raw.subject, dict(raw.headers or {}), raw.data))
    return out


@pytest.fixture
def settings(sqlite_url: str, tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path / "data", event_store=sqlite_url)


async def test_every_header_of_events_checkpoints_and_cosignatures_is_documented(
    settings: Settings, nats_server: EmbeddedNats, nc: NatsClient
) -> None:
    # given events published by the relay, a checkpoint, and a witness's cosignature of it
    app = complaint_mechanism(settings)
    try:
        build_demo_network(app, START)
        walk_cases(app, 3, random.Random(5), START + timedelta(hours=4))
        js = nc.jetstream()
        await ensure_stream(js)
        await Relay(app, js).publish_pending()
        await checkpoint_once(
            app, load_signing_key(settings), nats_server.url, origin=load_log_origin(settings)
        )
    finally:
        app.close()
    stop = asyncio.Event()
    witness = asyncio.create_task(run_witness(settings, stop, nats_server.url))

    async def cosigned() -> bool:
        if witness.done():
            witness.result()
            raise AssertionError("the witness stopped")
        subjects = [s for s, _, _ in await stored(nc, AUDIT_STREAM)]
        return COSIGNATURE_SUBJECT in subjects

    try:
        await wait_until(cosigned, 30, "a cosignature in CBCM_AUDIT")
    finally:
        stop.set()
        await witness

    # when each stored message is held to the document
    headers = strict_headers()
    schemas = {
        name: jsonschema_rs.validator_for(schema, validate_formats=True)
        for name, schema in all_json_schemas().items()
    }
    seen: set[str] = set()
    for stream in (STREAM, AUDIT_STREAM):
        for subject, sent, body in await stored(nc, stream):
            decoded = json.loads(body)
            name = BY_SUBJECT.get(subject) or decoded["dataschema"].removeprefix("urn:cbcm:schema:")
            # then its headers are exactly documented ones, and its body fits its schema
            errors = [str(e) for e in headers[component_key(name)].iter_errors(sent)]
            assert errors == [], (subject, sent)
            schemas[name].validate(decoded)
            seen.update(sent)
    assert {
        "Nats-Msg-Id",
        "Cbcm-Previous-Position",
        "Nats-Expected-Last-Sequence",
        "Nats-Expected-Stream",
    } <= seen
