"""The change log of definitions and packages (``skill_events``): publish, read, prune.

Triggers (``migrations/0005_skill_events.sql``, ``0009_event_visibility.sql``) write
the events and NOTIFY :data:`EVENTS_CHANNEL`; 0005 explains why events are numbered by a serialised
publisher rather than by the writers (``seq > last`` must never skip a late commit).
"""

# S608: the only interpolation is this module's own column list, never input.
# ruff: noqa: S608

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final

from skillsvc.core.models import EventWindow, SkillEvent, SkillEventType
from skillsvc.db._driver import Executor, translate_errors

EVENTS_CHANNEL: Final = "skillsvc_events"
"""The NOTIFY channel of new (still unpublished) change-log events; the payload is empty."""

_EVENT: Final = (
    "seq, skill_id, tenant, public, type, version, from_version, to_version, time, narrows"
)

PUBLISH_EVENTS: Final = "SELECT skillsvc_publish_events()"

# One snapshot for the bounds and the page, so "no gap below head" holds for the page.
# $3 is the reader's tenant filter (NULL: admins see everything), $4 the skills to
# keep (empty: all).
EVENT_WINDOW: Final = f"""
WITH bounds AS (
    SELECT h.seq AS head, (SELECT min(seq) FROM skill_events) AS oldest
    FROM skill_event_head h
)
SELECT b.head, b.oldest, e.*
FROM bounds b LEFT JOIN LATERAL (
    SELECT {_EVENT} FROM skill_events
    WHERE seq > $1 AND seq <= b.head
      AND ($3::text IS NULL OR tenant = $3 OR public)
      AND (cardinality($4::text[]) = 0 OR skill_id = ANY($4::text[]))
    ORDER BY seq
    LIMIT $2
) e ON true
ORDER BY e.seq
"""

# Keeps a suffix of the history (every event from the oldest one younger than the
# retention on), so the oldest retained seq alone tells what was pruned.
PRUNE_EVENTS: Final = """
DELETE FROM skill_events
WHERE seq < COALESCE(
    (SELECT min(seq) FROM skill_events
     WHERE seq IS NOT NULL AND time >= now() - make_interval(secs => $1)),
    (SELECT seq + 1 FROM skill_event_head))
"""


def _event_of(row: Any) -> SkillEvent:
    return SkillEvent(
        seq=row["seq"],
        skill_id=row["skill_id"],
        tenant=row["tenant"],
        public=row["public"],
        type=SkillEventType(row["type"]),
        version=row["version"],
        from_version=row["from_version"],
        to_version=row["to_version"],
        time=row["time"],
        narrows=row["narrows"],
    )


class EventLog:
    """Named statements on the change log."""

    def __init__(self, executor: Executor) -> None:
        self._db = executor

    async def publish(self) -> int:
        """Number every committed unnumbered event; returns the head (highest seq)."""
        with translate_errors():
            return int(await self._db.fetchval(PUBLISH_EVENTS))

    async def window(
        self,
        after: int,
        limit: int,
        *,
        visible_to: str | None = None,
        skill_ids: Sequence[str] = (),
        filtered: bool = False,
    ) -> EventWindow:
        """Up to ``limit`` events with ``seq > after``, with the head and oldest seq.

        With ``filtered``, only the events ``visible_to`` sees and, when ``skill_ids``
        is not empty, of those skills; otherwise every event.
        """
        tenant = visible_to if filtered else None
        skills = list(skill_ids) if filtered else []
        with translate_errors():
            rows = await self._db.fetch(EVENT_WINDOW, after, limit, tenant, skills)
        first = rows[0]
        events = [_event_of(r) for r in rows if r["seq"] is not None]
        return EventWindow(head=first["head"], oldest=first["oldest"], events=events)

    async def prune(self, retention_seconds: float) -> int:
        """Delete published events older than the retention; returns how many."""
        with translate_errors():
            status = await self._db.execute(PRUNE_EVENTS, retention_seconds)
        return int(status.split()[-1])
