"""Evaluations of the plan: each task × method's input files (native, inverted, snapshots, transforms
with their reference features), the modality gap's pairing, result files.

Part of :mod:`crossgap.plan` (no torch, no Snakemake imports; see its docstring).
"""

from __future__ import annotations

from typing import Any, Mapping

from crossgap.config import ConfigError
from crossgap.methods import TASKS, Method, ResultName, get_method, snapshot_method, task_methods, transform_names
from crossgap.methods.contract import NESTING_KEYS
from crossgap.plan.data import (
    dataset_entry,
    enabled_tasks,
    feature_path,
    full_protocol,
    gallery_split,
    manifest_path,
    preprojection_path,
    prompts_path,
    query_split,
    split_token,
    tasks,
    zero_shot_split,
)
from crossgap.plan.inversions import (
    current_params,
    inversion_dir,
    seed_tags,
    snapshot_file,
    snapshot_slug,
    snapshot_steps,
)
from crossgap.plan.data import Config


def result_params(config: Config, dataset: str, model: str, task: str, method_file: str) -> dict[str, Any]:
    """Parameters recorded with a result: the inversion's for ``{method}-{tag}`` (``{}`` for native
    methods), a transform's own for this model and task (:func:`method_params`)."""
    parsed = ResultName.parse(method_file)
    method = get_method(task, parsed.method)
    if parsed.tag:
        return current_params(config, method.inversion, dataset, model, parsed.tag)
    return method_params(config, parsed.method, task, model) if method.kind == "transform" else {}


def method_name(method_file: str) -> str:
    """``oti`` for the result stem ``oti-{tag}``, ``oti@50`` for ``oti@50-{tag}`` (the method without its tag)."""
    return ResultName.parse(method_file).method


def retrieval_inputs(config: Config, task: str, dataset: str, model: str, method_file_: str) -> dict[str, str]:
    """Manifest, query and gallery features of a retrieval evaluation ``{task}/{method_file}`` (+ references)."""
    cfg = dataset_entry(config, dataset)
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
    parsed = ResultName.parse(method_file_)
    inversion, step, tag = parsed.base, parsed.step, parsed.tag
    inversion = {"oti_gallery": "oti", "ovi_gallery": "ovi"}.get(inversion, inversion)
    if step is None:
        return f"{inversion_dir(dataset, model, inversion, tag)}/{inverted}.safetensors"
    slug = snapshot_slug(config, inversion)
    if slug is None or step not in snapshot_steps(config, inversion):
        raise ValueError(f"{parsed.method} ({dataset}/{model}): step {step} is not among inversion.{inversion}.snapshots "
                         f"{snapshot_steps(config, inversion)}")
    return snapshot_file(dataset, model, inversion, tag, inverted, slug)


def zero_shot_inputs(config: Config, dataset: str, model: str, method_file_: str) -> dict[str, str]:
    """Manifest, image features and prompt features of a zero-shot evaluation (inverted where the method says)."""
    split = zero_shot_split(dataset_entry(config, dataset))
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
    cfg = dataset_entry(config, dataset)
    enabled = enabled_tasks(config, dataset)
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


def enabled_transforms(config: Config) -> list[str]:
    """``evaluation.methods``, or every registered transform when the key is absent (the registry is
    the one list: a new method module runs by default); ConfigError naming an unknown one."""
    names = config.get("evaluation", {}).get("methods")
    if names is None:
        return list(transform_names())
    unknown = sorted(set(names) - set(transform_names()))
    if unknown:
        raise ConfigError(f"params: evaluation.methods: unknown method(s) {unknown}; registered training-free "
                          f"methods: {list(transform_names())}")
    return list(names)


