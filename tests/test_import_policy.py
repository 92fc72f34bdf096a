"""Who may import what: model-free jobs never pull in the model stack, the plan never imports torch, no import
cycle, and the layer order library ← steps (``crossgap.steps``) ← entry points (rule scripts, the CLI)."""

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
                                                                "crossgap.steps.features"]
    assert script_imports(SCRIPTS / "evaluate_zero_shot.py") == ["crossgap.steps.evaluation", "crossgap.runtime"]


@functools.lru_cache(maxsize=None)
def _cost(modules: tuple[str, ...]):
    return measure_imports(list(modules))  # scripts that import the same modules share one interpreter


@pytest.mark.parametrize("script", MODEL_FREE)
def test_a_model_free_job_imports_no_model_stack(script):
    cost = _cost(tuple(script_imports(SCRIPTS / f"{script}.py")))
    assert not set(cost.loaded) & set(MODEL_STACK), f"{script} imports {sorted(set(cost.loaded) & set(MODEL_STACK))}"


def test_the_plan_imports_no_torch():
    assert "torch" not in measure_imports(["crossgap.plan", "crossgap.methods", "crossgap.config"]).loaded


def _module_graph() -> dict[str, set[str]]:
    """``{module: crossgap modules it imports}``, at module level or inside a function (a deferred import is
    still a dependency: it only moves the cost)."""
    import ast

    root = Path(__file__).resolve().parents[1] / "crossgap"
    modules = {}
    for path in root.rglob("*.py"):
        rel = path.relative_to(root.parent).with_suffix("")
        name = ".".join(rel.parts[:-1] if rel.name == "__init__" else rel.parts)
        modules[name] = path
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        edges = set()
        for node in ast.walk(ast.parse(path.read_text())):
            targets = []
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                targets = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            elif isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            edges |= {t for t in targets if t in modules and t != name}
        graph[name] = edges
    return graph


def test_the_package_has_no_import_cycle():
    graph = _module_graph()
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            # a package importing its own submodule is how packages are built, not a cycle
            if nxt.startswith(node + "."):
                continue
            if state.get(nxt) == 1:
                cycle = stack[stack.index(nxt):] + [nxt]
                if not all(a.startswith(b + ".") or b.startswith(a + ".") for a, b in zip(cycle, cycle[1:])):
                    raise AssertionError("import cycle: " + " -> ".join(cycle))
            elif nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module)


#: the layers, lowest first: a module may import its own layer and those below it, never one above
LAYERS = ("library", "steps", "entry")
#: the entry points inside the package (the rule scripts in ``workflow/scripts/`` are the others)
ENTRY_MODULES = ("crossgap.cli", "crossgap.cli_datasets")


def layer_of(module: str) -> str:
    """``steps`` for ``crossgap.steps`` and its modules, ``entry`` for the CLI, ``library`` for the rest."""
    if module == "crossgap.steps" or module.startswith("crossgap.steps."):
        return "steps"
    if module in ENTRY_MODULES:
        return "entry"
    return "library"


def layer_violations(graph: dict[str, set[str]]) -> list[str]:
    """``"a (layer) imports b (higher layer)"`` for every edge of ``graph`` against :data:`LAYERS`."""
    rank = {layer: i for i, layer in enumerate(LAYERS)}
    return [f"{a} ({layer_of(a)}) imports {b} ({layer_of(b)})" for a in sorted(graph) for b in sorted(graph[a])
            if rank[layer_of(b)] > rank[layer_of(a)]]


def test_layer_violations_names_an_import_against_the_order():
    graph = {"crossgap.inversion": {"crossgap.steps.features", "crossgap.storage"},
             "crossgap.steps.report": {"crossgap.paper.build", "crossgap.cli"},
             "crossgap.cli": {"crossgap.steps.report_folder"}, "crossgap.steps": set()}
    assert layer_of("crossgap.steps") == "steps" and layer_of("crossgap.stepsize") == "library"
    assert layer_violations(graph) == ["crossgap.inversion (library) imports crossgap.steps.features (steps)",
                                       "crossgap.steps.report (steps) imports crossgap.cli (entry)"]


def test_no_library_module_imports_the_steps_and_no_step_imports_an_entry_point():
    graph = _module_graph()
    assert {"crossgap.steps.features", "crossgap.steps.inversion", "crossgap.steps.evaluation",
            "crossgap.steps.report", "crossgap.steps.report_folder"} <= set(graph)
    assert "crossgap.runtime.env" in graph["crossgap.steps.inversion"]  # the graph sees the steps' imports
    assert layer_violations(graph) == []


def test_the_rule_scripts_import_no_entry_point():
    """The rule scripts sit beside the CLI at the top: they call steps and library, never ``crossgap.cli``."""
    wrong = {s.stem: m for s in sorted(SCRIPTS.glob("*.py")) for m in script_imports(s) if layer_of(m) == "entry"}
    assert wrong == {}
