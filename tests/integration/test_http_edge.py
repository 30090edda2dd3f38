"""The HTTP edge attacked as an adversary would (issue #16): forged ``X-Forwarded-For`` to
escape the public throttles, bodies too large to hold in memory, answers a proxy or browser
could cache, the receipt secret in a URL, metrics and third-party scripts on the API port.

The forwarded-address and body-size attacks run against a real uvicorn server configured as
``cbcm api`` configures it (``services.api.serving``): that is where a forwarded header is
believed or not, and where a body arrives in pieces.
"""

from __future__ import annotations

import json
import re
import select
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from fastapi.testclient import TestClient
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from services.api.serving import server_config
from services.application.receipts import new_receipt_code
from services.bootstrap import complaint_mechanism
from services.nats.server import free_port
from services.settings import Settings
from tests.api_world import RECENTLY, World, make_world

PROBLEM_JSON = "application/problem+json"
FORM = {"agency": "unhcr", "narrative": "a worker asked for money for a ration card"}
LOOK_UP = "/v1/public/receipt-lookups"
UVICORN_HIGH_WATER = 65536
ASYNCIO_READ = 262144
"""The most one read of asyncio's socket transport takes (``max_size``): uvicorn parses each
read whole, so its buffer can pass its high-water mark by up to one read before it pauses."""


@pytest.fixture
def data_dir(tmp_path: Path) -> Iterator[Path]:
    yield tmp_path


def world_of(data_dir: Path, **settings: object) -> Iterator[World]:
    mechanism = complaint_mechanism(
        Settings(data_dir=data_dir, event_store=f"sqlite:///{data_dir / 'events.sqlite3'}")
    )
    try:
        yield make_world(
            data_dir,
            mechanism,
            public_intake_per_client=2,
            receipt_failures_per_locator=50,
            receipt_failures_per_client=3,
            # no projector runs here: a read of a read model answers 503 once this wait is
            # over (5 s by default, which only held a core idle)
            read_wait_seconds=0.05,
            **settings,
        )
    finally:
        mechanism.close()


@pytest.fixture
def world(data_dir: Path) -> Iterator[World]:
    yield from world_of(data_dir)


@pytest.fixture
def behind_proxy(data_dir: Path) -> Iterator[World]:
    yield from world_of(data_dir, trusted_proxies="127.0.0.1, 10.9.0.0/16")


