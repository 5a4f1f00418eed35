"""A py-spy profile of the service while clients drain batches (poll max=k, finish-batch)."""

from __future__ import annotations

import re
import shutil
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

from .common import Backend, run_clients, services, throughput
from .service import drain, submit


def top(collapsed: Path, n: int = 15) -> dict[str, Any]:
    """Self and inclusive sample shares per function, from py-spy's collapsed stacks."""
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for line in collapsed.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack:
            continue
        samples = int(count)
        frames = [re.sub(r":\d+\)$", ")", f) for f in stack.split(";")]  # by function, not by line
        total += samples
        own[frames[-1]] += samples
        for f in set(frames):
            inclusive[f] += samples
    share = lambda c: {f: round(100 * s / total, 1) for f, s in c.most_common(n)}  # noqa: E731
    return {"samples": total, "self_pct": share(own), "inclusive_pct": share(inclusive)}


def run(backend: Backend, cfg: dict[str, Any]) -> dict[str, Any]:
    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(spy).exists():
        return {"skipped": "py-spy is not installed (pip install py-spy)"}
    table = f"{cfg['table_prefix']}_profile"
    backend.create_table(table)
    k, workers, tasks = cfg["profile_k"], max(cfg["workers"]), cfg["profile_tasks"]
    out_file = backend.workdir / "profile.collapsed"
    with services(backend, table, 1, disable_resource_limit=True) as (svc,):
        run_clients(
            submit, [(cfg["client"], svc.queue, f"p{i}", tasks // workers, 100) for i in range(workers)]
        )
        record = subprocess.Popen(
            [
                spy,
                "record",
                "--pid",
                str(svc.proc.pid),
                "--format",
                "raw",
                "--rate",
                "200",
                "--nonblocking",
                "--output",
                str(out_file),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        res = run_clients(drain, [(cfg["client"], svc.queue, k, True) for _ in range(workers)])
        record.send_signal(signal.SIGINT)  # py-spy writes what it has on Ctrl-C
        record.wait(timeout=60)
    if not out_file.exists():
        return {"skipped": "py-spy wrote no profile (ptrace permission?)"}
    return {"k": k, "workers": workers, "tasks_per_s": round(throughput(res)[0], 1), **top(out_file)}
