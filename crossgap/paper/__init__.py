"""Read a run like the paper: paper-style tables, published numbers beside them, verdicts across datasets.

- :mod:`crossgap.paper.groups`: the paper's datasets per task, their groups, averages and metrics;
- :mod:`crossgap.paper.published`: the published figures shipped as ``data/published.csv``, with sources;
- :mod:`crossgap.paper.verdicts`: per model and method, datasets better / same / worse than native, the
  mean Δ with a two-level bootstrap interval, and the same for every pair of non-native methods;
- :mod:`crossgap.paper.tables`: the long paper table, its Markdown layout and ``paper_summary.json``;
- :mod:`crossgap.paper.plots`, :mod:`crossgap.paper.html`: faceted plots and the report page's sections;
- :mod:`crossgap.paper.build`: what the ``aggregate``/``plots`` rules call (``crossgap report RESULTS_DIR
  --out DIR`` runs them on any folder: :mod:`crossgap.steps.report_folder`).

No Snakemake here; the rules and the CLI call the same functions.
"""
