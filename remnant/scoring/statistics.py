"""Statistics: means and percentile bootstrap confidence intervals, rounded for results."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np


def rounded(value: float) -> float:
    """``value`` as a float rounded to 6 decimals, as results record numbers."""
    return round(float(value), 6)


def bootstrap_ci(
    values: Sequence[float], *, n_resamples: int = 1000, seed: int = 0, level: float = 0.95
) -> tuple[float | None, float | None]:
    """Percentile bootstrap interval of the mean; (None, None) for no values."""
    data = np.asarray(values, dtype=np.float64)
    if data.size == 0:
        return (None, None)
    rng = np.random.default_rng(seed)
    means = data[rng.integers(0, data.size, size=(n_resamples, data.size))].mean(axis=1)
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(means, [tail, 100 - tail])
    return (rounded(low), rounded(high))


def mean(values: Sequence[float]) -> float | None:
    """The rounded mean; None for no values."""
    return rounded(np.mean(values)) if len(values) else None


def mean_ci(values: Sequence[float], *, n_resamples: int = 1000, seed: int = 0) -> dict[str, Any]:
    """``{"mean": ..., "ci": [low, high]}``: the mean with its 95% bootstrap interval."""
    return {
        "mean": mean(values),
        "ci": list(bootstrap_ci(values, n_resamples=n_resamples, seed=seed)),
    }
