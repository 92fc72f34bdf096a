"""Tower of open_clip's ``TimmModel`` (SigLIP, EVA, PE-Core, Swin, ... every config with a ``timm_model_name``).

``TimmModel`` wraps a timm ``trunk`` and an adapter ``head``: ``head(trunk(images))``.
:class:`TimmVisionTower` re-runs it from patch embeddings: the trunk's part after its patch
embedding is run by a :class:`TimmTrunk`, looked up by the trunk's class in a registry of its own
(most specific class first, as :mod:`crossgap.models.towers` does for towers), then the adapter's
``head``.  Trunk families register with :func:`register_timm_trunk`, one module each:

- ``VisionTransformer`` (here): ``_pos_embed`` (class / register tokens and positional embeddings
  as timm places them, ``no_embed_class`` included), ``patch_drop``, ``norm_pre``, ``blocks``,
  ``norm``, ``forward_head`` (attention-pool 'map', 'token', 'avg', ``fc_norm``, head);
- ``Eva`` (EVA01/02, PE-Core: rotary position embeddings) in :mod:`crossgap.models.timm_eva`;
- ``VisionTransformerRelPos`` and ``SwinTransformer`` in :mod:`crossgap.models.timm_relpos_swin`.

Any module with the same ``trunk`` / ``head`` layout can reuse the tower (the SLIP family does).
Trunks of no registered class (ConvNeXt, FastViT, ResNet: no patch tokens) raise
:class:`~crossgap.models.base.PatchesUnsupported`: OVI fails with that message, OTI still works.

The Hugging Face tokenizers of these models (read from disk when offline) are in
:mod:`crossgap.models.tokenizers`.
"""

from __future__ import annotations

import logging
from typing import Callable

import torch
from open_clip.timm_model import TimmModel
from timm.models.vision_transformer import VisionTransformer
from torch import nn

from crossgap.models.base import PatchesUnsupported, VisionTower
from crossgap.models.projection import LinearProjection, NoLinearProjectionError, from_linear, register_projection
from crossgap.models.towers import register_class, register_vision_tower

log = logging.getLogger(__name__)

_TRUNKS: dict[type, type["TimmTrunk"]] = {}


def register_timm_trunk(trunk_cls: type) -> Callable[[type["TimmTrunk"]], type["TimmTrunk"]]:
    """Decorator: a :class:`TimmTrunk` subclass runs timm trunks of ``trunk_cls`` (and subclasses)."""
    return register_class(_TRUNKS, trunk_cls, "a timm trunk runner")


def is_timm_vit(module: nn.Module) -> bool:
    """Whether ``module`` is a timm ``VisionTransformer`` (or a subclass)."""
    return isinstance(module, VisionTransformer)


