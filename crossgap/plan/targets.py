"""The workflow's targets: every file of each DVC stage / Snakemake target over the dataset × model
grid.

Part of :mod:`crossgap.plan` (no torch, no Snakemake imports; see its docstring).
"""

from __future__ import annotations

from crossgap.plan.data import (
    class_sentences_path,
    dataset_entry,
    enabled_tasks,
    feature_files,
    inverted_sets,
    manifest_path,
    prompts_path,
    query_sets,
)
from crossgap.plan.inversions import (
    inversion_dir,
    inversion_targets,
    seed_tags,
    snapshot_file,
    snapshot_slug,
    tags,
)
from crossgap.plan.evaluation import (
    dataset_methods,
    gap_inputs,
    has_modality_gap,
    per_query_file,
    result_files,
    retrieval_inputs,
    zero_shot_inputs,
)
from typing import Any

from crossgap.plan.data import Config


def _grid(config: Config) -> list[tuple[str, str]]:
    return [(d, m) for d in sorted(config["datasets"]) for m in sorted(config["models"])]


def all_manifests(config: Config) -> list[str]:
    return [manifest_path(d) for d in sorted(config["datasets"])]


def all_feature_files(config: Config) -> list[str]:
    """Every file under ``data/features`` the DAG reads (the ``features`` target, a DVC stage's output).

    Beyond the native features and prompts: whatever the evaluations and inversions read from there
    (class sentences and names, projections, pre-projection features), so that no later stage writes
    into the features stage's output.
    """
    files = []
    for d, m in _grid(config):
        files += feature_files(d, m, dataset_entry(config, d), config.get("evaluation", {}))
        if "zero_shot" in enabled_tasks(config, d):
            files += [prompts_path(d, m), class_sentences_path(d, m)]
        for task in enabled_tasks(config, d):
            for method in dataset_methods(config, d, task):
                stem = method.file_stem(tags(config, m))
                inputs = (zero_shot_inputs(config, d, m, stem) if task == "zero_shot"
                          else retrieval_inputs(config, task, d, m, stem))
                files += [p for p in inputs.values() if p.startswith("data/features/")]
        for method in ("oti", "ovi"):
            for s in inverted_sets(config, d, method):
                files += [p for p in inversion_targets(config, d, m, method, s).values() if p.startswith("data/features/")]
        if has_modality_gap(dataset_entry(config, d), config.get("evaluation", {})):
            files += [p for p in gap_inputs(config, d, m).values() if p.startswith("data/features/")]
    return list(dict.fromkeys(files))


def all_inversion_files(config: Config) -> list[str]:
    files = []
    for d, m in _grid(config):
        for t in seed_tags(config, m):
            for method in ("oti", "ovi"):
                slug = snapshot_slug(config, method)
                for s in inverted_sets(config, d, method):
                    files.append(f"{inversion_dir(d, m, method, t[method])}/{s}.safetensors")
                    if slug and s in query_sets(config, d, method):
                        files.append(snapshot_file(d, m, method, t[method], s, slug))
    return files


def all_loss_curves(config: Config) -> list[str]:
    files = []
    for d, m in _grid(config):
        t = tags(config, m)
        for method in ("oti", "ovi"):
            files += [f"data/plots/losses/{d}/{m}/{method}-{t[method]}/{s}.csv" for s in inverted_sets(config, d, method)]
    return files


def all_result_files(config: Config) -> list[str]:
    return [f for d, m in _grid(config) for f in result_files(config, d, m)]


def all_per_query_files(config: Config) -> list[str]:
    return [per_query_file(f) for f in all_result_files(config)]


def pretrain_curves(config: Config) -> list[str]:
    """Loss curves of the models the pipeline trains itself (``pretrain: true``)."""
    return [f"data/plots/pretrain/{m}_loss.csv" for m in sorted(config["models"]) if config["models"][m].get("pretrain")]


def all_gap_files(config: Config) -> list[str]:
    return [f"data/results/{d}/{m}/modality_gap.json" for d, m in _grid(config)
            if has_modality_gap(dataset_entry(config, d), config.get("evaluation", {}))]


def report_params(config: Config) -> dict[str, Any]:
    """What the aggregate step reads from the config: the bootstrap settings, each inversion's final
    step count (its row in the steps table), the main seed (the other ``inversion.seeds`` are its
    replicates) and the methods of the paper-style tables (``evaluation.paper_methods``; ``None``: the default set)."""
    inv, evaluation = config["inversion"], config["evaluation"]
    return {"bootstrap": dict(evaluation["bootstrap"]), "final_steps": {m: inv[m]["steps"] for m in ("oti", "ovi")},
            "seed": inv["seed"], "paper_methods": evaluation.get("paper_methods") or None}
