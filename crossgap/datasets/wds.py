"""``wds``: CLIP_benchmark's WebDataset layout, read from the tar shards without unpacking.

Layout, as ``build_wds_dataset`` in CLIP_benchmark's ``clip_benchmark/datasets/builder.py``
reads it and ``clip_benchmark.webdataset_builder.convert_dataset`` writes it (the data root
*is* this folder)::

    <dataroot>/
      <split>/nshards.txt                        number of shards N (mandatory)
      <split>/0.tar ... <split>/{N-1}.tar        samples s0000000.webp + s0000000.cls, ...
      classnames.txt                             class names, line i = label i (classification)
      zeroshot_classification_templates.txt      one template per line, "{c}" = the class name
      dataset_type.txt                           "retrieval" for caption shards; absent = classification

A sample's image is its first ``webp``, ``png``, ``jpg`` or ``jpeg`` member (the builder's
order); a classification sample has a ``.cls`` (the integer label), a retrieval sample a
``.txt`` (captions, one per line). Every template of the template file is kept, so the
zero-shot classifier averages them all, as CLIP_benchmark does (``{c}`` becomes ``{}``).

Options state what the protocol needs without reading data: ``dataset_type`` (checked
against ``dataset_type.txt`` when the manifest is built), ``split`` (queries, zero-shot
images) and ``gallery_split`` (classification: the image-retrieval gallery; ``null``: the
split against itself, leave-one-out). Classification: image retrieval (same label) and
zero-shot; retrieval: text retrieval (first caption vs the other captions of the split,
relevant = same image) and the modality gap (images with their first caption).

Manifest image paths point into the shards (``"test/0.tar#s0000000.webp"``, see
:mod:`crossgap.datasets.tarshards`); ``crossgap.features`` streams them shard by shard.
"""

from __future__ import annotations

import json
import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pandas as pd
from PIL import Image

from crossgap.datasets.base import Inspection
from crossgap.datasets.errors import DatasetLayoutError, DatasetNotFoundError, FileProblem
from crossgap.datasets.files import default_workers
from crossgap.datasets.images import TRUNCATED, truncated_loading
from crossgap.datasets.options import DEFAULT_TEMPLATES, ConfigurableAdapter, DatasetOptionsError, check_query_gallery
from crossgap.datasets.protocols import ProtocolDict, classification_protocol, group_retrieval, make_protocol
from crossgap.datasets.registry import register_dataset
from crossgap.datasets.rows import Row, image_row, text_rows
from crossgap.datasets.tarshards import (
    NamedBytes,
    TarReadError,
    iter_samples,
    key_and_ext,
    member_ref,
    parse_member_ref,
    read_member,
)

log = logging.getLogger(__name__)

#: Image extensions in the order the builder tries them (``to_tuple(["webp", "png", "jpg", "jpeg"], ...)``).
IMAGE_EXTENSIONS: tuple[str, ...] = ("webp", "png", "jpg", "jpeg")
DATASET_TYPES: tuple[str, ...] = ("classification", "retrieval")
CLASSNAMES, TEMPLATES, TYPE_FILE, NSHARDS = (
    "classnames.txt", "zeroshot_classification_templates.txt", "dataset_type.txt", "nshards.txt")
#: open_clip's per-split shard sizes (``{"0.tar": samples, ...}``), optional: exact losses of truncated shards
SIZES = "sizes.json"
LAYOUT = (
    "<dataroot>/<split>/nshards.txt   number of shards N\n"
    "<dataroot>/<split>/0.tar ... {N-1}.tar   samples <key>.webp|png|jpg|jpeg + <key>.cls (or <key>.txt)\n"
    f"<dataroot>/{CLASSNAMES}   class names, line i = label i (classification)\n"
    f"<dataroot>/{TEMPLATES}   (optional) one template per line with {{c}}\n"
    f"<dataroot>/{TYPE_FILE}   (optional) 'retrieval' for caption shards"
)


