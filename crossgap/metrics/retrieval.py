"""Retrieval evaluation: a query feature set ranked against a gallery feature set.

Used for image→image, OTI→image (the query side is OTI-inverted text features), text→text
and OVI→text (the query side is OVI-inverted image features); the gallery is always native.

Protocol
--------
* Features are L2-normalised here (callers may pass raw features) and compared with
  cosine similarity ``q @ g.T``.  Computation is float32, or float64 when *both* feature
  sets are float64 (the tests use this for exact references).
* Each query ranks the **whole** gallery.  Ties are broken deterministically by gallery
  index ascending: a stable sort on similarity descending, so among equal similarities the
  lower gallery index ranks first.
* ``exclude_self=True`` (query set == gallery set, same order) removes gallery item ``i``
  from query ``i``'s ranking (leave-one-out); it is neither counted as relevant nor
  occupies a rank.
* Relevance, exactly one source: same integer ``label``; same ``group`` (caption datasets:
  captions of the same image); or an explicit relevance ("qrels") given either as a dense
  bool matrix ``[Q, G]`` or as integer pairs ``[P, 2]`` of ``(query_idx, gallery_idx)``.
* Queries with no relevant gallery item are excluded from every average and reported
  (``num_queries_without_relevant`` and ``queries_without_relevant``), never scored 0.

Metrics (per query, then averaged over the queries with ≥1 relevant item, ×100), with
``R`` = number of relevant gallery items of the query and ``rel_k`` ∈ {0, 1} the relevance
of the item at rank ``k`` (1-based), ``P@k`` the precision of the top ``k``:

* ``mAP``: average precision over the FULL ranking, ``AP = (1/R) Σ_k P@k · rel_k``
  (non-interpolated; equals scikit-learn's ``average_precision_score`` when there are no ties).
* ``mAP_at_R``: ``(1/R) Σ_{k ≤ R} P@k · rel_k`` (Musgrave et al. 2020, "MAP@R").
* ``R_precision``: ``P@R``.
* ``R@k`` for k in 1, 5, 10: 1 if **any** relevant item is in the top ``k`` else 0 (the
  "Recall@k" of metric-learning papers, not the fraction of relevant items retrieved).
* leave-one-out only (``exclude_self``: CUB, SOP): ``mAP_at_R_standard`` (the definition above) and
  ``mAP_at_R_reference`` (the reference implementation's, over the top ``R + 1``:
  :mod:`crossgap.metrics.reference_compat`), both from the same ranks whatever
  ``reference_compat`` says, so a result can be set beside published numbers without a second run.

Implementation: queries are processed in chunks of ``chunk_size`` rows, with no per-query
Python loop.  Every metric above depends only on the ranks of a query's relevant items, and the
rank of its ``j``-th best relevant item (0-based) is ``j`` plus the number of *non-relevant*
items ranked above it.  So instead of sorting the gallery, per chunk:

1. the relevant items' similarities are gathered and sorted (``[B, Rmax]``, small);
2. the non-relevant similarities ``[B, G]`` are bucketed among those thresholds with one
   batched ``torch.searchsorted`` (``O(G log R)`` instead of the sort's ``O(G log G)``);
3. a ``bincount`` of the buckets and a suffix sum give the counts, hence the ranks.

Each threshold ``t`` is paired with the float just below it, so a non-relevant similarity
*equal* to a relevant one lands in an odd bucket; those few items are located and counted
ahead of the relevant item when their gallery index is lower, as the tie rule says.  (Such
exact float32 ties are not rare: with 200k gallery items and 200 relevant ones, about one per
query.)  A query whose relevant items tie among themselves is ranked by the reference path
instead (stable sort, relevance gathered in ranked order).  Peak memory is about
``chunk_size × G × 8`` bytes (float32 similarity, then int32 buckets; the sort path needs
~26 B per element, for its few rows) — e.g. ~10 GB for 1024 × 1.28M; lower ``chunk_size`` on
smaller devices.
"""

from __future__ import annotations

import logging
from typing import Sequence

import torch

from crossgap.metrics.ranking import (  # noqa: F401  (re-exported: the metrics' public names)
    DEFAULT_KS,
    RetrievalPerQuery,
    _rank_metrics,
    _sorted_metrics,
    chunk_bounds,
    iter_ranked_chunks,
    prepare_features,
    rank_order,
)
from crossgap.metrics.reference_compat import reference_per_query
from crossgap.metrics.relevance import ArrayLike, Relevance, lists_to_dense
from crossgap.utils import resolve_device
from crossgap.config import schema_default

