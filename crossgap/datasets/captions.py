"""Caption datasets used for text-to-text retrieval: ``coco_text``, ``flickr30k_text``, ``nocaps_text``.

Only the captions are read (no image files are needed). Each image becomes a caption
group (``group`` = ``"<split>/<image file>"``, the id the image would have); the
protocol takes the **first** caption of each image of the evaluation split as the query
and the image's other captions as the relevant gallery items (``relevance: group``), with
the gallery being all non-first captions of that split. Sizes are counted in images.

* ``coco_text``: ``COCO2014/dataset_coco_light.json``, Karpathy's split file
  (``{"images": [{"split", "filename", "sentences": [{"raw"}, ...]}, ...]}``); splits
  ``train`` / ``restval`` / ``val`` / ``test`` (82,783 / 30,504 / 5,000 / 5,000); evaluated on ``test``.
* ``flickr30k_text``: ``Flickr30K/results.csv`` (``|``-delimited ``image_name| comment_number| comment``
  with a header line; the Kaggle copy has one line without its second delimiter, which is
  repaired with a warning) and ``karpathy_{train,val,test}.txt`` (image names, with or without
  ``.jpg``); evaluated on ``val``.
* ``nocaps_text``: ``nocaps/nocaps_val_4500_captions.json`` (COCO style ``images`` /
  ``annotations``); 4,500 validation images with 10 captions each.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

from crossgap.datasets.base import DatasetAdapter
from crossgap.datasets.errors import DatasetLayoutError
from crossgap.datasets.formats import read_json
from crossgap.datasets.protocols import ProtocolDict, group_retrieval, make_protocol
from crossgap.datasets.registry import register_dataset
from crossgap.datasets.rows import Row, caption_rows

log = logging.getLogger(__name__)


def caption_protocol(split: str) -> ProtocolDict:
    """Text retrieval only: first caption of each image of ``split`` -> the other captions of ``split``."""
    return make_protocol(text_retrieval=group_retrieval(split))


class CaptionAdapter(DatasetAdapter):
    """Base of the caption datasets: texts only, no classes, sizes counted in images (caption groups)."""

    unit = "groups"
    templates: tuple[str, ...] = ()

    def classnames(self, folder: Path) -> list[str]:
        """Caption datasets have no classes."""
        return []


@register_dataset
class CocoTextAdapter(CaptionAdapter):
    """MS-COCO 2014 captions with Karpathy's split."""

    slug = "coco_text"
    folder = "COCO2014"
    expected_sizes = {"train": 82783, "restval": 30504, "val": 5000, "test": 5000}
    protocol = caption_protocol("test")
    required = ("dataset_coco_light.json",)
    layout = (
        "<dataroot>/COCO2014/\n"
        '|-- dataset_coco_light.json   # Karpathy split: {"images": [{"split", "filename", '
        '"sentences": [{"raw": ...}, ...]}, ...]}\n'
        "|-- train2014/, val2014/      # images (not needed for text retrieval)"
    )

    def rows(self, folder: Path, classnames: list[str]) -> list[Row]:
        """Captions of every image, in file order (``sentences[].raw`` as written)."""
        path = folder / "dataset_coco_light.json"
        data = read_json(path)
        if not isinstance(data, dict) or not isinstance(data.get("images"), list):
            raise DatasetLayoutError(f"{path}: expected a JSON object with an 'images' list")
        rows: list[Row] = []
        seen: set[str] = set()
        for i, image in enumerate(data["images"]):
            where = f"{path}: images[{i}]"
            if not isinstance(image, dict) or not all(k in image for k in ("split", "filename", "sentences")):
                raise DatasetLayoutError(f"{where}: expected keys 'split', 'filename', 'sentences'")
            key = f"{image['split']}/{image['filename']}"
            if key in seen:
                raise DatasetLayoutError(f"{where}: image {image['filename']!r} is listed twice")
            seen.add(key)
            try:
                captions = [str(s["raw"]) for s in image["sentences"]]
            except (TypeError, KeyError) as exc:
                raise DatasetLayoutError(f"{where}: every sentence needs a 'raw' caption") from exc
            if not captions:
                log.warning("%s: %s has no captions; ignored", self.slug, where)
            rows += caption_rows(str(image["split"]), str(image["filename"]), captions)
        return rows


FLICKR_SPLITS: tuple[str, ...] = ("train", "val", "test")
_BROKEN_LINE = re.compile(r"^\s*(\d+)\s+(.*)$")


