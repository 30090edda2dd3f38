"""``cbcm contracts``: the published language (the messages on NATS) as JSON Schema and
AsyncAPI."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from services.cli.common import EXIT_CONFIG, fail, one_line

contracts_cli = typer.Typer(help="The published language: messages on NATS.", no_args_is_help=True)


def register(cli: typer.Typer) -> None:
    """Add ``cbcm contracts ...`` to the ``cbcm`` command line."""
    cli.add_typer(contracts_cli, name="contracts")


RELEASE_SCHEMA = "org.psea.cbcm.stats.release.v1"
"""The name of the statistics release message's schema (issue #14; not a CloudEvent: a
release is published as it is kept)."""


@contracts_cli.command("schema")
def contracts_schema(
    out: Annotated[
        Path | None,
        typer.Option(
            "--out", file_okay=False, help="Write one JSON Schema file per message type here."
        ),
    ] = None,
) -> None:
    """JSON Schema of every published message: to stdout, or one file each with --out.
    Besides the events and shares: the statistics release (``RELEASE_SCHEMA``)."""
    from contracts import catalogue
    from contracts.statistics import release_json_schema

    if out is None:
        schemas = {**catalogue.json_schemas(), RELEASE_SCHEMA: release_json_schema()}
        typer.echo(json.dumps(schemas, indent=2))
        return
    try:
        written = catalogue.write_json_schemas(Path(out))
        release = Path(out) / f"{RELEASE_SCHEMA}.schema.json"
        release.write_text(json.dumps(release_json_schema(), indent=2) + "\n", encoding="utf-8")
        written.append(release)
    except OSError as e:
        fail(f"cannot write schemas to {out}: {one_line(e)}", EXIT_CONFIG)
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
        fail(f"cannot write {out}: {one_line(e)}", EXIT_CONFIG)
    typer.echo(str(out))
