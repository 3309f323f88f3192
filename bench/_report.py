"""The machine line and the results files: ``<date>.json`` and ``<date>.md``."""

from __future__ import annotations

import json
import os
import platform
import subprocess
from pathlib import Path
from typing import Any

from bench._procs import REPO
from bench._stats import EN_DASH, TIMES, Row, fmt


def _run(*cmd: str) -> str:
    try:
        return subprocess.run(
            cmd, capture_output=True, text=True, check=True, cwd=REPO
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return ""


def machine() -> dict[str, Any]:
    """nproc, CPU model, Python, kernel, and the code that was measured."""
    model = ""
    for line in _run("lscpu").splitlines():
        if line.startswith("Model name:"):
            model = line.split(":", 1)[1].strip()
    # --no-optional-locks: read only, never refresh the index of a shared checkout.
    dirty = _run("git", "--no-optional-locks", "status", "--porcelain", "--untracked-files=no")
    return {
        "nproc": int(_run("nproc") or os.cpu_count() or 0),
        "cpu_model": model,
        "python": platform.python_version(),
        "kernel": platform.release(),
        "commit": _run("git", "rev-parse", "--short", "HEAD"),
        "local_changes": bool(dirty),
    }


def machine_line(m: dict[str, Any]) -> str:
    changes = " with uncommitted changes" if m["local_changes"] else ""
    return (
        f"nproc {m['nproc']}, {m['cpu_model']}, Python {m['python']}, Linux {m['kernel']}; "
        f"skillsvc {m['commit']}{changes}"
    )


def _value(row: Row) -> str:
    if not row.runs:
        return "n/a"
    return (
        f"{fmt(row.value)} {row.unit} "
        f"({fmt(min(row.runs))}{EN_DASH}{fmt(max(row.runs))}, "
        f"{len(row.runs)} run{'s' if len(row.runs) != 1 else ''})"
    )


def _baseline(row: Row) -> str:
    base = row.baseline_value
    if base is None:
        return "—"
    return f"{fmt(base)} {row.unit} ({row.baseline})"


def _ratio(row: Row) -> str:
    ratio = row.ratio
    return "—" if ratio is None else f"{ratio:.2f}{TIMES}"


def _met(row: Row) -> str:
    met = row.met
    return "" if met is None else ("yes" if met else "**no**")


def table(rows: list[Row]) -> str:
    lines = [
        f"| scenario | metric | value (median, min{EN_DASH}max, runs) | baseline | ratio | target "
        "| met? |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for row in rows:
        target = "" if row.target.empty else row.target.describe(row.unit)
        lines.append(
            f"| {row.scenario} | {row.metric} | {_value(row)} | {_baseline(row)} | "
            f"{_ratio(row)} | {target} | {_met(row)} |"
        )
    return "\n".join(lines)


NOTES = """\
How to read it: each scenario ran in several runs (blocks), interleaved with its
baseline (A B A B …) in the same invocation; a value is the median over runs of the
metric computed within each run (percentiles are per run), with the smallest and
largest run. Ratios are value ÷ baseline; only ratios are comparable across
invocations. CPU figures are user + system seconds of the process (all threads; the
server's with its archive processes), read from /proc. Progress latency is the
watcher's arrival time minus the event's `time` (PostgreSQL `clock_timestamp()` in
the UPDATE that sends the NOTIFY), same machine clock; the first event of each
stream (the snapshot read at subscription) is not counted. Peak RSS is VmHWM after
resetting it through /proc/<pid>/clear_refs (and 20 ms VmRSS samples), of the
skillsvc process only (PostgreSQL and the archive processes run in their own)."""


def write(
    out_dir: Path,
    stem: str,
    *,
    mode: str,
    started: str,
    wall_seconds: float,
    machine_info: dict[str, Any],
    rows: list[Row],
    raw: dict[str, Any],
    plan: dict[str, Any],
) -> tuple[Path, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    # Scenarios run in the order that keeps them independent; the table follows issue 7.
    rows = sorted(rows, key=lambda r: int(r.scenario.split()[0]))
    json_path = out_dir / f"{stem}.json"
    md_path = out_dir / f"{stem}.md"
    doc = {
        "mode": mode,
        "started": started,
        "wall_seconds": wall_seconds,
        "machine": machine_info,
        "plan": plan,
        "rows": [r.to_json() for r in rows],
        "raw": raw,
    }
    json_path.write_text(json.dumps(doc, indent=2, default=str) + "\n")
    notes = [f"- {r.scenario} / {r.metric}: {r.note}" for r in rows if r.note]
    missed = sum(1 for r in rows if r.met is False)
    md = [
        f"# skillsvc benchmark, {started[:10]} ({mode} mode)",
        "",
        *(
            [
                "Quick mode: every scenario is smaller (scenario 3 is 200 installs, not "
                "1,000); a smoke test, not the issue's measurement.",
                "",
            ]
            if mode == "quick"
            else []
        ),
        f"Machine: {machine_line(machine_info)}. Wall time {wall_seconds:.0f} s. "
        f"Targets missed: {missed} of {sum(1 for r in rows if r.met is not None)}.",
        "",
        table(rows),
        "",
        NOTES,
    ]
    if notes:
        md += ["", *notes]
    md_path.write_text("\n".join(md) + "\n")
    return json_path, md_path
