"""Downloading a package from an http(s) URL that may be hostile.

Every URL is treated as an attempt to make the service reach somewhere it should not
(SSRF) or to exhaust it. The defences, in the order a fetch meets them:

* the URL itself: ``http``/``https`` only, no ``user:pass@``, a host and a valid port;
* the address: the host is resolved here, every address it resolves to must be public
  (:func:`~skillsvc.intake.is_forbidden_address`), and the connection goes to one of
  exactly those addresses. Resolution and the check happen inside the HTTP client's
  network backend (:class:`_GuardedBackend`), at the moment a connection is opened, so
  the address checked is the address used: a DNS answer that changes between a check
  and a connect (DNS rebinding) has no second lookup to change, and no URL parser quirk
  can make the check and the connection disagree about the host. The URL, the ``Host``
  header and TLS (SNI and certificate verification) keep the real host name;
* redirects are followed by hand, at most ``max_redirects``, and each target goes
  through the same URL checks and, when connected to, the same address check;
* size: a ``Content-Length`` over the limit is refused before the body is read, and the
  body is counted as it arrives (the header may lie or be absent). The body is read
  raw: ``Accept-Encoding: identity`` is requested and a ``Content-Encoding`` the server
  applies anyway is not decoded, so a small gzip bomb cannot expand in memory or on
  disk, and a ``.tar.gz`` mislabelled as ``Content-Encoding: gzip`` is stored as is;
* time: one deadline covers resolution, connection, redirects and the body.

No cookies, credentials, proxies or environment settings are used: the fetch talks
directly to the vetted address with ``httpcore`` (the transport under ``httpx``), and
``httpx.URL`` only parses and joins URLs.

Errors (all :mod:`skillsvc.errors`; a caller maps them once at the gRPC edge):

    InvalidArgument     URL_INVALID          bad scheme, userinfo, host or port (also
                                             in a redirect target)
                        URL_FORBIDDEN        a host (or redirect target) resolving to a
                                             non-public address
    FailedPrecondition  URL_FETCH_FAILED     name does not resolve, connection refused
                                             or broken, TLS failure, non-2xx status,
                                             malformed redirect
                        URL_TIMEOUT          the total deadline or a connect timeout
                        TOO_MANY_REDIRECTS   more than ``max_redirects`` redirects
    ResourceExhausted   TOO_LARGE            over ``max_bytes`` (header or counted)

A URL that may not be fetched, wherever the redirects led, is the caller's to fix:
``INVALID_ARGUMENT`` on ``spec.url``. A well-formed URL whose server fails or
misbehaves (errors, loops, stalls) is ``FAILED_PRECONDITION``: the request is sound,
the remote side is not in a state to serve it, and the same request may work later.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import re
import ssl
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from ipaddress import IPv4Network, IPv6Address, IPv6Network, ip_address
from pathlib import Path
from typing import Final

import httpcore
import httpx

from skillsvc import __version__
from skillsvc.errors import FailedPrecondition, FieldViolation, InvalidArgument
from skillsvc.intake._addresses import (
    IPAddress,
    Resolver,
    forbidden_reason,
    in_networks,
    system_resolver,
)
from skillsvc.intake._spool import Spooled, Spooler, too_large

ProgressCallback = Callable[[int, int | None], None]
"""Called with ``(bytes_done, bytes_total)``; ``bytes_total`` is None when unknown."""

_URL_FIELD: Final = "spec.url"
# Letters, digits, hyphens and (seen in internal zones) underscores; a final dot is fine.
_HOST_NAME: Final = re.compile(rb"(?=.{1,254}\Z)[A-Za-z0-9_-]{1,63}(?:\.[A-Za-z0-9_-]{1,63})*\.?")
_MAX_URL_LENGTH: Final = 8192
_SUPPORTED_SCHEMES: Final = frozenset({"http", "https"})
_REDIRECT_STATUSES: Final = frozenset({301, 302, 303, 307, 308})
_PROGRESS_STEP: Final = 256 * 1024
_USER_AGENT: Final = f"skillsvc/{__version__}".encode("ascii")


@dataclass(frozen=True)
class UrlPolicy:
    """What a URL fetch may do. Build it once from settings and pass it down."""

    allow_private: bool = False
    """Allow non-public addresses (loopback, private, link-local...): tests, on-prem mirrors."""
    max_redirects: int = 5
    """Redirects followed before giving up with ``TOO_MANY_REDIRECTS``; 0 follows none."""
    timeout_seconds: float = 60.0
    """Deadline for the whole fetch: resolution, connections, redirects and the body."""
    connect_timeout_seconds: float = 10.0
    """Deadline for resolving a host and opening one connection (including TLS)."""
    allowed_schemes: frozenset[str] = frozenset({"http", "https"})
    """URL schemes accepted, a subset of ``{"http", "https"}``."""
    allowed_networks: frozenset[IPv4Network | IPv6Network] = frozenset()
    """Non-public networks allowed even without ``allow_private`` (e.g. one mirror's /32)."""
    ca_file: Path | None = None
    """PEM bundle of CAs to trust for https instead of the default (certifi) bundle."""

    def __post_init__(self) -> None:
        if self.max_redirects < 0:
            raise ValueError("max_redirects must not be negative")
        if self.timeout_seconds <= 0 or self.connect_timeout_seconds <= 0:
            raise ValueError("timeouts must be positive")
        if not self.allowed_schemes or not self.allowed_schemes <= _SUPPORTED_SCHEMES:
            raise ValueError("allowed_schemes must be a non-empty subset of {'http', 'https'}")


async def fetch_url(
    url: str,
    path: Path,
    *,
    max_bytes: int,
    policy: UrlPolicy,
    progress: ProgressCallback | None = None,
    resolver: Resolver | None = None,
) -> Spooled:
    """Download ``url`` into the new file ``path`` (see the module docstring for the rules).

    ``progress`` is called when the body starts, about every 256 KiB, and at the end.
    ``resolver`` replaces the system resolver (tests map names to loopback with it).
    On any failure ``path`` does not exist afterwards.
    """
    start = _checked_url(url, policy)
    backend = _GuardedBackend(policy, resolver or system_resolver)
    try:
        async with asyncio.timeout(policy.timeout_seconds):
            # The first call parses a CA bundle (~0.1 s of CPU): not on the loop.
            ssl_context = await asyncio.to_thread(_ssl_context, policy.ca_file)
            async with httpcore.AsyncConnectionPool(
                ssl_context=ssl_context,
                network_backend=backend,
                http1=True,
                http2=False,
                retries=0,
            ) as pool:
                return await _fetch(
                    pool,
                    url=start,
                    path=path,
                    max_bytes=max_bytes,
                    policy=policy,
                    progress=progress,
                )
    except TimeoutError:
        raise FailedPrecondition(
            f"fetching {_shown(start)} did not finish within {policy.timeout_seconds:g} s",
            reason="URL_TIMEOUT",
        ) from None


async def _fetch(
    pool: httpcore.AsyncConnectionPool,
    *,
    url: httpx.URL,
    path: Path,
    max_bytes: int,
    policy: UrlPolicy,
    progress: ProgressCallback | None,
) -> Spooled:
    redirects = 0
    while True:
        with _network_errors(url):
            async with pool.stream(
                "GET",
                httpcore.URL(
                    scheme=url.raw_scheme, host=url.raw_host, port=url.port, target=url.raw_path
                ),
                headers=[
                    (b"Host", url.netloc),
                    (b"User-Agent", _USER_AGENT),
                    (b"Accept", b"*/*"),
                    (b"Accept-Encoding", b"identity"),
                ],
                extensions={"timeout": {"connect": policy.connect_timeout_seconds}},
            ) as response:
                status = response.status
                if status in _REDIRECT_STATUSES:
                    if redirects >= policy.max_redirects:
                        raise FailedPrecondition(
                            f"{_shown(url)} redirected more than {policy.max_redirects} times",
                            reason="TOO_MANY_REDIRECTS",
                        )
                    redirects += 1
                    url = _redirect_target(url, response.headers, policy)
                    continue
                if not 200 <= status < 300:
                    raise FailedPrecondition(
                        f"{_shown(url)} answered HTTP status {status}",
                        reason="URL_FETCH_FAILED",
                        metadata={"http_status": str(status)},
                    )
                return await _receive(response, path, max_bytes, progress)


async def _receive(
    response: httpcore.Response,
    path: Path,
    max_bytes: int,
    progress: ProgressCallback | None,
) -> Spooled:
    total = _content_length(response.headers)
    if total is not None and total > max_bytes:
        raise too_large(max_bytes, f"the archive's Content-Length of {total} bytes")
    async with Spooler(path, max_bytes=max_bytes) as spooler:
        reported = 0
        if progress is not None:
            progress(0, total)
        # ``aiter_stream`` yields the body as sent: httpcore never decodes it.
        async for chunk in response.aiter_stream():
            await spooler.write(chunk)
            if progress is not None and spooler.bytes_done - reported >= _PROGRESS_STEP:
                reported = spooler.bytes_done
                progress(reported, total)
        spooled = await spooler.finish()
    if progress is not None and reported != spooled.size_bytes:
        progress(spooled.size_bytes, total)
    return spooled


class _GuardedBackend(httpcore.AsyncNetworkBackend):
    """Resolves, vets and connects in one step, so the address vetted is the one used."""

    def __init__(self, policy: UrlPolicy, resolver: Resolver) -> None:
        self._policy = policy
        self._resolver = resolver
        self._inner = httpcore.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,  # noqa: ASYNC109 - httpcore's interface
        local_address: str | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        addresses = await self._vetted_addresses(host, port, timeout)
        failure: Exception | None = None
        for address in addresses:
            try:
                # A numeric host: the inner backend does no name lookup of its own.
                return await self._inner.connect_tcp(
                    str(address),
                    port,
                    timeout=timeout,
                    local_address=local_address,
                    socket_options=socket_options,
                )
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                failure = exc
        assert failure is not None  # _vetted_addresses never returns an empty list
        raise failure

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)

    async def _vetted_addresses(
        self, host: str, port: int, limit_seconds: float | None
    ) -> list[IPAddress]:
        addresses = await self._resolve(host, port, limit_seconds)
        if self._policy.allow_private:
            return addresses
        # Refuse if *any* answer is forbidden rather than skipping it: a name that
        # mixes public and internal addresses is not one to trust.
        for address in addresses:
            why = forbidden_reason(address)
            if why is None or in_networks(address, self._policy.allowed_networks):
                continue
            shown = _shown_address(address)
            where = shown if shown == host else f"{host} resolves to {shown}, which"
            description = f"{where} is not a public address ({why})"
            raise InvalidArgument(
                f"{_URL_FIELD}: {description}",
                [FieldViolation(_URL_FIELD, description)],
                reason="URL_FORBIDDEN",
                metadata={"host": host, "address": shown},
            )
        return addresses

    async def _resolve(self, host: str, port: int, limit_seconds: float | None) -> list[IPAddress]:
        with contextlib.suppress(ValueError):
            # An address literal needs no lookup (and an injected resolver never sees one).
            return [ip_address(host)]
        try:
            async with asyncio.timeout(limit_seconds):
                addresses = list(await self._resolver(host, port))
        except TimeoutError:
            raise FailedPrecondition(
                f"resolving {host} took longer than {limit_seconds:g} s", reason="URL_TIMEOUT"
            ) from None
        except OSError as exc:
            raise FailedPrecondition(
                f"cannot resolve host {host}: {exc.strerror or exc}", reason="URL_FETCH_FAILED"
            ) from exc
        if not addresses:
            raise FailedPrecondition(f"host {host} has no address", reason="URL_FETCH_FAILED")
        return addresses


