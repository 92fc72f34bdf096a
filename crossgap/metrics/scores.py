"""Per-query scores of an evaluation, and the small Parquet table that keeps them beside its JSON.

Every column is a per-query (per-sample) value ×100 whose mean over the non-NaN rows is the
evaluation's summary metric (:data:`SUMMARY_KEYS` maps column → summary key; equal up to float64
rounding, ~1e-13): the input of the paired bootstrap (:mod:`crossgap.metrics.bootstrap`).

=================  ==============================================  ====================================
task               columns                                         NaN rows
=================  ==============================================  ====================================
retrieval          ``AP``, ``AP_at_R``, ``R_precision``,           queries without a relevant item
                   ``hit@1``, ``hit@5``, ``hit@10`` (0 or 100)      (excluded from the summary as well)
revisited          ``AP_<setup>``, ``P@<k>_<setup>`` per setup      queries without positives in a setup
zero-shot          ``top1``, ``top5`` (0 or 100: correct or not)    none
=================  ==============================================  ====================================

The mean-per-class recall of zero-shot is not a mean over samples and has no column.

Table: ``query_id`` (the evaluation's query ids, default ``0..N-1``) then one float64 column
per score, written atomically (:func:`crossgap.utils.atomic_path`); the column → summary-key
map and any caller metadata are stored in the Parquet schema metadata (``crossgap.scores``).
"""

from __future__ import annotations

import json
import logging
import os
from typing import TYPE_CHECKING, Any, Mapping, Sequence

import numpy as np

from crossgap.utils import atomic_path

if TYPE_CHECKING:
    import pandas as pd
    import torch

    from crossgap.metrics.ranking import RetrievalPerQuery

log = logging.getLogger(__name__)

QUERY_ID = "query_id"
METADATA_KEY = b"crossgap.scores"
RETRIEVAL_COLUMNS: tuple[str, ...] = ("AP", "AP_at_R", "R_precision", "hit@1", "hit@5", "hit@10")
ZERO_SHOT_COLUMNS: tuple[str, ...] = ("top1", "top5")

#: score column → key of the evaluation's summary metric it averages to
SUMMARY_KEYS: dict[str, str] = {
    "AP": "mAP",
    "AP_at_R": "mAP_at_R",
    "AP_at_R_standard": "mAP_at_R_standard",
    "AP_at_R_reference": "mAP_at_R_reference",
    "R_precision": "R_precision",
    **{f"hit@{k}": f"R@{k}" for k in (1, 5, 10)},
    "top1": "top1",
    "top5": "top5",
    **{f"AP_{s}": f"mAP_{s}" for s in ("easy", "medium", "hard")},
    **{f"P@{k}_{s}": f"mP@{k}_{s}" for k in (1, 5, 10) for s in ("easy", "medium", "hard")},
}


def _np(t: "torch.Tensor") -> np.ndarray:
    return t.detach().cpu().double().numpy()


def retrieval_scores(per_query: "RetrievalPerQuery") -> dict[str, np.ndarray]:
    """Per-query ``AP``, ``AP_at_R``, ``R_precision``, ``hit@k`` ×100 (float64 ``[Q]``; NaN without relevant),
    and on leave-one-out sets ``AP_at_R_standard`` / ``AP_at_R_reference`` (both mAP@R definitions).

    Args:
        per_query: from :func:`crossgap.metrics.retrieval.evaluation_per_query` (or
            ``retrieval_per_query`` / ``reference_per_query``), whose
            :func:`~crossgap.metrics.retrieval.summarize_retrieval` is the summary.
    """
    valid = per_query.valid.cpu().numpy()
    out = {
        "AP": _np(per_query.ap) * 100,
        "AP_at_R": _np(per_query.ap_at_r) * 100,
        "R_precision": _np(per_query.r_precision) * 100,
    }
    for k, hit in per_query.hits.items():
        out[f"hit@{k}"] = _np(hit) * 100
    if per_query.ap_at_r_reference is not None:  # leave-one-out: both mAP@R definitions
        out["AP_at_R_standard"] = _np(per_query.ap_at_r_standard) * 100
        out["AP_at_R_reference"] = _np(per_query.ap_at_r_reference) * 100
    for values in out.values():
        values[~valid] = np.nan
    return out


def revisited_scores(per: Mapping[str, Mapping[str, "torch.Tensor"]]) -> dict[str, np.ndarray]:
    """Per-query ``AP_<setup>`` and ``P@<k>_<setup>`` ×100 from :func:`~crossgap.metrics.revisited.revisited_per_query`.

    NaN where the query has no positive in that setup (as the summary excludes it).
    """
    out: dict[str, np.ndarray] = {}
    for setup, values in per.items():
        valid = values["n_pos"].cpu().numpy() > 0
        for key, t in values.items():
            if key == "n_pos":
                continue
            name = f"AP_{setup}" if key == "ap" else f"P@{key[1:]}_{setup}"
            column = _np(t) * 100
            column[~valid] = np.nan
            out[name] = column
    return out


def zero_shot_scores(ranks: "torch.Tensor", num_classes: int) -> dict[str, np.ndarray]:
    """Per-sample ``top1`` / ``top5`` correctness ×100 (0 or 100) from :func:`~crossgap.metrics.zeroshot.zero_shot_ranks`.

    ``top5`` is top-``min(5, C)``, as the summary.
    """
    r = ranks.detach().cpu().numpy()
    return {"top1": (r == 0) * 100.0, "top5": (r < min(5, num_classes)) * 100.0}


