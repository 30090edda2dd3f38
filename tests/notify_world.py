"""Real servers for the notifier's tests: an SMTP server that requires STARTTLS (aiosmtpd,
with a self-signed certificate made here) and an HTTP server standing in for an SMS gateway.

Both record what they accepted, with when it arrived, and can be told to refuse the next
N attempts (SMTP 451, HTTP 503), as a failing server would.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import email
import email.policy
import ipaddress
import json
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from domain.actors import Actor, Role
from domain.vocabulary import NotificationChannel, NotificationDelivery
from services.application.mechanism import ComplaintMechanism
from services.nats.server import free_port


def self_signed(directory: Path, host: str = "127.0.0.1") -> tuple[Path, Path]:
    """A certificate for ``host`` signed by its own key: (cert file, key file). The cert
    file is also the CA file a client trusts it with."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "cbcm test smtp")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(host))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = directory / "smtp-cert.pem", directory / "smtp-key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_file, key_file


@dataclass(frozen=True)
class Mail:
    """One message the SMTP server accepted."""

    to: tuple[str, ...]
    subject: str
    message_id: str
    body: str
    raw: bytes
    arrived: float
    tls: bool


@dataclass
class _Inbox:
    mails: list[Mail] = field(default_factory=list)
    refuse: int = 0
    delay: float = 0.0
    lock: threading.Lock = field(default_factory=threading.Lock)

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        with self.lock:
            if self.refuse > 0:
                self.refuse -= 1
                return "451 4.3.0 try again later"
        if self.delay:
            await asyncio.sleep(self.delay)  # a slow server: the notifier waits on it
        raw = envelope.original_content or b""
        parsed = email.message_from_bytes(raw, policy=email.policy.default)
        body = parsed.get_body(preferencelist=("plain",))
        mail = Mail(
            to=tuple(envelope.rcpt_tos),
            subject=" ".join(str(parsed["Subject"]).split()),
            message_id=str(parsed["Message-ID"]),
            body="" if body is None else body.get_content(),
            raw=raw,
            arrived=time.monotonic(),
            tls=session.ssl is not None,
        )
        with self.lock:
            self.mails.append(mail)
        return "250 OK"


class SmtpServer:
    """aiosmtpd on 127.0.0.1, STARTTLS required before MAIL FROM."""

    def __init__(self, directory: Path) -> None:
        self.cert, key = self_signed(directory)
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(self.cert, key)
        self.inbox = _Inbox()
        self.port = free_port()
        self._controller = Controller(
            self.inbox,
            hostname="127.0.0.1",
            port=self.port,
            tls_context=context,
            require_starttls=True,
            server_hostname="127.0.0.1",
        )

    def start(self) -> SmtpServer:
        self._controller.start()
        return self

    def stop(self) -> None:
        self._controller.stop()

    @property
    def mails(self) -> list[Mail]:
        with self.inbox.lock:
            return list(self.inbox.mails)

    def refuse_next(self, count: int) -> None:
        with self.inbox.lock:
            self.inbox.refuse = count

    def env(self) -> dict[str, str]:
        """The notifier's settings for this server."""
        return {
            "CBCM_SMTP_HOST": "127.0.0.1",
            "CBCM_SMTP_PORT": str(self.port),
            "CBCM_SMTP_CA_FILE": str(self.cert),
            "CBCM_SMTP_FROM": "cbcm@network.test",
        }


@dataclass(frozen=True)
class Sms:
    path: str
    headers: dict[str, str]
    body: bytes
    fields: dict[str, Any]
    arrived: float


class SmsGateway:
    """A real HTTP server on 127.0.0.1 taking RapidPro-style JSON or Twilio-style forms."""

    def __init__(self) -> None:
        self.received: list[Sms] = []
        self.refuse = 0
        self._lock = threading.Lock()
        gateway = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                body = self.rfile.read(length)
                with gateway._lock:
                    refused = gateway.refuse > 0
                    if refused:
                        gateway.refuse -= 1
                if refused:
                    self.send_response(503)
                    self.end_headers()
                    return
                kind = self.headers.get("Content-Type", "")
                if kind.startswith("application/json"):
                    fields: dict[str, Any] = json.loads(body)
                else:
                    fields = {k: v[0] for k, v in parse_qs(body.decode()).items()}
                sms = Sms(self.path, dict(self.headers), body, fields, time.monotonic())
                with gateway._lock:
                    gateway.received.append(sms)
                self.send_response(201)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(b'{"id": 1}')

            def log_message(self, format: str, *args: object) -> None:
                return

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/api/v2/broadcasts.json"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def start(self) -> SmsGateway:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    @property
    def messages(self) -> list[Sms]:
        with self._lock:
            return list(self.received)


def register_email(
    app: ComplaintMechanism,
    actor: Actor,
    *,
    user: str,
    organisation: str,
    role: Role,
    email_address: str,
    at: dt.datetime,
    delivery: NotificationDelivery = NotificationDelivery.IMMEDIATE,
) -> None:
    app.register_staff_contact(
        actor=actor,
        user=user,
        organisation=organisation,
        role=role,
        email=email_address,
        phone=None,
        channels=(NotificationChannel.EMAIL,),
        quiet_hours=None,
        delivery=delivery,
        at=at,
    )


def wait_until(condition: Callable[[], bool], bound: float, what: str | Callable[[], str]) -> None:
    deadline = time.monotonic() + bound
    while not condition():
        if time.monotonic() > deadline:
            said = what() if callable(what) else what
            raise AssertionError(f"timed out after {bound}s waiting for {said}")
        time.sleep(0.02)
