"""``python -m bench``: run the scenarios, print a table, write results JSON (and a plot)."""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path
from typing import Any

from . import bloat, ceiling, fair, latency, memory, peer, profile, scale, service, sqs, worker
from .common import CLIENTS, Backend

SCENARIOS = {
    "ceiling": ceiling.run,
    "service": service.run,
    "latency": latency.run,
    "fair": fair.run,
    "memory": memory.run,
    "scale": scale.run,
    "profile": profile.run,
    "worker": worker.run,
    "sqs": sqs.run,
    "bloat": bloat.run,
    "procrastinate": peer.run,
}
DEFAULT = "ceiling,service,latency,fair,memory,scale,profile,worker,sqs"
MYSQL_SQL = {"sqs"}
"""Scenarios whose direct SQL is written for MariaDB and SQLite only (not yet for PostgreSQL)."""


def config(smoke: bool, repeat: int, workers: list[int]) -> dict[str, Any]:
    """The sizes of every scenario; ``smoke`` makes them tiny (seconds, for CI)."""
    if smoke:
        return {
            "repeat": 1,
            "workers": [2],
            "ks": [1, 10],
            "tasks_per_k": {1: 40, 10: 100, 100: 200},
            "service_counts": [1],
            "batch_ks": [10],
            "service_tasks": {"single": 20, "batch k=10": 40, "batch k=100": 200},
            "submit_batches": [1000],
            "submit_tasks": 2000,
            "pollers": 2,
            "latency_tasks": 5,
            "latency_gap": 0.01,
            "fair_users": [(3, 2)],
            "fair_backlogs": [60],
            "fair_tasks": 20,
            "fair_k": 10,
            "fair_limit_s": 10,
            "idle_polls": 20,
            "idle_wait": 5,
            "idle_settle": 0.5,
            "scale_small": 100,
            "scale_big": 500,
            "scale_latency_ops": 5,
            "scale_drain": 20,
            "cleanup_batch": 100,
            "profile_k": 10,
            "profile_tasks": 40,
            "processors": [1],
            "worker_tasks": 20,
            "worker_slow_tasks": 10,
            "worker_prefetch": 10,
            "worker_concurrency": 10,
            "worker_clients": 2,
            "worker_limit_s": 20,
            "sqs_tasks": 200,
            "bloat_tasks": 400,
            "bloat_round": 200,
            "bloat_k": 10,
            "bloat_retention": 0,
            "peer_tasks": 50,
            "peer_concurrency": 10,
        }
    return {
        "repeat": repeat,
        "workers": workers,
        "ks": [1, 10, 100],
        "tasks_per_k": {1: 3000, 10: 10_000, 100: 30_000},
        "service_counts": [1, 2],
        "batch_ks": [10, 100],
        "service_tasks": {"single": 2000, "batch k=10": 10_000, "batch k=100": 20_000},
        "submit_batches": [1000],
        "submit_tasks": 40_000,
        "pollers": 4,
        "latency_tasks": 200,
        "latency_gap": 0.02,
        "fair_users": [(10, 2), (1000, 1)],
        "fair_backlogs": [20_000, 1_000_000],  # MariaDB; SQLite runs the first only
        "fair_tasks": 2000,
        "fair_k": 10,
        "fair_limit_s": 15,
        "idle_polls": 1000,
        "idle_wait": 30,
        "idle_settle": 3,
        "scale_small": 10_000,
        "scale_big": 1_000_000,
        "scale_latency_ops": 300,
        "scale_drain": 2000,
        "cleanup_batch": 1000,
        "profile_k": 10,
        "profile_tasks": 20_000,
        "processors": [1, 2, 4],
        "worker_tasks": 10_000,
        "worker_slow_tasks": 2000,
        "worker_prefetch": 100,
        "worker_concurrency": 100,
        "worker_clients": 4,
        "worker_limit_s": 120,
        "sqs_tasks": 10_000,
        "bloat_tasks": 300_000,
        "bloat_round": 10_000,
        "bloat_k": 10,
        "bloat_retention": 10,
        "peer_tasks": 5000,
        "peer_concurrency": 10,
    }


