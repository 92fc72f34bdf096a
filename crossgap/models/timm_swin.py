"""timm ``SwinTransformer`` trunks run from patch embeddings.

Swin is hierarchical (shifted windows, patch merging between stages), so pseudo patches live on
the grid of its patch embedding: ``patch_embed`` returns NHWC ``[B, grid_h, grid_w, W]``, which
:class:`SwinTrunk` flattens to ``[B, N, W]`` (row-major) and puts back on the grid before the
stages.  It follows ``SwinTransformer.forward_features`` / ``forward_head``
(timm/models/swin_transformer.py) after ``patch_embed``: ``layers``, ``norm``, head (its pooling).
OVI's P pseudo patches are expanded to the N grid positions by nearest interpolation, as for a ViT.
"""

from __future__ import annotations

import torch
from timm.models.swin_transformer import SwinTransformer

from crossgap.models.timm_tower import TimmTrunk, register_timm_trunk


@register_timm_trunk(SwinTransformer)
class SwinTrunk(TimmTrunk):
    """Patch embeddings ``[B, N, W]`` → trunk output (stages on the NHWC grid, norm, head)."""

    def forward_patches(self, patches: torch.Tensor) -> torch.Tensor:
        trunk = self.t
        x = trunk.layers(self.grid(patches))
        x = trunk.norm(x)
        return trunk.forward_head(x)
