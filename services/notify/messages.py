"""What a notice says: a count, a kind and a link to the inbox, nothing of a case.

Email and SMS leave the network's control, so a message names no case, no person, no
agency's finding: only how many of what kind wait, and where to look. The Message-ID is
derived from the notice's key by a one-way hash, so a mail system that sees the same
notice twice (a send repeated after a crash) can tell it is the same.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from domain.vocabulary import NotificationKind
from services.notify.outbox import Notice

_PHRASES: dict[NotificationKind, tuple[str, str]] = {
    NotificationKind.NEW_CASE: ("new case", "new cases"),
    NotificationKind.URGENT_CASE: (
        "urgent case (immediate safety risk)",
        "urgent cases (immediate safety risk)",
    ),
    NotificationKind.TRANSFER_RECEIVED: ("case transferred to you", "cases transferred to you"),
    NotificationKind.ACTION_DUE_SOON: ("action due soon", "actions due soon"),
    NotificationKind.ACTION_OVERDUE: ("action overdue", "actions overdue"),
    NotificationKind.INVESTIGATION_REFERRAL: (
        "referral for investigation",
        "referrals for investigation",
    ),
    NotificationKind.ASSISTANCE_REFERRAL: ("assistance referral", "assistance referrals"),
    NotificationKind.WEBHOOK_DISABLED: (
        "webhook endpoint disabled after failing deliveries",
        "webhook endpoints disabled after failing deliveries",
    ),
}


def counted(count: int, kind: NotificationKind) -> str:
    """``"1 urgent case ..."``, ``"2 actions overdue"``."""
    one, many = _PHRASES[kind]
    return f"{count} {one if count == 1 else many}"


@dataclass(frozen=True)
class Message:
    subject: str
    text: str
    message_id: str


def message_id(key: str) -> str:
    digest = hashlib.sha256(key.encode()).hexdigest()[:40]
    return f"<{digest}@cbcm.notify>"


def link(base: str, notice: Notice) -> str:
    """Where to look: the agency's inbox for focal points, the endpoint for a coordinator
    told of a disabled webhook, the service's root otherwise."""
    base = base.rstrip("/")
    if notice.kind is NotificationKind.WEBHOOK_DISABLED and notice.detail.get("coordinator"):
        return f"{base}/v1/webhooks/{notice.about.split(':')[0]}"
    if notice.organisation is not None and notice.kind in (
        NotificationKind.NEW_CASE,
        NotificationKind.URGENT_CASE,
        NotificationKind.TRANSFER_RECEIVED,
        NotificationKind.ACTION_DUE_SOON,
        NotificationKind.ACTION_OVERDUE,
    ):
        return f"{base}/v1/inbox/{notice.organisation}"
    return f"{base}/"


def render(notice: Notice, base_url: str) -> Message:
    """The message of one notice."""
    where = link(base_url, notice)
    if notice.kind is NotificationKind.COORDINATOR_DIGEST:
        overdue = notice.detail.get("overdue", notice.count)
        undelivered = notice.detail.get("undelivered", 0)
        headline = (
            f"{counted(overdue, NotificationKind.ACTION_OVERDUE)} across the network, "
            f"{undelivered} notification{'' if undelivered == 1 else 's'} undelivered"
        )
    elif notice.kind is NotificationKind.DIGEST:
        parts = [
            counted(count, NotificationKind(kind))
            for kind, count in sorted(notice.detail.items())
            if kind in NotificationKind.__members__.values() and count > 0
        ]
        headline = "; ".join(parts) or f"{notice.count} notices"
    else:
        headline = counted(notice.count, notice.kind)
    more = ""
    if notice.kind is NotificationKind.WEBHOOK_DISABLED:
        more = "Its events wait and are sent first once the network coordinator enables it again.\n"
    return Message(
        subject=f"[PSEA] {headline}",
        text=f"{headline}.\n{more}See {where}\n",
        message_id=message_id(notice.key),
    )
