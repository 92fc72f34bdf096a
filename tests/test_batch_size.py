"""The automatic inversion batch size: the memory fit with fake figures, and the CPU probe."""

from __future__ import annotations

import pytest
import torch

from crossgap import oti
from crossgap.runtime import batch_size as bs

MIB = 2**20


def linear_memory(fixed: int, per_sample: int):
    calls = []

    def peak(batch: int) -> int:
        calls.append(batch)
        return fixed + batch * per_sample

    return peak, calls


def test_largest_batch_that_fits():
    peak, calls = linear_memory(fixed=100 * MIB, per_sample=10 * MIB)
    # 0.85 * 1000 MiB = 850 MiB; minus 100 MiB fixed -> 75 samples -> 72 (a multiple of 8)
    assert bs.largest_batch(10_000, 1000 * MIB, peak) == 72
    assert calls == [4, 8]
    assert (100 * MIB + 72 * 10 * MIB) <= 0.85 * 1000 * MIB < (100 * MIB + 80 * 10 * MIB)


def test_never_more_than_the_samples_or_the_cap():
    peak, _ = linear_memory(0, MIB)
    assert bs.largest_batch(37, 10**6 * MIB, peak) == 37
    assert bs.largest_batch(10_000, 10**6 * MIB, peak, cap=100) == 100  # bounds are taken as they are
    assert bs.largest_batch(5, 10**6 * MIB, peak, cap=100) == 5


def test_at_least_one_and_small_batches_unrounded():
    peak, _ = linear_memory(50 * MIB, 20 * MIB)
    assert bs.largest_batch(100, 10 * MIB, peak) == 1  # nothing fits: still make progress
    assert bs.largest_batch(100, 200 * MIB, peak, headroom=1.0) == 7  # (200 - 50) / 20 = 7.5


def test_flat_memory_takes_everything():
    assert bs.largest_batch(300, 1000, lambda b: 5000) == 300


def test_bad_probes():
    with pytest.raises(ValueError, match="increasing"):
        bs.largest_batch(10, 1000, lambda b: b, probes=(8, 8))
    with pytest.raises(ValueError, match="num_samples"):
        bs.largest_batch(0, 1000, lambda b: b)


def test_saved_bytes_grow_with_the_batch(tiny_models):
    model = tiny_models["open_clip-vit"]
    sizes = []
    for batch in (2, 4, 8):
        tokens = torch.zeros(batch, 1, model.visual_token_embedding_dim, requires_grad=True)
        sizes.append(bs.saved_bytes(lambda: model.encode_image_with_pseudo_tokens(tokens)))
    # activations are linear in the batch (parameters, saved by reference, cancel in the difference)
    assert sizes[0] < sizes[1] < sizes[2]
    assert sizes[2] - sizes[1] == pytest.approx(2 * (sizes[1] - sizes[0]), rel=0.05)
    # an activation [batch, 17 positions, 48] is saved at least once per block
    assert sizes[2] - sizes[1] >= 4 * 17 * 48 * 4 * len(model.visual.blocks)


def test_auto_batch_on_the_cpu(tiny_models, monkeypatch):
    model = tiny_models["open_clip-vit"]
    assert bs.auto_batch_size("ovi", model, 1000) == bs.CPU_MAX_BATCH
    assert bs.auto_batch_size("oti", model, 10) == 10
    monkeypatch.setattr(bs, "_cpu_available_bytes", lambda: 1)
    assert bs.auto_batch_size("oti", model, 1000) == 1
    with pytest.raises(ValueError, match="oti"):
        bs.auto_batch_size("xyz", model, 10)


def test_oti_accepts_auto(tiny_models, monkeypatch):
    model = tiny_models["open_clip-vit"]
    chosen = []
    monkeypatch.setattr("crossgap.inversion.auto_batch_size", lambda *a, **k: chosen.append(a[2]) or 2)
    with torch.no_grad():
        feats = model.encode_image(torch.randn(5, 3, 32, 32, generator=torch.Generator().manual_seed(0)))
    tokens, losses = oti(feats, model, steps=3, seed=0, batch_size="auto", progress=False)
    assert chosen == [5] and tokens.shape[0] == 5
    whole, _ = oti(feats, model, steps=3, seed=0, progress=False)
    torch.testing.assert_close(tokens, whole, rtol=1e-5, atol=1e-6)
