"""Modality inversion: OTI (image feature → pseudo words) and OVI (text feature → pseudo patches).

Both optimise pseudo tokens with AdamW so that the frozen encoder of the *other* modality
reproduces a target feature; the loss is ``1 - cos(encoded, target)``.

The loss of a batch is the **sum** of per-sample losses and AdamW acts element-wise, so each
sample's tokens evolve exactly as if it were optimised alone: results do not depend on the batch
size or on the other samples in the batch (up to floating-point reduction order).  Initial tokens
are drawn ``N(0, 0.02)`` on the CPU from ``seed`` for the whole input at once, so the same seed
gives the same tokens on the same device whatever ``batch_size`` is.

**fp16 on CUDA** (``precision="fp16"``, the reference's autocast + ``GradScaler``): one shared loss
scale would skip the *whole batch's* step whenever any sample's gradient overflows, so a sample's
result would depend on its batch (and with ``batch_size: auto`` on the GPU's memory).  crossgap
scales **per sample** instead (:class:`PerSampleScaler`: each sample has GradScaler's dynamic scale,
2¹⁶ at first, halved on an overflow, doubled after 2000 clean steps) and an overflowing sample skips
*its own* step only (its tokens are separate AdamW parameters: no update, no moment or step-count
change), exactly as the reference run with that sample alone would.  The skipped steps are counted
per target (``stats["skipped_steps"]``; shard metadata and log).
"""

from __future__ import annotations

import logging
from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from crossgap.config import schema_default
from crossgap.models.base import CLIPWrapper
from crossgap.runtime.batch_size import auto_batch_size
from crossgap.resume import ShardResume
from crossgap.utils import autocast_context, autocast_dtype

log = logging.getLogger(__name__)

INIT_STD = 0.02


def initial_tokens(num: int, num_tokens: int, width: int, seed: int | None) -> torch.Tensor:
    """``[num, num_tokens, width]`` draws from N(0, INIT_STD²), on the CPU, from ``seed``."""
    generator = torch.Generator().manual_seed(seed) if seed is not None else None
    return torch.randn(num, num_tokens, width, generator=generator) * INIT_STD


class PerSampleScaler:
    """Dynamic loss scaling with one scale per sample (the fp16 path; module docstring).

    Each sample follows ``torch.amp.GradScaler``'s defaults on its own: ``init_scale`` 2¹⁶,
    ``backoff_factor`` 0.5 on a non-finite gradient, ``growth_factor`` 2 after ``growth_interval``
    consecutive finite steps.  ``skipped [B]`` counts each sample's skipped steps.
    """

    def __init__(self, batch: int, device: torch.device | str = "cpu", *, init_scale: float = 2.0**16,
                 growth_factor: float = 2.0, backoff_factor: float = 0.5, growth_interval: int = 2000) -> None:
        self.scale = torch.full((batch,), float(init_scale), device=device)
        self.growth_factor, self.backoff_factor, self.growth_interval = growth_factor, backoff_factor, growth_interval
        self.clean = torch.zeros(batch, dtype=torch.long, device=device)
        self.skipped = torch.zeros(batch, dtype=torch.long)

    def unscale_(self, params: Sequence[torch.nn.Parameter]) -> torch.Tensor:
        """Unscale each sample's gradient in place; a sample whose gradient is not finite gets ``grad=None``
        (AdamW then leaves it, its moments and its step count alone).  Returns the finite mask ``[B]``."""
        grads = torch.stack([p.grad for p in params]).float()  # [B, T, W]
        grads = grads / self.scale.view(-1, *([1] * (grads.dim() - 1)))
        finite = torch.isfinite(grads).flatten(1).all(dim=1)  # [B]
        for b, (p, ok) in enumerate(zip(params, finite.tolist())):
            p.grad = grads[b].to(p.dtype) if ok else None
        return finite

    def update(self, finite: torch.Tensor) -> None:
        """Back off the scales of the samples that overflowed, grow those with ``growth_interval`` clean steps."""
        self.skipped += (~finite).long().cpu()
        self.clean = torch.where(finite, self.clean + 1, torch.zeros_like(self.clean))
        grow = self.clean >= self.growth_interval
        self.scale = torch.where(~finite, self.scale * self.backoff_factor,
                                 torch.where(grow, self.scale * self.growth_factor, self.scale))
        self.clean = torch.where(grow, torch.zeros_like(self.clean), self.clean)


