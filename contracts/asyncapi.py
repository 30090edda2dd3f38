"""The AsyncAPI 3.0 document: the streams, every subject, every message with its headers and
its schema.

Integrators who do not use Python read this (``cbcm contracts asyncapi``, committed as
``docs/contracts/asyncapi.json``) to subscribe to the events that concern their agency, the
personal data shared with it (sealed), the anonymised statistics and the audit checkpoints.

The schemas are those of ``contracts.catalogue.all_json_schemas``, moved into
``components/schemas``: each document's root under its name without ``org.psea.cbcm.``
(``case.received.v1``; the bodies that are not CloudEvents under their earlier keys,
``statisticsRelease``, ``auditCheckpoint``, ``auditCosignature``, ``sharedFields``), each of
its ``$defs`` under the Struct's name (``ActorRef``), every ``$ref`` rewritten to
``#/components/schemas/<name>``. No schema in the document carries an ``$id``: a reference
then means the same to a tool that honours ``$id`` (JSON Schema) and to one that ignores it
(the AsyncAPI parser and CLI resolve against the document). The standalone files keep their
``$id``; each message names it in ``x-cbcm-schema-id`` (ADR 19).
"""

from __future__ import annotations

import copy
from typing import Any, Final

from contracts.audit import (
    AUDIT_STREAM,
    CHECKPOINT_SCHEMA,
    COSIGNATURE_SCHEMA,
    COSIGNATURE_SUBJECT,
    ERASURE_NOTICE_SCHEMA,
    ERASURE_NOTICE_SUBJECT,
)
from contracts.catalogue import MESSAGE_TYPES, all_json_schemas
from contracts.envelope import TYPE_PREFIX, parse_message_type
from contracts.schema_documents import DEFS_REF, schema_id
from contracts.shares import (
    CASE_SHARE_WITHDRAWN,
    CASE_SHARED,
    SHARED_FIELDS_SCHEMA,
    SHARING_EVENTS,
    WITHDRAWN_EVENT,
)
from contracts.statistics import RELEASE_ID_PATTERN, RELEASE_SCHEMA
from contracts.subjects import (
    AUDIT_CHECKPOINT_SUBJECT,
    EVENT_SUBJECT_PREFIX,
    PREVIOUS_POSITION_HEADER,
    SHARE_SUBJECT_PREFIX,
    SHARES_STREAM,
    STATS_SUBJECT_PREFIX,
    STREAM,
)

ASYNCAPI_VERSION: Final = "3.0.0"
COMPONENT_REF: Final = "#/components/schemas/"

MSG_ID_HEADER: Final = "Nats-Msg-Id"
EXPECTED_LAST_SEQUENCE_HEADER: Final = "Nats-Expected-Last-Sequence"
EXPECTED_STREAM_HEADER: Final = "Nats-Expected-Stream"
RELEASE_HEADER: Final = "Cbcm-Release"

_STORE = "[0-9a-f]{16}"
_POSITION = "[1-9][0-9]*"

EVENT_MSG_ID_PATTERN: Final = f"^{_STORE}:{_POSITION}$"
SHARE_MSG_ID_PATTERN: Final = f"^{_STORE}:{_POSITION}:share$"
WITHDRAWN_MSG_ID_PATTERN: Final = f"^{_STORE}:{_POSITION}:withdrawn:[a-z0-9_-]+$"
CHECKPOINT_MSG_ID_PATTERN: Final = f"^{_STORE}:{_POSITION}:[0-9a-f]{{16}}:[0-9a-f]{{16}}$"
PREVIOUS_POSITION_PATTERN: Final = "^(0|[1-9][0-9]*)$"
SEQUENCE_PATTERN: Final = "^(0|[1-9][0-9]*)$"

_STORE_ID = (
    "<store-id> is 16 hex characters naming the event store, stable for its lifetime; "
    "<position> the event's position in the store's log"
)
_EXPECTED_LAST_SEQUENCE: dict[str, Any] = {
    "type": "string",
    "pattern": SEQUENCE_PATTERN,
    "description": (
        "the stream sequence the publisher expected to be last before this message: "
        "JetStream stored the message only if it was, so the stream holds the store's order "
        "without gaps. Informational for a consumer."
    ),
}


