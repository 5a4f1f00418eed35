"""Prefetch, detach, stop escalations, a lost supervisor, resizing and the CLI's -r/-e, for real.

Each test runs a real worker process (``python -m perfectqueue run``) against a real service
(SQLite), sends it real signals and watches the ledger its handlers write and the queue itself.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from test_worker_harness import children_of, events, ledger, wait_for, worker_process, write_worker_config

import perfectqueue

pytestmark = pytest.mark.slow
KEYS = ("p1", "p2", "p3")


@pytest.fixture
def queue(service: str) -> Iterator[perfectqueue.Queue]:
    with perfectqueue.open({"url": service, "queue": "q"}) as opened:
        yield opened


def alive(pid: int) -> bool:
    """``pid`` runs (a zombie waiting for its parent counts as gone)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def started_pid(book: Path, key: str | None = None) -> int:
    return int(wait_for(lambda: events(book, "start", key), what="a task to start")[0][2])


# task_prefetch


def test_prefetched_tasks_run_in_turn_in_one_child_and_stay_leased(
    tmp_path: Path, service: str, queue: perfectqueue.Queue
) -> None:
    book = tmp_path / "ledger"
    config = write_worker_config(
        tmp_path / "worker.yaml", service, task_prefetch=2, alive_time=2, task_heartbeat_interval=0.4
    )
    for key in KEYS:  # all waiting before the worker's first poll
        queue.submit(key, "slow", {"ledger": str(book), "sleep": 1.2})
    with worker_process(tmp_path, config, tmp_path / "worker.log"):
        first = wait_for(lambda: events(book, "start"), what="the first task")[0][1]
        assert all(queue[key].metadata().is_running() for key in KEYS)  # one poll took all three
        stolen: list[perfectqueue.AcquiredTask] = []
        deadline = time.monotonic() + 30
        while len(events(book, "end")) < 3 and time.monotonic() < deadline:
            # the last one waits 2.4 s > alive_time: only its heartbeats keep it from a competitor
            stolen += queue.poll_multi(max=3, alive_time=60, wait=0.2)
        assert not stolen, [task.key for task in stolen]
        for key in KEYS:
            wait_for(lambda key=key: queue[key].metadata().is_finished(), what=f"{key} to be finished")
    lines = [line for line in ledger(book) if line[0] in ("start", "end")]
    assert [line[0] for line in lines] == ["start", "end"] * 3  # one after another
    assert {line[2] for line in lines} == {lines[0][2]}  # by one child
    assert lines[0][1] == first and sorted(line[1] for line in lines[::2]) == list(KEYS)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGQUIT])
def test_a_stop_releases_the_prefetched_tasks_not_started(
    tmp_path: Path, service: str, queue: perfectqueue.Queue, signum: int
) -> None:
    book = tmp_path / "ledger"
    config = write_worker_config(tmp_path / "worker.yaml", service, task_prefetch=2)  # alive_time 300
    sleep = 1.5 if signum == signal.SIGTERM else 60
    for key in KEYS:
        queue.submit(key, "slow", {"ledger": str(book), "sleep": sleep})
    with worker_process(tmp_path, config, tmp_path / "worker.log") as proc:
        first = wait_for(lambda: events(book, "start"), what="the first task")[0][1]
        assert all(queue[key].metadata().is_running() for key in KEYS)
        proc.send_signal(signum)
        assert proc.wait(timeout=15) == 0
    others = [key for key in KEYS if key != first]
    for key in others:  # released, not left to their 300 s lease
        assert queue[key].metadata().status == "waiting"
        assert not events(book, "start", key)
    if signum == signal.SIGTERM:
        assert events(book, "end", first)
        assert queue[first].metadata().is_finished()
    else:
        assert not events(book, "end", first)  # the child exits at once: no time to note "cancelled"
        assert queue[first].metadata().status == "waiting"


# detach (live restart)


def test_detach_leaves_after_detach_wait_while_the_child_finishes_its_task(
    tmp_path: Path, service: str, queue: perfectqueue.Queue
) -> None:
    book = tmp_path / "ledger"
    config = write_worker_config(tmp_path / "worker.yaml", service, detach_wait=1)
    with worker_process(tmp_path, config, tmp_path / "old.log") as old:
        queue.submit("long", "slow", {"ledger": str(book), "sleep": 7})
        child = started_pid(book, "long")
        sent = time.monotonic()
        old.send_signal(signal.SIGTTIN)
        assert old.wait(timeout=10) == 0
        waited = time.monotonic() - sent
        assert 0.9 <= waited < 4, waited  # detach_wait, not the task's 7 s
        assert alive(child) and not events(book, "end", "long")
        with worker_process(tmp_path, config, tmp_path / "new.log"):  # the live restart
            queue.submit("fresh", "quick", {"ledger": str(book)})
            done = wait_for(lambda: events(book, "end", "fresh"), what="the new worker's task")[0]
            assert int(done[2]) != child
            assert alive(child) and not events(book, "end", "long")  # both at once
            wait_for(lambda: events(book, "end", "long"), timeout=15, what="the detached child's task")
            wait_for(lambda: queue["long"].metadata().is_finished(), what="its task to be finished")
            wait_for(lambda: not alive(child), timeout=10, what="the detached child to exit")
    assert len(events(book, "start", "long")) == 1
    assert "event=detach " in (tmp_path / "old.log").read_text()


