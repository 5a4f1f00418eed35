"""The service's CPU per request, by kind: one client, sequential requests, fair scheduling off.

``python -m bench.request_cpu [--backend mysql|postgres|sqlite] [--requests N] [--client raw|httpx]``
starts one ``perfectqueue serve`` (as the harness does), sends N requests of each kind one after
another from this process (``http.client``, or httpx) and prints, per kind, the wall time per
request, the service process's CPU time per request (from /proc: user + system) and this client's
own CPU time per request. A submit-batch carries 1,000
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

from .common import CLIENTS, Backend, Http, cpu_seconds, services


def measure(pid: int, count: int, call: Callable[[int], Any]) -> tuple[float, float, float]:
    """(wall ms, service CPU ms, client CPU ms) per call of ``call(i)`` for i in range(count)."""
    cpu, own, started = cpu_seconds(pid), time.process_time(), time.perf_counter()
    for i in range(count):
        call(i)
    wall, own = time.perf_counter() - started, time.process_time() - own
    return 1000 * wall / count, 1000 * (cpu_seconds(pid) - cpu) / count, 1000 * own / count


def run(backend: Backend, requests: int, client: str = "raw") -> dict[str, tuple[float, float, float]]:
    table = "bench_request_cpu"
    backend.create_table(table)
    try:
        with (
            services(backend, table, 1, disable_resource_limit=True) as (svc,),
            Http(client, svc.queue) as http,
            Http(client, svc.base) as root,
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
    parser.add_argument("--backend", default="mysql", choices=("mysql", "postgres", "sqlite"))
    parser.add_argument("--mysql-url", default="mysql://root@127.0.0.1:3306/test")
    parser.add_argument("--postgres-url", default="postgresql://postgres@127.0.0.1:5432/test")
    parser.add_argument("--requests", type=int, default=1000, help="requests of each kind")
    parser.add_argument("--client", default="raw", choices=CLIENTS, help="raw (http.client) or httpx")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="pqbench-") as tmp:
        backend = Backend.create(args.backend, Path(tmp), args.mysql_url, args.postgres_url)
        for kind, (wall, cpu, own) in run(backend, args.requests, args.client).items():
            print(f"{kind:28} wall {wall:7.2f} ms   service CPU {cpu:7.2f} ms   client CPU {own:6.2f} ms")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
