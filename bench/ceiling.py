"""The ceiling: acquire and finish done directly in SQL, with the best known statements."""

from __future__ import annotations

import secrets
import time
from typing import Any

import pymysql

from .common import DELETE_OFFSET, HORIZON, Backend, run_clients, summarize, throughput

RETRY_ERRNOS = (1213, 1205)  # deadlock, lock wait timeout


def drain(barrier: Any, backend: Backend, table: str, k: int, isolation: str | None) -> dict[str, Any]:
    """Lease up to k waiting rows per transaction and finish them (fenced), until none is left."""
    conn = backend.connect(isolation)
    cur = conn.cursor()
    mysql = backend.kind == "mysql"
    now = "UNIX_TIMESTAMP()" if mysql else "CAST(strftime('%s','now') AS INTEGER)"
    mark = "%s" if mysql else "?"
    select = (
        f"SELECT id, timeout, data, created_at, resource, max_running FROM {table}"
        + (f" FORCE INDEX (index_{table}_on_timeout)" if mysql else "")
        + f" WHERE timeout > {HORIZON} AND timeout <= {now} AND created_at IS NOT NULL"
        + f" ORDER BY timeout LIMIT {k}"
        + (" FOR UPDATE SKIP LOCKED" if mysql else "")
    )
    count = retries = 0
    barrier.wait()
    start = time.time()
    while True:
        lease = secrets.randbelow(2**63 - 1) + 1
        try:
            if not mysql:
                cur.execute("BEGIN IMMEDIATE")
            cur.execute(select)
            ids = [row[0] for row in cur.fetchall()]
            if not ids:
                conn.commit()
                break
            marks = ",".join([mark] * len(ids))
            cur.execute(
                f"UPDATE {table} SET timeout = {now} + 300, owner = {mark} WHERE id IN ({marks})",
                [lease, *ids],
            )
            conn.commit()
            if not mysql:
                cur.execute("BEGIN IMMEDIATE")
            cur.execute(
                f"UPDATE {table} SET timeout = {now} - {DELETE_OFFSET} + 300, created_at = NULL,"
                f" resource = NULL WHERE id IN ({marks}) AND owner = {mark}",
                [*ids, lease],
            )
            conn.commit()
            count += len(ids)
        except pymysql.err.OperationalError as exc:
            if exc.args[0] not in RETRY_ERRNOS:
                raise
            conn.rollback()
            retries += 1
    end = time.time()
    conn.close()
    return {"start": start, "end": end, "count": count, "retries": retries}


def run(backend: Backend, cfg: dict[str, Any]) -> dict[str, Any]:
    table = f"{cfg['table_prefix']}_ceiling"
    backend.create_table(table)
    isolations = ["READ COMMITTED", "REPEATABLE READ"] if backend.kind == "mysql" else [None]
    out: dict[str, Any] = {}
    for k in cfg["ks"]:
        tasks = cfg["tasks_per_k"][k]
        for workers in cfg["workers"]:
            per_iso: dict[str, Any] = {}
            for iso in isolations:
                samples, retries = [], 0
                for _ in range(cfg["repeat"]):
                    backend.truncate(table)
                    backend.load(table, tasks)
                    res = run_clients(drain, [(backend, table, k, iso) for _ in range(workers)])
                    rate, count, _ = throughput(res)
                    assert count == tasks, (count, tasks)
                    samples.append(rate)
                    retries += sum(r["retries"] for r in res)
                per_iso[iso or "serial"] = {**summarize(samples), "deadlock_retries": retries}
            best = max(per_iso, key=lambda i: per_iso[i]["median"])
            out[f"k={k} W={workers}"] = {
                "k": k,
                "workers": workers,
                "tasks": tasks,
                "by_isolation": per_iso,
                "best_isolation": best,
                "tasks_per_s": per_iso[best]["median"],
            }
    return out
