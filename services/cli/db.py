"""``cbcm db``: the event store's schema under version (ADR 21): make it, bring it up to date,
say where it stands, and grant the application's role what it needs."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated

import typer

from services.cli.common import EXIT_CONFIG, fail, load_settings, one_line

db_cli = typer.Typer(
    help="The event store's schema: init, migrate, status, grants.", no_args_is_help=True
)

GrantTo = Annotated[
    str | None,
    typer.Option(
        "--grant-to",
        metavar="ROLE",
        help="PostgreSQL: then grant ROLE (the application's) what it needs, in the same run.",
    ),
]


def register(cli: typer.Typer) -> None:
    """Add ``cbcm db ...`` to the ``cbcm`` command line."""
    cli.add_typer(db_cli, name="db")


def _env() -> dict[str, str]:
    from services.event_store.config import store_location

    return store_location(load_settings())


@contextmanager
def _as_owner(env: dict[str, str]) -> Iterator[None]:
    """A role that may not change the schema (the application's) is one line, not a trace."""
    import psycopg

    from services.event_store.config import describe

    try:
        yield
    except psycopg.ProgrammingError as e:
        fail(
            f"cannot change the event store's schema ({describe(env)}): {one_line(e)}; "
            "run `cbcm db` as the tables' owner",
            EXIT_CONFIG,
        )


def _migrate(*, only_if_empty: bool, grant_to: str | None) -> None:
    from services.event_store import schema

    env = _env()
    with _as_owner(env):
        done = schema.migrate(env, only_if_empty=only_if_empty)
        found = schema.status(env)
        for migration in done:
            typer.echo(f"applied {migration.version:04d} {migration.name}")
        typer.echo(f"{found.where}: schema version {found.current} (this cbcm: {found.latest})")
        if grant_to is not None:
            for statement in schema.apply_grants(env, grant_to):
                typer.echo(statement)


@db_cli.command("init")
def db_init(grant_to: GrantTo = None) -> None:
    """Make the tables of a new, empty event store (refuses one that has tables)."""
    _migrate(only_if_empty=True, grant_to=grant_to)


@db_cli.command("migrate")
def db_migrate(grant_to: GrantTo = None) -> None:
    """Apply every schema version the store lacks, in one transaction (as the tables' owner).
    A store of the release before versions is adopted as version 1, unchanged."""
    _migrate(only_if_empty=False, grant_to=grant_to)


@db_cli.command("status")
def db_status(
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object.")] = False,
) -> None:
    """The store's schema version, this cbcm's, and what is pending. Exit 0 when they
    match, 2 when `cbcm db migrate` is needed (or the store is newer than this cbcm)."""
    from services.event_store import schema

    found = schema.status(_env())
    pending = [f"{m.version:04d}_{m.name}" for m in found.pending]
    if as_json:
        typer.echo(
            json.dumps(
                {
                    "store": found.where,
                    "version": found.current,
                    "latest": found.latest,
                    "pending": pending,
                    "applied": [
                        {"version": a.version, "name": a.name, "applied_at": a.applied_at}
                        for a in found.applied
                    ],
                }
            )
        )
    else:
        typer.echo(f"store:    {found.where}")
        shown = "none" if found.current is None else str(found.current)
        if found.current is None and found.has_events:
            shown += " (made before schema versions)"
        typer.echo(f"version:  {shown}")
        typer.echo(f"latest:   {found.latest}")
        for applied in found.applied:
            typer.echo(f"applied:  {applied.version:04d} {applied.name} at {applied.applied_at}")
        for name in pending:
            typer.echo(f"pending:  {name}")
    if not found.up_to_date:
        raise typer.Exit(EXIT_CONFIG)


@db_cli.command("grants")
def db_grants(
    role: Annotated[
        str, typer.Option("--role", help="The application's PostgreSQL role.")
    ] = "cbcm_app",
    apply: Annotated[
        bool, typer.Option("--apply", help="Run them (as the tables' owner) rather than print.")
    ] = False,
) -> None:
    """The least-privilege grants of the application's role on a PostgreSQL store: INSERT and
    SELECT on the append-only log, UPDATE of the data keys' wrapping only, the relay's
    position, the schema version; nothing to create, alter, delete or truncate."""
    from services.event_store import schema
    from services.event_store.config import EventStoreConfigError

    env = _env()
    try:
        with _as_owner(env):
            statements = schema.apply_grants(env, role) if apply else schema.grants(env, role)
    except EventStoreConfigError as e:
        fail(str(e), EXIT_CONFIG)
    for statement in statements:
        typer.echo(statement + ";")
