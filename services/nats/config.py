"""The nats-server configuration of a cbcm network (issue #6, ADR 6): who may do what on the bus.

``server_config(agencies)`` is a pure function from the network's agency codes to the text of
one node's configuration (``deploy/nats/cbcm.conf`` is its output for the demo network):

- TLS is required of every client; JetStream is on.
- Users are nkeys: the file holds no secret, only ``$CBCM_NATSD_NKEY_<USER>`` references to
  public keys, which nats-server reads from its environment at start (as it does the host,
  port, store directory and the certificate and key files). A variable that is missing stops
  the server: nothing falls back to an open default.
- Account ``CBCM`` holds the streams and the network's services, one user each, each allowed
  exactly the subjects it uses (its streams' and consumers' JetStream API subjects, its acks,
  its own ``_INBOX.<user>.>``).
- Each agency is a user in an account of its own. The services' account exports to it only
  its own event and share subjects, the statistics, the checkpoints, and, as services, the
  JetStream API of the consumers provisioned for it (``agency_consumers``), which it reaches
  under ``JS.CBCM.API`` (its own ``$JS.API`` answers "JetStream not enabled"). Its
  requests' reply subjects are rewritten by the server in the services' account, so it
  cannot aim a reply, or a delivery, at a stream's subject there.

Everything not granted is refused: permissions list what is allowed, never what is denied.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Final

from contracts.audit import (
    AUDIT_STREAM,
    CHECKPOINT_SUBJECT,
    COSIGNATURE_SUBJECT,
    ERASURE_NOTICE_SUBJECT,
    agency_cosignature_subject,
)
from contracts.subjects import (
    EVENT_SUBJECTS,
    NETWORK_AGENCY,
    SHARE_SUBJECTS,
    SHARES_STREAM,
    STATS_SUBJECT_PREFIX,
    STREAM,
    agency_event_subjects,
    agency_share_subjects,
)

SERVICES_ACCOUNT: Final = "CBCM"
"""The account of the streams and of the network's services."""

AGENCY_API_PREFIX: Final = "JS.CBCM.API"
"""The JetStream API of the services' account as an agency's account sees it (nats-py:
``nc.jetstream(prefix=AGENCY_API_PREFIX)``; ``CBCM_NATS_JS_API_PREFIX`` for cbcm's tools)."""

STATS_SUBJECTS: Final = f"{STATS_SUBJECT_PREFIX}.>"

HOST_VARIABLE: Final = "CBCM_NATSD_HOST"
PORT_VARIABLE: Final = "CBCM_NATSD_PORT"
STORE_DIR_VARIABLE: Final = "CBCM_NATSD_STORE_DIR"
TLS_CERT_VARIABLE: Final = "CBCM_NATSD_TLS_CERT_FILE"
TLS_KEY_VARIABLE: Final = "CBCM_NATSD_TLS_KEY_FILE"
NKEY_VARIABLE_PREFIX: Final = "CBCM_NATSD_NKEY_"
SERVER_NAME_VARIABLE: Final = "CBCM_NATSD_SERVER_NAME"
CLUSTER_PORT_VARIABLE: Final = "CBCM_NATSD_CLUSTER_PORT"
ROUTE_PASSWORD_VARIABLE: Final = "CBCM_NATSD_ROUTE_PASSWORD"  # noqa: S105 - a variable name
TLS_CA_VARIABLE: Final = "CBCM_NATSD_TLS_CA_FILE"
ROUTE_VARIABLE_PREFIX: Final = "CBCM_NATSD_ROUTE_"
ROUTE_USER: Final = "cbcm-route"
"""The user every node's routes authenticate as (its password: ``CBCM_NATSD_ROUTE_PASSWORD``)."""

_API: Final = "$JS.API"
_CODE = re.compile(r"^[a-z0-9_-]{1,48}$")


def _api(*tokens: str) -> str:
    return ".".join((_API, *tokens))


def _ack(stream: str, consumer: str) -> str:
    return f"$JS.ACK.{stream}.{consumer}.>"


