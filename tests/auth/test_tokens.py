"""Bearer tokens against a real JWT server: what is refused, with which reason, and when.

Every refusal is ``UNAUTHENTICATED`` with a ``google.rpc.ErrorInfo`` reason
(``TOKEN_MISSING``, ``TOKEN_EXPIRED``, ``TOKEN_INVALID``), decided before any handler
runs; health and reflection answer without a token.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import time
from pathlib import Path
from typing import Any

import asyncpg
import grpc
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from skillsvc.api import current_caller
from skillsvc.errors import Unauthenticated
from skillsvc.server import HEALTH_SERVICE_NAME, SERVICE_NAME, App
from skillsvc.v1 import resources_pb2, skill_service_pb2, skill_service_pb2_grpc
from tests.auth.conftest import (
    ADMIN,
    OTHER_PUBLISHER,
    SECRET,
    Metadata,
    World,
    bearer,
    install,
    mint,
    upload_messages,
    upload_spec,
)
from tests.helpers import expect_status, reason
from tests.packages import skill_archive

C = grpc.StatusCode


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def forge(header: dict[str, Any], claims: dict[str, Any], key: bytes | None) -> str:
    """A token built by hand: HMAC-SHA256 with ``key``, or no signature at all."""
    signing_input = f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(claims).encode())}"
    signature = (
        b"" if key is None else hmac.new(key, signing_input.encode(), hashlib.sha256).digest()
    )
    return f"{signing_input}.{_b64(signature)}"


def claims(**changes: Any) -> dict[str, Any]:
    now = int(time.time())
    values = {"sub": "mallory", "tenant": "acme", "roles": ["admin"], "iat": now, "exp": now + 600}
    values.update(changes)
    return values


async def _list(world: World, metadata: Metadata) -> Any:
    return await world.stub.ListSkillDefinitions(
        skill_service_pb2.ListSkillDefinitionsRequest(), metadata=metadata
    )


async def refused(world: World, metadata: Metadata, why: str) -> str:
    error = await expect_status(_list(world, metadata), C.UNAUTHENTICATED)
    assert reason(error) == why, error.details()
    return error.details() or ""


async def test_a_valid_token_is_accepted(world: World) -> None:
    reply = await _list(world, bearer(mint("reader@acme", "acme", ["reader"])))
    names = {d.skill_id for d in reply.definitions}
    assert "acme-private" in names
    assert "globex-private" not in names


async def test_no_token_is_token_missing(world: World) -> None:
    message = await refused(world, (), "TOKEN_MISSING")
    assert "Bearer" in message


@pytest.mark.parametrize(
    "header",
    [
        "Token abc",
        "Bearer",
        "Bearer ",
        "Basic dXNlcjpwYXNz",
        "Bearer not-a-jwt",
        "Bearer a.b.c",
        "Bearer ..",
        "Bearer eyJhbGciOiJIUzI1NiJ9.e30",
        "Bearer !!!.@@@.###",
        "bearer  " + "A" * 4000,
    ],
)
async def test_malformed_headers_are_token_invalid(world: World, header: str) -> None:
    await refused(world, (("authorization", header),), "TOKEN_INVALID")


async def test_two_authorization_headers_are_refused(world: World) -> None:
    good = f"Bearer {mint()}"
    await refused(world, (("authorization", good), ("authorization", good)), "TOKEN_INVALID")


async def test_expired_token_is_token_expired(world: World) -> None:
    await refused(world, bearer(mint(ttl=-3600)), "TOKEN_EXPIRED")


async def test_leeway_tolerates_small_clock_skew(world: World) -> None:
    # Expired 5 s ago; the default leeway is 30 s.
    await _list(world, bearer(mint(ttl=-5)))
    # Issued (and valid from) 5 s in the future.
    now = int(time.time())
    await _list(world, bearer(mint(iat=now + 5, nbf=now + 5)))
    await refused(world, bearer(mint(nbf=now + 600)), "TOKEN_INVALID")


async def test_forged_signature_is_token_invalid(world: World) -> None:
    await refused(world, bearer(mint(secret="another-secret-" + "y" * 32)), "TOKEN_INVALID")
    token = mint()
    head, payload, _signature = token.split(".")
    tampered = json.loads(base64.urlsafe_b64decode(payload + "=="))
    tampered["roles"] = ["admin"]
    await refused(
        world, bearer(f"{head}.{_b64(json.dumps(tampered).encode())}.{_signature}"), "TOKEN_INVALID"
    )


async def test_alg_none_is_token_invalid(world: World) -> None:
    for alg in ("none", "None", "NONE"):
        message = await refused(
            world, bearer(forge({"alg": alg, "typ": "JWT"}, claims(), None)), "TOKEN_INVALID"
        )
        assert "alg" in message


@pytest.mark.parametrize(
    ("missing", "extra"),
    [
        ("exp", {}),
        ("sub", {}),
        ("tenant", {}),
        ("roles-not-a-list", {"roles": "admin"}),
        ("roles-not-strings", {"roles": [1, 2]}),
        ("sub-not-a-string", {"sub": 42}),
        ("empty-sub", {"sub": ""}),
        ("tenant-not-a-string", {"tenant": ["acme"]}),
        ("exp-not-a-number", {"exp": "tomorrow"}),
    ],
)
async def test_missing_or_malformed_claims_are_token_invalid(
    world: World, missing: str, extra: dict[str, Any]
) -> None:
    values = claims(**extra)
    values.pop(missing, None)
    await refused(world, bearer(jwt.encode(values, SECRET, "HS256")), "TOKEN_INVALID")


_NOW = int(time.time())


@pytest.mark.parametrize(
    "extra",
    [
        {"exp": str(_NOW + 600)},  # a numeric string: PyJWT alone would accept it
        {"exp": str(_NOW - 600)},  # expired as a string: invalid, not TOKEN_EXPIRED
        {"exp": f"{_NOW + 600}.5"},
        {"exp": True},
        {"exp": None},
        {"exp": [_NOW + 600]},
        {"exp": float("nan")},
        {"exp": float("inf")},
        {"exp": 10**400},
        {"nbf": str(_NOW - 60)},
        {"nbf": False},
        {"iat": str(_NOW)},
        {"iat": {"seconds": _NOW}},
    ],
    # Ids without the times in them: xdist workers must collect the same names.
    ids=[
        "exp-numeric-string",
        "exp-past-numeric-string",
        "exp-decimal-string",
        "exp-true",
        "exp-null",
        "exp-list",
        "exp-nan",
        "exp-infinity",
        "exp-beyond-any-float",
        "nbf-numeric-string",
        "nbf-false",
        "iat-numeric-string",
        "iat-object",
    ],
)
async def test_numeric_dates_must_be_json_numbers(world: World, extra: dict[str, Any]) -> None:
    # RFC 7519 §2: NumericDate is a JSON number. Issue 10, finding 10.
    message = await refused(
        world, bearer(jwt.encode(claims(**extra), SECRET, "HS256")), "TOKEN_INVALID"
    )
    assert "NumericDate" in message or "finite" in message, message


async def test_numeric_dates_may_have_a_fraction(world: World) -> None:
    now = time.time()
    token = jwt.encode(claims(iat=now, nbf=now - 1.5, exp=now + 600.25), SECRET, "HS256")
    await _list(world, bearer(token))


async def test_exp_is_still_required(world: World) -> None:
    values = claims()
    del values["exp"]
    message = await refused(world, bearer(jwt.encode(values, SECRET, "HS256")), "TOKEN_INVALID")
    assert "exp" in message


async def test_an_aud_claim_is_refused_when_no_audience_is_configured(world: World) -> None:
    await refused(world, bearer(mint(aud="someone-else")), "TOKEN_INVALID")


async def test_unknown_roles_are_ignored(world: World) -> None:
    # A token may carry roles of other services; only ours count.
    await _list(world, bearer(mint(roles=["superuser", "reader"])))
    error = await expect_status(
        _list(world, bearer(mint(roles=["superuser", "root"]))), C.PERMISSION_DENIED
    )
    assert reason(error) == "ROLE_NOT_ALLOWED"
    error = await expect_status(_list(world, bearer(mint(roles=None))), C.PERMISSION_DENIED)


async def test_health_and_reflection_need_no_token(world: World) -> None:
    async with grpc.aio.insecure_channel(world.app.address) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        for service in ("", SERVICE_NAME):
            reply = await health.Check(health_pb2.HealthCheckRequest(service=service))
            assert reply.status == health_pb2.HealthCheckResponse.SERVING
        call = reflection_pb2_grpc.ServerReflectionStub(channel).ServerReflectionInfo()
        await call.write(reflection_pb2.ServerReflectionRequest(list_services=""))
        response = await call.read()
        await call.done_writing()
        names = {s.name for s in response.list_services_response.service}
        assert {SERVICE_NAME, HEALTH_SERVICE_NAME} <= names


async def test_refusals_happen_before_an_upload_is_read(world: World) -> None:
    """The stream stalls after its first chunk: only a refusal made up front can end it."""
    never = asyncio.Event()
    calls = []
    try:
        for metadata, skill, code in [
            ((), "acme-private", C.UNAUTHENTICATED),  # no token
            (bearer(mint(roles=["reader"])), "acme-private", C.PERMISSION_DENIED),  # role
            (OTHER_PUBLISHER, "acme-private", C.NOT_FOUND),  # another tenant's private skill
            (OTHER_PUBLISHER, "platform-skill", C.PERMISSION_DENIED),  # visible, not theirs
        ]:
            data = skill_archive(skill, "9.9.9")
            spec = upload_spec(skill, data, version="9.9.9")
            call = world.stub.Install(upload_messages(spec, data, hang=never), metadata=metadata)
            calls.append(call)
            async with asyncio.timeout(10):
                await expect_status(call, code)
    finally:
        # Let the stalled request streams run out, so no client task is left pending.
        never.set()
        for call in calls:
            call.cancel()
        await asyncio.sleep(0.1)
    conn = await asyncpg.connect(world.db_url)
    try:
        count = await conn.fetchval(
            "SELECT count(*) FROM skill_install_logs WHERE version = '9.9.9'"
        )
    finally:
        await conn.close()
    assert count == 0


async def test_requested_by_is_the_token_subject(world: World) -> None:
    token = bearer(mint("alice.publisher@acme", "acme", ["publisher"]))
    data = skill_archive("acme-private", "1.1.0")
    op = await install(world.stub, "acme-private", data, token, version="1.1.0", activate=False)
    assert op.requested_by == "alice.publisher@acme"
    conn = await asyncpg.connect(world.db_url)
    try:
        stored = await conn.fetchval(
            "SELECT requested_by FROM skill_install_logs WHERE operation_id = $1::uuid",
            op.operation_id,
        )
    finally:
        await conn.close()
    assert stored == "alice.publisher@acme"


def test_current_caller_outside_a_call_fails_closed() -> None:
    with pytest.raises(Unauthenticated):
        current_caller()


# -- public-key configurations ---------------------------------------------------------


def _public_pem(key: Any) -> bytes:
    return bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )


async def _codes(app: App, tokens: dict[str, str]) -> dict[str, grpc.StatusCode]:
    codes = {}
    async with grpc.aio.insecure_channel(app.address) as channel:
        stub = skill_service_pb2_grpc.SkillServiceStub(channel)
        for name, token in tokens.items():
            try:
                await stub.ListSkillDefinitions(
                    skill_service_pb2.ListSkillDefinitionsRequest(), metadata=bearer(token)
                )
                codes[name] = C.OK
            except grpc.aio.AioRpcError as exc:
                codes[name] = exc.code()
    return codes


async def test_rs256_public_key_refuses_hs256_signed_with_that_key(
    make_app, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = _public_pem(private)
    key_file = tmp_path / "jwt.pub"
    key_file.write_bytes(pem)
    app: App = await make_app(auth="jwt", jwt_public_key_file=key_file)
    codes = await _codes(
        app,
        {
            "rs256": jwt.encode(claims(), private, "RS256"),
            # The classic confusion: the public key (which is public) as an HMAC secret.
            "hs256-with-public-key": forge({"alg": "HS256", "typ": "JWT"}, claims(), pem),
            "hs256-with-secret": jwt.encode(claims(), SECRET, "HS256"),
            "none": forge({"alg": "none"}, claims(), None),
            "rs512": jwt.encode(claims(), private, "RS512"),
            "ps256": jwt.encode(claims(), private, "PS256"),
        },
    )
    assert codes == {
        "rs256": C.OK,
        "hs256-with-public-key": C.UNAUTHENTICATED,
        "hs256-with-secret": C.UNAUTHENTICATED,
        "none": C.UNAUTHENTICATED,
        "rs512": C.UNAUTHENTICATED,
        "ps256": C.UNAUTHENTICATED,
    }


async def test_es256_public_key(make_app, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    private = ec.generate_private_key(ec.SECP256R1())
    pem = _public_pem(private)
    key_file = tmp_path / "jwt.pub"
    key_file.write_bytes(pem)
    other = ec.generate_private_key(ec.SECP256R1())
    app: App = await make_app(auth="jwt", jwt_public_key_file=key_file)
    codes = await _codes(
        app,
        {
            "es256": jwt.encode(claims(), private, "ES256"),
            "es256-other-key": jwt.encode(claims(), other, "ES256"),
            "hs256-with-public-key": forge({"alg": "HS256"}, claims(), pem),
        },
    )
    assert codes == {
        "es256": C.OK,
        "es256-other-key": C.UNAUTHENTICATED,
        "hs256-with-public-key": C.UNAUTHENTICATED,
    }


async def test_issuer_and_audience_must_match_when_configured(make_app) -> None:  # type: ignore[no-untyped-def]
    app: App = await make_app(
        auth="jwt", jwt_secret=SECRET, jwt_issuer="https://idp.example", jwt_audience="skillsvc"
    )
    right = {"iss": "https://idp.example", "aud": "skillsvc"}

    def token(**changes: Any) -> str:
        values = claims(**{**right, **changes})
        return jwt.encode({k: v for k, v in values.items() if v is not None}, SECRET, "HS256")

    codes = await _codes(
        app,
        {
            "right": token(),
            "audience-list": token(aud=["other", "skillsvc"]),
            "wrong-audience": token(aud="billing"),
            "no-audience": token(aud=None),
            "wrong-issuer": token(iss="https://evil.example"),
            "no-issuer": token(iss=None),
        },
    )
    assert codes == {
        "right": C.OK,
        "audience-list": C.OK,
        "wrong-audience": C.UNAUTHENTICATED,
        "no-audience": C.UNAUTHENTICATED,
        "wrong-issuer": C.UNAUTHENTICATED,
        "no-issuer": C.UNAUTHENTICATED,
    }


async def test_auth_none_makes_every_caller_the_admin(
    stub: skill_service_pb2_grpc.SkillServiceStub,
) -> None:
    # The default loopback configuration: no token needed, and a token is not read.
    await stub.ListSkillDefinitions(skill_service_pb2.ListSkillDefinitionsRequest())
    await stub.ListSkillDefinitions(
        skill_service_pb2.ListSkillDefinitionsRequest(), metadata=bearer("garbage")
    )
    created = await stub.CreateSkillDefinition(
        skill_service_pb2.CreateSkillDefinitionRequest(
            definition=resources_pb2.SkillDefinition(skill_id="no-auth")
        ),
        metadata=ADMIN,
    )
    assert created.tenant == ""
