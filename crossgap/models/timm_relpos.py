"""timm ``VisionTransformerRelPos`` trunks (ViT-relpos) run from patch embeddings.

No absolute positional embedding: the blocks add a relative-position bias to their attention,
shared across blocks when the trunk has ``shared_rel_pos``.  :class:`RelPosTrunk` follows
``VisionTransformerRelPos.forward_features`` / ``forward_head``
(timm/models/vision_transformer_relpos.py) after ``patch_embed``: class token (optional) in front,
blocks, ``norm``, pooling ('token', 'avg' or none), ``fc_norm``, head.
"""

from __future__ import annotations

import torch
from timm.models.vision_transformer_relpos import VisionTransformerRelPos

from crossgap.models.timm_tower import TimmTrunk, register_timm_trunk


@register_timm_trunk(VisionTransformerRelPos)
class RelPosTrunk(TimmTrunk):
    """Patch embeddings ``[B, N, W]`` → trunk output (class token, relative-position blocks, norm, head)."""

    def forward_patches(self, patches: torch.Tensor) -> torch.Tensor:
        trunk = self.t
        x = patches
        if trunk.cls_token is not None:
            x = torch.cat((trunk.cls_token.expand(x.shape[0], -1, -1), x), dim=1)
        shared = trunk.shared_rel_pos.get_bias() if trunk.shared_rel_pos is not None else None
        for block in trunk.blocks:
            x = block(x, shared_rel_pos=shared)
        x = trunk.norm(x)
        return trunk.forward_head(x)