def summarize_scores(scores: Mapping[str, Any]) -> dict[str, float]:
    """``{summary key: mean over non-NaN rows}`` of score columns (a check against the summary)."""
    out = {}
    for name, values in scores.items():
        if name == QUERY_ID:
            continue
        v = np.asarray(values, dtype=np.float64)
        ok = ~np.isnan(v)
        out[SUMMARY_KEYS.get(name, name)] = float(v[ok].mean()) if ok.any() else float("nan")
    return out


def _check_scores(scores: Mapping[str, Any], query_ids: Sequence[Any] | None) -> tuple[int, dict[str, np.ndarray]]:
    columns: dict[str, np.ndarray] = {}
    n: int | None = None
    for name, values in scores.items():
        if name == QUERY_ID:
            raise ValueError(f"score column name {QUERY_ID!r} is reserved for the query ids")
        v = np.asarray(values, dtype=np.float64)
        if v.ndim != 1:
            raise ValueError(f"score column {name!r}: expected a 1-D array, got shape {v.shape}")
        if np.isinf(v).any():
            raise ValueError(f"score column {name!r} contains inf")
        if n is not None and v.shape[0] != n:
            raise ValueError(f"score column {name!r} has {v.shape[0]} rows, the others {n}")
        n = v.shape[0]
        columns[name] = v
    if n is None:  # no column: only ids (a method recorded as unavailable writes an empty table)
        if query_ids is None:
            raise ValueError("no score columns to write")
        n = len(query_ids)
    if query_ids is not None:
        if len(query_ids) != n:
            raise ValueError(f"{len(query_ids)} query ids for {n} score rows")
        if len(set(query_ids)) != n:
            raise ValueError("query ids are not unique")
    return n, columns


def write_scores(
    path: str | os.PathLike,
    scores: Mapping[str, Any],
    *,
    query_ids: Sequence[Any] | None = None,
    metadata: Mapping[str, Any] | None = None,
) -> None:
    """Write score columns (each ``[N]``) and their ``query_id`` to a Parquet file at ``path``, atomically.

    Args:
        scores: ``{column: [N] array}`` (:func:`retrieval_scores`, ...); NaN allowed, inf not.
        query_ids: ``N`` unique ids (ints or strings; default ``0..N-1``).
        metadata: JSON-serialisable extras stored with the column → summary-key map.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    n, columns = _check_scores(scores, query_ids)
    ids = list(range(n)) if query_ids is None else list(query_ids)
    table = pa.table({QUERY_ID: pa.array(ids), **{name: pa.array(v) for name, v in columns.items()}})
    meta = {"summary_keys": {c: SUMMARY_KEYS[c] for c in columns if c in SUMMARY_KEYS}, **dict(metadata or {})}
    table = table.replace_schema_metadata({METADATA_KEY: json.dumps(meta, sort_keys=True).encode()})
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)
    log.debug("wrote %d x %d scores to %s", n, len(columns), path)


#: tables :func:`read_scores_cached` keeps: ``(path, columns) → (mtime_ns, size, bytes, table)``, up to a budget
_CACHE: dict[tuple[str, tuple[str, ...] | None], tuple[int, int, int, "pd.DataFrame"]] = {}
_CACHED_BYTES = [0]
CACHE_BYTES = 256 << 20


def read_scores_cached(path: str | os.PathLike, columns: Sequence[str] | None = None) -> "pd.DataFrame":
    """:func:`read_scores`, kept in memory (up to :data:`CACHE_BYTES`, oldest dropped first) while the file's
    size and modification time stay the same: the report reads each per-query file for the intervals
    and again for the verdicts.  The caller must not modify the table."""
    stat = os.stat(path)
    key = (os.fspath(path), None if columns is None else tuple(columns))
    hit = _CACHE.pop(key, None)
    if hit is not None:
        _CACHED_BYTES[0] -= hit[2]
        if hit[:2] == (stat.st_mtime_ns, stat.st_size):
            _CACHE[key] = hit  # most recent last
            _CACHED_BYTES[0] += hit[2]
            return hit[3]
    table = read_scores(path, columns)
    size = int(table.memory_usage(index=True, deep=True).sum())
    _CACHE[key] = (stat.st_mtime_ns, stat.st_size, size, table)
    _CACHED_BYTES[0] += size
    while len(_CACHE) > 1 and _CACHED_BYTES[0] > CACHE_BYTES:
        _CACHED_BYTES[0] -= _CACHE.pop(next(iter(_CACHE)))[2]
    return table


def read_scores(path: str | os.PathLike, columns: Sequence[str] | None = None) -> "pd.DataFrame":
    """The table of :func:`write_scores`: ``query_id`` then the score columns (float64); ``columns``:
    only these score columns (``ValueError`` naming the file when one is missing)."""
    import pyarrow.parquet as pq

    try:
        if columns is not None:
            names = pq.read_schema(path).names
            missing = [c for c in columns if c not in names]
            if missing:
                raise ValueError(f"{os.fspath(path)}: no score column(s) {missing}; has {names}")
        table = pq.read_table(path, columns=None if columns is None else [QUERY_ID, *columns])
    except FileNotFoundError:
        raise FileNotFoundError(f"score table {os.fspath(path)!r} does not exist") from None
    if QUERY_ID not in table.column_names:
        raise ValueError(f"{os.fspath(path)}: not a score table (no {QUERY_ID!r} column; has {table.column_names})")
    return table.to_pandas()


def read_scores_metadata(path: str | os.PathLike) -> dict[str, Any]:
    """The metadata :func:`write_scores` stored (``summary_keys`` and the caller's)."""
    import pyarrow.parquet as pq

    raw = (pq.read_schema(path).metadata or {}).get(METADATA_KEY)
    return json.loads(raw) if raw else {}
