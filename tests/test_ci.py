"""``.ci/run`` is honest about the PostgreSQL it tests against (issue 13, CI honesty).

``.ci/machine-pg`` is run for real against the test server and a dead port; ``.ci/run``
itself runs with a ``make`` on PATH that only records its arguments (the real
``make test`` is the whole suite, which this test is part of).
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import stat
import subprocess
from pathlib import Path

import asyncpg
import pytest

from tests.processes import child_env, free_port

ROOT = Path(__file__).resolve().parent.parent


async def _run(*argv: str, env: dict[str, str]) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        *argv,
        cwd=ROOT,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    async with asyncio.timeout(120):
        out, _ = await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, out.decode()


async def _major(url: str) -> int:
    conn = await asyncpg.connect(url)
    try:
        return int(await conn.fetchval("SHOW server_version_num")) // 10000
    finally:
        await conn.close()


def _env(**values: str) -> dict[str, str]:
    # Never start a cluster from a test: the machine's server is shared. CI is unset
    # unless a test sets it: the suite itself runs under CI=true in CI.
    env = child_env(SKILLSVC_CI_PG_CLUSTER="", **values)
    if "CI" not in values:
        env.pop("CI", None)
    return env


async def test_machine_pg_prints_the_version_of_a_server_that_answers(pg_server_url: str) -> None:
    major = await _major(pg_server_url)
    code, out = await _run(
        ".ci/machine-pg", pg_server_url, env=_env(SKILLSVC_CI_PG_MAJOR=str(major))
    )
    assert code == 0, out
    assert out.startswith(f"PostgreSQL {major}.")
    code, out = await _run(
        ".ci/machine-pg", pg_server_url, env=_env(SKILLSVC_CI_PG_MAJOR=str(major - 1))
    )
    assert code == 1
    assert f"expected {major - 1}" in out


def _fake_make(tmp_path: Path) -> tuple[Path, Path]:
    bin_dir, log = tmp_path / "bin", tmp_path / "make.log"
    bin_dir.mkdir()
    make = bin_dir / "make"
    make.write_text(
        f'#!/bin/sh\necho "make $* SKILLSVC_TEST_DATABASE_URL=${{SKILLSVC_TEST_DATABASE_URL:-}}"'
        f" >> {log}\n"
    )
    make.chmod(make.stat().st_mode | stat.S_IEXEC)
    # The Node client's step too: the real one is `npm test` in clients/node.
    npm = bin_dir / "npm"
    npm.write_text(
        f'#!/bin/sh\necho "npm $* in $(basename "$PWD")" >> {tmp_path / "npm.log"}\n'
        'if [ "$1" = "--version" ]; then echo 0.0.0-fake; fi\n'
    )
    npm.chmod(npm.stat().st_mode | stat.S_IEXEC)
    # The tools section installs what is missing with apt-get: never from a test.
    for tool in ("shellcheck", "promtool"):
        stand_in = bin_dir / tool
        stand_in.write_text("#!/bin/sh\nexit 0\n")
        stand_in.chmod(stand_in.stat().st_mode | stat.S_IEXEC)
    return bin_dir, log


async def test_ci_fails_when_the_machine_server_does_not_answer(tmp_path: Path) -> None:
    bin_dir, log = _fake_make(tmp_path)
    dead = f"postgresql://postgres@127.0.0.1:{free_port()}/test"
    path = f"{bin_dir}{os.pathsep}{os.environ['PATH']}"
    code, out = await _run(".ci/run", env=_env(CI="true", PATH=path, SKILLSVC_CI_DATABASE_URL=dead))
    assert code == 1, out
    assert f"pass 2: FAILED: no PostgreSQL 15 answers at {dead}" in out
    # The summary says what did run, on which PostgreSQL.
    assert re.search(r"pass 1: make test .* on the embedded PostgreSQL \d+\.\d+", out), out
    assert log.read_text().splitlines() == ["make test SKILLSVC_TEST_DATABASE_URL="]
    # Outside CI the missing server is a visible skip, not a failure.
    code, out = await _run(".ci/run", env=_env(PATH=path, SKILLSVC_CI_DATABASE_URL=dead))
    assert code == 0, out
    assert "pass 2: SKIPPED" in out


async def test_ci_runs_the_second_pass_on_the_machine_server(
    tmp_path: Path, pg_server_url: str
) -> None:
    bin_dir, log = _fake_make(tmp_path)
    path = f"{bin_dir}{os.pathsep}{os.environ['PATH']}"
    major = await _major(pg_server_url)
    code, out = await _run(
        ".ci/run",
        env=_env(
            CI="true",
            PATH=path,
            SKILLSVC_CI_DATABASE_URL=pg_server_url,
            SKILLSVC_CI_PG_MAJOR=str(major),
        ),
    )
    assert code == 0, out
    assert log.read_text().splitlines() == [
        "make test SKILLSVC_TEST_DATABASE_URL=",
        f"make pytest SKILLSVC_TEST_DATABASE_URL={pg_server_url}",
    ]
    assert f"pass 2: pytest on the machine's PostgreSQL {major}." in out
    assert (tmp_path / "npm.log").read_text().splitlines()[:2] == [
        "npm ci --no-audit --no-fund in node",
        "npm test in node",
    ]
    assert "node client: npm ci && npm test in clients/node" in out


@pytest.mark.skipif(shutil.which("shellcheck") is None, reason="shellcheck is not installed")
def test_ci_scripts_pass_shellcheck() -> None:
    result = subprocess.run(
        ["shellcheck", ".ci/run", ".ci/machine-pg"], cwd=ROOT, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout
