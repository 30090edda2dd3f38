"""The HTTP edge (issue #16): who the client is, how much it may send, and the headers every
answer carries. Three ASGI middlewares, outermost first:

- ``SecurityHeaders``: ``X-Content-Type-Options: nosniff``, ``Referrer-Policy: no-referrer``
  and a Content-Security-Policy on every answer, a 500 included (it sends that one itself, as
  a problem, before the server's own answer without them could go); ``Cache-Control:
  no-store`` on every answer but the docs pages' static assets (an answer under ``/v1`` may
  carry personal data or a receipt's status; the operations answers are cheap and must not
  be stale). JSON answers get ``default-src 'none'``; the pages for people (issue #20) their
  own policy, which allows nothing from another origin
  (``services.api.pages.site.PAGE_POLICY``); the docs pages may load the app's own scripts
  and styles and run the one inline script they carry (named by its hash).
- ``ClientAddress``: ``X-Forwarded-For`` is believed only from a listed proxy
  (``CBCM_TRUSTED_PROXIES``); the client is then the right-most address no listed proxy wrote.
- ``BodyLimit``: a body over ``CBCM_MAX_BODY_BYTES`` is refused 413 before it is read: at
  once when ``Content-Length`` announces it, and as soon as a streamed (chunked) body passes
  the limit, its pieces counted as they arrive and never held.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import ipaddress
import json
import re
from collections.abc import Iterable

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from services.api.problems import PROBLEM_JSON

DOCS_PAGES = frozenset({"/docs", "/redoc", "/docs/oauth2-redirect"})
DOCS_ASSETS = "/static-offline-docs/"
"""Where ``fastapi-offline`` mounts Swagger UI's and ReDoc's files."""

JSON_POLICY = "default-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
"""Nothing an API answer rendered by a browser could load, run or be framed by."""


def docs_policy(inline_script_hashes: Iterable[str], *, compiles_code: bool = False) -> str:
    """The docs pages: the app's own files, their one inline start-up script, the schema and
    the API itself fetched from the same origin. Inline styles are allowed (ReDoc writes its
    styles into the page); scripts from anywhere else, or written in, are not. ReDoc's bundle
    compiles JSON-schema validators (ajv, ``new Function``): its page, where nobody types a
    token (it has no "try it out"), may evaluate code (``compiles_code``); Swagger UI's may not."""
    sources = ["'self'", *(f"'sha256-{h}'" for h in inline_script_hashes)]
    if compiles_code:
        sources.append("'unsafe-eval'")
    return (
        f"default-src 'none'; script-src {' '.join(sources)}; "
        "style-src 'self' 'unsafe-inline'; "
        "img-src 'self' data:; font-src 'self' data:; connect-src 'self'; worker-src blob:; "
        "frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
    )


_INLINE_SCRIPT = re.compile(rb"<script>(.*?)</script>", re.DOTALL)
DOCS_PAGE_MAX_BYTES = 1 << 20


def _inline_script_hashes(page: bytes) -> list[str]:
    return [
        base64.b64encode(hashlib.sha256(script).digest()).decode()
        for script in _INLINE_SCRIPT.findall(page)
    ]


def _set(headers: list[tuple[bytes, bytes]], name: bytes, value: bytes) -> None:
    headers[:] = [(k, v) for k, v in headers if k.lower() != name]
    headers.append((name, value))


SERVER_ERROR = json.dumps(
    {
        "type": "about:blank",
        "title": "Internal Server Error",
        "status": 500,
        "detail": "the server failed to answer this request; nothing is known to be recorded "
        "or not: a write may be sent again with the same Idempotency-Key",
    }
).encode()
"""The answer to a request whose handling failed unexpectedly (no detail of the error)."""


