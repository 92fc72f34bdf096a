"""Tiny CLIP pretraining from scratch on the Synthetic dataset (the embedded default model).

The model is a plain open_clip :class:`open_clip.CLIP` built from the registered
``crossgap-tiny`` config (``crossgap/models/model_configs``).  Training uses the
symmetric image-text contrastive (InfoNCE) loss with a learnable or fixed
temperature, plus an optional SLIP-style intra-modal term: SimCLR NT-Xent between
two augmented views (random shift, horizontal flip, pixel noise) of each image,
computed on a small MLP head over the image embedding (the head is training-only
and not saved).

Images are passed through open_clip's own validation preprocess once, so training
inputs are exactly the tensors that feature extraction later computes from the
same files.  The checkpoint is saved in open_clip's format so that
``open_clip.create_model_and_transforms(model_name, pretrained=<checkpoint>)``
restores the trained model exactly.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import logging
import math
import os
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import open_clip
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn
from tqdm import tqdm

from crossgap.config import schema_default
from crossgap.metrics.zeroshot import build_classifier, evaluate_zero_shot
from crossgap.synthetic_generator import DATASET_DIRNAME, SPLIT_FILENAME
from crossgap.utils import atomic_path, autocast_dtype, resolve_device

log = logging.getLogger(__name__)

DEFAULT_MODEL = "crossgap-tiny"
MODEL_CONFIG_DIR = Path(__file__).resolve().parent / "models" / "model_configs"
INTRAMODAL_TEMPERATURE = 0.1  # SimCLR / SLIP default
PROMPT_TEMPLATE = "a photo of a {}."


def register_model_configs() -> None:
    """Register crossgap's open_clip model configs (idempotent)."""
    wanted = {p.stem for p in MODEL_CONFIG_DIR.glob("*.json")}
    if not wanted.issubset(open_clip.list_models()):
        open_clip.add_model_config(MODEL_CONFIG_DIR)


def resolve_data_dir(data_root: str | os.PathLike) -> Path:
    """Accept either the ``synthetic`` directory itself or the root that contains it."""
    root = Path(data_root)
    for candidate in (root, root / DATASET_DIRNAME):
        if (candidate / SPLIT_FILENAME).is_file():
            return candidate
    raise FileNotFoundError(f"no {SPLIT_FILENAME} under {root} or {root / DATASET_DIRNAME}")


def load_split(data_root: str | os.PathLike, split: str) -> list[tuple[str, int, str]]:
    """The ``(rel_path, label, classname)`` entries of ``split`` of the Synthetic layout."""
    data_dir = resolve_data_dir(data_root)
    entries = json.loads((data_dir / SPLIT_FILENAME).read_text())[split]
    return [(str(rel), int(label), str(name)) for rel, label, name in entries]


def load_images(data_dir: Path, rel_paths: Sequence[str], preprocess: Callable) -> torch.Tensor:
    """Apply open_clip's ``preprocess`` to each image file; returns ``(N, 3, H, W)`` float32."""
    tensors = []
    for rel in tqdm(rel_paths, desc="load images", unit="img", leave=False):
        with Image.open(data_dir / "images" / rel) as im:
            tensors.append(preprocess(im.convert("RGB")))
    return torch.stack(tensors)


def clip_loss(image_features: torch.Tensor, text_features: torch.Tensor, logit_scale: torch.Tensor) -> torch.Tensor:
    """Symmetric InfoNCE.  Features ``(B, D)`` L2-normalised, ``logit_scale`` scalar (= 1/tau)."""
    logits = logit_scale * image_features @ text_features.T  # (B, B)
    target = torch.arange(logits.shape[0], device=logits.device)
    return 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target))


def nt_xent(z1: torch.Tensor, z2: torch.Tensor, temperature: float = INTRAMODAL_TEMPERATURE) -> torch.Tensor:
    """SimCLR NT-Xent between two views ``(B, D)``; the positive of row i is row i of the other view."""
    z = F.normalize(torch.cat([z1, z2]), dim=-1)  # (2B, D)
    sim = z @ z.T / temperature
    sim.fill_diagonal_(float("-inf"))
    b = z1.shape[0]
    target = torch.cat([torch.arange(b, 2 * b), torch.arange(0, b)]).to(z.device)
    return F.cross_entropy(sim, target)