@dataclass(frozen=True)
class WdsOptions:
    """Options of a ``wds`` dataset (``datasets.<name>.options``)."""

    #: classification (.cls labels) or retrieval (.txt captions); must agree with dataset_type.txt
    dataset_type: str = "classification"
    #: split read for queries and zero-shot (a folder with nshards.txt)
    split: str = "test"
    #: classification: image-retrieval gallery split; null: ``split`` against itself (leave-one-out)
    gallery_split: str | None = None
    #: zero-shot templates with ``{}``; null: zeroshot_classification_templates.txt (else "a photo of a {}.")
    templates: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        if self.dataset_type not in DATASET_TYPES:
            raise DatasetOptionsError(f"dataset_type: expected one of {list(DATASET_TYPES)}, got {self.dataset_type!r}")
        check_query_gallery(self.split, self.gallery_split, "split")
        if self.gallery_split is not None and self.dataset_type == "retrieval":
            raise DatasetOptionsError("gallery_split: retrieval shards have no labels for image retrieval; use null")

    @property
    def splits(self) -> tuple[str, ...]:
        """Splits read, in manifest order (gallery first)."""
        g = self.gallery_split
        return (g, self.split) if g and g != self.split else (self.split,)


def decode_text(data: bytes, where: str, what: str) -> str:
    """``data`` decoded as UTF-8, else :class:`DatasetLayoutError` naming ``where`` (a file or ``shard#member``)."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DatasetLayoutError(
            f"{where}: {what} is not UTF-8 text (byte {exc.start}: {data[exc.start:exc.start + 4]!r}); "
            "expected UTF-8 text"
        ) from None


def read_text(path: Path, what: str) -> str:
    """The UTF-8 text of the metadata file ``path`` (a clear error naming it when it is not UTF-8)."""
    return decode_text(path.read_bytes(), str(path), what)


def read_lines(path: Path) -> list[str]:
    """Stripped lines (as the builder reads them) without trailing blank lines."""
    lines = [line.strip() for line in read_text(path, "the file").splitlines()]
    while lines and not lines[-1]:
        lines.pop()
    return lines


def read_dataset_type(folder: Path) -> str:
    """``dataset_type.txt`` stripped and lower-cased; ``classification`` when absent (as the builder)."""
    path = folder / TYPE_FILE
    return read_text(path, "the dataset type").strip().lower() if path.is_file() else "classification"


def check_dataset_type(folder: Path) -> str:
    """:func:`read_dataset_type`, which must be one of :data:`DATASET_TYPES` (else an error naming the file)."""
    found = read_dataset_type(folder)
    if found not in DATASET_TYPES:
        raise DatasetLayoutError(
            f"{folder / TYPE_FILE}: dataset type {found!r} is not supported; expected one of {list(DATASET_TYPES)}"
        )
    return found


def verify_bytes(data: bytes, ref: str = "<member>") -> str | None:
    """``None`` if ``data`` decodes completely as an image (under PIL's current setting), else why not."""
    try:
        with Image.open(NamedBytes(data, ref)) as im:
            im.load()
    except Exception as exc:  # noqa: BLE001 - any decoder failure means "unreadable"
        return f"{type(exc).__name__}: {exc}"
    return None


def reclassify_truncated_members(problems: list[FileProblem]) -> list[FileProblem]:
    """Corrupt image members that decode with PIL's truncated loading become ``truncated`` problems
    (as :func:`crossgap.datasets.images.reclassify_truncated` does for files)."""
    out = []
    with truncated_loading(True):
        for p in problems:
            ref = parse_member_ref(p.path)
            if p.kind == "corrupt" and ref is not None and not p.unread:
                try:
                    ok = verify_bytes(read_member(*ref), p.path) is None
                except TarReadError:
                    ok = False
                if ok:
                    p = FileProblem(p.id, p.path, TRUNCATED, f"decodes only with LOAD_TRUNCATED_IMAGES ({p.reason})")
            out.append(p)
    return out


@register_dataset
class WdsAdapter(ConfigurableAdapter):
    """CLIP_benchmark WebDataset shards (classification or retrieval)."""

    slug = "wds"
    options_type = WdsOptions
    options: WdsOptions

    def __init__(self, options: WdsOptions | None = None, name: str | None = None) -> None:
        super().__init__(options, name)
        self.required = tuple(f"{s}/{NSHARDS}" for s in self.options.splits)
        self.layout = LAYOUT

    @classmethod
    def options_protocol(cls, options: WdsOptions) -> ProtocolDict:
        """Classification: image retrieval + zero-shot; retrieval: text retrieval + the modality gap."""
        if options.dataset_type == "retrieval":
            return make_protocol(text_retrieval=group_retrieval(options.split), modality_gap=options.split)
        return classification_protocol(options.split, options.gallery_split)

    # ------------------------------------------------------------------ metadata files
    def check_type(self, folder: Path) -> str:
        """``dataset_type.txt`` must agree with ``options.dataset_type`` (the DAG was planned from it)."""
        found = check_dataset_type(folder)
        if found != self.options.dataset_type:
            raise DatasetOptionsError(
                f"{folder / TYPE_FILE}: the shards are {found!r} but options.dataset_type is "
                f"{self.options.dataset_type!r}; set dataset_type: {found} in the dataset's options"
            )
        return found

    def classnames(self, folder: Path) -> list[str]:
        """``classnames.txt`` (line i = label i); retrieval shards have no classes.

        The shards' ``dataset_type.txt`` is checked first (:meth:`check_type`).
        """
        self.check_type(folder)
        if self.options.dataset_type == "retrieval":
            return []
        path = folder / CLASSNAMES
        if not path.is_file():
            raise DatasetNotFoundError(
                f"{path}: missing; classification shards need class names (line i = label i); "
                f"a {TYPE_FILE} saying 'retrieval' marks caption shards"
            )
        names = read_lines(path)
        empty = [n for n, name in enumerate(names, 1) if not name]
        if not names or empty:
            raise DatasetLayoutError(f"{path}: expected one class name per line, line i = label i; empty line(s) {empty}")
        if len(set(names)) < len(names):
            log.warning("%s: some class names repeat; their prompts will be identical", path)
        return names

    def read_templates(self, folder: Path) -> list[str]:
        """Zero-shot templates: the options', else every line of the template file (``{c}`` -> ``{}``)."""
        if self.options.dataset_type == "retrieval":
            return []
        if self.options.templates:
            return list(self.options.templates)
        path = folder / TEMPLATES
        if not path.is_file():
            log.warning("%s: no %s; using %s", self.slug, path, list(DEFAULT_TEMPLATES))
            return list(DEFAULT_TEMPLATES)
        out = []
        for n, line in enumerate(read_lines(path), 1):
            template = line.replace("{c}", "{}")
            if line and template.count("{}") != 1:
                raise DatasetLayoutError(f"{path}: line {n}: expected a template with one '{{c}}', got {line!r}")
            out += [template] if line else []
        if not out:
            raise DatasetLayoutError(f"{path}: no templates; expected one template per line with '{{c}}'")
        return out

    def shards(self, folder: Path, split: str) -> list[Path]:
        """``<split>/0.tar ... <split>/{N-1}.tar`` with N from ``<split>/nshards.txt``."""
        path = folder / split / NSHARDS
        text = read_text(path, "the shard count").strip()
        if not text.isdigit() or int(text) < 1:
            raise DatasetLayoutError(f"{path}: expected the number of shards (a positive integer), got {text!r}")
        tars = [folder / split / f"{i}.tar" for i in range(int(text))]
        missing = [str(t) for t in tars if not t.is_file()]
        if missing:
            raise DatasetNotFoundError(f"{path} says {text} shard(s), but {', '.join(missing[:5])} do(es) not exist")
        extra = {p.name for p in (folder / split).glob("*.tar")} - {t.name for t in tars}
        if extra:
            log.warning("%s: %s not counted by %s; ignored", self.slug, sorted(extra)[:5], path)
        return tars

    # ------------------------------------------------------------------ samples
    def read_shard(self, folder: Path, split: str, tar: Path, n_classes: int, check_images: bool
                   ) -> tuple[list[Row], list[Row], list[FileProblem]]:
        """Image rows, caption rows and problems of one shard (samples after a truncation are lost)."""
        rel = tar.relative_to(folder).as_posix()
        retrieval = self.options.dataset_type == "retrieval"
        want = {"txt"} if retrieval else {"cls"}
        images: list[Row] = []
        texts: list[Row] = []
        problems: list[FileProblem] = []
        try:
            for sample in iter_samples(tar, lambda ext: ext in want or (check_images and ext in IMAGE_EXTENSIONS)):
                ext = sample.first(IMAGE_EXTENSIONS)
                label_ext = next(iter(want))
                if ext is None or label_ext not in sample.members:
                    raise DatasetLayoutError(
                        f"{tar}: sample {sample.key!r} has members {sorted(sample.members)}; expected an image "
                        f"({' or '.join(IMAGE_EXTENSIONS)}) and a .{label_ext} member"
                    )
                name, data = sample.members[ext]
                value = sample.members[label_ext][1] or b""
                row = image_row(split, member_ref(rel, name), -1, None, key=sample.key)
                where = f"{tar}#{sample.members[label_ext][0]}"
                if retrieval:
                    text = decode_text(value, where, "the caption text")
                    captions = [c.strip() for c in text.splitlines() if c.strip()]
                    texts += text_rows(row, captions)
                else:
                    row["label"] = self._label(value, where, n_classes)
                images.append(row)
                if check_images and (reason := verify_bytes(data or b"", f"{tar}#{name}")):
                    problems.append(FileProblem(row["id"], f"{tar}#{name}", "corrupt", reason))
        except TarReadError as exc:  # the sample being read and all after it in this shard are lost
            parts = key_and_ext(exc.member) if exc.member else None
            problems.append(FileProblem(f"{split}/{parts[0]}" if parts else rel,
                                        f"{tar}#{exc.member}" if exc.member else str(tar), "corrupt",
                                        f"{exc}; the samples from there to the end of the shard are missing",
                                        unread=True))
        return images, texts, problems

    def shard_sizes(self, folder: Path, split: str) -> dict[str, int]:
        """``<split>/sizes.json`` (open_clip's ``{shard file name: samples}``), or ``{}`` when absent."""
        path = folder / split / SIZES
        if not path.is_file():
            return {}
        try:
            data = json.loads(read_text(path, "the shard sizes"))
        except json.JSONDecodeError as exc:
            raise DatasetLayoutError(f"{path}: not valid JSON ({exc}); expected {{shard file name: samples}}") from None
        if not isinstance(data, dict) or not all(isinstance(v, int) and v >= 0 for v in data.values()):
            raise DatasetLayoutError(f"{path}: expected {{shard file name: number of samples}}, got {data!r}")
        return {str(k): int(v) for k, v in data.items()}

    def count_losses(self, folder: Path, split: str, shards: list[tuple[Path, list[Row], list[FileProblem]]]
                     ) -> list[FileProblem]:
        """The problems of one split's shards, each truncated shard's with the samples it lost.

        What was read is compared with, in this order: ``<split>/sizes.json`` (samples per
        shard); the entry's ``sizes`` (:attr:`expected_sizes`, images per split, written by
        ``crossgap datasets init``), when one shard of the split is truncated; the other shards
        (a shard writer fills every shard but the last, ``nshards.txt``'s N-1, with the same count).
        """
        per_shard = self.shard_sizes(folder, split)
        broken = [i for i, (_, _, problems) in enumerate(shards) if any(p.unread for p in problems)]
        full = {len(images) for i, (_, images, _) in enumerate(shards[:-1]) if i not in broken}
        read_split = sum(len(images) for _, images, _ in shards)
        out = []
        for i, (tar, images, problems) in enumerate(shards):
            for p in problems:
                if p.unread:
                    want, have, scope, source = None, len(images), "the shard", ""
                    if tar.name in per_shard:
                        want, source = per_shard[tar.name], f"{split}/{SIZES}"
                    elif split in self.expected_sizes and len(broken) == 1:
                        want, have, scope = self.expected_sizes[split], read_split, f"split {split!r}"
                        source = f"the entry's sizes.{split}"
                    elif i < len(shards) - 1 and len(full) == 1:
                        want = next(iter(full))
                        source = f"{split}/{NSHARDS}: {len(shards)} shards, the full ones hold {want} each"
                    if want is None:
                        p = replace(p, reason=f"{p.reason}; an unknown number of samples lost (no {split}/{SIZES}, "
                                    "no sizes in the entry, no full shard to compare with)")
                    else:
                        lost = max(want - have, 1)
                        p = replace(p, reason=f"{p.reason}: {lost} of the {want} samples of {scope} lost "
                                    f"({have} read; expected from {source})", lost=lost, expected=want)
                out.append(p)
        return out

    @staticmethod
    def _label(value: bytes, where: str, n_classes: int) -> int:
        text = value.decode("utf-8", "replace").strip()
        if not text.isdigit() or int(text) >= n_classes:
            raise DatasetLayoutError(f"{where}: expected a class index in 0..{n_classes - 1} "
                                     f"({CLASSNAMES} has {n_classes} names), got {text!r}")
        return int(text)

    def read(self, folder: Path, classnames: list[str], *, check_images: bool = True, workers: int | None = None
             ) -> tuple[list[Row], list[FileProblem]]:
        """Rows (images of every split, then captions) and problems, streaming shards in parallel once:
        unreadable shards, and with ``check_images`` image members that do not decode."""
        jobs = [(split, tar) for split in self.options.splits for tar in self.shards(folder, split)]
        with truncated_loading(False), ThreadPoolExecutor(max_workers=workers or default_workers()) as pool:
            parts = list(pool.map(lambda job: self.read_shard(folder, *job, len(classnames), check_images), jobs))
        images = [r for p in parts for r in p[0]]
        seen: dict[str, str] = {}
        for row in images:
            if (other := seen.setdefault(row["id"], row["path"])) != row["path"]:
                raise DatasetLayoutError(f"{folder}: sample key {row['id']!r} is in both {other} and {row['path']}")
        problems = [f for split in self.options.splits for f in self.count_losses(
            folder, split, [(tar, p[0], p[2]) for (s, tar), p in zip(jobs, parts) if s == split])]
        return images + [r for p in parts for r in p[1]], reclassify_truncated_members(problems)

    def rows(self, folder: Path, classnames: list[str]) -> list[Row]:
        """All manifest rows (images are not decoded)."""
        return self.read(folder, classnames, check_images=False)[0]

    def check_files(self, root: Path, images: pd.DataFrame, *, check_images: bool = True,
                    workers: int | None = None) -> list[FileProblem]:
        """None beyond :meth:`read`'s: it decoded every image member while streaming the shards."""
        return []

    def extra_warnings(self, ins: Inspection) -> list[str]:
        """Splits without a single complete sample."""
        return [f"{self.slug}: split {s!r} has no complete sample" for s in self.options.splits if s not in ins.counts]

    def extra_meta(self, folder: Path, df: pd.DataFrame) -> dict[str, Any]:
        """The templates of the shards' template file, the dataset type and the shard counts."""
        return {"templates": self.read_templates(folder), "dataset_type": self.options.dataset_type,
                "shards": {s: len(self.shards(folder, s)) for s in self.options.splits}}

    # ------------------------------------------------------------------ init
    @classmethod
    def detect(cls, path: Path) -> tuple[Path, dict[str, Any]]:
        """Type from ``dataset_type.txt``; ``test`` (else the only split) queried; ``train`` as gallery."""
        if not path.is_dir():
            raise DatasetLayoutError(f"{path}: not a folder; expected <split>/{NSHARDS} and <split>/0.tar ...")
        splits = sorted(p.parent.name for p in path.glob(f"*/{NSHARDS}"))
        if not splits:
            raise DatasetNotFoundError(f"{path}: no <split>/{NSHARDS}; expected the layout of {cls.__module__}")
        kind = check_dataset_type(path)
        split = "test" if "test" in splits else splits[-1]
        gallery = "train" if kind == "classification" and "train" in splits and split != "train" else None
        return path, {"dataset_type": kind, "split": split, "gallery_split": gallery}