def _expected_stream(stream: str) -> dict[str, Any]:
    return {
        "type": "string",
        "const": stream,
        "description": (
            f"{stream}: the stream the publisher expected to store the message (the NATS "
            "client sets it; JetStream refuses the message elsewhere). Informational."
        ),
    }


EVENT_HEADERS: Final[dict[str, Any]] = {
    "type": "object",
    "required": [MSG_ID_HEADER, PREVIOUS_POSITION_HEADER],
    "properties": {
        MSG_ID_HEADER: {
            "type": "string",
            "pattern": EVENT_MSG_ID_PATTERN,
            "description": (
                f"<store-id>:<position>; {_STORE_ID}. JetStream de-duplicates on it; "
                "the same as the envelope's position."
            ),
        },
        PREVIOUS_POSITION_HEADER: {
            "type": "string",
            "pattern": PREVIOUS_POSITION_PATTERN,
            "description": (
                "the store position of the event published just before this one (0 for the "
                "first). Store positions have holes (PostgreSQL), so a consumer detects a "
                "gap by this header not being the position it recorded last, never by "
                "position + 1."
            ),
        },
        EXPECTED_LAST_SEQUENCE_HEADER: _EXPECTED_LAST_SEQUENCE,
        EXPECTED_STREAM_HEADER: _expected_stream(STREAM),
    },
}
"""Headers of every event message (the relay's, on ``CBCM_EVENTS``)."""

SHARE_HEADERS: Final[dict[str, Any]] = {
    "type": "object",
    "required": [MSG_ID_HEADER],
    "properties": {
        MSG_ID_HEADER: {
            "type": "string",
            "pattern": SHARE_MSG_ID_PATTERN,
            "description": (
                f"<store-id>:<position>:share, the position that of the custody step; "
                f"{_STORE_ID}. JetStream keeps one share per position."
            ),
        },
        EXPECTED_LAST_SEQUENCE_HEADER: _EXPECTED_LAST_SEQUENCE,
        EXPECTED_STREAM_HEADER: _expected_stream(SHARES_STREAM),
    },
}
"""Headers of a share (``CBCM_SHARES``)."""

WITHDRAWN_HEADERS: Final[dict[str, Any]] = {
    "type": "object",
    "required": [MSG_ID_HEADER],
    "properties": {
        MSG_ID_HEADER: {
            "type": "string",
            "pattern": WITHDRAWN_MSG_ID_PATTERN,
            "description": (
                "<store-id>:<position>:withdrawn:<agency>, the position that of the erasure, "
                f"<agency> the recipient; {_STORE_ID}. One notice per erasure and recipient."
            ),
        },
        EXPECTED_STREAM_HEADER: _expected_stream(SHARES_STREAM),
    },
}
"""Headers of a withdrawal notice (``CBCM_SHARES``)."""

CHECKPOINT_HEADERS: Final[dict[str, Any]] = {
    "type": "object",
    "required": [MSG_ID_HEADER],
    "properties": {
        MSG_ID_HEADER: {
            "type": "string",
            "pattern": CHECKPOINT_MSG_ID_PATTERN,
            "description": (
                "<store-id>:<position>:<first 16 hex of the link>:<first 16 hex of SHA-256 of "
                "the signature (its base64 text)>. JetStream drops a re-published head, never "
                "one that contradicts it (another link), nor a genuine one whose id a forger "
                "took first (the signature's hash needs the key)."
            ),
        },
        EXPECTED_STREAM_HEADER: _expected_stream(AUDIT_STREAM),
    },
}
"""Headers of a checkpoint (``CBCM_AUDIT``)."""

