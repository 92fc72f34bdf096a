"""Fast start (issue 23): the evaluation jobs' thread count and the paper grid's dry run, side by side in one run.

A script: prints a table, asserts nothing. Every figure is a whole ``snakemake`` call timed end to end
(DAG building, every job's Python start-up and the report included), as a user pays for it.

* ``evaluations``: in a finished run of the embedded default (``RUN_DIR``, e.g. a clone after ``make run``),
  the 15 retrieval evaluations and the report forced to rerun, with the rules' former ``threads: 2`` (one job at
  a time on 2 cores) and with today's ``threads: 1`` (two side by side); the summaries must be identical.
* ``dry run``: ``snakemake -n --configfile params/paper.yaml`` in this checkout, with the former rerun triggers
  (``code`` on) and today's.

Run: ``python benchmarks/fast_start.py RUN_DIR`` on an idle machine (about 3 minutes on 2 cores).
"""

from __future__ import annotations

import argparse
import filecmp
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SNAKEMAKE = str(Path(sys.executable).with_name("snakemake"))
RETRIEVAL = ("evaluate_image_retrieval", "evaluate_text_retrieval")


def timed(cmd: list[str], cwd: Path) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, cwd=cwd, check=True, capture_output=True, text=True)
    return time.perf_counter() - start


def evaluations(run_dir: Path) -> list[tuple[str, float]]:
    base = [SNAKEMAKE, "--cores", "2", "--forcerun", *RETRIEVAL]
    summary = run_dir / "data/metrics/summary.json"
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        before = Path(tmp) / "summary.json"
        shutil.copy2(summary, before)
        rows.append(("retrieval evaluations + report, threads 2", timed(
            [*base, "--set-threads", *(f"{rule}=2" for rule in RETRIEVAL)], run_dir)))
        two = Path(tmp) / "summary2.json"
        shutil.copy2(summary, two)
        rows.append(("retrieval evaluations + report, threads 1 (today)", timed(base, run_dir)))
        same = filecmp.cmp(before, two, shallow=False) and filecmp.cmp(two, summary, shallow=False)
    print(f"summary.json identical across the three runs: {same}")
    return rows


def dry_runs() -> list[tuple[str, float]]:
    cmd = [SNAKEMAKE, "-n", "--configfile", "params/paper.yaml"]
    return [("paper grid dry run, code trigger on (former)",
             timed([*cmd, "--rerun-triggers", "mtime", "params", "software-env", "code"], REPO)),
            ("paper grid dry run (today)", timed(cmd, REPO))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path, help="a finished run of the embedded default")
    args = parser.parse_args()
    rows = evaluations(args.run_dir.resolve()) + dry_runs()
    width = max(len(name) for name, _ in rows)
    for (name, seconds), ref in zip(rows, (rows[0][1], rows[0][1], rows[2][1], rows[2][1])):
        print(f"{name:<{width}}  {seconds:7.1f} s  ({seconds / ref:.2f}x)")


if __name__ == "__main__":
    main()
