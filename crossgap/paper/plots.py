"""Per-task plots that stay readable at paper-grid size: one facet per dataset group × model.

:func:`plot_task` draws, for one task, a grid of panels: a row per dataset group of
:mod:`crossgap.paper.groups` (its height follows its number of datasets), a column per model; in each
panel one line per dataset, one marker per method (Δ vs native, with its 95% paired interval; filled
where the interval excludes 0).  31 datasets × 7 models × 6 methods are 3 tasks × at most 2 rows × 7
panels instead of one axis of 2,600 bars.
"""

from __future__ import annotations

import logging

import pandas as pd

from crossgap.paper.tables import TASK_TITLES, model_order
from crossgap.utils import atomic_path

log = logging.getLogger(__name__)

COLOURS = ("tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown", "tab:pink", "tab:olive",
           "tab:cyan", "tab:gray")


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_task(frame: pd.DataFrame, task: str, titles: dict[str, str], out_png: str) -> None:
    """Write the faceted Δ plot of ``task`` from the paper frame (:func:`crossgap.paper.tables.paper_frame`)
    to ``out_png``; a task without rows gives a one-panel figure saying so."""
    plt = _pyplot()
    part = frame[(frame["task"] == task) & (frame["row"] == "dataset") & frame["delta"].notna()]
    if part.empty:
        fig, ax = plt.subplots(figsize=(6, 1.5))
        ax.axis("off")
        ax.text(0.5, 0.5, f"{TASK_TITLES[task]}: no results in this run", ha="center", va="center")
    else:
        groups = list(dict.fromkeys(part["group"]))
        models = model_order(sorted(part["model"].unique()))
        methods = list(dict.fromkeys(part["method"]))
        sizes = [part.loc[part["group"] == g, "name"].nunique() for g in groups]
        fig, axes = plt.subplots(len(groups), len(models), squeeze=False, sharex="col",
                                 figsize=(2.3 * len(models) + 1.5, sum(0.28 * s + 0.9 for s in sizes)),
                                 gridspec_kw={"height_ratios": [s + 2 for s in sizes]})
        step = 0.7 / max(len(methods), 1)
        for gi, group in enumerate(groups):
            rows = part[part["group"] == group]
            names = list(dict.fromkeys(rows["name"]))
            for mi, model in enumerate(models):
                ax = axes[gi, mi]
                cell = rows[rows["model"] == model]
                for k, method in enumerate(methods):
                    sel = cell[cell["method"] == method]
                    y = [names.index(n) - 0.35 + step * (k + 0.5) for n in sel["name"]]
                    low = (sel["delta"] - sel["ci95_low"]).fillna(0).clip(lower=0)
                    high = (sel["ci95_high"] - sel["delta"]).fillna(0).clip(lower=0)
                    colour = COLOURS[k % len(COLOURS)]
                    ax.errorbar(sel["delta"], y, xerr=[low, high], fmt="none", ecolor=colour, lw=0.7)
                    filled = sel["significant"].fillna(False).astype(bool).tolist()
                    ax.scatter(sel["delta"], y, s=14, zorder=3, edgecolors=colour, linewidths=0.8,
                               facecolors=[colour if f else "white" for f in filled],
                               label=method if gi == 0 and mi == 0 else None)
                ax.axvline(0, color="black", lw=0.6)
                ax.set_ylim(len(names) - 0.5, -0.5)
                ax.set_yticks(range(len(names)), names if mi == 0 else [""] * len(names), fontsize=6)
                ax.tick_params(axis="x", labelsize=6)
                if gi == 0:
                    ax.set_title(model, fontsize=8)
                if mi == 0:
                    ax.set_ylabel(titles.get(f"group:{group}", group), fontsize=7)
        fig.legend(loc="upper right", fontsize=6, ncol=min(len(methods), 6), frameon=False)
        fig.suptitle(f"{TASK_TITLES[task]}: Δ vs native per dataset (bars: 95% paired interval; filled: excludes 0)",
                     fontsize=9, x=0.02, ha="left")
        # fixed margins (tight_layout costs seconds on a 2 × 7 grid): room for the dataset names and titles
        height = fig.get_figheight()
        fig.subplots_adjust(left=1.3 / fig.get_figwidth(), right=0.99, bottom=0.35 / height, top=1 - 0.75 / height,
                            wspace=0.15, hspace=0.25)
    with atomic_path(out_png) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
    log.info("wrote %s", out_png)
