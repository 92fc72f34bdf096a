"""Revisited Oxford / Paris evaluation protocol (Radenović et al., CVPR 2018).

Ground truth is the dataset's ``gnd_roxford5k.pkl`` / ``gnd_rparis6k.pkl`` structure: either
the whole pickled dict (its ``'gnd'`` entry is used) or directly its ``'gnd'`` list, one dict
per query with index lists ``'easy'``, ``'hard'``, ``'junk'`` into the database (gallery)
and a ``'bbx'`` (unused here: cropping the query is the feature extractor's job).

Three setups, each with its own positives and ignored ("junk") images:

============  =====================  ====================
setup         positives              junk (ignored)
============  =====================  ====================
``easy``      easy                   junk + hard
``medium``    easy + hard            junk
``hard``      hard                   junk + easy
============  =====================  ====================

Junk images are removed from the ranking (positives move up by the number of junk images
ranked before them); every other database image is a negative.

AP is the official revisitop ``compute_ap`` one, *not* the non-interpolated AP of
:mod:`crossgap.metrics.retrieval`: with ``r_j`` the 0-based rank (junk removed) of the
``j``-th positive (``j`` 0-based) and ``n`` the number of positives,
``AP = Σ_j (p0_j + p1_j) / 2 · (1/n)`` where ``p1_j = (j+1)/(r_j+1)`` is the precision at
the hit and ``p0_j = j/r_j`` the precision just before it (``p0_j = 1`` when ``r_j = 0``) —
a trapezoid rule over the recall steps.

``mP@k`` is the official ``compute_map`` precision: with ``pos`` the 1-based ranks of the
positives (junk removed), ``k' = min(max(pos), k)`` and ``P = |{pos ≤ k'}| / k'`` — the
cut-off shrinks to the last positive when a query has all its positives within the top k.

Queries without positives in a setup are excluded from that setup's averages (reported as
``num_queries_without_positive_<setup>``).  All scores are ×100.  The ranking is the full
database ranking by cosine similarity with ties broken by database index ascending, as in
:mod:`crossgap.metrics.retrieval`.
"""

from __future__ import annotations

import logging
from typing import Any, Mapping, Sequence

import torch

from crossgap.metrics.ranking import iter_ranked_chunks, prepare_features
from crossgap.metrics.relevance import ArrayLike
from crossgap.config import schema_default
from crossgap.utils import resolve_device

log = logging.getLogger(__name__)

SETUPS: tuple[str, ...] = ("easy", "medium", "hard")
DEFAULT_KAPPAS: tuple[int, ...] = (1, 5, 10)

_NEG, _POS, _JUNK = 0, 1, 2


