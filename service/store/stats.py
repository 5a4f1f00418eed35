"""What a queue's table holds, counted on its indexes and bounded: the summary behind ``/metrics``,
``GET /v1/queues`` and the dashboard, and each user's load against ``max_running``.

An exact COUNT over the timeout index reads every entry of the range (160 ms for a million
waiting tasks on MariaDB), and a count that must read ``owner`` (leased or not) walks the rows
too. So each count here stops at ``limit`` index entries: a count at the limit means "at least
that many" (:attr:`Counts.capped` names them). Leased and scheduled tasks are both in the
not-yet-due range of the timeout index; the first ``limit`` of them are read for their owner
(scheduled, or held by a worker or a Ruby process: :mod:`.owners`; a Ruby-held task counts as leased).
Finished, dead and cancelled rows are all in the ended range; dead and cancelled are counted on
the outcome index, finished among the first ``limit`` ended rows read for their outcome.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from .model import DELETE_OFFSET, EVENT_HORIZON, Outcome
from .owners import is_scheduled

STATES = ("waiting", "leased", "scheduled", "finished", "dead", "cancelled")
"""The states :class:`Counts` tells apart, in the order people read them."""

DEFAULT_LIMIT = 10_000
"""Where counts stop unless told otherwise (the service's ``metrics_count_limit``)."""


@dataclass(frozen=True, slots=True)
class Counts:
    """One queue's tasks by state: the time model's (CONTRACT.md §2) as people read it."""

    waiting: int
    """Deliverable now."""
    leased: int
    """Held by a worker under a lease."""
    scheduled: int
    """Due later, held by nobody: submitted with a future ``run_at`` or retried with a wait."""
    finished: int
    """Retained rows of tasks that finished (dead and cancelled ones are not among them)."""
    dead: int = 0
    cancelled: int = 0
    dead_last_hour: int = 0
    """Of the dead, those that died in the last hour (by the queue's ``dead_retention_time``)."""
    oldest_waiting_age: int | None = None
    """Seconds the longest-waiting task has been deliverable (None: none waiting)."""
    capped: tuple[str, ...] = ()
    """The counts that stopped at the limit: there are at least that many."""
    now: int = 0
    """The database's clock when counted."""
    paused_at: int | None = None
    """When the queue was paused (None: it is not): polls get nothing, submits are accepted."""

    @property
    def running(self) -> int:
        """The contract's (and the original's) running: not yet due, leased or scheduled."""
        return self.leased + self.scheduled


@dataclass(frozen=True, slots=True)
class UserLoad:
    """A user's tasks not yet due: what the fair scheduler counts against ``max_running``."""

    user: str
    leased: int
    scheduled: int
    max_running: int | None


def count_states(
    conn: Connection,
    table: sa.Table,
    now: int,
    *,
    outcome: sa.ColumnElement[Any] | None,
    limit: int,
    dead_retention: int,
) -> Counts:
    """Counts of every state at ``now`` in one statement of bounded index range reads
    (``outcome``: the column, None when the table has none: nothing ended dead or cancelled).
    Leased and scheduled are told apart among the first ``limit`` rows not yet due, finished
    among the first ``limit`` ended ones: past the limit each is a lower bound. A dead row of
    the last hour has a timeout above ``now - 3600 - DELETE_OFFSET + dead_retention``: a short
    range of the timeout index (rows kept for less are below it)."""
    t = table.c

    def capped(*where: sa.ColumnElement[bool]) -> Any:
        rows = sa.select(sa.literal_column("1")).select_from(table).where(*where).limit(limit).subquery()
        return sa.select(sa.func.count()).select_from(rows).scalar_subquery()

    def first(*where: sa.ColumnElement[bool], **columns: sa.ColumnElement[Any]) -> Any:
        chosen = [c.label(name) for name, c in columns.items()]
        return sa.select(*chosen).where(*where).order_by(t.timeout).limit(limit).subquery()

    def count(rows: Any, *where: sa.ColumnElement[bool]) -> Any:
        return sa.select(sa.func.count()).select_from(rows).where(*where).scalar_subquery()

    kept = sa.null() if outcome is None else outcome
    later = first(t.timeout > now, owner=t.owner, timeout=t.timeout)
    ended = first(t.timeout <= EVENT_HORIZON, outcome=kept)
    nothing = sa.literal(0)
    died = now - 3600 - DELETE_OFFSET + dead_retention
    recent = (t.timeout > died, t.timeout <= EVENT_HORIZON)
    row = conn.execute(
        sa.select(
            capped(t.timeout > EVENT_HORIZON, t.timeout <= now),
            count(later),
            count(later, is_scheduled(later.c.owner, later.c.timeout)),
            count(ended),
            count(ended, ended.c.outcome.is_(None)),
            nothing if outcome is None else capped(outcome == Outcome.DEAD.value),
            nothing if outcome is None else capped(outcome == Outcome.CANCELLED.value),
            nothing if outcome is None else capped(*recent, outcome == Outcome.DEAD.value),
            sa.select(sa.func.min(t.timeout)).where(t.timeout > EVENT_HORIZON).scalar_subquery(),
        )
    ).one()
    waiting, not_due, scheduled, ended_count, finished, dead, cancelled, recent_dead = (
        int(v or 0) for v in row[:8]
    )
    oldest = row[8]
    full = {"waiting": waiting, "dead": dead, "cancelled": cancelled}
    names = [name for name, value in full.items() if value >= limit]
    names[1:1] = ["leased", "scheduled"] if not_due >= limit else []
    names[3:3] = ["finished"] if ended_count >= limit else []
    return Counts(
        waiting=waiting,
        leased=not_due - scheduled,
        scheduled=scheduled,
        finished=finished,
        dead=dead,
        cancelled=cancelled,
        dead_last_hour=recent_dead,
        oldest_waiting_age=None if oldest is None or oldest > now else now - int(oldest),
        capped=tuple(names),
        now=now,
    )


def user_loads(conn: Connection, table: sa.Table, now: int, users: int, limit: int) -> list[UserLoad]:
    """The ``users`` users with most tasks among the first ``limit`` not yet due, most first."""
    t = table.c
    later = (
        sa.select(t.resource, t.owner, t.timeout, t.max_running)
        .where(t.timeout > now, t.created_at.is_not(None), t.resource.is_not(None))
        .order_by(t.timeout)
        .limit(limit)
        .subquery()
    )
    total = sa.func.count()
    query = (
        sa.select(
            later.c.resource,
            total,
            sa.func.sum(sa.case((is_scheduled(later.c.owner, later.c.timeout), 1), else_=0)),
            sa.func.max(later.c.max_running),
        )
        .group_by(later.c.resource)
        .order_by(total.desc(), later.c.resource)
        .limit(users)
    )
    return [UserLoad(u, n - int(s or 0), int(s or 0), m) for u, n, s, m in conn.execute(query)]
