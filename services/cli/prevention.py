"""``cbcm prevention report``: the quarterly report to the Humanitarian Coordinator (issue
#22), from the event store and the published statistics releases, as XLSX or a printable
HTML page."""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from services.cli.common import load_settings, open_application

prevention_cli = typer.Typer(
    help="The network's prevention work: trainings, awareness, readiness, risk.",
    no_args_is_help=True,
)


def register(cli: typer.Typer) -> None:
    """Add ``cbcm prevention ...`` to the ``cbcm`` command line."""
    cli.add_typer(prevention_cli, name="prevention")


class ReportFormat(StrEnum):
    xlsx = "xlsx"
    html = "html"


@prevention_cli.command("report")
def report(
    year: Annotated[int, typer.Option("--year", min=2000, max=2100, help="The report's year.")],
    quarter: Annotated[int, typer.Option("--quarter", min=1, max=4, help="1 to 4.")],
    out: Annotated[Path, typer.Option("--out", help="File to write.", dir_okay=False)],
    format: Annotated[
        ReportFormat, typer.Option("--format", help="xlsx or html")
    ] = ReportFormat.xlsx,
) -> None:
    """Write the quarterly report: the statistics release of the quarter, training
    compliance, focal points, coverage, the risk map and the work plan."""
    from services.prevention.reads import latest_release, prevention_view
    from services.prevention.report import gather, to_html, to_xlsx
    from services.statistics.releases import ledger_place

    settings = load_settings()
    app, _where = open_application(settings)
    try:
        view = prevention_view(app)
    finally:
        app.close()
    release = latest_release(ledger_place(settings), year, quarter)
    gathered = gather(
        view, year=year, quarter=quarter, today=datetime.now(UTC).date(), release=release
    )
    if format is ReportFormat.html:
        out.write_text(to_html(gathered), encoding="utf-8")
    else:
        out.write_bytes(to_xlsx(gathered))
    typer.echo(
        f"wrote {out} ({gathered.title}; statistics release: "
        f"{release.release.id if release else 'none published for the period'})"
    )
