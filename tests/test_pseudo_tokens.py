"""Exactness of the pseudo-token encoders for every tower type.

Text: pseudo tokens equal to the real token embeddings of words reproduce ``encode_text`` of the
sentence with those words.  Image: P = N pseudo tokens equal to the patch embeddings of an image
reproduce ``encode_image`` of that image.
"""

from __future__ import annotations

import pytest
import torch

from crossgap import load_clip
from crossgap.models.base import expand_pseudo_patches

TOWERS = ["openai-vit", "open_clip-vit", "open_clip-customtext"]


def word_token_ids(model, words: str) -> torch.Tensor:
    """Ids of ``words`` without start/end tokens and padding."""
    ids = model.tokenizer(words)[0]
    bare = set(model.tokenizer("")[0].tolist())
    return torch.tensor([t for t in ids.tolist() if t not in bare])


def assert_text_exact(model, template: str, words: str) -> None:
    word_ids = word_token_ids(model, words)
    num = len(word_ids)
    sentence = template.format(words)
    with torch.no_grad():
        expected = model.encode_text(model.tokenizer([sentence, sentence]))
        pseudo = model.text.embed_tokens(word_ids.unsqueeze(0)).expand(2, -1, -1)
        ids = model.tokenize_template(template, num)
        got = model.encode_with_pseudo_tokens(ids, pseudo)
        got_full = model.encode_with_pseudo_tokens(ids, pseudo, truncate=False)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(got_full, expected, rtol=1e-5, atol=1e-5)


def assert_image_exact(model, resolution: int) -> None:
    images = torch.randn(2, 3, resolution, resolution, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = model.encode_image(images)
        patches = model.visual.embed_patches(images)
        assert patches.shape[1] == model.visual.num_patches
        got = model.encode_image_with_pseudo_tokens(patches)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("tower", TOWERS)
def test_text_one_pseudo_token_is_exact(tiny_models, tower):
    assert_text_exact(tiny_models[tower], "a photo of a {}.", "cat")


@pytest.mark.parametrize("tower", TOWERS)
def test_text_three_pseudo_tokens_are_exact(tiny_models, tower):
    model = tiny_models[tower]
    assert len(word_token_ids(model, "big red dog")) == 3
    assert_text_exact(model, "a photo of {} on the grass", "big red dog")


@pytest.mark.parametrize("tower", TOWERS)
def test_image_pseudo_patches_are_exact(tiny_models, tower):
    assert_image_exact(tiny_models[tower], 32)


def test_truncation_only_where_exact(tiny_models):
    assert tiny_models["openai-vit"].text.truncatable
    assert tiny_models["open_clip-vit"].text.truncatable
    # bidirectional, fixed-position pooling: every position can change the output
    assert not tiny_models["open_clip-customtext"].text.truncatable


def test_truncated_length_is_end_of_text(tiny_models):
    model = tiny_models["open_clip-vit"]
    ids = model.tokenize_template("a photo of {}", 1)
    # start, a, photo, of, £, end  -> 6 positions
    assert model.text.pool_length(ids) == 6


def test_nearest_interpolation_repeats_consecutive_blocks():
    tokens = torch.arange(2 * 4 * 3, dtype=torch.float32).reshape(2, 4, 3)
    out = expand_pseudo_patches(tokens, 16)
    assert out.shape == (2, 16, 3)
    for p in range(4):
        for n in range(4 * p, 4 * p + 4):
            torch.testing.assert_close(out[:, n], tokens[:, p])
    one = expand_pseudo_patches(tokens[:, :1], 49)
    assert torch.equal(one, tokens[:, :1].expand(-1, 49, -1))


def test_placeholder_is_one_token(tiny_models):
    for model in tiny_models.values():
        ids = model.tokenize_template("a photo of {}", 2)
        assert int((ids == model.placeholder_id).sum()) == 2
    with pytest.raises(ValueError, match="exactly one"):
        tiny_models["open_clip-vit"].tokenize_template("a photo of a cat", 1)


def test_models_are_frozen_fp32(tiny_models):
    for model in tiny_models.values():
        assert not model.training
        assert all(not p.requires_grad for p in model.parameters())
        assert all(p.dtype == torch.float32 for p in model.parameters())
        assert model.text_token_embedding_dim > 0 and model.visual_token_embedding_dim > 0
        assert model.logit_scale > 1.0


# ---- the real ViT-B/32 architecture, random weights, saved to disk -------------------------------
@pytest.fixture(scope="module")
def vit_b32_models(tmp_path_factory):
    import open_clip
    from model_helpers import build_openai_clip

    root = tmp_path_factory.mktemp("vitb32")
    openai_path = root / "ViT-B-32-openai.pt"
    model = build_openai_clip(width=768, layers=12, patch=32, resolution=224, text_width=512, embed_dim=512)
    torch.save(model.state_dict(), openai_path)
    del model
    oc_path = root / "ViT-B-32-open_clip.pt"
    torch.manual_seed(0)
    torch.save({"state_dict": open_clip.create_model("ViT-B-32").state_dict()}, oc_path)
    return {
        "openai": load_clip("ViT-B/32", openai_path)[0],
        "open_clip": load_clip("ViT-B-32", oc_path)[0],
    }


@pytest.mark.parametrize("backend", ["openai", "open_clip"])
def test_vit_b32_checkpoint_is_exact(vit_b32_models, backend):
    model = vit_b32_models[backend]
    assert model.backend == backend
    assert model.visual.num_patches == 49
    assert model.text_token_embedding_dim == 512 and model.visual_token_embedding_dim == 768
    assert_text_exact(model, "a photo of a {}.", "cat")
    assert_text_exact(model, "a photo of {} on the grass", "big red dog")
    assert_image_exact(model, 224)
