"""SLIP backend: checkpoint layout, reference encoders, exactness of both towers, clear load errors.

The test checkpoint is written key by key in the layout of the official SLIP checkpoints
(``module.``-prefixed ``state_dict`` of a timm ViT ``visual``, a CLIP-style ``transformer`` etc.,
``image_mlp`` SSL head, and ``args``), at small widths, from modules built independently of
:class:`crossgap.models.slip.SLIP`.
"""

from __future__ import annotations

import argparse
from collections import OrderedDict

import pytest
import timm
import torch
from torch import nn

from crossgap import load_clip, oti, ovi
from crossgap.models import infer_backend
from crossgap.models.slip import SLIP, SLIP_ARCHITECTURES, SLIPConfig, SLIPTokenizer, register_slip_architecture
from crossgap.models.timm_tower import TimmVisionTower
from crossgap.models.openai_tower import OpenAITextTower
from test_pseudo_tokens import assert_image_exact, assert_text_exact

TINY = SLIPConfig(
    "vit_tiny_patch16_224",
    {"img_size": 32, "patch_size": 8, "embed_dim": 48, "depth": 2, "num_heads": 2},
    embed_dim=32, text_width=32, text_heads=2, text_layers=2,
)
register_slip_architecture("SLIP-test-tiny", TINY)


def official_layout(config: SLIPConfig, seed: int = 0) -> tuple[dict[str, torch.Tensor], dict[str, nn.Module]]:
    """A random state dict named as SLIP's ``models.SLIP`` names it, and the modules it came from."""
    from clip.model import LayerNorm, Transformer

    torch.manual_seed(seed)
    length, width = config.context_length, config.text_width
    parts = {
        "visual": timm.create_model(config.vision_model, num_classes=0, **config.vision_kwargs),
        "transformer": Transformer(width, config.text_layers, config.text_heads,
                                   attn_mask=torch.full((length, length), float("-inf")).triu_(1)),
        "token_embedding": nn.Embedding(config.vocab_size, width),
        "ln_final": LayerNorm(width),
        "image_mlp": nn.Sequential(OrderedDict([
            ("layer1", nn.Linear(48, 64)), ("bn1", nn.BatchNorm1d(64)), ("relu1", nn.ReLU()),
            ("layer2", nn.Linear(64, 64)), ("bn2", nn.BatchNorm1d(64)), ("relu2", nn.ReLU()),
            ("layer3", nn.Linear(64, 16)),
        ])),
    }
    vision_width = parts["visual"].num_features
    tensors = {
        "positional_embedding": torch.randn(length, width) * 0.01,
        "image_projection": torch.randn(vision_width, config.embed_dim) * vision_width**-0.5,
        "text_projection": torch.randn(width, config.embed_dim) * width**-0.5,
        "logit_scale": torch.tensor(2.9),
    }
    state = {f"{name}.{k}": v for name, module in parts.items() for k, v in module.state_dict().items()}
    state.update(tensors)
    parts["tensors"] = tensors
    return state, parts


def reference_encoders(parts):
    """SLIP's ``encode_image`` / ``encode_text``, written against the raw parts."""

    def encode_image(images):
        return parts["visual"](images) @ parts["tensors"]["image_projection"]

    def encode_text(ids):
        x = parts["token_embedding"](ids) + parts["tensors"]["positional_embedding"]
        x = parts["transformer"](x.permute(1, 0, 2)).permute(1, 0, 2)
        x = parts["ln_final"](x)
        return x[torch.arange(x.shape[0]), ids.argmax(dim=-1)] @ parts["tensors"]["text_projection"]

    return encode_image, encode_text


def save_checkpoint(path, state, model="SLIP_TINY"):
    args = argparse.Namespace(model=model, ssl_mlp_dim=64, ssl_emb_dim=16, betas=(0.9, 0.98))
    torch.save({"epoch": 1, "state_dict": {f"module.{k}": v for k, v in state.items()}, "args": args,
                "best_acc1": 1.5}, path)
    return path


@pytest.fixture(scope="module")
def official(tmp_path_factory):
    state, parts = official_layout(TINY)
    for module in parts.values():
        if isinstance(module, nn.Module):
            module.eval()
    path = save_checkpoint(tmp_path_factory.mktemp("slip") / "slip_tiny.pt", state)
    return path, state, parts


