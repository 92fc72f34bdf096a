"""Datasets: adapters that turn on-disk datasets into Parquet manifests, and manifest I/O.

Importing this package registers every adapter (one module each, imported below).
See :mod:`crossgap.datasets.manifest` for the manifest schema and protocol selection.
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
    query_gallery,
    read_manifest,
    read_manifest_meta,
    relevance,
    select,
    skipped_sidecar_path,
    write_manifest,
    zero_shot_rows,
)
from crossgap.datasets.prepare import prepare_manifest
from crossgap.datasets.registry import (
    UnknownDatasetError,
    get_adapter,
    list_datasets,
    register,
    register_dataset,
)

__all__ = [
    "MANIFEST_COLUMNS",
    "MANIFEST_VERSION",
    "DatasetAdapter",
    "DatasetError",
    "DatasetIntegrityError",
    "DatasetLayoutError",
    "DatasetNotFoundError",
    "DatasetReport",
    "FileProblem",
    "Inspection",
    "ManifestError",
    "UnknownDatasetError",
    "check_dataset",
    "get_adapter",
    "list_datasets",
    "prepare_manifest",
    "query_gallery",
    "read_manifest",
    "read_manifest_meta",
    "register",
    "register_dataset",
    "relevance",
    "select",
    "skipped_sidecar_path",
    "write_manifest",
    "zero_shot_rows",
]

# explicit-relevance helpers (qrels / revisited ground truth) and query crops
from crossgap.datasets.manifest import qrels_pairs, query_boxes, revisited_ground_truth  # noqa: E402

__all__ += ["qrels_pairs", "query_boxes", "revisited_ground_truth"]

# your own data: adapters configured by the ``options`` of a params.yaml entry, protocols from params alone
from crossgap.datasets.options import (  # noqa: E402
    ConfigurableAdapter,
    DatasetOptionsError,
    adapter_for,
    configured_adapter,
    dataset_protocol,
)

__all__ += ["ConfigurableAdapter", "DatasetOptionsError", "adapter_for", "configured_adapter", "dataset_protocol"]
