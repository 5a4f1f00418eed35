"""Memory and connections: the service with 1,000 idle long-polls (peak RSS under load is
recorded by the service scenario)."""

from __future__ import annotations

import asyncio
import multiprocessing as mp
import time
from pathlib import Path
from typing import Any

import httpx

from .common import Backend, memory_kb, services


def idle_polls(queue: str, count: int, wait: float, ready: Any) -> None:
    async def main() -> None:
        limits = httpx.Limits(max_connections=count + 10, max_keepalive_connections=count + 10)
        async with httpx.AsyncClient(timeout=wait + 30, limits=limits) as http:
            polls = [
                http.post(queue + "/poll", json={"max": 1, "alive_time": 60, "wait": wait})
                for _ in range(count)
            ]
            ready.set()
            await asyncio.gather(*polls, return_exceptions=True)

    asyncio.run(main())


def run(backend: Backend, cfg: dict[str, Any]) -> dict[str, Any]:
    table = f"{cfg['table_prefix']}_memory"
    backend.create_table(table)
    ctx = mp.get_context("fork")
    with services(backend, table, 1, disable_resource_limit=True, max_poll_wait=60) as (svc,):
        time.sleep(0.5)
        before = {**memory_kb(svc.proc.pid), **backend.connections()}
        ready = ctx.Event()
        proc = ctx.Process(target=idle_polls, args=(svc.queue, cfg["idle_polls"], cfg["idle_wait"], ready))
        proc.start()
        ready.wait(30)
        time.sleep(cfg["idle_settle"])
        during = {**memory_kb(svc.proc.pid), **backend.connections()}
        open_sockets = sum(
            1
            for line in Path("/proc/net/tcp").read_text().splitlines()[1:]
            if line.split()[1].endswith(f":{int(svc.base.rsplit(':', 1)[1]):04X}") and line.split()[3] == "01"
        )
        proc.terminate()
        proc.join()
    return {
        "idle_polls": cfg["idle_polls"],
        "established_connections_to_service": open_sockets,
        "rss_mb_before": round(before.get("VmRSS", 0) / 1024, 1),
        "rss_mb_with_idle_polls": round(during.get("VmRSS", 0) / 1024, 1),
        "peak_rss_mb": round(during.get("VmHWM", 0) / 1024, 1),
        "db_connections_before": before.get("connections"),
        "db_connections_with_idle_polls": during.get("connections"),
        "db_busy_connections_with_idle_polls": during.get("busy"),
        "db_open_transactions_with_idle_polls": during.get("transactions"),
    }
