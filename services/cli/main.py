"""The ``cbcm`` command line.

Configuration comes from the environment (``CBCM_*``, see ``services.settings``). A problem
the user can fix (bad input, bad configuration, an unreachable store, a command the domain
refuses) is one line on stderr and a non-zero exit, never a traceback; anything else is a
bug and keeps its traceback. A long-running service (relay, projector, checkpoint publisher,
witness, api, serve) configures its logging first, so in JSON mode that line is JSON
(``cli.failed``; a bug's traceback is one ``cli.crashed`` line).

Exit codes: 0 done; 1 refused by a business rule; 2 bad usage or configuration (click's own
usage errors are 2 as well); 3 the event store cannot be reached; 4 `audit verify` found
damage; 5 `audit verify` has no signed checkpoint to hold the store to.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, NoReturn
from uuid import UUID

import structlog
import typer

from domain.actors import Role  # a command's option type: typer reads it at start
from projections import stats
from services.cli.bench import register_bench_command
from services.cli.sharing import register_sharing_commands
from services.runtime.logging import configure_logging, json_mode

if TYPE_CHECKING:
    from services.application.mechanism import ComplaintMechanism
    from services.audit.verify import Attested
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
cli.add_typer(__import__("services.cli.nats", fromlist=["nats_cli"]).nats_cli, name="nats")
register_sharing_commands(cli)  # cbcm agency keygen, cbcm share open
register_bench_command(cli)  # cbcm bench


def main() -> None:
    """Console-script entry point: a failure whose cause is known (a key ring, a key file, an
    address, the store, NATS, the file system) is one line and an exit code, never a
    traceback; a bug keeps its traceback (one JSON line in JSON mode)."""
    try:
        cli(prog_name="cbcm")
    except Exception as e:
        known = _known_failure(e)
        if known is not None:
            code, what = known
            _report(f"{what}: {_one_line(e)}", code)
            raise SystemExit(code) from None
        if not json_mode():
            raise
        _log.critical("cli.crashed", exc_info=True)  # the traceback, in one JSON line
        raise SystemExit(1) from None


# ---------------------------------------------------------------------------------- errors

_log = structlog.get_logger()


def _report(message: str, code: int) -> None:
    """``cbcm: error: MESSAGE`` on stderr; in JSON mode (a service) a JSON line."""
    if json_mode():
        _log.error("cli.failed", error=message, exit_code=code)
    else:
        typer.echo(f"cbcm: error: {message}", err=True)


def _fail(message: str, code: int) -> NoReturn:
    _report(message, code)
    raise typer.Exit(code)


def _one_line(error: BaseException) -> str:
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


def _known_failure(error: BaseException) -> tuple[int, str] | None:
    """The exit code of a failure whose cause is known, and what failed (None: a bug)."""
    names = {f"{kind.__module__}.{kind.__qualname__}" for kind in type(error).__mro__}
    for name, code, what in _KNOWN:
        if name in names:
            return code, what
    return None


def _settings() -> Settings:
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
        _fail(f"bad configuration: {problems}", EXIT_CONFIG)


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
        return _one_line(e)


def _open(settings: Settings) -> tuple[ComplaintMechanism, str]:
    """The application on the configured event store, and where that store is."""
    from eventsourcing.persistence import (
        OperationalError,
        ProgrammingError,
    )

    from services.bootstrap import complaint_mechanism
    from services.event_store.config import (
        EventStoreConfigError,
        describe,
        persistence_env,
    )
    from services.event_store.errors import EventStoreUnavailable
    from services.event_store.personal_data.kek import KeyRingError

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
    except KeyRingError as e:
        _fail(f"cannot open the personal data of the event store ({where}): {e}", EXIT_CONFIG)


@contextmanager
def _reported(where: str) -> Iterator[None]:
    """Turn what a user can act on into a one-line message and an exit code."""
    from eventsourcing.persistence import OperationalError

    from domain.errors import DomainError
    from services.event_store.errors import EventStoreUnavailable

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
    from services.demo.walk import run_demo

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
    from contracts import catalogue

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
    from contracts.asyncapi import asyncapi_document

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
    from projections.base import open_read_model
    from services.api.read_models import applied_position
    from services.projector.runner import read_model_path

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


def _service_settings(service: str) -> Settings:
    """The settings of a long-running service, its logging configured first (so that even
    its refusal of them is a log line: JSON in JSON mode)."""
    settings = _settings()
    configure_logging(settings.log_format, service)
    return settings


def _run_until_signalled(
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
        _fail(str(e), EXIT_CONFIG)
    if bound is not None:
        _log.info("cli.metrics_serving", address=f"{bound[0]}:{bound[1]}")

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
    from services.nats.server import NatsServerError
    from services.runtime.supervisor import (
        AddressInUse,
        Supervisor,
    )

    settings = _settings()
    configure_logging(settings.log_format, "serve")
    try:
        code = Supervisor(settings).run()
    except AddressInUse as e:
        _fail(str(e), EXIT_CONFIG)
    except NatsServerError as e:
        _fail(str(e), EXIT_UNAVAILABLE)
    raise typer.Exit(code)


@cli.command()
def relay() -> None:
    """Publish the event store's events to JetStream stream CBCM_EVENTS, in order."""
    from services.relay.relay import run_relay

    settings = _service_settings("relay")
    _run_until_signalled(settings, lambda stop: run_relay(settings, stop, _nats_url(settings)))


