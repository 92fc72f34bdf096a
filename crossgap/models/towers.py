"""Concrete text and vision towers for each supported architecture, and their registry.

Each tower re-runs the third-party encoder from embeddings, step by step, exactly as the
library's own ``encode_text`` / ``encode_image`` would; equivalence tests in
``tests/test_pseudo_tokens.py`` prove it for every tower type, so a change in a pinned
dependency's internals fails loudly instead of silently changing results.

Registries map a third-party model class to a factory: :func:`register_text_tower` and
:func:`register_vision_tower`.  :func:`build_towers` picks the factory by ``isinstance``.
"""

from __future__ import annotations

import logging
from typing import Callable

import torch
from torch import nn

from crossgap.models.base import TextTower, VisionTower
from crossgap.models.blocks import is_mha_block, run_blocks
from crossgap.models.prefix import CausalStack

log = logging.getLogger(__name__)

TowerFactory = Callable[[nn.Module], "TextTower | VisionTower | None"]
_TEXT_TOWERS: list[tuple[type, TowerFactory]] = []
_VISION_TOWERS: list[tuple[type, TowerFactory]] = []


def register_text_tower(model_cls: type) -> Callable[[TowerFactory], TowerFactory]:
    """Decorator: ``factory(model) -> TextTower`` is used for models that are ``model_cls`` instances."""

    def deco(factory: TowerFactory) -> TowerFactory:
        _TEXT_TOWERS.append((model_cls, factory))
        return factory

    return deco


def register_vision_tower(visual_cls: type) -> Callable[[TowerFactory], TowerFactory]:
    """Decorator: ``factory(visual) -> VisionTower | None`` for vision modules of ``visual_cls``."""

    def deco(factory: TowerFactory) -> TowerFactory:
        _VISION_TOWERS.append((visual_cls, factory))
        return factory

    return deco


def build_text_tower(model: nn.Module) -> TextTower:
    """The registered :class:`TextTower` for ``model``; TypeError naming the class if none fits."""
    for cls, factory in _TEXT_TOWERS:
        if isinstance(model, cls):
            return factory(model)  # type: ignore[return-value]
    raise TypeError(
        f"no pseudo-token text tower is registered for {type(model).__module__}.{type(model).__name__}"
    )


def build_vision_tower(visual: nn.Module) -> tuple[VisionTower | None, str | None]:
    """The registered :class:`VisionTower` for ``visual``, or ``(None, reason)`` when it cannot take patches."""
    for cls, factory in _VISION_TOWERS:
        if isinstance(visual, cls):
            return factory(visual), None  # type: ignore[return-value]
    name = f"{type(visual).__module__}.{type(visual).__name__}"
    return None, (
        f"the vision tower {name} cannot take visual pseudo tokens: OVI needs a ViT vision tower "
        "(ResNet towers have no patch tokens)"
    )


# --------------------------------------------------------------------------------------------
# pooling shared by the text towers
# --------------------------------------------------------------------------------------------
def pool_text(x: torch.Tensor, ids: torch.Tensor, pool_type: str, eos_id: int | None) -> torch.Tensor:
    """Pool ``x`` ``[B, L, W]`` to ``[B, W]``: 'argmax' (highest id = end of text), 'eos', 'first', 'last'."""
    rows = torch.arange(x.shape[0], device=x.device)
    if pool_type == "argmax":
        return x[rows, ids.argmax(dim=-1)]
    if pool_type == "eos":
        return x[rows, (ids == eos_id).int().argmax(dim=-1)]
    if pool_type == "first":
        return x[:, 0]
    if pool_type == "last":
        return x[:, -1]
    raise ValueError(f"unsupported text pooling {pool_type!r}")


def eot_length(ids: torch.Tensor, pool_type: str, eos_id: int | None) -> int:
    """1 + the largest pooled position over the batch: the positions a causal tower needs."""
    if pool_type == "argmax":
        pos = ids.argmax(dim=-1)
    elif pool_type == "eos":
        pos = (ids == eos_id).int().argmax(dim=-1)
    else:
        return ids.shape[1]
    return int(pos.max()) + 1


def fast_blocks(blocks: nn.Module) -> list[nn.Module] | None:
    """``blocks`` as a list when :func:`~crossgap.models.blocks.run_blocks` can run them (unmasked
    :func:`~crossgap.models.blocks.is_mha_block` blocks), else None (the module's own forward is used)."""
    blocks = list(blocks)
    if all(is_mha_block(b) and getattr(b, "attn_mask", None) is None for b in blocks):
        return blocks
    return None


def _project(x: torch.Tensor, projection: nn.Module | torch.Tensor | None) -> torch.Tensor:
    if projection is None:
        return x
    if isinstance(projection, nn.Linear):
        return projection(x)
    return x @ projection


# --------------------------------------------------------------------------------------------
# OpenAI CLIP (the `clip` package)
# --------------------------------------------------------------------------------------------
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


