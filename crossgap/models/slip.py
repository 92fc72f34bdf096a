"""SLIP (Mu et al., 2022) ViT checkpoints: model, checkpoint reader, ``slip`` backend and towers.

The official checkpoints (``slip_base_100ep.pt``, ...) are ``torch.save`` dicts with
``state_dict`` (keys prefixed ``module.``) and ``args`` (``args.model = "SLIP_VITB16"``).  The
state dict names a timm ViT without classifier (``visual.*``), an OpenAI-CLIP-style causal text
transformer (``transformer.resblocks.*``, sequence-first ``nn.MultiheadAttention``),
``token_embedding``, ``positional_embedding``, ``ln_final``, ``image_projection``,
``text_projection``, ``logit_scale`` and, for SLIP (not for the repository's CLIP baselines), an
SSL head ``image_mlp.*`` that inversion does not use and is not built.

:class:`SLIP` holds the vision side as ``visual.trunk`` (the timm ViT) and ``visual.head`` (the
image projection), the layout of open_clip's ``TimmModel``, so that
:class:`~crossgap.models.timm_tower.TimmVisionTower` serves it; checkpoint names are mapped onto
it by :func:`checkpoint_to_model_keys`.  The text side reuses the ``clip`` package's
``Transformer`` (same parameter names) and :class:`~crossgap.models.openai_tower.OpenAITextTower`.

    load_clip("SLIP-ViT-B-16", "/models/slip_base_100ep.pt")       # backend inferred from "SLIP"

SLIP preprocesses with ImageNet mean/std (resize 224, centre crop 224) and tokenises with CLIP's
BPE at context 77; a text cut at the context ends with the end-of-text token, as the SLIP tokenizer
vendored by the reference implementation does.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import math
import re
from typing import Any, Callable, Sequence

import torch
from torch import nn

from crossgap.models.base import TextTower, VisionTower
from crossgap.models.loading import register_backend
from crossgap.models.openai_tower import OpenAITextTower
from crossgap.models.timm_tower import TimmVisionTower
from crossgap.models.projection import LinearProjection, from_parameter, register_projection
from crossgap.models.towers import register_text_tower, register_vision_tower

log = logging.getLogger(__name__)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
UNUSED_PREFIXES = ("image_mlp.",)  # SLIP's SSL projection head: not needed for inversion


@dataclasses.dataclass(frozen=True)
class SLIPConfig:
    """Architecture of a SLIP/CLIP checkpoint of the SLIP repository."""

    vision_model: str  # timm model name, created with num_classes=0
    vision_kwargs: dict[str, Any] = dataclasses.field(default_factory=dict)  # overrides of the timm defaults
    embed_dim: int = 512
    context_length: int = 77
    vocab_size: int = 49408
    text_width: int = 512
    text_heads: int = 8
    text_layers: int = 12


SLIP_ARCHITECTURES: dict[str, SLIPConfig] = {
    # SLIP's ViT-S/16 is MoCo v3's: 12 heads instead of timm's 6
    "SLIP-ViT-S-16": SLIPConfig("vit_small_patch16_224", {"num_heads": 12}),
    "SLIP-ViT-B-16": SLIPConfig("vit_base_patch16_224"),
    "SLIP-ViT-L-16": SLIPConfig("vit_large_patch16_224"),
}
# ``args.model`` of the checkpoints → architecture (SLIP and the repository's CLIP baselines).
_ARGS_MODEL = re.compile(r"(SLIP|CLIP)_VIT([SBL])16")


def register_slip_architecture(name: str, config: SLIPConfig) -> None:
    """Make ``load_clip(name, ..., backend="slip")`` build ``config`` (names starting "SLIP" infer the backend)."""
    SLIP_ARCHITECTURES[name] = config


class MatrixProjection(nn.Module):
    """``x [B, W] @ weight [W, D]`` (SLIP's ``image_projection``)."""

    def __init__(self, in_features: int, out_features: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(in_features, out_features))
        nn.init.normal_(self.weight, std=in_features**-0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x @ self.weight


class SLIPVisual(nn.Module):
    """timm ViT ``trunk`` (pooled CLS feature ``[B, W_vis]``) and projection ``head`` to ``[B, D]``."""

    def __init__(self, trunk: nn.Module, embed_dim: int) -> None:
        super().__init__()
        self.trunk = trunk
        self.head = MatrixProjection(trunk.num_features, embed_dim)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.trunk(images))


class SLIP(nn.Module):
    """SLIP's CLIP part: ``encode_image`` (ViT, ``image_projection``), ``encode_text`` (causal, argmax pooled)."""

    def __init__(self, config: SLIPConfig) -> None:
        super().__init__()
        import timm
        from clip.model import LayerNorm, Transformer

        self.config = config
        self.context_length = config.context_length
        self.visual = SLIPVisual(
            timm.create_model(config.vision_model, num_classes=0, **config.vision_kwargs), config.embed_dim
        )
        mask = torch.full((config.context_length, config.context_length), float("-inf")).triu_(1)
        self.transformer = Transformer(config.text_width, config.text_layers, config.text_heads, attn_mask=mask)
        self.token_embedding = nn.Embedding(config.vocab_size, config.text_width)
        self.positional_embedding = nn.Parameter(torch.randn(config.context_length, config.text_width) * 0.01)
        self.ln_final = LayerNorm(config.text_width)
        text_std = config.text_width**-0.5
        self.text_projection = nn.Parameter(torch.randn(config.text_width, config.embed_dim) * text_std)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))
        nn.init.normal_(self.token_embedding.weight, std=0.02)

    @property
    def dtype(self) -> torch.dtype:
        return self.token_embedding.weight.dtype

    @property
    def image_projection(self) -> torch.Tensor:
        """``[W_vis, D]``: the checkpoint's ``image_projection``."""
        return self.visual.head.weight

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        """``[B, 3, H, W]`` → ``[B, D]``."""
        return self.visual(images)

    def encode_text(self, ids: torch.Tensor) -> torch.Tensor:
        """``[B, L]`` → ``[B, D]``, pooled at the highest id (end of text)."""
        x = self.token_embedding(ids) + self.positional_embedding[: ids.shape[1]]
        x = self.transformer(x.permute(1, 0, 2)).permute(1, 0, 2)
        x = self.ln_final(x)
        return x[torch.arange(x.shape[0]), ids.argmax(dim=-1)] @ self.text_projection


