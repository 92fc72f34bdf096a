"""The OTI prefix cache equals the plain full-context forward, for every causal text tower type.

The reference below is the obvious computation: embed the whole template at the full context
length, overwrite the placeholder rows with the pseudo tokens, run the library's own transformer
module with its causal mask, take the end-of-text row.  It shares no code with crossgap's towers.
"""

from __future__ import annotations

import open_clip
import pytest
import torch

from crossgap import oti, oti_features
from crossgap.models.prefix import FullTemplateEncoder, PrefixCachedEncoder
from crossgap.models.open_clip_tower import OpenClipTextTower
from test_slip import TINY, official_layout, save_checkpoint  # noqa: F401  (registers SLIP-test-tiny)

TEMPLATES = {"first": "{} in a photo", "middle": "a photo of {} on the grass", "last": "a photo of {}"}


def reference_text(model, ids: torch.Tensor, pseudo: torch.Tensor) -> torch.Tensor:
    """Full-context features ``[B, D]``: ids ``[1, L]``, pseudo tokens ``[B, R, W]``."""
    m = model.model
    text = getattr(m, "text", m)  # open_clip CustomTextCLIP keeps the text tower in .text
    ids = ids.expand(pseudo.shape[0], -1)
    x = text.token_embedding(ids).clone()
    x[ids == model.placeholder_id] = pseudo.reshape(-1, pseudo.shape[-1])
    x = x + text.positional_embedding
    if isinstance(getattr(text.transformer, "batch_first", None), bool):  # open_clip
        x = text.transformer(x, attn_mask=text.attn_mask)
    else:  # clip.model.Transformer: sequence first, mask inside the blocks
        x = text.transformer(x.permute(1, 0, 2)).permute(1, 0, 2)
    x = text.ln_final(x)[torch.arange(x.shape[0]), ids.argmax(dim=-1)]
    projection = text.text_projection
    return projection(x) if isinstance(projection, torch.nn.Linear) else x @ projection


@pytest.fixture(scope="module")
def causal_models(tiny_models, tmp_path_factory):
    from crossgap import load_clip

    state, _ = official_layout(TINY)
    slip_path = save_checkpoint(tmp_path_factory.mktemp("slip") / "slip.pt", state)
    return {
        "openai": tiny_models["openai-vit"],
        "open_clip": tiny_models["open_clip-vit"],
        "slip": load_clip("SLIP-test-tiny", slip_path)[0],
    }


def pseudo_tokens(model, batch: int, num: int, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(batch, num, model.text_token_embedding_dim, generator=gen) * 0.5


@pytest.mark.parametrize("where", sorted(TEMPLATES))
@pytest.mark.parametrize("num", [1, 3])
@pytest.mark.parametrize("tower", ["openai", "open_clip", "slip"])
def test_cached_prefix_equals_full_forward(causal_models, tower, num, where):
    model = causal_models[tower]
    ids = model.tokenize_template(TEMPLATES[where], num)
    encoder = model.template_encoder(ids, num)
    assert isinstance(encoder, PrefixCachedEncoder)
    first = int((ids[0] == model.placeholder_id).nonzero()[0])
    end = int(ids[0].argmax())  # end of text
    assert encoder.prefix_length == first
    assert encoder.positions == end - first + 1
    tokens = pseudo_tokens(model, 3, num)
    with torch.no_grad():
        torch.testing.assert_close(encoder(tokens), reference_text(model, ids, tokens), rtol=1e-5, atol=1e-5)


def test_placeholder_positions_of_the_templates(causal_models):
    model = causal_models["openai"]
    # <sot> £ in a photo <eot>: one cached position; <sot> a photo of £ <eot>: four cached, two run
    assert model.template_encoder(model.tokenize_template(TEMPLATES["first"], 1), 1).prefix_length == 1
    last = model.template_encoder(model.tokenize_template(TEMPLATES["last"], 1), 1)
    assert (last.prefix_length, last.positions) == (4, 2)


@pytest.mark.parametrize("tower", ["openai", "open_clip", "slip"])
def test_gradients_reach_only_the_pseudo_tokens(causal_models, tower):
    model = causal_models[tower]
    ids = model.tokenize_template(TEMPLATES["middle"], 3)
    encoder = model.template_encoder(ids, 3)
    target = torch.randn(2, model.encode_text(ids).shape[-1], generator=torch.Generator().manual_seed(1))
    grads = []
    for encode in (encoder, lambda t: reference_text(model, ids, t)):
        tokens = pseudo_tokens(model, 2, 3).requires_grad_(True)
        (1 - torch.cosine_similarity(encode(tokens), target)).sum().backward()
        grads.append(tokens.grad)
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-4, atol=1e-6)
    assert all(p.grad is None for p in model.parameters())
    cached = [t for kv in encoder.past for t in kv] + [encoder.suffix]
    assert not any(t.requires_grad for t in cached)


def test_bidirectional_tower_keeps_the_full_length(tiny_models):
    model = tiny_models["open_clip-customtext"]  # no causal mask, pooled at the last position
    assert model.text.causal_stack() is None
    ids = model.tokenize_template(TEMPLATES["last"], 2)
    encoder = model.template_encoder(ids, 2)
    assert isinstance(encoder, FullTemplateEncoder) and encoder.positions == model.text.context_length
    tokens = pseudo_tokens(model, 2, 2)
    text = model.model.text
    x = text.token_embedding(ids.expand(2, -1)).clone()
    x[ids.expand(2, -1) == model.placeholder_id] = tokens.reshape(-1, tokens.shape[-1])
    x = text.ln_final(text.transformer(x + text.positional_embedding))[:, -1]
    with torch.no_grad():
        torch.testing.assert_close(encoder(tokens), text.text_projection(x), rtol=1e-5, atol=1e-5)


