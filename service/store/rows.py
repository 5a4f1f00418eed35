"""What a row of the table says: the task it holds, and why a call with a lease did not apply.

The answers are read from the row as it is (CONTRACT.md §3): finished, gone or taken over is
Preempted; a second finish by the same lease is AlreadyFinished; a task that ended cancelled,
or that a cancel was asked for, answers CancelRequestedError.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, replace
from typing import Any

from ...errors import (
    AlreadyFinishedError,
    CancelRequestedError,
    NotFoundError,
    PerfectQueueError,
    PreemptedError,
)
from .codec import decode_data
from .model import Outcome, Retention, Task, TaskStatus
from .owners import Holder, holder_of, same_lease
from .owners import holds as lease_holds


def to_task(
    row: Any,
    now: int,
    timeout: int | None = None,
    attempts: int | None = None,
    *,
    limit: int | None = None,
    with_data: bool = True,
    retention: Retention | None = None,
) -> Task:
    """The task a row holds at ``now``; ``timeout`` and ``attempts`` as just leased, if given;
    its data withheld when over ``limit`` bytes, or left out (``with_data`` false: it is read
    for the type, then dropped). ``retention`` (the store's) tells when an ended task ended
    (without it: not told)."""
    task_type, data, compression, size = decode_data(row.id, row.data, limit)
    holder = holder_of_row(row, now) if timeout is None else Holder.WORKER  # a new timeout: just leased
    timeout = row.timeout if timeout is None else timeout
    status = status_of(row, now, timeout)
    return Task(
        id=row.id,
        type=task_type,
        data=data if data is not None and with_data else {},
        user=row.resource,
        status=status,
        created_at=row.created_at,
        timeout=timeout,
        max_running=row.max_running,
        compression=compression,
        attempts=row.attempts if attempts is None else attempts,
        max_attempts=row.max_attempts,
        last_error=row.last_error,
        cancel_requested=bool(row.cancel_requested),
        traceparent=row.traceparent,
        leased=holder is not None,
        holder=None if holder is None else holder.value,
        data_withheld=data is None,
        size=0 if data is None else size,  # withheld: nothing to send
        finished_at=None if retention is None else retention.finished_at(status, timeout),
    )


def within(tasks: Iterable[Task], budget: int | None) -> Iterator[Task]:
    """The leading tasks whose data fits in ``budget`` bytes together (always the first: a task
    is never too large to be answered alone; None: all). Lazy: the rest are not read."""
    total = 0
    for count, task in enumerate(tasks):
        total += task.size
        if count and budget is not None and total > budget:
            return
        yield task


def status_of(row: Any, now: int, timeout: int | None = None) -> TaskStatus:
    if row.created_at is None:
        if row.outcome in (Outcome.DEAD.value, Outcome.CANCELLED.value):
            return TaskStatus(row.outcome)
        return TaskStatus.FINISHED
    due = row.timeout if timeout is None else timeout
    return TaskStatus.WAITING if due <= now else TaskStatus.RUNNING


def holder_of_row(row: Any, now: int) -> Holder | None:
    """Who holds a running row (None: not running, or scheduled for later)."""
    return holder_of(row.created_at, row.timeout, row.owner, now)


def is_leased(row: Any, now: int) -> bool:
    """Running and held, by a worker or a Ruby process (else scheduled for later)."""
    return holder_of_row(row, now) is not None


def holds(row: Any, lease: int) -> bool:
    return bool(row.created_at is not None and lease_holds(row.owner, row.timeout, lease))


def cancel_asked(task_id: str) -> CancelRequestedError:
    return CancelRequestedError(f"task {task_id!r}: a cancel was requested; stop and give it back")


def cancelled(task_id: str) -> CancelRequestedError:
    return CancelRequestedError(f"task {task_id!r} was cancelled: a cancel was requested while it ran")


def heartbeat_answer(task_id: str, lease: int, row: Any) -> PerfectQueueError | None:
    """A heartbeat's answer from the row as it is after the extension."""
    if row is None or not holds(row, lease):
        return lease_error(task_id, row)
    return cancel_asked(task_id) if row.cancel_requested else None


def already_finished(task_id: str) -> AlreadyFinishedError:
    return AlreadyFinishedError(f"task {task_id!r} is already finished")


def lease_error(task_id: str, row: Any) -> PerfectQueueError:
    """Why a heartbeat, retry or release with a lease did not apply, from the row as it is."""
    if row is not None and row.created_at is None and row.outcome == Outcome.CANCELLED.value:
        return CancelRequestedError(f"task {task_id!r} was cancelled")
    return PreemptedError(f"task {task_id!r} is not held by this lease (finished, gone or taken over)")


def finish_error(task_id: str, lease: int, row: Any) -> PerfectQueueError:
    """Why a finish with this lease did not apply, from the row as it is."""
    if row is None:
        return NotFoundError(f"task {task_id!r} does not exist")
    if row.created_at is None and row.outcome == Outcome.CANCELLED.value:
        return CancelRequestedError(f"task {task_id!r} was cancelled")
    if row.created_at is None and same_lease(row.owner, lease):
        return already_finished(task_id)
    return PreemptedError(f"task {task_id!r} is not held by this lease (finished, gone or taken over)")


@dataclass(frozen=True, slots=True)
class LeaseState:
    """What a finish looks at in a row."""

    created_at: int | None
    owner: int
    timeout: int
    outcome: str | None
    cancel_requested: int

    @classmethod
    def of(cls, row: Any) -> LeaseState:
        return cls(row.created_at, row.owner, row.timeout, row.outcome, row.cancel_requested)


@dataclass(slots=True)
class Finishes:
    """A batch of finishes answered as if each came alone, one after the other: which tasks
    end finished, which cancelled, and each item's answer."""

    answers: list[PerfectQueueError | None]
    done: list[str]
    cancelled: list[str]


def answer_finishes(items: Sequence[tuple[str, int]], state: dict[str, LeaseState]) -> Finishes:
    """Each (id, lease) answered from the rows' ``state`` as it is after the items before it:
    the first finish of a held task ends it (cancelled, if a cancel was asked for); a second
    one answers what a second finish would (AlreadyFinished, or Preempted for another lease)."""
    result = Finishes([], [], [])
    for task_id, lease in items:
        row = state.get(task_id)
        if row is None or not holds(row, lease):
            result.answers.append(finish_error(task_id, lease, row))
        elif row.cancel_requested:
            state[task_id] = replace(row, created_at=None, owner=0, outcome=Outcome.CANCELLED.value)
            result.cancelled.append(task_id)
            result.answers.append(cancelled(task_id))
        else:
            state[task_id] = replace(row, created_at=None)
            result.done.append(task_id)
            result.answers.append(None)
    return result


def finished_once(items: Sequence[tuple[str, int]]) -> list[PerfectQueueError | None]:
    """The answers to a batch whose every task its one lease held, all finished now: None
    for each task's first item, AlreadyFinished for a repeat (as a second finish answers)."""
    seen: set[str] = set()
    answers: list[PerfectQueueError | None] = []
    for task_id, _ in items:
        answers.append(already_finished(task_id) if task_id in seen else None)
        seen.add(task_id)
    return answers
