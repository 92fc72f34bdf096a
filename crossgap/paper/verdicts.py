"""Verdicts across datasets: does a method beat the native features (or another method), dataset after dataset?

Per dataset × model × task, every chosen method is scored on the same queries as the native method
(the per-query files next to the results, :mod:`crossgap.metrics.scores`).  One set of query
resamples is drawn per block, with the protocol of :func:`crossgap.metrics.bootstrap.bootstrap_deltas`
(``rng = numpy.random.default_rng(seed)``, one ``rng.integers(0, N, size=N)`` per resample, on the
queries the native method scores; NaN rows dropped), and each method's mean over each resample is
kept (:class:`Block`, ``means [M, B]``).  Because the draws are shared, the Δ of any two methods over
resample ``b`` is the difference of their means, so

- the per-dataset interval of a method against native is exactly the paired interval of
  ``summary.json`` (same seed, same draws), and
- a pair of non-native methods (is ``pca_text`` better than OTI?) gets its paired interval at no
  further cost.

Across the ``K`` datasets of an average (:mod:`crossgap.paper.groups`), the verdict counts the
datasets whose 95% interval lies above 0 / straddles it / lies below it, and gives the mean Δ (equal
weight per dataset, as the paper's averages) with a **two-level bootstrap** interval: resample ``b``
draws ``K`` datasets with replacement, then for each drawn dataset one of its ``B`` query resamples
(uniformly), and averages their Δ; the interval is the percentile interval of those ``B`` means
(``rng = numpy.random.default_rng(seed + 1)``; datasets drawn before the query resamples, one
``[B, K]`` call each).  It accounts for the choice of datasets and for query sampling within each.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

from crossgap.metrics.bootstrap import MAX_ELEMENTS, resample_indices
from crossgap.metrics.scores import QUERY_ID, SUMMARY_KEYS, read_scores_cached

log = logging.getLogger(__name__)

#: summary metric → per-query column
COLUMN_OF: dict[str, str] = {metric: column for column, metric in SUMMARY_KEYS.items()}
VERDICT_COLUMNS = ["task", "average", "model", "method", "versus", "metric", "datasets", "of", "better", "same",
                   "worse", "mean_delta", "ci95_low", "ci95_high", "significant", "per_dataset"]


@dataclass(frozen=True)
class Block:
    """One dataset × model × task: ``methods`` (native first), their observed means ``observed [M]``
    and resampled means ``means [M, B]`` on the same query draws, and the ``metric`` they score."""

    dataset: str
    model: str
    task: str
    metric: str
    methods: tuple[str, ...]
    observed: np.ndarray
    means: np.ndarray

    def delta(self, method: str, versus: str) -> tuple[float, np.ndarray]:
        """Observed Δ ``method − versus`` and its resampled values ``[B]``."""
        i, j = self.methods.index(method), self.methods.index(versus)
        return float(self.observed[i] - self.observed[j]), self.means[i] - self.means[j]


def resampled_means(values: np.ndarray, *, resamples: int, seed: int, max_elements: int = MAX_ELEMENTS) -> np.ndarray:
    """``[M, B]`` means of ``values [M, N]`` over ``B = resamples`` query resamples shared by all rows
    (module docstring: the draws of :func:`crossgap.metrics.bootstrap.bootstrap_deltas`)."""
    m, n = values.shape
    if n == 0:
        raise ValueError("no (non-NaN) query scores to bootstrap")
    whole = resample_indices(n, resamples, seed, max_elements)
    if whole is not None:
        return values[:, whole].mean(axis=2)
    rng = np.random.default_rng(seed)
    rows = max(1, int(max_elements) // n)
    out = np.empty((m, resamples), dtype=np.float64)
    for start in range(0, resamples, rows):
        stop = min(start + rows, resamples)
        idx = np.stack([rng.integers(0, n, size=n) for _ in range(stop - start)])  # [b, N]
        out[:, start:stop] = values[:, idx].mean(axis=2)
    return out


def load_block(dataset: str, model: str, task: str, metric: str, per_query: Mapping[str, str | Path], *,
               resamples: int, seed: int) -> Block:
    """The :class:`Block` of ``per_query`` (``{method: per-query Parquet}``, the native method first).

    Rows are paired by query id; a query NaN for the native method must be NaN for every method
    (``ValueError`` naming both files otherwise) and is left out, as in the summary.
    """
    column = COLUMN_OF.get(metric, metric)
    names = list(per_query)
    tables = []
    for name in names:
        path = str(per_query[name])
        table = read_scores_cached(path)  # read for the intervals just before (crossgap.comparison)
        if column not in table.columns:
            raise ValueError(f"{path}: no per-query column {column!r} (metric {metric!r}); has {list(table.columns)}")
        tables.append(table.set_index(QUERY_ID)[column])
    base = tables[0]
    values = np.empty((len(names), len(base)), dtype=np.float64)
    for i, (name, series) in enumerate(zip(names, tables)):
        if len(series) != len(base) or not series.index.isin(base.index).all():
            raise ValueError(f"{per_query[name]} and {per_query[names[0]]} hold different queries")
        values[i] = series.loc[base.index].to_numpy(dtype=np.float64)
    nan = np.isnan(values)
    if not (nan == nan[0]).all():
        bad = names[int(np.argmax((nan != nan[0]).any(axis=1)))]
        raise ValueError(f"{per_query[bad]} and {per_query[names[0]]}: {column} is NaN on different queries")
    values = values[:, ~nan[0]]
    means = resampled_means(values, resamples=resamples, seed=seed)  # [M, B]
    return Block(dataset, model, task, metric, tuple(names), values.mean(axis=1), means)


def interval(samples: np.ndarray, confidence: float) -> tuple[float, float]:
    """Percentile interval of ``samples`` (``numpy.quantile``, linear), as the paired bootstrap."""
    alpha = 1.0 - float(confidence)
    low, high = np.quantile(samples, [alpha / 2, 1 - alpha / 2])
    return float(low), float(high)


def two_level(deltas: Sequence[float], samples: Sequence[np.ndarray], *, seed: int, confidence: float
              ) -> tuple[float, float, float]:
    """``(mean Δ, low, high)`` over datasets: ``deltas [K]`` observed, ``samples``: K arrays ``[B]``
    of query resamples (module docstring)."""
    stack = np.stack(list(samples))  # [K, B]
    k, b = stack.shape
    rng = np.random.default_rng(seed + 1)
    datasets = rng.integers(0, k, size=(b, k))
    inner = rng.integers(0, b, size=(b, k))
    outer = stack[datasets, inner].mean(axis=1)  # [B]
    low, high = interval(outer, confidence)
    return float(np.mean(deltas)), low, high


def verdict_rows(blocks: Iterable[Block], averages: Mapping[str, Sequence[Any]], methods: Mapping[str, Sequence[str]],
                 natives: Mapping[str, str], *, seed: int, confidence: float) -> pd.DataFrame:
    """One row per task × average × model × comparison (each method against native, then each pair
    of non-native methods), columns :data:`VERDICT_COLUMNS`.

    ``averages``: task → its :class:`~crossgap.paper.groups.Average` list; ``methods``: task → the
    methods compared (report order); ``natives``: task → its native method.  A comparison enters
    an average on the datasets where both methods have a result; ``of``: the datasets of the average;
    ``per_dataset``: ``dataset:+Δ*`` entries (``*``: the interval excludes 0).
    """
    index: dict[tuple[str, str, str], Block] = {(b.task, b.model, b.dataset): b for b in blocks}
    rows = []
    for task, task_averages in averages.items():
        chosen = list(methods.get(task, ()))
        native = natives[task]
        comparisons = [(m, native) for m in chosen] + [(a, b) for i, a in enumerate(chosen) for b in chosen[i + 1:]]
        models = sorted({m for (t, m, _) in index if t == task})
        for average in task_averages:
            for model in models:
                for method, versus in comparisons:
                    entries = []
                    for dataset in average.datasets:
                        block = index.get((task, model, dataset))
                        if block is None or method not in block.methods or versus not in block.methods:
                            continue
                        delta, samples = block.delta(method, versus)
                        low, high = interval(samples, confidence)
                        entries.append((dataset, block.metric, delta, samples, low, high))
                    if not entries:
                        continue
                    better = sum(1 for e in entries if e[4] > 0)
                    worse = sum(1 for e in entries if e[5] < 0)
                    mean, low, high = two_level([e[2] for e in entries], [e[3] for e in entries],
                                                seed=seed, confidence=confidence)
                    metrics = sorted({e[1] for e in entries})
                    rows.append({
                        "task": task, "average": average.key, "model": model, "method": method, "versus": versus,
                        "metric": "/".join(metrics), "datasets": len(entries), "of": len(average.datasets),
                        "better": better, "same": len(entries) - better - worse, "worse": worse,
                        "mean_delta": mean, "ci95_low": low, "ci95_high": high,
                        "significant": bool(low > 0 or high < 0),
                        "per_dataset": " ".join(f"{e[0]}:{e[2]:+.2f}{'*' if e[4] > 0 or e[5] < 0 else ''}"
                                                for e in entries),
                    })
    return pd.DataFrame(rows, columns=VERDICT_COLUMNS)


def multiple_comparison_note(verdicts: pd.DataFrame, confidence: float) -> str:
    """How many comparisons the verdicts hold, and what that means for the marks."""
    per_dataset = int(verdicts["datasets"].sum()) if not verdicts.empty else 0
    means = len(verdicts)
    alpha = 1.0 - float(confidence)
    return (f"Multiple comparisons: the verdicts hold {per_dataset:,} per-dataset intervals and {means:,} "
            f"across-dataset means, each at {confidence:.0%} with no correction; where a method truly makes no "
            f"difference, about {alpha:.0%} of its intervals exclude 0 by chance (about "
            f"{alpha * per_dataset:,.0f} of the per-dataset marks if none differed). A Bonferroni reading of "
            f"the means would ask each for {alpha / max(means, 1):.2g} instead of {alpha:.2g}.")
