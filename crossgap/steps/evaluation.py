"""Evaluation steps of the workflow: retrieval and zero-shot from feature files, one JSON result each.

Methods (the registry :mod:`crossgap.methods`; besides those below, snapshots ``oti@<step>`` /
``ovi@<step>`` and the training-free transforms ``gap_shift``, ``centered``, ``isoclip``, ``pca_text``):

* ``image_retrieval``: ``image`` (native image queries) or ``oti`` (OTI-inverted queries, i.e. the
  query image's pseudo-word text feature) against native gallery images;
* ``text_retrieval``: ``text`` or ``ovi`` (OVI-inverted query texts) against native gallery texts;
* ``zero_shot``: ``standard`` (images vs prompt texts), ``oti`` (OTI-inverted images vs prompt
  texts: text-text) or ``ovi`` (images vs OVI-inverted prompts: image-image).

``reference_compat=True`` (params ``evaluation.reference_compat``) scores retrieval with the reference
implementation's definitions (:mod:`crossgap.metrics.reference_compat`: leave-one-out mAP@R over the
top R+1, float16 ImageNet similarities); revisited and zero-shot metrics are the same in both modes.
Every result file records the mode in ``extra.reference_compat``.
"""

from __future__ import annotations

import logging
from typing import Any, Mapping

import numpy as np
import pandas as pd

from crossgap.datasets.manifest import (
    qrels_pairs,
    query_gallery,
    read_manifest,
    relevance,
    revisited_ground_truth,
    zero_shot_rows,
)
from crossgap.methods import features as method_features
from crossgap.methods import get_method
from crossgap.metrics import build_classifier
from crossgap.metrics.reference_compat import uses_fp16_similarities
from crossgap.metrics.results import write_result
from crossgap.metrics.retrieval import evaluation_per_query, summarize_retrieval
from crossgap.metrics.revisited import revisited_per_query, summarize_revisited
from crossgap.metrics.scores import retrieval_scores, revisited_scores, write_scores, zero_shot_scores
from crossgap.metrics.zeroshot import summarize_zero_shot, zero_shot_ranks
from crossgap.datasets.textprep import texts_summary
from crossgap.storage import load_feature_set, read_meta
from crossgap.config import schema_default

log = logging.getLogger(__name__)


def _retrieval(q_feats, g_feats, query_labels=None, gallery_labels=None, **kw) -> tuple[dict, dict]:
    per = evaluation_per_query(q_feats, g_feats, query_labels, gallery_labels, **kw)
    return summarize_retrieval(per), retrieval_scores(per)


def _by_label(meta, task, q_rows, g_rows, q_feats, g_feats, **kw) -> tuple[dict, dict]:
    return _retrieval(q_feats, g_feats, q_rows["label"].to_numpy(), g_rows["label"].to_numpy(), **kw)


def _by_group(meta, task, q_rows, g_rows, q_feats, g_feats, **kw) -> tuple[dict, dict]:
    codes, _ = pd.factorize(pd.concat([q_rows["group"], g_rows["group"]], ignore_index=True))
    return _retrieval(q_feats, g_feats, query_groups=codes[: len(q_rows)], gallery_groups=codes[len(q_rows):], **kw)


def _by_qrels(meta, task, q_rows, g_rows, q_feats, g_feats, **kw) -> tuple[dict, dict]:
    return _retrieval(q_feats, g_feats, relevance=qrels_pairs(meta, task, q_rows, g_rows), **kw)


def _by_revisited(meta, task, q_rows, g_rows, q_feats, g_feats, exclude_self, chunk_size, **compat) -> tuple[dict, dict]:
    # the reference's compute_map is the official one, as evaluate_revisited: compat changes nothing here
    gnd = revisited_ground_truth(meta, task, q_rows, g_rows)
    if chunk_size > REVISITED_CHUNK:
        log.info("revisited ranking: %d queries per chunk (it keeps [chunk, gallery] int64 ranks)", REVISITED_CHUNK)
    per = revisited_per_query(q_feats, g_feats, gnd, chunk_size=min(chunk_size, REVISITED_CHUNK))
    return summarize_revisited(per, len(g_rows)), revisited_scores(per)


#: queries per chunk of the revisited ranking (its per-chunk memory is 8 bytes x chunk x gallery)
REVISITED_CHUNK = 256

RELEVANCE_EVALUATORS = {"label": _by_label, "group": _by_group, "qrels": _by_qrels, "revisited": _by_revisited}
"""How a protocol's ``relevance`` is evaluated: same label, same group (captions of one image),
explicit query-document pairs (BEIR qrels), or the revisited Oxford/Paris E/M/H protocol."""


