"""API keys: every endpoint refuses a missing, wrong or insufficient key; keys never leak; the
insecure-bind rule of ``perfectqueue serve``; the SDK's and the worker's ``token``.

In process against the real app on each backend, and against real ``perfectqueue serve`` processes.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import drop_table
from servers import SERVE, free_port, wait_ready, write_config

import perfectqueue
from perfectqueue.errors import ConfigError, UnauthorizedError
from perfectqueue.service.app import create_app
from perfectqueue.service.config import load_settings, settings_from
from perfectqueue.service.openapi import document
from perfectqueue.service.security import find_key, hash_key, new_key
from perfectqueue.service.store import Database
from perfectqueue.worker.config import WorkerConfig

with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # starlette asks for httpx2 with a warning at import
    from fastapi.testclient import TestClient

KEYS = {name: new_key() for name in ("producer", "worker", "admin", "elsewhere", "everything")}
KEY_SETTINGS = [
    {"name": "producer", "hash": hash_key(KEYS["producer"]), "scopes": ["submit"], "queues": ["q"]},
    {"name": "worker", "hash": hash_key(KEYS["worker"]), "scopes": ["work"]},
    {"name": "admin", "hash": hash_key(KEYS["admin"]), "scopes": ["admin"]},
    {
        "name": "elsewhere",
        "hash": hash_key(KEYS["elsewhere"]),
        "scopes": ["submit", "work", "admin"],
        "queues": ["q2"],
    },
    {"name": "everything", "hash": hash_key(KEYS["everything"]), "scopes": ["submit", "work", "admin"]},
]
SCOPE_KEY = {"submit": "producer", "work": "worker", "admin": "admin", "any": "producer"}
WRONG_SCOPE_KEY = {"submit": "admin", "work": "producer", "admin": "worker"}
Q = "/v1/queues/q"

ENDPOINTS: list[tuple[str, str, dict[str, Any] | None, str, int]] = [
    ("GET", "/v1/queues", None, "admin", 200),
    ("GET", Q, None, "admin", 200),
    ("POST", f"{Q}/submit", {"id": "new", "type": "t"}, "submit", 201),
    ("POST", f"{Q}/submit-batch", {"tasks": [{"id": "new", "type": "t"}]}, "submit", 200),
    ("POST", f"{Q}/poll", {"max": 1}, "work", 200),
    ("POST", f"{Q}/heartbeat", {"id": "a", "lease": "1"}, "work", 409),
    ("POST", f"{Q}/finish", {"id": "a", "lease": "1"}, "work", 409),
    ("POST", f"{Q}/finish-batch", {"tasks": [{"id": "a", "lease": "1"}]}, "work", 200),
    ("POST", f"{Q}/retry", {"id": "a", "lease": "1"}, "work", 409),
    ("POST", f"{Q}/retry-batch", {"tasks": [{"id": "a", "lease": "1"}]}, "work", 200),
    ("POST", f"{Q}/release", {"id": "a", "lease": "1"}, "work", 409),
    ("POST", f"{Q}/release-batch", {"tasks": [{"id": "a", "lease": "1"}]}, "work", 200),
    ("POST", f"{Q}/force-finish", {"id": "a"}, "admin", 204),
    ("GET", f"{Q}/tasks", None, "admin", 200),
    ("GET", f"{Q}/tasks/a", None, "any", 200),
    ("POST", f"{Q}/heartbeat-batch", {"tasks": [{"id": "a", "lease": "1"}]}, "work", 200),
    ("POST", f"{Q}/force-release", {"id": "a"}, "admin", 204),
    ("POST", f"{Q}/requeue", {"id": "a"}, "admin", 409),
    ("POST", f"{Q}/cancel", {"id": "a"}, "admin", 200),
    ("GET", f"{Q}/users", None, "admin", 200),
    ("GET", "/v1/overview", None, "admin", 200),
    ("POST", f"{Q}/pause", None, "admin", 200),
    ("POST", f"{Q}/resume", None, "admin", 200),
    ("POST", f"{Q}/bulk", {"action": "cancel", "status": "waiting"}, "admin", 200),
]
UNSCOPED_TO_A_QUEUE = ("/v1/queues", "/v1/overview")  # they list only the queues a key may see


def bearer(name: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {KEYS[name]}"}


@pytest.fixture
def make_client(db_url: str, table_name: str) -> Iterator[Callable[..., TestClient]]:
    opened: list[TestClient] = []

    def make(**settings: Any) -> TestClient:
        queues = {"q": {"table": table_name}, "q2": {"table": table_name + "_2"}}
        values = {"url": db_url, "queues": queues, "auto_init": True, "api_keys": KEY_SETTINGS, **settings}
        client = TestClient(create_app(settings_from(values))).__enter__()
        opened.append(client)
        return client

    yield make
    for client in opened:
        client.__exit__(None, None, None)
    if not db_url.startswith("sqlite"):
        db = Database(db_url)
        drop_table(db, table_name)
        drop_table(db, table_name + "_2")
        db.dispose()


@pytest.fixture
def client(make_client: Callable[..., TestClient]) -> TestClient:
    return make_client()


def state(client: TestClient) -> list[dict[str, Any]]:
    response = client.get(f"{Q}/tasks", params={"limit": 1000}, headers=bearer("admin"))
    assert response.status_code == 200, response.text
    tasks: list[dict[str, Any]] = response.json()["tasks"]
    return tasks


def assert_refused(response: httpx.Response, status: int, code: str) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    assert response.json()["code"] == code
    if status == 401:
        assert response.headers["www-authenticate"] == "Bearer"
    for key in KEYS.values():
        assert key not in response.text
        assert hash_key(key)[7:19] not in response.text


@pytest.mark.parametrize(("method", "path", "body", "scope", "ok"), ENDPOINTS)
def test_every_endpoint_needs_a_key_with_its_scope_and_queue(
    client: TestClient, method: str, path: str, body: dict[str, Any] | None, scope: str, ok: int
) -> None:
    submitted = client.post(f"{Q}/submit", json={"id": "a", "type": "t"}, headers=bearer("producer"))
    assert submitted.status_code == 201
    before = state(client)
    refusals = [
        ({}, 401, "unauthorized"),
        ({"Authorization": "Bearer " + new_key()}, 401, "unauthorized"),
        ({"Authorization": KEYS[SCOPE_KEY[scope]]}, 401, "unauthorized"),  # no scheme
        ({"Authorization": "Basic " + KEYS[SCOPE_KEY[scope]]}, 401, "unauthorized"),
        ({"Authorization": "Bearer " + hash_key(KEYS[SCOPE_KEY[scope]])}, 401, "unauthorized"),
    ]
    if scope in WRONG_SCOPE_KEY:  # "any": one task's status, readable with every scope
        refusals.append((bearer(WRONG_SCOPE_KEY[scope]), 403, "forbidden"))
    if path not in UNSCOPED_TO_A_QUEUE:
        refusals.append((bearer("elsewhere"), 403, "forbidden"))  # every scope, but for queue q2 only
    for headers, status, code in refusals:
        assert_refused(client.request(method, path, json=body, headers=headers), status, code)
    assert state(client) == before
    response = client.request(method, path, json=body, headers=bearer(SCOPE_KEY[scope]))
    assert response.status_code == ok, response.text
    response = client.request(method, path, json=body, headers=bearer("everything"))
    assert response.status_code not in (401, 403) and response.status_code < 500, response.text


def test_the_list_above_covers_every_endpoint_of_the_api() -> None:
    listed = {(method, path.replace(Q, "/v1/queues/{queue}")) for method, path, *_ in ENDPOINTS}
    listed = {(m, p.replace("/tasks/a", "/tasks/{task_id}")) for m, p in listed}
    paths = document()["paths"]
    api = {(m.upper(), p) for p, ops in paths.items() for m in ops if p.startswith("/v1/")}
    assert api == listed


def test_a_single_task_may_be_read_with_any_scope_of_its_queue(client: TestClient) -> None:
    client.post(f"{Q}/submit", json={"id": "a", "type": "t"}, headers=bearer("producer"))
    for name in ("producer", "worker", "admin"):
        assert client.get(f"{Q}/tasks/a", headers=bearer(name)).json()["status"] == "waiting"
    assert_refused(client.get(f"{Q}/tasks/a", headers=bearer("elsewhere")), 403, "forbidden")
    assert_refused(client.get(f"{Q}/tasks/a"), 401, "unauthorized")


def test_a_key_limited_to_queues_lists_only_those(client: TestClient) -> None:
    names = [q["name"] for q in client.get("/v1/queues", headers=bearer("elsewhere")).json()["queues"]]
    assert names == ["q2"]
    names = [q["name"] for q in client.get("/v1/queues", headers=bearer("admin")).json()["queues"]]
    assert names == ["q", "q2"]


def test_unknown_queue_and_endpoint_need_a_key_first(client: TestClient) -> None:
    assert_refused(client.get("/v1/queues/nope"), 401, "unauthorized")
    assert_refused(client.get("/nope"), 401, "unauthorized")
    assert client.get("/v1/queues/nope", headers=bearer("admin")).json()["code"] == "unknown_queue"
    assert_refused(client.get("/v1/queues/nope", headers=bearer("producer")), 403, "forbidden")


def test_unauthenticated_bad_body_is_401_not_parsed(client: TestClient) -> None:
    response = client.post(f"{Q}/submit", content=b'{"id": ', headers={"content-type": "application/json"})
    assert_refused(response, 401, "unauthorized")


def test_health_probes_and_the_api_description_are_open(client: TestClient) -> None:
    assert client.get("/livez").json() == {"status": "ok"}
    assert client.get("/readyz").status_code == 200
    assert client.get("/openapi.json").status_code == 200
    assert client.get("/docs").status_code == 200
    home = client.get("/", follow_redirects=False)  # the address a person types leads to the dashboard
    assert (home.status_code, home.headers["location"]) == (308, "/ui/")


def test_without_keys_everything_is_open(make_client: Callable[..., TestClient]) -> None:
    client = make_client(api_keys=[])
    assert client.post(f"{Q}/submit", json={"id": "a", "type": "t"}).status_code == 201
    assert client.get(f"{Q}/tasks/a").status_code == 200


def test_the_openapi_document_declares_bearer_auth() -> None:
    doc = document()
    assert doc["components"]["securitySchemes"]["apiKey"] == {
        "type": "http",
        "scheme": "bearer",
        "description": doc["components"]["securitySchemes"]["apiKey"]["description"],
    }
    for path, item in doc["paths"].items():
        for operation in item.values():
            if path.startswith("/v1"):
                assert operation["security"] == [{"apiKey": []}], path
                assert {"401", "403"} <= set(operation["responses"]), path
            else:
                assert "security" not in operation, path


def test_keys_are_found_by_hash_only() -> None:
    from perfectqueue.service.security import ApiKey

    keys = [ApiKey.model_validate(k) for k in KEY_SETTINGS]
    found = find_key(keys, KEYS["worker"])
    assert found is not None and found.name == "worker"
    assert find_key(keys, KEYS["worker"] + "x") is None
    assert find_key(keys, hash_key(KEYS["worker"])) is None
    assert find_key(keys, "") is None


# -- settings --------------------------------------------------------------------------------


def test_a_plain_key_in_the_settings_is_refused_without_repeating_it() -> None:
    key = new_key()
    with pytest.raises(ConfigError) as caught:
        settings_from({"api_keys": [{"name": "p", "hash": key, "scopes": ["submit"]}]})
    assert "sha256" in str(caught.value) and key not in str(caught.value)


@pytest.mark.parametrize(
    ("entry", "fragment"),
    [
        ({"name": "p", "hash": hash_key("x"), "scopes": ["root"]}, "scopes"),
        ({"name": "p", "hash": hash_key("x"), "scopes": []}, "scopes"),
        ({"name": "p", "hash": hash_key("x"), "scopes": ["submit"], "queues": ["nope"]}, "nope"),
        ({"name": "p", "hash": hash_key("x"), "scopes": ["submit"], "extra": 1}, "extra"),
    ],
)
def test_bad_keys_are_refused(entry: dict[str, Any], fragment: str) -> None:
    with pytest.raises(ConfigError, match=fragment):
        settings_from({"api_keys": [entry]})


def test_keys_from_the_environment_as_json() -> None:
    environ = {"PERFECTQUEUE_API_KEYS": json.dumps(KEY_SETTINGS[:1]), "PERFECTQUEUE_INSECURE": "true"}
    settings = load_settings(None, None, {"queues": {"q": {}}}, environ)
    assert [k.name for k in settings.api_keys] == ["producer"] and settings.insecure is True
    with pytest.raises(ConfigError, match="not valid JSON"):
        load_settings(None, None, None, {"PERFECTQUEUE_API_KEYS": "[{"})


def test_keygen_prints_a_key_and_its_hash_entry() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "perfectqueue", "keygen", "--name", "p", "--scope", "submit", "--queue", "q"],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    ).stdout
    key = out.splitlines()[0].removeprefix("key: ")
    entry = json.loads(out.splitlines()[-1].strip().removeprefix("- "))
    assert len(key) >= 40 and entry == {
        "name": "p",
        "hash": hash_key(key),
        "scopes": ["submit"],
        "queues": ["q"],
    }
    settings_from({"queues": {"q": {}}, "api_keys": [entry]})


# -- real processes --------------------------------------------------------------------------


def serve_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("PERFECTQUEUE_")}


def test_serve_refuses_a_public_address_without_keys(tmp_path: Path) -> None:
    started = time.monotonic()
    url = f"sqlite:///{tmp_path / 'q.sqlite3'}"
    done = subprocess.run(
        [*SERVE, "--url", url, "--host", "0.0.0.0", "--port", str(free_port())],
        capture_output=True,
        text=True,
        timeout=60,
        env=serve_env(),
        check=False,
    )
    assert done.returncode == 2, done.stderr
    assert len(done.stderr.strip().splitlines()) == 1 and "--insecure" in done.stderr
    assert time.monotonic() - started < 20


def test_serve_with_insecure_starts_and_warns(tmp_path: Path) -> None:
    log = tmp_path / "serve.log"
    port = free_port()
    url = f"sqlite:///{tmp_path / 'q.sqlite3'}"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [*SERVE, "--url", url, "--host", "0.0.0.0", "--port", str(port), "--insecure"],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=serve_env(),
        )
        try:
            wait_ready(f"http://127.0.0.1:{port}", proc)
        finally:
            proc.terminate()
            proc.wait(timeout=30)
    text = log.read_text()
    assert "WARNING" in text and "without authentication" in text.lower()
    # where the queues are stored and where to look, said once at start
    assert f"queues default on {url}" in text
    assert f"dashboard http://0.0.0.0:{port}/ui, API docs http://0.0.0.0:{port}/docs" in text


@contextmanager
def debug_service(config: Path, log: Path) -> Iterator[str]:
    """``perfectqueue serve`` logging at debug level into ``log``; its base url once ready."""
    port = free_port()
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [*SERVE, "-c", str(config), "--port", str(port), "--log-level", "debug"],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=serve_env(),
        )
        try:
            wait_ready(f"http://127.0.0.1:{port}", proc)
            yield f"http://127.0.0.1:{port}"
        finally:
            proc.terminate()
            proc.wait(timeout=30)


def test_keys_appear_in_no_log_and_sdk_and_worker_pass_their_token(
    db_url: str, table_name: str, tmp_path: Path
) -> None:
    queues = {"q": {"table": table_name}, "q2": {"table": table_name + "_2"}}
    config = write_config(tmp_path / "pq.yml", db_url, table_name, queues=queues, api_keys=KEY_SETTINGS)
    log = tmp_path / "service.log"
    with debug_service(config, log) as base:
        for name in ("producer", "worker", "admin", "everything"):
            httpx.get(base + "/v1/queues/q/tasks", headers=bearer(name), timeout=10)
            httpx.post(base + "/v1/queues/q/poll", json={"max": 1}, headers=bearer(name), timeout=10)
        for headers in ({"Authorization": "Bearer " + KEYS["admin"][:-1]}, {"Authorization": KEYS["admin"]}):
            assert httpx.get(base + "/v1/queues", headers=headers, timeout=10).status_code == 401
        with perfectqueue.open({"url": base, "queue": "q"}) as anonymous, pytest.raises(UnauthorizedError):
            anonymous.submit("sdk-1", "t")
        with perfectqueue.open({"url": base, "queue": "q", "token": KEYS["producer"]}) as producer:
            producer.submit("sdk-1", "t", {"n": 1})
        backend = WorkerConfig.from_mapping({"url": base, "queue": "q", "token": KEYS["worker"]}).backend
        with perfectqueue.open(backend) as worker:
            task = worker.poll()
            assert task is not None and task.key == "sdk-1"
            task.finish()
    if not db_url.startswith("sqlite"):
        db = Database(db_url)
        drop_table(db, table_name)
        drop_table(db, table_name + "_2")
        db.dispose()
    text = log.read_text()
    assert "refused" in text  # the service did log the refusals (by path, never the key)
    for key in KEYS.values():
        assert key not in text
        assert key[:12] not in text
        assert hash_key(key) not in text and hash_key(key)[7:19] not in text
