"""The focal-point inbox read model (see ``projections.inbox.model`` for the action rules)."""

from projections.inbox.model import (
    ACTIONS,
    Action,
    CaseRow,
    PAGE_MAX,
    InboxCounts,
    InboxCursor,
    InboxFilter,
    InboxItem,
    InboxPage,
    InboxProjection,
    PendingAction,
    case_row,
    inbox,
    inbox_counts,
    inbox_page,
    pending_actions,
)

__all__ = [
    "ACTIONS",
    "Action",
    "CaseRow",
    "PAGE_MAX",
    "InboxCounts",
    "InboxCursor",
    "InboxFilter",
    "InboxItem",
    "InboxPage",
    "InboxProjection",
    "PendingAction",
    "case_row",
    "inbox",
    "inbox_counts",
    "inbox_page",
    "pending_actions",
]
