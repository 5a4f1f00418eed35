"""Client processes for the concurrency tests: pollers and submitters that talk HTTP to the service.

Each function here runs in its own process (multiprocessing, 'spawn' context), so it imports only
httpx and the standard library and returns plain data. :func:`run_processes` starts them all, lets
them go at the same moment, and collects what each returned (or the traceback it died with).
"""

from __future__ import annotations

import multiprocessing
import queue
import random
import time
import traceback
from collections.abc import Callable, Sequence
from typing import Any

import httpx

Result = dict[str, Any]


def run_processes(
    target: Callable[..., Result], args: Sequence[tuple[Any, ...]], timeout: float, barrier: bool = False
) -> list[Result]:
    """Run ``target(*a)`` for each ``a`` in a process of its own, all starting together; their results.

    ``barrier``: pass each process one more argument, a barrier shared by all of them.
    """
    ctx = multiprocessing.get_context("spawn")
    ready, results = ctx.Queue(), ctx.Queue()
    go = ctx.Event()
    if barrier:
        shared = ctx.Barrier(len(args))
        args = [(*a, shared) for a in args]
    procs = [
        ctx.Process(target=_entry, args=(target, i, a, ready, go, results), daemon=True)
        for i, a in enumerate(args)
    ]
    collected: dict[int, Result] = {}
    deadline = time.monotonic() + timeout
    try:
        for proc in procs:
            proc.start()
        for _ in procs:
            ready.get(timeout=max(0.1, deadline - time.monotonic()))
        go.set()
        while len(collected) < len(procs):
            try:
                index, error, result = results.get(timeout=max(0.1, deadline - time.monotonic()))
            except queue.Empty:
                raise TimeoutError(f"only {len(collected)} of {len(procs)} client processes ended") from None
            if error is not None:
                raise AssertionError(f"client process {index} failed:\n{error}")
            collected[index] = result
    finally:
        for proc in procs:
            proc.join(timeout=5)
            if proc.is_alive():
                proc.kill()
                proc.join()
            proc.close()
        for q in (ready, results):
            q.close()
            q.join_thread()
    return [collected[i] for i in range(len(procs))]


def _entry(
    target: Callable[..., Result], index: int, args: tuple[Any, ...], ready: Any, go: Any, out: Any
) -> None:
    ready.put(index)
    go.wait(120)
    try:
        out.put((index, None, target(*args)))
    except BaseException:
        out.put((index, traceback.format_exc(), None))


# -- pollers ---------------------------------------------------------------------------------


def drain(bases: list[str], seed: int) -> Result:
    """Poll (alternating replicas, max 1..10) until nothing waits; finish every task received.

    Returns every (id, lease) received and every finish that did not succeed.
    """
    rng = random.Random(seed)
    received: list[tuple[str, str]] = []
    failures: list[str] = []
    polls = 0
    with httpx.Client(timeout=60) as client:
        while True:
            base = bases[polls % len(bases)]
            polls += 1
            tasks = _poll(client, base, rng.randint(1, 10))
            if not tasks:
                if _counts(client, base)["waiting"] == 0:
                    break
                continue
            received += [(t["id"], t["lease"]) for t in tasks]
            failures += _finish(client, rng.choice(bases), tasks, rng.random() < 0.5)
    return {"received": received, "failures": failures, "polls": polls}


def capped(bases: list[str], seed: int) -> Result:
    """As :func:`drain`, holding each task 1-5 ms and recording, per task, the interval from just
    after the poll answered to just before its finish was sent (inside the real lease)."""
    rng = random.Random(seed)
    intervals: list[tuple[str | None, str, str, float, float]] = []
    failures: list[str] = []
    polls = 0
    with httpx.Client(timeout=60) as client:
        while True:
            base = bases[polls % len(bases)]
            polls += 1
            tasks = _poll(client, base, rng.randint(1, 10))
            start = time.monotonic()  # CLOCK_MONOTONIC: one clock for every process on the machine
            if not tasks:
                if _counts(client, base)["waiting"] == 0:
                    break
                time.sleep(rng.uniform(0.001, 0.005))  # every user is at its cap: back off a little
                continue
            batch = rng.random() < 0.5
            done: list[dict[str, Any]] = []
            for task in tasks:
                time.sleep(rng.uniform(0.001, 0.005))
                if not batch:
                    end = time.monotonic()
                    intervals.append((task["user"], task["id"], task["lease"], start, end))
                    failures += _finish(client, rng.choice(bases), [task], False)
                done.append(task)
            if batch:
                end = time.monotonic()
                intervals += [(t["user"], t["id"], t["lease"], start, end) for t in done]
                failures += _finish(client, rng.choice(bases), done, True)
    return {"intervals": intervals, "failures": failures, "polls": polls}


