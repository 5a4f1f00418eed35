"""One queue's polls: immediate ones merged, long ones waiting in line without a connection.

A poll that acquires at once (``wait=0``, or a long-poll's first try) shares its acquisition
with the concurrent ones of the same ``alive_time`` (a :class:`~.batching.Batcher`). A long-poll
that finds nothing joins the queue's line of waiters: an asyncio future, holding no database
connection and no thread. One dispatcher per queue, running only while somebody waits, acquires
on the waiters' behalf — at once when woken (:meth:`LongPoll.notify`: a task became waiting
through this replica), otherwise after an index probe every ``check_interval`` seconds finds
work (submits through other replicas) — and hands the tasks out in arrival order, one
acquisition for as many waiters as it can serve.

Both paths divide an acquisition with :func:`~.batching.split` and hand what a departed caller
would have got to ``give_back``. The store calls come in as callables (the queue runtime's), so
that this module knows nothing of threads, metrics or the store.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field

from ..errors import PerfectQueueError, UnavailableError
from .batching import MAX_BATCH, Batcher, split
from .store import AcquiredTask

log = logging.getLogger("perfectqueue.service")

MAX_WAITING = 1000
"""The default of ``max_long_polls``."""

Acquire = Callable[[int, int, int], Awaitable[list[AcquiredTask]]]
"""One acquisition: (max tasks, alive_time, for how many polls) -> the tasks leased."""
GiveBack = Callable[[list[AcquiredTask]], Awaitable[None]]
"""Tasks leased for callers that have gone: make them deliverable again (never raises)."""


@dataclass
class PollSlots:
    """How many long-polls may wait at once on this replica (all queues together): each holds an
    open connection and a future, none a thread or a database connection."""

    limit: int
    taken: int = 0

    @contextlib.contextmanager
    def slot(self) -> Iterator[None]:
        """Hold one while waiting; past the limit, UnavailableError (503 with Retry-After)."""
        if self.taken >= self.limit:
            raise UnavailableError(f"{self.limit} long-polls wait here (max_long_polls): try again")
        self.taken += 1
        try:
            yield
        finally:
            self.taken -= 1


@dataclass
class Waiter:
    max: int
    alive_time: int
    future: asyncio.Future[list[AcquiredTask]] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )


class LongPoll:
    """The polls of one queue."""

    def __init__(
        self,
        acquire: Acquire,
        has_waiting: Callable[[], Awaitable[bool]],
        give_back: GiveBack,
        check_interval: float,
        slots: PollSlots | None = None,
    ) -> None:
        self.acquire, self.has_waiting, self.give_back = acquire, has_waiting, give_back
        self.check_interval = check_interval
        self.slots = slots or PollSlots(MAX_WAITING)
        self.immediate: dict[int, Batcher[int, list[AcquiredTask]]] = {}
        self.waiters: deque[Waiter] = deque()
        self.acquiring = 0  # polls acquiring outside the line right now
        self.wake = asyncio.Event()
        self.closing = False
        self.dispatcher: asyncio.Task[None] | None = None

    async def poll(self, max_tasks: int, alive_time: int, wait: float) -> list[AcquiredTask]:
        """Acquire now, or wait up to ``wait`` seconds for tasks (arrival order among waiters).
        The ``wait`` counts from the call: a first try that was slow (a database that hangs until
        the statement deadline) is not waited on top of it."""
        clock = asyncio.get_running_loop().time
        end = clock() + wait
        # A long-poll arriving while another poll acquires joins the line (the dispatcher probes
        # first thing), so that a burst of polls costs one acquisition, not one each.
        if wait <= 0 or self.closing or not (self._live_waiters() or self.acquiring):
            self.acquiring += 1
            try:
                tasks = await self.now(max_tasks, alive_time)
            finally:
                self.acquiring -= 1
            if tasks or self.closing or clock() >= end:
                return tasks
        with self.slots.slot():
            return await self._wait(Waiter(max_tasks, alive_time), end - clock())

    async def _wait(self, waiter: Waiter, wait: float) -> list[AcquiredTask]:
        self.waiters.append(waiter)
        self._start_dispatcher()
        try:
            await asyncio.wait({waiter.future}, timeout=wait)
        finally:
            if not waiter.future.done():
                waiter.future.cancel()
        return [] if waiter.future.cancelled() else waiter.future.result()

    async def now(self, max_tasks: int, alive_time: int) -> list[AcquiredTask]:
        """One immediate acquisition, merged with the concurrent ones of the same ``alive_time``."""
        batcher = self.immediate.get(alive_time)
        if batcher is None:
            batcher = self.immediate[alive_time] = Batcher(
                lambda wants: self._shares(wants, alive_time), size=lambda want: want, abandoned=self._left
            )
        try:
            return await batcher.call(max_tasks)
        finally:
            if batcher.idle:
                self.immediate.pop(alive_time, None)

    async def _shares(self, wants: list[int], alive_time: int) -> list[list[AcquiredTask]]:
        shares, _ = split(await self.acquire(sum(wants), alive_time, len(wants)), wants)
        return shares

    async def _left(self, shares: list[list[AcquiredTask]]) -> None:
        await self.give_back([task for share in shares for task in share])

    def notify(self) -> None:
        """A task became waiting through this replica: serve the waiters now."""
        if self.waiters:
            self.wake.set()

    def close(self) -> None:
        """Shutting down: every waiting poll returns empty at once, and no poll waits again."""
        self.closing = True
        for waiter in self.waiters:
            if not waiter.future.done():
                waiter.future.set_result([])
        self.waiters.clear()
        self.wake.set()

    def _live_waiters(self) -> bool:
        while self.waiters and self.waiters[0].future.done():
            self.waiters.popleft()
        return bool(self.waiters)

    def _start_dispatcher(self) -> None:
        """The dispatcher serves every waiter: it runs in a context of its own, not in the one of
        the request that happened to start it (its log lines are nobody's request)."""
        if self.dispatcher is None or self.dispatcher.done():
            self.dispatcher = asyncio.create_task(self._dispatch(), context=contextvars.Context())

    async def _dispatch(self) -> None:
        probe = False
        while self._live_waiters() and not self.closing:
            if probe:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.wake.wait(), self.check_interval)
            woken, probe = self.wake.is_set(), True
            self.wake.clear()
            try:
                if woken or await self.has_waiting():
                    while self._live_waiters() and not self.closing and await self._serve_head():
                        pass
            except PerfectQueueError as exc:
                log.warning("long-poll could not acquire: %s", exc)
                self._fail_head(exc)
            except Exception as exc:  # never leave waiters without a dispatcher
                log.exception("long-poll dispatcher failed")
                self._fail_head(UnavailableError(f"long-poll failed: {type(exc).__name__}"))

    async def _serve_head(self) -> bool:
        """One acquisition for the waiters at the head of the line; True when it got all it asked
        for, so that more may be waiting. Fewer means nothing more could start now (none waiting,
        or every user at its max_running; or, rarely, rows it found ended dead or cancelled
        instead): the line then waits for what wakes it (a submit, finish, retry or release
        through this replica) or for the next probe, rather than acquiring again at once for
        nothing, with the table's lock held, under fair scheduling."""
        batch = self._head()
        wants = [waiter.max for waiter in batch]
        tasks = await self.acquire(sum(wants), batch[0].alive_time, len(batch))
        shares, left = split(tasks, wants)
        for waiter, share in zip(batch, shares, strict=True):
            if not share:
                continue
            if waiter.future.done():  # it left while we acquired
                left.extend(share)
            else:
                waiter.future.set_result(share)
        if left:
            await self.give_back(left)
        return len(tasks) == sum(wants)

    def _head(self) -> list[Waiter]:
        """The live waiters at the head of the line with the head's ``alive_time``, wanting at
        most MAX_BATCH together (the head always: it may want more alone)."""
        batch: list[Waiter] = []
        alive_time, wanted = self.waiters[0].alive_time, 0
        for waiter in self.waiters:
            if batch and (waiter.alive_time != alive_time or wanted + waiter.max > MAX_BATCH):
                break
            if not waiter.future.done():
                batch.append(waiter)
                wanted += waiter.max
        return batch

    def _fail_head(self, exc: PerfectQueueError) -> None:
        if self._live_waiters():
            self.waiters[0].future.set_exception(exc)
