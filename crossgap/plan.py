"""Static plan of the workflow: which files each dataset × model needs, known without any data.

The DAG must be complete at dry-run time (``snakemake -n`` with no dataset on disk), so
everything here derives from the registered adapters' protocols and published sizes and from
the validated configuration (:func:`crossgap.config.load_params`, or Snakemake's ``validate``),
never from files.  ``workflow/rules/common.smk`` holds only thin input functions that call
these helpers; this module imports neither torch nor Snakemake.
"""

from __future__ import annotations

import math
import re
from typing import Any, Mapping

from crossgap.config import (
    DATASET_TEXT_KEY,
    ConfigError,
    dataset_source,
    feature_result_options,
    inversion_params,
    model_load_spec,
    text_settings,
)
from crossgap.config import text_options as text_options_of
from crossgap.datasets import get_adapter
from crossgap.methods import TASKS, get_method, task_methods

ALL_SPLITS = "all"
Config = Mapping[str, Any]


# --------------------------------------------------------------------------- protocol and splits
def split_token(split: str) -> str:
    """File-name token for a protocol split (``*`` → ``all``)."""
    return ALL_SPLITS if split == "*" else split


def split_spec(token: str) -> str:
    """Protocol split of a file-name split token (``all`` → ``*``); inverse of :func:`split_token`."""
    return "*" if token == ALL_SPLITS else token


def protocol(dataset_cfg: Mapping[str, Any]) -> dict[str, Any]:
    """The dataset's protocol restricted to the tasks it supports.

    Adapters configured from params (your own data) compute theirs from their ``options``
    (``crossgap.datasets.options.dataset_protocol``); the paper's adapters state a fixed one.
    """
    adapter = get_adapter(dataset_cfg["adapter"])
    proto = adapter.protocol_for(dataset_cfg) if hasattr(adapter, "protocol_for") else adapter.protocol
    return {task: spec for task, spec in proto.items() if task in TASKS and spec is not None}


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


def _dataset(config: Config, dataset: str) -> Mapping[str, Any]:
    return config["datasets"][dataset]


def _tasks(config: Config, dataset: str) -> list[str]:
    return tasks(_dataset(config, dataset), config.get("evaluation", {}))


# --------------------------------------------------------------------------- files
def feature_path(dataset: str, model: str, modality: str, split: str) -> str:
    return f"data/features/{dataset}/{model}/{modality}_{split}.safetensors"


def prompts_path(dataset: str, model: str) -> str:
    return f"data/features/{dataset}/{model}/prompts.safetensors"


def class_sentences_path(dataset: str, model: str) -> str:
    """Text features ``[C, D]`` of ``inversion.ovi.template`` filled with each class name: the OVI zero-shot targets."""
    return f"data/features/{dataset}/{model}/class_sentences.safetensors"


def manifest_path(dataset: str) -> str:
    return f"data/manifests/{dataset}.parquet"


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
    return [feature_path(dataset, model, m, s) for m, s in sorted(wanted)]


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
    """Text sets inverted with OVI: ``queries`` (text-retrieval queries) and ``classnames`` (zero-shot).

    ``classnames``: one sentence per class, ``inversion.ovi.template`` filled with the class name (the
    reference's ``use_class_names``); it replaced the CoOp ``prompts`` set, whose files are left alone.
    """
    enabled = tasks(dataset_cfg, evaluation)
    return [name for name, task in (("classnames", "zero_shot"), ("queries", "text_retrieval")) if task in enabled]


def inverted_sets(config: Config, dataset: str, method: str) -> list[str]:
    """What ``method`` inverts for ``dataset``: OTI image splits, OVI ``queries``/``classnames``."""
    cfg, evaluation = _dataset(config, dataset), config.get("evaluation", {})
    return oti_splits(cfg, evaluation) if method == "oti" else ovi_sets(cfg, evaluation)


# --------------------------------------------------------------------------- text preparation
def has_text_step(config: Config, dataset: str) -> bool:
    """Whether ``dataset``'s manifest goes through the text-preparation rule: its adapter has long
    texts (``long_texts``: IMDB, 20 Newsgroups, NanoBEIR) or its entry has a ``text`` key."""
    cfg = _dataset(config, dataset)
    return DATASET_TEXT_KEY in cfg or bool(getattr(get_adapter(cfg["adapter"]), "long_texts", False))


