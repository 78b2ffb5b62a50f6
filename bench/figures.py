"""What the benchmarks share about figures: percentiles and the closing `name=value` lines."""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence


def percentile(values: Sequence[float], share: float) -> float:
    """Nearest-rank percentile: `share` 0.95 gives the p95 of `values` (one of them)."""
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(share * (len(ordered) - 1))))
    return ordered[index]


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values))


def print_figures(figures: Mapping[str, float | int | str]) -> None:
    """Print the figures last, one per line, `name=value` (floats to the millisecond)."""
    for name, value in figures.items():
        shown = f"{value:.3f}" if isinstance(value, float) else str(value)
        print(f"{name}={shown}", flush=True)
