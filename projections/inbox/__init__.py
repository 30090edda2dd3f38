"""The focal-point inbox read model (see ``projections.inbox.model`` for the action rules)."""

from projections.inbox.model import (
    ACTIONS,
    Action,
    CaseRow,
    InboxItem,
    InboxProjection,
    PendingAction,
    case_row,
    inbox,
    pending_actions,
)

__all__ = [
    "ACTIONS",
    "Action",
    "CaseRow",
    "InboxItem",
    "InboxProjection",
    "PendingAction",
    "case_row",
    "inbox",
    "pending_actions",
]
