"""FLOPs of one inversion step, counted from a tower's shapes (for throughput against the machine's peak).

One OTI/OVI step is a forward pass and a backward pass that computes gradients with respect to the
activations only (the weights are frozen, so no weight gradients).  Per block and sample, with
``S`` positions run, ``Q`` of them producing outputs (``Q = S`` except in a last block that only
computes the pooled position), ``K`` keys (cached prefix + ``S``) and width ``W``:

- linear layers: ``S * qkv + Q * rest`` multiply-accumulates (MACs) forward, where ``qkv`` is the
  packed input projection's weight size and ``rest`` the output projection's and the MLP's; the
  backward pass (input gradients) costs the same again;
- attention: ``2 * Q * K * W`` MACs forward (scores and weighted values), twice that backward
  (gradients of queries, keys, values and scores);
- the final projection ``[W, D]`` of the pooled position, forward and backward.

One MAC is 2 FLOPs.  The linear count equals what ``torch.utils.flop_counter.FlopCounterMode``
reports for the step's matrix products (``tests/test_flops.py``); elementwise work (norms,
activations, softmax) is not counted: it is not GEMM work.
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

from torch import nn


@dataclasses.dataclass(frozen=True)
class StepFlops:
    """FLOPs of one step for the whole batch: ``linear`` (matrix products of weights), ``attention``."""

    linear: int
    attention: int

    @property
    def total(self) -> int:
        return self.linear + self.attention


def block_macs(block: nn.Module) -> tuple[int, int, int]:
    """``(qkv, rest, width)``: MACs per position of the packed input projection and of the other linears.

    Works for ``nn.MultiheadAttention`` blocks (``attn.in_proj_weight``) and timm blocks (``attn.qkv``).
    """
    attn = block.attn
    linears = [m for m in block.modules() if isinstance(m, nn.Linear)]
    if getattr(attn, "in_proj_weight", None) is not None:
        qkv = attn.in_proj_weight
    else:
        qkv = attn.qkv.weight
        linears = [m for m in linears if m is not attn.qkv]
    return qkv.numel(), sum(m.weight.numel() for m in linears), qkv.shape[1]


def step_flops(
    blocks: Sequence[nn.Module],
    *,
    batch: int,
    positions: int,
    past: int = 0,
    last_positions: int | None = None,
    head_macs: int = 0,
) -> StepFlops:
    """FLOPs of one forward + input-gradient backward step over ``blocks``.

    Args:
        positions: positions run through every block (``S``).
        past: cached positions attended to but not run (the OTI prefix).
        last_positions: outputs computed by the last block (1 when only the pooled token is
            read), None for all ``positions``.
        head_macs: MACs per sample after the blocks (the pooled ``[W] @ [W, D]`` projection).
    """
    linear = attention = 0
    for i, block in enumerate(blocks):
        qkv, rest, width = block_macs(block)
        queries = positions if (last_positions is None or i < len(blocks) - 1) else last_positions
        linear += positions * qkv + queries * rest
        attention += 2 * queries * (past + positions) * width
    # forward + backward (input gradients): linear 2x, attention 3x; x2 FLOPs per MAC; per sample
    return StepFlops(
        linear=2 * 2 * (linear + head_macs) * batch,
        attention=2 * 3 * attention * batch,
    )
