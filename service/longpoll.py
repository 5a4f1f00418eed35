"""Long-polls that hold no database connection and no thread while they wait.

A poll that finds nothing joins its queue's line of waiters: an asyncio future, nothing more.
One dispatcher per queue, running only while somebody waits, acquires on the waiters' behalf —
at once when a task is submitted or released through this replica, otherwise after an index
probe every ``check_interval`` seconds finds work (submits through other replicas) — and hands
the tasks out in arrival order, one acquisition for as many waiters as it can serve.

A poll that acquires at once (``wait=0``, or a long-poll's first try) shares its acquisition
with the concurrent ones of the same ``alive_time`` (``coalesce.Acquirer``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from ..errors import PerfectQueueError, UnavailableError
from .coalesce import Acquirer
from .store import AcquiredTask, QueueStore

log = logging.getLogger("perfectqueue.service")

T = TypeVar("T")
Runner = Callable[..., Awaitable[Any]]
MAX_ACQUIRE = 100


@dataclass
class Waiter:
    max: int
    alive_time: int
    future: asyncio.Future[list[AcquiredTask]] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )


class LongPoll:
    """The waiting polls of one queue."""

    def __init__(self, store: QueueStore, run: Runner, check_interval: float) -> None:
        self.store = store
        self.run = run
        self.acquirer = Acquirer(store, run)
        self.check_interval = check_interval
        self.waiters: deque[Waiter] = deque()
        self.acquiring = 0  # polls acquiring outside the line right now
        self.wake = asyncio.Event()
        self.closing = False
        self.dispatcher: asyncio.Task[None] | None = None

    async def poll(self, max_tasks: int, alive_time: int, wait: float) -> list[AcquiredTask]:
        """Acquire now, or wait up to ``wait`` seconds for tasks (arrival order among waiters)."""
        # A long-poll arriving while another poll acquires joins the line (the dispatcher probes
        # first thing), so that a burst of polls costs one acquisition, not one each.
        if wait <= 0 or self.closing or not (self._live_waiters() or self.acquiring):
            self.acquiring += 1
            try:
                tasks = await self.acquirer.acquire(max_tasks, alive_time)
            finally:
                self.acquiring -= 1
            if tasks or wait <= 0 or self.closing:
                return tasks
        waiter = Waiter(max_tasks, alive_time)
        self.waiters.append(waiter)
        self._start_dispatcher()
        try:
            await asyncio.wait({waiter.future}, timeout=wait)
        finally:
            if not waiter.future.done():
                waiter.future.cancel()
        return [] if waiter.future.cancelled() else waiter.future.result()

    async def give_back(self, tasks: list[AcquiredTask]) -> None:
        """Tasks acquired for a poll whose client has gone: deliverable again at once, rather
        than leased to nobody until their alive_time ends."""
        for acquired in tasks:
            await self.run(self.store.release, acquired.task.id, acquired.lease)
        self.notify()

    def notify(self) -> None:
        """A task became waiting through this replica: serve the waiters now."""
        if self.waiters:
            self.wake.set()

    def close(self) -> None:
        """Shutting down: every waiting poll returns empty at once."""
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
        if self.dispatcher is None or self.dispatcher.done():
            self.dispatcher = asyncio.create_task(self._dispatch())

    async def _dispatch(self) -> None:
        probe = False
        while self._live_waiters() and not self.closing:
            if probe:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.wake.wait(), self.check_interval)
            woken, probe = self.wake.is_set(), True
            self.wake.clear()
            try:
                if woken or await self.run(self.store.has_waiting):
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
        batch: list[Waiter] = []
        alive_time, wanted = self.waiters[0].alive_time, 0
        for waiter in self.waiters:  # the head always (it may want more than MAX_ACQUIRE alone)
            if batch and (waiter.alive_time != alive_time or wanted + waiter.max > MAX_ACQUIRE):
                break
            if not waiter.future.done():
                batch.append(waiter)
                wanted += waiter.max
        tasks: list[AcquiredTask] = await self.run(self.store.acquire, wanted, alive_time)
        full = len(tasks) == wanted
        for waiter in batch:
            if tasks and not waiter.future.done():
                waiter.future.set_result(tasks[: waiter.max])
                tasks = tasks[waiter.max :]
        if tasks:  # their waiters left while we acquired
            await self.give_back(tasks)
        return full

    def _fail_head(self, exc: PerfectQueueError) -> None:
        if self._live_waiters():
            self.waiters[0].future.set_exception(exc)
