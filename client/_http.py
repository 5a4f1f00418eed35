"""The HTTP backend: calls become requests to the service; answers and problems come back as
records and as the same exception classes the service raised.

Every request has a timeout (a long-poll's exceeds its wait), carries a User-Agent with the
version and the bearer token when one is configured, and reuses connections. A try that fails
for want of the service (connection error, 502/503/504) is repeated with jittered exponential
backoff, honouring Retry-After — always when the request never left (connect errors, 503s), and
when its outcome is unknown only for calls that are safe to repeat.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any, Generic
from urllib.parse import quote

import httpx

from .._version import __version__
from ..errors import InvalidError, UnavailableError
from ._calls import Backoff, Call, R
from ._types import RETRY_STATUSES, error_of


class Request(Generic[R]):
    """A call's request to the service of ``queue``, and how to read its answer."""

    def __init__(self, call: Call[R], queue: str) -> None:
        self.call = call
        http = call.http()
        self.method, self.params = http.method, http.params
        self.path = f"/v1/queues/{quote(queue, safe='')}{http.path}"
        self.content = None if http.json is None else _encode(http.json)
        self.headers = None if self.content is None else {"Content-Type": "application/json"}

    def result(self, response: httpx.Response) -> R:
        return self.call.parse(response.json() if response.content else None)


def raise_for(response: httpx.Response) -> None:
    if response.is_success:
        return
    try:
        body = response.json()
        code, detail = str(body.get("code", "")), str(body.get("detail") or body.get("title") or "")
    except ValueError:
        code, detail = "", response.text[:200]
    raise error_of(code, detail or f"HTTP {response.status_code}", response.status_code)


def retry_delay(request: Request[Any], backoff: Backoff, attempt: int, outcome: object) -> float | None:
    """Seconds to wait before trying again, or None to give up and raise."""
    if attempt >= backoff.retries:
        return None
    if isinstance(outcome, httpx.Response):
        if outcome.status_code not in RETRY_STATUSES:
            return None
        if outcome.status_code != 503 and not request.call.repeatable:
            return None  # a gateway's 502/504: the service may have done it
        after = outcome.headers.get("Retry-After", "")
        return backoff.delay(attempt, float(after) if after.isdigit() else 0.0)
    never_sent = isinstance(outcome, httpx.ConnectError | httpx.ConnectTimeout | httpx.PoolTimeout)
    return backoff.delay(attempt) if never_sent or request.call.repeatable else None


def client_options(url: str, token: str | None, timeout: float) -> dict[str, Any]:
    headers = {"User-Agent": f"perfectqueue-python/{__version__}"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    return {"base_url": url, "headers": headers, "timeout": timeout}


class HttpBackend:
    """Synchronous HTTP backend (one connection pool per queue object)."""

    def __init__(
        self,
        url: str,
        queue: str,
        token: str | None,
        timeout: float,
        backoff: Backoff,
        *,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.queue, self.timeout, self.backoff = queue, timeout, backoff
        self.client = httpx.Client(**client_options(url, token, timeout), transport=transport)

    def execute(self, call: Call[R]) -> R:
        request, attempt = Request(call, self.queue), 0
        while True:
            outcome: httpx.Response | httpx.TransportError
            try:
                outcome = self.client.request(
                    request.method,
                    request.path,
                    content=request.content,
                    headers=request.headers,
                    params=request.params,
                    timeout=self.timeout + call.wait,
                )
            except httpx.TransportError as exc:
                outcome = exc
            delay = retry_delay(request, self.backoff, attempt, outcome)
            if delay is None:
                return _finish(request, outcome)
            time.sleep(delay)
            attempt += 1

    def close(self) -> None:
        self.client.close()


class AsyncHttpBackend:
    """The asyncio twin of :class:`HttpBackend`."""

    def __init__(
        self,
        url: str,
        queue: str,
        token: str | None,
        timeout: float,
        backoff: Backoff,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.queue, self.timeout, self.backoff = queue, timeout, backoff
        self.client = httpx.AsyncClient(**client_options(url, token, timeout), transport=transport)

    async def execute(self, call: Call[R]) -> R:
        request, attempt = Request(call, self.queue), 0
        while True:
            outcome: httpx.Response | httpx.TransportError
            try:
                outcome = await self.client.request(
                    request.method,
                    request.path,
                    content=request.content,
                    headers=request.headers,
                    params=request.params,
                    timeout=self.timeout + call.wait,
                )
            except httpx.TransportError as exc:
                outcome = exc
            delay = retry_delay(request, self.backoff, attempt, outcome)
            if delay is None:
                return _finish(request, outcome)
            await asyncio.sleep(delay)
            attempt += 1

    async def close(self) -> None:
        await self.client.aclose()


def _finish(request: Request[R], outcome: httpx.Response | httpx.TransportError) -> R:
    if isinstance(outcome, httpx.TransportError):
        raise UnavailableError(
            f"cannot reach the service at {_origin(outcome)}: {type(outcome).__name__}: {outcome}"
        ) from outcome
    raise_for(outcome)
    return request.result(outcome)


def _origin(error: httpx.TransportError) -> str:
    """The scheme, host and port the failed request went to."""
    try:
        url = error.request.url
    except RuntimeError:  # an error raised without its request
        return "its url"
    return f"{url.scheme}://{url.netloc.decode('ascii', 'replace')}"


def _encode(body: Any) -> bytes:
    """Standard JSON, or the InvalidError the store raises for anything else (not a TypeError)."""
    try:
        return json.dumps(body, allow_nan=False, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    except (TypeError, ValueError):  # NaN or Infinity, an unpaired surrogate, a non-JSON value
        raise InvalidError("data must be standard JSON: no NaN, Infinity or unpaired surrogates") from None
