"""Webhook endpoints (issue #19): who may register what, which events each endpoint receives
(the agency's own, as its NATS account), and the Standard Webhooks signature checked by a
verification written here from the specification, not by the package that signs."""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
import secrets
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from uuid import uuid4

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from contracts.catalogue import MESSAGE_TYPES
from contracts.envelope import parse_message_type
from domain.errors import ActionNotPermitted, InvalidCommand, UnknownAgency
from domain.network import Network
from domain.webhooks import (
    DisableReason,
    WebhookEndpoint,
    WebhookRegistry,
    WebhookSecret,
    check_url,
    webhook_endpoint_id,
    webhook_secret_id,
)
from services.application.webhooks import AGENCY_EVENT_TYPES, check_event_types
from services.nats.config import agency_nats_user
from services.webhooks.deliverer import DeliveryPolicy
from services.webhooks.pinning import (
    AddressNotAllowed,
    IPAddress,
    allowed,
    checked_addresses,
    system_resolver,
)
from services.webhooks.routing import recipients, subject_matches
from services.webhooks.signing import CONTENT_TYPE, signed_headers
from tests.conftest import T0
from tests.world import AGENCIES, COORDINATOR, FOCAL_POINT

RECEIVED = "org.psea.cbcm.case.received.v1"


def secret() -> str:
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()


def registry_with(network: Network, agency: str = "unhcr") -> WebhookRegistry:
    registry = WebhookRegistry.start(at=T0)
    registry.register(
        network,
        actor=COORDINATOR,
        agency=agency,
        url="https://cfm.example.org/hook",
        secret=secret(),
        event_types=(RECEIVED,),
        at=T0,
    )
    return registry


# ------------------------------------------------------------------ the registry's rules


def test_only_the_coordinator_registers_an_endpoint(network: Network) -> None:
    registry = WebhookRegistry.start(at=T0)
    with pytest.raises(ActionNotPermitted):
        registry.register(
            network,
            actor=FOCAL_POINT,
            agency="unhcr",
            url="https://cfm.example.org/hook",
            secret=secret(),
            event_types=(RECEIVED,),
            at=T0,
        )


def test_an_endpoint_belongs_to_a_member_agency(network: Network) -> None:
    with pytest.raises(UnknownAgency):
        registry_with(network, agency="not-a-member")


@pytest.mark.parametrize(
    "url",
    [
        "http://cfm.example.org/hook",  # plain HTTP off the machine
        "ftp://cfm.example.org/hook",
        "https://user:pw@cfm.example.org/hook",  # a password would sit in the log
        "https:///hook",
        "https://cfm.example.org/hook#frag",
        "https://cfm.example.org:99999/hook",
        "https://cfm.example.org/ho ok",
    ],
)
def test_an_endpoint_url_is_https_or_loopback_http_without_credentials(
    network: Network, url: str
) -> None:
    registry = WebhookRegistry.start(at=T0)
    with pytest.raises(InvalidCommand):
        registry.register(
            network,
            actor=COORDINATOR,
            agency="unhcr",
            url=url,
            secret=secret(),
            event_types=(RECEIVED,),
            at=T0,
        )


@pytest.mark.parametrize(
    "given_secret",
    [
        "hunter2",
        "whsec_",
        "whsec_" + base64.b64encode(b"short").decode(),
        "whsec_" + base64.b64encode(b"x" * 65).decode(),
        "whsec_not base64!",
    ],
)
def test_a_secret_is_standard_webhooks_base64_of_24_to_64_bytes(
    network: Network, given_secret: str
) -> None:
    registry = WebhookRegistry.start(at=T0)
    with pytest.raises(InvalidCommand) as refused:
        registry.register(
            network,
            actor=COORDINATOR,
            agency="unhcr",
            url="https://cfm.example.org/hook",
            secret=given_secret,
            event_types=(RECEIVED,),
            at=T0,
        )
    assert given_secret not in str(refused.value) or given_secret == "whsec_"


