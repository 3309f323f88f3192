"""Tests of fetch_url against a loopback HTTP server: success, limits, deadlines,
redirects and the refusal of non-public addresses. No traffic leaves 127.0.0.1."""

from __future__ import annotations

import gzip
import hashlib
import os
import socket
from ipaddress import ip_address, ip_network
from pathlib import Path

import pytest

from skillsvc import __version__
from skillsvc.errors import FailedPrecondition, InvalidArgument, ResourceExhausted
from skillsvc.intake import IPAddress, UrlPolicy, fetch_url

from .conftest import FakeResolver, LocalServer, TlsFiles, redirect, respond, trickle

KIB = 1024
MIB = 1024 * KIB

LOOPBACK_OK = UrlPolicy(allow_private=True, timeout_seconds=5)
"""The local server is on loopback, so ordinary tests must allow private addresses."""
STRICT = UrlPolicy(timeout_seconds=5)
"""Production defaults (public addresses only), with a short deadline."""
STRICT_BUT_LOCAL_MIRROR = UrlPolicy(
    timeout_seconds=5, allowed_networks=frozenset({ip_network("127.0.0.1/32")})
)
"""Public addresses plus exactly 127.0.0.1, standing in for a public first hop."""


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# --- success ----------------------------------------------------------------------


@pytest.mark.parametrize("framing", ["length", "chunked", "close"])
async def test_fetch_stores_the_exact_bytes(
    server: LocalServer, staging: Path, framing: str
) -> None:
    body = os.urandom(700 * KIB + 3)
    server.routes["/pkg.zip"] = respond(body, framing=framing)
    calls: list[tuple[int, int | None]] = []
    path = staging / "download"

    spooled = await fetch_url(
        server.url("/pkg.zip?sig=secret"),
        path,
        max_bytes=MIB,
        policy=LOOPBACK_OK,
        progress=lambda done, total: calls.append((done, total)),
    )

    assert spooled.path == path
    assert spooled.size_bytes == len(body)
    assert spooled.sha256 == _digest(body)
    assert path.read_bytes() == body
    assert path.stat().st_mode & 0o777 == 0o600

    total = len(body) if framing == "length" else None
    assert calls[0] == (0, total)
    assert calls[-1] == (len(body), total)
    assert [done for done, _ in calls] == sorted(done for done, _ in calls)
    # Throttled: about one call per 256 KiB, plus the first and the last.
    assert len(calls) <= len(body) // (256 * KIB) + 2


async def test_request_headers_are_minimal(server: LocalServer, staging: Path) -> None:
    server.routes["/pkg.zip"] = respond(b"data")
    await fetch_url(server.url("/pkg.zip"), staging / "download", max_bytes=100, policy=LOOPBACK_OK)
    [request] = server.requests
    assert request.method == "GET"
    assert request.target == "/pkg.zip"
    assert request.headers["host"] == f"127.0.0.1:{server.port}"
    assert request.headers["user-agent"] == f"skillsvc/{__version__}"
    assert request.headers["accept-encoding"] == "identity"
    assert not {"cookie", "authorization", "proxy-authorization"} & request.headers.keys()


async def test_content_encoding_is_not_decoded(server: LocalServer, staging: Path) -> None:
    """A gzip-encoded body is stored as sent, so a compression bomb cannot expand."""
    raw = gzip.compress(b"\0" * (8 * MIB))
    server.routes["/bomb"] = respond(raw, headers=[("Content-Encoding", "gzip")])
    spooled = await fetch_url(
        server.url("/bomb"), staging / "download", max_bytes=MIB, policy=LOOPBACK_OK
    )
    assert spooled.size_bytes == len(raw) < MIB
    assert spooled.path.read_bytes() == raw


async def test_host_is_connected_by_its_vetted_address(server: LocalServer, staging: Path) -> None:
    """``mirror.test`` only exists in the injected resolver: the fetch connects to the
    address it resolved and vetted, and still names the host in ``Host``."""
    resolver = FakeResolver({"mirror.test": ["127.0.0.1"]})
    server.routes["/pkg.zip"] = respond(b"data")
    spooled = await fetch_url(
        server.url("/pkg.zip", host="mirror.test"),
        staging / "download",
        max_bytes=100,
        policy=STRICT_BUT_LOCAL_MIRROR,
        resolver=resolver,
    )
    assert spooled.sha256 == _digest(b"data")
    assert resolver.calls == ["mirror.test"]
    assert server.requests[0].headers["host"] == f"mirror.test:{server.port}"


