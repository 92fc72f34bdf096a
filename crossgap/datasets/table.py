"""``captions``: images with captions listed in a table (CSV, TSV, JSON lines or Parquet).

The table (``options.table``, relative to the data root) has one row per image or several
rows per image; the column names are options::

    image,caption_1,caption_2,label,split          image_column: image
    img/0001.jpg,a red car,a car on a road,car,test  caption_columns: [caption_1, caption_2]
                                                     label_column: label   (optional)
                                                     split_column: split   (optional)

Image paths are relative to ``<dataroot>/<image_root>`` (absolute paths inside it are
accepted). An image's captions are its caption cells in column order, row after row; empty
cells are skipped. Without a ``split_column`` every image is in ``query_split``. Labels are
class names; classes are sorted by name (numerically when every label is an integer).

Protocol (from the options alone): text retrieval within ``query_split`` (each image's
first caption is a query, the other captions of the split are the gallery; relevant =
captions of the same image, as for COCO); the modality gap of the ``query_split`` images
and their first captions; with a ``label_column``, image retrieval (``query_split`` against
``gallery_split``, ``null``: against itself, leave-one-out; same label) and zero-shot
classification of the ``query_split`` images with ``templates``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, Callable

import pandas as pd

from crossgap.datasets.errors import DatasetLayoutError, DatasetNotFoundError
from crossgap.datasets.options import (
    ConfigurableAdapter,
    DatasetOptionsError,
    check_query_gallery,
    check_templates,
    resolve_under,
)
from crossgap.datasets.protocols import ProtocolDict, group_retrieval, make_protocol, retrieval
from crossgap.datasets.registry import register_dataset
from crossgap.datasets.rows import Row, image_row, text_rows

log = logging.getLogger(__name__)


def _read_csv(sep: str) -> Callable[[Path], pd.DataFrame]:
    return lambda path: pd.read_csv(path, sep=sep, dtype=str, keep_default_na=False, na_values=[""])


#: Table readers by format; every cell is read as a string (or null).
READERS: dict[str, Callable[[Path], pd.DataFrame]] = {
    "csv": _read_csv(","),
    "tsv": _read_csv("\t"),
    "jsonl": lambda path: pd.read_json(path, lines=True, dtype=False),
    "parquet": pd.read_parquet,
}
#: Format of a table by file suffix.
SUFFIX_FORMATS: dict[str, str] = {".csv": "csv", ".tsv": "tsv", ".txt": "tsv", ".jsonl": "jsonl",
                                  ".ndjson": "jsonl", ".parquet": "parquet", ".pq": "parquet"}
#: Column names ``crossgap datasets init`` recognises (first match wins).
IMAGE_COLUMNS = ("image", "image_path", "filepath", "file_path", "path", "file", "filename", "file_name", "img")
CAPTION_PREFIXES = ("caption", "text", "sentence", "description")
LABEL_COLUMNS = ("label", "class", "classname", "class_name", "category")


@dataclass(frozen=True)
class CaptionTableOptions:
    """Options of a ``captions`` dataset (``datasets.<name>.options``)."""

    #: the table, relative to the data root
    table: str = "captions.csv"
    #: csv, tsv, jsonl or parquet; null: from the file suffix
    format: str | None = None
    #: column holding image paths (relative to ``image_root``)
    image_column: str = "image"
    #: columns holding captions, in order (one caption per cell)
    caption_columns: tuple[str, ...] = ("caption",)
    #: column of class names (enables image retrieval and zero-shot); null: unlabelled
    label_column: str | None = None
    #: column of split names; null: every image is in ``query_split``
    split_column: str | None = None
    #: split evaluated: text-retrieval queries and gallery, image-retrieval queries, zero-shot images
    query_split: str = "test"
    #: image-retrieval gallery split; null: the query split itself (leave-one-out)
    gallery_split: str | None = None
    #: folder image paths are relative to, relative to the data root
    image_root: str = ""
    #: zero-shot prompt templates (labelled tables), each with one ``{}``
    templates: tuple[str, ...] = ("a photo of a {}.",)

    def __post_init__(self) -> None:
        if self.format is not None and self.format not in READERS:
            raise DatasetOptionsError(f"format: expected one of {sorted(READERS)} or null, got {self.format!r}")
        if self.format is None and Path(self.table).suffix.lower() not in SUFFIX_FORMATS:
            raise DatasetOptionsError(
                f"table: cannot tell the format of {self.table!r} from its suffix (known: "
                f"{sorted(SUFFIX_FORMATS)}); set format to one of {sorted(READERS)}"
            )
        if not self.caption_columns:
            raise DatasetOptionsError("caption_columns: expected at least one column name")
        check_query_gallery(self.query_split, self.gallery_split)
        if self.gallery_split is not None:
            if self.label_column is None:
                raise DatasetOptionsError("gallery_split: image retrieval needs labels; set label_column or null it")
            if self.split_column is None and self.gallery_split != self.query_split:
                raise DatasetOptionsError("gallery_split: without a split_column every image is in query_split")
        check_templates(self.templates, "templates")

    @property
    def table_format(self) -> str:
        """The table's format (the option, or from the suffix)."""
        return self.format or SUFFIX_FORMATS[Path(self.table).suffix.lower()]


