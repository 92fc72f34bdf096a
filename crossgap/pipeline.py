"""File-to-file steps of the workflow: each function reads inputs, computes, writes outputs atomically.

The Snakemake rules call these through thin scripts (``workflow/scripts/``); they hold no
Snakemake code, so they can be run and tested on their own.  Model specs are the ``models:``
entries of ``params.yaml`` (``backend``, ``architecture``, ``pretrained``, ``ovi_tokens``).
"""

from __future__ import annotations

import logging
import os
import platform
import time
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd
import torch

from crossgap.datasets.images import manifest_truncated_mode
from crossgap.datasets.manifest import query_boxes, query_gallery, read_manifest, select
from crossgap.config import complete_params, schema_default
from crossgap.plan import protocol_split
from crossgap.storage import FeatureSet, load_feature_set, save_feature_set, take
from crossgap.utils import atomic_path

log = logging.getLogger(__name__)



def load_model(spec: Mapping[str, Any], device: str | None = None):
    """``(model, preprocess)`` for a ``models:`` entry of params.yaml."""
    from crossgap.models import load_clip  # heavy (open_clip, clip): only jobs that need a model import it

    model, _, preprocess = load_clip(
        spec["architecture"], spec.get("pretrained"), backend=spec.get("backend"), device=device
    )
    return model, preprocess


def _runtime_meta() -> dict[str, Any]:
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    meta = {"device": dev, "host": platform.node(), "torch": torch.__version__}
    if dev == "cuda":
        meta["gpu"] = torch.cuda.get_device_name(0)
        meta["cuda_visible_devices"] = os.environ.get("CUDA_VISIBLE_DEVICES")
    return meta


def _precision_meta(device: torch.device, precision: str) -> dict[str, str]:
    """``precision`` (what ran: fp32 on the CPU whatever was asked) and ``precision_requested``."""
    from crossgap.utils import effective_precision

    return {"precision": effective_precision(device, precision), "precision_requested": precision}


# --------------------------------------------------------------------------------------------
# features
# --------------------------------------------------------------------------------------------
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
                **_runtime_meta()}))
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
        **_precision_meta(model.device, precision), **_runtime_meta()}))


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
                                           "classnames": names, **_precision_meta(model.device, precision),
                                           **_runtime_meta()}))


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
                                           "classnames": names, **_precision_meta(model.device, precision),
                                           **_runtime_meta()}))


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
                                           **_runtime_meta()}))


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
        "num_templates": len(templates), "templates": templates, **_precision_meta(model.device, precision),
        **_runtime_meta()}))


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
        "sentences": sentences, "num_classes": len(sentences), **_precision_meta(model.device, precision),
        **_runtime_meta()}))


# --------------------------------------------------------------------------------------------
# inversion
# --------------------------------------------------------------------------------------------
def shard_bounds(n: int, shard: int, num_shards: int, shard_size: int) -> tuple[int, int]:
    """``[start, stop)`` of shard ``shard``: rows ``shard * shard_size`` onwards, ``shard_size`` of them.

    The number of shards is planned from the published set size (``crossgap.plan.num_shards``);
    the last shard takes every remaining row, so a set larger than planned is still covered
    (and a smaller one leaves trailing shards empty).
    """
    if not 0 <= shard < num_shards:
        raise ValueError(f"shard {shard} out of range for {num_shards} shards")
    if shard_size < 1:
        raise ValueError(f"shard_size must be >= 1, got {shard_size}")
    start = min(shard * shard_size, n)
    stop = n if shard == num_shards - 1 else min(start + shard_size, n)
    return start, stop


def inversion_targets(features: str, manifest: str | None, task: str | None) -> tuple[torch.Tensor, list[str]]:
    """Target features and ids: all rows of ``features``, or the query rows of ``task`` when given."""
    fs = load_feature_set(features)
    if task is None:
        return fs.features, list(fs.ids)
    df, meta = read_manifest(manifest)
    query, _, _ = query_gallery(df, meta, task)
    ids = query["id"].tolist()
    return take(fs, ids, features), ids


