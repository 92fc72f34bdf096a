"""Paired bootstrap confidence intervals for the difference of two methods' mean per-query scores.

Both methods are scored on the same queries (:mod:`crossgap.metrics.scores`), so the pairs
``(native_i, method_i)`` are resampled together: resample ``b`` draws ``N`` query indices with
replacement, ``idx_b = rng.integers(0, N, size=N)`` with ``rng = numpy.random.default_rng(seed)``
(one call per resample, in order, so the draws do not depend on the chunking), and its statistic
is ``mean(method[idx_b]) − mean(native[idx_b])``.  The interval is the percentile interval:
the ``(1 − confidence)/2`` and ``(1 + confidence)/2`` quantiles of the ``resamples`` statistics
(``numpy.quantile``, linear interpolation).  ``delta`` is the observed difference of the means
on all queries.

Resamples are evaluated in chunks of at most ``max_elements`` gathered values (memory
``≈ 16 · max_elements`` bytes), vectorised within a chunk: 1,000 resamples of 50,000 queries
take about a second on one CPU core (mostly drawing the 50 million indices).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, Iterable

import numpy as np
from crossgap.config import schema_default

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger(__name__)

DEFAULT_RESAMPLES: int = schema_default("evaluation.bootstrap.resamples")
DEFAULT_SEED: int = schema_default("evaluation.bootstrap.seed")
DEFAULT_CONFIDENCE: float = schema_default("evaluation.bootstrap.confidence")
MAX_ELEMENTS = 1 << 22  # indices gathered per chunk (32 MiB of int64 + 32 MiB of float64)


def _pairs(native: Any, method: Any) -> tuple[np.ndarray, np.ndarray]:
    a = np.asarray(native, dtype=np.float64)
    b = np.asarray(method, dtype=np.float64)
    if a.ndim != 1 or a.shape != b.shape:
        raise ValueError(f"native and method scores must be 1-D of the same length; got {a.shape} and {b.shape}")
    na, nb = np.isnan(a), np.isnan(b)
    if not np.array_equal(na, nb):
        raise ValueError(
            f"native and method scores are NaN on different queries ({int(na.sum())} vs {int(nb.sum())}): "
            "they were not evaluated on the same queries"
        )
    if na.any():  # queries without a relevant item: excluded from both means, as in the summary
        a, b = a[~na], b[~na]
    if np.isinf(a).any() or np.isinf(b).any():
        raise ValueError("scores contain inf")
    if a.size == 0:
        raise ValueError("no (non-NaN) query scores to bootstrap")
    return a, b


#: the last few index matrices drawn whole (``(n, resamples, seed) → [resamples, n]``): every metric and
#: method of a dataset resamples the same queries, so a report draws each matrix once, not per comparison
_INDEX_CACHE: dict[tuple[int, int, int], np.ndarray] = {}
_INDEX_CACHE_ENTRIES = 4


def resample_indices(n: int, resamples: int, seed: int, max_elements: int = MAX_ELEMENTS) -> np.ndarray | None:
    """The ``[resamples, n]`` query indices of the module docstring's protocol, when they fit in one
    chunk (``resamples · n ≤ max_elements``; cached, read-only), else ``None`` (draw them chunk by chunk)."""
    if resamples * n > max_elements:
        return None
    key = (int(n), int(resamples), int(seed))
    idx = _INDEX_CACHE.get(key)
    if idx is None:
        rng = np.random.default_rng(seed)
        idx = np.stack([rng.integers(0, n, size=n) for _ in range(resamples)])
        idx.setflags(write=False)
        while len(_INDEX_CACHE) >= _INDEX_CACHE_ENTRIES:
            _INDEX_CACHE.pop(next(iter(_INDEX_CACHE)))
        _INDEX_CACHE[key] = idx
    return idx


def bootstrap_deltas(
    diff: np.ndarray, *, resamples: int = DEFAULT_RESAMPLES, seed: int = DEFAULT_SEED, max_elements: int = MAX_ELEMENTS
) -> np.ndarray:
    """``[resamples]`` bootstrap means of the per-query differences ``diff`` ``[N]`` (module docstring)."""
    n = diff.shape[0]
    if resamples < 1:
        raise ValueError(f"resamples must be >= 1, got {resamples}")
    whole = resample_indices(n, resamples, seed, max_elements)
    if whole is not None:
        return diff[whole].mean(axis=1)
    rng = np.random.default_rng(seed)
    rows = max(1, int(max_elements) // n)
    out = np.empty(resamples, dtype=np.float64)
    for start in range(0, resamples, rows):
        stop = min(start + rows, resamples)
        idx = np.stack([rng.integers(0, n, size=n) for _ in range(stop - start)])  # [B, N]
        out[start:stop] = diff[idx].mean(axis=1)
    return out


def paired_bootstrap(
    native: Any,
    method: Any,
    *,
    resamples: int = DEFAULT_RESAMPLES,
    seed: int = DEFAULT_SEED,
    confidence: float = DEFAULT_CONFIDENCE,
    max_elements: int = MAX_ELEMENTS,
) -> dict[str, Any]:
    """Paired bootstrap of ``mean(method) − mean(native)`` over queries.

    Args:
        native, method: per-query scores ``[N]`` of the same queries in the same order (NaN rows
            — queries without a relevant item — must coincide and are dropped).
        resamples: bootstrap resamples; seed: of :func:`numpy.random.default_rng`.
        confidence: of the percentile interval, in (0, 1).

    Returns:
        ``delta`` (observed difference of the means), ``ci95_low`` / ``ci95_high`` (the
        interval's bounds; named for the default confidence), ``excludes_zero`` (bool),
        ``n`` (queries used), ``resamples``, ``seed``, ``confidence``.
    """
    if not 0.0 < float(confidence) < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    a, b = _pairs(native, method)
    diff = b - a
    deltas = bootstrap_deltas(diff, resamples=int(resamples), seed=int(seed), max_elements=max_elements)
    alpha = 1.0 - float(confidence)
    low, high = np.quantile(deltas, [alpha / 2, 1 - alpha / 2])
    return {
        "delta": float(b.mean() - a.mean()),
        "ci95_low": float(low),
        "ci95_high": float(high),
        "excludes_zero": bool(low > 0 or high < 0),
        "n": int(a.size),
        "resamples": int(resamples),
        "seed": int(seed),
        "confidence": float(confidence),
    }


def bootstrap_tables(
    native: "pd.DataFrame",
    method: "pd.DataFrame",
    *,
    metrics: Iterable[str] | None = None,
    resamples: int = DEFAULT_RESAMPLES,
    seed: int = DEFAULT_SEED,
    confidence: float = DEFAULT_CONFIDENCE,
) -> dict[str, dict[str, Any]]:
    """:func:`paired_bootstrap` per score column of two score tables (:func:`crossgap.metrics.scores.read_scores`).

    Rows are paired by ``query_id`` (the two tables must hold the same ids, in any order);
    ``metrics`` defaults to the columns both tables have.  Every metric uses the same ``seed``,
    hence the same resampled queries.

    Returns:
        ``{column: paired_bootstrap result}``.
    """
    from crossgap.metrics.scores import QUERY_ID

    for name, table in (("native", native), ("method", method)):
        if QUERY_ID not in table.columns:
            raise ValueError(f"{name} score table has no {QUERY_ID!r} column")
        if table[QUERY_ID].duplicated().any():
            raise ValueError(f"{name} score table has duplicate query ids")
    ids_a, ids_b = set(native[QUERY_ID]), set(method[QUERY_ID])
    if ids_a != ids_b:
        raise ValueError(
            f"the score tables hold different queries: {len(ids_a - ids_b)} only native, {len(ids_b - ids_a)} only method"
        )
    common = [c for c in native.columns if c != QUERY_ID and c in method.columns]
    wanted = list(metrics) if metrics is not None else common
    missing = [m for m in wanted if m not in common]
    if missing:
        raise KeyError(f"score column(s) {missing} not in both tables; common: {common}")
    a = native.set_index(QUERY_ID)
    b = method.set_index(QUERY_ID).loc[a.index]
    return {
        m: paired_bootstrap(a[m].to_numpy(), b[m].to_numpy(), resamples=resamples, seed=seed, confidence=confidence)
        for m in wanted
    }
