"""Feature extraction from manifests: images, texts and zero-shot class prompts.

Every function returns L2-*unnormalised* fp32 features on the CPU, row ``i`` for input ``i``;
normalisation happens where similarities are computed.  Loops show a tqdm progress bar.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterator, Sequence

import torch
from torch.utils.data import DataLoader, Dataset, IterableDataset, get_worker_info
from tqdm.auto import tqdm

from crossgap.datasets.images import DEFAULT_TRUNCATED_IMAGES, open_rgb, truncated_policy
from crossgap.config import schema_default
from crossgap.datasets.tarshards import NamedBytes, iter_members, parse_member_ref
from crossgap.utils import autocast_context

if TYPE_CHECKING:
    from crossgap.models.base import CLIPWrapper

log = logging.getLogger(__name__)

Box = tuple[float, float, float, float]
"""A crop box ``(x1, y1, x2, y2)`` in pixels."""


class _ImageFiles(Dataset):
    """``(position, preprocessed image [3, H, W])`` for each image file of ``paths`` (PIL, converted to RGB).

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

    def __getitem__(self, index: int) -> tuple[int, torch.Tensor]:
        img = open_rgb(self.paths[index], load_truncated=self.load_truncated)
        box = self.boxes[index]
        return index, self.preprocess(img.crop(box) if box is not None else img)


class _TarMembers(IterableDataset):
    """``(position, preprocessed image)`` for members of tar shards (paths ``"<shard>.tar#<member>"``).

    Each shard is read once, front to back, without unpacking (:func:`crossgap.datasets.tarshards.iter_members`);
    with DataLoader workers, worker ``w`` of ``W`` reads shards ``w, w + W, ...`` (the order of first
    appearance in ``paths``). Positions come with the images, so the caller restores the input order.
    """

    def __init__(self, refs: Sequence[tuple[Path, str]], preprocess: Callable,
                 boxes: Sequence[Box | None] | None = None, load_truncated: bool = False) -> None:
        self.shards: dict[Path, dict[str, list[int]]] = {}
        for i, (tar, member) in enumerate(refs):
            self.shards.setdefault(tar, {}).setdefault(member, []).append(i)
        self.preprocess = preprocess
        self.boxes = list(boxes) if boxes is not None else [None] * len(refs)
        self.load_truncated = load_truncated

    def __iter__(self) -> Iterator[tuple[int, torch.Tensor]]:
        info = get_worker_info()
        shards = list(self.shards.items())[info.id :: info.num_workers] if info else self.shards.items()
        for tar, wanted in shards:
            found = set()
            for name, data in iter_members(tar, lambda name: name in wanted):
                if name not in wanted:
                    continue
                found.add(name)
                img = open_rgb(NamedBytes(data or b"", f"{tar}#{name}"), load_truncated=self.load_truncated)
                for i in wanted[name]:
                    box = self.boxes[i]
                    yield i, self.preprocess(img.crop(box) if box is not None else img)
            missing = sorted(set(wanted) - found)
            if missing:
                raise FileNotFoundError(f"{tar}: no member(s) {missing[:5]} ({len(missing)} missing) in this shard")


def image_dataset(paths: Sequence[str | Path], preprocess: Callable, boxes: Sequence[Box | None] | None = None,
                  load_truncated: bool = False) -> Dataset:
    """The reader of ``paths``: image files, or members of tar shards when every path is ``"<x>.tar#<member>"``.

    Either dataset yields ``(position in paths, preprocessed image)``.
    """
    refs = [parse_member_ref(p) for p in paths]
    tar_refs = [r for r in refs if r is not None]
    if not tar_refs:
        return _ImageFiles(paths, preprocess, boxes, load_truncated)
    if len(tar_refs) < len(refs):
        raise ValueError("image paths mix files and tar members (<shard>.tar#<member>); expected one kind")
    return _TarMembers(tar_refs, preprocess, boxes, load_truncated)


