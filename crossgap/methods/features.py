"""The query and gallery features an evaluation method compares, read from the DAG's files.

* native and inverted methods: the rows of the query / gallery feature files as they are;
* snapshots (``oti@50``): the step's column of a snapshot file (``[N, S, D]`` features,
  ``meta["snapshot_steps"]``);
* transforms (``crossgap.methods``): ``fit`` on the reference files, then ``apply`` to query and
  gallery (pre-projection features when the method reads them).

Only a declared capability check makes a method unavailable: :class:`crossgap.methods.MethodUnavailable`,
raised by a method (IsoCLIP's ``k_top + k_bottom`` beyond the model's directions), by a reference file
that says what the model lacks (a projections file written without matrices), or by an inversion file
written by a tower that cannot take the method's pseudo tokens (``meta["unavailable"]``).  The
evaluation steps record it as a result with the reason; every other exception fails the job.
"""

from __future__ import annotations

import importlib
import logging
from typing import Any, Mapping, Sequence

import torch

from crossgap.methods import Method, MethodUnavailable
from crossgap.storage import FeatureSet, load_feature_set, take

log = logging.getLogger(__name__)

__all__ = ["MethodUnavailable", "rows", "load_references", "transform"]


def rows(path: str, ids: Sequence[str], method: Method, *, pre: bool = False) -> torch.Tensor:
    """Features ``[len(ids), D]`` of ``ids`` from ``path``, for ``method`` (snapshot column, or ``pre``)."""
    fs = load_feature_set(path)
    if fs.meta.get("unavailable"):  # an inversion the model's tower could not run (declared by the shard job)
        raise MethodUnavailable(f"{path}: {fs.meta['unavailable']}")
    if method.kind == "snapshot":
        steps = list(fs.meta.get("snapshot_steps") or [])
        step = method.step
        if step not in steps:
            raise ValueError(f"{path}: holds snapshots at steps {steps}, not {step}")
        fs = FeatureSet(fs.features[:, steps.index(step)], fs.ids)
    elif pre and fs.meta.get("preprojection") is not True:  # the plan's mistake, not the model's
        raise ValueError(f"{path}: not a pre-projection feature file ({{modality}}_{{split}}.pre.safetensors)")
    return take(fs, list(ids), path)


def load_references(refs: Mapping[str, str]) -> dict[str, torch.Tensor]:
    """``{key: tensor}`` of the reference files.

    Projection matrices come from the projections file's extras; ``classifier`` is the class
    embeddings ``[C, D]`` of the prompts file (averaged, normalised: the zero-shot classifier).
    """
    out: dict[str, torch.Tensor] = {}
    for key, path in refs.items():
        fs = load_feature_set(path)
        if key == "classifier":
            from crossgap.metrics import build_classifier

            out[key] = build_classifier(fs.features, int(fs.meta["num_classes"]))
        elif key.startswith("proj_"):
            if key not in fs.extras:
                raise MethodUnavailable(f"{path}: no {key} ({fs.meta.get('unavailable') or 'not written'})")
            out[key] = fs.extras[key]
        else:
            out[key] = fs.features
    return out


def transform(method: Method, params: Mapping[str, Any], refs: Mapping[str, str],
              pairs: Sequence[tuple[torch.Tensor, str, str]]) -> tuple[list[torch.Tensor], dict[str, Any]]:
    """Fit ``method`` on ``refs`` and apply it to each ``(features, modality, role)``.

    Returns the transformed features and a small record of the fit (reference files, the shape and
    norm of each statistic) for the result file.
    """
    module = importlib.import_module(method.module)
    values = {**method.params, **dict(params)}
    stats = module.fit(load_references(refs), **values)  # MethodUnavailable (declared) or a real failure
    out = [module.apply(x, stats, modality=modality, role=role, **values) for x, modality, role in pairs]
    record = {"references": dict(refs), "params": values,
              "statistics": {k: {"shape": list(v.shape), "norm": float(v.float().norm())} for k, v in stats.items()}}
    return out, record
