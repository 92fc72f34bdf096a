"""ImageNet-1k (ILSVRC-2012) in the layout CoOp's DATASETS.md describes.

``imagenet/images/{train,val}/<wnid>/<file>`` (val reorganised into class folders) and
``imagenet/classnames.txt`` with lines ``<wnid> <class name>`` (CLIP's class names; line
order = label). The val split (50,000 images) is the evaluation split, as in CoOp:
queries and zero-shot run on ``val``, the gallery is ``train`` (1,281,167 images).
"""

from __future__ import annotations

import logging
from pathlib import Path

from crossgap.datasets.base import DatasetAdapter
from crossgap.datasets.errors import DatasetLayoutError
from crossgap.datasets.files import visible_entries
from crossgap.datasets.formats import coop_classname, read_lines
from crossgap.datasets.protocols import classification_protocol
from crossgap.datasets.registry import register_dataset
from crossgap.datasets.rows import Row, image_row

log = logging.getLogger(__name__)

SPLITS: tuple[str, ...] = ("train", "val")


def read_wnid_classnames(path: Path) -> dict[str, str]:
    """``{wnid: class name}`` in file order from lines ``<wnid> <class name>`` (CoOp's names)."""
    out: dict[str, str] = {}
    for n, text in read_lines(path):
        wnid, _, name = text.partition(" ")
        if not name.strip():
            raise DatasetLayoutError(f"{path}: line {n}: expected '<wnid> <class name>', got {text!r}")
        if wnid in out:
            raise DatasetLayoutError(f"{path}: line {n}: wnid {wnid!r} listed twice")
        out[wnid] = coop_classname(name)
    return out


@register_dataset
class ImageNetAdapter(DatasetAdapter):
    """ImageNet-1k; labels follow ``classnames.txt`` line order."""

    slug = "imagenet"
    folder = "imagenet"
    images_dir = "images"
    expected_sizes = {"train": 1281167, "val": 50000}
    num_classes = 1000
    templates = ("a photo of a {}.",)
    protocol = classification_protocol("val", "train")
    required = ("images/train", "images/val", "classnames.txt")
    layout = (
        "<dataroot>/imagenet/\n"
        "|-- images/\n"
        "|   |-- train/<wnid>/*.JPEG   # 1,000 folders like n01440764\n"
        "|   |-- val/<wnid>/*.JPEG     # validation images sorted into the same class folders\n"
        "|-- classnames.txt            # lines '<wnid> <class name>', line order = label"
    )

    def classnames(self, folder: Path) -> list[str]:
        """Class names in ``classnames.txt`` order."""
        return list(read_wnid_classnames(folder / "classnames.txt").values())

    def rows(self, folder: Path, classnames: list[str]) -> list[Row]:
        """Image rows of train then val; class folders and files sorted by name; hidden files ignored."""
        wnids = {wnid: label for label, wnid in enumerate(read_wnid_classnames(folder / "classnames.txt"))}
        root = self.image_root(folder)
        rows: list[Row] = []
        for split in SPLITS:
            for entry in visible_entries(root / split):
                if not entry.is_dir():
                    log.warning("%s: ignoring %s (not a class folder)", self.slug, entry.path)
                    continue
                if entry.name not in wnids:
                    raise DatasetLayoutError(
                        f"{entry.path}: class folder {entry.name!r} is not listed in {folder / 'classnames.txt'}"
                    )
                label = wnids[entry.name]
                for f in visible_entries(entry.path):
                    rows.append(image_row(split, f"{split}/{entry.name}/{f.name}", label, classnames[label]))
        return rows
