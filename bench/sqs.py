"""The SQS endpoint side by side with the native batched path and the raw-SQL ceiling, in one run.

Throughput: the same backlog drained three ways, 10 tasks at a time — directly in SQL (the
ceiling), by native ``poll`` (max 10) + ``finish-batch``, and by SQS ``ReceiveMessage``
(MaxNumberOfMessages 10) + ``DeleteMessageBatch`` (10 entries) in the AWS JSON protocol. Latency:
from a submit's answer to the task's delivery to a waiting native long-poll, and to a waiting
``ReceiveMessage`` with ``WaitTimeSeconds``.

The SQS client is as lean as the native one (``http.client``, JSON by hand), so that both measure
the service rather than a client library: unsigned to a service without keys, and signed (SigV4)
to a second service with an SQS key, which verifies every request.
"""

from __future__ import annotations

import http.client
import json
import os
import time
from typing import Any

import httpx

from perfectqueue.service.sqs import sigv4

from . import ceiling, service
from .common import Backend, percentiles, run_clients, services, summarize, throughput
from .latency import delivery_seconds
from .latency import poller as native_poller

K = 10


KEY_ID, SECRET, SECRET_ENV = "AKIABENCH0000000001", "bench-secret-not-for-use", "PQ_BENCH_SQS_SECRET"


class Sqs:
    """Keep-alive calls of the AWS JSON 1.0 protocol to a service's /sqs endpoint; ``signed``: each
    request with Signature V4 (computed with the service's own functions: the cost measured is the
    service's verification, not a client library's)."""

    def __init__(self, base: str, signed: bool = False) -> None:
        url = httpx.URL(base)
        self.host, self.signed = f"{url.host}:{url.port}", signed
        self.conn = http.client.HTTPConnection(url.host, url.port, timeout=60)
        self.queue_url = f"{base}/sqs/000000000000/q"

    def call(self, action: str, body: dict[str, Any]) -> Any:
        encoded = json.dumps({"QueueUrl": self.queue_url, **body}).encode()
        headers = {"content-type": "application/x-amz-json-1.0", "x-amz-target": f"AmazonSQS.{action}"}
        if self.signed:
            headers = self.sign(headers, encoded)
        self.conn.request("POST", "/sqs", encoded, headers)
        answer = self.conn.getresponse()
        data = answer.read()
        if answer.status >= 400:
            raise RuntimeError(f"{action}: {answer.status} {data[:300]!r}")
        return json.loads(data)

    def sign(self, headers: dict[str, str], body: bytes) -> dict[str, str]:
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        headers = {**headers, "host": self.host, "x-amz-date": stamp}
        names = tuple(sorted(headers))
        signed = sigv4.Signed(KEY_ID, stamp[:8], "us-east-1", "sqs", names, "")
        canonical = sigv4.canonical_request(sigv4.HttpRequest("POST", "/sqs", "", headers, body), signed)
        signature = sigv4.signature(SECRET, signed, stamp, canonical)
        parts = f"Credential={KEY_ID}/{signed.scope}, SignedHeaders={';'.join(names)}, Signature={signature}"
        return {**headers, "authorization": f"{sigv4.ALGORITHM} {parts}"}

    def close(self) -> None:
        self.conn.close()


