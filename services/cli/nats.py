"""``cbcm nats``: the network's NATS configuration, keys and agencies' consumers (ADR 6).

Exit codes as for the rest of ``cbcm``: 0 done; 2 bad usage or configuration; 3 NATS cannot
be reached, or a stream the agencies read does not exist yet.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated

import typer

from services.cli.common import EXIT_CONFIG, EXIT_UNAVAILABLE, fail

nats_cli = typer.Typer(
    help="The network's NATS: configuration, keys, the agencies' consumers.",
    no_args_is_help=True,
)


def register(cli: typer.Typer) -> None:
    """Add ``cbcm nats ...`` to the ``cbcm`` command line."""
    cli.add_typer(nats_cli, name="nats")


Agencies = Annotated[
    list[str] | None,
    typer.Option(
        "--agency",
        metavar="CODE",
        help="An agency of the network (repeatable; default: those the network registered).",
    ),
]


def _codes(agency: list[str] | None) -> list[str]:
    """The agencies named, or else those the network registered in the event store (not a
    demo's list: a production configuration must name the real network's agencies)."""
    if agency:
        return agency
    from services.bootstrap import complaint_mechanism
    from services.settings import Settings

    app = complaint_mechanism(Settings())
    try:
        registered = sorted(app.network().agencies) if app.has_network() else []
    finally:
        app.close()
    if not registered:
        fail(
            "no agencies: the event store holds no network with agencies; name them with "
            "--agency CODE (repeatable)",
            EXIT_CONFIG,
        )
    return registered


@nats_cli.command("config")
def config(
    agency: Agencies = None,
    out: Annotated[
        Path | None, typer.Option("--out", dir_okay=False, help="Write it here.")
    ] = None,
    nodes: Annotated[
        int,
        typer.Option(
            "--nodes", min=1, help="1: one server; 3 or more: each node of a secured cluster."
        ),
    ] = 1,
) -> None:
    """The nats-server configuration for the network's agencies (deploy/nats/cbcm.conf is
    the demo network's): to stdout, or to --out."""
    from services.nats.config import server_config

    try:
        text = server_config(_codes(agency), nodes=nodes)
    except ValueError as e:
        fail(str(e), EXIT_CONFIG)
    if out is None:
        typer.echo(text, nl=False)
        return
    try:
        out.write_text(text, encoding="utf-8")
    except OSError as e:
        fail(f"cannot write {out}: {e}", EXIT_CONFIG)
    typer.echo(str(out))


@nats_cli.command("setup")
def setup(  # noqa: PLR0917 - typer reads each option from a parameter
    directory: Annotated[Path, typer.Argument(file_okay=False, help="Where to write it all.")],
    agency: Agencies = None,
    host: Annotated[str, typer.Option(help="Address the server listens on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535, help="Its client port.")] = 4222,
    hostname: Annotated[
        list[str] | None,
        typer.Option(
            "--hostname",
            metavar="NAME",
            help="A name clients reach it by, for the certificate (repeatable).",
        ),
    ] = None,
    node: Annotated[
        list[str] | None,
        typer.Option(
            "--node",
            metavar="NAME=HOST:PORT:CLUSTER_PORT",
            help="A node of a secured cluster (three or more; repeatable): TLS routes "
            "verified both ways, a route password, the agencies' accounts on every node.",
        ),
    ] = None,
) -> None:
    """Write the configuration, an nkey seed per user (kept if present), a development CA
    and server certificate, nats-server.env (or, with --node, nodes/<name>.env for each node)
    and env/<user>.env into DIRECTORY."""
    from services.nats.setup import ClusterNode, write_nats_setup

    try:
        nodes = [ClusterNode.parse(text) for text in node or ()]
        done = write_nats_setup(
            directory,
            _codes(agency),
            host=host,
            port=port,
            hostnames=hostname or (),
            nodes=nodes,
        )
    except ValueError as e:
        fail(str(e), EXIT_CONFIG)
    except OSError as e:
        fail(f"cannot write into {directory}: {e}", EXIT_CONFIG)
    typer.echo(f"configuration: {done.config_file}")
    typer.echo(f"nkey seeds (keep secret): {done.directory / 'nkeys'}")
    typer.echo(f"development CA: {done.ca_file}")
    typer.echo(f"client environments: {done.directory / 'env'}")
    if nodes:
        typer.echo(f"route password (keep secret): {done.directory / 'nkeys' / 'route.password'}")
        for each in nodes:
            env = done.directory / "nodes" / f"{each.name}.env"
            typer.echo(
                f"start {each.name}: (set -a; . {env}; exec nats-server -c {done.config_file})"
            )
        return
    typer.echo(f"server environment: {done.directory / 'nats-server.env'}")
    typer.echo(
        f"start: (set -a; . {done.directory / 'nats-server.env'}; "
        f"exec nats-server -c {done.config_file})"
    )


@nats_cli.command("provision")
def provision(agency: Agencies = None) -> None:
    """Make each agency's consumers (its events, its shares, its witness's checkpoints),
    with the provision user's credentials (CBCM_NATS_NKEY_SEED_FILE). Run it again once a
    stream exists, or for a new agency: it changes no existing consumer."""
    import nats.errors
    import pydantic

    from services.nats.client import nats_connect_options
    from services.nats.setup import provision_agency_consumers
    from services.settings import Settings

    try:
        settings = Settings()
    except pydantic.ValidationError as e:
        first = e.errors()[0]
        name = "CBCM_" + "_".join(str(part) for part in first["loc"]).upper()
        fail(f"bad configuration: {name}: {first['msg']}", EXIT_CONFIG)
    if settings.nats_url is None:
        fail("CBCM_NATS_URL is not set: this provisions a network's NATS", EXIT_CONFIG)
    try:
        done = asyncio.run(
            provision_agency_consumers(
                settings.nats_url, _codes(agency), nats_connect_options(settings, "provision")
            )
        )
    except ValueError as e:
        fail(str(e), EXIT_CONFIG)
    except (OSError, TimeoutError, nats.errors.Error) as e:
        fail(
            f"NATS at {settings.nats_url} did not answer ({type(e).__name__}): is it up, and "
            "are these the provision user's credentials for these agencies?",
            EXIT_UNAVAILABLE,
        )
    for item in done:
        state = "ready" if item.ready else f"waiting: no stream {item.stream} yet"
        typer.echo(f"{item.agency}: {item.stream} {item.consumer}: {state}")
    if not all(item.ready for item in done):
        raise typer.Exit(EXIT_UNAVAILABLE)
