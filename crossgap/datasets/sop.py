"""Stanford Online Products (slug ``sop``) in the layout of ``Stanford_Online_Products.zip``.

``Ebay_train.txt`` and ``Ebay_test.txt`` are space separated with the header
``image_id class_id super_class_id path``; ``path`` (e.g.
``bicycle_final/111085122871_0.JPG``) is relative to the dataset folder. Class ids are
global (train 1..11,318, test 11,319..22,634); the label is ``class_id - 1``. A class has
no name of its own, so its name is its super class (the path's folder without
``_final``) followed by the class id, e.g. ``"bicycle 11319"``.

Protocol (the paper's): test images (60,502, 11,316 classes) against the test images,
leave-one-out, relevant = same ``class_id``. Train rows (59,551) are in the manifest too.
"""

from __future__ import annotations

import logging
from pathlib import Path

from crossgap.datasets.base import DatasetAdapter, Inspection
from crossgap.datasets.errors import DatasetLayoutError
from crossgap.datasets.formats import clean_relpath, read_lines
from crossgap.datasets.protocols import make_protocol, retrieval
from crossgap.datasets.registry import register_dataset
from crossgap.datasets.rows import Row, image_row

log = logging.getLogger(__name__)

FILES: dict[str, str] = {"train": "Ebay_train.txt", "test": "Ebay_test.txt"}
HEADER: tuple[str, ...] = ("image_id", "class_id", "super_class_id", "path")
#: classes per split in the published dataset
EXPECTED_CLASSES: dict[str, int] = {"train": 11318, "test": 11316}


def read_ebay_file(path: Path) -> list[tuple[int, int, str]]:
    """``(class_id, super_class_id, path)`` per line of an ``Ebay_*.txt`` file (header checked)."""
    lines = read_lines(path)
    if not lines or tuple(lines[0][1].split()) != HEADER:
        got = lines[0][1] if lines else "<empty file>"
        raise DatasetLayoutError(f"{path}: line 1 must be the header {' '.join(HEADER)!r}, got {got!r}")
    out = []
    for n, text in lines[1:]:
        fields = text.split()
        if len(fields) != 4 or not all(f.isdigit() for f in fields[:3]):
            raise DatasetLayoutError(f"{path}: line {n}: expected '<image_id> <class_id> <super_class_id> <path>'")
        out.append((int(fields[1]), int(fields[2]), clean_relpath(fields[3], f"{path}: line {n}")))
    return out


def super_class_name(rel: str) -> str:
    """``"coffee_maker_final/x.JPG"`` -> ``"coffee maker"``."""
    top = rel.split("/", 1)[0]
    return top.removesuffix("_final").replace("_", " ")


@register_dataset
class SOPAdapter(DatasetAdapter):
    """Stanford Online Products; labels are ``class_id - 1``."""

    slug = "sop"
    folder = "Stanford_Online_Products"
    images_dir = ""
    expected_sizes = {"train": 59551, "test": 60502}
    num_classes = 22634
    templates = ("a photo of a {}.",)
    protocol = make_protocol(image_retrieval=retrieval("test", "test"))  # leave-one-out within test
    required = tuple(FILES.values())
    layout = (
        "<dataroot>/Stanford_Online_Products/   # extracted Stanford_Online_Products.zip\n"
        "|-- Ebay_train.txt      # header 'image_id class_id super_class_id path', then one line per image\n"
        "|-- Ebay_test.txt\n"
        "|-- bicycle_final/<image>.JPG, cabinet_final/, ... (12 super-class folders)\n"
        "|-- Ebay_info.txt, Ebay_final.txt, LICENSE, README   (not used)"
    )

    def _entries(self, folder: Path) -> dict[str, list[tuple[int, int, str]]]:
        return {split: read_ebay_file(folder / name) for split, name in FILES.items()}

    def classnames(self, folder: Path) -> list[str]:
        """``"<super class> <class id>"`` for class ids 1..max; a class id must keep one super class."""
        supers: dict[int, str] = {}
        for split, entries in self._entries(folder).items():
            for class_id, _, rel in entries:
                name = super_class_name(rel)
                if class_id < 1:
                    raise DatasetLayoutError(f"{folder / FILES[split]}: class_id must be >= 1, got {class_id}")
                if supers.setdefault(class_id, name) != name:
                    raise DatasetLayoutError(
                        f"{folder / FILES[split]}: class {class_id} has images in both {supers[class_id]!r} "
                        f"and {name!r} folders; expected one super class per class"
                    )
        n = max(supers, default=0)
        gaps = [i for i in range(1, n + 1) if i not in supers]
        if gaps:
            log.warning("%s: %d class id(s) in 1..%d have no image (first: %s)", self.slug, len(gaps), n, gaps[:5])
        return [f"{supers.get(i, 'unknown')} {i}" for i in range(1, n + 1)]

    def rows(self, folder: Path, classnames: list[str]) -> list[Row]:
        """Train rows then test rows, each in file order."""
        rows = []
        for split, entries in self._entries(folder).items():
            for class_id, _, rel in entries:
                rows.append(image_row(split, rel, class_id - 1, classnames[class_id - 1]))
        return rows

    def extra_warnings(self, ins: Inspection) -> list[str]:
        """Distinct classes per split vs the published 11,318 / 11,316."""
        out = []
        for split, want in EXPECTED_CLASSES.items():
            have = int(ins.frame.loc[ins.frame["split"] == split, "label"].nunique())
            if have != want:
                out.append(f"{self.slug}: split {split!r} has {have} classes, expected {want}")
        return out