def read_table(path: Path, fmt: str) -> pd.DataFrame:
    """The table at ``path`` (CSV/TSV cells read as strings; see :func:`cell`); errors name the file."""
    if not path.is_file():
        raise DatasetNotFoundError(f"{path}: caption table (options.table) does not exist")
    try:
        df = READERS[fmt](path)
    except (ValueError, OSError, pd.errors.ParserError) as exc:
        raise DatasetLayoutError(f"{path}: cannot read it as {fmt}: {exc}") from exc
    df.columns = [str(c) for c in df.columns]
    return df


def cell(value: Any) -> str | None:
    """A table cell as a string; ``None`` for an empty cell (NaN, None, ``""``)."""
    if value is None or (isinstance(value, float) and value != value):
        return None
    text = str(value)
    return text if text.strip() else None


def sort_labels(labels: set[str]) -> list[str]:
    """Class names sorted numerically when all are integers, else by name."""
    if all(s.lstrip("-").isdigit() for s in labels):
        return sorted(labels, key=int)
    return sorted(labels)


@register_dataset
class CaptionTableAdapter(ConfigurableAdapter):
    """Images and captions (optionally labels and splits) from one table."""

    slug = "captions"
    options_type = CaptionTableOptions
    options: CaptionTableOptions

    def __init__(self, options: CaptionTableOptions | None = None, name: str | None = None) -> None:
        super().__init__(options, name)
        self.images_dir = self.options.image_root
        self.required = (self.options.table,)
        opt = self.options
        cols = [opt.image_column, *opt.caption_columns, *(c for c in (opt.label_column, opt.split_column) if c)]
        self.layout = (
            f"<dataroot>/{opt.table}   {opt.table_format} table with columns {cols}\n"
            f"<dataroot>/{opt.image_root or ''}<image path>   the images the table names"
        )

    @classmethod
    def options_protocol(cls, options: CaptionTableOptions) -> ProtocolDict:
        """Text retrieval and the gap on the query split; image retrieval and zero-shot when labelled."""
        q = options.query_split
        labelled = options.label_column is not None
        return make_protocol(
            image_retrieval=retrieval(q, options.gallery_split or q) if labelled else None,
            text_retrieval=group_retrieval(q),
            zero_shot=q if labelled else None,
            modality_gap=q,
        )

    @classmethod
    def templates_for(cls, options: CaptionTableOptions) -> tuple[str, ...]:
        """The templates of a labelled table; none without labels."""
        return options.templates if options.label_column else ()

    # ------------------------------------------------------------------ reading
    def table(self, folder: Path) -> tuple[Path, pd.DataFrame]:
        """The table's path and content, with the option columns checked."""
        opt = self.options
        path = resolve_under(folder, opt.table)
        df = read_table(path, opt.table_format)
        wanted = {"image_column": [opt.image_column], "caption_columns": list(opt.caption_columns),
                  "label_column": [opt.label_column] if opt.label_column else [],
                  "split_column": [opt.split_column] if opt.split_column else []}
        for key, names in wanted.items():
            missing = [c for c in names if c not in df.columns]
            if missing:
                raise DatasetLayoutError(
                    f"{path}: column(s) {missing} named by options.{key} not found; the table has columns "
                    f"{list(df.columns)}"
                )
        return path, df

    def _line(self, i: int) -> str:
        """How a table row is named in messages: file line for CSV/TSV/JSONL, row index for Parquet."""
        fmt = self.options.table_format
        return f"line {i + 2}" if fmt in ("csv", "tsv") else f"line {i + 1}" if fmt == "jsonl" else f"row {i}"

    def _relpath(self, value: str | None, root: Path, where: str) -> str:
        if not value:
            raise DatasetLayoutError(f"{where}: empty {self.options.image_column!r} cell; expected an image path")
        p = PurePosixPath(value.replace("\\", "/"))
        if p.is_absolute():
            try:
                p = PurePosixPath(Path(value).relative_to(root).as_posix())
            except ValueError:
                raise DatasetLayoutError(
                    f"{where}: absolute image path {value!r} is not inside the image root {root}; "
                    "set options.image_root (relative to the data root) to a folder holding every image"
                ) from None
        if ".." in p.parts or not p.parts:
            raise DatasetLayoutError(f"{where}: image path {value!r} must stay inside the image root {root}")
        return p.as_posix()

    def _images(self, folder: Path) -> tuple[Path, dict[str, dict[str, Any]]]:
        """``{relative path: {"split", "label", "captions", "line"}}`` in first-appearance order."""
        opt = self.options
        path, df = self.table(folder)
        root = self.image_root(folder)
        images: dict[str, dict[str, Any]] = {}
        for i, raw in enumerate(df.to_dict("records")):
            rec = {key: cell(value) for key, value in raw.items()}
            where = f"{path}: {self._line(i)}"
            rel = self._relpath(rec[opt.image_column], root, where)
            split = rec[opt.split_column] if opt.split_column else opt.query_split
            if not split:
                raise DatasetLayoutError(f"{where}: empty {opt.split_column!r} cell; expected a split name")
            label = rec[opt.label_column] if opt.label_column else None
            if opt.label_column and not label:
                raise DatasetLayoutError(f"{where}: empty {opt.label_column!r} cell; every image needs a label")
            caps = [rec[c].strip() for c in opt.caption_columns if rec[c]]
            entry = images.setdefault(rel, {"split": split, "label": label, "captions": [], "line": where})
            for key, value in (("split", split), ("label", label)):
                if entry[key] != value:
                    raise DatasetLayoutError(
                        f"{where}: image {rel!r} has {key} {value!r} here but {entry[key]!r} at {entry['line']}"
                    )
            entry["captions"] += caps
        if not images:
            raise DatasetLayoutError(f"{path}: the table has no rows")
        return path, images

    def classnames(self, folder: Path) -> list[str]:
        """Sorted distinct labels; ``[]`` for an unlabelled table."""
        if not self.options.label_column:
            return []
        return sort_labels({entry["label"] for entry in self._images(folder)[1].values()})

    def rows(self, folder: Path, classnames: list[str]) -> list[Row]:
        """Image rows in table order, then their caption rows in the same order."""
        path, images = self._images(folder)
        label_of = {name: i for i, name in enumerate(classnames)}
        rows: list[Row] = []
        for rel, entry in images.items():
            label = label_of[entry["label"]] if entry["label"] is not None else -1
            rows.append(image_row(entry["split"], rel, label, entry["label"]))
        texts = [t for row, entry in zip(rows, images.values()) for t in text_rows(row, entry["captions"])]
        evaluated = [e for e in images.values() if e["split"] == self.options.query_split]
        if not evaluated:
            raise DatasetLayoutError(f"{path}: no image is in query_split {self.options.query_split!r}")
        short = sum(len(e["captions"]) < 2 for e in evaluated)
        if short:
            log.warning("%s: %d image(s) of split %r have fewer than 2 captions: their first caption has no "
                        "relevant item in text retrieval", path, short, self.options.query_split)
        return rows + texts

    # ------------------------------------------------------------------ init
    @classmethod
    def detect(cls, path: Path) -> tuple[Path, dict[str, Any]]:
        """Columns recognised by name: image path, caption column(s), label and split."""
        suffix = path.suffix.lower()
        if suffix not in SUFFIX_FORMATS:
            raise DatasetLayoutError(f"{path}: unknown table suffix; expected one of {sorted(SUFFIX_FORMATS)}")
        df = read_table(path, SUFFIX_FORMATS[suffix])
        lower = {c.lower(): c for c in df.columns}
        image = next((lower[c] for c in IMAGE_COLUMNS if c in lower), None)
        captions = [c for c in df.columns if c.lower().startswith(CAPTION_PREFIXES)]
        if image is None or not captions:
            raise DatasetLayoutError(
                f"{path}: cannot tell the image column (one of {list(IMAGE_COLUMNS)}) and caption column(s) "
                f"(names starting with {list(CAPTION_PREFIXES)}) from the columns {list(df.columns)}; "
                "name them with --set image_column=... --set caption_columns=[...]"
            )
        label = next((lower[c] for c in LABEL_COLUMNS if c in lower), None)
        split = lower.get("split")
        splits = sorted({c for v in df[split] if (c := cell(v))}) if split else []
        query = next((s for s in ("test", "val") if s in splits), splits[-1] if splits else "test")
        gallery = "train" if label and "train" in splits and query != "train" else None
        return path.parent, {"table": path.name, "image_column": image, "caption_columns": captions,
                             "label_column": label, "split_column": split, "query_split": query,
                             "gallery_split": gallery}

