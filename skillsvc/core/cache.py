"""A bounded, change-invalidated cache of what GetSkillDefinition and GetPackage read.

Entries are the rows as an admin sees them (no tenant filter); whoever reads one applies
the same visibility rule as the SQL (:func:`visible`), so a cached private definition is
never shown to another tenant. Negative answers (no such definition, no such package)
are cached too. Three things drop entries:

- a ``skillsvc_catalog`` notification (a trigger sends the skill id from the writing
  transaction, so a change made by any process is seen here once its NOTIFY arrives);
- the end of every transaction this process runs (:meth:`ReadCache.invalidate_all`), so
  a caller reads its own writes without waiting for its NOTIFY;
- the loss of the LISTEN connection: the cache is bypassed until it is back, then
  emptied (notifications sent in between are lost).

An entry also expires after ``ttl_seconds``: the last resort should a connection die
without anyone noticing. A read that began before an invalidation never stores what it
read (:attr:`ReadCache.generation`), so a slow reader cannot put back a value that a
change has just dropped.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

from skillsvc.core.models import Definition, Package

T = TypeVar("T")


def visible(definition: Definition, visible_to: str | None) -> bool:
    """The rule of the repository's ``($n IS NULL OR tenant = $n OR public)``."""
    return visible_to is None or definition.tenant == visible_to or definition.public


@dataclass(frozen=True)
class Cached(Generic[T]):
    """One cache hit: ``value`` None is a cached "does not exist"."""

    value: T | None
    """The cached row, or None."""
    expires: float
    """Monotonic time after which it is no longer served."""


class ReadCache:
    """An LRU of definitions and packages, at most ``max_entries`` of them.

    ``max_entries`` 0 turns caching off (every read goes to the database).
    """

    def __init__(
        self,
        max_entries: int,
        ttl_seconds: float,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._max = max_entries
        self._ttl = ttl_seconds
        self._clock = clock
        # Keys: (skill_id, None) for a definition, (skill_id, version) for a package
        # (version '' = the current one).
        self._entries: OrderedDict[tuple[str, str | None], Cached[object]] = OrderedDict()
        self._by_skill: dict[str, set[tuple[str, str | None]]] = {}
        self._online = False
        self.generation = 0
        """Bumped by every invalidation; a fill stores only if it has not moved."""
        self.hits = 0
        """Reads answered from the cache."""
        self.misses = 0
        """Reads that went to the database."""
        self.last_change = ""
        """The payload of the last catalog notification heard (tests sync on it)."""

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def online(self) -> bool:
        """True while changes are being heard, so entries may be served."""
        return self._online

    # -- the change stream ---------------------------------------------------------

    def connected(self) -> None:
        """The LISTEN connection is up (again): start afresh and serve from now on."""
        self.invalidate_all()
        self._online = self._max > 0

    def disconnected(self) -> None:
        """The LISTEN connection is down: changes go unheard, so serve nothing."""
        self._online = False
        self.invalidate_all()

    def dispatch(self, payload: str) -> None:
        """A ``skillsvc_catalog`` notification: the payload is the changed skill's id."""
        self.last_change = payload
        self.invalidate(payload)

    def invalidate(self, skill_id: str) -> None:
        """Drop everything cached about ``skill_id``."""
        self.generation += 1
        for key in self._by_skill.pop(skill_id, ()):
            self._entries.pop(key, None)

    def invalidate_all(self) -> None:
        """Drop everything."""
        self.generation += 1
        self._entries.clear()
        self._by_skill.clear()

    # -- reads ---------------------------------------------------------------------

    def definition(self, skill_id: str) -> Cached[Definition] | None:
        """The cached definition entry, or None (a miss)."""
        return self._get((skill_id, None))  # type: ignore[return-value]

    def package(self, skill_id: str, version: str) -> Cached[Package] | None:
        """The cached package entry (version '' = current), or None (a miss)."""
        return self._get((skill_id, version))  # type: ignore[return-value]

    def put_definition(self, skill_id: str, value: Definition | None, generation: int) -> None:
        """Remember a definition read that began at ``generation``."""
        self._put((skill_id, None), value, generation)

    def put_package(
        self, skill_id: str, version: str, value: Package | None, generation: int
    ) -> None:
        """Remember a package read (version '' = current) that began at ``generation``."""
        self._put((skill_id, version), value, generation)

    def _get(self, key: tuple[str, str | None]) -> Cached[object] | None:
        if not self._online:
            self.misses += 1
            return None
        entry = self._entries.get(key)
        if entry is None or entry.expires <= self._clock():
            self.misses += 1
            return None
        self._entries.move_to_end(key)
        self.hits += 1
        return entry

    def _put(self, key: tuple[str, str | None], value: object, generation: int) -> None:
        if not self._online or generation != self.generation:
            return
        self._entries[key] = Cached(value, self._clock() + self._ttl)
        self._entries.move_to_end(key)
        self._by_skill.setdefault(key[0], set()).add(key)
        while len(self._entries) > self._max:
            old, _ = self._entries.popitem(last=False)
            keys = self._by_skill.get(old[0])
            if keys is not None:
                keys.discard(old)
                if not keys:
                    del self._by_skill[old[0]]
