"""Shared pieces of the adapters of part 2: extra metadata, extra warnings, text-only datasets.

:class:`ExtendedAdapter` is a :class:`~crossgap.datasets.base.DatasetAdapter` that can add
metadata keys (e.g. the ``gnd`` of a revisited dataset, the ``qrels`` of a BEIR one) and
extra checks (e.g. class counts) to what the base class produces.

:class:`TextDatasetAdapter` is for datasets that hold only texts: their sizes are counted
in texts (``count_unit = "texts"``) or in caption groups (``count_unit = "groups"``, one per
source image) instead of images, and a text file that cannot be read becomes a
:class:`~crossgap.datasets.errors.FileProblem` (the build stops, or skips that row with
``skip_corrupt``), just like an undecodable image.
"""

from __future__ import annotations

import logging
import os
from abc import abstractmethod
from pathlib import Path
from typing import Any

import pandas as pd

from crossgap.datasets.base import DatasetAdapter, Inspection, Row, frame_from_rows
from crossgap.datasets.checks import count_warnings, scan_files
from crossgap.datasets.errors import DatasetLayoutError, FileProblem
from crossgap.datasets.images import DEFAULT_TRUNCATED_IMAGES
from crossgap.datasets.manifest import validate_frame, validate_meta

log = logging.getLogger(__name__)

#: Protocol of a dataset that only supports zero-shot classification on its ``test`` split.
ZERO_SHOT_ONLY: dict[str, Any] = {
    "image_retrieval": None,
    "text_retrieval": None,
    "zero_shot": {"split": "test", "select": "all"},
}


def plain_text_row(split: str, key: str, text: str, label: int = -1, classname: str | None = None) -> Row:
    """A text row that is not a caption of an image: id ``"<split>/<key>"``, no group."""
    return {
        "id": f"{split}/{key}",
        "split": split,
        "modality": "text",
        "path": None,
        "text": text,
        "label": int(label),
        "classname": classname,
        "group": None,
    }


def caption_rows(split: str, image_key: str, captions: list[str]) -> list[Row]:
    """Caption rows of an image that is *not* itself in the manifest.

    Ids are ``"<split>/<image_key>#<k>"`` and ``group`` is ``"<split>/<image_key>"`` (the
    id the image would have), so ``relevance: group`` means "captions of the same image".
    """
    group = f"{split}/{image_key}"
    return [
        {
            "id": f"{group}#{k}",
            "split": split,
            "modality": "text",
            "path": None,
            "text": text,
            "label": -1,
            "classname": None,
            "group": group,
        }
        for k, text in enumerate(captions)
    ]


def strip_split(row_id: str) -> str:
    """``"corpus/abc"`` -> ``"abc"``: the dataset's own key of a row."""
    return row_id.split("/", 1)[1] if "/" in row_id else row_id


class ExtendedAdapter(DatasetAdapter):
    """A dataset adapter with hooks for extra metadata keys and extra warnings."""

    #: what ``counts`` count (informational; the check report calls them "images")
    count_unit: str = "images"

    def extra_meta(self, folder: Path, df: pd.DataFrame) -> dict[str, Any]:
        """Metadata keys to add to the built manifest (``df`` is after any skipping)."""
        return {}

    def extra_warnings(self, ins: Inspection) -> list[str]:
        """Warnings beyond the per-split counts (e.g. number of classes per split)."""
        return []

    def inspect(
        self, dataroot: str | os.PathLike, *, check_images: bool = True, workers: int | None = None
    ) -> Inspection:
        """As the base class, plus :meth:`extra_warnings` (logged and reported)."""
        ins = super().inspect(dataroot, check_images=check_images, workers=workers)
        return self._add_warnings(ins)

    def _add_warnings(self, ins: Inspection) -> Inspection:
        extra = self.extra_warnings(ins)
        for message in extra:
            log.warning(message)
        ins.warnings = [*ins.warnings, *extra]
        return ins

    def build(
        self,
        dataroot: str | os.PathLike,
        *,
        skip_corrupt: bool = False,
        check_images: bool = True,
        workers: int | None = None,
        truncated_images: str = DEFAULT_TRUNCATED_IMAGES,
    ) -> tuple[pd.DataFrame, dict[str, Any]]:
        """As the base class, plus :meth:`extra_meta`; the metadata is validated."""
        df, meta = super().build(dataroot, skip_corrupt=skip_corrupt, check_images=check_images, workers=workers,
                                 truncated_images=truncated_images)
        meta.update(self.extra_meta(self.locate(dataroot), df))
        meta["count_unit"] = self.count_unit
        validate_meta(meta, f"{self.slug} adapter output")
        return df, meta


