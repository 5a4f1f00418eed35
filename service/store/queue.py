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
serves it as the original would (no attempts, no dead or cancelled tasks): :mod:`.columns` says
what each statement reads and writes. The reads are :mod:`.reading`'s; what a row answers a call
with a lease is :mod:`.rows`'.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable, Sequence
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
    PerfectQueueError,
)
from . import throughput
from .acquire import Acquisition
from .codec import decode_data, encode_data
from .columns import Columns
from .database import Database
from .listing import Listing
from .model import (
    DELETE_OFFSET,
    AcquiredTask,
    NewTask,
    Outcome,
    RetryPolicy,
    Task,
    check_data,
    check_duration,
    check_int,
    check_name,
    truncate_error,
)
from .reading import Page, QueueReader
from .rows import (
    LeaseState,
    answer_finishes,
    cancel_asked,
    cancelled,
    finish_error,
    finished_once,
    heartbeat_answer,
    holds,
    lease_error,
    status_of,
    to_task,
)
from .schema import build_table, init_table

__all__ = ["LEASE_EXPIRED", "MAX_LEASE", "Page", "QueueStore"]

MAX_LEASE = 2**63 - 1
LEASE_EXPIRED = (
    "LeaseExpired: the lease of the last attempt expired (its worker died or stopped heart-beating)"
)


