"""ImageNet distribution-shift test sets (zero-shot classification only), laid out as CoOp's DATASETS.md says.

* ``imagenet_v2``: ``imagenetv2/imagenetv2-matched-frequency-format-val/<label 0..999>/`` (1,000 classes, 10,000 images)
* ``imagenet_sketch``: ``imagenet-sketch/images/<wnid>/`` (1,000 classes, 50,889 images)
* ``imagenet_a``: ``imagenet-adversarial/imagenet-a/<wnid>/`` (200 classes, 7,500 images)
* ``imagenet_r``: ``imagenet-rendition/imagenet-r/<wnid>/`` (200 classes, 30,000 images)

Class names come from ImageNet's ``classnames.txt`` (lines ``<wnid> <class name>``), copied
into the dataset folder as DATASETS.md asks, or else read from ``<dataroot>/imagenet/``.
ImageNet-A and -R cover 200 classes: their labels index the wnids present, in
``classnames.txt`` order, and the metadata keeps ``wnids`` and ``imagenet_labels`` (each
class's index among the 1,000) to map back. Every image is in split ``test``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from crossgap.datasets.base import DatasetAdapter
from crossgap.datasets.errors import DatasetLayoutError, DatasetNotFoundError
from crossgap.datasets.files import visible_entries
from crossgap.datasets.imagenet import read_wnid_classnames
from crossgap.datasets.protocols import ZERO_SHOT_ONLY
from crossgap.datasets.registry import register
from crossgap.datasets.rows import Row, image_row

log = logging.getLogger(__name__)

CLASSNAMES = "classnames.txt"


@dataclass(frozen=True)
class VariantSpec:
    """One ImageNet variant: where its images are and how class folders are named."""

    slug: str
    folder: str
    images_dir: str
    folder_names: str  # "label" (0..999) or "wnid"
    num_classes: int
    size: int


VARIANTS: tuple[VariantSpec, ...] = (
    VariantSpec("imagenet_v2", "imagenetv2", "imagenetv2-matched-frequency-format-val", "label", 1000, 10000),
    VariantSpec("imagenet_sketch", "imagenet-sketch", "images", "wnid", 1000, 50889),
    VariantSpec("imagenet_a", "imagenet-adversarial", "imagenet-a", "wnid", 200, 7500),
    VariantSpec("imagenet_r", "imagenet-rendition", "imagenet-r", "wnid", 200, 30000),
)


def _visible_dirs(folder: Path) -> list[str]:
    entries = visible_entries(folder)
    for e in entries:
        if not e.is_dir():
            log.debug("ignoring %s (not a class folder)", e.path)
    return [e.name for e in entries if e.is_dir()]


class ImageNetVariantAdapter(DatasetAdapter):
    """One ImageNet variant (see :data:`VARIANTS`)."""

    templates = ("a photo of a {}.",)
    protocol = ZERO_SHOT_ONLY

    def __init__(self, spec: VariantSpec) -> None:
        self.spec = spec
        self.slug, self.folder, self.images_dir = spec.slug, spec.folder, spec.images_dir
        self.num_classes = spec.num_classes
        self.expected_sizes = {"test": spec.size}
        self.required = (spec.images_dir,)
        sub = "<label 0..999>" if spec.folder_names == "label" else "<wnid>"
        self.layout = (
            f"<dataroot>/{spec.folder}/\n"
            f"|-- {spec.images_dir}/{sub}/<image>   # {spec.num_classes} class folders\n"
            f"|-- {CLASSNAMES}   # ImageNet's '<wnid> <class name>' list (or <dataroot>/imagenet/{CLASSNAMES})"
        )

    def classnames_file(self, folder: Path) -> Path:
        """``<folder>/classnames.txt``, else ``<dataroot>/imagenet/classnames.txt``."""
        for path in (folder / CLASSNAMES, folder.parent / "imagenet" / CLASSNAMES):
            if path.is_file():
                return path
        raise DatasetNotFoundError(
            f"{self.slug}: no {CLASSNAMES}; looked for: {folder / CLASSNAMES}, "
            f"{folder.parent / 'imagenet' / CLASSNAMES}\nExpected layout:\n{self.layout}"
        )

    def _classes(self, folder: Path) -> list[tuple[str, str]]:
        """``(folder name, class name)`` per label."""
        path = self.classnames_file(folder)
        names = read_wnid_classnames(path)
        present = _visible_dirs(self.image_root(folder))
        if self.spec.folder_names == "label":
            wnids = list(names)
            bad = [d for d in present if not d.isdigit() or int(d) >= len(wnids)]
            if bad:
                raise DatasetLayoutError(
                    f"{self.image_root(folder)}: class folders must be labels 0..{len(wnids) - 1}, found {bad[:10]}"
                )
            return [(str(i), names[w]) for i, w in enumerate(wnids)]
        unknown = [d for d in present if d not in names]
        if unknown:
            raise DatasetLayoutError(
                f"{self.image_root(folder)}: class folder(s) {unknown[:10]} are not listed in {path}"
            )
        if self.num_classes == len(names):
            return list(names.items())
        keep = set(present)
        return [(w, n) for w, n in names.items() if w in keep]

    def classnames(self, folder: Path) -> list[str]:
        """ImageNet class names (A and R: only the classes present)."""
        return [name for _, name in self._classes(folder)]

    def rows(self, folder: Path, classnames: list[str]) -> list[Row]:
        """Image rows by label, files sorted by name; hidden files ignored."""
        root = self.image_root(folder)
        rows = []
        for label, (sub, name) in enumerate(self._classes(folder)):
            if not (root / sub).is_dir():
                log.warning("%s: class folder %s is missing", self.slug, root / sub)
                continue
            files = [e.name for e in visible_entries(root / sub) if e.is_file()]
            rows += [image_row("test", f"{sub}/{f}", label, name) for f in files]
        return rows

    def extra_meta(self, folder: Path, df: pd.DataFrame) -> dict[str, Any]:
        """``wnids`` of the labels and their ``imagenet_labels`` (indices into the 1,000 classes)."""
        all_wnids = list(read_wnid_classnames(self.classnames_file(folder)))
        if self.spec.folder_names == "label":
            wnids = all_wnids
        else:
            wnids = [w for w, _ in self._classes(folder)]
        index = {w: i for i, w in enumerate(all_wnids)}
        return {"wnids": wnids, "imagenet_labels": [index[w] for w in wnids]}


for _spec in VARIANTS:
    register(ImageNetVariantAdapter(_spec))