class TimmTrunk:
    """A timm trunk run from its patch embeddings ``[B, N, W]`` (``N = grid_h * grid_w``, row-major).

    Subclasses implement :meth:`forward_patches` (the trunk's ``forward`` after ``patch_embed``,
    head included); the default :meth:`embed_patches` flattens ``patch_embed``'s output (NLC or NHWC).
    """

    def __init__(self, trunk: nn.Module) -> None:
        self.t = trunk
        dim = getattr(trunk, "embed_dim", None)  # Swin keeps a width per stage: its patch embedding's is the first
        self.width = dim if isinstance(dim, int) else trunk.patch_embed.proj.out_channels
        self.grid_size = tuple(trunk.patch_embed.grid_size)
        self.num_patches = self.grid_size[0] * self.grid_size[1]

    def embed_patches(self, images: torch.Tensor) -> torch.Tensor:
        x = self.t.patch_embed(images)
        return x.reshape(x.shape[0], -1, x.shape[-1])

    def grid(self, patches: torch.Tensor) -> torch.Tensor:
        """``[B, N, W]`` → ``[B, grid_h, grid_w, W]`` (NHWC, the layout of dynamic-size and Swin trunks)."""
        return patches.reshape(patches.shape[0], *self.grid_size, patches.shape[-1])

    def forward_patches(self, patches: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError


@register_timm_trunk(VisionTransformer)
class TimmViTTrunk(TimmTrunk):
    """timm ``VisionTransformer``: as ``VisionTransformer.forward`` after ``patch_embed``
    (timm/models/vision_transformer.py: ``forward_features``, ``forward_head``)."""

    def forward_patches(self, patches: torch.Tensor) -> torch.Tensor:
        trunk = self.t
        x = self.grid(patches) if trunk.dynamic_img_size else patches  # NHWC until the positional embedding
        x = trunk._pos_embed(x)
        x = trunk.patch_drop(x)
        x = trunk.norm_pre(x)
        x = trunk.blocks(x)
        x = trunk.norm(x)
        return trunk.forward_head(x)


def timm_trunk(trunk: nn.Module) -> TimmTrunk:
    """The registered :class:`TimmTrunk` of ``trunk`` (the first class of its MRO with a runner).

    Raises:
        PatchesUnsupported: no runner for the trunk's class (a convolutional trunk: no patch tokens).
    """
    for cls in type(trunk).__mro__:
        runner = _TRUNKS.get(cls)
        if runner is not None:
            return runner(trunk)
    known = ", ".join(sorted(c.__name__ for c in _TRUNKS))
    raise PatchesUnsupported(
        f"the timm trunk {type(trunk).__module__}.{type(trunk).__name__} cannot take visual pseudo tokens: it is not "
        f"one of the timm families with patch tokens ({known}); OVI needs a ViT vision tower"
    )


@register_vision_tower(TimmModel)
class TimmVisionTower(VisionTower):
    """Vision tower over a module with a timm ``trunk`` and a ``head`` applied to its output.

    Patch embeddings are the output of ``trunk.patch_embed`` (convolution and its norm), flattened
    to ``[B, N, W_vis]`` with ``N = grid_h * grid_w`` in row-major order.

    Raises:
        PatchesUnsupported: no :class:`TimmTrunk` is registered for the trunk's class.
    """

    def __init__(self, visual: nn.Module) -> None:
        super().__init__()
        self.v = visual
        self.runner = timm_trunk(visual.trunk)
        self.width = self.runner.width
        self.grid_size = self.runner.grid_size
        self.num_patches = self.runner.num_patches

    def embed_patches(self, images: torch.Tensor) -> torch.Tensor:
        return self.runner.embed_patches(images)

    def forward_patches(self, patches: torch.Tensor) -> torch.Tensor:
        if patches.shape[1] != self.num_patches:
            raise ValueError(f"expected {self.num_patches} patch embeddings, got {patches.shape[1]}")
        return self.v.head(self.runner.forward_patches(patches))


@register_projection("image", TimmModel)
def vision_projection(visual: nn.Module) -> LinearProjection:
    """``TimmModel``: ``head.proj`` (linear) or the trunk's own linear classifier head (PE-Core style).

    Whatever the trunk (a ConvNeXt too): the projection is the adapter's or the trunk head's.
    """
    head = dict(visual.head.named_children())
    others = sorted(set(head) - {"drop", "proj"})
    if others:
        raise NoLinearProjectionError(
            f"the timm vision tower ends in head layer(s) {others} (attention pool or MLP), not one linear projection"
        )
    trunk_head = getattr(visual.trunk, "head", None)
    if "proj" in head:
        if not isinstance(head["proj"], nn.Linear) or isinstance(trunk_head, nn.Linear):
            raise NoLinearProjectionError("the timm vision tower has a non-linear or a second projection")
        return from_linear(head["proj"], "visual.head.proj")
    if isinstance(trunk_head, nn.Linear):
        return from_linear(trunk_head, "visual.trunk.head")
    raise NoLinearProjectionError(
        f"the timm vision tower {type(visual.trunk).__module__}.{type(visual.trunk).__name__} has no linear "
        "projection (SigLIP-style: its features are the output of the attention-pool head's MLP); IsoCLIP "
        "linearises that MLP, crossgap does not"
    )
