"""OTI / OVI speed: a reference-style loop, crossgap, and the machine's own GEMM rate, side by side.

The reference loop does what the official implementation does (miccunifi/Cross-the-Gap,
``src/oti.py`` / ``src/ovi.py`` with ``src/encode_with_pseudo_tokens.py``): every step it
re-tokenises the template, embeds the whole 77-token context, writes the pseudo tokens over the
placeholder rows and runs the library's text (or vision) transformer module end to end; AdamW
(lr 2e-2, weight decay 0.01), fp16 autocast + GradScaler on CUDA, fp32 on the CPU.  It sums the
per-sample losses as crossgap does (the official mean only rescales the gradient, which AdamW
ignores up to its epsilon), so both start from the same tokens and their losses must agree.

Each line reads: positions run per step, GFLOP per step (counted from the model's shapes by
:mod:`crossgap.models.flops`: forward + input-gradient backward, matrix products only), seconds
per step (the fastest timed step: the machine may be shared; the median is printed beside it), samples/s of a full inversion (OTI 150 steps, OVI 1000),
the speed-up over the reference, and the achieved GFLOP/s as a % of the machine's peak, measured
here with a large matmul on the same threads (fp32 on the CPU; the autocast dtype on CUDA).

    python benchmarks/inversion.py                      # ViT-B-32, batch 16, CPU, ~3 min on 2 idle cores
    python benchmarks/inversion.py --oti-steps 150 --rounds 1   # the reference OTI to the end too
    python benchmarks/inversion.py --device cuda --batch 64
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import statistics
import time
from typing import Callable

import torch
import torch.nn.functional as F

from crossgap import load_clip, oti, ovi
from crossgap.inversion import initial_tokens
from crossgap.models.base import PLACEHOLDER, expand_pseudo_patches
from crossgap.models.flops import StepFlops, step_flops
from crossgap.runtime.batch_size import CPU_MAX_BATCH
from crossgap.utils import autocast_dtype

FULL_STEPS = {"OTI": 150, "OVI": 1000}
TEMPLATE = "a photo of {}"


# --------------------------------------------------------------------------------------------
# the machine's limit
# --------------------------------------------------------------------------------------------
def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def gemm_peak(device: torch.device, size: int | None = None, repeats: int = 5) -> tuple[float, str]:
    """``(GFLOP/s, label)`` of the best of ``repeats`` square matmuls (fp32 CPU, autocast dtype CUDA)."""
    dtype = autocast_dtype(device) or torch.float32
    size = size or (8192 if device.type == "cuda" else 2048)
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    a @ b
    best = float("inf")
    for _ in range(repeats):
        sync(device)
        start = time.perf_counter()
        a @ b
        sync(device)
        best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best / 1e9, f"{str(dtype).replace('torch.', '')} {size}x{size} matmul"


# --------------------------------------------------------------------------------------------
# reference-style loops (see the module docstring)
# --------------------------------------------------------------------------------------------
def reference_text_features(model, ids: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """Full-context text features ``[B, D]`` with pseudo tokens ``[B, R, W]`` over the placeholders of ``ids`` ``[B, L]``."""
    m = model.model
    text = getattr(m, "text", m)
    x = text.token_embedding(ids).clone()
    x[ids == model.placeholder_id] = tokens.reshape(-1, tokens.shape[-1]).to(x.dtype)
    x = x + text.positional_embedding.to(x.dtype)
    if isinstance(getattr(text.transformer, "batch_first", None), bool):  # open_clip
        x = text.transformer(x, attn_mask=text.attn_mask)
    else:  # clip.model.Transformer (OpenAI, SLIP): sequence first, causal mask inside the blocks
        x = text.transformer(x.permute(1, 0, 2)).permute(1, 0, 2)
    x = text.ln_final(x)[torch.arange(x.shape[0]), ids.argmax(dim=-1)]
    projection = text.text_projection
    return projection(x) if isinstance(projection, torch.nn.Linear) else x @ projection


def reference_image_features(model, tokens: torch.Tensor) -> torch.Tensor:
    """Image features ``[B, D]`` from pseudo patches ``[B, P, W]``: interpolate, class token, full tower."""
    v = model.model.visual
    x = expand_pseudo_patches(tokens, v.positional_embedding.shape[0] - 1)
    x = torch.cat([v.class_embedding.to(x.dtype).expand(x.shape[0], 1, -1), x], 1) + v.positional_embedding
    x = v.ln_pre(x)
    if isinstance(getattr(v.transformer, "batch_first", None), bool):  # open_clip
        x = v.transformer(x)
    else:
        x = v.transformer(x.permute(1, 0, 2)).permute(1, 0, 2)
    return v.ln_post(x[:, 0]) @ v.proj


def reference_loop(encode: Callable[[torch.Tensor], torch.Tensor], targets: torch.Tensor, init: torch.Tensor,
                   steps: int) -> tuple[torch.Tensor, list[float]]:
    """AdamW on ``init`` so that ``encode`` matches ``targets``: ``(losses [B, steps], seconds per step)``."""
    device = targets.device
    tokens = torch.nn.Parameter(init.clone().to(device))
    opt = torch.optim.AdamW([tokens], lr=2e-2, weight_decay=0.01)
    amp = device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda") if amp else None
    targets = F.normalize(targets.float(), dim=-1)
    losses, times = [], []
    for _ in range(steps):
        sync(device)
        start = time.perf_counter()
        opt.zero_grad()
        with torch.autocast(device.type, dtype=torch.float16, enabled=amp):
            features = encode(tokens)
        per = 1 - (F.normalize(features.float(), dim=-1) * targets).sum(-1)
        if scaler is not None:
            scaler.scale(per.sum()).backward()
            scaler.step(opt)
            scaler.update()
        else:
            per.sum().backward()
            opt.step()
        losses.append(per.detach().cpu())
        times.append(time.perf_counter() - start)
    return torch.stack(losses, 1), times


def reference_oti(model, targets, init, steps, template=TEMPLATE):
    def encode(tokens):  # re-tokenised every step, as the reference does
        texts = [template.format(f" {PLACEHOLDER} " * tokens.shape[1])] * tokens.shape[0]
        return reference_text_features(model, model.tokenizer(texts).to(tokens.device), tokens)

    return reference_loop(encode, targets, init, steps)


def reference_ovi(model, targets, init, steps):
    return reference_loop(lambda tokens: reference_image_features(model, tokens), targets, init, steps)


# --------------------------------------------------------------------------------------------
# crossgap, timed step by step
# --------------------------------------------------------------------------------------------
class StepTimer:
    """Wraps an encoder; the time between consecutive calls is one full optimisation step."""

    def __init__(self, encode: Callable[[torch.Tensor], torch.Tensor], device: torch.device) -> None:
        self.encode, self.device, self.stamps = encode, device, []

    def __call__(self, tokens: torch.Tensor) -> torch.Tensor:
        sync(self.device)
        self.stamps.append(time.perf_counter())
        return self.encode(tokens)

    def step_times(self, end: float) -> list[float]:
        stamps = self.stamps + [end]
        return [b - a for a, b in zip(stamps[:-1], stamps[1:])]


def crossgap_run(method: str, model, targets: torch.Tensor, steps: int,
                 encoder: Callable | None = None) -> tuple[torch.Tensor, list[float], object]:
    """crossgap's own ``oti``/``ovi`` from seed 0: ``(losses [B, steps], seconds per step, encoder)``.

    ``encoder``: OTI only, the text encoder ``oti`` should use instead of building its own (a
    compiled one, built once and shared by the timed runs).
    """
    timers: list[StepTimer] = []
    if method == "OTI":
        make = model.template_encoder if encoder is None else (lambda ids, num: encoder)
        model.template_encoder = lambda ids, num: timers.append(StepTimer(make(ids, num), model.device)) or timers[-1]
        invert = lambda: oti(targets, model, template_sentence=TEMPLATE, steps=steps, seed=0, progress=False)
    else:
        model.encode_image_with_pseudo_tokens = StepTimer(model.encode_image_with_pseudo_tokens, model.device)
        timers.append(model.encode_image_with_pseudo_tokens)
        invert = lambda: ovi(targets, model, steps=steps, seed=0, progress=False)
    try:
        _, losses = invert()
        sync(model.device)
        end = time.perf_counter()
    finally:
        for name in ("template_encoder", "encode_image_with_pseudo_tokens"):
            model.__dict__.pop(name, None)
    return losses, timers[0].step_times(end), timers[0].encode


# --------------------------------------------------------------------------------------------
# the table
# --------------------------------------------------------------------------------------------
@dataclasses.dataclass
class Line:
    method: str
    impl: str
    positions: str
    flops: StepFlops
    step_times: list[float]  # every timed step but the first of each run (warm-up)
    losses: torch.Tensor  # [B, steps] of the first run
    batch: int

    @property
    def seconds(self) -> float:
        """The fastest step: on a shared machine the best estimate of the unloaded speed."""
        return min(self.step_times)

    @property
    def median(self) -> float:
        return statistics.median(self.step_times)

    @property
    def samples_per_s(self) -> float:
        return self.batch / (self.seconds * FULL_STEPS[self.method])


def step_flops_of(method: str, model, batch: int, encoder=None) -> tuple[StepFlops, str, StepFlops, str]:
    """``(reference flops, positions label, crossgap flops, positions label)`` of one step."""
    if method == "OTI":
        text = getattr(model.model, "text", model.model)
        proj = text.text_projection
        head = proj.weight.numel() if isinstance(proj, torch.nn.Linear) else proj.numel()
        blocks = list(text.transformer.resblocks)
        length = model.text.context_length
        ref = step_flops(blocks, batch=batch, positions=length, head_macs=head)
        if encoder is None:  # the reference itself
            return ref, str(length), ref, str(length)
        if getattr(encoder, "stack", None) is None:  # no prefix cache (not a causal tower)
            ours = step_flops(blocks, batch=batch, positions=encoder.positions, head_macs=head)
            return ref, str(length), ours, str(encoder.positions)
        ours = step_flops(encoder.stack.blocks, batch=batch, positions=encoder.positions,
                          past=encoder.prefix_length, last_positions=1, head_macs=head)
        return ref, str(length), ours, f"{encoder.positions} (+{encoder.prefix_length} cached)"
    v = model.model.visual
    blocks = list(v.transformer.resblocks)
    positions = model.visual.num_patches + 1
    head = v.proj.numel() if v.proj is not None else 0
    ref = step_flops(blocks, batch=batch, positions=positions, head_macs=head)
    cls_only = getattr(model.visual, "blocks", None) is not None and getattr(model.visual, "cls_only", True)
    ours = step_flops(blocks, batch=batch, positions=positions, last_positions=1 if cls_only else None,
                      head_macs=head)
    return ref, str(positions), ours, f"{positions} (last: {1 if cls_only else positions})"


def print_table(lines: list[Line], peak: float) -> None:
    header = (f"{'method':6} {'impl':12} {'batch':>5} {'positions':>17} {'GFLOP/step':>10} {'s/step':>8} "
              f"{'median':>8} {'samples/s':>10} {'x ref':>6} {'% GEMM peak':>11} {'loss@k':>9} {'max|dloss|':>10} "
              f"{'k':>4}")
    print(header)
    print("-" * len(header))
    for line in lines:
        ref = next(r for r in lines if r.method == line.method and r.impl == "reference")
        k = min(ref.losses.shape[1], line.losses.shape[1])
        rows = min(ref.batch, line.batch)  # the first rows share targets and initial tokens
        delta = float((line.losses[:rows, :k] - ref.losses[:rows, :k]).abs().max())
        rate = line.flops.total / line.seconds / 1e9
        print(f"{line.method:6} {line.impl:12} {line.batch:5d} {line.positions:>17} {line.flops.total / 1e9:10.2f} "
              f"{line.seconds:8.4f} {line.median:8.4f} {line.samples_per_s:10.4g} "
              f"{line.samples_per_s / ref.samples_per_s:6.1f} {100 * rate / peak:10.1f}% "
              f"{float(line.losses[:rows, k - 1].mean()):9.5f} {delta:10.1e} {k:4d}")


def interleaved(method: str, model, targets: torch.Tensor, steps: int, rounds: int,
                impls: dict[str, Callable | None]) -> dict[str, tuple[torch.Tensor, list[float], object]]:
    """The reference and ``impls`` (name → OTI encoder override) in alternation, ``rounds`` runs of ``steps`` each.

    Returns ``{name: (losses [B, steps] of the first run, step times, encoder)}``; step times of all
    runs without each run's first (warm-up) step.
    """
    width = model.text_token_embedding_dim if method == "OTI" else model.visual_token_embedding_dim
    init = initial_tokens(targets.shape[0], 1, width, seed=0)
    reference = reference_oti if method == "OTI" else reference_ovi
    out: dict[str, tuple[torch.Tensor, list[float], object]] = {}
    for _ in range(rounds):
        for name in ["reference", *impls]:
            if name == "reference":
                (losses, times), encoder = reference(model, targets, init, steps), None
            else:
                losses, times, encoder = crossgap_run(method, model, targets, steps, impls[name])
            first = out.get(name, (losses, [], encoder))
            out[name] = (first[0], first[1] + times[1:], encoder)
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="ViT-B-32", help="open_clip architecture (random weights)")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--oti-steps", type=int, default=10, help="OTI steps per timed run (full OTI = 150)")
    parser.add_argument("--ovi-steps", type=int, default=3, help="OVI steps per timed run (full OVI = 1000)")
    parser.add_argument("--rounds", type=int, default=3, help="timed runs of each, reference and crossgap alternating")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--big-batch", type=int, default=CPU_MAX_BATCH,
                        help="also time crossgap OTI at this batch (default: the CPU's auto batch cap; 0: skip)")
    parser.add_argument("--compile", action=argparse.BooleanOptionalAction, default=True,
                        help="also time OTI with oti(compiled=True) (torch.compile, ~40 s to compile on 2 cores)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = load_clip(args.model, device=args.device)[0]
    device = model.device
    big = max(args.big_batch or 0, args.batch)
    with torch.no_grad():  # the first args.batch rows are the benchmark's batch; the rest feed --big-batch
        all_images = model.encode_image(torch.randn(big, 3, *model.visual.v.image_size, device=device))
        images = all_images[: args.batch]
        texts = model.encode_text(model.tokenizer([f"a photo of thing {i}" for i in range(args.batch)]).to(device))
    peak, peak_label = gemm_peak(device)

    # crossgap's full OTI (150 steps) for the final loss; then all timed in alternation
    full, _, _ = crossgap_run("OTI", model, images, FULL_STEPS["OTI"])
    impls: dict[str, Callable | None] = {"crossgap": None}
    compile_seconds = None
    if args.compile:
        compiled = torch.compile(model.template_encoder(model.tokenize_template(TEMPLATE, 1), 1), dynamic=True)
        start = time.perf_counter()
        compiled(torch.zeros(args.batch, 1, model.text_token_embedding_dim, device=device, requires_grad=True)).sum().backward()
        compile_seconds = time.perf_counter() - start
        impls["+compile"] = compiled
    lines: list[Line] = []
    for method, targets, steps in (("OTI", images, args.oti_steps), ("OVI", texts, args.ovi_steps)):
        runs = interleaved(method, model, targets, steps, args.rounds, impls if method == "OTI" else {"crossgap": None})
        for impl, (losses, times, encoder) in runs.items():
            ref_f, ref_pos, ours_f, ours_pos = step_flops_of(method, model, args.batch, encoder)
            flops, positions = (ref_f, ref_pos) if impl == "reference" else (ours_f, ours_pos)
            lines.append(Line(method, impl, positions, flops, times, losses, args.batch))
        if method == "OTI" and big > args.batch:  # crossgap at a larger batch (results do not depend on it)
            losses, times, encoder = crossgap_run("OTI", model, all_images, steps)
            times = times[1:]
            for _ in range(args.rounds - 1):
                times += crossgap_run("OTI", model, all_images, steps)[1][1:]
            _, _, flops, positions = step_flops_of("OTI", model, big, encoder)
            lines.append(Line("OTI", "crossgap", positions, flops, times, losses, big))
        peak = max(peak, gemm_peak(device)[0])  # the machine may be shared: keep its best
    full_match = float((full[:, : args.oti_steps] - lines[1].losses).abs().max())

    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    load = f", load average {os.getloadavg()[0]:.1f}" if hasattr(os, "getloadavg") else ""
    print(f"\n{args.model} (random weights), batch {args.batch}, {name}, {torch.get_num_threads()} threads{load}")
    print(f"GEMM peak: {peak:.0f} GFLOP/s ({peak_label}, best of 5 before each part, same threads)\n")
    print_table(lines, peak)
    print(f"\ns/step: fastest timed step ({args.rounds} runs each, reference and crossgap alternating, first step of "
          "each run left out; median beside it); samples/s = batch / (s/step x full steps: "
          f"OTI {FULL_STEPS['OTI']}, OVI {FULL_STEPS['OVI']})")
    print(f"timed runs are {args.oti_steps} OTI / {args.ovi_steps} OVI steps, extrapolated per step to full length; "
          "loss@k: mean loss after the k steps both ran; max|dloss|: largest per-sample difference to the reference")
    print(f"crossgap OTI to the full {FULL_STEPS['OTI']} steps: final loss {float(full[:, -1].mean()):.5f} "
          f"(first {args.oti_steps} steps equal to the timed run within {full_match:.1e})")
    if compile_seconds is not None:
        print(f"+compile: oti(compiled=True), torch.compile of the per-step encoder (dynamic batch): "
              f"{compile_seconds:.0f} s to compile, once per process")


if __name__ == "__main__":
    main()
