"""skillctl's progress display: rich on a terminal, plain lines anywhere else."""

from __future__ import annotations

from typing import TextIO

from rich.console import Console
from rich.progress import (
    BarColumn,
    Progress,
    SpinnerColumn,
    TaskID,
    TextColumn,
)

from skillsvc_client.v1 import resources_pb2


def stage_name(stage: int) -> str:
    """``INSTALL_STAGE_VALIDATING`` -> ``validating``."""
    return resources_pb2.InstallStage.Name(stage).removeprefix("INSTALL_STAGE_").lower()  # type: ignore[arg-type]


def human_bytes(count: int) -> str:
    """A byte count for people (binary units)."""
    value = float(count)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


class ProgressView:
    """Shows install events as they come.

    On a terminal: a rich progress bar with the bytes sent for the upload, then a
    spinner and a pulsing bar naming each stage, with a ticked line kept per finished
    stage. Elsewhere (a pipe,
    a log file): one plain line per stage and per quarter of the upload, so CI logs
    stay readable.
    """

    def __init__(self, stream: TextIO, *, enabled: bool = True) -> None:
        self._enabled = enabled
        self._stream = stream
        self._console = Console(file=stream, stderr=True)
        self._tty = enabled and self._console.is_terminal
        self._progress: Progress | None = None
        self._task: TaskID | None = None
        self._description = ""
        self._stage = -1
        self._quarter = -1

    def __enter__(self) -> ProgressView:
        if self._tty:
            self._progress = Progress(
                SpinnerColumn(),
                TextColumn("{task.description:<40}"),
                BarColumn(),
                TextColumn("{task.fields[transfer]}"),
                console=self._console,
            )
            self._progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._progress is not None:
            self._progress.stop()

    def update(self, event: resources_pb2.InstallEvent) -> None:
        """Show one event (repeats of a stage only move the bar)."""
        if not self._enabled:
            return
        name = stage_name(event.stage)
        changed = event.stage != self._stage
        self._stage = event.stage
        if self._progress is not None:
            self._rich(event, name, changed)
        else:
            self._plain(event, name, changed)

    def _rich(self, event: resources_pb2.InstallEvent, name: str, changed: bool) -> None:
        assert self._progress is not None
        description = f"{name}: {event.message}" if event.message else name
        total = event.bytes_total or None  # no byte count: the bar pulses
        if changed or self._task is None:
            if self._task is not None:
                # Keep a line per finished stage above the live one.
                self._progress.console.print(f"[green]✓[/] {self._description}")
                self._progress.remove_task(self._task)
            self._task = self._progress.add_task(description, total=total, transfer="")
        self._description = description
        transfer = ""
        if total:
            transfer = f"{human_bytes(event.bytes_done)} of {human_bytes(total)}"
        self._progress.update(
            self._task, description=description, completed=event.bytes_done, transfer=transfer
        )
        self._progress.refresh()  # events are few (one per MiB or stage): draw each one

    def _plain(self, event: resources_pb2.InstallEvent, name: str, changed: bool) -> None:
        if event.stage == resources_pb2.INSTALL_STAGE_RECEIVING and event.bytes_total > 0:
            quarter = min(4, event.bytes_done * 4 // event.bytes_total)
            if quarter != self._quarter or changed:
                self._quarter = quarter
                percent = event.bytes_done * 100 // event.bytes_total
                self._line(
                    f"{name}: {human_bytes(event.bytes_done)} of "
                    f"{human_bytes(event.bytes_total)} ({percent}%)"
                )
            return
        if changed:
            self._line(f"{name}: {event.message}" if event.message else name)

    def _line(self, text: str) -> None:
        self._stream.write(text + "\n")
        self._stream.flush()
