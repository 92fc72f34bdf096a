"""OTI / OVI throughput on a GPU: ViT-B/32 and ViT-L/14 (open_clip, random weights), the paper grid's hours.

For each model and method the script times crossgap's own ``oti`` / ``ovi`` (bf16 autocast on
CUDA; OTI through the prefix cache) at batch 64 and at the largest batch that fits, chosen by
:func:`crossgap.runtime.batch_size.auto_batch_size` (halved until it runs, should the estimate be
too large), and the reference-style loop of ``benchmarks/inversion.py`` at batch 64.  Columns as
there: s/step, samples/s of a full inversion (OTI 150 steps, OVI 1000), × reference (per sample),
% of the GPU's own bf16 GEMM peak, and the peak memory.  It then projects the hours of the paper
grid's inversions (``params/paper.yaml``: OTI and OVI of every dataset, sizes from
:func:`crossgap.plan.planned_targets`; OVI class prompts counted as one per class) for every grid
model whose architecture was measured.

    python benchmarks/gpu_inversion.py                       # on CUDA
    python benchmarks/gpu_inversion.py --smoke               # tiny model, CPU, seconds: checks the script
    python benchmarks/gpu_inversion.py --json out/gpu_inversion.json
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import json
import logging
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
import inversion as bench  # noqa: E402  (benchmarks/inversion.py: reference loops, timing, FLOPs)

from crossgap import load_clip  # noqa: E402
from crossgap.inversion import initial_tokens  # noqa: E402
from crossgap.runtime.batch_size import auto_batch_size  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


@dataclasses.dataclass
class Measurement:
    model: str
    method: str
    impl: str  # "reference" or "crossgap"
    batch: int
    largest: bool  # the largest batch that fits (else the fixed batch)
    seconds_per_step: float
    samples_per_s: float  # of a full inversion (bench.FULL_STEPS)
    gflop_per_step: float
    peak_fraction: float  # of the GEMM peak
    peak_gib: float


def _free(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def _peak_gib(device: torch.device) -> float:
    return torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else float("nan")


def _targets(method: str, model, batch: int) -> torch.Tensor:
    with torch.no_grad():
        dim = model.encode_text(model.tokenizer("x").to(model.device)).shape[-1]
    return torch.randn(batch, dim, device=model.device)


def measure(name: str, method: str, impl: str, model, batch: int, steps: int, largest: bool,
            peak: float) -> Measurement:
    device = model.device
    _free(device)
    targets = _targets(method, model, batch)
    if impl == "crossgap":
        _, times, encoder = bench.crossgap_run(method, model, targets, steps)
        flops = bench.step_flops_of(method, model, batch, encoder)[2]
    else:
        width = model.text_token_embedding_dim if method == "OTI" else model.visual_token_embedding_dim
        init = initial_tokens(batch, 1, width, seed=0)
        run = bench.reference_oti if method == "OTI" else bench.reference_ovi
        _, times = run(model, targets, init, steps)
        flops = bench.step_flops_of(method, model, batch, model.template_encoder(
            model.tokenize_template(bench.TEMPLATE, 1), 1) if method == "OTI" else None)[0]
    per_step = sorted(times[1:] or times)[len(times[1:] or times) // 2]
    return Measurement(name, method, impl, batch, largest, per_step,
                       batch / (per_step * bench.FULL_STEPS[method]), flops.total / 1e9,
                       flops.total / per_step / 1e9 / peak, _peak_gib(device))


def largest_batch(method: str, model, start: int, limit: int) -> int:
    """``auto_batch_size``'s choice (at least ``start``), halved until two steps run without running out of memory."""
    batch = max(start, auto_batch_size(method.lower(), model, limit,
                                       cuda_step=lambda targets: bench.crossgap_run(method, model, targets, 1)))
    while batch > start:
        try:
            bench.crossgap_run(method, model, _targets(method, model, batch), 2)
            return batch
        except torch.cuda.OutOfMemoryError:
            logging.warning("%s: batch %d ran out of memory; halving", method, batch)
            batch //= 2
        finally:
            _free(model.device)
    return start


def grid_targets(params: Path) -> tuple[dict[str, dict[str, int]], dict[str, str]]:
    """``({dataset: {"oti": n, "ovi": n}}, {grid model: architecture})`` of the paper grid."""
    from crossgap import plan
    from crossgap.config import load_params
    from crossgap.datasets import get_adapter

    cfg = load_params(params)
    out = {}
    for dataset, dcfg in sorted(cfg["datasets"].items()):
        counts = {"oti": 0, "ovi": 0}
        for method in counts:
            for inverted in plan.inverted_sets(cfg, dataset, method):
                n = plan.planned_targets(cfg, dataset, method, inverted)
                if n is None and inverted == "prompts":  # one prompt per class
                    n = get_adapter(dcfg["adapter"]).num_classes
                counts[method] += n or 0
        out[dataset] = counts
    return out, {m: spec["architecture"] for m, spec in cfg["models"].items()}


