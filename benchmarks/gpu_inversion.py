"""OTI / OVI throughput on a GPU: ViT-B/32 and ViT-L/14 (open_clip, random weights), bf16 autocast.

For each model and method the script times a few optimisation steps of crossgap's own ``oti`` /
``ovi`` (which autocast to bf16 on CUDA) at batch 64 and at the largest power-of-two batch that
fits (doubling from 64 until CUDA runs out of memory, or ``--max-batch``), and reports
samples/s of a *full* inversion (OTI 150 steps, OVI 1000 steps, extrapolated from the timed
steps), the peak memory, and the projected time to invert 50,000 image features with OTI.

    python benchmarks/gpu_inversion.py                       # on CUDA
    python benchmarks/gpu_inversion.py --smoke               # tiny model, CPU, seconds: checks the script
    python benchmarks/gpu_inversion.py --json out/gpu_inversion.json
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from crossgap import load_clip, oti, ovi
from crossgap.utils import autocast_dtype

FULL_STEPS = {"OTI": 150, "OVI": 1000}


@dataclass
class Measurement:
    model: str
    method: str
    batch: int
    largest: bool  # the largest batch that fits (else the fixed batch)
    seconds_per_step: float
    samples_per_s: float  # of a full inversion (FULL_STEPS)
    peak_gib: float


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _free(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def _run(method: str, model, batch: int, steps: int) -> None:
    """``steps`` optimisation steps of ``method`` on ``batch`` random targets."""
    dim = model.encode_text(model.tokenizer("x").to(model.device)).shape[-1]
    targets = torch.randn(batch, dim, device=model.device)
    invert = oti if method == "OTI" else ovi
    invert(targets, model, steps=steps, seed=0, progress=False)


def _fits(method: str, model, batch: int) -> bool:
    try:
        _run(method, model, batch, steps=2)
        return True
    except torch.cuda.OutOfMemoryError:
        return False
    finally:
        _free(model.device)


def largest_batch(method: str, model, start: int, limit: int) -> int:
    """The largest power-of-two multiple of ``start`` (≤ ``limit``) whose steps fit in memory."""
    best, batch = 0, start
    while batch <= limit and _fits(method, model, batch):
        best, batch = batch, batch * 2
    if best == 0:
        raise RuntimeError(f"{method}: even batch {start} does not fit in memory")
    return best


def measure(name: str, method: str, model, batch: int, steps: int, largest: bool) -> Measurement:
    device = model.device
    _run(method, model, batch, steps=1)  # warm-up: kernels, allocator
    _sync(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    start = time.perf_counter()
    _run(method, model, batch, steps=steps)
    _sync(device)
    per_step = (time.perf_counter() - start) / steps
    peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else float("nan")
    _free(device)
    return Measurement(name, method, batch, largest, per_step, batch / (per_step * FULL_STEPS[method]), peak)


def print_table(rows: list[Measurement], num_features: int) -> None:
    header = f"{'model':<14} {'method':<6} {'batch':>7} {'':<8} {'s/step':>9} {'samples/s':>10} {'peak GiB':>9}"
    print(header)
    print("-" * len(header))
    for r in rows:
        tag = "largest" if r.largest else "fixed"
        print(f"{r.model:<14} {r.method:<6} {r.batch:>7} {tag:<8} {r.seconds_per_step:>9.4f} "
              f"{r.samples_per_s:>10.4g} {r.peak_gib:>9.2f}")
    print(f"\nsamples/s are of a full inversion (OTI {FULL_STEPS['OTI']} steps, OVI {FULL_STEPS['OVI']} steps)")
    for model in dict.fromkeys(r.model for r in rows):
        best = max((r for r in rows if r.model == model and r.method == "OTI"), key=lambda r: r.samples_per_s)
        seconds = num_features / best.samples_per_s
        print(f"{model}: OTI of {num_features:,} image features at batch {best.batch}: "
              f"{seconds / 60:.1f} min ({seconds / 3600:.2f} h)")


def main(argv: list[str] | None = None) -> list[Measurement]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["ViT-B-32", "ViT-L-14"])
    parser.add_argument("--device", default=None, help="default: cuda (cpu with --smoke)")
    parser.add_argument("--batch", type=int, default=64, help="fixed batch, and the start of the search")
    parser.add_argument("--max-batch", type=int, default=32768)
    parser.add_argument("--steps", type=int, default=10, help="timed optimisation steps per measurement")
    parser.add_argument("--num-features", type=int, default=50_000)
    parser.add_argument("--smoke", action="store_true", help="tiny model on the CPU, tiny batches")
    parser.add_argument("--json", type=Path, default=None, help="also write the measurements here")
    args = parser.parse_args(argv)
    if args.smoke:
        args.models, args.batch, args.max_batch, args.steps = ["crossgap-tiny"], 4, 16, 2
        args.device = args.device or "cpu"
    device = torch.device(args.device or "cuda")
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error("CUDA is not available (use --smoke to check the script on the CPU)")
    logging.basicConfig(level=logging.WARNING)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(f"device: {name}; autocast: {autocast_dtype(device)}; torch {torch.__version__}\n")

    rows: list[Measurement] = []
    for model_name in args.models:
        start = time.perf_counter()
        model = load_clip(model_name, device=device)[0]  # random weights: speed does not depend on them
        print(f"loaded {model_name} in {time.perf_counter() - start:.1f}s")
        for method in ("OTI", "OVI"):
            rows.append(measure(model_name, method, model, args.batch, args.steps, largest=False))
            top = largest_batch(method, model, args.batch, args.max_batch)
            if top != args.batch:
                rows.append(measure(model_name, method, model, top, args.steps, largest=True))
            else:
                rows[-1].largest = True
        del model
        _free(device)
    print()
    print_table(rows, args.num_features)
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps([asdict(r) for r in rows], indent=2) + "\n")
    return rows


if __name__ == "__main__":
    main()