class Received:
    """An ASGI wrapper counting the request-body bytes the app pulled from the server."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.body_bytes = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def counted() -> Message:
            message = await receive()
            if message["type"] == "http.request":
                self.body_bytes += len(message.get("body", b""))
            return message

        await self.app(scope, counted, send)


@contextmanager
def served(app: ASGIApp, **config: Any) -> Iterator[tuple[str, int]]:
    """``app`` on a real uvicorn server on loopback, configured as ``cbcm api`` does."""
    port = free_port()
    server = uvicorn.Server(server_config(app, "127.0.0.1", port, **config))  # type: ignore[arg-type]
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert thread.is_alive(), "the server did not start"
        assert time.monotonic() < deadline, "the server did not start within 20 s"
        time.sleep(0.02)
    try:
        yield "127.0.0.1", port
    finally:
        server.should_exit = True
        thread.join(10)


ANSWER_WITHIN = 60.0
"""Seconds a test's HTTP client waits for an answer (httpx's default, 5 s, passed on a
machine running two suites at once: a wait, never what a test asserts)."""


# --- 1. forwarded addresses ---------------------------------------------------------------------


def test_rotating_x_forwarded_for_from_an_unlisted_peer_does_not_pass_the_intake_limit(
    world: World,
) -> None:
    # given the API with no trusted proxy (the default), a limit of 2 web-form complaints
    with (
        served(world.api) as (host, port),
        httpx.Client(base_url=f"http://{host}:{port}", timeout=ANSWER_WITHIN) as c,
    ):
        # when one peer sends each complaint under a new forged client address
        statuses = [
            c.post(
                "/v1/public/complaints", json=FORM, headers={"X-Forwarded-For": f"203.0.113.{n}"}
            ).status_code
            for n in range(1, 5)
        ]
    # then the peer is counted as itself: past its 2, refused
    assert statuses == [201, 201, 429, 429]


def test_rotating_x_forwarded_for_does_not_pass_the_receipt_failure_limit(world: World) -> None:
    # given a per-client limit of 3 failed look-ups; when an unlisted peer guesses codes, each
    # under a new forged address
    with (
        served(world.api) as (host, port),
        httpx.Client(base_url=f"http://{host}:{port}", timeout=ANSWER_WITHIN) as c,
    ):
        statuses = [
            c.post(
                LOOK_UP,
                json={"code": str(new_receipt_code())},
                headers={"X-Forwarded-For": f"198.51.100.{n}"},
            ).status_code
            for n in range(1, 7)
        ]
    # then its fourth guess and every one after are refused without being checked
    assert statuses == [404, 404, 404, 429, 429, 429]


def test_behind_a_listed_proxy_each_real_client_is_counted_apart(behind_proxy: World) -> None:
    # given the API behind a listed proxy (127.0.0.1 here), a limit of 2 complaints per client
    with (
        served(behind_proxy.api) as (host, port),
        httpx.Client(base_url=f"http://{host}:{port}", timeout=ANSWER_WITHIN) as c,
    ):

        def send(forwarded: str) -> int:
            return c.post(
                "/v1/public/complaints", json=FORM, headers={"X-Forwarded-For": forwarded}
            ).status_code

        # when a client behind it uses its 2
        assert [send("192.0.2.10"), send("192.0.2.10")] == [201, 201]
        # then it is refused, even when it prepends a forged address of its own (the
        # right-most address no listed proxy wrote is the client) or passes another listed
        # proxy of the network
        assert send("192.0.2.10") == 429
        assert send("6.6.6.6, 192.0.2.10") == 429
        assert send("192.0.2.10, 10.9.3.4") == 429
        # and another client behind the same proxy still has its own 2
        assert [send("192.0.2.20"), send("192.0.2.20"), send("192.0.2.20")] == [201, 201, 429]


# --- 3. body size -------------------------------------------------------------------------------


def read_answer(sock: socket.socket, timeout: float = 10) -> bytes:
    """What the server answered, up to the end of the problem's JSON or the socket closing."""
    sock.settimeout(timeout)
    data = b""
    while b"\r\n\r\n" not in data or not data.rstrip().endswith(b"}"):
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    return data


def status_of(answer: bytes) -> int:
    return int(answer.split(b" ", 2)[1])


def body_of(answer: bytes) -> dict[str, object]:
    head, _, body = answer.partition(b"\r\n\r\n")
    assert PROBLEM_JSON.encode() in head.lower()
    parsed: dict[str, object] = json.loads(body)
    return parsed


def test_an_oversized_unauthenticated_post_is_refused_before_it_is_read(world: World) -> None:
    # given the API as cbcm api serves it, the app's reads of request bodies counted
    received = Received(world.api)
    with served(received) as (host, port), socket.create_connection((host, port)) as sock:
        # when an anonymous client announces a 200 MB complaint and starts sending it
        sock.sendall(
            b"POST /v1/public/complaints HTTP/1.1\r\nHost: cbcm\r\n"
            b"Content-Type: application/json\r\nContent-Length: 200000000\r\n\r\n"
            + b'{"agency": "unhcr", "narrative": "'
            + b"x" * 65536
        )
        answer = read_answer(sock)
    # then it is refused at once with 413 problem+json, and the app read none of it
    assert status_of(answer) == 413, answer[:300]
    assert body_of(answer)["status"] == 413
    assert received.body_bytes == 0


def test_a_chunked_body_without_length_is_refused_once_it_passes_the_limit(world: World) -> None:
    limit = world.settings.max_body_bytes
    piece = b"x" * 16384
    received = Received(world.api)
    answer = b""
    sent = 0
    with served(received) as (host, port), socket.create_connection((host, port)) as sock:
        # when an anonymous client streams a complaint in chunks, with no Content-Length
        sock.sendall(
            b"POST /v1/public/complaints HTTP/1.1\r\nHost: cbcm\r\n"
            b"Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
        )
        sock.settimeout(5)
        chunk = f"{len(piece):x}\r\n".encode() + piece + b"\r\n"
        while sent < 20_000_000:
            readable, _, _ = select.select([sock], [], [], 0)
            if readable:
                break
            try:
                sock.sendall(chunk)
            except (TimeoutError, ConnectionError):
                break  # the server stopped reading, or closed: its answer is waiting
            sent += len(piece)
        answer = read_answer(sock)
    # then it is refused 413 once the body passes the limit, long before the 20 MB are sent,
    # and the app was handed no more than the limit and the one message that passed it (at
    # most what uvicorn buffers before it stops reading the socket: 64 KiB, and one read of
    # the socket: under load the client's pieces pile up and one read takes several)
    assert status_of(answer) == 413, answer[:300]
    assert body_of(answer)["status"] == 413
    assert limit < received.body_bytes <= limit + UVICORN_HIGH_WATER + ASYNCIO_READ
    assert sent < 20_000_000


