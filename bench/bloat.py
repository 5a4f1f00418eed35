"""Bloat on PostgreSQL: table and index sizes over a long run of submits, finishes and cleanups.

A finished task is an update in place (its row stays for the retention time, then cleanup deletes
it), and on PostgreSQL every update writes a new row version and, as ``timeout`` is indexed, new
index entries; the old ones are dead until (auto)vacuum reclaims them. Each case runs the same
cycle on a fresh table with other storage parameters: rounds of ``bloat_round`` tasks loaded
waiting, drained (leased and finished, k per transaction, by the ceiling's statements, retained
``bloat_retention`` seconds) and cleaned up, until ``bloat_tasks`` have gone through; after every
round it samples the table's and its indexes' sizes and ``pg_stat_user_tables``' dead rows and
vacuums, and the round's drain rate (flat or falling as the table grows).
"""

from __future__ import annotations

import time
from typing import Any

from .ceiling import drain
from .common import CLOCK, DELETE_OFFSET, Backend, run_clients, throughput

CASES = {
    "default": "",
    "fillfactor 80": "fillfactor = 80",
    "autovacuum at 1 %": "autovacuum_vacuum_scale_factor = 0.01, autovacuum_vacuum_threshold = 1000",
    "fillfactor 80, autovacuum at 1 %": (
        "fillfactor = 80, autovacuum_vacuum_scale_factor = 0.01, autovacuum_vacuum_threshold = 1000"
    ),
}


def run(backend: Backend, cfg: dict[str, Any]) -> dict[str, Any]:
    if backend.kind != "postgres":
        return {"skipped": "PostgreSQL only (MariaDB's InnoDB purges old row versions itself)"}
    table = f"{cfg['table_prefix']}_bloat"
    out: dict[str, Any] = {"autovacuum": backend.execute("SHOW autovacuum")[0][0]}
    for name, params in CASES.items():
        backend.create_table(table)
        if params:
            backend.execute(f"ALTER TABLE {table} SET ({params})")
        out[name] = {"storage_parameters": params or None, **cycle(backend, table, cfg)}
    return out


def cycle(backend: Backend, table: str, cfg: dict[str, Any]) -> dict[str, Any]:
    """Rounds until ``bloat_tasks`` have gone through; the samples and their summary."""
    per_round, workers, k = cfg["bloat_round"], max(cfg["workers"]), cfg["bloat_k"]
    samples: list[dict[str, Any]] = []
    start = time.monotonic()
    for done in range(0, cfg["bloat_tasks"], per_round):
        backend.load(table, per_round, prefix=f"r{done}-")
        args = [(backend, table, k, "READ COMMITTED", cfg["bloat_retention"]) for _ in range(workers)]
        rate, count, _ = throughput(run_clients(drain, args))
        assert count == per_round, (count, per_round)
        deleted = cleanup(backend, table)
        samples.append(
            {
                "tasks": done + per_round,
                "drain_per_s": round(rate),
                "deleted": deleted,
                **sizes(backend, table),
            }
        )
    first, last = samples[: max(1, len(samples) // 4)], samples[-max(1, len(samples) // 4) :]
    mean = lambda rows, key: sum(r[key] for r in rows) / len(rows)  # noqa: E731
    return {
        "tasks": cfg["bloat_tasks"],
        "seconds": round(time.monotonic() - start, 1),
        "drain_first_quarter_per_s": round(mean(first, "drain_per_s")),
        "drain_last_quarter_per_s": round(mean(last, "drain_per_s")),
        "peak_total_mb": max(s["total_mb"] for s in samples),
        "final": samples[-1],
        "peak_dead_rows": max(s["dead_rows"] for s in samples),
        "samples": samples,
    }


def cleanup(backend: Backend, table: str) -> int:
    """Delete the finished rows past their retention, as the service's cleanup does; how many."""
    rows = backend.execute(
        f"WITH gone AS (DELETE FROM {table} WHERE timeout <= {CLOCK['postgres']} - {DELETE_OFFSET}"
        " RETURNING 1) SELECT COUNT(*) FROM gone"
    )
    return int(rows[0][0])


def sizes(backend: Backend, table: str) -> dict[str, Any]:
    """The table's sizes in MB (heap, each index, all with TOAST), its rows live and dead, and how
    often (auto)vacuum has run on it."""
    mb = lambda size: round(size / 2**20, 2)  # noqa: E731
    total, heap = backend.execute(f"SELECT pg_total_relation_size('{table}'), pg_relation_size('{table}')")[0]
    indexes = backend.execute(
        "SELECT indexrelname, pg_relation_size(indexrelid) FROM pg_stat_user_indexes WHERE relname = %s",
        (table,),
    )
    live, dead, vacuums, hot, updates = backend.execute(
        "SELECT n_live_tup, n_dead_tup, vacuum_count + autovacuum_count, n_tup_hot_upd, n_tup_upd"
        " FROM pg_stat_user_tables WHERE relname = %s",
        (table,),
    )[0]
    return {
        "total_mb": mb(total),
        "heap_mb": mb(heap),
        "indexes_mb": {name.removeprefix(f"index_{table}_on_"): mb(size) for name, size in indexes},
        "live_rows": live,
        "dead_rows": dead,
        "vacuums": vacuums,
        "hot_update_pct": round(100 * hot / updates, 1) if updates else 0.0,
    }
