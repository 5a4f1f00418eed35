"""The queue's operations (CONTRACT.md §3): one method per operation, all of the SQL.

Time is the database's clock (``Database.now``). Leases are fencing tokens written to ``owner``
(with the timeout they wrote: :mod:`.owners`) at each acquisition; a heartbeat, finish, retry or
release must present the current one.

Beyond the original: each acquisition counts an attempt (in the same UPDATE that leases the
row); a task that would start an attempt past its ``max_attempts`` ends **dead** instead (kept
for ``dead_retention_time``, requeueable); a cancel ends a waiting task at once and asks the
holder of a running one to stop (its next heartbeat, finish, retry or release answers
CancelRequestedError, and the task ends **cancelled**). Dead and cancelled rows are finished rows
to the original (``created_at`` NULL, timeout in the finished range); ``outcome`` says how they
ended.

A table the original created lacks those columns until ``init`` adds them; until then the store
serves it as the original would (no attempts, no dead or cancelled tasks): :mod:`.columns` says
what each statement reads and writes.

``QueueStore`` is here with submit and acquire; its other operations are its bases': the lease
operations (:mod:`.leases`), the operator's actions (:mod:`.actions`) and the reads
(:mod:`.reading`), over the statements they share (:mod:`.statements`). What a row answers is
:mod:`.rows`'.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Row

from ...errors import AlreadyExistsError, InvalidError, PerfectQueueError
from . import pausing, throughput
from .acquire import Acquisition
from .actions import OperatorActions
from .codec import encode_data
from .columns import Columns
from .database import Database
from .leases import LeaseOperations
from .listing import Listing
from .model import AcquiredTask, NewTask, Outcome, RetryPolicy, check_duration, check_int
from .observer import StoreObserver, Unobserved
from .owners import held_by, leased, new_lease, scheduled
from .reading import Page
from .rows import to_task, within
from .schema import build_table, init_table
from .userlocks import UserLocks

log = logging.getLogger("perfectqueue.store")

__all__ = ["LEASE_EXPIRED", "MAX_LEASE", "Page", "QueueStore"]

MAX_LEASE = 2**63 - 1
LEASE_EXPIRED = (
    "LeaseExpired: the lease of the last attempt expired (its worker died or stopped heart-beating)"
)


class QueueStore(LeaseOperations, OperatorActions):
    """One queue: one table in one database.

    ``fair`` orders acquisition by user as the original's resource limit does (its
    ``disable_resource_limit`` is ``fair=False``). ``lock`` chooses how concurrent acquisitions
    are kept apart on MySQL: ``skip_locked`` (row locks, in parallel) or ``get_lock`` (the
    original's ``GET_LOCK('<table>')``, for tables shared with Ruby PerfectQueue processes).
    ``fair_lock`` chooses what keeps ``max_running`` exact: ``table`` (the table's lock, as the
    original) or ``user`` (a lock per user served, where no Ruby process shares the table: see
    :mod:`.userlocks`).
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
        fair_lock: str = "table",
        policy: RetryPolicy | None = None,
        observer: StoreObserver | None = None,
        max_data_bytes: int | None = None,
    ) -> None:
        if lock not in ("skip_locked", "get_lock"):
            raise InvalidError("lock must be 'skip_locked' or 'get_lock'")
        if fair_lock not in ("user", "table"):
            raise InvalidError("fair_lock must be 'user' or 'table'")
        self.db = db
        self.table = build_table(table, db)
        self.retention_time = check_duration("retention_time", retention_time)
        self.fair = fair
        self.lock = lock
        self.policy = policy or RetryPolicy()
        self.observer: StoreObserver = observer or Unobserved()
        self.max_data_bytes = max_data_bytes
        """Data over this once inflated is not read (None: no limit, for the SDK's direct backend,
        whose caller reads its own table): see ``acquire`` and ``Task.data_withheld``."""
        self._t = self.table.c
        users = UserLocks(db, self.table, fair_lock, extended=self.extended)
        self._acquisition = Acquisition(db, self.table, fair=fair, lock=lock, users=users)
        self._columns = Columns(db, self.table, changed=self._acquisition.use_columns)
        """The table's column set; the hot statements are prepared once per set (``prepared``)."""
        self._listing = Listing(self.table, self._columns.selected)
        self._pause = pausing.PauseFlag(db, table)
        self.origin = secrets.token_hex(8)
        """Names this store's announcements of waiting tasks (PostgreSQL: see ``wakeups.py``),
        which the replica that sent them ignores."""

    # -- pausing ---------------------------------------------------------------------------

    def pause(self) -> int | None:
        """Pause the queue: acquisitions hand out nothing (every process within PAUSE_RECHECK
        seconds); submits and calls on leased tasks go on. When it was paused."""
        return self._pause.set(True)

    def resume(self) -> None:
        """Resume a paused queue (one not paused stays so)."""
        self._pause.set(False)

    # -- schema ----------------------------------------------------------------------------

    def init(self, binary_collation: bool = False) -> list[str]:
        """Create the table or add what it lacks, and the per-minute counts' side table
        (idempotent), and the paused queues' side table; ``binary_collation``: convert an
        original table's ids and users to compare byte for byte (:func:`.schema.convert_collation`)."""
        done = init_table(self.db, self.table, side=_side_tables, binary_collation=binary_collation)
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
            present = (
                self.db.transaction(
                    lambda conn: self._insert_new(conn, rows),
                    repeat=lambda conn: self._insert_new(conn, rows, repeated=True),
                )
                if rows
                else set()
            )
        except AlreadyExistsError:  # a concurrent submit took one of the ids between look and insert
            return [results[i] if first[t.id] != i else self._submit(t) for i, t in enumerate(tasks)]
        for task_id in present:
            results[first[task_id]] = _already_exists(task_id)
        return results

    def _submit(self, task: NewTask) -> AlreadyExistsError | None:
        self.extended()
        row = {**self._row(task), "run_at": task.run_at}
        insert = self._columns.prepared("submit", self._insert)
        rows = {task.id: {**self._row(task), "timeout": task.run_at}}

        def insert_one(conn: Connection) -> set[str]:
            conn.execute(insert, row)
            return set()

        try:
            present = self.db.transaction(
                insert_one, repeat=lambda conn: self._insert_new(conn, rows, repeated=True)
            )
        except AlreadyExistsError:
            return self._taken_as(task.id)
        return self._taken_as(task.id) if present else None

    def _taken_as(self, task_id: str) -> AlreadyExistsError:
        """The refusal of a submit whose id is taken: it names the stored id when the table's
        collation made them one (a table the original created compares ids without case)."""
        query = sa.select(self._t.id).where(self._t.id == task_id)
        try:
            stored = self.db.transaction(lambda conn: conn.execute(query).scalar(), readonly=True)
        except PerfectQueueError:
            stored = None
        if stored is None or stored == task_id:
            return _already_exists(task_id)
        return AlreadyExistsError(
            f"task {task_id!r} already exists as {stored!r}: this table compares ids without case "
            "or trailing spaces (the collation the original created it with); `perfectqueue init "
            "--binary-collation` makes them different ids"
        )

    def _insert_new(
        self, conn: Connection, rows: dict[str, dict[str, Any]], repeated: bool = False
    ) -> set[str]:
        """Insert the rows whose id is not present (one multi-row INSERT); the ids present.

        ``repeated``: run again after a try whose COMMIT was cut off, which may have stored the
        rows; a present row with the same data and user is taken for that try's, stored."""
        found = conn.execute(self._columns.prepared("present", self._present), {"ids": list(rows)}).all()
        stored = {r.id: r for r in found if r.id is not None}
        now = found[0].now
        new = [
            {**row, "created_at": now, "timeout": now if row["timeout"] is None else row["timeout"]}
            for task_id, row in rows.items()
            if task_id not in stored
        ]
        if new:  # bound values only, so that the driver sends one multi-row INSERT
            conn.execute(self._columns.prepared("submit_rows", lambda: sa.insert(self.table)), new)
        return {task_id for task_id, r in stored.items() if not (repeated and _same(r, rows.get(task_id)))}

    def _insert(self) -> sa.Insert:
        """One task's INSERT; on PostgreSQL it also announces the task (see ``wakeups.py``)."""
        now = self.db.now()
        insert = sa.insert(self.table).values(
            created_at=now, timeout=sa.func.coalesce(sa.bindparam("run_at", type_=sa.Integer), now)
        )
        return insert.returning(self._notify()) if self.db.is_postgres else insert

    def _present(self) -> sa.Select[Any]:
        """The database's clock and which of ``ids`` exist (with their data and user), in one
        round trip: one row (now, NULL, …) when none does, else one row per id present. On
        PostgreSQL it also announces the tasks the INSERT after it stores: the notification goes
        out when their transaction commits (see ``wakeups.py``)."""
        one = sa.select(sa.literal(1).label("one")).subquery("one")
        notify = [self._notify()] if self.db.is_postgres else []
        return sa.select(
            self.db.now().label("now"), self._t.id, self._t.data, self._t.resource, *notify
        ).select_from(one.outerjoin(self.table, self.db.in_list(self._t.id, "ids")))

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
                "owner": 0 if task.run_at is None else scheduled(task.run_at),
                "max_attempts": task.max_attempts,
                "traceparent": task.traceparent,
            }
        )

    # -- acquire ---------------------------------------------------------------------------

    def acquire(self, max_tasks: int, alive_time: int, max_bytes: int | None = None) -> list[AcquiredTask]:
        """Lease up to ``max_tasks`` waiting tasks for ``alive_time`` seconds (oldest first), as
        many as fit in ``max_bytes`` of data (the first always; None: no limit): the rest are
        given back unread, waiting again with their attempt not counted."""
        check_int("max", max_tasks, 1, 1000)
        check_duration("alive_time", alive_time, 1)
        lease = new_lease()
        self.extended()
        if self._pause.paused_at() is not None:
            return []
        ended: dict[Outcome, int] = {}

        def work(conn: Connection) -> tuple[int, Sequence[Row[Any]]]:
            ended.clear()  # a retried transaction counts again
            if self._acquisition.reads_as_it_leases:
                return leased_as_read(conn)
            now, rows = self._acquisition.rows(conn, max_tasks, lock)
            live = [r for r in rows if not (r.cancel_requested or self._exhausted(r))]
            if len(live) < len(rows):
                ended.update(self._end_undeliverable(conn, [r for r in rows if r not in live]))
            if live:
                lease_rows = self._columns.prepared("lease", self._lease_rows)
                until = now + alive_time
                conn.execute(
                    lease_rows,
                    {"ids": [r.id for r in live], "new_timeout": until, "owner": leased(lease, until)},
                )
            return now, live

        def leased_as_read(conn: Connection) -> tuple[int, Sequence[Row[Any]]]:
            read_and_lease = self._columns.prepared("read and lease", self._read_and_lease)
            limits = {"limit": max_tasks, "queue_max_attempts": self.policy.settings.max_attempts}
            rows = conn.execute(read_and_lease, {**limits, "alive_time": alive_time, "lease": lease}).all()
            live = [r for r in rows if r.leased]
            if len(live) < len(rows):
                ended.update(self._end_undeliverable(conn, [r for r in rows if not r.leased]))
            return max((r.now for r in rows), default=0), live

        lock = self._acquisition.lock_name()
        now, rows = self.db.transaction(work, lock=lock, timed=self.observer.lock_held)
        counted = self._columns.attempt
        decoded = (  # once the transaction (and the table's lock) is let go, one at a time
            to_task(
                r, now, timeout=now + alive_time, attempts=r.attempts + counted, limit=self.max_data_bytes
            )
            for r in rows
        )
        tasks = list(within(decoded, max_bytes))
        withheld = [task.id for task in tasks if task.data_withheld]
        dead = self._settle(withheld, [r.id for r in rows[len(tasks) :]], lease)
        if dead:
            ended[Outcome.DEAD] = ended.get(Outcome.DEAD, 0) + dead
        for outcome, count in ended.items():
            self.observer.ended(outcome, count)
        return [AcquiredTask(task, lease) for task in tasks if not task.data_withheld]

    def _settle(self, withheld: list[str], unread: list[str], lease: int) -> int:
        """After an acquisition, fenced by its lease: tasks whose data is over max_data_bytes once
        inflated (written so by another writer: a Ruby process, the SDK's direct backend) end dead,
        saying why, rather than be delivered without their data; tasks past the byte budget are
        given back (waiting, attempt not counted). How many ended dead. If this fails, the leases
        run out and a later acquisition tries again."""
        if not (withheld or unread):
            return 0
        error = f"DataTooLarge: the task's data is over max_data_bytes ({self.max_data_bytes}) once inflated"
        held = held_by(self._t.owner, self._t.timeout, lease)
        bury = self._end(sa.and_(self._t.id.in_(withheld), held), Outcome.DEAD).values(last_error=error)
        attempts = sa.case((self._t.attempts > 0, self._t.attempts - 1), else_=0)
        back = self._columns.values({"timeout": self.db.now(), "owner": 0, "attempts": attempts})
        unlease = sa.update(self.table).where(self._t.id.in_(unread), held).values(back)

        def work(conn: Connection) -> int:
            if unread:
                conn.execute(unlease)
            return int(conn.execute(bury).rowcount) if withheld else 0

        try:
            return self.db.transaction(work)
        except PerfectQueueError as exc:
            log.warning(
                "could not settle %d tasks after an acquisition: %s", len(withheld) + len(unread), exc
            )
            return 0

    def _lease_rows(self) -> sa.Update:
        values = {
            "timeout": sa.bindparam("new_timeout", type_=sa.Integer),
            "owner": sa.bindparam("owner", type_=sa.BigInteger),
            "attempts": self._t.attempts + 1,
        }
        return (
            sa.update(self.table)
            .where(self.db.in_list(self._t.id, "ids"))
            .values(self._columns.values(values))
        )

    def _read_and_lease(self) -> sa.Select[Any]:
        """The oldest waiting rows read, locked and, those deliverable, leased, in one statement
        (PostgreSQL: a data-modifying CTE; one round trip where reading and leasing took two):
        each row as it was before (``leased``: whether it was), oldest first. A row whose cancel
        was requested, or whose attempts are used up (as ``_exhausted``), is not leased: the
        acquisition ends it."""
        picked = self._acquisition.oldest().cte("picked")
        until = picked.c.now + sa.bindparam("alive_time", type_=sa.Integer)
        own = sa.cast(picked.c.max_attempts, sa.Integer)  # NULL, untyped, in a table without the column
        limit = sa.func.coalesce(own, sa.bindparam("queue_max_attempts", type_=sa.Integer))
        deliverable = sa.and_(
            picked.c.cancel_requested == 0, sa.not_(sa.func.coalesce(picked.c.attempts >= limit, sa.false()))
        )
        values = {
            "timeout": until,
            "owner": leased(sa.bindparam("lease", type_=sa.BigInteger), until),
            "attempts": self._t.attempts + 1,
        }
        lease = (
            sa.update(self.table)
            .where(self._t.id == picked.c.id, deliverable)
            .values(self._columns.values(values))
            .returning(self._t.id)
            .cte("lease")
        )
        return (
            sa.select(picked, lease.c.id.is_not(None).label("leased"))
            .select_from(picked.outerjoin(lease, lease.c.id == picked.c.id))
            .order_by(picked.c.timeout)
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


def _same(stored: Any, row: dict[str, Any] | None) -> bool:
    """Is the stored row (data and user) the one ``row`` would insert?"""
    return row is not None and (bytes(stored.data), stored.resource) == (row["data"], row["resource"])


def _already_exists(task_id: str, at_once: bool = False) -> AlreadyExistsError:
    if at_once:  # the same id twice in one call: a batch, or submits merged into one
        return AlreadyExistsError(f"task {task_id!r} already exists (submitted more than once at a time)")
    return AlreadyExistsError(f"task {task_id!r} already exists")


def _side_tables(conn: Connection) -> None:
    """The side tables the queues of a database share (:mod:`.throughput`, :mod:`.pausing`),
    created by ``init`` under its lock (PostgreSQL's concurrent DDL would fail)."""
    throughput.create(conn)
    pausing.create(conn)
