"""The AsyncAPI 3.0 document: the stream, its subjects and every message schema.

Integrators who do not use Python read this (``cbcm contracts asyncapi``) to subscribe to
the events that concern their agency, the personal data shared with it (sealed), the
anonymised statistics and the audit checkpoints.
"""

from __future__ import annotations

from typing import Any

from contracts.audit import (
    AUDIT_STREAM,
    COSIGNATURE_SUBJECT,
    ERASURE_NOTICE_SUBJECT,
    checkpoint_json_schema,
    cosignature_json_schema,
    erasure_notice_json_schema,
)
from contracts.catalogue import MESSAGE_TYPES, json_schema
from contracts.envelope import parse_message_type
from contracts.shares import (
    CASE_SHARE_WITHDRAWN,
    CASE_SHARED,
    SHARING_EVENTS,
    WITHDRAWN_EVENT,
    shared_fields_json_schema,
)
from contracts.statistics import release_json_schema
from contracts.subjects import (
    AUDIT_CHECKPOINT_SUBJECT,
    EVENT_SUBJECT_PREFIX,
    SHARE_SUBJECT_PREFIX,
    SHARES_STREAM,
    STATS_SUBJECT_PREFIX,
    STREAM,
)

ASYNCAPI_VERSION = "3.0.0"
SCHEMA_FORMAT = "application/schema+json;version=draft-2020-12"


def _key(name: str) -> str:
    """A component key for a message type (AsyncAPI keys allow letters, digits, . _ -)."""
    return name.replace("org.psea.cbcm.", "")


