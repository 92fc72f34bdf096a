"""The dataset manifest: one Parquet file per dataset, the contract every later step reads.

Columns (exactly these, in this order; row order is the canonical *manifest order*):

============  ========  ===================================================================
column        type      meaning
============  ========  ===================================================================
``id``        string    stable, unique row id. Images: ``"<split>/<path>"``; texts:
                        ``"<group>#<k>"`` i.e. ``"<split>/<image path>#<k>"`` (k-th caption)
``split``     string    split name (``train``, ``val``, ``test``, ...)
``modality``  string    ``"image"`` or ``"text"``
``path``      string    image path relative to ``meta["root"]``; null for texts
``text``      string    caption text; null for images
``label``     int64     class index into ``meta["classnames"]``; ``-1`` when unlabelled
``classname`` string    class name (nullable)
``group``     string    nullable; for a caption, the ``id`` of its source image
============  ========  ===================================================================

File-level metadata is a JSON object stored in the Parquet schema metadata under the
key ``crossgap`` (see :data:`META_KEY`):

``dataset`` (slug), ``adapter``, ``adapter_version``, ``dataroot`` (absolute),
``root`` (absolute folder that ``path`` is relative to), ``classnames`` (list indexed by
label), ``templates`` (zero-shot prompts containing ``{}``), ``protocol`` (below),
``skipped`` (list of ``{"id", "path", "kind", "reason"}``), ``created_by``
(``"crossgap <version>"``) and ``manifest_version`` (:data:`MANIFEST_VERSION`).
Adapters add informational keys (``expected_sizes`` and ``counts`` per split, of
``count_unit``: images, texts or caption groups; ``check_images``, ...); readers must
ignore keys they do not know.

``protocol`` maps each task to the rows it is evaluated on, or to null when unsupported
(format and validation: :mod:`crossgap.datasets.protocols`; selecting those rows and reading
explicit ground truth such as ``qrels`` / ``gnd``: :mod:`crossgap.datasets.selection`, whose
functions this module re-exports for existing callers).

Next to each manifest, :func:`write_manifest` writes ``<stem>.skipped.json`` (see
:func:`skipped_sidecar_path`) listing the skipped rows, so nothing is dropped silently.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any, Mapping

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from crossgap.datasets.errors import ManifestError
from crossgap.datasets.protocols import MODALITIES, validate_protocol, validate_relevance_data
# re-exported for callers that read a manifest and select its rows through this module
from crossgap.datasets.selection import qrels_pairs, query_boxes, query_gallery, relevance  # noqa: F401
from crossgap.datasets.selection import revisited_ground_truth, select, zero_shot_rows  # noqa: F401
from crossgap.utils import atomic_path, write_json

log = logging.getLogger(__name__)

MANIFEST_VERSION = "1"
META_KEY = b"crossgap"
MANIFEST_COLUMNS: tuple[str, ...] = ("id", "split", "modality", "path", "text", "label", "classname", "group")
STRING_COLUMNS: tuple[str, ...] = ("id", "split", "modality", "path", "text", "classname", "group")
REQUIRED_META: dict[str, type | tuple[type, ...]] = {
    "dataset": str,
    "adapter": str,
    "adapter_version": str,
    "dataroot": str,
    "root": str,
    "classnames": list,
    "templates": list,
    "protocol": dict,
    "skipped": list,
    "created_by": str,
}
ARROW_SCHEMA = pa.schema([(c, pa.int64() if c == "label" else pa.string()) for c in MANIFEST_COLUMNS])


def crossgap_version() -> str:
    """The crossgap version (``crossgap.__version__``, the one place it is set)."""
    from crossgap import __version__

    return str(__version__)


def skipped_sidecar_path(manifest_path: str | os.PathLike) -> Path:
    """``data/x/manifest.parquet`` -> ``data/x/manifest.skipped.json``."""
    p = Path(manifest_path)
    stem = p.name[: -len(".parquet")] if p.name.endswith(".parquet") else p.name
    return p.with_name(stem + ".skipped.json")


# --------------------------------------------------------------------------- validation


def validate_frame(df: pd.DataFrame, source: str = "<DataFrame>") -> None:
    """Raise :class:`ManifestError` (naming ``source`` and the column) if ``df`` breaks the schema."""
    missing = [c for c in MANIFEST_COLUMNS if c not in df.columns]
    extra = [c for c in df.columns if c not in MANIFEST_COLUMNS]
    if missing or extra:
        raise ManifestError(
            f"{source}: manifest columns must be exactly {list(MANIFEST_COLUMNS)}; "
            f"missing {missing}, unexpected {extra}"
        )
    for col in STRING_COLUMNS:
        kind = pd.api.types.infer_dtype(df[col], skipna=True)
        if kind not in ("string", "empty") and not df[col].isna().all():
            raise ManifestError(f"{source}: column {col!r} must hold strings (or nulls), found {kind}")
    if not pd.api.types.is_integer_dtype(df["label"]):
        raise ManifestError(
            f"{source}: column 'label' must be int64 (use -1 for none), found dtype {df['label'].dtype}"
        )
    for col in ("id", "split", "modality"):
        if df[col].isna().any():
            raise ManifestError(f"{source}: column {col!r} has {int(df[col].isna().sum())} null value(s)")
    dup = df["id"][df["id"].duplicated()]
    if len(dup):
        raise ManifestError(f"{source}: column 'id' must be unique; duplicated: {sorted(set(dup))[:10]}")
    bad_mod = sorted(set(df["modality"]) - set(MODALITIES))
    if bad_mod:
        raise ManifestError(f"{source}: column 'modality' must be one of {list(MODALITIES)}, found {bad_mod}")
    if (df["label"] < -1).any():
        raise ManifestError(f"{source}: column 'label' must be >= -1, found {int(df['label'].min())}")
    images, texts = df["modality"] == "image", df["modality"] == "text"
    checks = [
        ("path", images & df["path"].isna(), "image rows need a 'path'"),
        ("text", texts & df["text"].isna(), "text rows need a 'text'"),
        ("path", texts & df["path"].notna(), "text rows must have a null 'path'"),
        ("text", images & df["text"].notna(), "image rows must have a null 'text'"),
    ]
    for col, bad, what in checks:
        if bad.any():
            raise ManifestError(f"{source}: column {col!r}: {what}; e.g. id {df.loc[bad, 'id'].iloc[0]!r}")


def validate_meta(meta: Mapping[str, Any], source: str = "<metadata>") -> None:
    """Raise :class:`ManifestError` naming ``source`` and the key if ``meta`` is malformed."""
    for key, typ in REQUIRED_META.items():
        if key not in meta:
            raise ManifestError(f"{source}: metadata key {key!r} is missing (required: {list(REQUIRED_META)})")
        if not isinstance(meta[key], typ):
            raise ManifestError(f"{source}: metadata key {key!r} must be {typ}, got {type(meta[key]).__name__}")
    if not all(isinstance(c, str) for c in meta["classnames"]):
        raise ManifestError(f"{source}: metadata 'classnames' must be a list of strings")
    bad = [t for t in meta["templates"] if not isinstance(t, str) or "{}" not in t]
    if bad:
        raise ManifestError(f"{source}: metadata 'templates' must be strings containing '{{}}', bad: {bad}")
    for item in meta["skipped"]:
        if not isinstance(item, Mapping) or "id" not in item or "reason" not in item:
            raise ManifestError(f"{source}: metadata 'skipped' entries need 'id' and 'reason', got {item!r}")
    validate_protocol(meta["protocol"], source)
    validate_relevance_data(meta, source)


def _validate_labels(df: pd.DataFrame, meta: Mapping[str, Any], source: str) -> None:
    n = len(meta["classnames"])
    if len(df) and int(df["label"].max()) >= n:
        raise ManifestError(
            f"{source}: column 'label' has {int(df['label'].max())} but metadata 'classnames' has only {n} entries"
        )


# --------------------------------------------------------------------------- read / write


def to_arrow(df: pd.DataFrame, meta: Mapping[str, Any], source: str = "<DataFrame>") -> pa.Table:
    """Validate ``df``/``meta`` and return the Arrow table (schema metadata included)."""
    validate_frame(df, source)
    meta = {"manifest_version": MANIFEST_VERSION, "created_by": f"crossgap {crossgap_version()}", **meta}
    validate_meta(meta, source)
    _validate_labels(df, meta, source)
    arrays = [
        pa.array(df[c].astype("int64" if c == "label" else "string"), type=ARROW_SCHEMA.field(c).type)
        for c in MANIFEST_COLUMNS
    ]
    schema = ARROW_SCHEMA.with_metadata({META_KEY: json.dumps(meta, sort_keys=True).encode()})
    return pa.Table.from_arrays(arrays, schema=schema)


def write_manifest(path: str | os.PathLike, df: pd.DataFrame, meta: Mapping[str, Any]) -> None:
    """Validate and atomically write the manifest ``path`` plus its ``.skipped.json`` sidecar.

    ``meta`` gets ``manifest_version`` and a default ``created_by`` added.
    """
    table = to_arrow(df, meta, str(path))
    write_json(
        skipped_sidecar_path(path),
        {"dataset": meta["dataset"], "manifest": Path(path).name, "skipped": list(meta["skipped"])},
    )
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)
    log.info("wrote manifest %s (%d rows)", path, table.num_rows)


def read_manifest_meta(path: str | os.PathLike) -> dict[str, Any]:
    """Only the metadata of the manifest at ``path`` (cheap: reads the schema)."""
    try:
        schema = pq.read_schema(path)
    except FileNotFoundError as exc:
        raise ManifestError(f"{path}: manifest not found") from exc
    except (OSError, pa.ArrowException) as exc:
        raise ManifestError(f"{path}: not a readable Parquet manifest: {exc}") from exc
    raw = (schema.metadata or {}).get(META_KEY)
    if raw is None:
        raise ManifestError(
            f"{path}: Parquet schema metadata has no {META_KEY.decode()!r} key; not a crossgap manifest"
        )
    try:
        meta = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise ManifestError(f"{path}: metadata {META_KEY.decode()!r} is not valid JSON: {exc}") from exc
    if not isinstance(meta, dict):
        raise ManifestError(f"{path}: metadata {META_KEY.decode()!r} must be a JSON object")
    validate_meta(meta, str(path))
    return meta


def read_manifest(path: str | os.PathLike) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Read and validate a manifest; return ``(df, meta)`` with a RangeIndex in manifest order."""
    meta = read_manifest_meta(path)
    table = pq.read_table(path)
    for name in MANIFEST_COLUMNS:
        if name not in table.column_names:
            raise ManifestError(f"{path}: column {name!r} is missing (columns: {table.column_names})")
        typ = table.schema.field(name).type
        want = ARROW_SCHEMA.field(name).type
        if not (typ == want or (want == pa.string() and typ == pa.large_string())):
            raise ManifestError(f"{path}: column {name!r} has type {typ}, expected {want}")
    df = table.select(list(MANIFEST_COLUMNS)).to_pandas()
    validate_frame(df, str(path))
    _validate_labels(df, meta, str(path))
    return df, meta