def _unavailable(out: str, per_query_out: str | None, *, task: str, method: str, dataset: str, model_slug: str,
                 params: Mapping[str, Any], reason: str, extra: Mapping[str, Any]) -> dict[str, Any]:
    """A result without metrics whose ``extra.unavailable`` says why (a declared capability check only)."""
    log.warning("%s/%s %s %s not evaluated: %s", dataset, model_slug, task, method, reason)
    if per_query_out is not None:
        write_scores(per_query_out, {}, query_ids=[], metadata={"unavailable": reason})
    return write_result(out, task=task, method=method, dataset=dataset, model=model_slug, metrics={},
                        params=dict(params), extra={**extra, "unavailable": reason})


def input_precisions(files: Mapping[str, str]) -> dict[str, str | None]:
    """``{role: precision}`` the input feature files record (``None`` for files written before it was)."""
    return {role: read_meta(path).get("precision") for role, path in files.items()}


def retrieval_step(
    *,
    task: str,
    method: str,
    manifest: str,
    query: str,
    gallery: str,
    out: str,
    model_slug: str,
    chunk_size: int = schema_default("evaluation.chunk_size"),
    params: Mapping[str, Any] | None = None,
    reference_compat: bool = schema_default("evaluation.reference_compat"),
    references: Mapping[str, str] | None = None,
    per_query_out: str | None = None,
) -> dict[str, Any]:
    """Evaluate the protocol's queries (from ``query`` features) against its gallery; write ``out``.

    ``method`` is a method of ``task`` (:mod:`crossgap.methods`): native or inverted queries as
    read, a snapshot's step column, or a transform fitted on ``references`` (``{key: file}``) and
    applied to query and gallery.  ``per_query_out``: the per-query scores (Parquet,
    :mod:`crossgap.metrics.scores`).  ``reference_compat``: the reference's mAP@R and (for
    ImageNet) float16 ranking (module docstring).
    """
    df, meta = read_manifest(manifest)
    q_rows, g_rows, exclude_self = query_gallery(df, meta, task)
    spec = get_method(task, method)
    modality = "image" if task == "image_retrieval" else "text"
    extra: dict[str, Any] = {"query_file": query, "gallery_file": gallery, "exclude_self": exclude_self,
                             "recipe": spec.recipe(params).as_dict(),
                             "precision": input_precisions({"query": query, "gallery": gallery})}
    if task == "text_retrieval":  # how long texts reached the encoders (the report marks truncation)
        extra["texts"] = texts_summary(meta)
    pre = spec.kind == "transform" and spec.features == "pre"
    try:
        q_feats = method_features.rows(query, q_rows["id"].tolist(), spec, pre=pre)
        g_feats = method_features.rows(gallery, g_rows["id"].tolist(), get_method(task, "image" if modality == "image"
                                                                                  else "text"), pre=pre)
        if spec.kind == "transform":
            (q_feats, g_feats), extra["fit"] = method_features.transform(
                spec, params or {}, references or {}, [(q_feats, modality, "query"), (g_feats, modality, "gallery")])
    except method_features.MethodUnavailable as exc:
        return _unavailable(out, per_query_out, task=task, method=method, dataset=meta["dataset"],
                            model_slug=model_slug, params=params or {}, reason=str(exc), extra=extra)
    kind = relevance(meta, task)
    if kind not in RELEVANCE_EVALUATORS:
        raise ValueError(f"{manifest}: unsupported relevance {kind!r}; known: {sorted(RELEVANCE_EVALUATORS)}")
    fp16 = bool(reference_compat) and uses_fp16_similarities(meta["dataset"])
    metrics, scores = RELEVANCE_EVALUATORS[kind](meta, task, q_rows, g_rows, q_feats, g_feats,
                                                 exclude_self=exclude_self, chunk_size=chunk_size,
                                                 reference_compat=bool(reference_compat), fp16_similarities=fp16)
    if per_query_out is not None:
        write_scores(per_query_out, scores, query_ids=q_rows["id"].tolist(), metadata={"task": task, "method": method})
    log.info("%s/%s %s %s: %s", meta["dataset"], model_slug, task, method,
             {k: round(v, 2) for k, v in metrics.items() if k.startswith("mAP") and isinstance(v, float)})
    return write_result(out, task=task, method=method, dataset=meta["dataset"], model=model_slug,
                        metrics=metrics, params=dict(params or {}),
                        extra=extra | {"reference_compat": bool(reference_compat), "fp16_similarities": fp16})


