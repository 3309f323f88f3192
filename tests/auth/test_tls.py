"""TLS and mutual TLS on the gRPC port, with certificates made by the test."""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from skillsvc.server import App
from skillsvc.v1 import skill_service_pb2, skill_service_pb2_grpc
from tests.auth.certs import CertificateAuthority, Issued
from tests.auth.conftest import SECRET, bearer, mint
from tests.helpers import expect_status

SERVING = health_pb2.HealthCheckResponse.SERVING


async def _health(channel: grpc.aio.Channel) -> int:
    reply = await health_pb2_grpc.HealthStub(channel).Check(
        health_pb2.HealthCheckRequest(), timeout=5
    )
    return int(reply.status)


def _credentials(ca: CertificateAuthority, client: Issued | None = None) -> grpc.ChannelCredentials:
    if client is None:
        return grpc.ssl_channel_credentials(root_certificates=ca.pem)
    return grpc.ssl_channel_credentials(
        root_certificates=ca.pem, private_key=client.key, certificate_chain=client.cert
    )


@pytest.fixture
def pki(tmp_path: Path) -> tuple[CertificateAuthority, Path, Path]:
    ca = CertificateAuthority()
    cert, key = ca.issue("skillsvc", server=True).write(tmp_path, "server")
    (tmp_path / "clients-ca.pem").write_bytes(ca.pem)
    return ca, cert, key


async def test_tls(make_app, pki: tuple[CertificateAuthority, Path, Path]) -> None:  # type: ignore[no-untyped-def]
    ca, cert, key = pki
    app: App = await make_app(tls_cert_file=cert, tls_key_file=key)
    async with grpc.aio.secure_channel(app.address, _credentials(ca)) as channel:
        assert await _health(channel) == SERVING
        stub = skill_service_pb2_grpc.SkillServiceStub(channel)
        await stub.ListSkillDefinitions(skill_service_pb2.ListSkillDefinitionsRequest())
    # The same name checked against the certificate's DNS entry.
    options = (("grpc.ssl_target_name_override", "localhost"),)
    async with grpc.aio.secure_channel(app.address, _credentials(ca), options) as channel:
        assert await _health(channel) == SERVING
    # Plaintext and an unknown CA are refused.
    async with grpc.aio.insecure_channel(app.address) as channel:
        await expect_status(_health(channel), grpc.StatusCode.UNAVAILABLE)
    async with grpc.aio.secure_channel(
        app.address, _credentials(CertificateAuthority("stranger"))
    ) as channel:
        await expect_status(_health(channel), grpc.StatusCode.UNAVAILABLE)


async def test_mutual_tls(make_app, pki: tuple[CertificateAuthority, Path, Path]) -> None:  # type: ignore[no-untyped-def]
    ca, cert, key = pki
    app: App = await make_app(
        tls_cert_file=cert, tls_key_file=key, tls_client_ca_file=cert.parent / "clients-ca.pem"
    )
    client = ca.issue("agent-runtime", server=False)
    async with grpc.aio.secure_channel(app.address, _credentials(ca, client)) as channel:
        assert await _health(channel) == SERVING
    # No client certificate, or one from another CA: the handshake fails.
    async with grpc.aio.secure_channel(app.address, _credentials(ca)) as channel:
        await expect_status(_health(channel), grpc.StatusCode.UNAVAILABLE)
    stranger = CertificateAuthority("stranger").issue("intruder", server=False)
    async with grpc.aio.secure_channel(app.address, _credentials(ca, stranger)) as channel:
        await expect_status(_health(channel), grpc.StatusCode.UNAVAILABLE)


async def test_tls_with_jwt(make_app, pki: tuple[CertificateAuthority, Path, Path]) -> None:  # type: ignore[no-untyped-def]
    ca, cert, key = pki
    app: App = await make_app(tls_cert_file=cert, tls_key_file=key, auth="jwt", jwt_secret=SECRET)
    async with grpc.aio.secure_channel(app.address, _credentials(ca)) as channel:
        stub = skill_service_pb2_grpc.SkillServiceStub(channel)
        await expect_status(
            stub.ListSkillDefinitions(skill_service_pb2.ListSkillDefinitionsRequest()),
            grpc.StatusCode.UNAUTHENTICATED,
        )
        await stub.ListSkillDefinitions(
            skill_service_pb2.ListSkillDefinitionsRequest(),
            metadata=bearer(mint(roles=["reader"])),
        )
        # A channel that attaches the token to every call, as clients usually do.
        token_creds = grpc.composite_channel_credentials(
            _credentials(ca), grpc.access_token_call_credentials(mint(roles=["reader"]))
        )
    async with grpc.aio.secure_channel(app.address, token_creds) as channel:
        stub = skill_service_pb2_grpc.SkillServiceStub(channel)
        await stub.ListSkillDefinitions(skill_service_pb2.ListSkillDefinitionsRequest())
