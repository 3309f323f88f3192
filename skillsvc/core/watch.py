"""WatchSkills: the change log of definitions and packages, fanned out to watchers.

The log (``skill_events``) is written by triggers in every writing transaction, which
also NOTIFY ``skillsvc_events``. One :class:`WatchHub` per process, woken by that
notification (through the process's one LISTEN connection), by a reconnect of that
connection, or every ``resync_seconds`` as a safety net, publishes the new events
(numbers them; see the migration for why the writers do not) and reads them once, in
pages, handing each page to every watcher of the process: one query per page, not per
watcher.

Each watcher follows its own position (the last seq it has passed, shown or
filtered). It starts from the table (replaying from ``since``), then follows the
hub's pages. Whenever it cannot be sure to have everything after its position (a
page that starts past it, a queue that overflowed because the client reads slowly),
it goes back to the table from its position, so nothing is lost and nothing repeated,
and its memory stays bounded by ``max_queued`` events. It does so too when a skill
went private (an event that ``narrows``): the table then hides the skill's earlier
events, which pages read before still show. A position older than the retained
history is ``OUT_OF_RANGE``; a quiet watcher is sent its position now and then so
that its client's last seq does not become one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import AsyncGenerator, AsyncIterator, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Final

from skillsvc.core.definitions import check_skill_id
from skillsvc.core.models import SkillEvent
from skillsvc.db import Database
from skillsvc.errors import InvalidArgument, OutOfRange, Unavailable
from skillsvc.loops import Backoff, cancel_and_wait

logger = logging.getLogger(__name__)

MAX_SKILL_IDS: Final = 1000
"""The most skills one WatchSkills call may name."""


@dataclass(frozen=True)
class Synced:
    """The stream's marker: every change up to ``seq`` was replayed (or precedes the call)."""

    seq: int
    """The head of the log when the watcher went live; a valid ``since``."""


@dataclass(frozen=True)
class _Page:
    after: int
    """The hub's position before these events."""
    events: tuple[SkillEvent, ...]
    """Every event after ``after`` up to ``last``, unfiltered."""
    last: int
    """The hub's position after them."""


@dataclass(eq=False)
class _Watcher:
    """One watcher's queue of pages, bounded by a number of events."""

    limit: int
    pages: deque[_Page] = field(default_factory=deque)
    queued: int = 0
    overflowed: bool = False
    closing: bool = False
    ready: asyncio.Event = field(default_factory=asyncio.Event)

    def put(self, page: _Page) -> None:
        if self.overflowed:
            return
        if self.queued + len(page.events) > self.limit:
            # The client reads more slowly than changes come: forget the queue and
            # let the watcher read the table from its own position instead.
            self.overflowed = True
            self.pages.clear()
            self.queued = 0
        else:
            self.pages.append(page)
            self.queued += len(page.events)
        self.ready.set()

    def take(self) -> _Page | None:
        if not self.pages:
            if not (self.overflowed or self.closing):
                self.ready.clear()
            return None
        page = self.pages.popleft()
        self.queued -= len(page.events)
        return page

    def resync(self) -> None:
        self.overflowed = True
        self.pages.clear()
        self.queued = 0
        self.ready.set()


@dataclass(frozen=True)
class WatchSettings:
    """The hub's knobs."""

    retention_seconds: float
    """How long published events are kept (SKILLSVC_WATCH_RETENTION)."""
    page_size: int = 500
    """Events read per query."""
    max_queued: int = 1000
    """Events a watcher may have waiting before it goes back to the table."""
    resync_seconds: float = 5.0
    """The hub reads at least this often while it has watchers (lost NOTIFYs)."""
    marker_seconds: float = 3600.0
    """A watcher whose position moved past events it may not see, without sending
    anything, sends a SYNCED with its position after this long (at most a quarter of
    the retention), so a client's resume position never falls out of the history."""

    @property
    def marker_interval(self) -> float:
        """The longest a watcher keeps a moved position to itself."""
        return min(self.marker_seconds, self.retention_seconds / 4)


