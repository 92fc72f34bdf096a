"""On-disk format for features, pseudo tokens and inverted features.

A feature file is a ``safetensors`` file holding

* ``features``: float32 tensor ``[N, D]`` (or ``[N, R, D]`` for pseudo tokens), row ``i`` belongs to ``ids[i]``;
* optional extra tensors (e.g. ``losses`` ``[N, steps]`` for inversions);

and a string-to-string header with

* ``ids``: JSON list of the ``N`` manifest ids, in manifest order;
* ``meta``: JSON object (model, dataset, split, modality, parameters, device, ...).

Files are written atomically (temporary name, then rename).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Any, Sequence

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from crossgap.utils import atomic_path

FORMAT_VERSION = "1"


@dataclass
class FeatureSet:
    """Rows of ``features`` ``[N, ...]`` keyed by ``ids`` (length N), plus free-form metadata."""

    features: torch.Tensor
    ids: list[str]
    meta: dict[str, Any] = field(default_factory=dict)
    extras: dict[str, torch.Tensor] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.features.shape[0] != len(self.ids):
            raise ValueError(
                f"FeatureSet: {self.features.shape[0]} feature rows but {len(self.ids)} ids"
            )


def save_feature_set(path: str | os.PathLike, fs: FeatureSet) -> None:
    """Write ``fs`` to ``path`` (safetensors) atomically."""
    tensors = {"features": fs.features.detach().to("cpu", torch.float32).contiguous()}
    for key, value in fs.extras.items():
        if key == "features":
            raise ValueError("extra tensor may not be called 'features'")
        tensors[key] = value.detach().cpu().contiguous()
    header = {
        "format": f"crossgap-features/{FORMAT_VERSION}",
        "ids": json.dumps(list(fs.ids)),
        "meta": json.dumps(fs.meta, sort_keys=True, default=str),
    }
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=header)


def load_feature_set(path: str | os.PathLike) -> FeatureSet:
    """Read a file written by :func:`save_feature_set`; raise ``ValueError`` naming the file if it is not one."""
    try:
        with safe_open(str(path), framework="pt") as f:
            header = f.metadata() or {}
            if not header.get("format", "").startswith("crossgap-features/"):
                raise ValueError(
                    f"{path}: not a crossgap feature file (header 'format' is {header.get('format')!r}, "
                    "expected 'crossgap-features/<version>')"
                )
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except (OSError, json.JSONDecodeError, SafetensorError) as exc:
        raise ValueError(f"{path}: cannot read feature file: {exc}") from exc
    features = tensors.pop("features")
    return FeatureSet(
        features=features,
        ids=json.loads(header["ids"]),
        meta=json.loads(header.get("meta", "{}")),
        extras=tensors,
    )


def read_meta(path: str | os.PathLike) -> dict[str, Any]:
    """The ``meta`` header of a feature file, without reading its tensors."""
    try:
        with safe_open(str(path), framework="pt") as f:
            return json.loads((f.metadata() or {}).get("meta", "{}"))
    except (OSError, json.JSONDecodeError, SafetensorError) as exc:
        raise ValueError(f"{path}: cannot read feature file: {exc}") from exc


def take(fs: FeatureSet, ids: Sequence[str], where: str) -> torch.Tensor:
    """Rows of ``fs.features`` for ``ids`` (in that order); KeyError naming ``where`` if one is missing."""
    index = {key: i for i, key in enumerate(fs.ids)}
    missing = [key for key in ids if key not in index]
    if missing:
        raise KeyError(f"{where}: {len(missing)} ids are missing, e.g. {missing[:3]}")
    return fs.features[[index[key] for key in ids]]
