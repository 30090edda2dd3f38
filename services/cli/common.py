"""What every ``cbcm`` command group shares: the exit codes, the one-line report of a failure
the user can fix, the settings, the application on the configured event store, and the way a
long-running service runs until it is signalled.

Exit codes: 0 done; 1 refused by a business rule; 2 bad usage or configuration (click's own
usage errors are 2 as well); 3 the event store cannot be reached; 4 and 5 are `cbcm audit
verify`'s (``services.cli.audit``).

Nothing here imports the web app or NATS at import time: each helper imports what it needs
when it runs, so that ``cbcm --help`` stays fast (tests/e2e/test_cli_imports.py).
"""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from enum import StrEnum
from typing import TYPE_CHECKING, NoReturn

import structlog
import typer

from services.runtime.logging import configure_logging, json_mode

if TYPE_CHECKING:
    from services.application.mechanism import ComplaintMechanism
    from services.settings import Settings


EXIT_REFUSED = 1
EXIT_CONFIG = 2
EXIT_UNAVAILABLE = 3

log = structlog.get_logger()


def report(message: str, code: int) -> None:
    """``cbcm: error: MESSAGE`` on stderr; in JSON mode (a service) a JSON line."""
    if json_mode():
        log.error("cli.failed", error=message, exit_code=code)
    else:
        typer.echo(f"cbcm: error: {message}", err=True)


def fail(message: str, code: int) -> NoReturn:
    report(message, code)
    raise typer.Exit(code)


def one_line(error: BaseException) -> str:
    return " ".join(str(error).split()) or type(error).__name__


_KNOWN: tuple[tuple[str, int, str], ...] = (
    # (the class raised, by module and name, so that matching imports nothing; exit code;
    # what failed): the first that matches the error or one of its base classes
    (
        "services.event_store.personal_data.kek.KeyRingError",
        EXIT_CONFIG,
        "the key-encryption keys of personal data",
    ),
    ("services.audit.keys.AuditKeyError", EXIT_CONFIG, "the audit signing key"),
    ("services.event_store.custody.WriterKeyError", EXIT_CONFIG, "the event log's writer key"),
    ("services.runtime.metrics.MetricsAddressError", EXIT_CONFIG, "the metrics address"),
    ("services.runtime.supervisor.AddressInUse", EXIT_CONFIG, "an address to listen on"),
    (
        "services.event_store.config.EventStoreConfigError",
        EXIT_CONFIG,
        "the event store's configuration",
    ),
    ("services.projector.runner.ReadModelInUse", EXIT_CONFIG, "the read model"),
    (
        "services.relay.relay.StreamOfAnotherStore",
        EXIT_CONFIG,
        "the stream CBCM_EVENTS holds another store's events",
    ),
    ("builtins.PermissionError", EXIT_CONFIG, "a file"),
    ("services.nats.server.NatsServerError", EXIT_UNAVAILABLE, "the embedded nats-server"),
    (
        "services.event_store.errors.EventStoreUnavailable",
        EXIT_UNAVAILABLE,
        "the event store is unavailable",
    ),
    (
        "eventsourcing.persistence.OperationalError",
        EXIT_UNAVAILABLE,
        "the event store is unavailable",
    ),
    ("psycopg.OperationalError", EXIT_UNAVAILABLE, "PostgreSQL is unavailable"),
    ("sqlite3.OperationalError", EXIT_UNAVAILABLE, "a SQLite database"),
    ("nats.errors.NoServersError", EXIT_UNAVAILABLE, "NATS is unreachable"),
)


def known_failure(error: BaseException) -> tuple[int, str] | None:
    """The exit code of a failure whose cause is known, and what failed (None: a bug)."""
    names = {f"{kind.__module__}.{kind.__qualname__}" for kind in type(error).__mro__}
    for name, code, what in _KNOWN:
        if name in names:
            return code, what
    return None


def load_settings() -> Settings:
    import pydantic

    from services.settings import Settings

    try:
        return Settings()
    except pydantic.ValidationError as e:
        if os.environ.get("CBCM_LOG_FORMAT") == "json":  # a service's refusal is a JSON line
            configure_logging("json", "cbcm")
        problems = "; ".join(
            f"CBCM_{'_'.join(str(part) for part in err['loc']).upper()}: {err['msg']}"
            for err in e.errors()
        )
        fail(f"bad configuration: {problems}", EXIT_CONFIG)