# stop escalations


def test_a_graceful_stop_becomes_sigkill_after_child_graceful_kill_limit(
    tmp_path: Path, service: str, queue: perfectqueue.Queue
) -> None:
    book = tmp_path / "ledger"
    limit, interval = 1.0, 0.5
    config = write_worker_config(
        tmp_path / "worker.yaml",
        service,
        alive_time=2,
        child_graceful_kill_limit=limit,
        child_kill_interval=interval,
    )
    with worker_process(tmp_path, config, tmp_path / "worker.log") as proc:
        queue.submit("t", "slow", {"ledger": str(book), "sleep": 60})  # ignores a graceful stop
        child = started_pid(book, "t")
        proc.send_signal(signal.SIGTERM)
        wait_for(lambda: not alive(child), timeout=limit + interval + 1, what="the child to be killed")
        assert proc.wait(timeout=10) == 0
    assert not events(book, "end", "t") and not events(book, "cancelled", "t")  # killed, not stopped
    assert "killed by SIGKILL" in (tmp_path / "worker.log").read_text()
    assert queue["t"].metadata().is_running()  # its lease still holds it…
    again = wait_for(lambda: queue.poll(alive_time=60), timeout=10, what="the lease to expire")
    assert again.key == "t"  # …then it is delivered again


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_second_graceful_stop_is_immediate(
    tmp_path: Path, service: str, queue: perfectqueue.Queue, signum: int
) -> None:
    book, log = tmp_path / "ledger", tmp_path / "worker.log"
    config = write_worker_config(tmp_path / "worker.yaml", service)
    with worker_process(tmp_path, config, log) as proc:
        queue.submit("t", "slow", {"ledger": str(book), "sleep": 60})
        started_pid(book, "t")
        proc.send_signal(signum)
        wait_for(lambda: "event=signal" in log.read_text(), what="the first signal to be taken")
        assert proc.poll() is None and not events(book, "cancelled", "t")  # graceful: still working
        proc.send_signal(signum)
        assert proc.wait(timeout=10) == 0
    assert not events(book, "end", "t")
    assert queue["t"].metadata().status == "waiting"  # released


def test_children_release_their_task_and_exit_when_the_supervisor_dies(
    tmp_path: Path, service: str, queue: perfectqueue.Queue
) -> None:
    book = tmp_path / "ledger"
    config = write_worker_config(tmp_path / "worker.yaml", service)  # alive_time 300
    with worker_process(tmp_path, config, tmp_path / "worker.log") as proc:
        queue.submit("t", "slow", {"ledger": str(book), "sleep": 60})
        child = started_pid(book, "t")
        proc.kill()
        proc.wait(timeout=10)
        wait_for(lambda: not alive(child), timeout=10, what="the orphaned child to exit")
    assert not events(book, "end", "t")
    assert queue["t"].metadata().status == "waiting"  # released, not left to its 300 s lease


# restarts and the command line


def test_a_restart_applies_a_new_processor_count(tmp_path: Path, service: str) -> None:
    path = tmp_path / "worker.yaml"
    config = write_worker_config(path, service, processors=1)
    with worker_process(tmp_path, config, tmp_path / "worker.log") as proc:
        wait_for(lambda: len(children_of(proc.pid)) == 1, what="one child")
        write_worker_config(path, service, processors=3)
        proc.send_signal(signal.SIGUSR1)
        wait_for(lambda: len(children_of(proc.pid)) == 3, timeout=15, what="three children")
        write_worker_config(path, service, processors=1)
        proc.send_signal(signal.SIGUSR1)
        wait_for(lambda: len(children_of(proc.pid)) == 1, timeout=15, what="one child again")
        assert proc.poll() is None


def test_the_cli_imports_r_modules_first_and_reads_the_e_section(
    tmp_path: Path, service: str, queue: perfectqueue.Queue, monkeypatch: pytest.MonkeyPatch
) -> None:
    book = tmp_path / "ledger"
    (tmp_path / "pqsetup.py").write_text("import pqworker\n\npqworker.Dispatcher.route('extra', 'Quick')\n")
    base = yaml.safe_load(write_worker_config(tmp_path / "base.yaml", service).read_text())
    config = tmp_path / "worker.yaml"
    config.write_text(
        yaml.safe_dump({"development": {**base, "label": "dev"}, "production": {**base, "label": "prod"}})
    )
    monkeypatch.delenv("PERFECTQUEUE_ENV", raising=False)  # the worker would default to development
    with worker_process(tmp_path, config, tmp_path / "worker.log", ("-e", "production", "-r", "pqsetup")):
        queue.submit("x", "extra", {"ledger": str(book)})  # routed only by pqsetup
        done = wait_for(lambda: events(book, "end", "x"), what="the task routed by -r")[0]
    assert done[3] == "prod"
