"""The ``cbcm`` command line.

Configuration comes from the environment (``CBCM_*``, see ``services.settings``). A problem
the user can fix (bad input, bad configuration, an unreachable store, a command the domain
refuses) is one line on stderr and a non-zero exit, never a traceback; anything else is a
bug and keeps its traceback.

Exit codes: 0 done; 1 refused by a business rule; 2 bad usage or configuration (click's own
usage errors are 2 as well); 3 the event store cannot be reached.
"""

from __future__ import annotations

import asyncio
import json
import signal
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from datetime import timedelta
from enum import StrEnum
from pathlib import Path
from typing import Annotated, NoReturn

import nats.errors
import psycopg
import pydantic
import typer
import uvicorn
from eventsourcing.persistence import OperationalError, ProgrammingError
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from contracts import catalogue
from contracts.asyncapi import asyncapi_document
from domain.actors import Role
from domain.errors import DomainError
from projections import stats
from projections.base import open_read_model
from services.api.app import create_app
from services.api.read_models import applied_position
from services.bootstrap import complaint_mechanism
from services.demo import run_demo
from services.event_store import EventStoreConfigError, describe, persistence_env
from services.identity import issue_token, signing_key_path
from services.logging import configure_logging
from services.mechanism import ComplaintMechanism, EventStoreUnavailable
from services.nats_server import NatsServerError
from services.projector import projection_named
from services.projector.publication import StatisticsPublisher
from services.projector.runner import read_model_path, rebuild, run_projector
from services.relay.relay import run_relay
from services.serve import Supervisor
from services.settings import Settings

EXIT_REFUSED = 1
EXIT_CONFIG = 2
EXIT_UNAVAILABLE = 3

cli = typer.Typer(
    name="cbcm",
    help="Inter-agency PSEA community-based complaint mechanism.",
    no_args_is_help=True,
    add_completion=False,
    # plain click messages: one 'Error: ...' line rather than a boxed panel
    rich_markup_mode=None,
    # a bug shows the ordinary traceback, without local variables (they may hold personal data)
    pretty_exceptions_enable=False,
)
contracts_cli = typer.Typer(help="The published language: messages on NATS.", no_args_is_help=True)
cli.add_typer(contracts_cli, name="contracts")


def main() -> None:
    """Console-script entry point."""
    cli(prog_name="cbcm")


# ---------------------------------------------------------------------------------- errors


def _fail(message: str, code: int) -> NoReturn:
    typer.echo(f"cbcm: error: {message}", err=True)
    raise typer.Exit(code)


def _one_line(error: BaseException) -> str:
    return " ".join(str(error).split()) or type(error).__name__


def _settings() -> Settings:
    try:
        return Settings()
    except pydantic.ValidationError as e:
        problems = "; ".join(
            f"CBCM_{'_'.join(str(part) for part in err['loc']).upper()}: {err['msg']}"
            for err in e.errors()
        )
        _fail(f"bad configuration: {problems}", EXIT_CONFIG)


def _postgres_reason(env: dict[str, str]) -> str | None:
    """Why PostgreSQL refuses us. The connection pool reports only a timeout, so ask directly."""
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
        return _one_line(e)


def _open(settings: Settings) -> tuple[ComplaintMechanism, str]:
    """The application on the configured event store, and where that store is."""
    try:
        env = persistence_env(settings)
    except EventStoreConfigError as e:
        _fail(str(e), EXIT_CONFIG)
    where = describe(env)
    try:
        return complaint_mechanism(settings), where
    except (EventStoreUnavailable, OperationalError) as e:
        reason = _one_line(e)
        if env["PERSISTENCE_MODULE"] == "eventsourcing.postgres":
            reason = _postgres_reason(env) or reason
        _fail(f"cannot open the event store ({where}): {reason}", EXIT_UNAVAILABLE)
    except ProgrammingError as e:  # e.g. the schema does not exist, or no right to use it
        _fail(f"cannot use the event store ({where}): {_one_line(e)}", EXIT_CONFIG)


@contextmanager
def _reported(where: str) -> Iterator[None]:
    """Turn what a user can act on into a one-line message and an exit code."""
    try:
        yield
    except DomainError as e:
        _fail(f"{e.title}: {_one_line(e)}", EXIT_REFUSED)
    except (EventStoreUnavailable, OperationalError) as e:
        _fail(f"the event store ({where}) became unavailable: {_one_line(e)}", EXIT_UNAVAILABLE)


