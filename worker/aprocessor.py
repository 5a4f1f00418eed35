"""The asyncio processor (``processor_type: asyncio``): one forked child running up to
``concurrency`` handlers at once on an event loop.

    until a stop is requested (or max_request_per_child tasks were started):
        start waiting tasks while fewer than ``concurrency`` run;
        when at least half of ``concurrency + task_prefetch`` is free, poll for that many in the
        background (a thread: the loop goes on running handlers meanwhile);
        wait for a handler to end or the poll to answer

The rest is the processor's, shared with the forked and thread ones: the task monitor's thread
keeps every task in hand leased (in one heartbeat batch) and acts on signals; the acknowledger's
thread sends finishes merged (:mod:`.acks`); a graceful stop lets the running handlers end,
releases the tasks not started, and sends what was finished; an immediate one releases all.

Handlers are ``async def run(self)`` (see :mod:`.application`). A cancel requested for a running
task cancels its asyncio task: the handler sees :class:`asyncio.CancelledError` at its next
``await``. A synchronous handler would run on the loop and hold up all the others while it runs:
give those to a ``process`` or ``thread`` processor.
"""

from __future__ import annotations

import asyncio
from collections import deque

from ..client import AcquiredTask, Queue
from .processor import Processor
from .task import WorkerTask
from .task_monitor import release_all

TICK = 0.1
"""Seconds between looks at the stop flags while nothing else happens."""
Polling = asyncio.Task[list[AcquiredTask]]


class AsyncProcessor(Processor):
    def _work(self, queue: Queue) -> None:
        asyncio.run(self._serve(queue))

    async def _serve(self, queue: Queue) -> None:
        waiting: deque[WorkerTask] = deque()
        running: set[asyncio.Task[WorkerTask]] = set()
        poll: Polling | None = None
        while not self.monitor.stopping() and not self._recycle():
            self._start(waiting, running)
            room = self._room(len(waiting), len(running))
            if poll is None and room:
                poll = asyncio.create_task(asyncio.to_thread(self._acquire, queue, room))
            await asyncio.wait(
                {*running, *([poll] if poll else [])}, timeout=TICK, return_when="FIRST_COMPLETED"
            )
            running = {handler for handler in running if not handler.done()}
            if poll is not None and poll.done():
                waiting.extend(self.runner.wrap(task) for task in poll.result())
                poll = None
            self.monitor.hold(list(waiting))
        await self._stop(queue, waiting, running, poll)

    def _start(self, waiting: deque[WorkerTask], running: set[asyncio.Task[WorkerTask]]) -> None:
        while waiting and len(running) < self.config.concurrency and not self._used_up():
            task = waiting.popleft()
            if task.in_hand:  # else preempted or cancelled while it waited its turn
                running.add(asyncio.create_task(self.runner.run_async(task)))
                self.handled += 1

    def _room(self, waiting: int, running: int) -> int:
        """How many tasks to poll for now: none until half of the room is free (few large polls
        rather than one per ended handler), and no more than ``max_request_per_child`` allows."""
        total = self.config.concurrency + self.config.task_prefetch
        room = total - waiting - running
        if (waiting or running) and room < (total + 1) // 2:
            return 0
        return max(0, self._allowed(room + waiting) - waiting)

    async def _stop(
        self,
        queue: Queue,
        waiting: deque[WorkerTask],
        running: set[asyncio.Task[WorkerTask]],
        poll: Polling | None,
    ) -> None:
        """Release the tasks not started (those of a poll in flight too), let the running end."""
        if poll is not None:
            waiting.extend(self.runner.wrap(task) for task in await poll)
        release_all(waiting, "not started")
        self.monitor.hold([])
        if running:
            await asyncio.wait(running)
