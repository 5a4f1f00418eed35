"""The queue's reads: a task, a page of tasks, the counts, the users' loads, and the probes
the service runs (ping, has_waiting), with cleanup and the per-minute counts' side table.

Every read takes the database's clock in its own transaction and turns rows into tasks by
:mod:`.rows`; a table without our columns reads their defaults (:mod:`.columns`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Row
from sqlalchemy.sql.base import ReadOnlyColumnCollection

from ...errors import NotFoundError
from . import throughput, wakeups
from .codec import decode_data
from .columns import Columns
from .database import Database
from .listing import Listing, encode_cursor
from .model import (
    DELETE_OFFSET,
    EVENT_HORIZON,
    Retention,
    RetryPolicy,
    Task,
    TaskStatus,
    check_int,
    check_stored_id,
)
from .pausing import PauseFlag
from .rows import is_leased, status_of, to_task, within
from .stats import DEFAULT_LIMIT, Counts, UserLoad, count_states, user_loads


@dataclass(frozen=True, slots=True)
class Page:
    """One page of a listing; ``cursor`` continues it (None: nothing more)."""

    tasks: list[Task]
    cursor: str | None


class QueueReader:
    """The reads of one queue's table (the base of ``QueueStore``, which sets these)."""

    db: Database
    table: sa.Table
    _t: ReadOnlyColumnCollection[str, sa.Column[Any]]
    _columns: Columns
    _listing: Listing
    max_data_bytes: int | None
    retention_time: int
    policy: RetryPolicy
    _pause: PauseFlag
    origin: str
    fair: bool

    def _task(self, row: Any, now: int, with_data: bool = True) -> Task:
        """The task a row holds at ``now``, its data as :func:`.rows.to_task` reads it under
        ``max_data_bytes``, with when it ended if it did."""
        retention = Retention(self.retention_time, self.policy.dead_retention_time)
        return to_task(row, now, limit=self.max_data_bytes, with_data=with_data, retention=retention)

    def get(self, task_id: str) -> Task:
        """The task's current state; NotFoundError if there is no row."""
        check_stored_id(task_id)
        self._columns.extended()

        row = self.db.transaction(lambda conn: self._read(conn, task_id), readonly=True)
        return self._task(row, row.now)  # decoded outside the transaction

    def counts(self, limit: int = DEFAULT_LIMIT) -> Counts:
        """Tasks by state, each count stopping at ``limit`` (:mod:`.stats`)."""
        outcome = self._t.outcome if self._columns.extended() else None

        def work(conn: Connection) -> Counts:
            now = self._now(conn)
            dead_retention = self.policy.dead_retention_time
            return count_states(
                conn, self.table, now, outcome=outcome, limit=limit, dead_retention=dead_retention
            )

        return replace(self.db.transaction(work, readonly=True), paused_at=self._pause.paused_at())

    def users(self, users: int = 200, limit: int = DEFAULT_LIMIT) -> list[UserLoad]:
        """Per user, tasks running and scheduled against max_running, among the first ``limit``
        tasks not yet due (the fair scheduler's view); the ``users`` busiest."""

        def work(conn: Connection) -> list[UserLoad]:
            return user_loads(conn, self.table, self._now(conn), users, limit)

        return self.db.transaction(work, readonly=True)

    def list(
        self,
        *,
        status: TaskStatus | None = None,
        task_type: str | None = None,
        user: str | None = None,
        prefix: str | None = None,
        leased: bool | None = None,
        order: str = "id",
        cursor: str | None = None,
        limit: int = 100,
        with_data: bool = True,
        max_bytes: int | None = None,
    ) -> Page:
        """Tasks after ``cursor``, filtered, in ``order``: ``id``, or ``due`` (due time, on an
        index whatever the filters: :mod:`.listing`). ``leased`` tells running tasks a worker
        holds from those scheduled for later. A page may be short and carry a cursor; a cursor
        the listing cannot have returned is InvalidError. The filters match what the table
        holds, whatever it holds (a table shared with the original may hold any string).
        ``with_data`` false leaves the data out; with it, a page stops before its data passes
        ``max_bytes`` (a shorter page, its cursor at its last task)."""
        check_int("limit", limit, 1, 1000)
        self._columns.extended()

        def keep(now: int) -> Callable[[Row[Any]], bool]:
            def accepts(row: Row[Any]) -> bool:
                if status is not None and status_of(row, now) is not status:
                    return False
                if leased is not None and is_leased(row, now) is not leased:
                    return False
                return (
                    task_type is None or decode_data(row.id, row.data, self.max_data_bytes).type == task_type
                )

            return accepts

        def work(conn: Connection) -> tuple[int, Sequence[Row[Any]], str | None]:
            now = self._now(conn)
            rows, after = self._listing.page(
                conn,
                now,
                order=order,
                status=status,
                user=user,
                prefix=prefix,
                cursor=cursor,
                limit=limit,
                keep=keep(now),
            )
            return now, rows, after

        now, rows, after = self.db.transaction(work, readonly=True)
        decoded = (self._task(r, now, with_data) for r in rows)
        tasks = list(decoded) if not with_data else list(within(decoded, max_bytes))  # one at a time
        if len(tasks) < len(rows):
            last = tasks[-1]
            after = encode_cursor(last.id if order == "id" else (last.timeout, last.id))
        return Page(tasks, after)

    def ping(self) -> None:
        """One index probe of the table: UnavailableError unless the database answers."""
        query = sa.select(self._t.id).limit(1)
        self.db.transaction(lambda conn: conn.execute(query).first(), readonly=True)

    @property
    def announces(self) -> bool:
        """Can this store tell the other replicas' listeners of waiting tasks (``announce``)?"""
        return self.db.is_postgres

    def announce(self) -> None:
        """Tell the other replicas' listeners that tasks became waiting (PostgreSQL; elsewhere
        nothing: they find work by probing, see ``has_waiting``). A submit tells them itself."""
        if self.db.is_postgres:
            self.db.transaction(lambda conn: wakeups.announce(conn, self.table.name, self.origin))

    def _notify(self) -> sa.ColumnElement[Any]:
        """What a submit's statement returns to announce its tasks in its own transaction."""
        return wakeups.notify(self.table.name, self.origin)

    def has_waiting(self) -> bool:
        """Is any task waiting now? (One index probe; used to wake long-polls.)"""
        now = self.db.now()
        query = sa.select(self._t.id).where(self._t.timeout > EVENT_HORIZON, self._t.timeout <= now).limit(1)
        return self.db.transaction(lambda conn: conn.execute(query).first() is not None, readonly=True)

    # -- per-minute counts (the side table of :mod:`.throughput`) ------------------------------

    def add_throughput(self, counts: throughput.MinuteCounts) -> None:
        """Add per-minute submitted and finished counts to this queue's. After a COMMIT cut off
        they are taken as added: at worst lost once, never counted twice."""
        self.db.transaction(lambda conn: throughput.add(conn, self.table.name, counts), repeat=lambda _: None)

    def throughput(self, start: int, end: int) -> dict[int, tuple[int, int]]:
        """This queue's (submitted, finished) per minute from ``start`` to ``end``."""
        name = self.table.name
        return self.db.transaction(lambda conn: throughput.read(conn, name, start, end), readonly=True)

    # -- cleanup ---------------------------------------------------------------------------

    def cleanup(self, batch: int = 1000) -> int:
        """Delete up to ``batch`` finished rows whose retention has passed; returns how many."""
        check_int("batch", batch, 1, 100_000)
        expired = self._t.timeout <= self.db.now() - DELETE_OFFSET
        if self.db.is_mysql:  # the only one with DELETE … LIMIT
            query = sa.delete(self.table).where(expired).with_dialect_options(mysql_limit=batch)
        else:
            ids = sa.select(self._t.id).where(expired).limit(batch).scalar_subquery()
            query = sa.delete(self.table).where(self._t.id.in_(ids))
        return int(self.db.transaction(lambda conn: conn.execute(query).rowcount))

    # -- shared by the reads and the operations that answer a task ---------------------------

    def _now(self, conn: Connection) -> int:
        """The database's clock."""
        return int(conn.execute(sa.select(self.db.now())).scalar_one())

    def _read(self, conn: Connection, task_id: str, lock: bool = False) -> Any:
        """The task's row with the clock as ``now`` (``lock``: for update); NotFoundError."""
        query = sa.select(*self._columns.selected(), self.db.now().label("now")).where(self._t.id == task_id)
        row = conn.execute(query.with_for_update() if lock and not self.db.is_sqlite else query).first()
        if row is None:
            raise NotFoundError(f"task {task_id!r} does not exist")
        return row
