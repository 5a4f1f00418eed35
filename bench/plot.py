"""A PNG of throughput against client processes: ceiling, batched and one-per-call (matplotlib)."""

from __future__ import annotations

import json
from pathlib import Path


def plot(results: Path, png: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    data = json.loads(results.read_text())["scenarios"]
    fig, ax = plt.subplots(figsize=(8, 5))
    series: dict[str, list[tuple[int, float]]] = {}
    for case in data.get("ceiling", {}).values():
        if isinstance(case, dict) and "k" in case:
            series.setdefault(f"SQL ceiling k={case['k']}", []).append((case["workers"], case["tasks_per_s"]))
    for case in data.get("service", {}).values():
        if isinstance(case, dict) and case.get("services") == 1 and "drain_tasks_per_s" in case:
            label = "HTTP one per call" if case["mode"] == "single" else f"HTTP batched k={case['k']}"
            if case.get("variant", "coalesced") != "coalesced":
                label += f" ({case['variant']})"
            series.setdefault(label, []).append((case["workers"], case["drain_tasks_per_s"]["median"]))
    for label, points in sorted(series.items()):
        points.sort()
        style = "--" if label.startswith("SQL") else "-"
        ax.plot([p[0] for p in points], [p[1] for p in points], style, marker="o", label=label)
    ax.set_xlabel("client processes (W)")
    ax.set_ylabel("tasks acquired and finished per second (median)")
    ax.set_yscale("log")
    ax.set_xticks(sorted({p[0] for pts in series.values() for p in pts}))
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(f"PerfectQueue throughput ({data and json.loads(results.read_text())['backend']})")
    fig.tight_layout()
    fig.savefig(png, dpi=100)
