"""CONTRACT.md §4 under load: real service replicas, real client processes, both backends.

Two ``perfectqueue serve`` processes share one database and table (for SQLite, one file that
every process opens); eight client processes poll, hold and finish tasks through both replicas.
Afterwards the recorded deliveries must show no double lease, nothing lost, every task finished,
``max_running`` never exceeded, and one stored task per submitted id.
"""

from __future__ import annotations

import threading
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from concurrency_workers import capped, drain, run_processes, submit_all
from conftest import backend_of
from servers import running_services, write_config

from perfectqueue.service.store import Database

pytestmark = pytest.mark.slow

POLLERS = 8
# MariaDB and PostgreSQL drain 5,000 tasks in about 15 s here (2 cores); SQLite serialises every
# write on one file lock shared by all processes, so it gets fewer tasks to stay within the time budget.
TASKS = {"mysql": 5000, "postgres": 5000, "sqlite": 2000}
NONE = {"waiting": 0, "leased": 0, "scheduled": 0, "dead": 0, "cancelled": 0}
"""The counts of a queue whose every task finished, less the finished count."""
backend = backend_of


def submit_tasks(base: str, tasks: list[dict[str, Any]]) -> None:
    with httpx.Client(timeout=60) as client:
        for i in range(0, len(tasks), 1000):
            response = client.post(f"{base}/v1/queues/q/submit-batch", json={"tasks": tasks[i : i + 1000]})
            assert response.status_code == 200, response.text
            assert response.json()["failed"] == []


def queue_counts(base: str) -> dict[str, int]:
    response = httpx.get(f"{base}/v1/queues/q", timeout=30)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["capped"] == [], "these tests stay below the count limit"
    return {key: body[key] for key in ("name", *NONE, "finished")}


def unfinished_rows(db: Database, table: str) -> tuple[int, int]:
    """(rows, rows not finished) straight from the table."""
    with db.engine.connect() as conn:
        total = conn.execute(sa.text(f"SELECT COUNT(*) FROM {table}")).scalar_one()
        open_ = conn.execute(
            sa.text(f"SELECT COUNT(*) FROM {table} WHERE created_at IS NOT NULL")
        ).scalar_one()
    return total, open_


def assert_each_delivered_once(ids: list[str], deliveries: list[tuple[int, str, str]]) -> None:
    """``deliveries``: (poller, id, lease). Every id exactly once, to one poller, nothing else."""
    by_id: dict[str, list[tuple[int, str]]] = defaultdict(list)
    for poller, task_id, lease in deliveries:
        by_id[task_id].append((poller, lease))
    twice = {task_id: got for task_id, got in by_id.items() if len(got) > 1}
    assert not twice, (
        f"{len(twice)} tasks delivered more than once (poller, lease): {list(twice.items())[:5]}"
    )
    missing = set(ids) - set(by_id)
    assert not missing, f"{len(missing)} tasks never delivered, e.g. {sorted(missing)[:5]}"
    unknown = set(by_id) - set(ids)
    assert not unknown, f"delivered tasks that were never submitted: {sorted(unknown)[:5]}"


# -- 1. no double lease, nothing lost ----------------------------------------------------------


ACQUISITIONS = {  # the settings of each acquisition path
    "fair": {},  # on MariaDB and PostgreSQL: the table's lock (the default)
    "fair-user-locks": {"fair_lock": "user"},  # a lock per user served (none for tasks without a user)
    "oldest-first": {"disable_resource_limit": True},  # row locks with SKIP LOCKED, in parallel
}
FAIR_LOCKS = ["table", "user"]


@pytest.mark.parametrize("path", ACQUISITIONS)
def test_no_double_lease_and_nothing_lost_across_replicas(
    database: Database, db_url: str, table_name: str, tmp_path: Path, path: str
) -> None:
    """8 poller processes x 2 replicas drain the queue: each task delivered once and finished,
    by each acquisition path."""
    n = TASKS[backend(database)]
    config = write_config(tmp_path / "pq.yml", db_url, table_name, **ACQUISITIONS[path])
    ids = [f"task-{i:05d}" for i in range(n)]
    with running_services(config, tmp_path) as bases:
        submit_tasks(bases[0], [{"id": i, "type": "work", "data": {"n": i}} for i in ids])
        assert queue_counts(bases[1])["waiting"] == n

        started = time.monotonic()
        results = run_processes(drain, [(bases[i % 2 :] + bases[: i % 2], i) for i in range(POLLERS)], 100)
        elapsed = time.monotonic() - started
        counts = queue_counts(bases[0])

    polls = sum(r["polls"] for r in results)
    print(
        f"\n[{backend(database)}, {path}] {n} tasks, {POLLERS} pollers, 2 replicas: {elapsed:.1f} s, "
        f"{n / elapsed:.0f} tasks/s, {polls} polls"
    )
    deliveries = [(p, task_id, lease) for p, r in enumerate(results) for task_id, lease in r["received"]]
    assert_each_delivered_once(ids, deliveries)
    failures = [f for r in results for f in r["failures"]]
    assert not failures, failures[:5]
    assert counts == {"name": "q", **NONE, "finished": n}
    assert unfinished_rows(database, table_name) == (n, 0)