@cli.command()
def project(name: Annotated[ReadModel, typer.Argument(help="inbox, assistance or stats")]) -> None:
    """Keep one read model up to date from the stream (a durable consumer)."""
    from services.projector import projection_named
    from services.projector.publication import StatisticsPublisher
    from services.projector.runner import (
        read_model_path,
        run_projector,
    )

    settings = _service_settings(f"project-{name.value}")
    projection = projection_named(name.value)
    path = read_model_path(settings.data_dir, name.value)

    async def main(stop: asyncio.Event) -> None:
        publisher = (
            StatisticsPublisher(_nats_url(settings), data_dir=settings.data_dir)
            if name is ReadModel.stats
            else None
        )
        try:
            await run_projector(projection, path, _nats_url(settings), stop, on_commit=publisher)
        finally:
            if publisher is not None:
                await publisher.close()

    _run_until_signalled(settings, main)


@cli.command()
def api() -> None:
    """The HTTP API on CBCM_HTTP_ADDR: every command and query under /v1, by need-to-know."""
    import uvicorn

    from services.api.app import create_app
    from services.runtime.supervisor import (
        AddressInUse,
        check_free,
    )

    settings = _settings()
    configure_logging(settings.log_format, "api")
    try:
        host, port = check_free(settings.http_addr, "CBCM_HTTP_ADDR")
    except AddressInUse as e:
        _fail(str(e), EXIT_CONFIG)
    # log_config=None: uvicorn's records go through our handler (JSON lines in JSON mode)
    uvicorn.run(create_app(settings), host=host, port=port, log_level="warning", log_config=None)


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
    from domain.actors import Role
    from services.identity.tokens import (
        issue_token,
        signing_key_path,
    )

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
    import nats.errors
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
    )

    from services.projector import projection_named
    from services.projector.runner import (
        ReadModelInUse,
        read_model_path,
        rebuild,
    )

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
        except ReadModelInUse as e:
            _fail(str(e), EXIT_CONFIG)
    typer.echo(f"{name.value}: rebuilt up to position {position} in {path}")


# ---------------------------------------------------------------------------------- audit

audit_cli = typer.Typer(
    help="The tamper-evident audit log: checkpoints, witnesses, verification.",
    no_args_is_help=True,
)
cli.add_typer(audit_cli, name="audit")


