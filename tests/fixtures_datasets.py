"""Builders of tiny dataset trees in each dataset's real on-disk layout (8x8 images).

Import from tests (``from fixtures_datasets import ...``); nothing here is a pytest fixture,
so it works without a conftest. Each builder returns a :class:`FixtureInfo` with what an
adapter is expected to produce. The layouts are written from CoOp's DATASETS.md and the
synthetic generator's spec, independently of the adapters' own tables.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from PIL import Image

DEFAULT_SPLITS: dict[str, int] = {"train": 2, "val": 1, "test": 1}


@dataclass
class FixtureInfo:
    """What was written: dataset folder, image root, class names (as adapters must report them),
    image items ``(split, relative path, label)`` in manifest order, and captions by relative path."""

    folder: Path
    image_root: Path
    classnames: list[str]
    items: list[tuple[str, str, int]]
    captions: dict[str, list[str]] = field(default_factory=dict)

    def ids(self) -> list[str]:
        """Expected image ids in manifest order."""
        return [f"{split}/{rel}" for split, rel, _ in self.items]

    def path_of(self, index: int) -> Path:
        """Absolute path of image item ``index``."""
        return self.image_root / self.items[index][1]


def write_image(path: Path, color: tuple[int, int, int] = (200, 30, 30), size: int = 8) -> Path:
    """Write a solid ``size`` x ``size`` RGB image; format from the suffix (.jpg/.JPEG/.png)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fmt = "PNG" if path.suffix.lower() == ".png" else "JPEG"
    Image.new("RGB", (size, size), color).save(path, format=fmt)
    return path


def truncate_file(path: Path, keep: int = 20) -> Path:
    """Cut ``path`` to its first ``keep`` bytes (a truncated image)."""
    path.write_bytes(path.read_bytes()[:keep])
    return path


def garble_file(path: Path) -> Path:
    """Replace ``path``'s content with bytes that are no image."""
    path.write_bytes(b"this is not an image\n")
    return path


def _color(label: int, k: int) -> tuple[int, int, int]:
    return ((40 * label + 17 * k) % 256, (90 + 31 * k) % 256, (200 - 23 * label) % 256)


def _underscores(name: str) -> str:
    return name.replace("_", " ")


@dataclass(frozen=True)
class CoopLayout:
    """One CoOp split_zhou dataset as DATASETS.md lays it out."""

    folder: str
    images_dir: str
    split_file: str
    raw_names: tuple[str, ...]  # names as stored in the split JSON
    relpath: Callable[[str, str, int, int], str]  # (raw name, split, label, running index) -> path
    expected: Callable[[str], str] = _underscores  # raw name -> name the adapter must report


COOP_LAYOUTS: dict[str, CoopLayout] = {
    "oxford_pets": CoopLayout(
        "oxford_pets",
        "images",
        "split_zhou_OxfordPets.json",
        ("abyssinian", "american_bulldog"),
        lambda c, s, l, n: f"{c}_{n}.jpg",
    ),
    "oxford_flowers": CoopLayout(
        "oxford_flowers",
        "jpg",
        "split_zhou_OxfordFlowers.json",
        ("json name one", "json name two"),
        lambda c, s, l, n: f"image_{n:05d}.jpg",
    ),
    "dtd": CoopLayout(
        "dtd",
        "images",
        "split_zhou_DescribableTextures.json",
        ("banded", "crystalline"),
        lambda c, s, l, n: f"{c}/{c}_{n:04d}.jpg",
    ),
    "eurosat": CoopLayout(
        "eurosat",
        "2750",
        "split_zhou_EuroSAT.json",
        ("Annual Crop Land", "Sea or Lake"),
        lambda c, s, l, n: f"{('AnnualCrop', 'SeaLake')[l]}/{('AnnualCrop', 'SeaLake')[l]}_{n}.jpg",
    ),
    "food101": CoopLayout(
        "food-101",
        "images",
        "split_zhou_Food101.json",
        ("apple_pie", "baby_back_ribs"),
        lambda c, s, l, n: f"{c}/{100000 + n}.jpg",
    ),
    "stanford_cars": CoopLayout(
        "stanford_cars",
        "",
        "split_zhou_StanfordCars.json",
        ("2012 Audi TTS Coupe", "2012 Tesla Model S"),
        lambda c, s, l, n: f"cars_{'test' if s == 'test' else 'train'}/{n:05d}.jpg",
    ),
    "sun397": CoopLayout(
        "sun397",
        "SUN397",
        "split_zhou_SUN397.json",
        ("abbey", "airplane_cabin"),
        lambda c, s, l, n: f"{c[0]}/{c}/sun_{n:06d}.jpg",
    ),
    "caltech101": CoopLayout(
        "caltech-101",
        "101_ObjectCategories",
        "split_zhou_Caltech101.json",
        ("accordion", "face"),
        lambda c, s, l, n: f"{c}/image_{n:04d}.jpg",
    ),
    "ucf101": CoopLayout(
        "ucf101",
        "UCF-101-midframes",
        "split_zhou_UCF101.json",
        ("Apply_Eye_Makeup", "Playing_Cello"),
        lambda c, s, l, n: f"{c}/v_{c}_g{n:02d}_c01.jpg",
    ),
}
FLOWERS_CAT_TO_NAME: dict[str, str] = {"1": "pink primrose", "2": "hard-leaved pocket orchid"}


