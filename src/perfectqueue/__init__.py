"""PerfectQueue: a highly available, at-least-once task queue on a relational database."""

__version__ = "0.1.0"
