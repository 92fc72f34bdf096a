"""``isoclip``: IsoCLIP's projector decomposition (Magistri et al., CVPR 2026; ``simomagi/IsoCLIP``).

With the projections ``P_v`` ``[W_v, D]`` (image) and ``P_t`` ``[W_t, D]`` (text) of the model,
features being ``pre @ P``, IsoCLIP's inter-modal operator is ``Ψ = P_v P_tᵀ`` ``[W_v, W_t]``
(``Psi = W_image.T @ W_text`` in ``src/retrieval.py:apply_iso``, whose ``W_image`` / ``W_text``
are the transposes ``[D, W]`` of crossgap's matrices: ``compute_retrieval`` transposes the
output of ``src/encode_no_projection.py:get_projection_layers``).  Its reduced SVD
``Ψ = U S Vᵀ`` (``torch.linalg.svd(full_matrices=False)``, ``r = min(W_v, W_t)`` singular
values, descending) is cut to the directions ``k_top ≤ i < r − k_bottom``; with
``U_k``, ``V_k`` those columns the IsoCLIP projectors are

* image: ``P_v^iso = U_k U_kᵀ P_v`` ``[W_v, D]``   (``W_image @ U_k @ U_k.T``, transposed)
* text:  ``P_t^iso = V_k V_kᵀ P_t`` ``[W_t, D]``   (``W_text @ V_k @ V_k.T``, transposed)

and a pre-projection feature ``p`` becomes ``normalize(p @ P^iso)`` — query **and** gallery
(``compute_retrieval`` applies the same projector to both; it refuses cross-modal retrieval).
``k_top + k_bottom >= r`` leaves nothing to keep (``apply_iso`` fails on it): the method is then
unavailable for that model (:class:`~crossgap.methods.MethodUnavailable`, shown in the table with
the reason).  IsoCLIP tunes ``k_top``/``k_bottom`` per model **and per task**; the defaults here
are its ViT-B/32 scripts' values (``exp_img-img_retrieval/clip_b32_img_retrieval.sh``: 150 / 50,
also its argparse default; ``exp_txt-txt_retrieval/clip_b32_txt_retrieval.sh``: 20 / 100), and
``evaluation.method_params.isoclip`` sets them per model and per task (``params/paper.yaml`` holds
the published values of the models IsoCLIP's scripts cover: OpenAI ViT-B/32 and ViT-L/14, OpenCLIP
ViT-B/32 ``datacomp_xl_s13b_b90k``).

Projections with a bias arrive augmented (``[W + 1, D]``, bias as the last row, and ``pre``
with a ones column: :mod:`crossgap.models.projection`), as IsoCLIP does for SigLIP-v2 images.

References: ``"proj_image"`` and ``"proj_text"`` (from
:func:`crossgap.models.projection.projection_matrices`) — no data at all.  ``apply`` takes
**pre-projection** features (``"image_pre"`` / ``"text_pre"``), not the projected ones.

Tasks: ``image_retrieval`` and ``text_retrieval``.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, Mapping

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

SPEC: dict[str, Any] = dict(
    name="isoclip",
    tasks=("image_retrieval", "text_retrieval"),
    references={
        "image_retrieval": ("proj_image", "proj_text"),
        "text_retrieval": ("proj_image", "proj_text"),
    },
    params={"k_top": 150, "k_bottom": 50},
    #: IsoCLIP's own per-task setting of ViT-B/32 (its text-retrieval script)
    task_params={"text_retrieval": {"k_top": 20, "k_bottom": 100}},
    #: ``apply`` takes pre-projection features ([N, W_v(+1)] / [N, W_t(+1)])
    features="pre",
    transforms=("query", "gallery"),
    description="pre-projection features through IsoCLIP's isotropic projectors (SVD of P_v P_t^T)",
    recipe=dict(source="Magistri et al., IsoCLIP (CVPR 2026)", repository="simomagi/IsoCLIP",
                file="src/retrieval.py", variant="apply_iso on query and gallery; k_top / k_bottom per model and task "
                                                 "(the result's params)"),
)


def fit(refs: Mapping[str, "torch.Tensor"], **params: Any) -> dict[str, "torch.Tensor"]:
    """IsoCLIP projectors from the projection matrices.

    Args:
        refs: ``"proj_image"`` ``[W_v, D]`` and ``"proj_text"`` ``[W_t, D]``.
        params: ``k_top`` / ``k_bottom``: singular directions of ``Ψ`` dropped at the top / bottom.

    Returns:
        ``"iso_image"`` ``[W_v, D]``, ``"iso_text"`` ``[W_t, D]`` and ``"singular_values"`` ``[r]``
        (float32; the SVD runs in float64).
    """
    import torch

    from crossgap.methods._shared import check_params, reference

    p = check_params(SPEC, params)
    k_top, k_bottom = int(p["k_top"]), int(p["k_bottom"])
    if k_top < 0 or k_bottom < 0:
        raise ValueError(f"isoclip: k_top and k_bottom must be >= 0, got {k_top}, {k_bottom}")
    _, p_v = reference(refs, ("proj_image",), SPEC["name"])
    _, p_t = reference(refs, ("proj_text",), SPEC["name"])
    if p_v.shape[1] != p_t.shape[1]:
        raise ValueError(
            f"isoclip: proj_image {tuple(p_v.shape)} and proj_text {tuple(p_t.shape)} must map to the same D"
        )
    p_v, p_t = p_v.double(), p_t.double()
    psi = p_v @ p_t.T  # [W_v, W_t]
    u, s, vh = torch.linalg.svd(psi, full_matrices=False)
    r = s.shape[0]
    if k_top + k_bottom >= r:
        from crossgap.methods import MethodUnavailable

        raise MethodUnavailable(
            f"isoclip: cannot remove k_top={k_top} and k_bottom={k_bottom} of the r={r} singular directions of "
            f"Psi = proj_image @ proj_text.T ({tuple(p_v.shape)} @ {tuple(p_t.shape)}.T); set k_top + k_bottom < {r} for this model "
            "(evaluation.method_params.isoclip.models.<model>)"
        )
    u_k = u[:, k_top : r - k_bottom]  # [W_v, k]
    v_k = vh.T[:, k_top : r - k_bottom]  # [W_t, k]
    log.info("isoclip: keeping singular directions %d:%d of %d", k_top, r - k_bottom, r)
    return {
        "iso_image": (u_k @ (u_k.T @ p_v)).float(),
        "iso_text": (v_k @ (v_k.T @ p_t)).float(),
        "singular_values": s.float(),
    }


def apply(
    features: "torch.Tensor", stats: Mapping[str, "torch.Tensor"], *, modality: str, role: str, **params: Any
) -> "torch.Tensor":
    """``normalize(pre @ P^iso_modality)`` ``[N, D]`` of pre-projection features ``[N, W]`` (query or gallery).

    Raises:
        ValueError: ``features`` do not have the projector's input width (e.g. projected
            features were passed instead of pre-projection ones).
    """
    from crossgap.methods._shared import check_apply, check_params, l2n, statistic

    check_params(SPEC, params)
    x = check_apply(features, modality, role, SPEC["name"])
    iso = statistic(stats, f"iso_{modality}", "isoclip").to(x.dtype)
    if x.shape[1] != iso.shape[0]:
        raise ValueError(
            f"isoclip: {role} {modality} features have width {x.shape[1]}, the projector expects pre-projection "
            f"features of width {iso.shape[0]} ('{modality}_pre', with a ones column when the projection has a bias)"
        )
    return l2n(x @ iso)
