"""What every benchmark prints as its last line: one JSON object with the figures of both
sides (min, median and max, and the p95 where the benchmark has a p95 target), the ratio of
their medians or of what its target names, the target, whether it was met, and the machine
it ran on (cores, load average before the run). `run_all.py` reads these lines."""

from __future__ import annotations

import json
import os
import statistics
from collections.abc import Sequence
from typing import Any


def machine() -> dict[str, Any]:
    """The machine as the run starts: cores and the 1-minute load average."""
    return {"cores": os.cpu_count(), "load_before": round(os.getloadavg()[0], 2)}


def percentile(values: Sequence[float], share: float) -> float:
    """The value at ``share`` of the sorted values (nearest rank)."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(share * (len(ordered) - 1)))]


def spread(values: Sequence[float], digits: int = 3, p95: bool = False) -> dict[str, Any]:
    """How many samples, and their min, median and max (and p95 when asked)."""
    if not values:
        raise ValueError("a benchmark side needs at least one sample")
    figures = {
        "n": len(values),
        "min": round(min(values), digits),
        "median": round(statistics.median(values), digits),
        "max": round(max(values), digits),
    }
    if p95:
        figures["p95"] = round(percentile(values, 0.95), digits)
    return figures


def report(
    benchmark: str,
    *,
    project: dict[str, Any],
    baseline: dict[str, Any],
    unit: str,
    ratio: float,
    target: str,
    met: bool,
    machine: dict[str, Any],
    **details: Any,
) -> None:
    """Print the benchmark's result line."""
    print(
        json.dumps(
            {
                "benchmark": benchmark,
                "project": project,
                "baseline": baseline,
                "unit": unit,
                "ratio": round(ratio, 4),
                "target": target,
                "met": met,
                "machine": machine,
                **details,
            }
        ),
        flush=True,
    )
