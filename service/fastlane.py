"""The hot endpoints' short path: the same endpoint functions, called without FastAPI's routing,
dependency solving and response validation.

For one task per call most of the service's CPU went to the framework around the store call
(docs/benchmarks.md). A POST to a hot endpoint whose request is plainly fine — a JSON body its
model accepts, a declared queue, a key with the route's scope — is answered here by calling the
route's own endpoint function; every other request, and every request this path is unsure of, goes
on to FastAPI unchanged, so that every refusal is FastAPI's own answer. Everything this path needs
to know about a route (its endpoint, body model, status code, scopes) is read from the route.
"""

from __future__ import annotations

import inspect
import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from fastapi.routing import APIRoute
from pydantic import BaseModel, ValidationError
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute
from starlette.types import ASGIApp, Receive, Scope, Send

from ..errors import PerfectQueueError
from . import problems
from .asgi import header
from .limits import replay
from .routes import TRACEPARENT_LENGTH
from .security import Require

if TYPE_CHECKING:
    from .app import Runtime

HOT = frozenset(
    {
        "submitTask",
        "pollTasks",
        "heartbeatTask",
        "heartbeatTasks",
        "finishTask",
        "finishTasks",
        "retryTask",
        "releaseTask",
    }
)
"""The calls made for every task (one at a time or a worker's batch), not the operator's."""
PARAMETERS = frozenset({"body", "queue", "runtime", "request", "traceparent"})
"""What a hot endpoint may ask for; anything else is FastAPI's to resolve."""


@dataclass(frozen=True)
class Hot:
    """One hot route, as this path calls it."""

    route: APIRoute
    body: type[BaseModel]
    parameters: frozenset[str]
    require: Require | None


def hot_route(route: APIRoute) -> Hot:
    parameters = frozenset(inspect.signature(route.endpoint).parameters)
    if not parameters <= PARAMETERS or "body" not in parameters:
        raise TypeError(f"{route.operation_id}: the short path cannot call {sorted(parameters)}")
    requires = [d.dependency for d in route.dependencies if isinstance(d.dependency, Require)]
    if len(requires) != len(route.dependencies) or len(requires) > 1:
        raise TypeError(f"{route.operation_id}: the short path knows no dependency but one Require")
    body = route.dependant.body_params[0].field_info.annotation
    assert isinstance(body, type) and issubclass(body, BaseModel)
    return Hot(route, body, parameters, requires[0] if requires else None)


class FastLane:
    """Pure ASGI, inside the service's own middleware (request log, keys, body limit): answers the
    hot endpoints' plainly fine requests; gives everything else to ``app`` (FastAPI)."""

    def __init__(self, app: ASGIApp, routes: list[BaseRoute], runtime: Runtime) -> None:
        self.app, self.runtime = app, runtime
        hot = [hot_route(r) for r in routes if isinstance(r, APIRoute) and r.operation_id in HOT]
        if {h.route.operation_id for h in hot} != HOT:
            raise TypeError(f"the short path's operations are not all routes: {sorted(HOT)}")
        self.by_last_segment = {h.route.path.rpartition("/")[2]: h for h in hot}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        hot = self.by_last_segment.get(scope["path"].rpartition("/")[2]) if scope["type"] == "http" else None
        if hot is None or scope["method"] != "POST" or not is_json(scope):
            await self.app(scope, receive, send)
            return
        body = await read_body(receive)
        if body is None:  # the client is gone
            return
        arguments = self.arguments(hot, scope, receive, body)
        if arguments is None:
            await self.app(scope, replay(body, receive), send)
            return
        try:
            result = await hot.route.endpoint(**arguments)
        except PerfectQueueError as exc:
            result = problems.error_problem(exc)
        await response_of(hot.route, result)(scope, receive, send)

    def arguments(self, hot: Hot, scope: Scope, receive: Receive, body: bytes) -> dict[str, Any] | None:
        """The endpoint's arguments, or None if FastAPI is to answer."""
        match = hot.route.path_regex.match(scope["path"])
        if match is None:
            return None
        name = match["queue"]
        queue = self.runtime.queues.get(name)
        if queue is None or (hot.require and not hot.require.allows(self.runtime.settings, scope, name)):
            return None
        traceparent = header(scope, b"traceparent") if "traceparent" in hot.parameters else None
        if traceparent is not None and len(traceparent) > TRACEPARENT_LENGTH:  # FastAPI's 422
            return None
        try:
            model = hot.body.model_validate(json.loads(body))
        except (ValueError, RecursionError, ValidationError):  # not JSON, or not acceptable: FastAPI answers
            return None
        scope["route"], scope["path_params"] = hot.route, match.groupdict()
        arguments = {"body": model, "queue": queue, "runtime": self.runtime, "traceparent": traceparent}
        if "request" in hot.parameters:
            arguments["request"] = Request(scope, receive)
        return {name: arguments[name] for name in hot.parameters}


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


def response_of(route: APIRoute, result: Any) -> Response:
    """As FastAPI answers: a Response as it is, a model serialized as the route says."""
    if isinstance(result, Response):
        return result
    assert isinstance(result, BaseModel)
    content = result.model_dump_json(
        by_alias=route.response_model_by_alias,
        exclude_unset=route.response_model_exclude_unset,
        exclude_defaults=route.response_model_exclude_defaults,
        exclude_none=route.response_model_exclude_none,
    )
    return Response(content, status_code=route.status_code or 200, media_type="application/json")
