"""Inversions of the plan: parameter tags (one per seed), shards and their geometry, target features,
step snapshots.

Part of :mod:`crossgap.plan` (no torch, no Snakemake imports; see its docstring).
"""

from __future__ import annotations

import math
from typing import Any, Mapping

from crossgap.config import (
    inversion_params,
    inversion_seeds,
)
from crossgap.datasets import get_adapter
from crossgap.plan.data import (
    class_sentences_path,
    dataset_entry,
    feature_path,
    gallery_split,
    manifest_path,
    query_split,
    spaced_text_path,
)
from crossgap.plan.data import ALL_SPLITS, Config


def tags(config: Config, model: str, seed: int | None = None) -> dict[str, str]:
    """``{"oti": tag, "ovi": tag}`` of ``model``'s current inversion parameters (``seed``: one of
    ``inversion.seeds`` instead of ``inversion.seed``)."""
    return {method: inversion_params(config, method, model, seed).tag for method in ("oti", "ovi")}


def seed_tags(config: Config, model: str) -> list[dict[str, str]]:
    """:func:`tags` of every seed: ``inversion.seed`` first, then the replicates."""
    return [tags(config, model, seed) for seed in inversion_seeds(config)]


class StaleTagError(ValueError):
    """A file of another inversion parameter set was requested."""


def current_params(config: Config, method: str, dataset: str, model: str, tag: str) -> dict[str, Any]:
    """The result fields of ``method`` (the job's params); refuses to write them under another set's tag.

    Later fields at their defaults are left out (:meth:`crossgap.config.InversionParams.rule_params`),
    so adding one reruns no finished job; the jobs fill them in (:func:`crossgap.config.complete_params`).
    """
    candidates = [inversion_params(config, method, model, seed) for seed in inversion_seeds(config)]
    for params in candidates:
        if tag == params.tag:
            return params.rule_params()
    have = "tag " + candidates[0].tag if len(candidates) == 1 else "tags " + ", ".join(c.tag for c in candidates)
    raise StaleTagError(
        f"{method}-{tag} ({dataset}/{model}) belongs to another parameter set: the inversion "
        f"parameters in the config have {have}. Files of other parameter sets are kept and "
        "reused, never recomputed; request the workflow's targets instead."
    )


def planned_sizes(config: Config, dataset: str) -> dict[str, int]:
    """Items per split for planning: ``sizes`` of the entry, else the generator's, else the adapter's published ones."""
    cfg = dataset_entry(config, dataset)
    if cfg.get("sizes"):
        return dict(cfg["sizes"])
    if cfg.get("generate"):
        synthetic = config.get("synthetic", {})
        return {"train": int(synthetic.get("num_train", 0)), "test": int(synthetic.get("num_test", 0))}
    return dict(get_adapter(cfg["adapter"]).expected_sizes)


def planned_targets(config: Config, dataset: str, method: str, inverted: str) -> int | None:
    """Planned number of targets of an inverted set; ``None`` when unknown (one job then).

    OTI split ``s``: the images of ``s``.  OVI ``queries``: one per item of the text-retrieval
    query split.  OVI ``classnames``: unknown statically (a few hundred classes at most: one job).
    """
    sizes = planned_sizes(config, dataset)
    if method == "ovi":
        if inverted not in ("queries", "gallery"):
            return None
        task_split = query_split if inverted == "queries" else gallery_split
        inverted = task_split(dataset_entry(config, dataset), "text_retrieval")
    if inverted == ALL_SPLITS:
        return sum(sizes.values()) if sizes else None
    return sizes.get(inverted)


def num_shards(config: Config, dataset: str, method: str, inverted: str) -> int:
    """Jobs for one inverted set: ``ceil(planned targets / inversion.shard_size)``, at least 1."""
    count = planned_targets(config, dataset, method, inverted)
    return max(1, math.ceil(count / config["inversion"]["shard_size"])) if count else 1


def inversion_dir(dataset: str, model: str, method: str, tag: str) -> str:
    return f"data/inversion/{dataset}/{model}/{method}-{tag}"


def shard_files(config: Config, dataset: str, model: str, method: str, tag: str, inverted: str) -> list[str]:
    """The shard files gathered into ``{method}-{tag}/{inverted}.safetensors``.

    The geometry is part of the path (``{inverted}.shards/{num_shards}x{shard_size}/{i}``): shards cut
    another way are other files, never mixed, and never a reason to redo a finished gather.
    """
    base = inversion_dir(dataset, model, method, tag)
    count, size = num_shards(config, dataset, method, inverted), config["inversion"]["shard_size"]
    return [f"{base}/{inverted}.shards/{count}x{size}/{i}.safetensors" for i in range(count)]


def inversion_targets(config: Config, dataset: str, model: str, method: str, inverted: str) -> dict[str, str]:
    """The target features of an inverted set (and the manifest when a task selects the targets)."""
    if method == "oti":
        return {"features": feature_path(dataset, model, "image", inverted)}
    if inverted == "classnames":  # the class sentences already read "_" as a space (the reference's use_class_names)
        return {"features": class_sentences_path(dataset, model)}
    texts = spaced_text_path if config["inversion"]["ovi"].get("underscores_as_spaces") else feature_path_of_texts
    if inverted == "gallery":
        return {"features": texts(dataset, model, gallery_split(dataset_entry(config, dataset), "text_retrieval"))}
    split = query_split(dataset_entry(config, dataset), "text_retrieval")
    return {"features": texts(dataset, model, split), "manifest": manifest_path(dataset)}


def feature_path_of_texts(dataset: str, model: str, split: str) -> str:
    """The native text features of ``split`` (OVI's targets by default)."""
    return feature_path(dataset, model, "text", split)


def inversion_task(method: str, inverted: str) -> str | None:
    """The task whose query rows an inverted set holds (``None``: every row of the target file)."""
    return "text_retrieval" if (method, inverted) == ("ovi", "queries") else None


def snapshot_steps(config: Config, inversion: str) -> list[int]:
    """Steps at which ``inversion`` saves its tokens (``inversion.<oti|ovi>.snapshots``), below ``steps``."""
    inv = config["inversion"][inversion]
    return sorted({int(s) for s in inv.get("snapshots", ()) if 0 < int(s) < int(inv["steps"])})


def snapshot_slug(config: Config, inversion: str) -> str | None:
    """``"25-50-100"`` for snapshots at steps 25, 50, 100 (the snapshot file's name); ``None`` without."""
    steps = snapshot_steps(config, inversion)
    return "-".join(str(s) for s in steps) if steps else None


def snapshot_file(dataset: str, model: str, inversion: str, tag: str, inverted: str, slug: str) -> str:
    """Snapshot features of every configured step of one inverted set: ``{set}.at-{slug}.safetensors``."""
    return f"{inversion_dir(dataset, model, inversion, tag)}/{inverted}.at-{slug}.safetensors"
