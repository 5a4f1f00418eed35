"""Chaos: producers submit while real workers process, and a seeded loop SIGKILLs worker children,
a service replica (restarted on its port) and the database (restarted on its data directory).

At the end every submitted task is finished, and the handlers' ledger proves that each was
finished exactly once: a handler writes ``done ID PID`` only after ``finish()`` returned success
(or AlreadyFinished, the idempotent answer to a retried finish of its own lease), so two ``done``
lines for one id would mean two leases finished it. ``start`` lines may repeat: at-least-once.

CI runs the short version (15 s of chaos, 300 tasks). The long version:
``PQ_CHAOS_SECONDS=600 PQ_CHAOS_TASKS=5000 .venv/bin/pytest tests/test_chaos.py -s -p no:timeout``
(``PQ_CHAOS_SEED`` picks another sequence of kills; the sequence is printed).
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager, suppress
from pathlib import Path

import httpx
import pytest
import yaml
from private_servers import PrivateServer, mariadb, postgres, private_db  # noqa: F401 - the fixtures
from servers import SERVE, free_port, wait_ready, write_config
from test_worker_harness import children_of, ledger, wait_for, worker_process

import perfectqueue
from perfectqueue.errors import AlreadyExistsError, UnavailableError

pytestmark = pytest.mark.slow

CHAOS_SECONDS = float(os.environ.get("PQ_CHAOS_SECONDS", "15"))
TASKS = int(os.environ.get("PQ_CHAOS_TASKS", "300"))
SEED = int(os.environ.get("PQ_CHAOS_SEED", "7"))
DRAIN_SECONDS = 60 + CHAOS_SECONDS / 2

HANDLERS = """
import os, time
from perfectqueue.errors import AlreadyFinishedError
from perfectqueue.worker import Base, Dispatch


def note(path, word, key):
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, f"{word} {key} {os.getpid()} {time.time():.3f}\\n".encode())
    finally:
        os.close(fd)


class Job(Base):
    def run(self):
        path = self.task.data["ledger"]
        note(path, "start", self.task.key)
        time.sleep(self.task.data["sleep"])
        note(path, "finishing", self.task.key)
        try:
            self.task.finish()  # handed to the acknowledger: the queue answers a little later
        except AlreadyFinishedError:
            pass  # our own finish, retried after its answer was lost
        key = self.task.key
        self.task.when_settled(lambda task: task.outcome == "finished" and note(path, "done", key))


class Dispatcher(Dispatch):
    pass