log = logging.getLogger(__name__)


def _chunk_metrics(
    q: torch.Tensor,
    g: torch.Tensor,
    idx: torch.Tensor,
    valid: torch.Tensor,
    self_offset: int | None,
    ks: Sequence[int],
) -> tuple[dict[str, torch.Tensor], int]:
    """Metrics of one chunk of queries without sorting the gallery (module docstring).

    Args:
        q: ``[B, D]`` normalised queries; g: ``[G, D]`` normalised gallery.
        idx, valid: ``[B, Rmax]`` relevant items (:meth:`Relevance.lists`).
        self_offset: with leave-one-out, the gallery index of query row 0 (else ``None``).

    Returns:
        Per-query metrics (as :func:`_rank_metrics`) and the number of queries that were
        ranked by the sort path (relevant items tied among themselves).
    """
    b, r_max = idx.shape
    dev = q.device
    inf = float("inf")
    sim = q @ g.T  # [B, G]
    if self_offset is not None:
        rows = torch.arange(b, device=dev)
        sim[rows, rows + self_offset] = -inf
    scores = sim.gather(1, idx).masked_fill(~valid, inf)  # [B, Rmax], padding +inf
    thresholds, order = scores.sort(dim=1)  # ascending, padding last
    rel_items = idx.gather(1, order)  # gallery index of each threshold
    n_rel = valid.sum(1)  # [B]
    k = torch.arange(r_max, device=dev)
    is_rel = k[None, :] < n_rel[:, None]  # [B, Rmax] the real thresholds
    dup = ((thresholds[:, 1:] == thresholds[:, :-1]) & is_rel[:, 1:]).any(1)
    exact = None
    if bool(dup.any()):  # relevant items tied among themselves: the parity below would not hold
        dup_rows = dup.nonzero().flatten()
        dense = lists_to_dense(idx[dup_rows], valid[dup_rows], g.shape[0])
        exact = (dup_rows, _sorted_metrics(sim[dup_rows], dense, ks))
    sim.scatter_(1, idx, -inf)  # only non-relevant items are counted (bucket 0 for -inf)
    below = torch.nextafter(thresholds, torch.full_like(thresholds, -inf))
    bounds = torch.stack((below, thresholds), dim=2).reshape(b, 2 * r_max)
    # bucket(v) = #{below < v} + #{t < v} = 2·#{t < v} + [v equals a threshold]
    n_b = 2 * r_max + 2  # even, so that adding row offsets keeps the parity
    bucket = torch.searchsorted(bounds, sim, out_int32=b * n_b < 2**31)
    del sim
    bucket += (torch.arange(b, dtype=bucket.dtype, device=dev) * n_b)[:, None]
    hist = torch.bincount(bucket.view(-1), minlength=b * n_b).view(b, n_b)
    higher = hist.flip(1).cumsum(1).flip(1)[:, 2::2]  # [B, Rmax] non-relevant items above t_k
    # non-relevant items *equal* to a threshold rank ahead of it when their index is lower
    ahead = torch.zeros_like(higher)
    tie_rows = hist[:, 1::2].any(1).nonzero().flatten()
    if tie_rows.numel():
        odd = bucket[tie_rows].bitwise_and_(1)
        sub_rows, cols = odd.nonzero(as_tuple=True)
        del odd
        rows = tie_rows[sub_rows]
        tied_k = (bucket[rows, cols].long() - rows * n_b - 1) // 2
        lower = cols < rel_items[rows, tied_k]
        ahead.index_put_((rows[lower], tied_k[lower]), torch.ones_like(tied_k[lower]), accumulate=True)
    del bucket
    j = n_rel[:, None] - 1 - k[None, :]  # position among the relevant items, best first
    hit_rows = is_rel.nonzero(as_tuple=True)[0]
    rank0 = (j + higher + ahead)[is_rel]
    metrics = _rank_metrics(b, hit_rows, rank0, (j + 1)[is_rel], n_rel, ks)
    if exact is None:
        return metrics, 0
    for key, value in exact[1].items():
        metrics[key][exact[0]] = value
    return metrics, exact[0].numel()