def read_flickr_results(path: Path) -> dict[str, list[str]]:
    """``{image name: [captions in comment_number order of the file]}`` from ``results.csv``."""
    lines = path.read_text(encoding="utf-8").splitlines()
    if not lines or not lines[0].replace(" ", "").startswith("image_name|comment_number|comment"):
        raise DatasetLayoutError(f"{path}: line 1 must be the header 'image_name| comment_number| comment'")
    out: dict[str, list[str]] = {}
    for n, line in enumerate(lines[1:], 2):
        if not line.strip():
            continue
        parts = line.split("|", 2)
        if len(parts) == 2 and (m := _BROKEN_LINE.match(parts[1])):
            log.warning("%s: line %d lacks the delimiter after the comment number; repaired", path, n)
            parts = [parts[0], m.group(1), m.group(2)]
        if len(parts) != 3 or not parts[1].strip().isdigit():
            raise DatasetLayoutError(f"{path}: line {n}: expected '<image_name>| <comment_number>| <comment>'")
        out.setdefault(parts[0].strip(), []).append(parts[2].strip())
    return out


@register_dataset
class Flickr30kTextAdapter(CaptionAdapter):
    """Flickr30K captions (Kaggle ``results.csv``) with Karpathy's split lists."""

    slug = "flickr30k_text"
    folder = "Flickr30K"
    expected_sizes = {"train": 29000, "val": 1014, "test": 1000}
    protocol = caption_protocol("val")
    required = ("results.csv", *(f"karpathy_{s}.txt" for s in FLICKR_SPLITS))
    layout = (
        "<dataroot>/Flickr30K/\n"
        "|-- results.csv           # 'image_name| comment_number| comment' header, one caption per line\n"
        "|-- karpathy_train.txt    # one image name per line (with or without .jpg)\n"
        "|-- karpathy_val.txt\n"
        "|-- karpathy_test.txt\n"
        "|-- flickr30k_images/     # images (not needed for text retrieval)"
    )

    def rows(self, folder: Path, classnames: list[str]) -> list[Row]:
        """Images of each Karpathy split in ``results.csv`` order; captions in file order."""
        captions = read_flickr_results(folder / "results.csv")
        split_of: dict[str, str] = {}
        for split in FLICKR_SPLITS:
            path = folder / f"karpathy_{split}.txt"
            for line in path.read_text(encoding="utf-8").splitlines():
                name = line.strip()
                if not name:
                    continue
                name = name if name.endswith(".jpg") else f"{name}.jpg"
                if split_of.setdefault(name, split) != split:
                    raise DatasetLayoutError(f"{path}: {name!r} is also in karpathy_{split_of[name]}.txt")
        missing = sorted(set(split_of) - set(captions))
        if missing:
            raise DatasetLayoutError(
                f"{folder / 'results.csv'}: no captions for {len(missing)} image(s) of the Karpathy split "
                f"lists, e.g. {missing[:5]}"
            )
        unused = len(set(captions) - set(split_of))
        if unused:
            log.info("%s: %d image(s) of results.csv are in no Karpathy split; ignored", self.slug, unused)
        rows: list[Row] = []
        for split in FLICKR_SPLITS:
            for name, caps in captions.items():
                if split_of.get(name) == split:
                    rows += caption_rows(split, name, caps)
        return rows


@register_dataset
class NocapsTextAdapter(CaptionAdapter):
    """nocaps validation captions (COCO-style annotation file)."""

    slug = "nocaps_text"
    folder = "nocaps"
    expected_sizes = {"val": 4500}
    protocol = caption_protocol("val")
    required = ("nocaps_val_4500_captions.json",)
    layout = (
        "<dataroot>/nocaps/\n"
        '|-- nocaps_val_4500_captions.json   # {"images": [{"id", "file_name", ...}], '
        '"annotations": [{"image_id", "caption", ...}]}'
    )

    def rows(self, folder: Path, classnames: list[str]) -> list[Row]:
        """Images in order of their first caption in ``annotations``; captions in file order."""
        path = folder / "nocaps_val_4500_captions.json"
        data = read_json(path)
        if (
            not isinstance(data, dict)
            or not isinstance(data.get("images"), list)
            or not isinstance(data.get("annotations"), list)
        ):
            raise DatasetLayoutError(f"{path}: expected a JSON object with 'images' and 'annotations' lists")
        names: dict[Any, str] = {}
        for i, image in enumerate(data["images"]):
            if not isinstance(image, dict) or "id" not in image or "file_name" not in image:
                raise DatasetLayoutError(f"{path}: images[{i}]: expected keys 'id' and 'file_name'")
            names[image["id"]] = str(image["file_name"])
        by_image: dict[Any, list[str]] = {}
        for i, ann in enumerate(data["annotations"]):
            if not isinstance(ann, dict) or "image_id" not in ann or not isinstance(ann.get("caption"), str):
                raise DatasetLayoutError(f"{path}: annotations[{i}]: expected 'image_id' and a string 'caption'")
            if ann["image_id"] not in names:
                raise DatasetLayoutError(f"{path}: annotations[{i}]: image_id {ann['image_id']!r} is not in 'images'")
            by_image.setdefault(ann["image_id"], []).append(ann["caption"])
        uncaptioned = len(set(names) - set(by_image))
        if uncaptioned:
            log.warning("%s: %d image(s) of %s have no caption", self.slug, uncaptioned, path)
        rows: list[Row] = []
        for image_id, caps in by_image.items():
            rows += caption_rows("val", names[image_id], caps)
        return rows
