"""The relay's leader lock (issue #7, ADR 9): two relays on one store never both publish.

On SQLite (a file lock beside the database) and on a real PostgreSQL (a session advisory
lock), with a real nats-server: two ``cbcm relay`` processes started at once, one leads and
the other stands by; the leader SIGKILLed mid-stream, the standby takes over and the stream
still equals the store. In process: a leader whose lock is lost stops publishing until it
takes the lock again. Every wait is on a condition with a deadline.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from pathlib import Path

import nats
import psycopg
import structlog
from nats.js import JetStreamContext

from contracts.subjects import STREAM
from services.application.mechanism import ComplaintMechanism
from services.application.store import is_published
from services.bootstrap import complaint_mechanism
from services.event_store.config import persistence_env
from services.nats.server import EmbeddedNats
from services.relay.leader import (
    FileLeaderLock,
    LeaderLock,
    PostgresLeaderLock,
    leader_lock,
    lock_file_path,
)
from services.relay.relay import APPLICATION_NAME, run_relay
from services.settings import Settings
from tests.integration.test_crash_recovery import (
    Intake,
    Service,
    _stream_positions,
    _tail,
    wait_until,
)
from tests.integration.test_relay import (
    assert_stream_is_the_store,
    stream_messages,
    walk,
)

FAST = {"relay_leader_poll_seconds": 0.1, "relay_leader_check_seconds": 0.1}
"""Lock intervals of these tests (the defaults are 1 s)."""


def published_positions(app: ComplaintMechanism) -> list[int]:
    """Positions of the store's events that the relay publishes, in order."""
    return [
        n.id
        for n in app.recorder.select_notifications(1, 1_000_000)
        if is_published(app.mapper.to_domain_event(n))
    ]


async def _stream_count(url: str) -> int:
    nc = await nats.connect(url, connect_timeout=5)
    try:
        js = nc.jetstream()
        try:
            return int((await js.stream_info(STREAM)).state.messages)
        except nats.js.errors.NotFoundError:
            return 0
    finally:
        await nc.close()


def stream_count(url: str) -> int:
    return asyncio.run(_stream_count(url))


# ---------------------------------------------------------------------------------- locks


async def test_a_file_lock_has_one_holder_until_it_is_released(tmp_path: Path) -> None:
    # given two relays' locks on one SQLite database
    path = lock_file_path(tmp_path / "events.sqlite3", APPLICATION_NAME)
    first, second = FileLeaderLock(path), FileLeaderLock(path)

    # when both try, the first wins and the second does not
    assert await first.try_acquire()
    assert not await second.try_acquire()
    assert await first.still_held()

    # then once the first lets go, the second takes it
    await first.release()
    assert await second.try_acquire()
    assert not await first.try_acquire()
    await second.release()


async def test_a_file_lock_whose_file_was_replaced_is_no_longer_held(tmp_path: Path) -> None:
    # given a held lock
    path = lock_file_path(tmp_path / "events.sqlite3", APPLICATION_NAME)
    lock = FileLeaderLock(path)
    assert await lock.try_acquire()

    # when its file is replaced (another relay would lock the new one)
    path.rename(tmp_path / "moved.lock")
    other = FileLeaderLock(path)
    assert await other.try_acquire()

    # then the first holder no longer counts itself the leader
    assert not await lock.still_held()
    await other.release()


def test_advisory_lock_keys_differ_between_stores_of_one_database(
    postgres_server_url: str, tmp_path: Path
) -> None:
    def key(schema: str) -> int:
        sep = "&" if "?" in postgres_server_url else "?"
        url = f"{postgres_server_url}{sep}schema={schema}"
        settings = Settings(data_dir=tmp_path, event_store=url)
        lock = leader_lock(settings, APPLICATION_NAME)
        assert isinstance(lock, PostgresLeaderLock)
        return lock.key

    assert key("a") != key("b")
    assert key("a") == key("a")


# ---------------------------------------------------------------------------------- processes


def test_two_relays_one_publishes_and_the_standby_takes_over_from_a_killed_leader(
    store_url: str, tmp_path: Path
) -> None:
    data_dir = tmp_path / "data"
    logs = tmp_path / "logs"
    logs.mkdir()
    server = EmbeddedNats(tmp_path / "nats").start()
    env = {k: v for k, v in os.environ.items() if not k.startswith("CBCM_")}
    env |= {
        "CBCM_DATA_DIR": str(data_dir),
        "CBCM_EVENT_STORE": store_url,
        "CBCM_NATS_URL": server.url,
        "CBCM_LOG_FORMAT": "json",
        "CBCM_RELAY_LEADER_POLL_SECONDS": "0.2",
        "CBCM_RELAY_LEADER_CHECK_SECONDS": "0.2",
    }
    app = complaint_mechanism(Settings(data_dir=data_dir, event_store=store_url))
    intake = Intake(app, make_holes=False)
    relays = [Service(f"relay-{n}", ["relay"], env, logs, working="relay.resuming") for n in (1, 2)]

    def watch() -> None:
        intake.check()
        for relay in relays:
            relay.check_alive()

    try:
        # given two relays started at once on one store, while intake goes on
        intake.start()
        for relay in relays:
            relay.start()

        # then one leads and publishes, the other stands by and publishes nothing
        def roles() -> tuple[Service, Service] | None:
            leading = [r for r in relays if r.logged("relay.leader")]
            waiting = [r for r in relays if r.logged("relay.standby")]
            if len(leading) == 1 and len(waiting) == 1:
                return leading[0], waiting[0]
            return None

        leader, standby = wait_until(roles, 60, "one leader and one standby", watch)
        wait_until(lambda: stream_count(server.url) >= 300, 60, "300 messages published", watch)
        assert not standby.logged("relay.leader"), "both relays lead"
        assert not standby.logged("relay.resuming"), "the standby started publishing"

        # when the leader is SIGKILLed mid-stream
        with leader.down():
            leader.kill()
            killed_at = intake.stored()

            # then the standby takes over, resuming from the recorded position
            def watch_standby() -> None:
                intake.check()
                standby.check_alive()

            wait_until(lambda: standby.logged("relay.leader"), 30, "the takeover", watch_standby)
            wait_until(
                lambda: standby.logged("relay.resuming"), 30, "the resumption", watch_standby
            )
            wait_until(
                lambda: intake.stored() >= killed_at + 300,
                60,
                "300 more events after the kill",
                watch_standby,
            )
            intake.stop_when.set()
            intake.join(60)
            intake.check()

            # and the stream holds every published event once, in store order
            expected = published_positions(app)
            try:
                wait_until(
                    lambda: stream_count(server.url) >= len(expected),
                    60,
                    f"{len(expected)} messages in the stream",
                    standby.check_alive,
                )
            except AssertionError as e:
                raise AssertionError(f"{e}\n{_tail(standby.log)}") from None
            count, positions = asyncio.run(_stream_positions(server.url))
            assert count == len(expected)
            assert positions == expected, "the stream is not the store"

            # and the new leader stops cleanly
            assert standby.terminate() == 0, _tail(standby.log)
    finally:
        intake.stop_when.set()
        for relay in relays:
            relay.reap()
        intake.join(30)
        app.close()
        server.stop()


