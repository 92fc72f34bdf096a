"""The ten datasets CoOp ships ``split_zhou_*.json`` splits for, as one data-driven family.

Layouts follow CoOp's DATASETS.md (https://github.com/KaiyangZhou/CoOp/blob/main/DATASETS.md);
split sizes and class counts are those of the CoOp paper's dataset table (train/val/test),
and each dataset's zero-shot template is CoOp's. A split file holds
``{"train": [[relative_path, label, classname], ...], "val": [...], "test": [...]}`` with
paths relative to the images folder. Class names follow CoOp: the split file's name (for
Flowers102, ``cat_to_name.json``; for EuroSAT, CoOp's renamed classes) with underscores
turned into spaces.

To add a dataset of this family, add a :class:`CoopSpec` to :data:`COOP_SPECS`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping

from crossgap.datasets.base import DatasetAdapter
from crossgap.datasets.errors import DatasetLayoutError
from crossgap.datasets.formats import coop_classname, labels_to_names, read_json, read_split_json
from crossgap.datasets.registry import register
from crossgap.datasets.rows import Row, image_row

log = logging.getLogger(__name__)

#: CoOp's EuroSAT class renaming (``NEW_CNAMES`` in CoOp's eurosat.py); applied to folder-style names.
EUROSAT_NEW_CNAMES: dict[str, str] = {
    "AnnualCrop": "Annual Crop Land",
    "Forest": "Forest",
    "HerbaceousVegetation": "Herbaceous Vegetation Land",
    "Highway": "Highway or Road",
    "Industrial": "Industrial Buildings",
    "Pasture": "Pasture Land",
    "PermanentCrop": "Permanent Crop Land",
    "Residential": "Residential Buildings",
    "River": "River",
    "SeaLake": "Sea or Lake",
}


def _names_from_split(adapter: "CoopAdapter", folder: Path) -> list[str]:
    path = folder / adapter.spec.split_file
    return labels_to_names(read_split_json(path), path)


def _names_from_cat_to_name(adapter: "CoopAdapter", folder: Path) -> list[str]:
    """Flowers102: ``cat_to_name.json`` maps ``str(label + 1)`` to the class name."""
    n = len(_names_from_split(adapter, folder))
    path = folder / "cat_to_name.json"
    mapping = read_json(path)
    if not isinstance(mapping, dict):
        raise DatasetLayoutError(f'{path}: expected a JSON object {{"1": name, ..., "{n}": name}}')
    missing = [str(i + 1) for i in range(n) if not isinstance(mapping.get(str(i + 1)), str)]
    if missing:
        raise DatasetLayoutError(f"{path}: no class name for key(s) {missing[:10]} (keys are label + 1, 1..{n})")
    return [mapping[str(i + 1)] for i in range(n)]


#: Where a family member's raw class names come from (before renames and ``_`` -> space).
CLASSNAME_SOURCES: dict[str, Callable[["CoopAdapter", Path], list[str]]] = {
    "split": _names_from_split,
    "cat_to_name": _names_from_cat_to_name,
}


@dataclass(frozen=True)
class CoopSpec:
    """Everything that distinguishes one split_zhou dataset from another."""

    slug: str
    folder: str
    images_dir: str  # relative to the dataset folder; "" = the folder itself
    split_file: str
    template: str
    num_classes: int
    sizes: Mapping[str, int]
    classname_source: str = "split"
    renames: Mapping[str, str] = field(default_factory=dict)
    extra_files: tuple[str, ...] = ()
    extra_layout: tuple[str, ...] = ()  # informational lines of the tree (not required)


# fmt: off
COOP_SPECS: tuple[CoopSpec, ...] = (
    CoopSpec(slug="oxford_pets", folder="oxford_pets", images_dir="images",
             split_file="split_zhou_OxfordPets.json", template="a photo of a {}, a type of pet.",
             num_classes=37, sizes={"train": 2944, "val": 736, "test": 3669},
             extra_layout=("annotations/",)),
    CoopSpec(slug="oxford_flowers", folder="oxford_flowers", images_dir="jpg",
             split_file="split_zhou_OxfordFlowers.json", template="a photo of a {}, a type of flower.",
             num_classes=102, sizes={"train": 4093, "val": 1633, "test": 2463},
             classname_source="cat_to_name", extra_files=("cat_to_name.json",), extra_layout=("imagelabels.mat",)),
    CoopSpec(slug="dtd", folder="dtd", images_dir="images",
             split_file="split_zhou_DescribableTextures.json", template="{} texture.",
             num_classes=47, sizes={"train": 2820, "val": 1128, "test": 1692},
             extra_layout=("imdb/", "labels/")),
    CoopSpec(slug="eurosat", folder="eurosat", images_dir="2750",
             split_file="split_zhou_EuroSAT.json", template="a centered satellite photo of {}.",
             num_classes=10, sizes={"train": 13500, "val": 5400, "test": 8100},
             renames=EUROSAT_NEW_CNAMES),
    CoopSpec(slug="food101", folder="food-101", images_dir="images",
             split_file="split_zhou_Food101.json", template="a photo of {}, a type of food.",
             num_classes=101, sizes={"train": 50500, "val": 20200, "test": 30300},
             extra_layout=("meta/", "license_agreement.txt", "README.txt")),
    CoopSpec(slug="stanford_cars", folder="stanford_cars", images_dir="",
             split_file="split_zhou_StanfordCars.json", template="a photo of a {}.",
             num_classes=196, sizes={"train": 6509, "val": 1635, "test": 8041},
             extra_layout=("cars_train/", "cars_test/", "devkit/", "cars_test_annos_withlabels.mat")),
    CoopSpec(slug="sun397", folder="sun397", images_dir="SUN397",
             split_file="split_zhou_SUN397.json", template="a photo of a {}.",
             num_classes=397, sizes={"train": 15880, "val": 3970, "test": 19850},
             extra_layout=("... # Partitions .txt files",)),
    CoopSpec(slug="caltech101", folder="caltech-101", images_dir="101_ObjectCategories",
             split_file="split_zhou_Caltech101.json", template="a photo of a {}.",
             num_classes=100, sizes={"train": 4128, "val": 1649, "test": 2465}),
    CoopSpec(slug="ucf101", folder="ucf101", images_dir="UCF-101-midframes",
             split_file="split_zhou_UCF101.json", template="a photo of a person doing {}.",
             num_classes=101, sizes={"train": 7639, "val": 1898, "test": 3783}),
)
# fmt: on


class CoopAdapter(DatasetAdapter):
    """Adapter for one :class:`CoopSpec` (CoOp split_zhou layout)."""

    def __init__(self, spec: CoopSpec) -> None:
        if spec.classname_source not in CLASSNAME_SOURCES:
            raise ValueError(f"{spec.slug}: classname_source must be one of {list(CLASSNAME_SOURCES)}")
        self.spec = spec
        self.slug = spec.slug
        self.folder = spec.folder
        self.images_dir = spec.images_dir
        self.expected_sizes = dict(spec.sizes)
        self.num_classes = spec.num_classes
        self.templates = (spec.template,)
        self.required = tuple(r for r in (spec.images_dir, spec.split_file, *spec.extra_files) if r)
        tree = [
            (
                f"{spec.images_dir}/   # images; split paths are relative to it"
                if spec.images_dir
                else "...   # image folders; split paths are relative to this folder"
            ),
            spec.split_file,
            *spec.extra_files,
            *(f"{line}   (not used by crossgap)" for line in spec.extra_layout),
        ]
        self.layout = f"<dataroot>/{spec.folder}/\n" + "\n".join(f"|-- {line}" for line in tree)

    def classnames(self, folder: Path) -> list[str]:
        """CoOp class names (index = label)."""
        raw = CLASSNAME_SOURCES[self.spec.classname_source](self, folder)
        return [coop_classname(self.spec.renames.get(name, name)) for name in raw]

    def rows(self, folder: Path, classnames: list[str]) -> list[Row]:
        """One image row per split entry, splits in file order (empty splits omitted)."""
        path = folder / self.spec.split_file
        rows = []
        for split, entries in read_split_json(path).items():
            for rel, label, _ in entries:
                if label >= len(classnames):
                    raise DatasetLayoutError(
                        f"{path}: {split} entry {rel!r} has label {label} >= {len(classnames)} classes"
                    )
                rows.append(image_row(split, rel, label, classnames[label]))
        return rows


for _spec in COOP_SPECS:
    register(CoopAdapter(_spec))
