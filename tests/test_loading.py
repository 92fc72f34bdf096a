"""load_clip: backends, checkpoint formats, inference of the backend, its error messages, the tower registry."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml
from torch import nn

import crossgap.models.loading as loading
import crossgap.models.towers as towers
from crossgap import load_clip
from crossgap.models import PatchesUnsupported, TextTokensUnsupported, infer_backend
from model_helpers import build_openai_clip

SCHEMA = Path(__file__).resolve().parents[1] / "workflow" / "schemas" / "params.schema.yaml"


@pytest.mark.parametrize(
    "name, backend",
    [("ViT-B/32", "openai"), ("ViT-L/14@336px", "openai"), ("RN50", "openai"),
     ("ViT-B-32", "open_clip"), ("ViT-B-16-SigLIP", "open_clip"), ("hf-hub:org/model", "open_clip")],
)
def test_infer_backend(name, backend):
    assert infer_backend(name) == backend


def test_torchscript_archive_loads_like_the_eager_model(tmp_path):
    eager = build_openai_clip().eval()
    images = torch.randn(2, 3, 32, 32)
    import clip

    text = clip.tokenize(["a red circle", "a blue square"])
    traced = torch.jit.trace(eager, (images, text), check_trace=False)
    path = tmp_path / "tiny-openai-jit.pt"
    traced.save(str(path))
    model, name, preprocess = load_clip("ViT-tiny/8", path, backend="openai")
    assert name == "ViT-tiny/8" and callable(preprocess)
    with torch.no_grad():
        torch.testing.assert_close(model.encode_image(images), eager.encode_image(images))
        torch.testing.assert_close(model.encode_text(model.tokenizer(["a red circle", "a blue square"])),
                                   eager.encode_text(text))


def test_wrapped_state_dict_with_module_prefix(tmp_path):
    eager = build_openai_clip().eval()
    path = tmp_path / "wrapped.pt"
    torch.save({"state_dict": {f"module.{k}": v for k, v in eager.state_dict().items()}}, path)
    model = load_clip("ViT-tiny/8", path, backend="openai")[0]
    images = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(model.encode_image(images), eager.encode_image(images))


def test_fp16_checkpoint_is_returned_fp32(tmp_path):
    eager = build_openai_clip().half()
    path = tmp_path / "half.pt"
    torch.save(eager.state_dict(), path)
    model = load_clip("ViT-tiny/8", path, backend="openai")[0]
    assert {p.dtype for p in model.parameters()} == {torch.float32}


def test_resnet_tower_gives_clear_ovi_error(tmp_path):
    path = tmp_path / "rn.pt"
    torch.save(build_openai_clip(vit=False, width=64, resolution=64).state_dict(), path)
    model = load_clip("RN-tiny", path, backend="openai")[0]
    assert model.visual is None
    with pytest.raises(PatchesUnsupported, match="ResNet"):
        model.encode_image_with_pseudo_tokens(torch.zeros(1, 1, 64))
    from crossgap import ovi

    with pytest.raises(PatchesUnsupported, match="OVI needs a ViT"):
        ovi(torch.randn(1, 32), model, steps=1)
    # OTI still works on a ResNet model: only the text tower is needed
    from crossgap import oti

    tokens, losses = oti(torch.randn(1, 32), model, steps=2, progress=False)
    assert tokens.shape == (1, 1, 64)


def test_openai_download_failure_says_how_to_pass_a_checkpoint(monkeypatch):
    import clip

    def offline(*args, **kwargs):
        raise OSError("Temporary failure in name resolution")

    monkeypatch.setattr(clip, "load", offline)
    with pytest.raises(RuntimeError, match="pass a local checkpoint") as info:
        load_clip("ViT-B/32")
    assert "pretrained=" in str(info.value)


def test_openai_checkpoint_of_the_wrong_architecture(openai_tiny_checkpoint):
    with pytest.raises(ValueError, match="ViT-B/32 expects"):
        load_clip("ViT-B/32", openai_tiny_checkpoint)


def test_missing_and_corrupt_checkpoints(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_clip("ViT-B/32", tmp_path / "nope.pt")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_clip("test-vit-tiny", str(tmp_path / "nope.pt"))
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="bad.pt"):
        load_clip("ViT-B/32", bad)
    with pytest.raises(ValueError, match="bad.pt"):
        load_clip("test-vit-tiny", str(bad))


def test_unknown_names_and_backends():
    with pytest.raises(ValueError, match="unknown open_clip architecture"):
        load_clip("ViT-Nope-1")
    with pytest.raises(ValueError, match="unknown backend"):
        load_clip("ViT-B-32", backend="nope")
    with pytest.raises(ValueError, match="unknown OpenAI model"):
        load_clip("ViT-Z/3", backend="openai")


def test_backends_are_a_registry():
    assert {"openai", "open_clip"} <= set(loading.list_backends())


def test_schema_backend_enum_is_the_backend_registry():
    """params.yaml's ``models.<slug>.backend`` accepts exactly the registered backends."""
    schema = yaml.safe_load(SCHEMA.read_text())
    enum = schema["properties"]["models"]["additionalProperties"]["properties"]["backend"]["enum"]
    assert sorted(enum) == loading.list_backends()


class _Base(nn.Module):
    pass


class _Sub(_Base):
    pass


class _SubSub(_Sub):  # no factory of its own: the nearest registered class in its MRO serves it
    pass