def _postgres_reason(env: dict[str, str]) -> str | None:
    """Why PostgreSQL refuses us. The connection pool reports only a timeout, so ask directly."""
    import psycopg

    try:
        with psycopg.connect(
            host=env["POSTGRES_HOST"],
            port=env["POSTGRES_PORT"],
            dbname=env["POSTGRES_DBNAME"],
            user=env["POSTGRES_USER"],
            password=env["POSTGRES_PASSWORD"],
            connect_timeout=3,
        ):
            return None
    except psycopg.Error as e:
        return one_line(e)


def open_application(settings: Settings) -> tuple[ComplaintMechanism, str]:
    """The application on the configured event store, and where that store is."""
    from services.event_store.config import (
        EventStoreConfigError,
        describe,
        persistence_env,
    )

    try:
        env = persistence_env(settings)
    except EventStoreConfigError as e:  # refused before the application is imported
        fail(str(e), EXIT_CONFIG)
    where = describe(env)

    from eventsourcing.persistence import (
        OperationalError,
        ProgrammingError,
    )

    from services.bootstrap import complaint_mechanism
    from services.event_store.custody import WriterKeyError
    from services.event_store.errors import EventStoreUnavailable
    from services.event_store.personal_data.kek import KeyRingError

    try:
        return complaint_mechanism(settings), where
    except EventStoreConfigError as e:  # e.g. the schema is behind: `cbcm db migrate`
        fail(str(e), EXIT_CONFIG)
    except (EventStoreUnavailable, OperationalError) as e:
        reason = one_line(e)
        if env["PERSISTENCE_MODULE"] == "eventsourcing.postgres":
            reason = _postgres_reason(env) or reason
        fail(f"cannot open the event store ({where}): {reason}", EXIT_UNAVAILABLE)
    except ProgrammingError as e:  # e.g. the schema does not exist, or no right to use it
        fail(f"cannot use the event store ({where}): {one_line(e)}", EXIT_CONFIG)
    except KeyRingError as e:
        fail(f"cannot open the personal data of the event store ({where}): {e}", EXIT_CONFIG)
    except WriterKeyError as e:
        fail(f"cannot mark the event store's commits ({where}): {e}", EXIT_CONFIG)


@contextmanager
def reported(where: str) -> Iterator[None]:
    """Turn what a user can act on into a one-line message and an exit code."""
    from eventsourcing.persistence import MapperDeserialisationError, OperationalError

    from domain.errors import DomainError
    from services.event_store.errors import EventStoreUnavailable

    try:
        yield
    except DomainError as e:
        fail(f"{e.title}: {one_line(e)}", EXIT_REFUSED)
    except MapperDeserialisationError as e:  # names the event and why, never a value
        fail(f"{one_line(e)}; `cbcm audit verify` names what is damaged", EXIT_CONFIG)
    except (EventStoreUnavailable, OperationalError) as e:
        fail(f"the event store ({where}) became unavailable: {one_line(e)}", EXIT_UNAVAILABLE)


@contextmanager
def application(settings: Settings) -> Iterator[ComplaintMechanism]:
    """The application on the configured store, closed after; what goes wrong reported."""
    app, where = open_application(settings)
    try:
        with reported(where):
            yield app
    finally:
        app.close()


# ---------------------------------------------------------------------------------- services


def nats_url(settings: Settings) -> str:
    """CBCM_NATS_URL, or the nats-server that `cbcm serve` starts."""
    return settings.nats_url or f"nats://127.0.0.1:{settings.embedded_nats_port}"


def service_settings(service: str) -> Settings:
    """The settings of a long-running service, its logging configured first (so that even
    its refusal of them is a log line: JSON in JSON mode)."""
    settings = load_settings()
    configure_logging(settings.log_format, service)
    return settings


def run_until_signalled(
    settings: Settings, main: Callable[[asyncio.Event], Awaitable[None]]
) -> None:
    """Run an async service until SIGTERM or Ctrl-C, then let it stop cleanly; its metrics
    on CBCM_METRICS_ADDR meanwhile (when set). Refuses a bad or taken metrics address."""
    from services.runtime.metrics import (
        MetricsAddressError,
        serve_metrics,
    )

    try:
        bound = serve_metrics(settings.metrics_addr)
    except MetricsAddressError as e:
        fail(str(e), EXIT_CONFIG)
    if bound is not None:
        log.info("cli.metrics_serving", address=f"{bound[0]}:{bound[1]}")

    async def runner() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        await main(stop)

    asyncio.run(runner())


class ReadModel(StrEnum):
    """A read model by name: `cbcm project NAME`, `cbcm projections rebuild NAME`."""

    inbox = "inbox"
    assistance = "assistance"
    stats = "stats"
    register = "register"