async def test_https_verifies_the_certificate_against_the_host_name(
    tls_server: LocalServer, tls_files: TlsFiles, staging: Path
) -> None:
    """TLS goes to the vetted address but checks the certificate (and sends SNI) for
    the name in the URL."""
    tls_server.routes["/pkg.zip"] = respond(b"secure")
    policy = UrlPolicy(
        timeout_seconds=5,
        allowed_networks=frozenset({ip_network("127.0.0.1/32")}),
        ca_file=tls_files.cert,
    )
    resolver = FakeResolver({"mirror.test": ["127.0.0.1"], "other.test": ["127.0.0.1"]})

    spooled = await fetch_url(
        tls_server.url("/pkg.zip", host="mirror.test", scheme="https"),
        staging / "good",
        max_bytes=100,
        policy=policy,
        resolver=resolver,
    )
    assert spooled.path.read_bytes() == b"secure"

    with pytest.raises(FailedPrecondition) as caught:
        await fetch_url(
            tls_server.url("/pkg.zip", host="other.test", scheme="https"),
            staging / "bad",
            max_bytes=100,
            policy=policy,
            resolver=resolver,
        )
    assert caught.value.reason == "URL_FETCH_FAILED"
    assert "not valid for 'other.test'" in caught.value.message
    assert len(tls_server.requests) == 1  # the mismatched name never got to send one
    assert not (staging / "bad").exists()


async def test_redirects_within_the_limit_are_followed(server: LocalServer, staging: Path) -> None:
    resolver = FakeResolver({"a.test": ["127.0.0.1"], "b.test": ["127.0.0.1"]})
    server.routes["/start"] = redirect(server.url("/next", host="b.test"), status=301)
    server.routes["/next"] = redirect("/pkg.zip", status=307)  # relative Location
    server.routes["/pkg.zip"] = respond(b"data")
    policy = UrlPolicy(
        max_redirects=2, timeout_seconds=5, allowed_networks=frozenset({ip_network("127.0.0.1/32")})
    )
    spooled = await fetch_url(
        server.url("/start", host="a.test"),
        staging / "download",
        max_bytes=100,
        policy=policy,
        resolver=resolver,
    )
    assert spooled.path.read_bytes() == b"data"
    assert [r.target for r in server.requests] == ["/start", "/next", "/pkg.zip"]
    assert [r.headers["host"] for r in server.requests] == [
        f"a.test:{server.port}",
        f"b.test:{server.port}",
        f"b.test:{server.port}",
    ]
    # Every hop is resolved again when it connects.
    assert resolver.calls == ["a.test", "b.test", "b.test"]


# --- remote failures --------------------------------------------------------------


async def test_not_found_fails(server: LocalServer, staging: Path) -> None:
    path = staging / "download"
    with pytest.raises(FailedPrecondition) as caught:
        await fetch_url(server.url("/missing?token=abc"), path, max_bytes=100, policy=LOOPBACK_OK)
    assert caught.value.reason == "URL_FETCH_FAILED"
    assert "404" in caught.value.message
    assert caught.value.metadata["http_status"] == "404"
    assert "abc" not in caught.value.message  # query strings may hold secrets
    assert not path.exists()


async def test_oversize_content_length_is_refused_before_the_body(
    server: LocalServer, staging: Path
) -> None:
    server.routes["/big"] = respond(b"x" * 1000, content_length=10 * MIB)
    path = staging / "download"
    with pytest.raises(ResourceExhausted) as caught:
        await fetch_url(server.url("/big"), path, max_bytes=MIB, policy=LOOPBACK_OK)
    assert caught.value.reason == "TOO_LARGE"
    assert not path.exists()


@pytest.mark.parametrize("framing", ["chunked", "close"])
async def test_oversize_body_without_length_is_cut_off(
    server: LocalServer, staging: Path, framing: str
) -> None:
    server.routes["/big"] = respond(os.urandom(3 * MIB), framing=framing)
    path = staging / "download"
    with pytest.raises(ResourceExhausted) as caught:
        await fetch_url(server.url("/big"), path, max_bytes=MIB, policy=LOOPBACK_OK)
    assert caught.value.reason == "TOO_LARGE"
    assert not path.exists()


async def test_truncated_body_fails(server: LocalServer, staging: Path) -> None:
    server.routes["/short"] = respond(b"x" * 100, content_length=1000)
    path = staging / "download"
    with pytest.raises(FailedPrecondition) as caught:
        await fetch_url(server.url("/short"), path, max_bytes=MIB, policy=LOOPBACK_OK)
    assert caught.value.reason == "URL_FETCH_FAILED"
    assert not path.exists()


async def test_slow_body_hits_the_total_deadline(server: LocalServer, staging: Path) -> None:
    server.routes["/slow"] = trickle()
    path = staging / "download"
    policy = UrlPolicy(allow_private=True, timeout_seconds=0.5)
    with pytest.raises(FailedPrecondition) as caught:
        await fetch_url(server.url("/slow"), path, max_bytes=MIB, policy=policy)
    assert caught.value.reason == "URL_TIMEOUT"
    assert not path.exists()