# ---------------------------------------------------------------------------------- commands


@cli.command()
def demo(
    cases: Annotated[
        int, typer.Option("--cases", min=0, help="How many cases to walk through the workflow.")
    ] = 100,
    seed: Annotated[
        int | None,
        typer.Option(help="Seed of the synthetic data, to repeat a run (default: random)."),
    ] = None,
) -> None:
    """Fill the event store with a demo network and CASES cases on varied workflow paths.

    Everything goes through the real application service; personal data is synthetic.
    Running it again on the same store adds cases to the same network.
    """
    app, where = _open(_settings())
    try:
        with _reported(where):
            run_demo(app, cases, seed, where)
    finally:
        app.close()


@contracts_cli.command("schema")
def contracts_schema(
    out: Annotated[
        Path | None,
        typer.Option(
            "--out", file_okay=False, help="Write one JSON Schema file per message type here."
        ),
    ] = None,
) -> None:
    """JSON Schema of every published message: to stdout, or one file each with --out."""
    if out is None:
        typer.echo(json.dumps(catalogue.json_schemas(), indent=2))
        return
    try:
        written = catalogue.write_json_schemas(Path(out))
    except OSError as e:
        _fail(f"cannot write schemas to {out}: {_one_line(e)}", EXIT_CONFIG)
    for path in written:
        typer.echo(str(path))


@contracts_cli.command("asyncapi")
def contracts_asyncapi(
    out: Annotated[
        Path | None, typer.Option("--out", dir_okay=False, help="Write the document here.")
    ] = None,
) -> None:
    """AsyncAPI 3.0 document of the stream, its subjects and every message schema."""
    text = json.dumps(asyncapi_document(), indent=2, ensure_ascii=False) + "\n"
    if out is None:
        typer.echo(text, nl=False)
        return
    try:
        Path(out).write_text(text, encoding="utf-8")
    except OSError as e:
        _fail(f"cannot write {out}: {_one_line(e)}", EXIT_CONFIG)
    typer.echo(str(out))


stats_cli = typer.Typer(help="Anonymised statistics of the network.", no_args_is_help=True)
cli.add_typer(stats_cli, name="stats")


class ExportFormat(StrEnum):
    csv = "csv"
    json = "json"


@stats_cli.command("export")
def stats_export(
    format: Annotated[
        ExportFormat, typer.Option("--format", help="csv or json")
    ] = ExportFormat.json,
) -> None:
    """Every anonymised report from the statistics read model, small cells suppressed."""
    settings = _settings()
    path = read_model_path(settings.data_dir, "stats")
    if applied_position(path) is None:
        _fail(
            f"no statistics read model at {path}: run `cbcm serve` (or `cbcm project stats`)",
            EXIT_UNAVAILABLE,
        )
    db = open_read_model(path, readonly=True)
    try:
        tables = stats.reports(db, k=stats.threshold(db))
    finally:
        db.close()
    typer.echo(stats.to_csv(tables) if format is ExportFormat.csv else stats.to_json(tables))


# ---------------------------------------------------------------------------------- the stack


def _nats_url(settings: Settings) -> str:
    """CBCM_NATS_URL, or the nats-server that `cbcm serve` starts."""
    return settings.nats_url or f"nats://127.0.0.1:{settings.embedded_nats_port}"


def _run_until_signalled(service: str, main: Callable[[asyncio.Event], Awaitable[None]]) -> None:
    """Run an async service until SIGTERM or Ctrl-C, then let it stop cleanly."""
    settings = _settings()
    configure_logging(settings.log_format, service)

    async def runner() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        await main(stop)

    asyncio.run(runner())


class ReadModel(StrEnum):
    inbox = "inbox"
    assistance = "assistance"
    stats = "stats"


@cli.command()
def serve() -> None:
    """The whole stack on embedded defaults: nats-server, relay, projections, HTTP API."""
    settings = _settings()
    configure_logging(settings.log_format, "serve")
    try:
        code = Supervisor(settings).run()
    except NatsServerError as e:
        _fail(str(e), EXIT_UNAVAILABLE)
    raise typer.Exit(code)


@cli.command()
def relay() -> None:
    """Publish the event store's events to JetStream stream CBCM_EVENTS, in order."""
    settings = _settings()
    _run_until_signalled("relay", lambda stop: run_relay(settings, stop, _nats_url(settings)))


