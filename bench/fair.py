"""Fair scheduling: throughput with users' max_running caps, against fair off; caps never exceeded."""

from __future__ import annotations

import statistics
import threading
import time
from typing import Any

from .common import CLOCK, HORIZON, Backend, metric_sums, run_clients, services, summarize, throughput
from .service import drain

LOCK_METRICS = {
    "perfectqueue_acquire_lock_held_seconds_sum": "held",
    "perfectqueue_acquire_lock_held_seconds_count": "acquisitions",
    "perfectqueue_acquire_lock_wait_seconds_sum": "waited",
    "perfectqueue_tasks_acquired_total": "tasks",
}

MODES: dict[str, dict[str, Any]] = {
    "on": {},  # the table's lock, the default
    "on, user locks": {"fair_lock": "user"},  # each acquisition locks the users it serves
    "off": {"disable_resource_limit": True},
}


class CapWatch(threading.Thread):
    """Samples the running count of every user from the table while the clients work."""

    def __init__(self, backend: Backend, table: str) -> None:
        super().__init__(daemon=True)
        self.backend, self.table = backend, table
        self.stop = threading.Event()
        self.peak: dict[str, int] = {}
        self.samples = 0

    def run(self) -> None:
        conn = self.backend.connect("READ COMMITTED")
        now = CLOCK[self.backend.kind]
        sql = (
            f"SELECT resource, COUNT(*) FROM {self.table} WHERE timeout > {now} AND timeout > {HORIZON}"
            " AND created_at IS NOT NULL AND resource IS NOT NULL GROUP BY resource"
        )
        while not self.stop.is_set():
            cur = conn.cursor()
            cur.execute(sql)
            for user, count in cur.fetchall():
                self.peak[user] = max(self.peak.get(user, 0), int(count))
            conn.commit()
            self.samples += 1
            time.sleep(0.02)
        conn.close()


def run(backend: Backend, cfg: dict[str, Any]) -> dict[str, Any]:
    table = f"{cfg['table_prefix']}_fair"
    backend.create_table(table)
    out: dict[str, Any] = {}
    workers, k = max(cfg["workers"]), cfg["fair_k"]
    backlogs = cfg["fair_backlogs"] if backend.kind != "sqlite" else cfg["fair_backlogs"][:1]
    for backlog in backlogs:
        out.update(_cases(backend, table, cfg, backlog, workers, k))
    return out


def _cases(
    backend: Backend, table: str, cfg: dict[str, Any], backlog: int, workers: int, k: int
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    modes = {mode: how for mode, how in MODES.items() if backend.kind != "sqlite" or "lock" not in mode}
    for users, cap in cfg["fair_users"]:
        for mode, settings in modes.items():
            fair_on = mode != "off"
            with services(backend, table, cfg.get("fair_services", 1), **settings) as svcs:
                samples: list[float] = []
                runs: list[dict[str, float] | None] = []
                peak: dict[str, int] = {}
                for _ in range(cfg["repeat"]):
                    backend.truncate(table)
                    backend.load(table, backlog, users=users, max_running=cap)
                    watch = CapWatch(backend, table)
                    watch.start()
                    quota = cfg["fair_tasks"] // workers
                    before = lock_use(svcs)
                    res = run_clients(
                        drain,
                        [
                            (cfg["client"], svcs[i % len(svcs)].queue, k, True, quota, cfg["fair_limit_s"])
                            for i in range(workers)
                        ],
                    )
                    watch.stop.set()
                    watch.join()
                    rate, _, seconds = throughput(res)
                    samples.append(rate)
                    runs.append(lock_share(before, lock_use(svcs), seconds))
                    for u, c in watch.peak.items():
                        peak[u] = max(peak.get(u, 0), c)
                name = f"{users} users x max_running {cap}, fair {mode}"
                if backlog != cfg["fair_backlogs"][0]:
                    name += f", backlog {backlog:,}"
                out[name] = {
                    "users": users,
                    "max_running": cap,
                    "fair": fair_on,
                    "fair_lock": settings.get("fair_lock", "table") if fair_on else None,
                    "backlog": backlog,
                    "tasks_per_run_at_most": quota * workers,
                    "seconds_per_run_at_most": cfg["fair_limit_s"],
                    "workers": workers,
                    "services": len(svcs),
                    "k": k,
                    "tasks_per_s": summarize(samples),
                    "max_running_seen": max(peak.values(), default=0),
                    "users_over_cap": sorted(u for u, c in peak.items() if c > cap) if fair_on else None,
                    "lock": _medians(runs),
                }
    return out


def lock_use(svcs: list[Any]) -> dict[str, float]:
    """The services' own counts of their acquisitions under a lock (the table's, or users'), from
    /metrics, added up."""
    sums = [metric_sums(svc.base, LOCK_METRICS) for svc in svcs]
    return {name: sum(one[name] for one in sums) for name in sums[0]}


def lock_share(before: dict[str, float], after: dict[str, float], seconds: float) -> dict[str, float] | None:
    """How the locks were used during one run: the share of the run's time they were held (the
    users' locks' holds overlap: a share above 1 is no saturation), the mean hold and wait per
    acquisition that took one, and tasks per such acquisition; None if nothing took one."""
    used = {name: after[name] - before[name] for name in after}
    if not used["acquisitions"] or seconds <= 0:
        return None
    return {
        "held_share": round(used["held"] / seconds, 3),
        "held_ms": round(1000 * used["held"] / used["acquisitions"], 2),
        "waited_ms": round(1000 * used["waited"] / used["acquisitions"], 2),
        "tasks_per_acquisition": round(used["tasks"] / used["acquisitions"], 1),
    }


def _medians(runs: list[dict[str, float] | None]) -> dict[str, float] | None:
    measured = [run for run in runs if run is not None]
    if not measured:
        return None
    return {name: round(statistics.median(run[name] for run in measured), 3) for name in measured[0]}
