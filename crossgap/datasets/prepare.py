"""Build a dataset's manifest and write it (plus its ``.skipped.json`` sidecar)."""

from __future__ import annotations

import logging
import os
from typing import Any

import pandas as pd

from crossgap.datasets.images import DEFAULT_TRUNCATED_IMAGES
from crossgap.datasets.manifest import write_manifest
from crossgap.datasets.registry import get_adapter

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
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Build the manifest of registered ``dataset`` under ``dataroot`` and write it to ``out``.

    Raises :class:`~crossgap.datasets.errors.DatasetError` subclasses on a missing
    dataset, a malformed index file, (without ``skip_corrupt``) bad image files, or (with
    ``truncated_images="fail"``) images that decode only with truncated loading.
    """
    df, meta = get_adapter(dataset).build(
        dataroot, skip_corrupt=skip_corrupt, check_images=check_images, workers=workers,
        truncated_images=truncated_images,
    )
    write_manifest(out, df, meta)
    return df, meta