# -- 2. max_running is never exceeded ------------------------------------------------------------

CAPS = {f"user-{i}": cap for i, cap in enumerate([1, 2, 3, 1, 2, 3, 1, 2, 3, 2])}
TASKS_PER_SLOT = 40  # a user with max_running k gets 40 k tasks
UNLIMITED = 100  # tasks without a user, mixed in


class RunningSampler(threading.Thread):
    """Reads the running count of each user from the table, as often as it can, until stopped."""

    def __init__(self, db: Database, table: str) -> None:
        super().__init__(daemon=True)
        t = sa.table(table, sa.column("resource"), sa.column("created_at"), sa.column("timeout"))
        self.query = (
            sa.select(t.c.resource, sa.func.count())
            .where(t.c.created_at.is_not(None), t.c.timeout > db.now(), t.c.resource.is_not(None))
            .group_by(t.c.resource)
        )
        self.db = db
        self.stop = threading.Event()
        self.highest: dict[str, int] = defaultdict(int)
        self.samples = 0
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            with self.db.engine.connect() as conn:
                while not self.stop.wait(0.005):
                    for user, running in conn.execute(self.query).all():
                        self.highest[user] = max(self.highest[user], running)
                    conn.commit()  # a fresh snapshot for the next sample
                    self.samples += 1
        except BaseException as exc:
            self.error = exc


def max_overlap(intervals: list[tuple[float, float]]) -> int:
    """The most intervals that share one instant (an end at the instant of a start: no overlap)."""
    events = sorted([(start, 1) for start, _ in intervals] + [(end, -1) for _, end in intervals])
    depth = highest = 0
    for _, step in events:
        depth += step
        highest = max(highest, depth)
    return highest


@pytest.mark.parametrize("fair_lock", FAIR_LOCKS)
def test_max_running_is_never_exceeded_across_replicas(
    database: Database, db_url: str, table_name: str, tmp_path: Path, fair_lock: str
) -> None:
    """8 poller processes hold tasks of 10 users with max_running 1..3: no user ever runs more,
    whether acquisitions lock the users they serve or the table.

    Each poller's interval for a task runs from after the poll answered to before the finish
    was sent, so it lies inside the real lease: overlapping intervals above a user's cap are a
    real violation, never an artefact of the measurement.
    """
    config = write_config(tmp_path / "pq.yml", db_url, table_name, fair_lock=fair_lock)
    tasks: list[dict[str, Any]] = []
    for k in range(TASKS_PER_SLOT * 3):  # round-robin over users, so their tasks interleave
        for user, cap in CAPS.items():
            if k < TASKS_PER_SLOT * cap:
                tasks.append({"id": f"{user}-{k}", "type": "w", "user": user, "max_running": cap})
        if k < UNLIMITED:
            tasks.append({"id": f"free-{k}", "type": "w"})
    ids = [t["id"] for t in tasks]

    with running_services(config, tmp_path) as bases:
        submit_tasks(bases[1], tasks)
        sampler = RunningSampler(database, table_name)
        sampler.start()
        started = time.monotonic()
        try:
            results = run_processes(
                capped, [(bases[i % 2 :] + bases[: i % 2], 100 + i) for i in range(POLLERS)], 100
            )
        finally:
            sampler.stop.set()
            sampler.join(10)
        elapsed = time.monotonic() - started
        counts = queue_counts(bases[0])

    intervals = [(p, *interval) for p, r in enumerate(results) for interval in r["intervals"]]
    per_user: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for _, user, _, _, start, end in intervals:
        assert start <= end
        if user is not None:
            per_user[user].append((start, end))
    overlaps = {user: max_overlap(spans) for user, spans in per_user.items()}
    print(
        f"\n[{backend(database)}] {len(ids)} capped tasks in {elapsed:.1f} s ({len(ids) / elapsed:.0f}/s); "
        f"most running at once per user (cap): "
        + ", ".join(f"{u}={overlaps[u]}({c})" for u, c in CAPS.items())
        + f"; sampler: {sampler.samples} samples, highest {dict(sampler.highest)}"
    )
    assert_each_delivered_once(ids, [(p, task_id, lease) for p, _, task_id, lease, _, _ in intervals])
    failures = [f for r in results for f in r["failures"]]
    assert not failures, failures[:5]
    over = {u: (overlaps[u], cap) for u, cap in CAPS.items() if overlaps[u] > cap}
    assert not over, f"max_running exceeded (held at once, cap): {over}"
    assert max(overlaps.values()) >= 2, "the pollers never ran two tasks of a user at once: no real load"
    assert sampler.error is None, sampler.error
    assert sampler.samples > 0
    sampled_over = {u: n for u, n in sampler.highest.items() if n > CAPS[u]}
    assert not sampled_over, f"the table showed more running tasks than max_running: {sampled_over}"
    assert counts == {"name": "q", **NONE, "finished": len(ids)}


