"""The focal-point inbox read model (see ``projections.inbox.model`` for the action rules)."""

from projections.inbox.model import (
    ACTIONS,
    PAGE_MAX,
    Action,
    CaseRow,
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
    "PAGE_MAX",
    "Action",
    "CaseRow",
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