def test_the_endpoint_id_is_derived_from_the_registrations_version(network: Network) -> None:
    registry = registry_with(network)
    (endpoint,) = registry.endpoints.values()
    assert endpoint.registered_version == registry.version == 2
    assert endpoint.endpoint_id == webhook_endpoint_id(registry.version)
    assert endpoint.secret is None  # the registry holds no secret: its WebhookSecret does
    given = secret()
    assert given not in repr(replace(endpoint, secret=given))  # never in a log line
    kept = WebhookSecret.keep(endpoint_id=endpoint.endpoint_id, secret=given, at=T0)
    assert kept.id == webhook_secret_id(endpoint.endpoint_id) and given not in repr(kept)


def test_an_endpoint_is_disabled_for_failing_only_after_the_limit(network: Network) -> None:
    registry = registry_with(network)
    (endpoint_id,) = registry.endpoints
    since = T0 + timedelta(hours=1)
    limit = timedelta(days=5)
    with pytest.raises(InvalidCommand):
        registry.disable_failing(
            endpoint_id=endpoint_id, failing_since=since, limit=limit, at=since + limit / 2
        )
    registry.disable_failing(
        endpoint_id=endpoint_id, failing_since=since, limit=limit, at=since + limit
    )
    disabled = registry.endpoints[endpoint_id]
    assert not disabled.enabled and disabled.disabled_reason is DisableReason.FAILING
    event = registry.collect_events()[-1]
    assert isinstance(event, WebhookRegistry.EndpointDisabled) and event.actor is None
    registry.enable(actor=COORDINATOR, endpoint_id=endpoint_id, at=since + limit * 2)
    assert registry.endpoints[endpoint_id].enabled


def test_network_events_cannot_be_registered_for_an_agency() -> None:
    network_types = [n for n in MESSAGE_TYPES if parse_message_type(n).aggregate == "network"]
    assert network_types
    for name in network_types:
        with pytest.raises(InvalidCommand):
            check_event_types((RECEIVED, name))
    with pytest.raises(InvalidCommand):
        check_event_types(("org.psea.cbcm.case.invented.v1",))


# ------------------------------------------------------------------ need-to-know


def endpoint(agency: str, types: frozenset[str]) -> WebhookEndpoint:
    return WebhookEndpoint(uuid4(), agency, "https://x.example/h", secret(), types, 2)


CODES = st.sampled_from([*AGENCIES, "unhcr-2", "un", "network", "wfp_b"])
TOKENS = st.text(alphabet="abcdefghijklmnopqrstuvwxyz_-", min_size=1, max_size=12)


REGISTRATION = st.tuples(
    CODES,  # the endpoint's agency
    st.frozensets(st.sampled_from(sorted(MESSAGE_TYPES)), min_size=1),  # any types at all
    st.integers(0, 50),  # its registration position
)


@settings(max_examples=200)
@given(
    registrations=st.lists(REGISTRATION, min_size=1, max_size=8),
    publisher=CODES,
    aggregate=TOKENS,
    event=TOKENS,
    data=st.data(),
    position=st.integers(1, 60),
)
def test_no_registration_makes_an_endpoint_receive_another_agencys_event(
    registrations: list[tuple[str, frozenset[str], int]],
    publisher: str,
    aggregate: str,
    event: str,
    data: st.DataObject,
    position: int,
) -> None:
    """Whatever endpoints are registered, for whichever agencies and types (even every type,
    even the network's), a message published on agency B's subject is queued for B's
    endpoints only, only if registered for its type and before it; and nothing is queued
    that the agency's own NATS account could not read."""
    registered = sorted(set().union(*(types for _, types, _ in registrations)))
    # mostly a type someone registered: the case where the agency check alone must hold
    message_type = data.draw(st.sampled_from(registered) | st.sampled_from(sorted(MESSAGE_TYPES)))
    endpoints = [endpoint(agency, types) for agency, types, _ in registrations]
    since = {e.endpoint_id: at for e, (_, _, at) in zip(endpoints, registrations, strict=True)}
    subject = f"cbcm.v1.evt.{publisher}.{aggregate}.{event}"
    queued = set(recipients(endpoints, since, subject, message_type, position))
    for e in endpoints:
        expected = (
            e.agency == publisher
            and message_type in e.event_types
            and position > since[e.endpoint_id]
        )
        assert (e.endpoint_id in queued) == expected
        if e.endpoint_id in queued and e.agency != "network":
            grants = agency_nats_user(e.agency).receive
            assert any(subject_matches(grant, subject) for grant in grants)


