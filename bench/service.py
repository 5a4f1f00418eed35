"""Through the HTTP service: submit, poll and finish N tasks from W client processes."""

from __future__ import annotations

import contextlib
import statistics
import time
from typing import Any

from .common import (
    Backend,
    Http,
    cpu_seconds,
    memory_kb,
    metric_sums,
    run_clients,
    services,
    summarize,
    throughput,
)

CALL_METRICS = {
    "perfectqueue_store_thread_wait_seconds_sum": "thread_wait",
    "perfectqueue_store_thread_wait_seconds_count": "store_calls",
    "perfectqueue_store_call_tasks_sum{call=acquire}": "acquired",
    "perfectqueue_store_call_tasks_count{call=acquire}": "acquisitions",
    "perfectqueue_store_call_tasks_sum{call=finish}": "finished",
    "perfectqueue_store_call_tasks_count{call=finish}": "finishes",
}


def submit(
    barrier: Any, client: str, queue: str, prefix: str, count: int, batch: int, kind: str = "bench"
) -> dict[str, Any]:
    """Submit ``count`` tasks of type ``kind``, one per call (batch 0) or ``batch`` per
    submit-batch call."""
    with Http(client, queue) as http:
        barrier.wait()
        start, cpu = time.time(), time.process_time()
        if batch == 0:
            for i in range(count):
                http.post("/submit", {"id": f"{prefix}-{i}", "type": kind})
        else:
            for lo in range(0, count, batch):
                tasks = [{"id": f"{prefix}-{i}", "type": kind} for i in range(lo, min(count, lo + batch))]
                failed = http.post("/submit-batch", {"tasks": tasks})["failed"]
                assert not failed, failed[:1]
        return {"start": start, "end": time.time(), "count": count, "cpu": time.process_time() - cpu}


def drain(
    barrier: Any, client: str, queue: str, k: int, batch: bool, quota: int = 0, limit_s: float = 0
) -> dict[str, Any]:
    """Poll up to k tasks (no wait) and finish them, one per call or as one finish-batch, until
    the queue is empty, or, with a ``quota`` or ``limit_s``, until ``quota`` tasks are done or
    ``limit_s`` seconds have passed: then an empty poll means only that nothing may start now
    (every user at its max_running), and the client's next poll is a long-poll (``wait`` 1 s), as
    a worker's would be: a finish that frees a slot wakes it."""
    count = 0
    polls: list[float] = []
    with Http(client, queue) as http:
        barrier.wait()
        start, cpu = time.time(), time.process_time()
        wait = 0
        while (not quota or count < quota) and (not limit_s or time.time() - start < limit_s):
            t0 = time.perf_counter()
            tasks = http.post("/poll", {"max": k, "alive_time": 300, "wait": wait})["tasks"]
            polls.append(time.perf_counter() - t0)
            if not tasks:
                if not (quota or limit_s):
                    break
                wait = 1
                continue
            wait = 0
            if batch:
                done = [{"id": t["id"], "lease": t["lease"]} for t in tasks]
                failed = http.post("/finish-batch", {"tasks": done})["failed"]
                assert not failed, failed[:1]
            else:
                for t in tasks:
                    http.post("/finish", {"id": t["id"], "lease": t["lease"]})
            count += len(tasks)
        end = time.time()
        return {"start": start, "end": end, "count": count, "polls": polls, "cpu": time.process_time() - cpu}


def one_run(
    backend: Backend,
    table: str,
    svcs: list[Any],
    tasks: int,
    workers: int,
    k: int,
    batched: bool,
    client: str,
) -> dict[str, float]:
    backend.truncate(table)
    per = tasks // workers
    bases = [svcs[i % len(svcs)].queue for i in range(workers)]
    sub = run_clients(submit, [(client, bases[i], f"t{i}", per, k if batched else 0) for i in range(workers)])
    calls0 = call_sums(svcs)
    db0 = backend.server_cpu_seconds()
    svc0 = sum(cpu_seconds(s.proc.pid) for s in svcs)
    t0 = time.time()
    res = run_clients(drain, [(client, bases[i], k, batched) for i in range(workers)])
    wall = time.time() - t0
    rate, count, _ = throughput(res)
    assert count == per * workers, (count, per * workers)
    db1 = backend.server_cpu_seconds()
    calls = {name: value - calls0[name] for name, value in call_sums(svcs).items()}
    return {
        # the store calls of the drain, from the services' own metrics: the mean wait for a
        # worker thread, and the mean tasks per acquisition and per finish call
        "thread_wait_ms": 1000 * calls["thread_wait"] / max(calls["store_calls"], 1),
        "tasks_per_acquisition": calls["acquired"] / max(calls["acquisitions"], 1),
        "tasks_per_finish_call": calls["finished"] / max(calls["finishes"], 1),
        "submit": throughput(sub)[0],
        "drain": rate,
        "service_cpu_pct": 100 * (sum(cpu_seconds(s.proc.pid) for s in svcs) - svc0) / wall,
        "client_cpu_pct": 100 * sum(r["cpu"] for r in res) / wall,
        "db_cpu_pct": 100 * (db1 - db0) / wall if db0 is not None and db1 is not None else float("nan"),
    }


