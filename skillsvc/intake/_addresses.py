"""Which network addresses a URL fetch may connect to, and how host names are resolved.

A package URL is supplied by a caller and must not become a way to reach the service's
own network (SSRF): the loopback interface, the cloud metadata endpoint
(``169.254.169.254``), private ranges, and the IPv6 forms that smuggle one of those
inside an IPv6 address (IPv4-mapped ``::ffff:a.b.c.d``, NAT64 ``64:ff9b::/96``, 6to4
``2002::/16``, Teredo). :func:`is_forbidden_address` is the single test; the fetcher
applies it to every address a host name resolves to, right before connecting.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Awaitable, Callable, Sequence
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_address
from typing import Final, TypeAlias

IPAddress: TypeAlias = IPv4Address | IPv6Address
"""An IPv4 or IPv6 address."""

Resolver: TypeAlias = Callable[[str, int], Awaitable[Sequence[IPAddress]]]
"""Resolves ``(host, port)`` to the addresses to connect to; raises ``OSError`` on failure."""

_SHARED: Final = IPv4Network("100.64.0.0/10")  # RFC 6598 carrier-grade NAT
_NAT64_WELL_KNOWN: Final = IPv6Network("64:ff9b::/96")  # RFC 6052, embeds an IPv4 address
_NAT64_LOCAL: Final = IPv6Network("64:ff9b:1::/48")  # RFC 8215, local-use translation
_IPV4_COMPATIBLE: Final = IPv6Network("::/96")  # RFC 4291 deprecated ::a.b.c.d (and ::, ::1)


def is_forbidden_address(address: IPAddress) -> bool:
    """True if a fetch must not connect to ``address`` (unless private addresses are allowed).

    Only globally routable unicast addresses pass. IPv6 addresses that embed an IPv4
    address are judged by the embedded address, so ``::ffff:127.0.0.1`` is loopback.
    """
    return forbidden_reason(address) is not None


def forbidden_reason(address: IPAddress) -> str | None:
    """Why ``address`` is forbidden (e.g. ``"loopback"``), or None if it is public."""
    if isinstance(address, IPv6Address):
        embedded = _embedded_ipv4(address)
        if embedded is not None:
            kind, inner = embedded
            why = forbidden_reason(inner)
            return None if why is None else f"{kind} {why}"
        if address.teredo is not None:
            return "Teredo tunnel"
        if address in _NAT64_LOCAL:
            return "local-use NAT64"
        if address.is_site_local:
            return "site-local"
    # Specific labels first: ``is_private`` covers loopback and link-local too.
    if address.is_unspecified:
        return "unspecified"
    if address.is_loopback:
        return "loopback"
    if address.is_link_local:
        return "link-local"
    if address.is_multicast:
        # ``is_global`` is true for global-scope multicast, so test it explicitly.
        return "multicast"
    if isinstance(address, IPv4Address) and address in _SHARED:
        return "shared (carrier-grade NAT)"
    if address.is_private:
        return "private"
    if address.is_reserved:
        return "reserved"
    if not address.is_global:
        return "non-global"
    return None


def _embedded_ipv4(address: IPv6Address) -> tuple[str, IPv4Address] | None:
    """The IPv4 address an IPv6 address stands for, with the name of the mapping."""
    if address.ipv4_mapped is not None:
        return "IPv4-mapped", address.ipv4_mapped
    if address in _NAT64_WELL_KNOWN:
        return "NAT64", IPv4Address(int(address) & 0xFFFF_FFFF)
    if address.sixtofour is not None:
        return "6to4", address.sixtofour
    if address in _IPV4_COMPATIBLE and int(address) > 1:
        # ``::`` and ``::1`` are themselves (unspecified, loopback); the rest of ::/96
        # is the deprecated IPv4-compatible form, which some stacks still route.
        return "IPv4-compatible", IPv4Address(int(address))
    return None


async def system_resolver(host: str, port: int) -> list[IPAddress]:
    """Resolve ``host`` with the operating system's resolver, without blocking the loop.

    Returns each distinct address once, in the resolver's order. Numeric forms the C
    library accepts (``2130706433``, ``0x7f.1``) come back as the address they mean.
    """
    loop = asyncio.get_running_loop()
    infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP)
    addresses: list[IPAddress] = []
    for family, _type, _proto, _canonname, sockaddr in infos:
        if family not in (socket.AF_INET, socket.AF_INET6):
            continue
        address = ip_address(sockaddr[0])
        if address not in addresses:
            addresses.append(address)
    return addresses


def in_networks(address: IPAddress, networks: frozenset[IPv4Network | IPv6Network]) -> bool:
    """True if ``address`` (or the IPv4 address it maps) lies in one of ``networks``."""
    candidates: list[IPAddress] = [address]
    if isinstance(address, IPv6Address) and address.ipv4_mapped is not None:
        candidates.append(address.ipv4_mapped)
    return any(
        candidate.version == network.version and candidate in network
        for candidate in candidates
        for network in networks
    )
