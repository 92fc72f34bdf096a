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
from crossgap.methods import TASKS, Method, get_method, snapshot_method, task_methods

ALL_SPLITS = "all"
Config = Mapping[str, Any]


# --------------------------------------------------------------------------- protocol and splits
def split_token(split: str) -> str:
    """File-name token for a protocol split (``*`` → ``all``)."""
    return ALL_SPLITS if split == "*" else split


def split_spec(token: str) -> str:
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


def _dataset(config: Config, dataset: str) -> Mapping[str, Any]:
    return config["datasets"][dataset]


def _tasks(config: Config, dataset: str) -> list[str]:
    return tasks(_dataset(config, dataset), config.get("evaluation", {}))


# --------------------------------------------------------------------------- files
def feature_path(dataset: str, model: str, modality: str, split: str) -> str:
    return f"data/features/{dataset}/{model}/{modality}_{split}.safetensors"


def preprojection_path(dataset: str, model: str, modality: str, split: str) -> str:
    """Pre-projection features of a split (``features`` = the projection's inputs ``[N, W]``), for IsoCLIP."""
    return f"data/features/{dataset}/{model}/{modality}_{split}.pre.safetensors"


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


def oti_splits(dataset_cfg: Mapping[str, Any], evaluation: Mapping[str, Any]) -> list[str]:
    """Image splits inverted with OTI: image-retrieval queries and zero-shot images."""
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
    """Text sets inverted with OVI: ``queries`` (text-retrieval queries) and ``classnames`` (zero-shot).

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
    cfg, evaluation = _dataset(config, dataset), config.get("evaluation", {})
    plain = {**cfg, "inverted_gallery": False}
    return oti_splits(plain, evaluation) if method == "oti" else ovi_sets(plain, evaluation)


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


def result_params(config: Config, dataset: str, model: str, method_file: str) -> dict[str, Any]:
    """Parameters recorded with a result: the inversion's for ``{method}-{tag}`` (``{}`` for native
    methods), a transform's own (its defaults updated by ``evaluation.method_params``)."""
    name, _, tag = method_file.partition("-")
    if tag:
        inversion = get_method_any(name.split("@")[0]).inversion
        return current_params(config, inversion, dataset, model, tag)
    method = get_method_any(name)
    return {**method.params, **method_params(config, name)} if method.kind == "transform" else {}


def method_name(method_file: str) -> str:
    """``oti`` for the result stem ``oti-{tag}``, ``oti@50`` for ``oti@50-{tag}`` (the method without its tag)."""
    return method_file.split("-")[0]


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
        if inverted not in ("queries", "gallery"):
            return None
        task_split = query_split if inverted == "queries" else gallery_split
        inverted = task_split(_dataset(config, dataset), "text_retrieval")
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
    if inverted == "gallery":
        return {"features": feature_path(dataset, model, "text", gallery_split(_dataset(config, dataset),
                                                                               "text_retrieval"))}
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
    """Manifest, query and gallery features of a retrieval evaluation ``{task}/{method_file}`` (+ references)."""
    cfg = _dataset(config, dataset)
    q, g = query_split(cfg, task), gallery_split(cfg, task)
    modality = "image" if task == "image_retrieval" else "text"
    method = get_method(task, method_name(method_file_))
    if method.inversion:
        query = _inverted_file(config, dataset, model, method_file_, q if method.inversion == "oti" else "queries")
    else:
        query = feature_path(dataset, model, modality, q)
    gallery = feature_path(dataset, model, modality, g)
    if method.features == "pre":  # IsoCLIP: the projection's inputs of the same rows
        query, gallery = preprojection_path(dataset, model, modality, q), preprojection_path(dataset, model, modality, g)
    if method.gallery == "inverted":
        gallery = _inverted_file(config, dataset, model, method_file_, g if method.inversion == "oti" else "gallery")
    inputs = {"manifest": manifest_path(dataset), "query": query, "gallery": gallery}
    return inputs | _reference_inputs(config, dataset, model, task, method)


def _reference_inputs(config: Config, dataset: str, model: str, task: str, method: Method) -> dict[str, str]:
    if method.kind != "transform":
        return {}
    refs = resolve_references(config, dataset, task, method, model)
    if refs is None:
        raise ValueError(f"{method.name} cannot be evaluated on {dataset}/{task}: it needs reference features "
                         f"{list(method.references)}, the dataset provides {sorted(available_references(config, dataset, model, task))}")
    return {f"ref_{key}": path for key, path in refs.items()}