@audit_cli.command("checkpoint")
def audit_checkpoint(
    once: Annotated[
        bool, typer.Option("--once", help="Sign and publish the current head, then exit.")
    ] = False,
) -> None:
    """Sign the event log's head and publish it on cbcm.v1.audit.checkpoint.

    Runs until stopped, by policy (CBCM_CHECKPOINT_EVENTS positions or CBCM_CHECKPOINT_SECONDS
    when the head moved); with --once, publishes the head now and prints the checkpoint.
    """
    import nats.errors

    from services.audit.checkpoints import (
        checkpoint_once,
        run_checkpoint_publisher,
    )
    from services.audit.keys import (
        AuditKeyError,
        load_signing_key,
    )
    from services.nats.client import nats_replicas

    settings = _service_settings("audit-checkpoint")
    try:
        key = load_signing_key(settings)
    except AuditKeyError as e:
        _fail(str(e), EXIT_CONFIG)
    if not once:
        _run_until_signalled(
            settings, lambda stop: run_checkpoint_publisher(settings, stop, _nats_url(settings))
        )
        return
    app, where = _open(settings)
    try:
        with _reported(where):
            checkpoint = asyncio.run(
                checkpoint_once(app, key, _nats_url(settings), replicas=nats_replicas(settings))
            )
    except (OSError, TimeoutError, nats.errors.Error) as e:
        _fail(f"cannot publish to NATS at {_nats_url(settings)}: {_one_line(e)}", EXIT_UNAVAILABLE)
    finally:
        app.close()
    if checkpoint is None:
        typer.echo("the event store is empty: nothing to checkpoint")
        return
    typer.echo(
        f"checkpoint: store {checkpoint.store} position {checkpoint.position} "
        f"link {checkpoint.link} key {checkpoint.key_id}"
    )


@audit_cli.command("witness")
def audit_witness(
    db: Annotated[
        Path | None,
        typer.Option(
            "--db",
            dir_okay=False,
            help="The witness's SQLite file (default: <data dir>/witness/checkpoints.sqlite3).",
        ),
    ] = None,
    name: Annotated[
        str,
        typer.Option("--name", help="Witness name: its durable consumer is cbcm-witness-NAME."),
    ] = "local",
) -> None:
    """Keep every signed checkpoint seen on CBCM_AUDIT; alarm on a contradicting one."""
    from services.audit.keys import (
        AuditKeyError,
        load_public_key,
    )
    from services.audit.witness import (
        run_witness,
        valid_witness_name,
        witness_book_path,
    )

    settings = _service_settings("audit-witness")
    if not valid_witness_name(name):
        _fail("--name must be 1-64 of lowercase a-z, 0-9, _ and -", EXIT_CONFIG)
    try:
        load_public_key(settings)  # refuse a bad key file before starting
    except AuditKeyError as e:
        _fail(str(e), EXIT_CONFIG)
    path = db or witness_book_path(settings.data_dir)
    _run_until_signalled(
        settings,
        lambda stop: run_witness(settings, stop, _nats_url(settings), db_path=path, name=name),
    )


# ----------------------------------------------------------------- audit case (issue #5.4)


WitnessDb = Annotated[
    Path | None,
    typer.Option(
        "--witness-db",
        dir_okay=False,
        help="A witness's book of checkpoints (default: <data dir>/witness/checkpoints.sqlite3).",
    ),
]