def method_params(config: Config, name: str, task: str, model: str) -> dict[str, Any]:
    """A transform's parameters on ``task`` for ``model``: its defaults for the task
    (``SPEC.params`` updated by ``SPEC.task_params``), then ``evaluation.method_params.<name>``:

    .. code-block:: yaml

        method_params:
          isoclip:
            k_top: 38                      # every model and task
            tasks: {text_retrieval: {k_top: 5, k_bottom: 25}}
            models:
              clip_l14:                    # one model: every task, then per task
                tasks: {image_retrieval: {k_top: 250, k_bottom: 200}}

    Later levels win: method-wide, per task, per model, per model and task.  An unknown method,
    parameter, task or model is a ConfigError naming the key.
    """
    entry = dict(config.get("evaluation", {}).get("method_params", {}).get(name) or {})
    where = f"params: evaluation.method_params.{name}"
    method = get_method(task, name)
    known = set(method.params)

    def take(values: Mapping[str, Any], key: str) -> dict[str, Any]:
        values = {k: v for k, v in dict(values or {}).items() if k not in NESTING_KEYS}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigError(f"{key}: unknown parameter(s) {unknown} of {name}; known: {sorted(known)}")
        return values

    def per_task(values: Mapping[str, Any], key: str) -> dict[str, Any]:
        tasks = dict(values.get("tasks") or {})
        bad = sorted(set(tasks) - set(TASKS))
        if bad:
            raise ConfigError(f"{key}.tasks: unknown task(s) {bad}; expected some of {list(TASKS)}")
        return take(tasks.get(task, {}), f"{key}.tasks.{task}")

    out = {**method.params, **take(entry, where), **per_task(entry, where)}
    models = dict(entry.get("models") or {})
    unknown_models = sorted(set(models) - set(config.get("models", {})))
    if unknown_models:
        raise ConfigError(f"{where}.models: unknown model(s) {unknown_models}; models: {sorted(config['models'])}")
    if model in models:
        here = f"{where}.models.{model}"
        out |= take(models[model], here) | per_task(dict(models[model] or {}), here)
    return out


def check_method_params(config: Config) -> None:
    """Refuse ``evaluation.method_params`` for a method that is not registered (dry runs fail early)."""
    unknown = sorted(set(config.get("evaluation", {}).get("method_params", {})) - set(transform_names()))
    if unknown:
        raise ConfigError(f"params: evaluation.method_params: unknown method(s) {unknown}; registered: "
                          f"{list(transform_names())}")


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
            if dataset_entry(config, dataset).get("inverted_gallery"):
                out.append(method)
            continue
        out.append(method)
        if method.kind == "inverted":
            out += [snapshot_method(task, method.inversion, s) for s in snapshot_steps(config, method.inversion)]
    return out


def result_files(config: Config, dataset: str, model: str) -> list[str]:
    """``data/results/{dataset}/{model}/{task}/{method}.json`` for every enabled task and method."""
    files = []
    for i, method_tags in enumerate(seed_tags(config, model)):
        files += [f"data/results/{dataset}/{model}/{task}/{method.file_stem(method_tags)}.json"
                  for task in enabled_tasks(config, dataset) for method in dataset_methods(config, dataset, task)
                  if i == 0 or method.inversion]  # replicate seeds: the methods that read an inversion
    return files


def per_query_file(result: str) -> str:
    """The per-query scores (Parquet) written next to a result JSON."""
    return result[: -len(".json")] + ".queries.parquet"


def projections_path(dataset: str, model: str) -> str:
    return f"data/features/{dataset}/{model}/projections.safetensors"


def vocabulary_path(model: str, vocabulary: str) -> str:
    """Text features ``[C, D]`` of a fixed list of bare class names (``imagenet``: ImageNet-1k's), per model."""
    return f"data/features/_vocabulary/{model}/{vocabulary}_classnames.safetensors"


def classnames_path(dataset: str, model: str) -> str:
    """Text features of the bare class names (no template): the span of ``pca_text``."""
    return f"data/features/{dataset}/{model}/bare_classnames.safetensors"


def available_references(config: Config, dataset: str, model: str, task: str) -> dict[str, str]:
    """Reference features a transform may be fitted on, for ``task`` of ``dataset`` (never its queries).

    ``image``: the image-retrieval gallery images (else, for text retrieval, the images of the text
    gallery's split; for zero-shot without image retrieval, the unlabelled zero-shot images);
    ``text``: the text-retrieval gallery texts; ``prompts`` / ``classnames``: class prompt / bare
    class-name features, ``classifier``: the class embeddings of the averaged prompts (zero-shot);
    ``imagenet_classnames``: the model's features of ImageNet-1k's bare class names (the span of
    Herzog & Wang's ``pca_text``, for every dataset); ``proj_image`` / ``proj_text``: the model's
    projection matrices.
    """
    cfg, enabled = dataset_entry(config, dataset), enabled_tasks(config, dataset)
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
        refs["prompts"] = refs["classifier"] = prompts_path(dataset, model)
        refs["classnames"] = classnames_path(dataset, model)
    refs["imagenet_classnames"] = vocabulary_path(model, "imagenet")
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




def reference_compat(config: Config) -> bool:
    """``evaluation.reference_compat``: score as the reference's code does (every evaluation rule's param)."""
    return bool(config["evaluation"]["reference_compat"])
