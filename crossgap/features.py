"""Feature extraction from manifests: images, texts and zero-shot class prompts.

Every function returns L2-*unnormalised* fp32 features on the CPU, row ``i`` for input ``i``;
normalisation happens where similarities are computed.  Loops show a tqdm progress bar.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Sequence

import torch
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from crossgap.datasets.images import DEFAULT_TRUNCATED_IMAGES, open_rgb, truncated_policy
from crossgap.utils import autocast_context

if TYPE_CHECKING:
    from crossgap.models.base import CLIPWrapper

log = logging.getLogger(__name__)

Box = tuple[float, float, float, float]
"""A crop box ``(x1, y1, x2, y2)`` in pixels."""


class _ImageFiles(Dataset):
    """Preprocessed images ``[3, H, W]`` read from ``paths`` (PIL, converted to RGB).

    ``load_truncated``: decode images that PIL reads only with ``LOAD_TRUNCATED_IMAGES`` (a manifest
    prepared with ``truncated_images: load``); otherwise such an image raises ``OSError``.
    """

    def __init__(self, paths: Sequence[str | Path], preprocess: Callable, boxes: Sequence[Box | None] | None = None,
                 load_truncated: bool = False) -> None:
        self.paths = list(paths)
        self.preprocess = preprocess
        self.boxes = list(boxes) if boxes is not None else [None] * len(self.paths)
        self.load_truncated = load_truncated

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> torch.Tensor:
        img = open_rgb(self.paths[index], load_truncated=self.load_truncated)
        box = self.boxes[index]
        return self.preprocess(img.crop(box) if box is not None else img)


@torch.no_grad()
def encode_images(
    model: "CLIPWrapper",
    preprocess: Callable,
    paths: Sequence[str | Path],
    *,
    batch_size: int = 128,
    num_workers: int = 0,
    progress: bool = True,
    boxes: Sequence[Box | None] | None = None,
    truncated_images: str = DEFAULT_TRUNCATED_IMAGES,
) -> torch.Tensor:
    """Image features ``[N, D]`` of the image files at ``paths``, each cropped to ``boxes[i]`` when given.

    ``truncated_images``: the manifest's mode (:func:`crossgap.datasets.images.manifest_truncated_mode`);
    ``load`` decodes truncated images as the reference does, any other mode refuses them.
    """
    load_truncated = truncated_policy(truncated_images).keep
    loader = DataLoader(_ImageFiles(paths, preprocess, boxes, load_truncated), batch_size=batch_size,
                        num_workers=num_workers)
    out = []
    for batch in tqdm(loader, desc="image features", disable=not progress, dynamic_ncols=True):
        with autocast_context(model.device):
            out.append(model.encode_image(batch.to(model.device)).float().cpu())
    return torch.cat(out) if out else torch.empty(0, 0)


@torch.no_grad()
def encode_texts(
    model: "CLIPWrapper", texts: Sequence[str], *, batch_size: int = 256, progress: bool = True
) -> torch.Tensor:
    """Text features ``[N, D]`` of ``texts`` (tokenised with the model's tokenizer, truncated to its context)."""
    out = []
    starts = range(0, len(texts), batch_size)
    for start in tqdm(starts, desc="text features", disable=not progress, dynamic_ncols=True):
        ids = model.tokenizer(list(texts[start : start + batch_size])).to(model.device)
        with autocast_context(model.device):
            out.append(model.encode_text(ids).float().cpu())
    return torch.cat(out) if out else torch.empty(0, 0)


def class_prompts(classnames: Sequence[str], templates: Sequence[str]) -> list[str]:
    """Prompts in class-major order: row ``c * T + t`` is ``templates[t].format(classnames[c])``."""
    return [template.format(name) for name in classnames for template in templates]
