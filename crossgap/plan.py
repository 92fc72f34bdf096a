"""Static plan of the workflow: which files each dataset × model needs, known without any data.

The DAG must be complete at dry-run time (``snakemake -n`` with no dataset on disk), so
everything here derives from the registered adapters' ``protocol`` class attributes and the
configuration, never from files.  The Snakefile's input functions call these helpers.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, Mapping

from crossgap.datasets import get_adapter
from crossgap.metrics.results import TASK_METHODS

ALL_SPLITS = "all"
TASKS = tuple(TASK_METHODS)


def split_token(split: str) -> str:
    """File-name token for a protocol split (``*`` → ``all``)."""
    return ALL_SPLITS if split == "*" else split


def split_spec(token: str) -> str:
    """Protocol split of a file-name split token (``all`` → ``*``); inverse of :func:`split_token`."""
    return "*" if token == ALL_SPLITS else token


def protocol(dataset_cfg: Mapping[str, Any]) -> dict[str, Any]:
    """The adapter's protocol restricted to supported tasks."""
    proto = get_adapter(dataset_cfg["adapter"]).protocol
    return {task: spec for task, spec in proto.items() if spec is not None}


def tasks(dataset_cfg: Mapping[str, Any], evaluation: Mapping[str, Any]) -> list[str]:
    """Tasks evaluated for a dataset: those enabled in ``evaluation.tasks`` that its protocol supports."""
    proto = protocol(dataset_cfg)
    return [t for t in evaluation.get("tasks", TASKS) if t in proto]


def _split(spec: Mapping[str, Any]) -> str:
    return split_token(spec["split"])


def query_split(dataset_cfg: Mapping[str, Any], task: str) -> str:
    return _split(protocol(dataset_cfg)[task]["query"])


def gallery_split(dataset_cfg: Mapping[str, Any], task: str) -> str:
    return _split(protocol(dataset_cfg)[task]["gallery"])


def zero_shot_split(dataset_cfg: Mapping[str, Any]) -> str:
    return _split(protocol(dataset_cfg)["zero_shot"])


def feature_files(dataset: str, model: str, dataset_cfg: Mapping[str, Any], evaluation: Mapping[str, Any]) -> list[str]:
    """Native feature files needed: ``data/features/{dataset}/{model}/{modality}_{split}.safetensors``."""
    wanted: set[tuple[str, str]] = set()
    for task in tasks(dataset_cfg, evaluation):
        if task == "zero_shot":
            wanted.add(("image", zero_shot_split(dataset_cfg)))
        else:
            modality = "image" if task == "image_retrieval" else "text"
            wanted.add((modality, query_split(dataset_cfg, task)))
            wanted.add((modality, gallery_split(dataset_cfg, task)))
    return [f"data/features/{dataset}/{model}/{m}_{s}.safetensors" for m, s in sorted(wanted)]


def oti_splits(dataset_cfg: Mapping[str, Any], evaluation: Mapping[str, Any]) -> list[str]:
    """Image splits inverted with OTI: image-retrieval queries and zero-shot images."""
    wanted = set()
    for task in tasks(dataset_cfg, evaluation):
        if task == "image_retrieval":
            wanted.add(query_split(dataset_cfg, task))
        elif task == "zero_shot":
            wanted.add(zero_shot_split(dataset_cfg))
    return sorted(wanted)


def ovi_sets(dataset_cfg: Mapping[str, Any], evaluation: Mapping[str, Any]) -> list[str]:
    """Text sets inverted with OVI: ``queries`` (text-retrieval queries) and ``prompts`` (zero-shot)."""
    enabled = tasks(dataset_cfg, evaluation)
    return [name for name, task in (("prompts", "zero_shot"), ("queries", "text_retrieval")) if task in enabled]


def inversion_tag(params: Mapping[str, Any]) -> str:
    """Short content address of an inversion's parameters: 10 hex digits of a SHA-256.

    Inverted features live under ``oti-{tag}`` / ``ovi-{tag}`` (and their results under
    ``{method}-{tag}.json``), so every parameter set keeps its own files: going back to an earlier
    parameter set (``git checkout`` + ``dvc checkout``, or ``dvc exp apply``) finds its finished
    inversions instead of recomputing them.
    """
    canonical = json.dumps(dict(params), sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()[:10]


def method_file(method: str, tags: Mapping[str, str]) -> str:
    """File stem of a method's result: ``oti-{tag}`` / ``ovi-{tag}`` for inverted methods, else the name."""
    return f"{method}-{tags[method]}" if method in tags else method


def result_files(
    dataset: str,
    model: str,
    dataset_cfg: Mapping[str, Any],
    evaluation: Mapping[str, Any],
    tags: Mapping[str, str],
) -> list[str]:
    """``data/results/{dataset}/{model}/{task}/{method}.json`` for every enabled task and method.

    ``tags`` maps the inverted methods (``oti``, ``ovi``) to their :func:`inversion_tag`.
    """
    return [
        f"data/results/{dataset}/{model}/{task}/{method_file(method, tags)}.json"
        for task in tasks(dataset_cfg, evaluation)
        for method in TASK_METHODS[task]
    ]


def has_modality_gap(dataset_cfg: Mapping[str, Any], evaluation: Mapping[str, Any]) -> bool:
    """The gap needs matched pairs: images with captions (image + text retrieval) or with class prompts."""
    enabled = set(tasks(dataset_cfg, evaluation))
    return "zero_shot" in enabled or {"image_retrieval", "text_retrieval"} <= enabled
