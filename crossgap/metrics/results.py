"""Evaluation result files (one JSON per evaluation) and their aggregation.

Schema (``schema_version`` 1), written by :func:`write_result`, checked by :func:`read_result`::

    {
      "schema_version": 1,
      "task":    "image_retrieval" | "text_retrieval" | "zero_shot",
      "method":  a method of the task (crossgap.methods), e.g.:
                   image_retrieval: "image" (the native method) | "oti" | "oti@50" | "gap_shift" | ...
                   text_retrieval:  "text"  (the native method) | "ovi" | "centered" | ...
                   zero_shot:       "standard" (the native method) | "oti" | "ovi" | "pca_text" | ...
      "dataset": str,                  the dataset's key in params.yaml, e.g. "imagenet", "roxford5k"
      "model":   str,                  the model's key (slug) in params.yaml, e.g. "clip_b32", "tiny";
                                       the architecture is in the model's entry, not here
      "metrics": {name: float | null}, scores ×100 (e.g. "mAP", "R@1", "top1",
                                       "mAP_medium"); null = undefined (NaN)
      "counts":  {name: int | [int]},  e.g. "num_queries", "gallery_size", "num_samples",
                                       "queries_without_relevant"
      "params":  {...},                inversion parameters (steps, lr, ...); {} for native
      "extra":   {...}                 free-form (feature files, timings, ...)
    }

:func:`write_result` accepts the dict returned by ``evaluate_retrieval``,
``evaluate_revisited`` or ``evaluate_zero_shot`` as ``metrics`` and sorts its values: floats
go to ``metrics``, ints and int lists to ``counts``.

:func:`aggregate_results` builds the summary stored at ``data/metrics/summary.json``:
``{dataset: {model: {task: {method: {metric: float}}}}}`` (floats only; undefined metrics
and counts are left out).
"""

from __future__ import annotations

import json
import logging
import math
import numbers
import os
from pathlib import Path
from typing import Any, Iterable, Mapping

from crossgap.methods import TASK_METHODS, get_method
from crossgap.utils import write_json

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1
REQUIRED_KEYS: tuple[str, ...] = (
    "schema_version",
    "task",
    "method",
    "dataset",
    "model",
    "metrics",
    "counts",
    "params",
    "extra",
)


def _check_task_method(task: str, method: str, where: str) -> None:
    if task not in TASK_METHODS:
        raise ValueError(f"{where}: unknown task {task!r}; expected one of {sorted(TASK_METHODS)}")
    try:
        get_method(task, method)
    except KeyError:
        raise ValueError(f"{where}: method {method!r} is not valid for task {task!r}; expected one of "
                         f"{TASK_METHODS[task]} or a snapshot such as 'oti@50'") from None


def split_metrics(metrics: Mapping[str, Any]) -> tuple[dict[str, float | None], dict[str, int | list[int]]]:
    """Split an evaluation dict into float scores (NaN → None) and integer counts."""
    scores: dict[str, float | None] = {}
    counts: dict[str, int | list[int]] = {}
    for name, value in metrics.items():
        if isinstance(value, bool):
            raise ValueError(f"metric {name!r} is a bool; pass it in extra")
        if isinstance(value, numbers.Integral):
            counts[name] = int(value)
        elif isinstance(value, numbers.Real):
            f = float(value)
            scores[name] = None if math.isnan(f) else f
        elif isinstance(value, (list, tuple)) and all(
            isinstance(v, numbers.Integral) and not isinstance(v, bool) for v in value
        ):
            counts[name] = [int(v) for v in value]
        else:
            raise ValueError(f"metric {name!r} has unsupported type {type(value).__name__}; pass it in extra")
    if not scores and metrics:
        raise ValueError("metrics hold no float score")
    return scores, counts


def write_result(
    path: str | os.PathLike,
    *,
    task: str,
    method: str,
    dataset: str,
    model: str,
    metrics: Mapping[str, Any],
    params: Mapping[str, Any],
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Write one evaluation result atomically to ``path`` (schema above); return the record."""
    _check_task_method(task, method, str(path))
    if not metrics and not (extra or {}).get("unavailable"):
        raise ValueError("metrics hold no float score (a method that could not run says why in extra.unavailable)")
    scores, counts = split_metrics(metrics)
    record = {
        "schema_version": SCHEMA_VERSION,
        "task": task,
        "method": method,
        "dataset": str(dataset),
        "model": str(model),
        "metrics": scores,
        "counts": counts,
        "params": dict(params),
        "extra": dict(extra or {}),
    }
    try:
        json.dumps(record)
    except TypeError as err:
        raise ValueError(f"{path}: params/extra are not JSON-serialisable: {err}") from err
    write_json(path, record)
    log.info("wrote %s %s/%s on %s with %s", path, task, method, dataset, model)
    return record


def read_result(path: str | os.PathLike) -> dict[str, Any]:
    """Load and validate a result file; ``ValueError`` naming the file and the faulty key."""
    try:
        record = json.loads(Path(path).read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not valid JSON: {err}") from err
    if not isinstance(record, dict):
        raise ValueError(f"{path}: expected a JSON object")
    for key in REQUIRED_KEYS:
        if key not in record:
            raise ValueError(f"{path}: missing key {key!r}")
    if record["schema_version"] != SCHEMA_VERSION:
        raise ValueError(f"{path}: unsupported schema_version {record['schema_version']!r}")
    for key in ("task", "method", "dataset", "model"):
        if not isinstance(record[key], str):
            raise ValueError(f"{path}: key {key!r} must be a string")
    _check_task_method(record["task"], record["method"], str(path))
    for key in ("metrics", "counts", "params", "extra"):
        if not isinstance(record[key], dict):
            raise ValueError(f"{path}: key {key!r} must be an object")
    for name, value in record["metrics"].items():
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
            raise ValueError(f"{path}: metric {name!r} must be a number or null")
    return record


def aggregate_results(
    paths: Iterable[str | os.PathLike],
) -> dict[str, dict[str, dict[str, dict[str, dict[str, float]]]]]:
    """Nested summary ``{dataset: {model: {task: {method: {metric: float}}}}}`` of result files.

    Undefined (null) metrics are left out.  Two files with the same dataset, model, task and
    method raise ``ValueError`` naming both.
    """
    summary: dict[str, dict[str, dict[str, dict[str, dict[str, float]]]]] = {}
    seen: dict[tuple[str, str, str, str], str] = {}
    for path in sorted(str(p) for p in paths):
        r = read_result(path)
        key = (r["dataset"], r["model"], r["task"], r["method"])
        if key in seen:
            raise ValueError(f"{path} and {seen[key]} both hold {'/'.join(key)}")
        seen[key] = path
        scores = {name: float(v) for name, v in sorted(r["metrics"].items()) if v is not None}
        summary.setdefault(key[0], {}).setdefault(key[1], {}).setdefault(key[2], {})[key[3]] = scores
    return summary