def _shown_address(address: IPAddress) -> str:
    """``address`` as people write it: ``::ffff:127.0.0.1``, not ``::ffff:7f00:1``."""
    if isinstance(address, IPv6Address) and address.ipv4_mapped is not None:
        return f"::ffff:{address.ipv4_mapped}"
    return str(address)


def _checked_url(
    raw: str, policy: UrlPolicy, *, redirected_from: httpx.URL | None = None
) -> httpx.URL:
    """Parse ``raw`` and apply the URL rules; the address is checked at connect time."""

    def invalid(description: str) -> InvalidArgument:
        return _invalid_url(description, redirected_from=redirected_from)

    if len(raw) > _MAX_URL_LENGTH:
        raise invalid(f"the URL is longer than {_MAX_URL_LENGTH} characters")
    try:
        url = httpx.URL(raw)
    except httpx.InvalidURL as exc:
        raise invalid(f"not a valid URL ({exc})") from None
    if url.scheme not in policy.allowed_schemes:
        shown = repr(url.scheme) if url.scheme else "no scheme"
        allowed = " or ".join(sorted(policy.allowed_schemes))
        raise invalid(f"{shown} is not allowed, use {allowed}")
    # Checked on the raw text too: an empty ``@host`` or a ``\`` before the ``@`` is
    # read differently by different parsers, so refuse anything that looks like userinfo.
    if url.userinfo or "@" in _authority(raw):
        raise invalid("credentials (user:password@) in the URL are not allowed")
    if not url.raw_host:
        raise invalid("the URL has no host")
    if not _is_valid_host(url.raw_host):
        raise invalid(f"{url.host!r} is not a valid host name")
    if url.port is not None and not 0 < url.port < 65536:
        raise invalid(f"port {url.port} is out of range")
    return url


