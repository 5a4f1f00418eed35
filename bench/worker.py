"""The worker runtime (``perfectqueue run``) draining N tasks, beside its references in one run.

Each case starts a worker on a queue of N submitted tasks and times, apart, its start-up (from
the command to the first task finished) and its drain (from then to the last). The tasks are
no-ops, sleep 10 ms (``time.sleep``, or ``asyncio.sleep`` under an asyncio processor), or burn
5 ms of CPU. The references, measured just before on the same service and database: the
service's batched path (W plain HTTP clients polling k = 10, or 100, and finishing by
``finish-batch``) and the raw-SQL ceiling at the same k (bench/ceiling.py's drain). Cases:
no-ops with ``task_prefetch`` (100 here), with the worker's defaults (no prefetch), and under
an asyncio processor; 10 ms sleeps in plain processors and, as ``asyncio.sleep``, under an
asyncio processor (``concurrency`` 100 here); 5 ms of CPU.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from contextlib import suppress
from typing import Any

import httpx
import yaml

from . import ceiling
from . import service as through_service
from .common import Backend, run_clients, services, summarize, throughput

WORKER_MODULE = """
import asyncio, time
from perfectqueue.worker import Base, Dispatch


class Noop(Base):
    def run(self):
        self.task.finish()


class Sleep(Base):
    def run(self):
        time.sleep(0.01)


class AsyncSleep(Base):
    async def run(self):
        await asyncio.sleep(0.01)


class Burn(Base):
    def run(self):
        start = time.process_time()
        while time.process_time() - start < 0.005:
            pass


class Dispatcher(Dispatch):
    pass


Dispatcher.route("noop", Noop)
Dispatcher.route("sleep", Sleep)
Dispatcher.route("asleep", AsyncSleep)
Dispatcher.route("burn", Burn)
"""


def cases(cfg: dict[str, Any]) -> list[tuple[str, str, int, dict[str, Any]]]:
    """(name, task type, tasks, worker settings) of every case."""
    prefetch = {"task_prefetch": cfg["worker_prefetch"]}
    quick, slow = cfg["worker_tasks"], cfg["worker_slow_tasks"]
    out = []
    for p in cfg["processors"]:
        out.append((f"noop P={p}", "noop", quick, {"processors": p, **prefetch}))
        out.append((f"noop defaults P={p}", "noop", quick, {"processors": p}))
        out.append((f"noop asyncio P={p}", "noop", quick, {"processors": p, **_asyncio(cfg)}))
        out.append((f"sleep 10ms P={p}", "sleep", slow, {"processors": p, **prefetch}))
        out.append((f"sleep 10ms asyncio P={p}", "asleep", quick, {"processors": p, **_asyncio(cfg)}))
        out.append((f"cpu 5ms P={p}", "burn", slow, {"processors": p, **prefetch}))
    return [case for case in out if case[0].startswith(tuple(cfg.get("worker_cases", [""])))]


def _asyncio(cfg: dict[str, Any]) -> dict[str, Any]:
    return {"processor_type": "asyncio", "concurrency": cfg["worker_concurrency"]}


def finished(http: httpx.Client, base: str) -> int:
    return int(http.get(base + "/v1/queues/q").json()["finished"])


def one_run(
    backend: Backend, table: str, svc: Any, case: tuple[str, str, int, dict[str, Any]], cfg: dict[str, Any]
) -> dict[str, float]:
    _, kind, tasks, settings = case
    backend.truncate(table)
    run_clients(through_service.submit, [(cfg["client"], svc.queue, kind, tasks, 1000, kind)])
    config = backend.workdir / "worker.yaml"
    config.write_text(yaml.safe_dump({"url": svc.base, "queue": "q", "poll_interval": 0.1, **settings}))
    (backend.workdir / "pqbenchworker.py").write_text(WORKER_MODULE)
    cmd = [
        sys.executable,
        "-m",
        "perfectqueue",
        "run",
        "pqbenchworker:Dispatcher",
        "-I",
        str(backend.workdir),
    ]
    with open(backend.workdir / "worker.log", "ab") as log, httpx.Client(timeout=30) as http:
        start = time.time()
        proc = subprocess.Popen(
            [*cmd, "-c", str(config)], stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        try:
            first, last, done = watch(http, svc.base, tasks, start + cfg["worker_limit_s"])
        finally:
            stop(proc)
    drained = done - first[1]
    return {
        "startup_s": first[0] - start,
        "drain": drained / (last - first[0]) if last > first[0] else 0.0,
        "overall": done / (last - start),
        "done": done,
    }


def watch(http: httpx.Client, base: str, tasks: int, deadline: float) -> tuple[tuple[float, int], float, int]:
    """Watch the queue's finished count: (when the first were seen finished, how many), when the
    last were, and how many were finished in the end."""
    first: tuple[float, int] | None = None
    done = 0
    while done < tasks and time.time() < deadline:
        done = finished(http, base)
        if first is None and done:
            first = (time.time(), done)
        time.sleep(0.01)
    last = time.time()
    return first or (last, 0), last, done


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        with suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def references(backend: Backend, table: str, svc: Any, cfg: dict[str, Any]) -> dict[str, float]:
    """The service's batched path (poll k, finish-batch) and the SQL ceiling, at k = 10 and 100,
    with W clients each (the worker with prefetch polls up to 100 at a time)."""
    tasks, clients = cfg["worker_tasks"], cfg["worker_clients"]
    isolation = "READ COMMITTED" if backend.kind == "mysql" else None
    out = {}
    for k in (10, 100):
        backend.truncate(table)
        run_clients(through_service.submit, [(cfg["client"], svc.queue, "ref", tasks, 1000)])
        served = run_clients(through_service.drain, [(cfg["client"], svc.queue, k, True)] * clients)
        backend.truncate(table)
        backend.load(table, tasks)
        direct = run_clients(ceiling.drain, [(backend, table, k, isolation)] * clients)
        out.update({f"service k={k}": throughput(served)[0], f"ceiling k={k}": throughput(direct)[0]})
    return out


def run(backend: Backend, cfg: dict[str, Any]) -> dict[str, Any]:
    table = f"{cfg['table_prefix']}_worker"
    backend.create_table(table)
    out: dict[str, Any] = {"note": "startup_s: command to first task finished; drain: first to last finished"}
    with services(backend, table, 1, disable_resource_limit=True) as (svc,):
        refs = [references(backend, table, svc, cfg) for _ in range(cfg["repeat"])]
        out["references"] = {name: summarize([r[name] for r in refs]) for name in refs[0]}
        service_rate = out["references"]["service k=10"]["median"]
        for case in cases(cfg):
            runs = [one_run(backend, table, svc, case, cfg) for _ in range(cfg["repeat"])]
            drain = summarize([r["drain"] for r in runs])
            out[case[0]] = {
                "tasks": case[2],
                "settings": case[3],
                "startup_s": summarize([r["startup_s"] for r in runs]),
                "tasks_per_s": drain,
                "overall_tasks_per_s": summarize([r["overall"] for r in runs]),
                "of_service_k10_pct": round(100 * drain["median"] / service_rate, 1)
                if service_rate
                else None,
                "missed": sum(case[2] - r["done"] for r in runs),
            }
    return out