def _witnessed(app: ComplaintMechanism, book: Path, settings: Settings) -> list[Attested]:
    """The checkpoints a witness's book holds for this store, each signature checked again
    with the network's public key (a book can be copied or edited too); none if the book or
    the store's first event is missing."""
    from services.audit.checkpoints import verify_checkpoint
    from services.audit.keys import (
        AuditKeyError,
        load_public_key,
    )
    from services.audit.verify import Attested
    from services.audit.witness import WitnessBook
    from services.event_store.store_id import store_id

    if not book.is_file():
        return []
    first = app.recorder.select_notifications(1, 1)
    store = store_id(first[0]) if first else None
    try:
        public_key = load_public_key(settings)
    except AuditKeyError as e:
        _fail(str(e), EXIT_CONFIG)
    with WitnessBook.open(book, readonly=True) as held:
        checkpoints = held.checkpoints(store) if store else []
        others = [s for s in held.stores() if s != store]
    if others and not checkpoints:
        # the store id is derived from the first event: a changed or removed first event, or
        # an emptied store, must not turn the witness's checkpoints into someone else's
        typer.echo(
            "DAMAGED: first bad position 1: changed: the witness holds checkpoints of store "
            f"{', '.join(others)}, none of this store ({store or 'empty'}): its first event was "
            "changed or removed, or the store emptied",
            err=True,
        )
        raise typer.Exit(EXIT_DAMAGED)
    forged = [c.position for c in checkpoints if not verify_checkpoint(public_key, c)]
    if forged:
        _fail(
            f"the witness's book at {book} holds checkpoints whose signature does not verify "
            f"(positions {forged[:5]}): it cannot vouch for anything",
            EXIT_CONFIG,
        )
    return [
        Attested(c.position, bytes.fromhex(c.link), c.signed_at.isoformat()) for c in checkpoints
    ]


EXIT_DAMAGED = 4
EXIT_UNVERIFIED = 5


