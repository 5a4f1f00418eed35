"""The YAML configuration file, read one way by the service, the worker and the task commands.

As the original's ``yml[ENV['RAILS_ENV'] || 'development']``: a file may hold one section per
environment, chosen by ``-e NAME``, else ``PERFECTQUEUE_ENV``, else ``development``; a file
without sections holds the settings at its top level. PyYAML is imported only to read a file:
the SDK alone does not need it (``pip install 'perfectqueue[yaml]'`` adds it).
"""

from __future__ import annotations

import difflib
import logging
import os
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Any

from .errors import ConfigError
from .settings import CONNECTION_KEYS, ORIGINAL_ONLY, QUEUE_KEYS, WORKER_KEYS

ENV_VARIABLE = "PERFECTQUEUE_ENV"
CONFIG_VARIABLE = "PERFECTQUEUE_CONFIG"
COMMAND_VARIABLES = ("url", "queue", "token")
"""The keys every command also takes from ``PERFECTQUEUE_<KEY>`` (over the file, under a flag)."""
DEFAULT_ENVIRONMENT = "development"
YAML_EXTRA = "yaml"
"""The extra that installs PyYAML (the ``service`` extra has it too)."""

DECLARED_KEYS = QUEUE_KEYS | WORKER_KEYS | CONNECTION_KEYS | {"queues"}
"""Every key a part of this project reads (``queues``: the service's named queues)."""


def environment_name(given: str | None, environ: Mapping[str, str] | None = None) -> str:
    """The section to read: ``given`` (``-e``), else ``PERFECTQUEUE_ENV``, else development."""
    environ = os.environ if environ is None else environ
    return given or environ.get(ENV_VARIABLE) or DEFAULT_ENVIRONMENT


def read_section(
    path: str | Path,
    environment: str | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    known: Collection[str] = DECLARED_KEYS,
) -> dict[str, Any]:
    """The file's section for the environment when it has one, else the whole file.

    A file whose every entry is a mapping under a name that is no key (``known``: the settings
    the caller reads) is a file of sections: lacking the environment's, it is refused with the
    names it has. Any problem is one line of :class:`~perfectqueue.errors.ConfigError`.
    """
    path = Path(path)
    name = environment_name(environment, environ)
    loaded = load_yaml(path)
    section = loaded.get(name)
    if isinstance(section, dict):
        return dict(section)
    if loaded and all(isinstance(v, dict) for v in loaded.values()) and not set(known) & set(loaded):
        raise ConfigError(f"{path} has no section {name!r} (it has: {', '.join(map(str, loaded))})")
    return loaded


def load_yaml(path: Path) -> dict[str, Any]:
    """The file's mapping, or ConfigError: unreadable, not YAML, not a mapping, or no PyYAML."""
    try:
        import yaml
    except ModuleNotFoundError:
        raise ConfigError(f"reading {path} needs PyYAML: pip install 'perfectqueue[{YAML_EXTRA}]'") from None
    try:
        loaded = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise ConfigError(f"cannot read {path}: {one_line(exc)}") from None
    if not isinstance(loaded, dict):
        raise ConfigError(f"{path}: expected a mapping of settings")
    return loaded


def one_line(exc: Exception) -> str:
    """A YAML error's problem and position (its own text spans several lines), or the error."""
    problem, mark = getattr(exc, "problem", None), getattr(exc, "problem_mark", None)
    if problem and mark is not None:
        return f"{problem} (line {mark.line + 1}, column {mark.column + 1})"
    return " ".join(str(exc).split())


def screen(
    values: Mapping[str, Any], origin: str, *, known: Collection[str] = DECLARED_KEYS, strict: bool = False
) -> list[str]:
    """The keys of ``values`` that only the original reads (to be ignored, said once), after
    refusing a key no part knows: any such key when ``strict`` (the service), else only one that
    looks like a misspelt key (a worker's or a task command's file may hold the application's
    own keys). The refusal names the nearest valid key."""
    for key in map(str, values):
        if key in known or key in ORIGINAL_ONLY:
            continue
        near = difflib.get_close_matches(key, [*known, *ORIGINAL_ONLY], n=1, cutoff=0.8)
        if near:
            raise ConfigError(f"{origin}: unknown key {key!r}: did you mean {near[0]!r}?")
        if strict:
            raise ConfigError(f"{origin}: unknown key {key!r} (docs/configuration.md lists the keys)")
    return sorted(key for key in values if key in ORIGINAL_ONLY)


def screened(values: Mapping[str, Any], origin: str, log: logging.Logger) -> None:
    """:func:`screen` for a worker's or a task command's settings, the ignored keys logged."""
    ignored = screen(values, origin)
    if ignored:
        log.info("%s", ignored_line(ignored))


def ignored_line(keys: Collection[str]) -> str:
    """The one line that says which of the original's keys a command ignores, and why."""
    return "ignoring the original's keys that mean nothing here: " + "; ".join(
        f"{key} ({ORIGINAL_ONLY[key]})" for key in keys
    )


def command_settings(
    path: str | Path | None,
    environment: str | None,
    flags: Mapping[str, Any],
    *,
    default_path: str | None = None,
    environ: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """What a command runs with: the file (``-c``, else ``PERFECTQUEUE_CONFIG``, else
    ``default_path`` when that exists), then ``PERFECTQUEUE_URL``, ``_QUEUE`` and ``_TOKEN``,
    then the flags that were given."""
    environ = os.environ if environ is None else environ
    if default_path and not Path(default_path).exists():
        default_path = None
    path = path or environ.get(CONFIG_VARIABLE) or default_path
    settings = read_section(path, environment, environ=environ) if path else {}
    for key in COMMAND_VARIABLES:
        if environ.get(f"PERFECTQUEUE_{key.upper()}"):
            settings[key] = environ[f"PERFECTQUEUE_{key.upper()}"]
    settings.update({key: value for key, value in flags.items() if value is not None})
    return settings
