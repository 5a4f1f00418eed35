"""Handlers and dispatch, run in this process against a real service (SQLite)."""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sdk_support import next_time
from servers import running_service, write_config

import perfectqueue
from perfectqueue.errors import ConfigError
from perfectqueue.service.store.model import LAST_ERROR_CHARS
from perfectqueue.worker import Base, Dispatch, Signals, WorkerConfig, WorkerTask
from perfectqueue.worker.application import ERROR_CHARS, report
from perfectqueue.worker.runner import Runner
from perfectqueue.worker.task_monitor import TaskMonitor

calls: list[str] = []


class Finisher(Base):
    def run(self) -> None:
        calls.append(f"finisher {self.task.key}")
        self.task.finish()


class Lazy(Base):
    def run(self) -> None:
        calls.append(f"lazy {self.task.key}")
        self.task.release()


class Boom(Base):
    def run(self) -> None:
        raise RuntimeError("boom")


class Invalid(Base):
    def run(self) -> None:
        check(self.task.data)


def check(data: dict[str, object]) -> None:
    raise ValueError(f"bad value {data.get('n')}")


class Deep(Base):
    def run(self) -> None:
        recurse(60)


def recurse(depth: int) -> None:
    if depth == 0:
        raise KeyError("the bottom")
    recurse(depth - 1)


class Steps(Base):
    def before_perform(self) -> None:
        calls.append("before")

    def perform(self) -> None:
        calls.append("perform")
        if self.task.data.get("fail"):
            raise ValueError("bad data")

    def after_perform(self) -> None:
        calls.append("after")

    def decide(self, error: BaseException) -> None:
        calls.append(f"decide {type(error).__name__}")
        self.task.retry(7)


class Returns(Base):
    def run(self) -> None:
        calls.append("returns")


class App(Dispatch):
    pass


App.route("exact", Finisher)
App.route(re.compile(r"^lazy-"), "Lazy")
App.route("dotted", "test_worker_dispatch.Finisher")
App.route("boom", Boom)
App.route("steps", Steps)
App.route("invalid", Invalid)
App.route("deep", Deep)
App.route("returns", Returns)
App.route("missing", "NoSuchHandler")


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    tmp = tmp_path_factory.mktemp("dispatch")
    config = write_config(tmp / "service.yaml", f"sqlite:///{tmp / 'q.sqlite3'}", "dispatch")
    with running_service(config, tmp / "service.log") as base:
        yield base


@pytest.fixture
def queue(service: str) -> Iterator[perfectqueue.Queue]:
    calls.clear()
    with perfectqueue.open({"url": service, "queue": "q"}) as q:
        yield q


def run_one(
    queue: perfectqueue.Queue,
    key: str,
    task_type: str,
    max_attempts: int | None = None,
    app: type[Dispatch] = App,
    **data: object,
) -> WorkerTask:
    queue.submit(key, task_type, data, max_attempts=max_attempts)
    acquired = queue.poll()
    assert acquired is not None and acquired.key == key
    config = WorkerConfig.from_mapping({"retry_wait": 120})
    monitor = TaskMonitor(Signals(), 1, 1, lambda: None, lambda: None)
    return Runner(app, monitor, config).run(acquired)


def retried_for(queue: perfectqueue.Queue, key: str) -> int:
    """Seconds until a retried task is deliverable again."""
    return next_time(queue[key].metadata()) - int(time.time())


def test_an_exact_type_routes_to_its_handler(queue: perfectqueue.Queue) -> None:
    task = run_one(queue, "e1", "exact")
    assert calls == ["finisher e1"]
    assert task.outcome == "finished" and queue["e1"].metadata().is_finished()


def test_a_regex_routes_with_a_lazy_handler_name(queue: perfectqueue.Queue) -> None:
    task = run_one(queue, "l1", "lazy-thing")
    assert calls == ["lazy l1"] and task.outcome == "released"
    assert queue["l1"].metadata().is_waiting()
    again = queue.poll()
    assert again is not None and again.key == "l1"
    again.finish()


def test_a_dotted_handler_name_is_imported(queue: perfectqueue.Queue) -> None:
    assert run_one(queue, "d1", "dotted").outcome == "finished"


def test_an_unknown_type_goes_dead_at_once_and_is_logged(
    queue: perfectqueue.Queue, caplog: pytest.LogCaptureFixture
) -> None:
    task = run_one(queue, "u1", "nobody-handles-this")  # its first attempt of the queue's 10
    assert task.outcome == "dead"
    meta = queue["u1"].metadata()
    assert (meta.status, meta.attempts) == ("dead", 1)
    assert meta.last_error == "UnknownType: no route of App matches the type 'nobody-handles-this'"
    assert "event=unknown_type id=u1" in caplog.text


class RetryingApp(App):
    unknown_type = "retry"


def test_an_unknown_type_is_retried_where_the_dispatch_says_so(queue: perfectqueue.Queue) -> None:
    assert run_one(queue, "u2", "nobody-handles-this", app=RetryingApp).outcome == "retried"
    assert 100 <= retried_for(queue, "u2") <= 121
    assert queue["u2"].metadata().last_error == (
        "UnknownType: no route of RetryingApp matches the type 'nobody-handles-this'"
    )


def test_a_missing_handler_name_is_retried_and_logged(
    queue: perfectqueue.Queue, caplog: pytest.LogCaptureFixture
) -> None:
    assert run_one(queue, "m1", "missing").outcome == "retried"
    assert "NoSuchHandler" in caplog.text


