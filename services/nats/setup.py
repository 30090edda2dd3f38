"""Setting up a network's NATS (issue #6, ADR 6): key and certificate files, the environment
that fills ``deploy/nats/cbcm.conf``'s ``$VARIABLE``s, and the agencies' consumers.

``write_nats_setup`` writes, under one directory: the configuration for the agencies; an nkey
seed per user (``nkeys/<user>.nk``, mode 0600; an existing one is kept, so that running it
again for a new agency changes no one else's key); a development CA and a server certificate
for the given host names (``tls/``; kept too if present); ``nats-server.env`` (the server's
variables: paths, port, public keys) and ``env/<user>.env`` (a client's ``CBCM_NATS_*``).
The CA's private key is not kept: nothing else can be signed with it.

``provision_agency_consumers`` makes each agency's durable pull consumers
(``services.nats.config.agency_consumers``) with the ``provision`` user's credentials.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import os
import re
import secrets
import shlex
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Final

import nats
import nats.js.errors
import nkeys
import structlog
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from services.nats.client import nats_servers, quiet_errors
from services.nats.config import (
    AGENCY_API_PREFIX,
    CLUSTER_PORT_VARIABLE,
    HOST_VARIABLE,
    PORT_VARIABLE,
    ROUTE_PASSWORD_VARIABLE,
    ROUTE_USER,
    ROUTE_VARIABLE_PREFIX,
    SERVER_NAME_VARIABLE,
    STORE_DIR_VARIABLE,
    TLS_CA_VARIABLE,
    TLS_CERT_VARIABLE,
    TLS_KEY_VARIABLE,
    NatsUser,
    agency_consumers,
    check_agencies,
    network_users,
    server_config,
)

log = structlog.get_logger()

CONFIG_NAME: Final = "cbcm.conf"
CERTIFICATE_DAYS: Final = 365
CONSUMER_ACK_WAIT: Final = 30.0
CONSUMER_MAX_ACK_PENDING: Final = 1024


@dataclass(frozen=True)
class NatsSetup:
    """What ``write_nats_setup`` wrote, and the environments it makes."""

    directory: Path
    config_file: Path
    url: str
    ca_file: Path
    server_environment: dict[str, str]
    """The variables ``cbcm.conf`` reads (``nats-server.env``)."""
    seed_files: dict[str, Path]
    """User name -> its nkey seed file."""
    users: dict[str, NatsUser]

    def client_environment(self, user: str) -> dict[str, str]:
        """The ``CBCM_NATS_*`` settings of a process connecting as ``user``."""
        environment = {
            "CBCM_NATS_URL": self.url,
            "CBCM_NATS_NKEY_SEED_FILE": str(self.seed_files[user]),
            "CBCM_NATS_TLS_CA_FILE": str(self.ca_file),
        }
        if user.startswith("agency-"):
            environment["CBCM_NATS_INBOX_PREFIX"] = self.users[user].inbox_prefix
            environment["CBCM_NATS_JS_API_PREFIX"] = AGENCY_API_PREFIX
        return environment


def _write_private(path: Path, data: bytes) -> None:
    """Write a secret readable by its owner only (never through a wider mode first)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "wb") as file:
        file.write(data)


def _user_seed(path: Path) -> str:
    """The public key of the seed at ``path``, written fresh if there is none."""
    if not path.exists():
        _write_private(path, nkeys.encode_seed(os.urandom(32), nkeys.PREFIX_BYTE_USER) + b"\n")
    pair = nkeys.from_seed(bytearray(path.read_bytes().strip()))
    try:
        public: bytes = pair.public_key
        if not public.startswith(b"U"):
            raise ValueError(f"{path} holds no user nkey seed")
        return public.decode()
    finally:
        pair.wipe()


def _san(name: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(name))
    except ValueError:
        return x509.DNSName(name)


