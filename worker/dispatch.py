"""``Dispatch`` (the original's ``Application::Dispatch``): route each task to a handler by type.

    class Dispatch(perfectqueue.worker.Dispatch):
        pass

    Dispatch.route("type1", TestHandler)                # an exact type
    Dispatch.route(re.compile(r"^regexp-.*$"), "TestHandler")   # a regex, a lazy name

Routes are tried in the order they were added; the first that matches wins. A regex matches as
Ruby's ``=~`` does (:meth:`re.Pattern.search`: anchor it yourself). A handler given by name is
looked up when first needed: a plain name in the module of the Dispatch subclass, a dotted
``package.module.Name`` by importing the module. A task whose type no route matches ends **dead**
at once, its ``last_error`` saying so (``UnknownType: …``), and an error is logged: retrying it
would only fail again; requeue it once a route handles its type. A subclass that sets
``unknown_type = "retry"`` retries it instead (the original's behaviour). A task whose handler
cannot be found (a name that does not resolve: a deployment error) is retried.
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

    routes: ClassVar[list[tuple[Pattern, Handler]]] = []
    unknown_type: ClassVar[Literal["dead", "retry"]] = "dead"
    """What becomes of a task whose type no route matches: dead at once, or retried."""

    @classmethod
    def route(cls, pattern: Pattern, handler: Handler) -> None:
        """Send tasks whose type is ``pattern`` (or matches the regex) to ``handler``."""
        if not isinstance(pattern, str | re.Pattern):
            raise ConfigError(f"a route's pattern must be a type string or a regex, not {pattern!r}")
        if not (isinstance(handler, str) or (isinstance(handler, type) and issubclass(handler, Base))):
            raise ConfigError(f"a route's handler must be a Base subclass or its name, not {handler!r}")
        if "routes" not in cls.__dict__:
            cls.routes = list(cls.routes)  # each subclass has its own table, inheriting its parent's
        cls.routes.append((pattern, handler))

    @classmethod
    def handler_for(cls, task_type: str) -> type[Base] | None:
        """The handler class for ``task_type``, or None when no route matches."""
        for index, (pattern, handler) in enumerate(cls.routes):
            if not _matches(pattern, task_type):
                continue
            if isinstance(handler, str):
                resolved = cls._resolve(handler)
                cls.routes[index] = (pattern, resolved)
                return resolved
            return handler
        return None

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


def _matches(pattern: Pattern, task_type: str) -> bool:
    if isinstance(pattern, str):
        return pattern == task_type
    return pattern.search(task_type) is not None
