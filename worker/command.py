"""``perfectqueue run MODULE:Dispatch [-c CONFIG] [-e ENV] [-I PATH] [-r MODULE]``: the original's tool.

The current directory is on ``sys.path`` (as with dramatiq and celery), ``-I`` adds more (Ruby's
``$LOAD_PATH``), ``-r`` imports a module before the application is looked up. An application
that cannot be imported, or is not a Dispatch or Base subclass, is one line and exit status 2.

The configuration is read from the YAML file again on every restart (USR1/HUP) by
:func:`perfectqueue.configfile.read_section`: its section for the environment (``-e``,
``PERFECTQUEUE_ENV``, default ``development``) when it has one, else the whole file.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Callable, Mapping
from types import ModuleType
from typing import Any

from ..configfile import command_settings
from ..errors import ConfigError
from .application import Base

DEFAULT_CONFIG = "config/perfectqueue.yml"


def add_parser(commands: Any) -> None:
    """The ``run`` subcommand, added to the ``perfectqueue`` command's subparsers."""
    parser: argparse.ArgumentParser = commands.add_parser("run", help="run a worker (MODULE:Dispatch)")
    parser.add_argument("application", metavar="MODULE:CLASS", help="the Dispatch (or Base) subclass")
    parser.add_argument(
        "-c", "--config", help=f"YAML file (or PERFECTQUEUE_CONFIG; default {DEFAULT_CONFIG} when it exists)"
    )
    parser.add_argument("-e", "--environment", help="section of the file (default development)")
    parser.add_argument("--url", help="the service's url, or the database's (or PERFECTQUEUE_URL)")
    parser.add_argument("--queue", help="the queue to work on (or PERFECTQUEUE_QUEUE)")
    parser.add_argument(
        "--processors", type=int, help="children (or threads) running tasks (or PERFECTQUEUE_PROCESSORS)"
    )
    parser.add_argument(
        "-I",
        "--include",
        action="append",
        default=[],
        metavar="PATH",
        help="also import from this directory (the current one always is)",
    )
    parser.add_argument("-r", "--require", action="append", default=[], metavar="MODULE", help="import first")
    parser.set_defaults(command=run_command)


def run_command(args: argparse.Namespace) -> int:
    from .supervisor import run

    for path in [os.curdir, *args.include]:
        sys.path.insert(0, os.path.abspath(path))
    for module in args.require:
        import_module(module)
    application = find_application(args.application)
    return run(application, loader(args))


def find_application(spec: str) -> type[Base]:
    """``package.module:Class`` (or ``package.module.Class``) → the class."""
    module_name, sep, attr = spec.partition(":")
    if not sep:
        module_name, _, attr = spec.rpartition(".")
    if not module_name or not attr:
        raise ConfigError(f"the application must be given as MODULE:CLASS, not {spec!r}")
    found = getattr(import_module(module_name), attr, None)
    if found is None:
        raise ConfigError(f"cannot find {attr} in module {module_name} (given {spec})")
    if not (isinstance(found, type) and issubclass(found, Base)):
        raise ConfigError(f"{spec} is not a perfectqueue.worker Dispatch or Base subclass")
    return found


def import_module(name: str) -> ModuleType:
    """The module, or a ConfigError naming what is missing (a module of the application's own
    failing in another way keeps its traceback: that is where its author looks)."""
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as exc:
        if f"{name}.".startswith(f"{exc.name}."):  # the module itself (or its package) is missing
            raise ConfigError(
                f"cannot import {name}: no module named {exc.name!r} here or on the path "
                "(-I PATH adds a directory)"
            ) from None
        raise ConfigError(f"cannot import {name}: it imports {exc.name!r}, which is not found") from None


def loader(args: argparse.Namespace) -> Callable[[], Mapping[str, Any]]:
    """A loader reading the file anew at every call (so restarts see its changes), under the
    ``PERFECTQUEUE_*`` variables and the flags given."""
    processors = args.processors or os.environ.get("PERFECTQUEUE_PROCESSORS")
    flags = {"url": args.url, "queue": args.queue, "processors": processors and _whole(processors)}

    def load() -> Mapping[str, Any]:
        return command_settings(args.config, args.environment, flags, default_path=DEFAULT_CONFIG)

    return load


def _whole(value: str | int) -> int:
    try:
        return int(value)
    except ValueError:
        raise ConfigError(f"PERFECTQUEUE_PROCESSORS must be a whole number, not {value!r}") from None