def _is_valid_host(raw_host: bytes) -> bool:
    """A DNS name (already IDNA-encoded by ``httpx.URL``) or an IP address literal."""
    if b":" in raw_host:
        try:
            ip_address(raw_host.decode("ascii").replace("%25", "%"))
        except ValueError:
            return False
        return True
    return _HOST_NAME.fullmatch(raw_host) is not None


def _invalid_url(description: str, *, redirected_from: httpx.URL | None) -> InvalidArgument:
    if redirected_from is not None:
        description = f"redirect from {_shown(redirected_from)}: {description}"
    return InvalidArgument(
        f"{_URL_FIELD}: {description}",
        [FieldViolation(_URL_FIELD, description)],
        reason="URL_INVALID",
    )


def _redirect_target(
    url: httpx.URL, headers: list[tuple[bytes, bytes]], policy: UrlPolicy
) -> httpx.URL:
    locations = [value for name, value in headers if name.lower() == b"location"]
    if len(locations) != 1:
        raise FailedPrecondition(
            f"{_shown(url)} redirected with {len(locations)} Location headers",
            reason="URL_FETCH_FAILED",
        )
    try:
        location = locations[0].decode("utf-8").strip()
        target = url.join(location)
    except (UnicodeDecodeError, httpx.InvalidURL):
        raise FailedPrecondition(
            f"{_shown(url)} redirected to an unreadable Location", reason="URL_FETCH_FAILED"
        ) from None
    if "@" in _authority(location):
        # The joined URL is checked below; this catches what the join may normalise away.
        raise _invalid_url(
            "credentials (user:password@) in the URL are not allowed", redirected_from=url
        )
    return _checked_url(str(target), policy, redirected_from=url)