BACKLOG = {"mysql": 800, "postgres": 800, "sqlite": 600}
"""The large user's tasks, in the newcomer's test."""


@pytest.mark.parametrize("fair_lock", FAIR_LOCKS)
def test_a_new_users_first_task_is_not_starved_behind_a_large_users_backlog(
    database: Database, db_url: str, table_name: str, tmp_path: Path, fair_lock: str
) -> None:
    """8 poller processes drain one user's large backlog (max_running 8) through 2 replicas; a
    new user's first task, submitted once the drain is under way, starts while most of the
    backlog still waits: weighed 1 / (0 + 1), it goes before the large user as soon as that user
    runs 8 (8 / 9), and an acquisition serving the large user (holding its lock) leaves the new
    user's to another."""
    n = BACKLOG[backend(database)]
    config = write_config(tmp_path / "pq.yml", db_url, table_name, fair_lock=fair_lock)
    with running_services(config, tmp_path) as bases:
        submit_tasks(
            bases[0], [{"id": f"big-{i}", "type": "w", "user": "big", "max_running": 8} for i in range(n)]
        )
        results: list[dict[str, Any]] = []
        drain = threading.Thread(
            target=lambda: results.extend(
                run_processes(
                    capped, [(bases[i % 2 :] + bases[: i % 2], 300 + i) for i in range(POLLERS)], 100
                )
            )
        )
        drain.start()
        deadline = time.monotonic() + 60
        while queue_counts(bases[1])["finished"] < n // 20 and time.monotonic() < deadline:
            time.sleep(0.01)
        submitted = time.monotonic()
        submit_tasks(bases[1], [{"id": "newcomer", "type": "w", "user": "new", "max_running": 1}])
        drain.join(120)
        assert not drain.is_alive()
    starts = {task_id: start for r in results for _, task_id, _, start, _ in r["intervals"]}
    assert len(starts) == n + 1
    after = sum(1 for task_id, start in starts.items() if start > starts["newcomer"])
    print(
        f"\n[{backend(database)}, {fair_lock}] newcomer started {starts['newcomer'] - submitted:.3f} s after "
        f"its submit; {after} of {n} backlog tasks started after it"
    )
    assert after >= n // 2, "the newcomer waited behind most of the backlog"


# -- 4. idempotent submit under concurrent duplicates ---------------------------------------------


def test_concurrent_duplicate_submits_store_one_task_each(
    database: Database, db_url: str, table_name: str, tmp_path: Path
) -> None:
    """8 processes submit the same 200 ids through both replicas, each id (100 one request each,
    then 100 in batches of 10) by all processes at the same moment: each id is created exactly
    once, every other attempt is already_exists, and the stored task is the one whose submit
    succeeded."""
    config = write_config(tmp_path / "pq.yml", db_url, table_name)
    singles = [f"one-{i:03d}" for i in range(100)]
    batched = [f"batch-{i:03d}" for i in range(100)]
    ids = singles + batched
    with running_services(config, tmp_path) as bases:
        args = [(bases, i, singles, batched, 10) for i in range(POLLERS)]
        results = run_processes(submit_all, args, 100, barrier=True)
        listed = httpx.get(
            f"{bases[0]}/v1/queues/q/tasks", params={"limit": 1000, "include": "data"}, timeout=30
        )

    winners: dict[str, list[int]] = defaultdict(list)
    for index, result in enumerate(results):
        outcomes = result["outcomes"]
        assert sorted(outcomes) == sorted(ids), f"process {index} has no outcome for some ids"
        odd = {i: o for i, o in outcomes.items() if o not in ("created", "already_exists")}
        assert not odd, f"process {index}: unexpected outcomes {list(odd.items())[:5]}"
        for task_id, outcome in outcomes.items():
            if outcome == "created":
                winners[task_id].append(index)
    not_once = {i: winners.get(i, []) for i in ids if len(winners.get(i, [])) != 1}
    assert not not_once, f"ids not created exactly once (by processes): {list(not_once.items())[:5]}"
    print(
        f"\n[{backend(database)}] created by process, one by one: "
        f"{sorted(Counter(winners[i][0] for i in singles).items())}, "
        f"in batches: {sorted(Counter(winners[i][0] for i in batched).items())}"
    )

    assert listed.status_code == 200, listed.text
    stored = {t["id"]: t["data"]["by"] for t in listed.json()["tasks"]}
    assert sorted(stored) == sorted(ids)
    assert stored == {i: winners[i][0] for i in ids}, "a stored task is not the one whose submit succeeded"
    assert unfinished_rows(database, table_name) == (200, 200)