def _write_dev_tls(directory: Path, hostnames: Sequence[str]) -> tuple[Path, Path, Path]:
    """A development CA and a server certificate it signed for ``hostnames`` (kept if
    present): (CA file, certificate file, key file)."""
    ca_file, cert_file, key_file = (
        directory / "ca.pem",
        directory / "server-cert.pem",
        directory / "server-key.pem",
    )
    if ca_file.exists() and cert_file.exists() and key_file.exists():
        return ca_file, cert_file, key_file
    now = datetime.now(UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "cbcm development CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=CERTIFICATE_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), False)
        .sign(ca_key, hashes.SHA256())
    )
    server_key = ec.generate_private_key(ec.SECP256R1())
    server = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hostnames[0])]))
        .issuer_name(ca_name)
        .public_key(server_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=CERTIFICATE_DAYS))
        .add_extension(x509.SubjectAlternativeName([_san(h) for h in hostnames]), False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        # client authentication too: a cluster's nodes present it to each other's routes
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            False,
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False
        )
        .sign(ca_key, hashes.SHA256())
    )
    directory.mkdir(parents=True, exist_ok=True)
    for path in (ca_file, cert_file, key_file):
        path.unlink(missing_ok=True)
    _write_private(
        key_file,
        server_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
    )
    cert_file.write_bytes(server.public_bytes(serialization.Encoding.PEM))
    ca_file.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    return ca_file, cert_file, key_file


