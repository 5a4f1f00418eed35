"""A real worker (forked children) against a real service, on SQLite and MariaDB: a task whose
worker is killed on every attempt ends dead after max_attempts (each expired lease counting), and
a running handler is interrupted by a cancel; the command line finds, requeues and cancels them."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
from conftest import BACKENDS, SERVERS, drop_table, require_server
from servers import running_service, write_config
from test_worker_harness import events, wait_for, worker_process, write_worker_config

import perfectqueue
from perfectqueue.cli import main
from perfectqueue.service.store import Database
from perfectqueue.service.store.queue import LEASE_EXPIRED

OUTCOMES_MODULE = """
import os, signal, time
from perfectqueue.errors import CancelRequestedError
from perfectqueue.worker import Base, Dispatch


def note(task, word):
    fd = os.open(task.data["ledger"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, f"{word} {task.key} {task.attempts}\\n".encode())
    finally:
        os.close(fd)


class Killed(Base):
    def run(self):
        note(self.task, "start")
        os.kill(os.getpid(), signal.SIGKILL)


class Long(Base):
    def run(self):
        note(self.task, "start")
        try:
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                time.sleep(0.05)
        except CancelRequestedError:
            note(self.task, "interrupted")
            raise


class Dispatcher(Dispatch):
    pass


Dispatcher.route("killed", Killed)
Dispatcher.route("long", Long)
"""


@pytest.mark.parametrize("backend", BACKENDS)
def test_killed_every_time_ends_dead_and_a_cancel_interrupts_a_child(
    backend: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = require_server(backend) if backend in SERVERS else f"sqlite:///{tmp_path / 'q.sqlite3'}"
    table = "t_" + uuid.uuid4().hex[:16]
    (tmp_path / "pqoutcomes.py").write_text(OUTCOMES_MODULE)
    ledger = tmp_path / "ledger"
    service_config = write_config(tmp_path / "service.yml", url, table)
    try:
        with running_service(service_config, tmp_path / "service.log") as base:
            worker_config = write_worker_config(
                tmp_path / "worker.yml",
                base,
                processors=2,
                alive_time=2,
                task_heartbeat_interval=0.3,
            )
            log = tmp_path / "worker.log"
            q = ["--url", base, "--queue", "q"]
            with (
                perfectqueue.open({"url": base, "queue": "q"}) as queue,
                worker_process(tmp_path, worker_config, log, app="pqoutcomes:Dispatcher"),
            ):
                queue.submit("killed", "killed", {"ledger": str(ledger)}, max_attempts=2)
                queue.submit("long", "long", {"ledger": str(ledger)})
                wait_for(lambda: events(ledger, "start", "long"), what="the long task to start")
                assert main(["cancel", "long", *q]) == 0
                wait_for(lambda: queue["long"].metadata().status == "cancelled", what="the cancel")
                assert [line[2] for line in events(ledger, "interrupted", "long")] == ["1"]

                dead = wait_for(lambda: queue["killed"].metadata().is_dead() and queue["killed"].metadata())
                assert (dead.attempts, dead.last_error) == (2, LEASE_EXPIRED)
                assert [line[2] for line in events(ledger, "start", "killed")] == ["1", "2"]
                capsys.readouterr()
                assert main(["list", "--status", "dead", "--json", *q]) == 0
                listed = capsys.readouterr().out
                assert '"key": "killed"' in listed and '"attempts": 2' in listed
                assert main(["requeue", "killed", *q]) == 0
                wait_for(lambda: len(events(ledger, "start", "killed")) == 3, what="the requeued task")
                assert events(ledger, "start", "killed")[-1][2] == "1"  # its attempts were reset
                assert main(["stats", *q]) == 0
    finally:
        db = Database(url)
        drop_table(db, table)
        db.dispose()
