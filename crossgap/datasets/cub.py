"""Caltech-UCSD Birds-200-2011 (slug ``cub2011``) in the layout of ``CUB_200_2011.tgz``.

Index files (space separated, 1-based ids)::

    images.txt               <image id> <path relative to images/>
    image_class_labels.txt   <image id> <class id 1..200>
    train_test_split.txt     <image id> <1 = train, 0 = test>
    classes.txt              <class id> <NNN.Class_name>

The retrieval protocol of the paper uses **all** 11,788 images as queries and as the
gallery (leave-one-out: a query never retrieves itself), relevant = same species. Rows
keep ``images.txt`` order; ``split`` records the official train/test assignment
(5,994 / 5,794). Class names drop the ``NNN.`` prefix and turn ``_`` into spaces.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

from crossgap.datasets.base import DatasetAdapter
from crossgap.datasets.errors import DatasetLayoutError
from crossgap.datasets.formats import clean_relpath, read_lines
from crossgap.datasets.protocols import make_protocol, retrieval
from crossgap.datasets.registry import register_dataset
from crossgap.datasets.rows import Row, image_row

log = logging.getLogger(__name__)

_NUMBER_PREFIX = re.compile(r"^\d+\.")


def read_id_table(path: Path, what: str) -> dict[int, str]:
    """Lines ``<integer id> <value>`` of ``path`` as ``{id: value}`` (file order kept)."""
    out: dict[int, str] = {}
    for n, text in read_lines(path):
        key, _, value = text.partition(" ")
        value = value.strip()
        if not key.isdigit() or not value:
            raise DatasetLayoutError(f"{path}: line {n}: expected '<integer id> <{what}>', got {text!r}")
        if int(key) in out:
            raise DatasetLayoutError(f"{path}: line {n}: id {key} is listed twice")
        out[int(key)] = value
    return out


def cub_classname(raw: str) -> str:
    """``"001.Black_footed_Albatross"`` -> ``"Black footed Albatross"``."""
    return _NUMBER_PREFIX.sub("", raw).replace("_", " ").strip()


@register_dataset
class CUBAdapter(DatasetAdapter):
    """CUB-200-2011; labels are ``class id - 1``."""

    slug = "cub2011"
    folder = "CUB_200_2011"
    images_dir = "images"
    expected_sizes = {"train": 5994, "test": 5794}
    num_classes = 200
    templates = ("a photo of a {}, a type of bird.",)
    protocol = make_protocol(image_retrieval=retrieval("*", "*"))  # leave-one-out over every image
    required = ("images", "images.txt", "image_class_labels.txt", "train_test_split.txt", "classes.txt")
    layout = (
        "<dataroot>/CUB_200_2011/        # extracted CUB_200_2011.tgz\n"
        "|-- images/<NNN.Class_name>/<file>.jpg\n"
        "|-- images.txt                  # '<image id> <path relative to images/>'\n"
        "|-- image_class_labels.txt      # '<image id> <class id>'\n"
        "|-- train_test_split.txt        # '<image id> <1 train | 0 test>'\n"
        "|-- classes.txt                 # '<class id> <NNN.Class_name>'\n"
        "|-- ...                         # bounding_boxes.txt, attributes/, parts/ (not used)"
    )

    def classnames(self, folder: Path) -> list[str]:
        """Names from ``classes.txt``; class ids must be 1..K."""
        path = folder / "classes.txt"
        table = read_id_table(path, "NNN.Class_name")
        if sorted(table) != list(range(1, len(table) + 1)):
            raise DatasetLayoutError(f"{path}: class ids must be 1..{len(table)} without gaps")
        return [cub_classname(table[i]) for i in range(1, len(table) + 1)]

    def rows(self, folder: Path, classnames: list[str]) -> list[Row]:
        """One image row per line of ``images.txt``, in that order."""
        images = read_id_table(folder / "images.txt", "relative path")
        labels = read_id_table(folder / "image_class_labels.txt", "class id")
        is_train = read_id_table(folder / "train_test_split.txt", "1 or 0")
        for name, table in (("image_class_labels.txt", labels), ("train_test_split.txt", is_train)):
            missing = sorted(set(images) - set(table))
            extra = sorted(set(table) - set(images))
            if missing or extra:
                raise DatasetLayoutError(
                    f"{folder / name}: image ids differ from {folder / 'images.txt'}: "
                    f"missing {missing[:10]}, not in images.txt {extra[:10]}"
                )
        rows = []
        for image_id, rel in images.items():
            label_text, split_text = labels[image_id], is_train[image_id]
            if not label_text.isdigit() or not 1 <= int(label_text) <= len(classnames):
                raise DatasetLayoutError(
                    f"{folder / 'image_class_labels.txt'}: image {image_id}: class id {label_text!r} "
                    f"is not in 1..{len(classnames)} (classes.txt)"
                )
            if split_text not in ("0", "1"):
                raise DatasetLayoutError(
                    f"{folder / 'train_test_split.txt'}: image {image_id}: expected 1 (train) or 0 (test), "
                    f"got {split_text!r}"
                )
            label = int(label_text) - 1
            split = "train" if split_text == "1" else "test"
            path = clean_relpath(rel, f"{folder / 'images.txt'}: image {image_id}")
            rows.append(image_row(split, path, label, classnames[label]))
        return rows
