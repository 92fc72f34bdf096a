"""The step layer: the file-to-file steps the workflow's rule scripts (``workflow/scripts/``) call.

Each step reads input files, computes with the library and writes its outputs atomically; it holds no
Snakemake code, so it can be run and tested on its own.

- :mod:`crossgap.steps.features`: manifest rows → image / text features, prompts, class sentences,
  vocabularies, projection matrices;
- :mod:`crossgap.steps.inversion`: OTI / OVI on one shard of the targets, gathering shards and snapshots;
- :mod:`crossgap.steps.evaluation`: retrieval, zero-shot and modality-gap results from feature files;
- :mod:`crossgap.steps.report`: ``summary.json``, the all-methods table, the aggregate step and plots;
- :mod:`crossgap.steps.report_folder`: ``crossgap report RESULTS_DIR --out DIR``, the same steps on
  any results folder.

Layer order (``tests/test_import_policy.py``): the library (every other ``crossgap`` module) ←
the steps ← the rule scripts and the CLI.  A step may import the library; no library module imports
``crossgap.steps``.  The package imports no submodule, so a model-free job loads only its own step.
"""
