"""The dashboard: the admin endpoints it reads on each backend (the overview, users, the task
listing's filters), throughput summed over two replicas, and the pages themselves end to end in
a real headless Chromium against a real service process.

Screenshots of every page are written under ``test-artifacts/ui/`` (``PERFECTQUEUE_TEST_ARTIFACTS``
moves it); the test prints where.
"""

from __future__ import annotations

import logging
import os
import shutil
import sqlite3
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import IN_CI, drop_table
from servers import running_service, write_config

from perfectqueue.service.app import create_app
from perfectqueue.service.config import settings_from
from perfectqueue.service.security import hash_key, new_key
from perfectqueue.service.store import Database
from perfectqueue.service.store.throughput import STATS_TABLE

with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # starlette asks for httpx2 at import
    from fastapi.testclient import TestClient

Q = "/v1/queues/q"
BROWSER_FLAGS = [
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture
def make_app(db_url: str, table_name: str) -> Iterator[Callable[..., TestClient]]:
    """Clients of apps (replicas) serving queue ``q`` on one fresh table; closed after the test."""
    opened: list[TestClient] = []

    def make() -> TestClient:
        settings = settings_from({"url": db_url, "queues": {"q": {"table": table_name}}, "auto_init": True})
        client = TestClient(create_app(settings)).__enter__()
        opened.append(client)
        return client

    yield make
    for client in opened:
        client.__exit__(None, None, None)
    db = Database(db_url)
    drop_table(db, table_name)
    with db.engine.begin() as conn:
        conn.exec_driver_sql(f"DELETE FROM {STATS_TABLE} WHERE queue = '{table_name}'")
    db.dispose()


def submit(client: TestClient, task_id: str, **fields: Any) -> None:
    response = client.post(f"{Q}/submit", json={"id": task_id, "type": fields.pop("type", "t"), **fields})
    assert response.status_code == 201, response.text


def browse_all(client: TestClient, **filters: Any) -> list[str]:
    """Every id a filtered listing yields, page by page (small pages, to cross many cursors)."""
    ids: list[str] = []
    cursor = None
    for _ in range(100):
        params = {**filters, "limit": 3, **({"cursor": cursor} if cursor else {})}
        page = client.get(f"{Q}/tasks", params=params).json()
        ids += [t["id"] for t in page["tasks"]]
        cursor = page["next_cursor"]
        if cursor is None:
            return ids
    raise AssertionError("the listing never ended")


def test_counts_users_listing_and_release(make_app: Callable[..., TestClient]) -> None:
    client = make_app()
    for i in range(8):
        submit(client, f"a{i}", user="ann", max_running=2, type="mail" if i % 2 else "report")
    for i in range(4):
        submit(client, f"b{i}", data={"n": i}, compression="gzip")
    submit(client, "later", run_at=2_000_000_000)
    leased = client.post(f"{Q}/poll", json={"max": 3, "alive_time": 600}).json()["tasks"]
    assert client.post(f"{Q}/force-finish", json={"id": "b3"}).status_code == 204

    queue = client.get("/v1/overview").json()["queues"][0]
    assert {k: queue[k] for k in ("waiting", "leased", "scheduled", "finished", "dead", "cancelled")} == {
        "waiting": 8,
        "leased": 3,
        "scheduled": 1,
        "finished": 1,
        "dead": 0,
        "cancelled": 0,
    }
    assert queue["oldest_waiting_age"] >= 0 and len(queue["throughput"]["submitted"]) == 60
    assert queue["capped"] == []
    info = client.get(Q).json()  # the same counts as the queue API's (the age may have moved on)
    assert queue["warnings"] == {"stall_after": 300, "lock_wait": 1.0}  # the settings' defaults
    dashboard_only = ("throughput", "trouble", "warnings", "oldest_waiting_age")
    assert {k: v for k, v in queue.items() if k not in dashboard_only} == {
        k: v for k, v in info.items() if k != "oldest_waiting_age"
    }
    users = client.get(f"{Q}/users").json()["users"]
    ann_running = sum(1 for t in leased if t["user"] == "ann")
    assert users == [{"user": "ann", "leased": ann_running, "scheduled": 0, "max_running": 2}]

    everything = sorted([f"a{i}" for i in range(8)] + [f"b{i}" for i in range(4)] + ["later"])
    assert browse_all(client) == everything  # id order
    running = {t["id"] for t in leased}
    due = {"order": "due"}  # the dashboard's order with a status or user: on the timeout index
    assert sorted(browse_all(client, status="running", leased=True, **due)) == sorted(running)
    assert browse_all(client, status="running", leased=False, **due) == ["later"]  # scheduled
    assert browse_all(client, status="finished", **due) == ["b3"]
    waiting = browse_all(client, status="waiting", **due)
    assert sorted(waiting) == sorted(set(everything) - running - {"later", "b3"})
    assert browse_all(client, prefix="a") == [f"a{i}" for i in range(8)]
    assert sorted(browse_all(client, user="ann", type="mail", **due)) == ["a1", "a3", "a5", "a7"]
    b_waiting = sorted({"b0", "b1", "b2"} - running)
    assert sorted(browse_all(client, status="waiting", prefix="b", **due)) == b_waiting
    assert browse_all(client, status="running", leased=False) == ["later"]  # id order filters alike
    assert client.get(f"{Q}/tasks", params={"status": "bogus"}).json()["code"] == "invalid"
    foreign = client.get(f"{Q}/tasks", params={"limit": 1}).json()["next_cursor"]
    bad = {"status": "waiting", "cursor": foreign, **due}
    assert client.get(f"{Q}/tasks", params=bad).status_code == 422

    later = client.get(f"{Q}/tasks/later").json()
    assert (later["status"], later["leased"]) == ("running", False)  # scheduled
    # Retry now: the holder's lease ends (it is fenced off), the task is deliverable at once.
    held = leased[0]
    assert client.get(f"{Q}/tasks/{held['id']}").json()["leased"] is True
    assert client.post(f"{Q}/force-release", json={"id": held["id"]}).status_code == 204
    assert client.get(f"{Q}/tasks/{held['id']}").json()["status"] == "waiting"
    late = client.post(f"{Q}/finish", json={"id": held["id"], "lease": held["lease"]})
    assert late.json()["code"] == "preempted"
    assert client.post(f"{Q}/force-release", json={"id": "b3"}).json()["code"] == "already_finished"
    assert client.post(f"{Q}/force-release", json={"id": "nope"}).json()["code"] == "not_found"


def test_throughput_adds_up_over_two_replicas(make_app: Callable[..., TestClient]) -> None:
    first, second = make_app(), make_app()
    for i in range(3):
        submit(first, f"f{i}")
    batch = [{"id": "s0", "type": "t"}, {"id": "s1", "type": "t"}, {"id": "f0", "type": "t"}]
    assert len(second.post(f"{Q}/submit-batch", json={"tasks": batch}).json()["successful"]) == 2
    tasks = first.post(f"{Q}/poll", json={"max": 2}).json()["tasks"]
    items = [{"id": t["id"], "lease": t["lease"]} for t in tasks]
    assert len(second.post(f"{Q}/finish-batch", json={"tasks": items}).json()["successful"]) == 2
    assert first.post(f"{Q}/force-finish", json={"id": "s1"}).status_code == 204
    assert first.post(f"{Q}/force-finish", json={"id": "s1"}).status_code == 409  # not counted again

    for client in (first, second):  # each replica adds its counts (as it does every few seconds)
        client.portal.call(client.app.state.dashboard.throughput.flush)
    submit(second, "s2")  # counted at the replica's stop (the last flush)
    second.__exit__(None, None, None)

    series = first.get("/v1/overview").json()["queues"][0]["throughput"]
    assert (sum(series["submitted"]), sum(series["finished"])) == (6, 3)


def test_a_missing_side_table_is_said_once_until_it_is_back(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A table the original created and ``init`` never upgraded has no side table for the counts:
    one warning naming ``init``, not one per flush; and one line when it works again."""
    caplog.set_level(logging.INFO, "perfectqueue.service")
    url = f"sqlite:///{tmp_path / 'q.sqlite3'}"
    settings = settings_from({"url": url, "queues": {"q": {}}, "auto_init": True})
    with TestClient(create_app(settings)) as client:
        db = Database(url)
        with db.engine.begin() as conn:
            conn.exec_driver_sql(f"DROP TABLE {STATS_TABLE}")
        db.dispose()
        flush = client.app.state.dashboard.throughput.flush  # type: ignore[attr-defined]
        for i in range(3):
            submit(client, f"t{i}")
            client.portal.call(flush)
        warnings = [r.getMessage() for r in caplog.records if "throughput counts" in r.getMessage()]
        assert len([w for w in warnings if "writing" in w]) == 1 and "perfectqueue init" in warnings[0]
        client.portal.call(client.app.state.runtime.queues["q"].init)  # type: ignore[attr-defined]
        client.portal.call(flush)
        assert "writing throughput counts of queue q works again" in caplog.text
        series = client.get("/v1/overview").json()["queues"][0]["throughput"]
        assert sum(series["submitted"]) == 3  # the counts kept meanwhile were written


# -- the browser -----------------------------------------------------------------------------------


def chromium() -> str:
    """Debian's Chromium and Python Playwright, or skip (fail in CI) when either is missing."""
    path = shutil.which("chromium") or "/usr/bin/chromium"
    missing = None if os.path.exists(path) else f"Chromium is not installed ({path})"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        missing = "Python Playwright is not installed"
    if missing:
        if IN_CI:
            pytest.fail(missing + " (mandatory in CI)")
        pytest.skip(missing)
    return path


@pytest.fixture
def artifacts() -> Path:
    root = Path(
        os.environ.get("PERFECTQUEUE_TEST_ARTIFACTS", Path(__file__).parent.parent / "test-artifacts")
    )
    path = root / "ui"
    path.mkdir(parents=True, exist_ok=True)
    print(f"screenshots in {path}")
    return path


def make_dead_and_stale(base: str, headers: dict[str, str], path: Path, table: str) -> None:
    """A task that died now (its one attempt failed) and one that has waited 1,000 s."""
    for task in ({"id": "doomed", "type": "t", "max_attempts": 1}, {"id": "stale", "type": "t"}):
        assert httpx.post(f"{base}{Q}/submit", headers=headers, json=task).status_code == 201
    (polled,) = httpx.post(f"{base}{Q}/poll", headers=headers, json={"max": 1}).json()["tasks"]
    assert polled["id"] == "doomed"
    retry = {"id": "doomed", "lease": polled["lease"], "error": "boom"}
    assert httpx.post(f"{base}{Q}/retry", headers=headers, json=retry).status_code == 204
    with sqlite3.connect(path) as db:
        db.execute(
            f"UPDATE {table} SET timeout = timeout - 1000, created_at = created_at - 1000 WHERE id = 'stale'"
        )


def test_dashboard_in_headless_chromium(tmp_path: Path, artifacts: Path) -> None:
    from playwright.sync_api import expect, sync_playwright

    executable = chromium()
    admin, worker = new_key(), new_key()
    keys = [
        {"name": "ops", "hash": hash_key(admin), "scopes": ["admin"]},
        {"name": "app", "hash": hash_key(worker), "scopes": ["submit", "work"]},
    ]
    config = write_config(tmp_path / "pq.yml", f"sqlite:///{tmp_path / 'q.sqlite3'}", "ui_q", api_keys=keys)
    with running_service(config, tmp_path / "service.log") as base, sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=executable, headless=True, args=BROWSER_FLAGS)
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        calls: list[tuple[str, str, int]] = []
        page.on("response", lambda r: calls.append((r.request.method, r.url.removeprefix(base), r.status)))

        # Without a key: a login, and no data (every API call it tried was refused).
        page.goto(base + "/ui")
        expect(page.locator("#login")).to_be_visible()
        assert page.locator(".queue-card").count() == 0
        assert all(status == 401 for _, url, status in calls if url.startswith("/v1/"))
        page.screenshot(path=artifacts / "login.png")
        page.fill("#key", worker)  # a key without the admin scope is not enough
        page.click("#login button[type=submit]")
        expect(page.locator("#login [role=alert]")).to_contain_text("admin scope")
        page.fill("#key", admin)
        page.click("#login button[type=submit]")
        calls.clear()

        # The overview; a task submitted now appears in it.
        card = page.locator('.queue-card[data-queue="q"]')
        expect(card).to_be_visible()
        page.screenshot(path=artifacts / "overview-empty.png")
        task = {"id": "report/2026-11", "type": "report", "user": "acme", "max_running": 3}
        app = {"authorization": f"Bearer {worker}"}
        submitted = httpx.post(
            f"{base}{Q}/submit", headers=app, json={**task, "data": {"rows": [1, 2]}, "compression": "gzip"}
        )
        assert submitted.status_code == 201
        expect(card.locator("[data-stat=waiting] b")).to_have_text("1", timeout=15_000)
        tiles = ["waiting", "leased", "scheduled", "finished", "dead", "cancelled"]
        shown = [card.locator(f"[data-stat={t}] b").inner_text() for t in tiles]
        assert shown == ["1", "0", "0", "0", "0", "0"]
        page.screenshot(path=artifacts / "overview.png")

        # The queue page lists it; the task page shows it, decompressed; force-finish it.
        card.locator("h2 a").click()
        row = page.locator('#tasks tr[data-id="report/2026-11"]')
        expect(row).to_contain_text("waiting")
        assert "null" not in page.locator("#main").inner_text()  # no bulk action without a filter
        page.screenshot(path=artifacts / "queue.png", full_page=True)
        row.locator("a").click()
        expect(page.locator("#task-state")).to_have_text("waiting")
        expect(page.locator("#task-data")).to_contain_text('"rows"')
        page.screenshot(path=artifacts / "task.png", full_page=True)
        offered = "/v1/queues/{queue}/cancel" in httpx.get(base + "/openapi.json").json()["paths"]
        assert page.locator("#cancel").count() == int(offered)  # shown only where the API has it
        page.click("#force-finish")
        expect(page.locator("#confirm")).to_be_visible()
        page.screenshot(path=artifacts / "task-confirm.png")
        page.click("#confirm-ok")
        expect(page.locator("#task-state")).to_have_text("finished", timeout=10_000)
        # Real instants: it ended just now, its row goes in retention_time (never decades ago).
        expect(page.locator("#task-ended")).to_contain_text("s ago")
        expect(page.locator("#task-due")).to_contain_text("in ")
        page.screenshot(path=artifacts / "task-finished.png", full_page=True)
        shown = httpx.get(f"{base}{Q}/tasks/report%2F2026-11", headers=app).json()
        assert shown["status"] == "finished"

        # Warnings an operator notices: a task dead in the last hour, tasks nobody works on.
        make_dead_and_stale(base, app, tmp_path / "q.sqlite3", "ui_q")
        page.goto(base + "/ui/")
        expect(card.locator("[data-stat=dead] b")).to_have_text("1", timeout=10_000)
        expect(card.locator("[data-stat=finished] b")).to_have_text("1")  # dead ones apart
        expect(card.locator("[data-warning=dead]")).to_contain_text("1 task(s) went dead in the last hour")
        expect(card.locator("[data-warning=stalled]")).to_contain_text("no worker holds any")
        assert card.locator(".chart text.axis").filter(has_text="tasks/min").count() == 1
        page.screenshot(path=artifacts / "overview-warnings.png")
        card.locator("[data-warning=dead] a").click()
        expect(page.locator('#tasks tr[data-id="doomed"]')).to_contain_text("dead")

        # The task list sorts by due time (the longest waiting first) or by id.
        assert (
            httpx.post(f"{base}{Q}/submit", headers=app, json={"id": "a-fresh", "type": "t"}).status_code
            == 201
        )
        ids = page.locator("#tasks tbody tr")
        for sort, expected in [("due", ["stale", "a-fresh"]), ("id", ["a-fresh", "stale"])]:
            page.select_option("#filter-state", "waiting")
            page.select_option("#filter-sort", sort)
            page.click("#filters button[type=submit]")
            expect(ids).to_have_count(2)
            assert [ids.nth(i).get_attribute("data-id") for i in range(2)] == expected, sort
        expect(page.locator('#tasks tr[data-id="stale"] td.age')).to_have_text("17m")

        # Pause the queue (confirmed): polls get nothing, the page says so; then resume it.
        page.click("#queue-pause")
        expect(page.locator("#confirm")).to_be_visible()
        page.click("#confirm-ok")
        expect(page.locator("[data-warning=paused]")).to_be_visible(timeout=10_000)
        page.screenshot(path=artifacts / "queue-paused.png", full_page=True)
        polled = httpx.post(f"{base}{Q}/poll", headers=app, json={"max": 5})
        assert polled.json()["tasks"] == []
        page.click("#queue-resume")
        page.click("#confirm-ok")
        expect(page.locator("[data-warning=paused]")).to_have_count(0, timeout=10_000)

        # Bulk actions on a filtered selection, after a confirmation: requeue every dead task.
        page.goto(base + "/ui/#/queues/q?state=dead&type=t")
        expect(page.locator("#bulk")).to_have_text("Requeue every dead task of type t")
        page.click("#bulk")
        expect(page.locator("#confirm-text")).to_contain_text("attempts reset")
        page.click("#confirm-ok")
        expect(page.locator("#flash")).to_contain_text("1 done, 0 refused", timeout=10_000)
        expect(page.locator('#tasks tr[data-id="doomed"]')).to_have_count(0)
        polled = httpx.post(f"{base}{Q}/poll", headers=app, json={"max": 5})
        assert sorted(t["id"] for t in polled.json()["tasks"]) == ["a-fresh", "doomed", "stale"]

        # A task a Ruby PerfectQueue process holds (its fair acquisition moves only the timeout):
        # the page says who holds it and offers a forced cancel, which ends it.
        held = httpx.post(f"{base}{Q}/submit", headers=app, json={"id": "ruby-held", "type": "t"})
        assert held.status_code == 201
        with sqlite3.connect(tmp_path / "q.sqlite3") as db:
            now = "CAST(strftime('%s', 'now') AS INTEGER)"
            db.execute(f"UPDATE ui_q SET timeout = {now} + 300 WHERE id = 'ruby-held'")
        page.goto(base + "/ui/#/queues/q?state=leased")
        expect(page.locator('#tasks tr[data-id="ruby-held"] .holder')).to_have_text("by Ruby")
        page.goto(base + "/ui/#/queues/q/tasks/ruby-held")
        expect(page.locator("#task-holder")).to_contain_text("Ruby PerfectQueue process")
        if offered:
            expect(page.locator("#cancel")).to_have_count(0)
            page.click("#cancel-force")
            expect(page.locator("#confirm-text")).to_contain_text("never sees a cancel request")
            page.click("#confirm-ok")
            expect(page.locator("#task-state")).to_have_text("cancelled", timeout=10_000)
            page.screenshot(path=artifacts / "task-ruby-cancelled.png", full_page=True)

        # Every API call the signed-in pages made is one the admin key may make.
        api = [(method, url, status) for method, url, status in calls if url.startswith("/v1/")]
        assert api and all(status < 400 for _, _, status in api), api
        assert not any(url.split("?")[0].endswith(("/poll", "/submit", "/finish")) for _, url, _ in api)

        # A phone in dark mode: the queue page fits the screen's width.
        page.set_viewport_size({"width": 390, "height": 844})
        page.emulate_media(color_scheme="dark")
        page.goto(base + "/ui/#/queues/q?state=finished")
        expect(page.locator('#tasks tr[data-id="report/2026-11"]')).to_be_visible()
        assert page.evaluate("document.documentElement.scrollWidth") <= 390
        page.screenshot(path=artifacts / "queue-phone-dark.png", full_page=True)
        browser.close()


def test_a_queues_lowered_stall_threshold_raises_its_warning(tmp_path: Path, artifacts: Path) -> None:
    """Two queues whose oldest task has waited 100 s, none leased: the one whose
    stall_warning_after is 60 warns, the one at the default (300) does not."""
    from playwright.sync_api import expect, sync_playwright

    executable = chromium()
    admin = new_key()
    keys = [{"name": "ops", "hash": hash_key(admin), "scopes": ["admin", "submit"]}]
    queues = {
        "q": {"table": "ui_q", "stall_warning_after": 60, "lock_wait_warning": 0.5},
        "r": {"table": "ui_r"},
    }
    path = tmp_path / "q.sqlite3"
    config = write_config(tmp_path / "pq.yml", f"sqlite:///{path}", "ui_q", api_keys=keys, queues=queues)
    headers = {"authorization": f"Bearer {admin}"}
    with running_service(config, tmp_path / "service.log") as base, sync_playwright() as pw:
        for queue in queues:
            submitted = httpx.post(
                f"{base}/v1/queues/{queue}/submit", headers=headers, json={"id": "old", "type": "t"}
            )
            assert submitted.status_code == 201
        with sqlite3.connect(path) as db:
            for table in ("ui_q", "ui_r"):
                db.execute(f"UPDATE {table} SET timeout = timeout - 100, created_at = created_at - 100")
        overview = httpx.get(f"{base}/v1/overview", headers=headers).json()
        assert {q["name"]: q["warnings"] for q in overview["queues"]} == {
            "q": {"stall_after": 60, "lock_wait": 0.5},
            "r": {"stall_after": 300, "lock_wait": 1.0},
        }
        assert all(q["oldest_waiting_age"] >= 100 and q["leased"] == 0 for q in overview["queues"])

        browser = pw.chromium.launch(executable_path=executable, headless=True, args=BROWSER_FLAGS)
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.goto(base + "/ui")
        page.fill("#key", admin)
        page.click("#login button[type=submit]")
        lowered, default = (page.locator(f'.queue-card[data-queue="{name}"]') for name in ("q", "r"))
        expect(lowered.locator("[data-warning=stalled]")).to_contain_text(
            "no worker holds any", timeout=10_000
        )
        expect(default.locator("[data-stat=waiting] b")).to_have_text("1")
        expect(default.locator("[data-warning=stalled]")).to_have_count(0)
        page.screenshot(path=artifacts / "overview-stall-threshold.png")
        browser.close()
