"""``cbcm demo``: a demo network and cases on varied workflow paths, in the event store."""

from __future__ import annotations

from typing import Annotated

import typer

from services.cli.common import load_settings, open_application, reported


def register(cli: typer.Typer) -> None:
    """Add ``cbcm demo`` to the ``cbcm`` command line."""
    cli.command()(demo)


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
    settings = load_settings()  # a refusal of them imports nothing more
    app, where = open_application(settings)
    from services.demo.walk import run_demo

    try:
        with reported(where):
            run_demo(app, cases, seed, where)
    finally:
        app.close()
