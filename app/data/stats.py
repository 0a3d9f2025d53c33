"""Token-length summaries and histograms: plain numbers the preview and the run report share."""

from __future__ import annotations

import math

BINS = 20


def summarise(lengths: list[int]) -> dict:
    """min/mean/p50/p95/max of token lengths (nearest-rank percentiles); zeros when empty."""
    if not lengths:
        return {"count": 0, "min": 0, "mean": 0.0, "p50": 0, "p95": 0, "max": 0}
    ordered = sorted(lengths)

    def rank(p: float) -> int:
        return ordered[max(0, math.ceil(p * len(ordered)) - 1)]

    return {"count": len(ordered), "min": ordered[0], "mean": round(sum(ordered) / len(ordered), 2),
            "p50": rank(0.5), "p95": rank(0.95), "max": ordered[-1]}


def histogram(lengths: list[int], bins: int = BINS) -> dict:
    """Equal-width integer bins from 0 to the longest example; ``bins`` has one more edge than counts."""
    top = max(lengths, default=0)
    width = max(1, math.ceil((top + 1) / bins))
    edges = [i * width for i in range(bins + 1)]
    counts = [0] * bins
    for n in lengths:
        counts[min(bins - 1, n // width)] += 1
    return {"counts": counts, "bins": edges}
