"""The store: the only layer that speaks SQL (SQLAlchemy Core over MariaDB/MySQL, PostgreSQL or SQLite)."""

from .database import Database, PoolOptions, normalize_url, redact
from .model import AcquiredTask, NewTask, RetryItem, Task, TaskStatus
from .queue import Page, QueueStore
from .schema import check_table_name
from .stats import Counts, UserLoad

__all__ = [
    "AcquiredTask",
    "Counts",
    "Database",
    "NewTask",
    "Page",
    "PoolOptions",
    "QueueStore",
    "RetryItem",
    "Task",
    "TaskStatus",
    "UserLoad",
    "check_table_name",
    "normalize_url",
    "redact",
]