def invert_shard_step(
    *,
    method: str,
    features: str,
    out: str,
    model_slug: str,
    model_spec: Mapping[str, Any],
    shard: int,
    num_shards: int,
    shard_size: int,
    params: Mapping[str, Any],
    batch_size: int | None = None,
    resume_every: int = schema_default("inversion.resume_every"),
    snapshots: Sequence[int] = (),
    manifest: str | None = None,
    task: str | None = None,
    progress: bool = True,
) -> None:
    """OTI or OVI on one shard of the targets; writes re-encoded features, tokens and losses.

    ``snapshots``: steps at which the tokens are also kept; they are re-encoded like the final ones
    and stored as the extras ``snapshot_tokens [N, S, T, W]`` and ``snapshot_features [N, S, D]``
    (``meta["snapshot_steps"]``), evaluated as the methods ``oti@<step>`` / ``ovi@<step>``.

    ``params``: the result fields (``steps``, ``learning_rate``, ``weight_decay``,
    ``num_pseudo_tokens``, ``seed``, for OTI ``template``; the later fields ``precision`` and, for
    OVI, ``template`` default as in :data:`crossgap.config.HASHED_WHEN_NOT_DEFAULT`).  ``batch_size`` and
    ``resume_every`` are runtime settings.  The metadata records ``precision`` (what ran: fp32
    on the CPU), ``precision_requested`` and ``deterministic`` (``inversion.deterministic``).  Initial tokens are drawn for the whole target set
    from ``seed`` and sliced, so results do not depend on the shard size.  Finished batches are
    saved to ``<out>.resume.safetensors`` (:mod:`crossgap.resume`) every ``resume_every``
    batches; a rerun after a kill continues from there, bit-identically on the CPU.
    """
    from crossgap.inversion import initial_tokens, oti, oti_features, ovi, ovi_features
    from crossgap.resume import ShardResume, fingerprint, resume_path

    if method not in ("oti", "ovi"):
        raise ValueError(f"unknown inversion method {method!r}; expected 'oti' or 'ovi'")
    params = complete_params(method, params)  # later fields (precision, OVI template) at their defaults
    targets, ids = inversion_targets(features, manifest, task)
    start, stop = shard_bounds(len(ids), shard, num_shards, shard_size)
    if shard == num_shards - 1 and stop - start > 2 * shard_size:
        log.warning("%s: the last shard holds %d targets (shard_size %d): the set is larger than planned; "
                    "give the dataset's sizes in params (datasets.<name>.sizes) to split it", out,
                    stop - start, shard_size)
    model, _ = load_model(model_spec)
    from crossgap.models.base import TowerUnsupported

    try:
        width = model.text_token_embedding_dim if method == "oti" else model.visual_token_embedding_dim
    except TowerUnsupported as exc:  # this model's tower cannot take the method's pseudo tokens: declared
        reason = f"{method.upper()} unavailable for {model_slug}: {exc}"
        log.warning("%s", reason)
        save_feature_set(out, FeatureSet(torch.empty(0, targets.shape[1]), [], meta={
            "kind": method, "model": model_slug, "shard": shard, "num_shards": num_shards, "rows": [start, stop],
            "num_targets": len(ids), "params": dict(params), "snapshot_steps": [int(s) for s in snapshots],
            "unavailable": reason}))
        return
    init = initial_tokens(len(ids), params["num_pseudo_tokens"], width, params["seed"])[start:stop]
    resume = ShardResume(resume_path(out), fingerprint(params, ids[start:stop], init), resume_every)
    stats: dict[str, torch.Tensor] = {}  # skipped_steps [n]: the fp16 loss scaler's skips per target
    common = dict(num_pseudo_tokens=params["num_pseudo_tokens"], steps=params["steps"],
                  learning_rate=params["learning_rate"], weight_decay=params["weight_decay"],
                  precision=params["precision"],
                  batch_size=batch_size, init=init, progress=progress, resume=resume,
                  snapshots=tuple(snapshots), stats=stats)
    if method == "oti":
        run = lambda: oti(targets[start:stop], model, template_sentence=params["template"], **common)  # noqa: E731
        encode = lambda t: oti_features(t, model, template_sentence=params["template"])  # noqa: E731
    else:
        run = lambda: ovi(targets[start:stop], model, **common)  # noqa: E731
        encode = lambda t: ovi_features(t, model)  # noqa: E731
    begin = time.perf_counter()
    if stop == start:
        tokens = torch.empty(0, params["num_pseudo_tokens"], width)
        losses = torch.empty(0, params["steps"])
        snaps = torch.empty(0, len(snapshots), params["num_pseudo_tokens"], width)
        feats, snap_feats = torch.empty(0, targets.shape[1]), torch.empty(0, len(snapshots), targets.shape[1])
    else:
        tokens, losses, *rest = run()
        snaps = rest[0] if rest else torch.empty(tokens.shape[0], 0, *tokens.shape[1:])
        feats = encode(tokens)
        snap_feats = (torch.stack([encode(snaps[:, i]) for i in range(snaps.shape[1])], dim=1) if snaps.shape[1]
                      else torch.empty(tokens.shape[0], 0, feats.shape[1]))
    seconds = time.perf_counter() - begin
    if stop > start:
        log.info("%s shard %d/%d: %d samples in %.1f s (%.2f samples/s), loss %.4f -> %.4f", method, shard + 1,
                 num_shards, stop - start, seconds, (stop - start) / seconds, float(losses[:, 0].mean()),
                 float(losses[:, -1].mean()))
    skipped = stats.get("skipped_steps", torch.zeros(stop - start, dtype=torch.long))
    if skipped.any():
        log.warning("%s shard %d/%d: %d optimisation step(s) skipped by the fp16 loss scaler (%d of %d targets)",
                    method, shard + 1, num_shards, int(skipped.sum()), int((skipped > 0).sum()), stop - start)
    extras = {"pseudo_tokens": tokens, "losses": losses, "skipped_steps": skipped}
    if snapshots:
        extras |= {"snapshot_tokens": snaps, "snapshot_features": snap_feats}
    save_feature_set(out, FeatureSet(feats, ids[start:stop], extras=extras,
                                     meta={"kind": method, "model": model_slug, "shard": shard,
                                           "snapshot_steps": [int(s) for s in snapshots],
                                           "num_shards": num_shards, "rows": [start, stop],
                                           "num_targets": len(ids), "params": dict(params),
                                           "batch_size": batch_size, "seconds": seconds,
                                           "skipped_steps": int(skipped.sum()),
                                           "deterministic": torch.are_deterministic_algorithms_enabled(),
                                           **_precision_meta(model.device, params["precision"]),
                                           **_runtime_meta()}))
    resume.discard()