@pytest.fixture(scope="module")
def slip(official):
    return load_clip("SLIP-test-tiny", official[0])[0]


def test_backend_is_inferred_and_towers_registered(slip):
    assert infer_backend("SLIP-ViT-B-16") == "slip" and infer_backend("SLIP-ViT-L-16") == "slip"
    assert slip.backend == "slip" and isinstance(slip.model, SLIP)
    assert isinstance(slip.text, OpenAITextTower) and slip.text.truncatable
    assert isinstance(slip.visual, TimmVisionTower) and slip.visual.num_patches == 16
    assert slip.text_token_embedding_dim == 32 and slip.visual_token_embedding_dim == 48
    assert slip.logit_scale == pytest.approx(float(torch.tensor(2.9).exp()))


def test_matches_the_reference_encoders(slip, official):
    _, _, parts = official
    encode_image, encode_text = reference_encoders(parts)
    images = torch.randn(2, 3, 32, 32)
    ids = slip.tokenizer(["a photo of a cat", "two dogs on the grass"])
    with torch.no_grad():
        torch.testing.assert_close(slip.encode_image(images), encode_image(images))
        torch.testing.assert_close(slip.encode_text(ids), encode_text(ids))
    torch.testing.assert_close(slip.model.image_projection, parts["tensors"]["image_projection"])


def test_pseudo_tokens_are_exact(slip):
    assert_text_exact(slip, "a photo of a {}.", "cat")
    assert_text_exact(slip, "a photo of {} on the grass", "big red dog")
    assert_image_exact(slip, 32)


def test_oti_and_ovi_run(slip):
    with torch.no_grad():
        feats = slip.encode_image(torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0)))
    tokens, losses = oti(feats, slip, num_pseudo_tokens=2, steps=15, seed=0, progress=False)
    assert tokens.shape == (2, 2, 32) and losses[:, -1].mean() < losses[:, 0].mean()
    tokens, losses = ovi(feats, slip, num_pseudo_tokens=2, steps=15, seed=0, progress=False)
    assert tokens.shape == (2, 2, 48) and losses[:, -1].mean() < losses[:, 0].mean()


def test_tokenizer_and_preprocessing_are_slips():
    import clip
    from PIL import Image

    tok = SLIPTokenizer()
    assert torch.equal(tok(["a photo of a cat"]), clip.tokenize(["a photo of a cat"]).long())
    long = tok([" ".join(["cat"] * 100)])[0]
    assert long.shape == (77,) and int(long[-1]) == tok.eot  # truncated with a forced end of text
    _, _, preprocess = load_clip("SLIP-test-tiny")
    x = preprocess(Image.new("RGB", (48, 40), (255, 0, 0)))
    assert x.shape == (3, 32, 32)
    torch.testing.assert_close(x[:, 0, 0], torch.tensor([(1 - 0.485) / 0.229, -0.456 / 0.224, -0.406 / 0.225]))


def test_plain_state_dict_without_prefix_loads(tmp_path, official):
    _, state, parts = official
    path = tmp_path / "plain.pt"
    torch.save({k: v for k, v in state.items() if not k.startswith("image_mlp.")}, path)
    model = load_clip("SLIP-test-tiny", path)[0]
    images = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(model.encode_image(images), reference_encoders(parts)[0](images))


def test_mismatching_checkpoint_lists_every_problem(tmp_path, official):
    _, state, _ = official
    bad = dict(state)
    del bad["visual.norm.weight"], bad["text_projection"]
    bad["visual.head.weight"] = torch.zeros(10, 48)
    bad["image_projection"] = torch.zeros(48, 16)
    with pytest.raises(ValueError) as info:
        load_clip("SLIP-test-tiny", save_checkpoint(tmp_path / "bad.pt", bad))
    message = str(info.value)
    assert "bad.pt" in message
    assert "missing keys: text_projection, visual.norm.weight" in message
    assert "unexpected keys: visual.head.weight" in message
    assert "shape mismatches: image_projection (checkpoint (48, 16), model (48, 32))" in message


