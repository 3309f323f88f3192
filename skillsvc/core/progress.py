"""Fan-out of operation changes to InstallProgress watchers.

Every change to an operation is written with a ``NOTIFY`` (see the repository's
``UPDATE_OPERATION``); one LISTEN connection per process feeds :meth:`ProgressHub.dispatch`,
which hands each change to the queues of that operation's watchers. A watcher reads the
operation from the table first and then follows the queue, dropping changes whose ``seq``
it has already seen, so it neither misses nor repeats a state whichever arrives first.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator, Iterator
from datetime import datetime

from skillsvc.core.models import Change, Operation, OperationState, Stage
from skillsvc.db import Database
from skillsvc.errors import InvalidArgument, NotFound, Unavailable

logger = logging.getLogger(__name__)

_REREAD = frozenset({OperationState.FAILED, OperationState.CANCELLED})

# A watcher re-reads the table when it has heard nothing for this long, so a lost
# notification (a dropped LISTEN connection) delays an event but never loses it.
RESYNC_SECONDS = 5.0


def parse_operation_id(operation_id: str) -> str:
    """The canonical form of a UUID operation id, or INVALID_ARGUMENT."""
    import uuid

    try:
        return str(uuid.UUID(operation_id))
    except ValueError:
        raise InvalidArgument.field("operation_id", "must be a UUID") from None


class ProgressHub:
    """Routes changes from the LISTEN connection to the watchers in this process."""

    def __init__(self) -> None:
        self._watchers: dict[str, set[asyncio.Queue[Change | None]]] = {}

    def dispatch(self, payload: str) -> None:
        """Hand one NOTIFY payload to the watchers of its operation."""
        try:
            data = json.loads(payload)
            change = Change(
                operation_id=data["operation_id"],
                seq=int(data["seq"]),
                state=OperationState(data["state"]),
                stage=Stage(data["stage"]),
                bytes_done=int(data["bytes_done"]),
                bytes_total=int(data["bytes_total"]),
                message=str(data["message"]),
                time=datetime.fromisoformat(data["time"]),
                version=str(data.get("version") or ""),
            )
        except (ValueError, KeyError, TypeError):
            logger.warning("ignoring a malformed progress notification: %.200s", payload)
            return
        for queue in self._watchers.get(change.operation_id, ()):
            queue.put_nowait(change)

    def resync(self) -> None:
        """Ask every watcher to re-read its operation (notifications may have been lost)."""
        for queues in self._watchers.values():
            for queue in queues:
                queue.put_nowait(None)

    @contextlib.contextmanager
    def subscribe(self, operation_id: str) -> Iterator[asyncio.Queue[Change | None]]:
        """A queue receiving the operation's changes while the block runs."""
        queue: asyncio.Queue[Change | None] = asyncio.Queue()
        self._watchers.setdefault(operation_id, set()).add(queue)
        try:
            yield queue
        finally:
            queues = self._watchers.get(operation_id)
            if queues is not None:
                queues.discard(queue)
                if not queues:
                    del self._watchers[operation_id]

    async def watch(
        self, db: Database, visible_to: str | None, operation_id: str
    ) -> AsyncIterator[Operation | Change]:
        """The operation's current state, then every change, ending after a terminal one.

        Failures are read from the table, so their last item carries the error with
        its details.
        """
        operation_id = parse_operation_id(operation_id)
        with self.subscribe(operation_id) as queue:
            current = await db.repo.get_operation(operation_id, visible_to)
            if current is None:
                raise NotFound(f"operation {operation_id} not found")
            yield current
            seen = current.seq
            terminal = current.state.terminal
            while not terminal:
                # asyncio.timeout, not wait_for: on Python 3.11 wait_for can swallow a
                # cancellation (or lose the item) when both happen at once.
                try:
                    async with asyncio.timeout(RESYNC_SECONDS):
                        change = await queue.get()
                except TimeoutError:
                    change = None
                if change is not None and change.seq <= seen:
                    continue
                item: Operation | Change
                # A failure is read from the table, for its error and details; every
                # other change is complete as notified.
                if change is None or change.state in _REREAD:
                    try:
                        latest = await db.repo.get_operation(operation_id, visible_to)
                    except Unavailable:
                        # The database is away: keep watching; the listener resyncs
                        # every watcher once it is back.
                        continue
                    if latest is None:  # deleted with its skill while being watched
                        raise NotFound(f"operation {operation_id} not found")
                    if latest.seq <= seen:
                        continue
                    item, seen, terminal = latest, latest.seq, latest.state.terminal
                else:
                    item, seen, terminal = change, change.seq, change.state.terminal
                yield item
