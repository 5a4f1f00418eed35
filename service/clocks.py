"""How far each database's clock is from this host's.

The queue's times are the database's, so service replicas agree whatever their own clocks say.
Ruby PerfectQueue processes sharing a table compare with their host's clock instead, so a mixed
fleet needs every host near the database's time (NTP). The service measures its own host's
distance at start and at every cleanup round: the ``perfectqueue_database_clock_skew_seconds``
gauge, and a warning when it is over ``max_clock_skew`` (said once, and once more when it is
back within).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Protocol

from ..errors import PerfectQueueError
from .store import Database, redact

log = logging.getLogger("perfectqueue.service")


class ClockObserver(Protocol):
    def clock_skew(self, database: str, seconds: float) -> None:
        """The database's clock is ``seconds`` ahead of this host's (negative: behind)."""


class ClockWatch:
    def __init__(
        self,
        databases: Mapping[str, Database],
        run: Callable[[Callable[[], float]], Awaitable[float]],
        observer: ClockObserver,
        limit: float,
    ) -> None:
        self.databases, self.run, self.observer, self.limit = databases, run, observer, limit
        self.off: set[str] = set()  # databases whose skew was over the limit at the last look

    async def measure(self) -> None:
        for url, db in self.databases.items():
            name = redact(url)
            try:
                skew = await self.run(db.clock_skew)
            except PerfectQueueError as exc:
                log.debug("measuring the clock of %s failed: %s", name, exc)
                continue
            self.observer.clock_skew(name, skew)
            self._judge(name, skew)

    def _judge(self, name: str, skew: float) -> None:
        if abs(skew) > self.limit and name not in self.off:
            self.off.add(name)
            log.warning(
                "the clock of database %s is %.1f s %s this host's (over max_clock_skew, %.1f s): "
                "Ruby PerfectQueue processes on a host this far off see leases end %s",
                name,
                abs(skew),
                "ahead of" if skew > 0 else "behind",
                self.limit,
                "late" if skew > 0 else "early",
            )
        elif abs(skew) <= self.limit and name in self.off:
            self.off.discard(name)
            log.info("the clock of database %s is within max_clock_skew of this host's again", name)
