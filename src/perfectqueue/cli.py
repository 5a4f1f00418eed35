"""The ``perfectqueue`` command (also ``python -m perfectqueue``).

The task commands and ``run`` need the SDK alone (and PyYAML to read a ``-c`` file); ``serve``,
``init``, ``keygen`` and ``openapi`` import the service, and say which extra to install when it
is not there.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from typing import Any

from .configfile import ignored_line
from .errors import PerfectQueueError

DESCRIPTION = (
    "Submit, list and manage the tasks of a PerfectQueue service, run workers, and run the service."
    " The task commands and run need only the SDK (and PyYAML for a -c file);"
    " serve, keygen, init and openapi need the 'service' extra."
)

SERVICE_EXTRA = "service"
"""The extra that installs what the service commands import (FastAPI, SQLAlchemy, …)."""


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
    except ModuleNotFoundError as exc:
        if not args.extra:
            raise
        print(
            f"perfectqueue: error: this command needs the '{args.extra}' extra ({exc.name} is not "
            f"installed): pip install 'perfectqueue[{args.extra}]'",
            file=sys.stderr,
        )
        return 2
    return result


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="perfectqueue", description=DESCRIPTION)
    parser.set_defaults(extra=None)
    commands = parser.add_subparsers(required=True, metavar="COMMAND")

    serve = commands.add_parser("serve", help="run the HTTP service (default: SQLite, 127.0.0.1:8000)")
    _config_options(serve)
    serve.add_argument("--host", help="address to listen on (default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port to listen on (default 8000)")
    serve.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    serve.add_argument(
        "--log-format", choices=["text", "json"], help="text (default) or one JSON object per line"
    )
    serve.add_argument(
        "--insecure",
        action="store_true",
        default=None,
        help="allow serving a non-loopback address without api_keys (no authentication at all)",
    )
    serve.set_defaults(command=_serve, extra=SERVICE_EXTRA)

    keygen = commands.add_parser("keygen", help="print a new random API key and its settings entry (hash)")
    keygen.add_argument("--name", default="client", help="the key's name in the settings and in logs")
    keygen.add_argument(
        "--scope",
        action="append",
        choices=["submit", "work", "admin"],
        help="a scope of the key (repeat for several; default: submit and work)",
    )
    keygen.add_argument("--queue", action="append", help="limit the key to this queue (repeat; default: all)")
    keygen.set_defaults(command=_keygen, extra=SERVICE_EXTRA)

    init = commands.add_parser("init", help="create each queue's table, or add what it lacks (idempotent)")
    _config_options(init)
    init.add_argument(
        "--binary-collation",
        action="store_true",
        help="MySQL: make a table the original created compare ids and users byte for byte, as new "
        "tables do (R7.2 and r7.2 become two ids; the table is rebuilt)",
    )
    init.set_defaults(command=_init, extra=SERVICE_EXTRA)

    from . import commands as task_commands

    task_commands.add_parsers(commands)

    from .worker.command import add_parser as add_run_parser

    add_run_parser(commands)  # perfectqueue run MODULE:Dispatch (the worker)

    openapi = commands.add_parser("openapi", help="print the service's OpenAPI document")
    openapi.set_defaults(command=_openapi, extra=SERVICE_EXTRA)
    return parser


def _config_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-c", "--config", help="YAML settings file (or PERFECTQUEUE_CONFIG)")
    parser.add_argument("-e", "--environment", help="section of the file to use (default development)")
    parser.add_argument(
        "--url",
        help="database url, e.g. mysql://user:pass@host/db, postgresql://user:pass@host/db or sqlite:///file",
    )
    parser.add_argument("--table", help="table of the queue when no 'queues' are configured")


def _settings(args: argparse.Namespace, **extra: Any) -> Any:
    from .service.config import load_settings

    overrides = {"url": args.url, "table": args.table, **extra}
    return load_settings(args.config, args.environment, overrides)


def _serve(args: argparse.Namespace) -> int:
    from .service.server import serve

    settings = _settings(
        args, host=args.host, port=args.port, insecure=args.insecure, log_format=args.log_format
    )
    serve(settings, log_level=args.log_level)
    return 0


def _keygen(args: argparse.Namespace) -> int:
    from .service.security import hash_key, new_key

    key = new_key()
    entry: dict[str, Any] = {
        "name": args.name,
        "hash": hash_key(key),
        "scopes": args.scope or ["submit", "work"],
    }
    if args.queue:
        entry["queues"] = args.queue
    print(f"key: {key}")
    print("# give the key to its client (its `token`); only the hash goes into the settings:")
    print("api_keys:")
    print(f"  - {json.dumps(entry)}")
    return 0


def _init(args: argparse.Namespace) -> int:
    from .service.metrics import ServiceMetrics
    from .service.runtime import Runtime

    settings = _settings(args)
    if settings.ignored:
        logging.getLogger("perfectqueue").info("%s", ignored_line(settings.ignored))
    runtime = Runtime(settings, ServiceMetrics())
    runtime.check()
    for name, queue in runtime.queues.items():
        done = queue.store.init(binary_collation=args.binary_collation)
        print(f"{name} ({queue.settings.table}): {', '.join(done) if done else 'up to date'}")
    return 0


def _openapi(_args: argparse.Namespace) -> int:
    from .service.openapi import document

    print(json.dumps(document(), indent=2, sort_keys=True))
    return 0
