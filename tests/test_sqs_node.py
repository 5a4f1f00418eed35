"""The SQS endpoint with the AWS SDK for JavaScript v3 (``@aws-sdk/client-sqs``, installed by
``npm ci`` from examples/sqs-node's lock file): an ordinary SQS producer and consumer against a
live service, with native clients on the other side, unsigned-for-real and SigV4-verified."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqs_support import SqsService, sqs_service
from test_examples import EXAMPLES, require, run

import perfectqueue
from perfectqueue.service.security import hash_key

pytestmark = pytest.mark.slow

SQS_EXAMPLE = EXAMPLES / "sqs-node"
KEY_ID, SECRET = "AKIANODEEXAMPLE0001", "node-secret-0123456789"


@pytest.fixture(scope="module")
def node() -> str:
    npm, node = require("npm"), require("node")
    run([npm, "ci", "--no-progress"], cwd=SQS_EXAMPLE, timeout=120)
    return node


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SqsService]:
    tmp = tmp_path_factory.mktemp("sqs-node")
    with sqs_service(tmp, f"sqlite:///{tmp / 'queue.sqlite3'}") as running:
        yield running


def example(node: str, endpoint: str, queue: str, mode: str, count: int, **env: str) -> str:
    result = subprocess.run(
        [node, "sqs.js", endpoint, queue, mode, str(count)],
        cwd=SQS_EXAMPLE,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    return output


def test_a_node_consumer_drains_what_native_clients_filled(node: str, service: SqsService) -> None:
    queue = service.fresh()
    with perfectqueue.open({"url": service.base, "queue": queue}) as producer:
        for i in range(15):
            producer.submit(f"task-{i}", "sqs", {"body": f"native {i}"})
    output = example(node, service.endpoint, queue, "consume", 15)
    assert "received and deleted 15 messages" in output
    assert "body: native 14" in output
    with perfectqueue.open({"url": service.base, "queue": queue}) as reader:
        assert {t.status for t in reader.tasks()} == {"finished"}


def test_a_native_worker_drains_what_a_node_producer_sent(node: str, service: SqsService) -> None:
    queue = service.fresh()
    assert "sent 23 messages" in example(node, service.endpoint, queue, "produce", 23)
    with perfectqueue.open({"url": service.base, "queue": queue}) as worker:
        tasks = worker.poll_multi(max=100)
        assert sorted(t.data["body"] for t in tasks) == sorted(f"message {i} ✓" for i in range(23))
        assert tasks[0].data["attributes"]["index"]["DataType"] == "Number"
        for task in tasks:
            task.finish()


def test_node_round_trip_through_the_sqs_endpoint(node: str, service: SqsService) -> None:
    queue = service.fresh()
    example(node, service.endpoint, queue, "produce", 12)
    assert "received and deleted 12 messages" in example(node, service.endpoint, queue, "consume", 12)


def test_the_node_sdk_signs_and_a_wrong_secret_is_refused(node: str, tmp_path: Path) -> None:
    (tmp_path / "secret").write_text(SECRET)
    secret = str(tmp_path / "secret")
    keys = [
        {"name": "node", "access_key_id": KEY_ID, "secret_file": secret, "scopes": ["submit", "work"]},
        {"name": "native", "hash": hash_key("pq_native-bearer-key"), "scopes": ["admin"]},
    ]
    with sqs_service(tmp_path, f"sqlite:///{tmp_path / 'queue.sqlite3'}", api_keys=keys) as keyed:
        credentials = {
            "AWS_ACCESS_KEY_ID": KEY_ID,
            "AWS_SECRET_ACCESS_KEY": SECRET,
            "AWS_REGION": "eu-central-1",
        }
        example(node, keyed.endpoint, "q0", "produce", 3, **credentials)
        assert "received and deleted 3 messages" in example(
            node, keyed.endpoint, "q0", "consume", 3, **credentials
        )
        wrong = subprocess.run(
            [node, "sqs.js", keyed.endpoint, "q0", "produce", "1"],
            cwd=SQS_EXAMPLE,
            env={**os.environ, **credentials, "AWS_SECRET_ACCESS_KEY": "wrong"},
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert wrong.returncode != 0
        assert "SignatureDoesNotMatch" in wrong.stderr


def test_the_node_sdk_throws_its_own_exception_for_an_undeclared_queue(
    node: str, service: SqsService
) -> None:
    result = subprocess.run(
        [node, "sqs.js", service.endpoint, "undeclared", "consume", "1"],
        cwd=SQS_EXAMPLE,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode != 0
    assert "QueueDoesNotExist" in result.stderr  # the SDK's modeled exception, by its name
