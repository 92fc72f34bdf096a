"""``pca_text``: image features projected onto the leading principal directions of class-name text features.

Herzog & Wang (CVPR 2026, "Reevaluating the Intra-Modal Misalignment Hypothesis in CLIP"),
``Vision-Kek/Is-CLIP-Really-Misaligned``, recipe of ``cvpr26-suppl/span_projection.py``
(``SpanProjection``, ``fit_pca``, ``transform_pca``) as used by
``cvpr26-suppl/retrieval/src/retrieval.py`` (``--project``):

1. the span: **unnormalised** ``encode_text`` features of the bare class names (no template);
   the reference always uses ImageNet's 1000 class names (``fwd_imagenet_texts``), whatever
   the dataset — crossgap takes whatever class names the DAG encodes (reference ``"classnames"``);
2. PCA by eigendecomposition of their covariance (``torch.cov``: centred, unbiased);
   the ``D // reduce_factor`` eigenvectors of largest eigenvalue (``reduce_factor = 2``) are the
   rows of ``U`` ``[k, D]``;
3. every image feature ``f`` — query **and** gallery — becomes ``Uᵀ U f`` (projected, *not*
   centred, kept in ``D`` dimensions), then L2-normalised for cosine similarity.

One deviation: when the span has fewer non-degenerate directions than ``D // reduce_factor``
(fewer than ``D/2 + 1`` class names, e.g. the 30 classes of the synthetic toy data), the
trailing eigenvectors would be an arbitrary basis of the covariance's null space (whatever
LAPACK returns); ``k`` is then capped at the numerical rank and a warning logged.  With
ImageNet's 1000 names and ``D ≤ 1000`` the recipe is unchanged.

Text features are returned only L2-normalised (the method projects image embeddings; in the
reference's few-shot code the text classifier is not projected either).

Tasks: ``image_retrieval`` (query and gallery projected) and ``zero_shot`` (images projected,
compared with the native prompt classifier).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, Mapping

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

SPEC: dict[str, Any] = dict(
    name="pca_text",
    tasks=("image_retrieval", "zero_shot"),
    references=("classnames",),
    fallbacks={},
    task_references={"image_retrieval": ("classnames",), "zero_shot": ("classnames",)},
    params={"reduce_factor": 2},
    features="projected",
    transforms=("query", "gallery"),
    description="image features projected onto the top D/2 principal directions of class-name text features",
)


def fit(refs: Mapping[str, "torch.Tensor"], **params: Any) -> dict[str, "torch.Tensor"]:
    """Principal directions of the class-name text features.

    Args:
        refs: ``"classnames"`` ``[C, D]``: text features (unnormalised) of the bare class names.
        params: ``reduce_factor``: keep ``D // reduce_factor`` components.

    Returns:
        ``"components"`` ``[k, D]`` (orthonormal rows, largest eigenvalue first) and
        ``"eigenvalues"`` ``[D]`` (descending), float32; computed in float64.
    """
    import torch

    from crossgap.methods._shared import check_params, reference

    p = check_params(SPEC, params)
    factor = int(p["reduce_factor"])
    _, text = reference(refs, ("classnames",), SPEC["name"], min_rows=2)
    d = text.shape[1]
    if factor < 1 or d // factor < 1:
        raise ValueError(f"pca_text: reduce_factor must be in [1, {d}], got {factor}")
    cov = torch.cov(text.double().T)  # [D, D]
    eigvals, eigvecs = torch.linalg.eigh(cov)
    order = torch.argsort(eigvals, descending=True)
    eigvals, eigvecs = eigvals[order], eigvecs[:, order]
    k = d // factor
    tol = float(eigvals[0].clamp_min(0)) * d * torch.finfo(torch.float64).eps
    rank = int((eigvals > tol).sum())
    if rank < k:
        log.warning(
            "pca_text: %d class-name features span only %d directions, fewer than D // reduce_factor = %d; "
            "keeping %d components",
            text.shape[0], rank, k, rank,
        )
        k = max(rank, 1)
    return {"components": eigvecs[:, :k].T.contiguous().float(), "eigenvalues": eigvals.float()}


def apply(
    features: "torch.Tensor", stats: Mapping[str, "torch.Tensor"], *, modality: str, role: str, **params: Any
) -> "torch.Tensor":
    """Image features: ``normalize(f Uᵀ U)`` ``[N, D]``; text features: only L2-normalised."""
    from crossgap.methods._shared import check_apply, check_params, check_width, l2n, statistic

    check_params(SPEC, params)
    x = check_apply(features, modality, role, SPEC["name"])
    if modality == "text":
        return l2n(x)
    u = statistic(stats, "components", "pca_text").to(x.dtype)  # [k, D]
    check_width(x, u.shape[1], f"{role} image features", "pca_text")
    return l2n((x @ u.T) @ u)
