"""``cbcm serve`` on a fresh data dir: a complaint goes in, the focal point's inbox shows it.

The module's two tests share one stack (``served``): the first only reads from it, the second
writes, kills the relay and stops the stack, and asserts that everything stopped; a stack
still running at the module's end is stopped there, and must exit 0 as well."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import psutil
import pytest

from domain.actors import Role
from domain.vocabulary import AgencyType, Channel, ComplainantRole
from services.application.mechanism import ComplaintMechanism
from services.bootstrap import complaint_mechanism
from services.identity.tokens import issue_token
from services.nats.server import free_port
from services.settings import Settings
from tests.world import COORDINATOR

CBCM = str(Path(sys.executable).parent / "cbcm")
START_WITHIN = 180
"""Seconds a stack may take to be ready: about 6 s on a quiet machine, over 60 s when two
suites share two cores (the stack starts six processes, each importing the application)."""
READ_WITHIN = 60
"""Seconds a read may wait for its own write: the relay restarted, NATS and the projector
bring it in well under that even on a loaded machine."""


def wait_until(condition, timeout: float, what: str):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = condition()
        if result:
            return result
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


class Stack:
    def __init__(self, data_dir: Path, **settings: str) -> None:
        self.data_dir = data_dir
        self.http = f"127.0.0.1:{free_port()}"
        # one client for every request: ``httpx.get`` builds a client (and its TLS context,
        # about 20 ms of CPU) per call, and /readyz is asked ten times a second while the
        # stack starts
        self.client = httpx.Client(timeout=10)
        self.env = {
            **os.environ,
            "CBCM_DATA_DIR": str(data_dir),
            # the witness's book and key: never in the data dir (issue #15), and not in $HOME
            "CBCM_WITNESS_DIR": str(data_dir.parent / "witness"),
            "CBCM_HTTP_ADDR": self.http,
            "CBCM_EMBEDDED_NATS_PORT": str(free_port()),
            "CBCM_LOG_FORMAT": "json",
            **settings,
        }
        self.env.pop("CBCM_NATS_URL", None)
        self.env.pop("CBCM_EVENT_STORE", None)
        self.log = data_dir / "serve.log"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        with self.log.open("wb") as out:
            self.process = subprocess.Popen(
                [CBCM, "serve"], env=self.env, stdout=out, stderr=subprocess.STDOUT
            )

    def token(self, user: str, agency: str, role: str) -> str:
        """A token from ``cbcm token``, as an operator would get one in the embedded set-up."""
        done = subprocess.run(
            [CBCM, "token", "--user", user, "--agency", agency, "--role", role],
            env=self.env,
            capture_output=True,
            text=True,
            check=True,
        )
        return done.stdout.strip()

    def issue(self, user: str, agency: str, role: str) -> str:
        """The same token as ``token``, signed in this process with the stack's key (a
        ``cbcm token`` process costs half a second of CPU; ``token`` tests the command)."""
        return issue_token(self.data_dir, user=user, agency=agency, roles=[Role(role)])

    def get(self, path: str, token: str | None = None, **params: object) -> httpx.Response:
        headers = {} if token is None else {"Authorization": f"Bearer {token}"}
        return self.client.get(f"http://{self.http}{path}", params=params, headers=headers)

    def read_after(
        self, path: str, token: str, position: int, within: float = READ_WITHIN
    ) -> httpx.Response:
        """``GET path?after=position`` as a client reads its own write: a 503 "read model
        behind" (the server waited its bound, ``CBCM_READ_WAIT_SECONDS``) is asked again after
        its ``Retry-After``, for up to ``within`` seconds; any other answer is returned."""
        deadline = time.monotonic() + within
        while True:
            answer = self.get(path, token, after=position)
            behind = answer.status_code == 503 and answer.json().get("title") == "Read model behind"
            if not behind or time.monotonic() >= deadline:
                return answer
            time.sleep(float(answer.headers.get("retry-after", "1")))

    def post(self, path: str, token: str, body: dict[str, object]) -> httpx.Response:
        return self.client.post(
            f"http://{self.http}{path}", json=body, headers={"Authorization": f"Bearer {token}"}
        )

    def ready(self) -> bool:
        try:
            return self.get("/readyz").status_code == 200
        except httpx.TransportError:
            return False

    def child(self, word: str) -> psutil.Process | None:
        """The live child whose command line contains ``word`` (None between restarts)."""
        assert self.process is not None
        for proc in psutil.Process(self.process.pid).children(recursive=True):
            try:
                if proc.status() != psutil.STATUS_ZOMBIE and word in " ".join(proc.cmdline()):
                    return proc
            except psutil.Error:  # exited while we looked
                continue
        return None

    def stop(self) -> int:
        assert self.process is not None
        self.client.close()  # no connection left open as the stack stops
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(30)

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def kill(self) -> None:
        """Kill what is left of the stack (after a failed test), and close the client."""
        if self.running():
            assert self.process is not None
            for proc in psutil.Process(self.process.pid).children(recursive=True):
                proc.kill()
            self.process.kill()
            self.process.wait()
        self.client.close()


@pytest.fixture
def stack(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Stack]:
    """``cbcm serve`` on a fresh data dir; a test marked ``serve_settings(CBCM_X=...)`` gives
    it settings of its own."""
    marker = request.node.get_closest_marker("serve_settings")
    running = Stack(tmp_path / "data", **(marker.kwargs if marker else {}))
    running.start()
    yield running
    running.kill()


class Stacks:
    """One ``cbcm serve`` at a time for the tests of a module: the running one, or, once a
    test has stopped it, a fresh one on a data dir of its own."""

    def __init__(self, base: Path, **settings: str) -> None:
        self.base = base
        self.settings = settings
        self.started: list[Stack] = []

    def running(self) -> Stack:
        if not self.started or not self.started[-1].running():
            fresh = Stack(self.base / f"stack-{len(self.started)}" / "data", **self.settings)
            self.started.append(fresh)
            fresh.start()
        return self.started[-1]


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stacks]:
    """The module's stack (a 1 s bound on read waits, the default 5 s shorter): the tests
    that only read use it as they find it; the one that stops it stops it last. A stack
    still running at the end is stopped here, and must stop cleanly (exit 0)."""
    stacks = Stacks(tmp_path_factory.mktemp("serve"), CBCM_READ_WAIT_SECONDS="1")
    yield stacks
    try:
        for left in stacks.started:
            if left.running():
                assert left.stop() == 0
    finally:
        for each in stacks.started:
            each.kill()


def network(app: ComplaintMechanism, at: datetime) -> None:
    app.establish_network(actor=COORDINATOR, name="e2e", at=at)
    app.register_agency(
        actor=COORDINATOR, code="unhcr", name="UNHCR", agency_type=AgencyType.UN_AGENCY, at=at
    )
    # only an appointed focal point's token opens the agency's inbox
    app.appoint_focal_point(actor=COORDINATOR, agency="unhcr", user="fp-1", at=at)


def complaint(stack: Stack, operator: str, at: datetime) -> tuple[str, int]:
    """A complaint recorded over HTTP by an intake operator."""
    answer = stack.post(
        "/v1/cases",
        operator,
        {
            "received_at": at.isoformat(),
            "channel": Channel.HOTLINE.value,
            "complainant_role": ComplainantRole.ANONYMOUS.value,
            "immediate_safety_risk": True,
            "narrative": "a distribution guard asked for sex",
        },
    )
    assert answer.status_code == 201, answer.text
    return answer.json()["id"], answer.json()["position"]


def test_read_waits_are_bounded_and_answered_as_problems(served: Stacks) -> None:
    # (reads only: the module's stack goes on to the next test; it is stopped, and must exit
    # 0, by that test or at the module's end)
    stack = served.running()
    wait_until(stack.ready, START_WITHIN, "/readyz")
    coordinator = stack.token("coord-1", "unhcr", "coordinator")
    asked = time.monotonic()
    answer = stack.get("/v1/inbox/unhcr", coordinator, after=10**9)
    assert time.monotonic() - asked >= 1.0  # it waited its bound, then answered
    assert answer.status_code == 503
    assert answer.headers["content-type"] == "application/problem+json"
    assert answer.headers["retry-after"] == "1"
    assert stack.get("/v1/inbox/Not An Agency", coordinator).status_code == 422
    # and without a token nothing is read
    unauthenticated = stack.get("/v1/inbox/unhcr")
    assert unauthenticated.status_code == 401
    assert unauthenticated.headers["content-type"] == "application/problem+json"


def test_complaint_driven_through_serve_appears_in_the_inbox_and_survives_a_relay_crash(
    served: Stacks,
) -> None:
    # given the whole stack on embedded defaults (but a 1 s bound on read waits: a read
    # behind is asked again after its Retry-After), fresh data dir: nothing written to it yet
    stack = served.running()
    wait_until(stack.ready, START_WITHIN, "/readyz")
    app = complaint_mechanism(Settings(data_dir=stack.data_dir))
    try:
        now = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=5)
        network(app, now)
        operator = stack.token("op-1", "unhcr", "intake_operator")
        focal_point = stack.token("fp-1", "unhcr", "focal_point")
        # when an intake operator records a complaint over HTTP
        case_id, position = complaint(stack, operator, now + timedelta(minutes=1))
        # then the receiving agency's inbox shows it, once it has applied that position
        answer = stack.read_after("/v1/inbox/unhcr", focal_point, position)
        assert answer.status_code == 200, answer.text
        items = answer.json()["items"]
        assert [(i["case_id"], i["action"]) for i in items] == [(case_id, "assess")]
        assert int(answer.headers["X-Cbcm-Position"]) >= position

        # when the relay is killed, the supervisor restarts it and nothing is lost
        relay = stack.child(" relay")
        assert relay is not None
        relay.kill()

        def restarted() -> bool:
            child = stack.child(" relay")
            return child is not None and child.pid != relay.pid

        wait_until(restarted, 30, "relay restart")
        second, position = complaint(stack, operator, now + timedelta(minutes=2))
        answer = stack.read_after("/v1/inbox/unhcr", focal_point, position)
        assert answer.status_code == 200, answer.text
        assert {i["case_id"] for i in answer.json()["items"]} == {case_id, second}
        assert "serve.service_exited" in stack.log.read_text()
    finally:
        app.close()

    # when serve gets SIGTERM, everything stops
    children = psutil.Process(stack.process.pid).children(recursive=True)  # type: ignore[union-attr]
    assert stack.stop() == 0
    _, alive = psutil.wait_procs(children, timeout=10)
    assert alive == []