@torch.no_grad()
def retrieval_per_query(
    query_features: ArrayLike,
    gallery_features: ArrayLike,
    query_labels: ArrayLike | None = None,
    gallery_labels: ArrayLike | None = None,
    *,
    exclude_self: bool = False,
    chunk_size: int = schema_default("evaluation.chunk_size"),
    device: str | torch.device | None = None,
    relevance: ArrayLike | None = None,
    query_groups: ArrayLike | None = None,
    gallery_groups: ArrayLike | None = None,
    ks: Sequence[int] = DEFAULT_KS,
) -> RetrievalPerQuery:
    """Per-query AP, AP@R, R-precision and any-hit@k of ``[Q, D]`` queries against ``[G, D]``.

    Arguments as in :func:`evaluate_retrieval`; ``ks`` are the cut-offs of ``hits``.
    """
    dev = resolve_device(device)
    q, g = prepare_features(query_features, gallery_features, dev)
    n_q, n_g = q.shape[0], g.shape[0]
    if exclude_self and n_q != n_g:
        raise ValueError(f"exclude_self needs the same query and gallery items; got Q={n_q}, G={n_g}")
    rel_source = Relevance(n_q, n_g, dev, query_labels, gallery_labels, relevance, query_groups, gallery_groups)
    parts: list[dict[str, torch.Tensor]] = []
    n_sorted = 0
    for start, stop in chunk_bounds(n_q, chunk_size):
        idx, valid = rel_source.lists(start, stop, exclude_self)
        metrics, n = _chunk_metrics(q[start:stop], g, idx, valid, start if exclude_self else None, ks)
        n_sorted += n
        parts.append({k: v.cpu() for k, v in metrics.items()})
    if n_sorted:
        log.debug("%d of %d queries have relevant items tied among themselves: ranked by the sort path", n_sorted, n_q)
    if not parts:  # no queries
        parts.append(
            {
                "ap": torch.empty(0, dtype=torch.float64),
                "ap_at_r": torch.empty(0, dtype=torch.float64),
                "r_precision": torch.empty(0, dtype=torch.float64),
                "num_relevant": torch.empty(0, dtype=torch.long),
                "first": torch.empty(0, dtype=torch.long),
                "ap_at_r_standard": torch.empty(0, dtype=torch.float64),
                "ap_at_r_reference": torch.empty(0, dtype=torch.float64),
                **{f"hit{k}": torch.empty(0, dtype=torch.bool) for k in ks},
            }
        )
    cat = {key: torch.cat([p[key] for p in parts]) for key in parts[0]}
    return RetrievalPerQuery(
        ap=cat["ap"],
        ap_at_r=cat["ap_at_r"],
        r_precision=cat["r_precision"],
        hits={k: cat[f"hit{k}"] for k in ks},
        num_relevant=cat["num_relevant"],
        first_hit_rank=cat["first"],
        gallery_size=n_g,
        ap_at_r_standard=cat["ap_at_r_standard"] if exclude_self else None,
        ap_at_r_reference=cat["ap_at_r_reference"] if exclude_self else None,
    )


def summarize_retrieval(per_query: RetrievalPerQuery) -> dict[str, float | int | list[int]]:
    """Average a :class:`RetrievalPerQuery` over valid queries, ×100 (see :func:`evaluate_retrieval`)."""
    valid = per_query.valid
    n_valid = int(valid.sum())
    missing = (~valid).nonzero().flatten().tolist()
    if missing:
        log.warning(
            "%d of %d queries have no relevant gallery item and are excluded (first: %s)",
            len(missing),
            valid.numel(),
            missing[:20],
        )

    def mean100(x: torch.Tensor) -> float:
        return float(x[valid].double().mean() * 100) if n_valid else float("nan")

    out: dict[str, float | int | list[int]] = {
        "mAP": mean100(per_query.ap),
        "mAP_at_R": mean100(per_query.ap_at_r),
        "R_precision": mean100(per_query.r_precision),
    }
    for k, hit in per_query.hits.items():
        out[f"R@{k}"] = mean100(hit)
    if per_query.ap_at_r_reference is not None:  # leave-one-out: both definitions (module docstring)
        out["mAP_at_R_standard"] = mean100(per_query.ap_at_r_standard)
        out["mAP_at_R_reference"] = mean100(per_query.ap_at_r_reference)
    out.update(
        num_queries=int(valid.numel()),
        num_queries_evaluated=n_valid,
        num_queries_without_relevant=len(missing),
        queries_without_relevant=missing,
        gallery_size=per_query.gallery_size,
    )
    return out


