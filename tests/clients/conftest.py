"""Fixtures for the client tests: skill folders, an HTTP source, skillctl as a process."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from skillsvc.config import Settings
from tests.packages import skill_md

CLIENT_ROOT = Path(__file__).resolve().parents[2] / "clients" / "python"


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """The default test server, allowed to fetch from the loopback HTTP source."""
    return dataclasses.replace(settings, url_allow_private=True)


def make_skill_folder(
    root: Path, name: str = "pdf-tools", version: str | None = "1.0.0", *, big: bool = False
) -> Path:
    """A skill folder with SKILL.md, an executable script, a reference and junk that
    packing must leave out. ``big`` adds 2.5 MiB of incompressible data (3 chunks)."""
    root.mkdir(parents=True)
    (root / "SKILL.md").write_text(skill_md(name, version, "Tools for PDF files"))
    (root / "scripts").mkdir()
    script = root / "scripts" / "run.sh"
    script.write_text("#!/bin/sh\necho hi\n")
    script.chmod(0o755)
    (root / "references").mkdir()
    (root / "references" / "guide.md").write_text("# Guide\n")
    for junk in (".git", "__pycache__", "scripts/__pycache__"):
        (root / junk).mkdir()
        (root / junk / "x.pyc").write_bytes(os.urandom(16))
    (root / ".DS_Store").write_bytes(os.urandom(16))
    if big:
        (root / "assets").mkdir()
        # Deterministic but incompressible: the digest chain of a seed.
        (root / "assets" / "blob.bin").write_bytes(_incompressible(5 << 19))
    return root


def _incompressible(size: int) -> bytes:
    import hashlib

    out = bytearray()
    block = b"seed"
    while len(out) < size:
        block = hashlib.sha512(block).digest()
        out += block
    return bytes(out[:size])


class HttpSource:
    """A loopback HTTP server in a thread serving ``files`` (404 for anything else)."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.gate = threading.Event()  # cleared: responses wait until a test sets it
        self.gate.set()
        files, gate = self.files, self.gate

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                gate.wait(timeout=60)
                body = files.get(self.path)
                if body is None:
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}{path}"

    def __enter__(self) -> HttpSource:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.gate.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()


@pytest.fixture
def http_source() -> Iterator[HttpSource]:
    """A loopback HTTP server for URL installs."""
    with HttpSource() as source:
        yield source


@dataclass
class Result:
    """What one skillctl run did."""

    code: int
    out: str
    err: str

    def json(self) -> Any:
        return json.loads(self.out)


def skillctl_env(**values: str) -> dict[str, str]:
    """The environment of a skillctl child: no inherited SKILLSVC_*, the client importable."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SKILLSVC_")}
    env["PYTHONPATH"] = str(CLIENT_ROOT)
    env.update(values)
    return env


async def skillctl(address: str, *argv: str, cwd: Path | None = None, **env: str) -> Result:
    """Run skillctl as a real process (stdout and stderr are pipes, not terminals)."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "skillsvc_client.cli",
        *argv,
        env=skillctl_env(SKILLSVC_ADDR=address, **env),
        stdin=subprocess.DEVNULL,
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    async with asyncio.timeout(90):
        out, err = await proc.communicate()
    result = Result(proc.returncode or 0, out.decode(), err.decode())
    # Whatever happens, skillctl speaks in one line, never a traceback.
    assert "Traceback" not in result.err, result.err
    errors = [line for line in result.err.splitlines() if line.startswith("skillctl: ")]
    if result.code != 0:
        # Progress lines may come first; the error is one line, the last.
        assert len(errors) == 1 and result.err.rstrip("\n").endswith(errors[0]), result.err
    else:
        assert not errors, result.err
    return result