def _inverted_file(config: Config, dataset: str, model: str, method_file_: str, inverted: str) -> str:
    """The inverted features a method reads: the final ones, or for ``oti@<step>`` the snapshot file."""
    name, _, tag = method_file_.partition("-")
    inversion, _, step = name.partition("@")
    inversion = get_method_any(inversion).inversion or inversion  # oti_gallery reads OTI's files
    if not step:
        return f"{inversion_dir(dataset, model, inversion, tag)}/{inverted}.safetensors"
    slug = snapshot_slug(config, inversion)
    if slug is None or int(step) not in snapshot_steps(config, inversion):
        raise ValueError(f"{name} ({dataset}/{model}): step {step} is not among inversion.{inversion}.snapshots "
                         f"{snapshot_steps(config, inversion)}")
    return snapshot_file(dataset, model, inversion, tag, inverted, slug)


def zero_shot_inputs(config: Config, dataset: str, model: str, method_file_: str) -> dict[str, str]:
    """Manifest, image features and prompt features of a zero-shot evaluation (inverted where the method says)."""
    split = zero_shot_split(_dataset(config, dataset))
    method = get_method("zero_shot", method_name(method_file_))
    images = (_inverted_file(config, dataset, model, method_file_, split) if method.inversion == "oti"
              else feature_path(dataset, model, "image", split))
    # OVI: one inverted class sentence per class (``classnames``) against native images, as the reference
    prompts = (_inverted_file(config, dataset, model, method_file_, "classnames") if method.inversion == "ovi"
               else prompts_path(dataset, model))
    return ({"manifest": manifest_path(dataset), "images": images, "prompts": prompts}
            | _reference_inputs(config, dataset, model, "zero_shot", method))


def method_pattern(task: str) -> str:
    """Regex of the result stems of ``task`` (a rule's ``method`` wildcard constraint)."""
    names = []
    for method in task_methods(task):
        if method.inversion:
            names.append(f"{method.name}(@[0-9]+)?-[0-9a-f]{{10}}")
        else:
            names.append(method.name)
    return "|".join(names)


def has_modality_gap(dataset_cfg: Mapping[str, Any], evaluation: Mapping[str, Any]) -> bool:
    """The gap needs matched pairs: images with captions (image + text retrieval, or the protocol's
    ``modality_gap`` split) or with class prompts."""
    enabled = set(tasks(dataset_cfg, evaluation))
    return ("zero_shot" in enabled or {"image_retrieval", "text_retrieval"} <= enabled
            or bool(full_protocol(dataset_cfg).get("modality_gap")))


def gap_inputs(config: Config, dataset: str, model: str) -> dict[str, str]:
    """Features the modality gap pairs: zero-shot images (else image-retrieval queries), texts, prompts."""
    cfg = _dataset(config, dataset)
    enabled = _tasks(config, dataset)
    pairing = full_protocol(cfg).get("modality_gap")
    inputs = {"manifest": manifest_path(dataset)}
    if "zero_shot" in enabled:
        inputs["prompts"] = prompts_path(dataset, model)
    if pairing:  # images of split S with their first caption (caption tables, retrieval shards)
        split = split_token(pairing["split"])
        return inputs | {"images": feature_path(dataset, model, "image", split),
                         "texts": feature_path(dataset, model, "text", split)}
    split = zero_shot_split(cfg) if "zero_shot" in enabled else query_split(cfg, "image_retrieval")
    inputs["images"] = feature_path(dataset, model, "image", split)
    if "text_retrieval" in enabled:
        inputs["texts"] = feature_path(dataset, model, "text", query_split(cfg, "text_retrieval"))
    return inputs


# --------------------------------------------------------------------------- targets
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


def enabled_transforms(config: Config) -> list[str]:
    return list(config.get("evaluation", {}).get("methods", ()))


def method_params(config: Config, name: str) -> dict[str, Any]:
    """A transform's parameters: its defaults updated by ``evaluation.method_params.<name>``."""
    return dict(config.get("evaluation", {}).get("method_params", {}).get(name, {}))


def dataset_methods(config: Config, dataset: str, task: str) -> list[Method]:
    """The methods evaluated on ``dataset`` × ``task``: native, inverted, their snapshots, and the
    enabled transforms whose reference features the dataset provides."""
    out: list[Method] = []
    enabled = enabled_transforms(config)
    for method in task_methods(task):
        if method.kind == "transform":
            if method.name in enabled and resolve_references(config, dataset, task, method) is not None:
                out.append(method)
            continue
        if method.gallery == "inverted":
            if _dataset(config, dataset).get("inverted_gallery"):
                out.append(method)
            continue
        out.append(method)
        if method.kind == "inverted":
            out += [snapshot_method(task, method.inversion, s) for s in snapshot_steps(config, method.inversion)]
    return out


