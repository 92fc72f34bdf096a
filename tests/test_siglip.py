"""SigLIP-style models: the timm ViT vision tower, the bidirectional text tower, local HF tokenizers.

A tiny SigLIP-like config (``tests/model_configs/test-siglip-tiny.json``: timm ViT with attention
pool, no class token; text without causal mask pooled at the last position) is saved with a tiny
SentencePiece-style (Unigram + Metaspace) tokenizer built here, so nothing is downloaded.  Two
tokenizers are tried: one with a ``▁£`` piece (the placeholder is one token) and one that splits
it into ``▁`` + ``£`` (crossgap drops the boundary piece).
"""

from __future__ import annotations

from pathlib import Path

import open_clip
import pytest
import timm
import torch
from timm.models.vision_transformer import VisionTransformer

from crossgap import load_clip, oti, ovi
from crossgap.models.base import CLIPWrapper, PatchesUnsupported
from crossgap.models.timm_tower import TimmVisionTower
from crossgap.models.tokenizers import PlaceholderTokenizer, set_tokenizer_path, split_pretrained_dir
from crossgap.models.towers import build_text_tower, build_vision_tower
from test_pseudo_tokens import assert_image_exact, assert_text_exact

WORDS = "a photo of on the grass big red dog cat".split()
TINY_VIT = dict(img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=2)


def _register_tiny_vit(name: str, **overrides) -> None:
    """Register a tiny timm ViT as ``name`` (open_clip's TimmModel creates trunks by name)."""

    def entrypoint(pretrained: bool = False, **kwargs) -> VisionTransformer:
        builder_only = ("pretrained_cfg", "pretrained_cfg_overlay", "cache_dir")
        kwargs = {k: v for k, v in kwargs.items() if k not in builder_only}
        model = VisionTransformer(**{**TINY_VIT, **overrides, **kwargs})
        model.pretrained_cfg = model.default_cfg = {}  # what timm's builder attaches
        return model

    entrypoint.__name__ = name
    entrypoint.__module__ = __name__
    timm.models.register_model(entrypoint)


# SigLIP's ViT: no class token, attention-pool ('map') head
_register_tiny_vit("crossgap_test_vit_siglip_tiny", class_token=False, global_pool="map", act_layer="gelu_tanh")
_register_tiny_vit("crossgap_test_vit_cls_tiny", global_pool="token")
_register_tiny_vit(
    "crossgap_test_vit_reg_tiny", reg_tokens=2, no_embed_class=True, pre_norm=True, global_pool="avg"
)
_register_tiny_vit("crossgap_test_vit_dyn_tiny", dynamic_img_size=True, global_pool="token")


