"""The tower families beyond ViT + causal text: timm Eva / ViT-relpos / Swin trunks, CoCa, Hugging Face text.

Each architecture is open_clip's own config made tiny by :mod:`crossgap.models.tiny` (same tower
types, random weights, Hugging Face configs and tokenizers written locally: no hub), saved to disk
and loaded through ``crossgap.load_clip``.  Checks: a real word's embedding in the pseudo-token
slot gives ``encode_text`` of the sentence (plain forward and template encoder); an image's own
patch embeddings as pseudo patches give ``encode_image``; one optimisation step lowers the loss.
"""

from __future__ import annotations

import pytest
import torch

from crossgap import load_clip, oti, ovi
from crossgap.models.hf_tower import HFTextTower
from crossgap.models.open_clip_tower import OpenClipTextTower, OpenClipVisionTower
from crossgap.models.tiny import save_tiny
from crossgap.models.timm_eva import EvaTrunk
from crossgap.models.timm_relpos import RelPosTrunk
from crossgap.models.timm_swin import SwinTrunk
from test_pseudo_tokens import assert_image_exact, assert_text_exact, word_token_ids

# architecture -> (vision tower / trunk runner, text tower, number of patch positions of the 32 px image)
FAMILIES = {
    "EVA02-B-16": (EvaTrunk, OpenClipTextTower, 16),  # rotary embeddings, class token
    "EVA01-g-14": (EvaTrunk, OpenClipTextTower, 16),  # absolute positions only
    "PE-Core-T-16-384": (EvaTrunk, OpenClipTextTower, 16),  # rotary, class token, attention pool
    "PE-Core-bigG-14-448": (EvaTrunk, OpenClipTextTower, 16),  # rotary, no class token, attention pool
    "vit_relpos_medium_patch16_cls_224": (RelPosTrunk, OpenClipTextTower, 16),
    "swin_base_patch4_window7_224": (SwinTrunk, OpenClipTextTower, 64),  # 8 x 8 patch-embedding grid
    "coca_ViT-B-32": (OpenClipVisionTower, OpenClipTextTower, 16),  # attentional pool; CLS text pooling
    "roberta-ViT-B-32": (OpenClipVisionTower, HFTextTower, 16),  # mean pooler
    "xlm-roberta-base-ViT-B-32": (OpenClipVisionTower, HFTextTower, 16),
    "mt5-base-ViT-B-32": (OpenClipVisionTower, HFTextTower, 16),  # encoder of an encoder-decoder
    "nllb-clip-base": (OpenClipVisionTower, HFTextTower, 16),  # M2M-100 encoder, cls pooler, scaled embeddings
    "coca_roberta-ViT-B-32": (OpenClipVisionTower, HFTextTower, 16),
}


@pytest.fixture(scope="module")
def family_models(tmp_path_factory):
    root = tmp_path_factory.mktemp("families")
    cache = {}

    def get(name):
        if name not in cache:
            tiny, directory = save_tiny(name, root / name)
            cache[name] = load_clip(tiny, directory)[0]
        return cache[name]

    return get


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_family_towers_and_exact_pseudo_tokens(family_models, name):
    vision_cls, text_cls, num_patches = FAMILIES[name]
    model = family_models(name)
    runner = getattr(model.visual, "runner", model.visual)
    assert type(runner) is vision_cls and type(model.text) is text_cls
    assert model.visual.num_patches == num_patches
    assert_text_exact(model, "a photo of a {}.", "cat")
    assert_text_exact(model, "a photo of {} on the grass", "big red dog")
    assert_image_exact(model, 32)
    ids = model.tokenize_template("a photo of {} on the grass", 3)
    pseudo = model.text.embed_tokens(word_token_ids(model, "big red dog").unsqueeze(0)).expand(2, -1, -1)
    with torch.no_grad():
        expected = model.encode_text(model.tokenizer(["a photo of big red dog on the grass"] * 2))
        torch.testing.assert_close(model.template_encoder(ids, 3)(pseudo), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", ["EVA02-B-16", "PE-Core-bigG-14-448", "swin_base_patch4_window7_224", "coca_ViT-B-32",
                                  "xlm-roberta-base-ViT-B-32", "nllb-clip-base"])
def test_one_optimisation_step_lowers_the_loss(family_models, name):
    model = family_models(name)
    with torch.no_grad():
        images = model.encode_image(torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(2)))
        texts = model.encode_text(model.tokenizer(["a red dog", "a cat on the grass", "a big photo"]))
    # a small first step (Adam moves every coordinate by about the learning rate) must lower the mean loss
    _, losses = oti(images, model, num_pseudo_tokens=2, steps=2, seed=0, learning_rate=1e-3, progress=False)
    assert losses[:, 1].mean() < losses[:, 0].mean(), losses
    _, losses = ovi(texts, model, num_pseudo_tokens=4, steps=2, seed=0, learning_rate=1e-3, progress=False)
    assert losses[:, 1].mean() < losses[:, 0].mean(), losses


