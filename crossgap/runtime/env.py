"""What a job loads and records about where it ran: the model of a ``models:`` entry, the device and precision.

Library code (:mod:`crossgap.interop`) and the steps (:mod:`crossgap.steps`) share these, so they live
below both.
"""

from __future__ import annotations

import os
import platform
from typing import Any, Mapping

import torch


def load_model(spec: Mapping[str, Any], device: str | None = None):
    """``(model, preprocess)`` for a ``models:`` entry of params.yaml."""
    from crossgap.models import load_clip  # heavy (open_clip, clip): only jobs that need a model import it

    model, _, preprocess = load_clip(
        spec["architecture"], spec.get("pretrained"), backend=spec.get("backend"), device=device
    )
    return model, preprocess


def runtime_meta() -> dict[str, Any]:
    """Where a job ran, for its output's metadata: ``device``, ``host``, ``torch`` (and ``gpu``,
    ``cuda_visible_devices`` on CUDA)."""
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    meta = {"device": dev, "host": platform.node(), "torch": torch.__version__}
    if dev == "cuda":
        meta["gpu"] = torch.cuda.get_device_name(0)
        meta["cuda_visible_devices"] = os.environ.get("CUDA_VISIBLE_DEVICES")
    return meta


def precision_meta(device: torch.device, precision: str) -> dict[str, str]:
    """``precision`` (what ran: fp32 on the CPU whatever was asked) and ``precision_requested``."""
    from crossgap.utils import effective_precision

    return {"precision": effective_precision(device, precision), "precision_requested": precision}