class OpenAIVisionTower(VisionTower):
    """ViT vision tower of ``clip.model.CLIP`` (class token, ln_pre, transformer, ln_post on CLS, proj)."""

    def __init__(self, visual: nn.Module) -> None:
        super().__init__()
        self.v = visual
        self.width = visual.conv1.out_channels
        self.num_patches = visual.positional_embedding.shape[0] - 1
        self.blocks = fast_blocks(visual.transformer.resblocks)

    def embed_patches(self, images: torch.Tensor) -> torch.Tensor:
        x = self.v.conv1(images.type(self.v.conv1.weight.dtype))
        return x.reshape(x.shape[0], x.shape[1], -1).permute(0, 2, 1)

    def forward_patches(self, patches: torch.Tensor) -> torch.Tensor:
        v = self.v
        cls = v.class_embedding.to(patches.dtype).expand(patches.shape[0], 1, -1)
        x = torch.cat([cls, patches], dim=1) + v.positional_embedding.to(patches.dtype)
        x = v.ln_pre(x)
        if self.blocks is not None:  # batch-first, last block for the class token only
            x = run_blocks(self.blocks, x, last_rows=slice(0, 1))
        else:
            x = v.transformer(x.permute(1, 0, 2)).permute(1, 0, 2)
        x = v.ln_post(x[:, 0, :])
        return x @ v.proj if v.proj is not None else x


def _register_openai() -> None:
    try:
        import clip.model as clip_model
    except ImportError:  # pragma: no cover - openai-clip is a pinned dependency
        log.debug("openai-clip not installed; OpenAI towers not registered")
        return
    register_text_tower(clip_model.CLIP)(OpenAITextTower)
    register_vision_tower(clip_model.VisionTransformer)(OpenAIVisionTower)


# --------------------------------------------------------------------------------------------
# open_clip
# --------------------------------------------------------------------------------------------
class OpenClipTextTower(TextTower):
    """Text encoder of open_clip's ``CLIP`` (fields on the model) or a ``TextTransformer`` module.

    Handles the causal (CLIP) and bidirectional (SigLIP-style, ``no_causal_mask``) variants and the
    'argmax', 'eos', 'first' and 'last' poolings.  Truncation is exact only for a causal mask with
    end-of-text pooling; otherwise the full context is kept.
    """

    def __init__(self, holder: nn.Module) -> None:
        super().__init__()
        if getattr(holder, "cls_emb", None) is not None:
            raise TypeError("open_clip text towers with an appended CLS embedding (CoCa) are not supported")
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


class OpenClipVisionTower(VisionTower):
    """open_clip's ``VisionTransformer`` (class token, positions, ln_pre, transformer, its own pooling, proj)."""

    def __init__(self, visual: nn.Module) -> None:
        super().__init__()
        self.v = visual
        self.width = visual.conv1.out_channels
        self.num_patches = visual.positional_embedding.shape[0] - 1
        self.blocks = fast_blocks(visual.transformer.resblocks)
        # the class token alone is read when pooling is 'tok' without an attentional pooler
        self.cls_only = visual.attn_pool is None and visual.pool_type == "tok"

    def embed_patches(self, images: torch.Tensor) -> torch.Tensor:
        x = self.v.conv1(images)
        return x.reshape(x.shape[0], x.shape[1], -1).permute(0, 2, 1)

    def forward_patches(self, patches: torch.Tensor) -> torch.Tensor:
        v = self.v
        cls = v.class_embedding.to(patches.dtype).expand(patches.shape[0], 1, -1)
        x = torch.cat([cls, patches], dim=1) + v.positional_embedding.to(patches.dtype)
        x = v.patch_dropout(x)
        x = v.ln_pre(x)
        if self.blocks is not None:
            x = run_blocks(self.blocks, x, last_rows=slice(0, 1) if self.cls_only else None)
        else:
            x = v.transformer(x)
        pooled, _ = v._pool(x)
        return pooled @ v.proj if v.proj is not None else pooled


def _register_open_clip() -> None:
    try:
        import open_clip.model as oc_model
        import open_clip.transformer as oc_transformer
    except ImportError:  # pragma: no cover - open_clip is a pinned dependency
        log.debug("open_clip not installed; open_clip towers not registered")
        return
    register_text_tower(oc_model.CLIP)(OpenClipTextTower)

    @register_text_tower(oc_model.CustomTextCLIP)
    def _custom_text(model: nn.Module) -> TextTower:
        if not isinstance(model.text, oc_transformer.TextTransformer):
            raise TypeError(
                f"CustomTextCLIP with a {type(model.text).__name__} text tower (e.g. a Hugging Face model) "
                "cannot take pseudo tokens; only open_clip TextTransformer text towers are supported"
            )
        return OpenClipTextTower(model.text)

    register_vision_tower(oc_transformer.VisionTransformer)(OpenClipVisionTower)


_register_openai()
_register_open_clip()
