"""Learning curves across seeds: a common grid, mean and band, bootstrap intervals, and the
env steps a run takes to reach a return. Used by `bench rae` and `experiments.sweep report`."""

from typing import List, Optional, Sequence, Tuple

import numpy as np


def first_reaching(rows, threshold: float) -> Optional[int]:
    """Env steps of the first evaluation at or above `threshold` (None if none is)."""
    return next((int(row["env_steps"]) for row in rows if row["mean_return"] >= threshold), None)


def bootstrap_interval(values: Sequence[float], confidence: float = 0.95, resamples: int = 10_000,
                       seed: int = 0) -> Tuple[float, float]:
    """Percentile bootstrap interval of the mean of `values` (seeds). With a handful of seeds it
    is narrower than the truth: it is the interval the issue's tables quote, read with the min-max."""
    values = np.asarray(values, dtype=np.float64)
    if values.size == 1:
        return float(values[0]), float(values[0])
    samples = np.random.default_rng(seed).choice(values, size=(resamples, values.size), replace=True).mean(axis=1)
    tail = (1.0 - confidence) / 2.0
    return float(np.quantile(samples, tail)), float(np.quantile(samples, 1.0 - tail))


def mean_band(curves: List[Tuple[Sequence[float], Sequence[float]]], points: int = 100):
    """(env steps, mean, min, max) of several seeds' curves (env steps, return) on one grid, each
    curve interpolated linearly, up to the shortest curve's last evaluation (where every seed has
    been evaluated)."""
    curves = [(np.asarray(steps, dtype=np.float64), np.asarray(returns, dtype=np.float64))
              for steps, returns in curves if len(steps)]
    if not curves:
        return np.zeros(0), np.zeros(0), np.zeros(0), np.zeros(0)
    start = max(steps[0] for steps, _ in curves)
    end = min(steps[-1] for steps, _ in curves)
    grid = np.linspace(start, end, points) if end > start else np.asarray([end])
    values = np.stack([np.interp(grid, steps, returns) for steps, returns in curves])
    return grid, values.mean(axis=0), values.min(axis=0), values.max(axis=0)