@cli.command()
def project(name: Annotated[ReadModel, typer.Argument(help="inbox, assistance or stats")]) -> None:
    """Keep one read model up to date from the stream (a durable consumer)."""
    settings = _settings()
    projection = projection_named(name.value)
    path = read_model_path(settings.data_dir, name.value)

    async def main(stop: asyncio.Event) -> None:
        publisher = StatisticsPublisher(_nats_url(settings)) if name is ReadModel.stats else None
        try:
            await run_projector(projection, path, _nats_url(settings), stop, on_commit=publisher)
        finally:
            if publisher is not None:
                await publisher.close()

    _run_until_signalled(f"project-{name.value}", main)


@cli.command()
def api() -> None:
    """The HTTP API on CBCM_HTTP_ADDR: every command and query under /v1, by need-to-know."""
    settings = _settings()
    configure_logging(settings.log_format, "api")
    host, _, port = settings.http_addr.rpartition(":")
    if not host or not port.isdigit():
        _fail(f"CBCM_HTTP_ADDR {settings.http_addr!r} is not HOST:PORT", EXIT_CONFIG)
    uvicorn.run(create_app(settings), host=host, port=int(port), log_level="warning")


@cli.command()
def token(
    user: Annotated[
        str,
        typer.Option("--user", metavar="USER", help="Account identifier (no name, no e-mail)."),
    ],
    agency: Annotated[
        str,
        typer.Option("--agency", metavar="AGENCY", help="Code of the agency the user acts for."),
    ],
    role: Annotated[
        list[str],
        typer.Option(
            "--role", metavar="ROLE", help=f"A role to grant (repeatable): {', '.join(Role)}."
        ),
    ],
    minutes: Annotated[
        int, typer.Option("--minutes", metavar="N", help="Lifetime in minutes, at most 720.")
    ] = 15,
) -> None:
    """Print a bearer token for the HTTP API, signed with the local key (embedded mode only)."""
    settings = _settings()
    if settings.oidc_issuer:
        _fail(
            "CBCM_OIDC_ISSUER is set: tokens come from the identity provider, not `cbcm token`",
            EXIT_CONFIG,
        )
    unknown = [r for r in role if r not in {known.value for known in Role}]
    if unknown:
        _fail(f"unknown role: use one or more of {', '.join(Role)}", EXIT_CONFIG)
    if not 1 <= minutes <= 720:
        _fail("--minutes must be between 1 and 720", EXIT_CONFIG)
    try:
        text = issue_token(
            settings.data_dir,
            user=user,
            agency=agency,
            roles=[Role(r) for r in role],
            ttl=timedelta(minutes=minutes),
            audience=settings.oidc_audience,
        )
    except ValueError as e:
        _fail(_one_line(e), EXIT_CONFIG)
    except OSError as e:
        where = signing_key_path(settings.data_dir)
        _fail(f"cannot use the token signing key {where}: {_one_line(e)}", EXIT_CONFIG)
    typer.echo(text)


projections_cli = typer.Typer(help="Read models.", no_args_is_help=True)
cli.add_typer(projections_cli, name="projections")


@projections_cli.command("rebuild")
def projections_rebuild(
    name: Annotated[ReadModel, typer.Argument(help="inbox, assistance or stats")],
    into: Annotated[
        Path | None,
        typer.Option("--into", dir_okay=False, help="Rebuild into this file (default: live)."),
    ] = None,
) -> None:
    """Drop a read model and replay it from the whole stream, with a progress bar.

    Stop its projector first when rebuilding the live file; --into builds a copy beside it.
    """
    settings = _settings()
    configure_logging(settings.log_format, "rebuild")
    path = into or read_model_path(settings.data_dir, name.value)
    with Progress(
        TextColumn("rebuilding {task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
    ) as bar:
        task = bar.add_task(name.value, total=None)

        def progress(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        try:
            position = asyncio.run(
                rebuild(projection_named(name.value), path, _nats_url(settings), progress)
            )
        except (OSError, nats.errors.Error) as e:
            _fail(f"cannot reach NATS at {_nats_url(settings)}: {_one_line(e)}", EXIT_UNAVAILABLE)
    typer.echo(f"{name.value}: rebuilt up to position {position} in {path}")


if __name__ == "__main__":
    main()
