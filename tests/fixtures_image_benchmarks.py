"""Builders of tiny trees in the real on-disk layouts of image benchmarks beyond the CoOp family.

CUB-200-2011, Stanford Online Products, revisited Oxford/Paris and the ImageNet variants
(-V2, -Sketch, -A, -R). Like ``fixtures_datasets`` (whose :class:`FixtureInfo` and
:func:`write_image` are reused), nothing here is a pytest fixture. Layouts are written from
each dataset's own distribution format (archive contents, index-file formats), independently
of the adapters.
"""

from __future__ import annotations

import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from fixtures_datasets import FixtureInfo, write_image

CUB_CLASSES: tuple[str, ...] = ("001.Black_footed_Albatross", "002.Laysan_Albatross", "003.Sooty_Albatross")


def make_cub(dataroot: Path, per_class: int = 2) -> FixtureInfo:
    """``CUB_200_2011/`` with the four index files; image ids interleave classes and splits."""
    folder = Path(dataroot) / "CUB_200_2011"
    images, labels, splits, items = [], [], [], []
    image_id = 0
    for k in range(per_class):
        for c, cls in enumerate(CUB_CLASSES):
            image_id += 1
            rel = f"{cls}/{cls.split('.', 1)[1]}_{image_id:04d}_{100 + image_id}.jpg"
            write_image(folder / "images" / rel, (30 * c, 60 + 10 * k, 90))
            is_train = (image_id + k) % 2
            images.append(f"{image_id} {rel}")
            labels.append(f"{image_id} {c + 1}")
            splits.append(f"{image_id} {is_train}")
            items.append(("train" if is_train else "test", rel, c))
    (folder / "images.txt").write_text("\n".join(images) + "\n")
    (folder / "image_class_labels.txt").write_text("\n".join(labels) + "\n")
    (folder / "train_test_split.txt").write_text("\n".join(splits) + "\n")
    (folder / "classes.txt").write_text("\n".join(f"{i + 1} {c}" for i, c in enumerate(CUB_CLASSES)) + "\n")
    names = ["Black footed Albatross", "Laysan Albatross", "Sooty Albatross"]
    return FixtureInfo(folder, folder / "images", names, items)


SOP_SUPERS: tuple[str, ...] = ("bicycle_final", "coffee_maker_final")


def make_sop(dataroot: Path) -> FixtureInfo:
    """``Stanford_Online_Products/`` with ``Ebay_{train,test}.txt``: classes 1-2 train, 3-5 test."""
    folder = Path(dataroot) / "Stanford_Online_Products"
    plan = {"train": [(1, 1, 2), (2, 2, 2)], "test": [(3, 1, 2), (4, 2, 3), (5, 1, 2)]}  # (class, super, n)
    items: list[tuple[str, str, int]] = []
    image_id = 0
    for split, classes in plan.items():
        lines = ["image_id class_id super_class_id path"]
        for class_id, super_id, n in classes:
            for k in range(n):
                image_id += 1
                rel = f"{SOP_SUPERS[super_id - 1]}/{111000 + class_id}_{k}.JPG"
                write_image(folder / rel, (40 * class_id, 20 * k, 100))
                lines.append(f"{image_id} {class_id} {super_id} {rel}")
                items.append((split, rel, class_id - 1))
        (folder / f"Ebay_{split}.txt").write_text("\n".join(lines) + "\n")
    names = ["bicycle 1", "coffee maker 2", "bicycle 3", "coffee maker 4", "bicycle 5"]
    return FixtureInfo(folder, folder, names, items)


@dataclass
class RevisitedFixture:
    """A revisited dataset: folder, image lists and the raw gnd written to the pickle."""

    folder: Path
    imlist: list[str]
    qimlist: list[str]
    gnd: list[dict[str, Any]]


