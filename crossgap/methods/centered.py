"""``centered``: subtract each modality's mean from query and gallery (optionally standardise), renormalise.

For features of modality ``m``: ``normalize(x̂ − μ_m)`` with ``x̂`` the L2-normalised feature and
``μ_m`` the mean of the **L2-normalised** references of that modality: the post-hoc centring of
I0T (An et al., 2024: the embedding standardisation towards a zero modality gap, whose released
post-hoc code subtracts the modality means).  ``standardize=True`` also divides by the
per-dimension standard deviation (unbiased, clamped at ``eps``) of the references: **crossgap's
own extension** — I0T's post-hoc code does not divide.  Applied to query and gallery alike, each
with its own modality's statistics.

References: ``"image"`` (the task's gallery/train images) and/or ``"text"`` (its captions) or,
when ``"text"`` is absent, ``"prompts"`` (class-prompt features); for zero-shot ``"classifier"``:
the class embeddings of the averaged prompt classifier, as I0T centres the averaged class
embeddings (not each prompt before averaging).  Statistics are fitted for the modalities present;
:func:`apply` names the reference a missing one needed.

Tasks: ``image_retrieval`` (image statistics only), ``text_retrieval`` (text only) and
``zero_shot`` (images centred by the image mean, class embeddings by their mean: the cross-modal
use I0T was designed for).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Mapping

if TYPE_CHECKING:
    import torch

_I0T = dict(source="An et al., I0T: Embedding Standardization Method Towards Zero Modality Gap (2024)",
            repository=None, file=None)

SPEC: dict[str, Any] = dict(
    name="centered",
    tasks=("image_retrieval", "text_retrieval", "zero_shot"),
    references={
        "image_retrieval": ("image",),
        "text_retrieval": ("text",),
        "zero_shot": ("image", "classifier"),
    },
    fallbacks={"text": "prompts"},
    params={"standardize": False, "eps": 1e-8},
    features="projected",
    transforms=("query", "gallery"),
    description="per-modality mean removed (I0T's post-hoc centring; optional division by the std: crossgap's "
                "extension), renormalised",
    recipe=dict(_I0T, variant="post-hoc mean subtraction per modality; zero-shot: the averaged class embeddings"),
)


def recipe(task: str, params: Mapping[str, Any]) -> dict[str, Any]:
    """I0T's post-hoc centring, or crossgap's standardising extension (``standardize: true``)."""
    what = "the averaged class embeddings and the images" if task == "zero_shot" else "each modality"
    if params.get("standardize"):
        return dict(_I0T, source=_I0T["source"] + "; crossgap's extension",
                    variant=f"mean subtracted and divided by the per-dimension std ({what}): not in I0T's code")
    return dict(_I0T, variant=f"post-hoc mean subtraction ({what})")


_SOURCES: dict[str, tuple[str, ...]] = {"image": ("image",), "text": ("text", "classifier", "prompts")}


def fit(refs: Mapping[str, "torch.Tensor"], **params: Any) -> dict[str, "torch.Tensor"]:
    """``{"mean_<m>": [D]}`` and, with ``standardize``, ``{"std_<m>": [D]}`` for each modality present.

    Args:
        refs: any of ``"image"`` ``[N_i, D]``, ``"text"`` ``[N_t, D]`` / ``"classifier"`` ``[C, D]`` /
            ``"prompts"`` ``[C*T, D]``.

    Raises:
        MissingReferenceError: no reference of either modality is given.
    """
    from crossgap.methods._shared import MissingReferenceError, check_params, l2n, reference

    p = check_params(SPEC, params)
    min_rows = 2 if p["standardize"] else 1
    stats: dict[str, torch.Tensor] = {}
    for modality, keys in _SOURCES.items():
        if not any(k in refs for k in keys):
            continue
        _, x = reference(refs, keys, SPEC["name"], min_rows=min_rows)
        x = l2n(x.double())
        stats[f"mean_{modality}"] = x.mean(0).float()
        if p["standardize"]:
            stats[f"std_{modality}"] = x.std(0).float()
    if not stats:
        raise MissingReferenceError(
            f"centered: fit needs the reference features 'image', 'text', 'classifier' or 'prompts'; got keys "
            f"{sorted(refs)}"
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
