"""Projector processes: ``cbcm project NAME`` and ``cbcm projections rebuild NAME``.

``PROJECTIONS`` names the read models; ``run_projector`` and ``rebuild`` (in
``services.projector.runner``) are the async building blocks the CLI (``services.cli.main``)
runs.
"""

from __future__ import annotations

from collections.abc import Callable

from projections.assistance import AssistanceProjection
from projections.base import Projection
from projections.inbox import InboxProjection
from projections.register import RegisterProjection
from projections.stats import StatisticsProjection
from services.projector.runner import (
    PositionGap,
    ProjectorError,
    read_position,
    rebuild,
    run_projector,
)
from services.projector.storage import ReadModelStore, read_model_path, read_model_store

PROJECTIONS: dict[str, Callable[[], Projection]] = {
    "inbox": InboxProjection,
    "assistance": AssistanceProjection,
    "stats": StatisticsProjection,
    "register": RegisterProjection,
}
"""Read-model name -> a new projection of it."""


def projection_named(name: str) -> Projection:
    """The projection called ``name``, or ``KeyError`` naming the known ones."""
    try:
        factory = PROJECTIONS[name]
    except KeyError:
        raise KeyError(f"no read model {name!r}: expected one of {sorted(PROJECTIONS)}") from None
    return factory()


__all__ = [
    "PROJECTIONS",
    "PositionGap",
    "ProjectorError",
    "ReadModelStore",
    "projection_named",
    "read_model_path",
    "read_model_store",
    "read_position",
    "rebuild",
    "run_projector",
]
