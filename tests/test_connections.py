"""What a connection may cost a replica (CONTRACT.md §4, "Bounded"), against a real service process:
a huge request head, heads and bodies sent slowly, idle connections, too many connections, too
many long-polls. No key is needed for any of these on the loopback address without keys; with keys
the head limits and timeouts come before authentication anyway. See docs/faults.md.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, suppress
from pathlib import Path
from typing import Any

import httpx
import pytest
from sdk_support import wait_for
from servers import service_process, write_config

MIB = 1024 * 1024


@pytest.fixture
def serve(tmp_path: Path) -> Any:
    """Start a service over SQLite with these settings: (base url, pid)."""

    def start(**settings: Any) -> tuple[str, int]:
        config = write_config(tmp_path / "c.yml", f"sqlite:///{tmp_path}/q.sqlite3", "q", **settings)
        base, proc = stack.enter_context(service_process(config, tmp_path / "service.log"))
        return base, proc.pid

    with ExitStack() as stack:
        yield start


def peak_rss(pid: int) -> int:
    """The process's peak resident set so far, in bytes (VmHWM)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM")


def address(base: str) -> tuple[str, int]:
    host, port = base.removeprefix("http://").split(":")
    return host, int(port)


def send_huge_head(base: str, size: int) -> tuple[float, bytes]:
    """Send a GET whose one header is ``size`` bytes, as fast as the server takes it; the
    seconds until the server answered or cut the connection, and what it answered."""
    chunk = memoryview(b"a" * MIB)
    started = time.monotonic()
    with socket.create_connection(address(base), timeout=30) as sock:
        try:
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: ")
            for _ in range(size // MIB):
                sock.sendall(chunk)
        except (BrokenPipeError, ConnectionResetError):
            pass
        try:
            answer = sock.recv(4096)
        except ConnectionResetError:
            answer = b""
    return time.monotonic() - started, answer


def test_a_huge_request_head_is_refused_at_once_and_costs_nothing(serve: Any) -> None:
    """Four parallel 100 MB heads: each cut within a few seconds (on httptools unguarded, each
    cost ~20 s of CPU, growing with the square of the size), the peak RSS grows by less than
    64 MiB (they pushed it past 512 MiB), and /healthz stays quick meanwhile."""
    base, pid = serve()
    before = peak_rss(pid)
    results: list[tuple[float, bytes]] = []
    senders = [
        threading.Thread(target=lambda: results.append(send_huge_head(base, 100 * MIB))) for _ in range(4)
    ]
    for sender in senders:
        sender.start()
    slowest = 0.0
    with httpx.Client(base_url=base, timeout=10) as client:
        while any(sender.is_alive() for sender in senders):
            started = time.monotonic()
            assert client.get("/healthz").status_code == 200
            slowest = max(slowest, time.monotonic() - started)
            time.sleep(0.02)
    for sender in senders:
        sender.join()
    assert len(results) == 4
    assert max(seconds for seconds, _ in results) < 5, results
    assert all(answer == b"" or answer.startswith(b"HTTP/1.1 431 ") for _, answer in results)
    assert slowest < 1.0
    assert peak_rss(pid) - before < 64 * MIB


def test_a_head_over_the_limit_is_answered_431(serve: Any) -> None:
    base, _ = serve(max_head_bytes=4096)
    with socket.create_connection(address(base), timeout=10) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 5000 + b"\r\n\r\n")
        answer = sock.recv(4096)
    assert answer.startswith(b"HTTP/1.1 431 ") and b"max_head_bytes" in answer
    small = b"a" * 3900
    assert httpx.get(base + "/healthz", headers={"X-Small": small.decode()}).status_code == 200


def closed_after(sock: socket.socket, deadline: float) -> tuple[float, bytes]:
    """Wait for the server to close ``sock``: (seconds it took, what it said before)."""
    started, said = time.monotonic(), b""
    sock.settimeout(max(0.01, deadline - started))
    try:
        while chunk := sock.recv(4096):
            said += chunk
    except ConnectionResetError:
        pass
    return time.monotonic() - started, said


