"""``/metrics``: the service's counters, histograms and gauges after real requests, on each backend.

The values are read back by parsing the exposition with prometheus_client's own parser.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import test_api
from conftest import drop_table, moved
from prometheus_client.parser import text_string_to_metric_families
from test_api import Q, TestClient, poll, store_of, submit

from perfectqueue.service.security import hash_key, new_key

make_client = test_api.make_client  # the API tests' fixture: an app on a fresh table

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(client: TestClient, **headers: str) -> Samples:
    response = client.get("/metrics", headers=headers)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(response.text)
        for s in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, tuple(sorted(labels.items()))))


def test_counters_histograms_and_http_metrics_follow_the_requests(
    make_client: Callable[..., TestClient],
) -> None:
    client = make_client()
    for task_id in ("a", "b", "c"):
        submit(client, task_id)
    assert client.post(f"{Q}/submit", json={"id": "a", "type": "t"}).status_code == 409
    batch = client.post(
        f"{Q}/submit-batch", json={"tasks": [{"id": "d", "type": "t"}, {"id": "b", "type": "t"}]}
    )
    assert batch.status_code == 200

    leases = {t["id"]: t["lease"] for t in poll(client, 3)}
    assert set(leases) == {"a", "b", "c"}
    assert client.post(f"{Q}/finish", json={"id": "a", "lease": leases["a"]}).status_code == 204
    assert (
        client.post(f"{Q}/retry", json={"id": "b", "lease": leases["b"], "retry_wait": 0}).status_code == 204
    )
    assert client.post(f"{Q}/release", json={"id": "c", "lease": leases["c"]}).status_code == 204
    stale = client.post(f"{Q}/heartbeat", json={"id": "c", "lease": leases["c"]})
    assert stale.status_code == 409 and stale.json()["code"] == "preempted"
    stale = client.post(f"{Q}/heartbeat-batch", json={"tasks": [{"id": "c", "lease": leases["c"]}]})
    assert stale.json()["failed"][0]["code"] == "preempted"
    assert poll(client, 1, wait=0.1) != []
    assert client.post(f"{Q}/force-finish", json={"id": "d"}).status_code == 204

    m = scrape(client)
    q = {"queue": "q"}
    assert value(m, "perfectqueue_tasks_submitted_total", **q) == 4
    assert value(m, "perfectqueue_tasks_rejected_total", **q) == 2
    assert value(m, "perfectqueue_tasks_acquired_total", **q) == 4
    assert value(m, "perfectqueue_tasks_retried_total", **q) == 1
    assert value(m, "perfectqueue_tasks_released_total", **q) == 1
    assert value(m, "perfectqueue_tasks_preempted_total", **q) == 2
    assert value(m, "perfectqueue_tasks_dead_total", **q) is None  # no sample before the first one
    assert value(m, "perfectqueue_tasks_finished_total", **q) == 2
    assert value(m, "perfectqueue_queue_wait_seconds_count", **q) == 4
    assert value(m, "perfectqueue_poll_duration_seconds_count", queue="q", result="tasks") == 2
    assert value(m, "perfectqueue_database_errors_total", **q) is None

    submit_route = {"method": "POST", "route": "/v1/queues/{queue}/submit"}
    assert value(m, "perfectqueue_http_requests_total", **submit_route, status="201") == 3
    assert value(m, "perfectqueue_http_requests_total", **submit_route, status="409") == 1
    assert value(m, "perfectqueue_http_request_duration_seconds_count", **submit_route) == 4
    assert client.get("/no/such/path").status_code == 404
    m = scrape(client)
    assert value(m, "perfectqueue_http_requests_total", method="GET", route="unmatched", status="404") == 1
    assert value(m, "perfectqueue_http_requests_total", method="GET", route="/metrics", status="200") == 1


@pytest.mark.parametrize("fair_lock", ["table", "user"])
def test_acquisitions_that_take_a_lock_are_timed(
    make_client: Callable[..., TestClient], db_url: str, fair_lock: str
) -> None:
    """On MariaDB and PostgreSQL a fair acquisition takes a lock and observes how long it waited
    for it and held it: the table's, in every acquisition (an empty one too); or the locks of
    the users it serves, in acquisitions that served a user (one of tasks without a user, or
    of nothing, takes none). Oldest-first acquisition there takes no lock, and SQLite has none:
    no samples."""
    client = make_client(fair_lock=fair_lock)
    submit(client, "a", user="u", max_running=1)
    assert [task["id"] for task in poll(client, 1)] == ["a"]
    submit(client, "b")
    assert [task["id"] for task in poll(client, 1)] == ["b"]
    assert poll(client, 1) == []
    m = scrape(client)
    expected = None if db_url.startswith("sqlite") else {"table": 3, "user": 1}[fair_lock]
    for name in ("perfectqueue_acquire_lock_wait_seconds", "perfectqueue_acquire_lock_held_seconds"):
        assert value(m, f"{name}_count", queue="q") == expected
    if not db_url.startswith("sqlite"):
        held = value(m, "perfectqueue_acquire_lock_held_seconds_sum", queue="q")
        assert held is not None and 0 < held < 10
        unfair = make_client(disable_resource_limit=True)
        submit(unfair, "c")
        assert len(poll(unfair, 1)) == 1
        assert value(scrape(unfair), "perfectqueue_acquire_lock_held_seconds_count", queue="q") is None


def test_store_calls_count_their_tasks_and_time_their_wait_for_a_thread(
    make_client: Callable[..., TestClient],
) -> None:
    """Every store call observes the tasks it carries (a batch request's, one for a single call)
    or, for an acquisition, the tasks it leased; and each store call observes how long it waited
    for a worker thread to start it."""
    client = make_client()
    waits = value(scrape(client), "perfectqueue_store_thread_wait_seconds_count") or 0.0
    submit(client, "a")
    response = client.post(f"{Q}/submit-batch", json={"tasks": [{"id": i, "type": "t"} for i in "bcd"]})
    assert response.status_code == 200, response.text
    leased = poll(client, 10)
    assert len(leased) == 4 and poll(client, 10) == []
    held = [{"id": t["id"], "lease": t["lease"]} for t in leased]
    assert client.post(f"{Q}/finish-batch", json={"tasks": held[:3]}).status_code == 200
    assert client.post(f"{Q}/finish", json=held[3]).status_code == 204
    m = scrape(client)
    counts = {
        call: (
            value(m, "perfectqueue_store_call_tasks_count", queue="q", call=call),
            value(m, "perfectqueue_store_call_tasks_sum", queue="q", call=call),
            value(m, "perfectqueue_store_call_tasks_bucket", queue="q", call=call, le="1.0"),
        )
        for call in ("submit", "acquire", "finish")
    }
    # (calls, tasks in all, calls of at most one task): an empty acquisition observes 0
    assert counts == {"submit": (2, 4, 1), "acquire": (2, 4, 1), "finish": (2, 4, 1)}
    waited = value(m, "perfectqueue_store_thread_wait_seconds_count")
    assert waited is not None and waited >= waits + 6  # at least one store call per request
    assert 0 <= (value(m, "perfectqueue_store_thread_wait_seconds_sum") or 0) < waited * 10


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)  # nothing here is the database's
def test_operations_md_lists_every_metric_the_service_exports(
    make_client: Callable[..., TestClient], db_url: str
) -> None:
    """The operator's reference has a table row for every metric family of /metrics (a counter
    by its ``_total`` sample; each task counter by its event in the events table)."""
    client = make_client()
    response = client.get("/metrics")
    assert response.status_code == 200
    families = list(text_string_to_metric_families(response.text))
    docs = (Path(__file__).parent.parent / "docs" / "operations.md").read_text(encoding="utf-8")
    missing = []
    for family in families:
        if family.name.endswith("_created"):  # the creation time prometheus_client adds to a series
            continue
        name = family.name + ("_total" if family.type == "counter" else "")
        if name.startswith("perfectqueue_tasks_"):
            documented = f"| `{name.removeprefix('perfectqueue_tasks_').removesuffix('_total')}` |" in docs
        else:
            documented = f"| `{name}` |" in docs
        if not documented:
            missing.append(name)
    assert len(families) >= 15 and missing == []


def test_dead_and_cancelled_tasks_are_counted(make_client: Callable[..., TestClient]) -> None:
    client = make_client(max_attempts=1)
    for task_id in ("dies", "waits", "runs"):
        submit(client, task_id)
    (dies,) = poll(client, 1)
    assert client.post(f"{Q}/retry", json={"id": "dies", "lease": dies["lease"]}).status_code == 204
    assert client.post(f"{Q}/cancel", json={"id": "waits"}).json()["status"] == "cancelled"
    (runs,) = poll(client, 1)
    assert client.post(f"{Q}/cancel", json={"id": "runs"}).json()["status"] == "running"
    assert client.post(f"{Q}/heartbeat", json={"id": "runs", "lease": runs["lease"]}).status_code == 409
    assert client.post(f"{Q}/finish", json={"id": "runs", "lease": runs["lease"]}).status_code == 409
    # Leases that ran out: an acquisition ends one task dead (its attempt is used), one cancelled.
    submit(client, "expires")
    submit(client, "abandoned")
    assert {t["id"] for t in poll(client, 2)} == {"expires", "abandoned"}
    assert client.post(f"{Q}/cancel", json={"id": "abandoned"}).json()["cancel_requested"] is True
    for task_id in ("expires", "abandoned"):
        backdate(store_of(client), task_id, 1000)
    assert poll(client, 2) == []

    m = scrape(client)
    assert value(m, "perfectqueue_tasks_dead_total", queue="q") == 2
    assert value(m, "perfectqueue_tasks_retried_total", queue="q") is None
    assert value(m, "perfectqueue_tasks_cancelled_total", queue="q") == 3  # at once; at finish; expired
    assert value(m, "perfectqueue_tasks_finished_total", queue="q") is None
    states = ("finished", "dead", "cancelled")
    assert [value(m, "perfectqueue_queue_tasks", queue="q", state=s) for s in states] == [0, 2, 3]
    assert value(m, "perfectqueue_queue_dead_tasks", queue="q") == 2
    info = client.get(Q).json()
    assert (info["dead"], info["dead_last_hour"]) == (2, 2)
    backdate(store_of(client), "dies", 3700)  # it died over an hour ago
    assert client.get(Q).json()["dead_last_hour"] == 1


def test_gauges_count_each_state_and_stop_at_the_limit(make_client: Callable[..., TestClient]) -> None:
    client = make_client(metrics_count_limit=3)
    later = int(time.time()) + 3600
    for i in range(5):
        submit(client, f"w{i}")
    submit(client, "s", run_at=later)
    (leased,) = poll(client, 1)
    assert client.post(f"{Q}/finish", json={"id": leased["id"], "lease": leased["lease"]}).status_code == 204
    running = poll(client, 2)
    retried = client.post(f"{Q}/retry", json={"id": running[0]["id"], "lease": running[0]["lease"]})
    assert retried.status_code == 204
    backdate(store_of(client), "w4", 100)

    m = scrape(client)
    state = {s: value(m, "perfectqueue_queue_tasks", queue="q", state=s) for s in ("waiting", "leased")}
    assert state == {"waiting": 2, "leased": 1}
    assert value(m, "perfectqueue_queue_tasks", queue="q", state="scheduled") == 2  # run_at, retry_wait
    assert value(m, "perfectqueue_queue_tasks", queue="q", state="finished") == 1
    age = value(m, "perfectqueue_queue_oldest_waiting_age_seconds", queue="q")
    assert age is not None and 100 <= age < 200
    assert value(m, "perfectqueue_queue_count_limit", queue="q") == 3

    for i in range(5, 10):
        submit(client, f"w{i}")
    assert value(scrape(client), "perfectqueue_queue_tasks", queue="q", state="waiting") == 2, "cached"
    client.app.state.metrics.gauges.clear()  # what CACHE_SECONDS later would do
    assert value(scrape(client), "perfectqueue_queue_tasks", queue="q", state="waiting") == 3, "capped"
    # The same counts (uncached) answer the queue API and the dashboard, saying which stopped.
    info = client.get(Q).json()
    assert (info["waiting"], info["scheduled"]) == (3, 2)
    assert info["capped"] == ["waiting", "leased", "scheduled"]  # 3 not yet due: at the limit
    overview = client.get("/v1/overview").json()["queues"][0]
    # the age may have crossed a second meanwhile; the warnings' thresholds are for the dashboard only
    same = ("throughput", "trouble", "oldest_waiting_age", "warnings")
    assert {k: v for k, v in overview.items() if k not in same} == {k: info[k] for k in info if k not in same}


def test_a_failing_database_is_counted_and_its_gauges_left_out(
    make_client: Callable[..., TestClient], table_name: str
) -> None:
    client = make_client()
    submit(client, "a")
    drop_table(store_of(client).db, table_name)
    assert client.get(f"{Q}/tasks/a").status_code == 503
    assert value(scrape(client), "perfectqueue_database_errors_total", queue="q") == 1
    m = scrape(client)  # the first scrape's gauge query failed too, after the counters were read
    assert value(m, "perfectqueue_database_errors_total", queue="q") == 2
    assert value(m, "perfectqueue_queue_tasks", queue="q", state="waiting") is None
    assert value(m, "perfectqueue_tasks_submitted_total", queue="q") == 1
    # The dashboard's overview tells them too (those this replica saw lately), once it can count.
    store_of(client).init()
    (queue,) = client.get("/v1/overview").json()["queues"]
    errors = 3  # the get, and the gauge queries of both scrapes
    assert queue["trouble"] == {"window": 900, "database_errors": errors, "lock_wait_max": 0.0}


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)  # nothing here is the database's
def test_metrics_need_a_key_and_probes_do_not(make_client: Callable[..., TestClient], db_url: str) -> None:
    key = new_key()
    client = make_client(api_keys=[{"name": "ops", "hash": hash_key(key), "scopes": ["admin"]}])
    assert client.get("/metrics").status_code == 401
    assert scrape(client, authorization=f"Bearer {key}")
    for probe in ("/livez", "/healthz", "/readyz"):
        response = client.get(probe)
        assert (response.status_code, response.json()) == (200, {"status": "ok"}), probe


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)  # nothing here is the database's
def test_each_app_has_a_registry_of_its_own(make_client: Callable[..., TestClient], db_url: str) -> None:
    first, second = make_client(), make_client()
    submit(first, "only-here")
    assert value(scrape(first), "perfectqueue_tasks_submitted_total", queue="q") == 1
    assert value(scrape(second), "perfectqueue_tasks_submitted_total", queue="q") is None


def backdate(store: Any, task_id: str, seconds: int) -> None:
    t = store.table.c
    with store.db.engine.begin() as conn:
        conn.execute(moved(store.table, t.timeout - seconds).where(t.id == task_id))


def test_the_databases_clock_against_this_host_is_a_gauge_and_a_warning_past_the_limit(
    make_client: Callable[..., TestClient], db_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Measured at start (and at every cleanup round): near zero on one machine, and warned once
    when over ``max_clock_skew`` (set absurdly small here so that any skew is over it)."""
    with caplog.at_level("INFO", logger="perfectqueue.service"):
        client = make_client(max_clock_skew=1e-9)
        [(labels, skew)] = [(k[1], v) for k, v in scrape(client).items() if k[0] == SKEW]
        assert abs(skew) < 1.0 and "password" not in str(labels)
        client.portal.call(client.app.state.runtime.clocks.measure)  # type: ignore[attr-defined]
    warned = [r for r in caplog.records if "over max_clock_skew" in r.getMessage()]
    if db_url.startswith("sqlite"):
        assert skew == 0.0 and not warned  # SQLite's clock is this host's
    else:
        assert skew != 0.0 and len(warned) == 1  # said once, not at every measure


SKEW = "perfectqueue_database_clock_skew_seconds"
