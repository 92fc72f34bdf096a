"""Rows a manifest's protocol evaluates: query/gallery selection, zero-shot rows, explicit relevance.

Use :func:`select`, :func:`query_gallery` and :func:`zero_shot_rows` rather than filtering by
hand (the protocol format is in :mod:`crossgap.datasets.protocols`).

Explicit relevance (both by row ``id``, so skipping rows never shifts anything):

* ``"relevance": "qrels"`` (BEIR-style): metadata key ``qrels`` is a list of
  ``[query_id, gallery_id, score]``; a pair is relevant when ``score > 0``.
  :func:`qrels_pairs` turns it into ``(query position, gallery position)`` pairs for
  ``evaluate_retrieval(relevance=...)``.
* ``"relevance": "revisited"`` (revisited Oxford/Paris): metadata key ``gnd`` is a list of
  ``{"query": id, "easy": [ids], "hard": [ids], "junk": [ids], "bbx": [x1, y1, x2, y2] | null}``.
  :func:`revisited_ground_truth` gives per-query gallery positions for
  ``evaluate_revisited(gnd=...)``. Such a task may also say ``"query_crop": "bbx"``
  (crop each query image to its ``bbx``; default ``null``: the full image), see
  :func:`query_boxes`.
"""

from __future__ import annotations

import logging
from typing import Any, Mapping

import numpy as np
import pandas as pd

from crossgap.datasets.errors import ManifestError
from crossgap.datasets.protocols import GND_LISTS, MODALITIES, SELECTORS, TASK_MODALITY, validate_spec

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------- protocol selection


def select(df: pd.DataFrame, modality: str, spec: Mapping[str, Any]) -> pd.DataFrame:
    """Rows of ``modality`` chosen by ``spec`` (``split``/``select``), in manifest order.

    The original index is kept, so for a freshly read manifest it is the row number.
    """
    spec = validate_spec(spec, "selection spec")
    modality = spec.get("modality", modality)
    if modality not in MODALITIES:
        raise ManifestError(f"selection: modality must be one of {list(MODALITIES)}, got {modality!r}")
    mask = df["modality"] == modality
    if spec["split"] != "*":
        mask &= df["split"] == spec["split"]
    rows = df[mask]
    return rows[SELECTORS[spec["select"]](rows)]


def _task_spec(meta: Mapping[str, Any], task: str) -> Mapping[str, Any]:
    spec = meta.get("protocol", {}).get(task)
    if spec is None:
        supported = sorted(t for t, s in meta.get("protocol", {}).items() if s is not None)
        raise ManifestError(f"dataset {meta.get('dataset')!r} does not support task {task!r} (supported: {supported})")
    return spec


def query_gallery(df: pd.DataFrame, meta: Mapping[str, Any], task: str) -> tuple[pd.DataFrame, pd.DataFrame, bool]:
    """``(query_rows, gallery_rows, exclude_self)`` for retrieval ``task`` per ``meta["protocol"]``.

    ``exclude_self`` is True when query and gallery are the very same rows (then a
    query must not retrieve itself).
    """
    spec = _task_spec(meta, task)
    if "query" not in spec or "gallery" not in spec:
        raise ManifestError(f"protocol[{task!r}] of {meta.get('dataset')!r} has no query/gallery; not a retrieval task")
    default = TASK_MODALITY.get(task)
    if default is None and not all("modality" in spec[role] for role in ("query", "gallery")):
        raise ManifestError(
            f"protocol[{task!r}] of {meta.get('dataset')!r}: task has no default modality "
            f"(known: {sorted(TASK_MODALITY)}); give 'modality' in both query and gallery"
        )
    query = select(df, default or "image", spec["query"])
    gallery = select(df, default or "image", spec["gallery"])
    same = len(query) == len(gallery) and bool((query["id"].to_numpy() == gallery["id"].to_numpy()).all())
    return query, gallery, same


def zero_shot_rows(df: pd.DataFrame, meta: Mapping[str, Any]) -> pd.DataFrame:
    """The image rows zero-shot classification is evaluated on."""
    return select(df, TASK_MODALITY["zero_shot"], _task_spec(meta, "zero_shot"))