def test_an_exception_retries_after_retry_wait_and_is_logged(
    queue: perfectqueue.Queue, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="perfectqueue.worker"):
        task = run_one(queue, "b1", "boom")
    assert task.outcome == "retried"
    assert 100 <= retried_for(queue, "b1") <= 121
    assert "RuntimeError: boom" in caplog.text
    assert "event=retry id=b1 type=boom duration=" in caplog.text


def test_the_error_recorded_is_the_type_message_and_the_last_frames(queue: perfectqueue.Queue) -> None:
    assert run_one(queue, "v1", "invalid", n=7).outcome == "retried"
    error = queue["v1"].metadata().last_error
    assert error is not None
    head, trace = error.split("\n", 1)
    assert head == "ValueError: bad value 7"
    assert trace.startswith("Traceback (most recent call last):\n")
    assert trace.rstrip().endswith("raise ValueError(f\"bad value {data.get('n')}\")")
    assert ", in check\n" in trace and ", in run\n" in trace


def test_a_deep_traceback_keeps_its_last_frames_within_the_store_s_bound(queue: perfectqueue.Queue) -> None:
    assert ERROR_CHARS == LAST_ERROR_CHARS
    run_one(queue, "k1", "deep")
    error = queue["k1"].metadata().last_error
    assert error is not None and len(error) <= LAST_ERROR_CHARS
    assert error.startswith("KeyError: 'the bottom'\nTraceback (most recent call last):\n")
    assert error.endswith('raise KeyError("the bottom")')  # the frame nearest the error, not cut
    assert not error.endswith("...")


def test_a_long_message_is_clipped_and_leaves_room_for_frames() -> None:
    try:
        check({"n": "x" * 5000})
    except ValueError as exc:
        error = report(exc)
    assert len(error) <= ERROR_CHARS
    assert error.startswith("ValueError: bad value xxx") and "...\nTraceback" in error
    assert error.endswith("raise ValueError(f\"bad value {data.get('n')}\")")


def test_the_last_attempt_ends_dead_and_is_logged_so(
    queue: perfectqueue.Queue, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="perfectqueue.worker"):
        task = run_one(queue, "x1", "invalid", max_attempts=1, n=1)
    assert task.outcome == "dead"
    assert queue["x1"].metadata().is_dead()
    assert "event=dead id=x1 type=invalid duration=" in caplog.text
    assert "event=retry id=x1" not in caplog.text
    assert queue["x1"].metadata().last_error.startswith("ValueError: bad value 1\nTraceback")


def test_an_attempt_before_the_last_is_a_retry(queue: perfectqueue.Queue) -> None:
    assert run_one(queue, "x2", "invalid", max_attempts=2).outcome == "retried"
    assert not queue["x2"].metadata().is_dead()


def test_before_perform_and_after_run_around_perform(queue: perfectqueue.Queue) -> None:
    assert run_one(queue, "s1", "steps").outcome == "finished"
    assert calls == ["before", "perform", "after"]


def test_a_failing_perform_goes_to_decide(queue: perfectqueue.Queue) -> None:
    assert run_one(queue, "s2", "steps", fail=True).outcome == "retried"
    assert calls == ["before", "perform", "decide ValueError"]
    assert retried_for(queue, "s2") <= 8


def test_returning_without_settling_finishes_the_task(queue: perfectqueue.Queue) -> None:
    assert run_one(queue, "r1", "returns").outcome == "finished"
    assert queue["r1"].metadata().is_finished()


def test_routes_are_per_subclass_and_checked() -> None:
    class Other(Dispatch):
        pass

    Other.route("x", Finisher)
    assert Other.handler_for("x") is Finisher and Other.handler_for("exact") is None
    assert App.handler_for("x") is None
    with pytest.raises(ConfigError):
        Other.route("y", object)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("processors", 0),
        ("processors", 1.5),
        ("poll_interval", "fast"),
        ("processor_type", "fiber"),
        ("child_heartbeat_limit", -1),
        ("task_prefetch", -1),
        ("max_request_per_child", True),
        ("log", 3),
    ],
)
def test_a_bad_setting_is_refused_naming_its_key(key: str, value: object) -> None:
    with pytest.raises(ConfigError, match=key):
        WorkerConfig.from_mapping({key: value})


def test_the_defaults_are_the_seeds() -> None:
    config = WorkerConfig.from_mapping({"url": "http://x", "queue": "q", "label": 1})
    assert (config.processors, config.poll_interval, config.task_heartbeat_interval) == (1, 1.0, 2.0)
    assert (config.alive_time, config.retry_wait, config.child_kill_interval) == (300, None, 2.0)
    assert config.child_graceful_kill_limit is None and config.log is None
    assert (config.child_heartbeat_interval, config.child_heartbeat_limit) == (2.0, 10.0)
    assert (config.processor_type, config.detach_wait, config.task_prefetch) == ("process", 10.0, 0)
    assert config.max_request_per_child is None
    assert config.backend == {"url": "http://x", "queue": "q"}
    assert config.raw["label"] == 1


def test_the_cli_refuses_a_bad_configuration(tmp_path: Path) -> None:
    from perfectqueue.cli import main

    (tmp_path / "c.yaml").write_text("processors: zero\n")
    code = main(["run", "test_worker_dispatch:App", "-c", str(tmp_path / "c.yaml")])
    assert code == 2
