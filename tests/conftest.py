"""Shared fixtures: tiny random-init models of every supported tower type, built offline.

Models are registered from ``tests/model_configs`` (open_clip) or built with the ``clip``
package's own classes (OpenAI), saved to disk, and loaded back through ``crossgap.load_clip``
exactly as real checkpoints would be.
"""

from __future__ import annotations

import logging
from pathlib import Path

import open_clip
import pytest
import torch

import crossgap.models  # noqa: F401  (registers crossgap's model configs)

TEST_CONFIGS = Path(__file__).parent / "model_configs"
open_clip.add_model_config(TEST_CONFIGS)

torch.set_num_threads(2)
logging.getLogger("root").setLevel(logging.ERROR)  # open_clip warns about random init via the root logger


def build_openai_clip(vit: bool = True, *, width: int = 64, layers: int = 2, patch: int = 8,
                      resolution: int = 32, text_width: int = 64, embed_dim: int = 32,
                      context_length: int = 77) -> torch.nn.Module:
    """A random-init ``clip.model.CLIP`` (ViT or ResNet vision tower) with OpenAI's layout."""
    from clip.model import CLIP

    torch.manual_seed(0)
    model = CLIP(
        embed_dim=embed_dim,
        image_resolution=resolution,
        vision_layers=layers if vit else (1, 1, 1, 1),
        vision_width=width,
        vision_patch_size=patch if vit else None,
        context_length=context_length,
        vocab_size=49408,
        transformer_width=text_width,
        transformer_heads=max(text_width // 64, 1),
        transformer_layers=layers,
    )
    # OpenAI's checkpoints ship fp16 weights; load_clip must return fp32 regardless.
    for p in model.parameters():
        torch.nn.init.normal_(p, std=0.02) if p.dim() > 1 else None
    return model


@pytest.fixture(scope="session")
def openai_tiny_checkpoint(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("ckpt") / "openai-tiny.pt"
    torch.save(build_openai_clip().state_dict(), path)
    return path


@pytest.fixture(scope="session")
def open_clip_tiny_checkpoint(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("ckpt") / "open-clip-tiny.pt"
    torch.manual_seed(1)
    model = open_clip.create_model("test-vit-tiny")
    torch.save({"epoch": 1, "name": "test-vit-tiny", "state_dict": model.state_dict()}, path)
    return path


@pytest.fixture(scope="session")
def tiny_models(openai_tiny_checkpoint, open_clip_tiny_checkpoint):
    """One loaded wrapper per supported tower type, keyed by a short id."""
    from crossgap import load_clip

    return {
        "openai-vit": load_clip("ViT-tiny/8", openai_tiny_checkpoint, backend="openai")[0],
        "open_clip-vit": load_clip("test-vit-tiny", open_clip_tiny_checkpoint)[0],
        "open_clip-customtext": load_clip("test-customtext-tiny")[0],
    }
