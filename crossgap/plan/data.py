"""Datasets, splits and feature files of the plan: protocols, the sets each inversion inverts, text
preparation, the embedded default's generated data and models.

Part of :mod:`crossgap.plan` (no torch, no Snakemake imports; see its docstring).
"""

from __future__ import annotations

import re
from typing import Any, Mapping

from crossgap.config import (
    DATASET_TEXT_KEY,
    ConfigError,
    dataset_source,
    feature_result_options,
    model_load_spec,
    trained_checkpoint,
    text_settings,
)
from crossgap.config import text_options as text_options_of
from crossgap.datasets import get_adapter
from crossgap.methods import TASKS

ALL_SPLITS = "all"
Config = Mapping[str, Any]


def split_token(split: str) -> str:
    """File-name token for a protocol split (``*`` → ``all``)."""
    return ALL_SPLITS if split == "*" else split


def protocol_split(token: str) -> str:
    """Protocol split of a file-name split token (``all`` → ``*``); inverse of :func:`split_token`."""
    return "*" if token == ALL_SPLITS else token


def full_protocol(dataset_cfg: Mapping[str, Any]) -> dict[str, Any]:
    """The dataset's whole protocol: tasks, and for configurable adapters a ``modality_gap`` pairing.

    Adapters configured from params (your own data) compute theirs from their ``options``
    (``crossgap.datasets.options``); the paper's adapters state a fixed one.
    """
    adapter = get_adapter(dataset_cfg["adapter"])
    return dict(adapter.protocol_for(dataset_cfg) if hasattr(adapter, "protocol_for") else adapter.protocol)


def protocol(dataset_cfg: Mapping[str, Any]) -> dict[str, Any]:
    """The dataset's protocol restricted to the tasks it supports."""
    return {task: spec for task, spec in full_protocol(dataset_cfg).items() if task in TASKS and spec is not None}


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


def dataset_entry(config: Config, dataset: str) -> Mapping[str, Any]:
    return config["datasets"][dataset]


def enabled_tasks(config: Config, dataset: str) -> list[str]:
    return tasks(dataset_entry(config, dataset), config.get("evaluation", {}))


def feature_path(dataset: str, model: str, modality: str, split: str) -> str:
    return f"data/features/{dataset}/{model}/{modality}_{split}.safetensors"


def preprojection_path(dataset: str, model: str, modality: str, split: str) -> str:
    """Pre-projection features of a split (``features`` = the projection's inputs ``[N, W]``), for IsoCLIP."""
    return f"data/features/{dataset}/{model}/{modality}_{split}.pre.safetensors"


def spaced_text_path(dataset: str, model: str, split: str) -> str:
    """Text features of ``split`` with ``_`` read as a space: OVI's targets with ``inversion.ovi.underscores_as_spaces``."""
    return f"data/features/{dataset}/{model}/text_{split}.spaces.safetensors"


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
    pairing = full_protocol(dataset_cfg).get("modality_gap")
    if pairing:
        wanted |= {("image", split_token(pairing["split"])), ("text", split_token(pairing["split"]))}
    return [feature_path(dataset, model, m, s) for m, s in sorted(wanted)]


def oti_sets(dataset_cfg: Mapping[str, Any], evaluation: Mapping[str, Any]) -> list[str]:
    """OTI's inverted sets: the image splits of the image-retrieval queries and the zero-shot images
    (an inverted set is named by what it holds: an image split for OTI, a text set for OVI)."""
    wanted = set()
    for task in tasks(dataset_cfg, evaluation):
        if task == "image_retrieval":
            wanted.add(query_split(dataset_cfg, task))
            if dataset_cfg.get("inverted_gallery"):  # the reference's --gallery_eval_type oti: the whole gallery
                wanted.add(gallery_split(dataset_cfg, task))
        elif task == "zero_shot":
            wanted.add(zero_shot_split(dataset_cfg))
    return sorted(wanted)


def ovi_sets(dataset_cfg: Mapping[str, Any], evaluation: Mapping[str, Any]) -> list[str]:
    """OVI's inverted sets: ``queries`` (text-retrieval queries) and ``classnames`` (zero-shot).

    ``classnames``: one sentence per class, ``inversion.ovi.template`` filled with the class name (the
    reference's ``use_class_names``); it replaced the CoOp ``prompts`` set, whose files are left alone.
    """
    enabled = tasks(dataset_cfg, evaluation)
    sets = [name for name, task in (("classnames", "zero_shot"), ("queries", "text_retrieval")) if task in enabled]
    if dataset_cfg.get("inverted_gallery") and "text_retrieval" in enabled:
        sets.append("gallery")  # the reference's --gallery_eval_type ovi: every gallery text
    return sets