@given(
    pattern=st.lists(TOKENS | st.just("*"), min_size=1, max_size=5),
    tail=st.booleans(),
    subject=st.lists(TOKENS, min_size=1, max_size=6),
)
def test_subject_matching_is_natss(pattern: list[str], tail: bool, subject: list[str]) -> None:
    """Checked against a definition written differently: token by token, '>' the rest."""
    full = ".".join(pattern + ([">"] if tail else []))
    expected = (len(subject) > len(pattern) if tail else len(subject) == len(pattern)) and all(
        p in ("*", s) for p, s in zip(pattern, subject, strict=False)
    )
    assert subject_matches(full, ".".join(subject)) == expected


# ------------------------------------------------------------------ signatures, from the spec


def verify_from_the_spec(
    secret_text: str, headers: dict[str, str], body: bytes, now: datetime
) -> bool:
    """Standard Webhooks, section "Verifying webhooks": HMAC-SHA256 keyed with the base64
    bytes after ``whsec_``, over ``id.timestamp.body``; any ``v1,`` signature of the
    space-separated list may match; the timestamp within five minutes of now."""
    key = base64.b64decode(secret_text.removeprefix("whsec_"))
    timestamp = int(headers["webhook-timestamp"])
    if abs(now.timestamp() - timestamp) > 300:
        return False
    signed = f"{headers['webhook-id']}.{timestamp}.".encode() + body
    expected = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
    return any(
        version == "v1" and hmac.compare_digest(given, expected)
        for version, _, given in (s.partition(",") for s in headers["webhook-signature"].split())
    )


BODY = b'{"specversion":"1.0","id":"7c1e:1","type":"org.psea.cbcm.case.received.v1"}'


def test_a_delivery_is_signed_as_standard_webhooks_say() -> None:
    key = secret()
    at = datetime.now(UTC)
    headers = signed_headers(key, "7c1e:1", at, BODY)
    assert headers["content-type"] == CONTENT_TYPE == "application/cloudevents+json"
    assert headers["webhook-id"] == "7c1e:1"
    assert headers["webhook-timestamp"] == str(int(at.timestamp()))
    assert verify_from_the_spec(key, headers, BODY, at)


def test_a_delivery_signed_at_another_zone_carries_the_same_instant() -> None:
    key = secret()
    at = datetime.now(UTC)
    elsewhere = at.astimezone(__import__("datetime").timezone(timedelta(hours=3)))
    assert signed_headers(key, "a:1", elsewhere, BODY) == signed_headers(key, "a:1", at, BODY)


@pytest.mark.parametrize("forgery", ["body", "id", "timestamp", "secret", "old", "version"])
def test_a_forged_or_replayed_delivery_does_not_verify(forgery: str) -> None:
    key = secret()
    at = datetime.now(UTC)
    headers = signed_headers(key, "7c1e:1", at, BODY)
    body = BODY
    now = at
    if forgery == "body":
        body = BODY.replace(b"received", b"closed")
    elif forgery == "id":
        headers["webhook-id"] = "7c1e:2"
    elif forgery == "timestamp":
        headers["webhook-timestamp"] = str(int(at.timestamp()) + 60)
    elif forgery == "secret":
        headers = signed_headers(secret(), "7c1e:1", at, BODY)
    elif forgery == "old":  # a captured delivery replayed ten minutes later
        now = at + timedelta(minutes=10)
    else:
        headers["webhook-signature"] = headers["webhook-signature"].replace("v1,", "v2,")
    assert not verify_from_the_spec(key, headers, body, now)


def test_retries_wait_longer_each_time_up_to_the_most() -> None:
    policy = DeliveryPolicy(retry_first=timedelta(seconds=5), retry_most=timedelta(minutes=1))
    waits = [policy.wait_after(n).total_seconds() for n in range(1, 8)]
    assert waits == [5, 10, 20, 40, 60, 60, 60]
    assert policy.wait_after(10_000) == timedelta(minutes=1)


