"""Datasets: adapters that turn on-disk datasets into Parquet manifests, and manifest I/O.

Importing this package registers every adapter (one module each, imported below).
The pieces: :mod:`~crossgap.datasets.base` (the adapter base class),
:mod:`~crossgap.datasets.protocols` (evaluation protocols), :mod:`~crossgap.datasets.rows`
(manifest rows), :mod:`~crossgap.datasets.manifest` (the manifest schema and its I/O),
:mod:`~crossgap.datasets.selection` (the rows a protocol evaluates),
:mod:`~crossgap.datasets.registry` and :mod:`~crossgap.datasets.options` (adapters configured
from params), :mod:`~crossgap.datasets.checks` (``crossgap datasets check``).
"""

from __future__ import annotations

from crossgap.datasets import coop, fgvc_aircraft, imagenet, synthetic  # noqa: F401  (register adapters)
from crossgap.datasets import captions, cub, imagenet_variants, nanobeir, revisited, sop, text_corpora  # noqa: F401
from crossgap.datasets import revisited_r1m  # noqa: F401  (after revisited: its variants reuse the adapter)
from crossgap.datasets import imagefolder, table, wds  # noqa: F401  (your own data: options from params)
from crossgap.datasets.base import DatasetAdapter, Inspection
from crossgap.datasets.checks import DatasetReport, check_dataset
from crossgap.datasets.errors import (
    DatasetError,
    DatasetIntegrityError,
    DatasetLayoutError,
    DatasetNotFoundError,
    FileProblem,
    ManifestError,
)
from crossgap.datasets.manifest import (
    MANIFEST_COLUMNS,
    MANIFEST_VERSION,
    read_manifest,
    read_manifest_meta,
    skipped_sidecar_path,
    write_manifest,
)
from crossgap.datasets.options import (
    ConfigurableAdapter,
    DatasetOptionsError,
    adapter_for,
    configured_adapter,
    dataset_protocol,
)
from crossgap.datasets.prepare import prepare_manifest
from crossgap.datasets.registry import (
    UnknownDatasetError,
    get_adapter,
    list_datasets,
    register,
    register_dataset,
)
from crossgap.datasets.selection import (
    qrels_pairs,
    query_boxes,
    query_gallery,
    relevance,
    revisited_ground_truth,
    select,
    zero_shot_rows,
)

__all__ = [
    "MANIFEST_COLUMNS",
    "MANIFEST_VERSION",
    "ConfigurableAdapter",
    "DatasetAdapter",
    "DatasetError",
    "DatasetIntegrityError",
    "DatasetLayoutError",
    "DatasetNotFoundError",
    "DatasetOptionsError",
    "DatasetReport",
    "FileProblem",
    "Inspection",
    "ManifestError",
    "UnknownDatasetError",
    "adapter_for",
    "check_dataset",
    "configured_adapter",
    "dataset_protocol",
    "get_adapter",
    "list_datasets",
    "prepare_manifest",
    "qrels_pairs",
    "query_boxes",
    "query_gallery",
    "read_manifest",
    "read_manifest_meta",
    "register",
    "register_dataset",
    "relevance",
    "revisited_ground_truth",
    "select",
    "skipped_sidecar_path",
    "write_manifest",
    "zero_shot_rows",
]