async def test_connection_refused_fails(staging: Path) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(FailedPrecondition) as caught:
        await fetch_url(
            f"http://127.0.0.1:{port}/", staging / "download", max_bytes=100, policy=LOOPBACK_OK
        )
    assert caught.value.reason == "URL_FETCH_FAILED"


async def test_unresolvable_host_fails(staging: Path) -> None:
    with pytest.raises(FailedPrecondition) as caught:
        await fetch_url(
            "http://nowhere.test/pkg.zip",
            staging / "download",
            max_bytes=100,
            policy=STRICT,
            resolver=FakeResolver({}),
        )
    assert caught.value.reason == "URL_FETCH_FAILED"
    assert "nowhere.test" in caught.value.message
    assert list(staging.iterdir()) == []


async def test_too_many_redirects(server: LocalServer, staging: Path) -> None:
    server.routes["/loop"] = redirect("/loop")
    with pytest.raises(FailedPrecondition) as caught:
        await fetch_url(
            server.url("/loop"),
            staging / "download",
            max_bytes=100,
            policy=UrlPolicy(allow_private=True, max_redirects=3, timeout_seconds=5),
        )
    assert caught.value.reason == "TOO_MANY_REDIRECTS"
    assert len(server.requests) == 4  # the first request and three redirects
    assert list(staging.iterdir()) == []


async def test_no_redirects_allowed(server: LocalServer, staging: Path) -> None:
    server.routes["/moved"] = redirect("/pkg.zip", status=308)
    with pytest.raises(FailedPrecondition) as caught:
        await fetch_url(
            server.url("/moved"),
            staging / "download",
            max_bytes=100,
            policy=UrlPolicy(allow_private=True, max_redirects=0, timeout_seconds=5),
        )
    assert caught.value.reason == "TOO_MANY_REDIRECTS"


async def test_redirect_without_location_fails(server: LocalServer, staging: Path) -> None:
    server.routes["/moved"] = respond(b"", status=302)
    with pytest.raises(FailedPrecondition) as caught:
        await fetch_url(
            server.url("/moved"), staging / "download", max_bytes=100, policy=LOOPBACK_OK
        )
    assert caught.value.reason == "URL_FETCH_FAILED"


# --- URL rules --------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "ftp://example.com/pkg.zip",
        "file:///etc/passwd",
        "gopher://example.com/",
        "example.com/pkg.zip",
        "//example.com/pkg.zip",
        "",
        "http://user:pass@example.com/pkg.zip",
        "http://user@example.com/pkg.zip",
        "http://@example.com/pkg.zip",
        "http://example.com\\@127.0.0.1/pkg.zip",
        "http:///pkg.zip",
        "http://:80/pkg.zip",
        "http://example.com:0/",
        "http://example.com:65536/",
        "http://example.com:-1/",
        "http://exa mple.com/",
        "http://example.com\n/",
        "http://example.com/" + "a" * 9000,
    ],
)
async def test_invalid_urls_are_refused(staging: Path, url: str) -> None:
    resolver = FakeResolver({})
    with pytest.raises(InvalidArgument) as caught:
        await fetch_url(url, staging / "download", max_bytes=100, policy=STRICT, resolver=resolver)
    assert caught.value.reason == "URL_INVALID"
    assert [v.field for v in caught.value.violations] == ["spec.url"]
    assert resolver.calls == []
    assert list(staging.iterdir()) == []


async def test_scheme_outside_the_policy_is_refused(staging: Path) -> None:
    with pytest.raises(InvalidArgument) as caught:
        await fetch_url(
            "http://example.com/",
            staging / "download",
            max_bytes=100,
            policy=UrlPolicy(allowed_schemes=frozenset({"https"})),
            resolver=FakeResolver({}),
        )
    assert caught.value.reason == "URL_INVALID"


def test_policy_is_validated() -> None:
    with pytest.raises(ValueError):
        UrlPolicy(allowed_schemes=frozenset({"ftp"}))
    with pytest.raises(ValueError):
        UrlPolicy(max_redirects=-1)
    with pytest.raises(ValueError):
        UrlPolicy(timeout_seconds=0)


# --- non-public addresses ---------------------------------------------------------