class QueueStore(QueueReader):
    """One queue: one table in one database.

    ``fair`` orders acquisition by user as the original's resource limit does (its
    ``disable_resource_limit`` is ``fair=False``). ``lock`` chooses how concurrent acquisitions
    are kept apart on MySQL: ``skip_locked`` (row locks, in parallel) or ``get_lock`` (the
    original's ``GET_LOCK('<table>')``, for tables shared with Ruby PerfectQueue processes).
    Fair acquisition always serialises on that lock, which is what keeps ``max_running`` exact.
    ``policy`` holds the queue's retry backoff, ``max_attempts`` and ``dead_retention_time``.
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
    ) -> None:
        if lock not in ("skip_locked", "get_lock"):
            raise InvalidError("lock must be 'skip_locked' or 'get_lock'")
        self.db = db
        self.table = build_table(table, db)
        self.retention_time = check_duration("retention_time", retention_time)
        self.fair = fair
        self.lock = lock
        self.policy = policy or RetryPolicy()
        self._t = self.table.c
        self._acquisition = Acquisition(db, self.table, fair=fair, lock=lock)
        self._columns = Columns(db, self.table, changed=self._acquisition.use_columns)
        """The table's column set; the hot statements are prepared once per set (``prepared``)."""
        self._listing = Listing(self.table, self._columns.selected)

    # -- schema ----------------------------------------------------------------------------

    def init(self) -> list[str]:
        """Create the table or add what it lacks, and the per-minute counts' side table
        (idempotent)."""
        done = init_table(self.db, self.table)
        self.db.transaction(throughput.create)  # shared by the queues of a database: not reported
        self._columns.use(extended=True)
        return done

    def extended(self) -> bool:
        """Has the table the columns beyond the original's? Known once seen; a table seen
        without them is looked at again every few seconds (:mod:`.columns`). Each operation
        asks first, outside its transaction, so that its statements match the table."""
        return self._columns.extended()

    # -- submit ----------------------------------------------------------------------------

    def submit(self, task: NewTask) -> None:
        """Insert a waiting task; AlreadyExistsError if the id is present in any state."""
        error = self._submit(task)
        if error is not None:
            raise error

    def submit_many(self, tasks: Sequence[NewTask]) -> list[PerfectQueueError | None]:
        """Insert many tasks in one transaction; per task None (stored) or AlreadyExistsError.

        An id given twice is stored once, from its first task: a later one answers
        AlreadyExistsError, as a submit coming after the first would (whether the tasks came in
        one batch or as submits merged into one)."""
        results: list[PerfectQueueError | None] = [None] * len(tasks)
        first: dict[str, int] = {}
        for i, task in enumerate(tasks):
            if first.setdefault(task.id, i) != i:
                results[i] = _already_exists(task.id, at_once=True)
        self.extended()
        rows = {task_id: {**self._row(tasks[i]), "timeout": tasks[i].run_at} for task_id, i in first.items()}
        try:
            present = self.db.transaction(lambda conn: self._insert_new(conn, rows)) if rows else set()
        except AlreadyExistsError:  # a concurrent submit took one of the ids between look and insert
            return [results[i] if first[t.id] != i else self._submit(t) for i, t in enumerate(tasks)]
        for task_id in present:
            results[first[task_id]] = _already_exists(task_id)
        return results

    def _submit(self, task: NewTask) -> AlreadyExistsError | None:
        self.extended()
        row = {**self._row(task), "run_at": task.run_at}
        insert = self._columns.prepared("submit", self._insert)
        try:
            self.db.transaction(lambda conn: conn.execute(insert, row))
        except AlreadyExistsError:
            return _already_exists(task.id)
        return None

    def _insert_new(self, conn: Connection, rows: dict[str, dict[str, Any]]) -> set[str]:
        """Insert the rows whose id is not present (one multi-row INSERT); the ids present."""
        found = conn.execute(self._columns.prepared("present", self._present), {"ids": list(rows)}).all()
        present = {r.id for r in found if r.id is not None}
        now = found[0].now
        new = [
            {**row, "created_at": now, "timeout": now if row["timeout"] is None else row["timeout"]}
            for task_id, row in rows.items()
            if task_id not in present
        ]
        if new:  # bound values only, so that the driver sends one multi-row INSERT
            conn.execute(self._columns.prepared("submit_rows", lambda: sa.insert(self.table)), new)
        return present

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
        """The task's values to insert, less its times (the statements read the clock)."""
        if task.max_attempts is not None or task.traceparent is not None:
            self._columns.require("max_attempts or traceparent")
        return self._columns.values(
            {
                "id": task.id,
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
            lease_rows = self._columns.prepared("lease", self._lease_rows)
            conn.execute(lease_rows, {"ids": [r.id for r in live], "new_timeout": timeout, "lease": lease})
            counted = self._columns.attempt
            return [
                AcquiredTask(to_task(r, now, timeout=timeout, attempts=r.attempts + counted), lease)
                for r in live
            ]

        acquired = self.db.transaction(work, lock=self._acquisition.lock_name(), timed=self.locked)
        for outcome, count in ended.items():
            self.ended(outcome, count)
        return acquired

    def locked(self, waited: float, held: float) -> None:
        """Called after each acquisition that took the table's named lock (MySQL: fair
        acquisition, or ``lock="get_lock"``) with the seconds it waited for the lock and held
        it. Nothing here; a subclass measures them."""

    def _lease_rows(self) -> sa.Update:
        values = {
            "timeout": sa.bindparam("new_timeout", type_=sa.Integer),
            "owner": sa.bindparam("lease", type_=sa.BigInteger),
            "attempts": self._t.attempts + 1,
        }
        return (
            sa.update(self.table)
            .where(self._t.id.in_(sa.bindparam("ids", expanding=True)))
            .values(self._columns.values(values))
        )

    def ended(self, outcome: Outcome, count: int) -> None:
        """Called after an acquisition ended ``count`` tasks it found undeliverable (dead: their
        attempts used up; cancelled: a cancel was requested while their lease ran out). Nothing
        here; a subclass counts them."""

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
            raise cancel_asked(task_id)

    def heartbeat_many(
        self, items: Sequence[tuple[str, int]], alive_time: int
    ) -> list[PerfectQueueError | None]:
        """Extend many leases to now + alive_time: one transaction, one fenced UPDATE. Per item
        None (extended), CancelRequestedError (extended, but a cancel was requested: stop) or
        the error a single heartbeat would answer (Preempted: finished, gone or taken over).

        A heartbeat changes nothing another would not change again, so the same (id, lease)
        twice answers the same twice; an id under two leases extends the one that holds it,
        the other answers Preempted."""
        check_duration("alive_time", alive_time, 1)
        if not items:
            return []
        self.extended()
        ids = sorted({task_id for task_id, _ in items})
        extend = sa.update(self.table).where(self._holding(items)).values(timeout=self.db.now() + alive_time)

        def work(conn: Connection) -> list[PerfectQueueError | None]:
            conn.execute(extend)  # the rows it changed are locked now: the read below sees them as left
            state = {r.id: r for r in conn.execute(self._state_query(self._t.id.in_(ids)))}
            return [heartbeat_answer(task_id, lease, state.get(task_id)) for task_id, lease in items]

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
        self.extended()
        recorded = self._columns.values({} if error is None else {"last_error": truncate_error(error)})
        read = [self._columns.read(name) for name in ("attempts", "max_attempts", "cancel_requested")]

        def work(conn: Connection) -> int | CancelRequestedError | None:
            row = conn.execute(sa.select(*read).where(self._held(task_id, lease)).with_for_update()).first()
            if row is None:
                raise self._lease_error(conn, task_id)
            if row.cancel_requested:
                conn.execute(self._end(self._t.id == task_id, Outcome.CANCELLED).values(recorded))
                return cancelled(task_id)
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
        values = self._columns.values({"timeout": self.db.now(), "owner": 0, "attempts": attempts})
        if self.db.transaction(lambda conn: self._update_held(conn, task_id, lease, values, end=True)):
            raise cancelled(task_id)

    def finish(self, task_id: str, lease: int) -> None:
        """Mark the task finished; it stays retained (and unsubmittable) for retention_time.

        CancelRequestedError if a cancel was requested meanwhile: the task ends cancelled.
        """
        self.extended()
        fenced = self._columns.prepared("finish", self._finish_held)

        def work(conn: Connection) -> bool:
            if conn.execute(fenced, {"ids": [task_id], "lease": lease}).rowcount == 1:
                return False
            row = self._state(conn, task_id)
            if row is not None and holds(row, lease) and row.cancel_requested:
                conn.execute(self._end(self._t.id == task_id, Outcome.CANCELLED))
                return True
            raise finish_error(task_id, lease, row)

        if self.db.transaction(work):
            raise cancelled(task_id)

    def finish_many(self, items: Sequence[tuple[str, int]]) -> list[PerfectQueueError | None]:
        """Finish many leased tasks in one transaction; per item None or the error a finish
        alone would answer, the items taken in order: the same (id, lease) twice finishes the
        task once and the second answers AlreadyFinished, as a second finish would.

        One fenced UPDATE finishes a batch whose every task is held by the one lease its items
        give; when it changes fewer rows it is rolled back, and the batch is answered item by
        item from the rows' state, in a second transaction."""
        if not items:
            return []
        self.extended()
        leases = dict(items)
        one_lease_each = len(leases) == len(set(items))
        if one_lease_each and self.db.transaction(lambda conn: self._finish_all(conn, leases)):
            return finished_once(items)
        return self.db.transaction(lambda conn: self._finish_each(conn, items))

    def _finish_all(self, conn: Connection, leases: dict[str, int]) -> bool:
        """Finish every task of ``leases`` (id -> lease) if each is held by its lease and no
        cancel was asked for it; else change nothing and answer False."""
        if len(set(leases.values())) == 1:
            fenced = self._columns.prepared("finish", self._finish_held)
            params: dict[str, Any] = {"ids": sorted(leases), "lease": next(iter(leases.values()))}
        else:
            held = sa.and_(self._holding(leases.items()), self._columns.not_cancel_requested())
            fenced, params = self._finish_where(held), {}
        if conn.execute(fenced, params).rowcount == len(leases):
            return True
        conn.rollback()  # some task is not held (or ends cancelled): it is answered on its own
        return False

    def _finish_each(
        self, conn: Connection, items: Sequence[tuple[str, int]]
    ) -> list[PerfectQueueError | None]:
        """Answer each item from the rows' state as the items before it left it (:mod:`.rows`),
        then finish (or end cancelled) what they finished."""
        ids = sorted({task_id for task_id, _ in items})
        rows = conn.execute(self._state_query(self._t.id.in_(ids)).with_for_update()).all()
        finishes = answer_finishes(items, {r.id: LeaseState.of(r) for r in rows})
        if finishes.done:
            conn.execute(self._finish_where(self._t.id.in_(sorted(finishes.done))))
        if finishes.cancelled:
            conn.execute(self._end(self._t.id.in_(sorted(finishes.cancelled)), Outcome.CANCELLED))
        return finishes.answers

    def force_finish(self, task_id: str) -> None:
        """Finish regardless of any lease (an operator's action); a dead task too."""
        self.extended()

        def work(conn: Connection) -> None:
            finishable = sa.or_(self._t.created_at.is_not(None), self._columns.outcome_is(Outcome.DEAD))
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
            now = self._now(conn)
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
        self._columns.require("cancel")

        def work(conn: Connection) -> Task:
            row = self._read(conn, task_id, lock=True)
            if row.created_at is None:
                raise AlreadyFinishedError(f"task {task_id!r} is already {status_of(row, row.now).value}")
            if row.owner == 0 or row.timeout <= row.now:
                conn.execute(self._end(self._t.id == task_id, Outcome.CANCELLED))
            else:
                conn.execute(sa.update(self.table).where(self._t.id == task_id).values(cancel_requested=1))
            row = self._read(conn, task_id)
            return to_task(row, row.now)

        return self.db.transaction(work)

    def requeue(self, task_id: str) -> Task:
        """Make a dead task waiting again, its attempts reset (an operator's action).

        NotFoundError; NotDeadError if it is waiting or running; AlreadyFinishedError if it
        finished or was cancelled."""
        check_name("id", task_id)
        self._columns.require("requeue")

        def work(conn: Connection) -> Task:
            row = self._read(conn, task_id, lock=True)
            if row.created_at is not None:
                raise NotDeadError(f"task {task_id!r} is {status_of(row, row.now).value}, not dead")
            if row.outcome != Outcome.DEAD.value:
                raise AlreadyFinishedError(f"task {task_id!r} is {status_of(row, row.now).value}, not dead")
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
            return to_task(row, row.now)

        return self.db.transaction(work)

    # -- statements shared by the operations -------------------------------------------------

    def _held(self, task_id: str, lease: int) -> sa.ColumnElement[bool]:
        return sa.and_(self._t.id == task_id, self._t.owner == lease, self._t.created_at.is_not(None))

    def _update_held(
        self, conn: Connection, task_id: str, lease: int, values: dict[str, Any], end: bool = False
    ) -> bool:
        """Apply ``values`` to the held row; True if a cancel was requested for it (the values
        applied, or with ``end`` the task ended cancelled instead); else the lease error."""
        held = sa.and_(self._held(task_id, lease), self._columns.not_cancel_requested())
        if conn.execute(sa.update(self.table).where(held).values(values)).rowcount == 1:
            return False
        row = self._state(conn, task_id)
        if row is None or not holds(row, lease) or not row.cancel_requested:
            raise lease_error(task_id, row)
        if end:
            conn.execute(self._end(self._t.id == task_id, Outcome.CANCELLED))
        else:
            conn.execute(sa.update(self.table).where(self._t.id == task_id).values(values))
        return True

    def _holding(self, items: Iterable[tuple[str, int]]) -> sa.ColumnElement[bool]:
        """The rows that the (id, lease) pairs hold: one IN list per lease (on the primary key)."""
        leases: dict[int, set[str]] = {}
        for task_id, lease in items:
            leases.setdefault(lease, set()).add(task_id)
        ids = sorted(set().union(*leases.values()))
        held = sa.or_(
            *(sa.and_(self._t.owner == lease, self._t.id.in_(sorted(i))) for lease, i in leases.items())
        )
        return sa.and_(self._t.id.in_(ids), self._t.created_at.is_not(None), held)

    def _lease_error(self, conn: Connection, task_id: str) -> PerfectQueueError:
        return lease_error(task_id, self._state(conn, task_id))

    def _finish_held(self) -> sa.Update:
        """Finish the rows ``:ids`` that the lease ``:lease`` holds and no cancel was asked for."""
        held = sa.and_(
            self._t.id.in_(sa.bindparam("ids", expanding=True)),
            self._t.owner == sa.bindparam("lease", type_=sa.BigInteger),
            self._t.created_at.is_not(None),
            self._columns.not_cancel_requested(),
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
        return sa.update(self.table).where(where).values(self._columns.values(values))

    def _state_query(self, where: sa.ColumnElement[bool]) -> sa.Select[Any]:
        t, read = self._t, self._columns.read
        return sa.select(t.id, t.created_at, t.owner, read("outcome"), read("cancel_requested")).where(where)

    def _state(self, conn: Connection, task_id: str) -> Row[Any] | None:
        return conn.execute(self._state_query(self._t.id == task_id)).first()


def _already_exists(task_id: str, at_once: bool = False) -> AlreadyExistsError:
    if at_once:  # the same id twice in one call: a batch, or submits merged into one
        return AlreadyExistsError(f"task {task_id!r} already exists (submitted more than once at a time)")
    return AlreadyExistsError(f"task {task_id!r} already exists")
