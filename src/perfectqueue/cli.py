"""The ``perfectqueue`` command (also ``python -m perfectqueue``)."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from typing import Any

from .errors import PerfectQueueError


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # not a line per request of the task commands
    try:
        result: int = args.command(args)
    except PerfectQueueError as exc:
        print(f"perfectqueue: error: {exc}", file=sys.stderr)
        return 2
    return result


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="perfectqueue", description=__doc__)
    commands = parser.add_subparsers(required=True, metavar="COMMAND")

    serve = commands.add_parser("serve", help="run the HTTP service (default: SQLite, 127.0.0.1:8000)")
    _config_options(serve)
    serve.add_argument("--host", help="address to listen on (default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port to listen on (default 8000)")
    serve.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    serve.set_defaults(command=_serve)

    init = commands.add_parser("init", help="create each queue's table, or add what it lacks (idempotent)")
    _config_options(init)
    init.set_defaults(command=_init)

    from . import commands as task_commands

    task_commands.add_parsers(commands)

    from .worker.command import add_parser as add_run_parser

    add_run_parser(commands)  # perfectqueue run MODULE:Dispatch (the worker)

    openapi = commands.add_parser("openapi", help="print the service's OpenAPI document")
    openapi.set_defaults(command=_openapi)
    return parser


def _config_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-c", "--config", help="YAML settings file (or PERFECTQUEUE_CONFIG)")
    parser.add_argument("-e", "--environment", help="section of the file to use (default development)")
    parser.add_argument("--url", help="database url, e.g. mysql://user:pass@host/db or sqlite:///file")
    parser.add_argument("--table", help="table of the queue when no 'queues' are configured")


def _settings(args: argparse.Namespace, **extra: Any) -> Any:
    from .service.config import load_settings

    overrides = {"url": args.url, "table": args.table, **extra}
    return load_settings(args.config, args.environment, overrides)


def _serve(args: argparse.Namespace) -> int:
    from .service.server import serve

    serve(_settings(args, host=args.host, port=args.port), log_level=args.log_level)
    return 0


def _init(args: argparse.Namespace) -> int:
    from .service.app import Runtime

    runtime = Runtime(_settings(args))
    for name, queue in runtime.queues.items():
        done = queue.store.init()
        print(f"{name} ({queue.settings.table}): {', '.join(done) if done else 'up to date'}")
    return 0


def _openapi(_args: argparse.Namespace) -> int:
    from .service.openapi import document

    print(json.dumps(document(), indent=2, sort_keys=True))
    return 0