COSIGNATURE_HEADERS: Final[dict[str, Any]] = {
    "type": "object",
    "properties": {EXPECTED_STREAM_HEADER: _expected_stream(AUDIT_STREAM)},
}
"""Headers of a cosignature (``CBCM_AUDIT``): the network's witness publishes into the stream,
an agency's on core NATS from its own account (no header)."""

ERASURE_MSG_ID_PATTERN: Final = f"^{_STORE}:erasure:[0-9a-f]{{32}}$"

ERASURE_HEADERS: Final[dict[str, Any]] = {
    "type": "object",
    "required": [MSG_ID_HEADER],
    "properties": {
        MSG_ID_HEADER: {
            "type": "string",
            "pattern": ERASURE_MSG_ID_PATTERN,
            "description": (
                "<store-id>:erasure:<the first 32 hex characters of the notice's mac>; "
                f"{_STORE_ID}. One id per writer key and erasure: a notice told again under a "
                "new key is a new message, and nobody without the key can take its id first."
            ),
        },
        EXPECTED_STREAM_HEADER: _expected_stream(AUDIT_STREAM),
    },
}
"""Headers of an erasure notice (``CBCM_AUDIT``)."""

RELEASE_HEADERS: Final[dict[str, Any]] = {
    "type": "object",
    "required": [RELEASE_HEADER],
    "properties": {
        RELEASE_HEADER: {
            "type": "string",
            "pattern": RELEASE_ID_PATTERN,
            "description": "the release version the message carries, e.g. 2026-q1-v2",
        },
    },
}
"""Headers of a statistics release (core NATS, not kept by a stream)."""


DOCUMENT_KEYS: Final[dict[str, tuple[str, str]]] = {
    RELEASE_SCHEMA: ("statisticsRelease", "StatisticsReleaseV1"),
    CHECKPOINT_SCHEMA: ("auditCheckpoint", "AuditCheckpointV1"),
    COSIGNATURE_SCHEMA: ("auditCosignature", "AuditCosignatureV1"),
    ERASURE_NOTICE_SCHEMA: ("auditErasure", "AuditErasureNoticeV1"),
    SHARED_FIELDS_SCHEMA: ("sharedFields", "SharedFieldsV1"),
}
"""The bodies that are not CloudEvents: their component key and message name, as earlier
versions of this document named them (tools may refer to them)."""


def component_key(name: str) -> str:
    """The component key of a published schema or message: a CloudEvent's type without its
    prefix (AsyncAPI keys allow letters, digits, ``.``, ``_`` and ``-``), or the key of
    ``DOCUMENT_KEYS``."""
    if name in DOCUMENT_KEYS:
        return DOCUMENT_KEYS[name][0]
    return name.removeprefix(f"{TYPE_PREFIX}.")


def _rewrite_refs(node: Any) -> Any:
    if isinstance(node, dict):
        return {
            key: (
                COMPONENT_REF + value.removeprefix(DEFS_REF)
                if key == "$ref" and isinstance(value, str)
                else _rewrite_refs(value)
            )
            for key, value in node.items()
        }
    if isinstance(node, list):
        return [_rewrite_refs(item) for item in node]
    return node


def component_schemas() -> dict[str, Any]:
    """Every published schema for ``components/schemas``: roots by ``component_key``, their
    definitions by Struct name, local references only, no ``$id`` nor ``$schema``.

    Raises ``ValueError`` if two documents define the same name differently."""
    components: dict[str, Any] = {}
    for name, document in all_json_schemas().items():
        root = copy.deepcopy(document)
        for keyword in ("$schema", "$id"):
            root.pop(keyword)
        defs = root.pop("$defs", {})
        for def_name, definition in defs.items():
            rewritten = _rewrite_refs(definition)
            if components.setdefault(def_name, rewritten) != rewritten:
                raise ValueError(f"schema {def_name} is defined twice, differently")
        key = component_key(name)
        if key in components:
            raise ValueError(f"component key {key} is taken")
        components[key] = _rewrite_refs(root)
    return dict(sorted(components.items()))