def call_sums(svcs: list[Any]) -> dict[str, float]:
    """CALL_METRICS summed over the services."""
    found = [metric_sums(s.base, CALL_METRICS) for s in svcs]
    return {name: sum(f[name] for f in found) for name in CALL_METRICS.values()}


def submit_only(
    backend: Backend, table: str, svcs: list[Any], tasks: int, workers: int, batch: int, client: str
) -> float:
    """Submit throughput alone, ``batch`` tasks per /submit-batch call (up to 1,000)."""
    backend.truncate(table)
    per = tasks // workers
    args = [(client, svcs[i % len(svcs)].queue, f"s{i}", per, batch) for i in range(workers)]
    return throughput(run_clients(submit, args))[0]


def run(backend: Backend, cfg: dict[str, Any]) -> dict[str, Any]:
    """Every case; with several variants, their repeats interleaved (the same conditions for each)."""
    table = f"{cfg['table_prefix']}_service"
    backend.create_table(table)
    out: dict[str, Any] = {}
    peak_kb = 0
    variants = cfg.get("variants", ["coalesced"])
    for fair_on in cfg.get("service_fair", [False]):
        for nsvc in cfg["service_counts"]:
            with contextlib.ExitStack() as stack:
                started = {
                    v: stack.enter_context(
                        services(
                            backend,
                            table,
                            nsvc,
                            v,
                            disable_resource_limit=not fair_on,
                            **cfg["service_settings"],
                        )
                    )
                    for v in variants
                }
                cases = {**drain_cases(backend, table, started, cfg, nsvc)}
                cases.update(submit_cases(backend, table, started, cfg, nsvc))
                for svcs in started.values():
                    peak_kb = max(peak_kb, *(memory_kb(s.proc.pid).get("VmHWM", 0) for s in svcs))
            for name, case in cases.items():
                # fair off is the service scenario's own case (named as ever); fair on is marked
                out[name + (", fair on" if fair_on else "")] = {**case, "fair": fair_on}
    out["service_peak_rss_mb"] = round(peak_kb / 1024, 1)
    return out


def drain_cases(
    backend: Backend, table: str, started: dict[str, list[Any]], cfg: dict[str, Any], nsvc: int
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    cases = [("single", 1, False), *((f"batch k={k}", k, True) for k in cfg["batch_ks"])]
    for name, k, batched in cases:
        tasks = cfg["service_tasks"][name]
        for workers in cfg["workers"] if nsvc == 1 else [max(cfg["workers"])]:
            runs: dict[str, list[dict[str, float]]] = {v: [] for v in started}
            for _ in range(cfg["repeat"]):
                for v, svcs in started.items():
                    runs[v].append(one_run(backend, table, svcs, tasks, workers, k, batched, cfg["client"]))
            for v, samples in runs.items():
                case = {
                    "mode": name,
                    "k": k,
                    "workers": workers,
                    "services": nsvc,
                    "variant": v,
                    "tasks": tasks,
                }
                out[key(f"{name} W={workers} services={nsvc}", v, started)] = {
                    **case,
                    "drain_tasks_per_s": summarize([r["drain"] for r in samples]),
                    "submit_tasks_per_s": summarize([r["submit"] for r in samples]),
                    "service_cpu_pct": summarize([r["service_cpu_pct"] for r in samples]),
                    "client_cpu_pct": summarize([r["client_cpu_pct"] for r in samples]),
                    "db_cpu_pct": summarize([r["db_cpu_pct"] for r in samples]),
                    **{
                        name: round(statistics.median(r[name] for r in samples), 2)
                        for name in ("thread_wait_ms", "tasks_per_acquisition", "tasks_per_finish_call")
                    },
                }
    return out


def submit_cases(
    backend: Backend, table: str, started: dict[str, list[Any]], cfg: dict[str, Any], nsvc: int
) -> dict[str, Any]:
    """Submit throughput alone at the largest batch the API takes (1,000 tasks per call)."""
    out: dict[str, Any] = {}
    workers, tasks = max(cfg["workers"]), cfg["submit_tasks"]
    for batch in cfg.get("submit_batches", []):
        rates: dict[str, list[float]] = {v: [] for v in started}
        for _ in range(cfg["repeat"]):
            for v, svcs in started.items():
                rates[v].append(submit_only(backend, table, svcs, tasks, workers, batch, cfg["client"]))
        for v, samples in rates.items():
            mode = f"submit {batch} per call"
            out[key(f"{mode} W={workers} services={nsvc}", v, started)] = {
                "mode": mode,
                "k": batch,
                "workers": workers,
                "services": nsvc,
                "variant": v,
                "tasks": tasks,
                "submit_tasks_per_s": summarize(samples),
            }
    return out


def key(name: str, variant: str, started: dict[str, Any]) -> str:
    return name if len(started) == 1 else f"{name} {variant}"
