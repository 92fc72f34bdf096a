"""Every method against its task's native method: paired bootstrap intervals, the table, step curves.

For each dataset × model × task, every non-native method (inverted, snapshot, transform) is
compared with the native method on the same queries: the per-query scores saved next to each
result (:mod:`crossgap.metrics.scores`) are paired by query id and resampled together
(:func:`crossgap.metrics.bootstrap.bootstrap_tables`), giving per metric the observed ``delta``
(method − native, in points) and its ``ci95_low`` / ``ci95_high`` percentile interval.  They are
stored in ``summary.json`` under the method (``…/oti/delta/mAP``), so ``dvc metrics diff`` shows
them too.

Replicate seeds (``inversion.seeds``): the results of the other seeds of an inverted method are
not methods of their own; :func:`add_seed_spread` adds under the method a ``seeds`` block with,
per metric, the mean, sample standard deviation, min and max over all its seeds and the mean and
sd of its Δ against the native method.
"""

from __future__ import annotations

import logging
import statistics
from pathlib import Path
from typing import Any, Mapping, Sequence

import pandas as pd

from crossgap.methods import get_method, native_method
from crossgap.metrics.bootstrap import DEFAULT_CONFIDENCE, DEFAULT_RESAMPLES, DEFAULT_SEED, bootstrap_tables
from crossgap.metrics.results import read_result
from crossgap.metrics.scores import SUMMARY_KEYS, read_scores_cached

log = logging.getLogger(__name__)

#: per task, the headline metrics (the first one a result has is shown; revisited has mAP per setup)
HEADLINES: dict[str, tuple[str, ...]] = {
    "image_retrieval": ("mAP", "mAP_medium"),
    "text_retrieval": ("mAP",),
    "zero_shot": ("top1",),
}
INTERVAL_KEYS = ("delta", "ci95_low", "ci95_high")
#: what :func:`add_seed_spread` stores under ``<method>/seeds`` (besides ``n``)
SEED_KEYS = ("mean", "sd", "min", "max", "delta_mean", "delta_sd")


def split_replicates(records: Sequence[tuple[str, Mapping[str, Any]]], seed: int
                     ) -> tuple[list[tuple[str, Mapping[str, Any]]], list[tuple[str, Mapping[str, Any]]]]:
    """``(main, replicates)`` of ``(path, result)`` pairs: a result of a method that reads an
    inversion whose recorded ``params.seed`` is not ``seed`` (``inversion.seed``) is a replicate."""
    main, replicates = [], []
    for path, record in records:
        inverted = get_method(record["task"], record["method"]).inversion is not None
        is_replicate = inverted and int(record["params"].get("seed", seed)) != int(seed)
        (replicates if is_replicate else main).append((path, record))
    return main, replicates


def add_seed_spread(summary: dict[str, Any], replicates: Sequence[tuple[str, Mapping[str, Any]]]) -> dict[str, Any]:
    """Add ``seeds`` (n, and per metric mean / sd / min / max over every seed, Δ mean / sd) to each
    method of ``summary`` that has replicate results; the method's own scores stay its main seed's.

    ``sd`` is the sample standard deviation (n − 1); a metric some seed lacks is left out.
    """
    groups: dict[tuple[str, str, str, str], list[Mapping[str, Any]]] = {}
    for _, r in replicates:
        groups.setdefault((r["dataset"], r["model"], r["task"], r["method"]), []).append(r["metrics"])
    for (dataset, model, task, method), runs in sorted(groups.items()):
        methods = summary.get(dataset, {}).get(model, {}).get(task, {})
        if method not in methods:
            raise ValueError(f"{dataset}/{model}/{task}/{method}: replicate seeds without the main seed's result")
        main = _scores(methods[method])
        native = methods.get(native_method(task).name, {})
        block: dict[str, Any] = {"n": len(runs) + 1, **{key: {} for key in SEED_KEYS}}
        for metric, value in main.items():
            values = [value] + [run.get(metric) for run in runs]
            if any(v is None for v in values):
                continue
            block["mean"][metric], block["sd"][metric] = statistics.fmean(values), statistics.stdev(values)
            block["min"][metric], block["max"][metric] = min(values), max(values)
            if metric in native:
                deltas = [v - native[metric] for v in values]
                block["delta_mean"][metric], block["delta_sd"][metric] = statistics.fmean(deltas), statistics.stdev(deltas)
        methods[method]["seeds"] = block
    return summary


def _per_query_path(result: str) -> Path:
    return Path(result[: -len(".json")] + ".queries.parquet")


