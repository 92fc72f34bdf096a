"""Build a dataset's manifest and write it (plus its ``.skipped.json`` sidecar)."""

from __future__ import annotations

import logging
import os
from typing import Any, Mapping

import pandas as pd

from crossgap.datasets.images import DEFAULT_TRUNCATED_IMAGES
from crossgap.datasets.manifest import write_manifest
from crossgap.datasets.options import configured_adapter, with_sizes

log = logging.getLogger(__name__)


def prepare_manifest(
    dataset: str,
    dataroot: str | os.PathLike,
    out: str | os.PathLike,
    *,
    skip_corrupt: bool = False,
    check_images: bool = True,
    workers: int | None = None,
    truncated_images: str = DEFAULT_TRUNCATED_IMAGES,
    options: Mapping[str, Any] | None = None,
    name: str | None = None,
    sizes: Mapping[str, int] | None = None,
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Build the manifest of registered ``dataset`` under ``dataroot`` and write it to ``out``.

    ``options``: the entry's ``options`` mapping, for adapters configured from params
    (:mod:`crossgap.datasets.options`); the paper's adapters take none. ``name``: the entry's
    name in params, recorded as the manifest's ``dataset`` by those adapters. ``sizes``: the
    entry's items per split (``crossgap datasets init`` writes them): counts are checked
    against them and a truncated shard's loss is counted from them.

    Raises :class:`~crossgap.datasets.errors.DatasetError` subclasses on a missing
    dataset, a malformed index file, (without ``skip_corrupt``) bad image files, or (with
    ``truncated_images="fail"``) images that decode only with truncated loading.
    """
    adapter = with_sizes(configured_adapter(dataset, options, name=name), sizes)
    df, meta = adapter.build(
        dataroot, skip_corrupt=skip_corrupt, check_images=check_images, workers=workers,
        truncated_images=truncated_images,
    )
    write_manifest(out, df, meta)
    return df, meta