def machine() -> dict[str, Any]:
    mem_kb = next(
        int(line.split()[1])
        for line in Path("/proc/meminfo").read_text().splitlines()
        if line.startswith("MemTotal")
    )
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    versions = {}
    for pkg in ("fastapi", "uvicorn", "sqlalchemy", "pymysql", "httpx", "pydantic"):
        try:
            versions[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            versions[pkg] = None
    return {
        "cpus": os.cpu_count(),
        "cpu_model": cpu,
        "memory_gib": round(mem_kb / 1024 / 1024, 1),
        "python": platform.python_version(),
        "kernel": platform.release(),
        **versions,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--scenarios", default=DEFAULT, help=f"comma-separated (default: {DEFAULT})")
    parser.add_argument("--backend", default="mysql", help="mysql, postgres, sqlite (comma-separated)")
    parser.add_argument(
        "--mysql-url",
        default=os.environ.get("PERFECTQUEUE_TEST_MYSQL_URL", "mysql://root@127.0.0.1:3306/test"),
    )
    parser.add_argument(
        "--postgres-url",
        default=os.environ.get("PERFECTQUEUE_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"),
    )
    parser.add_argument(
        "--latency-replicas",
        type=int,
        default=1,
        help="the latency scenario's replicas: with 2, polls wait on one, tasks come through the other",
    )
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--workers", default="1,2,4", help="client processes, comma-separated")
    parser.add_argument(
        "--variants",
        default="coalesced",
        help="service variants for the service scenario, interleaved: coalesced,uncoalesced",
    )
    parser.add_argument(
        "--service-fair",
        default="off",
        help="the service scenario's fair scheduling, comma-separated: off,on runs every case both ways",
    )
    parser.add_argument(
        "--client",
        default="raw",
        choices=CLIENTS,
        help="the client processes' HTTP client: raw (http.client, the leanest) or httpx (as the SDK)",
    )
    parser.add_argument(
        "--fair-backlogs",
        help="the fair scenario's backlogs, comma-separated (default 20000,1000000; SQLite the first)",
    )
    parser.add_argument("--fair-services", type=int, default=1, help="the fair scenario's service processes")
    parser.add_argument(
        "--fair-users",
        help="the fair scenario's users x max_running, comma-separated (default 10x2,1000x1)",
    )
    for setting in ("pool_size", "pool_overflow"):
        parser.add_argument(
            "--" + setting.replace("_", "-"),
            type=int,
            help=f"the service scenario's services' {setting} (default: the service's own)",
        )
    parser.add_argument(
        "--bloat-tasks", type=int, help="the bloat scenario's tasks per case (default 300000)"
    )
    parser.add_argument("--processors", help="the worker scenario's processor counts (default 1,2,4)")
    parser.add_argument(
        "--worker-cases",
        help="the worker scenario's cases whose name starts with one of these (e.g. noop,sleep)",
    )
    parser.add_argument("--worker-tasks", type=int, help="the worker scenario's N of quick tasks")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes: checks the harness works")
    parser.add_argument("--out", default="bench-results", help="directory for results (gitignored)")
    parser.add_argument("--plot", action="store_true", help="also write a PNG (needs matplotlib)")
    parser.add_argument("--table-prefix", default="bench", help="tables are PREFIX_<scenario>, dropped after")
    args = parser.parse_args(argv)

    cfg = config(args.smoke, args.repeat, [int(w) for w in args.workers.split(",")])
    cfg["table_prefix"] = args.table_prefix
    cfg["variants"] = args.variants.split(",")
    cfg["client"] = args.client
    cfg["service_fair"] = [{"on": True, "off": False}[f] for f in args.service_fair.split(",")]
    cfg["latency_replicas"] = args.latency_replicas
    pool = {"pool_size": args.pool_size, "pool_overflow": args.pool_overflow}
    cfg["service_settings"] = {name: value for name, value in pool.items() if value is not None}
    if args.processors:
        cfg["processors"] = [int(p) for p in args.processors.split(",")]
    cfg["worker_cases"] = args.worker_cases.split(",") if args.worker_cases else [""]
    if args.bloat_tasks:
        cfg["bloat_tasks"] = args.bloat_tasks
    if args.worker_tasks:
        cfg["worker_tasks"] = args.worker_tasks
    cfg["fair_services"] = args.fair_services
    if args.fair_users:
        cfg["fair_users"] = [tuple(int(n) for n in pair.split("x")) for pair in args.fair_users.split(",")]
    if args.fair_backlogs:
        cfg["fair_backlogs"] = [int(b) for b in args.fair_backlogs.split(",")]
    outdir = Path(args.out)
    outdir.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    wrote = []
    for kind in args.backend.split(","):
        with tempfile.TemporaryDirectory(prefix="pqbench-") as tmp:
            backend = Backend.create(kind, Path(tmp), args.mysql_url, args.postgres_url)
            if kind in ("mysql", "postgres"):
                machine_info = {**machine(), "database": backend.execute("SELECT VERSION()")[0][0]}
            else:
                import sqlite3

                machine_info = {**machine(), "database": f"SQLite {sqlite3.sqlite_version}"}
            results: dict[str, Any] = {
                "command": "python -m bench " + " ".join(argv if argv is not None else sys.argv[1:]),
                "backend": kind,
                "smoke": args.smoke,
                "started": stamp,
                "machine": machine_info,
                "config": {
                    k: (v if not isinstance(v, dict) else {str(a): b for a, b in v.items()})
                    for k, v in cfg.items()
                },
                "scenarios": {},
            }
            for name in args.scenarios.split(","):
                if kind == "sqlite" and name in ("scale",) and not args.smoke:
                    results["scenarios"][name] = {"skipped": "MariaDB only outside smoke mode"}
                    continue
                if kind == "postgres" and name in MYSQL_SQL:
                    results["scenarios"][name] = {"skipped": "its direct SQL is MariaDB's and SQLite's"}
                    continue
                t0 = time.perf_counter()
                print(f"[{kind}] {name} ...", file=sys.stderr, flush=True)
                results["scenarios"][name] = SCENARIOS[name](backend, cfg)
                results["scenarios"][name]["_seconds"] = round(time.perf_counter() - t0, 1)
                backend.execute(f"DROP TABLE IF EXISTS {args.table_prefix}_{name}")
                path = outdir / f"{stamp}-{kind}.json"
                path.write_text(json.dumps(results, indent=2))
            wrote.append(path)
            print(json.dumps(results["scenarios"], indent=1))
    if args.plot:
        from .plot import plot

        for path in wrote:
            plot(path, path.with_suffix(".png"))
    print("results:", *map(str, wrote), file=sys.stderr)
    return 0
