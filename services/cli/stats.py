"""``cbcm stats``: the anonymised statistics of the network, from their read model."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated

import typer

from projections import stats
from services.cli.common import EXIT_UNAVAILABLE, fail, load_settings

stats_cli = typer.Typer(help="Anonymised statistics of the network.", no_args_is_help=True)


def register(cli: typer.Typer) -> None:
    """Add ``cbcm stats ...`` to the ``cbcm`` command line."""
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

    settings = load_settings()
    path = read_model_path(settings.data_dir, "stats")
    if applied_position(path) is None:
        fail(
            f"no statistics read model at {path}: run `cbcm serve` (or `cbcm project stats`)",
            EXIT_UNAVAILABLE,
        )
    db = open_read_model(path, readonly=True)
    try:
        tables = stats.reports(db, k=stats.threshold(db))
    finally:
        db.close()
    typer.echo(stats.to_csv(tables) if format is ExportFormat.csv else stats.to_json(tables))
