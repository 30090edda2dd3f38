"""Keyset paging of the API's and the console's lists (the case register, the inbox): the
``limit`` and ``cursor`` parameters, and refusals naming the parameter (``BadFilter``).

A cursor is the last row's key in the list's order, as JSON, base64url without padding:
opaque to clients, read back only as the key of the list that gave it (its fields checked one
by one, so a cursor cannot smuggle anything into a query: they are bound parameters). Keys
hold times and case ids, never personal data.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timedelta
from uuid import UUID

from projections.inbox import InboxCursor

CURSOR_MAX = 300
"""The longest cursor read (a key of three times and a case id is about 170 characters)."""


class BadFilter(ValueError):
    """A filter value the list cannot read: ``field`` names the parameter."""

    def __init__(self, field: str, detail: str) -> None:
        super().__init__(detail)
        self.field = field
        self.detail = detail


def one(params: Mapping[str, Sequence[str]], name: str) -> str | None:
    """The parameter's one value (``None``: not given; ``BadFilter``: given twice)."""
    values = [v for v in params.get(name, ()) if v != ""]
    if len(values) > 1:
        raise BadFilter(name, f"{name} is given more than once")
    return values[0] if values else None


def parse_limit(params: Mapping[str, Sequence[str]], default: int, maximum: int) -> int:
    value = one(params, "limit")
    if value is None:
        return default
    if not value.isascii() or not value.isdigit() or not 1 <= int(value) <= maximum:
        raise BadFilter("limit", f"limit must be a whole number from 1 to {maximum}")
    return int(value)


def encode_key(parts: Sequence[str | None]) -> str:
    raw = json.dumps(list(parts), separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def utc_time(value: object) -> str:
    """``value`` if it is a UTC time as the read models store it (else ``ValueError``)."""
    if not isinstance(value, str):
        raise ValueError
    moment = datetime.fromisoformat(value)
    if moment.utcoffset() != timedelta(0):
        raise ValueError
    return value


def utc_time_or_none(value: object) -> str | None:
    return None if value is None else utc_time(value)


def case_id(value: object) -> str:
    """``value`` if it is a case id in its canonical text (else ``ValueError``)."""
    if not isinstance(value, str) or str(UUID(value)) != value:
        raise ValueError
    return value


def parse_key(
    params: Mapping[str, Sequence[str]],
    name: str,
    fields: Sequence[Callable[[object], str | None]],
) -> list[str | None] | None:
    """The key a cursor parameter ``name`` carries, each part checked by its ``fields``
    reader (``None``: not given; ``BadFilter``: not a cursor of this list)."""
    value = one(params, name)
    if value is None:
        return None
    try:
        if len(value) > CURSOR_MAX or not value.isascii():
            raise ValueError
        parts = json.loads(base64.urlsafe_b64decode(value + "=" * (-len(value) % 4)))
        if not isinstance(parts, list) or len(parts) != len(fields):
            raise ValueError
        return [read(part) for read, part in zip(fields, parts, strict=True)]
    except (ValueError, TypeError, binascii.Error, UnicodeDecodeError):
        raise BadFilter(name, f"{name} is not one this list gave") from None


# ------------------------------------------------------------------------------- the inbox

INBOX_PAGE = 50
"""An inbox page's size when the client gives no ``limit`` (the maximum: ``PAGE_MAX``)."""


def encode_inbox_cursor(cursor: InboxCursor) -> str:
    return encode_key([cursor.due_at, cursor.since, cursor.case_id])


def parse_inbox_cursor(
    params: Mapping[str, Sequence[str]], name: str = "cursor"
) -> InboxCursor | None:
    """The inbox cursor parameter ``name`` carries (``BadFilter`` if it is not one)."""
    key = parse_key(params, name, (utc_time_or_none, utc_time, case_id))
    if key is None:
        return None
    due_at, since, case = key
    assert since is not None and case is not None
    return InboxCursor(due_at, since, case)
