"""``centered``: subtract each modality's mean from query and gallery (optionally standardise), renormalise.

For features of modality ``m``: ``normalize((x̂ − μ_m) / σ_m)`` with ``x̂`` the L2-normalised
feature, ``μ_m`` the mean and (``standardize=True``) ``σ_m`` the per-dimension standard
deviation (unbiased, clamped at ``eps``) of the **L2-normalised** references of that modality
— the post-hoc standardisation of I0T (An et al. 2024) when ``standardize`` is on, plain
centring when off.  Applied to query and gallery alike, each with its own modality's statistics.

References: ``"image"`` (the task's gallery/train images) and/or ``"text"`` (its captions) or,
when ``"text"`` is absent, ``"prompts"`` (class-prompt features).  Statistics are fitted for the
modalities present; :func:`apply` names the reference a missing one needed.

Tasks: ``image_retrieval`` (image statistics only), ``text_retrieval`` (text only) and
``zero_shot`` (images centred by the image mean, prompts by the text/prompt mean: the
cross-modal use I0T was designed for).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Mapping

if TYPE_CHECKING:
    import torch

SPEC: dict[str, Any] = dict(
    name="centered",
    tasks=("image_retrieval", "text_retrieval", "zero_shot"),
    references=("image", "text"),
    fallbacks={"text": "prompts"},
    task_references={
        "image_retrieval": ("image",),
        "text_retrieval": ("text",),
        "zero_shot": ("image", "text"),
    },
    params={"standardize": False, "eps": 1e-8},
    features="projected",
    transforms=("query", "gallery"),
    description="per-modality mean removed (and per-dimension std divided, I0T-style), renormalised",
)

_SOURCES: dict[str, tuple[str, ...]] = {"image": ("image",), "text": ("text", "prompts")}


def fit(refs: Mapping[str, "torch.Tensor"], **params: Any) -> dict[str, "torch.Tensor"]:
    """``{"mean_<m>": [D]}`` and, with ``standardize``, ``{"std_<m>": [D]}`` for each modality present.

    Args:
        refs: any of ``"image"`` ``[N_i, D]``, ``"text"`` ``[N_t, D]`` / ``"prompts"`` ``[C*T, D]``.

    Raises:
        MissingReferenceError: no reference of either modality is given.
    """
    from crossgap.methods._shared import MissingReferenceError, check_params, l2n, reference

    p = check_params(SPEC, params)
    min_rows = 2 if p["standardize"] else 1
    stats: dict[str, torch.Tensor] = {}
    for modality, keys in _SOURCES.items():
        if not any(refs.get(k) is not None for k in keys):
            continue
        _, x = reference(refs, keys, SPEC["name"], min_rows=min_rows)
        x = l2n(x.double())
        stats[f"mean_{modality}"] = x.mean(0).float()
        if p["standardize"]:
            stats[f"std_{modality}"] = x.std(0).float()
    if not stats:
        raise MissingReferenceError(
            f"centered: fit needs the reference features 'image', 'text' or 'prompts'; got keys {sorted(refs)}"
        )
    return stats


def apply(
    features: "torch.Tensor", stats: Mapping[str, "torch.Tensor"], *, modality: str, role: str, **params: Any
) -> "torch.Tensor":
    """Centred (standardised), L2-normalised ``[N, D]`` features of ``modality`` (query or gallery)."""
    from crossgap.methods._shared import check_apply, check_params, check_width, l2n, statistic

    p = check_params(SPEC, params)
    x = l2n(check_apply(features, modality, role, SPEC["name"]))
    hint = f"fit had no {' / '.join(repr(k) for k in _SOURCES[modality])} reference"
    mean = statistic(stats, f"mean_{modality}", "centered", hint).to(x.dtype)
    check_width(x, mean.shape[0], f"{role} {modality} features", "centered")
    x = x - mean
    if p["standardize"]:
        std = statistic(stats, f"std_{modality}", "centered", "fitted without standardize").to(x.dtype)
        x = x / std.clamp_min(float(p["eps"]))
    return l2n(x)
