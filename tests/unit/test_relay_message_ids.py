"""The relay's own message ids (issue #12): every id it publishes reads back as what it is.

A withdrawal notice's id once read as another store's and stopped the relay for good.
"""

from __future__ import annotations

import pytest

from services.relay.relay import MessageId

STORE = "0123456789abcdef"


@pytest.mark.parametrize(
    ("message_id", "text"),
    [
        (MessageId(STORE, 41), f"{STORE}:41"),
        (MessageId(STORE, 41, "share"), f"{STORE}:41:share"),
        (MessageId(STORE, 41, "withdrawn", "ngo-b"), f"{STORE}:41:withdrawn:ngo-b"),
    ],
)
def test_every_id_the_relay_publishes_reads_back_as_itself(
    message_id: MessageId, text: str
) -> None:
    assert str(message_id) == text
    assert MessageId.parse(text) == message_id


@pytest.mark.parametrize(
    "text",
    [
        "",
        STORE,
        f"{STORE}:",
        f":{41}",
        f"{STORE}:x41",
        f"{STORE}:4²",
        f"{STORE}:41:shared",
        f"{STORE}:41:withdrawn",
        f"{STORE}:41:withdrawn:",
        f"{STORE}:41:other:ngo-b",
    ],
)
def test_what_the_relay_never_publishes_is_not_read_as_its_own(text: str) -> None:
    assert MessageId.parse(text) is None
