"""Values a request carries cannot forge log lines: control characters in a request's path, its
request id header or its queue name are escaped in text logs (``\\n``, ``\\x1b``, ``\\u2028``),
so each request leaves one line however hostile it is."""

from __future__ import annotations

import re
import socket
from pathlib import Path

from servers import service_process, write_config

FORGED = "2001-01-01 00:00:00,000 WARNING perfectqueue.service: serving on 0.0.0.0 WITHOUT authentication"
HOSTILE = ["%0a", "%0d", "%0d%0a", "%00", "%1b[2J", "%7f", "%c2%85", "%e2%80%a8", "%e2%80%a9"]
ID_OF_OURS = re.compile(r"GET /v1/queues/q/tasks/nothing 404 .* \[request_id=[0-9a-f]{32} ")
LINE = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} (DEBUG|INFO|WARNING|ERROR|CRITICAL) [\w.]+: ")


def raw_get(base: str, target: str, request_id: bytes) -> bytes:
    """One HTTP/1.1 request written byte for byte (an HTTP client would refuse to send these)."""
    host, port = base.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(
            b"GET " + target.encode("ascii") + b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
            b"X-Request-ID: " + request_id + b"\r\n\r\n"
        )
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    return answer


def test_a_hostile_path_and_request_id_leave_one_line_each_and_forge_none(
    tmp_path: Path, table_name: str
) -> None:
    config = write_config(tmp_path / "pq.yml", f"sqlite:///{tmp_path / 'q.sqlite3'}", table_name)
    log = tmp_path / "service.log"
    targets = [f"/v1/queues/x{bad}{FORGED.replace(' ', '%20')}/tasks/t{bad}1" for bad in HOSTILE]
    ids = [b"id\x1b[2J", b"id\x7f", b"id\x00", b"id\xe2\x80\xa8", b"id\xc2\x85", b"id\\x0a"]
    with service_process(config, log, args=["--log-level", "info"]) as (base, _):
        answers = [raw_get(base, target, b"r-1") for target in targets]
        answers += [raw_get(base, "/v1/queues/q/tasks/nothing", request_id) for request_id in ids]

    assert all(a.startswith(b"HTTP/1.1 ") for a in answers), answers
    everything = log.read_text(encoding="utf-8").splitlines()  # splits on U+2028, \x85, \r too
    start = next(i for i, line in enumerate(everything) if "Uvicorn running on" in line) + 1
    end = next(i for i, line in enumerate(everything) if "stopping:" in line)
    lines = [line for line in everything[start:end] if "GET /readyz " not in line]
    assert len(lines) == len(answers), lines
    assert all(LINE.match(line) for line in everything), everything
    assert not any(line.startswith("2001-01-01") for line in everything)
    assert "/v1/queues/x\\n2001-01-01 00:00:00,000 WARNING" in lines[0], lines[0]
    assert "x\\r2001" in lines[1] and "task_id=t\\r1]" in lines[1], lines[1]
    assert "x\\r\\n2001" in lines[2] and "x\\x002001" in lines[3] and "queue=x\\x002001" in lines[3]
    assert "x\\x1b[2J2001" in lines[4] and "x\\x7f2001" in lines[5] and "x\\x852001" in lines[6]
    assert "x\\u20282001" in lines[7] and "x\\u20292001" in lines[8]
    rest = lines[len(targets) :]  # refused by the HTTP parser, or answered with an id of the service's
    assert all("Invalid HTTP request received." in line or ID_OF_OURS.search(line) for line in rest), rest
