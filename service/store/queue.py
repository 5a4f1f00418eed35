"""The queue's operations (CONTRACT.md §3): one method per operation, all of the SQL.

Time is the database's clock (``Database.now``). Leases are fencing tokens written to ``owner``
at each acquisition; a heartbeat, finish, retry or release must present the current one.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Row

from ...errors import (
    AlreadyExistsError,
    AlreadyFinishedError,
    InvalidError,
    NotFoundError,
    PerfectQueueError,
    PreemptedError,
)
from .acquire import Acquisition
from .codec import decode_data, encode_data
from .database import Database
from .model import (
    DELETE_OFFSET,
    EVENT_HORIZON,
    AcquiredTask,
    NewTask,
    Task,
    TaskStatus,
    check_data,
    check_duration,
    check_int,
    check_name,
)
from .schema import build_table, init_table

MAX_LEASE = 2**63 - 1


@dataclass(frozen=True, slots=True)
class Page:
    """One page of a listing; ``cursor`` continues it (None: nothing more)."""

    tasks: list[Task]
    cursor: str | None


@dataclass(frozen=True, slots=True)
class Counts:
    waiting: int
    running: int
    finished: int


class QueueStore:
    """One queue: one table in one database.

    ``fair`` orders acquisition by user as the original's resource limit does (its
    ``disable_resource_limit`` is ``fair=False``). ``lock`` chooses how concurrent acquisitions
    are kept apart on MySQL: ``skip_locked`` (row locks, in parallel) or ``get_lock`` (the
    original's ``GET_LOCK('<table>')``, for tables shared with Ruby PerfectQueue processes).
    Fair acquisition always serialises on that lock, which is what keeps ``max_running`` exact.
    """

    def __init__(
        self,
        db: Database,
        table: str,
        *,
        retention_time: int = 300,
        fair: bool = True,
        lock: str = "skip_locked",
    ) -> None:
        if lock not in ("skip_locked", "get_lock"):
            raise InvalidError("lock must be 'skip_locked' or 'get_lock'")
        self.db = db
        self.table = build_table(table, db)
        self.retention_time = check_duration("retention_time", retention_time)
        self.fair = fair
        self.lock = lock
        self._t = self.table.c
        self._acquisition = Acquisition(db, self.table, fair=fair, lock=lock)

    # -- schema ----------------------------------------------------------------------------

    def init(self) -> list[str]:
        """Create the table or add what it lacks (idempotent)."""
        return init_table(self.db, self.table)

    # -- submit ----------------------------------------------------------------------------

    def submit(self, task: NewTask) -> None:
        """Insert a waiting task; AlreadyExistsError if the id is present in any state."""
        try:
            self.db.transaction(lambda conn: conn.execute(self._insert(), [self._row(task)]))
        except AlreadyExistsError:
            raise AlreadyExistsError(f"task {task.id!r} already exists") from None

    def submit_many(self, tasks: Sequence[NewTask]) -> list[PerfectQueueError | None]:
        """Insert many tasks; per task None (stored) or the error (AlreadyExistsError)."""
        results: list[PerfectQueueError | None] = [None] * len(tasks)
        first: dict[str, int] = {}
        for i, task in enumerate(tasks):
            if task.id in first:
                results[i] = AlreadyExistsError(f"task {task.id!r} is twice in the batch")
            else:
                first[task.id] = i

        def work(conn: Connection) -> None:
            ids = list(first)
            present = {r[0] for r in conn.execute(sa.select(self._t.id).where(self._t.id.in_(ids)))}
            for task_id in present:
                results[first[task_id]] = AlreadyExistsError(f"task {task_id!r} already exists")
            rows = [self._row(tasks[i]) for tid, i in first.items() if tid not in present]
            if rows:
                conn.execute(self._insert(), rows)

        if first:
            try:
                self.db.transaction(work)
            except AlreadyExistsError:
                # A concurrent submit took one of the ids between our check and insert.
                for i in first.values():
                    try:
                        self.submit(tasks[i])
                        results[i] = None
                    except AlreadyExistsError as err:
                        results[i] = err
        return results

    def _insert(self) -> sa.Insert:
        now = self.db.now()
        return sa.insert(self.table).values(
            created_at=now, timeout=sa.func.coalesce(sa.bindparam("run_at", type_=sa.Integer), now)
        )

    def _row(self, task: NewTask) -> dict[str, Any]:
        return {
            "id": task.id,
            "run_at": task.run_at,
            "data": encode_data(task.type, task.data, task.compression),
            "resource": task.user,
            "max_running": task.max_running,
        }

    # -- acquire ---------------------------------------------------------------------------

    def acquire(self, max_tasks: int, alive_time: int) -> list[AcquiredTask]:
        """Lease up to ``max_tasks`` waiting tasks for ``alive_time`` seconds (oldest first)."""
        check_int("max", max_tasks, 1, 1000)
        check_duration("alive_time", alive_time, 1)
        lease = secrets.randbelow(MAX_LEASE) + 1

        def work(conn: Connection) -> list[AcquiredTask]:
            now = conn.execute(sa.select(self.db.now())).scalar_one()
            rows = self._acquisition.rows(conn, now, max_tasks)
            if not rows:
                return []
            timeout = now + alive_time
            conn.execute(
                sa.update(self.table)
                .where(self._t.id.in_([r.id for r in rows]))
                .values(timeout=timeout, owner=lease)
            )
            return [AcquiredTask(self._task(r, now, timeout=timeout), lease) for r in rows]

        return self.db.transaction(work, lock=self._acquisition.lock_name())

    # -- lease operations ------------------------------------------------------------------

    def heartbeat(
        self, task_id: str, lease: int, alive_time: int, data: dict[str, Any] | None = None
    ) -> None:
        """Extend the lease to now + alive_time, optionally replacing the data."""
        check_duration("alive_time", alive_time, 1)
        values: dict[str, Any] = {"timeout": self.db.now() + alive_time}

        def work(conn: Connection) -> None:
            if data is not None:
                row = conn.execute(
                    sa.select(self._t.data).where(self._held(task_id, lease)).with_for_update()
                ).first()
                if row is None:
                    raise PreemptedError(f"task {task_id!r} is not held by this lease")
                task_type, _, compression = decode_data(task_id, row.data)
                values["data"] = encode_data(task_type, data, compression)
            self._update_held(conn, task_id, lease, values)

        if data is not None:
            check_data(data)
        self.db.transaction(work)

    def retry(self, task_id: str, lease: int, retry_wait: int) -> None:
        """Give the task back; it is delivered again after ``retry_wait`` seconds."""
        check_duration("retry_wait", retry_wait)
        values = {"timeout": self.db.now() + retry_wait, "owner": 0}
        self.db.transaction(lambda conn: self._update_held(conn, task_id, lease, values))

    def release(self, task_id: str, lease: int) -> None:
        """Give the task back, deliverable at once."""
        self.retry(task_id, lease, 0)

    def finish(self, task_id: str, lease: int) -> None:
        """Mark the task finished; it stays retained (and unsubmittable) for retention_time."""

        def work(conn: Connection) -> None:
            if conn.execute(self._finish_where(self._held(task_id, lease))).rowcount == 0:
                raise self._finish_error(conn, task_id, lease)

        self.db.transaction(work)

    def finish_many(self, items: Sequence[tuple[str, int]]) -> list[PerfectQueueError | None]:
        """Finish many leased tasks in one transaction; per item None or its error."""

        def work(conn: Connection) -> list[PerfectQueueError | None]:
            ids = sorted({task_id for task_id, _ in items})
            rows = conn.execute(
                sa.select(self._t.id, self._t.created_at, self._t.owner)
                .where(self._t.id.in_(ids))
                .with_for_update()
            ).all()
            state = {r.id: r for r in rows}
            results: list[PerfectQueueError | None] = []
            done: set[str] = set()
            for task_id, lease in items:
                row = state.get(task_id)
                if (
                    row is not None
                    and row.created_at is not None
                    and row.owner == lease
                    and task_id not in done
                ):
                    done.add(task_id)
                    results.append(None)
                else:
                    results.append(_finish_error(task_id, lease, row, task_id in done))
            if done:
                conn.execute(self._finish_where(self._t.id.in_(sorted(done))))
            return results

        return self.db.transaction(work) if items else []

    def force_finish(self, task_id: str) -> None:
        """Finish regardless of any lease (an operator's action)."""

        def work(conn: Connection) -> None:
            query = self._finish_where(sa.and_(self._t.id == task_id, self._t.created_at.is_not(None)))
            if conn.execute(query).rowcount == 0:
                found = conn.execute(sa.select(self._t.id).where(self._t.id == task_id)).first()
                if found is None:
                    raise NotFoundError(f"task {task_id!r} does not exist")
                raise AlreadyFinishedError(f"task {task_id!r} is already finished")

        self.db.transaction(work)

    def _held(self, task_id: str, lease: int) -> sa.ColumnElement[bool]:
        return sa.and_(self._t.id == task_id, self._t.owner == lease, self._t.created_at.is_not(None))

    def _update_held(self, conn: Connection, task_id: str, lease: int, values: dict[str, Any]) -> None:
        if conn.execute(sa.update(self.table).where(self._held(task_id, lease)).values(values)).rowcount == 0:
            raise PreemptedError(f"task {task_id!r} is not held by this lease (finished, gone or taken over)")

    def _finish_where(self, where: sa.ColumnElement[bool]) -> sa.Update:
        retained_until = self.db.now() - DELETE_OFFSET + self.retention_time
        return (
            sa.update(self.table).where(where).values(timeout=retained_until, created_at=None, resource=None)
        )

    def _finish_error(self, conn: Connection, task_id: str, lease: int) -> PerfectQueueError:
        row = conn.execute(
            sa.select(self._t.id, self._t.created_at, self._t.owner).where(self._t.id == task_id)
        ).first()
        return _finish_error(task_id, lease, row, False)

    # -- reading ---------------------------------------------------------------------------

    def get(self, task_id: str) -> Task:
        """The task's current state; NotFoundError if there is no row."""
        check_name("id", task_id)

        def work(conn: Connection) -> Task:
            row = conn.execute(
                sa.select(self.table, self.db.now().label("now")).where(self._t.id == task_id)
            ).first()
            if row is None:
                raise NotFoundError(f"task {task_id!r} does not exist")
            return self._task(row, row.now)

        return self.db.transaction(work, readonly=True)

    def list(
        self,
        *,
        status: TaskStatus | None = None,
        task_type: str | None = None,
        user: str | None = None,
        cursor: str | None = None,
        limit: int = 100,
    ) -> Page:
        """Tasks in id order after ``cursor``, filtered; a page may be short (type is filtered
        after decoding, so at most ``10 * limit`` rows are read per page)."""
        check_int("limit", limit, 1, 1000)

        def work(conn: Connection) -> Page:
            now = conn.execute(sa.select(self.db.now())).scalar_one()
            where = [self._status_filter(status, now)] if status else []
            if user is not None:
                where.append(self._t.resource == user)
            after, tasks = cursor, []
            for _ in range(10):
                query = sa.select(self.table).where(*where).order_by(self._t.id).limit(limit)
                rows = conn.execute(query.where(self._t.id > after) if after is not None else query).all()
                tasks += [t for t in (self._task(r, now) for r in rows) if task_type in (None, t.type)]
                after = rows[-1].id if rows else after
                if len(tasks) >= limit:
                    return Page(tasks[:limit], tasks[limit - 1].id)
                if len(rows) < limit:
                    return Page(tasks, None)
            return Page(tasks, after)

        return self.db.transaction(work, readonly=True)

    def _status_filter(self, status: TaskStatus, now: int) -> sa.ColumnElement[bool]:
        if status is TaskStatus.FINISHED:
            return self._t.created_at.is_(None)
        if status is TaskStatus.WAITING:
            return sa.and_(self._t.created_at.is_not(None), self._t.timeout <= now)
        return sa.and_(self._t.created_at.is_not(None), self._t.timeout > now)

    def counts(self) -> Counts:
        """Waiting, running and retained finished tasks, each an index range count."""

        def work(conn: Connection) -> Counts:
            now = conn.execute(sa.select(self.db.now())).scalar_one()
            t = self._t.timeout

            def count(*where: sa.ColumnElement[bool]) -> Any:
                return sa.select(sa.func.count()).select_from(self.table).where(*where).scalar_subquery()

            row = conn.execute(
                sa.select(count(t > EVENT_HORIZON, t <= now), count(t > now), count(t <= EVENT_HORIZON))
            ).one()
            return Counts(*row)

        return self.db.transaction(work, readonly=True)

    def has_waiting(self) -> bool:
        """Is any task waiting now? (One index probe; used to wake long-polls.)"""
        now = self.db.now()
        query = sa.select(self._t.id).where(self._t.timeout > EVENT_HORIZON, self._t.timeout <= now).limit(1)
        return self.db.transaction(lambda conn: conn.execute(query).first() is not None, readonly=True)

    # -- cleanup ---------------------------------------------------------------------------

    def cleanup(self, batch: int = 1000) -> int:
        """Delete up to ``batch`` finished rows whose retention has passed; returns how many."""
        check_int("batch", batch, 1, 100_000)
        expired = self._t.timeout <= self.db.now() - DELETE_OFFSET
        if self.db.is_sqlite:
            ids = sa.select(self._t.id).where(expired).limit(batch).scalar_subquery()
            query = sa.delete(self.table).where(self._t.id.in_(ids))
        else:
            query = sa.delete(self.table).where(expired).with_dialect_options(mysql_limit=batch)
        return int(self.db.transaction(lambda conn: conn.execute(query).rowcount))

    # -- rows to tasks ---------------------------------------------------------------------

    def _task(self, row: Row[Any], now: int, timeout: int | None = None) -> Task:
        task_type, data, compression = decode_data(row.id, row.data)
        timeout = row.timeout if timeout is None else timeout
        if row.created_at is None:
            status = TaskStatus.FINISHED
        elif timeout <= now:
            status = TaskStatus.WAITING
        else:
            status = TaskStatus.RUNNING
        return Task(
            id=row.id,
            type=task_type,
            data=data,
            user=row.resource,
            status=status,
            created_at=row.created_at,
            timeout=timeout,
            max_running=row.max_running,
            compression=compression,
        )


def _finish_error(task_id: str, lease: int, row: Any, finished_now: bool) -> PerfectQueueError:
    """Why a finish with this lease did not apply, from the row as it is."""
    if row is None:
        return NotFoundError(f"task {task_id!r} does not exist")
    if finished_now or (row.created_at is None and row.owner == lease):
        return AlreadyFinishedError(f"task {task_id!r} is already finished")
    return PreemptedError(f"task {task_id!r} is not held by this lease (finished, gone or taken over)")