@audit_cli.command("verify")
def audit_verify(
    start: Annotated[
        int, typer.Option("--from", min=1, metavar="POS", help="Verify from this position.")
    ] = 1,
    witness_db: WitnessDb = None,
    no_checkpoints: Annotated[
        bool,
        typer.Option(
            "--no-checkpoints", help="Check the chain alone when no witness's book is at hand."
        ),
    ] = False,
) -> None:
    """Recompute the hash chain over the event store and hold it to the signed checkpoints.

    Exit 0 when intact; 4 naming the first bad position and the kind of damage (changed,
    missing, reordered, inserted, truncated); 5 no signed checkpoint to hold it to (unless
    --no-checkpoints); 2 bad usage; 3 store unreachable.
    """
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
    )

    from services.audit.verify import verify
    from services.audit.witness import witness_book_path
    from services.event_store.chain import head as chain_head

    settings = _settings()
    app, where = _open(settings)
    try:
        with _reported(where):
            book = witness_db or witness_book_path(settings.data_dir)
            checkpoints = _witnessed(app, book, settings)
            if not checkpoints and not no_checkpoints:
                _fail(
                    f"no signed checkpoint of this store in {book}: a tail cut off or "
                    "rewritten with every link recomputed could not show; run a witness "
                    "(cbcm audit witness), name its book with --witness-db, or pass "
                    "--no-checkpoints to check the chain alone",
                    EXIT_UNVERIFIED,
                )
            top = chain_head(app.recorder)
            total = 0 if top is None else max(0, top.position - start + 1)
            with Progress(
                TextColumn("verifying"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                transient=True,
                disable=total == 0,
                console=Console(stderr=True),
            ) as bar:
                task = bar.add_task("verify", total=total)
                report = verify(
                    app.recorder,
                    start=start,
                    checkpoints=checkpoints,
                    progress=lambda position: bar.update(task, completed=position - start + 1),
                )
    finally:
        app.close()
    vouched = (
        f"{report.checkpoints} signed checkpoint(s)"
        if checkpoints
        else (
            "no signed checkpoint (a tail cut off or rewritten with every link recomputed would "
            "not show)"
        )
    )
    if report.intact:
        typer.echo(
            f"intact: {report.checked} positions from {start} to {report.head or 0}, "
            f"held to {vouched}"
        )
        return
    first = report.first
    assert first is not None
    typer.echo(
        f"DAMAGED: first bad position {first.position}: {first.kind}: {first.detail}", err=True
    )
    for finding in sorted(report.findings, key=lambda f: f.position)[1:20]:
        typer.echo(f"  also {finding.kind} at {finding.position}: {finding.detail}", err=True)
    raise typer.Exit(EXIT_DAMAGED)


@audit_cli.command("case")
def audit_case(
    case_id: Annotated[str, typer.Argument(help="The case's id.")],
    *,
    at_version: Annotated[
        int | None,
        typer.Option("--at-version", metavar="N", help="Show the state at this version."),
    ] = None,
    as_of: Annotated[
        str | None,
        typer.Option(
            "--as-of",
            metavar="TIME",
            help="Show the state as it was at this time (ISO 8601 with a zone).",
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON document.")] = False,
    auditor: Annotated[
        str | None,
        typer.Option(
            "--auditor",
            metavar="USER",
            help="The auditor replaying: personal data is shown if the coordinator granted "
            "USER this case (the read is recorded).",
        ),
    ] = None,
    agency: Annotated[
        str,
        typer.Option("--agency", metavar="AGENCY", help="The auditor's agency, as recorded."),
    ] = "network",
    witness_db: WitnessDb = None,
) -> None:
    """A case's whole history as custody steps in plain words, its state at a version or
    time, and for each event the evidence that it is in the verified chain.

    Personal data is redacted unless --auditor names an auditor the coordinator granted this
    case (POST /v1/cases/{id}/audit-grants).
    """
    from domain.actors import (
        Actor,
        Role,
        validate_code,
        validate_user,
    )
    from domain.errors import InvalidCode
    from services.api.replay import (
        ReplayError,
        render_text,
        replay_case,
    )
    from services.audit.witness import witness_book_path

    try:
        case = UUID(case_id)
    except ValueError:
        _fail(f"{case_id!r} is not a case id (a UUID)", EXIT_CONFIG)
    if at_version is not None and as_of is not None:
        _fail("give --at-version or --as-of, not both", EXIT_CONFIG)
    moment = None
    if as_of is not None:
        try:
            moment = datetime.fromisoformat(as_of)
        except ValueError:
            _fail(f"--as-of {as_of!r} is not an ISO 8601 time", EXIT_CONFIG)
        if moment.tzinfo is None:
            _fail("--as-of needs a time zone, e.g. 2026-03-02T10:00:00+00:00", EXIT_CONFIG)
    reader = None
    if auditor is not None:
        try:
            reader = Actor(validate_user(auditor), validate_code("agency", agency), Role.AUDITOR)
        except InvalidCode as e:
            _fail(str(e), EXIT_CONFIG)
    settings = _settings()
    app, where = _open(settings)
    try:
        with _reported(where):
            checkpoints = _witnessed(
                app, witness_db or witness_book_path(settings.data_dir), settings
            )
            granted = reader is not None and reader.user in app.audit_grantees(case)
            if reader is not None and not granted:
                typer.echo(
                    f"cbcm: {reader.user} holds no grant for this case: personal data redacted",
                    err=True,
                )
            try:
                replay = replay_case(
                    app,
                    case,
                    at_version=at_version,
                    as_of=moment,
                    checkpoints=checkpoints,
                    reveal_personal=granted,
                    reader=reader,
                )
            except ReplayError as e:
                _fail(str(e), EXIT_CONFIG)
    finally:
        app.close()
    if as_json:
        typer.echo(json.dumps(replay.to_json(), indent=2, ensure_ascii=False))
    else:
        typer.echo(render_text(replay))


# ---------------------------------------------------------------------------------- personal data


@contextmanager
def _application(settings: Settings) -> Iterator[ComplaintMechanism]:
    """The application on the configured store, closed after; what goes wrong reported."""
    app, where = _open(settings)
    try:
        with _reported(where):
            yield app
    finally:
        app.close()


retention_cli = typer.Typer(
    help="Personal data is kept only as long as network policy says.", no_args_is_help=True
)
cli.add_typer(retention_cli, name="retention")


@retention_cli.command("run")
def retention_run(
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Say what is due, erase nothing.")
    ] = False,
    as_of: Annotated[
        str | None,
        typer.Option(
            "--as-of", metavar="TIME", help="With --dry-run: what would be due at this time."
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="The report as JSON.")] = False,
) -> None:
    """Erase the personal data of cases closed, and feedback answered, longer ago than the
    policy's retention (crypto-shredding: the log is not rewritten), and report it."""
    from services.application.retention import run_retention

    moment = datetime.now(UTC)
    if as_of is not None:
        try:
            moment = datetime.fromisoformat(as_of)
        except ValueError:
            _fail(f"--as-of {as_of!r} is not an ISO 8601 time", EXIT_CONFIG)
        if moment.tzinfo is None:
            _fail("--as-of needs a time zone (e.g. 2031-01-01T00:00:00+00:00)", EXIT_CONFIG)
        if not dry_run:
            _fail("--as-of only with --dry-run: retention erases as of now", EXIT_CONFIG)
    settings = _settings()
    configure_logging(settings.log_format, "retention")
    with _application(settings) as app:
        report = run_retention(app, at=moment, dry_run=dry_run)
    verb = "due" if dry_run else "erased"
    if as_json:
        typer.echo(
            json.dumps(
                {
                    "as_of": report.at.isoformat(),
                    "retention_days": report.retention_days,
                    "dry_run": dry_run,
                    "cases": [str(c) for c in report.cases],
                    "records": report.records,
                    "feedback": [str(f) for f in report.feedback],
                    "refused": [{"id": str(i), "error": e} for i, e in report.refused],
                    "position": report.last_position,
                },
                indent=2,
            )
        )
    else:
        typer.echo(
            f"retention {report.retention_days:g} days as of {report.at.isoformat()}: "
            f"{len(report.cases)} case(s) {verb} (with {report.records} other record(s)), "
            f"{len(report.feedback)} feedback item(s) {verb}"
        )
        for case_id in report.cases:
            typer.echo(f"  case {case_id}")
        for feedback_id in report.feedback:
            typer.echo(f"  feedback {feedback_id}")
        for record, error in report.refused:
            typer.echo(f"  refused {record}: {error}")
    if report.refused:
        raise typer.Exit(EXIT_REFUSED)


keys_cli = typer.Typer(
    help="The key-encryption keys that wrap personal data's data keys.", no_args_is_help=True
)
cli.add_typer(keys_cli, name="keys")


@keys_cli.command("rotate")
def keys_rotate(
    rewrap_only: Annotated[
        bool,
        typer.Option(
            "--rewrap-only", help="Make no new KEK (a KMS rotated its own): rewrap to the active."
        ),
    ] = False,
) -> None:
    """Make a new key-encryption key active and rewrap every data key under it (no event is
    rewritten). Then `cbcm keys retire OLD_ID` destroys the old one."""
    from services.application.key_rotation import rotate
    from services.event_store.personal_data.kek import KeyRingError

    with _application(_settings()) as app:
        try:
            rotation = rotate(app, new_key=not rewrap_only)
        except KeyRingError as e:
            _fail(str(e), EXIT_CONFIG)
    typer.echo(f"active key-encryption key {rotation.active}: {rotation.rewrapped} rewrapped")


@keys_cli.command("retire")
def keys_retire(kek_id: Annotated[str, typer.Argument(help="The id of an inactive KEK.")]) -> None:
    """Destroy an inactive key-encryption key once no data key is wrapped under it."""
    from services.application.key_rotation import retire
    from services.event_store.personal_data.kek import KeyRingError

    with _application(_settings()) as app:
        try:
            retire(app, kek_id)
        except KeyRingError as e:
            _fail(str(e), EXIT_REFUSED)
    typer.echo(f"key-encryption key {kek_id} destroyed")


@keys_cli.command("status")
def keys_status() -> None:
    """Live data keys per key-encryption key, and erased ones (counts only)."""
    from services.application.key_rotation import status as key_status

    with _application(_settings()) as app:
        counts = key_status(app)
    typer.echo(json.dumps(counts, indent=2, sort_keys=True))


if __name__ == "__main__":
    main()
