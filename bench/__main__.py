"""``python -m bench [--quick] [--only 1,3] [--profile DIR]``: see ``bench/__init__.py``."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import datetime
import os
import shutil
import stat
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench import _report
from bench._client import Stub, channel
from bench._procs import Postgres, Profiler, Served, find_py_spy
from bench._scenarios import FULL, QUICK, SCENARIOS, Bench

MiB = 1024 * 1024
RESULTS = Path(__file__).resolve().parent / "results"

# Scenario 6 installs a 100 MiB package: the archive is a little over 100 MiB and its
# one file exactly 100 MiB, so both limits are raised just past the defaults.
# Scenarios 1-7 measure one worker process (what py-spy and the CPU and RSS figures
# follow); scenario 8 compares worker counts on servers of its own.
SERVER_ENV = {
    "SKILLSVC_WORKERS": "1",
    "SKILLSVC_MAX_PACKAGE_BYTES": str(110 * MiB),
    "SKILLSVC_MAX_FILE_BYTES": str(110 * MiB),
}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="a smoke-sized run (under 2 minutes)")
    parser.add_argument(
        "--only",
        default="",
        help="comma-separated scenario numbers to run (1,2,3,4,5,6,8,9; 3 includes 7)",
    )
    parser.add_argument(
        "--output", type=Path, default=RESULTS, help="results directory (bench/results)"
    )
    parser.add_argument(
        "--profile",
        type=Path,
        default=None,
        help="record the server with py-spy during each scenario into this directory",
    )
    parser.add_argument(
        "--profile-mode",
        choices=("cpu", "gil", "native"),
        default="cpu",
        help="py-spy samples: threads on CPU (default), only the GIL holder (--gil), "
        "or with C frames (--native)",
    )
    parser.add_argument("--py-spy", default=None, help="py-spy executable (default: on PATH)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary data dir")
    parser.add_argument(
        "--env",
        action="append",
        default=[],
        metavar="SKILLSVC_NAME=VALUE",
        help="a setting for every server the benchmark starts (repeatable), to compare "
        "configurations run by run",
    )
    return parser


def _log_fn(start: float) -> Any:
    def log(message: str) -> None:
        print(f"[{time.perf_counter() - start:6.1f}s] {message}", file=sys.stderr, flush=True)

    return log


def _remove_tree(path: Path) -> None:
    """Remove the temporary tree; installed packages are read-only, so chmod as needed."""

    def retry(func: Any, target: str, _exc: Any) -> None:
        parent = os.path.dirname(target)
        os.chmod(parent, os.stat(parent).st_mode | stat.S_IWUSR | stat.S_IXUSR)
        func(target)

    shutil.rmtree(path, onerror=retry)


async def run(args: argparse.Namespace) -> int:
    start = time.perf_counter()
    log = _log_fn(start)
    plan = QUICK if args.quick else FULL
    started = datetime.datetime.now().astimezone().isoformat(timespec="seconds")
    only = {s.strip() for s in args.only.split(",") if s.strip()}
    unknown = only - set(SCENARIOS)
    if unknown:
        print(f"unknown scenarios: {', '.join(sorted(unknown))}", file=sys.stderr)
        return 2
    profiler = Profiler(None, None)
    if args.profile is not None:
        py_spy = find_py_spy(args.py_spy)
        if py_spy is None:
            print("--profile needs py-spy (pip install py-spy, or --py-spy PATH)", file=sys.stderr)
            return 2
        args.profile.mkdir(parents=True, exist_ok=True)
        extra = {"cpu": (), "gil": ("--gil",), "native": ("--native",)}[args.profile_mode]
        profiler = Profiler(py_spy, args.profile, extra)

    server_env = {**SERVER_ENV, **dict(item.split("=", 1) for item in args.env)}
    # Before the server starts: the code it imports is the code this names.
    machine_info = _report.machine()
    tmp = Path(tempfile.mkdtemp(prefix="skillsvc-bench-"))
    log(f"data in {tmp}; starting skillsvc serve on the embedded PostgreSQL")
    server = Served.start("server-a", tmp / "data", tmp, **server_env)
    bench: Bench | None = None
    try:
        await server.wait_serving()
        log(f"serving on {server.address} (pid {server.pid})")
        async with channel(server.address) as chan:
            bench = Bench(
                plan=plan,
                tmp=tmp,
                server=server,
                postgres=Postgres(tmp / "data" / "postgres"),
                stub=Stub(chan),
                server_env=server_env,
                profiler=profiler,
                log=log,
            )
            for number, scenario in SCENARIOS.items():
                if only and number not in only:
                    continue
                await scenario(bench)
    finally:
        code = server.stop()
        if code not in (0, None):
            log(f"server exited with {code}; log tail:\n{server.log.read_text()[-3000:]}")
        if args.keep:
            log(f"kept {tmp}")
        else:
            _remove_tree(tmp)
    wall = time.perf_counter() - start
    stem = started[:10] + ("-quick" if args.quick else "")
    json_path, md_path = _report.write(
        args.output,
        stem,
        mode="quick" if args.quick else "full",
        started=started,
        wall_seconds=wall,
        machine_info=machine_info,
        rows=bench.rows,
        raw=bench.raw,
        plan=dataclasses.asdict(plan),
    )
    print(md_path.read_text())
    log(f"wrote {json_path} and {md_path} in {wall:.0f} s")
    return 0


def main() -> int:
    return asyncio.run(run(_parser().parse_args()))


if __name__ == "__main__":
    raise SystemExit(main())