def add_intervals(summary: dict[str, Any], results: Sequence[str], *, resamples: int = DEFAULT_RESAMPLES,
                  seed: int = DEFAULT_SEED, confidence: float = DEFAULT_CONFIDENCE) -> dict[str, Any]:
    """Add ``delta`` / ``ci95_low`` / ``ci95_high`` per metric to every non-native method of ``summary``.

    ``results``: the result JSON files; their per-query Parquet files sit next to them.
    """
    records = [(path, read_result(path)) for path in results]
    native = {(r["dataset"], r["model"], r["task"]): path for path, r in records
              if r["method"] == native_method(r["task"]).name}
    for path, r in records:
        key = (r["dataset"], r["model"], r["task"])
        if r["method"] == native_method(r["task"]).name or key not in native or r["extra"].get("unavailable"):
            continue
        node = summary.get(r["dataset"], {}).get(r["model"], {}).get(r["task"], {}).get(r["method"])
        if node is None:
            continue
        intervals = bootstrap_tables(read_scores_cached(_per_query_path(native[key])),
                                     read_scores_cached(_per_query_path(path)),
                                     resamples=resamples, seed=seed, confidence=confidence)
        for column, result in intervals.items():
            metric = SUMMARY_KEYS.get(column, column)
            for name in INTERVAL_KEYS:
                node.setdefault(name, {})[metric] = float(result[name])
    return summary


def _order(task: str, name: str) -> tuple[int, str, int]:
    """Table order: each inversion's snapshots by step then its final tokens (OTI before OVI), then
    transforms by name."""
    method = get_method(task, name)
    rank = {"inverted": 0, "snapshot": 0, "transform": 1}.get(method.kind, 2)
    step = method.step if method.kind == "snapshot" else 10**9
    return rank, method.inversion or name, step


def _scores(node: Mapping[str, Any]) -> dict[str, float]:
    """A method's own metrics (not its intervals or seed spread)."""
    return {k: v for k, v in node.items() if k not in INTERVAL_KEYS and isinstance(v, (int, float))}


TABLE_COLUMNS = ["dataset", "model", "task", "metric", "native_method", "native", "method", "kind", "score", "delta",
                 "ci95_low", "ci95_high", "significant", "gap", "seeds", "seeds_delta_mean", "seeds_delta_sd",
                 "unavailable"]


def comparison_table(summary: Mapping[str, Any],
                     unavailable: Mapping[tuple[str, str, str, str], str] | None = None) -> pd.DataFrame:
    """One row per dataset × model × task × non-native method, on the task's headline metric.

    Columns ``dataset, model, task, metric, native_method, native, method, kind, score, delta,
    ci95_low, ci95_high, significant, gap, seeds, seeds_delta_mean, seeds_delta_sd, unavailable``
    (``significant``: the interval excludes 0; ``gap``: the model's modality-gap distance on the
    dataset; ``seeds``: how many inversion seeds, with the mean and sd of Δ over them; 1 and empty
    without replicates).  ``unavailable``: ``{(dataset, model, task, method): reason}`` of the
    methods that could not run (result files with ``extra.unavailable``): each gets its row, in its
    place, with no score and the reason in column ``unavailable`` (empty for every other row).
    """
    missing: dict[str, dict[str, dict[str, dict[str, str]]]] = {}
    for (dataset, model, task, method), reason in (unavailable or {}).items():
        missing.setdefault(dataset, {}).setdefault(model, {}).setdefault(task, {})[method] = reason
    rows = []
    for dataset in sorted(set(summary) | set(missing)):
        models = summary.get(dataset, {})
        for model in sorted(set(models) | set(missing.get(dataset, {}))):
            tasks = models.get(model, {})
            gap = tasks.get("modality_gap", {}).get("native", {}).get("gap_distance")
            for task in HEADLINES:
                methods = tasks.get(task, {})
                reasons = missing.get(dataset, {}).get(model, {}).get(task, {})
                base = native_method(task).name
                if base not in methods and not reasons:
                    continue
                metric = next((h for h in HEADLINES[task] if h in methods.get(base, {})), HEADLINES[task][0])
                native = methods.get(base, {}).get(metric)
                names = set(methods) | set(reasons)
                for name in sorted(names, key=lambda n: _order(task, n)):
                    if name in reasons and name not in methods:
                        rows.append({
                            "dataset": dataset, "model": model, "task": task, "metric": metric,
                            "native_method": base, "native": native, "method": name,
                            "kind": get_method(task, name).kind, "score": None, "delta": None, "ci95_low": None,
                            "ci95_high": None, "significant": None, "gap": gap, "seeds": 1,
                            "seeds_delta_mean": None, "seeds_delta_sd": None, "unavailable": reasons[name],
                        })
                        continue
                    node = methods[name]
                    if name == base or metric not in _scores(node):
                        continue
                    low, high = node.get("ci95_low", {}).get(metric), node.get("ci95_high", {}).get(metric)
                    seeds = node.get("seeds", {})
                    rows.append({
                        "dataset": dataset, "model": model, "task": task, "metric": metric, "native_method": base,
                        "native": native, "method": name, "kind": get_method(task, name).kind,
                        "score": node[metric], "delta": None if native is None else node[metric] - native,
                        "ci95_low": low, "ci95_high": high,
                        "significant": None if low is None else bool(low > 0 or high < 0), "gap": gap,
                        "seeds": seeds.get("n", 1), "seeds_delta_mean": seeds.get("delta_mean", {}).get(metric),
                        "seeds_delta_sd": seeds.get("delta_sd", {}).get(metric), "unavailable": None,
                    })
    return pd.DataFrame(rows, columns=TABLE_COLUMNS)


