"""``python -m bench.uncoalesced serve ...``: ``perfectqueue`` with merged calls turned off.

For before/after comparisons (``python -m bench --variants coalesced,uncoalesced``): each finish,
submit and immediate poll goes to the store on its own, as before ``service/coalesce.py``.
"""

from __future__ import annotations

from typing import Any

from perfectqueue.cli import main
from perfectqueue.service import coalesce
from perfectqueue.service.store import AcquiredTask, NewTask


async def finish(self: coalesce.Coalesced, task_id: str, lease: int) -> None:
    await self.run(self.store.finish, task_id, lease)


async def submit(self: coalesce.Coalesced, task: NewTask) -> None:
    await self.run(self.store.submit, task)


async def acquire(self: coalesce.Acquirer, max_tasks: int, alive_time: int) -> list[AcquiredTask]:
    tasks: list[AcquiredTask] = await self.run(self.store.acquire, max_tasks, alive_time)
    return tasks


def turn_off() -> None:
    patches: dict[Any, dict[str, Any]] = {
        coalesce.Coalesced: {"finish": finish, "submit": submit},
        coalesce.Acquirer: {"acquire": acquire},
    }
    for cls, methods in patches.items():
        for name, fn in methods.items():
            setattr(cls, name, fn)


if __name__ == "__main__":
    turn_off()
    raise SystemExit(main())
