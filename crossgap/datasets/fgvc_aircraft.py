"""FGVC-Aircraft (variant level, 100 classes) in the layout CoOp's DATASETS.md describes.

``fgvc_aircraft/`` is the ``data/`` folder of ``fgvc-aircraft-2013b.tar.gz``:
``variants.txt`` lists the class names (line order = label) and
``images_variant_{train,val,test}.txt`` hold lines ``<image id> <variant name>``; the
image is ``images/<image id>.jpg``. Sizes are CoOp's (3334/3333/3333).
"""

from __future__ import annotations

from pathlib import Path

from crossgap.datasets.base import DatasetAdapter
from crossgap.datasets.errors import DatasetLayoutError
from crossgap.datasets.formats import coop_classname, read_lines
from crossgap.datasets.registry import register_dataset
from crossgap.datasets.rows import Row, image_row

SPLITS: tuple[str, ...] = ("train", "val", "test")


@register_dataset
class FGVCAircraftAdapter(DatasetAdapter):
    """FGVC-Aircraft variants; labels are indices into ``variants.txt``."""

    slug = "fgvc_aircraft"
    folder = "fgvc_aircraft"
    images_dir = "images"
    expected_sizes = {"train": 3334, "val": 3333, "test": 3333}
    num_classes = 100
    templates = ("a photo of a {}, a type of aircraft.",)
    required = ("images", "variants.txt", *(f"images_variant_{s}.txt" for s in SPLITS))
    layout = (
        "<dataroot>/fgvc_aircraft/     # the data/ folder of fgvc-aircraft-2013b.tar.gz, renamed\n"
        "|-- images/<image id>.jpg\n"
        "|-- variants.txt               # one variant name per line (line order = label)\n"
        "|-- images_variant_train.txt   # lines '<image id> <variant name>'\n"
        "|-- images_variant_val.txt\n"
        "|-- images_variant_test.txt\n"
        "|-- ...                        # the other .txt files of the archive"
    )

    def _variants(self, folder: Path) -> list[str]:
        path = folder / "variants.txt"
        names = [text for _, text in read_lines(path)]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise DatasetLayoutError(f"{path}: variant names must be unique, repeated: {dup[:10]}")
        return names

    def classnames(self, folder: Path) -> list[str]:
        """Variant names from ``variants.txt`` (CoOp spelling)."""
        return [coop_classname(n) for n in self._variants(folder)]

    def rows(self, folder: Path, classnames: list[str]) -> list[Row]:
        """Image rows of train, val, test in file order."""
        label_of = {name: i for i, name in enumerate(self._variants(folder))}
        rows = []
        for split in SPLITS:
            path = folder / f"images_variant_{split}.txt"
            for n, text in read_lines(path):
                image_id, _, variant = text.partition(" ")
                variant = variant.strip()
                if not variant:
                    raise DatasetLayoutError(f"{path}: line {n}: expected '<image id> <variant name>', got {text!r}")
                if variant not in label_of:
                    raise DatasetLayoutError(
                        f"{path}: line {n}: variant {variant!r} is not listed in {folder / 'variants.txt'}"
                    )
                label = label_of[variant]
                rows.append(image_row(split, f"{image_id}.jpg", label, classnames[label]))
        return rows