def test_what_makes_each_family_differ_is_present(family_models):
    """The tiny models keep the feature each family's tower must handle (else the checks above prove little)."""
    eva02, pe = family_models("EVA02-B-16").visual.runner.t, family_models("PE-Core-bigG-14-448").visual.runner.t
    assert eva02.rope is not None and eva02.cls_token is not None and eva02.attn_pool is None
    assert pe.rope is not None and pe.cls_token is None and pe.attn_pool is not None
    assert family_models("PE-Core-T-16-384").visual.runner.t.cls_token is not None
    assert family_models("EVA01-g-14").visual.runner.t.rope is None
    coca = family_models("coca_ViT-B-32")
    assert coca.text.cls_emb is not None and not coca.text.truncatable and coca.visual.v.attn_pool is not None
    assert type(coca.model).__name__ == "CoCa"
    nllb = family_models("nllb-clip-base").text
    assert type(nllb.h.transformer).__name__ == "M2M100Encoder" and nllb.embedding.embed_scale == pytest.approx(32**0.5)
    assert type(family_models("mt5-base-ViT-B-32").text.h.transformer).__name__ == "MT5Stack"
    assert type(family_models("xlm-roberta-base-ViT-B-32").text.h.pooler).__name__ == "MeanPooler"
    assert type(nllb.h.pooler).__name__ == "ClsPooler"


def test_coca_features_are_the_unnormalised_latents(family_models):
    """CoCa's encode_* normalise by default; crossgap reads the unnormalised latents, as for CLIP."""
    coca = family_models("coca_ViT-B-32")
    images = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        feats = coca.encode_image(images)
        latent, _ = coca.model.visual(images)
    torch.testing.assert_close(feats, latent)
    assert not torch.allclose(feats.norm(dim=-1), torch.ones(2))


@pytest.mark.parametrize("name, image_where, text_where", [
    ("EVA02-B-16", "visual.trunk.head", "text.text_projection"),  # custom_text: the tower is model.text
    ("swin_base_patch4_window7_224", "visual.head.proj", "text_projection"),
    ("coca_ViT-B-32", "visual.proj", "text.text_projection"),
    ("nllb-clip-base", "visual.proj", "text.proj"),  # hf_proj_type: linear
    ("xlm-roberta-base-ViT-B-32", "visual.proj", None),  # open_clip's default MLP projection: none
])
def test_final_linear_projection_is_part_of_each_family(family_models, name, image_where, text_where):
    from crossgap.models.projection import NoLinearProjectionError, encode_with_preprojection, linear_projection

    model = family_models(name)
    assert linear_projection(model, "image").where == image_where
    images = torch.randn(2, 3, 32, 32)
    projected, pre = encode_with_preprojection(model, images, "image")  # checks projected == pre @ W
    torch.testing.assert_close(projected, model.encode_image(images))
    ids = model.tokenizer(["a red dog", "a cat"])
    if text_where is None:
        message = r"Hugging Face text tower ends in a Sequential \(hf_proj_type mlp"
        with pytest.raises(NoLinearProjectionError, match=message):
            linear_projection(model, "text")
        return
    assert linear_projection(model, "text").where == text_where
    projected, pre = encode_with_preprojection(model, ids, "text")
    assert pre.shape == (2, model.text.width + (text_where == "text.proj" and model.model.text.proj.bias is not None))


def test_hugging_face_cls_pooler_with_the_transformers_pooler_output(tmp_path):
    """``hf_pooler_type: cls_pooler`` on a RoBERTa: open_clip reads the model's own pooler (dense + tanh on <s>)."""
    import json

    import open_clip

    from crossgap.models.tiny import save_tokenizer, tiny_config

    cfg = tiny_config("roberta-ViT-B-32", tmp_path)
    cfg["text_cfg"].update(hf_pooler_type="cls_pooler", hf_proj_type="linear")
    (tmp_path / "test-roberta-cls-pooler.json").write_text(json.dumps(cfg))
    open_clip.add_model_config(tmp_path / "test-roberta-cls-pooler.json")
    save_tokenizer(tmp_path, frame="<s> $A </s>")
    torch.manual_seed(0)
    torch.save(open_clip.create_model("test-roberta-cls-pooler", pretrained_text=False).state_dict(),
               tmp_path / "open_clip_pytorch_model.bin")
    model = load_clip("test-roberta-cls-pooler", tmp_path)[0]
    assert model.text.h.transformer.pooler is not None and type(model.text.h.pooler).__name__ == "ClsPooler"
    assert_text_exact(model, "a photo of {} on the grass", "big red dog")
    ids = model.tokenizer("a cat")
    assert int(ids[0, 0]) == 3  # <s>: the token the pooler reads