def inbox_prefix(user: str) -> str:
    """The reply subjects' prefix of ``user`` (``nats.connect(inbox_prefix=...)``): each user
    may subscribe to its own only, since pull deliveries and API answers arrive there."""
    return f"_INBOX.{user}"


def nkey_variable(user: str) -> str:
    """The environment variable nats-server reads ``user``'s public nkey from."""
    return NKEY_VARIABLE_PREFIX + user.upper().replace("-", "_")


def rebuild_consumer(read_model: str) -> str:
    """The pull consumer `cbcm projections rebuild` of ``read_model`` reads the stream through
    (made and deleted by the rebuild, ``services.projector.replay``)."""
    return f"cbcm-{read_model}-rebuild"


def agency_user(agency: str) -> str:
    return f"agency-{agency}"


def agency_account(agency: str) -> str:
    return "AGENCY_" + agency.upper().replace("-", "_")


@dataclass(frozen=True)
class AgencyConsumer:
    """A durable pull consumer made for one agency by ``cbcm nats provision``: the only
    kind an agency reads JetStream through (it can create none; see ADR 6)."""

    stream: str
    name: str
    filter_subject: str


def agency_consumers(agency: str) -> tuple[AgencyConsumer, ...]:
    """The agency's consumers: its events, its shares, and a witness's on the checkpoints
    (``cbcm audit witness --name <agency>``)."""
    own = f"agency-{agency}"
    return (
        AgencyConsumer(STREAM, own, agency_event_subjects(agency)),
        AgencyConsumer(SHARES_STREAM, own, agency_share_subjects(agency)),
        AgencyConsumer(AUDIT_STREAM, witness_consumer(agency), CHECKPOINT_SUBJECT),
    )


@dataclass(frozen=True)
class NatsUser:
    """One nkey user: what it is for, and the subjects it may publish and subscribe to."""

    name: str
    account: str
    purpose: str
    inbox_prefix: str
    publish: tuple[str, ...]
    receive: tuple[str, ...]
    """What it may subscribe to besides its inbox."""

    @property
    def nkey_variable(self) -> str:
        return nkey_variable(self.name)

    @property
    def subscribe(self) -> tuple[str, ...]:
        return (*self.receive, f"{self.inbox_prefix}.>")


def _stream_owner(stream: str) -> tuple[str, ...]:
    """What the service that creates ``stream`` asks of it: its info, create or update to
    the fixed configuration, and a message by sequence (the relay checks the stream's tail)."""
    return (
        _api("STREAM", "INFO", stream),
        _api("STREAM", "CREATE", stream),
        _api("STREAM", "UPDATE", stream),
        _api("STREAM", "MSG", "GET", stream),
    )


def _durable(stream: str, consumer: str, filter_subject: str) -> tuple[str, ...]:
    """What a service asks of its own durable pull consumer: look, (re-)create it in either
    form nats-py uses, delete it (to re-seek), fetch, ack."""
    return (
        _api("CONSUMER", "INFO", stream, consumer),
        _api("CONSUMER", "DELETE", stream, consumer),
        _api("CONSUMER", "DURABLE", "CREATE", stream, consumer),
        _api("CONSUMER", "CREATE", stream, consumer),
        _api("CONSUMER", "CREATE", stream, consumer, filter_subject),
        _api("CONSUMER", "MSG", "NEXT", stream, consumer),
        _ack(stream, consumer),
    )


def _service(name: str, purpose: str, publish: tuple[str, ...]) -> NatsUser:
    return NatsUser(name, SERVICES_ACCOUNT, purpose, inbox_prefix(name), publish, receive=())


def _rebuild_consumer(stream: str, consumer: str, filter_subject: str) -> tuple[str, ...]:
    """What `cbcm projections rebuild` asks of its own pull consumer (ADR 28 section 2): make
    it on the filtered create subject only (the server refuses a body naming another consumer
    or filter), fetch from it, delete it. No acks (it acks nothing), no flow control (a pull
    consumer has none), no info."""
    return (
        _api("CONSUMER", "CREATE", stream, consumer, filter_subject),
        _api("CONSUMER", "MSG", "NEXT", stream, consumer),
        _api("CONSUMER", "DELETE", stream, consumer),
    )


