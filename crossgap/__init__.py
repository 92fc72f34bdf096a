"""crossgap: modality inversion (OTI / OVI) for CLIP-like models, as a cached data pipeline.

Public API (imported lazily so that ``import crossgap`` and the CLI start fast)::

    from crossgap import load_clip, oti, ovi, evaluate_retrieval
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "load_clip": "crossgap.models",
    "CLIPWrapper": "crossgap.models",
    "PLACEHOLDER": "crossgap.models",
    "oti": "crossgap.inversion",
    "ovi": "crossgap.inversion",
    "oti_features": "crossgap.inversion",
    "ovi_features": "crossgap.inversion",
    "evaluate_retrieval": "crossgap.metrics",
    "evaluate_zero_shot": "crossgap.metrics",
    "build_classifier": "crossgap.metrics",
    "FeatureSet": "crossgap.storage",
    "load_feature_set": "crossgap.storage",
    "save_feature_set": "crossgap.storage",
    "import_reference": "crossgap.interop",
}

__all__ = sorted(_EXPORTS) + ["__version__"]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'crossgap' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