def test_the_biggest_legitimate_complaint_fits_the_default_limit(
    world: World, data_dir: Path
) -> None:
    # every text field at its longest, in a script JSON encoders escape (6 bytes a character)
    person = {field: "\u0639" * 2000 for field in ("name", "phone", "email", "address")}
    complaint = {
        "received_at": RECENTLY,
        "channel": "hotline",
        "complainant_role": "survivor",
        "narrative": "\u0639" * 20_000,
        "complainant": person,
        "survivor": person,
        "issue_receipt": True,
    }
    body = json.dumps(complaint).encode()  # ensure_ascii: \u0639 escapes
    assert len(body) > 200_000
    assert Settings(data_dir=data_dir).max_body_bytes >= len(body)
    with TestClient(world.api) as client:
        answer = client.post(
            "/v1/cases",
            content=body,
            headers={**world.headers("intake_operator"), "Content-Type": "application/json"},
        )
    assert answer.status_code == 201, answer.text[:300]


# --- 4. headers ---------------------------------------------------------------------------------


def test_every_answer_is_nosniff_and_personal_or_receipt_answers_are_never_stored(
    world: World,
) -> None:
    with TestClient(world.api) as client:
        created = client.post("/v1/public/complaints", json=FORM)
        code = created.json()["receipt_code"]
        answers = {
            "web form receipt": created,
            "receipt look-up": client.post(LOOK_UP, json={"code": code}),
            "failed look-up": client.post(LOOK_UP, json={"code": str(new_receipt_code())}),
            "case list": client.get("/v1/cases", headers=world.headers("coordinator")),
            "no token": client.get("/v1/cases"),
            "unknown path": client.get("/v1/nothing-here"),
            "health": client.get("/healthz"),
            "schema": client.get("/openapi.json"),
        }
    for name, answer in answers.items():
        assert answer.headers.get("x-content-type-options") == "nosniff", name
        assert answer.headers.get("cache-control") == "no-store", name
        csp = answer.headers.get("content-security-policy", "")
        assert "default-src 'none'" in csp and "frame-ancestors 'none'" in csp, name