def _rebuild_grants(name: str) -> tuple[str, ...]:
    return _rebuild_consumer(STREAM, rebuild_consumer(name), EVENT_SUBJECTS)


def _projector(
    name: str, purpose: str, extra_publish: tuple[str, ...] = (), *, rebuilds: bool = True
) -> NatsUser:
    return _service(
        f"project-{name}",
        purpose,
        (
            _api("STREAM", "INFO", STREAM),
            _api("STREAM", "MSG", "GET", STREAM),
            *_durable(STREAM, f"cbcm-{name}", EVENT_SUBJECTS),
            *(_rebuild_grants(name) if rebuilds else ()),
            *extra_publish,
        ),
    )


def service_users(agencies: Sequence[str]) -> tuple[NatsUser, ...]:
    """The network's services, each with exactly what it uses (the HTTP API uses no NATS)."""
    return (
        _service(
            "relay",
            "cbcm relay: the only publisher of events and of sealed shares",
            (
                EVENT_SUBJECTS,
                SHARE_SUBJECTS,
                *_stream_owner(STREAM),
                *_stream_owner(SHARES_STREAM),
                # an erased case's shares are withdrawn from the stream (issue #6, ADR 7)
                _api("STREAM", "PURGE", SHARES_STREAM),
            ),
        ),
        _projector("inbox", "cbcm project inbox"),
        _projector("assistance", "cbcm project assistance"),
        _projector("stats", "cbcm project stats, the publisher of statistics", (STATS_SUBJECTS,)),
        _projector("register", "cbcm project register: the case register (search, exports)"),
        # the notifier (issue #18) consumes the stream as a projector does; it publishes nothing
        # and is not rebuilt (`cbcm projections rebuild` has no read model "notify")
        _projector("notify", "cbcm notify: notifications and SOP reminders", rebuilds=False),
        _service(
            "webhooks",
            "cbcm webhooks deliver: the agencies' events to their webhook endpoints",
            (_api("STREAM", "INFO", STREAM), *_durable(STREAM, "cbcm-webhooks", EVENT_SUBJECTS)),
        ),
        _service(
            "audit-checkpoint",
            "cbcm audit checkpoint: the only publisher of checkpoints",
            (CHECKPOINT_SUBJECT, ERASURE_NOTICE_SUBJECT, *_stream_owner(AUDIT_STREAM)),
        ),
        _service(
            "audit-witness",
            f"cbcm audit witness --name {NETWORK_WITNESS} (the network's own)",
            (
                _api("STREAM", "INFO", AUDIT_STREAM),
                *_durable(AUDIT_STREAM, witness_consumer(NETWORK_WITNESS), CHECKPOINT_SUBJECT),
                COSIGNATURE_SUBJECT,  # its cosignatures, kept by CBCM_AUDIT (issue #15)
            ),
        ),
        # Filtered create subjects only: the server refuses a body whose filter differs from
        # the subject's, so even this user makes nothing but the agencies' own consumers.
        _service(
            "provision",
            "cbcm nats provision: makes the agencies' consumers, nothing else",
            tuple(
                subject
                for agency in agencies
                for c in agency_consumers(agency)
                for subject in (
                    _api("CONSUMER", "CREATE", c.stream, c.name, c.filter_subject),
                    _api("CONSUMER", "INFO", c.stream, c.name),
                )
            ),
        ),
    )


@dataclass(frozen=True)
class _ServiceGrant:
    """A subject of the services' account an agency may send requests to."""

    subject: str
    stream_response: bool = False
    """Many answers to one request (a pull delivers a batch)."""

    @property
    def local(self) -> str:
        """The subject in the agency's account."""
        if self.subject.startswith(f"{_API}."):
            return AGENCY_API_PREFIX + self.subject[len(_API) :]
        return self.subject  # acks: the reply subject the server put on each delivery


