"""Who may do what on the bus (issue #6, ADR 6), as ``services.nats.config`` grants it.

The server's side of it (it refuses what is not granted) is in
``tests/integration/test_nats_isolation.py``.
"""

from __future__ import annotations

import pytest

from contracts.audit import CHECKPOINT_SUBJECT
from services.demo.walk import AGENCIES
from services.nats.config import (
    NatsUser,
    agency_nats_user,
    network_users,
    server_config,
)

CODES = [a.code for a in AGENCIES]


def publishers_of(prefix: str) -> set[str]:
    return {
        user.name
        for user in network_users(CODES)
        if any(subject.startswith(prefix) for subject in user.publish)
    }


def test_only_the_relay_publishes_events_and_shares_and_only_the_services_their_outputs() -> None:
    assert publishers_of("cbcm.v1.evt.") == {"relay"}
    assert publishers_of("cbcm.v1.share.") == {"relay"}
    assert publishers_of("cbcm.v1.stats.") == {"project-stats"}
    assert publishers_of(CHECKPOINT_SUBJECT) == {"audit-checkpoint"}


def test_an_agency_receives_its_own_events_and_shares_statistics_and_checkpoints_only() -> None:
    user = agency_nats_user("unicef")

    assert set(user.subscribe) == {
        "cbcm.v1.evt.unicef.>",
        "cbcm.v1.share.unicef.>",
        "cbcm.v1.stats.>",
        CHECKPOINT_SUBJECT,
        "_INBOX.unicef.>",
    }


def test_an_agency_asks_only_its_own_consumers_and_creates_none() -> None:
    user = agency_nats_user("wfp")
    asked = [
        s
        for s in user.publish
        if not s.endswith("STREAM.INFO.CBCM_AUDIT") and s != "cbcm.v1.audit.cosignature.wfp"
    ]

    assert asked and all(".agency-wfp" in s or ".cbcm-witness-wfp" in s for s in asked)
    # and it publishes its witness's cosignatures on its own subject, nothing else
    assert [s for s in user.publish if s.startswith("cbcm.")] == ["cbcm.v1.audit.cosignature.wfp"]
    assert not any(
        word in subject
        for subject in user.publish
        for word in ("CREATE", "DELETE", "MSG.GET", "DIRECT", "LIST", "NAMES")
    )


def test_every_user_replies_on_an_inbox_of_its_own() -> None:
    users: list[NatsUser] = list(network_users(CODES))
    inboxes = [s for user in users for s in user.subscribe if s.startswith("_INBOX.")]

    assert len(inboxes) == len(set(inboxes)) == len(users)
    assert all(f"{user.inbox_prefix}.>" in user.subscribe for user in users)


@pytest.mark.parametrize(
    "codes",
    [[], ["UNHCR"], ["un.hcr"], ["a-b", "a_b"], ["network"], ["local"]],
    ids=["none", "upper-case", "dot", "one-account", "network-token", "network-witness"],
)
def test_agency_codes_that_would_break_the_isolation_are_refused(codes: list[str]) -> None:
    with pytest.raises(ValueError):
        server_config(codes)


def test_the_configuration_does_not_depend_on_the_order_of_the_agencies() -> None:
    assert server_config(CODES) == server_config(reversed(CODES))


def test_a_projector_creates_fetches_and_deletes_only_its_own_consumers() -> None:
    """Issue #16, ADR 28 section 2.1: a projector's consumer subjects all name its durable
    ``cbcm-<name>`` or its rebuild's ``cbcm-<name>-rebuild`` (made on the filtered create
    subject only); no unnamed create, no flow control; the notifier does not rebuild."""
    users = {u.name: u for u in network_users(CODES)}
    for name in ("inbox", "assistance", "stats", "register", "notify"):
        user = users[f"project-{name}"]
        consumers = [s for s in user.publish if s.startswith(("$JS.API.CONSUMER.", "$JS.ACK."))]
        own = (f".cbcm-{name}", f".cbcm-{name}-rebuild")
        assert all(any(f"{o}." in s + "." for o in own) for s in consumers), consumers
        assert not any(s.startswith("$JS.FC.") for s in user.publish)
        assert "$JS.API.CONSUMER.CREATE.CBCM_EVENTS" not in user.publish
        rebuild = [s for s in consumers if f".cbcm-{name}-rebuild" in s]
        if name == "notify":
            assert rebuild == []
        else:
            assert sorted(rebuild) == [
                f"$JS.API.CONSUMER.CREATE.CBCM_EVENTS.cbcm-{name}-rebuild.cbcm.v1.evt.>",
                f"$JS.API.CONSUMER.DELETE.CBCM_EVENTS.cbcm-{name}-rebuild",
                f"$JS.API.CONSUMER.MSG.NEXT.CBCM_EVENTS.cbcm-{name}-rebuild",
            ]
