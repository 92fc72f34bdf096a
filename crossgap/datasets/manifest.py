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
Adapters add informational keys (``expected_sizes``, ``counts`` of images per split,
``check_images``); readers must ignore keys they do not know.

``protocol`` maps a task to its row selection, or to null when unsupported::

    {"image_retrieval": {"query": {"split": "test"}, "gallery": {"split": "train"}, "relevance": "label"},
     "text_retrieval":  {"query": {"split": "test", "select": "first_per_group"},
                         "gallery": {"split": "train", "select": "all"}, "relevance": "label"},
     "zero_shot": {"split": "test"}}

A selection spec has ``split`` (a split name, or ``"*"`` for all splits), optional
``select`` (:data:`SELECTORS`: ``all`` | ``first_per_group`` | ``rest_per_group``) and
optional ``modality`` (defaults to the task's, :data:`TASK_MODALITY`). ``relevance`` is
``label``, ``group``, ``qrels`` or ``revisited`` (:data:`RELEVANCE`). Use :func:`select`,
:func:`query_gallery` and :func:`zero_shot_rows` rather than filtering by hand.

Explicit relevance (both by row ``id``, so skipping rows never shifts anything):

* ``"relevance": "qrels"`` (BEIR-style): metadata key ``qrels`` is a list of
  ``[query_id, gallery_id, score]``; a pair is relevant when ``score > 0``.
  :func:`qrels_pairs` turns it into ``(query position, gallery position)`` pairs for
  ``evaluate_retrieval(relevance=...)``.
* ``"relevance": "revisited"`` (revisited Oxford/Paris): metadata key ``gnd`` is a list of
  ``{"query": id, "easy": [ids], "hard": [ids], "junk": [ids], "bbx": [x1, y1, x2, y2] | null}``.
  :func:`revisited_ground_truth` gives per-query gallery positions for
  ``evaluate_revisited(gnd=...)``. Such a task may also say ``"query_crop": "bbx"``
  (crop each query image to its ``bbx``; default ``null``: the full image), see
  :func:`query_boxes`.

Next to each manifest, :func:`write_manifest` writes ``<stem>.skipped.json`` (see
:func:`skipped_sidecar_path`) listing the skipped rows, so nothing is dropped silently.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from crossgap.datasets.errors import ManifestError
from crossgap.utils import atomic_path, write_json

log = logging.getLogger(__name__)

MANIFEST_VERSION = "1"
META_KEY = b"crossgap"
MANIFEST_COLUMNS: tuple[str, ...] = ("id", "split", "modality", "path", "text", "label", "classname", "group")
STRING_COLUMNS: tuple[str, ...] = ("id", "split", "modality", "path", "text", "classname", "group")
MODALITIES: tuple[str, ...] = ("image", "text")
RELEVANCE: tuple[str, ...] = ("label", "group", "qrels", "revisited")
#: Relevance kinds whose ground truth lives in a metadata key (row ids, not positions).
RELEVANCE_META_KEY: dict[str, str] = {"qrels": "qrels", "revisited": "gnd"}
#: Allowed values of a retrieval task's optional ``query_crop``.
QUERY_CROPS: tuple[str | None, ...] = (None, "bbx")
GND_LISTS: tuple[str, ...] = ("easy", "hard", "junk")
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
#: The modality each retrieval task ranks (query and gallery) unless its spec overrides it.
TASK_MODALITY: dict[str, str] = {"image_retrieval": "image", "text_retrieval": "text", "zero_shot": "image"}

ARROW_SCHEMA = pa.schema([(c, pa.int64() if c == "label" else pa.string()) for c in MANIFEST_COLUMNS])


def _group_key(df: pd.DataFrame) -> pd.Series:
    """Group of each row; a row without a group is a group of its own."""
    return df["group"].where(df["group"].notna(), df["id"])


#: Row selectors: each maps a (split/modality filtered) frame to a boolean mask.
SELECTORS: dict[str, Callable[[pd.DataFrame], pd.Series]] = {
    "all": lambda df: pd.Series(True, index=df.index),
    "first_per_group": lambda df: ~_group_key(df).duplicated(keep="first"),
    "rest_per_group": lambda df: _group_key(df).duplicated(keep="first"),
}


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


def validate_spec(spec: Any, where: str) -> dict[str, Any]:
    """Check one selection spec (``{"split", "select"?, "modality"?}``); return it with defaults."""
    if not isinstance(spec, Mapping) or not isinstance(spec.get("split"), str):
        raise ManifestError(f"{where}: expected an object with a string 'split' (or '*'), got {spec!r}")
    out = {"select": "all", **spec}
    if out["select"] not in SELECTORS:
        raise ManifestError(f"{where}: 'select' must be one of {list(SELECTORS)}, got {out['select']!r}")
    if "modality" in out and out["modality"] not in MODALITIES:
        raise ManifestError(f"{where}: 'modality' must be one of {list(MODALITIES)}, got {out['modality']!r}")
    return out


def validate_protocol(protocol: Mapping[str, Any], source: str) -> None:
    """Check the ``protocol`` metadata object (unknown tasks are allowed if well formed)."""
    for task, spec in protocol.items():
        where = f"{source}: protocol[{task!r}]"
        if spec is None:
            continue
        if not isinstance(spec, Mapping):
            raise ManifestError(f"{where}: expected an object or null, got {spec!r}")
        if "query" in spec or "gallery" in spec:
            validate_spec(spec.get("query"), f"{where}['query']")
            validate_spec(spec.get("gallery"), f"{where}['gallery']")
            if spec.get("relevance", "label") not in RELEVANCE:
                raise ManifestError(
                    f"{where}: 'relevance' must be one of {list(RELEVANCE)}, got {spec.get('relevance')!r}"
                )
            crop = spec.get("query_crop")
            if crop not in QUERY_CROPS:
                raise ManifestError(f"{where}: 'query_crop' must be one of {list(QUERY_CROPS)}, got {crop!r}")
            if crop == "bbx" and spec.get("relevance") != "revisited":
                raise ManifestError(
                    f"{where}: 'query_crop': 'bbx' needs 'relevance': 'revisited' (boxes come from 'gnd')"
                )
        else:
            validate_spec(spec, where)


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
    _validate_relevance_data(meta, source)


def _is_number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def _validate_relevance_data(meta: Mapping[str, Any], source: str) -> None:
    """Check the ``qrels`` / ``gnd`` metadata keys that explicit-relevance tasks need."""
    used = {
        spec.get("relevance")
        for spec in meta["protocol"].values()
        if isinstance(spec, Mapping) and spec.get("relevance") in RELEVANCE_META_KEY
    }
    if "qrels" in used:
        qrels = meta.get("qrels")
        if not isinstance(qrels, list):
            raise ManifestError(
                f"{source}: relevance 'qrels' needs metadata 'qrels': [[query_id, gallery_id, score], ...]"
            )
        for i, item in enumerate(qrels):
            ok = isinstance(item, (list, tuple)) and len(item) == 3
            if not (ok and isinstance(item[0], str) and isinstance(item[1], str) and _is_number(item[2])):
                raise ManifestError(
                    f"{source}: metadata 'qrels'[{i}] must be [query_id, gallery_id, score], got {item!r}"
                )
    if "revisited" in used:
        gnd = meta.get("gnd")
        if not isinstance(gnd, list):
            raise ManifestError(
                f"{source}: relevance 'revisited' needs metadata 'gnd': "
                '[{"query": id, "easy": [ids], "hard": [ids], "junk": [ids], "bbx": [x1, y1, x2, y2] | null}, ...]'
            )
        for i, entry in enumerate(gnd):
            where = f"{source}: metadata 'gnd'[{i}]"
            if not isinstance(entry, Mapping) or not isinstance(entry.get("query"), str):
                raise ManifestError(f"{where}: expected an object with a string 'query' id, got {entry!r}")
            for key in GND_LISTS:
                ids = entry.get(key)
                if not isinstance(ids, list) or not all(isinstance(x, str) for x in ids):
                    raise ManifestError(f"{where}: {key!r} must be a list of gallery row ids")
            bbx = entry.get("bbx")
            if bbx is not None and not (isinstance(bbx, list) and len(bbx) == 4 and all(map(_is_number, bbx))):
                raise ManifestError(f"{where}: 'bbx' must be null or [x1, y1, x2, y2], got {bbx!r}")


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


# --------------------------------------------------------------------------- protocol selection


def select(df: pd.DataFrame, modality: str, spec: Mapping[str, Any]) -> pd.DataFrame:
    """Rows of ``modality`` chosen by ``spec`` (``split``/``select``), in manifest order.

    The original index is kept, so for a freshly read manifest it is the row number.
    """
    spec = validate_spec(spec, "selection spec")
    modality = spec.get("modality", modality)
    if modality not in MODALITIES:
        raise ManifestError(f"selection: modality must be one of {list(MODALITIES)}, got {modality!r}")
    mask = df["modality"] == modality
    if spec["split"] != "*":
        mask &= df["split"] == spec["split"]
    rows = df[mask]
    return rows[SELECTORS[spec["select"]](rows)]


def _task_spec(meta: Mapping[str, Any], task: str) -> Mapping[str, Any]:
    spec = meta.get("protocol", {}).get(task)
    if spec is None:
        supported = sorted(t for t, s in meta.get("protocol", {}).items() if s is not None)
        raise ManifestError(f"dataset {meta.get('dataset')!r} does not support task {task!r} (supported: {supported})")
    return spec


def query_gallery(df: pd.DataFrame, meta: Mapping[str, Any], task: str) -> tuple[pd.DataFrame, pd.DataFrame, bool]:
    """``(query_rows, gallery_rows, exclude_self)`` for retrieval ``task`` per ``meta["protocol"]``.

    ``exclude_self`` is True when query and gallery are the very same rows (then a
    query must not retrieve itself).
    """
    spec = _task_spec(meta, task)
    if "query" not in spec or "gallery" not in spec:
        raise ManifestError(f"protocol[{task!r}] of {meta.get('dataset')!r} has no query/gallery; not a retrieval task")
    default = TASK_MODALITY.get(task)
    if default is None and not all("modality" in spec[role] for role in ("query", "gallery")):
        raise ManifestError(
            f"protocol[{task!r}] of {meta.get('dataset')!r}: task has no default modality "
            f"(known: {sorted(TASK_MODALITY)}); give 'modality' in both query and gallery"
        )
    query = select(df, default or "image", spec["query"])
    gallery = select(df, default or "image", spec["gallery"])
    same = len(query) == len(gallery) and bool((query["id"].to_numpy() == gallery["id"].to_numpy()).all())
    return query, gallery, same


def zero_shot_rows(df: pd.DataFrame, meta: Mapping[str, Any]) -> pd.DataFrame:
    """The image rows zero-shot classification is evaluated on."""
    return select(df, TASK_MODALITY["zero_shot"], _task_spec(meta, "zero_shot"))


def relevance(meta: Mapping[str, Any], task: str) -> str:
    """How relevance is decided: the column ``label`` or ``group``, or ``qrels`` / ``revisited``
    (explicit ground truth: use :func:`qrels_pairs` / :func:`revisited_ground_truth`)."""
    return str(_task_spec(meta, task).get("relevance", "label"))


# --------------------------------------------------------------------------- explicit relevance


def _explicit_spec(meta: Mapping[str, Any], task: str, kind: str) -> Mapping[str, Any]:
    spec = _task_spec(meta, task)
    if spec.get("relevance") != kind:
        raise ManifestError(
            f"protocol[{task!r}] of {meta.get('dataset')!r} has relevance "
            f"{spec.get('relevance', 'label')!r}, not {kind!r}"
        )
    return spec


def _positions(rows: pd.DataFrame) -> dict[str, int]:
    return {row_id: i for i, row_id in enumerate(rows["id"])}


def qrels_pairs(meta: Mapping[str, Any], task: str, query: pd.DataFrame, gallery: pd.DataFrame) -> np.ndarray:
    """Relevant ``(query position, gallery position)`` pairs, int64 ``[P, 2]``, of a ``qrels`` task.

    Positions index ``query`` / ``gallery`` as returned by :func:`query_gallery`; pass the
    result as ``evaluate_retrieval(relevance=...)``. Pairs with ``score <= 0`` are not
    relevant; pairs naming rows outside the selection (e.g. skipped rows) are dropped with
    a warning.
    """
    _explicit_spec(meta, task, "qrels")
    qpos, gpos = _positions(query), _positions(gallery)
    pairs, dropped = [], 0
    for qid, gid, score in meta["qrels"]:
        if score <= 0:
            continue
        if qid in qpos and gid in gpos:
            pairs.append((qpos[qid], gpos[gid]))
        else:
            dropped += 1
    if dropped:
        log.warning("%s: %d qrels name rows outside the query/gallery selection; dropped", meta.get("dataset"), dropped)
    return np.asarray(sorted(set(pairs)), dtype=np.int64).reshape(-1, 2)


def _gnd_by_query(meta: Mapping[str, Any], query: pd.DataFrame) -> list[Mapping[str, Any]]:
    by_id = {entry["query"]: entry for entry in meta["gnd"]}
    missing = [q for q in query["id"] if q not in by_id]
    if missing:
        raise ManifestError(f"{meta.get('dataset')!r}: metadata 'gnd' has no entry for query row(s) {missing[:10]}")
    return [by_id[q] for q in query["id"]]


def revisited_ground_truth(
    meta: Mapping[str, Any], task: str, query: pd.DataFrame, gallery: pd.DataFrame
) -> list[dict[str, Any]]:
    """Per query row: ``{"easy", "hard", "junk"}`` gallery positions (and ``"bbx"``) of a ``revisited`` task.

    The list is in ``query`` order and fits ``evaluate_revisited(gnd=...)``. Ids not in
    ``gallery`` (e.g. skipped images) are dropped with a warning.
    """
    _explicit_spec(meta, task, "revisited")
    gpos = _positions(gallery)
    out, dropped = [], 0
    for entry in _gnd_by_query(meta, query):
        item: dict[str, Any] = {"bbx": entry.get("bbx")}
        for key in GND_LISTS:
            item[key] = [gpos[g] for g in entry[key] if g in gpos]
            dropped += len(entry[key]) - len(item[key])
        out.append(item)
    if dropped:
        log.warning("%s: %d ground-truth ids are not in the gallery selection; dropped", meta.get("dataset"), dropped)
    return out


def query_boxes(
    meta: Mapping[str, Any], task: str, query: pd.DataFrame
) -> list[tuple[float, float, float, float] | None]:
    """Per query row, the ``(x1, y1, x2, y2)`` box to crop the query image to, or ``None`` (full image).

    Boxes come from metadata ``gnd`` when the task says ``"query_crop": "bbx"``.
    """
    spec = _task_spec(meta, task)
    if spec.get("query_crop") != "bbx":
        return [None] * len(query)
    boxes = []
    for entry in _gnd_by_query(meta, query):
        if entry.get("bbx") is None:
            raise ManifestError(
                f"{meta.get('dataset')!r}: query {entry['query']!r} has no 'bbx' but the task crops queries"
            )
        boxes.append(tuple(float(v) for v in entry["bbx"]))
    return boxes