# --------------------------------------------------------------------------------------------
# checkpoint names ↔ model names
# --------------------------------------------------------------------------------------------
def checkpoint_to_model_keys(name: str) -> str:
    """Map a checkpoint key (without ``module.``) to the :class:`SLIP` parameter name."""
    if name == "image_projection":
        return "visual.head.weight"
    if name.startswith("visual."):
        return "visual.trunk." + name[len("visual."):]
    return name


def model_to_checkpoint_keys(name: str) -> str:
    """Inverse of :func:`checkpoint_to_model_keys`."""
    if name == "visual.head.weight":
        return "image_projection"
    if name.startswith("visual.trunk."):
        return "visual." + name[len("visual.trunk."):]
    return name


def _listing(keys: Sequence[str], limit: int = 12) -> str:
    shown = ", ".join(keys[:limit])
    return shown + (f", ... ({len(keys) - limit} more)" if len(keys) > limit else "")


def load_slip_state(model: SLIP, state: dict[str, torch.Tensor], source: str) -> None:
    """Load a checkpoint-named ``state`` into ``model``; ValueError listing every mismatch."""
    expected = {model_to_checkpoint_keys(k): v.shape for k, v in model.state_dict().items()}
    given = {k: v for k, v in state.items() if not k.startswith(UNUSED_PREFIXES)}
    missing = sorted(set(expected) - set(given))
    unexpected = sorted(set(given) - set(expected))
    shapes = [
        f"{k} (checkpoint {tuple(given[k].shape)}, model {tuple(expected[k])})"
        for k in sorted(set(expected) & set(given))
        if tuple(given[k].shape) != tuple(expected[k])
    ]
    if missing or unexpected or shapes:
        problems = [
            f"missing keys: {_listing(missing)}" if missing else "",
            f"unexpected keys: {_listing(unexpected)}" if unexpected else "",
            f"shape mismatches: {_listing(shapes)}" if shapes else "",
        ]
        raise ValueError(
            f"{source}: does not match the SLIP architecture {model.config.vision_model} "
            f"(text width {model.config.text_width}); " + "; ".join(p for p in problems if p)
        )
    model.load_state_dict({checkpoint_to_model_keys(k): v.float() for k, v in given.items()})


def read_slip_checkpoint(path: str) -> tuple[dict[str, torch.Tensor], str | None]:
    """``(state_dict without 'module.', args.model or None)`` of a SLIP checkpoint file."""
    from pathlib import Path

    if not Path(path).is_file():
        raise FileNotFoundError(f"checkpoint {path!r} does not exist")
    try:
        with torch.serialization.safe_globals([argparse.Namespace]):
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ValueError(
            f"{path}: cannot read as a SLIP checkpoint with torch.load(weights_only=True) ({exc}). If it is a "
            "trusted file with other pickled objects, re-save just its weights: "
            "torch.save({'state_dict': torch.load(p, weights_only=False)['state_dict']}, out)"
        ) from exc
    args = obj.get("args") if isinstance(obj, dict) else None
    state = obj.get("state_dict", obj) if isinstance(obj, dict) else obj
    if not isinstance(state, dict) or not state or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{path}: expected a dict with a 'state_dict' of parameter tensors")
    state = {k[len("module."):] if k.startswith("module.") else k: v for k, v in state.items()}
    arch = getattr(args, "model", None) if not isinstance(args, dict) else args.get("model")
    return state, arch


