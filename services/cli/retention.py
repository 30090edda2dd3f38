"""``cbcm retention``: personal data is kept only as long as network policy says; past that
it is erased by crypto-shredding (the log is not rewritten)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Annotated

import typer

from services.cli.common import EXIT_CONFIG, EXIT_REFUSED, application, fail, load_settings
from services.runtime.logging import configure_logging

retention_cli = typer.Typer(
    help="Personal data is kept only as long as network policy says.", no_args_is_help=True
)


def register(cli: typer.Typer) -> None:
    """Add ``cbcm retention ...`` to the ``cbcm`` command line."""
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
            fail(f"--as-of {as_of!r} is not an ISO 8601 time", EXIT_CONFIG)
        if moment.tzinfo is None:
            fail("--as-of needs a time zone (e.g. 2031-01-01T00:00:00+00:00)", EXIT_CONFIG)
        if not dry_run:
            fail("--as-of only with --dry-run: retention erases as of now", EXIT_CONFIG)
    settings = load_settings()
    configure_logging(settings.log_format, "retention")
    with application(settings) as app:
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
