"""``perfectqueue run MODULE:Dispatch [-c CONFIG] [-e ENV] [-I PATH] [-r MODULE]``: the seed's tool.

``-I`` adds a directory to ``sys.path`` (Ruby's ``$LOAD_PATH``), ``-r`` imports a module before
the application is looked up. The configuration is read from the YAML file again on every
restart (USR1/HUP) by :func:`perfectqueue.configfile.read_section`: its section for the
environment (``-e``, ``PERFECTQUEUE_ENV``, default ``development``) when it has one, else the
whole file.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from ..configfile import read_section
from ..errors import ConfigError
from .application import Base

DEFAULT_CONFIG = "config/perfectqueue.yml"


def add_parser(commands: Any) -> None:
    """The ``run`` subcommand, added to the ``perfectqueue`` command's subparsers."""
    parser: argparse.ArgumentParser = commands.add_parser("run", help="run a worker (MODULE:Dispatch)")
    parser.add_argument("application", metavar="MODULE:CLASS", help="the Dispatch (or Base) subclass")
    parser.add_argument(
        "-c", "--config", default=DEFAULT_CONFIG, help=f"YAML file (default {DEFAULT_CONFIG})"
    )
    parser.add_argument("-e", "--environment", help="section of the file (default development)")
    parser.add_argument(
        "-I", "--include", action="append", default=[], metavar="PATH", help="add to sys.path"
    )
    parser.add_argument("-r", "--require", action="append", default=[], metavar="MODULE", help="import first")
    parser.set_defaults(command=run_command)


def run_command(args: argparse.Namespace) -> int:
    from .supervisor import run

    for path in args.include:
        sys.path.insert(0, os.path.abspath(path))
    for module in args.require:
        importlib.import_module(module)
    application = find_application(args.application)
    return run(application, yaml_loader(Path(args.config), args.environment))


def find_application(spec: str) -> type[Base]:
    """``package.module:Class`` (or ``package.module.Class``) → the class."""
    module_name, sep, attr = spec.partition(":")
    if not sep:
        module_name, _, attr = spec.rpartition(".")
    if not module_name or not attr:
        raise ConfigError(f"the application must be given as MODULE:CLASS, not {spec!r}")
    found = getattr(importlib.import_module(module_name), attr, None)
    if not (isinstance(found, type) and issubclass(found, Base)):
        raise ConfigError(f"{spec} is not a perfectqueue.worker Dispatch or Base subclass")
    return found


def yaml_loader(path: Path, environment: str | None) -> Callable[[], Mapping[str, Any]]:
    """A loader reading ``path`` anew at every call (so restarts see the file's changes)."""

    def load() -> Mapping[str, Any]:
        return read_section(path, environment)

    return load
