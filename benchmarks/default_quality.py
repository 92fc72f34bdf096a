"""Measure the embedded default: pretraining time and zero-shot top-1 of the tiny CLIP.

Generates the Synthetic dataset (unless present), pretrains ``crossgap-tiny`` with
the given hyper-parameters, then encodes the test images through open_clip's
preprocess and classifies them with the prompts "a photo of a {classname}.".

    python benchmarks/default_quality.py --epochs 10 --num-train 6000
    python benchmarks/default_quality.py --temperature 1.0       # fixed tau
    python benchmarks/default_quality.py --intramodal-weight 1.0 # SLIP-style term

One JSON line per run is appended to ``benchmarks/results/default_quality.jsonl``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import open_clip
import torch

ROOT = Path(__file__).resolve().parents[1]

from crossgap.synthetic_generator import generate_synthetic
from crossgap.training import register_model_configs, resolve_data_dir, train_tiny_clip, zero_shot_accuracy
from crossgap.utils import atomic_path, setup_logging


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", default="/tmp/crossgap_bench")
    ap.add_argument("--num-train", type=int, default=6000)
    ap.add_argument("--num-test", type=int, default=1000)
    ap.add_argument("--image-size", type=int, default=32)
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--weight-decay", type=float, default=0.1)
    ap.add_argument("--temperature", type=float, default=None, help="fixed tau; default learnable")
    ap.add_argument("--intramodal-weight", type=float, default=0.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--results", default=str(ROOT / "benchmarks" / "results" / "default_quality.jsonl"))
    args = ap.parse_args()
    setup_logging()

    work = Path(args.work) / f"n{args.num_train}_t{args.num_test}_s{args.image_size}_seed{args.seed}"
    t0 = time.perf_counter()
    try:
        data_dir = resolve_data_dir(work)
        gen_seconds = 0.0
    except FileNotFoundError:
        data_dir = generate_synthetic(work, num_train=args.num_train, num_test=args.num_test,
                                      image_size=args.image_size, seed=args.seed)
        gen_seconds = time.perf_counter() - t0

    tag = f"e{args.epochs}_b{args.batch_size}_lr{args.lr}_tau{args.temperature}_im{args.intramodal_weight}"
    ckpt = work / f"{tag}.pt"
    t1 = time.perf_counter()
    summary = train_tiny_clip(
        data_dir, ckpt, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
        weight_decay=args.weight_decay, temperature=args.temperature,
        intramodal_weight=args.intramodal_weight, seed=args.seed, device="cpu",
        loss_csv=work / f"{tag}_loss.csv", num_threads=args.threads,
    )
    train_wall = time.perf_counter() - t1

    register_model_configs()
    torch.set_num_threads(args.threads)
    model, _, preprocess = open_clip.create_model_and_transforms("crossgap-tiny", pretrained=str(ckpt))
    tokenizer = open_clip.get_tokenizer("crossgap-tiny")
    t2 = time.perf_counter()
    acc = zero_shot_accuracy(model, tokenizer, preprocess, data_dir, device="cpu")
    result = {
        "num_train": args.num_train, "num_test": args.num_test, "image_size": args.image_size,
        "epochs": args.epochs, "batch_size": args.batch_size, "lr": args.lr,
        "temperature": args.temperature, "intramodal_weight": args.intramodal_weight, "seed": args.seed,
        "generate_seconds": round(gen_seconds, 1), "train_wall_seconds": round(train_wall, 1),
        "seconds_per_epoch": round(summary["seconds_per_epoch"], 1),
        "final_loss": round(summary["final_loss"], 4), "final_temperature": round(summary["final_temperature"], 4),
        "zero_shot_top1": round(acc, 2), "eval_seconds": round(time.perf_counter() - t2, 1),
    }
    print(f"zero-shot top-1: {acc:.2f}%  ({tag}, train {train_wall:.0f} s, {summary['seconds_per_epoch']:.1f} s/epoch)")
    print(json.dumps(result))
    results = Path(args.results)
    previous = results.read_text() if results.exists() else ""
    with atomic_path(results) as tmp:
        tmp.write_text(previous + json.dumps(result) + "\n")


if __name__ == "__main__":
    main()
