"""Summarise a ``py-spy record --format raw`` profile: the top frames, self and total.

``python -m bench._profile FILE [--top N] [--match TEXT]`` prints, for the samples in
FILE (collapsed stacks, one ``frame;frame;… count`` per line), the frames with the
most samples on top of the stack (self) and anywhere in it (total, each frame counted
once per stack), as percentages of all samples. ``--match`` keeps only stacks that
contain TEXT (e.g. a thread name or a function), to look inside one code path.
"""

from __future__ import annotations

import argparse
import collections
import re
from pathlib import Path

_THREAD = re.compile(r"^(thread|process) \(")


def load(path: Path) -> list[tuple[list[str], int]]:
    stacks = []
    for line in path.read_text().splitlines():
        frames, _, count = line.rpartition(" ")
        if not frames or not count.isdigit():
            continue
        parts = [f for f in frames.split(";") if not _THREAD.match(f)]
        stacks.append((parts, int(count)))
    return stacks


def _short(frame: str) -> str:
    """``func (path/to/module.py:12)`` → ``func (module.py:12)``."""
    name, _, where = frame.partition(" (")
    if not where:
        return frame
    file_line = where.rstrip(")")
    file, _, line = file_line.rpartition(":")
    parts = Path(file).parts
    short = "/".join(parts[-2:]) if len(parts) >= 2 else file
    return f"{name} ({short}:{line})"


def summarise(stacks: list[tuple[list[str], int]], top: int, match: str | None = None) -> str:
    if match:
        stacks = [(s, c) for s, c in stacks if any(match in f for f in s)]
    total = sum(c for _, c in stacks)
    if not total:
        return "no samples"
    own: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    for frames, count in stacks:
        if frames:
            own[_short(frames[-1])] += count
        for frame in {_short(f) for f in frames}:
            inclusive[frame] += count
    lines = [f"{total} samples" + (f" in stacks containing {match!r}" if match else "")]
    lines.append("self:")
    lines += [f"  {100 * c / total:5.1f}%  {f}" for f, c in own.most_common(top)]
    lines.append("total:")
    lines += [f"  {100 * c / total:5.1f}%  {f}" for f, c in inclusive.most_common(top)]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench._profile", description=__doc__)
    parser.add_argument("file", type=Path)
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--match", default=None)
    args = parser.parse_args()
    print(summarise(load(args.file), args.top, args.match))


if __name__ == "__main__":
    main()
