"""The report page's paper sections and its sortable, filterable long table (no dependency, no network).

:func:`task_sections` gives one ``<section>`` per task: the paper-style tables
(:func:`crossgap.paper.tables.task_grid`), the verdicts and the task's faceted plot.
:data:`LONG_TABLE_SCRIPT` makes the first table of ``<section id="all-results">`` sortable (click a
header; numbers sort as numbers) and filterable (dataset, model, method: case-insensitive
substrings); the count of visible rows is in ``#long-count`` and on the table as ``data-visible``.
A page opened as ``report.html#filter=dataset:cub2011,method:oti`` starts filtered (what a headless
browser test uses: the script types those values into the inputs and fires their ``input`` events).
"""

from __future__ import annotations

import html
from typing import Callable, Mapping

import pandas as pd

from crossgap.paper.tables import TASK_TITLES, TASKS, task_grid

PAPER_STYLE = """
table.paper td, table.verdicts td { white-space: nowrap; }
table.paper tr.group td { background: #e8eef7; font-style: italic; }
table.paper tr.average td { font-weight: bold; border-top: 2px solid #999; }
nav ul { columns: 2; }
.filters input { margin-right: 1em; }
section#all-results th { cursor: pointer; }
"""

LONG_TABLE_SCRIPT = r"""
(function () {
  function cellText(row, i) { return (row.cells[i] ? row.cells[i].textContent : "").trim(); }
  function setup() {
    var section = document.getElementById("all-results");
    var table = section ? section.querySelector("table") : null;
    if (!table) { return; }
    var heads = Array.prototype.map.call(table.tHead.rows[0].cells, function (c) { return c.textContent.trim(); });
    var body = table.tBodies[0];
    var rows = Array.prototype.slice.call(body.rows);
    var inputs = {};
    ["dataset", "model", "method"].forEach(function (name) { inputs[name] = document.getElementById("filter-" + name); });
    var count = document.getElementById("long-count");
    function apply() {
      var shown = 0;
      rows.forEach(function (row) {
        var ok = Object.keys(inputs).every(function (name) {
          var col = heads.indexOf(name), want = inputs[name] ? inputs[name].value.trim().toLowerCase() : "";
          return !want || col < 0 || cellText(row, col).toLowerCase().indexOf(want) >= 0;
        });
        row.style.display = ok ? "" : "none";
        if (ok) { shown += 1; }
      });
      table.dataset.visible = String(shown);
      count.textContent = shown + " of " + rows.length + " rows";
    }
    Object.keys(inputs).forEach(function (name) { if (inputs[name]) { inputs[name].addEventListener("input", apply); } });
    Array.prototype.forEach.call(table.tHead.rows[0].cells, function (th, i) {
      th.addEventListener("click", function () {
        var dir = th.dataset.sort === "asc" ? -1 : 1;
        th.dataset.sort = dir === 1 ? "asc" : "desc";
        rows.sort(function (a, b) {
          var x = cellText(a, i), y = cellText(b, i);
          var nx = parseFloat(x.replace(/[^0-9eE+\-.]/g, "")), ny = parseFloat(y.replace(/[^0-9eE+\-.]/g, ""));
          if (!isNaN(nx) && !isNaN(ny) && nx !== ny) { return dir * (nx - ny); }
          return dir * x.localeCompare(y);
        });
        rows.forEach(function (row) { body.appendChild(row); });
      });
    });
    var match = /filter=([^&]*)/.exec(decodeURIComponent(window.location.hash || ""));
    if (match) {
      match[1].split(",").forEach(function (pair) {
        var kv = pair.split(":");
        if (inputs[kv[0]]) { inputs[kv[0]].value = kv.slice(1).join(":"); inputs[kv[0]].dispatchEvent(new Event("input")); }
      });
    }
    apply();
  }
  window.addEventListener("load", setup);
})();
"""

FILTERS = ('<p class="filters">Filter: '
           + "".join(f'<label>{n} <input id="filter-{n}" type="search" placeholder="{n}"></label>'
                     for n in ("dataset", "model", "method"))
           + ' <span id="long-count"></span> (click a column header to sort)</p>')


def _table(header: list[str], rows: list[tuple[str, list[str]]], cls: str) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join(f'<tr class="{kind}"><th scope="row">{html.escape(cells[0])}</th>'
                   + "".join(f"<td>{html.escape(c)}</td>" for c in cells[1:]) + "</tr>" for kind, cells in rows)
    return f'<table class="{cls}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def _verdicts(verdicts: pd.DataFrame, task: str, titles: Mapping[str, str]) -> str:
    part = verdicts[verdicts["task"] == task]
    if part.empty:
        return "<p>No verdicts: no method has both its results and the native ones here.</p>"
    header = ["average", "model", "method", "vs", "datasets", "better / same / worse", "mean Δ", "95% CI (two-level)"]
    rows = [("verdict", [titles.get(f"average:{r.average}", r.average), r.model, r.method, r.versus, f"{r.datasets} of {r.of}",
                         f"{r.better} / {r.same} / {r.worse}", f"{r.mean_delta:+.2f}{'*' if r.significant else ''}",
                         f"[{r.ci95_low:+.2f}, {r.ci95_high:+.2f}]"]) for r in part.itertuples()]
    return _table(header, rows, "verdicts")


def task_sections(frame: pd.DataFrame, verdicts: pd.DataFrame, titles: Mapping[str, str],
                  figure: Callable[[str, str], str], plots: Mapping[str, str], note: str) -> list[tuple[str, str, str]]:
    """``(id, title, html)`` per task with rows: paper tables, verdicts, the task's plot (``figure(caption, png)``)."""
    out = []
    for task in TASKS:
        grids = task_grid(frame, task, titles)
        if not grids:
            continue
        parts = [f"<h2>{html.escape(TASK_TITLES[task])}</h2>",
                 "<p>Native score; method score (Δ vs native, * = the 95% interval excludes 0); "
                 "<i>pub</i>: the published figure (run − published), ‡ = the source does not state its protocol, "
                 "† = shown, not compared.</p>"]
        for method, header, rows in grids:
            parts += [f"<h3>{html.escape(method)} vs native</h3>", _table(header, rows, "paper")]
        parts += ["<h3>Verdicts across datasets</h3>", _verdicts(verdicts, task, titles),
                  f"<p class=\"note\">{html.escape(note)}</p>"]
        if task in plots:
            parts.append(figure(f"{TASK_TITLES[task]}: Δ per dataset, faceted by group and model", plots[task]))
        out.append((f"task-{task}", TASK_TITLES[task], "\n".join(parts)))
    return out