def _authority(raw: str) -> str:
    """The ``user@host:port`` part of an absolute or scheme-relative URL, else ``""``."""
    head, sep, rest = raw.partition("//")
    if not sep or ("/" in head or "?" in head or "#" in head):
        return ""
    end = len(rest)
    for stop in "/?#":
        index = rest.find(stop)
        if index != -1:
            end = min(end, index)
    return rest[:end]


def _content_length(headers: list[tuple[bytes, bytes]]) -> int | None:
    values = {value.strip() for name, value in headers if name.lower() == b"content-length"}
    if len(values) != 1:
        return None
    value = values.pop()
    return int(value) if value.isdigit() else None


def _shown(url: httpx.URL) -> str:
    """``url`` fit for messages and logs: a query string may hold a signed token."""
    shown = url.copy_with(query=None, fragment=None)
    return f"{shown}?…" if url.query else str(shown)


@contextlib.contextmanager
def _network_errors(url: httpx.URL) -> Iterator[None]:
    """Translate the transport's exceptions into domain errors naming ``url``."""
    try:
        yield
    except httpcore.TimeoutException as exc:
        raise FailedPrecondition(
            f"{_shown(url)}: timed out ({type(exc).__name__})", reason="URL_TIMEOUT"
        ) from exc
    except httpcore.ConnectError as exc:
        raise FailedPrecondition(
            f"cannot connect to {_shown(url)}: {exc or type(exc).__name__}",
            reason="URL_FETCH_FAILED",
        ) from exc
    except (
        httpcore.NetworkError,
        httpcore.ProtocolError,
        httpcore.UnsupportedProtocol,
        httpcore.ProxyError,
    ) as exc:
        raise FailedPrecondition(
            f"fetching {_shown(url)} failed: {exc or type(exc).__name__}",
            reason="URL_FETCH_FAILED",
        ) from exc


@functools.lru_cache(maxsize=4)
def _ssl_context(ca_file: Path | None) -> ssl.SSLContext:
    """The TLS client context for ``ca_file``, built once per bundle.

    Parsing a CA bundle costs ~0.1 s of CPU, too much to repeat per download. A
    context is safe to share: connections only read it (httpcore re-sets the same
    ALPN list on each connect).
    """
    if ca_file is None:
        return httpcore.default_ssl_context()
    return ssl.create_default_context(cafile=str(ca_file))