_SHARED_SUBJECTS: Final = (STATS_SUBJECTS, CHECKPOINT_SUBJECT)
"""What every agency receives."""

_SHARED_GRANTS: Final = (_ServiceGrant(_api("STREAM", "INFO", AUDIT_STREAM)),)
"""What every agency may ask (a witness looks at CBCM_AUDIT, which holds checkpoints only)."""


def _own_subjects(agency: str) -> tuple[str, ...]:
    return (agency_event_subjects(agency), agency_share_subjects(agency))


def _own_grants(agency: str) -> tuple[_ServiceGrant, ...]:
    return tuple(
        grant
        for c in agency_consumers(agency)
        for grant in (
            _ServiceGrant(_api("CONSUMER", "INFO", c.stream, c.name)),
            _ServiceGrant(_api("CONSUMER", "MSG", "NEXT", c.stream, c.name), stream_response=True),
            _ServiceGrant(_ack(c.stream, c.name)),
        )
    )


def agency_nats_user(agency: str) -> NatsUser:
    """An agency's user: it receives what its account imports, and publishes nothing but
    requests to its consumers and their acks."""
    return NatsUser(
        agency_user(agency),
        agency_account(agency),
        f"agency {agency}",
        inbox_prefix(agency),
        # No cbcm.v1.evt.> or cbcm.v1.share.>: only the relay publishes events and shares. An
        # agency publishing there would forge events of the network (and its account imports
        # no such subject anyway: nothing it publishes reaches the services' account).
        # Its witness's cosignatures, on a subject of its own that the services' account
        # imports into CBCM_AUDIT (issue 15): whoever verifies collects them there.
        publish=(
            *(g.local for g in (*_own_grants(agency), *_SHARED_GRANTS)),
            agency_cosignature_subject(agency),
        ),
        receive=(*_own_subjects(agency), *_SHARED_SUBJECTS),
    )


def check_agencies(agencies: Iterable[str]) -> tuple[str, ...]:
    """The agency codes, sorted, or ``ValueError`` for one that cannot be a subject token,
    two that map to one account or variable, the network's own token (its registry events
    would become that agency's), or one that would take the network witness's consumer."""
    codes = tuple(sorted(set(agencies)))
    if not codes:
        raise ValueError("a network needs at least one agency")
    seen: dict[str, str] = {}
    for code in codes:
        if not _CODE.fullmatch(code):
            raise ValueError(
                f"agency {code!r} is not an agency code: 1-48 of lowercase a-z, 0-9, _ and -"
            )
        if code == NETWORK_AGENCY:
            raise ValueError(f"{code!r} is the network's own subject token, not an agency's")
        if code == NETWORK_WITNESS:
            raise ValueError(
                f"agency {code!r} would share the network witness's consumer "
                f"{witness_consumer(NETWORK_WITNESS)}"
            )
        account = agency_account(code)
        if account in seen:
            raise ValueError(f"agencies {seen[account]!r} and {code!r} map to one account")
        seen[account] = code
    return codes


def network_users(agencies: Iterable[str]) -> tuple[NatsUser, ...]:
    """Every user of the configuration: the services', then one per agency."""
    codes = check_agencies(agencies)
    return (*service_users(codes), *(agency_nats_user(a) for a in codes))


# ------------------------------------------------------------------------------ the text


def _quoted(value: str) -> str:
    # Quoted, a '$' is literal to nats-server: subjects such as $JS.API... are not variables.
    return json.dumps(value)


def _subject_list(subjects: Sequence[str], indent: str) -> list[str]:
    return [f"{indent}{_quoted(s)}" for s in subjects]


def _user_block(user: NatsUser, indent: str) -> list[str]:
    inner = indent + "  "
    return [
        f"{indent}# {user.name}: {user.purpose}",
        f"{indent}{{",
        f"{inner}nkey: ${user.nkey_variable}",
        f"{inner}permissions: {{",
        f"{inner}  publish: {{ allow: [",
        *_subject_list(user.publish, inner + "    "),
        f"{inner}  ] }}",
        f"{inner}  subscribe: {{ allow: [",
        *_subject_list(user.subscribe, inner + "    "),
        f"{inner}  ] }}",
        f"{inner}}}",
        f"{indent}}}",
    ]


