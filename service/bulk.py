"""An operator's action on every task a filter selects: requeue all dead tasks of a type,
cancel all waiting tasks of a user.

The tasks are read with the listing (id order, the filters of ``GET .../tasks``) and each is
acted on as its own call would (``requeue``, ``cancel``): one transaction per task, each
answered on its own, so a task that changed meanwhile is refused as that call would refuse it.
One request acts on at most ``limit`` tasks (1,000) and reads at most ``MAX_PAGES`` pages; its
``next_cursor`` continues where it stopped.

The target is the service's :class:`~.runtime.QueueRuntime`, or the SDK's direct ``rdb_compat``
backend's store (:class:`Target`): both carry out a bulk action the same way.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Protocol

from ..errors import PerfectQueueError
from .store import Page, Task, TaskStatus

MAX_PAGES = 20
"""Listing pages read by one request (a page may be short when the filters are rare)."""


class Target(Protocol):
    """What a bulk action reads and acts on: a queue's listing and its per-task calls."""

    async def list_tasks(
        self,
        *,
        status: TaskStatus | None = None,
        task_type: str | None = None,
        user: str | None = None,
        prefix: str | None = None,
        cursor: str | None = None,
        limit: int = 100,
    ) -> Page: ...

    async def requeue(self, task_id: str) -> Task: ...

    async def cancel(self, task_id: str) -> Task: ...


Action = Callable[[Target, str], Awaitable[Task]]
ACTIONS: dict[str, Action] = {
    "requeue": lambda target, task_id: target.requeue(task_id),
    "cancel": lambda target, task_id: target.cancel(task_id),
}


@dataclass(frozen=True, slots=True)
class Selection:
    """The tasks to act on: the listing's filters, where to start, how many at most."""

    status: TaskStatus
    task_type: str | None = None
    user: str | None = None
    prefix: str | None = None
    cursor: str | None = None
    limit: int = 1000


@dataclass(slots=True)
class Done:
    """Each selected task's outcome (None: done) and where the selection continues."""

    outcomes: list[tuple[str, PerfectQueueError | None]] = field(default_factory=list)
    cursor: str | None = None


async def apply(queue: Target, action: str, selection: Selection) -> Done:
    """Act on the selected tasks, one call each."""
    done, act, cursor = Done(), ACTIONS[action], selection.cursor
    for _ in range(MAX_PAGES):
        page = await queue.list_tasks(
            status=selection.status,
            task_type=selection.task_type,
            user=selection.user,
            prefix=selection.prefix,
            cursor=cursor,
            limit=selection.limit - len(done.outcomes),
        )
        for task in page.tasks:
            done.outcomes.append((task.id, await outcome(act, queue, task.id)))
        cursor = page.cursor
        if cursor is None or len(done.outcomes) >= selection.limit:
            break
    done.cursor = cursor
    return done


async def outcome(act: Action, queue: Target, task_id: str) -> PerfectQueueError | None:
    try:
        await act(queue, task_id)
    except PerfectQueueError as exc:
        if exc.code == "unavailable":
            raise  # the database is out of reach: the request fails as a whole (503)
        return exc
    return None
