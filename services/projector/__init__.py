"""Projector processes: ``cbcm project NAME`` and ``cbcm projections rebuild NAME``.

``project_main`` and ``rebuild_main`` are the CLI's entry points; ``run_projector`` and
``rebuild`` (in ``services.projector.runner``) are the async building blocks other services
(statistics, ``cbcm serve``) compose.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Callable
from importlib import import_module
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from projections.assistance import AssistanceProjection
from projections.base import Projection
from projections.inbox import InboxProjection
from services.projector.runner import (
    OnCommit,
    PositionGap,
    ProjectorError,
    read_model_path,
    read_position,
    rebuild,
    run_projector,
)


def _stats() -> Projection:
    module = import_module("projections.stats.projection")
    projection: Projection = module.StatisticsProjection()
    return projection


PROJECTIONS: dict[str, Callable[[], Projection]] = {
    "inbox": InboxProjection,
    "assistance": AssistanceProjection,
    "stats": _stats,
}
"""Read-model name -> a new projection of it."""


def projection_named(name: str) -> Projection:
    """The projection called ``name``, or ``KeyError`` naming the known ones."""
    try:
        factory = PROJECTIONS[name]
    except KeyError:
        raise KeyError(f"no read model {name!r}: expected one of {sorted(PROJECTIONS)}") from None
    return factory()


def project_main(
    name: str,
    *,
    data_dir: Path,
    nats_url: str,
    on_commit: OnCommit | None = None,
) -> None:
    """Run the projector of read model ``name`` until SIGINT or SIGTERM (``cbcm project``)."""
    projection = projection_named(name)

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await run_projector(
            projection,
            read_model_path(data_dir, name),
            nats_url,
            stop,
            on_commit=on_commit,
        )

    asyncio.run(main())


def rebuild_main(name: str, *, data_dir: Path, nats_url: str) -> int:
    """Rebuild read model ``name`` from the stream with a progress bar on stderr
    (``cbcm projections rebuild``); returns the last position applied."""
    projection = projection_named(name)
    console = Console(stderr=True)
    with Progress(
        TextColumn(f"[bold]rebuilding {name}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
    ) as bar:
        task = bar.add_task("messages", total=None)

        def progress(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        position = asyncio.run(
            rebuild(projection, read_model_path(data_dir, name), nats_url, progress)
        )
    console.print(f"{name}: rebuilt up to position {position}")
    return position


__all__ = [
    "PROJECTIONS",
    "PositionGap",
    "ProjectorError",
    "project_main",
    "projection_named",
    "read_model_path",
    "read_position",
    "rebuild",
    "rebuild_main",
    "run_projector",
]
