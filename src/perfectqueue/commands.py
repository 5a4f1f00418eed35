"""The original's command-line tool for tasks: list, submit, force_finish, show, stats; and
cancel, requeue (of a dead task), bulk (either, on every task a filter selects), pause and
resume, beyond the original. ``force-finish`` is a hidden alias.

They talk to the service (``type: http``, the default) or straight to the database
(``type: rdb_compat`` with the seed's ``url`` and ``table``), configured as the SDK is: a YAML
file (``-c``, per-environment sections chosen by ``-e``) and flags.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from datetime import UTC, datetime
from typing import Any

from .client import Failure, Queue, QueueStats, TaskMetadata, open
from .client._types import INSTANTS, STATES
from .configfile import command_settings, screened
from .errors import InvalidError

log = logging.getLogger("perfectqueue")
STATUSES = ["waiting", "running", "finished", "dead", "cancelled"]
DONE = {"requeue": "requeued", "cancel": "cancelled"}
COLUMNS = ("key", "type", "user", "state", "created_at", "when", "data")
WIDTHS = {"key": 24, "type": 14, "user": 12, "state": 9, "created_at": 20, "when": 33, "data": 30}
WHEN = {
    "waiting": ("due", "due_at"),
    "scheduled": ("due", "due_at"),
    "leased": ("lease ends", "lease_expires_at"),
}
"""The time the table's ``when`` column shows for a state (an ended task: when it ended)."""


def add_parsers(commands: Any) -> None:
    """The task commands, added to the ``perfectqueue`` command's subparsers."""
    listing = _parser(commands, "list", "list tasks (a readable table, or JSON lines with --json)")
    listing.add_argument(
        "--status",
        choices=STATUSES,
        help="only the tasks in this state (dead ones with their last_error)",
    )
    listing.add_argument("--type", dest="task_type", help="only the tasks of this type")
    listing.add_argument("--user", help="only the tasks of this user")
    listing.add_argument("--json", action="store_true", help="one JSON object per line")
    listing.set_defaults(command=list_tasks)

    submit = _parser(commands, "submit", "submit a task")
    submit.add_argument("key")
    submit.add_argument("type")
    submit.add_argument("data", help="the task's data, a JSON object")
    submit.add_argument("-u", "--user", help="the user the task runs for")
    submit.add_argument("-t", "--time", type=int, dest="run_at", help="run at this unix time")
    submit.add_argument("-m", "--max-running", type=int, help="the user's max_running")
    submit.add_argument("-a", "--max-attempts", type=int, help="deliveries before the task is dead")
    submit.add_argument("--traceparent", help="a W3C trace context to carry with the task")
    submit.set_defaults(command=submit_task)

    for name in ("force_finish", "force-finish"):  # the second one accepted, not listed
        finish = _parser(commands, name, "finish a task whatever holds it", listed=name == "force_finish")
        finish.add_argument("key")
        finish.set_defaults(command=force_finish)

    cancel = _parser(
        commands, "cancel", "cancel a task (at once if nobody holds it, else at its next heartbeat)"
    )
    cancel.add_argument("key")
    cancel.add_argument(
        "--force", action="store_true", help="end it now even if a Ruby PerfectQueue process holds it"
    )
    cancel.set_defaults(command=cancel_task)

    requeue = _parser(commands, "requeue", "make a dead task waiting again, its attempts reset")
    requeue.add_argument("key")
    requeue.set_defaults(command=requeue_task)

    bulk = _parser(
        commands, "bulk", "requeue or cancel every task in a state (filtered), after a confirmation"
    )
    bulk.add_argument(
        "action", choices=sorted(DONE), help="requeue (dead tasks) or cancel (waiting or running)"
    )
    bulk.add_argument("--status", required=True, choices=STATUSES, help="the state of the tasks to act on")
    bulk.add_argument("--type", dest="task_type", help="only the tasks of this type")
    bulk.add_argument("--user", help="only the tasks of this user")
    bulk.add_argument("--prefix", help="only the tasks whose key starts with this")
    bulk.add_argument("-y", "--yes", action="store_true", help="do not ask for a confirmation")
    bulk.set_defaults(command=bulk_action)

    show = _parser(commands, "show", "show one task")
    show.add_argument("key")
    show.set_defaults(command=show_task)

    stats = _parser(commands, "stats", "waiting, leased, scheduled, finished, dead and cancelled counts")
    stats.set_defaults(command=show_stats)

    pause = _parser(commands, "pause", "pause the queue: polls get nothing, submits are still accepted")
    pause.set_defaults(command=pause_queue, paused=True)
    resume = _parser(commands, "resume", "resume a paused queue")
    resume.set_defaults(command=pause_queue, paused=False)


