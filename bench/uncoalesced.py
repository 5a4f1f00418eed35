"""``python -m bench.uncoalesced serve ...``: ``perfectqueue`` with merged calls turned off.

For before/after comparisons (``python -m bench --variants coalesced,uncoalesced``): each finish,
submit and immediate poll goes to the store on its own, as before merging (``service/batching.py``).
"""

from __future__ import annotations

from typing import Any

from perfectqueue.cli import main
from perfectqueue.service.longpoll import LongPoll
from perfectqueue.service.runtime import QueueRuntime
from perfectqueue.service.store import AcquiredTask, NewTask


async def finish(self: QueueRuntime, task_id: str, lease: int) -> None:
    outcomes = await self._finish_merged([(task_id, lease)])
    if outcomes[0] is not None:
        raise outcomes[0]
    self._freed()


async def submit(self: QueueRuntime, task: NewTask) -> None:
    outcomes = await self._submit_merged([task])
    if outcomes[0] is not None:
        raise outcomes[0]
    self.polls.notify()


async def now(self: LongPoll, max_tasks: int, alive_time: int) -> list[AcquiredTask]:
    return await self.acquire(max_tasks, alive_time, 1)  # one poll served


def turn_off() -> None:
    patches: dict[Any, dict[str, Any]] = {
        QueueRuntime: {"finish": finish, "submit": submit},
        LongPoll: {"now": now},
    }
    for cls, methods in patches.items():
        for name, fn in methods.items():
            setattr(cls, name, fn)


if __name__ == "__main__":
    turn_off()
    raise SystemExit(main())
