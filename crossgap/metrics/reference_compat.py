"""``evaluation.reference_compat``: the reference implementation's retrieval numbers, reproduced.

crossgap's definitions (:mod:`crossgap.metrics.retrieval`) stay the default.  With
``reference_compat`` two departures of the reference (miccunifi/Cross-the-Gap ``src/retrieval.py``,
``compute_metrics`` / ``calculate_similarities``, and ``src/utils.py``,
``retrieval_average_precision_atk``) are reproduced, so numbers can be set beside published ones:

1. **mAP@R on leave-one-out datasets** (query set = gallery set: CUB, SOP).  The reference counts
   a query's relevant items ``R`` *before* it removes the query from the gallery, so ``R`` includes
   the query itself; it then scores the top ``k = R_true + 1`` of the remaining ranking and
   divides by ``min(R_true, k) = R_true``::

       AP@R_reference = (1/R) Σ_{rank ≤ R+1} P@rank · rel_rank        (R = R_true)

   i.e. one extra rank is searched: always ≥ crossgap's ``(1/R) Σ_{rank ≤ R}``.  Elsewhere
   (query and gallery differ) it is the standard MAP@R.
2. **fp16 ImageNet ranking.**  For ImageNet the reference stores the similarity matrix as float16
   before ranking (to save memory), which creates many exact ties; ``fp16_similarities`` rounds the
   float32 similarities to float16 the same way.  :data:`REFERENCE_FP16_DATASETS` lists the
   datasets (adapter slugs) it does this for.

mAP is the standard full-ranking AP, as the torchmetrics the reference pins (1.4.0.post0,
``install_requirements.sh``) computes it; later torchmetrics releases (Lightning-AI/torchmetrics PR
#3104) also drop relevant items whose similarity is <= 0, which CLIP cosines practically never are.

Everything else keeps crossgap's rules: ties by gallery index (the reference leaves the order of
tied items to ``torch.topk`` / ``torch.argsort``, unspecified), mAP over the full ranking,
R-precision, R@k, and queries without a relevant item excluded and reported (the reference scores
their AP 0 and its AP@R 0/0; no query of the paper's datasets lacks one unless rows were skipped).

This path ranks by a stable sort per chunk (``~chunk × G × 13`` bytes), so it uses chunks of at most
:data:`COMPAT_CHUNK` queries.
"""

from __future__ import annotations

from typing import Sequence

import torch

from crossgap.metrics.relevance import ArrayLike, Relevance, lists_to_dense
from crossgap.metrics.ranking import (
    DEFAULT_KS,
    RetrievalPerQuery,
    _sorted_metrics,
    chunk_bounds,
    prepare_features,
)
from crossgap.utils import resolve_device
from crossgap.config import schema_default

#: Adapter slugs whose similarities the reference ranks in float16 (``calculate_similarities``:
#: ``if dataset_name == 'imagenet'``).
REFERENCE_FP16_DATASETS: frozenset[str] = frozenset({"imagenet"})
COMPAT_CHUNK = 256


def uses_fp16_similarities(dataset: str) -> bool:
    """Whether the reference ranks ``dataset``'s (adapter slug) similarities in float16."""
    return dataset in REFERENCE_FP16_DATASETS


@torch.no_grad()
def reference_per_query(
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
    fp16_similarities: bool = False,
    ks: Sequence[int] = DEFAULT_KS,
) -> RetrievalPerQuery:
    """Per-query values under the reference's definitions (module docstring); arguments as
    :func:`crossgap.metrics.retrieval.evaluate_retrieval`.

    Similarities ``[B, G]`` per chunk are ``q @ g.T`` of the normalised features, rounded to float16
    and back when ``fp16_similarities``; with ``exclude_self`` query ``i``'s own item is set to -inf
    and not relevant (ranked last, so it takes no rank above a relevant item).
    """
    dev = resolve_device(device)
    q, g = prepare_features(query_features, gallery_features, dev)
    n_q, n_g = q.shape[0], g.shape[0]
    if exclude_self and n_q != n_g:
        raise ValueError(f"exclude_self needs the same query and gallery items; got Q={n_q}, G={n_g}")
    rel_source = Relevance(n_q, n_g, dev, query_labels, gallery_labels, relevance, query_groups, gallery_groups)
    parts: list[dict[str, torch.Tensor]] = []
    for start, stop in chunk_bounds(n_q, min(chunk_size, COMPAT_CHUNK)):
        idx, valid = rel_source.lists(start, stop, exclude_self)
        rel = lists_to_dense(idx, valid, n_g)  # [B, G]
        sim = q[start:stop] @ g.T  # [B, G]
        if fp16_similarities:
            sim = sim.half().to(sim.dtype)
        if exclude_self:
            rows = torch.arange(stop - start, device=dev)
            sim[rows, rows + start] = -float("inf")
        metrics = _sorted_metrics(sim, rel, ks, ap_at_r_extra=1 if exclude_self else 0)
        parts.append({k: v.cpu() for k, v in metrics.items()})
    if not parts:
        empty = {"ap": torch.float64, "ap_at_r": torch.float64, "r_precision": torch.float64,
                 "num_relevant": torch.long, "first": torch.long, "ap_at_r_standard": torch.float64,
                 "ap_at_r_reference": torch.float64, **{f"hit{k}": torch.bool for k in ks}}
        parts.append({key: torch.empty(0, dtype=dtype) for key, dtype in empty.items()})
    cat = {key: torch.cat([p[key] for p in parts]) for key in parts[0]}
    return RetrievalPerQuery(
        ap=cat["ap"], ap_at_r=cat["ap_at_r"], r_precision=cat["r_precision"],
        hits={k: cat[f"hit{k}"] for k in ks}, num_relevant=cat["num_relevant"], first_hit_rank=cat["first"],
        gallery_size=n_g,
        ap_at_r_standard=cat["ap_at_r_standard"] if exclude_self else None,
        ap_at_r_reference=cat["ap_at_r_reference"] if exclude_self else None,
    )
