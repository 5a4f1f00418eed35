"""Shared by the SQS endpoint's tests: a real service process with many declared queues (each
test takes an empty one), and boto3 clients of its /sqs endpoint."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
import sqlalchemy as sa
import yaml
from botocore.config import Config
from servers import service_process

from perfectqueue.service.store import Database

QUEUES = 16


@dataclass
class SqsService:
    """A running service: its base url, and the names of its queues no test has taken yet."""

    base: str
    free: list[str] = field(default_factory=list)

    @property
    def endpoint(self) -> str:
        return self.base + "/sqs"

    def fresh(self) -> str:
        return self.free.pop(0)


def client(endpoint: str, key_id: str = "anything", secret: str = "anything", **config: Any) -> Any:
    """A boto3 SQS client of ``endpoint`` (JSON protocol, as current boto3 speaks it)."""
    return boto3.session.Session().client(
        "sqs",
        endpoint_url=endpoint,
        region_name="eu-west-1",
        aws_access_key_id=key_id,
        aws_secret_access_key=secret,
        config=Config(retries={"max_attempts": 1}, read_timeout=30, **config),
    )


@contextmanager
def sqs_service(tmp: Path, db_url: str, **settings: Any) -> Iterator[SqsService]:
    """A service declaring ``q0``..``q15`` (and ``dl``, whose tasks are dead after one attempt)."""
    suffix = uuid.uuid4().hex[:10]
    tables = {f"q{i}": f"t_sqs{i}_{suffix}" for i in range(QUEUES)}
    queues: dict[str, Any] = {name: {"table": table} for name, table in tables.items()}
    queues["dl"] = {"table": f"t_sqsdl_{suffix}", "max_attempts": 1}
    config = tmp / "perfectqueue.yml"
    config.write_text(yaml.safe_dump({"url": db_url, "queues": queues, "auto_init": True, **settings}))
    try:
        with service_process(config, tmp / "service.log") as (base, _proc):
            yield SqsService(base, list(tables))
    finally:
        db = Database(db_url)
        with db.engine.begin() as conn:
            for queue in queues.values():
                conn.execute(sa.text(f"DROP TABLE IF EXISTS {queue['table']}"))
        db.dispose()