def source_manifest_path(dataset: str) -> str:
    """The adapter's manifest of a dataset with a text step (the step writes :func:`manifest_path`)."""
    return f"data/manifests/{dataset}.source.parquet"


def text_options(config: Config, dataset: str) -> dict[str, Any]:
    """The ``text`` settings of ``dataset`` that differ from their defaults (the rule's ``text`` param).

    Refuses, naming the key, a strategy without what it needs (``summaries``: ``path``;
    ``llm``: ``llm.model``), so a dry run fails before any job.
    """
    values = _dataset(config, dataset).get(DATASET_TEXT_KEY) or {}
    full = text_settings(values)
    where = f"params: datasets.{dataset}.text"
    if full["strategy"] == "summaries" and not full["path"]:
        raise ConfigError(f"{where}.path: strategy 'summaries' needs the summaries file (the reference's "
                          "summarized_text.pkl, or a .json/.jsonl/.csv of id -> summary)")
    if full["strategy"] == "llm" and not full["llm"]["model"]:
        raise ConfigError(f"{where}.llm.model: strategy 'llm' needs a local transformers model folder")
    return text_options_of(values)


def text_step_gpus(config: Config, dataset: str) -> int:
    """GPUs the text step of ``dataset`` asks for: 1 when it generates with an LLM, else 0."""
    return int(text_settings(_dataset(config, dataset).get(DATASET_TEXT_KEY))["strategy"] == "llm")


def dataset_pattern(config: Config, text_step: bool) -> str:
    """Regex of the datasets with (``text_step=True``) or without a text step: a rule's wildcard constraint.

    ``data/manifests/{dataset}.parquet`` comes from ``prepare_manifest`` for the others and from
    ``prepare_text`` for these (whose adapter manifest is ``{dataset}.source.parquet``), so each
    file has exactly one producer.  An empty set gives a pattern that matches nothing.
    """
    names = [re.escape(d) for d in sorted(config["datasets"]) if has_text_step(config, d) == text_step]
    return "|".join(names) if names else "(?!x)x"


# --------------------------------------------------------------------------- the embedded default / models
def generated_datasets(config: Config) -> list[str]:
    return sorted(d for d, cfg in config["datasets"].items() if cfg.get("generate"))


def synthetic_root(config: Config) -> str:
    """The data root of the generated dataset (the first dataset with ``generate: true``)."""
    generated = generated_datasets(config)
    return config["datasets"][generated[0]]["dataroot"] if generated else "data/raw"


def generated_split_file(config: Config, dataset: str) -> list[str]:
    """The generator's split file when ``dataset`` is generated by the pipeline; nothing otherwise."""
    cfg = _dataset(config, dataset)
    return [f"{cfg['dataroot']}/synthetic/split_zhou_Synthetic.json"] if cfg.get("generate") else []


def pretrained_models(config: Config) -> list[str]:
    return [f"data/models/{m}/checkpoint.pt" for m in sorted(config["models"]) if config["models"][m].get("pretrain")]


def model_checkpoint(config: Config, model: str) -> list[str]:
    """The checkpoint file when the pipeline trains ``model`` itself; nothing otherwise."""
    return [f"data/models/{model}/checkpoint.pt"] if config["models"][model].get("pretrain") else []


def model_spec(config: Config, model: str) -> dict[str, Any]:
    """What loading ``model`` reads (``backend``, ``architecture``, ``pretrained``): the rules' ``model`` param."""
    return model_load_spec(config["models"][model])


def dataset_spec(config: Config, dataset: str) -> dict[str, Any]:
    """What preparing ``dataset``'s manifest reads (not the planning keys ``generate``/``sizes``)."""
    return dataset_source(_dataset(config, dataset))


def feature_options(config: Config) -> dict[str, Any]:
    """Result options of feature extraction that differ from their defaults (the rule's ``options`` param):
    ``precision`` when ``features.precision`` is not fp32 (:func:`crossgap.config.feature_result_options`)."""
    return feature_result_options(config)


