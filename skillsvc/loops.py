"""Background loops that survive anything: backoff with jitter, logged once per streak.

Every long-running task of the service (the install heartbeat, the health probe, the
LISTEN supervisor) is a :func:`run_forever` loop. One failed step never ends it: the
first failure of a streak is logged at WARNING with its traceback, later ones of the
same streak at DEBUG (a database outage would otherwise print a traceback per step),
the step is retried after an exponentially growing, jittered delay, and the first
success after a streak is logged at INFO. Only cancellation stops a loop.

This module depends on nothing else in skillsvc, so every layer may use it.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable, Collection
from dataclasses import dataclass, field
from typing import Any

logger = logging.getLogger(__name__)


@dataclass
class Backoff:
    """Exponential backoff with full jitter between ``base`` and a ``cap``.

    The n-th delay after a failure is drawn uniformly from ``[d/2, d]`` with
    ``d = min(cap, base * 2**n)``: growing, bounded, and never synchronised across
    replicas that lost the same database at the same moment.
    """

    base: float
    """The first delay's upper bound, in seconds."""
    cap: float
    """No delay exceeds this."""
    failures: int = 0
    """Failures in the current streak."""
    _random: random.Random = field(default_factory=random.Random, repr=False)

    def next_delay(self) -> float:
        """Count a failure and return how long to wait before the next attempt."""
        ceiling = min(self.cap, self.base * (2 ** min(self.failures, 32)))
        self.failures += 1
        return self._random.uniform(ceiling / 2, ceiling)

    def reset(self) -> None:
        """A success: the next failure starts a new streak."""
        self.failures = 0


async def run_forever(
    name: str,
    step: Callable[[], Awaitable[None]],
    *,
    interval: float,
    backoff: Backoff | None = None,
    log: logging.Logger | None = None,
) -> None:
    """Run ``step`` every ``interval`` seconds until cancelled, surviving any exception.

    ``interval`` is the wait after a success; after a failure the wait comes from
    ``backoff`` (by default growing from a tenth of the interval up to the interval,
    so a loop that is down recovers within one interval of its cause going away).
    """
    out = log or logger
    delays = backoff or Backoff(base=max(interval / 10, 0.01), cap=interval)
    while True:
        try:
            await step()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            if delays.failures == 0:
                out.warning("%s failed; retrying with backoff: %s", name, exc, exc_info=exc)
            else:
                out.debug("%s failed again: %s", name, exc)
            await asyncio.sleep(delays.next_delay())
            continue
        if delays.failures:
            out.info("%s recovered after %d failed attempt(s)", name, delays.failures)
            delays.reset()
        await asyncio.sleep(interval)


async def cancel_and_wait(tasks: Collection[asyncio.Task[Any]], *, bound: float = 10.0) -> None:
    """Cancel ``tasks`` and wait until they have ended, for at most ``bound`` seconds.

    A task that ignored its cancellation (Python 3.11's ``wait_for`` can swallow one,
    and a step may shield itself) is cancelled again every second; one still running
    after ``bound`` is logged and left behind, so a shutdown never waits for ever.
    Failures of the tasks are logged, never raised.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + bound
    pending = {t for t in tasks if not t.done()}
    while pending:
        for task in pending:
            task.cancel()
        remaining = deadline - loop.time()
        if remaining <= 0:
            for task in pending:
                logger.warning(
                    "task %s did not end within %gs of its cancellation", task.get_name(), bound
                )
            break
        _, pending = await asyncio.wait(pending, timeout=min(1.0, remaining))
    for task in tasks:
        if task.done() and not task.cancelled() and task.exception() is not None:
            logger.warning("task %s had failed", task.get_name(), exc_info=task.exception())