def test_every_agency_event_type_is_an_event_of_cases_referrals_feedback_or_prevention() -> None:
    assert AGENCY_EVENT_TYPES
    assert {parse_message_type(n).aggregate for n in AGENCY_EVENT_TYPES} == {
        "case",
        "assistance_referral",
        "feedback",
        # an agency's own prevention records (issue #22); the work plan and the prevention
        # policy travel under the network
        "training_session",
        "awareness_activity",
        "focal_point_readiness",
        "risk_assessment",
    }


def test_after_a_rotation_a_delivery_verifies_with_either_secret() -> None:
    old, new = secret(), secret()
    at = datetime.now(UTC)
    headers = signed_headers(new, "7c1e:1", at, BODY, also=old)
    assert len(headers["webhook-signature"].split()) == 2
    assert verify_from_the_spec(new, headers, BODY, at)
    assert verify_from_the_spec(old, headers, BODY, at)
    assert not verify_from_the_spec(secret(), headers, BODY, at)


def test_a_rotation_keeps_the_old_secret_for_the_overlap(network: Network) -> None:
    registry = registry_with(network)
    (endpoint_id,) = registry.endpoints
    first, new = secret(), secret()
    kept = WebhookSecret.keep(endpoint_id=endpoint_id, secret=first, at=T0)
    registry.rotate_secret(actor=COORDINATOR, endpoint_id=endpoint_id, secret=new, at=T0)
    kept.rotate(secret=new, at=T0)
    rotated = registry.endpoints[endpoint_id]
    assert rotated.rotated_at == T0 and rotated.secret_version == 2
    assert rotated.secret is None and rotated.previous_secret is None
    assert (kept.secret, kept.previous) == (new, first)
    # removed, the coordinator erases it: gone from the record, and no rotation after
    with pytest.raises(ActionNotPermitted):
        kept.erase(actor=FOCAL_POINT, at=T0)
    kept.erase(actor=COORDINATOR, at=T0)
    assert (kept.secret, kept.previous, kept.erased) == (None, None, True)
    with pytest.raises(InvalidCommand):
        kept.rotate(secret=secret(), at=T0)


@pytest.mark.parametrize(
    "url",
    [
        "https://169.254.169.254/latest/meta-data/",
        "https://10.0.0.5:8443/admin",
        "https://[::ffff:127.0.0.1]:5432/",
        "https://127.0.0.1/hook",
        "https://0.0.0.0:22/",
        "https://metadata.google.internal/computeMetadata/v1/",
    ],
)
def test_a_webhook_url_naming_an_internal_address_is_refused(url: str) -> None:
    """Attack review of #19 (F4): the deliverer was a blind SSRF for whoever registers."""
    with pytest.raises(InvalidCommand):
        check_url(url)


@pytest.mark.parametrize(
    "host",
    ["2130706433", "[::ffff:10.1.2.3]", "::ffff:127.0.0.1", "169.254.169.254", "localtest.invalid"],
)
async def test_the_deliverer_refuses_a_host_that_resolves_to_an_internal_address(host: str) -> None:
    # 2130706433 is 127.0.0.1 written as one number: only resolving it tells
    if host.endswith(".invalid"):  # no answer from DNS: the client's own error says why
        with pytest.raises(OSError):
            await checked_addresses(host, 443, system_resolver)
        return
    with pytest.raises(AddressNotAllowed):
        await checked_addresses(host, 443, system_resolver)


async def test_the_deliverer_connects_to_public_and_literal_loopback_addresses() -> None:
    public = ipaddress.ip_address("93.184.216.34")
    assert await checked_addresses("93.184.216.34", 443, system_resolver) == [public]
    # http:// on loopback is what the registration allows, named literally or as localhost
    assert await checked_addresses("127.0.0.1", 9, system_resolver) == [
        ipaddress.ip_address("127.0.0.1")
    ]
    assert all(a.is_loopback for a in await checked_addresses("localhost", 9, system_resolver))

    async def rebinding(host: str, port: int) -> list[IPAddress]:
        return [public, ipaddress.ip_address("10.0.0.7")]

    # a name with one internal address among public ones is refused whole
    with pytest.raises(AddressNotAllowed):
        await checked_addresses("hooks.example", 443, rebinding)


