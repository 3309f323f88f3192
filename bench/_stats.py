"""Percentiles, per-run metrics and the targets they are checked against."""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

TIMES = "\u00d7"
"""The multiplication sign of ratios."""
EN_DASH = "\u2013"
"""The dash of ranges."""


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0-100) with linear interpolation (numpy's default)."""
    if not values:
        return math.nan
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100
    lo = math.floor(pos)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def summary(values: Sequence[float]) -> dict[str, float | int]:
    """Count, p50, p90, p99, min, max and mean of ``values``."""
    if not values:
        return {"n": 0}
    return {
        "n": len(values),
        "p50": percentile(values, 50),
        "p90": percentile(values, 90),
        "p99": percentile(values, 99),
        "min": min(values),
        "max": max(values),
        "mean": statistics.fmean(values),
    }


@dataclass(frozen=True)
class Target:
    """What a metric must satisfy; absolute bounds and bounds on the ratio to its baseline."""

    le: float | None = None
    """Value at most this."""
    ge: float | None = None
    """Value at least this."""
    ratio_le: float | None = None
    """value / baseline at most this."""
    ratio_ge: float | None = None
    """value / baseline at least this."""

    def describe(self, unit: str) -> str:
        parts = []
        if self.le is not None:
            parts.append(f"≤ {_num(self.le)} {unit}".rstrip())
        if self.ge is not None:
            parts.append(f"≥ {_num(self.ge)} {unit}".rstrip())
        if self.ratio_le is not None:
            parts.append(f"≤ {_num(self.ratio_le)}{TIMES} baseline")
        if self.ratio_ge is not None:
            parts.append(f"≥ {_num(self.ratio_ge)}{TIMES} baseline")
        return "; ".join(parts) or "—"

    def met(self, value: float, ratio: float | None) -> bool:
        checks = []
        if self.le is not None:
            checks.append(value <= self.le)
        if self.ge is not None:
            checks.append(value >= self.ge)
        if self.ratio_le is not None:
            checks.append(ratio is not None and ratio <= self.ratio_le)
        if self.ratio_ge is not None:
            checks.append(ratio is not None and ratio >= self.ratio_ge)
        return all(checks)

    @property
    def empty(self) -> bool:
        return all(v is None for v in (self.le, self.ge, self.ratio_le, self.ratio_ge))


@dataclass
class Row:
    """One line of the results table: a metric measured in several runs."""

    scenario: str
    """``"1 small install"`` …"""
    metric: str
    """What was measured."""
    unit: str
    """``ms``, ``s``, ``QPS`` …"""
    runs: list[float]
    """The metric in each measured run (block)."""
    baseline: str = ""
    """What the baseline is, empty when there is none."""
    baseline_runs: list[float] = field(default_factory=list)
    """The baseline's metric in each run, interleaved with ``runs``."""
    target: Target = field(default_factory=Target)
    """What it must meet."""
    note: str = ""
    """Anything a reader needs to read the number right."""

    @property
    def value(self) -> float:
        return statistics.median(self.runs) if self.runs else math.nan

    @property
    def baseline_value(self) -> float | None:
        return statistics.median(self.baseline_runs) if self.baseline_runs else None

    @property
    def ratio(self) -> float | None:
        base = self.baseline_value
        if base is None or base == 0 or math.isnan(self.value):
            return None
        return self.value / base

    @property
    def met(self) -> bool | None:
        if self.target.empty:
            return None
        if math.isnan(self.value):
            return False
        return self.target.met(self.value, self.ratio)

    def to_json(self) -> dict[str, Any]:
        return {
            "scenario": self.scenario,
            "metric": self.metric,
            "unit": self.unit,
            "value": self.value,
            "min": min(self.runs) if self.runs else None,
            "max": max(self.runs) if self.runs else None,
            "runs": self.runs,
            "baseline": self.baseline or None,
            "baseline_value": self.baseline_value,
            "baseline_runs": self.baseline_runs or None,
            "ratio": self.ratio,
            "target": None if self.target.empty else self.target.describe(self.unit),
            "met": self.met,
            "note": self.note or None,
        }


def _num(x: float) -> str:
    """A number with about three significant digits, thousands separated."""
    if math.isnan(x):
        return "n/a"
    if x == 0:
        return "0"
    ax = abs(x)
    if x == int(x) and ax < 1e9:
        return f"{int(x):,}"
    if ax >= 100:
        return f"{x:,.0f}"
    if ax >= 10:
        return f"{x:.1f}"
    if ax >= 1:
        return f"{x:.2f}"
    return f"{x:.3g}"


fmt = _num