class TextDatasetAdapter(ExtendedAdapter):
    """A dataset of texts only. Subclasses implement :meth:`read` instead of ``rows``."""

    count_unit = "texts"
    templates: tuple[str, ...] = ()
    num_classes: int | None = None

    @abstractmethod
    def read(self, folder: Path, classnames: list[str]) -> tuple[list[Row], list[FileProblem]]:
        """All rows in manifest order, and the rows whose source file could not be read.

        A row listed as a problem is still returned (with text ``""``) so that ``build``
        can either stop or skip it.
        """

    def rows(self, folder: Path, classnames: list[str]) -> list[Row]:
        """The rows of :meth:`read`."""
        return self.read(folder, classnames)[0]

    def counts(self, df: pd.DataFrame) -> dict[str, int]:
        """Texts (or caption groups) per split, in manifest order of the splits."""
        texts = df[df["modality"] == "text"]
        if self.count_unit == "groups":
            keys = texts["group"].where(texts["group"].notna(), texts["id"])
            per = keys.groupby(texts["split"], sort=False).nunique()
        else:
            per = texts["split"].value_counts(sort=False)
        return {str(k): int(v) for k, v in per.items()}

    def inspect(
        self, dataroot: str | os.PathLike, *, check_images: bool = True, workers: int | None = None
    ) -> Inspection:
        """Locate, read, count; file problems are the unreadable text files (and any image rows)."""
        folder = self.locate(dataroot)
        names = self.classnames(folder)
        rows, problems = self.read(folder, names)
        df = frame_from_rows(rows)
        validate_frame(df, f"{self.slug} adapter output")
        counts = self.counts(df)
        warnings = count_warnings(self.slug, counts, self.expected_sizes)
        if self.count_unit == "texts":  # count_warnings speaks of images
            warnings = [w.replace(" images", " texts") for w in warnings]
        if self.num_classes is not None and len(names) != self.num_classes:
            warnings.append(f"{self.slug}: {len(names)} classes, expected {self.num_classes}")
        for message in warnings:
            log.warning(message)
        root = self.image_root(folder)
        images = df[df["modality"] == "image"]
        if len(images):
            problems = problems + scan_files(
                root, zip(images["id"], images["path"]), check_images=check_images, workers=workers
            )
        log.info("%s: %s %s in %s; %d problem file(s)", self.slug, counts, self.count_unit, folder, len(problems))
        return self._add_warnings(Inspection(folder, root, names, df, counts, warnings, problems))

    def extra_meta(self, folder: Path, df: pd.DataFrame) -> dict[str, Any]:
        """Text rows per split (``text_counts``)."""
        texts = df[df["modality"] == "text"]
        return {"text_counts": {str(k): int(v) for k, v in texts["split"].value_counts(sort=False).items()}}


def read_text_file(path: Path, row_id: str, encoding: str = "utf-8") -> tuple[str, FileProblem | None]:
    """The content of ``path``, or ``""`` and a :class:`FileProblem` when it cannot be read."""
    try:
        return path.read_bytes().decode(encoding), None
    except FileNotFoundError:
        return "", FileProblem(row_id, str(path), "missing", "file does not exist")
    except (OSError, UnicodeDecodeError) as exc:
        return "", FileProblem(row_id, str(path), "corrupt", f"{type(exc).__name__}: {exc}")


def require_columns(df: pd.DataFrame, columns: tuple[str, ...], path: Path, layout: str) -> None:
    """Raise :class:`DatasetLayoutError` naming ``path`` when ``df`` lacks any of ``columns``."""
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise DatasetLayoutError(f"{path}: missing column(s) {missing}; found {list(df.columns)}; expected {layout}")