def save_tokenizer(directory: Path, placeholder_piece: str | None) -> Path:
    """A T5-like SentencePiece (Unigram, Metaspace) tokenizer saved in ``directory``.

    ``placeholder_piece``: '▁£' (one piece), '£' (split into ▁ + £), or None (unknown character).
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0)] + [("\u2581" + w, -2.0) for w in WORDS]
    vocab += [("\u2581", -3.0)] + [(c, -5.0) for c in "abcdefghijklmnopqrstuvwxyz"]
    if placeholder_piece is not None:
        vocab.append((placeholder_piece, -4.0))
    tok = Tokenizer(models.Unigram(vocab, unk_id=2))
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme="always")
    tok.decoder = decoders.Metaspace(replacement="\u2581", prepend_scheme="always")
    tok.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="</s>", pad_token="<pad>", unk_token="<unk>")
    directory.mkdir(parents=True, exist_ok=True)
    fast.save_pretrained(str(directory))
    return directory


@pytest.fixture(scope="module", params=["\u2581£", "£"], ids=["one-piece", "split-piece"])
def siglip_dir(request, tmp_path_factory) -> Path:
    """A hub-like directory: random test-siglip-tiny checkpoint + tokenizer files."""
    directory = save_tokenizer(tmp_path_factory.mktemp("siglip"), request.param)
    torch.manual_seed(0)
    model = open_clip.create_model("test-siglip-tiny")
    torch.save(model.state_dict(), directory / "open_clip_pytorch_model.bin")
    return directory


@pytest.fixture(scope="module")
def siglip(siglip_dir) -> CLIPWrapper:
    return load_clip("test-siglip-tiny", siglip_dir)[0]


def test_loads_from_a_directory_with_the_tokenizer(siglip, siglip_dir):
    assert siglip.backend == "open_clip"
    assert isinstance(siglip.visual, TimmVisionTower)
    assert isinstance(siglip._tokenizer, PlaceholderTokenizer)
    state = torch.load(siglip_dir / "open_clip_pytorch_model.bin", weights_only=True)
    torch.testing.assert_close(siglip.model.state_dict()["logit_bias"], state["logit_bias"])
    ids = siglip.tokenizer("a photo of big red dog")
    assert ids.shape == (1, 16)
    assert siglip.visual.num_patches == 16 and siglip.visual_token_embedding_dim == 32


def test_text_is_exact_and_not_truncated(siglip):
    assert not siglip.text.truncatable  # bidirectional, fixed-position pooling
    assert_text_exact(siglip, "a photo of a {}.", "cat")
    assert_text_exact(siglip, "a photo of {} on the grass", "big red dog")


def test_image_is_exact(siglip):
    assert_image_exact(siglip, 32)


def test_placeholder_is_one_token(siglip):
    ids = siglip.tokenize_template("a photo of {}", 3)
    assert int((ids == siglip.placeholder_id).sum()) == 3
    tokens = siglip._tokenizer.inner.tokenizer.convert_ids_to_tokens(ids[0].tolist())
    assert tokens[:6] == ["\u2581a", "\u2581photo", "\u2581of"] + [tokens[3]] * 3
    assert tokens[6] == "</s>"


def test_oti_and_ovi_run(siglip):
    with torch.no_grad():
        feats = siglip.encode_image(torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1)))
    tokens, losses = oti(feats, siglip, num_pseudo_tokens=2, steps=15, seed=0, progress=False)
    assert tokens.shape == (2, 2, 40) and losses[:, -1].mean() < losses[:, 0].mean()
    tokens, losses = ovi(feats, siglip, num_pseudo_tokens=4, steps=15, seed=0, progress=False)
    assert tokens.shape == (2, 4, 32) and losses[:, -1].mean() < losses[:, 0].mean()


def test_set_tokenizer_path(tmp_path):
    directory = save_tokenizer(tmp_path / "tok", "\u2581£")
    set_tokenizer_path("test-siglip-tiny", directory)
    try:
        model = load_clip("test-siglip-tiny")[0]  # random weights, tokenizer from disk
        assert_text_exact(model, "a photo of a {}.", "cat")
    finally:
        set_tokenizer_path("test-siglip-tiny", None)


def test_hub_failure_names_the_offline_options(monkeypatch):
    def offline(*args, **kwargs):
        raise OSError("We couldn't connect to the hub")

    monkeypatch.setattr(open_clip, "get_tokenizer", offline)
    with pytest.raises(RuntimeError, match="set_tokenizer_path") as info:
        load_clip("test-siglip-tiny")
    assert "`pretrained`" in str(info.value)


def test_placeholder_that_is_not_a_piece_refuses_oti_only(tmp_path):
    from crossgap.models import TextTokensUnsupported

    directory = save_tokenizer(tmp_path / "tok", None)
    set_tokenizer_path("test-siglip-tiny", directory)
    try:
        model = load_clip("test-siglip-tiny")[0]  # loads: only OTI needs the placeholder
    finally:
        set_tokenizer_path("test-siglip-tiny", None)
    message = r"test-siglip-tiny: the tokenizer \w+ splits the placeholder '£' into \['▁', '<unk>'\]"
    with pytest.raises(TextTokensUnsupported, match=message):
        oti(torch.randn(1, 32), model, steps=1, progress=False)
    assert model.tokenizer("a photo of big red dog").shape == (1, 16)
    _, losses = ovi(torch.randn(2, 32), model, num_pseudo_tokens=2, steps=3, seed=0, progress=False)
    assert losses[:, -1].mean() < losses[:, 0].mean()


def test_pretrained_directory_needs_one_checkpoint(tmp_path):
    assert split_pretrained_dir("webli") == ("webli", None)
    with pytest.raises(FileNotFoundError, match="one checkpoint"):
        split_pretrained_dir(str(tmp_path))
    (tmp_path / "a.pt").write_bytes(b"")
    assert split_pretrained_dir(str(tmp_path)) == (str(tmp_path / "a.pt"), tmp_path)
    (tmp_path / "b.safetensors").write_bytes(b"")
    with pytest.raises(FileNotFoundError, match="a.pt"):
        split_pretrained_dir(str(tmp_path))
    (tmp_path / "open_clip_model.safetensors").write_bytes(b"")
    assert split_pretrained_dir(str(tmp_path))[0] == str(tmp_path / "open_clip_model.safetensors")


@pytest.mark.parametrize(
    "trunk, pool, proj",
    [
        ("crossgap_test_vit_siglip_tiny", "map", "none"),
        ("crossgap_test_vit_cls_tiny", "token", "linear"),  # class token inside the positions
        ("crossgap_test_vit_reg_tiny", "avg", "mlp"),  # register tokens, no_embed_class, norm_pre, fc_norm
        ("crossgap_test_vit_dyn_tiny", "token", "none"),  # dynamic_img_size: NHWC until _pos_embed
    ],
)
def test_timm_tower_variants_are_exact(trunk, pool, proj):
    from open_clip.timm_model import TimmModel

    torch.manual_seed(0)
    visual = TimmModel(trunk, embed_dim=32 if proj == "none" else 24, image_size=32, pool=pool, proj=proj).eval()
    tower = build_vision_tower(visual)
    assert isinstance(tower, TimmVisionTower)
    images = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        patches = tower.embed_patches(images)
        assert patches.shape == (2, 16, 32)
        torch.testing.assert_close(tower.forward_patches(patches), visual(images), rtol=1e-5, atol=1e-5)


def test_non_vit_timm_trunk_has_no_vision_tower():
    from open_clip.timm_model import TimmModel

    visual = TimmModel("test_resnet", embed_dim=16, image_size=32, pool="avg", proj="linear")
    message = (r"timm trunk timm.models.resnet.ResNet cannot take visual pseudo tokens: it is not one of the timm "
               r"families with patch tokens \(Eva, SwinTransformer, VisionTransformer, VisionTransformerRelPos\); "
               r"OVI needs a ViT")
    with pytest.raises(PatchesUnsupported, match=message):
        build_vision_tower(visual)


@pytest.mark.slow
def test_real_vit_b_16_siglip_architecture_is_exact(tmp_path):
    """The real ViT-B-16-SigLIP (random weights, built offline), with the tiny tokenizer."""
    from open_clip.tokenizer import HFTokenizer

    torch.manual_seed(0)
    model = open_clip.create_model("ViT-B-16-SigLIP").eval()
    assert type(model.visual.trunk).__name__ == "VisionTransformer" and model.visual.trunk.attn_pool is not None
    tokenizer = PlaceholderTokenizer(HFTokenizer(str(save_tokenizer(tmp_path, "£")), context_length=64,
                                                 clean="canonicalize"))
    wrapper = CLIPWrapper(model, build_text_tower(model), build_vision_tower(model.visual), tokenizer, name="ViT-B-16-SigLIP",
                          backend="open_clip")
    assert wrapper.visual.num_patches == 196 and not wrapper.text.truncatable
    with torch.no_grad():  # one pass each (ViT-B on 2 CPU cores): sentence vs pseudo tokens, image vs patches
        words = wrapper.text.embed_tokens(wrapper.tokenizer("big red dog")[:, :3])
        expected = wrapper.encode_text(wrapper.tokenizer("a photo of big red dog on the grass"))
        got = wrapper.encode_with_pseudo_tokens(wrapper.tokenize_template("a photo of {} on the grass", 3), words)
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
        image = torch.randn(1, 3, 224, 224)
        expected = wrapper.encode_image(image)
        torch.testing.assert_close(wrapper.encode_image_with_pseudo_tokens(wrapper.visual.embed_patches(image)),
                                   expected, rtol=1e-5, atol=1e-5)