def _env_file(path: Path, values: Mapping[str, str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{k}={shlex.quote(v)}\n" for k, v in values.items()))


@dataclass(frozen=True)
class ClusterNode:
    """One node of a cluster: its name, the address it listens on, its client and route
    ports."""

    name: str
    host: str
    port: int
    cluster_port: int

    @classmethod
    def parse(cls, text: str) -> ClusterNode:
        """``NAME=HOST:PORT:CLUSTER_PORT`` (``n1=10.0.0.1:4222:6222``)."""
        name, separator, rest = text.partition("=")
        host, _, ports = rest.rpartition(":")
        host, _, port = host.rpartition(":")
        if not separator or not re.fullmatch(r"[a-z0-9-]{1,32}", name) or not host:
            raise ValueError(f"a node is NAME=HOST:PORT:CLUSTER_PORT, not {text!r}")
        try:
            numbers = int(port), int(ports)
        except ValueError:
            raise ValueError(f"a node is NAME=HOST:PORT:CLUSTER_PORT, not {text!r}") from None
        if not all(1 <= n <= 65535 for n in numbers):
            raise ValueError(f"ports are 1 to 65535: {text!r}")
        return cls(name, host, *numbers)


def write_nats_setup(
    directory: Path,
    agencies: Iterable[str],
    *,
    host: str = "127.0.0.1",
    port: int = 4222,
    hostnames: Sequence[str] = (),
    store_dir: Path | None = None,
    nodes: Sequence[ClusterNode] = (),
) -> NatsSetup:
    """Write the configuration, keys, development certificates and env files for a network
    of ``agencies`` under ``directory`` (see the module's docstring). With ``nodes`` (three or
    more), the configuration is a cluster's: each node's environment goes to
    ``nodes/<name>.env``, with a route password drawn once and kept."""
    codes = check_agencies(agencies)
    if nodes and len({n.name for n in nodes}) != len(nodes):
        raise ValueError("node names must differ")
    directory = directory.resolve()
    directory.mkdir(parents=True, exist_ok=True)
    config_file = directory / CONFIG_NAME
    config_file.write_text(server_config(codes, nodes=len(nodes) or 1))
    names = [
        name
        for name in dict.fromkeys(
            [*hostnames, *(n.host for n in nodes), host, "localhost", "127.0.0.1"]
        )
        if name not in ("0.0.0.0", "::")  # noqa: S104 - "every address" is no name to check
    ]
    ca_file, cert_file, key_file = _write_dev_tls(directory / "tls", names)
    users = {user.name: user for user in network_users(codes)}
    seeds = {name: directory / "nkeys" / f"{name}.nk" for name in users}
    server_environment = {
        HOST_VARIABLE: host,
        PORT_VARIABLE: str(port),
        STORE_DIR_VARIABLE: str((store_dir or directory / "jetstream").resolve()),
        TLS_CERT_VARIABLE: str(cert_file),
        TLS_KEY_VARIABLE: str(key_file),
        **{user.nkey_variable: _user_seed(seeds[name]) for name, user in users.items()},
    }
    connect_host = host if host in names else "127.0.0.1"
    setup = NatsSetup(
        directory,
        config_file,
        f"tls://{connect_host}:{port}",
        ca_file,
        server_environment,
        seeds,
        users,
    )
    if nodes:
        password = _route_password(directory / "nkeys" / "route.password")
        # quoted for nats-server's parser: a URL or a password is one string value
        routes = {
            f"{ROUTE_VARIABLE_PREFIX}{index}": f'"nats-route://{ROUTE_USER}:{password}@'
            f"{_url_host(node.host if node.host in names else '127.0.0.1')}:{node.cluster_port}"
            '"'
            for index, node in enumerate(nodes, start=1)
        }
        for node in nodes:
            _env_file(
                directory / "nodes" / f"{node.name}.env",
                {
                    **server_environment,
                    SERVER_NAME_VARIABLE: node.name,
                    HOST_VARIABLE: node.host,
                    PORT_VARIABLE: str(node.port),
                    CLUSTER_PORT_VARIABLE: str(node.cluster_port),
                    STORE_DIR_VARIABLE: str(
                        ((store_dir or directory / "jetstream") / node.name).resolve()
                    ),
                    TLS_CA_VARIABLE: str(ca_file),
                    ROUTE_PASSWORD_VARIABLE: f'"{password}"',
                    **routes,
                },
            )
        setup = replace(
            setup,
            url=",".join(
                f"tls://{_url_host(n.host if n.host in names else '127.0.0.1')}:{n.port}"
                for n in nodes
            ),
        )
    else:
        _env_file(directory / "nats-server.env", server_environment)
    for name in users:
        _env_file(directory / "env" / f"{name}.env", setup.client_environment(name))
    return setup


def _route_password(path: Path) -> str:
    """The cluster's route password, drawn once (kept if present; readable by its owner)."""
    if not path.exists():
        _write_private(path, secrets.token_urlsafe(32).encode())
    return path.read_text().strip()


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


# ---------------------------------------------------------------------------- consumers


@dataclass(frozen=True)
class Provisioned:
    agency: str
    stream: str
    consumer: str
    ready: bool
    """False: the stream does not exist yet (its publisher creates it on start)."""


def consumer_config(name: str, filter_subject: str) -> ConsumerConfig:
    """An agency's durable pull consumer (pull: no deliver subject) from the first message."""
    return ConsumerConfig(
        name=name,
        durable_name=name,
        description="cbcm: provisioned for one agency (cbcm nats provision)",
        filter_subject=filter_subject,
        deliver_policy=DeliverPolicy.ALL,
        ack_policy=AckPolicy.EXPLICIT,
        ack_wait=CONSUMER_ACK_WAIT,
        max_deliver=-1,
        max_ack_pending=CONSUMER_MAX_ACK_PENDING,
    )


async def provision_agency_consumers(
    nats_url: str, agencies: Iterable[str], options: Mapping[str, Any], *, wait: float = 5.0
) -> list[Provisioned]:
    """Create (or leave as they are) every agency's consumers; one outcome each.

    An existing consumer keeps its position: the request carries the same configuration, so
    the server changes nothing. Fails (a NATS error, ``OSError``, ``TimeoutError``) when
    NATS cannot be reached or does not answer (a request these credentials may not make).
    """
    codes = check_agencies(agencies)
    nc = await asyncio.wait_for(
        nats.connect(
            nats_servers(nats_url),
            name="cbcm-nats-provision",
            allow_reconnect=False,
            max_reconnect_attempts=1,
            reconnect_time_wait=0.2,
            connect_timeout=wait,
            error_cb=quiet_errors("nats.provision_error"),
            **options,
        ),
        2 * wait + 1,
    )
    try:
        js = nc.jetstream(timeout=wait)
        done: list[Provisioned] = []
        for agency in codes:
            for consumer in agency_consumers(agency):
                config = consumer_config(consumer.name, consumer.filter_subject)
                try:
                    await js.add_consumer(consumer.stream, config)
                except nats.js.errors.NotFoundError:
                    done.append(Provisioned(agency, consumer.stream, consumer.name, False))
                    continue
                done.append(Provisioned(agency, consumer.stream, consumer.name, True))
                log.info("nats.consumer_provisioned", agency=agency, consumer=consumer.name)
        return done
    finally:
        with contextlib.suppress(Exception):
            await nc.close()