def gnd_list(gnd: Mapping[str, Any] | Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """The per-query ground-truth list from a ``gnd_*.pkl`` dict or the list itself."""
    if isinstance(gnd, Mapping):
        if "gnd" not in gnd:
            raise ValueError("ground-truth dict has no 'gnd' entry")
        gnd = gnd["gnd"]
    out = list(gnd)
    for i, entry in enumerate(out):
        missing = [key for key in ("easy", "hard", "junk") if key not in entry]
        if missing:
            raise ValueError(f"ground truth of query {i} lacks {missing}")
    return out


def setup_ground_truth(
    gnd: Mapping[str, Any] | Sequence[Mapping[str, Any]], setup: str
) -> list[tuple[list[int], list[int]]]:
    """Per query ``(positives, junk)`` index lists for ``setup`` in ``easy``/``medium``/``hard``."""
    if setup not in SETUPS:
        raise ValueError(f"unknown setup {setup!r}; expected one of {SETUPS}")
    out = []
    for entry in gnd_list(gnd):
        easy, hard, junk = (list(map(int, entry[k])) for k in ("easy", "hard", "junk"))
        if setup == "easy":
            out.append((easy, junk + hard))
        elif setup == "medium":
            out.append((easy + hard, junk))
        else:
            out.append((hard, junk + easy))
    return out


def _codes(
    truth: Sequence[tuple[list[int], list[int]]], start: int, stop: int, n_g: int, device: torch.device
) -> torch.Tensor:
    """``[B, G]`` int8 codes (0 negative, 1 positive, 2 junk) for queries ``start:stop``.

    An index listed both as positive and junk counts as positive.
    """
    codes = torch.zeros(stop - start, n_g, dtype=torch.int8, device=device)
    for b, (pos, junk) in enumerate(truth[start:stop]):
        for idx, value in ((junk, _JUNK), (pos, _POS)):
            if idx:
                t = torch.as_tensor(idx, dtype=torch.long, device=device)
                if int(t.min()) < 0 or int(t.max()) >= n_g:
                    raise ValueError(f"ground truth of query {start + b} has indices outside [0, {n_g})")
                codes[b, t] = value
    return codes


def _chunk_revisited(codes_sorted: torch.Tensor, kappas: Sequence[int]) -> dict[str, torch.Tensor]:
    """Official AP and mP@k per query of one chunk from ranked codes ``[B, G]`` int8."""
    b = codes_sorted.shape[0]
    dev = codes_sorted.device
    is_pos = codes_sorted == _POS
    junk_before = torch.cumsum(codes_sorted == _JUNK, dim=1, dtype=torch.int32)  # junk at ranks ≤ r
    rows, cols = is_pos.nonzero(as_tuple=True)  # row-major
    n_pos = torch.bincount(rows, minlength=b)
    rank = (cols - junk_before[rows, cols]).double()  # 0-based rank with junk removed
    offsets = torch.cumsum(n_pos, 0) - n_pos
    j = (torch.arange(rows.numel(), device=dev) - offsets[rows]).double()  # 0-based hit number
    p0 = torch.where(rank == 0, torch.ones_like(rank), j / rank.clamp(min=1))
    p1 = (j + 1) / (rank + 1)
    denom = n_pos.double()
    zeros = torch.zeros(b, dtype=torch.float64, device=dev)
    ap = zeros.index_add(0, rows, (p0 + p1) / 2) / denom
    is_last = j == (n_pos[rows] - 1).double()  # hits are in rank order within each row
    max_pos = torch.zeros(b, dtype=torch.float64, device=dev)
    max_pos[rows[is_last]] = rank[is_last] + 1  # 1-based rank of the last positive
    out = {"ap": ap, "n_pos": n_pos.long()}
    for k in kappas:
        kq = torch.clamp(max_pos, max=float(k))
        within = (rank + 1) <= kq[rows]
        out[f"p{k}"] = zeros.index_add(0, rows, within.double()) / kq
    return out


@torch.no_grad()
def revisited_per_query(
    query_features: ArrayLike,
    gallery_features: ArrayLike,
    gnd: Mapping[str, Any] | Sequence[Mapping[str, Any]],
    *,
    kappas: Sequence[int] = DEFAULT_KAPPAS,
    chunk_size: int = schema_default("evaluation.chunk_size"),
    device: str | torch.device | None = None,
) -> dict[str, dict[str, torch.Tensor]]:
    """Per-query official AP and mP@k (fractions, NaN without positives) for each setup.

    Args:
        query_features: ``[Q, D]`` (normalised here).
        gallery_features: ``[G, D]`` database features (normalised here).
        gnd: ``gnd_*.pkl`` content, ``Q`` entries.

    Returns:
        ``{setup: {"ap": [Q], "p<k>": [Q] per kappa, "n_pos": [Q]}}`` (CPU tensors).
    """
    dev = resolve_device(device)
    q, g = prepare_features(query_features, gallery_features, dev)
    entries = gnd_list(gnd)
    if len(entries) != q.shape[0]:
        raise ValueError(f"ground truth has {len(entries)} queries, features have {q.shape[0]}")
    truths = {s: setup_ground_truth(entries, s) for s in SETUPS}
    parts: dict[str, list[dict[str, torch.Tensor]]] = {s: [] for s in SETUPS}
    for start, stop, order in iter_ranked_chunks(q, g, chunk_size):
        for s in SETUPS:
            codes_sorted = _codes(truths[s], start, stop, g.shape[0], dev).gather(1, order)
            part = _chunk_revisited(codes_sorted, kappas)
            parts[s].append({key: v.cpu() for key, v in part.items()})
    out: dict[str, dict[str, torch.Tensor]] = {}
    for s in SETUPS:
        keys = ["ap", "n_pos"] + [f"p{k}" for k in kappas]
        out[s] = (
            {key: torch.cat([p[key] for p in parts[s]]) for key in keys}
            if parts[s]
            else {key: torch.empty(0) for key in keys}
        )
    return out


def evaluate_revisited(
    query_features: ArrayLike,
    gallery_features: ArrayLike,
    gnd: Mapping[str, Any] | Sequence[Mapping[str, Any]],
    *,
    kappas: Sequence[int] = DEFAULT_KAPPAS,
    chunk_size: int = schema_default("evaluation.chunk_size"),
    device: str | torch.device | None = None,
) -> dict[str, float | int]:
    """Revisited Oxford/Paris mAP and mP@k per setup, ×100 (see the module docstring).

    Returns keys ``mAP_easy``, ``mAP_medium``, ``mAP_hard``, ``mP@<k>_<setup>`` for each
    kappa and setup (floats ×100, NaN when no query has positives), plus ints
    ``num_queries``, ``gallery_size`` and ``num_queries_without_positive_<setup>``.
    """
    per = revisited_per_query(
        query_features, gallery_features, gnd, kappas=kappas, chunk_size=chunk_size, device=device
    )
    return summarize_revisited(per, len(gallery_features), kappas=kappas)


def summarize_revisited(
    per: Mapping[str, Mapping[str, torch.Tensor]], gallery_size: int, *, kappas: Sequence[int] = DEFAULT_KAPPAS
) -> dict[str, float | int]:
    """:func:`evaluate_revisited`'s summary of :func:`revisited_per_query` output (``gallery_size``: G)."""
    out: dict[str, float | int] = {}
    counts: dict[str, int] = {}
    for s in SETUPS:
        valid = per[s]["n_pos"] > 0
        n_valid = int(valid.sum())
        if n_valid < valid.numel():
            log.warning(
                "%s setup: %d queries without positives excluded: %s",
                s,
                valid.numel() - n_valid,
                (~valid).nonzero().flatten().tolist()[:20],
            )
        mean = (lambda x: float(x[valid].mean() * 100)) if n_valid else (lambda x: float("nan"))
        out[f"mAP_{s}"] = mean(per[s]["ap"])
        for k in kappas:
            out[f"mP@{k}_{s}"] = mean(per[s][f"p{k}"])
        counts[f"num_queries_without_positive_{s}"] = valid.numel() - n_valid
    out["num_queries"] = int(per[SETUPS[0]]["n_pos"].numel())
    out["gallery_size"] = gallery_size
    out.update(counts)
    return out
