"""Statistics: means and percentile bootstrap confidence intervals, rounded for results."""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from typing import Any

import numpy as np


def rounded(value: float) -> float:
    """``value`` as a float rounded to 6 decimals, as results record numbers."""
    return round(float(value), 6)


def bootstrap_ci(
    values: Sequence[float],
    *,
    n_resamples: int = 1000,
    seed: int = 0,
    level: float = 0.95,
    clusters: Sequence[Hashable] | None = None,
) -> tuple[float | None, float | None]:
    """Percentile bootstrap interval of the mean; (None, None) for no values. With
    ``clusters`` (one label per value), whole clusters are resampled (`cluster_resamples`), for
    values that are not independent (several prompts about one item)."""
    data = np.asarray(values, dtype=np.float64)
    if data.size == 0:
        return (None, None)
    (means,) = cluster_resamples([data], clusters, n_resamples=n_resamples, seed=seed)
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(means, [tail, 100 - tail])
    return (rounded(low), rounded(high))


def cluster_resamples(
    columns: Sequence[np.ndarray],
    clusters: Sequence[Hashable] | None,
    *,
    n_resamples: int = 1000,
    seed: int = 0,
) -> list[np.ndarray]:
    """Bootstrap means of aligned ``columns`` (each of one value per row), resampling rows
    jointly, or whole ``clusters`` of rows (one label per row; a resample's mean is then over
    all rows of the drawn clusters). Returns one array of ``n_resamples`` means per column."""
    n = len(columns[0])
    labels = range(n) if clusters is None else clusters
    index = {label: k for k, label in enumerate(dict.fromkeys(labels))}
    member = np.asarray([index[label] for label in labels])
    sizes = np.bincount(member, minlength=len(index)).astype(np.float64)
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, len(index), size=(n_resamples, len(index)))
    counts = sizes[picks].sum(axis=1)
    return [
        np.bincount(member, weights=np.asarray(c, dtype=np.float64), minlength=len(index))[
            picks
        ].sum(axis=1)
        / counts
        for c in columns
    ]


def mean(values: Sequence[float]) -> float | None:
    """The rounded mean; None for no values."""
    return rounded(np.mean(values)) if len(values) else None


def mean_ci(values: Sequence[float], *, n_resamples: int = 1000, seed: int = 0) -> dict[str, Any]:
    """``{"mean": ..., "ci": [low, high]}``: the mean with its 95% bootstrap interval."""
    return {
        "mean": mean(values),
        "ci": list(bootstrap_ci(values, n_resamples=n_resamples, seed=seed)),
    }
