"""Builders of tiny random-init models shared by tests (importable by name, unlike conftest modules)."""

from __future__ import annotations

import torch


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
