"""Entry points: the paper tables, verdicts and plots of a set of results.

:func:`paper_step` is what the ``aggregate`` rule adds to ``summary.json`` and the table
(``paper_tables.md``/``.csv``, ``verdicts.csv``, ``paper_summary.json``); :func:`paper_plots` what
the ``plots`` rule adds; ``crossgap report RESULTS_DIR --out DIR`` (:mod:`crossgap.steps.report_folder`)
runs the same functions on any results folder, e.g. a cluster run copied to a laptop.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any, Mapping, Sequence

import pandas as pd

from crossgap.methods import native_method
from crossgap.metrics.results import read_result
from crossgap.paper.groups import GROUPS, AVERAGES, averages_for, paper_metric
from crossgap.paper.published import load_published
from crossgap.paper.tables import TASKS, chosen_methods, paper_frame, paper_markdown, paper_summary, task_datasets
from crossgap.paper.verdicts import load_block, multiple_comparison_note, verdict_rows
from crossgap.utils import atomic_path, write_json

log = logging.getLogger(__name__)

#: row/facet titles: ``group:<key>`` and ``average:<key>`` of every group and average
TITLES: dict[str, str] = {f"group:{g.key}": g.title for gs in GROUPS.values() for g in gs} | {
    f"average:{a.key}": a.title for avs in AVERAGES.values() for a in avs} | {
    "group:other": "other datasets (not in the paper)", "average:other": "mean over the other datasets"}
PAPER_PLOTS = {task: f"paper_{task}.png" for task in TASKS}


def protocol_notes(records: Sequence[Mapping[str, Any]]) -> dict[tuple[str, str], str]:
    """``{(task, dataset): note}`` of results whose protocol differs from the published one: text sets whose
    long texts were truncated rather than summarised (the reference encodes LLM summaries)."""
    notes = {}
    for r in records:
        texts = r["extra"].get("texts") or {}
        if r["task"] == "text_retrieval" and texts.get("truncated"):
            notes[("text_retrieval", r["dataset"])] = "texts truncated, the reference encodes LLM summaries"
    return notes


def paper_step(*, usable: Sequence[str], summary: Mapping[str, Any], unavailable: Mapping[tuple, str],
               tables_md: str, tables_csv: str, verdicts_csv: str, summary_json: str,
               bootstrap: Mapping[str, Any] | None = None, methods: Mapping[str, Sequence[str]] | None = None,
               notes: Sequence[str] = ()) -> pd.DataFrame:
    """Write the paper tables, the verdicts and ``paper_summary.json``; return the long paper table.

    ``usable``: the main seed's available result files (per-query Parquet next to each);
    ``summary``: ``summary.json`` with its intervals; ``bootstrap``: ``evaluation.bootstrap``
    (resamples, seed, confidence); ``methods``: task → the methods shown (default: the inversions and
    the training-free methods of the run).
    """
    start = time.perf_counter()
    boot = {"resamples": 1000, "seed": 0, "confidence": 0.95} | dict(bootstrap or {})
    records = {path: read_result(path) for path in usable}
    shown = {task: chosen_methods(summary, task, (methods or {}).get(task), unavailable) for task in TASKS}
    by_block: dict[tuple[str, str, str], dict[str, str]] = {}
    native_record: dict[tuple[str, str, str], Mapping[str, Any]] = {}
    for path, r in records.items():
        key = (r["dataset"], r["model"], r["task"])
        if r["task"] not in shown:
            continue
        if r["method"] == native_method(r["task"]).name:
            native_record[key] = r
        if r["method"] == native_method(r["task"]).name or r["method"] in shown[r["task"]]:
            by_block.setdefault(key, {})[r["method"]] = path[: -len(".json")] + ".queries.parquet"
    blocks = []
    for key, files in sorted(by_block.items()):
        dataset, model, task = key
        base = native_method(task).name
        if key not in native_record or len(files) < 2:
            continue
        metric = paper_metric(task, dataset, {k: v for k, v in native_record[key]["metrics"].items() if v is not None})
        ordered = {base: files[base]} | {m: files[m] for m in shown[task] if m in files}
        blocks.append(load_block(dataset, model, task, metric, ordered, resamples=int(boot["resamples"]),
                                 seed=int(boot["seed"])))
    averages = {task: averages_for(task, task_datasets(summary, task)) for task in TASKS}
    verdicts = verdict_rows(blocks, averages, shown, {t: native_method(t).name for t in TASKS},
                            seed=int(boot["seed"]), confidence=float(boot["confidence"]))
    note = multiple_comparison_note(verdicts, float(boot["confidence"]))
    frame = paper_frame(summary, verdicts, load_published(), methods=shown, unavailable=unavailable,
                        protocol_notes=protocol_notes(list(records.values())))
    with atomic_path(tables_csv) as tmp:
        frame.to_csv(tmp, index=False)
    with atomic_path(verdicts_csv) as tmp:
        verdicts.to_csv(tmp, index=False)
    with atomic_path(tables_md) as tmp:
        Path(tmp).write_text(paper_markdown(frame, verdicts, TITLES, [note, *notes]), encoding="utf-8")
    write_json(summary_json, paper_summary(frame, verdicts))
    log.info("paper tables: %d rows, %d verdicts from %d blocks in %.1f s", len(frame), len(verdicts), len(blocks),
             time.perf_counter() - start)
    return frame


def paper_plots(tables_csv: str, out_dir: str | Path) -> dict[str, str]:
    """One faceted plot per task (:func:`crossgap.paper.plots.plot_task`) into ``out_dir``; ``{task: png}``."""
    from crossgap.paper.plots import plot_task

    frame = pd.read_csv(tables_csv)
    out = {}
    for task, name in PAPER_PLOTS.items():
        out[task] = str(Path(out_dir) / name)
        plot_task(frame, task, TITLES, out[task])
    return out