def relevance(meta: Mapping[str, Any], task: str) -> str:
    """How relevance is decided: the column ``label`` or ``group``, or ``qrels`` / ``revisited``
    (explicit ground truth: use :func:`qrels_pairs` / :func:`revisited_ground_truth`)."""
    return str(_task_spec(meta, task).get("relevance", "label"))


# --------------------------------------------------------------------------- explicit relevance


def _explicit_spec(meta: Mapping[str, Any], task: str, kind: str) -> Mapping[str, Any]:
    spec = _task_spec(meta, task)
    if spec.get("relevance") != kind:
        raise ManifestError(
            f"protocol[{task!r}] of {meta.get('dataset')!r} has relevance "
            f"{spec.get('relevance', 'label')!r}, not {kind!r}"
        )
    return spec


def _positions(rows: pd.DataFrame) -> dict[str, int]:
    return {row_id: i for i, row_id in enumerate(rows["id"])}


def qrels_pairs(meta: Mapping[str, Any], task: str, query: pd.DataFrame, gallery: pd.DataFrame) -> np.ndarray:
    """Relevant ``(query position, gallery position)`` pairs, int64 ``[P, 2]``, of a ``qrels`` task.

    Positions index ``query`` / ``gallery`` as returned by :func:`query_gallery`; pass the
    result as ``evaluate_retrieval(relevance=...)``. Pairs with ``score <= 0`` are not
    relevant; pairs naming rows outside the selection (e.g. skipped rows) are dropped with
    a warning.
    """
    _explicit_spec(meta, task, "qrels")
    qpos, gpos = _positions(query), _positions(gallery)
    pairs, dropped = [], 0
    for qid, gid, score in meta["qrels"]:
        if score <= 0:
            continue
        if qid in qpos and gid in gpos:
            pairs.append((qpos[qid], gpos[gid]))
        else:
            dropped += 1
    if dropped:
        log.warning("%s: %d qrels name rows outside the query/gallery selection; dropped", meta.get("dataset"), dropped)
    return np.asarray(sorted(set(pairs)), dtype=np.int64).reshape(-1, 2)


def _gnd_by_query(meta: Mapping[str, Any], query: pd.DataFrame) -> list[Mapping[str, Any]]:
    by_id = {entry["query"]: entry for entry in meta["gnd"]}
    missing = [q for q in query["id"] if q not in by_id]
    if missing:
        raise ManifestError(f"{meta.get('dataset')!r}: metadata 'gnd' has no entry for query row(s) {missing[:10]}")
    return [by_id[q] for q in query["id"]]


def revisited_ground_truth(
    meta: Mapping[str, Any], task: str, query: pd.DataFrame, gallery: pd.DataFrame
) -> list[dict[str, Any]]:
    """Per query row: ``{"easy", "hard", "junk"}`` gallery positions (and ``"bbx"``) of a ``revisited`` task.

    The list is in ``query`` order and fits ``evaluate_revisited(gnd=...)``. Ids not in
    ``gallery`` (e.g. skipped images) are dropped with a warning.
    """
    _explicit_spec(meta, task, "revisited")
    gpos = _positions(gallery)
    out, dropped = [], 0
    for entry in _gnd_by_query(meta, query):
        item: dict[str, Any] = {"bbx": entry.get("bbx")}
        for key in GND_LISTS:
            item[key] = [gpos[g] for g in entry[key] if g in gpos]
            dropped += len(entry[key]) - len(item[key])
        out.append(item)
    if dropped:
        log.warning("%s: %d ground-truth ids are not in the gallery selection; dropped", meta.get("dataset"), dropped)
    return out


def query_boxes(
    meta: Mapping[str, Any], task: str, query: pd.DataFrame
) -> list[tuple[float, float, float, float] | None]:
    """Per query row, the ``(x1, y1, x2, y2)`` box to crop the query image to, or ``None`` (full image).

    Boxes come from metadata ``gnd`` when the task says ``"query_crop": "bbx"``.
    """
    spec = _task_spec(meta, task)
    if spec.get("query_crop") != "bbx":
        return [None] * len(query)
    boxes = []
    for entry in _gnd_by_query(meta, query):
        if entry.get("bbx") is None:
            raise ManifestError(
                f"{meta.get('dataset')!r}: query {entry['query']!r} has no 'bbx' but the task crops queries"
            )
        boxes.append(tuple(float(v) for v in entry["bbx"]))
    return boxes
