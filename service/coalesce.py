"""Group commit for one-task calls: concurrent calls of one queue share one store call.

A call that finds no flush of its kind running starts one at once, so an idle service adds no
wait; calls that arrive while a flush runs queue up and go together into the next flush, as one
store call: one worker-thread handoff, one transaction, one commit. Concurrent finishes become
one ``finish_many``, concurrent submits one ``submit_many``, and concurrent immediate polls with
the same ``alive_time`` one acquisition, split among them in arrival order.

Each caller gets exactly its own outcome. The store's batch operations answer per item, as the
single ones would have in some serial order; a merged call that fails as a whole is tried again
one item at a time, so that one caller's bad item never becomes another caller's error. Only a
database out of reach fails every caller at once (each with its own copy of the error): the
merged transaction did nothing, as each single one would have done nothing.
"""

from __future__ import annotations

import asyncio
import contextvars
import copy
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Generic, TypeVar

from ..errors import AlreadyExistsError, PerfectQueueError, UnavailableError
from ..logformat import set_context
from .store import AcquiredTask, NewTask, QueueStore

log = logging.getLogger("perfectqueue.service")

I = TypeVar("I")  # noqa: E741
R = TypeVar("R")
Runner = Callable[..., Awaitable[Any]]
MAX_BATCH = 1000  # as many as one batch request may carry, and as many as one acquisition leases


class Batcher(Generic[I, R]):
    """Calls of one kind, flushed together: at most one flush runs at a time.

    ``flush`` gets the items of the callers waiting (in arrival order, ``size`` of them adding up
    to at most ``limit``) and answers one outcome per item, a result or the error to raise.
    ``abandoned`` gets each result whose caller left while its flush ran (tasks leased for a
    poller that has gone, say, to give back).
    """

    def __init__(
        self,
        flush: Callable[[list[I]], Awaitable[Sequence[R | PerfectQueueError]]],
        size: Callable[[I], int] = lambda _: 1,
        limit: int = MAX_BATCH,
        abandoned: Callable[[R], Awaitable[None]] | None = None,
    ) -> None:
        self.flush, self.size, self.limit, self.abandoned = flush, size, limit, abandoned
        self.pending: deque[tuple[I, asyncio.Future[R]]] = deque()
        self.flusher: asyncio.Task[None] | None = None

    @property
    def idle(self) -> bool:
        return not self.pending and self.flusher is None

    async def call(self, item: I) -> R:
        """The outcome of ``item``: its result, or its error raised."""
        loop = asyncio.get_running_loop()
        if self.flusher is not None and self.flusher.get_loop() is not loop:  # an earlier loop's, gone
            self.pending = deque(p for p in self.pending if p[1].get_loop() is loop)
            self.flusher = None
        future: asyncio.Future[R] = loop.create_future()
        self.pending.append((item, future))
        if self.flusher is None:  # in a context of its own: it serves other requests than this one
            self.flusher = asyncio.create_task(self._flush_all(), context=contextvars.Context())
        return await future

    async def _flush_all(self) -> None:
        try:
            while batch := self._take():
                await self._flush(batch)
        finally:
            self.flusher = None

    def _take(self) -> list[tuple[I, asyncio.Future[R]]]:
        """The next batch: callers still waiting, in arrival order, up to ``limit``."""
        batch: list[tuple[I, asyncio.Future[R]]] = []
        total = 0
        while self.pending:
            item, future = self.pending[0]
            if future.done():  # its caller has gone before its turn: nothing is done for it
                self.pending.popleft()
                continue
            if batch and total + self.size(item) > self.limit:
                break
            batch.append(self.pending.popleft())
            total += self.size(item)
        return batch

    async def _flush(self, batch: list[tuple[I, asyncio.Future[R]]]) -> None:
        items = [item for item, _ in batch]
        try:
            outcomes = await self._outcomes(items)
        except BaseException as exc:  # a bug, or the service stopping: nobody may wait forever
            for _, future in batch:
                if not future.done():
                    future.set_exception(exc if isinstance(exc, Exception) else UnavailableError("stopping"))
            if not isinstance(exc, Exception):
                raise
            log.exception("a merged store call failed")
            return
        left: list[R] = []
        for (_, future), outcome in zip(batch, outcomes, strict=True):
            if isinstance(outcome, PerfectQueueError):
                if not future.done():
                    future.set_exception(outcome)
            elif future.done():
                left.append(outcome)
            else:
                future.set_result(outcome)
        if self.abandoned is not None:
            for result in left:
                await self.abandoned(result)

    async def _outcomes(self, items: list[I]) -> Sequence[R | PerfectQueueError]:
        try:
            return await self.flush(items)
        except UnavailableError as exc:
            return [exc] + [copy.copy(exc) for _ in items[1:]]
        except PerfectQueueError as exc:
            if len(items) == 1:
                return [exc]
        return [await self._alone(item) for item in items]  # whose item was it? each alone

    async def _alone(self, item: I) -> R | PerfectQueueError:
        try:
            return (await self.flush([item]))[0]
        except PerfectQueueError as exc:
            return exc