def sqs_drain(barrier: Any, base: str, k: int, signed: bool = False) -> dict[str, Any]:
    """ReceiveMessage (k) and DeleteMessageBatch them, until the queue is empty."""
    sqs = Sqs(base, signed)
    count = 0
    barrier.wait()
    start, cpu = time.time(), time.process_time()
    while True:
        messages = sqs.call("ReceiveMessage", {"MaxNumberOfMessages": k, "VisibilityTimeout": 300}).get(
            "Messages"
        )
        if not messages:
            break
        entries = [{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(messages)]
        failed = sqs.call("DeleteMessageBatch", {"Entries": entries}).get("Failed")
        assert not failed, failed[:1]
        count += len(messages)
    end = time.time()
    sqs.close()
    return {"start": start, "end": end, "count": count, "cpu": time.process_time() - cpu}


def drain_rates(backend: Backend, table: str, base: str, keyed: str, cfg: dict[str, Any]) -> dict[str, float]:
    """One drain of the same backlog by each path (``keyed``: a service with an SQS key); tasks
    per second."""
    tasks, workers = cfg["sqs_tasks"], max(cfg["workers"])
    isolation = "READ COMMITTED" if backend.kind == "mysql" else None
    ways = {
        "ceiling": (ceiling.drain, [(backend, table, K, isolation)] * workers),
        "native": (service.drain, [(cfg["client"], base + "/v1/queues/q", K, True)] * workers),
        "sqs": (sqs_drain, [(base, K)] * workers),
        "sqs signed": (sqs_drain, [(keyed, K, True)] * workers),
    }
    rates: dict[str, float] = {}
    for name, (target, args) in ways.items():
        backend.truncate(table)
        backend.load(table, tasks)
        rate, count, _ = throughput(run_clients(target, args))
        assert count == tasks, (name, count, tasks)
        rates[name] = rate
    return rates


def sqs_poller(base: str, stop: Any, out: Any) -> None:
    got: dict[str, float] = {}
    sqs = Sqs(base)
    while True:
        messages = sqs.call("ReceiveMessage", {"MaxNumberOfMessages": 1, "WaitTimeSeconds": 2}).get(
            "Messages", []
        )
        for m in messages:
            got[m["MessageId"]] = time.time()
            sqs.call("DeleteMessage", {"ReceiptHandle": m["ReceiptHandle"]})
        if not messages and stop.is_set():
            break
    sqs.close()
    out.put(got)


def latency(
    backend: Backend, table: str, base: str, poller: Any, target: str, cfg: dict[str, Any], tag: str
) -> list[float]:
    """Seconds from each submit's answer to its delivery to a waiting ``poller(target, ...)``."""
    backend.truncate(table)
    seconds, _lost = delivery_seconds(poller, target, base + "/v1/queues/q", cfg, tag)
    return seconds


def run(backend: Backend, cfg: dict[str, Any]) -> dict[str, Any]:
    table = f"{cfg['table_prefix']}_sqs"
    backend.create_table(table)
    samples: dict[str, list[float]] = {"ceiling": [], "native": [], "sqs": [], "sqs signed": []}
    lat: dict[str, list[float]] = {"native": [], "sqs": []}
    key = {"name": "bench", "access_key_id": KEY_ID, "secret_env": SECRET_ENV, "scopes": ["work"]}
    os.environ[SECRET_ENV] = SECRET  # the keyed service reads its secret from its environment
    settings = {"disable_resource_limit": True, **cfg["service_settings"]}
    with (
        services(backend, table, 1, **settings) as (svc,),
        services(backend, table, 1, api_keys=[key], **settings) as (keyed,),
    ):
        for rep in range(cfg["repeat"]):  # the ways interleaved: the same conditions for each
            for name, rate in drain_rates(backend, table, svc.base, keyed.base, cfg).items():
                samples[name].append(rate)
            lat["native"] += latency(backend, table, svc.base, native_poller, svc.queue, cfg, f"n{rep}")
            lat["sqs"] += latency(backend, table, svc.base, sqs_poller, svc.base, cfg, f"s{rep}")
    out: dict[str, Any] = {f"{name} k={K} tasks_per_s": summarize(s) for name, s in samples.items()}
    native, sqs = (out[f"{n} k={K} tasks_per_s"]["median"] for n in ("native", "sqs"))
    out["sqs_vs_native"] = round(sqs / native, 3) if native else None
    signed = out[f"sqs signed k={K} tasks_per_s"]["median"]
    out["sqs_signed_vs_native"] = round(signed / native, 3) if native else None
    out["workers"], out["tasks"] = max(cfg["workers"]), cfg["sqs_tasks"]
    out["latency native long-poll"] = percentiles(lat["native"])
    out["latency sqs WaitTimeSeconds"] = percentiles(lat["sqs"])
    return out
