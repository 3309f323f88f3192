"""Key rotation without downtime (SPEC §7) on a real ``skillsvc serve`` process.

The process verifies with a secrets file and a JWKS file; the test rewrites both and
sends SIGHUP, as an operator (or a Kubernetes secret update plus a signal) would:

1. before: tokens of the old secret and the old JWKS key pass, the new ones do not;
2. new keys published next to the old ones + SIGHUP: new tokens are accepted at once,
   old ones keep working until their own ``exp`` (an expired old token is
   TOKEN_EXPIRED: its signature still verifies, its time is over);
3. old keys retired + SIGHUP: old tokens are TOKEN_INVALID, new ones pass;
4. a broken file + SIGHUP: an error is logged (naming the variable, not the key) and
   the keys in use stay.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from pathlib import Path
from typing import Any

import grpc
import jwt
from cryptography.hazmat.primitives.asymmetric import ec

from skillsvc.v1 import skill_service_pb2, skill_service_pb2_grpc
from tests.helpers import reason
from tests.processes import Served

C = grpc.StatusCode
OLD_SECRET = "old-secret-" + "a" * 32
NEW_SECRET = "new-secret-" + "b" * 32


def _token(key: Any, algorithm: str, *, kid: str | None = None, exp_in: int = 600) -> str:
    now = int(time.time())
    claims = {"sub": "rotator", "tenant": "", "roles": ["reader"], "iat": now, "exp": now + exp_in}
    headers = {"kid": kid} if kid else None
    return jwt.encode(claims, key, algorithm, headers=headers)


def _jwks(**keys: ec.EllipticCurvePrivateKey) -> str:
    entries = []
    for kid, private in keys.items():
        jwk = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(private.public_key()))
        entries.append({**jwk, "kid": kid, "use": "sig", "alg": "ES256"})
    return json.dumps({"keys": entries})


async def _outcome(address: str, token: str) -> str:
    """``OK`` or the ErrorInfo reason of a ListSkillDefinitions call with ``token``."""
    # A connection of its own each time (not gRPC's shared one), so that with several
    # worker processes on one port the calls reach different workers.
    options = [("grpc.use_local_subchannel_pool", 1)]
    async with grpc.aio.insecure_channel(address, options=options) as channel:
        stub = skill_service_pb2_grpc.SkillServiceStub(channel)
        try:
            await stub.ListSkillDefinitions(
                skill_service_pb2.ListSkillDefinitionsRequest(),
                metadata=(("authorization", f"Bearer {token}"),),
                timeout=10,
            )
        except grpc.aio.AioRpcError as exc:
            error = exc
        else:
            return "OK"
    assert error.code() == C.UNAUTHENTICATED, error.details()
    return reason(error)


async def _sighup_and_wait(served: Served, marker: str, processes: int = 1) -> None:
    """Send SIGHUP and wait (bounded) until ``processes`` more ``marker`` lines are logged."""
    before = served.log.read_text().count(marker)
    os.kill(served.proc.pid, signal.SIGHUP)
    async with asyncio.timeout(30):
        while served.log.read_text().count(marker) < before + processes:
            assert served.proc.returncode is None, served.log.read_text()
            await asyncio.sleep(0.05)


async def test_sighup_rotates_keys_without_a_restart(serve, db_url: str, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    old_ec, new_ec = (
        ec.generate_private_key(ec.SECP256R1()),
        ec.generate_private_key(ec.SECP256R1()),
    )
    secrets_file, jwks_file = tmp_path / "jwt-secrets", tmp_path / "jwks.json"
    secrets_file.write_text(f"# current\n{OLD_SECRET}\n")
    jwks_file.write_text(_jwks(old=old_ec))
    served = await serve(
        SKILLSVC_DATABASE_URL=db_url,
        SKILLSVC_AUTH="jwt",
        SKILLSVC_JWT_SECRETS_FILE=str(secrets_file),
        SKILLSVC_JWT_JWKS_FILE=str(jwks_file),
        SKILLSVC_JWT_LEEWAY_SECONDS="0",
        # One process, so "the log says reloaded" means every call sees the new keys.
        SKILLSVC_WORKERS="1",
    )
    await served.wait_serving()
    pid = served.proc.pid
    old = {
        "old-hs": _token(OLD_SECRET, "HS256"),
        "old-jwks": _token(old_ec, "ES256", kid="old"),
    }
    new = {
        "new-hs": _token(NEW_SECRET, "HS256"),
        "new-jwks": _token(new_ec, "ES256", kid="new"),
    }
    expired_old = _token(OLD_SECRET, "HS256", exp_in=-60)

    async def outcomes(tokens: dict[str, str]) -> dict[str, str]:
        return {name: await _outcome(served.address, t) for name, t in tokens.items()}

    # 1. Only the old keys verify.
    assert await outcomes(old) == {"old-hs": "OK", "old-jwks": "OK"}
    assert await outcomes(new) == {"new-hs": "TOKEN_INVALID", "new-jwks": "TOKEN_INVALID"}

    # 2. Publish the new keys beside the old ones: both generations pass.
    secrets_file.write_text(f"{NEW_SECRET}\n{OLD_SECRET}\n")
    jwks_file.write_text(_jwks(new=new_ec, old=old_ec))
    await _sighup_and_wait(served, "JWT keys reloaded")
    assert await outcomes(new) == {"new-hs": "OK", "new-jwks": "OK"}
    assert await outcomes(old) == {"old-hs": "OK", "old-jwks": "OK"}
    assert await _outcome(served.address, expired_old) == "TOKEN_EXPIRED"

    # 3. Retire the old keys once their tokens have expired.
    secrets_file.write_text(f"{NEW_SECRET}\n")
    jwks_file.write_text(_jwks(new=new_ec))
    await _sighup_and_wait(served, "JWT keys reloaded")
    assert await outcomes(old) == {"old-hs": "TOKEN_INVALID", "old-jwks": "TOKEN_INVALID"}
    assert await outcomes(new) == {"new-hs": "OK", "new-jwks": "OK"}

    # 4. A broken file keeps the keys in use, and says so without leaking a secret.
    secrets_file.write_text(f"{NEW_SECRET}\ntoo-short\n")
    await _sighup_and_wait(served, "keeping the current JWT keys")
    jwks_file.write_text("{not json")
    secrets_file.write_text(f"{NEW_SECRET}\n")
    await _sighup_and_wait(served, "keeping the current JWT keys")
    assert await outcomes(new) == {"new-hs": "OK", "new-jwks": "OK"}
    log = served.log.read_text()
    assert "SKILLSVC_JWT_SECRETS_FILE: line 2" in log
    assert "SKILLSVC_JWT_JWKS_FILE: not JSON" in log
    assert NEW_SECRET not in log and OLD_SECRET not in log and "too-short" not in log

    # The same process all along, and it still stops cleanly.
    assert served.proc.pid == pid
    assert await served.terminate() == 0


async def test_sighup_without_jwt_changes_nothing(serve, db_url: str) -> None:  # type: ignore[no-untyped-def]
    # SIGHUP's default action would kill the process: it must be handled in every mode.
    served = await serve(SKILLSVC_DATABASE_URL=db_url, SKILLSVC_WORKERS="1")
    await served.wait_serving()
    await _sighup_and_wait(served, "SIGHUP: no keys to reload")
    await served.wait_serving()
    assert await served.terminate() == 0


async def test_sighup_reaches_every_worker(serve, db_url: str, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    secrets_file = tmp_path / "jwt-secrets"
    secrets_file.write_text(f"{OLD_SECRET}\n")
    served = await serve(
        SKILLSVC_DATABASE_URL=db_url,
        SKILLSVC_AUTH="jwt",
        SKILLSVC_JWT_SECRETS_FILE=str(secrets_file),
        SKILLSVC_WORKERS="2",
    )
    # Announced once both workers serve (the second starts after the first): a worker
    # started after the files change reads the new keys and logs no reload.
    await served.announced_address()
    new = _token(NEW_SECRET, "HS256")
    assert await _outcome(served.address, new) == "TOKEN_INVALID"
    secrets_file.write_text(f"{NEW_SECRET}\n{OLD_SECRET}\n")
    # The supervisor passes SIGHUP to both workers; each logs its reload.
    await _sighup_and_wait(served, "JWT keys reloaded", processes=2)
    outcomes = [await _outcome(served.address, new) for _ in range(8)]
    assert outcomes == ["OK"] * 8
    assert await served.terminate() == 0


def _children(pid: int) -> list[int]:
    return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


async def test_sighup_while_a_worker_starts_waits_until_it_serves(  # type: ignore[no-untyped-def]
    serve, db_url: str, tmp_path: Path
) -> None:
    secrets_file = tmp_path / "jwt-secrets"
    secrets_file.write_text(f"{OLD_SECRET}\n")
    served = await serve(
        SKILLSVC_DATABASE_URL=db_url,
        SKILLSVC_AUTH="jwt",
        SKILLSVC_JWT_SECRETS_FILE=str(secrets_file),
        SKILLSVC_WORKERS="2",
    )
    # The moment the second worker exists, before it can handle SIGHUP (whose default
    # action would kill it): the supervisor must hold the signal back until it serves.
    async with asyncio.timeout(60):
        while len(_children(served.proc.pid)) < 2:
            assert served.proc.returncode is None, served.log.read_text()
            await asyncio.sleep(0.005)
    assert "[worker 1]" not in served.log.read_text(), "too late: worker 1 already logs"
    await _sighup_and_wait(served, "JWT keys reloaded", processes=2)
    await served.announced_address()
    assert "exited" not in served.log.read_text(), served.log.read_text()
    assert await _outcome(served.address, _token(OLD_SECRET, "HS256")) == "OK"
    assert await served.terminate() == 0
