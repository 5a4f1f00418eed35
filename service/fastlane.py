"""The hot operations' short path: their handlers, called without FastAPI's routing, dependency
solving and response validation.

For one task per call most of the service's CPU went to the framework around the store call
(docs/benchmarks-history.md, round 4). A POST to a hot operation (``Operation.hot``) whose
request is plainly fine — a JSON body its model accepts, a declared queue, a key with the
operation's scope — is answered here by the operation's own handler, from its declaration
(:data:`.operations.OPERATIONS`): the same handler, body model, status and answer model FastAPI's
route is built from. Every other
request, and every request this path is unsure of, goes on to FastAPI unchanged, so that every
refusal of a request is FastAPI's own answer; a handler's error is answered here as FastAPI's
error handler answers it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ValidationError
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from ..errors import PerfectQueueError
from . import problems
from .asgi import header
from .limits import replay
from .operations import TRACEPARENT_HEADER, Call, Operation, traceparent_of
from .runtime import QueueRuntime, Runtime
from .security import Require

PATH = re.compile(r"/v1/queues/(?P<queue>[^/]+)/(?P<segment>[a-z-]+)")


@dataclass(frozen=True)
class Template:
    """What the request log reads of a route: its path template (a metric's label)."""

    path: str


class FastLane:
    """Pure ASGI, inside the service's own middleware (request log, keys, body limit): answers the
    hot operations' plainly fine requests; gives everything else to ``app`` (FastAPI)."""

    def __init__(self, app: ASGIApp, operations: Sequence[Operation[Any]], runtime: Runtime) -> None:
        self.app, self.runtime = app, runtime
        self.hot = {op.segment: (op, Require(op.scopes), Template(op.path)) for op in operations if op.hot}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        match = (
            PATH.fullmatch(scope["path"]) if scope["type"] == "http" and scope["method"] == "POST" else None
        )
        hot = self.hot.get(match["segment"]) if match else None
        if match is None or hot is None or not is_json(scope):
            await self.app(scope, receive, send)
            return
        operation, require, template = hot
        body = await read_body(receive)
        if body is None:  # the client is gone
            return
        queue = self.runtime.queues.get(match["queue"])
        if queue is None or not require.allows(self.runtime.settings, scope, queue.name):
            await self.app(scope, replay(body, receive), send)
            return
        model = parsed(operation, body)
        if model is None:
            await self.app(scope, replay(body, receive), send)
            return
        scope["route"], scope["path_params"] = template, {"queue": queue.name}
        response = await self.answer(operation, queue, model, scope, receive)
        await response(scope, receive, send)

    async def answer(
        self, operation: Operation[Any], queue: QueueRuntime, body: BaseModel, scope: Scope, receive: Receive
    ) -> Response:
        try:
            traceparent = header(scope, TRACEPARENT_HEADER.encode()) if operation.traceparent else None
            call = Call(traceparent_of(traceparent), Request(scope, receive).is_disconnected)
            result = await operation.handler(queue, body, call)
        except PerfectQueueError as exc:
            return problems.error_problem(exc)
        if result is None:
            return Response(status_code=204)
        content = result.model_dump_json(by_alias=True)
        return Response(content, status_code=operation.status, media_type="application/json")


def parsed(operation: Operation[Any], body: bytes) -> BaseModel | None:
    """The body as the operation's model, or None if FastAPI is to answer (not JSON, or refused)."""
    try:
        model: BaseModel = operation.body.model_validate(json.loads(body))
    except (ValueError, RecursionError, ValidationError):
        return None
    return model


def is_json(scope: Scope) -> bool:
    """No Content-Type, or application/json: what FastAPI parses as JSON (a +json subtype or an
    odd spelling goes to FastAPI)."""
    value = header(scope, b"content-type")
    return value is None or value.partition(";")[0].strip().lower() == "application/json"


async def read_body(receive: Receive) -> bytes | None:
    chunks = []
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return None
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks)
