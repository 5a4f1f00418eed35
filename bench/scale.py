"""Scale: acquire latency and throughput with a small table, then a bulk-loaded large one; and
the cost of cleaning up expired finished rows while polls continue."""

from __future__ import annotations

import threading
import time
from typing import Any

import httpx

from .common import Backend, percentiles, run_clients, services, summarize, throughput
from .service import drain


def acquire_latency(queue: str, ops: int) -> list[float]:
    """Sequential poll(max=1) + finish; the poll latencies."""
    lat = []
    with httpx.Client(timeout=60) as http:
        for _ in range(ops):
            t0 = time.perf_counter()
            tasks = http.post(queue + "/poll", json={"max": 1, "alive_time": 300, "wait": 0}).json()["tasks"]
            lat.append(time.perf_counter() - t0)
            for t in tasks:
                http.post(queue + "/finish", json={"id": t["id"], "lease": t["lease"]})
    return lat


def measure(backend: Backend, svc: Any, cfg: dict[str, Any]) -> dict[str, Any]:
    lat: list[float] = []
    rates = []
    workers = max(cfg["workers"])
    for _ in range(cfg["repeat"]):
        lat += acquire_latency(svc.queue, cfg["scale_latency_ops"])
        res = run_clients(
            drain,
            [(cfg["client"], svc.queue, 10, True, cfg["scale_drain"] // workers) for _ in range(workers)],
        )
        rates.append(throughput(res)[0])
    return {"acquire": percentiles(lat), "batch_k10_tasks_per_s": summarize(rates), "workers": workers}


def run(backend: Backend, cfg: dict[str, Any]) -> dict[str, Any]:
    table = f"{cfg['table_prefix']}_scale"
    out: dict[str, Any] = {}
    backend.create_table(table)
    with services(backend, table, 1, disable_resource_limit=True, cleanup_interval=3600) as (svc,):
        small = cfg["scale_small"]
        backend.load(table, small)
        out[f"{small} waiting"] = measure(backend, svc, cfg)
        big = cfg["scale_big"]
        backend.truncate(table)
        load_s = backend.load(table, big) + backend.load(table, big, prefix="f", state="finished")
        out["bulk_load_seconds"] = round(load_s, 1)
        out[f"{big} waiting + {big} finished"] = measure(backend, svc, cfg)
        # cleanup of `big` expired finished rows, in the service's batches, while one client polls
        expired_load = backend.load(table, big, prefix="x", state="expired")
        from perfectqueue.service.store import Database, QueueStore  # the service's own cleanup

        store = QueueStore(Database(backend.url), table)
        stop = threading.Event()
        lat: list[float] = []

        def polls() -> None:
            while not stop.is_set():
                lat.extend(acquire_latency(svc.queue, 20))

        poller = threading.Thread(target=polls, daemon=True)
        poller.start()
        t0 = time.perf_counter()
        deleted = 0
        while (n := store.cleanup(cfg["cleanup_batch"])) > 0:
            deleted += n
        seconds = time.perf_counter() - t0
        stop.set()
        poller.join()
        out["cleanup"] = {
            "expired_rows": big,
            "load_seconds": round(expired_load, 1),
            "deleted": deleted,
            "batch": cfg["cleanup_batch"],
            "seconds": round(seconds, 2),
            "rows_per_s": round(deleted / seconds) if seconds else None,
            "acquire_during_cleanup": percentiles(lat),
        }
    return out