@torch.no_grad()
def encode_images(
    model: "CLIPWrapper",
    preprocess: Callable,
    paths: Sequence[str | Path],
    *,
    batch_size: int = schema_default("features.batch_size"),
    num_workers: int = schema_default("features.num_workers"),
    progress: bool = True,
    boxes: Sequence[Box | None] | None = None,
    truncated_images: str = DEFAULT_TRUNCATED_IMAGES,
    with_preprojection: bool = False,
    precision: str = schema_default("features.precision"),
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Image features ``[N, D]`` of the images at ``paths``, each cropped to ``boxes[i]`` when given.

    ``with_preprojection``: also return the projection's inputs ``[N, W]`` from the same forward
    pass (:func:`crossgap.models.projection.encode_with_preprojection`, for IsoCLIP).

    A path is an image file or a member of a tar shard (``"<shard>.tar#<member>"``, see
    :func:`image_dataset`). ``truncated_images``: the manifest's mode
    (:func:`crossgap.datasets.images.manifest_truncated_mode`); ``load`` decodes truncated images as
    the reference does, any other mode refuses them. ``precision``: ``fp32`` (the reference's
    choice), ``fp16`` or ``bf16`` autocast on CUDA; the CPU computes fp32 always.
    """
    load_truncated = truncated_policy(truncated_images).keep
    dataset = image_dataset(paths, preprocess, boxes, load_truncated)
    loader = DataLoader(dataset, batch_size=batch_size, num_workers=num_workers)
    out: torch.Tensor | None = None
    pre_out: torch.Tensor | None = None
    done = torch.zeros(len(paths), dtype=torch.bool)
    with tqdm(total=len(paths), desc="image features", unit="img", disable=not progress, dynamic_ncols=True) as bar:
        for index, batch in loader:
            with autocast_context(model.device, precision):
                feats, pre = _encode(model, batch.to(model.device), "image", with_preprojection)
            out = torch.empty(len(paths), feats.shape[1]) if out is None else out
            out[index], done[index] = feats, True
            if pre is not None:
                pre_out = torch.empty(len(paths), pre.shape[1]) if pre_out is None else pre_out
                pre_out[index] = pre
            bar.update(len(index))
    if out is None:
        return (torch.empty(0, 0), torch.empty(0, 0)) if with_preprojection else torch.empty(0, 0)
    if not bool(done.all()):
        raise RuntimeError(f"image features: {int((~done).sum())} of {len(paths)} images were never read")
    return (out, pre_out) if with_preprojection else out


def _encode(model: "CLIPWrapper", batch: torch.Tensor, modality: str, with_preprojection: bool
            ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``(features [B, D], pre-projection [B, W] or None)`` of one batch, fp32 on the CPU."""
    if with_preprojection:
        from crossgap.models.projection import encode_with_preprojection

        feats, pre = encode_with_preprojection(model, batch, modality)
        return feats.float().cpu(), pre.float().cpu()
    encode = model.encode_image if modality == "image" else model.encode_text
    return encode(batch).float().cpu(), None


@torch.no_grad()
def encode_texts(
    model: "CLIPWrapper", texts: Sequence[str], *, batch_size: int = schema_default("features.batch_size"),
    progress: bool = True, with_preprojection: bool = False, precision: str = schema_default("features.precision"),
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Text features ``[N, D]`` of ``texts`` (tokenised with the model's tokenizer, truncated to its context).

    ``with_preprojection``: also return the projection's inputs ``[N, W]`` (see :func:`encode_images`).
    ``precision``: as for :func:`encode_images` (fp32 by default; the CPU is fp32 always).
    """
    out, pre_out = [], []
    starts = range(0, len(texts), batch_size)
    for start in tqdm(starts, desc="text features", disable=not progress, dynamic_ncols=True):
        ids = model.tokenizer(list(texts[start : start + batch_size])).to(model.device)
        with autocast_context(model.device, precision):
            feats, pre = _encode(model, ids, "text", with_preprojection)
        out.append(feats)
        if pre is not None:
            pre_out.append(pre)
    feats = torch.cat(out) if out else torch.empty(0, 0)
    if with_preprojection:
        return feats, torch.cat(pre_out) if pre_out else torch.empty(0, 0)
    return feats


def class_prompts(classnames: Sequence[str], templates: Sequence[str]) -> list[str]:
    """Prompts in class-major order: row ``c * T + t`` is ``templates[t].format(classnames[c])``."""
    return [template.format(name) for name in classnames for template in templates]
