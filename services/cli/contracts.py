"""``cbcm contracts``: the published language (the messages on NATS, the HTTP API) as JSON
Schema, AsyncAPI and OpenAPI, and the committed copy of them under ``docs/contracts/``."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Annotated

import typer

from services.cli.common import EXIT_CONFIG, fail, one_line

contracts_cli = typer.Typer(
    help="The published language: messages on NATS, the HTTP API.", no_args_is_help=True
)

COMMITTED = "docs/contracts"
"""Where the repository keeps the generated documents (a test compares them)."""

WRITE_COMMAND = f"cbcm contracts write {COMMITTED}"
"""The command that regenerates the committed documents."""

SCHEMAS_DIR = "schemas"


def register(cli: typer.Typer) -> None:
    """Add ``cbcm contracts ...`` to the ``cbcm`` command line."""
    cli.add_typer(contracts_cli, name="contracts")


def _json(document: object) -> str:
    return json.dumps(document, indent=2, ensure_ascii=False) + "\n"


def asyncapi_text() -> str:
    """The AsyncAPI document as ``cbcm contracts asyncapi`` writes it."""
    from contracts.asyncapi import asyncapi_document

    return _json(asyncapi_document())


def openapi_text() -> str:
    """The HTTP API's OpenAPI document (``/openapi.json``), from an app over an empty data
    directory: the document depends on the code, never on a deployment's data."""
    from services.api.app import create_app
    from services.settings import Settings

    with tempfile.TemporaryDirectory(prefix="cbcm-openapi-") as data_dir:
        app = create_app(Settings(data_dir=Path(data_dir), oidc_issuer=None))
        return _json(app.openapi())


def contract_files() -> dict[str, str]:
    """Every file of ``docs/contracts/`` as ``cbcm contracts write`` makes it: relative path
    -> text, in sorted order."""
    from contracts.catalogue import all_json_schemas, schema_file_name, schema_text

    files = {"asyncapi.json": asyncapi_text(), "openapi.json": openapi_text()}
    for name, schema in all_json_schemas().items():
        files[f"{SCHEMAS_DIR}/{schema_file_name(name)}"] = schema_text(schema)
    return dict(sorted(files.items()))


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
    Besides the CloudEvents: the statistics release, the checkpoint, the cosignature and the
    plaintext of a sealed share."""
    from contracts import catalogue

    if out is None:
        typer.echo(json.dumps(catalogue.all_json_schemas(), indent=2, ensure_ascii=False))
        return
    try:
        written = catalogue.write_json_schemas(Path(out))
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
    """AsyncAPI 3.0 document of the streams, their subjects, headers and message schemas."""
    text = asyncapi_text()
    if out is None:
        typer.echo(text, nl=False)
        return
    try:
        Path(out).write_text(text, encoding="utf-8")
    except OSError as e:
        fail(f"cannot write {out}: {one_line(e)}", EXIT_CONFIG)
    typer.echo(str(out))


@contracts_cli.command("write")
def contracts_write(
    directory: Annotated[
        Path, typer.Argument(file_okay=False, help=f"Usually {COMMITTED} of the repository.")
    ],
) -> None:
    """Write asyncapi.json, openapi.json and schemas/<name>.schema.json into DIRECTORY, and
    remove schema files there that no published schema has any more."""
    files = contract_files()
    try:
        for relative, text in files.items():
            path = directory / relative
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
        for stale in sorted((directory / SCHEMAS_DIR).glob("*.schema.json")):
            if f"{SCHEMAS_DIR}/{stale.name}" not in files:
                stale.unlink()
                typer.echo(f"removed {stale}")
    except OSError as e:
        fail(f"cannot write the contracts to {directory}: {one_line(e)}", EXIT_CONFIG)
    typer.echo(f"{len(files)} files in {directory}")
