"""``crossgap report RESULTS_DIR --out DIR``: the whole report of any results folder.

Summary, table, paper tables, verdicts, plots and the HTML page, by the functions the ``aggregate``
and ``plots`` rules call (:func:`crossgap.steps.report.aggregate_step`, :mod:`crossgap.paper.build`), from
the result files alone (e.g. a cluster run copied to a laptop): ``modality_gap.json`` files are the
gaps, every other ``*.json`` a result; the inversions' final steps come from their recorded params.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Mapping, Sequence

from crossgap.metrics.results import read_result
from crossgap.paper.build import paper_plots

log = logging.getLogger(__name__)


def find_results(results_dir: str | Path) -> tuple[list[str], list[str]]:
    """``(result files, modality-gap files)`` under ``results_dir`` (``…/modality_gap.json`` are the gaps)."""
    root = Path(results_dir)
    if not root.is_dir():
        raise ValueError(f"{root}: not a folder (expected a results folder such as data/results)")
    files = sorted(str(p) for p in root.rglob("*.json"))
    gaps = [p for p in files if Path(p).name == "modality_gap.json"]
    results = [p for p in files if Path(p).name != "modality_gap.json"]
    if not results:
        raise ValueError(f"{root}: no result files (*.json) found")
    return results, gaps


def final_steps_of(results: Sequence[str]) -> dict[str, int]:
    """Each inversion's configured ``steps``, read from its results' recorded params."""
    steps: dict[str, int] = {}
    for path in results:
        r = read_result(path)
        if r["method"] in ("oti", "ovi") and "steps" in r["params"]:
            steps.setdefault(r["method"], int(r["params"]["steps"]))
    return steps


def main_seed(results: Sequence[str]) -> int:
    """The inversion seed of a folder whose inverted results all share one (``params.seed``); 0 without
    any; ``ValueError`` listing them when there are several (then the caller names the main one)."""
    from crossgap.methods import get_method

    seeds = set()
    for path in results:
        r = read_result(path)
        if get_method(r["task"], r["method"]).inversion is not None and "seed" in r["params"]:
            seeds.add(int(r["params"]["seed"]))
    if len(seeds) > 1:
        raise ValueError(f"the results hold inversions of seeds {sorted(seeds)}: say which is the main one "
                         "(--inversion-seed; the others become its replicates)")
    return seeds.pop() if seeds else 0


def report_from_results(results_dir: str | Path, out_dir: str | Path, *, bootstrap: Mapping[str, Any] | None = None,
                        seed: int | None = None, methods: Mapping[str, Sequence[str]] | None = None) -> dict[str, str]:
    """Rebuild summary, table, paper tables, verdicts, plots and the HTML page of a results folder.

    ``seed``: the main inversion seed (other seeds' results are replicates; default :func:`main_seed`).
    Returns ``{name: path}`` of what it wrote under ``out_dir``.
    """
    from crossgap.html_report import write_html_report
    from crossgap.steps.report import aggregate_step, plot_comparison, plot_steps

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    results, gaps = find_results(results_dir)
    seed = main_seed(results) if seed is None else seed
    paths = {name: str(out / name) for name in ("summary.json", "table.csv", "table.md", "comparison.csv",
                                                "steps.csv", "paper_tables.md", "paper_tables.csv",
                                                "verdicts.csv", "paper_summary.json", "comparison.png",
                                                "steps.png", "report.html")}
    aggregate_step(results=results, gaps=gaps, summary_out=paths["summary.json"], table_csv=paths["table.csv"],
                   table_md=paths["table.md"], plot_csv=paths["comparison.csv"], steps_csv=paths["steps.csv"],
                   bootstrap=bootstrap or {"resamples": 1000, "seed": 0, "confidence": 0.95},
                   final_steps=final_steps_of(results), seed=seed, paper_outputs={
                       "tables_md": paths["paper_tables.md"], "tables_csv": paths["paper_tables.csv"],
                       "verdicts_csv": paths["verdicts.csv"], "summary_json": paths["paper_summary.json"]},
                   paper_methods=methods)
    plot_comparison(paths["table.csv"], paths["comparison.png"])
    plot_steps(paths["steps.csv"], paths["steps.png"])
    task_plots = paper_plots(paths["paper_tables.csv"], out)
    write_html_report(paths["table.md"], {
        "Δ of every method against its task's native method, 95% paired-bootstrap intervals": paths["comparison.png"],
        "Headline metric vs optimisation step (snapshots of one optimisation)": paths["steps.png"],
    }, paths["report.html"], paper={"tables_csv": paths["paper_tables.csv"], "verdicts_csv": paths["verdicts.csv"],
                                    "tables_md": paths["paper_tables.md"], "plots": task_plots,
                                    "table_csv": paths["table.csv"]})
    return paths | {f"paper_{t}.png": p for t, p in task_plots.items()}


