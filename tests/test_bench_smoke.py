"""The benchmark harness (bench/) in its tiny smoke mode: it runs and writes the expected results.

No performance number is asserted: this only keeps the harness working.
"""

from __future__ import annotations

import importlib.util
import json
import os
import secrets
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import MYSQL_URL, POSTGRES_URL, require_mysql, require_postgres

ROOT = Path(__file__).resolve().parent.parent
SCENARIOS = ["ceiling", "service", "latency", "fair", "memory", "scale", "worker"]


def run_bench(*args: str) -> str:
    """``python -m <args>`` from the project's root; its output, once it has succeeded."""
    proc = subprocess.run(
        [sys.executable, "-m", *args],
        check=False,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=200,
        env={  # this checkout first
            **os.environ,
            "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT), os.environ.get("PYTHONPATH", "")]),
        },
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


def run_smoke(tmp_path: Path, backend: str, scenarios: list[str], *extra: str) -> dict:
    out = tmp_path / "results"
    prefix = "bsmoke_" + secrets.token_hex(3)
    run_bench(
        *("bench", "--smoke", "--backend", backend, "--out", str(out), *extra),
        *("--scenarios", ",".join(scenarios), "--table-prefix", prefix, "--mysql-url", MYSQL_URL),
        *("--postgres-url", POSTGRES_URL),
    )
    (path,) = out.glob(f"*-{backend}.json")
    return json.loads(path.read_text())


def check(results: dict, backend: str, names: list[str]) -> None:
    assert results["backend"] == backend
    assert results["smoke"] is True
    assert {"cpus", "memory_gib", "python", "database"} <= set(results["machine"])
    scenarios = results["scenarios"]
    assert set(names) <= set(scenarios)
    for case in (v for v in scenarios["ceiling"].values() if isinstance(v, dict)):
        assert {"k", "workers", "tasks_per_s", "by_isolation", "best_isolation"} <= set(case)
        for drains in case["by_isolation"].values():
            assert drains["missed"] == 0 and {"lease_retries", "finish_retries"} <= set(drains)
    single = [v for k, v in scenarios["service"].items() if k.startswith("single")]
    assert single and {"drain_tasks_per_s", "submit_tasks_per_s", "service_cpu_pct"} <= set(single[0])
    assert {"median", "spread_pct", "samples"} <= set(single[0]["drain_tasks_per_s"])
    # the drain's store calls, from the service's own metrics (its last polls come back empty)
    assert single[0]["tasks_per_acquisition"] > 0 and single[0]["tasks_per_finish_call"] >= 1
    assert single[0]["thread_wait_ms"] >= 0
    assert "service_peak_rss_mb" in scenarios["service"]
    submits = [v for k, v in scenarios["service"].items() if k.startswith("submit 1000 per call")]
    assert submits and "median" in submits[0]["submit_tasks_per_s"]
    assert {"median_p50_ms", "median_p99_ms", "max_ms"} <= set(scenarios["latency"])
    if "fair" in names:
        fair = [v for v in scenarios["fair"].values() if isinstance(v, dict) and v.get("fair")]
        assert fair and fair[0]["users_over_cap"] is not None
        if backend == "mysql":  # fair acquisition there takes the table's named lock
            lock = fair[0]["lock"]
            assert {"held_share", "held_ms", "waited_ms", "tasks_per_acquisition"} <= set(lock)
            assert lock["held_share"] > 0 and lock["tasks_per_acquisition"] > 0
        else:
            assert fair[0]["lock"] is None
    assert {"peak_rss_mb", "db_connections_with_idle_polls"} <= set(scenarios["memory"])
    assert "cleanup" in scenarios["scale"]
    worker = scenarios["worker"]
    assert {"service k=10", "ceiling k=10"} <= set(worker["references"])
    for case in ("noop P=1", "sleep 10ms asyncio P=1", "cpu 5ms P=1"):
        assert worker[case]["missed"] == 0 and "median" in worker[case]["tasks_per_s"]
        assert worker[case]["startup_s"]["median"] > 0


@pytest.mark.slow
def test_bench_smoke_sqlite(tmp_path: Path) -> None:
    """Also with merged calls turned off in an interleaved second service (before/after runs)."""
    results = run_smoke(tmp_path, "sqlite", SCENARIOS, "--variants", "coalesced,uncoalesced")
    check(results, "sqlite", SCENARIOS)
    variants = {v["variant"] for v in results["scenarios"]["service"].values() if isinstance(v, dict)}
    assert variants == {"coalesced", "uncoalesced"}


@pytest.mark.slow
@pytest.mark.mysql
def test_bench_smoke_mysql(tmp_path: Path) -> None:
    require_mysql()
    results = run_smoke(tmp_path, "mysql", SCENARIOS, "--pool-size", "3", "--pool-overflow", "1")
    check(results, "mysql", SCENARIOS)
    # recorded with the results (that the services got them is not checked here; a setting the
    # service does not know would have stopped them from starting)
    assert results["config"]["service_settings"] == {"pool_size": 3, "pool_overflow": 1}


@pytest.mark.slow
@pytest.mark.timeout(240)  # 100 to 120 s on a busy machine
def test_bench_smoke_postgres_across_replicas(tmp_path: Path) -> None:
    """The service with fair scheduling off and on, and the latency scenario across two replicas."""
    require_postgres()
    names = ["service", "latency"]
    results = run_smoke(tmp_path, "postgres", names, "--latency-replicas", "2", "--service-fair", "off,on")
    scenarios = results["scenarios"]
    single = [v for k, v in scenarios["service"].items() if k.startswith("single")]
    assert [case["fair"] for case in single] == [False, True]
    assert all(case["tasks_per_acquisition"] > 0 for case in single)
    assert scenarios["latency"]["replicas"] == 2
    assert {"median_p50_ms", "median_p99_ms", "max_ms"} <= set(scenarios["latency"])


@pytest.mark.slow
@pytest.mark.timeout(240)  # 100 to 120 s on a busy machine
def test_bench_smoke_postgres_direct_sql(tmp_path: Path) -> None:
    """PostgreSQL's direct SQL: the ceiling, the fair scenario's backlog and cap watch, bloat; and
    Procrastinate for reference (said skipped where it is not installed)."""
    require_postgres()
    scenarios = run_smoke(tmp_path, "postgres", ["ceiling", "fair", "bloat", "procrastinate"])["scenarios"]
    for case in (v for v in scenarios["ceiling"].values() if isinstance(v, dict)):
        assert case["best_isolation"] == "READ COMMITTED" and case["tasks_per_s"] > 0
        assert case["by_isolation"]["READ COMMITTED"]["missed"] == 0
    fair = [v for v in scenarios["fair"].values() if isinstance(v, dict) and v["fair"]]
    assert fair and fair[0]["users_over_cap"] == [] and fair[0]["tasks_per_s"]["median"] > 0
    assert fair[0]["lock"]["held_share"] > 0  # the table's advisory lock
    bloat = scenarios["bloat"]
    assert {"default", "fillfactor 80"} <= set(bloat)
    for case in (v for v in bloat.values() if isinstance(v, dict) and "samples" in v):
        assert len(case["samples"]) == 2 and case["final"]["total_mb"] > 0
        assert {"timeout", "resource", "outcome"} <= set(case["final"]["indexes_mb"])
        assert sum(sample["deleted"] for sample in case["samples"]) > 0  # cleanup ran
    peer = scenarios["procrastinate"]
    if importlib.util.find_spec("procrastinate") is None:
        assert peer["skipped"].startswith("procrastinate is not installed")
    else:
        assert peer["tasks_per_s"]["median"] > 0


@pytest.mark.mysql
def test_store_calls_times_every_call_on_both_backends(tmp_path: Path) -> None:
    """``python -m bench.store_calls`` at tiny sizes: one line of timings per database, and the
    fair run's (with the lock's hold on MariaDB)."""
    sqlite_url = f"sqlite:///{tmp_path}/calls.sqlite3"
    args = ["bench.store_calls", "--pairs", "20", "--users", "10", "--fair-rounds", "3"]
    lines = run_bench(*args, "--url", sqlite_url, "--url", require_mysql()).splitlines()
    timed = [line for line in lines if "acquire(1)+finish" in line]
    assert [line.split()[0] for line in timed] == ["sqlite", "mysql"]
    assert all("submit_many(1000)" in line and "new connection" in line for line in timed)
    fair = [line for line in lines if "fair, 10 users" in line]
    assert len(fair) == 2 and all("(CPU " in line for line in fair)
    assert ["lock held" in line for line in fair] == [False, True]  # SQLite takes no named lock


@pytest.mark.slow
def test_bench_smoke_sqs_side_by_side(tmp_path: Path) -> None:
    """The SQS scenario: ceiling, native batched and SQS drains and both long-poll latencies."""
    results = run_smoke(tmp_path, "sqlite", ["sqs"])
    sqs = results["scenarios"]["sqs"]
    for way in ("ceiling", "native", "sqs", "sqs signed"):
        assert sqs[f"{way} k=10 tasks_per_s"]["median"] > 0
    assert sqs["sqs_vs_native"] > 0 and sqs["sqs_signed_vs_native"] > 0
    assert sqs["latency sqs WaitTimeSeconds"]["n"] == sqs["latency native long-poll"]["n"] > 0
