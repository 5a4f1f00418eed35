"""The service's CPU per request, by kind: one client, sequential requests, fair scheduling off.

``python -m bench.request_cpu [--backend mysql|sqlite] [--requests N]`` starts one
``perfectqueue serve`` (as the harness does), sends N requests of each kind one after another
from this process with ``http.client`` and prints, per kind, the wall time per request and the
service process's CPU time per request (from /proc: user + system). A submit-batch carries 1,000
tasks. This is the cost that bounds small calls when the clients, the service and the database
share a machine's cores.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from .common import Backend, Http, cpu_seconds, services


def measure(pid: int, count: int, call: Callable[[int], Any]) -> tuple[float, float]:
    """(wall ms, service CPU ms) per call of ``call(i)`` for i in range(count)."""
    cpu, started = cpu_seconds(pid), time.perf_counter()
    for i in range(count):
        call(i)
    wall = time.perf_counter() - started
    return 1000 * wall / count, 1000 * (cpu_seconds(pid) - cpu) / count


def run(backend: Backend, requests: int) -> dict[str, tuple[float, float]]:
    table = "bench_request_cpu"
    backend.create_table(table)
    try:
        with (
            services(backend, table, 1, disable_resource_limit=True) as (svc,),
            Http("raw", svc.queue) as http,
            Http("raw", svc.base) as root,
        ):
            pid, leases = svc.proc.pid, []
            return {
                "GET /livez": measure(pid, requests, lambda i: root.get("/livez")),
                "submit": measure(
                    pid, requests, lambda i: http.post("/submit", {"id": f"a{i}", "type": "t"})
                ),
                "poll (max=1)": measure(
                    pid,
                    requests,
                    lambda i: leases.extend(
                        http.post("/poll", {"max": 1, "alive_time": 300, "wait": 0})["tasks"]
                    ),
                ),
                "finish": measure(
                    pid,
                    requests,
                    lambda i: http.post("/finish", {"id": leases[i]["id"], "lease": leases[i]["lease"]}),
                ),
                "submit-batch (1,000 tasks)": measure(
                    pid,
                    max(1, requests // 50),
                    lambda i: http.post(
                        "/submit-batch", {"tasks": [{"id": f"b{i}-{j}", "type": "t"} for j in range(1000)]}
                    ),
                ),
            }
    finally:
        backend.execute(f"DROP TABLE IF EXISTS {table}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.request_cpu", description=__doc__)
    parser.add_argument("--backend", default="mysql", choices=("mysql", "sqlite"))
    parser.add_argument("--mysql-url", default="mysql://root@127.0.0.1:3306/test")
    parser.add_argument("--requests", type=int, default=1000, help="requests of each kind")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="pqbench-") as tmp:
        backend = Backend.create(args.backend, Path(tmp), args.mysql_url)
        for kind, (wall, cpu) in run(backend, args.requests).items():
            print(f"{kind:28} wall {wall:7.2f} ms   service CPU {cpu:7.2f} ms")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