def _message(name: str, summary: str, headers: dict[str, Any]) -> dict[str, Any]:
    title = DOCUMENT_KEYS[name][1] if name in DOCUMENT_KEYS else name
    message: dict[str, Any] = {
        "name": title,
        "title": title,
        "summary": summary,
        "contentType": "application/json",
        "headers": headers,
    }
    message["payload"] = {"$ref": COMPONENT_REF + component_key(name)}
    message["x-cbcm-schema-id"] = schema_id(name)
    return message


def _summary(schema: dict[str, Any]) -> str:
    description: str = schema.get("description", "")
    return description.split("\n", maxsplit=1)[0]


def asyncapi_document(*, version: str = "1", server_url: str = "127.0.0.1:14222") -> dict[str, Any]:
    """The whole AsyncAPI 3.0 document, as a JSON-ready dict (deterministic order)."""
    schemas = component_schemas()
    messages: dict[str, Any] = {}
    channels: dict[str, Any] = {}
    operations: dict[str, Any] = {}
    for name in sorted(MESSAGE_TYPES):
        parsed = parse_message_type(name)
        key = component_key(name)
        messages[key] = _message(name, _summary(schemas[key]), EVENT_HEADERS)
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

    release_key = component_key(RELEASE_SCHEMA)
    channels["statsRelease"] = {
        "address": f"{STATS_SUBJECT_PREFIX}.release.{{period}}",
        "description": (
            "Anonymised statistics releases (issue #14): one message per version of the "
            "release of a closed period, after the policy's embargo; a revision (a late case, "
            "a duplicate found late) is a new version on the same subject. Counts below the "
            "threshold are withheld (null), with linked secondary suppression over every "
            "report of the release and every earlier version of it. Core NATS: no stream "
            "keeps them (GET /v1/stats/releases gives what a subscriber missed). Live "
            "statistics are never published. Not a CloudEvent: the body is the release as "
            "it is kept."
        ),
        "parameters": {
            "period": {"description": "the period in lower case: 2026-q1, 2026-03 or 2026"}
        },
        "messages": {release_key: {"$ref": f"#/components/messages/{release_key}"}},
    }
    messages[release_key] = _message(
        RELEASE_SCHEMA,
        "One version of a statistics release: its reports and release metadata.",
        RELEASE_HEADERS,
    )

    checkpoint_key = component_key(CHECKPOINT_SCHEMA)
    channels["auditCheckpoint"] = {
        "address": AUDIT_CHECKPOINT_SUBJECT,
        "description": (
            f"Signed heads of the event log's hash chain, kept in stream {AUDIT_STREAM} "
            "(no delete, no purge) so that a witness that was offline catches up. The "
            "signature is Ed25519 over the lines 'cbcm.audit.checkpoint.v1', store, position, "
            "link, signed_at (RFC 3339 UTC with microseconds, 'Z'), joined by newlines. Not a "
            "CloudEvent."
        ),
        "messages": {checkpoint_key: {"$ref": f"#/components/messages/{checkpoint_key}"}},
    }
    messages[checkpoint_key] = _message(
        CHECKPOINT_SCHEMA,
        "A signed head (position, chain link) of one event store.",
        CHECKPOINT_HEADERS,
    )

    cosignature_key = component_key(COSIGNATURE_SCHEMA)
    cosignature_ref = {cosignature_key: {"$ref": f"#/components/messages/{cosignature_key}"}}
    channels["auditCosignature"] = {
        "address": f"{COSIGNATURE_SUBJECT}.{{witness}}",
        "description": (
            f"Agencies' witnesses' cosignatures (C2SP tlog-cosignature) of the log's "
            f"checkpoints (issue #15), each agency's from its own account on its own subject, "
            f"kept in stream {AUDIT_STREAM}: the checkpoint's signed note with the witness's "
            "cosignature line added. Count one only after checking it against the witness's "
            "key. Not a CloudEvent."
        ),
        "parameters": {"witness": {"description": "the agency whose witness cosigned"}},
        "messages": cosignature_ref,
    }
    channels["auditNetworkCosignature"] = {
        "address": COSIGNATURE_SUBJECT,
        "description": (
            f"The network's own witness's cosignatures, kept in stream {AUDIT_STREAM}. Not a "
            "CloudEvent."
        ),
        "messages": cosignature_ref,
    }
    messages[cosignature_key] = _message(
        COSIGNATURE_SCHEMA,
        "A checkpoint's signed note with one witness's cosignature line.",
        COSIGNATURE_HEADERS,
    )

    erasure_key = component_key(ERASURE_NOTICE_SCHEMA)
    channels["auditErasure"] = {
        "address": ERASURE_NOTICE_SUBJECT,
        "description": (
            f"Each erasure the checkpoint publisher signed over, as ids, kept in {AUDIT_STREAM}: "
            "a host restored from older copies learns them back (cbcm audit learn-erasures). "
            "MACed with the network's writer key: only the network's own processes can check "
            "it. Not a CloudEvent."
        ),
        "messages": {erasure_key: {"$ref": f"#/components/messages/{erasure_key}"}},
    }
    messages[erasure_key] = _message(
        ERASURE_NOTICE_SCHEMA,
        "An erasure of one subject's data in one record (ids only).",
        ERASURE_HEADERS,
    )

    share_key = component_key(CASE_SHARED)
    withdrawn_key = component_key(CASE_SHARE_WITHDRAWN)
    sealed_key = component_key(SHARED_FIELDS_SCHEMA)
    channels["share.case"] = {
        "address": f"{SHARE_SUBJECT_PREFIX}.{{agency}}.case.{{event}}.{{case_id}}",
        "description": (
            "Personal data of a case shared with one agency by a custody step (a transfer to "
            "it, a referral to its investigating entity), sealed to the agency's registered "
            f"X25519 share key, in stream {SHARES_STREAM}; shares expire after the stream's "
            "max_age. Only field names are in clear: the values are in data.sealed, "
            "libsodium crypto_box_seal over the JSON of components.schemas."
            f"{sealed_key} ({schema_id(SHARED_FIELDS_SCHEMA)}). When the case's personal "
            "data is erased, its shares are deleted from the stream and each recipient gets "
            f"a {CASE_SHARE_WITHDRAWN} notice (event {WITHDRAWN_EVENT}): erase what you kept "
            "of them."
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
    messages[share_key] = _message(
        CASE_SHARED,
        "Personal data shared with one agency, sealed to its public key.",
        SHARE_HEADERS,
    )
    messages[withdrawn_key] = _message(
        CASE_SHARE_WITHDRAWN,
        "What was shared of a case was withdrawn: its personal data was erased.",
        WITHDRAWN_HEADERS,
    )

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
        "summary": "Subscribe to cbcm.v1.stats.release.> (core NATS).",
    }
    operations["receive.auditCheckpoint"] = {
        "action": "receive",
        "channel": {"$ref": "#/channels/auditCheckpoint"},
        "summary": f"Consume checkpoints from {AUDIT_STREAM}, or subscribe (core NATS).",
    }
    operations["receive.auditCosignature"] = {
        "action": "receive",
        "channel": {"$ref": "#/channels/auditCosignature"},
        "summary": f"Consume agencies' witnesses' cosignatures from {AUDIT_STREAM}.",
    }
    operations["receive.auditNetworkCosignature"] = {
        "action": "receive",
        "channel": {"$ref": "#/channels/auditNetworkCosignature"},
        "summary": f"Consume the network's witness's cosignatures from {AUDIT_STREAM}.",
    }
    operations["receive.auditErasure"] = {
        "action": "receive",
        "channel": {"$ref": "#/channels/auditErasure"},
        "summary": f"Consume erasure notices from {AUDIT_STREAM} (the network's own hosts).",
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
                "sealed to that agency's public key. Every CloudEvent names its JSON Schema "
                "in dataschema (urn:cbcm:schema:<type>); the same schemas are below, and one "
                "file each under docs/contracts/schemas/."
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
            "schemas": schemas,
        },
    }
