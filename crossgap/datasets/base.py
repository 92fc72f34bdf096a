"""The dataset adapter: locate a dataset, list its rows, check its files, build its manifest.

Every adapter subclasses :class:`DatasetAdapter`. A concrete adapter states ``slug``,
``folder``, ``expected_sizes``, ``templates``, ``protocol`` (:mod:`crossgap.datasets.protocols`),
``layout`` and ``required``, says what its sizes count with ``unit`` (``"images"``, ``"texts"``
or ``"groups"``: caption groups, one per source image) and implements
:meth:`~DatasetAdapter.classnames` and :meth:`~DatasetAdapter.rows`. Optional hooks (each has
a default, so an adapter overrides only what its dataset needs):

* :meth:`~DatasetAdapter.read`: the rows *and* the problems found while reading them (text
  files that cannot be read; WebDataset shards, whose images are decoded while streaming);
* :meth:`~DatasetAdapter.check_files`: how the image files the rows name are checked (default:
  each must exist and decode);
* :meth:`~DatasetAdapter.extra_warnings`: checks beyond the per-split counts (e.g. classes per split);
* :meth:`~DatasetAdapter.extra_meta`: metadata keys beyond the common ones (``gnd``, ``qrels``, ...).

Everything else (counting, count warnings, skipping, metadata) is shared here. Adapters
whose layout and protocol come from ``datasets.<name>.options`` in params subclass it through
:class:`crossgap.datasets.options.ConfigurableAdapter`. Rows are built with
:mod:`crossgap.datasets.rows`, folders listed with :func:`crossgap.datasets.files.visible_entries`.
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

from crossgap.datasets.errors import DatasetIntegrityError, DatasetNotFoundError, FileProblem, skipped_summary
from crossgap.datasets.files import scan_files
from crossgap.datasets.images import DEFAULT_TRUNCATED_IMAGES, split_truncated, truncated_meta, truncated_policy
from crossgap.datasets.manifest import crossgap_version, validate_frame, validate_meta
from crossgap.datasets.protocols import LABEL_RETRIEVAL_PROTOCOL
from crossgap.datasets.rows import Row, frame_from_rows

log = logging.getLogger(__name__)

#: What an adapter's ``counts`` (and ``expected_sizes``) count, and the word its warnings use:
#: image rows, text rows, or caption groups (one per source image, so they read as images).
COUNT_UNITS: dict[str, str] = {"images": "images", "texts": "texts", "groups": "images"}


def count_warnings(
    dataset: str, counts: Mapping[str, int], expected: Mapping[str, int], unit: str = "images"
) -> list[str]:
    """One message per split whose count (of ``unit``) differs from ``expected`` (empty ``expected``: no check)."""
    if not expected:
        return []
    out = []
    for split in sorted(set(counts) | set(expected)):
        have, want = counts.get(split, 0), expected.get(split)
        if want is None:
            out.append(
                f"{dataset}: split {split!r} has {have} {unit} but is not an expected split ({sorted(expected)})"
            )
        elif have != want:
            out.append(f"{dataset}: split {split!r} has {have} {unit}, expected {want}")
    return out


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
    #: what ``expected_sizes`` and ``counts`` count: a key of :data:`COUNT_UNITS`
    unit: str = "images"
    #: items (of ``unit``) per split in the published split; empty = no count check
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

    # ------------------------------------------------------------------ optional hooks
    def read(
        self, folder: Path, classnames: list[str], *, check_images: bool = True, workers: int | None = None
    ) -> tuple[list[Row], list[FileProblem]]:
        """The rows of :meth:`rows` and the problems found while reading them (default: none).

        An adapter whose source files can be unreadable returns such a row anyway (text ``""``)
        and lists it as a problem, so that ``build`` can stop or skip it. ``check_images`` and
        ``workers`` are :meth:`inspect`'s, for adapters that check images while reading.
        """
        return self.rows(folder, classnames), []

    def check_files(
        self, root: Path, images: pd.DataFrame, *, check_images: bool = True, workers: int | None = None
    ) -> list[FileProblem]:
        """Problems of the image files of the image rows ``images`` (relative to ``root``):
        missing, and with ``check_images`` corrupt or truncated (:func:`~crossgap.datasets.files.scan_files`)."""
        if not len(images):
            return []
        return scan_files(root, zip(images["id"], images["path"]), check_images=check_images, workers=workers,
                          desc=f"{self.slug} files")

    def extra_warnings(self, ins: Inspection) -> list[str]:
        """Warnings beyond the per-split counts (e.g. number of classes per split)."""
        return []

    def extra_meta(self, folder: Path, df: pd.DataFrame) -> dict[str, Any]:
        """Metadata keys to add to the built manifest (``df`` is after any skipping)."""
        return {}

    # ------------------------------------------------------------------ checks
    def counts(self, df: pd.DataFrame) -> dict[str, int]:
        """Items of :attr:`unit` per split, in manifest order of the splits."""
        if self.unit == "images":
            per = df.loc[df["modality"] == "image", "split"].value_counts(sort=False)
        else:
            texts = df[df["modality"] == "text"]
            if self.unit == "groups":
                keys = texts["group"].where(texts["group"].notna(), texts["id"])
                per = keys.groupby(texts["split"], sort=False).nunique()
            else:
                per = texts["split"].value_counts(sort=False)
        return {str(k): int(v) for k, v in per.items()}

    def inspect(
        self, dataroot: str | os.PathLike, *, check_images: bool = True, workers: int | None = None
    ) -> Inspection:
        """Locate, read, count and check files; count mismatches and :meth:`extra_warnings` are logged."""
        folder = self.locate(dataroot)
        names = self.classnames(folder)
        rows, problems = self.read(folder, names, check_images=check_images, workers=workers)
        df = frame_from_rows(rows)
        validate_frame(df, f"{self.slug} adapter output")
        counts = self.counts(df)
        warnings = count_warnings(self.slug, counts, self.expected_sizes, COUNT_UNITS[self.unit])
        if self.num_classes is not None and len(names) != self.num_classes:
            warnings.append(f"{self.slug}: {len(names)} classes, expected {self.num_classes}")
        for message in warnings:
            log.warning(message)
        root = self.image_root(folder)
        problems = problems + self.check_files(root, df[df["modality"] == "image"], check_images=check_images,
                                               workers=workers)
        log.info("%s: %s %s (%d classes) in %s; %d problem(s)", self.slug, counts, self.unit, len(names), root,
                 len(problems))
        ins = Inspection(folder, root, names, df, counts, warnings, problems)
        extra = self.extra_warnings(ins)
        for message in extra:
            log.warning(message)
        ins.warnings = [*warnings, *extra]
        return ins

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
        """Manifest ``(df, meta)`` for this dataset; the metadata is validated.

        Missing or undecodable files raise :class:`DatasetIntegrityError` listing them,
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
            log.warning("%s: %s", self.slug, skipped_summary(skipped))
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
            "count_unit": self.unit,
            "check_images": check_images,
            "truncated_images": truncated_meta(policy, truncated, check_images),
            "created_by": f"crossgap {crossgap_version()}",
        }
        if self.unit != "images":  # text datasets also record their text rows per split
            texts = df[df["modality"] == "text"]
            meta["text_counts"] = {str(k): int(v) for k, v in texts["split"].value_counts(sort=False).items()}
        meta.update(self.extra_meta(ins.folder, df))
        validate_meta(meta, f"{self.slug} adapter output")
        return df, meta

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.slug!r}>"