Dispatcher.route("job", Job)
"""


class Replica:
    """A service process on a fixed port that can be killed and started again."""

    def __init__(self, config: Path, log: Path) -> None:
        self.config, self.log, self.port = config, log, free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(
                [*SERVE, "-c", str(self.config), "--port", str(self.port), "--log-level", "warning"],
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        wait_ready(self.base, self.proc)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=30)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.kill()


@contextmanager
def worker(tmp_path: Path, name: str, base: str) -> Iterator[subprocess.Popen[bytes]]:
    config = tmp_path / f"{name}.yaml"
    settings = {
        "url": base,
        "queue": "q",
        "processors": 2,
        "retries": 10,
        "alive_time": 3,
        "retry_wait": 0,
        "poll_interval": 0.3,
        "task_heartbeat_interval": 1,
        "child_heartbeat_interval": 0.5,
        "child_kill_interval": 0.5,
        "child_fork_frequency_limit": 0.5,
    }
    config.write_text(yaml.safe_dump(settings))
    with worker_process(tmp_path, config, tmp_path / f"{name}.log", app="pqchaos:Dispatcher") as proc:
        yield proc


def produce(base: str, keys: list[str], book: Path, pause: float, acked: set[str], errors: list[str]) -> None:
    """Submit each key until the service acknowledges it (AlreadyExists: a lost answer's retry)."""
    rng = random.Random(keys[0])
    with perfectqueue.open({"url": base, "queue": "q", "retries": 10}) as queue:
        for key in keys:
            deadline = time.monotonic() + 60
            while True:
                try:
                    queue.submit(key, "job", {"ledger": str(book), "sleep": rng.uniform(0.05, 0.3)})
                except AlreadyExistsError:
                    pass
                except UnavailableError as exc:
                    if time.monotonic() > deadline:
                        errors.append(f"{key}: {exc}")
                        return
                    continue
                acked.add(key)
                break
            time.sleep(pause)


def chaos(
    rng: random.Random, db: PrivateServer, replicas: list[Replica], workers: list[subprocess.Popen[bytes]]
) -> list[str]:
    """Kill something every 1 to 2.5 s until CHAOS_SECONDS have passed; what was done, in order."""
    done: list[str] = []
    first = rng.sample(["child", "replica", "database"], 3)  # each kind at least once
    end = time.monotonic() + CHAOS_SECONDS
    while time.monotonic() < end:
        time.sleep(rng.uniform(1.0, 2.5))
        what = first.pop() if first else rng.choices(["child", "replica", "database"], weights=[3, 1, 1])[0]
        if what == "child":
            children = children_of(rng.choice(workers).pid)
            if children:
                victim = rng.choice(sorted(children))
                with suppress(ProcessLookupError):
                    os.kill(victim, signal.SIGKILL)
                done.append(f"child {victim}")
        elif what == "replica":
            replica = rng.choice(replicas)
            replica.kill()
            time.sleep(rng.uniform(0, 1))
            replica.start()
            done.append(f"replica :{replica.port}")
        else:
            db.kill()
            time.sleep(rng.uniform(0.2, 1.5))
            db.start()
            done.append("database")
    return done


def finished_count(replicas: list[Replica]) -> int:
    for replica in replicas:
        with suppress(httpx.HTTPError):
            answer = httpx.get(f"{replica.base}/v1/queues/q", timeout=10)
            if answer.status_code == 200:
                return int(answer.json()["finished"])
    return -1


def test_chaos_every_task_finished_exactly_once(private_db: PrivateServer, tmp_path: Path) -> None:  # noqa: F811
    (tmp_path / "pqchaos.py").write_text(HANDLERS)
    book = tmp_path / "ledger"
    config = write_config(tmp_path / "service.yaml", private_db.url, "pq_chaos")
    replicas = [Replica(config, tmp_path / f"service-{i}.log") for i in range(2)]
    keys = [f"c{i}" for i in range(TASKS)]
    acked: set[str] = set()
    errors: list[str] = []
    rng = random.Random(SEED)
    with ExitStack() as stack:
        for replica in replicas:
            stack.callback(replica.stop)
            replica.start()
        workers = [stack.enter_context(worker(tmp_path, f"w{i}", r.base)) for i, r in enumerate(replicas)]
        pause = CHAOS_SECONDS * 0.7 / (TASKS / 2)
        producers = [
            threading.Thread(
                target=produce, args=(r.base, keys[i::2], book, pause, acked, errors), daemon=True
            )
            for i, r in enumerate(replicas)
        ]
        for thread in producers:
            thread.start()
        actions = chaos(rng, private_db, replicas, workers)
        print(f"chaos (seed {SEED}): {len(actions)} kills: {', '.join(actions)}")
        for thread in producers:
            thread.join(timeout=90)
        assert not errors, errors[:5]
        assert acked == set(keys)
        wait_for(lambda: finished_count(replicas) == TASKS, timeout=DRAIN_SECONDS, what="every task finished")
        assert all(w.poll() is None for w in workers), "a worker supervisor died"
    check_ledger(ledger(book), keys, {a.split()[1] for a in actions if a.startswith("child")})
    assert {"child", "replica", "database"} <= {a.split()[0] for a in actions}, actions


def check_ledger(lines: list[list[str]], keys: list[str], killed: set[str]) -> None:
    """Each task finished by exactly one run: one ``done`` line (written when the queue answered
    the finish), or (when its child was killed between finish() and that answer) none, its last
    line then a killed child's ``finishing``."""
    done = Counter(line[1] for line in lines if line[0] == "done")
    last = {line[1]: line for line in lines}
    twice = {key: n for key, n in done.items() if n > 1}
    assert not twice, f"finished more than once: {list(twice.items())[:5]}"
    unproven = [key for key in keys if key not in done]
    cut = [key for key in unproven if last.get(key, [""])[0] == "finishing" and last[key][2] in killed]
    assert unproven == cut, f"finished without a ledger line: {sorted(set(unproven) - set(cut))[:5]}"
    runs = sum(1 for line in lines if line[0] == "start")
    print(
        f"chaos: {len(keys)} tasks, {runs} runs, {sum(done.values())} finishes in the ledger, "
        f"{len(cut)} finished by a child killed before it could write its line"
    )
