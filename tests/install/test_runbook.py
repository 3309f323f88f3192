"""The operator's commands: fsck, gc, backup/restore, history and status."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import asyncpg
import grpc

from skillsvc.server import App
from skillsvc.v1 import resources_pb2, skill_service_pb2, skill_service_pb2_grpc
from tests.install.conftest import Stub, install_and_wait
from tests.packages import skill_archive
from tests.processes import child_env

OK = resources_pb2.OPERATION_STATE_SUCCEEDED


async def skillsvc(app: App, *args: str, env: dict[str, str] | None = None) -> tuple[int, Any]:
    """Run ``skillsvc ARGS --json`` against the test's database and store."""
    settings = app.settings
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "skillsvc.cli",
        *args,
        "--json",
        env=child_env(
            **{
                "SKILLSVC_DATABASE_URL": str(settings.database_url),
                "SKILLSVC_DATA_DIR": str(settings.data_dir),
                **(env or {}),
            }
        ),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await proc.communicate()
    assert proc.returncode is not None
    try:
        return proc.returncode, json.loads(out)
    except json.JSONDecodeError:
        raise AssertionError(f"no JSON from skillsvc {args}: {out!r} {err.decode()}") from None


async def _two_versions(stub: Stub, skill: str) -> None:
    for version in ("1.0.0", "1.1.0"):
        final, _ = await install_and_wait(stub, skill, skill_archive(skill, version))
        assert final.state == OK


async def test_fsck_finds_and_repairs_a_damaged_package(app: App, stub: Stub, skill: str) -> None:
    await _two_versions(stub, skill)
    code, report = await skillsvc(app, "fsck")
    assert code == 0
    assert report["healthy"]
    root = app.store.root / "packages" / skill
    victim = root / "1.0.0" / "SKILL.md"
    os.chmod(victim, 0o644)
    victim.write_text("---\nname: pdf-tools\ndescription: hijacked\n---\n")
    (root / "1.1.0" / "references" / "guide.md").unlink()
    code, report = await skillsvc(app, "fsck")
    assert code == 1
    damaged = {(d["version"], d["problems"][0].split(":")[0]) for d in report["damaged_packages"]}
    assert {v for v, _ in damaged} == {"1.0.0", "1.1.0"}
    code, report = await skillsvc(app, "fsck", "--repair")
    assert code == 0
    assert {d["repair"] for d in report["damaged_packages"]} == {"restored from its archive"}
    assert victim.read_text().startswith("---\nname: pdf-tools\ndescription: A test skill")
    assert (root / "1.1.0" / "references" / "guide.md").exists()
    code, report = await skillsvc(app, "fsck")
    assert report["healthy"], report


async def test_fsck_retires_a_package_whose_archive_is_gone_and_fixes_strays(
    app: App, stub: Stub, skill: str, db: asyncpg.Connection
) -> None:
    await _two_versions(stub, skill)
    old = await db.fetchval("SELECT sha256 FROM skill_packages WHERE version = '1.0.0'")
    (app.store.root / "blobs" / "sha256" / old).unlink()
    (app.store.root / "packages" / skill / "1.0.0" / "SKILL.md").unlink()
    stray = app.store.root / "packages" / skill / "9.9.9"
    stray.mkdir()
    (app.store.root / "packages" / skill / "current").unlink()
    os.symlink("1.0.0", app.store.root / "packages" / skill / "current")
    code, report = await skillsvc(app, "fsck", "--repair")
    assert code == 0
    assert report["damaged_packages"][0]["repair"].startswith("marked FAILED")
    assert await db.fetchval("SELECT state FROM skill_packages WHERE version = '1.0.0'") == "FAILED"
    assert report["orphan_directories"] == [
        # The retired package's files stay until gc removes FAILED packages.
        {"skill_id": skill, "version": "1.0.0", "state": "FAILED"},
        {"skill_id": skill, "version": "9.9.9", "state": None, "repair": "removed"},
    ]
    assert not stray.exists()
    code, report = await skillsvc(app, "gc", "--older-than", "0s")
    assert report["failed_packages"] == [{"skill_id": skill, "version": "1.0.0"}]
    assert not (app.store.root / "packages" / skill / "1.0.0").exists()
    assert os.readlink(app.store.root / "packages" / skill / "current") == "1.1.0"


async def test_fsck_repair_removes_a_damaged_archive_so_the_same_bytes_heal_it(
    app: App, stub: Stub, skill: str, db: asyncpg.Connection
) -> None:
    await _two_versions(stub, skill)
    old = await db.fetchval("SELECT sha256 FROM skill_packages WHERE version = '1.0.0'")
    blob = app.store.root / "blobs" / "sha256" / old
    data = blob.read_bytes()
    os.chmod(blob, 0o644)
    blob.write_bytes(bytes(b ^ 0xFF for b in data))  # rotted in place, same size

    _code, report = await skillsvc(app, "fsck", "--repair")

    assert "damaged object was removed" in report["damaged_packages"][0]["repair"]
    assert not blob.exists()
    again, _ = await install_and_wait(stub, skill, data, activate=False)
    assert again.state == OK, again.error
    assert blob.read_bytes() == data
    code, report = await skillsvc(app, "fsck")
    assert code == 0
    assert report["healthy"], report