class SecurityHeaders:
    def __init__(
        self, app: ASGIApp, pages: frozenset[str] = frozenset(), page_policy: str = JSON_POLICY
    ) -> None:
        self.app = app
        self.pages = pages
        self.page_policy = page_policy

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope.get("path", "")
        if path in DOCS_PAGES:
            await self._docs_page(scope, receive, send)
            return

        started = False

        async def sending(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                headers = list(message.get("headers", []))
                self._common(headers, store=not path.startswith(DOCS_ASSETS))
                policy = self.page_policy if path in self.pages else JSON_POLICY
                _set(headers, b"content-security-policy", policy.encode())
                message = {**message, "headers": headers}
            await send(message)

        try:
            await self.app(scope, receive, sending)
        except Exception:
            # Starlette's own 500 is sent from outside every middleware, without these
            # headers: the answer is sent here, with them, as a problem; the error goes on
            # to be logged (the server sends nothing more once an answer has started).
            if not started:
                await sending(
                    {
                        "type": "http.response.start",
                        "status": 500,
                        "headers": [
                            (b"content-type", PROBLEM_JSON.encode()),
                            (b"content-length", str(len(SERVER_ERROR)).encode()),
                        ],
                    }
                )
                await sending({"type": "http.response.body", "body": SERVER_ERROR})
            raise

    @staticmethod
    def _common(headers: list[tuple[bytes, bytes]], *, store: bool) -> None:
        _set(headers, b"x-content-type-options", b"nosniff")
        _set(headers, b"referrer-policy", b"no-referrer")
        if store:
            _set(headers, b"cache-control", b"no-store")

    async def _docs_page(self, scope: Scope, receive: Receive, send: Send) -> None:
        """A docs page is small HTML of our own making: held whole, so that its policy can
        name the hash of the inline script it carries."""
        start: Message | None = None
        body = bytearray()

        async def holding(message: Message) -> None:
            nonlocal start
            if message["type"] == "http.response.start":
                start = message
                return
            if message["type"] == "http.response.body":
                body.extend(message.get("body", b""))
                if len(body) > DOCS_PAGE_MAX_BYTES:
                    raise RuntimeError("a docs page larger than expected")
                return
            await send(message)

        await self.app(scope, receive, holding)
        if start is None:
            return
        headers = list(start.get("headers", []))
        self._common(headers, store=True)
        policy = docs_policy(
            _inline_script_hashes(bytes(body)), compiles_code=scope.get("path") == "/redoc"
        )
        _set(headers, b"content-security-policy", policy.encode())
        _set(headers, b"content-length", str(len(body)).encode())
        await send({**start, "headers": headers})
        await send({"type": "http.response.body", "body": bytes(body)})


Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def _address(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    text = text.strip()
    if text.startswith("[") and "]" in text:  # [v6]:port
        text = text[1 : text.index("]")]
    elif text.count(":") == 1:  # v4:port
        text = text.partition(":")[0]
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


class ClientAddress:
    """Sets the ASGI ``client`` to the address the request came from, through the listed
    proxies. With none listed it changes nothing: the peer is the client, whatever headers
    it sends. From a listed peer, ``X-Forwarded-For`` is read right to left, skipping the
    listed proxies; the first address that is not one is the client (what a client writes
    itself sits to its left and is never reached). If every address is a listed proxy, the
    left-most is taken; an unreadable entry stops the walk at the last proxy, which is then
    counted as the client (a misconfigured proxy throttles its own traffic, it does not let
    anyone choose their key)."""

    def __init__(self, app: ASGIApp, proxies: list[Network]) -> None:
        self.app = app
        self.proxies = proxies

    def _listed(self, address: ipaddress.IPv4Address | ipaddress.IPv6Address | None) -> bool:
        return address is not None and any(address in network for network in self.proxies)

    def client(self, peer: str, forwarded: list[str]) -> str:
        hop = peer
        for entry in reversed(forwarded):
            if not self._listed(_address(hop)):
                break
            address = _address(entry)
            if address is None:
                break
            hop = str(address)
        return hop

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and self.proxies and scope.get("client"):
            peer = str(scope["client"][0])
            if self._listed(_address(peer)):
                forwarded = [
                    entry
                    for name, value in scope["headers"]
                    if name == b"x-forwarded-for"
                    for entry in value.decode("latin-1").split(",")
                    if entry.strip()
                ]
                client = self.client(peer, forwarded)
                if client != peer:
                    scope = {**scope, "client": (client, 0)}
        await self.app(scope, receive, send)


class BodyTooLarge(Exception):
    """Raised into the app when a streamed body passes the limit."""


class BodyLimit:
    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def _refuse(self, scope: Scope, send: Send) -> None:
        body = json.dumps(
            {
                "type": "about:blank",
                "title": "Content Too Large",
                "status": 413,
                "detail": f"the request body is larger than {self.max_bytes} bytes",
                "instance": scope.get("path", ""),
            }
        ).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [
                    (b"content-type", PROBLEM_JSON.encode()),
                    (b"content-length", str(len(body)).encode()),
                    (b"connection", b"close"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope["headers"]:
            if name == b"content-length" and (not value.isdigit() or int(value) > self.max_bytes):
                await self._refuse(scope, send)
                return
        received = 0
        passed = False
        started = False

        async def counting() -> Message:
            nonlocal received, passed
            if passed:
                raise BodyTooLarge
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    passed = True
                    raise BodyTooLarge
            return message

        async def sending(message: Message) -> None:
            nonlocal started
            if passed:
                return  # the app's answer to a body it could not read is replaced by ours
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        with contextlib.suppress(BodyTooLarge):
            await self.app(scope, counting, sending)
        if passed and not started:
            await self._refuse(scope, send)
