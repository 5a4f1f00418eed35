"""``python -m bench.report RESULTS.json``: the results as Markdown tables (for docs/benchmarks.md)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any


def fmt(value: Any) -> str:
    if isinstance(value, dict) and "median" in value:
        return f"{value['median']:,.0f} (±{value['spread_pct'] / 2:.0f} %)"
    if isinstance(value, float):
        return f"{value:,.1f}"
    return str(value)


def service_row(case: dict[str, Any]) -> str:
    head = f"| {case['mode']} | {case.get('variant', '-')} | {case['workers']} | {case['services']} |"
    if "drain_tasks_per_s" not in case:  # a submit-only case
        return head + f" {fmt(case['submit_tasks_per_s'])} | - | - | - | - |"
    clients = case.get("client_cpu_pct", {}).get("median")  # recorded since the lean client
    return head + (
        f" {fmt(case['submit_tasks_per_s'])} | {fmt(case['drain_tasks_per_s'])} |"
        f" {case['service_cpu_pct']['median']:.0f} | {case['db_cpu_pct']['median']:.0f} |"
        f" {'-' if clients is None else f'{clients:.0f}'} |"
    )


def worker_table(worker: dict[str, Any]) -> list[str]:
    refs = " · ".join(f"{name} {fmt(value)}" for name, value in worker["references"].items())
    lines = [f"References (tasks/s): {refs}", ""]
    lines += ["| worker case | tasks | start-up s | drain tasks/s | of service k=10 | missed |"]
    lines += ["|---|---|---|---|---|---|"]
    for name, case in worker.items():
        if isinstance(case, dict) and "startup_s" in case:
            lines.append(
                f"| {name} | {case['tasks']:,} | {case['startup_s']['median']:.2f} |"
                f" {fmt(case['tasks_per_s'])} | {case['of_service_k10_pct']} % | {case['missed']} |"
            )
    return [*lines, ""]


def report(results: dict[str, Any]) -> str:
    s = results["scenarios"]
    lines = [f"Backend: {results['backend']}; machine: {json.dumps(results['machine'])}", ""]
    if "ceiling" in s:
        lines += [
            "| ceiling | W | READ COMMITTED (SQLite: serial) | REPEATABLE READ | best"
            " | retries (lease/finish) | missed |"
        ]
        lines += ["|---|---|---|---|---|---|---|"]
        for case in (v for v in s["ceiling"].values() if isinstance(v, dict)):
            iso = case["by_isolation"]
            rc, rr = iso.get("READ COMMITTED", iso.get("serial")), iso.get("REPEATABLE READ")
            retries = "/".join(
                str(sum(v.get(f"{k}_retries", 0) for v in iso.values())) for k in ("lease", "finish")
            )
            missed = sum(v.get("missed", 0) for v in iso.values())
            lines.append(
                f"| k={case['k']} | {case['workers']} | {fmt(rc)} | {fmt(rr) if rr else '-'} | "
                f"{case['tasks_per_s']:,.0f} | {retries} | {missed} |"
            )
        lines.append("")
    if "service" in s:
        lines += [
            "| HTTP | variant | W | services | submit tasks/s | poll+finish tasks/s | service CPU | DB CPU"
            " | clients' CPU |"
        ]
        lines += ["|---|---|---|---|---|---|---|---|---|"]
        for case in (v for v in s["service"].values() if isinstance(v, dict)):
            lines.append(service_row(case))
        lines += ["", f"Service peak RSS under load: {s['service'].get('service_peak_rss_mb')} MB", ""]
    if "worker" in s:
        lines += worker_table(s["worker"])
    for name in ("latency", "fair", "memory", "scale", "profile"):
        if name in s:
            lines += [f"### {name}", "", "```json", json.dumps(s[name], indent=1), "```", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    print(report(json.loads(Path(sys.argv[1]).read_text())))
