"""Shared fixtures: tiny random-init models of every supported tower type, built offline.

Models are registered from ``tests/model_configs`` (open_clip) or built with the ``clip``
package's own classes (OpenAI), saved to disk, and loaded back through ``crossgap.load_clip``
exactly as real checkpoints would be.
"""

from __future__ import annotations

import logging
from pathlib import Path

import open_clip
import pytest
import torch

import crossgap.models  # noqa: F401  (registers crossgap's model configs)
from model_helpers import build_openai_clip

TEST_CONFIGS = Path(__file__).parent / "model_configs"
open_clip.add_model_config(TEST_CONFIGS)

torch.set_num_threads(2)
logging.getLogger("root").setLevel(logging.ERROR)  # open_clip warns about random init via the root logger


@pytest.fixture(scope="session")
def openai_tiny_checkpoint(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("ckpt") / "openai-tiny.pt"
    torch.save(build_openai_clip().state_dict(), path)
    return path


@pytest.fixture(scope="session")
def open_clip_tiny_checkpoint(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("ckpt") / "open-clip-tiny.pt"
    torch.manual_seed(1)
    model = open_clip.create_model("test-vit-tiny")
    torch.save({"epoch": 1, "name": "test-vit-tiny", "state_dict": model.state_dict()}, path)
    return path


@pytest.fixture(scope="session")
def tiny_models(openai_tiny_checkpoint, open_clip_tiny_checkpoint):
    """One loaded wrapper per supported tower type, keyed by a short id."""
    from crossgap import load_clip

    return {
        "openai-vit": load_clip("ViT-tiny/8", openai_tiny_checkpoint, backend="openai")[0],
        "open_clip-vit": load_clip("test-vit-tiny", open_clip_tiny_checkpoint)[0],
        "open_clip-customtext": load_clip("test-customtext-tiny")[0],
    }


@pytest.fixture(scope="module")
def tiny_spec(open_clip_tiny_checkpoint) -> dict:
    """The model entry (``backend``, ``architecture``, ``pretrained``) of the saved tiny open_clip ViT."""
    return {"backend": "open_clip", "architecture": "test-vit-tiny", "pretrained": str(open_clip_tiny_checkpoint)}


@pytest.fixture(scope="module")
def tiny_model_and_preprocess(tiny_spec):
    """``crossgap.runtime.env.load_model`` of :func:`tiny_spec`: (wrapper, preprocess), one per test module."""
    from crossgap.runtime.env import load_model

    return load_model(tiny_spec)


@pytest.fixture(scope="module")
def synthetic_manifest(tmp_path_factory) -> Path:
    """The synthetic generator's smallest dataset (4 train / 3 test images, 2 captions each), prepared."""
    from crossgap.datasets import prepare_manifest
    from crossgap.synthetic_generator import generate_synthetic

    root = tmp_path_factory.mktemp("synthetic")
    generate_synthetic(root, num_train=4, num_test=3, image_size=32, captions_per_image=2)
    out = root / "manifest.parquet"
    prepare_manifest("synthetic", root, out)
    return out