def zero_shot_step(
    *,
    method: str,
    manifest: str,
    images: str,
    prompts: str,
    out: str,
    model_slug: str,
    params: Mapping[str, Any] | None = None,
    reference_compat: bool = schema_default("evaluation.reference_compat"),
    references: Mapping[str, str] | None = None,
    per_query_out: str | None = None,
) -> dict[str, Any]:
    """Zero-shot accuracy of the protocol's images (``images`` features) with a classifier from ``prompts``.

    Methods as in :func:`retrieval_step`; a transform maps the images as queries and the class
    embeddings ``[C, D]`` of the averaged prompt classifier as the gallery (I0T centres, and Liang et al.
    shift, the class embeddings, not the individual prompts).  ``reference_compat`` is recorded only: the reference's zero-shot accuracy is the
    standard one.
    """
    df, meta = read_manifest(manifest)
    rows = zero_shot_rows(df, meta)
    spec = get_method("zero_shot", method)
    num_classes = len(meta["classnames"])
    extra: dict[str, Any] = {"image_file": images, "prompt_file": prompts, "recipe": spec.recipe(params).as_dict(),
                             "precision": input_precisions({"images": images, "prompts": prompts})}
    try:
        feats = method_features.rows(images, rows["id"].tolist(), spec if spec.inversion == "oti" else
                                     get_method("zero_shot", "standard"))
        prompt_fs = load_feature_set(prompts)
        if prompt_fs.meta.get("unavailable"):
            raise method_features.MethodUnavailable(f"{prompts}: {prompt_fs.meta['unavailable']}")
        prompt_feats = prompt_fs.features
        if spec.kind == "snapshot" and spec.inversion == "ovi":
            prompt_feats = method_features.rows(prompts, prompt_fs.ids, spec)
        if prompt_feats.shape[0] % num_classes:
            raise ValueError(f"{prompts}: {prompt_feats.shape[0]} prompts is not a multiple of {num_classes} classes")
        classifier = build_classifier(prompt_feats, num_classes)  # [C, D]
        if spec.kind == "transform":  # images are the queries, the class embeddings the gallery
            (feats, classifier), extra["fit"] = method_features.transform(
                spec, params or {}, references or {}, [(feats, "image", "query"), (classifier, "text", "gallery")])
    except method_features.MethodUnavailable as exc:
        return _unavailable(out, per_query_out, task="zero_shot", method=method, dataset=meta["dataset"],
                            model_slug=model_slug, params=params or {}, reason=str(exc), extra=extra)
    ranks, labels, c = zero_shot_ranks(feats, classifier, rows["label"].to_numpy())
    metrics = summarize_zero_shot(ranks, labels, c)
    if per_query_out is not None:
        write_scores(per_query_out, zero_shot_scores(ranks, c), query_ids=rows["id"].tolist(),
                     metadata={"task": "zero_shot", "method": method})
    log.info("%s/%s zero-shot %s: top1 %.2f", meta["dataset"], model_slug, method, metrics["top1"])
    return write_result(out, task="zero_shot", method=method, dataset=meta["dataset"], model=model_slug,
                        metrics=metrics, params=dict(params or {}),
                        extra=extra | {"reference_compat": bool(reference_compat)})


def matched_pairs(
    manifest: str, images: str, texts: str | None, prompts: str | None
) -> tuple[np.ndarray, np.ndarray, str]:
    """Matched (image, text) feature pairs ``[N, D]`` × 2 for the modality gap, and how they were paired.

    Caption datasets pair each image with its first caption; classification datasets pair each
    image with the mean prompt feature of its class.
    """
    df, meta = read_manifest(manifest)
    img_fs = load_feature_set(images)
    img_ids = img_fs.ids
    if texts is not None:
        txt_fs = load_feature_set(texts)
        first = {}
        for key, group in zip(df["id"], df["group"]):
            if group is not None and not pd.isna(group) and group not in first:
                first[group] = key
        txt_index = {key: i for i, key in enumerate(txt_fs.ids)}
        pairs = [(i, txt_index[first[key]]) for i, key in enumerate(img_ids) if first.get(key) in txt_index]
        if pairs:
            rows = np.array(pairs)
            return img_fs.features[rows[:, 0]].numpy(), txt_fs.features[rows[:, 1]].numpy(), "first caption"
    if prompts is None:
        raise ValueError(f"{images}: no image has a caption in {texts}, and the dataset has no class prompts to pair with")
    labels = df.set_index("id").loc[img_ids, "label"].to_numpy()
    classifier = build_classifier(load_feature_set(prompts).features, len(meta["classnames"])).numpy()
    keep = labels >= 0
    return img_fs.features.numpy()[keep], classifier[labels[keep]], "class prompt"


def modality_gap_step(
    *, manifest: str, images: str, texts: str | None, prompts: str | None, out: str, dataset: str, model_slug: str
) -> dict[str, Any]:
    """Modality gap of matched (image, text) pairs (see :func:`matched_pairs`) → ``out`` (JSON)."""
    from crossgap.metrics.gap import modality_gap
    from crossgap.utils import write_json

    image_feats, text_feats, pairing = matched_pairs(manifest, images, texts, prompts)
    metrics = {k: float(v) for k, v in modality_gap(image_feats, text_feats).items()}
    record = {"dataset": dataset, "model": model_slug, "num_pairs": int(len(image_feats)),
              "pairing": pairing, "metrics": metrics}
    write_json(out, record)
    log.info("%s/%s modality gap: %s", dataset, model_slug, metrics)
    return record