class Assets(HTMLParser):
    """The scripts, styles and images a page loads, and its inline scripts."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []
        self.inline_scripts = 0
        self._in_script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        for name in ("src", "href"):
            if found.get(name):
                self.urls.append(str(found[name]))
        self._in_script = tag == "script" and not found.get("src")

    def handle_data(self, data: str) -> None:
        if self._in_script and data.strip():
            self.inline_scripts += 1
        self._in_script = False


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
def test_the_docs_pages_load_everything_from_the_app_itself(world: World, page: str) -> None:
    # given the API with no network beyond itself
    with TestClient(world.api) as client:
        answer = client.get(page)
        assert answer.status_code == 200
        # then every script, style and image the page names is the app's own, and served
        assets = Assets()
        assets.feed(answer.text)
        assert assets.urls, "the page loads nothing: not the docs page expected"
        for url in assets.urls:
            assert not re.match(r"^(https?:)?//", url), f"{page} loads {url} from elsewhere"
            assert client.get(url).status_code == 200, url
        # and its policy allows no other origin, and only the inline script it carries
        csp = answer.headers["content-security-policy"]
        assert "http" not in csp and "*" not in csp
        scripts = csp.split("script-src", 1)[1].split(";")[0]
        assert "'unsafe-inline'" not in scripts
        assert assets.inline_scripts == scripts.count("'sha256-")
        if page == "/docs":  # where staff paste their tokens: no code built from strings
            assert "'unsafe-eval'" not in scripts
        assert "frame-ancestors 'none'" in csp
        assert answer.headers["x-content-type-options"] == "nosniff"


# --- 5. receipt look-ups by POST ----------------------------------------------------------------


def test_the_code_travels_in_the_body_and_the_old_url_form_is_gone(world: World) -> None:
    with TestClient(world.api) as client:
        code = client.post("/v1/public/complaints", json=FORM).json()["receipt_code"]
        found = client.post(LOOK_UP, json={"code": code})
        old = client.get(f"/v1/public/receipts/{code}")
        schema = client.get("/openapi.json").json()
    assert found.status_code == 200, found.text
    assert found.json()["code"] == code
    # a client still using the URL form is told where to go, and its code is not looked up
    assert old.status_code == 410
    assert old.headers["content-type"] == PROBLEM_JSON
    assert LOOK_UP in old.json()["detail"]
    assert code not in old.text
    assert not [path for path in schema["paths"] if "{code}" in path]
    assert "post" in schema["paths"][LOOK_UP]


# --- 6. metrics ---------------------------------------------------------------------------------


def test_metrics_are_not_served_on_the_api_port(world: World) -> None:
    with TestClient(world.api) as client:
        client.post("/v1/public/complaints", json=FORM)
        answer = client.get("/metrics")
    assert answer.status_code == 404
    assert answer.headers["content-type"] == PROBLEM_JSON
    assert "cbcm_" not in answer.text


# --- slow clients, an unexpected error, the throttle store down (ADR 27) -------------------------


def test_a_client_trickling_its_request_head_is_cut_off(world: World) -> None:
    # given the API as cbcm api serves it, with a 2 s deadline on a request's head
    with served(world.api, header_timeout=2.0) as (host, port):
        with socket.create_connection((host, port), timeout=10) as sock:
            # when a client (slowloris) sends a request's head a byte every 0.2 s, never ending
            sock.sendall(b"POST /v1/public/complaints HTTP/1.1\r\nHost: x\r\n")
            closed = False
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and not closed:
                try:
                    sock.sendall(b"X")
                except (BrokenPipeError, ConnectionResetError):
                    closed = True
                    break
                sock.settimeout(0.2)
                try:
                    closed = sock.recv(1024) == b""
                except TimeoutError:
                    pass
                except ConnectionResetError:
                    closed = True
            # then the server closes the connection, without an answer, long before 30 s
            assert closed, "the server kept a trickling connection open"
        # and a client that sends its request at once is served as usual
        with httpx.Client(base_url=f"http://{host}:{port}", timeout=ANSWER_WITHIN) as client:
            assert client.get("/healthz").status_code == 200


def test_an_unexpected_error_is_answered_500_with_every_security_header(world: World) -> None:
    # given a route that fails (a bug anywhere in a handler)
    async def broken() -> None:
        raise RuntimeError("a bug")

    world.api.add_api_route("/v1/broken", broken)  # type: ignore[attr-defined]
    with TestClient(world.api, raise_server_exceptions=False) as client:
        answer = client.get("/v1/broken")
    # then the 500 is a problem with the headers every other answer has, and tells no detail
    assert answer.status_code == 500
    assert answer.headers["content-type"] == "application/problem+json"
    assert answer.headers.get("x-content-type-options") == "nosniff"
    assert answer.headers.get("cache-control") == "no-store"
    assert "default-src 'none'" in answer.headers.get("content-security-policy", "")
    assert "a bug" not in answer.text


def test_the_web_intake_goes_on_while_the_shared_throttle_store_is_down(
    data_dir: Path,
) -> None:
    # given API instances sharing a Redis that cannot be reached (nothing listens there)
    down = f"redis://127.0.0.1:{free_port()}/0"
    for world in world_of(data_dir, throttle_store=down):
        with TestClient(world.api) as client:
            # when complaints come in through the web intake
            statuses = [
                client.post("/v1/public/complaints", json=FORM).status_code for _ in range(4)
            ]
            # then they are accepted, within this instance's own count of the same limit (2)
            assert statuses == [201, 201, 429, 429]
            # while a receipt look-up, which loses nothing by waiting, is refused: guesses
            # must not pass a throttle that cannot count
            lookup = client.post(LOOK_UP, json={"code": str(new_receipt_code())})
            assert lookup.status_code == 503
            assert lookup.headers["retry-after"]
