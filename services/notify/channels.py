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
    kind = NotificationChannel.EMAIL

    def __init__(self, settings: NotifySettings) -> None:
        assert settings.smtp_host is not None
        self._settings = settings
        context = ssl.create_default_context(
            cafile=None if settings.smtp_ca_file is None else str(settings.smtp_ca_file)
        )
        self._tls = context

    async def send(self, address: str, message: Message) -> None:
        s = self._settings
        email = EmailMessage()
        email["From"] = s.smtp_from
        email["To"] = address
        email["Subject"] = message.subject
        email["Message-ID"] = message.message_id
        email.set_content(message.text)
        try:
            await aiosmtplib.send(
                email,
                hostname=s.smtp_host,
                port=s.smtp_port,
                start_tls=s.smtp_starttls,
                use_tls=False,
                tls_context=self._tls,
                username=s.smtp_username,
                password=None if s.smtp_password is None else s.smtp_password.get_secret_value(),
                timeout=s.smtp_timeout_seconds,
            )
        except (aiosmtplib.SMTPException, OSError, TimeoutError, ssl.SSLError) as e:
            raise SendFailed(f"email: {type(e).__name__}") from None

    async def close(self) -> None:
        return None


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
