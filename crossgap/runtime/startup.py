"""What a workflow job pays before its work starts: the modules its script imports.

Each rule's script (``workflow/scripts/*.py``) imports a few crossgap modules at its top level;
:func:`script_imports` lists them (with ``ast``, without running the script) and
:func:`measure_imports` imports them in a fresh interpreter, as the job does, and reports the
wall time, the peak memory and which heavy third-party packages came with them.  A job that does
not touch a model must not pull in the model stack (:data:`MODEL_STACK`);
``benchmarks/startup.py`` prints the table and ``tests/test_import_policy.py`` holds the rule.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

#: the packages a job pays for only when it loads a model (open_clip imports transformers and torchvision)
MODEL_STACK: tuple[str, ...] = ("open_clip", "transformers", "torchvision", "timm", "clip")
#: heavy packages worth naming in the table
HEAVY: tuple[str, ...] = ("torch", "pandas", "matplotlib", *MODEL_STACK)

_PROBE = """
import json, resource, sys, time
start = time.perf_counter()
import snakemake.script  # the preamble of every script job
for name in sys.argv[1:]:
    __import__(name)
seconds = time.perf_counter() - start
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({"seconds": seconds, "peak_mb": peak, "loaded": sorted(m for m in %r if m in sys.modules)}))
""" % (HEAVY,)


def script_imports(script: str | Path) -> list[str]:
    """The crossgap modules ``script`` imports at its top level (in order, each once)."""
    tree = ast.parse(Path(script).read_text(), filename=str(script))
    names: list[str] = []
    for node in tree.body:
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("crossgap"):
            names.append(node.module)
        elif isinstance(node, ast.Import):
            names += [a.name for a in node.names if a.name.startswith("crossgap")]
    return list(dict.fromkeys(names))


@dataclass(frozen=True)
class ImportCost:
    """A fresh interpreter's cost of importing a job's modules."""

    seconds: float
    peak_mb: float
    loaded: tuple[str, ...]


def measure_imports(modules: list[str], python: str = sys.executable) -> ImportCost:
    """Import ``modules`` (after Snakemake's script preamble) in a new ``python`` process and measure it."""
    out = subprocess.run([python, "-c", _PROBE, *modules], capture_output=True, text=True, check=True)
    data = json.loads(out.stdout.strip().splitlines()[-1])
    return ImportCost(float(data["seconds"]), float(data["peak_mb"]), tuple(data["loaded"]))