def make_coop_dataset(
    dataroot: Path, slug: str, per_split: dict[str, int] | None = None, *, raw_names: tuple[str, ...] | None = None
) -> FixtureInfo:
    """A CoOp split_zhou dataset with 2 classes and ``per_split`` images per class and split."""
    lay = COOP_LAYOUTS[slug]
    names = raw_names or lay.raw_names
    per_split = per_split or DEFAULT_SPLITS
    folder = Path(dataroot) / lay.folder
    root = folder / lay.images_dir if lay.images_dir else folder
    split: dict[str, list] = {}
    items: list[tuple[str, str, int]] = []
    n = 0
    for split_name, k in per_split.items():
        split[split_name] = []
        for i in range(k):
            for label, name in enumerate(names):
                n += 1
                rel = lay.relpath(name, split_name, label, n)
                write_image(root / rel, _color(label, n))
                split[split_name].append([rel, label, name])
                items.append((split_name, rel, label))
    folder.mkdir(parents=True, exist_ok=True)
    (folder / lay.split_file).write_text(json.dumps(split))
    if slug == "oxford_flowers":
        (folder / "cat_to_name.json").write_text(json.dumps(FLOWERS_CAT_TO_NAME))
        expected = [FLOWERS_CAT_TO_NAME[str(i + 1)] for i in range(len(names))]
    else:
        expected = [lay.expected(name) for name in names]
    return FixtureInfo(folder, root, expected, items)


def make_fgvc_aircraft(
    dataroot: Path,
    per_split: dict[str, int] | None = None,
    variants: tuple[str, ...] = ("707-320", "A300B4", "F-16A/B"),
) -> FixtureInfo:
    """``fgvc_aircraft/`` with ``variants.txt`` and ``images_variant_<split>.txt``."""
    per_split = per_split or DEFAULT_SPLITS
    folder = Path(dataroot) / "fgvc_aircraft"
    (folder / "images").mkdir(parents=True, exist_ok=True)
    (folder / "variants.txt").write_text("\n".join(variants) + "\n")
    items, n = [], 1000000
    for split_name in ("train", "val", "test"):
        lines = []
        for i in range(per_split.get(split_name, 0)):
            for label, variant in enumerate(variants):
                n += 1
                write_image(folder / "images" / f"{n:07d}.jpg", _color(label, n))
                lines.append(f"{n:07d} {variant}")
                items.append((split_name, f"{n:07d}.jpg", label))
        (folder / f"images_variant_{split_name}.txt").write_text("\n".join(lines) + "\n")
    return FixtureInfo(folder, folder / "images", list(variants), items)


def make_imagenet(
    dataroot: Path,
    per_split: dict[str, int] | None = None,
    classes: tuple[tuple[str, str], ...] = (
        ("n01440764", "tench"),
        ("n01443537", "goldfish"),
        ("n01484850", "great white shark"),
    ),
) -> FixtureInfo:
    """``imagenet/images/{train,val}/<wnid>/*.JPEG`` and ``classnames.txt``."""
    per_split = per_split or {"train": 2, "val": 1}
    folder = Path(dataroot) / "imagenet"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "classnames.txt").write_text("".join(f"{w} {name}\n" for w, name in classes))
    items = []
    for split_name in ("train", "val"):
        (folder / "images" / split_name).mkdir(parents=True, exist_ok=True)
        for label, (wnid, _) in enumerate(classes):
            for i in range(per_split.get(split_name, 0)):
                rel = f"{split_name}/{wnid}/{wnid}_{i}.JPEG"
                write_image(folder / "images" / rel, _color(label, i))
                items.append((split_name, rel, label))
    return FixtureInfo(folder, folder / "images", [name for _, name in classes], items)


def make_synthetic(
    dataroot: Path,
    per_split: dict[str, int] | None = None,
    classnames: tuple[str, ...] = ("red circle", "blue square", "green ring"),
    captions_per_image: int = 2,
) -> FixtureInfo:
    """``synthetic/`` in the generator's layout: PNGs, split JSON, captions, class list, attributes."""
    per_split = per_split or {"train": 2, "test": 1}
    folder = Path(dataroot) / "synthetic"
    split: dict[str, list] = {"train": [], "val": [], "test": []}
    captions: dict[str, list[str]] = {}
    items = []
    for split_name in ("train", "test"):
        n = 0
        for i in range(per_split.get(split_name, 0)):
            for label, name in enumerate(classnames):
                rel = f"{split_name}/{n:06d}.png"
                n += 1
                write_image(folder / "images" / rel, _color(label, n))
                split[split_name].append([rel, label, name])
                captions[rel] = [f"caption {k} of a {name} ({rel})" for k in range(captions_per_image)]
                items.append((split_name, rel, label))
    (folder / "split_zhou_Synthetic.json").write_text(json.dumps(split))
    (folder / "captions.json").write_text(json.dumps(captions))
    (folder / "classnames.txt").write_text("\n".join(classnames) + "\n")
    (folder / "attributes.json").write_text(json.dumps({rel: {"shape": "x"} for rel in captions}))
    return FixtureInfo(folder, folder / "images", list(classnames), items, captions)


#: slug -> builder(dataroot) for every registered dataset (default sizes).
BUILDERS: dict[str, Callable[[Path], FixtureInfo]] = {
    **{slug: (lambda root, slug=slug: make_coop_dataset(root, slug)) for slug in COOP_LAYOUTS},
    "fgvc_aircraft": make_fgvc_aircraft,
    "imagenet": make_imagenet,
    "synthetic": make_synthetic,
}
