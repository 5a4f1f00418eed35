"""Log lines: JSON from a real service (``--log-format json``) with the request id, queue and task id
on each line of a request; the request id header; the readable text format."""

from __future__ import annotations

import json
import logging
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
from servers import service_process, write_config

from perfectqueue.cli import build_parser
from perfectqueue.logformat import ContextFilter, JsonFormatter, TextFormatter, context, escape, set_context
from perfectqueue.worker import logs as worker_logs


def test_a_json_service_log_has_one_object_a_line_with_each_request_s_context(
    tmp_path: Path, table_name: str
) -> None:
    config = write_config(tmp_path / "pq.yml", f"sqlite:///{tmp_path / 'q.sqlite3'}", table_name)
    log = tmp_path / "service.log"
    with (
        service_process(config, log, args=["--log-format", "json", "--log-level", "info"]) as (base, _),
        httpx.Client(base_url=base, timeout=10) as http,
    ):
        submitted = http.post(
            "/v1/queues/q/submit", json={"id": "t-1", "type": "t"}, headers={"X-Request-ID": "req-42"}
        )
        assert submitted.status_code == 201
        assert submitted.headers["x-request-id"] == "req-42"
        bad = http.get("/v1/queues/q/tasks/t-1", headers={"X-Request-ID": "not a token"})
        assert bad.status_code == 200
        generated = bad.headers["x-request-id"]
        assert re.fullmatch(r"[0-9a-f]{32}", generated), "an unusable id is replaced"
        (task,) = http.post("/v1/queues/q/poll", json={"max": 1}).json()["tasks"]
        assert http.post("/v1/queues/q/finish", json={"id": "t-1", "lease": "1"}).status_code == 409
        assert http.post("/v1/queues/q/finish", json={"id": "t-1", "lease": task["lease"]}).status_code == 204
        assert http.get("/nowhere").status_code == 404

    entries = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
    assert all({"timestamp", "level", "logger", "message"} <= set(e) for e in entries)
    assert any("Uvicorn running on" in e["message"] for e in entries), "uvicorn's lines are JSON too"
    access = [e for e in entries if e["logger"] == "perfectqueue.access"]
    by_id = {e["request_id"]: e for e in access}
    assert subset(
        by_id["req-42"],
        method="POST",
        path="/v1/queues/q/submit",
        status=201,
        queue="q",
        task_id="t-1",
        message=by_id["req-42"]["message"],
    )
    assert subset(by_id[generated], method="GET", status=200, queue="q", task_id="t-1")
    finishes = [e for e in access if e["path"] == "/v1/queues/q/finish"]
    assert [(e["status"], e["task_id"]) for e in finishes] == [(409, "t-1"), (204, "t-1")]
    assert subset(next(e for e in access if e["path"] == "/nowhere"), status=404)
    assert "queue" not in next(e for e in access if e["path"] == "/nowhere")
    assert len({e["request_id"] for e in access}) == len(access), "one id per request"


def test_the_text_format_puts_the_context_at_the_end_of_the_line() -> None:
    record = make_record("stored", exc=None)
    assert (
        TextFormatter()
        .format(record)
        .endswith("perfectqueue.service: stored [request_id=r1 queue=q task_id=a]")
    )
    plain = logging.makeLogRecord({"msg": "no request", "levelname": "INFO", "name": "x"})
    ContextFilter().filter(plain)
    assert TextFormatter().format(plain).endswith("x: no request")


def test_the_json_format_carries_context_fields_and_the_traceback() -> None:
    try:
        raise ValueError("bad")
    except ValueError as exc:
        record = make_record("failed", exc=exc)
    entry = json.loads(JsonFormatter().format(record))
    assert subset(entry, level="warning", logger="perfectqueue.service", message="failed", request_id="r1")
    assert subset(entry, queue="q", task_id="a", status=503)
    assert entry["timestamp"].endswith("+00:00")
    assert "ValueError: bad" in entry["error"]


HOSTILE = "a\nb\rc\x00d\x1be\x7ff\x85g\u2028h\u2029i\\j\tk\u202el\u2066m\u200fn"
ESCAPED = "a\\nb\\rc\\x00d\\x1be\\x7ff\\x85g\\u2028h\\u2029i\\\\j\\tk\\u202el\\u2066m\\u200fn"