@pytest.mark.parametrize("kind", ["text", "vision"])
@pytest.mark.parametrize("subclass_first", [True, False])
def test_most_specific_registered_class_wins(monkeypatch, kind, subclass_first):
    register, build, registry = {
        "text": (towers.register_text_tower, towers.build_text_tower, "_TEXT_TOWERS"),
        "vision": (towers.register_vision_tower, towers.build_vision_tower, "_VISION_TOWERS"),
    }[kind]
    monkeypatch.setattr(towers, registry, {})

    def base_factory(module):
        return ("base", module)

    def sub_factory(module):
        return ("sub", module)

    order = [(_Sub, sub_factory), (_Base, base_factory)]
    for cls, factory in order if subclass_first else order[::-1]:
        assert register(cls)(factory) is factory
    base, sub, subsub = _Base(), _Sub(), _SubSub()
    assert build(base) == ("base", base)
    assert build(sub) == ("sub", sub)
    assert build(subsub) == ("sub", subsub)
    with pytest.raises(ValueError, match="already registered"):
        register(_Sub)(base_factory)
    assert build(sub) == ("sub", sub)


def test_unregistered_modules_name_their_class(monkeypatch):
    message = "text tower .*_Base cannot take textual pseudo tokens: no pseudo-token text tower is registered"
    with pytest.raises(TextTokensUnsupported, match=message):
        towers.build_text_tower(_Base())
    with pytest.raises(PatchesUnsupported, match="_Base cannot take visual pseudo tokens: OVI needs a ViT"):
        towers.build_vision_tower(_Base())


def test_tokenizer_accepts_str_and_list(tiny_models):
    model = tiny_models["open_clip-vit"]
    one = model.tokenizer("a cat")
    two = model.tokenizer(["a cat", "a dog"])
    assert one.dtype == torch.long and one.shape == (1, 77) and two.shape == (2, 77)
    assert torch.equal(one[0], two[0])


# ---- load first, refuse per method ------------------------------------------------------------
@pytest.fixture(scope="module")
def open_clip_resnet(tmp_path_factory):
    """The tiny open_clip ModifiedResNet model (``tests/model_configs/test-rn-tiny.json``) from a checkpoint."""
    import open_clip

    path = tmp_path_factory.mktemp("rn") / "rn.pt"
    torch.manual_seed(0)
    torch.save(open_clip.create_model("test-rn-tiny").state_dict(), path)
    return load_clip("test-rn-tiny", path)[0], path


def test_open_clip_resnet_loads_with_ovi_refused_and_oti_exact(open_clip_resnet):
    from crossgap import oti, ovi
    from test_pseudo_tokens import assert_text_exact

    model, _ = open_clip_resnet
    assert model.visual is None
    message = "vision tower open_clip.modified_resnet.ModifiedResNet cannot take visual pseudo tokens"
    with pytest.raises(PatchesUnsupported, match=message):
        model.visual_token_embedding_dim
    with pytest.raises(PatchesUnsupported, match=message):
        ovi(torch.randn(1, 32), model, steps=1)
    assert_text_exact(model, "a photo of {} on the grass", "big red dog")
    _, losses = oti(model.encode_image(torch.randn(2, 3, 32, 32)), model, steps=3, progress=False)
    assert losses[:, -1].mean() < losses[:, 0].mean()


def test_a_text_tower_without_a_factory_refuses_oti_only(monkeypatch, open_clip_resnet):
    """A model whose text tower has no factory loads: OTI is refused naming the class, OVI works."""
    from crossgap import oti, ovi

    monkeypatch.setattr(towers, "_TEXT_TOWERS", {})
    model = load_clip("test-vit-tiny")[0]
    assert model.text is None and model.visual is not None
    with pytest.raises(TextTokensUnsupported, match="text tower open_clip.model.CLIP cannot take textual pseudo"):
        oti(torch.randn(1, 32), model, steps=1, progress=False)
    with pytest.raises(TextTokensUnsupported, match="open_clip.model.CLIP"):
        model.tokenize_template("a photo of {}", 1)
    _, losses = ovi(torch.randn(2, 32), model, num_pseudo_tokens=2, steps=3, progress=False)
    assert losses[:, -1].mean() < losses[:, 0].mean()
    torch.testing.assert_close(model.encode_text(model.tokenizer("a cat")), model.model.encode_text(
        model.tokenizer("a cat")))  # native features unaffected


def test_build_failure_of_a_hugging_face_text_tower_is_not_a_download(monkeypatch):
    """Nothing pretrained was asked for: the error names the Hugging Face config that could not be read."""
    import transformers

    def offline(*args, **kwargs):
        raise OSError("We couldn't connect to 'https://huggingface.co' to load the files")

    monkeypatch.setattr(transformers.AutoConfig, "from_pretrained", offline)
    with pytest.raises(RuntimeError) as info:
        load_clip("xlm-roberta-base-ViT-B-32")
    message = str(info.value)
    assert "could not build the architecture xlm-roberta-base-ViT-B-32 (OSError: We couldn't connect" in message
    assert "no pretrained weights were involved" in message and "'xlm-roberta-base' (text_cfg.hf_model_name)" in message
    assert "download" not in message.split("no pretrained")[0]


def test_unknown_tag_and_mismatched_checkpoint_say_so(tmp_path, open_clip_resnet):
    with pytest.raises(ValueError, match="'nope' is neither a pretrained tag of ViT-B-32 nor an existing file; "
                                         "known tags: .*'openai'"):
        load_clip("ViT-B-32", "nope")
    _, rn_checkpoint = open_clip_resnet
    with pytest.raises(ValueError, match=r"rn.pt: cannot load as a test-vit-tiny checkpoint \(RuntimeError: Error"):
        load_clip("test-vit-tiny", rn_checkpoint)
