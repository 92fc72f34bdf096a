"""``pca_text``: image features projected onto the leading principal directions of class-name text features.

Herzog & Wang (CVPR 2026, "Reevaluating the Intra-Modal Misalignment Hypothesis in CLIP"),
``Vision-Kek/Is-CLIP-Really-Misaligned``, recipe of ``cvpr26-suppl/span_projection.py``
(``SpanProjection``, ``fit_pca``, ``transform_pca``) as used by
``cvpr26-suppl/retrieval/src/retrieval.py`` (``--project``):

1. the span: **unnormalised** ``encode_text`` features of the bare class names (no template) of
   **ImageNet-1k**, whatever dataset is evaluated (``SpanProjection.fwd_imagenet_texts`` reads
   ``pytorch/hub``'s ``imagenet_classes.txt``, shipped here as ``data/imagenet_classes.txt``; the
   DAG encodes it once per model: reference ``"imagenet_classnames"``);
2. PCA by eigendecomposition of their covariance (``torch.cov``: centred, unbiased);
   the ``D // reduce_factor`` eigenvectors of largest eigenvalue (``reduce_factor = 2``) are the
   rows of ``U`` ``[k, D]``;
3. every image feature ``f`` — query **and** gallery — becomes ``Uᵀ U f`` (projected, *not*
   centred, kept in ``D`` dimensions), then L2-normalised for cosine similarity.

Two methods share this module (``SPECS``):

* ``pca_text`` — the authors' recipe above, on every dataset with image retrieval or zero-shot;
* ``pca_text_dataset`` — crossgap's own variant: the span of the **evaluated dataset's** class
  names (reference ``"classnames"``, so only where the dataset has zero-shot class names).  For
  image retrieval this projects onto the vocabulary of the very labels the retrieval is scored on.
  When such a span has fewer non-degenerate directions than ``D // reduce_factor`` (fewer than
  ``D/2 + 1`` names, e.g. the 30 synthetic classes), the trailing eigenvectors would be an
  arbitrary basis of the covariance's null space (whatever LAPACK returns); ``k`` is then capped
  at the numerical rank and a warning logged.  With ImageNet's 1000 names and ``D ≤ 1000`` this
  never happens, so the authors' recipe is unchanged.

Text features are returned only L2-normalised (the method projects image embeddings; in the
reference's few-shot code the text classifier is not projected either).

Tasks: ``image_retrieval`` (query and gallery projected) and ``zero_shot`` (images projected,
compared with the native prompt classifier: crossgap's extension of the retrieval recipe).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, Mapping

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

_REPO = "Vision-Kek/Is-CLIP-Really-Misaligned"
_SOURCE = "Herzog & Wang, Reevaluating the Intra-Modal Misalignment Hypothesis in CLIP (CVPR 2026)"
_COMMON: dict[str, Any] = dict(
    tasks=("image_retrieval", "zero_shot"),
    params={"reduce_factor": 2},
    features="projected",
    transforms=("query", "gallery"),
)
SPECS: tuple[dict[str, Any], ...] = (
    dict(
        _COMMON,
        name="pca_text",
        references={"image_retrieval": ("imagenet_classnames",), "zero_shot": ("imagenet_classnames",)},
        description="image features projected onto the top D/2 principal directions of the ImageNet-1k class-name "
                    "text features (Herzog & Wang)",
        recipe={
            "image_retrieval": dict(source=_SOURCE, repository=_REPO, file="cvpr26-suppl/span_projection.py",
                                    variant="the authors' span: bare ImageNet-1k class names, top D // 2 directions, "
                                            "query and gallery projected (retrieval.py --project)"),
            "zero_shot": dict(source=_SOURCE, repository=_REPO, file="cvpr26-suppl/span_projection.py",
                              variant="the authors' span applied to zero-shot images (crossgap's extension: their "
                                      "retrieval recipe, the classifier only normalised)"),
        },
    ),
    dict(
        _COMMON,
        name="pca_text_dataset",
        references={"image_retrieval": ("classnames",), "zero_shot": ("classnames",)},
        description="as pca_text, spanned by the evaluated dataset's own class names (crossgap's variant)",
        recipe=dict(source=_SOURCE + "; crossgap's variant", repository=None, file=None,
                    variant="span of the evaluated dataset's bare class names (capped at its rank), not ImageNet's"),
    ),
)
#: the span files this module fits on, in order of preference
SPAN_KEYS = ("imagenet_classnames", "classnames")


def fit(refs: Mapping[str, "torch.Tensor"], **params: Any) -> dict[str, "torch.Tensor"]:
    """Principal directions of the class-name text features.

    Args:
        refs: the span: ``"imagenet_classnames"`` (``pca_text``) or ``"classnames"`` (``pca_text_dataset``)
            ``[C, D]``, text features (unnormalised) of bare class names.
        params: ``reduce_factor``: keep ``D // reduce_factor`` components.

    Returns:
        ``"components"`` ``[k, D]`` (orthonormal rows, largest eigenvalue first) and
        ``"eigenvalues"`` ``[D]`` (descending), float32; computed in float64.
    """
    import torch

    from crossgap.methods import MethodUnavailable
    from crossgap.methods._shared import check_params, reference

    p = check_params(_COMMON, params, "pca_text")
    factor = int(p["reduce_factor"])
    key, text = reference(refs, SPAN_KEYS, "pca_text")
    if text.shape[0] < 2:
        raise MethodUnavailable(f"pca_text: the span {key!r} has {text.shape[0]} class name(s); a covariance needs 2")
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

    check_params(_COMMON, params, "pca_text")
    x = check_apply(features, modality, role, "pca_text")
    if modality == "text":
        return l2n(x)
    u = statistic(stats, "components", "pca_text").to(x.dtype)  # [k, D]
    check_width(x, u.shape[1], f"{role} image features", "pca_text")
    return l2n((x @ u.T) @ u)
