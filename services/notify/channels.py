"""The ways out: email over SMTP with STARTTLS, SMS through an HTTP gateway.

A channel's ``send`` returns when the server accepted the message and raises
``SendFailed`` otherwise. Its error text names the channel and the failure's type, never an
address (what goes to logs). The SMTP connection verifies the server's certificate
(``CBCM_SMTP_CA_FILE`` for a private CA); a server that offers no STARTTLS is refused when
``CBCM_SMTP_STARTTLS`` is on, rather than sending in clear.

SMS gateways: ``rapidpro`` posts ``{"urns": ["tel:+..."], "text": ...}`` with
``Authorization: Token <token>`` (RapidPro and TextIt's broadcasts endpoint); ``twilio``
posts a form ``To``, ``From``, ``Body`` with basic auth ``<account>:<token>`` (Twilio's
Messages resource and the gateways that copy it). Any 2xx answer is acceptance.
"""

from __future__ import annotations

import ssl
from email.message import EmailMessage
from typing import Protocol

import aiosmtplib
import httpx

from domain.vocabulary import NotificationChannel
from services.notify.messages import Message
from services.notify.settings import NotifySettings


class SendFailed(RuntimeError):
    """The channel did not accept the message (retried later)."""


class Channel(Protocol):
    kind: NotificationChannel

    async def send(self, address: str, message: Message) -> None: ...

    async def close(self) -> None: ...


class EmailChannel:
    """One SMTP connection, kept open between messages (STARTTLS and the login once, not
    per message); a failed send closes it, the next send connects again."""

    kind = NotificationChannel.EMAIL

    def __init__(self, settings: NotifySettings) -> None:
        assert settings.smtp_host is not None
        self._settings = settings
        self._tls = ssl.create_default_context(
            cafile=None if settings.smtp_ca_file is None else str(settings.smtp_ca_file)
        )
        self._client: aiosmtplib.SMTP | None = None

    async def _connected(self) -> aiosmtplib.SMTP:
        s = self._settings
        if self._client is not None and self._client.is_connected:
            return self._client
        client = aiosmtplib.SMTP(
            hostname=s.smtp_host,
            port=s.smtp_port,
            start_tls=s.smtp_starttls,
            use_tls=False,
            tls_context=self._tls,
            timeout=s.smtp_timeout_seconds,
        )
        await client.connect()
        if s.smtp_username is not None:
            password = "" if s.smtp_password is None else s.smtp_password.get_secret_value()
            await client.login(s.smtp_username, password)
        self._client = client
        return client

    async def send(self, address: str, message: Message) -> None:
        s = self._settings
        email = EmailMessage()
        email["From"] = s.smtp_from
        email["To"] = address
        email["Subject"] = message.subject
        email["Message-ID"] = message.message_id
        email.set_content(message.text)
        reused = self._client is not None
        try:
            try:
                await (await self._connected()).send_message(email)
            except (aiosmtplib.SMTPServerDisconnected, ConnectionError):
                if not reused:
                    raise
                # the server closed a connection left idle: once more on a new one
                await self.close()
                await (await self._connected()).send_message(email)
        except (aiosmtplib.SMTPException, OSError, TimeoutError, ssl.SSLError) as e:
            await self.close()
            raise SendFailed(f"email: {type(e).__name__}") from None

    async def close(self) -> None:
        client, self._client = self._client, None
        if client is not None and client.is_connected:
            try:
                await client.quit()
            except (aiosmtplib.SMTPException, OSError, TimeoutError):
                client.close()


class SmsChannel:
    kind = NotificationChannel.SMS

    def __init__(self, settings: NotifySettings, client: httpx.AsyncClient | None = None) -> None:
        assert settings.sms_gateway_url is not None
        self._settings = settings
        self._client = client or httpx.AsyncClient(timeout=30.0, follow_redirects=False)

    async def send(self, address: str, message: Message) -> None:
        s = self._settings
        token = "" if s.sms_gateway_token is None else s.sms_gateway_token.get_secret_value()
        url = str(s.sms_gateway_url)
        text = message.text.strip()
        try:
            if s.sms_gateway_style == "twilio":
                form = {"To": address, "Body": text}
                if s.sms_from:
                    form["From"] = s.sms_from
                answer = await self._client.post(
                    url, data=form, auth=(s.sms_gateway_account or "", token)
                )
            else:
                answer = await self._client.post(
                    url,
                    json={"urns": [f"tel:{address}"], "text": text},
                    headers={"Authorization": f"Token {token}"} if token else {},
                )
        except httpx.HTTPError as e:
            raise SendFailed(f"sms: {type(e).__name__}") from None
        if not answer.is_success:
            raise SendFailed(f"sms: gateway answered {answer.status_code}")

    async def close(self) -> None:
        await self._client.aclose()


def channels_from(settings: NotifySettings) -> dict[NotificationChannel, Channel]:
    """The channels the settings configure."""
    found: dict[NotificationChannel, Channel] = {}
    if settings.smtp_host is not None:
        found[NotificationChannel.EMAIL] = EmailChannel(settings)
    if settings.sms_gateway_url is not None:
        found[NotificationChannel.SMS] = SmsChannel(settings)
    return found