def _parser(commands: Any, name: str, help_text: str, *, listed: bool = True) -> argparse.ArgumentParser:
    shown = {"help": help_text} if listed else {}  # a subparser without help is not in the list
    parser: argparse.ArgumentParser = commands.add_parser(name, description=help_text, **shown)
    parser.add_argument(
        "-c", "--config", help="YAML file (keys: type, url, queue, table, token; or PERFECTQUEUE_CONFIG)"
    )
    parser.add_argument("-e", "--environment", help="section of the file (default development)")
    parser.add_argument(
        "--url", help="service url (default http://127.0.0.1:8000), or database url (or PERFECTQUEUE_URL)"
    )
    parser.add_argument("--queue", help="queue name (default 'default'; or PERFECTQUEUE_QUEUE)")
    parser.add_argument("--table", help="table, with --backend rdb_compat")
    parser.add_argument(
        "--backend",
        choices=["http", "rdb_compat"],
        help="http: through the service (default); rdb_compat: straight to the database",
    )
    return parser


def open_queue(args: argparse.Namespace) -> Queue:
    flags = {"url": args.url, "queue": args.queue, "table": args.table, "type": args.backend}
    settings = command_settings(args.config, args.environment, flags)
    screened(settings, "the settings", log)
    return open(settings)


def list_tasks(args: argparse.Namespace) -> int:
    with open_queue(args) as queue:
        tasks = queue.tasks(status=args.status, type=args.task_type, user=args.user)
        if args.json:
            for task in tasks:
                print(json.dumps(_row(task), ensure_ascii=False), flush=True)
            return 0
        columns = (*COLUMNS, "last_error") if args.status == "dead" else COLUMNS
        print(_format_row({c: c for c in columns}, columns), file=sys.stdout)
        for count, task in enumerate(tasks, 1):
            print(_format_row(_table_row(task), columns), flush=count % 100 == 0)
    return 0