def text_feature_options(config: Config) -> dict[str, Any]:
    """The ``options`` param of the prompt and class-sentence rules: ``features.precision`` when not fp32."""
    return feature_result_options(config)


# --------------------------------------------------------------------------- inversion tags
def tags(config: Config, model: str) -> dict[str, str]:
    """``{"oti": tag, "ovi": tag}`` of ``model``'s current inversion parameters."""
    return {method: inversion_params(config, method, model).tag for method in ("oti", "ovi")}


class StaleTagError(ValueError):
    """A file of another inversion parameter set was requested."""


def current_params(config: Config, method: str, dataset: str, model: str, tag: str) -> dict[str, Any]:
    """The result fields of ``method`` (the job's params); refuses to write them under another set's tag.

    Later fields at their defaults are left out (:meth:`crossgap.config.InversionParams.rule_params`),
    so adding one reruns no finished job; the jobs fill them in (:func:`crossgap.config.complete_params`).
    """
    params = inversion_params(config, method, model)
    if tag != params.tag:
        raise StaleTagError(
            f"{method}-{tag} ({dataset}/{model}) belongs to another parameter set: the inversion "
            f"parameters in the config have tag {params.tag}. Files of other parameter sets are kept and "
            "reused, never recomputed; request the workflow's targets instead."
        )
    return params.rule_params()


def method_params(config: Config, dataset: str, model: str, method_file: str) -> dict[str, Any]:
    """Inversion parameters recorded with a result ``{method}-{tag}``; ``{}`` for native methods."""
    method, _, tag = method_file.partition("-")
    return current_params(config, method, dataset, model, tag) if tag else {}


def method_name(method_file: str) -> str:
    """``oti`` for the result stem ``oti-{tag}`` (the method without its tag)."""
    return method_file.split("-")[0]


def method_file(method: str, method_tags: Mapping[str, str]) -> str:
    """File stem of a method's result: ``oti-{tag}`` / ``ovi-{tag}`` for inverted methods, else the name."""
    return f"{method}-{method_tags[method]}" if method in method_tags else method


# --------------------------------------------------------------------------- shards
def planned_sizes(config: Config, dataset: str) -> dict[str, int]:
    """Items per split for planning: ``sizes`` of the entry, else the generator's, else the adapter's published ones."""
    cfg = _dataset(config, dataset)
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
        if inverted != "queries":
            return None
        inverted = query_split(_dataset(config, dataset), "text_retrieval")
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
    if inverted == "classnames":
        return {"features": class_sentences_path(dataset, model)}
    split = query_split(_dataset(config, dataset), "text_retrieval")
    return {"features": feature_path(dataset, model, "text", split), "manifest": manifest_path(dataset)}


def inversion_task(method: str, inverted: str) -> str | None:
    """The task whose query rows an inverted set holds (``None``: every row of the target file)."""
    return "text_retrieval" if (method, inverted) == ("ovi", "queries") else None


# --------------------------------------------------------------------------- evaluation inputs
def _inverted_file(dataset: str, model: str, method_file_: str, inverted: str) -> str:
    method, _, tag = method_file_.partition("-")
    return f"{inversion_dir(dataset, model, method, tag)}/{inverted}.safetensors"


def retrieval_inputs(config: Config, task: str, dataset: str, model: str, method_file_: str) -> dict[str, str]:
    """Manifest, query and gallery features of a retrieval evaluation ``{task}/{method_file}``."""
    cfg = _dataset(config, dataset)
    q, g = query_split(cfg, task), gallery_split(cfg, task)
    modality = "image" if task == "image_retrieval" else "text"
    method = get_method(task, method_name(method_file_))
    if method.native:
        query = feature_path(dataset, model, modality, q)
    else:
        query = _inverted_file(dataset, model, method_file_, q if method.inversion == "oti" else "queries")
    return {"manifest": manifest_path(dataset), "query": query, "gallery": feature_path(dataset, model, modality, g)}


