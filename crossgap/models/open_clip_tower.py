"""Towers of open_clip: the text encoder of ``CLIP`` / ``CustomTextCLIP`` and the ``VisionTransformer``.

open_clip models whose vision side is a timm trunk (``TimmModel``: SigLIP, ...) get their vision
tower from :mod:`crossgap.models.timm_tower`; ``ModifiedResNet`` vision modules have none (OVI
raises :class:`~crossgap.models.base.PatchesUnsupported`).
"""

from __future__ import annotations

import open_clip.model as oc_model
import open_clip.transformer as oc_transformer
import torch
from torch import nn

from crossgap.models.base import TextTokensUnsupported, TextTower
from crossgap.models.blocks import is_mha_block, run_blocks
from crossgap.models.prefix import CausalStack
from crossgap.models.towers import (
    ConvViTTower,
    eot_length,
    pool_text,
    register_text_tower,
    register_vision_tower,
)


def _project(x: torch.Tensor, projection: nn.Module | torch.Tensor | None) -> torch.Tensor:
    """``x`` ``[B, W]`` through ``projection`` (an ``nn.Linear`` or a ``[W, D]`` matrix; None: identity)."""
    if projection is None:
        return x
    if isinstance(projection, nn.Linear):
        return projection(x)
    return x @ projection


@register_text_tower(oc_model.CLIP)
class OpenClipTextTower(TextTower):
    """Text encoder of open_clip's ``CLIP`` (fields on the model) or a ``TextTransformer`` module.

    Handles the causal (CLIP) and bidirectional (SigLIP-style, ``no_causal_mask``) variants and the
    'argmax', 'eos', 'first' and 'last' poolings.  Truncation is exact only for a causal mask with
    end-of-text pooling; otherwise the full context is kept.
    """

    def __init__(self, holder: nn.Module) -> None:
        super().__init__()
        if getattr(holder, "cls_emb", None) is not None:
            raise TextTokensUnsupported(
                f"the text tower {type(holder).__name__} appends a CLS embedding (CoCa): not supported by "
                "OpenClipTextTower"
            )
        self.h = holder
        self.width = holder.token_embedding.weight.shape[1]
        self.context_length = holder.positional_embedding.shape[0]
        self.pool_type = getattr(holder, "text_pool_type", None) or getattr(holder, "pool_type")
        self.eos_id = getattr(holder, "text_eos_id", None)
        if self.eos_id is None:
            self.eos_id = getattr(holder, "eos_id", None)
        self.pad_id = getattr(holder, "pad_id", 0)
        self.use_pad_mask = bool(getattr(holder, "use_pad_mask", False))
        self.heads = getattr(holder, "heads", None) or holder.transformer.resblocks[0].attn.num_heads
        causal = getattr(holder, "attn_mask", None) is not None
        self.truncatable = causal and self.pool_type in ("argmax", "eos") and not self.use_pad_mask

    def embed_tokens(self, ids: torch.Tensor) -> torch.Tensor:
        cast = self.h.transformer.get_cast_dtype()
        return self.h.token_embedding(ids).to(cast)

    def pool_length(self, ids: torch.Tensor) -> int:
        return eot_length(ids, self.pool_type, self.eos_id)

    def _attn_mask(self, ids: torch.Tensor, dtype: torch.dtype) -> torch.Tensor | None:
        """Additive mask ``[L, L]`` (causal), ``[B*heads, L, L]`` (padding), or None, for ids ``[B, L]``."""
        length = ids.shape[1]
        causal = getattr(self.h, "attn_mask", None)
        mask = None if causal is None else causal[:length, :length].to(dtype)
        if self.use_pad_mask:
            keep = (ids != self.pad_id).unsqueeze(1).expand(-1, length, -1)
            pad = torch.zeros(keep.shape, dtype=dtype, device=ids.device).masked_fill(~keep, float("-inf"))
            pad = pad.repeat_interleave(self.heads, 0)
            mask = pad if mask is None else mask.unsqueeze(0) + pad
        return mask

    def causal_stack(self) -> CausalStack | None:
        blocks = list(self.h.transformer.resblocks)
        if not self.truncatable or not all(is_mha_block(b) for b in blocks):
            return None
        cast = self.h.transformer.get_cast_dtype()
        return CausalStack(self.h.positional_embedding, blocks, self._finish, cast)

    def _finish(self, pooled: torch.Tensor) -> torch.Tensor:
        """Pooled hidden state ``[B, W]`` → features ``[B, D]``."""
        return _project(self.h.ln_final(pooled), self.h.text_projection)

    def forward_embeddings(self, embeddings: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        length = embeddings.shape[1]
        x = embeddings + self.h.positional_embedding[:length].to(embeddings.dtype)
        x = self.h.transformer(x, attn_mask=self._attn_mask(ids, x.dtype))
        x = self.h.ln_final(x)
        x = pool_text(x, ids, self.pool_type, self.eos_id)
        return _project(x, self.h.text_projection)


@register_text_tower(oc_model.CustomTextCLIP)
def custom_text_tower(model: nn.Module) -> TextTower:
    """:class:`OpenClipTextTower` over ``model.text``; TextTokensUnsupported unless it is an open_clip ``TextTransformer``."""
    if not isinstance(model.text, oc_transformer.TextTransformer):
        raise TextTokensUnsupported(
            f"the text tower {type(model.text).__module__}.{type(model.text).__name__} of CustomTextCLIP cannot take "
            "textual pseudo tokens: no pseudo-token text tower is registered for it"
        )
    return OpenClipTextTower(model.text)


@register_vision_tower(oc_transformer.VisionTransformer)
class OpenClipVisionTower(ConvViTTower):
    """open_clip's ``VisionTransformer`` (class token, positions, ln_pre, transformer, its own pooling, proj)."""

    def __init__(self, visual: nn.Module) -> None:
        super().__init__(visual)
        # the class token alone is read when pooling is 'tok' without an attentional pooler
        self.cls_only = visual.attn_pool is None and visual.pool_type == "tok"

    def forward_patches(self, patches: torch.Tensor) -> torch.Tensor:
        v = self.v
        x = v.patch_dropout(self.with_class_token(patches))
        x = v.ln_pre(x)
        if self.blocks is not None:
            x = run_blocks(self.blocks, x, last_rows=slice(0, 1) if self.cls_only else None)
        else:
            x = v.transformer(x)
        pooled, _ = v._pool(x)
        return pooled @ v.proj if v.proj is not None else pooled