def _gather_unavailable(parts: Sequence[FeatureSet], shards: Sequence[str], out: str, **meta: Any) -> bool:
    """When the shards say the method is unavailable for the model, write ``out`` so (no rows); True if so."""
    reasons = [p.meta.get("unavailable") for p in parts]
    if not any(reasons):
        return False
    if not all(reasons):
        raise ValueError(f"gather: some shards of {out} are unavailable ({reasons}) and some are not: rerun them")
    width = parts[0].features.shape[1] if parts[0].features.dim() == 2 else 0
    save_feature_set(out, FeatureSet(torch.empty(0, width), [], meta=dict(parts[0].meta, shard=None, rows=None,
                                                                          **meta)))
    log.warning("%s: %s", out, reasons[0])
    return True


def gather_step(*, shards: Sequence[str], out: str, loss_csv: str | None = None) -> None:
    """Concatenate shard files in order into ``out``; optionally write the mean loss per step as CSV.

    Shards of a method the model's tower cannot run (``meta["unavailable"]``) give an ``out`` with
    no rows and the same ``unavailable`` reason (the evaluation records the result as unavailable)
    and a loss CSV with its header only.
    """
    parts = [load_feature_set(path) for path in shards]
    if _gather_unavailable(parts, shards, out):
        if loss_csv is not None:
            with atomic_path(loss_csv) as tmp:
                pd.DataFrame({"step": [], "loss": []}).to_csv(tmp, index=False)
        return
    num = {p.meta.get("num_shards") for p in parts}
    if num != {len(parts)}:
        raise ValueError(f"gather: expected {len(parts)} shards, files say num_shards={sorted(num)}")
    order = [p.meta.get("shard") for p in parts]
    if order != list(range(len(parts))):
        raise ValueError(f"gather: shard files must be shards 0..{len(parts) - 1} in order, got {order} ({list(shards)})")
    rows = [p.meta.get("rows") for p in parts]
    if all(r is not None for r in rows):
        expected_start = 0
        for path, (begin, end) in zip(shards, rows):
            if begin != expected_start:
                raise ValueError(f"gather: {path} covers rows [{begin}, {end}) but rows start at {expected_start}: "
                                 "shards of different shard sizes; delete the .shards folder and rerun")
            expected_start = end
        if {p.meta.get("num_targets") for p in parts} != {expected_start}:
            raise ValueError(f"gather: shards cover {expected_start} rows, not all {parts[0].meta.get('num_targets')}")
    ids = [key for p in parts for key in p.ids]
    if len(set(ids)) != len(ids):
        raise ValueError("gather: shards overlap (duplicate ids)")
    # extras every shard has (skipped_steps is absent from shards written before it was recorded)
    extras = {key: torch.cat([p.extras[key] for p in parts]) for key in parts[0].extras
              if all(key in p.extras for p in parts)}
    meta = dict(parts[0].meta, shard=None, rows=None, seconds=sum(p.meta.get("seconds", 0.0) for p in parts),
                skipped_steps=sum(int(p.meta.get("skipped_steps", 0)) for p in parts))
    save_feature_set(out, FeatureSet(torch.cat([p.features for p in parts]), ids, meta=meta, extras=extras))
    if loss_csv is not None:
        losses = extras["losses"]
        frame = pd.DataFrame({"step": np.arange(losses.shape[1]), "loss": losses.mean(0).numpy()})
        with atomic_path(loss_csv) as tmp:
            frame.to_csv(tmp, index=False)


