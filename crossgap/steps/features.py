"""Feature steps: manifest rows → encoded image / text features, prompts, vocabularies, projections.

Each function reads its inputs, encodes with the model of a ``models:`` entry of ``params.yaml``
(``backend``, ``architecture``, ``pretrained``, ``ovi_tokens``) and writes one feature file atomically;
the ``features`` rules call them through thin scripts (``workflow/scripts/``).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any, Mapping, Sequence

import pandas as pd
import torch

from crossgap.config import schema_default
from crossgap.datasets.images import manifest_truncated_mode
from crossgap.datasets.manifest import query_boxes, query_gallery, read_manifest, select
from crossgap.plan import protocol_split
from crossgap.runtime.env import load_model, precision_meta, runtime_meta
from crossgap.storage import FeatureSet, save_feature_set

log = logging.getLogger(__name__)


def query_crops(df: pd.DataFrame, meta: Mapping[str, Any], rows: pd.DataFrame) -> list | None:
    """Crop boxes for ``rows`` when the image-retrieval protocol crops its queries (revisited ``_bbx``)."""
    spec = (meta.get("protocol") or {}).get("image_retrieval") or {}
    if spec.get("query_crop") != "bbx":
        return None
    query, _, _ = query_gallery(df, meta, "image_retrieval")
    boxes = dict(zip(query["id"], query_boxes(meta, "image_retrieval", query)))
    if not set(rows["id"]) & set(boxes):
        return None
    return [boxes.get(key) for key in rows["id"]]


def extract_step(
    *,
    manifest: str,
    model_slug: str,
    model_spec: Mapping[str, Any],
    split: str,
    modality: str,
    out: str,
    batch_size: int = schema_default("features.batch_size"),
    num_workers: int = schema_default("features.num_workers"),
    progress: bool = True,
    preprojection: bool = False,
    precision: str = schema_default("features.precision"),
    underscores_as_spaces: bool = schema_default("inversion.ovi.underscores_as_spaces"),
) -> None:
    """Features of every ``modality`` row of ``split`` (manifest order) → ``out``.

    ``underscores_as_spaces`` (texts): encode each text with ``_`` read as a space — OVI's targets as the
    reference inverts them (``src/ovi.py``: ``text.replace("_", " ")``), beside the native features.

    ``preprojection``: write the projection's inputs ``[N, W]`` as the features instead, with the
    projected ones from the same forward pass as the extra ``projected`` (for IsoCLIP).
    ``precision``: ``features.precision`` (fp32 by default, as the reference; fp16/bf16 autocast on
    CUDA only), recorded in the metadata.
    """
    df, meta = read_manifest(manifest)
    rows = select(df, modality, {"split": protocol_split(split)})
    if rows.empty:
        raise ValueError(f"{manifest}: no {modality} rows in split {split!r}")
    from crossgap.features import encode_images, encode_texts

    model, preprocess = load_model(model_spec)
    if preprojection:  # a tower without a separable linear projection: a declared capability, not a failure
        from crossgap.models.projection import NoLinearProjectionError, linear_projection

        try:
            linear_projection(model, modality)
        except NoLinearProjectionError as exc:
            log.warning("%s: no pre-projection %s features (%s)", model_slug, modality, exc)
            save_feature_set(out, FeatureSet(torch.empty(0, 0), [], meta={
                "kind": "features", "dataset": meta["dataset"], "model": model_slug, "split": split,
                "modality": modality, "preprojection": True, "unavailable": f"{modality} tower: {exc}",
                **runtime_meta()}))
            return
    start = time.perf_counter()
    if modality == "image":
        paths = [Path(meta["root"]) / p for p in rows["path"]]
        encoded = encode_images(model, preprocess, paths, batch_size=batch_size, num_workers=num_workers,
                                progress=progress, boxes=query_crops(df, meta, rows),
                                truncated_images=manifest_truncated_mode(meta), with_preprojection=preprojection,
                                precision=precision)
    else:
        texts = [str(t).replace("_", " ") for t in rows["text"]] if underscores_as_spaces else rows["text"].tolist()
        encoded = encode_texts(model, texts, batch_size=batch_size, progress=progress,
                               with_preprojection=preprojection, precision=precision)
    # pre-projection files hold the projection's inputs as features, the projected ones as an extra
    feats, extras = (encoded[1], {"projected": encoded[0]}) if preprojection else (encoded, {})
    seconds = time.perf_counter() - start
    log.info("%s %s/%s: %d features in %.1f s", model_slug, split, modality, len(rows), seconds)
    save_feature_set(out, FeatureSet(feats, rows["id"].tolist(), extras=extras, meta={
        "kind": "features", "dataset": meta["dataset"], "model": model_slug, "model_spec": dict(model_spec),
        "split": split, "modality": modality, "preprojection": preprojection, "seconds": seconds,
        **({"underscores_as_spaces": True} if underscores_as_spaces else {}),
        **precision_meta(model.device, precision), **runtime_meta()}))


def classnames_step(*, manifest: str, model_slug: str, model_spec: Mapping[str, Any], out: str,
                    precision: str = schema_default("features.precision")) -> None:
    """Text features ``[C, D]`` of the bare class names (no template; ``_`` read as a space) → ``out``.

    The span of Herzog & Wang's projection (``crossgap.methods.pca_text``).
    """
    from crossgap.features import encode_texts

    _, meta = read_manifest(manifest)
    names = [str(name).replace("_", " ") for name in meta["classnames"]]
    model, _ = load_model(model_spec)
    save_feature_set(out, FeatureSet(encode_texts(model, names, progress=False, precision=precision),
                                     [f"class{c}" for c in range(len(names))],
                                     meta={"kind": "classnames", "dataset": meta["dataset"], "model": model_slug,
                                           "classnames": names, **precision_meta(model.device, precision),
                                           **runtime_meta()}))


def vocabulary_step(*, vocabulary: str, model_slug: str, model_spec: Mapping[str, Any], out: str,
                    precision: str = schema_default("features.precision")) -> None:
    """Text features ``[C, D]`` (unnormalised) of a fixed vocabulary's bare class names → ``out``.

    ``imagenet``: the span of Herzog & Wang's ``pca_text`` (:mod:`crossgap.methods.vocabularies`).
    """
    from crossgap.features import encode_texts
    from crossgap.methods.vocabularies import vocabulary_names

    names = vocabulary_names(vocabulary)
    model, _ = load_model(model_spec)
    save_feature_set(out, FeatureSet(encode_texts(model, names, progress=False, precision=precision),
                                     [f"class{c}" for c in range(len(names))],
                                     meta={"kind": "vocabulary", "vocabulary": vocabulary, "model": model_slug,
                                           "classnames": names, **precision_meta(model.device, precision),
                                           **runtime_meta()}))


def projections_step(*, model_slug: str, model_spec: Mapping[str, Any], out: str) -> None:
    """The model's final linear projections ``W_image [W_v, D]`` and ``W_text [W_t, D]`` → ``out``.

    ``features == pre @ W`` (with a trailing ones column in ``pre`` when a projection has a bias);
    a tower without a linear projection writes an empty file whose metadata says why, so the
    methods that need the matrices fail with that reason.
    """
    from crossgap.models.projection import NoLinearProjectionError, projection_matrices

    model, _ = load_model(model_spec)
    try:
        w_image, w_text = projection_matrices(model)
        extras, reason = {"proj_image": w_image.float().cpu(), "proj_text": w_text.float().cpu()}, None
    except NoLinearProjectionError as exc:
        extras, reason = {}, str(exc)
        log.warning("%s: no linear projections (%s)", model_slug, exc)
    save_feature_set(out, FeatureSet(torch.empty(0, 0), [], extras=extras,
                                     meta={"kind": "projections", "model": model_slug, "unavailable": reason,
                                           **runtime_meta()}))


def prompts_step(*, manifest: str, model_slug: str, model_spec: Mapping[str, Any], out: str,
                 precision: str = schema_default("features.precision")) -> None:
    """Text features of the zero-shot prompts, class-major (``[C*T, D]``) → ``out``."""
    from crossgap.features import class_prompts, encode_texts

    _, meta = read_manifest(manifest)
    classnames, templates = meta["classnames"], meta["templates"]
    model, _ = load_model(model_spec)
    feats = encode_texts(model, class_prompts(classnames, templates), precision=precision)
    ids = [f"class{c}/template{t}" for c in range(len(classnames)) for t in range(len(templates))]
    save_feature_set(out, FeatureSet(feats, ids, meta={
        "kind": "prompts", "dataset": meta["dataset"], "model": model_slug, "num_classes": len(classnames),
        "num_templates": len(templates), "templates": templates, **precision_meta(model.device, precision),
        **runtime_meta()}))


def class_sentences(classnames: Sequence[str], template: str) -> list[str]:
    """``template`` filled with each class name, ``_`` read as a space (the reference's ``use_class_names``
    with its ``template_sentence``: miccunifi/Cross-the-Gap ``src/ovi.py``)."""
    if template.count("{}") != 1:
        raise ValueError(f"inversion.ovi.template: expected exactly one '{{}}', got {template!r}")
    return [template.format(str(name).replace("_", " ")) for name in classnames]


def class_sentences_step(*, manifest: str, model_slug: str, model_spec: Mapping[str, Any], template: str,
                         out: str, precision: str = schema_default("features.precision")) -> None:
    """Text features ``[C, D]`` of :func:`class_sentences` (one per class, ids ``class{c}``) → ``out``.

    The OVI zero-shot targets: OVI inverts each into pseudo patches, and zero-shot classification
    ranks the classes by the similarity of a native image to each inverted sentence.
    """
    from crossgap.features import encode_texts

    _, meta = read_manifest(manifest)
    sentences = class_sentences(meta["classnames"], template)
    model, _ = load_model(model_spec)
    feats = encode_texts(model, sentences, progress=False, precision=precision)
    save_feature_set(out, FeatureSet(feats, [f"class{c}" for c in range(len(sentences))], meta={
        "kind": "class_sentences", "dataset": meta["dataset"], "model": model_slug, "template": template,
        "sentences": sentences, "num_classes": len(sentences), **precision_meta(model.device, precision),
        **runtime_meta()}))