def submit_task(args: argparse.Namespace) -> int:
    try:
        data = json.loads(args.data)
    except ValueError as exc:
        raise InvalidError(f"data is not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise InvalidError("data must be a JSON object")
    with open_queue(args) as queue:
        queue.submit(
            args.key,
            args.type,
            data,
            user=args.user,
            run_at=args.run_at,
            max_running=args.max_running,
            max_attempts=args.max_attempts,
            traceparent=args.traceparent,
        )
    print(f"submitted {args.key}")
    return 0


def force_finish(args: argparse.Namespace) -> int:
    with open_queue(args) as queue:
        queue[args.key].force_finish()
    print(f"finished {args.key}")
    return 0


def cancel_task(args: argparse.Namespace) -> int:
    with open_queue(args) as queue:
        task = queue[args.key].cancel(force=args.force)
    print(f"cancel requested for {args.key} (running)" if task.cancel_requested else f"cancelled {args.key}")
    return 0


def requeue_task(args: argparse.Namespace) -> int:
    with open_queue(args) as queue:
        queue[args.key].requeue()
    print(f"requeued {args.key}")
    return 0


def bulk_action(args: argparse.Namespace) -> int:
    """Act on every selected task, one request per 1,000 of them; failures on stderr, one line each."""
    with open_queue(args) as queue:
        if not (args.yes or _confirmed(args, queue)):
            print("nothing done")
            return 1
        failed: list[Failure] = []
        done, cursor = 0, None
        while True:
            result = queue.bulk(
                args.action,
                status=args.status,
                type=args.task_type,
                user=args.user,
                prefix=args.prefix,
                cursor=cursor,
            )
            done, failed, cursor = done + len(result.successful), failed + result.failed, result.cursor
            if cursor is None:
                break
    for failure in failed:
        print(f"{failure.key}: {type(failure.error).__name__}: {failure.error}", file=sys.stderr)
    print(f"{DONE[args.action]} {done} tasks" + (f", {len(failed)} failed" if failed else ""))
    return 1 if failed else 0


def _confirmed(args: argparse.Namespace, queue: Queue) -> bool:
    """Asked on stderr, answered by a line of stdin ('y' or 'yes'; none, as without a terminal: no)."""
    filters = [
        f"{name} {value!r}"
        for name, value in (("type", args.task_type), ("user", args.user), ("key prefix", args.prefix))
        if value
    ]
    which = f"every {args.status} task" + (f" of {', '.join(filters)}" if filters else "")
    print(f"{args.action} {which} of queue {queue.stats().name}? [y/N] ", end="", file=sys.stderr, flush=True)
    return sys.stdin.readline().strip().lower() in ("y", "yes")


def show_task(args: argparse.Namespace) -> int:
    with open_queue(args) as queue:
        print(json.dumps(_row(queue[args.key].metadata()), indent=2, ensure_ascii=False))
    return 0


def show_stats(args: argparse.Namespace) -> int:
    with open_queue(args) as queue:
        stats = queue.stats()
    print(_stats_line(stats))
    return 0


def pause_queue(args: argparse.Namespace) -> int:
    with open_queue(args) as queue:
        stats = queue.pause() if args.paused else queue.resume()
    print(_stats_line(stats))
    return 0


def _stats_line(stats: QueueStats) -> str:
    counts = ", ".join(f"{name} {stats.shown(name)}" for name in STATES)
    paused = f" (paused since {_readable(_rfc3339(stats.paused_at))})" if stats.paused else ""
    return f"{stats.name}: {counts}{paused}"


def state_of(task: TaskMetadata) -> str:
    """The status, with running split into leased (a worker holds it) and scheduled."""
    if task.status == "running":
        return "leased" if task.leased else "scheduled"
    return task.status


def _row(task: TaskMetadata) -> dict[str, Any]:
    """A task as the CLI prints it: its times in RFC 3339 (UTC), null where they do not apply."""
    stamp = {name: _rfc3339(getattr(task, name)) for name in ("created_at", *INSTANTS)}
    return {
        "key": task.key,
        "type": task.type,
        "user": task.user,
        "status": task.status,
        "state": state_of(task),
        **stamp,
        "data": task.data,
        "attempts": task.attempts,
        "max_attempts": task.max_attempts,
        "last_error": task.last_error,
        "cancel_requested": task.cancel_requested,
        "traceparent": task.traceparent,
    }


def _rfc3339(value: datetime | None) -> str | None:
    return None if value is None else value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _table_row(task: TaskMetadata) -> dict[str, str]:
    row = _row(task)
    label, name = WHEN.get(row["state"], ("ended", "finished_at"))
    row["when"] = f"{label} {_readable(row[name])}" if row[name] else ""
    row["created_at"] = _readable(row["created_at"])
    return {k: _text(k, v) for k, v in row.items()}


def _readable(stamp: str | None) -> str:
    """An RFC 3339 instant as the table shows it: ``2026-01-01 00:00:00Z``."""
    return "" if stamp is None else stamp.replace("T", " ")


def _text(column: str, value: Any) -> str:
    if value is None:
        return ""
    if column == "data":
        return json.dumps(value, ensure_ascii=False)
    if column == "last_error":
        return " ".join(str(value).split())  # one line per task
    return str(value)


def _format_row(row: dict[str, str], columns: tuple[str, ...]) -> str:
    """Fixed widths (the table reads on a terminal, row by row as they come); the last unpadded."""
    *padded, last = columns
    return "  ".join([*(row[c].ljust(WIDTHS[c]) for c in padded), row[last]])
