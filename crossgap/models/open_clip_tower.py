"""Towers of open_clip: its ``TextTransformer`` (on ``CLIP`` its fields live on the model; ``CustomTextCLIP``
and ``CoCa`` hold it as ``model.text``) and its ``VisionTransformer`` (CoCa's attentional pool included).

open_clip models whose vision side is a timm trunk (``TimmModel``: SigLIP, ...) get their vision
tower from :mod:`crossgap.models.timm_tower`; ``ModifiedResNet`` vision modules have none (OVI
raises :class:`~crossgap.models.base.PatchesUnsupported`).
"""

from __future__ import annotations

import open_clip.model as oc_model
import open_clip.transformer as oc_transformer
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


def _project(x: torch.Tensor, projection: nn.Module | torch.Tensor | None) -> torch.Tensor:
    """``x`` ``[B, W]`` through ``projection`` (an ``nn.Linear`` or a ``[W, D]`` matrix; None: identity)."""
    if projection is None:
        return x
    if isinstance(projection, nn.Linear):
        return projection(x)
    return x @ projection


@register_text_tower(oc_model.CLIP)
@register_text_tower(oc_transformer.TextTransformer)
class OpenClipTextTower(TextTower):
    """Text encoder of open_clip's ``CLIP`` (fields on the model) or a ``TextTransformer`` module.

    Handles the causal (CLIP) and bidirectional (SigLIP-style, ``no_causal_mask``) variants, the
    'argmax', 'eos', 'first' and 'last' poolings, and CoCa's text tower: a CLS embedding
    (``cls_emb``) appended after the context, attending to every unpadded token (causal mask plus
    padding mask), whose output (``ln_final`` after pooling) is projected.  Truncation is exact only
    for a causal mask with end-of-text pooling and no CLS embedding; otherwise the full context is kept.
    """

    def __init__(self, holder: nn.Module) -> None:
        super().__init__()
        self.h = holder
        self.cls_emb = getattr(holder, "cls_emb", None)
        self.width = holder.token_embedding.weight.shape[1]
        self.context_length = holder.positional_embedding.shape[0] - (self.cls_emb is not None)
        self.pool_type = getattr(holder, "text_pool_type", None) or getattr(holder, "pool_type")
        self.eos_id = getattr(holder, "text_eos_id", None)
        if self.eos_id is None:
            self.eos_id = getattr(holder, "eos_id", None)
        self.pad_id = getattr(holder, "pad_id", 0)
        self.use_pad_mask = bool(getattr(holder, "use_pad_mask", False))
        self.heads = getattr(holder, "heads", None) or holder.transformer.resblocks[0].attn.num_heads
        causal = getattr(holder, "attn_mask", None) is not None
        self.truncatable = (causal and self.pool_type in ("argmax", "eos") and not self.use_pad_mask
                            and self.cls_emb is None)

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
        if not self.truncatable or self.cls_emb is not None or not all(is_mha_block(b) for b in blocks):
            return None
        cast = self.h.transformer.get_cast_dtype()
        return CausalStack(self.h.positional_embedding, blocks, self._finish, cast)

    def _finish(self, pooled: torch.Tensor) -> torch.Tensor:
        """Pooled hidden state ``[B, W]`` → features ``[B, D]``."""
        return _project(self.h.ln_final(pooled), self.h.text_projection)

    def _forward_cls(self, embeddings: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        """CoCa: the appended CLS token's output (open_clip/transformer.py ``TextTransformer._embeds``, ``forward``)."""
        h = self.h
        batch, length = ids.shape
        x = torch.cat([embeddings, self.cls_emb.to(embeddings.dtype).expand(batch, 1, -1)], dim=1)
        mask = h._build_additive_mask(ids, length + 1, x.dtype)  # padding (CLS always kept), per head
        causal = getattr(h, "attn_mask", None)
        if causal is not None:
            mask = causal[: length + 1, : length + 1].to(x.dtype).unsqueeze(0) + mask
        x = h.transformer(x + h.positional_embedding[: length + 1].to(x.dtype), attn_mask=mask)
        return _project(h.ln_final(x[:, -1]), h.text_projection)

    def forward_embeddings(self, embeddings: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        if self.cls_emb is not None:
            return self._forward_cls(embeddings, ids)
        length = embeddings.shape[1]
        x = embeddings + self.h.positional_embedding[:length].to(embeddings.dtype)
        x = self.h.transformer(x, attn_mask=self._attn_mask(ids, x.dtype))
        x = self.h.ln_final(x)
        x = pool_text(x, ids, self.pool_type, self.eos_id)
        return _project(x, self.h.text_projection)


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


@register_projection("text", oc_model.CLIP)
def clip_text_projection(model: nn.Module) -> LinearProjection:
    """open_clip ``CLIP`` keeps its text tower's fields on the model: ``text_projection``."""
    return from_parameter(model, "text_projection", "text_projection")


@register_projection("text", oc_transformer.TextTransformer)
def text_projection(text: nn.Module) -> LinearProjection:
    """``TextTransformer.text_projection`` (a ``[W, D]`` matrix or an ``nn.Linear``; CoCa's included)."""
    return from_parameter(text, "text_projection", "text.text_projection")


@register_projection("image", oc_transformer.VisionTransformer)
def vision_projection(visual: nn.Module) -> LinearProjection:
    """``pooled @ visual.proj`` (after the pooling and ``ln_post``; CoCa's attentional pool included)."""
    return from_parameter(visual, "proj", "visual.proj")
