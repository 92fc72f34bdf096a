"""Evaluation protocols: what a dataset's manifest is evaluated on, how to write one, how one is checked.

A protocol (the manifest metadata key ``protocol``, and every adapter's ``protocol``) maps a
task to its row selection, or to null when the dataset does not support it::

    {"image_retrieval": {"query": {"split": "test"}, "gallery": {"split": "train"}, "relevance": "label"},
     "text_retrieval":  {"query": {"split": "test", "select": "first_per_group"},
                         "gallery": {"split": "train", "select": "all"}, "relevance": "label"},
     "zero_shot": {"split": "test"}}

A selection spec has ``split`` (a split name, or ``"*"`` for all splits), optional
``select`` (:data:`SELECTORS`: ``all`` | ``first_per_group`` | ``rest_per_group``) and
optional ``modality`` (defaults to the task's, :data:`TASK_MODALITY`). ``relevance`` is
``label``, ``group``, ``qrels`` or ``revisited`` (:data:`RELEVANCE`); the last two read their
ground truth from a metadata key (:data:`RELEVANCE_META_KEY`, see :func:`validate_relevance_data`).
A retrieval task may say ``"query_crop": "bbx"`` (revisited datasets: crop each query to its box).
Adapters configured from params may add ``"modality_gap": {"split": S}``
(:mod:`crossgap.datasets.options`).

Write protocols with :func:`make_protocol`, :func:`retrieval` and :func:`group_retrieval` rather than
by hand; :func:`validate_adapter_protocol` is what :func:`crossgap.datasets.registry.register`
runs on every adapter, so a malformed protocol fails when its module is imported.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

import pandas as pd

from crossgap.datasets.errors import ManifestError

#: A protocol: task -> selection (or null), as in the module docstring.
ProtocolDict = dict[str, Any]

#: Values of the manifest's ``modality`` column, and of a selection spec's ``modality``.
MODALITIES: tuple[str, ...] = ("image", "text")
RELEVANCE: tuple[str, ...] = ("label", "group", "qrels", "revisited")
#: Relevance kinds whose ground truth lives in a metadata key (row ids, not positions).
RELEVANCE_META_KEY: dict[str, str] = {"qrels": "qrels", "revisited": "gnd"}
#: Allowed values of a retrieval task's optional ``query_crop``.
QUERY_CROPS: tuple[str | None, ...] = (None, "bbx")
GND_LISTS: tuple[str, ...] = ("easy", "hard", "junk")
#: The modality each task ranks (query and gallery) unless its spec overrides it.
TASK_MODALITY: dict[str, str] = {"image_retrieval": "image", "text_retrieval": "text", "zero_shot": "image"}
#: Tasks that rank a gallery for each query (their spec needs ``query`` and ``gallery``).
RETRIEVAL_TASKS: tuple[str, ...] = ("image_retrieval", "text_retrieval")


def group_key(df: pd.DataFrame) -> pd.Series:
    """Group of each row; a row without a group is a group of its own."""
    return df["group"].where(df["group"].notna(), df["id"])


#: Row selectors: each maps a (split/modality filtered) frame to a boolean mask.
SELECTORS: dict[str, Callable[[pd.DataFrame], pd.Series]] = {
    "all": lambda df: pd.Series(True, index=df.index),
    "first_per_group": lambda df: ~group_key(df).duplicated(keep="first"),
    "rest_per_group": lambda df: group_key(df).duplicated(keep="first"),
}


# --------------------------------------------------------------------------- constructors


def selection(split: str, select: str = "all") -> dict[str, Any]:
    """A selection spec: the rows of ``split`` (``"*"``: every split) chosen by ``select``."""
    return {"split": split, "select": select}


def retrieval(
    query: str,
    gallery: str,
    relevance: str = "label",
    *,
    query_select: str = "all",
    gallery_select: str = "all",
    **extra: Any,
) -> dict[str, Any]:
    """A retrieval task: ``query`` split against ``gallery`` split; ``extra`` keys (``query_crop``) as given."""
    return {
        "query": selection(query, query_select),
        "gallery": selection(gallery, gallery_select),
        "relevance": relevance,
        **extra,
    }


def group_retrieval(split: str) -> dict[str, Any]:
    """The first caption of each image of ``split`` against the other captions of ``split``; same image."""
    return retrieval(split, split, "group", query_select="first_per_group", gallery_select="rest_per_group")


def make_protocol(
    *,
    image_retrieval: Mapping[str, Any] | None = None,
    text_retrieval: Mapping[str, Any] | None = None,
    zero_shot: str | None = None,
    modality_gap: str | None = None,
) -> ProtocolDict:
    """A whole protocol: the three tasks (``None``: unsupported; ``zero_shot`` is the split classified)
    and, when given, the ``modality_gap`` pairing split of a configurable adapter."""
    out: ProtocolDict = {
        "image_retrieval": None if image_retrieval is None else dict(image_retrieval),
        "text_retrieval": None if text_retrieval is None else dict(text_retrieval),
        "zero_shot": None if zero_shot is None else selection(zero_shot),
    }
    if modality_gap is not None:
        out["modality_gap"] = {"split": modality_gap}
    return out


def classification_protocol(split: str, gallery: str | None = None) -> ProtocolDict:
    """A labelled image dataset: the images of ``split`` against those of ``gallery`` (``None``: ``split``
    itself, leave-one-out), relevant = same label; zero-shot classification of ``split``."""
    return make_protocol(image_retrieval=retrieval(split, gallery or split), zero_shot=split)


#: Datasets with train/test splits and no captions: test images against train images, zero-shot on test.
LABEL_RETRIEVAL_PROTOCOL: ProtocolDict = classification_protocol("test", "train")
#: A dataset that only supports zero-shot classification of its ``test`` split.
ZERO_SHOT_ONLY: ProtocolDict = make_protocol(zero_shot="test")


# --------------------------------------------------------------------------- validation


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


def validate_adapter_protocol(protocol: Any, source: str) -> None:
    """:func:`validate_protocol`, plus what the workflow plans from: a mapping, retrieval tasks with
    ``query`` and ``gallery``, other tasks (``zero_shot``, ``modality_gap``) a single selection."""
    if not isinstance(protocol, Mapping):
        raise ManifestError(f"{source}: 'protocol' must be an object mapping tasks to specs, got {protocol!r}")
    validate_protocol(protocol, source)
    for task, spec in protocol.items():
        if spec is None:
            continue
        roles = [role for role in ("query", "gallery") if role in spec]
        if task in RETRIEVAL_TASKS and len(roles) < 2:
            raise ManifestError(
                f"{source}: protocol[{task!r}]: a retrieval task needs both 'query' and 'gallery' "
                f"selection specs, got {dict(spec)!r}"
            )
        if task in ("zero_shot", "modality_gap") and roles:
            raise ManifestError(
                f"{source}: protocol[{task!r}]: expected one selection spec {{'split': ...}}, "
                f"not 'query'/'gallery', got {dict(spec)!r}"
            )


def _is_number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def validate_relevance_data(meta: Mapping[str, Any], source: str) -> None:
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
