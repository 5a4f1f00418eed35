"""The worker runtime (``perfectqueue run``) draining N no-op tasks with P processors."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from contextlib import suppress
from typing import Any

import httpx
import yaml

from .common import Backend, run_clients, services, summarize
from .service import submit

WORKER_MODULE = """
from perfectqueue.worker import Base, Dispatch


class Noop(Base):
    def run(self):
        self.task.finish()


class Dispatcher(Dispatch):
    pass


Dispatcher.route("bench", Noop)
"""


def finished(http: httpx.Client, base: str) -> int:
    return int(http.get(base + "/v1/queues/q").json()["finished"])


def one_run(
    backend: Backend, table: str, svc: Any, tasks: int, processors: int, cfg: dict[str, Any]
) -> float:
    backend.truncate(table)
    run_clients(submit, [(cfg["client"], svc.queue, "n", tasks, 100)])
    config = backend.workdir / "worker.yaml"
    config.write_text(
        yaml.safe_dump({"url": svc.base, "queue": "q", "processors": processors, "poll_interval": 0.1})
    )
    (backend.workdir / "pqbenchworker.py").write_text(WORKER_MODULE)
    cmd = [
        sys.executable,
        "-m",
        "perfectqueue",
        "run",
        "pqbenchworker:Dispatcher",
        "-I",
        str(backend.workdir),
    ]
    with open(backend.workdir / "worker.log", "ab") as log, httpx.Client(timeout=30) as http:
        start = time.time()
        proc = subprocess.Popen(
            [*cmd, "-c", str(config)], stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        try:
            deadline = start + cfg["worker_limit_s"]
            while (done := finished(http, svc.base)) < tasks and time.time() < deadline:
                time.sleep(0.05)
            seconds = time.time() - start
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                with suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
    return done / seconds


def run(backend: Backend, cfg: dict[str, Any]) -> dict[str, Any]:
    table = f"{cfg['table_prefix']}_worker"
    backend.create_table(table)
    out: dict[str, Any] = {"note": "time from starting the worker process (startup included) to N finished"}
    with services(backend, table, 1, disable_resource_limit=True) as (svc,):
        for processors in cfg["processors"]:
            samples = [
                one_run(backend, table, svc, cfg["worker_tasks"], processors, cfg)
                for _ in range(cfg["repeat"])
            ]
            out[f"P={processors}"] = {
                "processors": processors,
                "tasks": cfg["worker_tasks"],
                "tasks_per_s": summarize(samples),
            }
    return out
