"""Towers of OpenAI CLIP (the ``clip`` package): ``clip.model.CLIP`` text, ``VisionTransformer`` vision.

A ``ModifiedResNet`` vision module has no registered tower: OVI raises
:class:`~crossgap.models.base.PatchesUnsupported`, OTI still works.  The SLIP family
(:mod:`crossgap.models.slip`) reuses :class:`OpenAITextTower` for its CLIP-style text side.
"""

from __future__ import annotations

import clip.model as clip_model
import torch
from torch import nn

from crossgap.models.base import TextTower
from crossgap.models.blocks import is_mha_block, run_blocks
from crossgap.models.prefix import CausalStack
from crossgap.models.projection import LinearProjection, from_parameter, register_projection
from crossgap.models.towers import (
    ConvViTTower,
    eot_length,
    pool_text,
    register_text_tower,
    register_vision_tower,
)


@register_text_tower(clip_model.CLIP)
class OpenAITextTower(TextTower):
    """Text tower of ``clip.model.CLIP``: causal, pooled at the end-of-text (argmax) token."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.m = model
        self.width = model.token_embedding.weight.shape[1]
        self.context_length = model.positional_embedding.shape[0]
        self.truncatable = True
        mask = model.transformer.resblocks[0].attn_mask
        self.register_buffer("causal_mask", mask.clone() if mask is not None else None, persistent=False)

    def embed_tokens(self, ids: torch.Tensor) -> torch.Tensor:
        return self.m.token_embedding(ids).type(self.m.dtype)

    def pool_length(self, ids: torch.Tensor) -> int:
        return eot_length(ids, "argmax", None)

    def causal_stack(self) -> CausalStack | None:
        blocks = list(self.m.transformer.resblocks)
        if self.causal_mask is None or not all(is_mha_block(b) for b in blocks):
            return None
        return CausalStack(self.m.positional_embedding, blocks, self._finish, self.m.dtype)

    def _finish(self, pooled: torch.Tensor) -> torch.Tensor:
        """Pooled hidden state ``[B, W]`` → features ``[B, D]``."""
        return self.m.ln_final(pooled).type(pooled.dtype) @ self.m.text_projection

    def forward_embeddings(self, embeddings: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        length = embeddings.shape[1]
        x = embeddings + self.m.positional_embedding[:length].type(embeddings.dtype)
        mask = None if self.causal_mask is None else self.causal_mask[:length, :length].to(x.dtype)
        x = x.permute(1, 0, 2)  # NLD -> LND
        for block in self.m.transformer.resblocks:
            x = x + block.attn(*([block.ln_1(x)] * 3), need_weights=False, attn_mask=mask)[0]
            x = x + block.mlp(block.ln_2(x))
        x = x.permute(1, 0, 2)
        x = self.m.ln_final(x).type(embeddings.dtype)
        return pool_text(x, ids, "argmax", None) @ self.m.text_projection


@register_vision_tower(clip_model.VisionTransformer)
class OpenAIVisionTower(ConvViTTower):
    """ViT vision tower of ``clip.model.CLIP`` (class token, ln_pre, transformer, ln_post on CLS, proj)."""

    cast_images = True

    def forward_patches(self, patches: torch.Tensor) -> torch.Tensor:
        v = self.v
        x = v.ln_pre(self.with_class_token(patches))
        if self.blocks is not None:  # batch-first, last block for the class token only
            x = run_blocks(self.blocks, x, last_rows=slice(0, 1))
        else:
            x = v.transformer(x.permute(1, 0, 2)).permute(1, 0, 2)
        x = v.ln_post(x[:, 0, :])
        return x @ v.proj if v.proj is not None else x


@register_projection("text", clip_model.CLIP)
def text_projection(model: nn.Module) -> LinearProjection:
    """``ln_final(pooled) @ text_projection`` (``[W_text, D]``)."""
    return from_parameter(model, "text_projection", "text_projection")


@register_projection("image", clip_model.VisionTransformer)
def vision_projection(visual: nn.Module) -> LinearProjection:
    """``ln_post(class token) @ visual.proj`` (``[W_vis, D]``)."""
    return from_parameter(visual, "proj", "visual.proj")