def augment(images: torch.Tensor, generator: torch.Generator, max_shift: int = 4, noise_std: float = 0.1) -> torch.Tensor:
    """Random shift (replicate padding), horizontal flip and Gaussian noise on ``(B, 3, H, W)``."""
    b, _, h, w = images.shape
    padded = F.pad(images, (max_shift,) * 4, mode="replicate")
    offs = torch.randint(0, 2 * max_shift + 1, (b, 2), generator=generator).to(images.device)
    flips = (torch.rand(b, generator=generator) < 0.5).to(images.device)
    cols = torch.arange(w, device=images.device)
    ys = offs[:, :1] + torch.arange(h, device=images.device)  # (B, H)
    xs = offs[:, 1:] + torch.where(flips[:, None], cols.flip(0), cols)  # (B, W), reversed = h-flip
    rows_b = torch.arange(b, device=images.device)[:, None, None, None]
    chans = torch.arange(images.shape[1], device=images.device)[None, :, None, None]
    out = padded[rows_b, chans, ys[:, None, :, None], xs[:, None, None, :]]  # (B, C, H, W)
    return out + noise_std * torch.randn(out.shape, generator=generator).to(out.device)


def _param_groups(modules: Sequence[nn.Module], weight_decay: float) -> list[dict[str, Any]]:
    """open_clip's convention: no weight decay on gains, biases, norms and the logit scale."""
    decay, no_decay = [], []
    for module in modules:
        for name, p in module.named_parameters():
            if not p.requires_grad:
                continue
            exclude = p.ndim < 2 or "bn" in name or "ln" in name or "bias" in name or "logit_scale" in name
            (no_decay if exclude else decay).append(p)
    return [{"params": no_decay, "weight_decay": 0.0}, {"params": decay, "weight_decay": weight_decay}]