def _poll(client: httpx.Client, base: str, max_tasks: int) -> list[dict[str, Any]]:
    response = client.post(f"{base}/v1/queues/q/poll", json={"max": max_tasks, "alive_time": 300})
    if response.status_code != 200:
        raise AssertionError(f"poll answered {response.status_code}: {response.text}")
    tasks: list[dict[str, Any]] = response.json()["tasks"]
    if len(tasks) > max_tasks:
        raise AssertionError(f"poll for {max_tasks} returned {len(tasks)} tasks")
    return tasks


def _counts(client: httpx.Client, base: str) -> dict[str, int]:
    response = client.get(f"{base}/v1/queues/q")
    response.raise_for_status()
    counts: dict[str, int] = response.json()
    return counts


def _finish(client: httpx.Client, base: str, tasks: list[dict[str, Any]], batch: bool) -> list[str]:
    """Finish the tasks (one finish-batch, or one finish each); what did not succeed."""
    if batch:
        body = {"tasks": [{"id": t["id"], "lease": t["lease"]} for t in tasks]}
        response = client.post(f"{base}/v1/queues/q/finish-batch", json=body)
        if response.status_code != 200:
            return [f"finish-batch answered {response.status_code}: {response.text}"]
        result = response.json()
        reported = {s["id"] for s in result["successful"]} | {f["id"] for f in result["failed"]}
        missing = [f"finish-batch did not report {t['id']}" for t in tasks if t["id"] not in reported]
        return [f"finish-batch failed {f}" for f in result["failed"]] + missing
    failures = []
    for task in tasks:
        response = client.post(f"{base}/v1/queues/q/finish", json={"id": task["id"], "lease": task["lease"]})
        if response.status_code != 204:
            failures.append(f"finish {task['id']} answered {response.status_code}: {response.text}")
    return failures


# -- submitters ------------------------------------------------------------------------------


def submit_all(
    bases: list[str], index: int, ids: list[str], batch_ids: list[str], batch: int, together: Any
) -> Result:
    """Submit ``ids`` one request each, then ``batch_ids`` with submit-batch in chunks of ``batch``,
    alternating replicas, each task's data tagged with ``index``; per id, the outcome:
    "created", "already_exists", or a description of anything else.

    Every request waits on the barrier ``together`` first, so that all processes send the same
    id (or chunk) at the same moment.
    """
    outcomes: dict[str, str] = {}
    with httpx.Client(timeout=60) as client:
        for i, task_id in enumerate(ids):
            together.wait(30)
            body = {"id": task_id, "type": "t", "data": {"by": index}}
            response = client.post(f"{bases[(i + index) % len(bases)]}/v1/queues/q/submit", json=body)
            outcomes[task_id] = _outcome(response)
        for i in range(0, len(batch_ids), batch):
            chunk = batch_ids[i : i + batch]
            body = {"tasks": [{"id": t, "type": "t", "data": {"by": index}} for t in chunk]}
            base = bases[(i // batch + index) % len(bases)]
            together.wait(30)
            response = client.post(f"{base}/v1/queues/q/submit-batch", json=body)
            if response.status_code != 200:
                outcomes.update(dict.fromkeys(chunk, f"batch {response.status_code}: {response.text}"))
                continue
            result = response.json()
            for task_id in chunk:  # a task reported twice, or never, is an outcome of its own
                found = [s for s in result["successful"] if s["id"] == task_id]
                found += [f["code"] for f in result["failed"] if f["id"] == task_id]
                outcomes[task_id] = (
                    "created"
                    if found == [{"id": task_id}]
                    else (
                        found[0] if len(found) == 1 and isinstance(found[0], str) else f"batch result {found}"
                    )
                )
    return {"outcomes": outcomes}


def _outcome(response: httpx.Response) -> str:
    if response.status_code == 201:
        return "created"
    if response.status_code == 409 and response.headers.get("content-type") == "application/problem+json":
        code: str = response.json().get("code", "")
        return code
    return f"{response.status_code}: {response.text}"