def print_table(rows: list[Measurement]) -> None:
    header = (f"{'model':<14} {'method':<6} {'impl':<9} {'batch':>6} {'':<7} {'s/step':>8} {'samples/s':>10} "
              f"{'x ref':>6} {'GFLOP/step':>10} {'% peak':>7} {'peak GiB':>8}")
    print(header)
    print("-" * len(header))
    for r in rows:
        ref = next((x for x in rows if (x.model, x.method, x.impl) == (r.model, r.method, "reference")), None)
        speedup = r.samples_per_s / ref.samples_per_s if ref else float("nan")
        tag = "largest" if r.largest else "fixed"
        print(f"{r.model:<14} {r.method:<6} {r.impl:<9} {r.batch:>6} {tag:<7} {r.seconds_per_step:>8.4f} "
              f"{r.samples_per_s:>10.4g} {speedup:>6.1f} {r.gflop_per_step:>10.1f} {100 * r.peak_fraction:>6.1f}% "
              f"{r.peak_gib:>8.2f}")


def print_grid(rows: list[Measurement], params: Path) -> None:
    targets, architectures = grid_targets(params)
    total = {m: sum(t[m] for t in targets.values()) for m in ("oti", "ovi")}
    print(f"\npaper grid ({params.name}): {len(targets)} datasets, {total['oti']:,} OTI and {total['ovi']:,} OVI "
          "targets per model")
    hours_all = 0.0
    for grid_model, arch in architectures.items():
        measured = arch.replace("/", "-")
        best = {}
        for method in ("OTI", "OVI"):
            cands = [r for r in rows if r.model == measured and r.method == method and r.impl == "crossgap"]
            if cands:
                best[method] = max(cands, key=lambda r: r.samples_per_s)
        if len(best) < 2:
            print(f"  {grid_model:<14} {arch:<18} not measured (add --models {measured})")
            continue
        hours = {m: total[m.lower()] / best[m].samples_per_s / 3600 for m in best}
        hours_all += sum(hours.values())
        print(f"  {grid_model:<14} {arch:<18} OTI {hours['OTI']:7.2f} h (batch {best['OTI'].batch}), "
              f"OVI {hours['OVI']:7.2f} h (batch {best['OVI'].batch})")
    print(f"  measured grid models together: {hours_all:.1f} GPU-hours (one GPU; shards run in parallel on more)")


def main(argv: list[str] | None = None) -> list[Measurement]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["ViT-B-32", "ViT-L-14"])
    parser.add_argument("--device", default=None, help="default: cuda (cpu with --smoke)")
    parser.add_argument("--batch", type=int, default=64, help="fixed batch (and the reference's)")
    parser.add_argument("--max-batch", type=int, default=32768, help="upper bound of the largest batch")
    parser.add_argument("--steps", type=int, default=10, help="timed optimisation steps per measurement")
    parser.add_argument("--params", type=Path, default=REPO / "params" / "paper.yaml")
    parser.add_argument("--smoke", action="store_true", help="tiny model on the CPU, tiny batches")
    parser.add_argument("--json", type=Path, default=None, help="also write the measurements here")
    args = parser.parse_args(argv)
    if args.smoke:
        args.models, args.batch, args.max_batch, args.steps = ["crossgap-tiny"], 4, 16, 3
        args.device = args.device or "cpu"
    device = torch.device(args.device or "cuda")
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error("CUDA is not available (use --smoke to check the script on the CPU)")
    logging.basicConfig(level=logging.WARNING)
    peak, label = bench.gemm_peak(device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(f"device: {name}; torch {torch.__version__}; GEMM peak {peak:.0f} GFLOP/s ({label})\n")

    rows: list[Measurement] = []
    for model_name in args.models:
        start = time.perf_counter()
        model = load_clip(model_name, device=device)[0]  # random weights: speed does not depend on them
        print(f"loaded {model_name} in {time.perf_counter() - start:.1f}s")
        for method in ("OTI", "OVI"):
            rows.append(measure(model_name, method, "reference", model, args.batch, args.steps, False, peak))
            rows.append(measure(model_name, method, "crossgap", model, args.batch, args.steps, False, peak))
            top = largest_batch(method, model, args.batch, args.max_batch)
            if top != args.batch:
                rows.append(measure(model_name, method, "crossgap", model, top, args.steps, True, peak))
            else:
                rows[-1].largest = True
        del model
        _free(device)
    print()
    print_table(rows)
    print(f"\nsamples/s are of a full inversion (OTI {bench.FULL_STEPS['OTI']} steps, OVI {bench.FULL_STEPS['OVI']} "
          "steps); x ref: per sample, against the reference loop at the fixed batch")
    print_grid(rows, args.params)
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps([dataclasses.asdict(r) for r in rows], indent=2) + "\n")
    return rows


if __name__ == "__main__":
    main()
