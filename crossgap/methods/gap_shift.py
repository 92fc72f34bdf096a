"""``gap_shift``: move each query across the modality gap (Liang et al., NeurIPS 2022, "Mind the Gap").

Liang et al. define the modality gap as the difference of the centres of the L2-normalised image
and text embeddings, ``Δ = μ_image − μ_text``, and shift embeddings along it before
renormalising.  Here the query is moved to the other modality's side and compared with the
native gallery — the training-free analogue of OTI (image query → text side) and OVI (text
query → image side):

* image query: ``normalize(q̂ − s·(μ_image − μ_text))`` (``s = scale``; 1 gives ``q̂ − μ_image + μ_text``)
* text query:  ``normalize(q̂ + s·(μ_image − μ_text))``
* gallery (either modality): ``ĝ`` unchanged (only L2-normalised).

``q̂`` is the L2-normalised query and the ``μ`` are means of the **L2-normalised** reference
features (crossgap's feature files hold unnormalised encoder outputs, see
:mod:`crossgap.features`; the gap lives on the unit sphere, where CLIP compares features).

Fitted on reference features only: ``"image"`` (the task's gallery/train images) and ``"text"``
(its captions) or, on datasets without captions, ``"prompts"`` (class-prompt text features).
Never on the queries' labels.

Tasks: ``image_retrieval`` (image queries vs native image gallery), ``text_retrieval`` (text
queries vs native text gallery; needs image references, so not on text-only datasets) and
``zero_shot`` (image features shifted, compared with the native prompt classifier).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Mapping

if TYPE_CHECKING:
    import torch

SPEC: dict[str, Any] = dict(
    name="gap_shift",
    tasks=("image_retrieval", "text_retrieval", "zero_shot"),
    references=("image", "text"),
    #: a reference used when the first is absent
    fallbacks={"text": "prompts"},
    task_references={
        "image_retrieval": ("image", "text"),
        "text_retrieval": ("image", "text"),
        "zero_shot": ("image", "text"),
    },
    params={"scale": 1.0},
    #: which features ``apply`` takes: the projected (shared-space) ones
    features="projected",
    #: the roles ``apply`` changes (the others are only L2-normalised)
    transforms=("query",),
    description="query moved by the difference of the modality means (Liang et al. 2022)",
)


def fit(refs: Mapping[str, "torch.Tensor"], **params: Any) -> dict[str, "torch.Tensor"]:
    """Modality means ``{"mu_image": [D], "mu_text": [D]}`` (float32) of the normalised references.

    Args:
        refs: ``"image"`` ``[N_i, D]`` and ``"text"`` ``[N_t, D]`` (or ``"prompts"``
            ``[C*T, D]`` when ``"text"`` is absent); unnormalised features are fine.
        params: :data:`SPEC` ``params`` (``scale`` is used by :func:`apply` only).
    """
    from crossgap.methods._shared import check_params, l2n, reference

    check_params(SPEC, params)
    _, image = reference(refs, ("image",), SPEC["name"])
    _, text = reference(refs, ("text", "prompts"), SPEC["name"])
    if image.shape[1] != text.shape[1]:
        raise ValueError(f"gap_shift: image references have width {image.shape[1]}, text {text.shape[1]}")
    return {
        "mu_image": l2n(image.double()).mean(0).float(),
        "mu_text": l2n(text.double()).mean(0).float(),
    }


def apply(
    features: "torch.Tensor", stats: Mapping[str, "torch.Tensor"], *, modality: str, role: str, **params: Any
) -> "torch.Tensor":
    """Shifted, L2-normalised queries ``[N, D]``; galleries only normalised (module docstring).

    Args:
        features: ``[N, D]`` projected features of ``modality``.
        stats: the output of :func:`fit`.
        modality: "image" or "text"; role: "query" or "gallery".
    """
    from crossgap.methods._shared import check_apply, check_params, check_width, l2n, statistic

    p = check_params(SPEC, params)
    x = l2n(check_apply(features, modality, role, SPEC["name"]))
    if role == "gallery":
        return x
    gap = statistic(stats, "mu_image", "gap_shift") - statistic(stats, "mu_text", "gap_shift")
    check_width(x, gap.shape[0], f"{role} {modality} features", "gap_shift")
    step = float(p["scale"]) * gap.to(x.dtype)
    return l2n(x - step if modality == "image" else x + step)
