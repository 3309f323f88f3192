"""Real ``skillsvc serve`` child processes for tests that need signals and crashes."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

SERVING = health_pb2.HealthCheckResponse.SERVING


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def child_env(**values: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SKILLSVC_")}
    env.update(values)
    return env


class Served:
    """A ``skillsvc serve`` child process."""

    def __init__(self, proc: asyncio.subprocess.Process, address: str, log: Path) -> None:
        self.proc = proc
        self.address = address
        self.log = log

    async def wait_serving(self, timeout: float = 60) -> None:
        """Wait until health says SERVING and ``serve`` has said it serves.

        The supervisor says so once every worker is up; the first one answers health
        before its siblings have started, and a SIGTERM then would stop a worker that
        is still starting.
        """
        async with asyncio.timeout(timeout):
            while not re.search(rb"skillsvc \S+ serving on ", self.log.read_bytes()):
                if self.proc.returncode is not None:
                    raise AssertionError(f"serve exited early:\n{self.log.read_text()}")
                await asyncio.sleep(0.1)
            while True:
                if self.proc.returncode is not None:
                    raise AssertionError(f"serve exited early:\n{self.log.read_text()}")
                try:
                    async with grpc.aio.insecure_channel(self.address) as chan:
                        reply = await health_pb2_grpc.HealthStub(chan).Check(
                            health_pb2.HealthCheckRequest(), timeout=1
                        )
                        if reply.status == SERVING:
                            return
                except grpc.aio.AioRpcError:
                    pass
                await asyncio.sleep(0.1)

    async def announced_address(self, timeout: float = 60) -> str:
        """The address ``serve`` reports once it serves (needed with port 0)."""
        async with asyncio.timeout(timeout):
            while True:
                found = re.search(r"skillsvc \S+ serving on ([^\s\"]+)", self.log.read_text())
                if found:
                    return found.group(1)
                if self.proc.returncode is not None:
                    raise AssertionError(f"serve exited early:\n{self.log.read_text()}")
                await asyncio.sleep(0.1)

    def rss_peak_kib(self) -> int:
        """The child's peak resident set size so far (VmHWM), in KiB."""
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
        raise AssertionError("no VmHWM")

    async def terminate(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        async with asyncio.timeout(60):
            return await self.proc.wait()


@pytest.fixture
async def serve(tmp_path: Path) -> AsyncIterator[Callable[..., Awaitable[Served]]]:
    """Start ``skillsvc serve`` children (killed at the end if still running)."""
    started: list[Served] = []

    async def start(**env: str) -> Served:
        port = free_port()
        env.setdefault("SKILLSVC_DATA_DIR", str(tmp_path / "data"))
        env.setdefault("SKILLSVC_METRICS_ADDR", "")
        # One process unless a test asks for workers: the tests of signals, crashes and
        # memory watch that process (tests/install/test_workers.py runs workers).
        env.setdefault("SKILLSVC_WORKERS", "1")
        env.setdefault("SKILLSVC_LISTEN_ADDR", f"127.0.0.1:{port}")
        log = tmp_path / f"serve-{port}.log"
        with log.open("wb") as out:
            proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "skillsvc.cli",
                "serve",
                env=child_env(**env),
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        served = Served(proc, env["SKILLSVC_LISTEN_ADDR"], log)
        started.append(served)
        if served.address.endswith(":0"):
            served.address = await served.announced_address()
        return served

    yield start
    for served in started:
        if served.proc.returncode is None:
            served.proc.kill()
            await served.proc.wait()


@pytest.fixture
def embedded_data_dir() -> Iterator[Path]:
    """A data dir for an embedded PostgreSQL started by a child, outside basetemp.

    pytest resets its basetemp tree to mode 0700 whenever another pytest run starts
    (other runs share the machine), which locks out the server's own (non-root) user.
    """
    base = Path(tempfile.mkdtemp(prefix="skillsvc-test-data-"))
    yield base / "data"
    shutil.rmtree(base, ignore_errors=True)
