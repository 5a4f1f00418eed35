"""Benchmarks for PerfectQueue: ``python -m bench --help`` (see docs/benchmarks.md)."""
