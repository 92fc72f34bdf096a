"""``imagefolder``: a folder of class sub-folders, as torchvision's ``ImageFolder`` reads it.

Two layouts (the data root *is* the dataset folder)::

    <dataroot>/<split>/<class>/<image>     options.splits: [train, test]   (the default)
    <dataroot>/<class>/<image>             options.splits: []  -> split per class with a seed

Classes are the class folders of all splits, sorted by name (torchvision's ``ImageFolder``
order, so label ``i`` is the ``i``-th folder); their names are the folder names with ``_``
read as a space, or the lines of a class-name file (line ``i`` names label ``i``): the
``classnames_file`` option, else ``<dataroot>/classnames.txt`` when present. Images are the
files with an image suffix (:data:`IMAGE_SUFFIXES`, any case), sorted by name; other files
are ignored and counted in the log. A class folder without images is an error naming it.

Protocol (from the options alone): image retrieval with the ``query_split`` images as queries
and the ``gallery_split`` images as gallery (``null``: the query split against itself,
leave-one-out), relevant = same label; zero-shot classification of the ``query_split``
images with the ``templates`` (all averaged). With ``splits: []`` the images of each class
are shuffled with ``seed`` and ``round(query_fraction * n)`` of them (at least one, and at
least one left for the gallery) go to ``query_split``, the rest to ``gallery_split``.
"""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from crossgap.datasets.errors import DatasetLayoutError
from crossgap.datasets.files import visible_entries
from crossgap.datasets.formats import SPLIT_ORDER, coop_classname, read_name_list
from crossgap.datasets.options import (
    ConfigurableAdapter,
    DatasetOptionsError,
    check_query_gallery,
    check_split_name,
    check_templates,
    resolve_under,
)
from crossgap.datasets.protocols import ProtocolDict, classification_protocol
from crossgap.datasets.registry import register_dataset
from crossgap.datasets.rows import Row, image_row

log = logging.getLogger(__name__)

#: File suffixes read as images (compared in lower case), as torchvision's ``IMG_EXTENSIONS``.
IMAGE_SUFFIXES: tuple[str, ...] = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
CLASSNAMES_FILE = "classnames.txt"


@dataclass(frozen=True)
class ImageFolderOptions:
    """Options of an ``imagefolder`` dataset (``datasets.<name>.options``)."""

    #: split folders under the data root, in manifest order; empty: one folder of class folders
    splits: tuple[str, ...] = ("train", "test")
    #: split whose images are the retrieval queries and the zero-shot test set
    query_split: str = "test"
    #: split searched by the queries; null: the query split itself (leave-one-out)
    gallery_split: str | None = "train"
    #: with ``splits: []``: fraction of each class's images put in ``query_split``
    query_fraction: float = 0.2
    #: with ``splits: []``: seed of the per-class shuffle
    seed: int = 0
    #: class-name file relative to the data root (line i = label i); null: classnames.txt if present
    classnames_file: str | None = None
    #: zero-shot prompt templates, each with one ``{}`` (the classifier averages them)
    templates: tuple[str, ...] = ("a photo of a {}.",)

    def __post_init__(self) -> None:
        for name in self.splits:
            check_split_name(name, "splits")
        check_query_gallery(self.query_split, self.gallery_split)
        if len(set(self.splits)) != len(self.splits):
            raise DatasetOptionsError(f"splits: names must be unique, got {list(self.splits)}")
        for key in ("query_split", "gallery_split"):
            value = getattr(self, key)
            if self.splits and value is not None and value not in self.splits:
                raise DatasetOptionsError(f"{key}: {value!r} is not one of splits {list(self.splits)}")
        if not self.splits and self.gallery_split == self.query_split:
            raise DatasetOptionsError("gallery_split: must differ from query_split (or be null) when splits is []")
        if not 0.0 < self.query_fraction < 1.0:
            raise DatasetOptionsError(f"query_fraction: expected a number in (0, 1), got {self.query_fraction}")
        check_templates(self.templates, "templates")


def is_image(path: Path) -> bool:
    """A regular file with an image suffix (hidden files are never listed: :func:`visible_entries`)."""
    return path.suffix.lower() in IMAGE_SUFFIXES and path.is_file()


def list_class_folders(folder: Path) -> list[Path]:
    """Non-hidden sub-folders of ``folder``, sorted by name."""
    return [Path(e.path) for e in visible_entries(folder) if e.is_dir()]


def list_images(class_dir: Path) -> list[Path]:
    """Image files of a class folder, sorted by name; an empty class folder is an error naming it."""
    files = [Path(e.path) for e in visible_entries(class_dir)]
    images = [p for p in files if is_image(p)]
    if not images:
        raise DatasetLayoutError(
            f"{class_dir}: class folder has no images; expected files ending in {', '.join(IMAGE_SUFFIXES)} "
            f"(found {len(files)} other entr{'y' if len(files) == 1 else 'ies'}); remove the folder or add images"
        )
    if len(images) < len(files):
        log.info("%s: %d non-image entr(ies) ignored", class_dir, len(files) - len(images))
    return images


def seeded_split(n: int, fraction: float, seed: int, key: str) -> set[int]:
    """Indices (of ``n`` sorted files) that go to the query split: a seeded shuffle per class ``key``."""
    order = list(range(n))
    random.Random(f"{seed}/{key}").shuffle(order)
    k = min(max(1, round(fraction * n)), n - 1) if n > 1 else n
    return set(order[:k])