def result_files(config: Config, dataset: str, model: str) -> list[str]:
    """``data/results/{dataset}/{model}/{task}/{method}.json`` for every enabled task and method."""
    method_tags = tags(config, model)
    return [f"data/results/{dataset}/{model}/{task}/{method.file_stem(method_tags)}.json"
            for task in _tasks(config, dataset) for method in dataset_methods(config, dataset, task)]


def per_query_file(result: str) -> str:
    """The per-query scores (Parquet) written next to a result JSON."""
    return result[: -len(".json")] + ".queries.parquet"


# --------------------------------------------------------------------------- transform references
def projections_path(dataset: str, model: str) -> str:
    return f"data/features/{dataset}/{model}/projections.safetensors"


def classnames_path(dataset: str, model: str) -> str:
    """Text features of the bare class names (no template): the span of ``pca_text``."""
    return f"data/features/{dataset}/{model}/bare_classnames.safetensors"


def available_references(config: Config, dataset: str, model: str, task: str) -> dict[str, str]:
    """Reference features a transform may be fitted on, for ``task`` of ``dataset`` (never its queries).

    ``image``: the image-retrieval gallery images (else, for text retrieval, the images of the text
    gallery's split; for zero-shot without image retrieval, the unlabelled zero-shot images);
    ``text``: the text-retrieval gallery texts; ``prompts`` / ``classnames``: class prompt / bare
    class-name features; ``proj_image`` / ``proj_text``: the model's projection matrices.
    """
    cfg, enabled = _dataset(config, dataset), _tasks(config, dataset)
    refs: dict[str, str] = {}
    if "image_retrieval" in enabled:
        refs["image"] = feature_path(dataset, model, "image", gallery_split(cfg, "image_retrieval"))
    elif task == "text_retrieval" and "zero_shot" in enabled:
        refs["image"] = feature_path(dataset, model, "image", gallery_split(cfg, "text_retrieval"))
    elif task == "zero_shot":
        refs["image"] = feature_path(dataset, model, "image", zero_shot_split(cfg))
    if "text_retrieval" in enabled:
        refs["text"] = feature_path(dataset, model, "text", gallery_split(cfg, "text_retrieval"))
    if "zero_shot" in enabled:
        refs["prompts"] = prompts_path(dataset, model)
        refs["classnames"] = classnames_path(dataset, model)
    refs["proj_image"] = refs["proj_text"] = projections_path(dataset, model)
    return refs


def resolve_references(config: Config, dataset: str, task: str, method: Method,
                       model: str = "_") -> dict[str, str] | None:
    """``{reference key: file}`` for ``method`` (fallbacks applied), or ``None`` when one is missing."""
    available = available_references(config, dataset, model, task)
    out = {}
    for key in method.references:
        chosen = key if key in available else method.fallbacks.get(key)
        if chosen not in available:
            return None
        out[chosen] = available[chosen]
    return out


def feature_options(config: Config) -> dict[str, Any]:
    """Result options of feature extraction that differ from their defaults (the rule's ``options`` param).

    ``precision``: ``features.precision`` when not ``fp32`` (:func:`crossgap.config.feature_result_options`).
    """
    return feature_result_options(config)


def text_feature_options(config: Config) -> dict[str, Any]:
    """The ``options`` param of the prompt and class-sentence rules: ``features.precision`` when not fp32."""
    return feature_result_options(config)


def get_method_any(name: str) -> Method:
    return next(m for task in TASKS for m in task_methods(task) if m.name == name)


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
        files += feature_files(d, m, _dataset(config, d), config.get("evaluation", {}))
        if "zero_shot" in _tasks(config, d):
            files += [prompts_path(d, m), class_sentences_path(d, m)]
        for task in _tasks(config, d):
            for method in dataset_methods(config, d, task):
                stem = method.file_stem(tags(config, m))
                inputs = (zero_shot_inputs(config, d, m, stem) if task == "zero_shot"
                          else retrieval_inputs(config, task, d, m, stem))
                files += [p for p in inputs.values() if p.startswith("data/features/")]
        for method in ("oti", "ovi"):
            for s in inverted_sets(config, d, method):
                files += [p for p in inversion_targets(config, d, m, method, s).values() if p.startswith("data/features/")]
        if has_modality_gap(_dataset(config, d), config.get("evaluation", {})):
            files += [p for p in gap_inputs(config, d, m).values() if p.startswith("data/features/")]
    return list(dict.fromkeys(files))


def all_inversion_files(config: Config) -> list[str]:
    files = []
    for d, m in _grid(config):
        t = tags(config, m)
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
            if has_modality_gap(_dataset(config, d), config.get("evaluation", {}))]