def test_checkpoint_of_another_model_or_file(tmp_path, official):
    _, state, _ = official
    with pytest.raises(ValueError, match=r"trained as SLIP_VITL16 \(SLIP-ViT-L-16\), not SLIP-ViT-B-16"):
        load_clip("SLIP-ViT-B-16", save_checkpoint(tmp_path / "l16.pt", state, model="SLIP_VITL16"))
    with pytest.raises(ValueError, match="image-only SimCLR"):
        load_clip("SLIP-ViT-B-16", save_checkpoint(tmp_path / "simclr.pt", state, model="SIMCLR_VITB16"))
    with pytest.raises(ValueError, match="unknown SLIP architecture"):
        load_clip("SLIP-ViT-H-14", tmp_path / "l16.pt")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_clip("SLIP-ViT-B-16", tmp_path / "nope.pt")
    (tmp_path / "junk.pt").write_bytes(b"junk")
    with pytest.raises(ValueError, match="junk.pt"):
        load_clip("SLIP-ViT-B-16", tmp_path / "junk.pt")


@pytest.mark.parametrize("name, width, depth", [("SLIP-ViT-B-16", 768, 12), ("SLIP-ViT-L-16", 1024, 24)])
def test_real_architectures_have_the_official_keys(name, width, depth):
    with torch.device("meta"):  # shapes only: nothing is allocated
        model = SLIP(SLIP_ARCHITECTURES[name])
    from crossgap.models.slip import model_to_checkpoint_keys

    shapes = {model_to_checkpoint_keys(k): tuple(v.shape) for k, v in model.state_dict().items()}
    assert shapes["visual.pos_embed"] == (1, 197, width)
    assert shapes["visual.patch_embed.proj.weight"] == (width, 3, 16, 16)
    assert shapes[f"visual.blocks.{depth - 1}.attn.qkv.weight"] == (3 * width, width)
    assert shapes["image_projection"] == (width, 512) and shapes["text_projection"] == (512, 512)
    assert shapes["token_embedding.weight"] == (49408, 512) and shapes["positional_embedding"] == (77, 512)
    assert shapes["transformer.resblocks.11.attn.in_proj_weight"] == (1536, 512)
    assert shapes["logit_scale"] == ()
    # timm ViT with num_classes=0: cls/pos/patch (4) + 12 per block + final norm (2); text: 12 per block + 7
    assert sum(k.startswith("visual.") for k in shapes) == 4 + 12 * depth + 2
    assert sum(not k.startswith("visual.") for k in shapes) == 12 * 12 + 7


def test_long_text_ends_with_end_of_text_and_is_pooled_there(slip, official):
    """The reference's SLIP tokenizer: ``tokens = tokens[:77]; tokens[-1] = eot`` (src/SLIP/tokenizer.py)."""
    import clip

    tok = SLIPTokenizer()
    words = [f"word{i % 37}" for i in range(200)]
    text = " ".join(words)
    bpe = tok.bpe.encode(text)
    assert len(bpe) > 200  # every "wordN" is more than one BPE token: well over the context
    ids = tok([text, "a cat"])
    assert ids.shape == (2, 77)
    assert int(ids[0, 0]) == tok.sot and int(ids[0, 76]) == tok.eot
    assert ids[0, 1:76].tolist() == bpe[:75]  # 75 text tokens between start and the forced end
    assert int(ids[0].argmax()) == 76 and (ids[0, :76] != tok.eot).all()
    assert torch.equal(ids, clip.tokenize([text, "a cat"], truncate=True).long())  # CLIP's truncate=True agrees
    # the tower pools at position 76, the forced end of text, and matches the reference encoder there
    _, encode_text = reference_encoders(official[2])
    parts = official[2]
    with torch.no_grad():
        pooled = slip.encode_text(ids[:1])
        x = parts["token_embedding"](ids[:1]) + parts["tensors"]["positional_embedding"]
        x = parts["ln_final"](parts["transformer"](x.permute(1, 0, 2)).permute(1, 0, 2))
        at_end = x[0, 76] @ parts["tensors"]["text_projection"]
        at_word = x[0, 75] @ parts["tensors"]["text_projection"]
    torch.testing.assert_close(pooled[0], at_end)
    torch.testing.assert_close(pooled, encode_text(ids[:1]))
    assert not torch.allclose(pooled[0], at_word)
