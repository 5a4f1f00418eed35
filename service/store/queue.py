"""The queue's operations (CONTRACT.md §3): one method per operation, all of the SQL.

Time is the database's clock (``Database.now``). Leases are fencing tokens written to ``owner``
at each acquisition; a heartbeat, finish, retry or release must present the current one.

Beyond the original: each acquisition counts an attempt (in the same UPDATE that leases the
row); a task that would start an attempt past its ``max_attempts`` ends **dead** instead (kept
for ``dead_retention_time``, requeueable); a cancel ends a waiting task at once and asks the
holder of a running one to stop (its next heartbeat, finish, retry or release answers
CancelRequestedError, and the task ends **cancelled**). Dead and cancelled rows are finished rows
to the original (``created_at`` NULL, timeout in the finished range); ``outcome`` says how they
ended.

A table the original created lacks those columns until ``init`` adds them; until then the store
serves it as the original would (no attempts, no dead or cancelled tasks), checking again every
few seconds whether another process ran ``init``.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Row

from ...errors import (
    AlreadyExistsError,
    AlreadyFinishedError,
    CancelRequestedError,
    InvalidError,
    NotDeadError,
    NotFoundError,
    NotSupportedError,
    PerfectQueueError,
    PreemptedError,
)
from . import throughput
from .acquire import Acquisition
from .codec import decode_data, encode_data
from .database import Database
from .listing import Listing
from .model import (
    DELETE_OFFSET,
    EVENT_HORIZON,
    AcquiredTask,
    NewTask,
    Outcome,
    RetryPolicy,
    Task,
    TaskStatus,
    check_data,
    check_duration,
    check_int,
    check_name,
    truncate_error,
)
from .observer import StoreObserver, Unobserved
from .schema import EXTENSION_DEFAULTS, build_table, has_extensions, init_table
from .stats import DEFAULT_LIMIT, Counts, UserLoad, count_states, user_loads

MAX_LEASE = 2**63 - 1
SCHEMA_RECHECK = 5.0
"""Seconds between checks whether a table seen without our columns has them now."""
LEASE_EXPIRED = (
    "LeaseExpired: the lease of the last attempt expired (its worker died or stopped heart-beating)"
)


@dataclass(frozen=True, slots=True)
class Page:
    """One page of a listing; ``cursor`` continues it (None: nothing more)."""

    tasks: list[Task]
    cursor: str | None


class QueueStore:
    """One queue: one table in one database.

    ``fair`` orders acquisition by user as the original's resource limit does (its
    ``disable_resource_limit`` is ``fair=False``). ``lock`` chooses how concurrent acquisitions
    are kept apart on MySQL: ``skip_locked`` (row locks, in parallel) or ``get_lock`` (the
    original's ``GET_LOCK('<table>')``, for tables shared with Ruby PerfectQueue processes).
    Fair acquisition always serialises on that lock, which is what keeps ``max_running`` exact.
    ``policy`` holds the queue's retry backoff, ``max_attempts`` and ``dead_retention_time``;
    ``observer`` hears what only the store sees (the table lock's hold, tasks an acquisition ended).
    """

    def __init__(
        self,
        db: Database,
        table: str,
        *,
        retention_time: int = 300,
        fair: bool = True,
        lock: str = "skip_locked",
        policy: RetryPolicy | None = None,
        observer: StoreObserver | None = None,
    ) -> None:
        if lock not in ("skip_locked", "get_lock"):
            raise InvalidError("lock must be 'skip_locked' or 'get_lock'")
        self.db = db
        self.table = build_table(table, db)
        self.retention_time = check_duration("retention_time", retention_time)
        self.fair = fair
        self.lock = lock
        self.policy = policy or RetryPolicy()
        self.observer: StoreObserver = observer or Unobserved()
        self._t = self.table.c
        self._acquisition = Acquisition(db, self.table, fair=fair, lock=lock)
        self._listing = Listing(self.table, self._columns)
        self._extended = False
        self._checked_at = -SCHEMA_RECHECK
        self._prepared: dict[str, sa.Executable] = {}
        """The hot path's statements, built once for the table's columns: calls only execute them."""

    # -- schema ----------------------------------------------------------------------------

    def init(self) -> list[str]:
        """Create the table or add what it lacks, and the per-minute counts' side table
        (idempotent)."""
        done = init_table(self.db, self.table)
        self.db.transaction(throughput.create)  # shared by the queues of a database: not reported
        self._use_extensions(True)
        return done

    def extended(self) -> bool:
        """Has the table the columns beyond the original's? Known once seen; a table seen
        without them is looked at again every SCHEMA_RECHECK seconds."""
        if not self._extended and time.monotonic() - self._checked_at >= SCHEMA_RECHECK:
            self._checked_at = time.monotonic()
            self._use_extensions(has_extensions(self.db, self.table))
        return self._extended

    def _use_extensions(self, present: bool) -> None:
        self._extended = present
        self._acquisition.columns = self._columns()
        self._prepared = {}

    def _statement(self, name: str, build: Callable[[], sa.Executable]) -> sa.Executable:
        """The prepared statement ``name``, built on first use (bind parameters vary per call)."""
        statement = self._prepared.get(name)
        if statement is None:
            statement = self._prepared[name] = build()
        return statement

    def _columns(self) -> list[sa.ColumnElement[Any]]:
        """The columns statements read: a table without ours reads their defaults instead."""
        return [self._col(c.name) for c in self.table.c]

    def _col(self, name: str) -> sa.ColumnElement[Any]:
        if self._extended or name not in EXTENSION_DEFAULTS:
            return self._t[name]
        default = EXTENSION_DEFAULTS[name]
        return (sa.null() if default is None else sa.literal_column(str(default))).label(name)

    def _values(self, values: dict[str, Any]) -> dict[str, Any]:
        """``values`` without our columns when the table lacks them."""
        if self._extended:
            return values
        return {k: v for k, v in values.items() if k not in EXTENSION_DEFAULTS}

    def _not_cancel_requested(self) -> sa.ColumnElement[bool]:
        return self._t.cancel_requested == 0 if self._extended else sa.true()

    def _outcome_is(self, outcome: Outcome | None) -> sa.ColumnElement[bool]:
        if not self._extended:
            return sa.true() if outcome is None else sa.false()
        return self._t.outcome.is_(None) if outcome is None else self._t.outcome == outcome.value

    def _require_extensions(self, what: str) -> None:
        """Called outside any transaction: a check may need a connection of its own."""
        if not self.extended():
            raise NotSupportedError(f"{what} needs the columns that `perfectqueue init` adds to this table")

    # -- submit ----------------------------------------------------------------------------

    def submit(self, task: NewTask) -> None:
        """Insert a waiting task; AlreadyExistsError if the id is present in any state."""
        self.extended()
        row = self._row(task)
        try:
            self.db.transaction(lambda conn: conn.execute(self._statement("submit", self._insert), row))
        except AlreadyExistsError:
            raise AlreadyExistsError(f"task {task.id!r} already exists") from None

    def submit_many(self, tasks: Sequence[NewTask]) -> list[PerfectQueueError | None]:
        """Insert many tasks; per task None (stored) or the error (AlreadyExistsError)."""
        results: list[PerfectQueueError | None] = [None] * len(tasks)
        first: dict[str, int] = {}
        self.extended()
        for i, task in enumerate(tasks):
            if task.id in first:
                results[i] = AlreadyExistsError(f"task {task.id!r} already exists (submitted twice at once)")
            else:
                first[task.id] = i
        if not first:
            return results
        rows = {task_id: self._row(tasks[i]) for task_id, i in first.items()}
        for row in rows.values():
            row["timeout"] = row.pop("run_at")  # None: the database's now, read below

        def work(conn: Connection) -> set[str]:
            found = conn.execute(self._statement("present", self._present), {"ids": list(first)}).all()
            present = {r.id for r in found if r.id is not None}
            now = found[0].now
            new = [
                {**row, "created_at": now, "timeout": now if row["timeout"] is None else row["timeout"]}
                for task_id, row in rows.items()
                if task_id not in present
            ]
            if new:  # bound values only, so that the driver sends one multi-row INSERT
                conn.execute(self._statement("submit_rows", lambda: sa.insert(self.table)), new)
            return present

        try:
            for task_id in self.db.transaction(work):
                results[first[task_id]] = AlreadyExistsError(f"task {task_id!r} already exists")
        except AlreadyExistsError:
            # A concurrent submit took one of the ids between our check and insert.
            for i in first.values():
                try:
                    self.submit(tasks[i])
                except AlreadyExistsError as err:
                    results[i] = err
        return results

    def _insert(self) -> sa.Insert:
        now = self.db.now()
        return sa.insert(self.table).values(
            created_at=now, timeout=sa.func.coalesce(sa.bindparam("run_at", type_=sa.Integer), now)
        )

    def _present(self) -> sa.Select[Any]:
        """The database's clock and which of ``ids`` exist, in one round trip: one row
        (now, NULL) when none does, else one row per id present."""
        one = sa.select(sa.literal(1).label("one")).subquery("one")
        return sa.select(self.db.now().label("now"), self._t.id).select_from(
            one.outerjoin(self.table, self._t.id.in_(sa.bindparam("ids", expanding=True)))
        )

    def _row(self, task: NewTask) -> dict[str, Any]:
        if (task.max_attempts is not None or task.traceparent is not None) and not self._extended:
            raise NotSupportedError("max_attempts and traceparent need the columns `perfectqueue init` adds")
        return self._values(
            {
                "id": task.id,
                "run_at": task.run_at,
                "data": encode_data(task.type, task.data, task.compression),
                "resource": task.user,
                "max_running": task.max_running,
                "max_attempts": task.max_attempts,
                "traceparent": task.traceparent,
            }
        )

    # -- acquire ---------------------------------------------------------------------------

    def acquire(self, max_tasks: int, alive_time: int) -> list[AcquiredTask]:
        """Lease up to ``max_tasks`` waiting tasks for ``alive_time`` seconds (oldest first)."""
        check_int("max", max_tasks, 1, 1000)
        check_duration("alive_time", alive_time, 1)
        lease = secrets.randbelow(MAX_LEASE) + 1
        self.extended()
        ended: dict[Outcome, int] = {}

        def work(conn: Connection) -> list[AcquiredTask]:
            ended.clear()  # a retried transaction counts again
            now, rows = self._acquisition.rows(conn, max_tasks)
            live = [r for r in rows if not (r.cancel_requested or self._exhausted(r))]
            if len(live) < len(rows):
                ended.update(self._end_undeliverable(conn, [r for r in rows if r not in live]))
            if not live:
                return []
            timeout = now + alive_time
            lease_rows = self._statement("lease", self._lease_rows)
            conn.execute(lease_rows, {"ids": [r.id for r in live], "new_timeout": timeout, "lease": lease})
            counted = 1 if self._extended else 0
            return [
                AcquiredTask(self._task(r, now, timeout=timeout, attempts=r.attempts + counted), lease)
                for r in live
            ]

        acquired = self.db.transaction(
            work, lock=self._acquisition.lock_name(), timed=self.observer.lock_held
        )
        for outcome, count in ended.items():
            self.observer.ended(outcome, count)
        return acquired

    def _lease_rows(self) -> sa.Update:
        values = {
            "timeout": sa.bindparam("new_timeout", type_=sa.Integer),
            "owner": sa.bindparam("lease", type_=sa.BigInteger),
            "attempts": self._t.attempts + 1,
        }
        return (
            sa.update(self.table)
            .where(self._t.id.in_(sa.bindparam("ids", expanding=True)))
            .values(self._values(values))
        )

    def _exhausted(self, row: Any) -> bool:
        return self.policy.exhausted(row.attempts, row.max_attempts)

    def _end_undeliverable(self, conn: Connection, rows: Sequence[Row[Any]]) -> dict[Outcome, int]:
        """Rows an acquisition found but must not deliver: a cancel was requested while their
        lease ran out (cancelled), or their attempts are used up (dead). Returns how many of each."""
        cancelled = [r.id for r in rows if r.cancel_requested]
        dead = [r.id for r in rows if not r.cancel_requested]
        if cancelled:
            conn.execute(self._end(self._t.id.in_(cancelled), Outcome.CANCELLED))
        if dead:
            conn.execute(self._end(self._t.id.in_(dead), Outcome.DEAD).values(last_error=LEASE_EXPIRED))
        return {Outcome.CANCELLED: len(cancelled), Outcome.DEAD: len(dead)}

    # -- lease operations ------------------------------------------------------------------

    def heartbeat(
        self, task_id: str, lease: int, alive_time: int, data: dict[str, Any] | None = None
    ) -> None:
        """Extend the lease to now + alive_time, optionally replacing the data."""
        check_duration("alive_time", alive_time, 1)
        values: dict[str, Any] = {"timeout": self.db.now() + alive_time}
        self.extended()

        def work(conn: Connection) -> bool:
            if data is not None:
                row = conn.execute(
                    sa.select(self._t.data).where(self._held(task_id, lease)).with_for_update()
                ).first()
                if row is None:
                    raise self._lease_error(conn, task_id)
                task_type, _, compression = decode_data(task_id, row.data)
                values["data"] = encode_data(task_type, data, compression)
            return self._update_held(conn, task_id, lease, values)

        if data is not None:
            check_data(data)
        if self.db.transaction(work):
            raise _cancel_asked(task_id)

    def heartbeat_many(
        self, items: Sequence[tuple[str, int]], alive_time: int
    ) -> list[PerfectQueueError | None]:
        """Extend many leases to now + alive_time: one transaction, one fenced UPDATE. Per item
        None (extended), CancelRequestedError (extended, but a cancel was requested: stop) or
        the error a single heartbeat would answer (Preempted: finished, gone or taken over)."""
        check_duration("alive_time", alive_time, 1)
        if not items:
            return []
        self.extended()
        ids = sorted({task_id for task_id, _ in items})
        extend = sa.update(self.table).where(self._holding(items)).values(timeout=self.db.now() + alive_time)

        def work(conn: Connection) -> list[PerfectQueueError | None]:
            conn.execute(extend)  # the rows it changed are locked now: the read below sees them as left
            state = {r.id: r for r in conn.execute(self._state_query(self._t.id.in_(ids)))}
            return [_heartbeat_result(task_id, lease, state.get(task_id)) for task_id, lease in items]

        return self.db.transaction(work)

    def retry(
        self, task_id: str, lease: int, retry_wait: int | None = None, error: str | None = None
    ) -> int | None:
        """Give the task back, to be delivered again after ``retry_wait`` seconds (None: the
        queue's backoff for its attempt count), recording ``error`` (the handler's, truncated).

        Returns the wait, or None when the task's attempts are used up: it is dead now.
        """
        if retry_wait is not None:
            check_duration("retry_wait", retry_wait)
        last_error = truncate_error(error) if self.extended() else None

        def work(conn: Connection) -> int | CancelRequestedError | None:
            row = conn.execute(
                sa.select(self._col("attempts"), self._col("max_attempts"), self._col("cancel_requested"))
                .where(self._held(task_id, lease))
                .with_for_update()
            ).first()
            if row is None:
                raise self._lease_error(conn, task_id)
            recorded = {} if last_error is None else {"last_error": last_error}
            if row.cancel_requested:
                conn.execute(self._end(self._t.id == task_id, Outcome.CANCELLED).values(recorded))
                return _cancelled(task_id)
            if self._exhausted(row):
                conn.execute(self._end(self._t.id == task_id, Outcome.DEAD).values(recorded))
                return None
            wait = self.policy.wait(row.attempts) if retry_wait is None else retry_wait
            values = {"timeout": self.db.now() + wait, "owner": 0, **recorded}
            conn.execute(sa.update(self.table).where(self._t.id == task_id).values(values))
            return wait

        result = self.db.transaction(work)
        if isinstance(result, CancelRequestedError):
            raise result
        return result

    def release(self, task_id: str, lease: int) -> None:
        """Give the task back, deliverable at once; the attempt it used is given back too (a
        release means the task was not worked on: a stopping worker, a vanished long-poll)."""
        attempts = sa.case((self._t.attempts > 0, self._t.attempts - 1), else_=0)
        self.extended()
        values = self._values({"timeout": self.db.now(), "owner": 0, "attempts": attempts})
        if self.db.transaction(lambda conn: self._update_held(conn, task_id, lease, values, end=True)):
            raise _cancelled(task_id)

    def finish(self, task_id: str, lease: int) -> None:
        """Mark the task finished; it stays retained (and unsubmittable) for retention_time.

        CancelRequestedError if a cancel was requested meanwhile: the task ends cancelled.
        """

        self.extended()

        fenced = self._statement("finish", self._finish_held)

        def work(conn: Connection) -> bool:
            if conn.execute(fenced, {"ids": [task_id], "lease": lease}).rowcount == 1:
                return False
            row = self._state(conn, task_id)
            if row is not None and _holds(row, lease) and row.cancel_requested:
                conn.execute(self._end(self._t.id == task_id, Outcome.CANCELLED))
                return True
            raise _finish_error(task_id, lease, row, False)

        if self.db.transaction(work):
            raise _cancelled(task_id)

    def finish_many(self, items: Sequence[tuple[str, int]]) -> list[PerfectQueueError | None]:
        """Finish many leased tasks in one transaction; per item None or its error.

        One fenced UPDATE finishes a batch whose every item holds its task; when it changes
        fewer rows (or an id is twice in the batch) it is rolled back and the batch is answered
        item by item from the rows' state, in a second transaction."""

        if not items:
            return []
        self.extended()
        if len({task_id for task_id, _ in items}) == len(items):
            ids = sorted(task_id for task_id, _ in items)
            leases = {lease for _, lease in items}
            fenced: sa.Executable = (
                self._statement("finish", self._finish_held)
                if len(leases) == 1
                else self._finish_where(sa.and_(self._holding(items), self._not_cancel_requested()))
            )
            params = {"ids": ids, "lease": leases.pop()} if len(leases) == 1 else {}

            def all_held(conn: Connection) -> None:
                if conn.execute(fenced, params).rowcount != len(items):
                    raise _ShortBatch  # rolls the UPDATE back

            try:
                self.db.transaction(all_held)
                return [None] * len(items)
            except _ShortBatch:
                pass

        def work(conn: Connection) -> list[PerfectQueueError | None]:
            ids = sorted({task_id for task_id, _ in items})
            rows = conn.execute(self._state_query(self._t.id.in_(ids)).with_for_update()).all()
            state = {r.id: r for r in rows}
            results: list[PerfectQueueError | None] = []
            done: set[str] = set()
            cancelled: set[str] = set()
            for task_id, lease in items:
                row = state.get(task_id)
                if row is not None and _holds(row, lease) and task_id not in done | cancelled:
                    (cancelled if row.cancel_requested else done).add(task_id)
                    results.append(_cancelled(task_id) if row.cancel_requested else None)
                elif task_id in cancelled:
                    results.append(_cancelled(task_id))
                else:
                    results.append(_finish_error(task_id, lease, row, task_id in done))
            if done:
                conn.execute(self._finish_where(self._t.id.in_(sorted(done))))
            if cancelled:
                conn.execute(self._end(self._t.id.in_(sorted(cancelled)), Outcome.CANCELLED))
            return results

        return self.db.transaction(work)

    def force_finish(self, task_id: str) -> None:
        """Finish regardless of any lease (an operator's action); a dead task too."""

        self.extended()

        def work(conn: Connection) -> None:
            finishable = sa.or_(self._t.created_at.is_not(None), self._outcome_is(Outcome.DEAD))
            query = self._finish_where(sa.and_(self._t.id == task_id, finishable))
            if conn.execute(query).rowcount == 0:
                found = conn.execute(sa.select(self._t.id).where(self._t.id == task_id)).first()
                if found is None:
                    raise NotFoundError(f"task {task_id!r} does not exist")
                raise AlreadyFinishedError(f"task {task_id!r} is already finished")

        self.db.transaction(work)

    def force_release(self, task_id: str) -> None:
        """Make a task deliverable now, regardless of any lease (an operator's "retry now"): the
        holder's lease ends (its next call is Preempted). A waiting task keeps its place in the
        queue. NotFoundError; AlreadyFinishedError if it ended."""
        check_name("id", task_id)

        def work(conn: Connection) -> None:
            now = conn.execute(sa.select(self.db.now())).scalar_one()
            query = (
                sa.update(self.table)
                .where(self._t.id == task_id, self._t.created_at.is_not(None))
                .values(timeout=sa.case((self._t.timeout > now, now), else_=self._t.timeout), owner=0)
            )
            if conn.execute(query).rowcount == 0:
                self._read(conn, task_id)  # NotFoundError
                raise AlreadyFinishedError(f"task {task_id!r} is already finished")

        self.db.transaction(work)

    # -- cancel and requeue (beyond the original) --------------------------------------------

    def cancel(self, task_id: str) -> Task:
        """Cancel a task: one nobody holds (waiting, scheduled for later, or its lease expired)
        ends cancelled at once; a leased one is asked to stop (``cancel_requested``) and ends
        cancelled when its holder next calls. NotFoundError; AlreadyFinishedError if finished,
        dead or cancelled already."""
        check_name("id", task_id)
        self._require_extensions("cancel")

        def work(conn: Connection) -> Task:
            row = self._read(conn, task_id, lock=True)
            if row.created_at is None:
                raise AlreadyFinishedError(f"task {task_id!r} is already {self._status(row, row.now).value}")
            if row.owner == 0 or row.timeout <= row.now:
                conn.execute(self._end(self._t.id == task_id, Outcome.CANCELLED))
            else:
                conn.execute(sa.update(self.table).where(self._t.id == task_id).values(cancel_requested=1))
            row = self._read(conn, task_id)
            return self._task(row, row.now)

        return self.db.transaction(work)

    def requeue(self, task_id: str) -> Task:
        """Make a dead task waiting again, its attempts reset (an operator's action).

        NotFoundError; NotDeadError if it is waiting or running; AlreadyFinishedError if it
        finished or was cancelled."""
        check_name("id", task_id)
        self._require_extensions("requeue")

        def work(conn: Connection) -> Task:
            row = self._read(conn, task_id, lock=True)
            if row.created_at is not None:
                raise NotDeadError(f"task {task_id!r} is {self._status(row, row.now).value}, not dead")
            if row.outcome != Outcome.DEAD.value:
                raise AlreadyFinishedError(
                    f"task {task_id!r} is {self._status(row, row.now).value}, not dead"
                )
            now = self.db.now()
            values = {
                "created_at": now,
                "timeout": now,
                "attempts": 0,
                "outcome": None,
                "cancel_requested": 0,
            }
            conn.execute(sa.update(self.table).where(self._t.id == task_id).values(values))
            row = self._read(conn, task_id)
            return self._task(row, row.now)

        return self.db.transaction(work)

    # -- statements shared by the operations -------------------------------------------------

    def _held(self, task_id: str, lease: int) -> sa.ColumnElement[bool]:
        return sa.and_(self._t.id == task_id, self._t.owner == lease, self._t.created_at.is_not(None))

    def _update_held(
        self, conn: Connection, task_id: str, lease: int, values: dict[str, Any], end: bool = False
    ) -> bool:
        """Apply ``values`` to the held row; True if a cancel was requested for it (the values
        applied, or with ``end`` the task ended cancelled instead); else the lease error."""
        held = sa.and_(self._held(task_id, lease), self._not_cancel_requested())
        if conn.execute(sa.update(self.table).where(held).values(values)).rowcount == 1:
            return False
        row = self._state(conn, task_id)
        if row is None or not _holds(row, lease) or not row.cancel_requested:
            raise _lease_error(task_id, row)
        if end:
            conn.execute(self._end(self._t.id == task_id, Outcome.CANCELLED))
        else:
            conn.execute(sa.update(self.table).where(self._t.id == task_id).values(values))
        return True

    def _holding(self, items: Sequence[tuple[str, int]]) -> sa.ColumnElement[bool]:
        """The rows that the (id, lease) pairs hold: one IN list per lease (on the primary key)."""
        leases: dict[int, set[str]] = {}
        for task_id, lease in items:
            leases.setdefault(lease, set()).add(task_id)
        ids = sorted({task_id for task_id, _ in items})
        held = sa.or_(
            *(sa.and_(self._t.owner == lease, self._t.id.in_(sorted(i))) for lease, i in leases.items())
        )
        return sa.and_(self._t.id.in_(ids), self._t.created_at.is_not(None), held)

    def _lease_error(self, conn: Connection, task_id: str) -> PerfectQueueError:
        return _lease_error(task_id, self._state(conn, task_id))

    def _finish_held(self) -> sa.Update:
        """Finish the rows ``:ids`` that the lease ``:lease`` holds and no cancel was asked for."""
        held = sa.and_(
            self._t.id.in_(sa.bindparam("ids", expanding=True)),
            self._t.owner == sa.bindparam("lease", type_=sa.BigInteger),
            self._t.created_at.is_not(None),
            self._not_cancel_requested(),
        )
        return self._finish_where(held)

    def _finish_where(self, where: sa.ColumnElement[bool]) -> sa.Update:
        return self._end(where, None)

    def _end(self, where: sa.ColumnElement[bool], outcome: Outcome | None) -> sa.Update:
        """Finish rows: normally (``outcome`` None), dead or cancelled. A dead row keeps its
        user (for a requeue) and its own, longer, retention."""
        dead = outcome is Outcome.DEAD
        retention = self.policy.dead_retention_time if dead else self.retention_time
        values: dict[str, Any] = {
            "timeout": self.db.now() - DELETE_OFFSET + retention,
            "created_at": None,
            "outcome": None if outcome is None else outcome.value,
        }
        if outcome is not None:
            values["owner"] = 0  # a late call by the last holder is refused, not accepted
        if not dead:
            values["resource"] = None
        return sa.update(self.table).where(where).values(self._values(values))

    def _state_query(self, where: sa.ColumnElement[bool]) -> sa.Select[Any]:
        t, col = self._t, self._col
        return sa.select(t.id, t.created_at, t.owner, col("outcome"), col("cancel_requested")).where(where)

    def _state(self, conn: Connection, task_id: str) -> Row[Any] | None:
        return conn.execute(self._state_query(self._t.id == task_id)).first()

    def _read(self, conn: Connection, task_id: str, lock: bool = False) -> Any:
        query = sa.select(*self._columns(), self.db.now().label("now")).where(self._t.id == task_id)
        row = conn.execute(query.with_for_update() if lock and not self.db.is_sqlite else query).first()
        if row is None:
            raise NotFoundError(f"task {task_id!r} does not exist")
        return row

    # -- reading ---------------------------------------------------------------------------

    def get(self, task_id: str) -> Task:
        """The task's current state; NotFoundError if there is no row."""
        check_name("id", task_id)
        self.extended()

        def work(conn: Connection) -> Task:
            row = self._read(conn, task_id)
            return self._task(row, row.now)

        return self.db.transaction(work, readonly=True)

    def counts(self, limit: int = DEFAULT_LIMIT) -> Counts:
        """Tasks by state, each count stopping at ``limit`` (:mod:`.stats`)."""
        dead = self._outcome_is(Outcome.DEAD) if self.extended() else None

        def work(conn: Connection) -> Counts:
            now = conn.execute(sa.select(self.db.now())).scalar_one()
            return count_states(conn, self.table, now, dead, limit)

        return self.db.transaction(work, readonly=True)

    def users(self, users: int = 200, limit: int = DEFAULT_LIMIT) -> list[UserLoad]:
        """Per user, tasks running and scheduled against max_running, among the first ``limit``
        tasks not yet due (the fair scheduler's view); the ``users`` busiest."""

        def work(conn: Connection) -> list[UserLoad]:
            now = conn.execute(sa.select(self.db.now())).scalar_one()
            return user_loads(conn, self.table, now, users, limit)

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
    ) -> Page:
        """Tasks after ``cursor``, filtered, in ``order``: ``id``, or ``due`` (due time, on an
        index whatever the filters: :mod:`.listing`). ``leased`` tells running tasks a worker
        holds from those scheduled for later. A page may be short and carry a cursor."""
        check_int("limit", limit, 1, 1000)
        self.extended()

        def keep(now: int) -> Callable[[Row[Any]], bool]:
            def accepts(row: Row[Any]) -> bool:
                if status is not None and self._status(row, now) is not status:
                    return False
                if leased is not None and _leased(row, now) is not leased:
                    return False
                return task_type is None or decode_data(row.id, row.data)[0] == task_type

            return accepts

        def work(conn: Connection) -> Page:
            now = conn.execute(sa.select(self.db.now())).scalar_one()
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
            return Page([self._task(r, now) for r in rows], after)

        return self.db.transaction(work, readonly=True)

    def ping(self) -> None:
        """One index probe of the table: UnavailableError unless the database answers."""
        query = sa.select(self._t.id).limit(1)
        self.db.transaction(lambda conn: conn.execute(query).first(), readonly=True)

    # -- per-minute counts (the side table of :mod:`.throughput`) ------------------------------

    def add_throughput(self, counts: throughput.MinuteCounts) -> None:
        """Add per-minute submitted and finished counts to this queue's."""
        self.db.transaction(lambda conn: throughput.add(conn, self.table.name, counts))

    def throughput(self, start: int, end: int) -> dict[int, tuple[int, int]]:
        """This queue's (submitted, finished) per minute from ``start`` to ``end``."""
        name = self.table.name
        return self.db.transaction(lambda conn: throughput.read(conn, name, start, end), readonly=True)

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

    def _task(self, row: Row[Any], now: int, timeout: int | None = None, attempts: int | None = None) -> Task:
        task_type, data, compression = decode_data(row.id, row.data)
        leased = _leased(row, now) if timeout is None else True  # a new timeout: just leased
        timeout = row.timeout if timeout is None else timeout
        return Task(
            id=row.id,
            type=task_type,
            data=data,
            user=row.resource,
            status=self._status(row, now, timeout),
            created_at=row.created_at,
            timeout=timeout,
            max_running=row.max_running,
            compression=compression,
            attempts=row.attempts if attempts is None else attempts,
            max_attempts=row.max_attempts,
            last_error=row.last_error,
            cancel_requested=bool(row.cancel_requested),
            traceparent=row.traceparent,
            leased=leased,
        )

    @staticmethod
    def _status(row: Row[Any], now: int, timeout: int | None = None) -> TaskStatus:
        if row.created_at is None:
            if row.outcome in (Outcome.DEAD.value, Outcome.CANCELLED.value):
                return TaskStatus(row.outcome)
            return TaskStatus.FINISHED
        return (
            TaskStatus.WAITING if (row.timeout if timeout is None else timeout) <= now else TaskStatus.RUNNING
        )


class _ShortBatch(Exception):
    """A fenced batch UPDATE changed fewer rows than the batch has items."""


def _leased(row: Any, now: int) -> bool:
    """Running and held by a worker (a running task nobody holds is scheduled for later)."""
    return bool(row.created_at is not None and row.timeout > now and row.owner != 0)


def _holds(row: Any, lease: int) -> bool:
    return bool(row.created_at is not None and row.owner == lease)


def _cancel_asked(task_id: str) -> CancelRequestedError:
    return CancelRequestedError(f"task {task_id!r}: a cancel was requested; stop and give it back")


def _heartbeat_result(task_id: str, lease: int, row: Any) -> PerfectQueueError | None:
    """A heartbeat's answer from the row as it is after the extension."""
    if row is None or not _holds(row, lease):
        return _lease_error(task_id, row)
    return _cancel_asked(task_id) if row.cancel_requested else None


def _cancelled(task_id: str) -> CancelRequestedError:
    return CancelRequestedError(f"task {task_id!r} was cancelled: a cancel was requested while it ran")


def _lease_error(task_id: str, row: Any) -> PerfectQueueError:
    """Why a heartbeat, retry or release with a lease did not apply, from the row as it is."""
    if row is not None and row.created_at is None and row.outcome == Outcome.CANCELLED.value:
        return CancelRequestedError(f"task {task_id!r} was cancelled")
    return PreemptedError(f"task {task_id!r} is not held by this lease (finished, gone or taken over)")


def _finish_error(task_id: str, lease: int, row: Any, finished_now: bool) -> PerfectQueueError:
    """Why a finish with this lease did not apply, from the row as it is."""
    if row is None:
        return NotFoundError(f"task {task_id!r} does not exist")
    if row.created_at is None and row.outcome == Outcome.CANCELLED.value:
        return CancelRequestedError(f"task {task_id!r} was cancelled")
    if finished_now or (row.created_at is None and row.owner == lease):
        return AlreadyFinishedError(f"task {task_id!r} is already finished")
    return PreemptedError(f"task {task_id!r} is not held by this lease (finished, gone or taken over)")
