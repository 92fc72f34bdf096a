"""Model loading and pseudo-token encoders.

Importing this package registers crossgap's own open_clip model configs (``model_configs/``,
e.g. the embedded default ``crossgap-tiny``) so that ``open_clip`` and :func:`load_clip` know them,
and imports every tower family module (one per family; the rule is in :mod:`crossgap.models.towers`)
so that their towers and backends are registered.
"""

from pathlib import Path

import open_clip

from crossgap.models.base import (
    PLACEHOLDER,
    CLIPWrapper,
    PatchesUnsupported,
    TextTokensUnsupported,
    TextTower,
    TowerUnsupported,
    VisionTower,
    expand_pseudo_patches,
)
from crossgap.models.loading import infer_backend, list_backends, load_clip, register_backend
from crossgap.models.towers import register_text_tower, register_vision_tower
from crossgap.models import open_clip_tower, openai_tower, slip, timm_tower  # noqa: F401  register towers/backends
from crossgap.models import hf_tower, timm_eva, timm_relpos, timm_swin  # noqa: F401  register towers and trunks

MODEL_CONFIG_DIR = Path(__file__).parent / "model_configs"
open_clip.add_model_config(MODEL_CONFIG_DIR)

__all__ = [
    "PLACEHOLDER",
    "CLIPWrapper",
    "PatchesUnsupported",
    "TextTokensUnsupported",
    "TowerUnsupported",
    "TextTower",
    "VisionTower",
    "expand_pseudo_patches",
    "infer_backend",
    "list_backends",
    "load_clip",
    "register_backend",
    "register_text_tower",
    "register_vision_tower",
    "MODEL_CONFIG_DIR",
]
