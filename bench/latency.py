"""Long-poll delivery latency: from a submit's response to the task's delivery to a waiting poll.

With ``latency_replicas`` 2 the polls wait on one service replica and the tasks are submitted
through the other: what a replica learns of work submitted elsewhere (its periodic probe, or on
PostgreSQL the other replica's announcement).
"""

from __future__ import annotations

import multiprocessing as mp
import time
from collections.abc import Callable
from typing import Any

import httpx

from .common import Backend, percentiles, services


def poller(queue: str, stop: Any, out: Any) -> None:
    got: dict[str, float] = {}
    with httpx.Client(timeout=60) as http:
        while True:
            resp = http.post(queue + "/poll", json={"max": 1, "alive_time": 300, "wait": 2})
            now = time.time()
            tasks = resp.json()["tasks"]
            for t in tasks:
                got[t["id"]] = now
                http.post(queue + "/finish", json={"id": t["id"], "lease": t["lease"]})
            if not tasks and stop.is_set():
                break
    out.put(got)


def delivery_seconds(
    poller: Callable[[str, Any, Any], None], target: str, submit_to: str, cfg: dict[str, Any], tag: str
) -> tuple[list[float], int]:
    """``cfg["pollers"]`` processes of ``poller(target, stop, out)`` wait; then
    ``cfg["latency_tasks"]`` tasks are submitted one by one to the queue url ``submit_to``. The
    seconds from each submit's answer to its delivery, and how many were never delivered."""
    ctx = mp.get_context("fork")
    stop, results = ctx.Event(), ctx.Queue()
    procs = [ctx.Process(target=poller, args=(target, stop, results)) for _ in range(cfg["pollers"])]
    for p in procs:
        p.start()
    time.sleep(1.0)  # the polls are waiting
    submitted: dict[str, float] = {}
    with httpx.Client(timeout=60) as http:
        for i in range(cfg["latency_tasks"]):
            tid = f"{tag}-{i}"
            http.post(submit_to + "/submit", json={"id": tid, "type": "bench"}).raise_for_status()
            submitted[tid] = time.time()
            time.sleep(cfg["latency_gap"])
    stop.set()
    delivered: dict[str, float] = {}
    for _ in procs:
        delivered.update(results.get(timeout=60))
    for p in procs:
        p.join()
    seconds = [max(0.0, delivered[t] - s) for t, s in submitted.items() if t in delivered]
    return seconds, len(submitted) - len(seconds)


def run(backend: Backend, cfg: dict[str, Any]) -> dict[str, Any]:
    table = f"{cfg['table_prefix']}_latency"
    backend.create_table(table)
    out: dict[str, Any] = {}
    replicas = cfg.get("latency_replicas", 1)
    with services(backend, table, replicas, disable_resource_limit=True) as started:
        svc, through = started[0], started[-1]
        for _rep in range(cfg["repeat"]):
            backend.truncate(table)
            lat, lost = delivery_seconds(poller, svc.queue, through.queue, cfg, f"l{_rep}")
            out[f"run {_rep}"] = {**percentiles(lat), "lost": lost}
    all_p50 = sorted(v["p50_ms"] for v in out.values())
    all_p99 = sorted(v["p99_ms"] for v in out.values())
    out["median_p50_ms"] = all_p50[len(all_p50) // 2]
    out["median_p99_ms"] = all_p99[len(all_p99) // 2]
    out["max_ms"] = max(v["max_ms"] for k, v in out.items() if k.startswith("run"))
    out["pollers"] = cfg["pollers"]
    out["replicas"] = replicas
    return out