def zero_shot_inputs(config: Config, dataset: str, model: str, method_file_: str) -> dict[str, str]:
    """Manifest, image features and prompt features of a zero-shot evaluation (inverted where the method says)."""
    split = zero_shot_split(_dataset(config, dataset))
    inversion = get_method("zero_shot", method_name(method_file_)).inversion
    images = (_inverted_file(dataset, model, method_file_, split) if inversion == "oti"
              else feature_path(dataset, model, "image", split))
    # OVI: one inverted class sentence per class (``classnames``) against native images, as the reference
    prompts = (_inverted_file(dataset, model, method_file_, "classnames") if inversion == "ovi"
               else prompts_path(dataset, model))
    return {"manifest": manifest_path(dataset), "images": images, "prompts": prompts}


def has_modality_gap(dataset_cfg: Mapping[str, Any], evaluation: Mapping[str, Any]) -> bool:
    """The gap needs matched pairs: images with captions (image + text retrieval) or with class prompts."""
    enabled = set(tasks(dataset_cfg, evaluation))
    return "zero_shot" in enabled or {"image_retrieval", "text_retrieval"} <= enabled


def gap_inputs(config: Config, dataset: str, model: str) -> dict[str, str]:
    """Features the modality gap pairs: zero-shot images (else image-retrieval queries), texts, prompts."""
    cfg = _dataset(config, dataset)
    enabled = _tasks(config, dataset)
    split = zero_shot_split(cfg) if "zero_shot" in enabled else query_split(cfg, "image_retrieval")
    inputs = {"manifest": manifest_path(dataset), "prompts": prompts_path(dataset, model),
              "images": feature_path(dataset, model, "image", split)}
    if "text_retrieval" in enabled:
        inputs["texts"] = feature_path(dataset, model, "text", query_split(cfg, "text_retrieval"))
    return inputs


# --------------------------------------------------------------------------- targets
def result_files(
    dataset: str,
    model: str,
    dataset_cfg: Mapping[str, Any],
    evaluation: Mapping[str, Any],
    method_tags: Mapping[str, str],
) -> list[str]:
    """``data/results/{dataset}/{model}/{task}/{method}.json`` for every enabled task and method.

    ``method_tags`` maps the inversions (``oti``, ``ovi``) to their tags.
    """
    files = []
    for task in tasks(dataset_cfg, evaluation):
        for method in task_methods(task):
            stem = method.name if method.native else f"{method.name}-{method_tags[method.inversion]}"
            files.append(f"data/results/{dataset}/{model}/{task}/{stem}.json")
    return files


def _grid(config: Config) -> list[tuple[str, str]]:
    return [(d, m) for d in sorted(config["datasets"]) for m in sorted(config["models"])]


def all_manifests(config: Config) -> list[str]:
    return [manifest_path(d) for d in sorted(config["datasets"])]


def all_feature_files(config: Config) -> list[str]:
    files = []
    for d, m in _grid(config):
        files += feature_files(d, m, _dataset(config, d), config.get("evaluation", {}))
        if "zero_shot" in _tasks(config, d):
            files += [prompts_path(d, m), class_sentences_path(d, m)]
    return files


def all_inversion_files(config: Config) -> list[str]:
    files = []
    for d, m in _grid(config):
        t = tags(config, m)
        for method in ("oti", "ovi"):
            files += [f"{inversion_dir(d, m, method, t[method])}/{s}.safetensors" for s in inverted_sets(config, d, method)]
    return files


def all_loss_curves(config: Config) -> list[str]:
    files = []
    for d, m in _grid(config):
        t = tags(config, m)
        for method in ("oti", "ovi"):
            files += [f"data/plots/losses/{d}/{m}/{method}-{t[method]}/{s}.csv" for s in inverted_sets(config, d, method)]
    return files


def all_result_files(config: Config) -> list[str]:
    return [f for d, m in _grid(config)
            for f in result_files(d, m, _dataset(config, d), config.get("evaluation", {}), tags(config, m))]


def all_gap_files(config: Config) -> list[str]:
    return [f"data/results/{d}/{m}/modality_gap.json" for d, m in _grid(config)
            if has_modality_gap(_dataset(config, d), config.get("evaluation", {}))]