# ---------------------------------------------------------------------------------- lost lock


async def _steal(settings: Settings) -> LeaderLock:
    """Take the relay's lock from under it, as a relay that got it after the holder's
    session or file was lost would; the new holder."""
    thief = leader_lock(settings, APPLICATION_NAME)
    if isinstance(thief, PostgresLeaderLock):
        env = persistence_env(settings)
        unsigned = thief.key & 0xFFFF_FFFF_FFFF_FFFF
        async with await psycopg.AsyncConnection.connect(
            host=env["POSTGRES_HOST"],
            port=env["POSTGRES_PORT"],
            dbname=env["POSTGRES_DBNAME"],
            user=env["POSTGRES_USER"],
            password=env["POSTGRES_PASSWORD"],
            autocommit=True,
        ) as conn:
            # the relay's lock session ends (its connection lost)
            cursor = await conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_locks WHERE locktype = 'advisory' "
                "AND classid = %s AND objid = %s AND objsubid = 1 AND granted",
                (unsigned >> 32, unsigned & 0xFFFF_FFFF),
            )
            assert await cursor.fetchall() == [(True,)], "no relay held the advisory lock"
    else:
        assert isinstance(thief, FileLeaderLock)
        # the relay's lock file replaced (removed by hand, a restore...)
        thief.path.rename(thief.path.with_suffix(".old"))
    deadline = asyncio.get_running_loop().time() + 10
    while not await thief.try_acquire():
        assert asyncio.get_running_loop().time() < deadline, "the lock was not freed"
        await asyncio.sleep(0.02)
    return thief


async def test_a_relay_that_lost_its_lock_stops_publishing_until_it_leads_again(
    app: ComplaintMechanism, settings: Settings, tmp_path: Path
) -> None:
    server = EmbeddedNats(tmp_path / "nats")
    await asyncio.to_thread(server.start)
    fast = settings.model_copy(update=FAST)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    nc = await nats.connect(server.url)
    js: JetStreamContext = nc.jetstream()
    try:
        with structlog.testing.capture_logs() as logs:

            def logged(event: str) -> int:
                return sum(1 for entry in logs if entry.get("event") == event)

            async def until(condition: Callable[[], bool], what: str, within: float = 30) -> None:
                deadline = loop.time() + within
                while not condition():
                    assert loop.time() < deadline, f"timed out waiting for {what}: {logs[-5:]}"
                    await asyncio.sleep(0.02)

            # given a relay leading and publishing
            await walk(app, 10, seed=5)
            relay = asyncio.ensure_future(run_relay(fast, stop, server.url))
            await until(lambda: logged("relay.leader") == 1, "the relay to lead")
            published = len(await asyncio.to_thread(published_positions, app))
            await until(lambda: logged("relay.resuming") == 1, "the relay to resume")

            async def in_stream() -> int:
                return int((await js.stream_info(STREAM)).state.messages)

            deadline = loop.time() + 30
            while await in_stream() < published:
                assert loop.time() < deadline, "the first events were not published"
                await asyncio.sleep(0.02)

            # when its lock is lost and another holder takes it
            thief = await _steal(fast)
            await until(lambda: logged("relay.leadership_lost") == 1, "the loss to be noticed")
            await until(lambda: logged("relay.standby") == 1, "the relay to stand by")

            # then events stored meanwhile are not published by it
            before = await in_stream()
            await walk(app, 10, seed=6)
            stored_now = len(await asyncio.to_thread(published_positions, app))
            assert stored_now > before
            # (proving an absence takes a while: many times the relay's own intervals)
            quiet_until = loop.time() + 10 * FAST["relay_leader_poll_seconds"]
            while loop.time() < quiet_until:
                assert await in_stream() == before, "a relay without the lock published"
                await asyncio.sleep(0.05)

            # and once the lock is free again it leads again and publishes the rest
            await thief.release()
            await until(lambda: logged("relay.leader") == 2, "the relay to lead again")
            deadline = loop.time() + 30
            while await in_stream() < stored_now:
                assert loop.time() < deadline, "the rest was not published"
                await asyncio.sleep(0.02)
            assert_stream_is_the_store(app, await stream_messages(js))
            stop.set()
            await asyncio.wait_for(relay, 30)
    finally:
        stop.set()
        await nc.close()
        await asyncio.to_thread(server.stop)