def _accounts_list(codes: Sequence[str]) -> str:
    return "[" + ", ".join(agency_account(a) for a in codes) + "]"


def _export(grant: _ServiceGrant, accounts: str) -> str:
    response = " response_type: stream," if grant.stream_response else ""
    return f"{{ service: {_quoted(grant.subject)},{response} accounts: {accounts} }}"


def _exports(codes: Sequence[str], indent: str) -> list[str]:
    everyone = _accounts_list(codes)
    lines = [f"{indent}{{ stream: {_quoted(s)}, accounts: {everyone} }}" for s in _SHARED_SUBJECTS]
    lines += [f"{indent}{_export(g, everyone)}" for g in _SHARED_GRANTS]
    for agency in codes:
        only = _accounts_list((agency,))
        lines.append(f"{indent}# agency {agency}")
        lines += [
            f"{indent}{{ stream: {_quoted(s)}, accounts: {only} }}" for s in _own_subjects(agency)
        ]
        lines += [f"{indent}{_export(g, only)}" for g in _own_grants(agency)]
    return lines


def _imports(agency: str, indent: str) -> list[str]:
    source = f"account: {SERVICES_ACCOUNT}"
    lines = [
        f"{indent}{{ stream: {{ {source}, subject: {_quoted(subject)} }} }}"
        for subject in (*_own_subjects(agency), *_SHARED_SUBJECTS)
    ]
    for grant in (*_own_grants(agency), *_SHARED_GRANTS):
        to = f", to: {_quoted(grant.local)}" if grant.local != grant.subject else ""
        lines.append(
            f"{indent}{{ service: {{ {source}, subject: {_quoted(grant.subject)} }}{to} }}"
        )
    return lines


_HEADER: Final = """\
# cbcm: one nats-server node of the network (issue #6, docs/adr/0006-nats-isolation.md).
# Generated by `cbcm nats config` for the agencies: {agencies}.
# Do not edit: generate it again (`cbcm nats setup` also writes the keys and env files).
#
# nats-server reads each $NAME below from its environment at start; a missing one stops it:
#   {host}, {port}: where clients connect
#   {store}: JetStream's files
#   {cert}, {key}: the server's TLS certificate and key (PEM)
#   {nkey}<USER>: each user's public nkey (U...), named at each user below
# No secret is in this file: a user signs the server's nonce with its nkey seed, which never
# leaves it, and the TLS key is a file the environment names.
"""


def _cluster_block(nodes: int) -> list[str]:
    """The ``cluster {}`` of one node of ``nodes``: routes authenticate with a user and password
    of their own and speak TLS verified both ways against the network's CA (a node without
    the password, or without a certificate the CA signed, is refused), to every node's route
    URL (``nats-route://cbcm-route:<password>@HOST:PORT``, this node's own included)."""
    return [
        "",
        "# One node of a cluster. Routes authenticate and speak TLS, verified both ways: a",
        "# server without the route password or a certificate of the network's CA cannot join.",
        "cluster {",
        "  name: cbcm",
        f"  host: ${HOST_VARIABLE}",
        f"  port: ${CLUSTER_PORT_VARIABLE}",
        "  authorization {",
        f"    user: {ROUTE_USER}",
        f"    password: ${ROUTE_PASSWORD_VARIABLE}",
        "    timeout: 2",
        "  }",
        "  tls {",
        f"    cert_file: ${TLS_CERT_VARIABLE}",
        f"    key_file: ${TLS_KEY_VARIABLE}",
        f"    ca_file: ${TLS_CA_VARIABLE}",
        "    verify: true",
        "    timeout: 2",
        "  }",
        "  routes: [",
        *(f"    ${ROUTE_VARIABLE_PREFIX}{index}" for index in range(1, nodes + 1)),
        "  ]",
        "}",
    ]