@pytest.fixture
def sockets() -> Iterator[list[socket.socket]]:
    opened: list[socket.socket] = []
    yield opened
    for sock in opened:
        sock.close()


def test_slow_heads_and_idle_connections_are_let_go(serve: Any, sockets: list[socket.socket]) -> None:
    """200 slow-head connections (half a head, then a header line every 0.3 s) and 100 that send
    nothing, with head_timeout 1: each answered 408 and closed after about a second (they were
    held for as long as their clients liked)."""
    base, _ = serve(head_timeout=1)
    for i in range(300):
        sockets.append(socket.create_connection(address(base), timeout=5))
        if i < 200:
            sockets[-1].sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
    opened = time.monotonic()
    stop = threading.Event()

    def trickle() -> None:
        while not stop.wait(0.3):
            for sock in sockets[:200]:
                with suppress(OSError):
                    sock.sendall(b"X-Slow: 1\r\n")

    trickler = threading.Thread(target=trickle)
    trickler.start()
    try:
        for sock in sockets:
            _, said = closed_after(sock, opened + 6)
            assert said.startswith(b"HTTP/1.1 408 ") and b"head_timeout" in said
        held = time.monotonic() - opened
    finally:
        stop.set()
        trickler.join()
    assert 0.9 < held < 6


def test_a_slow_body_is_let_go(serve: Any, sockets: list[socket.socket]) -> None:
    base, _ = serve(body_timeout=1)
    sockets.append(socket.create_connection(address(base), timeout=5))
    head = b"POST /v1/queues/q/submit HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
    sockets[0].sendall(head + b"Content-Length: 100\r\n\r\n{")
    seconds, said = closed_after(sockets[0], time.monotonic() + 6)
    assert said.startswith(b"HTTP/1.1 408 ") and b"body_timeout" in said
    assert 0.9 < seconds < 5


def test_an_idle_kept_alive_connection_is_closed(serve: Any, sockets: list[socket.socket]) -> None:
    base, _ = serve(keep_alive_timeout=1)
    sockets.append(socket.create_connection(address(base), timeout=5))
    sockets[0].sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    seconds, said = closed_after(sockets[0], time.monotonic() + 6)
    assert said.startswith(b"HTTP/1.1 200 ")
    assert seconds < 5


def test_connections_past_the_cap_are_refused_with_retry_after(
    serve: Any, sockets: list[socket.socket]
) -> None:
    base, _ = serve(max_connections=20)
    sockets.extend(socket.create_connection(address(base), timeout=5) for _ in range(20))
    refused = wait_for(lambda: (r := httpx.get(base + "/healthz")).status_code == 503 and r)
    assert refused.headers["retry-after"] == "1"
    for sock in sockets:
        sock.close()
    wait_for(lambda: httpx.get(base + "/healthz").status_code == 200)


def test_long_polls_past_the_cap_answer_503(serve: Any) -> None:
    """Five long-polls of 3 s at once on an empty queue with max_long_polls 2: two wait, three are
    refused at once; a poll that does not wait is served meanwhile."""
    base, _ = serve(max_long_polls=2)
    url = base + "/v1/queues/q/poll"
    answers: list[httpx.Response] = []

    def poll() -> None:
        answers.append(httpx.post(url, json={"wait": 3}, timeout=10))

    polls = [threading.Thread(target=poll) for _ in range(5)]
    for thread in polls:
        thread.start()
    wait_for(lambda: len(answers) == 3)
    assert httpx.post(url, json={"wait": 0}).status_code == 200
    for thread in polls:
        thread.join()
    refused = [answer for answer in answers if answer.status_code == 503]
    assert [answer.status_code for answer in answers].count(200) == 2 and len(refused) == 3
    assert all(answer.headers["retry-after"] == "1" for answer in refused)
    assert all("max_long_polls" in answer.json()["detail"] for answer in refused)
    assert httpx.post(url, json={"wait": 0.1}).status_code == 200
