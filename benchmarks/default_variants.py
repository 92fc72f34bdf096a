"""Run the embedded default through the whole pipeline under parameter variants; print one table.

Each variant is a copy of the repository's committable files (git ls-files) in
``--work/<name>`` with ``params.yaml`` edited by dotted ``key=value`` overrides, run with
``snakemake --cores N``. It measures how the paper's comparisons move with the pretraining
temperature, the intra-modal (SLIP-style) loss weight and the seeds:

    python benchmarks/default_variants.py                       # the variants below
    python benchmarks/default_variants.py --only default,tau1   # a subset
    python benchmarks/default_variants.py --variant 'mine:pretrain.epochs=20'

Runs are sequential (each uses all ``--cores``); a finished variant is not rerun (Snakemake
finds nothing to do), so an interrupted sweep resumes. One JSON line per variant is appended
to ``benchmarks/results/default_variants.jsonl``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]

SNAKEMAKE = Path(sys.executable).with_name("snakemake")

VARIANTS: dict[str, list[str]] = {
    "default": [],
    "tau1": ["pretrain.temperature=1.0"],
    "tau0.01": ["pretrain.temperature=0.01"],
    "intra1": ["pretrain.intramodal_weight=1.0"],
    "seed1": ["pretrain.seed=1", "inversion.seed=1"],
    "seed2": ["pretrain.seed=2", "inversion.seed=2"],
}


def apply_override(params: dict[str, Any], override: str) -> None:
    """``a.b.c=value`` (value parsed as YAML) into the nested ``params``; the key must exist."""
    key, _, raw = override.partition("=")
    node = params
    *parents, leaf = key.split(".")
    for part in parents:
        node = node[part]
    if leaf not in node:
        raise KeyError(f"{key}: not a key of params.yaml")
    node[leaf] = yaml.safe_load(raw)


def source_tree(dest: Path, params: dict[str, Any]) -> None:
    """The files git would commit (tracked + untracked-not-ignored, none of ``data/``), with ``params``.

    ``shutil.copy2`` keeps the mtimes, so a rerun of the same variant finds its finished jobs.
    """
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                            capture_output=True, text=True, check=True).stdout
    for rel in filter(None, listed.split("\0")):
        if (ROOT / rel).is_file() and not rel.startswith("data/"):
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / rel, dest / rel)
    (dest / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def run_variant(name: str, overrides: list[str], work: Path, cores: int) -> dict[str, Any]:
    dest = work / name
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    for override in overrides:
        apply_override(params, override)
    dest.mkdir(parents=True, exist_ok=True)
    source_tree(dest, params)
    t0 = time.perf_counter()
    proc = subprocess.run([str(SNAKEMAKE), "--cores", str(cores)], cwd=dest, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"variant {name} failed; see {dest}/.snakemake/log\n{proc.stderr[-3000:]}")
    node = json.loads((dest / "data/metrics/summary.json").read_text())["synthetic"]["tiny"]
    return {"variant": name, "overrides": overrides, "wall_s": round(wall, 1), "summary": node}


def row(record: dict[str, Any]) -> str:
    s = record["summary"]
    ir, tr, zs = s["image_retrieval"], s["text_retrieval"], s["zero_shot"]
    gap = s.get("modality_gap", {}).get("native", {})
    cells = [
        record["variant"],
        f"{zs['standard']['top1']:.2f}",
        f"{zs['oti']['top1']:.2f}",
        f"{zs['ovi']['top1']:.2f}",
        f"{ir['image']['mAP']:.2f}",
        f"{ir['oti']['mAP']:.2f}",
        f"{ir['oti']['mAP'] - ir['image']['mAP']:+.2f}",
        f"{tr['text']['mAP']:.2f}",
        f"{tr['ovi']['mAP']:.2f}",
        f"{tr['ovi']['mAP'] - tr['text']['mAP']:+.2f}",
        f"{gap.get('gap_distance', float('nan')):.3f}",
        f"{record['wall_s']:.0f}",
    ]
    return "| " + " | ".join(cells) + " |"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", type=Path, default=Path("/tmp/crossgap_variants"))
    ap.add_argument("--cores", type=int, default=2)
    ap.add_argument("--only", help="comma-separated names of the built-in variants")
    ap.add_argument("--variant", action="append", default=[], help="NAME:key=value[,key=value...]")
    args = ap.parse_args()
    variants = dict(VARIANTS)
    if args.only:
        variants = {k: variants[k] for k in args.only.split(",")}
    for spec in args.variant:
        name, _, overrides = spec.partition(":")
        variants[name] = [o for o in overrides.split(",") if o]
    out = ROOT / "benchmarks/results/default_variants.jsonl"
    out.parent.mkdir(parents=True, exist_ok=True)
    header = (
        "| variant | zero-shot std | zs OTI | zs OVI | img→img mAP | OTI→img mAP | Δ | txt→txt mAP | OVI→txt mAP | Δ "
        "| gap | wall s |\n|" + "---|" * 12
    )
    rows = []
    for name, overrides in variants.items():
        record = run_variant(name, overrides, args.work, args.cores)
        with out.open("a") as fh:
            fh.write(json.dumps(record) + "\n")
        rows.append(row(record))
        print(rows[-1], flush=True)
    print("\n" + header + "\n" + "\n".join(rows))


if __name__ == "__main__":
    main()
