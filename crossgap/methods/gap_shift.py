"""``gap_shift``: move features along the modality gap (Liang et al., NeurIPS 2022, "Mind the Gap").

Liang et al. define the modality gap as the difference of the centres of the L2-normalised image
and text embeddings, ``Δ = μ_image − μ_text``.  Two forms (parameter ``form``):

* ``liang`` — Liang et al.'s ``move_features`` (``Weixin-Liang/Modality-Gap``,
  ``Table_1_Implications_CLIP_Zero_Shot/training/train_clip.py`` and ``shifting/shift_features.ipynb``):
  with the unit gap ``ĝ = Δ / ‖Δ‖`` and a distance ``δ``, **both** modalities move by half of it,

      image' = normalize(x̂ − δ/2 · ĝ),    text' = normalize(t̂ + δ/2 · ĝ).

  Liang et al. sweep ``δ`` over ``arange(-5, 5, 0.25)`` and report the curve; a protocol cannot
  pick the best point on the test labels, so crossgap takes ``δ = scale · ‖Δ‖`` (``scale = 1``:
  the two centres meet, the gap is closed to first order).  The default for ``zero_shot``: images
  (the queries) and the class embeddings of the averaged prompt classifier (the gallery), which are
  Liang's ``text_features``.
* ``query`` — crossgap's own transfer of the shift to intra-modal retrieval: only the query is moved,
  by the whole gap, to the other modality's side and compared with the native gallery (the
  training-free analogue of OTI: image query → text side; of OVI: text query → image side):

      image query: normalize(q̂ − scale · Δ),    text query: normalize(q̂ + scale · Δ),

  galleries only L2-normalised.  The default for ``image_retrieval`` and ``text_retrieval``
  (where Liang et al. have no recipe); on ``zero_shot`` it was crossgap's earlier form.

``q̂``, ``x̂``, ``t̂`` are L2-normalised and the ``μ`` are means of the **L2-normalised** reference
features (crossgap's feature files hold unnormalised encoder outputs).  Fitted on reference
features only: ``"image"`` (the task's gallery/train images; Liang et al. use the evaluated images
themselves) and ``"text"`` (the captions) or, without captions, ``"prompts"``; for zero-shot
``"classifier"`` (the class embeddings).  Never on the queries' labels.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Mapping

if TYPE_CHECKING:
    import torch

FORMS = ("liang", "query")
_LIANG = dict(source="Liang et al., Mind the Gap (NeurIPS 2022)", repository="Weixin-Liang/Modality-Gap",
              file="Table_1_Implications_CLIP_Zero_Shot/training/train_clip.py")

SPEC: dict[str, Any] = dict(
    name="gap_shift",
    tasks=("image_retrieval", "text_retrieval", "zero_shot"),
    references={
        "image_retrieval": ("image", "text"),
        "text_retrieval": ("image", "text"),
        "zero_shot": ("image", "classifier"),
    },
    #: a reference used when the first is absent
    fallbacks={"text": "prompts"},
    params={"form": "query", "scale": 1.0},
    task_params={"zero_shot": {"form": "liang"}},
    #: which features ``apply`` takes: the projected (shared-space) ones
    features="projected",
    #: the roles ``apply`` may change (the ``query`` form changes only queries)
    transforms=("query", "gallery"),
    description="features moved along the modality gap: zero-shot both halves (Liang et al.), retrieval the query "
                "across the whole gap (crossgap)",
    recipe=dict(_LIANG, variant="move_features, delta = scale x the gap distance"),
)


def recipe(task: str, params: Mapping[str, Any]) -> dict[str, Any]:
    """The recipe of a run: Liang's ``move_features`` (``form: liang``) or crossgap's query shift."""
    scale = float(params.get("scale", 1.0))
    if params.get("form") == "liang":
        return dict(_LIANG, variant=f"move_features: both modalities move by half of delta = {scale:g} x the gap "
                                    "distance along the unit gap (Liang et al. sweep delta instead)")
    return dict(source="crossgap, after Liang et al. (NeurIPS 2022)", repository=None, file=None,
                variant=f"the query alone moved across {scale:g} x the gap (mu_image - mu_text), native gallery")


def fit(refs: Mapping[str, "torch.Tensor"], **params: Any) -> dict[str, "torch.Tensor"]:
    """Modality means ``{"mu_image": [D], "mu_text": [D]}`` (float32) of the normalised references.

    Args:
        refs: ``"image"`` ``[N_i, D]`` and one text side: ``"text"`` ``[N_t, D]``, ``"classifier"``
            ``[C, D]`` or ``"prompts"`` ``[C*T, D]``; unnormalised features are fine.
        params: :data:`SPEC` ``params`` (used by :func:`apply`; checked here).
    """
    from crossgap.methods._shared import check_params, l2n, reference

    p = check_params(SPEC, params)
    if p["form"] not in FORMS:
        raise ValueError(f"gap_shift: form must be one of {FORMS}, got {p['form']!r}")
    _, image = reference(refs, ("image",), SPEC["name"])
    _, text = reference(refs, ("text", "classifier", "prompts"), SPEC["name"])
    if image.shape[1] != text.shape[1]:
        raise ValueError(f"gap_shift: image references have width {image.shape[1]}, text {text.shape[1]}")
    return {
        "mu_image": l2n(image.double()).mean(0).float(),
        "mu_text": l2n(text.double()).mean(0).float(),
    }


def apply(
    features: "torch.Tensor", stats: Mapping[str, "torch.Tensor"], *, modality: str, role: str, **params: Any
) -> "torch.Tensor":
    """Shifted, L2-normalised features ``[N, D]`` (module docstring: ``liang`` moves every feature by half,
    ``query`` moves queries by the whole gap and only normalises galleries).

    Args:
        features: ``[N, D]`` projected features of ``modality``.
        stats: the output of :func:`fit`.
        modality: "image" or "text"; role: "query" or "gallery".
    """
    from crossgap.methods._shared import check_apply, check_params, check_width, l2n, statistic

    p = check_params(SPEC, params)
    x = l2n(check_apply(features, modality, role, SPEC["name"]))
    gap = statistic(stats, "mu_image", "gap_shift") - statistic(stats, "mu_text", "gap_shift")
    check_width(x, gap.shape[0], f"{role} {modality} features", "gap_shift")
    gap = gap.to(x.dtype)
    sign = -1.0 if modality == "image" else 1.0  # images move towards the text side, texts towards the images
    if p["form"] == "liang":
        delta = float(p["scale"]) * gap.norm()
        return l2n(x + sign * 0.5 * delta * l2n(gap[None])[0])
    if role == "gallery":
        return x
    return l2n(x + sign * float(p["scale"]) * gap)
