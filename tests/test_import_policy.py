"""Who may import what: model-free jobs never pull in the model stack, and the plan never imports torch."""

from __future__ import annotations

import functools
from pathlib import Path

import pytest

from crossgap.runtime.startup import MODEL_STACK, measure_imports, script_imports

SCRIPTS = Path(__file__).resolve().parents[1] / "workflow" / "scripts"
#: rule scripts whose jobs touch no model (their steps read feature, inversion and result files)
MODEL_FREE = ("aggregate", "plots", "gather_shards", "gather_snapshots", "evaluate_retrieval", "evaluate_zero_shot",
              "modality_gap", "prepare_manifest", "generate_synthetic")


def test_script_imports_reads_every_top_level_crossgap_import():
    assert script_imports(SCRIPTS / "extract_features.py") == ["crossgap.config", "crossgap.runtime",
                                                                "crossgap.pipeline"]
    assert script_imports(SCRIPTS / "evaluate_zero_shot.py") == ["crossgap.evaluation", "crossgap.runtime"]


@functools.lru_cache(maxsize=None)
def _cost(modules: tuple[str, ...]):
    return measure_imports(list(modules))  # scripts that import the same modules share one interpreter


@pytest.mark.parametrize("script", MODEL_FREE)
def test_a_model_free_job_imports_no_model_stack(script):
    cost = _cost(tuple(script_imports(SCRIPTS / f"{script}.py")))
    assert not set(cost.loaded) & set(MODEL_STACK), f"{script} imports {sorted(set(cost.loaded) & set(MODEL_STACK))}"


def test_the_plan_imports_no_torch():
    assert "torch" not in measure_imports(["crossgap.plan", "crossgap.methods", "crossgap.config"]).loaded
