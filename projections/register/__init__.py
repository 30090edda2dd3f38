"""The case register read model: search, lists and exports (see ``projections.register.model``)."""

from projections.register.model import (
    CATEGORIES,
    EXPORT_MAX,
    PAGE_MAX,
    STATUSES,
    Cursor,
    RegisterFilter,
    RegisterPage,
    RegisterProjection,
    RegisterReader,
    RegisterRow,
    all_rows,
    register_count,
    register_page,
    register_rows,
)

__all__ = [
    "CATEGORIES",
    "EXPORT_MAX",
    "PAGE_MAX",
    "STATUSES",
    "Cursor",
    "RegisterFilter",
    "RegisterPage",
    "RegisterProjection",
    "RegisterReader",
    "RegisterRow",
    "all_rows",
    "register_count",
    "register_page",
    "register_rows",
]
