"""Zero-shot classification with class-prompt classifiers (CLIP recipe).

The three modes of the paper differ only in which feature sets are passed in — one pair of
functions serves all of them:

===============  ==================================  ====================================
mode             ``features`` ``[N, D]``             ``prompt_features`` → classifier
===============  ==================================  ====================================
``standard``     native image features               native text features of the prompts
``oti``          OTI-inverted image features (text)  native text features of the prompts
``ovi``          native image features               OVI-inverted prompt features (image)
===============  ==================================  ====================================

Prompts are ``template.format(classname)`` for each class and template of the dataset.
:func:`build_classifier` normalises every prompt feature, averages over the templates and
renormalises, giving one ``[D]`` row per class.  :func:`evaluate_zero_shot` normalises the
features (and the classifier rows) and predicts by cosine similarity.

Metrics, ×100: ``top1``, ``top5`` (top-``min(5, C)``), ``mean_per_class_recall`` (recall
of each class present in ``labels``, averaged over those classes).  Ties between class
scores are broken by class index ascending (as ``argmax``): a sample is correct at ``k`` iff
``#{c: s_c > s_y} + #{c < y: s_c = s_y} < k`` for its true class ``y``.
"""

from __future__ import annotations

import logging

import torch
import torch.nn.functional as F

from crossgap.metrics.relevance import ArrayLike, as_tensor
from crossgap.utils import resolve_device

log = logging.getLogger(__name__)


@torch.no_grad()
def build_classifier(
    prompt_features: ArrayLike, num_classes: int | None = None, *, template_major: bool = False
) -> torch.Tensor:
    """Zero-shot classifier ``[C, D]`` from prompt features.

    Args:
        prompt_features: ``[C, T, D]``, or ``[C*T, D]`` with ``num_classes`` given.  The flat
            layout is class-major (row ``c*T + t`` is template ``t`` of class ``c``), or
            template-major (row ``t*C + c``) with ``template_major=True``.
        num_classes: ``C``; required for the flat layout (use ``C`` rows for one template).

    Returns:
        ``[C, D]`` float32: per prompt L2-normalised, mean over templates, L2-renormalised.
    """
    x = (
        prompt_features
        if isinstance(prompt_features, torch.Tensor)
        else as_tensor(prompt_features, torch.device("cpu"))
    )
    x = x.float()
    if x.ndim == 2:
        if num_classes is None:
            raise ValueError("flat prompt features [C*T, D] need num_classes")
        if num_classes < 1 or x.shape[0] % num_classes:
            raise ValueError(f"{x.shape[0]} prompt rows are not a multiple of num_classes={num_classes}")
        n_templates = x.shape[0] // num_classes
        if template_major:
            x = x.reshape(n_templates, num_classes, -1).transpose(0, 1)
        else:
            x = x.reshape(num_classes, n_templates, -1)
    elif x.ndim != 3:
        raise ValueError(f"prompt features must be [C, T, D] or [C*T, D], got {tuple(x.shape)}")
    elif num_classes is not None and x.shape[0] != num_classes:
        raise ValueError(f"prompt features have {x.shape[0]} classes, num_classes={num_classes}")
    if not torch.isfinite(x).all():
        raise ValueError("prompt features contain NaN or inf")
    return F.normalize(F.normalize(x, dim=-1).mean(dim=1), dim=-1)


def true_class_rank(scores: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """0-based rank ``[N]`` of each true class in its score row ``[N, C]`` (ties: lower index first)."""
    true = scores.gather(1, labels[:, None])  # [N, 1]
    cls = torch.arange(scores.shape[1], device=scores.device)
    ahead = (scores > true) | ((scores == true) & (cls[None, :] < labels[:, None]))
    return ahead.sum(dim=1)


@torch.no_grad()
def evaluate_zero_shot(
    features: ArrayLike,
    classifier: ArrayLike,
    labels: ArrayLike,
    *,
    chunk_size: int = 8192,
    device: str | torch.device | None = None,
) -> dict[str, float | int]:
    """Zero-shot accuracy of ``features [N, D]`` with ``classifier [C, D]`` and ``labels [N]``.

    Both feature sets are L2-normalised here; scores are cosine similarities.  Works for all
    three modes (module docstring).

    Returns:
        ``top1``, ``top5``, ``mean_per_class_recall`` (floats ×100) and ints ``num_samples``,
        ``num_classes`` (C), ``num_classes_evaluated`` (classes present in ``labels``),
        ``top1_correct``, ``top5_correct``.
    """
    ranks, y, c = zero_shot_ranks(features, classifier, labels, chunk_size=chunk_size, device=device)
    return summarize_zero_shot(ranks, y, c)


@torch.no_grad()
def zero_shot_ranks(
    features: ArrayLike,
    classifier: ArrayLike,
    labels: ArrayLike,
    *,
    chunk_size: int = 8192,
    device: str | torch.device | None = None,
) -> tuple[torch.Tensor, torch.Tensor, int]:
    """``(ranks [N], labels [N], C)``: the 0-based rank of each sample's true class (:func:`true_class_rank`).

    Arguments and checks as :func:`evaluate_zero_shot`; sample ``i`` is top-``k`` correct iff
    ``ranks[i] < k``.
    """
    dev = resolve_device(device)
    x = as_tensor(features, dev)
    w = as_tensor(classifier, dev)
    y = as_tensor(labels, dev).reshape(-1)
    if x.ndim != 2 or w.ndim != 2 or x.shape[1] != w.shape[1]:
        raise ValueError(f"features [N, D] and classifier [C, D] expected; got {tuple(x.shape)}, {tuple(w.shape)}")
    if y.is_floating_point() or y.numel() != x.shape[0]:
        raise ValueError(f"labels must be {x.shape[0]} integers")
    n, c = x.shape[0], w.shape[0]
    y = y.long()
    if n and (int(y.min()) < 0 or int(y.max()) >= c):
        raise ValueError(f"labels outside [0, {c})")
    if not (torch.isfinite(x).all() and torch.isfinite(w).all()):
        raise ValueError("features or classifier contain NaN or inf")
    dtype = torch.float64 if (x.dtype == torch.float64 and w.dtype == torch.float64) else torch.float32
    x, w = F.normalize(x.to(dtype), dim=1), F.normalize(w.to(dtype), dim=1)
    ranks = torch.empty(0, dtype=torch.long, device=dev)
    if n:
        ranks = torch.cat(
            [true_class_rank(x[s : s + chunk_size] @ w.T, y[s : s + chunk_size]) for s in range(0, n, chunk_size)]
        )
    return ranks, y, c


def summarize_zero_shot(ranks: torch.Tensor, y: torch.Tensor, c: int) -> dict[str, float | int]:
    """:func:`evaluate_zero_shot`'s metrics from :func:`zero_shot_ranks` output."""
    n = int(ranks.numel())
    k5 = min(5, c)
    top1 = ranks == 0
    top5 = ranks < k5
    per_class_total = torch.bincount(y, minlength=c)
    per_class_correct = torch.bincount(y[top1], minlength=c)
    present = per_class_total > 0
    recall = per_class_correct[present].double() / per_class_total[present].double()
    nan = float("nan")
    return {
        "top1": float(top1.double().mean() * 100) if n else nan,
        "top5": float(top5.double().mean() * 100) if n else nan,
        "mean_per_class_recall": float(recall.mean() * 100) if n else nan,
        "num_samples": n,
        "num_classes": c,
        "num_classes_evaluated": int(present.sum()),
        "top1_correct": int(top1.sum()),
        "top5_correct": int(top5.sum()),
    }