def asyncapi_document(*, version: str = "1", server_url: str = "127.0.0.1:14222") -> dict[str, Any]:
    """The whole AsyncAPI 3.0 document, as a JSON-ready dict (deterministic order)."""
    messages: dict[str, Any] = {}
    channels: dict[str, Any] = {}
    operations: dict[str, Any] = {}
    for name in sorted(MESSAGE_TYPES):
        parsed = parse_message_type(name)
        key = _key(name)
        messages[key] = {
            "name": name,
            "title": name,
            "summary": json_schema(name).get("description", "").split("\n")[0],
            "contentType": "application/json",
            "headers": {
                "type": "object",
                "properties": {
                    "Nats-Msg-Id": {
                        "type": "string",
                        "description": "<store-id>:<position>; JetStream de-duplicates on it",
                    }
                },
            },
            # Multi-format schema object: the payload schemas are JSON Schema 2020-12 with
            # their own $id and $defs, resolved against that $id, not this document.
            "payload": {"schemaFormat": SCHEMA_FORMAT, "schema": json_schema(name)},
        }
        channel = f"{parsed.aggregate}.{parsed.event}"
        channels[channel] = {
            "address": f"{EVENT_SUBJECT_PREFIX}.{{agency}}.{parsed.aggregate}.{parsed.event}",
            "description": (
                f"'{parsed.event}' events of {parsed.aggregate} aggregates, in stream {STREAM}."
            ),
            "parameters": {"agency": {"$ref": "#/components/parameters/agency"}},
            "messages": {key: {"$ref": f"#/components/messages/{key}"}},
        }
        operations[f"receive.{channel}"] = {
            "action": "receive",
            "channel": {"$ref": f"#/channels/{channel}"},
            "summary": f"Consume {name} from {STREAM} (durable consumer, explicit ack).",
        }
    channels["statsRelease"] = {
        "address": f"{STATS_SUBJECT_PREFIX}.release.{{period}}",
        "description": (
            "Anonymised statistics releases (issue #14): one message per version of the "
            "release of a closed period, after the policy's embargo; a revision (a late case, "
            "a duplicate found late) is a new version on the same subject. Counts below the "
            "threshold are withheld (null), with linked secondary suppression over every "
            "report of the release and every earlier version of it. Header Cbcm-Release "
            "names the version. Live statistics are never published."
        ),
        "parameters": {
            "period": {"description": "the period in lower case: 2026-q1, 2026-03 or 2026"}
        },
        "messages": {"statisticsRelease": {"$ref": "#/components/messages/statisticsRelease"}},
    }
    messages["statisticsRelease"] = {
        "name": "StatisticsReleaseV1",
        "title": "StatisticsReleaseV1",
        "summary": "One version of a statistics release: its reports and release metadata.",
        "contentType": "application/json",
        "headers": {
            "type": "object",
            "properties": {
                "Cbcm-Release": {
                    "type": "string",
                    "description": "the release version, e.g. 2026-q1-v2",
                }
            },
        },
        "payload": {"schemaFormat": SCHEMA_FORMAT, "schema": release_json_schema()},
    }
    channels["auditCheckpoint"] = {
        "address": AUDIT_CHECKPOINT_SUBJECT,
        "description": (
            f"Signed heads of the event log's hash chain, kept in stream {AUDIT_STREAM} "
            "(no delete, no purge) so that a witness that was offline catches up. The "
            "signature is Ed25519 over the lines 'cbcm.audit.checkpoint.v1', store, position, "
            "link, signed_at (RFC 3339 UTC with microseconds, 'Z'), joined by newlines."
        ),
        "messages": {"auditCheckpoint": {"$ref": "#/components/messages/auditCheckpoint"}},
    }
    messages["auditCheckpoint"] = {
        "name": "AuditCheckpointV1",
        "title": "AuditCheckpointV1",
        "summary": "A signed head (position, chain link) of one event store.",
        "contentType": "application/json",
        "headers": {
            "type": "object",
            "properties": {
                "Nats-Msg-Id": {
                    "type": "string",
                    "description": (
                        "<store>:<position>:<first 16 hex of link>; JetStream drops a "
                        "re-published head, never a contradicting one"
                    ),
                }
            },
        },
        "payload": {"schemaFormat": SCHEMA_FORMAT, "schema": checkpoint_json_schema()},
    }
    channels["auditCosignature"] = {
        "address": f"{COSIGNATURE_SUBJECT}.{{witness}}",
        "description": (
            f"Witnesses' cosignatures (C2SP tlog-cosignature) of the log's checkpoints, kept in "
            f"stream {AUDIT_STREAM}: the network's own witness on {COSIGNATURE_SUBJECT}, each "
            "agency's from its own account on its own subject. Count one only after checking "
            "it against the witness's key."
        ),
        "parameters": {"witness": {"description": "the agency whose witness cosigned"}},
        "messages": {"auditCosignature": {"$ref": "#/components/messages/auditCosignature"}},
    }
    messages["auditCosignature"] = {
        "name": "AuditCosignatureV1",
        "title": "AuditCosignatureV1",
        "summary": "A checkpoint's signed note with one witness's cosignature line.",
        "contentType": "application/json",
        "payload": {"schemaFormat": SCHEMA_FORMAT, "schema": cosignature_json_schema()},
    }
    channels["auditErasure"] = {
        "address": ERASURE_NOTICE_SUBJECT,
        "description": (
            f"Each erasure the checkpoint publisher signed over, as ids, kept in {AUDIT_STREAM}: "
            "a host restored from older copies learns them back (cbcm audit learn-erasures). "
            "MACed with the network's writer key: only the network's own processes can check it."
        ),
        "messages": {"auditErasure": {"$ref": "#/components/messages/auditErasure"}},
    }
    messages["auditErasure"] = {
        "name": "AuditErasureNoticeV1",
        "title": "AuditErasureNoticeV1",
        "summary": "An erasure of one subject's data in one record (ids only).",
        "contentType": "application/json",
        "payload": {"schemaFormat": SCHEMA_FORMAT, "schema": erasure_notice_json_schema()},
    }
    share_key = _key(CASE_SHARED)
    withdrawn_key = _key(CASE_SHARE_WITHDRAWN)
    channels["share.case"] = {
        "address": f"{SHARE_SUBJECT_PREFIX}.{{agency}}.case.{{event}}.{{case_id}}",
        "description": (
            "Personal data of a case shared with one agency by a custody step (a transfer to "
            "it, a referral to its investigating entity), sealed to the agency's registered "
            f"X25519 share key, in stream {SHARES_STREAM}; shares expire after the stream's "
            "max_age. Only field names are in clear: the values are in data.sealed, "
            "libsodium crypto_box_seal over the JSON of components.schemas.sharedFields. "
            "When the case's personal data is erased, its shares are deleted from the stream "
            f"and each recipient gets a {CASE_SHARE_WITHDRAWN} notice (event "
            f"{WITHDRAWN_EVENT}): erase what you kept of them."
        ),
        "parameters": {
            "agency": {"description": "code of the recipient agency"},
            "event": {
                "enum": [*SHARING_EVENTS, WITHDRAWN_EVENT],
                "description": "the custody step that shared the data, or the withdrawal",
            },
            "case_id": {"description": "the case the data is of"},
        },
        "messages": {
            share_key: {"$ref": f"#/components/messages/{share_key}"},
            withdrawn_key: {"$ref": f"#/components/messages/{withdrawn_key}"},
        },
    }
    messages[withdrawn_key] = {
        "name": CASE_SHARE_WITHDRAWN,
        "title": CASE_SHARE_WITHDRAWN,
        "summary": "What was shared of a case was withdrawn: its personal data was erased.",
        "contentType": "application/json",
        "payload": {"schemaFormat": SCHEMA_FORMAT, "schema": json_schema(CASE_SHARE_WITHDRAWN)},
    }
    messages[share_key] = {
        "name": CASE_SHARED,
        "title": CASE_SHARED,
        "summary": "Personal data shared with one agency, sealed to its public key.",
        "contentType": "application/json",
        "headers": {
            "type": "object",
            "properties": {
                "Nats-Msg-Id": {
                    "type": "string",
                    "description": (
                        "<store-id>:<position>:share, position that of the custody step; "
                        "JetStream de-duplicates on it"
                    ),
                }
            },
        },
        "payload": {"schemaFormat": SCHEMA_FORMAT, "schema": json_schema(CASE_SHARED)},
    }
    operations["receive.share.case"] = {
        "action": "receive",
        "channel": {"$ref": "#/channels/share.case"},
        "summary": (
            f"Consume what is shared with your agency from {SHARES_STREAM} "
            "(filter cbcm.v1.share.<agency>.>) and open it with your private key."
        ),
    }
    operations["receive.statsRelease"] = {
        "action": "receive",
        "channel": {"$ref": "#/channels/statsRelease"},
    }
    operations["receive.auditCheckpoint"] = {
        "action": "receive",
        "channel": {"$ref": "#/channels/auditCheckpoint"},
    }
    return {
        "asyncapi": ASYNCAPI_VERSION,
        "info": {
            "title": "cbcm: inter-agency PSEA complaint mechanism events",
            "version": version,
            "description": (
                "Contract messages (CloudEvents 1.0 envelopes) published from the event store "
                f"to JetStream stream {STREAM}. No message carries personal data in clear: "
                f"what a custody step shares with another agency travels in {SHARES_STREAM}, "
                "sealed to that agency's public key."
            ),
        },
        "defaultContentType": "application/json",
        "servers": {
            "embedded": {
                "host": server_url,
                "protocol": "nats",
                "description": "the nats-server started by `cbcm serve`",
            }
        },
        "channels": channels,
        "operations": operations,
        "components": {
            "parameters": {
                "agency": {
                    "description": (
                        "code of the agency holding the case (the concerned agency for "
                        "feedback; 'network' for the registry)"
                    )
                }
            },
            "messages": messages,
            "schemas": {
                "sharedFields": {
                    "schemaFormat": SCHEMA_FORMAT,
                    "schema": shared_fields_json_schema(),
                }
            },
        },
    }