def outcome_of(call: Callable[[], Any]) -> list[PerfectQueueError | None]:
    """A single store call's outcome as a one-item batch answer (runs in a worker thread)."""
    try:
        call()
    except PerfectQueueError as exc:
        return [exc]
    return [None]


class Coalesced:
    """One queue's merged finishes and submits."""

    def __init__(self, store: QueueStore, run: Runner) -> None:
        self.store, self.run = store, run
        self.finishes: Batcher[tuple[str, int], None] = Batcher(self._finish)
        self.submits: Batcher[NewTask, None] = Batcher(self._submit)

    async def finish(self, task_id: str, lease: int) -> None:
        """As ``store.finish``, merged with concurrent finishes of this queue."""
        set_context(task_id=task_id)
        await self.finishes.call((task_id, lease))

    async def submit(self, task: NewTask) -> None:
        """As ``store.submit``, merged with concurrent submits of this queue."""
        set_context(task_id=task.id)
        await self.submits.call(task)

    async def _finish(self, items: list[tuple[str, int]]) -> list[PerfectQueueError | None]:
        if len(items) == 1:  # the cheaper single statement
            task_id, lease = items[0]
            result: list[PerfectQueueError | None] = await self.run(
                outcome_of, lambda: self.store.finish(task_id, lease)
            )
            return result
        outcomes: list[PerfectQueueError | None] = await self.run(self.store.finish_many, items)
        return outcomes

    async def _submit(self, tasks: list[NewTask]) -> list[PerfectQueueError | None]:
        if len(tasks) == 1:
            task = tasks[0]
            result: list[PerfectQueueError | None] = await self.run(
                outcome_of, lambda: self.store.submit(task)
            )
            return result
        first: dict[str, int] = {}
        for i, task in enumerate(tasks):
            first.setdefault(task.id, i)
        unique = [tasks[i] for i in first.values()]
        stored: list[PerfectQueueError | None] = await self.run(self.store.submit_many, unique)
        by_index = dict(zip(first.values(), stored, strict=True))
        return [  # the same id twice: the later caller meets the earlier one's task
            by_index[i] if i in by_index else AlreadyExistsError(f"task {task.id!r} already exists")
            for i, task in enumerate(tasks)
        ]


class Acquirer:
    """One queue's immediate acquisitions, merged per ``alive_time`` and split in arrival order."""

    def __init__(self, store: QueueStore, run: Runner) -> None:
        self.store, self.run = store, run
        self.batchers: dict[int, Batcher[int, list[AcquiredTask]]] = {}

    async def acquire(self, max_tasks: int, alive_time: int) -> list[AcquiredTask]:
        """As ``store.acquire``, merged with concurrent acquisitions of the same ``alive_time``."""
        batcher = self.batchers.get(alive_time)
        if batcher is None:
            batcher = self.batchers[alive_time] = Batcher(
                lambda wants: self._acquire(wants, alive_time),
                size=lambda want: want,
                abandoned=self._give_back,
            )
        try:
            return await batcher.call(max_tasks)
        finally:
            if batcher.idle:
                self.batchers.pop(alive_time, None)

    async def _acquire(self, wants: list[int], alive_time: int) -> list[list[AcquiredTask]]:
        tasks: list[AcquiredTask] = await self.run(self.store.acquire, sum(wants), alive_time)
        shares = []
        for want in wants:
            shares.append(tasks[:want])
            tasks = tasks[want:]
        return shares

    async def _give_back(self, tasks: list[AcquiredTask]) -> None:
        """Tasks leased for a poller that left meanwhile: deliverable again at once."""
        for acquired in tasks:
            try:
                await self.run(self.store.release, acquired.task.id, acquired.lease)
            except PerfectQueueError as exc:  # its lease runs out instead
                log.warning("could not give back task %r: %s", acquired.task.id, exc)
