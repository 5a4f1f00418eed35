"""Group commit for one-task calls: concurrent calls of one kind share one store call.

A call that finds no flush of its kind running starts one at once, so an idle service adds no
wait; calls that arrive while a flush runs queue up and go together into the next flush, as one
store call: one worker-thread handoff, one transaction, one commit.

Each caller gets exactly its own outcome. The store's batch operations answer per item, as the
single ones would have in some serial order; a merged call that fails as a whole is tried again
one item at a time, so that one caller's bad item never becomes another caller's error. Only a
database out of reach fails every caller at once (each with its own copy of the error): the
merged transaction did nothing, as each single one would have done nothing.

Acquisitions are divided among their callers by :func:`split`, the one splitter of the service:
the merged immediate polls here and the long-poll line (:mod:`.longpoll`) both use it, and both
give what a departed caller would have got to the same give-back (the queue runtime's).
"""

from __future__ import annotations

import asyncio
import contextvars
import copy
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

from ..errors import PerfectQueueError, UnavailableError

log = logging.getLogger("perfectqueue.service")

I = TypeVar("I")  # noqa: E741
R = TypeVar("R")
T = TypeVar("T")
MAX_BATCH = 1000
"""As many items as one batch request may carry, and as many tasks as one acquisition leases."""


def split(tasks: Sequence[T], wants: Sequence[int]) -> tuple[list[list[T]], list[T]]:
    """One acquisition's tasks divided in arrival order: each caller's share (at most what it
    wanted, the last ones maybe nothing) and what is left over."""
    shares, start = [], 0
    for want in wants:
        shares.append(list(tasks[start : start + want]))
        start += want
    return shares, list(tasks[start:])


class Batcher(Generic[I, R]):
    """Calls of one kind, flushed together: at most one flush runs at a time.

    ``flush`` gets the items of the callers waiting (in arrival order, ``size`` of them adding up
    to at most ``limit``) and answers one outcome per item, a result or the error to raise.
    ``abandoned`` gets the results whose callers left while their flush ran (tasks leased for a
    poller that has gone, say, to give back).
    """

    def __init__(
        self,
        flush: Callable[[list[I]], Awaitable[Sequence[R | PerfectQueueError]]],
        size: Callable[[I], int] = lambda _: 1,
        limit: int = MAX_BATCH,
        abandoned: Callable[[list[R]], Awaitable[None]] | None = None,
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
        if left and self.abandoned is not None:
            await self.abandoned(left)

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
