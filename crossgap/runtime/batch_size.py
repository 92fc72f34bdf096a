"""The inversion batch size: as large as memory allows (results do not depend on it).

OTI and OVI optimise every sample independently (:mod:`crossgap.inversion`), so the batch size
only trades memory for speed.  On a GPU the largest batch that fits is the fastest;
:func:`auto_batch_size` chooses it in three steps:

1. measure the peak memory of one optimisation step at two small probe batches (``probes``);
2. fit ``peak(b) = fixed + b * per_sample`` through them (activations grow linearly with the batch);
3. take the largest ``b`` with ``peak(b) <= headroom * free`` (``free``: memory free on the device
   with the model loaded; ``headroom`` leaves room for fragmentation), rounded down to a multiple
   of 8, at most ``num_samples`` (and ``cap``).

:func:`largest_batch` is steps 2–3 as a pure function of the probe figures (tested with fake
ones).  On CUDA the probe reads ``torch.cuda.max_memory_allocated``; on the CPU it sums the bytes
autograd saves for the backward pass (:func:`saved_bytes`) against ``MemAvailable``, and the
batch is capped at :data:`CPU_MAX_BATCH`: beyond a few dozen samples a CPU step is compute bound
and larger batches only cost memory.
"""

from __future__ import annotations

import logging
import math
from typing import Callable

import torch

log = logging.getLogger(__name__)

CPU_MAX_BATCH = 64
HEADROOM = 0.85
MULTIPLE = 8


def largest_batch(
    num_samples: int,
    free_bytes: int,
    peak_bytes: Callable[[int], int],
    *,
    probes: tuple[int, int] = (4, 8),
    headroom: float = HEADROOM,
    multiple: int = MULTIPLE,
    cap: int | None = None,
) -> int:
    """The largest batch whose step fits in ``headroom * free_bytes``, from two probe measurements.

    Args:
        num_samples: samples to invert (the batch never exceeds it).
        free_bytes: memory available to the step.
        peak_bytes: ``b`` → peak bytes one optimisation step at batch ``b`` adds (called for ``probes``).
        multiple: round down to a multiple of this when the batch is at least that large.
        cap: an upper bound besides ``num_samples``.

    Returns:
        A batch size in ``[1, min(num_samples, cap)]``.
    """
    if num_samples < 1:
        raise ValueError("num_samples must be >= 1")
    small, large = probes
    if not 0 < small < large:
        raise ValueError(f"probes must be two increasing batch sizes, got {probes}")
    upper = num_samples if cap is None else max(1, min(num_samples, cap))
    at_small, at_large = peak_bytes(small), peak_bytes(large)
    per_sample = (at_large - at_small) / (large - small)
    fixed = at_small - small * per_sample
    budget = headroom * free_bytes - max(fixed, 0.0)
    # per_sample <= 0: memory does not grow measurably with the batch
    fit = math.inf if per_sample <= 0 else math.floor(budget / per_sample)
    if fit >= upper:
        batch = upper
    else:
        batch = max(1, int(fit) - (int(fit) % multiple if fit >= multiple else 0))
    log.info(
        "batch size %d: %.1f MiB per sample, %.1f MiB fixed, %.1f MiB free (headroom %.2f)",
        batch, per_sample / 2**20, fixed / 2**20, free_bytes / 2**20, headroom,
    )
    return batch


def saved_bytes(run: Callable[[], torch.Tensor]) -> int:
    """Bytes of the tensors autograd saves while ``run()`` builds its graph, each storage counted once.

    Parameters and buffers are saved by reference and also counted; they cancel out in
    :func:`largest_batch`'s fit, which only uses the difference between two batches.
    """
    seen: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        seen[storage.data_ptr()] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = run()
    del out
    return sum(seen.values())


def _cpu_available_bytes() -> int:
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 8 * 2**30  # no /proc (not Linux): assume 8 GiB


def _cuda_step_peak(clip_model, step: Callable[[torch.Tensor], object]) -> Callable[[int], int]:
    """``b`` → peak CUDA bytes of ``step`` (one real optimisation step) at batch ``b`` on random targets."""
    device = clip_model.device
    with torch.no_grad():
        dim = clip_model.encode_text(clip_model.tokenizer("x").to(device)).shape[-1]

    def peak_bytes(batch: int) -> int:
        torch.cuda.synchronize(device)
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        step(torch.randn(batch, dim, device=device))
        torch.cuda.synchronize(device)
        return torch.cuda.max_memory_allocated(device) - before

    return peak_bytes


def _saved_bytes_probe(method: str, clip_model, num_pseudo_tokens: int, template: str) -> Callable[[int], int]:
    """``b`` → bytes autograd saves for one forward at batch ``b`` (the activations a step keeps)."""
    if method == "oti":
        ids = clip_model.tokenize_template(template, num_pseudo_tokens)
        encode = clip_model.template_encoder(ids, num_pseudo_tokens)
        width = clip_model.text_token_embedding_dim
    else:
        encode = clip_model.encode_image_with_pseudo_tokens
        width = clip_model.visual_token_embedding_dim

    def peak_bytes(batch: int) -> int:
        tokens = torch.zeros(batch, num_pseudo_tokens, width, device=clip_model.device, requires_grad=True)
        return saved_bytes(lambda: encode(tokens))

    return peak_bytes


def auto_batch_size(
    method: str,
    clip_model,
    num_samples: int,
    *,
    num_pseudo_tokens: int = 1,
    template_sentence: str = "a photo of {}",
    headroom: float = HEADROOM,
    cap: int | None = None,
    cuda_step: Callable[[torch.Tensor], object] | None = None,
) -> int:
    """The largest inversion batch for ``method`` ("oti" or "ovi") that fits on the model's device.

    On CUDA the probes run ``cuda_step(targets [b, D])``, one step of the real optimiser
    (:func:`crossgap.inversion.oti` / ``ovi`` pass theirs, so this module needs no import of them),
    on random targets, so autocast, the optimiser state and the template are accounted for; on the
    CPU they count the activations one forward saves (:func:`saved_bytes`).

    Args:
        method: "oti" or "ovi".
        num_samples: samples to invert; the batch never exceeds it.
        cap: an upper bound (on the CPU also :data:`CPU_MAX_BATCH`).
        cuda_step: required on CUDA.
    """
    method = method.lower()
    if method not in ("oti", "ovi"):
        raise ValueError(f"method must be 'oti' or 'ovi', got {method!r}")
    device = clip_model.device
    if device.type == "cuda":
        if cuda_step is None:
            raise ValueError("auto_batch_size on CUDA needs cuda_step: one optimisation step of the inversion")
        peak_bytes = _cuda_step_peak(clip_model, cuda_step)
        free = (
            torch.cuda.mem_get_info(device)[0]
            + torch.cuda.memory_reserved(device)
            - torch.cuda.memory_allocated(device)
        )
    else:
        peak_bytes = _saved_bytes_probe(method, clip_model, num_pseudo_tokens, template_sentence)
        free = _cpu_available_bytes()
        cap = CPU_MAX_BATCH if cap is None else min(cap, CPU_MAX_BATCH)
    return largest_batch(num_samples, free, peak_bytes, headroom=headroom, cap=cap)
