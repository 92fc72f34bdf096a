"""Aggregation and report: summary metrics (DVC), the baseline-vs-inverted table, and plots.

``summary.json`` nests ``dataset → model → task → method → metric`` (tasks ``image_retrieval``,
``text_retrieval``, ``zero_shot``, plus ``modality_gap`` with method ``native``).  The table has
one row per dataset × model × task × inverted method with the baseline, the inverted score and
their difference on the task's headline metric.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Mapping, Sequence

import pandas as pd

from crossgap.metrics.results import aggregate_results, read_result
from crossgap.utils import atomic_path, write_json

log = logging.getLogger(__name__)

# task → (baseline method, inverted methods, headline metrics: the first one a result has is shown;
# revisited Oxford/Paris results have mAP per setup instead of a plain mAP)
COMPARISONS: dict[str, tuple[str, tuple[str, ...], tuple[str, ...]]] = {
    "image_retrieval": ("image", ("oti",), ("mAP", "mAP_medium")),
    "text_retrieval": ("text", ("ovi",), ("mAP",)),
    "zero_shot": ("standard", ("oti", "ovi"), ("top1",)),
}


def build_summary(result_paths: Sequence[str], gap_paths: Sequence[str] = ()) -> dict[str, Any]:
    """Nested summary of result files, with the modality-gap files merged in as task ``modality_gap``."""
    summary = aggregate_results(result_paths)
    for path in gap_paths:
        record = json.loads(Path(path).read_text())
        node = summary.setdefault(record["dataset"], {}).setdefault(record["model"], {})
        node["modality_gap"] = {"native": {k: float(v) for k, v in record["metrics"].items()}}
    return summary


def comparison_table(summary: Mapping[str, Any]) -> pd.DataFrame:
    """Rows ``dataset, model, task, metric, baseline_method, baseline, method, inverted, delta``."""
    rows = []
    for dataset, models in sorted(summary.items()):
        for model, tasks in sorted(models.items()):
            for task, (base, inverted, headlines) in COMPARISONS.items():
                methods = tasks.get(task, {})
                if base not in methods:
                    continue
                metric = next((h for h in headlines if h in methods[base]), headlines[0])
                for method in inverted:
                    if method not in methods:
                        continue
                    b, v = methods[base].get(metric), methods[method].get(metric)
                    rows.append({"dataset": dataset, "model": model, "task": task, "metric": metric,
                                 "baseline_method": base, "baseline": b, "method": method, "inverted": v,
                                 "delta": None if b is None or v is None else v - b})
    return pd.DataFrame(rows, columns=["dataset", "model", "task", "metric", "baseline_method", "baseline",
                                       "method", "inverted", "delta"])


def _markdown(table: pd.DataFrame) -> str:
    header = "| dataset | model | task | metric | baseline | inverted | Δ |\n|---|---|---|---|---:|---:|---:|\n"
    fmt = lambda x: "—" if x is None or pd.isna(x) else f"{x:.2f}"  # noqa: E731
    lines = [
        f"| {r.dataset} | {r.model} | {r.task} | {r.metric} | {fmt(r.baseline)} ({r.baseline_method}) "
        f"| {fmt(r.inverted)} ({r.method}) | {'' if r.delta is None or pd.isna(r.delta) else f'{r.delta:+.2f}'} |"
        for r in table.itertuples()
    ]
    return "# crossgap results\n\n" + header + "\n".join(lines) + "\n"


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


def _notes(notes: Sequence[str]) -> str:
    """The Markdown section of ``notes`` (nothing when there are none)."""
    return "\n## Notes\n\n" + "".join(f"- {n}\n" for n in notes) if notes else ""


def aggregate_step(
    *,
    results: Sequence[str],
    gaps: Sequence[str],
    summary_out: str,
    table_csv: str,
    table_md: str,
    plot_csv: str,
) -> dict[str, Any]:
    """Write ``summary.json``, the comparison table (CSV, Markdown) and the DVC plot data."""
    summary = build_summary(results, gaps)
    write_json(summary_out, summary)
    table = comparison_table(summary)
    with atomic_path(table_csv) as tmp:
        table.to_csv(tmp, index=False)
    with atomic_path(table_md) as tmp:
        tmp.write_text(_markdown(table) + _notes(text_preparation_notes(results)))
    long = table.assign(label=table["dataset"] + "/" + table["model"] + "/" + table["task"] + "/" + table["method"])
    plot = pd.concat([
        long[["label", "baseline"]].rename(columns={"baseline": "score"}).assign(kind="baseline"),
        long[["label", "inverted"]].rename(columns={"inverted": "score"}).assign(kind="inverted"),
    ])
    with atomic_path(plot_csv) as tmp:
        plot.to_csv(tmp, index=False)
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
    """Grouped bars, one panel per dataset: baseline vs inverted per model × task."""
    plt = _pyplot()

    table = pd.read_csv(table_csv)
    datasets = sorted(table["dataset"].unique()) or ["(none)"]
    fig, axes = plt.subplots(len(datasets), 1, figsize=(8, 3.2 * len(datasets)), squeeze=False)
    for ax, dataset in zip(axes[:, 0], datasets):
        part = table[table["dataset"] == dataset]
        labels = [f"{m}\n{t}\n{meth}" for m, t, meth in zip(part["model"], part["task"], part["method"])]
        x = range(len(part))
        ax.bar([i - 0.2 for i in x], part["baseline"], width=0.4, label="baseline (native)")
        ax.bar([i + 0.2 for i in x], part["inverted"], width=0.4, label="inverted (OTI/OVI)")
        ax.set_xticks(list(x), labels, fontsize=7)
        ax.set_ylabel("mAP / top-1 (%)")
        ax.set_title(dataset)
        ax.legend(fontsize=7)
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
