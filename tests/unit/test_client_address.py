"""Who the client is behind proxies (issue #16): ``X-Forwarded-For`` is read only from a
listed proxy, right to left, and the first address no listed proxy wrote is the client."""

from __future__ import annotations

import ipaddress

import pytest

from services.api.edge import ClientAddress


async def _app(*_: object) -> None:  # never called: only ``client`` is exercised
    raise AssertionError


def walker(*proxies: str) -> ClientAddress:
    return ClientAddress(_app, [ipaddress.ip_network(p, strict=False) for p in proxies])


@pytest.mark.parametrize(
    ("peer", "forwarded", "client"),
    [
        # an unlisted peer is the client, whatever it forwards
        ("203.0.113.9", ["1.2.3.4"], "203.0.113.9"),
        # a listed proxy: the address it appended
        ("10.0.0.5", ["198.51.100.7"], "198.51.100.7"),
        # what the client wrote itself, left of it, is never reached
        ("10.0.0.5", ["6.6.6.6", "198.51.100.7"], "198.51.100.7"),
        # through a chain of listed proxies, the first address none of them is
        ("10.0.0.5", ["6.6.6.6", "198.51.100.7", "10.1.2.3"], "198.51.100.7"),
        # every hop a listed proxy: the left-most
        ("10.0.0.5", ["10.1.0.1", "10.1.2.3"], "10.1.0.1"),
        # an unreadable entry stops the walk at the last proxy, which counts as the client
        ("10.0.0.5", ["198.51.100.7", "not-an-address"], "10.0.0.5"),
        # ports and brackets, as some proxies write them, are not part of the key
        ("10.0.0.5", ["198.51.100.7:4711"], "198.51.100.7"),
        ("10.0.0.5", ["[2001:db8::7]:4711"], "2001:db8::7"),
        # an IPv4-mapped IPv6 peer is its IPv4 address
        ("::ffff:10.0.0.5", ["198.51.100.7"], "198.51.100.7"),
    ],
)
def test_the_client_is_the_first_address_no_listed_proxy_wrote(
    peer: str, forwarded: list[str], client: str
) -> None:
    assert walker("10.0.0.5", "10.1.0.0/16").client(peer, forwarded) == client


async def test_with_no_proxy_listed_the_header_changes_nothing() -> None:
    seen: list[object] = []

    async def app(scope: dict[str, object], *_: object) -> None:
        seen.append(scope["client"])

    middleware = ClientAddress(app, [])  # type: ignore[arg-type]
    scope = {
        "type": "http",
        "client": ("127.0.0.1", 5000),
        "headers": [(b"x-forwarded-for", b"198.51.100.7")],
    }
    await middleware(scope, None, None)  # type: ignore[arg-type]
    assert seen == [("127.0.0.1", 5000)]
