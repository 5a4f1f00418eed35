"""The synchronous SDK: the seed's ``Queue``, ``Task`` and ``AcquiredTask`` in Python idiom."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import Any, Literal, Protocol

from ..errors import NotFoundError
from . import _calls as calls
from ._calls import R
from ._types import BatchResult, BulkResult, Leased, QueueStats, RetrySpec, SubmitSpec, TaskMetadata


class Backend(Protocol):
    def execute(self, call: calls.Call[R]) -> R: ...

    def close(self) -> None: ...


class Queue:
    """One queue. Use it as a context manager, or call :meth:`close`."""

    def __init__(self, backend: Backend) -> None:
        self.backend = backend

    def __enter__(self) -> Queue:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.backend.close()

    def submit(
        self,
        key: str,
        type: str,
        data: Mapping[str, Any] | None = None,
        *,
        user: str | None = None,
        max_running: int | None = None,
        run_at: int | None = None,
        compression: str | None = None,
        max_attempts: int | None = None,
        traceparent: str | None = None,
    ) -> Task:
        """Submit a task; AlreadyExistsError (an IdempotentError) if the key was used before.

        ``max_attempts``: deliveries after which the task is dead (default: the queue's);
        ``traceparent``: a W3C trace context that travels with the task to its handler.
        """
        spec = SubmitSpec(
            key, type, dict(data or {}), user, max_running, run_at, compression, max_attempts, traceparent
        )
        self.backend.execute(calls.Submit(spec))
        return Task(self, key)

    def submit_many(self, tasks: Iterable[SubmitSpec | Mapping[str, Any]]) -> BatchResult:
        """Submit up to 1,000 tasks in one request; per-task results."""
        return self.backend.execute(calls.SubmitMany([_spec(t) for t in tasks]))

    def poll(self, *, alive_time: int | None = None) -> AcquiredTask | None:
        """One waiting task, leased to this caller, or None."""
        tasks = self.poll_multi(max=1, alive_time=alive_time)
        return tasks[0] if tasks else None

    def poll_multi(
        self, *, max: int = 10, alive_time: int | None = None, wait: float = 0.0
    ) -> list[AcquiredTask]:
        """Up to ``max`` tasks, waiting up to ``wait`` seconds when none is waiting (long-poll)."""
        leased = self.backend.execute(calls.Poll(max, alive_time, wait))
        return [AcquiredTask(self, item) for item in leased]

    def heartbeat_many(self, tasks: Iterable[AcquiredTask], *, alive_time: int | None = None) -> BatchResult:
        """Extend the leases of up to 1,000 tasks in one request; per-task results. A task failed
        with CancelRequestedError was extended, but somebody cancelled it: stop its work."""
        return self.backend.execute(calls.HeartbeatMany.of(tasks, alive_time))

    def finish_many(self, tasks: Iterable[AcquiredTask]) -> BatchResult:
        """Finish up to 1,000 tasks in one request; per-task results (a task already finished
        fails with AlreadyFinishedError, an IdempotentError)."""
        return self.backend.execute(calls.FinishMany.of(tasks))

    def retry_many(self, tasks: Iterable[AcquiredTask | RetrySpec]) -> BatchResult:
        """Retry up to 1,000 tasks in one request; per-task results. A plain task is retried as
        ``task.retry()`` would be; a :class:`RetrySpec` carries its own ``retry_wait``, ``error``
        or ``dead``. A task failed with CancelRequestedError ended as cancelled."""
        return self.backend.execute(calls.RetryMany.of(tasks))

    def release_many(self, tasks: Iterable[AcquiredTask]) -> BatchResult:
        """Give up to 1,000 tasks back in one request, deliverable at once; per-task results."""
        return self.backend.execute(calls.ReleaseMany.of(tasks))

    def __getitem__(self, key: str) -> Task:
        return Task(self, key)

    def tasks(
        self,
        *,
        status: str | None = None,
        type: str | None = None,
        user: str | None = None,
        page_size: int = 100,
    ) -> Iterator[TaskMetadata]:
        """Every task matching the filters, fetched lazily one page at a time."""
        cursor: str | None = None
        while True:
            page = self.backend.execute(calls.ListTasks(status, type, user, cursor, page_size))
            yield from page.tasks
            if page.cursor is None:
                return
            cursor = page.cursor

    def __iter__(self) -> Iterator[TaskMetadata]:
        return self.tasks()

    def stats(self) -> QueueStats:
        """The counts of every state, and whether the queue is paused."""
        return self.backend.execute(calls.Stats())

    def pause(self) -> QueueStats:
        """Pause the queue: polls get nothing (every replica within a second); submits go on."""
        return self.backend.execute(calls.Pause(True))

    def resume(self) -> QueueStats:
        """Resume a paused queue."""
        return self.backend.execute(calls.Pause(False))

    def bulk(
        self,
        action: Literal["requeue", "cancel"],
        *,
        status: str,
        type: str | None = None,
        user: str | None = None,
        prefix: str | None = None,
        cursor: str | None = None,
        limit: int = 1000,
    ) -> BulkResult:
        """Requeue or cancel, each as its own call would, up to ``limit`` (1,000) of the tasks
        in ``status`` matching the filters (an operator's action); per-task results, and the
        ``cursor`` to pass to go on (None: every matching task was seen)."""
        return self.backend.execute(calls.Bulk(action, status, type, user, prefix, cursor, limit))


class Task:
    """A task known by its key (the seed's ``Task``)."""

    def __init__(self, queue: Queue, key: str) -> None:
        self.queue, self.key = queue, key

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.key!r})"

    def metadata(self) -> TaskMetadata:
        """The task's current state; NotFoundError if it does not exist."""
        return self.queue.backend.execute(calls.Get(self.key))

    def exists(self) -> bool:
        try:
            self.metadata()
        except NotFoundError:
            return False
        return True

    def force_finish(self) -> None:
        """Finish the task whatever holds it, or a dead task (an operator's action)."""
        self.queue.backend.execute(calls.ForceFinish(self.key))

    def cancel(self, force: bool = False) -> TaskMetadata:
        """Cancel the task: at once if nobody holds it, else when its holder next calls (it is
        then ``cancel_requested``). AlreadyFinishedError if it had ended; HeldByRubyError if a
        Ruby PerfectQueue process holds it (nothing changed), unless ``force``: it ends now.
        Returns its state."""
        return self.queue.backend.execute(calls.Cancel(self.key, force))

    def requeue(self) -> TaskMetadata:
        """Make a dead task waiting again, its attempts reset (an operator's action).
        NotDeadError if it is waiting or running. Returns its state."""
        return self.queue.backend.execute(calls.Requeue(self.key))


class AcquiredTask(Task):
    """A task leased to this caller: finish it, retry it, release it, or keep it alive."""

    def __init__(self, queue: Queue, leased: Leased) -> None:
        super().__init__(queue, leased.metadata.key)
        self.acquired = leased.metadata
        self.lease = leased.lease
        self.data: dict[str, Any] = dict(leased.metadata.data)

    @property
    def type(self) -> str:
        return self.acquired.type

    @property
    def user(self) -> str | None:
        return self.acquired.user

    @property
    def attempts(self) -> int:
        """This delivery's attempt number (1 on the first)."""
        return self.acquired.attempts

    @property
    def traceparent(self) -> str | None:
        """The W3C trace context given at submit, if any."""
        return self.acquired.traceparent

    def finish(self) -> None:
        """Done: never delivered again (AlreadyFinishedError if it already was finished)."""
        self.queue.backend.execute(calls.Finish(self.key, self.lease))

    def retry(self, retry_wait: int | None = None, error: str | None = None, *, dead: bool = False) -> None:
        """Give it back, to be delivered again after ``retry_wait`` s (default: the queue's
        backoff), recording ``error`` as its ``last_error``. If its attempts are used up it is
        dead instead; ``dead`` gives up on it now (dead whatever its attempts)."""
        self.queue.backend.execute(calls.Retry(self.key, self.lease, retry_wait, error, dead))

    def release(self) -> None:
        """Give it back, deliverable again at once."""
        self.queue.backend.execute(calls.Release(self.key, self.lease))

    def heartbeat(self, alive_time: int | None = None) -> None:
        """Extend the lease (PreemptedError if another acquisition holds the task now)."""
        self.queue.backend.execute(calls.Heartbeat(self.key, self.lease, alive_time))

    def update_data(self, changes: Mapping[str, Any], alive_time: int | None = None) -> None:
        """Merge ``changes`` into the task's data and store it with a heartbeat."""
        data = {**self.data, **changes}
        self.queue.backend.execute(calls.Heartbeat(self.key, self.lease, alive_time, data))
        self.data = data


def _spec(task: SubmitSpec | Mapping[str, Any]) -> SubmitSpec:
    if isinstance(task, SubmitSpec):
        return task
    fields = dict(task)
    if "id" in fields and "key" not in fields:
        fields["key"] = fields.pop("id")
    return SubmitSpec(**fields)
