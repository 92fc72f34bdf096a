"""Adapter for the generated Synthetic image-caption dataset (slug ``synthetic``).

Layout (produced by the generator, :mod:`crossgap.synthetic_generator`)::

    <dataroot>/synthetic/
      images/{train,test}/<name>.png
      split_zhou_Synthetic.json   {"train": [[rel_path, label, classname], ...], "val": [], "test": [...]}
      captions.json               {"<rel_path>": ["caption 1", ...], ...}
      classnames.txt              one class name per line, line index = label
      attributes.json             per-image attributes (informational; ignored)

``rel_path`` is relative to ``images/``. The manifest holds one image row per split
entry, followed by one text row per caption (``group`` = the image row's id, with the
image's label and class name). Sizes are a generator parameter, so counts are not checked.
"""

from __future__ import annotations

import logging
from pathlib import Path

from crossgap.datasets.base import DatasetAdapter
from crossgap.datasets.errors import DatasetLayoutError
from crossgap.datasets.formats import read_json, read_name_list, read_split_json
from crossgap.datasets.protocols import make_protocol, retrieval
from crossgap.datasets.registry import register_dataset
from crossgap.datasets.rows import Row, image_row, text_rows
from crossgap.synthetic_generator import DATASET_DIRNAME, SPLIT_FILENAME

log = logging.getLogger(__name__)


@register_dataset
class SyntheticAdapter(DatasetAdapter):
    """Synthetic shapes with captions; supports image and text retrieval and zero-shot."""

    slug = "synthetic"
    folder = DATASET_DIRNAME
    images_dir = "images"
    expected_sizes: dict[str, int] = {}
    templates = ("a photo of a {}.",)
    protocol = make_protocol(
        image_retrieval=retrieval("test", "train"),
        text_retrieval=retrieval("test", "train", query_select="first_per_group"),
        zero_shot="test",
    )
    required = ("images", SPLIT_FILENAME, "captions.json", "classnames.txt")
    layout = (
        "<dataroot>/synthetic/\n"
        "|-- images/{train,test}/<name>.png\n"
        f'|-- {SPLIT_FILENAME}   {{"train": [[rel_path, label, classname], ...], "val": [], "test": [...]}}\n'
        '|-- captions.json               {"<rel_path>": ["caption", ...]}\n'
        "|-- classnames.txt              one class name per line, line index = label\n"
        "|-- attributes.json             (optional, ignored)"
    )

    def classnames(self, folder: Path) -> list[str]:
        """Names from ``classnames.txt``."""
        return read_name_list(folder / "classnames.txt")

    def rows(self, folder: Path, classnames: list[str]) -> list[Row]:
        """Image rows (splits in file order), then caption rows in the same order."""
        split_path, captions_path = folder / SPLIT_FILENAME, folder / "captions.json"
        captions = read_json(captions_path)
        if not isinstance(captions, dict):
            raise DatasetLayoutError(f"{captions_path}: expected a JSON object {{rel_path: [caption, ...]}}")
        images: list[Row] = []
        for split, entries in read_split_json(split_path).items():
            for rel, label, name in entries:
                if label >= len(classnames) or classnames[label] != name:
                    have = classnames[label] if label < len(classnames) else f"<none: {len(classnames)} classes>"
                    raise DatasetLayoutError(
                        f"{split_path}: {split} entry {rel!r} has label {label} named {name!r}, but line "
                        f"{label + 1} of {folder / 'classnames.txt'} is {have!r}"
                    )
                images.append(image_row(split, rel, label, name))
        texts: list[Row] = []
        uncaptioned = 0
        for image in images:
            caps = captions.get(image["path"])
            if caps is None:
                uncaptioned += 1
                continue
            if not isinstance(caps, list) or not all(isinstance(c, str) and c.strip() for c in caps):
                raise DatasetLayoutError(
                    f"{captions_path}: key {image['path']!r} must map to a list of non-empty strings"
                )
            texts += text_rows(image, caps)
        if uncaptioned:
            log.warning("%s: %d image(s) have no entry in %s", self.slug, uncaptioned, captions_path)
        unknown = len(set(captions) - {r["path"] for r in images})
        if unknown:
            log.warning("%s: %d key(s) of %s are not in %s; ignored", self.slug, unknown, captions_path, split_path)
        return images + texts
