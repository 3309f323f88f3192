"""Table tests of which addresses a fetch may connect to (no network involved)."""

from __future__ import annotations

from ipaddress import ip_address, ip_network

import pytest

from skillsvc.intake import forbidden_reason, is_forbidden_address
from skillsvc.intake._addresses import in_networks

FORBIDDEN = {
    "127.0.0.1": "loopback",
    "127.255.255.254": "loopback",
    "0.0.0.0": "unspecified",
    "0.1.2.3": "private",  # "this network"
    "10.0.0.1": "private",
    "172.16.5.4": "private",
    "192.168.1.1": "private",
    "169.254.169.254": "link-local",  # cloud metadata
    "100.64.0.1": "shared (carrier-grade NAT)",
    "100.127.255.254": "shared (carrier-grade NAT)",
    "224.0.0.1": "multicast",
    "239.255.255.250": "multicast",
    "240.0.0.1": "private",
    "255.255.255.255": "private",
    "192.0.2.1": "private",  # TEST-NET-1
    "198.18.0.1": "private",  # benchmarking
    "::": "unspecified",
    "::1": "loopback",
    "fe80::1": "link-local",
    "fe80::1%1": "link-local",
    "fc00::1": "private",
    "fd12:3456::1": "private",
    "fec0::1": "site-local",
    "ff02::1": "multicast",
    "ff0e::1": "multicast",  # global scope, yet not a unicast peer
    "2001:db8::1": "private",  # documentation
    "::ffff:127.0.0.1": "IPv4-mapped loopback",
    "::ffff:10.1.2.3": "IPv4-mapped private",
    "::ffff:169.254.169.254": "IPv4-mapped link-local",
    "::127.0.0.1": "IPv4-compatible loopback",
    "64:ff9b::7f00:1": "NAT64 loopback",
    "64:ff9b::a9fe:a9fe": "NAT64 link-local",
    "64:ff9b:1::1": "local-use NAT64",
    "2002:7f00:1::1": "6to4 loopback",
    "2002:a00:1::1": "6to4 private",
    "2001:0:4136:e378:8000:63bf:3fff:fdd2": "Teredo tunnel",
}

PUBLIC = [
    "8.8.8.8",
    "1.1.1.1",
    "93.184.215.14",
    "100.63.255.255",  # just below 100.64/10
    "100.128.0.1",  # just above it
    "2606:4700:4700::1111",
    "2a00:1450:4001::200e",
    "::ffff:8.8.8.8",
    "64:ff9b::808:808",  # NAT64 of a public address
    "2002:808:808::1",  # 6to4 of a public address
]


@pytest.mark.parametrize(("address", "reason"), FORBIDDEN.items())
def test_forbidden_addresses(address: str, reason: str) -> None:
    ip = ip_address(address)
    assert is_forbidden_address(ip)
    assert forbidden_reason(ip) == reason


@pytest.mark.parametrize("address", PUBLIC)
def test_public_addresses(address: str) -> None:
    ip = ip_address(address)
    assert not is_forbidden_address(ip)
    assert forbidden_reason(ip) is None


def test_allowed_networks_match_mapped_addresses() -> None:
    networks = frozenset({ip_network("10.1.2.0/24")})
    assert in_networks(ip_address("10.1.2.3"), networks)
    assert in_networks(ip_address("::ffff:10.1.2.3"), networks)
    assert not in_networks(ip_address("10.1.3.3"), networks)
    assert not in_networks(ip_address("::1"), networks)
