"""The task commands (list, submit, force_finish, show, stats) end to end: real
``python -m perfectqueue`` processes against a real service and straight against the database
(``--backend rdb_compat``), over SQLite and MariaDB."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from sdk_support import Proxy, Target, clean_environ, config, target
from servers import free_port

import perfectqueue

__all__ = ["config", "target"]  # the fixtures


def run(*args: str, env: dict[str, str] | None = None, answer: str = "") -> subprocess.CompletedProcess[str]:
    """The command, its stdin ``answer`` (empty: as without a terminal)."""
    return subprocess.run(
        [sys.executable, "-m", "perfectqueue", *args],
        input=answer,
        capture_output=True,
        text=True,
        timeout=60,
        env={**clean_environ(), **(env or {})},
        check=False,
    )


def ok(*args: str) -> str:
    done = run(*args)
    assert done.returncode == 0, done.stderr
    assert done.stderr == "", done.stderr
    return done.stdout


def ok_all(*commands: list[str]) -> list[str]:
    """Run independent commands at once (each is a whole process start-up); their outputs."""
    with ThreadPoolExecutor(len(commands)) as pool:
        return list(pool.map(lambda command: ok(*command), commands))


def flags(config: dict[str, Any]) -> list[str]:
    """The command-line flags that select the queue of ``config``."""
    if config.get("type") == "rdb_compat":
        return ["--backend", "rdb_compat", "--url", config["url"], "--table", config["table"]]
    return ["--url", config["url"], "--queue", config["queue"]]


def json_lines(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines()]


def assert_one_line_error(done: subprocess.CompletedProcess[str], *words: str) -> None:
    assert done.returncode == 2
    assert done.stdout == ""
    lines = done.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("perfectqueue: error: "), done.stderr
    assert "Traceback" not in done.stderr
    for word in words:
        assert word in lines[0]


def test_submit_show_list_finish_and_stats(config: dict[str, Any]) -> None:
    q = flags(config)
    run_at = int(time.time()) + 3600
    submitted = ok("submit", "a1", "mail", '{"to": "x@example.com"}', "-u", "acme", "-m", "3", *q)
    assert submitted == "submitted a1\n"
    assert ok_all(
        ["submit", "b2", "resize", '{"w": 640}', *q],
        ["submit", "c3", "mail", "{}", "--user", "zeta", "--time", str(run_at), *q],
    ) == ["submitted b2\n", "submitted c3\n"]

    shown_text, table_text, listed_text, mail_text, zeta_text = ok_all(
        ["show", "a1", *q],
        ["list", *q],
        ["list", "--json", *q],
        ["list", "--json", "--type", "mail", *q],
        ["list", "--json", "--user", "zeta", *q],
    )
    shown = json.loads(shown_text)
    assert {k: shown[k] for k in ("key", "type", "user", "status", "data")} == {
        "key": "a1",
        "type": "mail",
        "user": "acme",
        "status": "waiting",
        "data": {"to": "x@example.com"},
    }
    assert shown["created_at"].endswith("Z") and shown["due_at"].endswith("Z") and "timeout" not in shown
    with perfectqueue.open(config) as queue:
        assert queue["a1"].metadata().max_running == 3

    table = table_text.splitlines()
    assert table[0].split() == ["key", "type", "user", "state", "created_at", "when", "data"]
    rows = {line.split()[0]: line for line in table[1:]}
    assert set(rows) == {"a1", "b2", "c3"}
    assert "acme" in rows["a1"] and "waiting" in rows["a1"] and '{"to": "x@example.com"}' in rows["a1"]

    listed = json_lines(listed_text)
    assert [t["key"] for t in listed] == ["a1", "b2", "c3"]
    assert listed[1] == {**listed[1], "type": "resize", "user": None, "data": {"w": 640}}
    at = datetime.fromtimestamp(run_at, UTC).isoformat().replace("+00:00", "Z")
    assert (listed[2]["user"], listed[2]["state"], listed[2]["due_at"]) == ("zeta", "scheduled", at)
    assert f"due {at.replace('T', ' ')}" in rows["c3"]
    assert [t["key"] for t in json_lines(mail_text)] == ["a1", "c3"]
    assert [t["key"] for t in json_lines(zeta_text)] == ["c3"]

    assert ok_all(["force_finish", "a1", *q], ["force-finish", "b2", *q]) == [
        "finished a1\n",
        "finished b2\n",
    ]
    finished = json_lines(ok("list", "--json", "--status", "finished", *q))
    assert [(t["key"], t["status"]) for t in finished] == [("a1", "finished"), ("b2", "finished")]
    name = config.get("queue") or config["table"]
    stats = f"{name}: waiting 0, leased 0, scheduled 1, finished 2, dead 0, cancelled 0\n"
    assert ok("stats", *q) == stats  # c3 waits for its time


ON_SQLITE = pytest.mark.parametrize("target", ["http-sqlite", "rdb_compat-sqlite"], indirect=True)


@ON_SQLITE
def test_pause_and_resume_a_queue(config: dict[str, Any]) -> None:
    q = flags(config)
    ok("submit", "p1", "t", "{}", *q)
    try:
        paused = ok("pause", *q)
        assert "waiting 1" in paused and "(paused since 20" in paused
        with perfectqueue.open(config) as queue:
            assert queue.poll() is None  # polls get nothing
            queue.submit("p2", "t")  # submits are accepted
            assert queue.stats().paused
        assert "(paused since" in ok("stats", *q)
    finally:
        resumed = ok("resume", *q)
    assert "waiting 2" in resumed and "paused" not in resumed
    with perfectqueue.open(config) as queue:
        assert sorted(t.key for t in queue.poll_multi(max=5)) == ["p1", "p2"]
        assert not queue.resume().paused


@ON_SQLITE
def test_bulk_asks_then_requeues_or_cancels_every_selected_task(config: dict[str, Any]) -> None:
    q = flags(config)
    with perfectqueue.open(config) as queue:
        for key, task_type in (("d1", "mail"), ("d2", "mail"), ("d3", "report")):
            queue.submit(key, task_type, max_attempts=1)
            task = queue.poll()
            assert task is not None
            task.retry(error="boom")  # its only attempt: dead
        queue.submit("w1", "report")
    requeue = ["bulk", "requeue", "--status", "dead", "--type", "mail", *q]
    declined = run(*requeue)  # no answer: nothing is done
    assert (declined.returncode, declined.stdout) == (1, "nothing done\n")
    assert declined.stderr.startswith("requeue every dead task of type 'mail' of queue ")
    assert declined.stderr.endswith("? [y/N] ")
    assert run(*requeue, answer="n\n").stdout == "nothing done\n"
    with perfectqueue.open(config) as queue:
        assert queue.stats().dead == 3
    confirmed = run(*requeue, answer="y\n")
    assert (confirmed.returncode, confirmed.stdout) == (0, "requeued 2 tasks\n")
    assert ok("bulk", "cancel", "--status", "waiting", "--prefix", "d", "--yes", *q) == "cancelled 2 tasks\n"
    refused = run("bulk", "requeue", "--status", "cancelled", "-y", *q)  # each answered as alone
    assert (refused.returncode, refused.stdout) == (1, "requeued 0 tasks, 2 failed\n")
    assert [line.split(":")[:2] for line in refused.stderr.splitlines()] == [
        ["d1", " AlreadyFinishedError"],
        ["d2", " AlreadyFinishedError"],
    ]
    with perfectqueue.open(config) as queue:
        states = {t.key: t.status for t in queue.tasks()}
    assert states == {"d1": "cancelled", "d2": "cancelled", "d3": "dead", "w1": "waiting"}


@ON_SQLITE
def test_errors_are_one_line_and_exit_2(config: dict[str, Any]) -> None:
    q = flags(config)
    assert ok("list", "--json", *q) == ""
    assert len(ok("list", *q).splitlines()) == 1  # the header
    ok("submit", "dup", "t", '{"v": 1}', *q)
    assert_one_line_error(run("submit", "dup", "t", '{"v": 2}', *q), "already exists")
    assert_one_line_error(run("submit", "bad", "t", "{not json", *q), "JSON")
    assert_one_line_error(run("show", "missing", *q), "does not exist")
    ok("force_finish", "dup", *q)
    assert_one_line_error(run("force-finish", "dup", *q), "already finished")
    stored = json_lines(ok("list", "--json", *q))
    assert [(t["key"], t["data"]) for t in stored] == [("dup", {"v": 1})]  # nothing else changed


@ON_SQLITE
def test_a_config_file_with_sections_chosen_by_e(
    config: dict[str, Any], target: Target, tmp_path: Path
) -> None:
    other = target.fresh()
    try:
        sections = {}
        for env, chosen in (("development", config), ("production", other)):
            keys = ("type", "url", "table") if chosen.get("type") == "rdb_compat" else ("url", "queue")
            sections[env] = {key: chosen[key] for key in keys}
        path = tmp_path / "perfectqueue.yml"
        path.write_text(yaml.safe_dump(sections))
        ok("submit", "in-prod", "t", "{}", "-c", str(path), "-e", "production")
        ok("submit", "in-dev", "t", "{}", "-c", str(path))  # development is the default section
        assert [t["key"] for t in json_lines(ok("list", "--json", *flags(other)))] == ["in-prod"]
        assert [t["key"] for t in json_lines(ok("list", "--json", *flags(config)))] == ["in-dev"]
        assert "waiting 1" in ok("stats", "--config", str(path), "--environment", "production")
    finally:
        target.recycle(other)


def test_an_unreachable_service_is_one_line(tmp_path: Path) -> None:
    path = tmp_path / "unreachable.yml"
    path.write_text(yaml.safe_dump({"url": f"http://127.0.0.1:{free_port()}", "queue": "q", "retries": 0}))
    assert_one_line_error(run("stats", "-c", str(path)), "cannot reach the service")


@pytest.mark.parametrize("target", ["http-sqlite"], indirect=True)
def test_the_token_from_the_environment_is_sent(config: dict[str, Any]) -> None:
    with Proxy(config["url"]) as proxy:
        done = run("stats", "--url", proxy.url, "--queue", config["queue"], env={"PERFECTQUEUE_TOKEN": "t0k"})
    assert done.returncode == 0, done.stderr
    assert [seen.header("authorization") for seen in proxy.seen] == ["Bearer t0k"]
    assert (proxy.seen[0].header("user-agent") or "").startswith("perfectqueue-python/")


@ON_SQLITE
def test_list_dead_shows_the_last_error(config: dict[str, Any]) -> None:
    q = flags(config)
    ok("submit", "doomed", "t", "{}", "-a", "1", *q)
    with perfectqueue.open(config) as queue:
        task = queue.poll()
        assert task is not None and task.key == "doomed"
        task.retry(error="DiskFull: no space left\non /var")  # its only attempt: dead
    ok("submit", "fine", "t", "{}", *q)

    table_text, listed_text, all_text = ok_all(
        ["list", "--status", "dead", *q], ["list", "--status", "dead", "--json", *q], ["list", "--json", *q]
    )
    header, *rows = table_text.splitlines()
    assert header.split() == ["key", "type", "user", "state", "created_at", "when", "data", "last_error"]
    assert f"ended {datetime.now(UTC):%Y-%m-%d}" in rows[0]
    assert [row.split()[0] for row in rows] == ["doomed"]
    assert rows[0].endswith("DiskFull: no space left on /var")  # one line per task
    (listed,) = json_lines(listed_text)
    assert (listed["status"], listed["last_error"]) == ("dead", "DiskFull: no space left\non /var")
    assert {t["key"]: t["last_error"] for t in json_lines(all_text)} == {
        "doomed": "DiskFull: no space left\non /var",
        "fine": None,
    }
    assert "last_error" not in ok("list", *q).splitlines()[0]  # only the dead have one to show