async def test_gc_dry_run_then_for_real(
    app: App, stub: Stub, skill: str, db: asyncpg.Connection
) -> None:
    await install_and_wait(stub, skill, skill_archive(skill, "1.0.0"))
    rejected = skill_archive(skill, "1.0.0", description="other bytes")
    failed, _ = await install_and_wait(stub, skill, rejected)
    assert failed.state == resources_pb2.OPERATION_STATE_FAILED
    kept = app.store.root / "kept" / "sha256" / hashlib.sha256(rejected).hexdigest()
    assert kept.exists(), "a failed upload's bytes are kept for Retry"
    # Within the retention nothing goes.
    code, report = await skillsvc(app, "gc")
    assert (report["failed_operations"], report["blobs"]) == (0, [])
    code, report = await skillsvc(app, "gc", "--older-than", "0s", "--dry-run")
    assert code == 0
    assert report["failed_operations"] == 1
    assert report["freed_bytes"] == len(rejected)
    assert kept.exists()
    assert await db.fetchval("SELECT count(*) FROM skill_install_logs WHERE state = 'FAILED'") == 1
    code, report = await skillsvc(app, "gc", "--older-than", "0s")
    assert report["freed_bytes"] == len(rejected)
    assert not kept.exists()
    assert await db.fetchval("SELECT count(*) FROM skill_install_logs WHERE state = 'FAILED'") == 0
    # What is installed is untouched.
    code, report = await skillsvc(app, "fsck")
    assert report["healthy"], report


async def test_gc_leaves_a_young_unowned_archive_for_the_grace(
    app: App, stub: Stub, skill: str
) -> None:
    from skillsvc.core.maintenance import UNOWNED_ARCHIVE_GRACE_SECONDS

    await install_and_wait(stub, skill, skill_archive(skill, "1.0.0"))
    archives = app.store.root / "blobs" / "sha256"
    young, old = archives / ("a" * 64), archives / ("b" * 64)
    for path in (young, old):
        path.write_bytes(b"an archive no package owns")
    aged = time.time() - UNOWNED_ARCHIVE_GRACE_SECONDS - 60
    os.utime(old, (aged, aged))

    code, report = await skillsvc(app, "gc")

    assert code == 0, report
    assert [b["sha256"] for b in report["blobs"]] == ["b" * 64]
    assert report["unowned_archives_in_grace"] == ["a" * 64]
    assert young.exists()
    assert not old.exists()
    code, report = await skillsvc(app, "fsck")
    assert report["orphan_blobs"] == ["a" * 64]


async def test_history_and_status(app: App, stub: Stub, skill: str) -> None:
    await _two_versions(stub, skill)
    await install_and_wait(stub, skill, skill_archive("wrong-name", "2.0.0"))
    await stub.Rollback(skill_service_pb2.RollbackRequest(skill_id=skill, reason="bad 1.1.0"))
    code, rows = await skillsvc(app, "history", skill)
    assert code == 0
    assert [r["type"] for r in rows] == ["ROLLBACK", "INSTALL", "INSTALL", "INSTALL"]
    assert rows[0]["reason"] == "bad 1.1.0"
    assert rows[1]["state"] == "FAILED"
    assert rows[1]["error_reason"] == "VALIDATION_FAILED"
    code, status = await skillsvc(app, "status")
    assert status["installs"]["succeeded"] == 2
    assert status["installs"]["failed"] == 1
    assert abs(status["success_rate"] - 2 / 3) < 1e-9
    assert status["installs"]["mean_seconds"] > 0
    assert status["recent_failures"][0]["error_reason"] == "VALIDATION_FAILED"
    assert status["storage"][0]["skill_id"] == skill
    assert status["storage"][0]["ready_versions"] == 2


async def test_backup_then_restore_into_a_fresh_deployment(
    empty_db_url: str, app: App, stub: Stub, skill: str, make_app, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    await _two_versions(stub, skill)
    await stub.Rollback(skill_service_pb2.RollbackRequest(skill_id=skill, reason="r"))
    data = skill_archive(skill, "1.0.0")
    code, info = await skillsvc(app, "backup", str(tmp_path / "backup"))
    assert code == 0, info
    assert info["ready_packages"] == 2
    assert info["missing_from_store_copy"] == []

    fresh_dir = tmp_path / "fresh"
    env = {"SKILLSVC_DATABASE_URL": empty_db_url, "SKILLSVC_DATA_DIR": str(fresh_dir)}
    code, info = await skillsvc(app, "restore", str(tmp_path / "backup"), env=env)
    assert code == 0, info
    # Restoring twice is refused: the target is no longer empty.
    code, _ = await _raw(app, env, "restore", str(tmp_path / "backup"))
    assert code != 0

    restored: App = await make_app(database_url=empty_db_url, data_dir=fresh_dir)
    async with grpc.aio.insecure_channel(restored.address) as channel:
        again = skill_service_pb2_grpc.SkillServiceStub(channel)
        definition = await again.GetSkillDefinition(
            skill_service_pb2.GetSkillDefinitionRequest(skill_id=skill)
        )
        assert definition.current_version == "1.0.0"
        packages = await again.ListPackages(skill_service_pb2.ListPackagesRequest(skill_id=skill))
        assert sorted(p.version for p in packages.packages) == ["1.0.0", "1.1.0"]
        log = await again.ListOperations(skill_service_pb2.ListOperationsRequest(skill_id=skill))
        assert log.operations[0].type == resources_pb2.OPERATION_TYPE_ROLLBACK
        assert len(log.operations) == 3
        call = again.DownloadPackage(
            skill_service_pb2.DownloadPackageRequest(skill_id=skill, version="1.0.0")
        )
        assert b"".join([m.chunk async for m in call]) == data
        # Rollback's integrity check passes on the restored files.
        await again.Rollback(
            skill_service_pb2.RollbackRequest(skill_id=skill, target_version="1.1.0")
        )
    assert (restored.store.root / "packages" / skill / "current" / "SKILL.md").exists()


async def _raw(app: App, env: dict[str, str], *args: str) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "skillsvc.cli",
        *args,
        env=child_env(**env),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, out.decode()
