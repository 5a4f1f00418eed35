"""The operations on a leased task (CONTRACT.md §3): heartbeat, retry, release and finish, one
task at a time or many in one call.

Each is fenced by its lease: it applies only to a row that lease holds (``owner``) and that has
not finished; otherwise it changes nothing and answers why from the row as it is (:mod:`.rows`).
A cancel requested while the task ran is answered at the holder's next call: a heartbeat is told
to stop; a finish, retry or release ends the task cancelled.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from ...errors import PerfectQueueError
from .codec import decode_data, encode_data
from .model import Outcome, RetryItem, check_data, check_duration, truncate_error
from .owners import SLOT, leased, scheduled, stamped_by_lease
from .rows import (
    LeaseState,
    answer_finishes,
    cancel_asked,
    cancelled,
    finish_error,
    finished_once,
    heartbeat_answer,
    holds,
)
from .statements import QueueStatements


class LeaseOperations(QueueStatements):
    """What the holder of a lease does with its task (a base of ``QueueStore``)."""

    def heartbeat(
        self, task_id: str, lease: int, alive_time: int, data: dict[str, Any] | None = None
    ) -> None:
        """Extend the lease to now + alive_time, optionally replacing the data."""
        check_duration("alive_time", alive_time, 1)
        until = self.db.now() + alive_time
        values: dict[str, Any] = {"timeout": until, "owner": leased(lease, until)}
        self._columns.extended()

        def work(conn: Connection) -> bool:
            if data is not None:
                row = conn.execute(
                    sa.select(self._t.data).where(self._held(task_id, lease)).with_for_update()
                ).first()
                if row is None:
                    raise self._lease_error(conn, task_id)
                old = decode_data(task_id, row.data, self.max_data_bytes)
                values["data"] = encode_data(old.type, data, old.compression)
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
        self._columns.extended()
        ids = sorted({task_id for task_id, _ in items})
        until = self.db.now() + alive_time
        t = self._t
        restamp = sa.case(
            (stamped_by_lease(t.owner, t.timeout), t.owner - t.owner % SLOT + until % SLOT), else_=t.owner
        )
        # owner first: MySQL reads a column assigned earlier in the SET list at its new value
        extend = (
            sa.update(self.table)
            .where(self._holding(items))
            .ordered_values((t.owner, restamp), (t.timeout, until))
        )

        def work(conn: Connection) -> list[PerfectQueueError | None]:
            conn.execute(extend)  # the rows it changed are locked now: the read below sees them as left
            state = {r.id: r for r in conn.execute(self._state_query(self._t.id.in_(ids)))}
            return [heartbeat_answer(task_id, lease, state.get(task_id)) for task_id, lease in items]

        return self.db.transaction(work)

    def retry(
        self,
        task_id: str,
        lease: int,
        retry_wait: int | None = None,
        error: str | None = None,
        dead: bool = False,
    ) -> int | None:
        """Give the task back, to be delivered again after ``retry_wait`` seconds (None: the
        queue's backoff for its attempt count), recording ``error`` (the handler's, truncated).
        ``dead``: give up on it, dead now whatever its attempts (a type no handler knows).

        Returns the wait, or None when the task is dead now (given up, or its attempts used up).
        """
        (result,) = self.retry_many([RetryItem(task_id, lease, retry_wait, error, dead)])
        if isinstance(result, PerfectQueueError):
            raise result
        return result

    def retry_many(self, items: Sequence[RetryItem]) -> list[int | PerfectQueueError | None]:
        """Retry many tasks in one transaction, each as :meth:`retry` alone would: per item the
        wait, None (dead now) or the error a retry alone would raise (its task unchanged, but
        for CancelRequestedError: it ended cancelled). The same (id, lease) twice retries the
        task once; the second answers as a retry after the first would (preempted)."""
        for item in items:
            if item.retry_wait is not None:
                check_duration("retry_wait", item.retry_wait)
        self._columns.extended()
        read = [self._columns.read(name) for name in ("attempts", "max_attempts", "cancel_requested")]
        now = self.db.now()

        def one(conn: Connection, item: RetryItem) -> int | PerfectQueueError | None:
            recorded = self._columns.values(
                {} if item.error is None else {"last_error": truncate_error(item.error)}
            )
            held = self._held(item.id, item.lease)
            row = conn.execute(sa.select(*read).where(held).with_for_update()).first()
            if row is None:
                return self._lease_error(conn, item.id)
            if row.cancel_requested:
                conn.execute(self._end(self._t.id == item.id, Outcome.CANCELLED).values(recorded))
                return cancelled(item.id)
            if item.dead or self.policy.exhausted(row.attempts, row.max_attempts):
                conn.execute(self._end(self._t.id == item.id, Outcome.DEAD).values(recorded))
                return None
            wait = self.policy.wait(row.attempts) if item.retry_wait is None else item.retry_wait
            due = now + wait
            values = {"timeout": due, "owner": scheduled(due), **recorded}
            conn.execute(sa.update(self.table).where(self._t.id == item.id).values(values))
            return wait

        return self.db.transaction(lambda conn: _in_id_order(conn, [i.id for i in items], items, one))

    def release(self, task_id: str, lease: int) -> None:
        """Give the task back, deliverable at once; the attempt it used is given back too (a
        release means the task was not worked on: a stopping worker, a vanished long-poll)."""
        (error,) = self.release_many([(task_id, lease)])
        if error is not None:
            raise error

    def release_many(self, items: Sequence[tuple[str, int]]) -> list[PerfectQueueError | None]:
        """Release many tasks in one transaction, each as :meth:`release` alone would: per item
        None or the error a release alone would raise (CancelRequestedError: it ended
        cancelled). The same (id, lease) twice releases the task once; the second is preempted."""
        attempts = sa.case((self._t.attempts > 0, self._t.attempts - 1), else_=0)
        self._columns.extended()
        values = self._columns.values({"timeout": self.db.now(), "owner": 0, "attempts": attempts})

        def one(conn: Connection, item: tuple[str, int]) -> PerfectQueueError | None:
            try:
                ended = self._update_held(conn, item[0], item[1], values, end=True)
            except PerfectQueueError as exc:
                return exc
            return cancelled(item[0]) if ended else None

        return self.db.transaction(lambda conn: _in_id_order(conn, [i for i, _ in items], items, one))

    def finish(self, task_id: str, lease: int) -> None:
        """Mark the task finished; it stays retained (and unsubmittable) for retention_time.

        CancelRequestedError if a cancel was requested meanwhile: the task ends cancelled.
        """
        self._columns.extended()
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
        self._columns.extended()
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
            conn.execute(
                self._freeing(self._end(self._t.id.in_(sorted(finishes.cancelled)), Outcome.CANCELLED))
            )
        return finishes.answers


Item = TypeVar("Item")
Answer = TypeVar("Answer")


def _in_id_order(
    conn: Connection, ids: Sequence[str], items: Sequence[Item], one: Callable[[Connection, Item], Answer]
) -> list[Answer]:
    """``one`` for each item, taken in the order of their ``ids`` (two batches lock the rows they
    share in one order), answered in the items' own order."""
    order = sorted(range(len(items)), key=ids.__getitem__)
    answers = {i: one(conn, items[i]) for i in order}
    return [answers[i] for i in range(len(items))]