def server_config(agencies: Iterable[str], *, nodes: int = 1) -> str:
    """The configuration text for a network of ``agencies`` (codes; order does not matter),
    for a single server or for each node of a cluster of ``nodes`` (at least three: JetStream
    keeps R3 streams).

    ``ValueError`` for codes ``check_agencies`` refuses, or a cluster of two.
    """
    codes = check_agencies(agencies)
    if nodes != 1 and nodes < 3:
        raise ValueError(f"a cluster has at least three nodes, not {nodes}")
    lines = [
        _HEADER.format(
            agencies=", ".join(codes),
            host=HOST_VARIABLE,
            port=PORT_VARIABLE,
            store=STORE_DIR_VARIABLE,
            cert=TLS_CERT_VARIABLE,
            key=TLS_KEY_VARIABLE,
            nkey=NKEY_VARIABLE_PREFIX,
        ),
        *([f"server_name: ${SERVER_NAME_VARIABLE}"] if nodes > 1 else []),
        f"host: ${HOST_VARIABLE}",
        f"port: ${PORT_VARIABLE}",
        "",
        "# TLS for every client connection: the server refuses plain text.",
        "tls {",
        f"  cert_file: ${TLS_CERT_VARIABLE}",
        f"  key_file: ${TLS_KEY_VARIABLE}",
        "  timeout: 2",
        "}",
        "",
        "jetstream {",
        f"  store_dir: ${STORE_DIR_VARIABLE}",
        "}",
        *(_cluster_block(nodes) if nodes > 1 else []),
        "",
        "accounts {",
        "  # The streams and the network's services. No agency is a user here: any client of",
        "  # an account can name any of its subjects as a request's reply subject, and the",
        "  # server's answer to it would be stored by the stream capturing that subject.",
        f"  {SERVICES_ACCOUNT} {{",
        "    jetstream: enabled",
        "    users: [",
    ]
    for user in service_users(codes):
        lines += _user_block(user, "      ")
    lines += [
        "    ]",
        "    # What agencies may receive or call: their own events and shares, statistics,",
        "    # checkpoints, and the consumers `cbcm nats provision` made for them. Never the",
        "    # API to create a consumer: its body can make it deliver (push) onto a stream's",
        "    # subject, which the server does not check against the requester's permissions.",
        "    exports: [",
        *_exports(codes, "      "),
        "    ]",
        "    # What agencies publish into the streams: their witnesses' cosignatures (each on",
        "    # its own subject, which CBCM_AUDIT keeps).",
        "    imports: [",
        *(
            f"      {{ stream: {{ account: {agency_account(a)}, subject: "
            f"{_quoted(agency_cosignature_subject(a))} }} }}"
            for a in codes
        ),
        "    ]",
        "  }",
    ]
    for agency in codes:
        user = agency_nats_user(agency)
        lines += [
            "",
            f"  # agency {agency}: its own account; JetStream of {SERVICES_ACCOUNT} under "
            f"{AGENCY_API_PREFIX}.",
            f"  {user.account} {{",
            "    users: [",
            *_user_block(user, "      "),
            "    ]",
            "    imports: [",
            *_imports(agency, "      "),
            "    ]",
            "    exports: [",
            f"      {{ stream: {_quoted(agency_cosignature_subject(agency))}, "
            f"accounts: [{SERVICES_ACCOUNT}] }}",
            "    ]",
            "  }",
        ]
    lines += ["}", ""]
    return "\n".join(lines)


NETWORK_WITNESS: Final = "local"
"""The name of the network's own audit witness."""

_NAME = re.compile(r"^[a-z0-9_-]{1,64}$")


def valid_witness_name(name: str) -> bool:
    """Witness names become consumer names: lowercase a-z, 0-9, ``_`` and ``-``."""
    return bool(_NAME.fullmatch(name))


def witness_consumer(name: str = NETWORK_WITNESS) -> str:
    """The witness's durable consumer on ``CBCM_AUDIT``."""
    if not valid_witness_name(name):
        raise ValueError("a witness name is 1-64 of lowercase a-z, 0-9, _ and -")
    return f"cbcm-witness-{name}"