@register_dataset
class ImageFolderAdapter(ConfigurableAdapter):
    """Class sub-folders of images (``<split>/<class>/<image>`` or ``<class>/<image>``)."""

    slug = "imagefolder"
    options_type = ImageFolderOptions
    options: ImageFolderOptions

    def __init__(self, options: ImageFolderOptions | None = None, name: str | None = None) -> None:
        super().__init__(options, name)
        self.required = self.options.splits
        split_part = "<split>/" if self.options.splits else ""
        self.layout = (
            f"<dataroot>/{split_part}<class>/<image>   one folder per class"
            + (f"; splits {list(self.options.splits)}" if self.options.splits else " (splits: [] in options)")
            + f"\n|-- {CLASSNAMES_FILE}   (optional) class names, line i = label i (i-th class folder by name)"
        )

    @classmethod
    def options_protocol(cls, options: ImageFolderOptions) -> ProtocolDict:
        """Image retrieval (query vs gallery split, same label) and zero-shot on the query split."""
        return classification_protocol(options.query_split, options.gallery_split)

    # ------------------------------------------------------------------ layout
    def split_dirs(self, folder: Path) -> dict[str, Path]:
        """``{split: folder of its class folders}``; ``{"": folder}`` in single-folder mode."""
        return {split: folder / split for split in self.options.splits} or {"": folder}

    def folder_classes(self, folder: Path) -> list[str]:
        """Class folder names of every split, sorted (the label order)."""
        names: set[str] = set()
        per_split: dict[str, set[str]] = {}
        for split, base in self.split_dirs(folder).items():
            per_split[split] = {p.name for p in list_class_folders(base)}
            if not per_split[split]:
                raise DatasetLayoutError(
                    f"{base}: no class folders; expected {base}/<class>/<image>\nExpected layout:\n{self.layout}"
                )
            names |= per_split[split]
        for split, have in per_split.items():
            if split and have != names:
                log.warning("%s: split %r lacks class folder(s) %s", self.slug, split, sorted(names - have)[:10])
        return sorted(names)

    def classnames(self, folder: Path) -> list[str]:
        """Names from the class-name file (line i = i-th class folder) or from the folder names."""
        folders = self.folder_classes(folder)
        opt = self.options.classnames_file
        path = resolve_under(folder, opt or CLASSNAMES_FILE)
        if opt and not path.is_file():
            raise DatasetLayoutError(f"{path}: class-name file (options.classnames_file) does not exist")
        if not path.is_file():
            return [coop_classname(name) for name in folders]
        names = read_name_list(path)
        if len(names) != len(folders):
            raise DatasetLayoutError(
                f"{path}: {len(names)} class name(s) but {len(folders)} class folder(s) {folders[:10]}; "
                "expected one name per class folder, line i naming the i-th folder in sorted order"
            )
        return names

    def rows(self, folder: Path, classnames: list[str]) -> list[Row]:
        """Image rows: splits in option order, classes by label, files by name."""
        label_of = {name: i for i, name in enumerate(self.folder_classes(folder))}
        rows: list[Row] = []
        for split, base in self.split_dirs(folder).items():
            for class_dir in list_class_folders(base):
                label = label_of[class_dir.name]
                images = list_images(class_dir)
                splits = [split] * len(images) if split else self._single_folder_splits(len(images), class_dir.name)
                for path, row_split in zip(images, splits):
                    key = path.relative_to(base).as_posix()
                    rows.append(image_row(row_split, path.relative_to(folder).as_posix(), label, classnames[label],
                                          key=key))
        if not self.options.splits:
            rank = {self.options.query_split: 1}
            rows.sort(key=lambda r: rank.get(r["split"], 0))  # stable: gallery first, then queries
        return rows

    def _single_folder_splits(self, n: int, key: str) -> list[str]:
        """Split of each of a class's ``n`` images (sorted by name) in single-folder mode."""
        opt = self.options
        if opt.gallery_split is None:
            return [opt.query_split] * n
        query = seeded_split(n, opt.query_fraction, opt.seed, key)
        return [opt.query_split if i in query else opt.gallery_split for i in range(n)]

    # ------------------------------------------------------------------ init
    @classmethod
    def detect(cls, path: Path) -> tuple[Path, dict[str, Any]]:
        """Split folders when the sub-folders hold class folders, else one folder split with a seed."""
        if not path.is_dir():
            raise DatasetLayoutError(f"{path}: not a folder; expected <split>/<class>/<image> or <class>/<image>")
        subs = list_class_folders(path)
        nested = [s for s in subs if any(p.is_dir() for p in s.iterdir())]
        if not nested:
            return path, {"splits": [], "query_split": "test", "gallery_split": "train"}
        rank = {name: i for i, name in enumerate(SPLIT_ORDER)}
        splits = sorted((s.name for s in nested), key=lambda n: (rank.get(n, len(rank)), n))
        query = next((s for s in ("test", "val") if s in splits), splits[-1])
        gallery = "train" if "train" in splits and query != "train" else None
        return path, {"splits": splits, "query_split": query, "gallery_split": gallery}
