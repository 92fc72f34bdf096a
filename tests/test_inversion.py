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


# --------------------------------------------------------------------------------- per-sample fp16 loss scaling
def _fake_encode(width: int, blow_up: dict[int, set[int]]):
    """Features = the tokens' mean over positions; at step s the samples in ``blow_up[s]`` overflow (inf)."""
    calls = {"step": 0}

    def encode(tokens):  # [B, T, W] -> [B, W]
        out = tokens.mean(dim=1)
        bad = blow_up.get(calls["step"], set())
        if bad:
            mask = torch.zeros(out.shape[0], 1)
            mask[sorted(bad)] = float("inf")
            out = out + mask * out
        calls["step"] += 1
        return out

    return encode


def test_per_sample_scaler_skips_only_the_overflowing_samples_step_and_counts_it():
    """CPU test of the fp16 path's mechanism: sample 1 overflows at steps 2 and 5. It skips exactly those two
    steps (tokens equal a run of the same sample without them); samples 0 and 2 are untouched by it."""
    from crossgap.inversion import PerSampleScaler, _optimise

    torch.manual_seed(0)
    width, steps = 6, 8
    targets, init = torch.randn(3, width), torch.randn(3, 2, width) * 0.02
    common = dict(steps=steps, learning_rate=0.05, weight_decay=0.01, precision="fp32", desc="t", progress=False)
    scaler = PerSampleScaler(3)
    tokens, losses, _, skipped = _optimise(targets, init, _fake_encode(width, {2: {1}, 5: {1}}), scaler=scaler,
                                           **common)
    assert skipped.tolist() == [0, 2, 0]
    assert scaler.scale.tolist() == [2.0**16, 2.0**14, 2.0**16]  # halved twice for sample 1 only
    clean, clean_losses, _, none = _optimise(targets, init, _fake_encode(width, {}), scaler=PerSampleScaler(3),
                                             **common)
    assert none.tolist() == [0, 0, 0]
    torch.testing.assert_close(tokens[[0, 2]], clean[[0, 2]], rtol=0, atol=1e-6)
    assert not torch.allclose(tokens[1], clean[1])
    # sample 1 alone, its two overflowing steps simply not taken: 6 updates of plain AdamW
    param = torch.nn.Parameter(init[1].clone())
    opt = torch.optim.AdamW([param], lr=0.05, weight_decay=0.01)
    target = torch.nn.functional.normalize(targets[1], dim=-1)
    for step in range(steps):
        loss = 1 - (torch.nn.functional.normalize(param.mean(0), dim=-1) * target).sum()
        opt.zero_grad()
        loss.backward()
        if step not in (2, 5):
            opt.step()
    torch.testing.assert_close(tokens[1], param.detach(), rtol=0, atol=1e-6)
    # without a scaler (fp32, the CPU default) the batch runs as one parameter and nothing is counted
    plain = _optimise(targets, init, _fake_encode(width, {}), **common)
    torch.testing.assert_close(plain[0], clean, rtol=0, atol=1e-6)
    assert plain[3].tolist() == [0, 0, 0]


def test_per_sample_scaler_grows_after_clean_steps():
    from crossgap.inversion import PerSampleScaler

    scaler = PerSampleScaler(2, growth_interval=3)
    for finite in ([True, True], [True, False], [True, True], [True, True], [True, True]):
        scaler.update(torch.tensor(finite))
    # sample 0: 3 clean steps -> doubled once (then 2 more clean); sample 1: halved, then 3 clean -> doubled
    assert scaler.scale.tolist() == [2.0**17, 2.0**16]
    assert scaler.skipped.tolist() == [0, 1]


def test_the_callers_initial_tokens_are_not_updated_in_place(tiny_models):
    from crossgap.inversion import oti

    model = tiny_models["open_clip-vit"]
    init = torch.randn(2, 1, model.text_token_embedding_dim) * 0.02
    before = init.clone()
    oti(torch.randn(2, 32), model, steps=2, init=init, progress=False)
    assert torch.equal(init, before)