def query_sets(config: Config, dataset: str, method: str) -> list[str]:
    """The inverted sets that hold queries (snapshots are taken of these, not of inverted galleries)."""
    cfg, evaluation = dataset_entry(config, dataset), config.get("evaluation", {})
    plain = {**cfg, "inverted_gallery": False}
    return oti_sets(plain, evaluation) if method == "oti" else ovi_sets(plain, evaluation)


def inverted_sets(config: Config, dataset: str, method: str) -> list[str]:
    """What ``method`` inverts for ``dataset``: OTI image splits, OVI ``queries``/``classnames``."""
    cfg, evaluation = dataset_entry(config, dataset), config.get("evaluation", {})
    return oti_sets(cfg, evaluation) if method == "oti" else ovi_sets(cfg, evaluation)


def has_text_step(config: Config, dataset: str) -> bool:
    """Whether ``dataset``'s manifest goes through the text-preparation rule: its adapter has long
    texts (``long_texts``: IMDB, 20 Newsgroups, NanoBEIR) or its entry has a ``text`` key."""
    cfg = dataset_entry(config, dataset)
    return DATASET_TEXT_KEY in cfg or bool(getattr(get_adapter(cfg["adapter"]), "long_texts", False))


def source_manifest_path(dataset: str) -> str:
    """The adapter's manifest of a dataset with a text step (the step writes :func:`manifest_path`)."""
    return f"data/manifests/{dataset}.source.parquet"


def text_options(config: Config, dataset: str) -> dict[str, Any]:
    """The ``text`` settings of ``dataset`` that differ from their defaults (the rule's ``text`` param).

    Refuses, naming the key, a strategy without what it needs (``summaries``: ``path``;
    ``llm``: ``llm.model``), so a dry run fails before any job.
    """
    values = dataset_entry(config, dataset).get(DATASET_TEXT_KEY) or {}
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
    return int(text_settings(dataset_entry(config, dataset).get(DATASET_TEXT_KEY))["strategy"] == "llm")


def dataset_pattern(config: Config, text_step: bool) -> str:
    """Regex of the datasets with (``text_step=True``) or without a text step: a rule's wildcard constraint.

    ``data/manifests/{dataset}.parquet`` comes from ``prepare_manifest`` for the others and from
    ``prepare_text`` for these (whose adapter manifest is ``{dataset}.source.parquet``), so each
    file has exactly one producer.  An empty set gives a pattern that matches nothing.
    """
    names = [re.escape(d) for d in sorted(config["datasets"]) if has_text_step(config, d) == text_step]
    return "|".join(names) if names else "(?!x)x"


def generated_datasets(config: Config) -> list[str]:
    return sorted(d for d, cfg in config["datasets"].items() if cfg.get("generate"))


def synthetic_root(config: Config) -> str:
    """The data root of the generated dataset (the first dataset with ``generate: true``)."""
    generated = generated_datasets(config)
    return config["datasets"][generated[0]]["dataroot"] if generated else "data/raw"


def generated_split_file(config: Config, dataset: str) -> list[str]:
    """The generator's split file when ``dataset`` is generated by the pipeline; nothing otherwise."""
    cfg = dataset_entry(config, dataset)
    return [f"{cfg['dataroot']}/synthetic/split_zhou_Synthetic.json"] if cfg.get("generate") else []


def pretrained_models(config: Config) -> list[str]:
    return [trained_checkpoint(m) for m in sorted(config["models"]) if config["models"][m].get("pretrain")]


def model_checkpoint(config: Config, model: str) -> list[str]:
    """The checkpoint file when the pipeline trains ``model`` itself; nothing otherwise."""
    return [trained_checkpoint(model)] if config["models"][model].get("pretrain") else []


def model_spec(config: Config, model: str) -> dict[str, Any]:
    """What loading ``model`` reads (``backend``, ``architecture``, ``pretrained``): the rules' ``model`` param."""
    return model_load_spec(config["models"][model], model)


def dataset_spec(config: Config, dataset: str) -> dict[str, Any]:
    """What preparing ``dataset``'s manifest reads (not the planning keys ``generate``/``sizes``)."""
    return dataset_source(dataset_entry(config, dataset))


def feature_options(config: Config) -> dict[str, Any]:
    """Result options of every feature step (images, texts, prompts, class sentences) that differ from
    their defaults: the rules' ``options`` param.

    ``precision``: ``features.precision`` when not ``fp32`` (:func:`crossgap.config.feature_result_options`).
    """
    return feature_result_options(config)


def architecture(config: Config, model: str) -> str:
    """``models.<model>.architecture`` (the pretraining rule's param)."""
    return config["models"][model]["architecture"]


def dataroot(config: Config, dataset: str) -> str:
    """``datasets.<dataset>.dataroot`` (where the text-preparation step reads its source)."""
    return dataset_entry(config, dataset)["dataroot"]


def ovi_template(config: Config) -> str:
    """``inversion.ovi.template``: the sentence each class name fills for OVI's zero-shot targets."""
    return config["inversion"]["ovi"]["template"]
