"""One transformer block run step by step: cached keys/values, outputs for chosen positions only.

:func:`block_step` re-runs a pre-norm residual attention block (the layout of
``clip.model.ResidualAttentionBlock`` and open_clip's ``ResidualAttentionBlock``) from its weights:

- on batch-first, contiguous activations ``[B, S, W]`` (``nn.MultiheadAttention`` in its
  training-mode path transposes to sequence-first and runs the packed input projection as a
  ``bmm`` against a broadcast weight, measurably slower on the CPU);
- attending to keys/values of earlier positions passed in (the prefix cache of
  :mod:`crossgap.models.prefix`);
- producing outputs only for the positions a caller reads (``rows``): in the last block of a tower
  that pools one token (end of text, class token) the other positions' attention outputs and MLP are
  never read, so only their keys/values are computed.

Attention goes through ``F.scaled_dot_product_attention`` with the default ``1/sqrt(W/H)``
scale, as ``nn.MultiheadAttention`` does.  Equal to the module's forward up to float rounding
(``tests/test_prefix_cache.py``, ``tests/test_vision_blocks.py``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

KV = tuple[torch.Tensor, torch.Tensor]  # keys, values [B or 1, H, positions, W / H]


def is_mha_block(block: nn.Module) -> bool:
    """Whether ``block`` is ``x + ls_1(attn(ln_1 x)); x + ls_2(mlp(ln_2 x))`` with a plain MHA.

    ``ls_1``/``ls_2`` are optional (open_clip's layer scale); ``attn`` must be an
    ``nn.MultiheadAttention`` with a packed input projection, no bias_k/bias_v and no zero
    attention.  Cross-attention and open_clip's ``CustomResidualAttentionBlock`` do not qualify.
    """
    attn = getattr(block, "attn", None)
    if not all(hasattr(block, name) for name in ("ln_1", "ln_2", "mlp")):
        return False
    if hasattr(block, "ln_1_kv") or hasattr(block, "ln_attn"):
        return False
    return (
        isinstance(attn, nn.MultiheadAttention)
        and attn._qkv_same_embed_dim
        and attn.bias_k is None
        and not attn.add_zero_attn
    )


Layouts = dict[int, torch.Tensor]  # id(weight [N, K]) -> the same weight transposed, contiguous [K, N]


def _identity(x: torch.Tensor) -> torch.Tensor:
    return x


class _FrozenLinear(torch.autograd.Function):
    """``x @ weight_t + bias`` for a frozen weight; backward: the input gradient ``grad @ weight`` only."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, weight_t: torch.Tensor, bias: torch.Tensor | None):
        ctx.save_for_backward(weight)
        flat = x.reshape(-1, x.shape[-1])
        out = flat @ weight_t if bias is None else torch.addmm(bias, flat, weight_t)
        return out.view(*x.shape[:-1], weight_t.shape[1])

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (weight,) = ctx.saved_tensors
        flat = grad.reshape(-1, grad.shape[-1])
        return (flat @ weight).view(*grad.shape[:-1], weight.shape[1]), None, None, None


def transposed_layouts(blocks: list[nn.Module]) -> Layouts:
    """Contiguous transposed copies of the blocks' linear weights (one extra copy of them in memory).

    With them, the forward product ``x @ W.T`` and the backward ``grad @ W`` both read a row-major
    operand.  On the CPU, MKL's GEMMs with few rows and a transposed operand (``F.linear``'s
    forward) are slower (32 x 512 @ 512 x 2048: ~1.3x on 2 cores): the OTI suffix (2 positions x 16
    samples = 32 rows in ViT-B/32) runs 5-7% faster per step, measured A/B on a 2-core CPU.  Not
    used for large row counts (OVI: 50 positions x 16 samples, no measurable gain), nor on CUDA,
    where cuBLAS handles both layouts alike.
    """
    layouts: Layouts = {}
    for block in blocks:
        weights = [block.attn.in_proj_weight] + [m.weight for m in block.modules() if isinstance(m, nn.Linear)]
        for weight in weights:
            layouts[id(weight)] = weight.detach().t().contiguous()
    return layouts


def linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, layouts: Layouts | None) -> torch.Tensor:
    """``F.linear(x, weight, bias)``, through :func:`transposed_layouts` when ``layouts`` holds ``weight``."""
    weight_t = None if layouts is None else layouts.get(id(weight))
    if weight_t is None or torch.is_autocast_enabled(x.device.type):
        return F.linear(x, weight, bias)
    return _FrozenLinear.apply(x, weight, weight_t, bias)


def _mlp(mlp: nn.Module, x: torch.Tensor, layouts: Layouts | None) -> torch.Tensor:
    if layouts is None or not isinstance(mlp, nn.Sequential):
        return mlp(x)
    for layer in mlp:
        x = linear(x, layer.weight, layer.bias, layouts) if type(layer) is nn.Linear else layer(x)
    return x


def block_step(
    block: nn.Module,
    x: torch.Tensor,
    past: KV | None = None,
    mask: torch.Tensor | None = None,
    *,
    rows: slice | None = None,
    layouts: Layouts | None = None,
) -> tuple[torch.Tensor, KV]:
    """Run one :func:`is_mha_block` block over positions ``x`` ``[B, S, W]`` that follow ``past``.

    Args:
        past: keys/values ``[1 or B, H, P, W/H]`` of ``P`` earlier positions (broadcast over B), or None.
        mask: boolean ``[S, P + S]`` (True = attend), or None for full attention.
        rows: compute outputs only for these of the ``S`` positions (keys/values of all of them).
        layouts: transposed weights for the linear layers (:func:`transposed_layouts`), or None.

    Returns:
        ``(x [B, S or len(rows), W], (keys, values) [B, H, S, W/H] of the new positions)``.
    """
    attn: nn.MultiheadAttention = block.attn
    batch, length, width = x.shape
    heads = attn.num_heads
    qkv = linear(block.ln_1(x), attn.in_proj_weight, attn.in_proj_bias, layouts)
    q, k, v = qkv.view(batch, length, 3, heads, width // heads).permute(2, 0, 3, 1, 4).unbind(0)
    new_kv = (k, v)
    if past is not None:
        past_k, past_v = (t.to(k.dtype).expand(batch, -1, -1, -1) for t in past)
        k, v = torch.cat([past_k, k], dim=2), torch.cat([past_v, v], dim=2)
    if rows is not None:
        q, x = q[:, :, rows], x[:, rows]
        mask = None if mask is None else mask[rows]
        length = x.shape[1]
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    out = linear(out.transpose(1, 2).reshape(batch, length, width), attn.out_proj.weight, attn.out_proj.bias, layouts)
    x = x + getattr(block, "ls_1", _identity)(out)
    x = x + getattr(block, "ls_2", _identity)(_mlp(block.mlp, block.ln_2(x), layouts))
    return x, new_kv


def causal_mask(past: int, length: int, device: torch.device) -> torch.Tensor:
    """Boolean ``[length, past + length]``: new position ``i`` sees every past position and new ones ``<= i``."""
    keys = torch.arange(past + length, device=device)
    return keys.unsqueeze(0) <= (past + torch.arange(length, device=device)).unsqueeze(1)


def run_blocks(blocks: list[nn.Module], x: torch.Tensor, *, last_rows: slice | None = None) -> torch.Tensor:
    """``x`` ``[B, S, W]`` through ``blocks`` (full attention); the last block outputs only ``last_rows``."""
    last = len(blocks) - 1
    for i, block in enumerate(blocks):
        x, _ = block_step(block, x, rows=last_rows if i == last else None)
    return x
