"""HTTP request metrics: every request counted and timed."""

from __future__ import annotations

from starlette.routing import Match
from starlette.types import Scope

from .metrics import ServiceMetrics

METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


class HttpMetrics:
    """Requests counted and timed by method, route template (not the raw path) and status; a
    request no route matches is ``route="unmatched"``. Fed by the request log's middleware
    (:class:`~.logs.RequestLog`), which sees every request's status and duration anyway."""

    def __init__(self, metrics: ServiceMetrics) -> None:
        self.metrics = metrics

    def started(self) -> None:
        self.metrics.http_in_flight.inc()

    def finished(self, scope: Scope, status: int, seconds: float) -> None:
        self.metrics.http_in_flight.dec()
        method = scope["method"] if scope["method"] in METHODS else "other"
        route = route_of(scope)
        self.metrics.http_requests.labels(method, route, str(status)).inc()
        self.metrics.http_duration.labels(method, route).observe(seconds)


def route_of(scope: Scope) -> str:
    """The template of the route that served (or would serve) the request."""
    route = scope.get("route")
    if route is None:  # refused before routing (no key, body too large): match it here
        app = scope.get("app")
        for candidate in getattr(getattr(app, "router", None), "routes", ()):
            if candidate.matches(scope)[0] is not Match.NONE:
                route = candidate
                break
    path = getattr(route, "path", None)
    return path if isinstance(path, str) else "unmatched"
