"""OTI and OVI: convergence, determinism, per-sample independence, shapes."""

from __future__ import annotations

import pytest
import torch

from crossgap import oti, oti_features, ovi, ovi_features


@pytest.fixture(scope="module")
def targets(tiny_models):
    model = tiny_models["open_clip-vit"]
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        images = model.encode_image(torch.randn(4, 3, 32, 32, generator=gen))
        texts = model.encode_text(model.tokenizer(["a red circle", "a blue square", "a dog", "two cats"]))
    return model, images, texts


def test_oti_converges_and_reencodes(targets):
    model, images, _ = targets
    tokens, losses = oti(images, model, steps=80, seed=0, progress=False)
    assert tokens.shape == (4, 1, model.text_token_embedding_dim)
    assert losses.shape == (4, 80)
    start, end = losses[:, 0].mean(), losses[:, -1].mean()
    assert end < 0.5 * start, (start, end)
    # the re-encoded features are what the last loss measured (up to one more update step)
    feats = oti_features(tokens, model)
    cos = torch.nn.functional.cosine_similarity(feats, images)
    assert float((1 - cos).mean()) <= float(end) + 0.05


def test_ovi_converges_and_reencodes(targets):
    model, _, texts = targets
    tokens, losses = ovi(texts, model, num_pseudo_tokens=2, steps=80, seed=0, progress=False)
    assert tokens.shape == (4, 2, model.visual_token_embedding_dim)
    start, end = losses[:, 0].mean(), losses[:, -1].mean()
    assert end < 0.5 * start, (start, end)
    feats = ovi_features(tokens, model)
    cos = torch.nn.functional.cosine_similarity(feats, texts)
    assert float((1 - cos).mean()) <= float(end) + 0.05


@pytest.mark.parametrize("tower", ["openai-vit", "open_clip-customtext"])
def test_oti_and_ovi_run_on_every_tower(tiny_models, tower):
    model = tiny_models[tower]
    with torch.no_grad():
        feats = model.encode_image(torch.randn(2, 3, 32, 32))
    tokens, losses = oti(feats, model, num_pseudo_tokens=2, steps=30, seed=0, progress=False)
    assert tokens.shape == (2, 2, model.text_token_embedding_dim)
    assert losses[:, -1].mean() < losses[:, 0].mean()
    tokens, losses = ovi(feats, model, steps=30, seed=0, progress=False)
    assert losses[:, -1].mean() < losses[:, 0].mean()


def test_same_seed_same_tokens(targets):
    model, images, _ = targets
    a, la = oti(images, model, steps=5, seed=3, progress=False)
    b, lb = oti(images, model, steps=5, seed=3, progress=False)
    c, _ = oti(images, model, steps=5, seed=4, progress=False)
    assert torch.equal(a, b) and torch.equal(la, lb)
    assert not torch.equal(a, c)


def test_samples_are_independent_of_their_batch(targets):
    model, images, _ = targets
    # row 0 shares its initial tokens; the other rows differ: row 0's result must not change
    ab, _ = oti(images[[0, 1]], model, steps=10, seed=0, progress=False)
    ac, _ = oti(images[[0, 2]], model, steps=10, seed=0, progress=False)
    torch.testing.assert_close(ab[0], ac[0], rtol=1e-5, atol=1e-6)
    # and chunking into batches of one gives the same tokens as one batch
    whole, _ = ovi(images, model, steps=10, seed=0, progress=False)
    chunked, _ = ovi(images, model, steps=10, seed=0, batch_size=1, progress=False)
    torch.testing.assert_close(whole, chunked, rtol=1e-5, atol=1e-6)


def test_bad_inputs(targets):
    model, images, _ = targets
    with pytest.raises(ValueError, match=r"\[B, D\]"):
        oti(images[0], model, steps=1, progress=False)
    with pytest.raises(ValueError, match="exactly one"):
        oti(images, model, template_sentence="no placeholder", steps=1, progress=False)
    with pytest.raises(ValueError, match="width"):
        model.encode_with_pseudo_tokens(model.tokenize_template("a {}", 1), torch.zeros(1, 1, 3))
