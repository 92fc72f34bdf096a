"""`crossgap report` on a results folder the size of the paper grid (a script: prints figures, asserts nothing).

Writes, with the test helper ``tests/fixtures_results.py``, every result file ``params/paper.yaml``
plans (31 datasets × 7 models × every method, main seed; ``--queries`` random per-query scores each,
no model run), then times ``crossgap report RESULTS --out OUT`` in a fresh interpreter (imports
included, as a user runs it) and prints the wall seconds, the output sizes and the rows of the tables.

Run: ``python benchmarks/report_size.py [--queries 40] [--keep DIR]`` (about a minute on 2 CPU cores;
the timing stretches with other load on the machine).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--queries", type=int, default=40, help="per-query scores per result (default 40)")
    parser.add_argument("--keep", default=None, help="write under this folder and keep it (default: a temp folder)")
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT / "tests"))
    from fixtures_results import paper_grid_results

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(args.keep or tmp)
        start = time.perf_counter()
        counts = paper_grid_results(root / "results", queries=args.queries)
        print(f"fabricated {counts['results']:,} results ({counts['datasets']} datasets x {counts['models']} models, "
              f"{args.queries} queries each) in {time.perf_counter() - start:.1f} s")
        command = [sys.executable, "-m", "crossgap.cli", "report", str(root / "results"), "--out", str(root / "out")]
        start = time.perf_counter()
        proc = subprocess.run(command, capture_output=True, text=True, cwd=ROOT)
        wall = time.perf_counter() - start
        if proc.returncode != 0:
            print(proc.stderr[-3000:])
            return proc.returncode
        print(f"crossgap report RESULTS --out OUT: {wall:.1f} s wall (fresh interpreter)")
        for path in sorted((root / "out").iterdir()):
            lines = path.read_text(errors="replace").count("\n") if path.suffix in (".csv", ".md") else None
            print(f"  {path.name:28s} {path.stat().st_size / 1024:9.1f} KiB" + (f" {lines:7,d} lines" if lines else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
