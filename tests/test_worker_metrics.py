"""The worker's metrics (``metrics_port``) and JSON log, from real workers (forked children, threads).

The children count what they do and the supervisor serves the sums: tasks by outcome, handler
failures, durations, children replaced (here recycled by ``max_request_per_child``).
"""

from __future__ import annotations

import json
import signal
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families
from servers import free_port
from test_worker_harness import wait_for, worker_process, write_worker_config

import perfectqueue

WORKER = """
from perfectqueue.worker import Base, Dispatch


class Done(Base):
    def run(self):
        pass  # returning finishes the task


class Boom(Base):
    def run(self):
        raise RuntimeError("boom")


class Dispatcher(Dispatch):
    pass


Dispatcher.route("done", Done)
Dispatcher.route("boom", Boom)
"""


def scrape(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    try:
        text = httpx.get(url, timeout=5).text
    except httpx.TransportError:
        return {}
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_worker_children_report_to_the_supervisor_metrics(tmp_path: Path, service: str) -> None:
    (tmp_path / "pqmetrics.py").write_text(WORKER)
    port = free_port()
    config = write_worker_config(
        tmp_path / "worker.yaml",
        service,
        processors=2,
        max_request_per_child=2,
        retry_wait=600,
        metrics_port=port,
        log_format="json",
    )
    with perfectqueue.open({"url": service, "queue": "q"}) as queue:
        for i in range(5):
            queue.submit(f"d{i}", "done")
        queue.submit("b", "boom")
    url = f"http://127.0.0.1:{port}/metrics"
    log = tmp_path / "worker.log"
    expected = {
        ("perfectqueue_worker_tasks_total", (("outcome", "finish"),)): 5,
        ("perfectqueue_worker_tasks_total", (("outcome", "retry"),)): 1,
        ("perfectqueue_worker_task_failures_total", ()): 1,
        ("perfectqueue_worker_task_duration_seconds_count", (("outcome", "finish"),)): 5,
        ("perfectqueue_worker_children", ()): 2,
    }
    with worker_process(tmp_path, config, log, app="pqmetrics:Dispatcher") as proc:
        samples = wait_for(
            lambda: (m := scrape(url)) and all(m.get(k) == v for k, v in expected.items()) and m,
            what="the counts of six tasks",
        )
        recycled = samples.get(("perfectqueue_worker_child_restarts_total", (("reason", "recycled"),)))
        assert recycled is not None and recycled >= 2  # six tasks, two per child
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0

    lines = [line for line in log.read_text().splitlines() if line.strip()]
    entries = [json.loads(line) for line in lines]  # every line is one JSON object
    assert all({"timestamp", "level", "logger", "message"} <= set(e) for e in entries)
    failure = next(e for e in entries if e["message"].startswith("event=error"))
    assert failure["level"] == "error" and "RuntimeError: boom" in failure["error"]
    assert sum(e["message"].startswith("event=finish ") for e in entries) == 5


def test_thread_processors_count_into_the_same_metrics(tmp_path: Path, service: str) -> None:
    (tmp_path / "pqmetrics.py").write_text(WORKER)
    port = free_port()
    config = write_worker_config(
        tmp_path / "worker.yaml",
        service,
        processors=2,
        processor_type="thread",
        retry_wait=600,
        metrics_port=port,
    )
    with perfectqueue.open({"url": service, "queue": "q"}) as queue:
        for i in range(3):
            queue.submit(f"d{i}", "done")
        queue.submit("b", "boom")
    url = f"http://127.0.0.1:{port}/metrics"
    expected = {
        ("perfectqueue_worker_tasks_total", (("outcome", "finish"),)): 3,
        ("perfectqueue_worker_tasks_total", (("outcome", "retry"),)): 1,
        ("perfectqueue_worker_task_failures_total", ()): 1,
        ("perfectqueue_worker_task_duration_seconds_count", (("outcome", "finish"),)): 3,
    }
    with worker_process(tmp_path, config, tmp_path / "worker.log", app="pqmetrics:Dispatcher") as proc:
        wait_for(
            lambda: (m := scrape(url)) and all(m.get(k) == v for k, v in expected.items()),
            what="the counts of four tasks",
        )
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0


def test_prefetch_depth_and_acknowledgement_batches_are_measured(tmp_path: Path, service: str) -> None:
    """Ten tasks in one poll (task_prefetch 9), their finishes in one batch (within ack_delay)."""
    (tmp_path / "pqmetrics.py").write_text(WORKER)
    port = free_port()
    config = write_worker_config(
        tmp_path / "worker.yaml", service, task_prefetch=9, ack_delay=2, metrics_port=port
    )
    with perfectqueue.open({"url": service, "queue": "q"}) as queue:
        queue.submit_many([{"key": f"d{i}", "type": "done"} for i in range(10)])
    url = f"http://127.0.0.1:{port}/metrics"
    finished = ("perfectqueue_worker_tasks_total", (("outcome", "finish"),))
    with worker_process(tmp_path, config, tmp_path / "worker.log", app="pqmetrics:Dispatcher") as proc:
        samples = wait_for(lambda: (m := scrape(url)) and m.get(finished) == 10 and m, what="ten finishes")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
    assert samples[("perfectqueue_worker_poll_tasks_sum", ())] == 10
    assert (
        samples[("perfectqueue_worker_poll_tasks_bucket", (("le", "5.0"),))]
        < (samples[("perfectqueue_worker_poll_tasks_bucket", (("le", "10.0"),))])
    )  # the poll that brought ten
    assert samples[("perfectqueue_worker_ack_batch_size_count", ())] == 1
    assert samples[("perfectqueue_worker_ack_batch_size_sum", ())] == 10
    waited = samples[("perfectqueue_worker_ack_wait_seconds_sum", ())]
    assert 1.5 < waited < 10  # held for ack_delay (2 s), the batch not being full
    assert samples[("perfectqueue_worker_ack_flush_seconds_count", ())] == 1
