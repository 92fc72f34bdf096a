"""Fabricated results folders in crossgap's own format (result JSON + per-query Parquet), no model run.

:func:`write_block` writes one dataset × model × task: per method, given per-query scores, the result
file (its metrics the means of the columns, as the evaluation writes them) and the scores next to it.
:func:`paper_grid_results` writes a folder the size of the paper grid: every dataset and model of
``params/paper.yaml``, every method the plan evaluates there (crossgap.plan), small random per-query
scores.
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import yaml

from crossgap.metrics.results import write_result
from crossgap.metrics.scores import SUMMARY_KEYS, write_scores

ROOT = Path(__file__).resolve().parents[1]


def write_block(results: Path, dataset: str, model: str, task: str, scores: Mapping[str, Mapping[str, Sequence[float]]],
                *, params: Mapping[str, Mapping] | None = None, extra: Mapping[str, Mapping] | None = None,
                stems: Mapping[str, str] | None = None) -> list[str]:
    """``scores``: method → {per-query column: values}; returns the result paths written.

    A column whose values are all NaN gives a null metric; ``extra[method]`` with ``unavailable``
    writes a result without metrics and an empty score table, as the evaluation does.
    """
    paths = []
    for method, columns in scores.items():
        stem = (stems or {}).get(method, method)
        path = results / dataset / model / task / f"{stem}.json"
        ex = dict((extra or {}).get(method, {}))
        metrics = {} if ex.get("unavailable") else {
            SUMMARY_KEYS.get(c, c): float(np.nanmean(np.asarray(v, dtype=float))) for c, v in columns.items()}
        n = len(next(iter(columns.values()))) if columns else 0
        per_query = Path(str(path)[: -len(".json")] + ".queries.parquet")
        if ex.get("unavailable"):
            write_scores(per_query, {}, query_ids=[], metadata={"unavailable": ex["unavailable"]})
        else:
            write_scores(per_query, {c: np.asarray(v, dtype=float) for c, v in columns.items()},
                         query_ids=[f"q{i}" for i in range(n)])
        write_result(path, task=task, method=method, dataset=dataset, model=model, metrics=metrics,
                     params=dict((params or {}).get(method, {})), extra=ex)
        paths.append(str(path))
    return paths


def paper_config() -> dict:
    """``params/paper.yaml`` validated, with the schema's defaults (as the plan tests load it)."""
    from crossgap.config import load_params

    return load_params(ROOT / "params/paper.yaml")


def paper_grid_results(results: Path, *, queries: int = 40, seed: int = 0) -> dict[str, int]:
    """Write every result file the paper grid plans (main seed), with random per-query scores; return
    counts (``results``, ``datasets``, ``models``)."""
    return planned_results(paper_config(), results, queries=queries, seed=seed)


def default_results(results: Path, *, queries: int = 24, seed: int = 0) -> dict[str, int]:
    """The same for the embedded default (``params.yaml``: synthetic × tiny)."""
    from crossgap.config import load_params

    return planned_results(load_params(ROOT / "params.yaml"), results, queries=queries, seed=seed)


def planned_results(config: Mapping, results: Path, *, queries: int, seed: int) -> dict[str, int]:
    """Every result file ``config`` plans (main seed) with random per-query scores (inverted methods
    record ``steps`` and the config's ``inversion.seed``)."""
    from crossgap import plan
    from crossgap.methods import get_method

    rng = np.random.default_rng(seed)
    files = plan.all_result_files(config)
    for file in files:
        _, _, dataset, model, task, name = file.split("/")
        stem = name[: -len(".json")]
        method = stem.split("-")[0]  # oti-{tag} → oti (crossgap.plan.evaluation.method_name)
        kind = get_method(task, method).kind
        if task == "zero_shot":
            cols = {"top1": 100.0 * (rng.random(queries) < 0.6), "top5": 100.0 * (rng.random(queries) < 0.9)}
        elif dataset in ("roxford5k", "rparis6k"):
            cols = {f"AP_{s}": rng.random(queries) * 100 for s in ("easy", "medium", "hard")}
        else:
            cols = {"AP": rng.random(queries) * 100, "AP_at_R": rng.random(queries) * 100,
                    "hit@1": 100.0 * (rng.random(queries) < 0.5)}
            if dataset in ("cub2011", "sop"):
                cols |= {"AP_at_R_standard": rng.random(queries) * 100, "AP_at_R_reference": rng.random(queries) * 100}
        params = ({"steps": config["inversion"][get_method(task, method).inversion]["steps"],
                   "seed": config["inversion"]["seed"]} if kind in ("inverted", "snapshot") else {})
        write_block(results, dataset, model, task, {method: cols}, params={method: params}, stems={method: stem})
    datasets = {f.split("/")[2] for f in files}
    models = {f.split("/")[3] for f in files}
    return {"results": len(files), "datasets": len(datasets), "models": len(models)}


def paper_yaml() -> dict:
    return yaml.safe_load((ROOT / "params/paper.yaml").read_text())