def test_the_text_format_escapes_control_characters_of_the_message_and_the_context() -> None:
    assert escape(HOSTILE) == ESCAPED
    assert escape("plain ünïcode ✓") == "plain ünïcode ✓"
    with context(request_id="r1", queue=HOSTILE):
        record = logging.getLogger("x").makeRecord("x", logging.INFO, __file__, 1, "GET %s", (HOSTILE,), None)
        ContextFilter().filter(record)
    line = TextFormatter().format(record)
    assert line.endswith(f"x: GET {ESCAPED} [request_id=r1 queue={ESCAPED}]")
    assert len(line.splitlines()) == 1
    worker = worker_logs.FORMAT
    assert (
        TextFormatter(worker)
        .format(record)
        .endswith(f"pid={record.process}: GET {ESCAPED} [request_id=r1 queue={ESCAPED}]")
    )


def test_the_text_format_keeps_a_traceback_on_its_own_lines() -> None:
    try:
        raise ValueError("bad\x1b[2J\nvalue")
    except ValueError as exc:
        record = make_record("failed\nforged", exc=exc)
    first, *trace = TextFormatter().format(record).split("\n")
    assert first.endswith("perfectqueue.service: failed\\nforged [request_id=r1 queue=q task_id=a]")
    assert trace[0] == "Traceback (most recent call last):"
    assert trace[-2:] == ["ValueError: bad\\x1b[2J", "value"], "line breaks kept, other controls escaped"


def test_the_json_format_escapes_what_json_leaves_raw_but_line_readers_split_on() -> None:
    with context(request_id="r1", queue=HOSTILE):
        record = logging.getLogger("x").makeRecord("x", logging.INFO, __file__, 1, "GET %s", (HOSTILE,), None)
        ContextFilter().filter(record)
    line = JsonFormatter().format(record)
    assert len(line.splitlines()) == 1
    assert not set(line) & {"\x7f", "\x85", "\u2028", "\u2029", "\u202e", "\u2066", "\u200f"}
    assert subset(json.loads(line), message=f"GET {HOSTILE}", queue=HOSTILE)


PREPARE = """
import sys
from perfectqueue.errors import ConfigError
from perfectqueue.service.config import Settings
from perfectqueue.service.server import prepare_logs
try:
    prepare_logs(Settings(host="0.0.0.0", insecure=sys.argv[1] == "insecure", log_format=sys.argv[2]))
except ConfigError as exc:
    print("refused:", exc)
"""


def prepare(*args: str) -> subprocess.CompletedProcess[str]:
    """``serve``'s start-up up to its exposure check, which binds nothing, in a process of its own."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PERFECTQUEUE_")}
    return subprocess.run(
        [sys.executable, "-c", PREPARE, *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        check=True,
    )


def test_the_insecure_warning_is_written_in_the_configured_log_format() -> None:
    (line,) = prepare("insecure", "json").stderr.splitlines()
    entry = json.loads(line)
    assert subset(entry, level="warning", logger="perfectqueue.service")
    assert entry["message"].startswith("serving on 0.0.0.0 WITHOUT authentication")
    (text,) = prepare("insecure", "text").stderr.splitlines()
    assert " WARNING perfectqueue.service: serving on 0.0.0.0 WITHOUT authentication" in text
    refused = prepare("secure", "json")
    assert refused.stdout.startswith("refused: refusing to serve on 0.0.0.0") and not refused.stderr


def test_serve_takes_a_log_format_flag() -> None:
    assert build_parser().parse_args(["serve", "--log-format", "json"]).log_format == "json"


def make_record(message: str, exc: BaseException | None) -> logging.LogRecord:
    """A record logged inside a request whose store call named its task."""
    with context(request_id="r1", queue="q"):
        set_context(task_id="a", ignored=None)
        record = logging.getLogger("perfectqueue.service").makeRecord(
            "perfectqueue.service",
            logging.WARNING,
            __file__,
            1,
            message,
            (),
            (type(exc), exc, exc.__traceback__) if exc else None,
            extra={"status": 503},
        )
        ContextFilter().filter(record)
    return record


def subset(entry: dict[str, Any], **expected: Any) -> bool:
    assert {k: entry.get(k) for k in expected} == expected, entry
    return True
