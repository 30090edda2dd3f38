"""The deliverer connects to exactly the address it checked (DNS rebinding, issue #19).

A registered ``https://`` URL names a host; the deliverer must never be turned against the
network's own services (loopback, private, link-local such as a cloud's metadata service,
reserved). Checking the name's addresses and then letting the HTTP client resolve it again
leaves a gap: a resolver under an attacker's control (a short TTL, or a server that answers
differently each time) gives a public address to the check and an internal one to the
client's connect. So the check and the connect are one step, in the client's own transport:
``PinnedBackend`` is an httpcore network backend (the extension point httpcore offers for
this: ``AsyncConnectionPool(network_backend=...)``; httpx has no resolver hook of its own) whose
``connect_tcp`` resolves the name once, refuses the connection if any address is not allowed,
and opens the TCP connection to one of those very addresses. TLS is then started by httpcore
on that stream with the URL's name as ``server_hostname``: SNI and the certificate check are
against the name, and the ``Host`` header is the URL's, as before.

Allowed: a global address; a loopback address only when the URL names it literally or as
``localhost`` (the registration allows ``http://`` there only, for a receiver on the same
machine). A name that resolves to a loopback address is refused like any internal one.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import ssl
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, Final

import httpcore
import httpx

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Resolver = Callable[[str, int], Awaitable[list[IPAddress]]]
"""``(host, port) -> addresses``: the system's resolver in production, a test's own DNS
server in the tests."""


class AddressNotAllowed(Exception):
    """The endpoint's host is, or resolves to, an address the deliverer must not reach."""


async def system_resolver(host: str, port: int) -> list[IPAddress]:
    """The addresses the operating system's resolver gives (``getaddrinfo``, as httpcore
    would have asked it), in its order of preference, without repeats."""
    found = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    addresses: list[IPAddress] = []
    for *_, sockaddr in found:
        address = ipaddress.ip_address(str(sockaddr[0]).split("%")[0])
        if address not in addresses:
            addresses.append(address)
    return addresses


_EMBEDDING: Final = (
    ipaddress.IPv6Network("::/96"),  # IPv4-compatible (deprecated): ::7f00:1 is 127.0.0.1
    ipaddress.IPv6Network("64:ff9b::/96"),  # NAT64 (RFC 6052): the last 32 bits are IPv4
    ipaddress.IPv6Network("64:ff9b:1::/48"),  # local-use NAT64 (RFC 8215)
)
_NEVER: Final = (ipaddress.IPv6Network("fec0::/10"),)  # site-local (deprecated, still routed)


def _unmapped(address: IPAddress) -> IPAddress:
    """The IPv4 address an IPv6 one carries (mapped, compatible, NAT64, 6to4), else itself:
    a resolver's ``::7f00:1`` or ``2002:7f00:1::`` must be judged as the 127.0.0.1 inside."""
    if not isinstance(address, ipaddress.IPv6Address):
        return address
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if address.is_loopback or address.is_unspecified:  # ::1 and :: are themselves
        return address
    if any(address in network for network in _EMBEDDING):
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return address


def _literal(host: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None


def allowed(address: IPAddress, host: str) -> bool:
    """Whether the deliverer may connect to ``address`` for a URL naming ``host``."""
    if any(address in network for network in _NEVER):
        return False
    address = _unmapped(address)
    if address.is_global:
        return True
    literal = _literal(host)
    named_loopback = host == "localhost" or (literal is not None and literal.is_loopback)
    return address.is_loopback and named_loopback


async def checked_addresses(host: str, port: int, resolver: Resolver) -> list[IPAddress]:
    """The addresses to connect to for ``host``: its literal address, or what ``resolver``
    answers, once; ``AddressNotAllowed`` if any of them is not allowed (a name with one
    internal address among public ones is refused whole)."""
    literal = _literal(host)
    addresses = [literal] if literal is not None else await resolver(host, port)
    if not addresses:
        raise httpcore.ConnectError(f"no address for {host}")
    if not all(allowed(a, host) for a in addresses):
        raise AddressNotAllowed(host)
    return addresses


class PinnedBackend(httpcore.AsyncNetworkBackend):
    """httpcore's network backend with the check in ``connect_tcp`` (see the module)."""

    def __init__(
        self,
        resolver: Resolver = system_resolver,
        dialer: httpcore.AsyncNetworkBackend | None = None,
    ) -> None:
        self._resolver = resolver
        self._dialer: httpcore.AsyncNetworkBackend = dialer or httpcore.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,  # noqa: ASYNC109 - httpcore's interface
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        try:
            async with asyncio.timeout(timeout):
                addresses = await checked_addresses(host, port, self._resolver)
        except TimeoutError:
            raise httpcore.ConnectTimeout(f"resolving {host}") from None
        except OSError as e:  # the name does not resolve
            raise httpcore.ConnectError(type(e).__name__) from None
        last: Exception | None = None
        for address in addresses:  # each a checked one, in the resolver's order
            try:
                return await self._dialer.connect_tcp(
                    str(address),
                    port,
                    timeout=timeout,
                    local_address=local_address,
                    socket_options=socket_options,
                )
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as e:
                last = e
        assert last is not None
        raise last

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,  # noqa: ASYNC109 - httpcore's interface
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        raise AddressNotAllowed("a unix socket")

    async def sleep(self, seconds: float) -> None:
        await self._dialer.sleep(seconds)


class PinnedTransport(httpx.AsyncHTTPTransport):
    """httpx's own transport (its request and error mapping), on a connection pool whose
    network backend is ``PinnedBackend``. No proxy (a proxy would connect for us); the
    certificate authorities httpx trusts by default (certifi's), or ``verify``."""

    def __init__(self, backend: PinnedBackend, *, verify: ssl.SSLContext | None = None) -> None:
        limits = httpx.Limits(max_connections=100, max_keepalive_connections=20)
        super().__init__(trust_env=False, limits=limits)
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=verify or httpx.create_ssl_context(trust_env=False),
            max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry,
            network_backend=backend,
        )
