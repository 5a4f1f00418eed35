"""The ceiling: acquire and finish done directly in SQL, with the best known statements.

On MariaDB and PostgreSQL the lease reads with ``FOR UPDATE SKIP LOCKED`` (READ COMMITTED on
PostgreSQL, as the service's store); on SQLite a writer transaction (``BEGIN IMMEDIATE``) serialises
the drainers.

Each drainer leases up to k rows in one transaction and finishes them (fenced by its lease) in a
second one, as a worker does. A deadlock or lock-wait timeout is retried where it happened, as the
service's store retries its transactions: on the lease, the rolled-back transaction leased
nothing and the drainer simply leases again; on the finish, the rows are still leased to this
drainer, so the finish itself is tried again (giving up there would leave them leased for 300 s
and the drain short of its count). The retries of each kind are reported, and a drain that still
ends short says how many tasks it missed instead of stopping the run.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from functools import partial
from typing import Any

import psycopg
import pymysql

from .common import CLOCK, DELETE_OFFSET, HORIZON, Backend, run_clients, summarize, throughput

RETRY_ERRNOS = (1213, 1205)  # deadlock, lock wait timeout
RETRY_SQLSTATES = ("40001", "40P01", "55P03")  # serialization failure, deadlock, lock timeout


class Statements:
    """The drain's SQL for one backend."""

    def __init__(self, backend: Backend, table: str, k: int, retention: int = 300) -> None:
        self.mysql = backend.kind == "mysql"
        self.sqlite = backend.kind == "sqlite"
        now = CLOCK[backend.kind]
        self.mark = "?" if self.sqlite else "%s"
        self.select = (
            f"SELECT id, timeout, data, created_at, resource, max_running FROM {table}"
            + (f" FORCE INDEX (index_{table}_on_timeout)" if self.mysql else "")
            + f" WHERE timeout > {HORIZON} AND timeout <= {now} AND created_at IS NOT NULL"
            + f" ORDER BY timeout LIMIT {k}"
            + ("" if self.sqlite else " FOR UPDATE SKIP LOCKED")
        )
        self.lease = f"UPDATE {table} SET timeout = {now} + 300, owner = {self.mark} WHERE id IN "
        self.finish = (
            f"UPDATE {table} SET timeout = {now} - {DELETE_OFFSET} + {retention}, created_at = NULL,"
            " resource = NULL WHERE id IN "
        )

    def marks(self, count: int) -> str:
        return "(" + ",".join([self.mark] * count) + ")"


def transaction(conn: Any, stmts: Statements, body: Callable[[Any], Any]) -> tuple[Any, int]:
    """``body(cursor)`` in a transaction, tried again after a deadlock, a serialization failure
    or a lock-wait timeout (rolled back first); its result and the number of retries."""
    retries = 0
    while True:
        cur = conn.cursor()
        try:
            if stmts.sqlite:
                cur.execute("BEGIN IMMEDIATE")
            result = body(cur)
            conn.commit()
            return result, retries
        except (pymysql.err.OperationalError, psycopg.errors.OperationalError) as exc:
            if not retryable(exc):
                raise
            conn.rollback()
            retries += 1


def retryable(exc: Exception) -> bool:
    if isinstance(exc, psycopg.Error):
        return exc.sqlstate in RETRY_SQLSTATES
    return bool(exc.args[0] in RETRY_ERRNOS)


def lease(cur: Any, stmts: Statements, token: int) -> list[str]:
    cur.execute(stmts.select)
    ids = [row[0] for row in cur.fetchall()]
    if ids:
        cur.execute(stmts.lease + stmts.marks(len(ids)), [token, *ids])
    return ids


def finish(cur: Any, stmts: Statements, ids: list[str], token: int) -> None:
    cur.execute(stmts.finish + stmts.marks(len(ids)) + f" AND owner = {stmts.mark}", [*ids, token])


def drain(
    barrier: Any, backend: Backend, table: str, k: int, isolation: str | None, retention: int = 300
) -> dict[str, Any]:
    """Lease up to k waiting rows per transaction and finish them (fenced, retained ``retention``
    seconds), until none is left."""
    conn = backend.connect(isolation)
    stmts = Statements(backend, table, k, retention)
    count = lease_retries = finish_retries = 0
    barrier.wait()
    start = time.time()
    while True:
        token = secrets.randbelow(2**63 - 1) + 1
        ids, retried = transaction(conn, stmts, partial(lease, stmts=stmts, token=token))
        lease_retries += retried
        if not ids:
            break
        _, retried = transaction(conn, stmts, partial(finish, stmts=stmts, ids=ids, token=token))
        finish_retries += retried
        count += len(ids)
    end = time.time()
    conn.close()
    retries = {"lease_retries": lease_retries, "finish_retries": finish_retries}
    return {"start": start, "end": end, "count": count, **retries}


def run(backend: Backend, cfg: dict[str, Any]) -> dict[str, Any]:
    table = f"{cfg['table_prefix']}_ceiling"
    backend.create_table(table)
    isolations = {"mysql": ["READ COMMITTED", "REPEATABLE READ"], "postgres": ["READ COMMITTED"]}.get(
        backend.kind, [None]
    )
    out: dict[str, Any] = {}
    for k in cfg["ks"]:
        tasks = cfg["tasks_per_k"][k]
        for workers in cfg["workers"]:
            per_iso = {
                iso or "serial": measure(backend, table, k, iso, tasks, workers, cfg) for iso in isolations
            }
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


def measure(
    backend: Backend, table: str, k: int, iso: str | None, tasks: int, workers: int, cfg: dict[str, Any]
) -> dict[str, Any]:
    """``repeat`` drains of ``tasks`` rows by ``workers`` drainers: rates, retries, and any tasks a
    drain missed (``missed``: none unless the drain itself is broken)."""
    samples: list[float] = []
    totals = {"lease_retries": 0, "finish_retries": 0, "missed": 0}
    for _ in range(cfg["repeat"]):
        backend.truncate(table)
        backend.load(table, tasks)
        res = run_clients(drain, [(backend, table, k, iso) for _ in range(workers)])
        rate, count, _ = throughput(res)
        samples.append(rate)
        totals["missed"] += tasks - count
        for key in ("lease_retries", "finish_retries"):
            totals[key] += sum(r[key] for r in res)
    return {
        **summarize(samples),
        "deadlock_retries": totals["lease_retries"] + totals["finish_retries"],
        **totals,
    }
