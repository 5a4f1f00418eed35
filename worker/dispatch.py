"""``Dispatch`` (the original's ``Application::Dispatch``): route each task to a handler by type.

    class Dispatch(perfectqueue.worker.Dispatch):
        pass

    Dispatch.route("type1", TestHandler)                # an exact type
    Dispatch.route(re.compile(r"^regexp-.*$"), "TestHandler")   # a regex, a lazy name
    Dispatch.route("report", ReportHandler, time_limit=600)     # stopped after 600 s

Routes are tried in the order they were added; the first that matches wins. A regex matches as
Ruby's ``=~`` does (:meth:`re.Pattern.search`: anchor it yourself). A handler given by name is
looked up when first needed: a plain name in the module of the Dispatch subclass, a dotted
``package.module.Name`` by importing the module. A task whose type no route matches ends **dead**
at once, its ``last_error`` saying so (``UnknownType: …``), and an error is logged: retrying it
would only fail again; requeue it once a route handles its type. A subclass that sets
``unknown_type = "retry"`` retries it instead (the original's behaviour). A task whose handler
cannot be found (a name that does not resolve: a deployment error) is retried.

A route's ``time_limit`` (seconds; 0: no limit) bounds how long its handler may run, overriding
the handler class's ``time_limit`` and the worker's ``task_time_limit`` (see docs/worker.md: time
limits).
"""

from __future__ import annotations

import importlib
import logging
import re
import sys
from collections.abc import Awaitable
from typing import Any, ClassVar, Literal

from ..errors import ConfigError
from . import logs
from .application import Base, retry

log = logging.getLogger("perfectqueue.worker")
Pattern = str | re.Pattern[str]
Handler = type[Base] | str


class Dispatch(Base):
    """A :class:`Base` whose :meth:`run` hands the task to the handler routed for its type."""

    routes: ClassVar[list[tuple[Pattern, Handler, float | None]]] = []
    unknown_type: ClassVar[Literal["dead", "retry"]] = "dead"
    """What becomes of a task whose type no route matches: dead at once, or retried."""

    @classmethod
    def route(cls, pattern: Pattern, handler: Handler, *, time_limit: float | None = None) -> None:
        """Send tasks whose type is ``pattern`` (or matches the regex) to ``handler``, which may
        run ``time_limit`` seconds (0: no limit; None: the handler's, else the worker's)."""
        if not isinstance(pattern, str | re.Pattern):
            raise ConfigError(f"a route's pattern must be a type string or a regex, not {pattern!r}")
        if not (isinstance(handler, str) or (isinstance(handler, type) and issubclass(handler, Base))):
            raise ConfigError(f"a route's handler must be a Base subclass or its name, not {handler!r}")
        if time_limit is not None and not (_seconds(time_limit) and time_limit >= 0):
            raise ConfigError(f"a route's time_limit must be seconds (0: no limit), not {time_limit!r}")
        if "routes" not in cls.__dict__:
            cls.routes = list(cls.routes)  # each subclass has its own table, inheriting its parent's
        cls.routes.append((pattern, handler, time_limit))

    @classmethod
    def handler_for(cls, task_type: str) -> type[Base] | None:
        """The handler class for ``task_type``, or None when no route matches."""
        for index, (pattern, handler, time_limit) in enumerate(cls.routes):
            if not _matches(pattern, task_type):
                continue
            if isinstance(handler, str):
                resolved = cls._resolve(handler)
                cls.routes[index] = (pattern, resolved, time_limit)
                return resolved
            return handler
        return None

    @classmethod
    def time_limit_for(cls, task_type: str, default: float | None) -> float | None:
        """The matching route's ``time_limit``, else its handler's, else this class's own
        :attr:`~Base.time_limit` (a Dispatch's default for its routes), else ``default``."""
        route = next((r for r in cls.routes if _matches(r[0], task_type)), None)
        if route is not None and route[2] is not None:
            return route[2] or None
        default = super().time_limit_for(task_type, default)
        try:
            handler = cls.handler_for(task_type)
        except (ConfigError, ImportError):
            handler = None  # run() retries the task, saying why
        return default if handler is None else handler.time_limit_for(task_type, default)

    def run(self) -> Awaitable[None] | None:
        task = self.task
        try:
            handler = type(self).handler_for(task.type)
        except (ConfigError, ImportError) as exc:
            log.error("%s", logs.fields(event="bad_route", id=task.key, type=task.type, error=exc))
            retry(task)
            return None
        if handler is None:
            log.error("%s", logs.fields(event="unknown_type", id=task.key, type=task.type))
            error = f"UnknownType: no route of {type(self).__name__} matches the type {task.type!r}"
            retry(task, error=error, dead=type(self).unknown_type == "dead")
            return None
        return handler(task).execute()

    @classmethod
    def _resolve(cls, name: str) -> type[Base]:
        if "." in name:
            module_name, _, attr = name.rpartition(".")
            found: Any = getattr(importlib.import_module(module_name), attr, None)
        else:
            found = getattr(sys.modules[cls.__module__], name, None)
        if not (isinstance(found, type) and issubclass(found, Base)):
            raise ConfigError(f"handler {name!r} of {cls.__name__} is not a Base subclass ({found!r})")
        return found


def _seconds(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _matches(pattern: Pattern, task_type: str) -> bool:
    if isinstance(pattern, str):
        return pattern == task_type
    return pattern.search(task_type) is not None
