"""Fixtures for the intake tests: a staging directory, a scripted loopback HTTP server,
fake resolvers, and a guard that fails any test opening a non-loopback connection."""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import errno
import ipaddress
import socket
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from skillsvc.intake import IPAddress


@dataclass(frozen=True)
class SeenRequest:
    """One request the test server received."""

    method: str
    """The request method."""
    target: str
    """The request target (path and query)."""
    headers: dict[str, str]
    """Headers, names lower-cased."""


Handler = Callable[[SeenRequest, asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@dataclass
class LocalServer:
    """A tiny HTTP/1.1 server on 127.0.0.1 whose answers each test scripts by path."""

    routes: dict[str, Handler] = field(default_factory=dict)
    requests: list[SeenRequest] = field(default_factory=list)
    connections: int = 0
    port: int = 0
    _server: asyncio.Server | None = None
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)

    async def start(self, tls: ssl.SSLContext | None = None) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0, ssl=tls)
        self.port = self._server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        assert self._server is not None
        self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._server.wait_closed()

    def url(self, path: str, host: str = "127.0.0.1", scheme: str = "http") -> str:
        return f"{scheme}://{host}:{self.port}{path}"

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self.connections += 1
        try:
            line = await reader.readline()
            if not line:
                return
            method, target, _ = line.decode("latin-1").split(" ", 2)
            headers: dict[str, str] = {}
            while (header := await reader.readline()) not in (b"\r\n", b"\n", b""):
                name, _, value = header.decode("latin-1").partition(":")
                headers[name.strip().lower()] = value.strip()
            request = SeenRequest(method, target, headers)
            self.requests.append(request)
            handler = self.routes.get(target.split("?", 1)[0], respond(b"not found", status=404))
            await handler(request, reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            self._tasks.discard(task)
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()


def _head(status: int, headers: Sequence[tuple[str, str]]) -> bytes:
    lines = [f"HTTP/1.1 {status} Status", *(f"{k}: {v}" for k, v in headers), "Connection: close"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def respond(
    body: bytes,
    *,
    status: int = 200,
    headers: Sequence[tuple[str, str]] = (),
    framing: str = "length",
    content_length: int | None = None,
) -> Handler:
    """Answer with ``body``; ``framing`` is ``length``, ``chunked`` or ``close``
    (no length: the body ends when the connection closes)."""

    async def handler(
        request: SeenRequest, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        extra = list(headers)
        if framing == "length":
            extra.append(
                ("Content-Length", str(len(body) if content_length is None else content_length))
            )
        elif framing == "chunked":
            extra.append(("Transfer-Encoding", "chunked"))
        writer.write(_head(status, extra))
        if framing == "chunked":
            for start in range(0, len(body), 65536):
                piece = body[start : start + 65536]
                writer.write(b"%x\r\n%b\r\n" % (len(piece), piece))
                await writer.drain()
            writer.write(b"0\r\n\r\n")
        else:
            writer.write(body)
        await writer.drain()

    return handler


def redirect(location: str, status: int = 302) -> Handler:
    """Answer with a redirect to ``location``."""
    return respond(b"", status=status, headers=[("Location", location)])


def trickle(interval: float = 0.02) -> Handler:
    """Send headers promising a large body, then one byte per ``interval``, forever."""

    async def handler(
        request: SeenRequest, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        writer.write(_head(200, [("Content-Length", "1000000")]))
        while True:
            writer.write(b"x")
            await writer.drain()
            await asyncio.sleep(interval)

    return handler


@pytest.fixture
async def server() -> AsyncIterator[LocalServer]:
    """A started :class:`LocalServer`, closed after the test."""
    local = LocalServer()
    await local.start()
    try:
        yield local
    finally:
        await local.close()


@dataclass(frozen=True)
class TlsFiles:
    """A self-signed certificate for ``mirror.test`` and its key, as PEM files."""

    cert: Path
    """The certificate, also usable as the client's CA bundle."""
    key: Path
    """The private key."""


@pytest.fixture(scope="session")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> TlsFiles:
    """A certificate valid for ``mirror.test`` only."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "mirror.test")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("mirror.test")]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    directory = tmp_path_factory.mktemp("tls")
    files = TlsFiles(cert=directory / "cert.pem", key=directory / "key.pem")
    files.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    files.key.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return files


@pytest.fixture
async def tls_server(tls_files: TlsFiles) -> AsyncIterator[LocalServer]:
    """A started :class:`LocalServer` speaking TLS as ``mirror.test``."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(tls_files.cert, tls_files.key)
    local = LocalServer()
    await local.start(tls=context)
    try:
        yield local
    finally:
        await local.close()


@pytest.fixture
def staging(tmp_path: Path) -> Path:
    """A private staging directory."""
    path = tmp_path / "staging"
    path.mkdir(mode=0o700)
    return path


@dataclass
class FakeResolver:
    """Maps names to fixed addresses; never asks real DNS. Records every lookup."""

    table: dict[str, list[str]]
    calls: list[str] = field(default_factory=list)

    async def __call__(self, host: str, port: int) -> list[IPAddress]:
        self.calls.append(host)
        try:
            answers = self.table[host]
        except KeyError:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known") from None
        return [ipaddress.ip_address(answer) for answer in answers]


@pytest.fixture(autouse=True)
def loopback_only(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[object]]:
    """Block, and fail the test on, any TCP/UDP connect to a non-loopback address.

    The fetcher refuses such addresses itself; this guard makes sure that a bug there
    shows up as a failing test rather than as traffic leaving the machine.
    """
    violations: list[object] = []
    real_connect = socket.socket.connect
    real_connect_ex = socket.socket.connect_ex

    def check(sock: socket.socket, address: object) -> None:
        if sock.family not in (socket.AF_INET, socket.AF_INET6):
            return
        assert isinstance(address, tuple)
        host = str(address[0]).split("%", 1)[0]
        if not ipaddress.ip_address(host).is_loopback:
            violations.append(address)
            raise OSError(errno.ENETUNREACH, f"test guard: connect to {host} blocked")

    def connect(self: socket.socket, address: object) -> None:
        check(self, address)
        real_connect(self, address)  # type: ignore[arg-type]

    def connect_ex(self: socket.socket, address: object) -> int:
        check(self, address)
        return real_connect_ex(self, address)  # type: ignore[arg-type]

    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.setattr(socket.socket, "connect_ex", connect_ex)
    yield violations
    assert not violations, f"non-loopback connections attempted: {violations}"
