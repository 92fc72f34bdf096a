"""Prefix-cached encoding of one template with pseudo tokens in a causal text tower (OTI's inner loop).

In a causal text tower position ``i`` only attends to positions ``<= i``, so the positions before
the first placeholder ("<sot> a photo of" in "a photo of £") never see the pseudo tokens: their
hidden states and per-layer keys/values are the same at every optimisation step and for every
sample.  :class:`PrefixCachedEncoder` computes them once per template (batch 1, no gradient) and
each call runs only the *suffix*, the positions from the first placeholder to the pooled
end-of-text token, attending to the cached prefix.  In the last layer only the pooled position's
query, attention output and MLP are computed (the other positions' outputs are never read).
The result equals the full forward up to float rounding (``tests/test_prefix_cache.py``).

A tower opts in by returning a :class:`CausalStack` from ``TextTower.causal_stack()``; towers that
return None (bidirectional SigLIP-style towers, blocks of unknown layout) are encoded by
:class:`FullTemplateEncoder`, the plain (truncated where exact) forward.

Shapes: ``B`` batch, ``R`` pseudo tokens, ``W`` token width, ``H`` heads, ``P`` cached prefix
positions, ``S`` suffix positions, ``D`` feature size.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Callable, Sequence

import torch
from torch import nn

from crossgap.models.blocks import KV, Layouts, block_step, causal_mask, transposed_layouts

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class CausalStack:
    """A causal text tower seen position by position (what ``TextTower.causal_stack`` returns).

    Attributes:
        positional_embedding: ``[L, W]``, added to the token embeddings.
        blocks: the residual blocks, each satisfying :func:`~crossgap.models.blocks.is_mha_block`.
        finish: pooled hidden state ``[B, W]`` → features ``[B, D]`` (final norm, projection).
        dtype: the dtype token embeddings are cast to before the first block.
    """

    positional_embedding: torch.Tensor
    blocks: Sequence[nn.Module]
    finish: Callable[[torch.Tensor], torch.Tensor]
    dtype: torch.dtype


def placeholder_positions(ids: torch.Tensor, placeholder_id: int, num_tokens: int) -> torch.Tensor:
    """Positions ``[R]`` of the placeholders in template ids ``[1, L]``; ValueError unless exactly R."""
    if ids.dim() != 2 or ids.shape[0] != 1:
        raise ValueError(f"expected the ids of one template [1, L], got {tuple(ids.shape)}")
    positions = (ids[0] == placeholder_id).nonzero().flatten()
    if positions.numel() != num_tokens:
        raise ValueError(
            f"the template must hold {num_tokens} placeholder tokens before its end of text; found {positions.numel()}"
        )
    return positions


class PrefixCachedEncoder(nn.Module):
    """Features ``[B, D]`` of pseudo tokens ``[B, R, W]`` spliced into one template, with a cached prefix.

    Args:
        stack: the tower's :class:`CausalStack`.
        embed_tokens: ids ``[1, L]`` → token embeddings ``[1, L, W]`` (the tower's ``embed_tokens``).
        ids: the template's ids ``[1, L]``, already cut after the pooled end-of-text token (the
            pooled position must be the last one).
        placeholder_id: id of the placeholder token; R placeholders must occur in ``ids``.
        transpose_weights: run the linear layers through transposed weight copies (see
            :func:`~crossgap.models.blocks.transposed_layouts`; one extra copy of the text tower's
            linear weights while the encoder lives); None: on the CPU only.
    """

    def __init__(
        self,
        stack: CausalStack,
        embed_tokens: Callable[[torch.Tensor], torch.Tensor],
        ids: torch.Tensor,
        placeholder_id: int,
        num_tokens: int,
        *,
        transpose_weights: bool | None = None,
    ) -> None:
        super().__init__()
        self.stack = stack
        if transpose_weights is None:  # see crossgap.models.blocks.transposed_layouts
            transpose_weights = ids.device.type == "cpu"
        self.layouts: Layouts | None = transposed_layouts(list(stack.blocks)) if transpose_weights else None
        positions = placeholder_positions(ids, placeholder_id, num_tokens)
        start, length = int(positions[0]), ids.shape[1]
        self.prefix_length = start
        self.positions = length - start  # positions run at each call
        with torch.no_grad():
            embedded = embed_tokens(ids).to(stack.dtype) + stack.positional_embedding[:length].to(stack.dtype)
            self.past: list[KV] | None = None
            if start > 0:
                x, self.past = embedded[:, :start], []
                mask = causal_mask(0, start, ids.device)
                for block in stack.blocks:
                    x, kv = block_step(block, x, None, mask)
                    self.past.append(kv)
        self.register_buffer("suffix", embedded[:, start:].clone(), persistent=False)  # [1, S, W]
        self.register_buffer("slots", positions - start, persistent=False)  # [R] placeholder rows of the suffix
        self.register_buffer("positional", stack.positional_embedding[start:length].detach().clone(), persistent=False)
        self.register_buffer("mask", causal_mask(start, self.positions, ids.device), persistent=False)
        log.debug("prefix cache: %d cached positions, %d run per step", start, self.positions)

    def forward(self, pseudo_tokens: torch.Tensor) -> torch.Tensor:
        """``[B, R, W]`` (or ``[B, W]`` when R = 1) → ``[B, D]``; gradients flow into ``pseudo_tokens`` only."""
        if pseudo_tokens.dim() == 2:
            pseudo_tokens = pseudo_tokens.unsqueeze(1)
        if pseudo_tokens.shape[1:] != (self.slots.numel(), self.suffix.shape[-1]):
            raise ValueError(
                f"pseudo tokens have shape {tuple(pseudo_tokens.shape)}, expected [B, {self.slots.numel()}, "
                f"{self.suffix.shape[-1]}]"
            )
        batch = pseudo_tokens.shape[0]
        x = self.suffix.expand(batch, -1, -1).clone()
        x[:, self.slots] = pseudo_tokens.to(x.dtype) + self.positional[self.slots].to(x.dtype)
        last = len(self.stack.blocks) - 1
        for i, block in enumerate(self.stack.blocks):
            past = None if self.past is None else self.past[i]
            rows = slice(-1, None) if i == last else None
            x, _ = block_step(block, x, past, self.mask, rows=rows, layouts=self.layouts)
        return self.stack.finish(x[:, -1])


class FullTemplateEncoder(nn.Module):
    """The plain path for towers without a :class:`CausalStack`: ``encode(ids, pseudo [B, R, W])`` → ``[B, D]``."""

    def __init__(self, encode: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], ids: torch.Tensor) -> None:
        super().__init__()
        self._encode = encode
        self.register_buffer("ids", ids, persistent=False)
        self.prefix_length = 0
        self.positions = ids.shape[1]

    def forward(self, pseudo_tokens: torch.Tensor) -> torch.Tensor:
        return self._encode(self.ids, pseudo_tokens)
