"""The abstract dataset adapter: locate a dataset, list its rows, check files, build a manifest.

A concrete adapter states ``slug``, ``folder``, ``expected_sizes``, ``templates``,
``protocol``, ``layout`` and ``required`` and implements :meth:`DatasetAdapter.classnames`
and :meth:`DatasetAdapter.rows`. Everything else (counting, file checks, skipping,
metadata) is shared here.
"""

from __future__ import annotations

import copy
import logging
import os
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import pandas as pd

from crossgap.datasets.checks import count_warnings, scan_files
from crossgap.datasets.errors import DatasetIntegrityError, DatasetNotFoundError, FileProblem
from crossgap.datasets.images import DEFAULT_TRUNCATED_IMAGES, split_truncated, truncated_meta, truncated_policy
from crossgap.datasets.manifest import MANIFEST_COLUMNS, crossgap_version, validate_frame

log = logging.getLogger(__name__)

Row = dict[str, Any]

#: Protocol shared by datasets with train/test splits and no captions.
LABEL_RETRIEVAL_PROTOCOL: dict[str, Any] = {
    "image_retrieval": {
        "query": {"split": "test", "select": "all"},
        "gallery": {"split": "train", "select": "all"},
        "relevance": "label",
    },
    "text_retrieval": None,
    "zero_shot": {"split": "test", "select": "all"},
}


def image_row(split: str, path: str, label: int, classname: str | None) -> Row:
    """A manifest row for an image; its id is ``"<split>/<path>"``."""
    return {
        "id": f"{split}/{path}",
        "split": split,
        "modality": "image",
        "path": path,
        "text": None,
        "label": int(label),
        "classname": classname,
        "group": None,
    }


def text_rows(image: Row, captions: list[str]) -> list[Row]:
    """Manifest rows for the captions of ``image``: ids ``"<image id>#<k>"``, group = image id."""
    return [
        {
            "id": f"{image['id']}#{k}",
            "split": image["split"],
            "modality": "text",
            "path": None,
            "text": text,
            "label": image["label"],
            "classname": image["classname"],
            "group": image["id"],
        }
        for k, text in enumerate(captions)
    ]


def frame_from_rows(rows: list[Row]) -> pd.DataFrame:
    """Rows -> a DataFrame with exactly :data:`MANIFEST_COLUMNS` and an int64 label."""
    df = pd.DataFrame.from_records(rows, columns=list(MANIFEST_COLUMNS))
    df["label"] = df["label"].astype("int64")
    return df


def coop_classname(name: str) -> str:
    """Class name as CoOp prompts it: underscores become spaces."""
    return name.replace("_", " ").strip()


@dataclass
class Inspection:
    """What :meth:`DatasetAdapter.inspect` found (before anything is skipped)."""

    folder: Path
    image_root: Path
    classnames: list[str]
    frame: pd.DataFrame
    counts: dict[str, int]
    warnings: list[str]
    problems: list[FileProblem]


