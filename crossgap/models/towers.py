"""The tower registry, and the helpers that several tower families share.

A *tower family* is the code that re-runs one library's encoders from embeddings (see
:mod:`crossgap.models.base`).  The rule:

- **a tower family lives in its own module under crossgap/models/** (``openai_tower.py``,
  ``open_clip_tower.py``, ``hf_tower.py``, ``timm_tower.py`` with its trunk families ``timm_eva.py``,
  ``timm_relpos.py``, ``timm_swin.py``, ``slip.py``), imported by ``crossgap/models/__init__.py``;
- **it registers under the module it wraps**, with the decorator at each factory:
  ``@register_text_tower(TextModuleClass)`` on a callable ``factory(text_module) -> TextTower``
  (the text module is ``model.text`` when the model has one, else the model itself, whose fields
  are the text tower's: :func:`text_module`) and ``@register_vision_tower(VisualClass)`` on a
  callable ``factory(visual) -> VisionTower`` (a tower class is such a callable);
- **the most specific registered class wins**: :func:`build_text_tower` / :func:`build_vision_tower`
  walk ``type(obj).__mro__`` and use the first class found in the registry, whatever the order in
  which the factories were registered.  Registering a second factory for the same class is an error.

A vision factory that finds a module it cannot run from patch embeddings (a ResNet, a ConvNeXt
trunk) raises :class:`~crossgap.models.base.PatchesUnsupported`, as the lookup does when no class of
the module is registered; :func:`~crossgap.models.loading.load_clip` keeps that error for OVI.
Every tower re-runs the third-party encoder step by step exactly as the library's own
``encode_text`` / ``encode_image`` would; equivalence tests in ``tests/test_pseudo_tokens.py`` prove
it for every tower type, so a change in a pinned dependency's internals fails loudly.
"""

from __future__ import annotations

import logging
from typing import Callable, TypeVar

import torch
from torch import nn

from crossgap.models.base import PatchesUnsupported, TextTokensUnsupported, TextTower, VisionTower
from crossgap.models.blocks import is_mha_block

log = logging.getLogger(__name__)

TextFactory = Callable[[nn.Module], TextTower]
VisionFactory = Callable[[nn.Module], VisionTower]
FactoryT = TypeVar("FactoryT", bound=Callable)
_TEXT_TOWERS: dict[type, TextFactory] = {}
_VISION_TOWERS: dict[type, VisionFactory] = {}


def register_class(registry: dict[type, Callable], cls: type, what: str) -> Callable[[FactoryT], FactoryT]:
    """Decorator registering a callable under ``cls`` in ``registry`` (looked up along the MRO); ``what``
    names the kind in the error a second, different registration for ``cls`` raises."""

    def deco(factory: FactoryT) -> FactoryT:
        known = registry.get(cls)
        if known is not None and known is not factory:
            raise ValueError(f"{what} is already registered for {_name(cls)}: {known!r}")
        registry[cls] = factory
        return factory

    return deco


def register_text_tower(model_cls: type) -> Callable[[FactoryT], FactoryT]:
    """Decorator: ``factory(model) -> TextTower`` serves instances of ``model_cls`` (and subclasses)."""
    return register_class(_TEXT_TOWERS, model_cls, "a text tower factory")


def register_vision_tower(visual_cls: type) -> Callable[[FactoryT], FactoryT]:
    """Decorator: ``factory(visual) -> VisionTower`` serves vision modules of ``visual_cls`` (and subclasses).

    The factory raises :class:`~crossgap.models.base.PatchesUnsupported` for modules it cannot run
    from patch embeddings.
    """
    return register_class(_VISION_TOWERS, visual_cls, "a vision tower factory")


def _name(cls: type) -> str:
    return f"{cls.__module__}.{cls.__name__}"


def _factory(registry: dict[type, Callable], obj: object) -> Callable | None:
    """The factory of the first class of ``type(obj).__mro__`` in ``registry`` (the most specific)."""
    for cls in type(obj).__mro__:
        factory = registry.get(cls)
        if factory is not None:
            return factory
    return None


def text_module(model: nn.Module) -> nn.Module:
    """The module that holds ``model``'s text tower: ``model.text`` (open_clip ``CustomTextCLIP``, ``CoCa``) or
    ``model`` itself (OpenAI CLIP, open_clip ``CLIP``, SLIP keep the text tower's fields on the model)."""
    text = getattr(model, "text", None)
    return text if isinstance(text, nn.Module) else model


def build_text_tower(model: nn.Module) -> TextTower:
    """The registered :class:`TextTower` for the text module of ``model`` (:func:`text_module`).

    Raises:
        TextTokensUnsupported: ``model`` cannot take token embeddings (no factory for its class, or
            the factory found a text module it cannot run from embeddings).
    """
    module = text_module(model)
    factory = _factory(_TEXT_TOWERS, module)
    if factory is None:
        raise TextTokensUnsupported(
            f"the text tower {_name(type(module))} cannot take textual pseudo tokens: no pseudo-token text tower "
            "is registered for it (OTI needs its token embeddings and a way to run the tower from them)"
        )
    return factory(module)


def build_vision_tower(visual: nn.Module) -> VisionTower:
    """The registered :class:`VisionTower` for ``visual``.

    Raises:
        PatchesUnsupported: ``visual`` cannot take patch embeddings (no factory for its class, or
            the factory found e.g. a non-ViT trunk).
    """
    factory = _factory(_VISION_TOWERS, visual)
    if factory is None:
        raise PatchesUnsupported(
            f"the vision tower {_name(type(visual))} cannot take visual pseudo tokens: OVI needs a ViT vision "
            "tower (ResNet towers have no patch tokens)"
        )
    return factory(visual)


# --------------------------------------------------------------------------------------------
# helpers shared by the tower families
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
    """1 + the largest pooled position over the batch ``ids`` ``[B, L]``: the positions a causal tower needs."""
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


class ConvViTTower(VisionTower):
    """Shared part of the ViT towers of OpenAI CLIP and open_clip: ``conv1`` patchifier, class token.

    ``visual`` has ``conv1`` (patch convolution), ``class_embedding`` ``[W_vis]``,
    ``positional_embedding`` ``[1 + N, W_vis]`` and ``transformer.resblocks``.  Subclasses run the
    rest of the tower in :meth:`forward_patches`, starting from :meth:`with_class_token`.
    """

    cast_images = False  # cast images to the conv1 weight dtype first (as clip.model does)

    def __init__(self, visual: nn.Module) -> None:
        super().__init__()
        self.v = visual
        self.width = visual.conv1.out_channels
        self.num_patches = visual.positional_embedding.shape[0] - 1
        self.blocks = fast_blocks(visual.transformer.resblocks)

    def embed_patches(self, images: torch.Tensor) -> torch.Tensor:
        if self.cast_images:
            images = images.type(self.v.conv1.weight.dtype)
        x = self.v.conv1(images)
        return x.reshape(x.shape[0], x.shape[1], -1).permute(0, 2, 1)

    def with_class_token(self, patches: torch.Tensor) -> torch.Tensor:
        """Patch embeddings ``[B, N, W_vis]`` → class token and patches with positions ``[B, 1 + N, W_vis]``."""
        v = self.v
        cls = v.class_embedding.to(patches.dtype).expand(patches.shape[0], 1, -1)
        return torch.cat([cls, patches], dim=1) + v.positional_embedding.to(patches.dtype)
