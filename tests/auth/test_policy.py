"""The authorization table: complete, fail-closed, and the same in the README."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import jwt
import pytest

from skillsvc.auth import (
    ROLE_CAPABILITIES,
    RPC_CAPABILITIES,
    Capability,
    authorize,
    mint_token,
    parse_ttl,
    policy_table,
)
from skillsvc.core.models import Caller
from skillsvc.errors import PermissionDenied
from skillsvc.v1 import skill_service_pb2
from tests.auth.conftest import SECRET, World, bearer
from tests.processes import child_env


def test_every_rpc_of_the_service_has_a_row() -> None:
    service = skill_service_pb2.DESCRIPTOR.services_by_name["SkillService"]
    assert set(RPC_CAPABILITIES) == set(service.methods_by_name)


def test_an_rpc_missing_from_the_table_is_refused_even_to_admins() -> None:
    admin = Caller("root", "", frozenset({"admin"}))
    authorize(admin, "Rollback")
    with pytest.raises(PermissionDenied):
        authorize(admin, "SomethingNew")


def test_roles() -> None:
    assert ROLE_CAPABILITIES["reader"] == {Capability.READ}
    assert ROLE_CAPABILITIES["publisher"] == set(Capability)
    reader = Caller("bob", "acme", frozenset({"reader"}))
    nobody = Caller("eve", "acme", frozenset())
    authorize(reader, "GetPackage")
    with pytest.raises(PermissionDenied, match="admin or publisher"):
        authorize(reader, "Install")
    with pytest.raises(PermissionDenied):
        authorize(nobody, "GetPackage")


def test_readme_carries_the_table(repo_root: Path) -> None:
    readme = (repo_root / "README.md").read_text()
    assert policy_table() in readme, "README authorization table is stale: see skillsvc.auth"


def test_parse_ttl() -> None:
    assert parse_ttl("90") == 90
    assert parse_ttl("45s") == 45
    assert parse_ttl("15m") == 900
    assert parse_ttl("1h") == 3600
    assert parse_ttl("7d") == 7 * 86400
    for bad in ("", "0", "-1h", "1w", "h", "1.5h"):
        with pytest.raises(ValueError):
            parse_ttl(bad)


def test_mint_token_refuses_weak_secrets_and_unknown_roles() -> None:
    with pytest.raises(ValueError, match="32 bytes"):
        mint_token("short", subject="a", tenant="", roles=["admin"], ttl_seconds=60)
    with pytest.raises(ValueError, match="unknown role"):
        mint_token(SECRET, subject="a", tenant="", roles=["root"], ttl_seconds=60)


def _token_command(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "skillsvc.cli", "token", *args],
        env=child_env(**env),
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_token_command_output_verifies_and_carries_the_claims() -> None:
    before = int(time.time())
    result = _token_command(
        "--sub",
        "alice",
        "--tenant",
        "acme",
        "--role",
        "publisher",
        "--role",
        "reader",
        "--ttl",
        "1h",
        SKILLSVC_JWT_SECRET=SECRET,
    )
    assert result.returncode == 0, result.stderr
    token = result.stdout.strip()
    assert "\n" not in token
    claims = jwt.decode(token, SECRET, algorithms=["HS256"])
    assert claims["sub"] == "alice"
    assert claims["tenant"] == "acme"
    assert claims["roles"] == ["publisher", "reader"]
    assert claims["exp"] - claims["iat"] == 3600
    assert before <= claims["iat"] <= int(time.time())
    assert jwt.get_unverified_header(token)["alg"] == "HS256"


def test_token_command_signs_with_the_newest_secret_of_the_secrets_file(tmp_path: Path) -> None:
    newest = "newest-" + SECRET
    (tmp_path / "secrets").write_text(f"# rotation: newest first\n{newest}\n{SECRET}\n")
    result = _token_command(
        "--sub", "ops", "--role", "admin", SKILLSVC_JWT_SECRETS_FILE=str(tmp_path / "secrets")
    )
    assert result.returncode == 0, result.stderr
    assert jwt.decode(result.stdout.strip(), newest, algorithms=["HS256"])["sub"] == "ops"
    result = _token_command("--sub", "ops", "--role", "admin")
    assert result.returncode == 2
    assert "SKILLSVC_JWT_SECRET: required" in result.stderr


def test_token_command_adds_issuer_and_audience() -> None:
    result = _token_command(
        "--sub",
        "ops",
        "--role",
        "admin",
        SKILLSVC_JWT_SECRET=SECRET,
        SKILLSVC_JWT_ISSUER="https://idp.example",
        SKILLSVC_JWT_AUDIENCE="skillsvc",
    )
    assert result.returncode == 0, result.stderr
    claims = jwt.decode(
        result.stdout.strip(),
        SECRET,
        algorithms=["HS256"],
        issuer="https://idp.example",
        audience="skillsvc",
    )
    assert claims["tenant"] == ""
    assert claims["roles"] == ["admin"]


def test_token_command_needs_the_secret() -> None:
    result = _token_command("--sub", "a", "--role", "admin")
    assert result.returncode == 2
    assert "SKILLSVC_JWT_SECRET" in result.stderr
    result = _token_command(
        "--sub", "a", "--role", "admin", "--ttl", "soon", SKILLSVC_JWT_SECRET=SECRET
    )
    assert result.returncode == 2
    assert "duration" in result.stderr


async def test_a_minted_token_is_accepted_by_the_server(world: World) -> None:
    token = mint_token(SECRET, subject="cli", tenant="acme", roles=["reader"], ttl_seconds=60)
    reply = await world.stub.ListSkillDefinitions(
        skill_service_pb2.ListSkillDefinitionsRequest(), metadata=bearer(token)
    )
    assert "acme-private" in {d.skill_id for d in reply.definitions}