def make_revisited(
    dataroot: Path, name: str = "roxford5k", n_db: int = 6, numpy_lists: bool = True
) -> RevisitedFixture:
    """``<name>/gnd_<name>.pkl`` and ``<name>/jpg/``; 2 queries. One gnd list is a numpy array
    (as some re-saved copies have), the rest plain lists."""
    folder = Path(dataroot) / name
    prefix = "all_souls" if name == "roxford5k" else "paris_defense"
    imlist = [f"{prefix}_{i:06d}" for i in range(n_db)]
    qimlist = [f"{prefix}_q{i:05d}" for i in range(2)]
    for k, im in enumerate(imlist + qimlist):
        write_image(folder / "jpg" / f"{im}.jpg", (10 * k, 50, 200), size=16)
    gnd = [
        {"bbx": [1.0, 2.0, 12.5, 14.0], "easy": [0, 2], "hard": [1], "junk": [5]},
        {"bbx": [0.0, 0.0, 8.0, 8.0], "easy": [3], "hard": [], "junk": [0, 4]},
    ]
    stored = [dict(g) for g in gnd]
    if numpy_lists:
        stored[0]["easy"] = np.array(gnd[0]["easy"], dtype=np.int64)
    with open(folder / f"gnd_{name}.pkl", "wb") as f:
        pickle.dump({"imlist": imlist, "qimlist": qimlist, "gnd": stored}, f)
    return RevisitedFixture(folder, imlist, qimlist, gnd)


IMAGENET_CLASSES: dict[str, str] = {
    "n01440764": "tench",
    "n01443537": "goldfish",
    "n01484850": "great white shark",
    "n01491361": "tiger shark",
}
VARIANT_DIRS: dict[str, tuple[str, str, str]] = {  # slug -> (folder, images dir, folder naming)
    "imagenet_v2": ("imagenetv2", "imagenetv2-matched-frequency-format-val", "label"),
    "imagenet_sketch": ("imagenet-sketch", "images", "wnid"),
    "imagenet_a": ("imagenet-adversarial", "imagenet-a", "wnid"),
    "imagenet_r": ("imagenet-rendition", "imagenet-r", "wnid"),
}


def write_imagenet_classnames(path: Path) -> Path:
    """ImageNet's ``classnames.txt`` (4 classes here)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{w} {n}\n" for w, n in IMAGENET_CLASSES.items()))
    return path


def make_imagenet_variant(
    dataroot: Path,
    slug: str,
    *,
    classes: tuple[int, ...] = (0, 1, 2, 3),
    per_class: int = 2,
    copy_classnames: bool = True,
) -> FixtureInfo:
    """A variant tree with images for the ImageNet class indices ``classes``.

    ``copy_classnames`` puts ``classnames.txt`` into the variant folder (as DATASETS.md asks);
    otherwise it is written to ``<dataroot>/imagenet/``. The info's labels are the labels
    the adapter must give: the ImageNet index for 1,000-class variants, the index among the
    present classes for ImageNet-A/R.
    """
    folder_name, images_dir, naming = VARIANT_DIRS[slug]
    folder = Path(dataroot) / folder_name
    root = folder / images_dir
    wnids = list(IMAGENET_CLASSES)
    subset = slug in ("imagenet_a", "imagenet_r")
    items = []
    for rank, c in enumerate(sorted(classes)):
        sub = str(c) if naming == "label" else wnids[c]
        for k in range(per_class):
            stem, ext = ("sketch", "JPEG") if slug == "imagenet_sketch" else ("img", "jpg")
            rel = f"{sub}/{stem}_{k}.{ext}"
            write_image(root / rel, (60 * c, 40 * k, 120))
            items.append(("test", rel, rank if subset else c))
    if subset:
        (root / "README.txt").write_text("not a class folder\n")
    write_imagenet_classnames(
        folder / "classnames.txt" if copy_classnames else Path(dataroot) / "imagenet" / "classnames.txt"
    )
    names = [IMAGENET_CLASSES[wnids[c]] for c in sorted(classes)] if subset else list(IMAGENET_CLASSES.values())
    return FixtureInfo(folder, root, names, items)
