"""Answers have a byte budget (CONTRACT.md §4, "Bounded"): 600 tasks whose data each inflates to
500 KiB (gzip rows: what a submit key may store) against a real service process. A listing leaves
the data out unless asked; with it, and in a poll, an answer stops at ``max_response_bytes`` (the
rest stay waiting or come with the next cursor); the replica's peak RSS stays under the Helm
chart's 512 MiB. See docs/faults.md.
"""

from __future__ import annotations

import gzip
import threading
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa
from servers import service_process, write_config
from test_connections import peak_rss

from perfectqueue.service.store import Database, QueueStore

MIB = 1024 * 1024
TASKS = 600
BUDGET = 8 * MIB  # the default max_response_bytes
DATA = 500 * 1024


def fill(url: str, count: int) -> None:
    """``count`` waiting tasks whose data is stored gzipped and inflates to DATA bytes each."""
    blob = gzip.compress(b'{"pad":"' + b"a" * DATA + b'","type":"t"}', mtime=0)
    db = Database(url)
    try:
        store = QueueStore(db, "q")
        rows = [
            {"id": f"t{i:04d}", "timeout": 1_400_000_000, "data": blob, "created_at": 1} for i in range(count)
        ]
        with db.engine.begin() as conn:
            conn.execute(sa.insert(store.table), rows)
    finally:
        db.dispose()


@pytest.mark.slow
def test_listings_and_polls_stop_at_the_byte_budget(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/q.sqlite3"
    config = write_config(tmp_path / "c.yml", url, "q")
    with (
        service_process(config, tmp_path / "service.log") as (base, proc),
        httpx.Client(timeout=120) as client,
    ):
        fill(url, TASKS)
        tasks = f"{base}/v1/queues/q/tasks"

        plain = client.get(tasks, params={"limit": 1000})  # it answered 315 MB
        assert plain.status_code == 200 and len(plain.content) < MIB
        assert len(plain.json()["tasks"]) == TASKS and plain.json()["next_cursor"] is None
        assert all(task["data"] is None for task in plain.json()["tasks"])

        seen: list[str] = []
        cursor = None
        for _ in range(3):
            page = client.get(
                tasks,
                params={"limit": 1000, "include": "data", "cursor": cursor}
                if cursor
                else {"limit": 1000, "include": "data"},
            )
            assert page.status_code == 200 and len(page.content) < BUDGET + MIB
            body = page.json()
            assert 1 < len(body["tasks"]) < TASKS and body["next_cursor"] == body["tasks"][-1]["id"]
            assert all(len(task["data"]["pad"]) == DATA for task in body["tasks"])
            seen += [task["id"] for task in body["tasks"]]
            cursor = body["next_cursor"]
        assert seen == [task["id"] for task in plain.json()["tasks"]][: len(seen)]  # in order, none skipped

        poll = client.post(f"{base}/v1/queues/q/poll", json={"max": 100})  # it answered 51 MB
        assert poll.status_code == 200 and len(poll.content) < BUDGET + MIB
        polled = len(poll.json()["tasks"])
        assert 1 < polled < 100
        counts = client.get(f"{base}/v1/queues/q").json()
        assert (counts["waiting"], counts["leased"], counts["scheduled"]) == (
            TASKS - polled,
            polled,
            0,
        )  # the rest given back

        assert peak_rss(proc.pid) < 512 * MIB  # the chart's limit (it peaked at 1.1 GB)

        # 20 polls and 20 pages with data at once (as many as the replica's store threads each):
        # each decodes only what its answer may carry (they peaked at 964 MiB when a poll decoded
        # all it leased before keeping what fit)
        def poll() -> None:
            assert httpx.post(f"{base}/v1/queues/q/poll", json={"max": 100}, timeout=120).status_code == 200

        def page() -> None:
            params = {"limit": 1000, "include": "data"}
            assert httpx.get(tasks, params=params, timeout=120).status_code == 200

        threads = [threading.Thread(target=call) for call in [poll, page] * 20]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert peak_rss(proc.pid) < 512 * MIB
