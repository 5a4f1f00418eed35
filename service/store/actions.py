"""An operator's actions on one task, whoever holds it: finish it, make it deliverable now,
cancel it, or requeue a dead one (the last two beyond the original: they need the columns
``perfectqueue init`` adds).
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from ...errors import AlreadyFinishedError, HeldByRubyError, NotDeadError, NotFoundError
from .model import Outcome, Task, check_stored_id
from .owners import Holder
from .rows import holder_of_row, status_of
from .statements import QueueStatements


class OperatorActions(QueueStatements):
    """The operator's calls on a task, regardless of any lease (a base of ``QueueStore``)."""

    def force_finish(self, task_id: str) -> None:
        """Finish regardless of any lease (an operator's action); a dead task too."""
        self._columns.extended()

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
        check_stored_id(task_id)

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

    def cancel(self, task_id: str, force: bool = False) -> Task:
        """Cancel a task: one nobody holds (waiting, scheduled for later, or its lease expired)
        ends cancelled at once; one a worker of ours leases is asked to stop
        (``cancel_requested``) and ends cancelled when its holder next calls. One a Ruby process
        holds (which cannot see that request) is HeldByRubyError, nothing changed, unless
        ``force``: it ends cancelled at once. NotFoundError; AlreadyFinishedError if finished,
        dead or cancelled already."""
        check_stored_id(task_id)
        self._columns.require("cancel")

        def work(conn: Connection) -> Task:
            row = self._read(conn, task_id, lock=True)
            if row.created_at is None:
                raise AlreadyFinishedError(f"task {task_id!r} is already {status_of(row, row.now).value}")
            holder = holder_of_row(row, row.now)
            if holder is Holder.RUBY and not force:
                raise HeldByRubyError(
                    f"task {task_id!r} is held by a Ruby PerfectQueue process, which cannot see a cancel "
                    "request; nothing was changed: cancel it once it is waiting again, or with force to "
                    "end it now"
                )
            if holder is not Holder.WORKER:
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
        check_stored_id(task_id)
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
            return self._task(row, row.now)

        return self.db.transaction(work)
