"""What a queue's table holds, counted on its indexes and bounded: the summary behind ``/metrics``,
``GET /v1/queues`` and the dashboard, and each user's load against ``max_running``.

An exact COUNT over the timeout index reads every entry of the range (160 ms for a million
waiting tasks on MariaDB), and a count that must read ``owner`` (leased or not) walks the rows
too. So each count here stops at ``limit`` index entries: a count at the limit means "at least
that many" (:attr:`Counts.capped` names them). Running and scheduled tasks are both in the
not-yet-due range of the timeout index; the first ``limit`` of them are read for their owner.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from .model import EVENT_HORIZON

DEFAULT_LIMIT = 10_000
"""Where counts stop unless told otherwise (the service's ``metrics_count_limit``)."""


@dataclass(frozen=True, slots=True)
class Counts:
    """One queue's tasks by state (CONTRACT.md §2), with how many running ones nobody holds."""

    waiting: int
    running: int
    """Not yet due (CONTRACT.md §2): leased to a worker, or scheduled for later."""
    finished: int
    """Retained finished rows, dead and cancelled ones included."""
    dead: int = 0
    scheduled: int = 0
    """Of the running ones, those nobody holds: submitted with a future ``run_at`` or retried
    with a wait (``running - scheduled`` are leased)."""
    oldest_waiting_age: int | None = None
    """Seconds the longest-waiting task has been deliverable (None: none waiting)."""
    capped: tuple[str, ...] = ()
    """The counts that stopped at the limit: there are at least that many."""
    now: int = 0
    """The database's clock when counted."""


@dataclass(frozen=True, slots=True)
class UserLoad:
    """A user's tasks not yet due: what the fair scheduler counts against ``max_running``."""

    user: str
    running: int
    scheduled: int
    max_running: int | None


def count_states(
    conn: Connection, table: sa.Table, now: int, dead: sa.ColumnElement[bool] | None, limit: int
) -> Counts:
    """Counts of every state at ``now`` in one statement of bounded index range reads (``dead``:
    the condition of a dead row, None when the table has no ``outcome`` column)."""
    t = table.c

    def capped(*where: sa.ColumnElement[bool]) -> Any:
        rows = sa.select(sa.literal_column("1")).select_from(table).where(*where).limit(limit).subquery()
        return sa.select(sa.func.count()).select_from(rows).scalar_subquery()

    later = sa.select(t.owner).where(t.timeout > now).order_by(t.timeout).limit(limit).subquery()
    row = conn.execute(
        sa.select(
            capped(t.timeout > EVENT_HORIZON, t.timeout <= now),
            sa.select(sa.func.count()).select_from(later).scalar_subquery(),
            sa.select(sa.func.count()).select_from(later).where(later.c.owner == 0).scalar_subquery(),
            capped(t.timeout <= EVENT_HORIZON),
            capped(dead) if dead is not None else sa.literal(0),
            sa.select(sa.func.min(t.timeout)).where(t.timeout > EVENT_HORIZON).scalar_subquery(),
        )
    ).one()
    waiting, not_due, scheduled, finished, dead_count, oldest = (None if v is None else int(v) for v in row)
    assert waiting is not None and not_due is not None and finished is not None
    full = {"waiting": waiting, "finished": finished, "dead": dead_count or 0}
    names = [name for name, value in full.items() if value >= limit]
    if not_due >= limit:
        names[1:1] = ["running", "scheduled"]
    return Counts(
        waiting=waiting,
        running=not_due,
        finished=finished,
        dead=dead_count or 0,
        scheduled=scheduled or 0,
        oldest_waiting_age=None if oldest is None or oldest > now else now - oldest,
        capped=tuple(names),
        now=now,
    )


def user_loads(conn: Connection, table: sa.Table, now: int, users: int, limit: int) -> list[UserLoad]:
    """The ``users`` users with most tasks among the first ``limit`` not yet due, most first."""
    t = table.c
    later = (
        sa.select(t.resource, t.owner, t.max_running)
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
            sa.func.sum(sa.case((later.c.owner == 0, 1), else_=0)),
            sa.func.max(later.c.max_running),
        )
        .group_by(later.c.resource)
        .order_by(total.desc(), later.c.resource)
        .limit(users)
    )
    return [UserLoad(u, n - int(s or 0), int(s or 0), m) for u, n, s, m in conn.execute(query)]
