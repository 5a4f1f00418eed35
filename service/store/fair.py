"""Fair acquisition: the original's resource-limited order, at a cost bounded by users.

The original orders *every* waiting row by ``max_running / (running + 1)`` on each poll, so its
cost grows with the backlog. Here the same order is planned from one row per user (the head of
each user's waiting tasks, found through the (resource, timeout) index), and only the planned
rows are read. A user's ``max_running`` is never exceeded, within one acquisition too (the
original could hand one poll more tasks of a user than its limit allowed).
"""

from __future__ import annotations

import heapq
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Head:
    """The oldest waiting task of one user (``user`` None: tasks submitted without a user)."""

    user: str | None
    timeout: int
    max_running: int | None


def weight(max_running: int | None, running: int) -> float:
    """The original's priority: ``IFNULL(max_running, 1) / (running + 1)``."""
    return (max_running or 1) / (running + 1)


def plan(
    heads: Sequence[Head], running: dict[str, int], slots: int, available: dict[str | None, int]
) -> dict[str | None, int]:
    """How many tasks to take from each user, highest weight first, oldest head breaking ties.

    ``available`` caps users known to have fewer waiting tasks than that. Tasks without a user
    are never limited and their weight does not drop as they are taken, as in the original
    (whose running count for them is always NULL).
    """
    queue: list[tuple[float, int, int, Head]] = []
    taken: dict[str | None, int] = {}

    def offer(seq: int, head: Head) -> None:
        count = taken.get(head.user, 0)
        if _room(head, running, count) > 0 and count < available.get(head.user, count + 1):
            heapq.heappush(queue, (-_weight(head, running, count), head.timeout, seq, head))

    for seq, head in enumerate(heads):
        offer(seq, head)
    while queue and slots > 0:
        _, _, seq, head = heapq.heappop(queue)
        taken[head.user] = taken.get(head.user, 0) + 1
        slots -= 1
        offer(seq, head)
    return taken


def allowed(user: str | None, max_running: int | None, running: int) -> bool:
    """May one more task of this user start, given its running count?"""
    return user is None or max_running is None or running < max_running


def _room(head: Head, running: dict[str, int], taken: int) -> int:
    if head.user is None or head.max_running is None:
        return 1
    return head.max_running - running.get(head.user, 0) - taken


def _weight(head: Head, running: dict[str, int], taken: int) -> float:
    if head.user is None:
        return weight(head.max_running, 0)
    return weight(head.max_running, running.get(head.user, 0) + taken)
