"""``cbcm projections``: the read models, rebuilt from the whole stream."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path
from typing import Annotated

import typer

from services.cli.common import (
    EXIT_CONFIG,
    EXIT_UNAVAILABLE,
    ReadModel,
    fail,
    load_settings,
    nats_url,
    one_line,
)
from services.runtime.logging import configure_logging

projections_cli = typer.Typer(help="Read models.", no_args_is_help=True)


def register(cli: typer.Typer) -> None:
    """Add ``cbcm projections ...`` to the ``cbcm`` command line."""
    cli.add_typer(projections_cli, name="projections")


@projections_cli.command("rebuild")
def projections_rebuild(
    name: Annotated[ReadModel, typer.Argument(help="inbox, assistance or stats")],
    into: Annotated[
        str | None,
        typer.Option(
            "--into",
            help="Rebuild into this file (SQLite) or schema (PostgreSQL) instead of the live "
            "read model.",
        ),
    ] = None,
) -> None:
    """Drop a read model and replay it from the whole stream, with a progress bar.

    Stop its projector first when rebuilding the live read model; --into builds a copy
    (a file, or a schema of the read models' PostgreSQL database).
    """
    import nats.errors
    import psycopg
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
    )

    from services.projector import projection_named
    from services.projector.runner import ReadModelInUse, rebuild
    from services.projector.staging import StagingError
    from services.projector.storage import ReadModelStoreError, read_model_store

    settings = load_settings()
    configure_logging(settings.log_format, "rebuild")
    # a stop (systemd's, a container's, timeout's) ends the rebuild as Ctrl-C does: its
    # clean-up runs (the read model's lease, a rebuild into PostgreSQL's scratch file)
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        store = read_model_store(settings, name.value, into=into)
    except ReadModelStoreError as e:
        fail(str(e), EXIT_CONFIG)
    if into is not None and Path(into).is_dir() and not settings.read_model_store:
        fail(f"--into {into} is a directory: name a file", EXIT_CONFIG)
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
                rebuild(projection_named(name.value), store, nats_url(settings), progress)
            )
        except StagingError as e:
            fail(str(e), EXIT_CONFIG)
        except (OSError, nats.errors.Error) as e:
            fail(f"cannot reach NATS at {nats_url(settings)}: {one_line(e)}", EXIT_UNAVAILABLE)
        except ReadModelInUse as e:
            fail(str(e), EXIT_CONFIG)
        except psycopg.Error as e:
            fail(f"cannot write {store.where}: {one_line(e)}", EXIT_UNAVAILABLE)
        finally:
            store.close()
    typer.echo(f"{name.value}: rebuilt up to position {position} in {store.where}")