def gather_snapshots_step(*, shards: Sequence[str], steps: Sequence[int], out: str) -> None:
    """Snapshot features ``[N, S, D]`` and tokens ``[N, S, T, W]`` of ``steps`` from the shards, in order → ``out``.

    ``features[:, i]`` are the features of the tokens after ``steps[i]`` updates
    (``meta["snapshot_steps"]``); ``losses [N, steps]`` as in the final file.
    """
    parts = [load_feature_set(path) for path in shards]
    if _gather_unavailable(parts, shards, out, snapshot_steps=[int(s) for s in steps],
                           kind=f"{parts[0].meta.get('kind')}_snapshots"):
        return
    for path, part in zip(shards, parts):
        have = part.meta.get("snapshot_steps") or []
        missing = [s for s in steps if s not in have]
        if missing:
            raise ValueError(f"{path}: has snapshots at steps {have}, not {missing}; rerun the shard")
    pick = lambda p, key: p.extras[key][:, [p.meta["snapshot_steps"].index(s) for s in steps]]  # noqa: E731
    ids = [key for p in parts for key in p.ids]
    save_feature_set(out, FeatureSet(
        torch.cat([pick(p, "snapshot_features") for p in parts]), ids,
        extras={"pseudo_tokens": torch.cat([pick(p, "snapshot_tokens") for p in parts]),
                "losses": torch.cat([p.extras["losses"] for p in parts])},
        meta=dict(parts[0].meta, shard=None, rows=None, snapshot_steps=[int(s) for s in steps],
                  kind=f"{parts[0].meta.get('kind')}_snapshots")))