@pytest.mark.parametrize(
    ("host", "address"),
    [
        ("127.0.0.1", "127.0.0.1"),
        ("[::1]", "::1"),
        ("0.0.0.0", "0.0.0.0"),  # reaches the local host on Linux
        ("2130706433", "127.0.0.1"),  # decimal form of 127.0.0.1
        ("0x7f.1", "127.0.0.1"),
        ("[::ffff:127.0.0.1]", "::ffff:127.0.0.1"),
        ("localhost", None),
    ],
)
async def test_loopback_is_refused_without_connecting(
    server: LocalServer, staging: Path, host: str, address: str | None
) -> None:
    server.routes["/pkg.zip"] = respond(b"data")
    with pytest.raises(InvalidArgument) as caught:
        await fetch_url(
            server.url("/pkg.zip", host=host), staging / "download", max_bytes=100, policy=STRICT
        )
    assert caught.value.reason == "URL_FORBIDDEN"
    assert [v.field for v in caught.value.violations] == ["spec.url"]
    if address is not None:
        assert caught.value.metadata["address"] == address
        assert address in caught.value.message
    assert server.connections == 0
    assert list(staging.iterdir()) == []


@pytest.mark.parametrize(
    "answers",
    [
        ["100.64.0.1"],
        ["169.254.169.254"],
        ["10.0.0.1"],
        ["192.168.0.10"],
        ["fc00::1"],
        ["fe80::1"],
        ["::ffff:169.254.169.254"],
        ["64:ff9b::a9fe:a9fe"],
        ["93.184.215.14", "10.0.0.1"],  # one bad answer spoils the name
    ],
)
async def test_names_resolving_to_internal_addresses_are_refused(
    staging: Path, answers: list[str]
) -> None:
    with pytest.raises(InvalidArgument) as caught:
        await fetch_url(
            "https://internal.test/pkg.zip",
            staging / "download",
            max_bytes=100,
            policy=STRICT,
            resolver=FakeResolver({"internal.test": answers}),
        )
    assert caught.value.reason == "URL_FORBIDDEN"
    assert caught.value.metadata["host"] == "internal.test"
    assert list(staging.iterdir()) == []


@pytest.mark.parametrize(
    "target",
    [
        "http://169.254.169.254/latest/meta-data/",
        "http://127.0.0.2:{port}/pkg.zip",
        "http://[::1]:{port}/pkg.zip",
        "http://0.0.0.0:{port}/pkg.zip",
        "http://metadata.test/computeMetadata/v1/",
        "http://[::ffff:7f00:2]:{port}/pkg.zip",
    ],
)
async def test_redirect_to_an_internal_address_is_refused(
    server: LocalServer, staging: Path, target: str
) -> None:
    """The first hop is allowed (127.0.0.1 plays a public mirror); the redirect is not."""
    resolver = FakeResolver({"mirror.test": ["127.0.0.1"], "metadata.test": ["169.254.169.254"]})
    server.routes["/pkg.zip"] = redirect(target.format(port=server.port))
    with pytest.raises(InvalidArgument) as caught:
        await fetch_url(
            server.url("/pkg.zip", host="mirror.test"),
            staging / "download",
            max_bytes=100,
            policy=STRICT_BUT_LOCAL_MIRROR,
            resolver=resolver,
        )
    assert caught.value.reason == "URL_FORBIDDEN"
    assert server.connections == 1
    assert list(staging.iterdir()) == []


@pytest.mark.parametrize(
    "target", ["ftp://mirror.test/pkg.zip", "file:///etc/passwd", "http://u:p@mirror.test/"]
)
async def test_redirect_to_a_bad_url_is_refused(
    server: LocalServer, staging: Path, target: str
) -> None:
    server.routes["/pkg.zip"] = redirect(target)
    with pytest.raises(InvalidArgument) as caught:
        await fetch_url(
            server.url("/pkg.zip"), staging / "download", max_bytes=100, policy=LOOPBACK_OK
        )
    assert caught.value.reason == "URL_INVALID"
    assert "redirect from" in caught.value.message
    assert len(server.requests) == 1


async def test_a_name_that_rebinds_between_connections_is_refused(
    server: LocalServer, staging: Path
) -> None:
    """DNS rebinding: the name is public (here: allowed) on the first lookup and
    internal on the next. Each connection uses the answer it vetted, so the second
    connection is refused instead of reaching the internal address."""
    answers = iter([[ip_address("127.0.0.1")], [ip_address("10.0.0.1")]])

    async def rebinding(host: str, port: int) -> list[IPAddress]:
        return next(answers)

    # The server closes every connection, so the redirect needs a new one.
    server.routes["/pkg.zip"] = redirect("/again")
    with pytest.raises(InvalidArgument) as caught:
        await fetch_url(
            server.url("/pkg.zip", host="rebind.test"),
            staging / "download",
            max_bytes=100,
            policy=STRICT_BUT_LOCAL_MIRROR,
            resolver=rebinding,
        )
    assert caught.value.reason == "URL_FORBIDDEN"
    assert "10.0.0.1" in caught.value.message
    assert [r.target for r in server.requests] == ["/pkg.zip"]
