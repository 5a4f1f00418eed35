"""A peer for reference on PostgreSQL: Procrastinate, a Python task queue on PostgreSQL.

``peer_tasks`` no-op jobs are deferred in one batch, then one Procrastinate worker
(``concurrency`` ``peer_concurrency``, its defaults otherwise: LISTEN/NOTIFY, finished jobs kept)
runs them until none is left; jobs/s is that drain's rate, as the service scenario's drain.
Procrastinate is not one of the project's dependencies: ``pip install procrastinate`` for this
scenario, which says it was skipped without it. Its tables live in a schema of their own
(``<prefix>_procrastinate``), dropped afterwards.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from .common import Backend, summarize


def run(backend: Backend, cfg: dict[str, Any]) -> dict[str, Any]:
    if backend.kind != "postgres":
        return {"skipped": "Procrastinate runs on PostgreSQL only"}
    try:
        import procrastinate
    except ImportError:
        return {"skipped": "procrastinate is not installed (pip install procrastinate)"}
    schema = f"{cfg['table_prefix']}_procrastinate"
    backend.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
    backend.execute(f"CREATE SCHEMA {schema}")
    try:
        conninfo = (
            f"host={backend.host} port={backend.port} user={backend.user} dbname={backend.database}"
            f" options='-c search_path={schema}'"
        )
        app = procrastinate.App(connector=procrastinate.PsycopgConnector(conninfo=conninfo))
        app.task(name="noop")(noop)
        runs = asyncio.run(_runs(app, backend, schema, cfg))
    finally:
        backend.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
    return {
        "procrastinate": _version(),
        "tasks": cfg["peer_tasks"],
        "concurrency": cfg["peer_concurrency"],
        "defer_tasks_per_s": summarize([r["defer"] for r in runs]),
        "tasks_per_s": summarize([r["drain"] for r in runs]),
    }


def noop() -> None:
    """The job: nothing."""


async def _runs(app: Any, backend: Backend, schema: str, cfg: dict[str, Any]) -> list[dict[str, float]]:
    tasks = cfg["peer_tasks"]
    out = []
    async with app.open_async():
        await app.schema_manager.apply_schema_async()
        for _ in range(cfg["repeat"]):
            backend.execute(f"TRUNCATE {schema}.procrastinate_jobs CASCADE")
            start = time.perf_counter()
            await app.tasks["noop"].batch_defer_async(*({} for _ in range(tasks)))
            deferred = time.perf_counter()
            await app.run_worker_async(
                wait=False, concurrency=cfg["peer_concurrency"], install_signal_handlers=False
            )
            done = time.perf_counter()
            out.append({"defer": tasks / (deferred - start), "drain": tasks / (done - deferred)})
    return out


def _version() -> str | None:
    from importlib import metadata

    try:
        return metadata.version("procrastinate")
    except metadata.PackageNotFoundError:
        return None