def _write_csv(path: str | os.PathLike, header: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "w", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(header)
            writer.writerows(rows)


@dataclasses.dataclass(frozen=True)
class TrainData:
    """The train split in memory.

    Attributes:
        images: preprocessed images ``[N, 3, H, W]`` on the training device.
        tokens: ids ``[M, context_length]`` of all captions, image by image, on the training device.
        starts, counts: ``[N]`` (CPU): the first row in ``tokens`` and the number of captions of each image.
    """

    images: torch.Tensor
    tokens: torch.Tensor
    starts: torch.Tensor
    counts: torch.Tensor

    def sample_captions(self, idx: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Ids ``[len(idx), context_length]``: one random caption of each image ``idx`` ``[b]`` (CPU)."""
        pick = self.starts[idx] + (torch.rand(len(idx), generator=generator) * self.counts[idx]).long()
        return self.tokens[pick.to(self.tokens.device)]


def load_train_data(
    data_root: str | os.PathLike, preprocess: Callable, tokenizer: Callable, device: torch.device
) -> TrainData:
    """The train split of the Synthetic layout under ``data_root``, preprocessed and tokenised."""
    data_dir = resolve_data_dir(data_root)
    entries = load_split(data_dir, "train")
    if not entries:
        raise ValueError(f"empty train split in {data_dir}")
    rel_paths = [rel for rel, _, _ in entries]
    captions = json.loads((data_dir / "captions.json").read_text())
    images = load_images(data_dir, rel_paths, preprocess).to(device)
    flat = [c for rel in rel_paths for c in captions[rel]]
    counts = torch.tensor([len(captions[rel]) for rel in rel_paths])
    return TrainData(images, tokenizer(flat).to(device), torch.cumsum(counts, 0) - counts, counts)


def _init_temperature(model: nn.Module, temperature: float | None) -> None:
    """``None``: learnable tau initialised at 0.07; a float: tau fixed (the logit scale frozen)."""
    if temperature is not None and temperature <= 0:
        raise ValueError("temperature must be positive")
    with torch.no_grad():
        model.logit_scale.fill_(math.log(1 / (0.07 if temperature is None else temperature)))
    if temperature is not None:
        model.logit_scale.requires_grad_(False)


def cosine_lr(step: int, lr: float, warmup: int, total_steps: int) -> float:
    """Learning rate of ``step`` (0-based): linear warm-up over ``warmup`` steps, then cosine decay to 0."""
    if step < warmup:
        return lr * (step + 1) / warmup
    return 0.5 * lr * (1 + math.cos(math.pi * (step - warmup) / max(1, total_steps - warmup)))


@dataclasses.dataclass
class _Trainer:
    """One training run's state; :meth:`epoch` runs the steps of one epoch."""

    model: nn.Module
    head: nn.Module | None  # SimCLR head over image embeddings (intramodal_weight > 0), not saved
    optimizer: torch.optim.Optimizer
    data: TrainData
    generator: torch.Generator
    device: torch.device
    amp: torch.dtype | None  # autocast dtype (None: fp32)
    batch_size: int
    lr: float
    warmup: int
    total_steps: int
    intramodal_weight: float
    learn_temperature: bool
    step: int = 0
    step_rows: list[tuple[int, int, float]] = dataclasses.field(default_factory=list)

    def loss(self, batch: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        """Contrastive loss of images ``[b, 3, H, W]`` and their caption ids ``[b, L]`` (+ the SimCLR term)."""
        views = None
        if self.head is not None:
            views = (augment(batch.cpu(), self.generator).to(self.device),
                     augment(batch.cpu(), self.generator).to(self.device))
        with torch.autocast(self.device.type, dtype=self.amp, enabled=self.amp is not None):
            img_f = self.model.encode_image(batch, normalize=True)
            txt_f = self.model.encode_text(ids, normalize=True)
            loss = clip_loss(img_f, txt_f, self.model.logit_scale.exp())
            if self.head is not None and views is not None:
                z1 = self.head(self.model.encode_image(views[0]))
                z2 = self.head(self.model.encode_image(views[1]))
                loss = loss + self.intramodal_weight * nt_xent(z1.float(), z2.float())
        return loss

    def train_step(self, idx: torch.Tensor) -> float:
        """One optimiser step on the images ``idx`` ``[b]`` (CPU); returns the loss."""
        ids = self.data.sample_captions(idx, self.generator)
        for group in self.optimizer.param_groups:
            group["lr"] = cosine_lr(self.step, self.lr, self.warmup, self.total_steps)
        loss = self.loss(self.data.images[idx.to(self.device)], ids)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        if self.learn_temperature:
            with torch.no_grad():
                self.model.logit_scale.clamp_(0, math.log(100))
        return float(loss.detach())

    def epoch(self, epoch: int, bar: tqdm) -> tuple[int, float, float]:
        """Run one epoch (shuffled, last partial batch dropped): ``(epoch, mean loss, seconds)``."""
        t0 = time.perf_counter()
        perm = torch.randperm(self.data.images.shape[0], generator=self.generator)
        losses = []
        for s in range(self.data.images.shape[0] // self.batch_size):
            value = self.train_step(perm[s * self.batch_size : (s + 1) * self.batch_size])
            losses.append(value)
            self.step_rows.append((epoch, self.step, value))
            self.step += 1
            bar.update(1)
            bar.set_postfix(epoch=epoch, loss=f"{value:.4f}")
        seconds = time.perf_counter() - t0
        mean_loss = sum(losses) / max(1, len(losses))
        log.info("epoch %d: loss %.4f (%.1f s)", epoch, mean_loss, seconds)
        return epoch, mean_loss, seconds


def _save_run(
    trainer: _Trainer,
    out_checkpoint: str | os.PathLike,
    summary: dict[str, Any],
    epoch_rows: Sequence[tuple[int, float, float]],
    loss_csv: str | os.PathLike | None,
    epoch_csv: str | os.PathLike | None,
) -> None:
    """The open_clip checkpoint (``epoch``, ``name``, ``state_dict``, ``crossgap`` summary) and the loss CSVs."""
    state_dict = {k: v.detach().cpu() for k, v in trainer.model.state_dict().items()}
    with atomic_path(out_checkpoint) as tmp:
        torch.save({"epoch": summary["epochs"], "name": summary["model_name"], "state_dict": state_dict,
                    "crossgap": summary}, tmp)
    if loss_csv is not None:
        _write_csv(loss_csv, ("epoch", "step", "loss"), trainer.step_rows)
    if epoch_csv is not None:
        _write_csv(epoch_csv, ("epoch", "loss", "seconds"), epoch_rows)
    log.info(
        "saved %s: final loss %.4f, %.1f s/epoch", out_checkpoint, summary["final_loss"], summary["seconds_per_epoch"]
    )


def train_tiny_clip(
    data_root: str | os.PathLike,
    out_checkpoint: str | os.PathLike,
    *,
    model_name: str = DEFAULT_MODEL,
    epochs: int = schema_default("pretrain.epochs"),
    batch_size: int = schema_default("pretrain.batch_size"),
    lr: float = schema_default("pretrain.learning_rate"),
    weight_decay: float = schema_default("pretrain.weight_decay"),
    warmup_fraction: float = 0.05,
    temperature: float | None = schema_default("pretrain.temperature"),
    intramodal_weight: float = schema_default("pretrain.intramodal_weight"),
    seed: int = schema_default("pretrain.seed"),
    device: str | torch.device | None = None,
    loss_csv: str | os.PathLike | None = None,
    epoch_csv: str | os.PathLike | None = None,
    num_threads: int | None = None,
) -> dict[str, Any]:
    """Train ``model_name`` from scratch on the train split of the Synthetic layout.

    Each step takes ``batch_size`` images (shuffled, last partial batch dropped) and
    one random caption per image.  AdamW with linear warm-up then cosine decay.

    ``temperature``: ``None`` learns tau (init 0.07, clamped to tau >= 0.01 as in
    open_clip); a float fixes tau.  ``intramodal_weight`` > 0 adds the SLIP-style
    SimCLR term.  ``loss_csv`` gets one ``epoch,step,loss`` row per step,
    ``epoch_csv`` one ``epoch,loss,seconds`` row per epoch.  Deterministic given
    ``seed`` on CPU (for a fixed thread count).

    Returns a JSON-serialisable summary (final loss, seconds per epoch, ...).
    """
    register_model_configs()
    dev = resolve_device(device)
    old_threads = torch.get_num_threads()
    if num_threads is not None:
        torch.set_num_threads(num_threads)
    try:
        torch.manual_seed(seed)
        model, _, preprocess = open_clip.create_model_and_transforms(model_name, device=dev)
        data = load_train_data(data_root, preprocess, open_clip.get_tokenizer(model_name), dev)
        _init_temperature(model, temperature)
        modules: list[nn.Module] = [model]
        head: nn.Module | None = None
        if intramodal_weight > 0:
            dim = model.text_projection.shape[1]
            head = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim)).to(dev)
            modules.append(head)
        optimizer = torch.optim.AdamW(_param_groups(modules, weight_decay), lr=lr, betas=(0.9, 0.98), eps=1e-6)
        n = data.images.shape[0]
        bs = min(batch_size, n)
        total_steps = max(1, epochs * (n // bs))
        trainer = _Trainer(
            model, head, optimizer, data, torch.Generator().manual_seed(seed), dev, autocast_dtype(dev), bs, lr,
            warmup=max(1, int(warmup_fraction * total_steps)), total_steps=total_steps,
            intramodal_weight=intramodal_weight, learn_temperature=temperature is None,
        )
        model.train()
        with tqdm(total=total_steps, desc="pretrain", unit="step") as bar:
            epoch_rows = [trainer.epoch(epoch, bar) for epoch in range(epochs)]
        model.eval()
        summary: dict[str, Any] = {
            "model_name": model_name,
            "checkpoint": str(out_checkpoint),
            "num_train": n,
            "epochs": epochs,
            "steps": trainer.step,
            "batch_size": bs,
            "lr": lr,
            "weight_decay": weight_decay,
            "temperature": temperature,
            "final_temperature": float(1.0 / model.logit_scale.detach().exp()),
            "intramodal_weight": intramodal_weight,
            "seed": seed,
            "device": str(dev),
            "num_threads": torch.get_num_threads(),
            "final_loss": epoch_rows[-1][1] if epoch_rows else float("nan"),
            "epoch_losses": [row[1] for row in epoch_rows],
            "seconds_per_epoch": sum(r[2] for r in epoch_rows) / max(1, len(epoch_rows)),
            "total_train_seconds": sum(r[2] for r in epoch_rows),
        }
        _save_run(trainer, out_checkpoint, summary, epoch_rows, loss_csv, epoch_csv)
        return summary
    finally:
        torch.set_num_threads(old_threads)


@torch.no_grad()
def zero_shot_accuracy(
    model: nn.Module,
    tokenizer: Callable,
    preprocess: Callable,
    data_root: str | os.PathLike,
    *,
    split: str = "test",
    template: str = PROMPT_TEMPLATE,
    batch_size: int = 256,
    device: str | torch.device | None = None,
) -> float:
    """Top-1 zero-shot accuracy (in %) on ``split`` with one prompt per class from ``classnames.txt``.

    Image features ``[N, D]`` against the classifier ``[C, D]`` of
    :func:`crossgap.metrics.zeroshot.build_classifier` (ties: lower class index), scored by
    :func:`crossgap.metrics.zeroshot.evaluate_zero_shot`; 0.0 for an empty split.
    """
    dev = resolve_device(device)
    data_dir = resolve_data_dir(data_root)
    names = (data_dir / "classnames.txt").read_text().splitlines()
    entries = load_split(data_dir, split)
    model.eval()
    text = model.encode_text(tokenizer([template.format(c) for c in names]).to(dev), normalize=True)  # (C, D)
    chunks = []
    for i in range(0, len(entries), batch_size):
        images = load_images(data_dir, [rel for rel, _, _ in entries[i : i + batch_size]], preprocess).to(dev)
        chunks.append(model.encode_image(images, normalize=True))
    features = torch.cat(chunks) if chunks else text.new_empty(0, text.shape[1])  # (N, D)
    labels = torch.tensor([label for _, label, _ in entries], dtype=torch.long)
    result = evaluate_zero_shot(features, build_classifier(text, num_classes=len(names)), labels, device=dev)
    return 100.0 * result["top1_correct"] / max(1, len(entries))