class WatchHub:
    """The per-process reader of the change log and its watchers."""

    def __init__(self, db: Database, settings: WatchSettings) -> None:
        self._db = db
        self.settings = settings
        """The knobs (tests shrink the bounds)."""
        self._watchers: set[_Watcher] = set()
        self._wake = asyncio.Event()
        self._last: int | None = None
        self._closing = False
        self._task: asyncio.Task[None] | None = None
        self._last_prune = 0.0
        self.reads = 0
        """Pages read by the hub (tests check the fan-out shares them)."""

    @property
    def position(self) -> int | None:
        """The last seq the hub has read (None while it has no watchers)."""
        return self._last

    def backlog(self) -> list[tuple[int, bool]]:
        """Each watcher's queued events and whether it overflowed (for tests, operators)."""
        return [(w.queued, w.overflowed) for w in self._watchers]

    # -- the change stream -----------------------------------------------------------

    def dispatch(self, _payload: str) -> None:
        """A ``skillsvc_events`` notification: new events were committed."""
        self._wake.set()

    def resync(self) -> None:
        """The LISTEN connection is back: read what its loss may have hidden."""
        self._wake.set()

    async def start(self) -> None:
        """Start the reader."""
        self._task = asyncio.create_task(self._run(), name="watch-hub")

    async def close(self) -> None:
        """End every watch (UNAVAILABLE, resume elsewhere) and stop the reader."""
        self._closing = True
        for watcher in self._watchers:
            watcher.closing = True
            watcher.ready.set()
        if self._task is not None:
            await cancel_and_wait([self._task])

    async def _run(self) -> None:
        backoff = Backoff(base=0.2, cap=self.settings.resync_seconds)
        while True:
            # asyncio.timeout, not wait_for: on Python 3.11 wait_for can swallow the
            # cancellation that close() sends, and close() would wait for ever.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.settings.resync_seconds):
                    await self._wake.wait()
            self._wake.clear()
            try:
                await self.poll()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                # The database is away (or anything else): watchers wait, and the
                # next step reads from where the hub stopped.
                delay = backoff.next_delay()
                if backoff.failures == 1:
                    logger.warning("reading the change log failed: %s", exc, exc_info=exc)
                await asyncio.sleep(delay)
                self._wake.set()
                continue
            if backoff.failures:
                logger.info("reading the change log again after %d failure(s)", backoff.failures)
                backoff.reset()

    async def poll(self) -> None:
        """One round: number new events, read them once, hand them to every watcher.

        The hub's task calls it when woken; anyone may (a test, a command)."""
        if not self._watchers:
            # Nobody to read for: start afresh from the head when someone comes.
            self._last = None
            return
        head = await self._db.events.publish()
        if self._last is None or head < self._last:
            # Starting (the first watcher came), or a head below ours (the database
            # was restored from a backup): the hub starts at the head, and every
            # watcher reads from the table whatever lies between its own position
            # and there (events published by this very call, say).
            self._last = head
            for watcher in self._watchers:
                watcher.resync()
            return
        while self._last < head:
            window = await self._db.events.window(self._last, self.settings.page_size)
            self.reads += 1
            if window.head > self._last and (
                window.oldest is None or window.oldest > self._last + 1
            ):
                # Pruned before the hub read it (it lagged by the whole retention):
                # each watcher finds out from the table whether it lost anything.
                self._last = window.head
                for watcher in self._watchers:
                    watcher.resync()
                return
            if not window.events:
                return
            page = _Page(self._last, tuple(window.events), window.events[-1].seq)
            self._last = page.last
            # A skill went private: its earlier events were re-tagged in the table,
            # but pages read before hold them as they were. Every watcher drops what
            # it holds (and stops within a page it is sending) and reads from the
            # table, so no one is shown what is hidden now. Rare: one read each.
            narrows = any(event.narrows for event in page.events)
            for watcher in self._watchers:
                if narrows:
                    watcher.resync()
                else:
                    watcher.put(page)

    async def prune_if_due(self) -> int:
        """Delete events past the retention, at most every ``retention / 2`` (≤ 60 s)."""
        now = time.monotonic()
        if now - self._last_prune < min(60.0, self.settings.retention_seconds / 2):
            return 0
        self._last_prune = now
        # Numbered first: an event that was never numbered could not be reported lost,
        # and without watchers nobody else numbers them.
        await self._db.events.publish()
        removed = await self._db.events.prune(self.settings.retention_seconds)
        if removed:
            logger.debug("pruned %d change-log event(s)", removed)
        return removed

    # -- watchers ------------------------------------------------------------------------

    @contextlib.contextmanager
    def _subscribe(self) -> Iterator[_Watcher]:
        watcher = _Watcher(self.settings.max_queued)
        self._watchers.add(watcher)
        self._wake.set()
        try:
            yield watcher
        finally:
            self._watchers.discard(watcher)

    async def watch(
        self, visible_to: str | None, skill_ids: Sequence[str], since: int | None
    ) -> AsyncGenerator[SkillEvent | Synced, None]:
        """Events after ``since`` (None: from now) that ``visible_to`` may see, forever.

        First the retained history after ``since``, then a :class:`Synced`, then
        each change as it is published, and another :class:`Synced` (a position
        marker) when the position moved past events the caller may not see and
        nothing was sent for ``marker_interval``. Ends with UNAVAILABLE when the server shuts
        down; OUT_OF_RANGE when ``since`` (or the watcher's position, should the
        client fall a whole retention behind) is no longer retained.
        """
        if since is not None and since < 0:
            raise InvalidArgument.field("since", "must not be negative")
        if len(skill_ids) > MAX_SKILL_IDS:
            raise InvalidArgument.field("skill_ids", f"at most {MAX_SKILL_IDS} skills")
        for i, skill_id in enumerate(skill_ids):
            check_skill_id(skill_id, f"skill_ids[{i}]")
        wanted = frozenset(skill_ids)
        if self._closing:
            raise _shutting_down()
        with self._subscribe() as watcher:
            # Everything committed before the call is numbered at or below this head.
            head = await self._db.events.publish()
            pos = head if since is None else since
            # From the table: the replay after since, and again whenever the queue
            # cannot be trusted to hold everything after pos.
            replay = since is not None
            synced = False
            # The last position the client was given, and when: a position moved past
            # invisible events only is sent as a SYNCED once it is interval old.
            sent, sent_at = pos, time.monotonic()
            interval = self.settings.marker_interval
            while True:
                if watcher.closing:
                    raise _shutting_down()
                if replay or watcher.overflowed:
                    replay = watcher.overflowed = False
                    async for item in self._replay(visible_to, skill_ids, watcher, pos):
                        if isinstance(item, int):
                            pos = item
                        else:
                            yield item
                            sent, sent_at = item.seq, time.monotonic()
                    continue
                if not synced or (pos > sent and time.monotonic() - sent_at >= interval):
                    synced = True
                    sent, sent_at = pos, time.monotonic()
                    yield Synced(pos)
                    continue  # the queue may have overflowed meanwhile
                page = watcher.take()
                if page is None:
                    wait = None if pos == sent else sent_at + interval - time.monotonic()
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(wait):
                            await watcher.ready.wait()
                    continue
                if page.after > pos:
                    # Changes between our position and this page were read by the hub
                    # before we joined (or while we were away): from the table.
                    watcher.resync()
                    continue
                for event in page.events:
                    if watcher.overflowed:
                        # A skill went private (or the queue overflowed) while this
                        # page was being sent: the rest from the table, from pos.
                        break
                    if event.seq <= pos:
                        continue
                    if _matches(event, visible_to, wanted):
                        yield event
                        sent, sent_at = event.seq, time.monotonic()
                    pos = event.seq
                else:
                    pos = max(pos, page.last)

    async def _replay(
        self, visible_to: str | None, skill_ids: Sequence[str], watcher: _Watcher, pos: int
    ) -> AsyncIterator[SkillEvent | int]:
        """The retained events after ``pos`` the watcher may see, each followed by the
        new position (an int), ending at the head read last."""
        page_size = self.settings.page_size
        while True:
            if watcher.closing:
                raise _shutting_down()
            window = await self._db.events.window(
                pos, page_size, visible_to=visible_to, skill_ids=skill_ids, filtered=True
            )
            if pos > window.head:
                # Not a position of this log: from another database, or this one
                # restored from a backup taken before it.
                raise OutOfRange(
                    f"since {pos} is ahead of the change log (head {window.head}); "
                    "list the skills again and watch without since",
                    reason="SINCE_UNKNOWN",
                    metadata={"head": str(window.head)},
                )
            if pos < window.head and (window.oldest is None or window.oldest > pos + 1):
                raise OutOfRange(
                    f"the change log no longer holds the events after {pos} "
                    f"(oldest kept: {window.oldest or window.head + 1}); list the skills "
                    "again and watch without since",
                    reason="HISTORY_PRUNED",
                    metadata={
                        "oldest": str(window.oldest or window.head + 1),
                        "head": str(window.head),
                    },
                )
            for event in window.events:
                yield event
                yield event.seq
            if len(window.events) < page_size:
                yield max(pos, window.head)
                return
            pos = window.events[-1].seq


def _matches(event: SkillEvent, visible_to: str | None, wanted: frozenset[str]) -> bool:
    return event.visible_to(visible_to) and (not wanted or event.skill_id in wanted)


def _shutting_down() -> Unavailable:
    return Unavailable(
        "the server is shutting down; watch again with since set to the last seq received",
        reason="SHUTTING_DOWN",
    )
