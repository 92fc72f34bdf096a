"""Aggregation and report: summary metrics (DVC), the all-methods table, and plots.

``summary.json`` nests ``dataset → model → task → method → metric`` (tasks ``image_retrieval``,
``text_retrieval``, ``zero_shot``, plus ``modality_gap`` with method ``native``); every
non-native method also holds ``delta`` / ``ci95_low`` / ``ci95_high`` per metric
(:mod:`crossgap.comparison`).  The table has one row per dataset × model × task × non-native
method with the native score, the method's, Δ and its interval on the task's headline metric;
with several inversion seeds (``inversion.seeds``), each inverted method also holds a ``seeds``
block (mean and spread over the seeds) and the table a section of them.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Mapping, Sequence

import pandas as pd

from crossgap.comparison import (
    add_intervals,
    add_seed_spread,
    best_steps,
    comparison_table,
    markdown,
    split_replicates,
    step_curves,
)
from crossgap.metrics.results import aggregate_results, read_result
from crossgap.utils import atomic_path, write_json
from crossgap.config import schema_default

log = logging.getLogger(__name__)

#: rows :func:`plot_comparison` draws one by one (beyond: a pointer to the per-task facets)
MAX_PLOT_ROWS = 300
#: curves :func:`plot_steps` names in a legend
MAX_LEGEND = 24

def usable_results(result_paths: Sequence[str],
                   seed: int = schema_default("inversion.seed")) -> tuple[list[str], list[tuple[str, dict]]]:
    """``(main result files, replicate (path, result) pairs)`` of ``result_paths``, without the
    results of a method that could not run (``extra.unavailable``, e.g. IsoCLIP on a tower without
    a linear projection).  ``seed``: ``inversion.seed`` (other seeds' results are replicates)."""
    records = [(str(p), read_result(p)) for p in result_paths]
    main, replicates = split_replicates([(p, r) for p, r in records if not r["extra"].get("unavailable")], seed)
    return [p for p, _ in main], replicates


def unavailable_results(result_paths: Sequence[str],
                        seed: int = schema_default("inversion.seed")) -> dict[tuple[str, str, str, str], str]:
    """``{(dataset, model, task, method): reason}`` of the main seed's results of a method that could
    not run (``extra.unavailable``): the table shows each with its reason instead of dropping it."""
    records = [(str(p), read_result(p)) for p in result_paths]
    main, _ = split_replicates([(p, r) for p, r in records if r["extra"].get("unavailable")], seed)
    return {(r["dataset"], r["model"], r["task"], r["method"]): str(r["extra"]["unavailable"]) for _, r in main}


def build_summary(result_paths: Sequence[str], gap_paths: Sequence[str] = (),
                  seed: int = schema_default("inversion.seed")) -> dict[str, Any]:
    """Nested summary of result files, with the modality-gap files merged in as task ``modality_gap``.

    Unavailable results are left out; results of replicate seeds (not ``seed``) add their methods'
    ``seeds`` spread (:func:`crossgap.comparison.add_seed_spread`).
    """
    return _summary(*usable_results(result_paths, seed), gap_paths)


def _summary(usable: Sequence[str], replicates: Sequence[tuple[str, dict]], gap_paths: Sequence[str]) -> dict[str, Any]:
    summary = add_seed_spread(aggregate_results(usable), replicates)
    for path in gap_paths:
        record = json.loads(Path(path).read_text())
        node = summary.setdefault(record["dataset"], {}).setdefault(record["model"], {})
        node["modality_gap"] = {"native": {k: float(v) for k, v in record["metrics"].items()}}
    return summary


def text_preparation_notes(result_paths: Sequence[str]) -> list[str]:
    """One note per dataset whose long texts reached the encoders truncated rather than summarised.

    Read from the text-retrieval results' ``extra.texts`` (:func:`crossgap.datasets.textprep.texts_summary`
    of the manifest they were evaluated on); datasets without a text step are not mentioned.
    """
    truncated: dict[str, dict[str, Any]] = {}
    for path in result_paths:
        record = read_result(path)
        texts = record["extra"].get("texts") or {}
        if record["task"] == "text_retrieval" and texts.get("truncated"):
            truncated.setdefault(record["dataset"], texts)
    return [f"{dataset}: texts truncated rather than summarised ({t['n_over_budget']:,} of {t['n_texts']:,} texts "
            f"over {t['token_budget']} tokens, strategy {t['strategy']!r}); the reference encodes LLM summaries "
            f"(datasets.{dataset}.text.strategy: summaries | llm)" for dataset, t in sorted(truncated.items())]


def aggregate_step(
    *,
    results: Sequence[str],
    gaps: Sequence[str],
    summary_out: str,
    table_csv: str,
    table_md: str,
    plot_csv: str,
    steps_csv: str | None = None,
    bootstrap: Mapping[str, Any] | None = None,
    final_steps: Mapping[str, int] | None = None,
    seed: int = schema_default("inversion.seed"),
    notes: Sequence[str] = (),
    paper_outputs: Mapping[str, str] | None = None,
    paper_methods: Mapping[str, Sequence[str]] | None = None,
) -> dict[str, Any]:
    """Write ``summary.json`` (with paired-bootstrap intervals), the table (CSV, Markdown) and plot data.

    ``bootstrap``: ``resamples``, ``seed``, ``confidence`` (``evaluation.bootstrap``); ``None``
    skips the intervals.  ``final_steps``: ``{"oti": steps, "ovi": steps}`` for the step curves.
    ``seed``: ``inversion.seed``; results of the other ``inversion.seeds`` become each method's
    ``seeds`` spread.  ``paper_outputs``: ``tables_md``, ``tables_csv``, ``verdicts_csv``,
    ``summary_json`` of :func:`crossgap.paper.build.paper_step` (the paper tables, the verdicts and
    their DVC metrics), with ``paper_methods`` (task → methods shown; default: inversions and
    training-free methods); ``None`` writes none of them.
    """
    usable, replicates = usable_results(results, seed)
    summary = _summary(usable, replicates, gaps)
    if bootstrap is not None:
        add_intervals(summary, usable, **dict(bootstrap))
    write_json(summary_out, summary)
    unavailable = unavailable_results(results, seed)
    table = comparison_table(summary, unavailable)
    curves = step_curves(summary, final_steps or {})
    with atomic_path(table_csv) as tmp:
        table.to_csv(tmp, index=False)
    with atomic_path(table_md) as tmp:
        tmp.write_text(markdown(table, best_steps(curves), [*notes, *text_preparation_notes(results)]))
    plot = table[table["unavailable"].isna()]
    plot = plot.assign(label=plot["dataset"] + "/" + plot["model"] + "/" + plot["task"] + "/" + plot["method"])
    with atomic_path(plot_csv) as tmp:
        plot[["label", "delta", "ci95_low", "ci95_high", "significant"]].to_csv(tmp, index=False)
    if steps_csv is not None:
        with atomic_path(steps_csv) as tmp:
            curves.assign(curve=curves["dataset"] + "/" + curves["model"] + "/" + curves["task"] + "/"
                          + curves["inversion"]).to_csv(tmp, index=False)
    if paper_outputs is not None:
        from crossgap.paper.build import paper_step

        paper_step(usable=usable, summary=summary, unavailable=unavailable, bootstrap=bootstrap,
                   methods=paper_methods, notes=[*notes, *text_preparation_notes(results)], **dict(paper_outputs))
    log.info("aggregated %d results into %s", len(results), summary_out)
    return summary


def _pyplot():
    """matplotlib's pyplot on the non-interactive Agg backend (jobs have no display)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save_png(fig, out_png: str) -> None:
    """Write ``fig`` to ``out_png`` atomically and close it."""
    with atomic_path(out_png) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    _pyplot().close(fig)


def plot_comparison(table_csv: str, out_png: str) -> None:
    """Δ of every method against its task's native method, with its 95% interval: one panel per dataset."""
    plt = _pyplot()

    table = pd.read_csv(table_csv)
    if "unavailable" in table.columns:  # rows without a score (the table shows their reason)
        table = table[table["unavailable"].isna()]
    if len(table) > MAX_PLOT_ROWS:  # one axis per dataset stops reading well: the per-task facets do
        fig, ax = plt.subplots(figsize=(8, 1.6))
        ax.axis("off")
        ax.text(0.5, 0.5, f"{len(table):,} comparisons over {table['dataset'].nunique()} datasets: too many for one "
                f"figure (limit {MAX_PLOT_ROWS});\nsee the per-task plots faceted by dataset group and model "
                "(data/plots/paper_<task>.png)", ha="center", va="center", fontsize=9)
        _save_png(fig, out_png)
        return
    datasets = sorted(table["dataset"].unique()) or ["(none)"]
    height = [max(1.5, 0.28 * (table["dataset"] == d).sum() + 1) for d in datasets]
    fig, axes = plt.subplots(len(datasets), 1, figsize=(8, sum(height)), squeeze=False,
                             gridspec_kw={"height_ratios": height})
    for ax, dataset in zip(axes[:, 0], datasets):
        part = table[table["dataset"] == dataset].reset_index(drop=True)
        y = list(range(len(part)))
        low = (part["delta"] - part["ci95_low"]).fillna(0).clip(lower=0)
        high = (part["ci95_high"] - part["delta"]).fillna(0).clip(lower=0)
        colors = ["tab:green" if s is True else ("tab:red" if s is False else "tab:gray")
                  for s in part["significant"].map({True: True, False: False, "True": True, "False": False})]
        ax.errorbar(part["delta"], y, xerr=[low, high], fmt="none", ecolor="black", capsize=2, lw=0.8)
        ax.scatter(part["delta"], y, c=colors, s=18, zorder=3)
        ax.axvline(0, color="black", lw=0.6)
        ax.set_yticks(y, [f"{m} · {t} · {meth}" for m, t, meth in zip(part["model"], part["task"], part["method"])],
                      fontsize=6)
        ax.invert_yaxis()
        ax.set_xlabel("Δ vs native (points; bars: 95% paired bootstrap)")
        ax.set_title(f"{dataset}: green = interval excludes 0", fontsize=9)
    fig.tight_layout()
    _save_png(fig, out_png)


def plot_steps(steps_csv: str, out_png: str) -> None:
    """Headline metric vs optimisation step (snapshots and final), one line per dataset × model × task × inversion."""
    plt = _pyplot()

    frame = pd.read_csv(steps_csv)
    fig, ax = plt.subplots(figsize=(7, 4))
    curves = list(frame.groupby("curve")) if not frame.empty else []
    for curve, part in curves:
        ax.plot(part["step"], part["score"], marker="o", label=curve)
    ax.set_xscale("log")
    ax.set_xlabel("optimisation step (log)")
    ax.set_ylabel("mAP / top-1 (%)")
    ax.set_title("Inversion quality vs steps (one optimisation, snapshots)")
    if 0 < len(curves) <= MAX_LEGEND:
        ax.legend(fontsize=6)
    elif curves:  # a legend of hundreds of curves would hide the plot (and take seconds to draw)
        ax.set_title(f"Inversion quality vs steps: {len(curves)} curves (legend left out; steps.csv names them)")
    fig.tight_layout()
    _save_png(fig, out_png)


def plot_losses(loss_csvs: Mapping[str, str], out_png: str) -> None:
    """Mean inversion loss per step, one line per inversion (label → CSV with ``step, loss``)."""
    plt = _pyplot()

    fig, ax = plt.subplots(figsize=(7, 4))
    for label, path in sorted(loss_csvs.items()):
        frame = pd.read_csv(path)
        ax.plot(frame["step"], frame["loss"], label=label)
    ax.set_xlabel("step")
    ax.set_ylabel("1 - cosine (mean over samples)")
    ax.set_title("OTI / OVI loss curves")
    ax.legend(fontsize=7)
    fig.tight_layout()
    _save_png(fig, out_png)


def write_curves_table(curves: Mapping[str, str], out_csv: str) -> None:
    """One long CSV (``curve, step, loss``) of several ``step, loss`` CSVs (what ``dvc plots`` reads)."""
    frames = [pd.read_csv(path).assign(curve=label) for label, path in sorted(curves.items())]
    table = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=["step", "loss", "curve"])
    with atomic_path(out_csv) as tmp:
        table[["curve", "step", "loss"]].to_csv(tmp, index=False)
