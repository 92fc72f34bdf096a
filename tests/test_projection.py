"""Pre-projection features and projection matrices of every supported tower type.

For each tower: ``encode_with_preprojection`` returns the model's own features (bit-identical)
and ``pre`` with ``pre @ W == features`` for ``W`` of ``projection_matrices``; towers without a
separable linear projection raise ``NoLinearProjectionError``.
"""

from __future__ import annotations

import copy

import open_clip
import pytest
import timm
import torch
from timm.models.vision_transformer import VisionTransformer

from crossgap.models.projection import (
    NoLinearProjectionError,
    encode_with_preprojection,
    linear_projection,
    projection_matrices,
)
from crossgap.models.slip import SLIP, SLIPConfig
from model_helpers import build_openai_clip

TEXTS = ["a photo of a dog", "red", "a big cat on the grass"]


def _register_vit(name: str) -> None:
    def entrypoint(pretrained: bool = False, **kwargs) -> VisionTransformer:
        kwargs = {k: v for k, v in kwargs.items() if k not in ("pretrained_cfg", "pretrained_cfg_overlay", "cache_dir")}
        model = VisionTransformer(**{**dict(img_size=32, patch_size=8, embed_dim=36, depth=2, num_heads=2), **kwargs})
        model.pretrained_cfg = model.default_cfg = {}
        return model

    entrypoint.__name__ = name
    entrypoint.__module__ = __name__
    timm.models.register_model(entrypoint)


_register_vit("crossgap_test_projection_vit")


def timm_clip(proj: str, proj_bias: bool = False, pool: str = "token") -> torch.nn.Module:
    """An open_clip CLIP with a timm vision tower (``timm_proj`` = linear / '' / none)."""
    torch.manual_seed(0)
    model = open_clip.model.CLIP(
        embed_dim=24,
        vision_cfg=dict(image_size=32, timm_model_name="crossgap_test_projection_vit", timm_pool=pool,
                        timm_proj=proj, timm_proj_bias=proj_bias),
        text_cfg=dict(context_length=77, vocab_size=49408, width=32, heads=2, layers=1),
    )
    for p in model.parameters():  # open_clip zero-initialises some biases: make them count
        if p.ndim == 1:
            torch.nn.init.normal_(p, std=0.1)
    return model.eval()


def slip_model() -> SLIP:
    torch.manual_seed(0)
    config = SLIPConfig(
        "vit_tiny_patch16_224", {"img_size": 32, "patch_size": 8, "embed_dim": 48, "depth": 2, "num_heads": 2},
        embed_dim=32, text_width=32, text_heads=2, text_layers=2,
    )
    return SLIP(config).eval()


def check_tower(model, x: torch.Tensor, modality: str, w: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        native = model.encode_image(x) if modality == "image" else model.encode_text(x)
    projected, pre = encode_with_preprojection(model, x, modality)
    assert torch.equal(projected, native), "the projected features must be the model's own output"
    assert pre.shape == (x.shape[0], w.shape[0])
    torch.testing.assert_close(pre @ w, native, rtol=1e-5, atol=1e-5)
    return pre


def images(n: int = 3) -> torch.Tensor:
    return torch.randn(n, 3, 32, 32, generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize("key", ["openai-vit", "open_clip-vit", "open_clip-customtext"])
def test_tiny_models(tiny_models, key):
    model = tiny_models[key]
    w_image, w_text = projection_matrices(model)
    assert w_image.dtype == w_text.dtype == torch.float32 and not w_image.requires_grad
    check_tower(model, images(), "image", w_image)
    pre = check_tower(model, model.tokenizer(TEXTS), "text", w_text)
    # the same through the third-party model
    check_tower(model.model, model.tokenizer(TEXTS), "text", w_text)
    if key == "open_clip-customtext":  # nn.Linear text projection with a bias: augmented
        layer = model.model.text.text_projection
        assert isinstance(layer, torch.nn.Linear) and layer.bias is not None
        assert w_text.shape == (layer.in_features + 1, layer.out_features)
        torch.testing.assert_close(w_text[:-1], layer.weight.T)
        torch.testing.assert_close(w_text[-1], layer.bias)
        assert torch.equal(pre[:, -1], torch.ones(len(TEXTS)))
    else:
        assert w_text.shape[0] == model.text.width


def test_openai_matrices_are_its_parameters(tiny_models):
    m = tiny_models["openai-vit"].model
    w_image, w_text = projection_matrices(tiny_models["openai-vit"])
    assert torch.equal(w_image, m.visual.proj.detach()) and torch.equal(w_text, m.text_projection.detach())


def test_slip():
    model = slip_model()
    w_image, w_text = projection_matrices(model)
    assert torch.equal(w_image, model.image_projection.detach())
    check_tower(model, images(), "image", w_image)
    ids = torch.randint(1, 1000, (3, 77))
    ids[:, 9] = 49407  # end of text: the highest id, pooled
    check_tower(model, ids, "text", w_text)


@pytest.mark.parametrize("proj, bias, where", [("linear", True, "visual.head.proj"), ("linear", False, "visual.head.proj"),
                                               ("", False, "visual.trunk.head")])
def test_timm_towers_with_a_linear_head(proj, bias, where):
    model = timm_clip(proj, bias)
    assert linear_projection(model, "image").where == where
    w_image, _ = projection_matrices(model)
    has_bias = bias or proj == ""  # timm's classifier head has a bias
    assert w_image.shape == (36 + has_bias, 24)
    pre = check_tower(model, images(), "image", w_image)
    if has_bias:
        assert torch.equal(pre[:, -1], torch.ones(3))


def test_towers_without_a_linear_projection():
    with pytest.raises(NoLinearProjectionError, match="SigLIP-style"):
        projection_matrices(timm_clip("none", pool="avg"))
    resnet = build_openai_clip(vit=False).eval()
    with pytest.raises(NoLinearProjectionError, match="ResNet"):
        encode_with_preprojection(resnet, images(), "image")
    linear_projection(resnet, "text")  # the text tower still has one
    no_proj = copy.deepcopy(timm_clip("linear"))
    no_proj.text_projection = None
    with pytest.raises(NoLinearProjectionError, match="text_projection is None"):
        linear_projection(no_proj, "text")
    with pytest.raises(ValueError, match="modality"):
        linear_projection(no_proj, "audio")


def test_something_after_the_projection_is_detected(tiny_models, monkeypatch):
    model = copy.deepcopy(tiny_models["open_clip-vit"])
    inner = model.model
    original = inner.encode_image
    monkeypatch.setattr(inner, "encode_image", lambda x: torch.tanh(original(x)) * 3)
    with pytest.raises(RuntimeError, match="something follows the projection"):
        encode_with_preprojection(model, images(), "image")


def test_projection_used_twice_is_refused(tiny_models, monkeypatch):
    model = copy.deepcopy(tiny_models["openai-vit"])
    inner = model.model
    original = inner.encode_text
    monkeypatch.setattr(inner, "encode_text", lambda ids: original(ids) + 0 * (original(ids)))
    with pytest.raises(RuntimeError, match="applied 2 times"):
        encode_with_preprojection(model, model.tokenizer(TEXTS), "text")
