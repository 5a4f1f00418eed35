"""The signal table, sent for real to a real worker process talking to a real service (SQLite)."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
from test_worker_harness import events, wait_for, worker_process, write_worker_config

import perfectqueue

pytestmark = pytest.mark.slow


def status(base: str, key: str) -> str:
    with perfectqueue.open({"url": base, "queue": "q"}) as queue:
        return queue[key].metadata().status


def submit(base: str, key: str, task_type: str, **data: object) -> None:
    with perfectqueue.open({"url": base, "queue": "q"}) as queue:
        queue.submit(key, task_type, data)


def exited(proc: subprocess.Popen[bytes], timeout: float) -> int:
    return proc.wait(timeout=timeout)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_graceful_stop_finishes_the_task_in_hand_and_takes_no_more(
    tmp_path: Path, service: str, signum: int
) -> None:
    book = tmp_path / "ledger"
    config = write_worker_config(tmp_path / "worker.yaml", service)
    with worker_process(tmp_path, config, tmp_path / "worker.log") as proc:
        submit(service, "slow-1", "slow", ledger=str(book), sleep=2)
        wait_for(lambda: events(book, "start", "slow-1"), what="the task to start")
        proc.send_signal(signum)
        time.sleep(0.2)
        submit(service, "quick-2", "quick", ledger=str(book))
        assert exited(proc, 30) == 0
    assert events(book, "end", "slow-1")
    assert status(service, "slow-1") == "finished"
    assert not events(book, "start", "quick-2")
    assert status(service, "quick-2") == "waiting"


def test_quit_releases_the_task_in_hand_and_exits_at_once(tmp_path: Path, service: str) -> None:
    book = tmp_path / "ledger"
    config = write_worker_config(tmp_path / "worker.yaml", service)
    with worker_process(tmp_path, config, tmp_path / "worker.log") as proc:
        submit(service, "slow-1", "slow", ledger=str(book), sleep=60)
        wait_for(lambda: events(book, "start", "slow-1"), what="the task to start")
        started = time.monotonic()
        proc.send_signal(signal.SIGQUIT)
        assert exited(proc, 15) == 0
        assert time.monotonic() - started < 5
    assert not events(book, "end", "slow-1")
    assert status(service, "slow-1") == "waiting"  # released: deliverable again at once


@pytest.mark.parametrize("processor_type", ["process", "thread"])
def test_an_idle_worker_stops_at_once_without_waiting_out_its_long_poll(
    tmp_path: Path, service: str, processor_type: str
) -> None:
    log = tmp_path / "worker.log"
    config = write_worker_config(
        tmp_path / "worker.yaml", service, poll_interval=3, processor_type=processor_type
    )
    with worker_process(tmp_path, config, log) as proc:
        wait_for(lambda: "event=child_start" in log.read_text(), what="the child to start")
        time.sleep(0.5)  # into its long-poll (were it not yet, the stop would be as quick)
        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        assert exited(proc, 15) == 0
        assert time.monotonic() - started < 1.0  # not the poll_interval (3 s) the poll had left
    submit(service, "late", "quick", ledger=str(tmp_path / "ledger"))
    time.sleep(3)  # the abandoned long-poll's wait ends meanwhile, on the service's side
    assert status(service, "late") == "waiting"  # given back (or never leased), not leased to nobody


@pytest.mark.parametrize("signum", [signal.SIGUSR1, signal.SIGHUP])
def test_restart_reloads_the_configuration_in_new_children(tmp_path: Path, service: str, signum: int) -> None:
    book = tmp_path / "ledger"
    config = write_worker_config(tmp_path / "worker.yaml", service, label="one")
    with worker_process(tmp_path, config, tmp_path / "worker.log") as proc:
        submit(service, "a", "quick", ledger=str(book))
        first = wait_for(lambda: events(book, "end", "a"), what="task a")[0]
        assert first[3] == "one"
        write_worker_config(tmp_path / "worker.yaml", service, label="two")
        proc.send_signal(signum)
        time.sleep(0.5)
        submit(service, "b", "quick", ledger=str(book))
        second = wait_for(lambda: events(book, "end", "b"), what="task b")[0]
        assert second[3] == "two"
        assert second[2] != first[2]  # a new child process
        assert proc.poll() is None


def test_a_graceful_restart_lets_the_task_in_hand_finish(tmp_path: Path, service: str) -> None:
    book = tmp_path / "ledger"
    config = write_worker_config(tmp_path / "worker.yaml", service)
    with worker_process(tmp_path, config, tmp_path / "worker.log") as proc:
        submit(service, "slow-1", "slow", ledger=str(book), sleep=2)
        wait_for(lambda: events(book, "start", "slow-1"), what="the task to start")
        proc.send_signal(signal.SIGUSR1)
        wait_for(lambda: events(book, "end", "slow-1"), what="the task to end")
        wait_for(lambda: status(service, "slow-1") == "finished", what="the task to be finished")
        assert len(events(book, "start", "slow-1")) == 1


def test_usr2_reopens_the_log_file(tmp_path: Path, service: str) -> None:
    book, log = tmp_path / "ledger", tmp_path / "app.log"
    config = write_worker_config(tmp_path / "worker.yaml", service, log=str(log))
    with worker_process(tmp_path, config, tmp_path / "worker.out") as proc:
        submit(service, "a", "quick", ledger=str(book))
        wait_for(lambda: log.exists() and "id=a " in log.read_text(), what="task a in the log")
        log.rename(tmp_path / "app.log.1")
        proc.send_signal(signal.SIGUSR2)
        wait_for(log.exists, what="a new log file")
        submit(service, "b", "quick", ledger=str(book))
        wait_for(lambda: "event=finish id=b " in log.read_text(), what="task b in the new log")
        assert "id=b " not in (tmp_path / "app.log.1").read_text()


def test_cont_alone_changes_nothing(tmp_path: Path, service: str) -> None:
    """A terminal's Ctrl-Z then `fg` (or `timeout`) sends CONT: without ``replace_on_cont`` the
    worker goes on as it was, with no second supervisor."""
    book, log = tmp_path / "ledger", tmp_path / "app.log"
    config = write_worker_config(tmp_path / "worker.yaml", service, log=str(log))
    with worker_process(tmp_path, config, tmp_path / "worker.out") as proc:
        submit(service, "a", "quick", ledger=str(book))
        wait_for(lambda: events(book, "end", "a"), what="task a")
        proc.send_signal(signal.SIGCONT)
        wait_for(lambda: "signal=SIGCONT" in log.read_text(), what="the signal in the log")
        submit(service, "b", "quick", ledger=str(book))
        done = wait_for(lambda: events(book, "end", "b"), what="task b")[0]
        assert proc.poll() is None and int(done[2]) != proc.pid  # a child of the same supervisor
        assert "event=replaced" not in log.read_text()


@pytest.mark.parametrize("signum", [signal.SIGCONT, signal.SIGWINCH])
def test_binary_replace_starts_the_same_command_and_stops_the_old(
    tmp_path: Path, service: str, signum: int
) -> None:
    book, log = tmp_path / "ledger", tmp_path / "app.log"
    config = write_worker_config(tmp_path / "worker.yaml", service, log=str(log), replace_on_cont=True)
    with worker_process(tmp_path, config, tmp_path / "worker.out") as proc:
        submit(service, "a", "quick", ledger=str(book))
        wait_for(lambda: events(book, "end", "a"), what="task a")
        proc.send_signal(signum)
        assert exited(proc, 15) == 0
        line = wait_for(lambda: [x for x in log.read_text().splitlines() if "event=replaced" in x])[0]
        new_pid = int(line.split("event=replaced pid=")[1].split()[0])
        try:
            submit(service, "b", "quick", ledger=str(book))
            done = wait_for(lambda: events(book, "end", "b"), what="task b, by the new process")[0]
            assert int(done[2]) != proc.pid
        finally:
            os.kill(new_pid, signal.SIGQUIT)
            wait_for(lambda: not Path(f"/proc/{new_pid}").exists() or _zombie(new_pid), what="the new one")


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True
