"""The worker's settings: every key of the seed and of the original worker, with its default.

The keys are declared in :class:`perfectqueue.settings.WorkerSettings` (with their types,
defaults and bounds); ``WorkerConfig.from_mapping(raw)`` validates a loaded configuration (a
dict, e.g. one section of a YAML file) and refuses a bad value with a
:class:`~perfectqueue.errors.ConfigError` naming the key. The backend keys
(:data:`perfectqueue.settings.BACKEND_KEYS`: ``type``, ``url``, ``queue``, ``token``,
``timeout``, ``retries`` and the queue's settings for the direct backend) are kept as they are
in :attr:`WorkerConfig.backend` and passed to :func:`perfectqueue.open`.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ..configfile import screened
from ..errors import ConfigError
from ..settings import BACKEND_KEYS, WORKER_KEYS, WorkerSettings

log = logging.getLogger("perfectqueue.worker")


@dataclass(frozen=True, kw_only=True)
class WorkerConfig(WorkerSettings):
    """The worker's settings, with what it passes on to the backend and to the handlers."""

    backend: dict[str, Any] = field(default_factory=dict)
    raw: dict[str, Any] = field(default_factory=dict)
    """The whole mapping as loaded, application keys included (handlers see it as ``task.config``)."""

    @classmethod
    def from_mapping(cls, raw: Mapping[str, Any] | None) -> WorkerConfig:
        """Validate ``raw`` (the seed's keys); ConfigError naming the first bad key."""
        if raw is not None and not isinstance(raw, Mapping):
            raise ConfigError(f"the worker configuration must be a mapping, not {type(raw).__name__}")
        raw = dict(raw or {})
        screened(raw, "the worker configuration", log)
        config = cls(**{key: raw[key] for key in sorted(WORKER_KEYS) if raw.get(key) is not None}, raw=raw)
        backend = {key: raw[key] for key in BACKEND_KEYS if key in raw}
        backend.update({key: getattr(config, key) for key in ("alive_time", "retry_wait") if key in raw})
        return dataclasses.replace(config, backend=backend)
