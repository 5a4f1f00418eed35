"""The dashboard with a big queue: bulk-load a table, then time every API call the pages make.

    python -m bench.ui                        # 1,000,000 waiting tasks on MariaDB at 127.0.0.1
    python -m bench.ui --tasks 20000 --backend sqlite

The table gets ``--tasks`` waiting tasks of ``--users`` users, a tenth as many retained finished
ones, and a few hundred leased by polls; then each call is repeated and its median, p90 and max
latency (ms, over HTTP, one client) are printed as a Markdown table and written as JSON.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from perfectqueue.service.store import Database, QueueStore
from perfectqueue.service.store.listing import encode_cursor

from .common import Backend, services


def timed(http: httpx.Client, url: str, repeat: int) -> dict[str, Any]:
    samples, rows = [], 0
    for _ in range(repeat):
        start = time.perf_counter()
        response = http.get(url)
        samples.append((time.perf_counter() - start) * 1000)
        response.raise_for_status()
        body = response.json()
        rows = len(body.get("tasks", body.get("users", body.get("queues", [body]))))
    samples.sort()
    return {
        "median_ms": round(statistics.median(samples), 1),
        "p90_ms": round(samples[int(0.9 * (len(samples) - 1))], 1),
        "max_ms": round(samples[-1], 1),
        "items": rows,
    }


def calls(queue: str, middle: str, middle_timeout: int) -> dict[str, str]:
    """What the pages ask, each as its own row: overview, queue page (users, first and a later
    page of every filter), task page. A "later" page starts at the middle of the table."""
    by_id = encode_cursor(middle)
    by_time = encode_cursor((middle_timeout, middle))
    base = queue.rsplit("/v1/", 1)[0]
    return {
        "overview (all queues: counts, oldest, throughput)": f"{base}/v1/overview",
        "queue page: users": f"{queue}/users",
        "tasks, first page": f"{queue}/tasks?limit=50",
        "tasks, later page": f"{queue}/tasks?limit=50&cursor={by_id}",
        "tasks, status=waiting, first page": f"{queue}/tasks?limit=50&order=due&status=waiting",
        "tasks, status=waiting, later page": (
            f"{queue}/tasks?limit=50&order=due&status=waiting&cursor={by_time}"
        ),
        "tasks, running (leased)": f"{queue}/tasks?limit=50&order=due&status=running&leased=true",
        "tasks, scheduled (none)": f"{queue}/tasks?limit=50&order=due&status=running&leased=false",
        "tasks, status=finished": f"{queue}/tasks?limit=50&order=due&status=finished",
        "tasks, user=u7, first page": f"{queue}/tasks?limit=50&order=due&user=u7",
        "tasks, user=u7 waiting, later page": (
            f"{queue}/tasks?limit=50&order=due&user=u7&status=waiting&cursor={by_time}"
        ),
        "tasks, id prefix w12345": f"{queue}/tasks?limit=50&prefix=w12345",
        "tasks, id prefix, later page": f"{queue}/tasks?limit=50&prefix=w5&cursor={by_id}",
        "tasks, type=bench (every row matches)": f"{queue}/tasks?limit=50&type=bench",
        "tasks, type=nothing (bounded scan)": f"{queue}/tasks?limit=50&type=nothing",
        "task page: get": f"{queue}/tasks/{middle}",
    }


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.ui", description=__doc__)
    parser.add_argument("--backend", default="mysql", choices=["mysql", "sqlite"])
    parser.add_argument("--mysql-url", default="mysql://root@127.0.0.1:3306/test")
    parser.add_argument("--tasks", type=int, default=1_000_000)
    parser.add_argument("--users", type=int, default=100)
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--out", default="bench-results")
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="pq-bench-ui-"))
    backend = Backend.create(args.backend, workdir, args.mysql_url)
    table = "bench_ui"
    db = Database(backend.url)
    backend.execute(f"DROP TABLE IF EXISTS {table}")
    QueueStore(db, table).init()  # the service's own table, with every column it has
    load = backend.load(table, args.tasks, users=args.users, max_running=5)
    load += backend.load(table, args.tasks // 10, prefix="f", state="finished")
    print(f"loaded {args.tasks} waiting + {args.tasks // 10} finished rows in {load:.1f} s")
    middle = f"w{args.tasks // 2}"
    (middle_timeout,) = backend.execute(f"SELECT timeout FROM {table} WHERE id = '{middle}'")[0]
    results: dict[str, Any] = {"backend": args.backend, "tasks": args.tasks, "load_seconds": round(load, 1)}
    try:
        with services(backend, table, 1) as (svc,), httpx.Client(timeout=120) as http:
            for _ in range(3):  # some running tasks (fair acquisition over the users)
                http.post(svc.queue + "/poll", json={"max": 100, "alive_time": 3600}).raise_for_status()
            rows = {
                name: timed(http, url, args.repeat)
                for name, url in calls(svc.queue, middle, middle_timeout).items()
            }
    finally:
        backend.execute(f"DROP TABLE IF EXISTS {table}")
        db.dispose()
    results["calls"] = rows
    out = Path(args.out)
    out.mkdir(exist_ok=True)
    (out / f"ui-{args.backend}.json").write_text(json.dumps(results, indent=2))
    print(f"\n| call ({args.tasks:,} waiting tasks, {args.backend}) | median ms | p90 ms | max ms | items |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for name, row in rows.items():
        print(f"| {name} | {row['median_ms']} | {row['p90_ms']} | {row['max_ms']} | {row['items']} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