def evaluate_retrieval(
    query_features: ArrayLike,
    gallery_features: ArrayLike,
    query_labels: ArrayLike | None = None,
    gallery_labels: ArrayLike | None = None,
    *,
    exclude_self: bool = False,
    chunk_size: int = schema_default("evaluation.chunk_size"),
    device: str | torch.device | None = None,
    relevance: ArrayLike | None = None,
    query_groups: ArrayLike | None = None,
    gallery_groups: ArrayLike | None = None,
    reference_compat: bool = False,
    fp16_similarities: bool = False,
) -> dict[str, float | int | list[int]]:
    """Retrieval metrics of queries ``[Q, D]`` against a gallery ``[G, D]`` (module docstring).

    Args:
        query_features: ``[Q, D]`` tensor or array (native or inverted); normalised here.
        gallery_features: ``[G, D]`` native features; normalised here.
        query_labels, gallery_labels: integer ``[Q]`` / ``[G]``; relevant = same label.
        exclude_self: query ``i`` is gallery item ``i`` (same items, same order); drop it
            from its own ranking.
        chunk_size: queries per chunk; peak memory ≈ ``chunk_size × G × 8`` bytes.
        device: where to compute; ``None`` = CUDA when available, else CPU.
        relevance: explicit relevance instead of labels: bool ``[Q, G]`` or int pairs ``[P, 2]``.
        query_groups, gallery_groups: integer ``[Q]`` / ``[G]``; relevant = same group
            (caption datasets).  Exactly one of labels / groups / relevance must be given.
        reference_compat: the reference implementation's definitions instead
            (:mod:`crossgap.metrics.reference_compat`): leave-one-out mAP@R over the top R+1;
            with ``fp16_similarities`` (its ImageNet ranking) similarities rounded to float16.

    Returns:
        ``mAP``, ``mAP_at_R``, ``R_precision``, ``R@1``, ``R@5``, ``R@10``: floats ×100 over the
        queries with ≥1 relevant item (NaN if none has); ``num_queries`` (Q, int),
        ``num_queries_evaluated`` (int), ``num_queries_without_relevant`` (int),
        ``queries_without_relevant`` (list of their query indices), ``gallery_size`` (G, int).
    """
    return summarize_retrieval(evaluation_per_query(
        query_features, gallery_features, query_labels, gallery_labels, exclude_self=exclude_self,
        chunk_size=chunk_size, device=device, relevance=relevance, query_groups=query_groups,
        gallery_groups=gallery_groups, reference_compat=reference_compat, fp16_similarities=fp16_similarities))


def evaluation_per_query(
    query_features: ArrayLike,
    gallery_features: ArrayLike,
    query_labels: ArrayLike | None = None,
    gallery_labels: ArrayLike | None = None,
    *,
    exclude_self: bool = False,
    chunk_size: int = schema_default("evaluation.chunk_size"),
    device: str | torch.device | None = None,
    relevance: ArrayLike | None = None,
    query_groups: ArrayLike | None = None,
    gallery_groups: ArrayLike | None = None,
    reference_compat: bool = False,
    fp16_similarities: bool = False,
) -> RetrievalPerQuery:
    """The per-query values :func:`evaluate_retrieval` averages (same arguments, same definitions).

    ``summarize_retrieval(evaluation_per_query(...)) == evaluate_retrieval(...)``; per-query
    scores for confidence intervals come from the same call
    (:func:`crossgap.metrics.scores.retrieval_scores`).
    """
    if fp16_similarities and not reference_compat:
        raise ValueError("fp16_similarities is the reference's ImageNet ranking: it needs reference_compat=True")
    if reference_compat:
        return reference_per_query(
            query_features, gallery_features, query_labels, gallery_labels, exclude_self=exclude_self,
            chunk_size=chunk_size, device=device, relevance=relevance, query_groups=query_groups,
            gallery_groups=gallery_groups, fp16_similarities=fp16_similarities)
    return retrieval_per_query(
        query_features,
        gallery_features,
        query_labels,
        gallery_labels,
        exclude_self=exclude_self,
        chunk_size=chunk_size,
        device=device,
        relevance=relevance,
        query_groups=query_groups,
        gallery_groups=gallery_groups,
    )
