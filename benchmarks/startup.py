"""Start-up cost of every job kind of the workflow (a script: prints a table, asserts nothing).

For each rule script of ``workflow/scripts/``: the crossgap modules it imports at its top level
(:func:`crossgap.runtime.startup.script_imports`) imported in a fresh interpreter after
Snakemake's script preamble, as the job does — wall seconds, peak memory (RSS high-water) and the
heavy packages that came with them.  Jobs that load a model also pay ``crossgap.models`` (open_clip
and its dependencies) when the step calls ``load_model``: the ``+ model`` columns add it.
``python -X importtime`` of one job kind: ``--importtime SCRIPT`` prints the 15 slowest imports.

Run: ``python benchmarks/startup.py`` (about a minute on 2 CPU cores; run it on an idle machine:
every figure is start-up time, which other load stretches).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

from crossgap.runtime.startup import measure_imports, script_imports

SCRIPTS = Path(__file__).resolve().parents[1] / "workflow" / "scripts"
#: scripts whose step loads a model (crossgap.runtime.env.load_model / crossgap.training)
MODEL_SCRIPTS = {"extract_features", "prompt_features", "class_sentence_features", "classname_features",
                 "vocabulary_features", "projection_matrices", "invert_shard", "pretrain"}


def importtime(script: Path) -> None:
    code = "import snakemake.script\n" + "".join(f"import {m}\n" for m in script_imports(script))
    err = subprocess.run([sys.executable, "-X", "importtime", "-c", code], capture_output=True, text=True).stderr
    rows = []
    for line in err.splitlines():
        if line.startswith("import time:") and "|" in line:
            _, cumulative, name = (part.strip() for part in line[len("import time:"):].split("|"))
            if cumulative.isdigit():
                rows.append((int(cumulative), name))
    for micros, name in sorted(rows, reverse=True)[:15]:
        print(f"{micros / 1e6:8.2f} s  {name}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--importtime", metavar="SCRIPT", help="python -X importtime of one script's imports")
    parser.add_argument("--repeat", type=int, default=2, help="runs per job kind (the fastest is shown beside the mean)")
    args = parser.parse_args()
    if args.importtime:
        importtime(SCRIPTS / f"{Path(args.importtime).stem}.py")
        return
    print(f"{'job kind':<26} {'model':>5} {'s (mean)':>9} {'s (min)':>8} {'peak MB':>8} "
          f"{'+ model s':>9} {'+ model MB':>10}  heavy packages imported at start")
    for script in sorted(SCRIPTS.glob("*.py")):
        modules = script_imports(script)
        runs = [measure_imports(modules) for _ in range(args.repeat)]
        mean = sum(r.seconds for r in runs) / len(runs)
        loaded = ", ".join(runs[0].loaded) or "-"
        model = script.stem in MODEL_SCRIPTS
        extra = measure_imports([*modules, "crossgap.models"]) if model else None
        print(f"{script.stem:<26} {'yes' if model else 'no':>5} {mean:>9.2f} {min(r.seconds for r in runs):>8.2f} "
              f"{runs[0].peak_mb:>8.0f} {extra.seconds if extra else float('nan'):>9.2f} "
              f"{extra.peak_mb if extra else float('nan'):>10.0f}  {loaded}")


if __name__ == "__main__":
    main()