def step_curves(summary: Mapping[str, Any], final_steps: Mapping[str, int]) -> pd.DataFrame:
    """Headline metric vs optimisation step: snapshots ``oti@<s>`` / ``ovi@<s>`` and the final tokens.

    Columns ``dataset, model, task, inversion, step, metric, score``; ``final_steps``: the
    configured ``steps`` of each inversion (the final method's step).
    """
    rows = []
    for dataset, models in sorted(summary.items()):
        for model, tasks in sorted(models.items()):
            for task, methods in tasks.items():
                if task not in HEADLINES or native_method(task).name not in methods:
                    continue
                metric = next((h for h in HEADLINES[task] if h in methods[native_method(task).name]), None)
                for name, node in methods.items():
                    method = get_method(task, name)
                    if method.inversion is None or metric not in node:
                        continue
                    step = method.step if method.kind == "snapshot" else final_steps.get(method.inversion)
                    if step is not None:
                        rows.append({"dataset": dataset, "model": model, "task": task, "inversion": method.inversion,
                                     "step": step, "metric": metric, "score": node[metric]})
    frame = pd.DataFrame(rows, columns=["dataset", "model", "task", "inversion", "step", "metric", "score"])
    return frame.sort_values(["dataset", "model", "task", "inversion", "step"]).reset_index(drop=True)


def best_steps(curves: pd.DataFrame) -> pd.DataFrame:
    """Per dataset × model × task × inversion, the step with the highest headline score."""
    if curves.empty:
        return curves.assign(best_step=[])
    idx = curves.groupby(["dataset", "model", "task", "inversion"])["score"].idxmax()
    return curves.loc[idx].rename(columns={"step": "best_step"}).reset_index(drop=True)


def _cell(text: str) -> str:
    """``text`` safe inside a Markdown table cell (pipes escaped, line breaks flattened)."""
    return " ".join(str(text).split()).replace("|", "\\|")


def markdown(table: pd.DataFrame, best: pd.DataFrame, notes: Sequence[str] = ()) -> str:
    """``table.md``: all methods with Δ and interval (``*`` = interval excludes 0), gap, best steps."""
    fmt = lambda x: "—" if x is None or pd.isna(x) else f"{x:.2f}"  # noqa: E731
    fmt_signed = lambda x: "—" if x is None or pd.isna(x) else f"{x:+.2f}"  # noqa: E731
    lines = ["# crossgap results", "",
             "Δ = method − native on the same queries, in points; [95% paired bootstrap interval]; "
             "`*` = the interval excludes 0.", "",
             "| dataset | model | task | metric | native | method | score | Δ | 95% CI | gap |",
             "|---|---|---|---|---:|---|---:|---:|---|---:|"]
    for r in table.itertuples():
        reason = getattr(r, "unavailable", None)
        if isinstance(reason, str) and reason:
            lines.append(f"| {r.dataset} | {r.model} | {r.task} | {r.metric} | {fmt(r.native)} ({r.native_method}) "
                         f"| {r.method} | unavailable: {_cell(reason)} | — | — | {fmt(r.gap)} |")
            continue
        ci = "—" if r.ci95_low is None or pd.isna(r.ci95_low) else f"[{r.ci95_low:+.2f}, {r.ci95_high:+.2f}]"
        star = "*" if r.significant is True else ""
        delta = "—" if r.delta is None or pd.isna(r.delta) else f"{r.delta:+.2f}{star}"
        lines.append(f"| {r.dataset} | {r.model} | {r.task} | {r.metric} | {fmt(r.native)} ({r.native_method}) "
                     f"| {r.method} | {fmt(r.score)} | {delta} | {ci} | {fmt(r.gap)} |")
    if not best.empty:
        lines += ["", "## Best step of each inversion", "", "| dataset | model | task | inversion | best step | score |",
                  "|---|---|---|---|---:|---:|"]
        lines += [f"| {r.dataset} | {r.model} | {r.task} | {r.inversion} | {r.best_step} | {r.score:.2f} |"
                  for r in best.itertuples()]
    spread = table[table["seeds"] > 1]
    if not spread.empty:
        lines += ["", "## Across inversion seeds", "", "Δ over every seed of the inversion (`inversion.seed` and "
                  "`inversion.seeds`): mean ± sample sd; the table above is the main seed's.", "",
                  "| dataset | model | task | method | seeds | Δ mean ± sd |", "|---|---|---|---|---:|---:|"]
        lines += [f"| {r.dataset} | {r.model} | {r.task} | {r.method} | {r.seeds} | "
                  f"{fmt_signed(r.seeds_delta_mean)} ± {fmt(r.seeds_delta_sd)} |" for r in spread.itertuples()]
    if notes:
        lines += ["", "## Notes", ""] + [f"- {n}" for n in notes]
    return "\n".join(lines) + "\n"