def test_layer_scale_blocks_are_exact():
    torch.manual_seed(0)
    holder = open_clip.transformer.TextTransformer(
        context_length=20, vocab_size=100, width=32, heads=4, layers=3, ls_init_value=0.5, output_dim=16
    ).eval()
    tower = OpenClipTextTower(holder)
    assert tower.causal_stack() is not None
    ids = torch.tensor([[98, 5, 7, 50, 8, 99] + [0] * 14])  # placeholder id 50 at position 3, end of text 99
    encoder = PrefixCachedEncoder(tower.causal_stack(), tower.embed_tokens, ids[:, :6], 50, 1)
    tokens = torch.randn(2, 1, 32)
    x = holder.token_embedding(ids.expand(2, -1)).clone()
    x[:, 3] = tokens[:, 0]
    with torch.no_grad():
        x = holder.ln_final(holder.transformer(x + holder.positional_embedding, attn_mask=holder.attn_mask))
        torch.testing.assert_close(encoder(tokens), x[:, 5] @ holder.text_projection, rtol=1e-5, atol=1e-5)


def test_placeholder_after_end_of_text_is_refused(causal_models):
    model = causal_models["openai"]
    ids = model.tokenize_template(TEMPLATES["last"], 1)
    with pytest.raises(ValueError, match="placeholder"):
        model.template_encoder(ids, 2)


def test_oti_and_oti_features_follow_the_full_forward(causal_models, monkeypatch):
    """OTI through the cache equals a plain AdamW loop over the full forward; re-encoding too."""
    model = causal_models["open_clip"]
    template = TEMPLATES["middle"]
    calls = []
    forward = PrefixCachedEncoder.forward
    monkeypatch.setattr(PrefixCachedEncoder, "forward", lambda self, t: calls.append(1) or forward(self, t))
    with torch.no_grad():
        targets = model.encode_image(torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(2)))
    tokens, losses = oti(targets, model, template_sentence=template, num_pseudo_tokens=2, steps=6, seed=5,
                         progress=False)
    assert len(calls) == 6

    from crossgap.inversion import initial_tokens

    ids = model.tokenize_template(template, 2)
    ref = torch.nn.Parameter(initial_tokens(3, 2, model.text_token_embedding_dim, 5))
    opt = torch.optim.AdamW([ref], lr=2e-2, weight_decay=0.01)
    unit = torch.nn.functional.normalize(targets, dim=-1)
    ref_losses = []
    for _ in range(6):
        per = 1 - (torch.nn.functional.normalize(reference_text(model, ids, ref), dim=-1) * unit).sum(-1)
        opt.zero_grad()
        per.sum().backward()
        opt.step()
        ref_losses.append(per.detach())
    torch.testing.assert_close(losses, torch.stack(ref_losses, 1), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(tokens, ref.detach(), rtol=1e-4, atol=1e-5)
    with torch.no_grad():
        torch.testing.assert_close(oti_features(tokens, model, template_sentence=template, batch_size=2),
                                   reference_text(model, ids, tokens), rtol=1e-5, atol=1e-5)
    assert len(calls) == 6 + 2  # two chunks re-encoded through the cache


@pytest.mark.parametrize("transpose", [False, True])
def test_both_weight_layouts_are_exact(causal_models, transpose):
    """The CPU default (transposed weight copies) and the plain F.linear path (CUDA's) agree."""
    model = causal_models["openai"]
    ids = model.tokenize_template(TEMPLATES["middle"], 1)
    default = model.template_encoder(ids, 1)
    assert default.layouts is not None  # on by default on the CPU
    encoder = PrefixCachedEncoder(model.text.causal_stack(), model.text.embed_tokens,
                                  ids[:, : model.text.pool_length(ids)], model.placeholder_id, 1,
                                  transpose_weights=transpose)
    assert (encoder.layouts is not None) == transpose
    grads = []
    for encode in (encoder, lambda t: reference_text(model, ids, t)):
        tokens = pseudo_tokens(model, 2, 1).requires_grad_(True)
        out = encode(tokens)
        out.square().sum().backward()
        grads.append((out.detach(), tokens.grad))
    torch.testing.assert_close(grads[0][0], grads[1][0], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(grads[0][1], grads[1][1], rtol=1e-4, atol=1e-6)


def test_compiled_oti_equals_eager(causal_models):
    """oti(compiled=True) (torch.compile of the per-step encoder, dynamic batch) changes nothing but speed."""
    model = causal_models["open_clip"]
    with torch.no_grad():
        targets = model.encode_image(torch.randn(5, 3, 32, 32, generator=torch.Generator().manual_seed(3)))
    eager, eager_losses = oti(targets, model, steps=3, seed=1, batch_size=3, progress=False)
    compiled, compiled_losses = oti(targets, model, steps=3, seed=1, batch_size=3, progress=False, compiled=True)
    torch.testing.assert_close(compiled, eager, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(compiled_losses, eager_losses, rtol=1e-4, atol=1e-6)