def _check_args_model(model_name: str, args_model: str | None, path: str) -> None:
    if args_model is None:
        return
    if args_model.startswith("SIMCLR"):
        raise ValueError(f"{path}: {args_model} is an image-only SimCLR model; inversion needs a text encoder")
    match = _ARGS_MODEL.fullmatch(args_model)
    if match is None:
        log.info("%s: unrecognised args.model %r; relying on the key and shape check", path, args_model)
        return
    trained_as = f"SLIP-ViT-{match.group(2)}-16"
    if trained_as in SLIP_ARCHITECTURES and trained_as != model_name:
        raise ValueError(f"{path}: checkpoint was trained as {args_model} ({trained_as}), not {model_name}")


def slip_preprocess(resolution: int = 224) -> Callable:
    """SLIP's evaluation transform: resize, centre crop, RGB, tensor, ImageNet mean/std."""
    from torchvision import transforms

    return transforms.Compose([
        transforms.Resize(resolution, interpolation=transforms.InterpolationMode.BILINEAR),
        transforms.CenterCrop(resolution),
        _to_rgb,
        transforms.ToTensor(),
        transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD),
    ])


def _to_rgb(image):  # module-level so that the transform pickles (DataLoader workers)
    return image.convert("RGB")


class SLIPTokenizer:
    """CLIP BPE with start/end tokens, truncated to the context with a forced end-of-text: → ``[B, L]``."""

    def __init__(self, context_length: int = 77) -> None:
        from clip.simple_tokenizer import SimpleTokenizer

        self.bpe = SimpleTokenizer()
        self.context_length = context_length
        self.sot = self.bpe.encoder["<|startoftext|>"]
        self.eot = self.bpe.encoder["<|endoftext|>"]

    def __call__(self, texts: Sequence[str]) -> torch.Tensor:
        """``texts`` (B strings) → ids ``[B, L]``; a text cut at ``L`` ends with the end-of-text token.

        As the SLIP tokenizer vendored by the reference (miccunifi/Cross-the-Gap
        ``src/SLIP/tokenizer.py``, ``__call__``): the last kept position is overwritten with the
        end-of-text id, so the text tower (pooled at the highest id) pools there, not at a word token.
        """
        out = torch.zeros(len(texts), self.context_length, dtype=torch.long)
        for i, text in enumerate(texts):
            tokens = [self.sot] + self.bpe.encode(text) + [self.eot]
            if len(tokens) > self.context_length:
                tokens = tokens[: self.context_length]
                tokens[-1] = self.eot
            out[i, : len(tokens)] = torch.tensor(tokens)
        return out


@register_backend("slip", name_prefixes=("SLIP",))
def _load_slip(model_name: str, pretrained: str | None) -> tuple[nn.Module, Callable, SLIPTokenizer]:
    if model_name not in SLIP_ARCHITECTURES:
        raise ValueError(f"unknown SLIP architecture {model_name!r}; known: {sorted(SLIP_ARCHITECTURES)}")
    config = SLIP_ARCHITECTURES[model_name]
    if pretrained is not None:
        state, args_model = read_slip_checkpoint(pretrained)
        _check_args_model(model_name, args_model, pretrained)
    model = SLIP(config)
    if pretrained is None:
        log.warning("no SLIP checkpoint given for %s: random weights", model_name)
    else:
        load_slip_state(model, state, pretrained)
    resolution = model.visual.trunk.patch_embed.img_size[0]
    return model, slip_preprocess(resolution), SLIPTokenizer(config.context_length)


# --------------------------------------------------------------------------------------------
# towers: the CLIP-style text side and the timm trunk/head vision side
# --------------------------------------------------------------------------------------------
@register_text_tower(SLIP)
def slip_text_tower(model: SLIP) -> TextTower:
    """:class:`~crossgap.models.openai_tower.OpenAITextTower` (same parameter names as ``clip.model.CLIP``)."""
    return OpenAITextTower(model)


@register_vision_tower(SLIPVisual)
def slip_vision_tower(visual: SLIPVisual) -> VisionTower:
    """:class:`~crossgap.models.timm_tower.TimmVisionTower` (``trunk`` / ``head``, as open_clip's ``TimmModel``)."""
    return TimmVisionTower(visual)


@register_projection("text", SLIP)
def slip_text_projection(model: SLIP) -> LinearProjection:
    return from_parameter(model, "text_projection", "text_projection")


@register_projection("image", SLIPVisual)
def slip_vision_projection(visual: SLIPVisual) -> LinearProjection:
    """SLIP's ``image_projection``: a :class:`MatrixProjection` module, observed at its input."""
    return LinearProjection(visual.head.weight, None, visual.head, "visual.head (SLIP image_projection)")