@given(st.one_of(st.ip_addresses(v=4), st.ip_addresses(v=6)))
async def test_no_address_the_registration_refuses_for_https_is_dialled_by_the_deliverer(
    address: IPAddress,
) -> None:
    """Whatever address a name resolves to, or a URL names: the deliverer dials it only if it
    is public, or loopback named as such (what http:// on loopback registers), never a
    private, link-local or reserved one, mapped into IPv6 or not."""
    host = f"[{address}]" if address.version == 6 else str(address)

    async def answers(_host: str, _port: int) -> list[IPAddress]:
        return [address]

    unmapped = address.ipv4_mapped if isinstance(address, ipaddress.IPv6Address) else None
    public = (unmapped or address).is_global
    try:
        await checked_addresses("hooks.example", 443, answers)
        by_name = True
    except AddressNotAllowed:
        by_name = False
    # IPv6 forms that embed an IPv4 address are judged by the address inside (the test below)
    embedding = isinstance(address, ipaddress.IPv6Address) and any(
        address in ipaddress.IPv6Network(n)
        for n in ("::/96", "64:ff9b::/96", "64:ff9b:1::/48", "2002::/16", "fec0::/10")
    )
    if embedding:
        assert by_name <= public  # never more than the global ones
    else:
        assert by_name == public  # a name never leads to loopback or anything internal
    try:
        await checked_addresses(host, 443, answers)
        literally = True
    except AddressNotAllowed:
        literally = False
    if not embedding:
        assert literally == (public or address.is_loopback)
    if literally and not public:  # loopback: only http:// registers there, never https://
        with pytest.raises(InvalidCommand):
            check_url(f"https://{host}/hook")


# Attack (review of #19): '☃.net' was registered, and the deliverer's client refused to
# build a request to it (httpx.InvalidURL, not an HTTPError): the endpoint was never tried,
# never disabled for failing, and nobody was told. Whatever the register accepts, the
# deliverer's client can send to.
@settings(max_examples=300)
@given(
    host=st.one_of(
        st.text(min_size=1, max_size=40),
        st.from_regex(r"[a-zA-Z0-9\-_.%~☃é]{1,30}\.[a-z]{2,6}", fullmatch=True),
        st.sampled_from(["☃.net", "xn--n3h.net", "a_b.example.org", "-a.example", "a..b"]),
    )
)
def test_every_url_the_register_accepts_is_one_the_deliverer_can_send_to(host: str) -> None:
    url = f"https://{host}/hook"
    try:
        check_url(url)
    except InvalidCommand:
        return
    httpx.URL(url)  # raises InvalidURL for what the client cannot send


def test_an_internationalised_host_is_registered_in_its_xn_form() -> None:
    assert check_url("https://xn--n3h.net/hook") == "https://xn--n3h.net/hook"
    with pytest.raises(InvalidCommand, match="xn-- form"):
        check_url("https://☃.net/hook")


# Attack (review of #19): IPv6 forms that carry an internal IPv4 address passed ``is_global``
# on Python 3.11: IPv4-compatible, NAT64, 6to4, and the deprecated site-local prefix.
@pytest.mark.parametrize(
    "address",
    [
        "::7f00:1",
        "64:ff9b::7f00:1",
        "64:ff9b::a9fe:a9fe",
        "2002:7f00:1::",
        "2002:a9fe:a9fe::1",
        "fec0::1",
        "64:ff9b:1::a00:1",
    ],
)
def test_ipv6_forms_of_internal_addresses_are_not_dialled(address: str) -> None:
    assert not allowed(ipaddress.ip_address(address), "hooks.example.org")


def test_ipv6_forms_of_public_addresses_and_loopback_by_name_still_are() -> None:
    assert allowed(ipaddress.ip_address("64:ff9b::808:808"), "hooks.example.org")
    assert allowed(ipaddress.ip_address("2606:4700::1111"), "hooks.example.org")
    assert allowed(ipaddress.ip_address("::1"), "localhost")