class DatasetAdapter(ABC):
    """Knows one dataset's on-disk layout and turns it into manifest rows."""

    slug: str = ""
    folder: str = ""
    version: str = "1"
    #: images per split in the published split; empty = no count check
    expected_sizes: Mapping[str, int] = {}
    num_classes: int | None = None
    templates: tuple[str, ...] = ("a photo of a {}.",)
    protocol: Mapping[str, Any] = LABEL_RETRIEVAL_PROTOCOL
    #: paths (relative to the dataset folder) that must exist, and the tree shown when they do not
    required: tuple[str, ...] = ()
    layout: str = ""
    #: folder (relative to the dataset folder) that manifest ``path`` values are relative to
    images_dir: str = ""

    # ------------------------------------------------------------------ layout
    def dataset_dir(self, dataroot: str | os.PathLike) -> Path:
        """Where the dataset must live: ``<dataroot>/<folder>`` (absolute)."""
        return Path(dataroot).expanduser().absolute() / self.folder

    def locate(self, dataroot: str | os.PathLike) -> Path:
        """The dataset folder; :class:`DatasetNotFoundError` says where it looked and the expected layout."""
        folder = self.dataset_dir(dataroot)
        if not folder.is_dir():
            missing = [str(folder)]
        else:
            missing = [str(folder / rel) for rel in self.required if not (folder / rel).exists()]
        if missing:
            raise DatasetNotFoundError(
                f"{self.slug}: dataset not found under dataroot {Path(dataroot).expanduser().absolute()}; "
                f"looked for: {', '.join(missing)}\nExpected layout:\n{self.layout.rstrip()}"
            )
        return folder

    def image_root(self, folder: Path) -> Path:
        """The folder manifest ``path`` values are relative to."""
        return folder / self.images_dir if self.images_dir else folder

    @abstractmethod
    def classnames(self, folder: Path) -> list[str]:
        """Class names indexed by label, for the dataset located at ``folder``."""

    @abstractmethod
    def rows(self, folder: Path, classnames: list[str]) -> list[Row]:
        """All manifest rows (images, then any texts), in manifest order."""

    # ------------------------------------------------------------------ checks
    def inspect(
        self, dataroot: str | os.PathLike, *, check_images: bool = True, workers: int | None = None
    ) -> Inspection:
        """Locate, list, count and check files; logs count mismatches as warnings."""
        folder = self.locate(dataroot)
        names = self.classnames(folder)
        df = frame_from_rows(self.rows(folder, names))
        validate_frame(df, f"{self.slug} adapter output")
        images = df[df["modality"] == "image"]
        counts = {str(k): int(v) for k, v in images["split"].value_counts(sort=False).items()}
        warnings = count_warnings(self.slug, counts, self.expected_sizes)
        if self.num_classes is not None and len(names) != self.num_classes:
            warnings.append(f"{self.slug}: {len(names)} classes, expected {self.num_classes}")
        for message in warnings:
            log.warning(message)
        root = self.image_root(folder)
        problems = scan_files(
            root,
            zip(images["id"], images["path"]),
            check_images=check_images,
            workers=workers,
            desc=f"{self.slug} files",
        )
        log.info(
            "%s: %s images (%d classes) in %s; %d problem file(s)", self.slug, counts, len(names), root, len(problems)
        )
        return Inspection(folder, root, names, df, counts, warnings, problems)

    # ------------------------------------------------------------------ build
    def build(
        self,
        dataroot: str | os.PathLike,
        *,
        skip_corrupt: bool = False,
        check_images: bool = True,
        workers: int | None = None,
        truncated_images: str = DEFAULT_TRUNCATED_IMAGES,
    ) -> tuple[pd.DataFrame, dict[str, Any]]:
        """Manifest ``(df, meta)`` for this dataset.

        Missing or undecodable images raise :class:`DatasetIntegrityError` listing them,
        unless ``skip_corrupt``: then they (and captions of their images) are dropped and
        recorded in ``meta["skipped"]``.  Images that decode only with PIL's truncated loading
        follow ``truncated_images`` alone (:mod:`crossgap.datasets.images`): ``load`` keeps them,
        ``skip`` drops them like a skipped file, ``fail`` raises; the mode, count and ids are
        recorded in ``meta["truncated_images"]``.
        """
        policy = truncated_policy(truncated_images)
        ins = self.inspect(dataroot, check_images=check_images, workers=workers)
        truncated, others = split_truncated(ins.problems)
        refused = (truncated if policy.fail else []) + ([] if skip_corrupt else others)
        if refused:
            raise DatasetIntegrityError(self.slug, refused)
        dropped = others + ([] if policy.keep else truncated)
        df, skipped = ins.frame, [p.to_json() for p in dropped]
        if truncated:
            log.warning("%s: %d image(s) decode only with truncated loading: %s (truncated_images: %s)",
                        self.slug, len(truncated), policy.action, policy.name)
        if dropped:
            bad = {p.id for p in dropped}
            orphans = df[df["group"].isin(bad) & ~df["id"].isin(bad)]
            skipped += [
                {"id": i, "path": "", "kind": "orphan", "reason": f"source image {g!r} was skipped"}
                for i, g in zip(orphans["id"], orphans["group"])
            ]
            drop = bad | set(orphans["id"])
            df = df[~df["id"].isin(drop)].reset_index(drop=True)
            log.warning("%s: skipped %d row(s) (missing/corrupt/truncated files and their captions)",
                        self.slug, len(drop))
        meta = {
            "dataset": self.slug,
            "adapter": f"{type(self).__module__}.{type(self).__qualname__}",
            "adapter_version": self.version,
            "dataroot": str(Path(dataroot).expanduser().absolute()),
            "root": str(ins.image_root),
            "classnames": list(ins.classnames),
            "templates": list(self.templates),
            "protocol": copy.deepcopy(dict(self.protocol)),
            "skipped": skipped,
            "expected_sizes": dict(self.expected_sizes),
            "counts": ins.counts,
            "check_images": check_images,
            "truncated_images": truncated_meta(policy, truncated, check_images),
            "created_by": f"crossgap {crossgap_version()}",
        }
        return df, meta

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.slug!r}>"
