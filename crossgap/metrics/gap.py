"""The modality gap between matched image and text features (Liang et al., 2022; "Cross the Gap").

For L2-normalised image features ``x_i`` and text features ``t_i`` of N matched pairs:

* ``gap_distance``: ``‖mean_i x_i − mean_i t_i‖`` (distance between the modality centroids);
* ``matched_cosine``: ``mean_i x_i·t_i``;
* ``image_image_cosine`` / ``text_text_cosine``: mean cosine over the ``N(N−1)`` ordered pairs of
  distinct samples of one modality, ``(‖Σx‖² − N) / (N(N−1))`` for unit vectors;
* ``cross_cosine_unmatched``: ``mean_{i≠j} x_i·t_j = ((Σx)·(Σt) − Σ_i x_i·t_i) / (N(N−1))``.

Only sums are accumulated, chunk by chunk in float64, so memory is ``O(chunk · D)`` whatever N is:
no N×N matrix and no normalised copy of the inputs.
"""

from __future__ import annotations

import logging

import torch

log = logging.getLogger(__name__)

GAP_KEYS = ("gap_distance", "matched_cosine", "image_image_cosine", "text_text_cosine", "cross_cosine_unmatched")


def _normalised(rows: torch.Tensor, name: str) -> torch.Tensor:
    rows = rows.to(torch.float64)
    norms = rows.norm(dim=1, keepdim=True)
    if not bool(torch.isfinite(rows).all()) or bool((norms == 0).any()):
        raise ValueError(f"{name} features must be finite and non-zero to be normalised")
    return rows / norms


def modality_gap(
    image_features: torch.Tensor, text_features: torch.Tensor, *, chunk_size: int = 65536
) -> dict[str, float]:
    """Modality-gap statistics of N matched pairs (row i of each input belongs together).

    Args:
        image_features: ``[N, D]`` (any scale: rows are L2-normalised here); tensor or array-like.
        text_features: ``[N, D]``.
        chunk_size: rows processed at once.

    Returns:
        ``{"gap_distance", "matched_cosine", "image_image_cosine", "text_text_cosine",
        "cross_cosine_unmatched", "num_pairs"}`` as Python floats (``num_pairs`` an int).
    """
    image = torch.as_tensor(image_features)
    text = torch.as_tensor(text_features)
    if image.dim() != 2 or image.shape != text.shape:
        raise ValueError(
            f"expected matched [N, D] image and text features, got {tuple(image.shape)} and {tuple(text.shape)}"
        )
    num, dim = image.shape
    if num < 2:
        raise ValueError(f"the modality gap needs at least 2 pairs, got {num}")
    image_sum = torch.zeros(dim, dtype=torch.float64)
    text_sum = torch.zeros(dim, dtype=torch.float64)
    matched = torch.zeros((), dtype=torch.float64)
    for start in range(0, num, chunk_size):
        x = _normalised(image[start : start + chunk_size].detach().cpu(), "image")
        t = _normalised(text[start : start + chunk_size].detach().cpu(), "text")
        image_sum += x.sum(dim=0)
        text_sum += t.sum(dim=0)
        matched += (x * t).sum()
    pairs = num * (num - 1)
    stats = {
        "gap_distance": float(((image_sum - text_sum) / num).norm()),
        "matched_cosine": float(matched / num),
        "image_image_cosine": float((image_sum.dot(image_sum) - num) / pairs),
        "text_text_cosine": float((text_sum.dot(text_sum) - num) / pairs),
        "cross_cosine_unmatched": float((image_sum.dot(text_sum) - matched) / pairs),
        "num_pairs": num,
    }
    log.debug("modality gap over %d pairs: %s", num, stats)
    return stats
