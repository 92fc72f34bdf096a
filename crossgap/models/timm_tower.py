"""Tower of open_clip's ``TimmModel`` (SigLIP, and every open_clip config with a ``timm_model_name``).

``TimmModel`` wraps a timm ``VisionTransformer`` ``trunk`` and an adapter ``head``.
:class:`TimmVisionTower` re-runs the trunk from patch embeddings exactly as
``VisionTransformer.forward`` does: ``_pos_embed`` (class / register tokens and positional
embeddings as timm places them, ``no_embed_class`` included), ``patch_drop``, ``norm_pre``,
``blocks``, ``norm``, ``forward_head`` (attention-pool 'map', 'token', 'avg', ``fc_norm``, head),
then the adapter's ``head``.  Any module with the same ``trunk`` / ``head`` layout can reuse it
(the SLIP family does).  Trunks that are not a timm ViT (ConvNeXt, ...) raise
:class:`~crossgap.models.base.PatchesUnsupported`: OVI fails with that message, OTI still works.

The Hugging Face tokenizers of these models (read from disk when offline) are in
:mod:`crossgap.models.tokenizers`.
"""

from __future__ import annotations

import logging

import torch
from open_clip.timm_model import TimmModel
from timm.models.vision_transformer import VisionTransformer
from torch import nn

from crossgap.models.base import PatchesUnsupported, VisionTower
from crossgap.models.towers import register_vision_tower

log = logging.getLogger(__name__)


def is_timm_vit(module: nn.Module) -> bool:
    """Whether ``module`` is a timm ``VisionTransformer`` (or a subclass)."""
    return isinstance(module, VisionTransformer)


@register_vision_tower(TimmModel)
class TimmVisionTower(VisionTower):
    """Vision tower over a module with a timm ViT ``trunk`` and a ``head`` applied to its output.

    Patch embeddings are the output of ``trunk.patch_embed`` (convolution and its norm), flattened
    to ``[B, N, W_vis]`` with ``N = grid_h * grid_w`` in row-major order.

    Raises:
        PatchesUnsupported: the trunk is not a timm ``VisionTransformer``.
    """

    def __init__(self, visual: nn.Module) -> None:
        super().__init__()
        if not is_timm_vit(visual.trunk):
            raise PatchesUnsupported(
                f"the timm trunk {type(visual.trunk).__name__} is not a timm VisionTransformer: it cannot take "
                "visual pseudo tokens (OVI needs a ViT vision tower)"
            )
        self.v = visual
        trunk = visual.trunk
        self.width = trunk.embed_dim
        self.grid_size = tuple(trunk.patch_embed.grid_size)
        self.num_patches = self.grid_size[0] * self.grid_size[1]

    def embed_patches(self, images: torch.Tensor) -> torch.Tensor:
        x = self.v.trunk.patch_embed(images)
        return x.reshape(x.shape[0], -1, x.shape[-1])

    def forward_patches(self, patches: torch.Tensor) -> torch.Tensor:
        trunk = self.v.trunk
        batch, num, width = patches.shape
        if num != self.num_patches:
            raise ValueError(f"expected {self.num_patches} patch embeddings, got {num}")
        x = patches
        if trunk.dynamic_img_size:  # timm keeps the grid (NHWC) until the positional embedding
            x = x.reshape(batch, *self.grid_size, width)
        x = trunk._pos_embed(x)
        x = trunk.patch_drop(x)
        x = trunk.norm_pre(x)
        x = trunk.blocks(x)
        x = trunk.norm(x)
        x = trunk.forward_head(x)
        return self.v.head(x)

