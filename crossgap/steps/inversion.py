"""Inversion steps: OTI / OVI on one shard of the targets, and the gathering of shards and snapshots.

:func:`invert_shard_step` reads a feature file, inverts its rows (or a task's query rows) in shards
with :mod:`crossgap.inversion` and writes tokens, re-encoded features and losses atomically;
:func:`gather_step` and :func:`gather_snapshots_step` join the shards.  The ``inversion`` rules call
them through thin scripts (``workflow/scripts/``).
"""

from __future__ import annotations

import logging
import time
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd
import torch

from crossgap.config import complete_params, schema_default
from crossgap.datasets.manifest import query_gallery, read_manifest
from crossgap.runtime.env import load_model, precision_meta, runtime_meta
from crossgap.storage import FeatureSet, load_feature_set, save_feature_set, take
from crossgap.utils import atomic_path

log = logging.getLogger(__name__)


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
                                           **precision_meta(model.device, params["precision"]),
                                           **runtime_meta()}))
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
