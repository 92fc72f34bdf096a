"""timm ``Eva`` trunks (EVA01, EVA02, Perception Encoder PE-Core) run from patch embeddings.

``Eva`` differs from timm's ``VisionTransformer`` in what follows the patch embedding: ``_pos_embed``
returns the tokens *and* the rotary position embedding of the patch grid (EVA02, PE-Core; None for
EVA01), which every block takes as ``rope=``; PE-Core has no class token and pools with an
attention pool ('map').  :class:`EvaTrunk` follows ``Eva.forward_features`` / ``forward_head``
(timm/models/eva.py) after ``patch_embed``; depth-dependent ("mixed") rotary embeddings give one
embedding per block.  Patch embeddings are ``[B, N, W]`` (``N = grid_h * grid_w``, row-major);
a ``dynamic_img_size`` trunk gets them back on its NHWC grid, as its ``patch_embed`` returns them.
"""

from __future__ import annotations

import torch
from timm.models.eva import Eva

from crossgap.models.timm_tower import TimmTrunk, register_timm_trunk


@register_timm_trunk(Eva)
class EvaTrunk(TimmTrunk):
    """timm ``Eva``: positions (absolute and/or rotary), ``norm_pre``, blocks with ``rope``, ``norm``, head."""

    def forward_patches(self, patches: torch.Tensor) -> torch.Tensor:
        """Trunk output ``[B, W_out]`` (pooled, timm head applied) of patch embeddings ``[B, N, W]``."""
        trunk = self.t
        x = self.grid(patches) if trunk.dynamic_img_size else patches
        x, rope = trunk._pos_embed(x)
        x = trunk.norm_pre(x)
        mixed = getattr(trunk, "rope_mixed", False) and rope is not None
        for i, block in enumerate(trunk.blocks):
            x = block(x, rope=rope[i] if mixed else rope)
        x = trunk.norm(x)
        return trunk.forward_head(x)
