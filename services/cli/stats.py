"""``cbcm stats``: the anonymised statistics of the network.

``cbcm stats release list|show|export`` read the published releases (issue #14): numbered,
immutable, protected together against an attacker holding all of them; these are what may
leave the network. ``cbcm stats export`` gives the coordinator the *live* reports from the
read model, protected table by table only: comparing two of them gives away the case that
came in between, so they are never to be published.
"""

from __future__ import annotations

import sys
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from projections import stats
from services.cli.common import EXIT_REFUSED, EXIT_UNAVAILABLE, fail, load_settings

stats_cli = typer.Typer(help="Anonymised statistics of the network.", no_args_is_help=True)
release_cli = typer.Typer(
    help="Published statistics releases: one per closed period, numbered, immutable.",
    no_args_is_help=True,
)
stats_cli.add_typer(release_cli, name="release")


def register(cli: typer.Typer) -> None:
    """Add ``cbcm stats ...`` to the ``cbcm`` command line."""
    cli.add_typer(stats_cli, name="stats")


class ExportFormat(StrEnum):
    csv = "csv"
    json = "json"


class ReleaseFormat(StrEnum):
    json = "json"
    csv = "csv"
    xlsx = "xlsx"


@stats_cli.command("export")
def stats_export(
    format: Annotated[
        ExportFormat, typer.Option("--format", help="csv or json")
    ] = ExportFormat.json,
) -> None:
    """The coordinator's LIVE reports from the statistics read model, small cells suppressed
    table by table. They change with every case: never publish them (publish releases:
    `cbcm stats release export`)."""
    from services.api.problems import Problem
    from services.api.read_models import applied_position
    from services.projector.storage import read_model_store

    settings = load_settings()
    store = read_model_store(settings, "stats")
    try:
        if applied_position(store) is None:
            fail(
                f"no statistics read model at {store.where}: run `cbcm serve` "
                "(or `cbcm project stats`)",
                EXIT_UNAVAILABLE,
            )
        with store.reading() as db:
            tables = stats.reports(db, k=stats.threshold(db))
    except Problem as e:
        fail(f"{store.where}: {e.detail}", EXIT_UNAVAILABLE)
    finally:
        store.close()
    typer.echo(stats.to_csv(tables) if format is ExportFormat.csv else stats.to_json(tables))


def _ledger() -> Path | str:
    from services.statistics.releases import has_ledger, ledger_place, ledger_schema

    place = ledger_place(load_settings())
    if not has_ledger(place):
        where = place if isinstance(place, Path) else f"schema {ledger_schema(place)}"
        fail(
            f"no statistics releases at {where}: the statistics service (`cbcm serve` or "
            "`cbcm project stats`) makes them once a period has closed and its embargo passed",
            EXIT_UNAVAILABLE,
        )
    return place


@release_cli.command("list")
def release_list() -> None:
    """Every release version: id, period, version, when, and held-back reports."""
    from services.statistics.releases import list_releases, open_ledger

    with open_ledger(_ledger(), readonly=True) as db:
        found = list_releases(db)
    latest = {v.period: v.version for v in found}
    for v in found:
        held = [h["report"] for h in v.document["release"]["held_back"]]
        typer.echo(
            f"{v.id}\t{v.period}\tv{v.version}\t{v.released_at}"
            f"\t{'latest' if latest[v.period] == v.version else 'superseded'}"
            + (f"\theld back: {','.join(held)}" if held else "")
        )


def _document(release: str) -> dict[str, object]:
    from services.statistics.releases import get_release, open_ledger

    with open_ledger(_ledger(), readonly=True) as db:
        found = get_release(db, release.lower())
    if found is None:
        fail(f"no statistics release {release!r}: see `cbcm stats release list`", EXIT_REFUSED)
    return found.document


@release_cli.command("show")
def release_show(
    release: Annotated[str, typer.Argument(help="a version (2026-q1-v2) or a release (2026-q1)")],
) -> None:
    """One release version as published (JSON): today's reports plus release metadata."""
    from services.statistics import exports

    typer.echo(exports.to_json(_document(release)), nl=False)


@release_cli.command("export")
def release_export(
    release: Annotated[str, typer.Argument(help="a version (2026-q1-v2) or a release (2026-q1)")],
    format: Annotated[
        ReleaseFormat, typer.Option("--format", help="json, csv or xlsx (HXL hashtag row)")
    ] = ReleaseFormat.csv,
    out: Annotated[
        Path | None, typer.Option("--out", help="write to this file (default: standard output)")
    ] = None,
) -> None:
    """One release version as JSON, CSV or XLSX; CSV and the XLSX data sheet carry an HXL
    hashtag row, for HDX tools."""
    from services.statistics import exports

    document = _document(release)
    if format is ReleaseFormat.xlsx:
        body = exports.to_xlsx(document)
    elif format is ReleaseFormat.csv:
        body = exports.to_csv(document).encode()
    else:
        body = exports.to_json(document).encode()
    if out is None:
        sys.stdout.buffer.write(body)
        sys.stdout.flush()
    else:
        out.write_bytes(body)
