"""Shared ranking primitives of the retrieval metrics: feature preparation, chunks, the stable rank
order, per-query values from the ranks of the relevant items, and the sort path.

Used by :mod:`crossgap.metrics.retrieval` (crossgap's definitions), :mod:`crossgap.metrics.reference_compat`
(the reference's) and :mod:`crossgap.metrics.revisited`; it imports none of them, so the three
form no import cycle.  The definitions are in :mod:`crossgap.metrics.retrieval`'s docstring.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Iterator, Sequence

import torch

from crossgap.metrics.relevance import ArrayLike, as_tensor

log = logging.getLogger(__name__)

DEFAULT_KS: tuple[int, ...] = (1, 5, 10)


def prepare_features(
    query_features: ArrayLike, gallery_features: ArrayLike, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """Check shapes/finiteness and return L2-normalised ``[Q, D]`` and ``[G, D]`` on ``device``.

    The compute dtype is float64 when both inputs are float64, float32 otherwise.
    """
    q = as_tensor(query_features, device)
    g = as_tensor(gallery_features, device)
    if q.ndim != 2 or g.ndim != 2 or q.shape[1] != g.shape[1]:
        raise ValueError(f"features must be [Q, D] and [G, D]; got {tuple(q.shape)} and {tuple(g.shape)}")
    dtype = torch.float64 if (q.dtype == torch.float64 and g.dtype == torch.float64) else torch.float32
    q, g = q.to(dtype), g.to(dtype)
    out = []
    for name, t in (("query", q), ("gallery", g)):
        norms = torch.linalg.vector_norm(t, dim=1, keepdim=True)  # [N, 1]; NaN/inf propagate
        if not torch.isfinite(norms).all():
            raise ValueError(f"{name} features contain NaN or inf")
        n_zero = int((norms == 0).sum())
        if n_zero:
            log.warning("%d %s feature rows have zero norm (similarity 0 to everything)", n_zero, name)
        out.append(t / norms.clamp_min(1e-12))
    return out[0], out[1]


def chunk_bounds(n: int, chunk_size: int) -> Iterator[tuple[int, int]]:
    """``(start, stop)`` of consecutive chunks of ``chunk_size`` rows covering ``range(n)``."""
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    for start in range(0, n, chunk_size):
        yield start, min(start + chunk_size, n)


def rank_order(sim: torch.Tensor) -> torch.Tensor:
    """``[B, G]`` int64 gallery indices by similarity descending, ties by index ascending.

    Stable sort of ``sim`` (modified in place on CUDA, where -0.0 is made +0.0: the radix sort
    would otherwise order -0.0 below +0.0).
    """
    if sim.is_cuda:
        sim.add_(0.0)
    return torch.sort(sim, dim=1, descending=True, stable=True).indices


def iter_ranked_chunks(q: torch.Tensor, g: torch.Tensor, chunk_size: int) -> Iterator[tuple[int, int, torch.Tensor]]:
    """Yield ``(start, stop, order)`` per query chunk; ``order [B, G]`` int64 ranks the gallery.

    ``order[b, r]`` is the gallery index at rank ``r`` (0-based) for query ``start + b``
    (:func:`rank_order`).
    """
    for start, stop in chunk_bounds(q.shape[0], chunk_size):
        yield start, stop, rank_order(q[start:stop] @ g.T)


@dataclass
class RetrievalPerQuery:
    """Per-query retrieval values (CPU tensors, length Q, fractions in [0, 1], not ×100).

    ``ap``, ``ap_at_r``, ``r_precision`` are NaN and ``hits[k]`` is False for queries without
    a relevant item (``valid`` False); ``first_hit_rank`` is the 1-based rank of the first
    relevant item (0 when none).
    """

    ap: torch.Tensor  # [Q] float64
    ap_at_r: torch.Tensor  # [Q] float64
    r_precision: torch.Tensor  # [Q] float64
    hits: dict[int, torch.Tensor]  # k -> [Q] bool, any relevant item in the top k
    num_relevant: torch.Tensor  # [Q] int64
    first_hit_rank: torch.Tensor  # [Q] int64
    gallery_size: int
    #: leave-one-out only: AP@R over the top R (standard) and over the top R + 1 (the reference's), [Q] float64
    ap_at_r_standard: torch.Tensor | None = None
    ap_at_r_reference: torch.Tensor | None = None

    @property
    def valid(self) -> torch.Tensor:
        """``[Q]`` bool: queries with at least one relevant gallery item."""
        return self.num_relevant > 0


def _rank_metrics(
    b: int, hit_rows: torch.Tensor, rank0: torch.Tensor, hit_no: torch.Tensor, n_rel: torch.Tensor, ks: Sequence[int],
    ap_at_r_extra: int = 0,
) -> dict[str, torch.Tensor]:
    """Per-query metrics of a chunk of ``b`` queries from the ranks of their relevant items.

    Args:
        hit_rows: ``[H]`` query (row) of each relevant item.
        rank0: ``[H]`` its 0-based rank in the query's ranking.
        hit_no: ``[H]`` its 1-based position among the query's relevant items, best first.
        n_rel: ``[b]`` relevant items per query.
        ap_at_r_extra: AP@R sums over the top ``R + ap_at_r_extra`` (still divided by ``R``);
            1 is the reference implementation's leave-one-out mAP@R (:mod:`.reference_compat`).
    """
    dev = rank0.device
    precision = hit_no.double() / (rank0 + 1).double()  # P@k at each relevant rank
    in_top_r = rank0 < n_rel[hit_rows]
    in_cutoff = rank0 < n_rel[hit_rows] + ap_at_r_extra if ap_at_r_extra else in_top_r
    denom = n_rel.double()  # 0 for queries without a relevant item: their values become NaN
    zeros = torch.zeros(b, dtype=torch.float64, device=dev)
    ap = zeros.index_add(0, hit_rows, precision) / denom
    ap_at_r = zeros.index_add(0, hit_rows, precision * in_cutoff) / denom
    r_prec = zeros.index_add(0, hit_rows, in_top_r.double()) / denom
    first = torch.zeros(b, dtype=torch.long, device=dev)
    is_first = hit_no == 1
    first[hit_rows[is_first]] = rank0[is_first].long() + 1
    # both mAP@R definitions from the same ranks (recorded on leave-one-out sets)
    top_r1 = rank0 < n_rel[hit_rows] + 1
    out = {"ap": ap, "ap_at_r": ap_at_r, "r_precision": r_prec, "num_relevant": n_rel.long(), "first": first,
           "ap_at_r_standard": zeros.index_add(0, hit_rows, precision * in_top_r) / denom,
           "ap_at_r_reference": zeros.index_add(0, hit_rows, precision * top_r1) / denom}
    for k in ks:
        out[f"hit{k}"] = (first > 0) & (first <= k)
    return out


def _sorted_metrics(
    sim: torch.Tensor, rel: torch.Tensor, ks: Sequence[int], ap_at_r_extra: int = 0
) -> dict[str, torch.Tensor]:
    """Reference path: stable sort of ``sim [B, G]`` (modified), relevance ``[B, G]`` in ranked order."""
    b = sim.shape[0]
    order = rank_order(sim)
    rel_sorted = rel.gather(1, order)
    del order
    hit_rows, hit_cols = rel_sorted.nonzero(as_tuple=True)  # [H], row-major order
    n_rel = torch.bincount(hit_rows, minlength=b)  # [B] (much cheaper than a [B, G] sum)
    offsets = torch.cumsum(n_rel, 0) - n_rel  # index of each row's first hit in the hit list
    hit_no = torch.arange(hit_rows.numel(), device=sim.device) - offsets[hit_rows] + 1
    return _rank_metrics(b, hit_rows, hit_cols, hit_no, n_rel, ks, ap_at_r_extra)
