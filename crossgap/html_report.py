"""One self-contained HTML page of the results: ``data/plots/report.html``.

What a person opens first: the all-methods table (``table.md``: every method with Δ, its 95%
paired-bootstrap interval and the modality gap; the best step of each inversion; the notes),
rendered as HTML, followed by every plot, each PNG embedded as a base64 ``data:`` URI, so the page
needs no other file and no network (it can be mailed, or opened from a cluster's scratch space).

A short inline script marks, once the page has loaded, each image with the size the browser
decoded (``data-rendered="<width>x<height>"``, ``"0x0"`` for an image that failed) and the body
with ``data-ready="1"``: a headless browser's DOM dump then shows whether every plot rendered
(``tests/workflow/test_workflow.py``).

With the paper outputs (``paper=``, :mod:`crossgap.paper`), the page reads at paper-grid size: a
contents list, one section per task (paper-style tables, verdicts, the task's faceted plot), then
"All results": the long table, sortable and filterable by a small embedded script
(:data:`crossgap.paper.html.LONG_TABLE_SCRIPT`), then the plots and the paper tables' sources and notes.
"""

from __future__ import annotations

import base64
import html
import logging
from pathlib import Path
from typing import Any, Mapping

from markdown_it import MarkdownIt

from crossgap.utils import atomic_path

log = logging.getLogger(__name__)

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 72em; color: #222; }
table { border-collapse: collapse; font-size: 0.85em; margin: 1em 0; }
th, td { border: 1px solid #ccc; padding: 0.2em 0.5em; }
th { background: #f2f2f2; }
tbody tr:nth-child(even) { background: #fafafa; }
figure { margin: 2em 0; }
figure img { max-width: 100%; border: 1px solid #eee; }
figcaption { font-size: 0.9em; color: #555; }
"""

_MARK_RENDERED = """
window.addEventListener("load", function () {
  document.querySelectorAll("img").forEach(function (img) {
    img.dataset.rendered = img.naturalWidth + "x" + img.naturalHeight;
  });
  document.body.dataset.ready = "1";
});
"""


def _figure(caption: str, png: Path) -> str:
    data = png.read_bytes()
    if data[:8] != b"\x89PNG\r\n\x1a\n":
        raise ValueError(f"{png}: not a PNG file (the report embeds the plots rule's PNGs)")
    uri = "data:image/png;base64," + base64.b64encode(data).decode("ascii")
    label = html.escape(caption)
    return f'<figure><img src="{uri}" alt="{label}"><figcaption>{label}</figcaption></figure>'


def _paper_parts(body: str, figures: Mapping[str, str | Path], paper: Mapping[str, Any], title: str) -> list[str]:
    import pandas as pd

    from crossgap.paper.build import TITLES
    from crossgap.paper.html import FILTERS, task_sections

    frame, verdicts = pd.read_csv(paper["tables_csv"]), pd.read_csv(paper["verdicts_csv"])
    md = Path(paper["tables_md"]).read_text(encoding="utf-8")
    note = next((line[2:] for line in md.splitlines() if line.startswith("- Multiple comparisons")), "")
    sections = task_sections(frame, verdicts, TITLES, lambda c, p: _figure(c, Path(p)), paper.get("plots", {}), note)
    tail = md[md.index("\n## Sources"):] if "\n## Sources" in md else md[md.index("\n## Notes"):] if "\n## Notes" in md else ""
    body = body.split("\n", 1)[1] if body.startswith("<h1>") else body  # table.md's own title: the page's
    toc = [(sid, t) for sid, t, _ in sections] + [("all-results", "All results (sortable, filterable)"),
                                                    ("plots", "Plots"), ("sources", "Sources and notes")]
    return ([f"<h1>{html.escape(title)}</h1>", "<nav><ul>"
             + "".join(f'<li><a href="#{sid}">{html.escape(t)}</a></li>' for sid, t in toc) + "</ul></nav>"]
            + [f'<section id="{sid}" class="task">\n{content}\n</section>' for sid, _, content in sections]
            + ['<section id="all-results">', "<h2>All results</h2>", FILTERS, body, "</section>",
               '<section id="plots"><h2>Plots</h2>', *(_figure(c, Path(p)) for c, p in figures.items()), "</section>",
               '<section id="sources">', MarkdownIt("commonmark").enable("table").render(tail), "</section>"])


def write_html_report(table_md: str | Path, figures: Mapping[str, str | Path], out_html: str | Path,
                      title: str = "crossgap results", paper: Mapping[str, Any] | None = None) -> None:
    """Write the page: ``table_md`` rendered, then one figure per ``caption → PNG path`` (in order).

    ``paper``: ``tables_csv``, ``verdicts_csv``, ``tables_md`` (:func:`crossgap.paper.build.paper_step`)
    and ``plots`` (task → PNG, :func:`crossgap.paper.build.paper_plots`): the page gets the paper
    sections and the sortable, filterable long table (module docstring).
    """
    body = MarkdownIt("commonmark").enable("table").render(Path(table_md).read_text())
    if paper is None:
        parts = [body, "<h2>Plots</h2>", *(_figure(caption, Path(png)) for caption, png in figures.items())]
        style, script = _STYLE, _MARK_RENDERED
    else:
        from crossgap.paper.html import LONG_TABLE_SCRIPT, PAPER_STYLE

        parts = _paper_parts(body, figures, paper, title)
        style, script = _STYLE + PAPER_STYLE, LONG_TABLE_SCRIPT + _MARK_RENDERED
    page = (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
            f"<style>{style}</style><script>{script}</script></head>\n<body>\n"
            + "\n".join(parts) + "\n</body></html>\n")
    with atomic_path(out_html) as tmp:
        Path(tmp).write_text(page, encoding="utf-8")
    log.info("wrote %s (%d plots)", out_html, len(figures))