def _optimise(
    targets: torch.Tensor,
    tokens: torch.Tensor,
    encode: Callable[[torch.Tensor], torch.Tensor],
    *,
    steps: int,
    learning_rate: float,
    weight_decay: float,
    precision: str,
    desc: str,
    progress: bool,
    snapshots: Sequence[int] = (),
    scaler: PerSampleScaler | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Optimise ``tokens`` ``[B, T, W]`` so that ``encode(tokens)`` ``[B, D]`` matches ``targets`` ``[B, D]``.

    Returns the final tokens ``[B, T, W]`` (fp32, CPU), the per-sample losses ``[B, steps]``
    (the loss of the tokens *before* each update), the tokens after ``snapshots[i]`` updates
    ``[B, S, T, W]`` (copies taken during the same run: the final tokens do not change) and the
    steps skipped per sample ``[B]`` (non-zero only with a loss scaler: fp16 on CUDA, or ``scaler``).
    """
    device = targets.device
    targets = F.normalize(targets.float(), dim=-1)
    amp_dtype = autocast_dtype(device, precision)  # None (fp32) on the CPU whatever precision says
    if scaler is None and amp_dtype == torch.float16:
        scaler = PerSampleScaler(targets.shape[0], device)
    if scaler is not None:  # one AdamW parameter per sample, so that one sample can skip its step alone
        rows = [torch.nn.Parameter(t.to(device=device, dtype=torch.float32, copy=True)) for t in tokens]
        optimizer = torch.optim.AdamW(rows, lr=learning_rate, weight_decay=weight_decay)
        current = lambda: torch.stack(rows)  # noqa: E731
    else:
        # a copy: the caller's initial tokens (e.g. a slice of the whole set's) are never updated in place
        param = torch.nn.Parameter(tokens.to(device=device, dtype=torch.float32, copy=True))
        optimizer = torch.optim.AdamW([param], lr=learning_rate, weight_decay=weight_decay)
        current = lambda: param  # noqa: E731
    losses = torch.empty(targets.shape[0], steps)
    snaps = torch.empty(targets.shape[0], len(snapshots), *tokens.shape[1:])
    slot = {int(step): i for i, step in enumerate(snapshots)}
    bar = tqdm(range(steps), desc=desc, disable=not progress, leave=False, dynamic_ncols=True)
    for step in bar:
        with autocast_context(device, precision):
            encoded = encode(current())
        per_sample = 1.0 - (F.normalize(encoded.float(), dim=-1) * targets).sum(dim=-1)
        optimizer.zero_grad(set_to_none=True)
        if scaler is not None:
            (per_sample * scaler.scale).sum().backward()
            finite = scaler.unscale_(rows)
            optimizer.step()
            scaler.update(finite)
        else:
            per_sample.sum().backward()
            optimizer.step()
        losses[:, step] = per_sample.detach().cpu()
        if step + 1 in slot:
            snaps[:, slot[step + 1]] = current().detach().cpu()
        if progress and (step % 10 == 0 or step == steps - 1):
            bar.set_postfix(loss=f"{float(per_sample.detach().mean()):.4f}")
    skipped = scaler.skipped.clone() if scaler is not None else torch.zeros(targets.shape[0], dtype=torch.long)
    return current().detach().cpu(), losses, snaps, skipped


def _batched_inversion(
    targets: torch.Tensor,
    model: CLIPWrapper,
    width: int,
    num_pseudo_tokens: int,
    encode: Callable[[torch.Tensor], torch.Tensor],
    *,
    steps: int,
    learning_rate: float,
    weight_decay: float,
    precision: str,
    seed: int | None,
    batch_size: int | None,
    desc: str,
    progress: bool,
    init: torch.Tensor | None = None,
    resume: "ShardResume | None" = None,
    snapshots: Sequence[int] = (),
    stats: dict | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    if targets.dim() != 2:
        raise ValueError(f"expected features of shape [B, D], got {tuple(targets.shape)}")
    if num_pseudo_tokens < 1 or steps < 1:
        raise ValueError("num_pseudo_tokens and steps must be >= 1")
    device = model.device
    if init is None:
        init = initial_tokens(targets.shape[0], num_pseudo_tokens, width, seed)
    elif init.shape != (targets.shape[0], num_pseudo_tokens, width):
        raise ValueError(
            f"init has shape {tuple(init.shape)}, expected {(targets.shape[0], num_pseudo_tokens, width)}"
        )
    batch_size = batch_size or max(targets.shape[0], 1)
    snapshots = tuple(int(s) for s in snapshots)
    if any(not 0 < s < steps for s in snapshots):
        raise ValueError(f"snapshots {list(snapshots)} must lie strictly between 0 and steps={steps}")
    out_tokens, out_losses, out_snaps, out_skipped = [], [], [], []
    first = 0
    prior = resume.load(steps, len(snapshots)) if resume is not None else None
    if prior is not None:  # finished batches of an interrupted run: continue after them
        out_tokens.append(prior[0])
        out_losses.append(prior[1])
        out_snaps.append(prior[2])
        out_skipped.append(resume.skipped_steps)
        first = prior[0].shape[0]
        log.info("%s: resuming from batch %d of %d (%d of %d targets already inverted, from %s)", desc,
                 first // batch_size + 1, -(-targets.shape[0] // batch_size), first, targets.shape[0], resume.path)
    starts = range(first, targets.shape[0], batch_size)
    for i, start in enumerate(starts):
        chunk = slice(start, start + batch_size)
        tokens, losses, snaps, skipped = _optimise(
            targets[chunk].to(device),
            init[chunk],
            encode,
            steps=steps,
            learning_rate=learning_rate,
            weight_decay=weight_decay,
            precision=precision,
            desc=f"{desc} {i + 1}/{len(starts)}",
            progress=progress,
            snapshots=snapshots,
        )
        out_tokens.append(tokens)
        out_losses.append(losses)
        out_snaps.append(snaps)
        out_skipped.append(skipped)
        if skipped.any():
            log.warning("%s batch %d/%d: the fp16 loss scaler skipped %d step(s) of %d sample(s) (overflows; each "
                        "sample's own steps only)", desc, i + 1, len(starts), int(skipped.sum()),
                        int((skipped > 0).sum()))
        if resume is not None and start + batch_size < targets.shape[0] and (i + 1) % resume.every == 0:
            resume.save(torch.cat(out_tokens), torch.cat(out_losses), torch.cat(out_snaps), torch.cat(out_skipped))
    if stats is not None:
        stats["skipped_steps"] = (torch.cat(out_skipped) if out_skipped
                                  else torch.zeros(0, dtype=torch.long))
    return torch.cat(out_tokens), torch.cat(out_losses), torch.cat(out_snaps)


def oti(
    image_features: torch.Tensor,
    clip_model: CLIPWrapper,
    *,
    template_sentence: str = schema_default("inversion.oti.template"),
    num_pseudo_tokens: int = schema_default("inversion.oti.num_pseudo_tokens"),
    steps: int = schema_default("inversion.oti.steps"),
    learning_rate: float = schema_default("inversion.oti.learning_rate"),
    weight_decay: float = schema_default("inversion.oti.weight_decay"),
    seed: int | None = None,
    precision: str = schema_default("inversion.precision"),
    batch_size: int | str | None = None,
    progress: bool = True,
    init: torch.Tensor | None = None,
    resume: "ShardResume | None" = None,
    snapshots: Sequence[int] = (),
    compiled: bool = False,
    stats: dict | None = None,
) -> tuple[torch.Tensor, ...]:
    """Optimisation-based textual inversion of image features.

    Args:
        image_features: ``[B, D]`` target image features (normalised inside).
        clip_model: a frozen wrapper from :func:`crossgap.load_clip`.
        template_sentence: text with one ``{}``, replaced by ``num_pseudo_tokens`` placeholders.
        precision: autocast of the optimisation on CUDA: ``fp16`` with a GradScaler (the reference's
            choice), ``bf16`` (no scaler) or ``fp32``; the CPU optimises in fp32 always.
        batch_size: samples optimised together (memory only; results do not depend on it);
            "auto": the largest that fits (:func:`crossgap.runtime.batch_size.auto_batch_size`).
        init: initial tokens ``[B, R, W_text]`` instead of draws from ``seed`` (e.g. a shard's
            slice of :func:`initial_tokens` for the whole set, so sharding cannot change results).
        resume: a :class:`crossgap.resume.ShardResume`: finished batches are saved to it and, after
            an interruption, read back, so the run continues at the first unfinished batch.
        snapshots: steps (``0 < s < steps``) after which the tokens are also kept; the final tokens
            are those of the same run without snapshots.
        stats: a dict that receives ``"skipped_steps"`` ``[B]`` (int64): steps each target skipped because
            its fp16 gradient overflowed (per-sample loss scaling, module docstring; zeros elsewhere).
        compiled: ``torch.compile`` the per-step text encoder (dynamic batch size): equal up to float
            rounding, ~17% faster per step on a 2-core CPU (ViT-B/32, batch 16) after a one-off compile
            of ~40 s, so worth it only for long runs (``benchmarks/inversion.py --compile``).

    Returns:
        ``(pseudo_tokens [B, R, W_text], losses [B, steps])``, and ``snapshot_tokens [B, S, R, W_text]``
        as a third item when ``snapshots`` are given.
    """
    # Causal towers: the template prefix before the first placeholder is encoded once, each step
    # runs only the placeholders up to the pooled end-of-text token (crossgap.models.prefix).
    encode = clip_model.template_encoder(
        clip_model.tokenize_template(template_sentence, num_pseudo_tokens), num_pseudo_tokens
    )
    if compiled:
        encode = torch.compile(encode, dynamic=True)
    if batch_size == "auto":
        batch_size = auto_batch_size(
            "oti", clip_model, image_features.shape[0],
            num_pseudo_tokens=num_pseudo_tokens, template_sentence=template_sentence,
            cuda_step=lambda targets: oti(targets, clip_model, template_sentence=template_sentence,
                                          num_pseudo_tokens=num_pseudo_tokens, steps=1, seed=0, precision=precision,
                                          progress=False),
        )
    out = _batched_inversion(
        image_features,
        clip_model,
        clip_model.text_token_embedding_dim,
        num_pseudo_tokens,
        encode,
        steps=steps,
        learning_rate=learning_rate,
        weight_decay=weight_decay,
        seed=seed,
        precision=precision,
        batch_size=batch_size,
        desc="OTI",
        progress=progress,
        init=init,
        resume=resume,
        snapshots=snapshots,
        stats=stats,
    )
    return out if snapshots else out[:2]


def ovi(
    text_features: torch.Tensor,
    clip_model: CLIPWrapper,
    *,
    num_pseudo_tokens: int = schema_default("models.*.ovi_tokens"),
    steps: int = schema_default("inversion.ovi.steps"),
    learning_rate: float = schema_default("inversion.ovi.learning_rate"),
    weight_decay: float = schema_default("inversion.ovi.weight_decay"),
    seed: int | None = None,
    precision: str = schema_default("inversion.precision"),
    batch_size: int | str | None = None,
    progress: bool = True,
    init: torch.Tensor | None = None,
    resume: "ShardResume | None" = None,
    snapshots: Sequence[int] = (),
    stats: dict | None = None,
) -> tuple[torch.Tensor, ...]:
    """Optimisation-based visual inversion of text features.

    Args:
        text_features: ``[B, D]`` target text features (normalised inside).
        num_pseudo_tokens: P pseudo patches, repeated over all patch positions.
        batch_size: as for :func:`oti` ("auto": the largest that fits).
        init: initial tokens ``[B, P, W_vis]`` instead of draws from ``seed``.
        precision: as for :func:`oti` (``fp16`` + GradScaler on CUDA by default; fp32 on the CPU).
        resume, snapshots, stats: as for :func:`oti`.

    Returns:
        ``(pseudo_tokens [B, P, W_vis], losses [B, steps])``, and ``snapshot_tokens [B, S, P, W_vis]``
        as a third item when ``snapshots`` are given.
    """
    width = clip_model.visual_token_embedding_dim  # raises a clear error for ResNet towers
    if batch_size == "auto":
        batch_size = auto_batch_size(
            "ovi", clip_model, text_features.shape[0], num_pseudo_tokens=num_pseudo_tokens,
            cuda_step=lambda targets: ovi(targets, clip_model, num_pseudo_tokens=num_pseudo_tokens, steps=1, seed=0,
                                          precision=precision, progress=False),
        )
    out = _batched_inversion(
        text_features,
        clip_model,
        width,
        num_pseudo_tokens,
        clip_model.encode_image_with_pseudo_tokens,
        steps=steps,
        learning_rate=learning_rate,
        weight_decay=weight_decay,
        seed=seed,
        precision=precision,
        batch_size=batch_size,
        desc="OVI",
        progress=progress,
        init=init,
        resume=resume,
        snapshots=snapshots,
        stats=stats,
    )
    return out if snapshots else out[:2]


@torch.no_grad()
def oti_features(
    pseudo_tokens: torch.Tensor,
    clip_model: CLIPWrapper,
    *,
    template_sentence: str = schema_default("inversion.oti.template"),
    batch_size: int = schema_default("features.batch_size"),
) -> torch.Tensor:
    """Re-encode OTI tokens ``[B, R, W_text]`` through the text tower: features ``[B, D]`` (fp32, CPU)."""
    num_tokens = pseudo_tokens.shape[1]
    encode = clip_model.template_encoder(clip_model.tokenize_template(template_sentence, num_tokens), num_tokens)
    chunks = [encode(part.to(clip_model.device)).float().cpu() for part in pseudo_tokens.split(batch_size)]
    return torch.cat(chunks) if chunks else torch.empty(0)


@torch.no_grad()
def ovi_features(pseudo_tokens: torch.Tensor, clip_model: CLIPWrapper, *,
                 batch_size: int = schema_default("features.batch_size")) -> torch.Tensor:
    """Re-encode OVI tokens ``[B, P, W_vis]`` through the vision tower: features ``[B, D]`` (fp32, CPU)."""
    chunks = [
        clip_model.encode_image_with_pseudo_tokens(part.to(clip_model.device)).float().cpu()
        for part in pseudo_tokens.split(batch_size)
    ]
    return torch.cat(chunks) if chunks else torch.empty(0)
