"""Tests for the tiny CLIP pretraining on the Synthetic dataset."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import open_clip
import pytest
import torch

from crossgap.synthetic_generator import generate_synthetic
from crossgap.training import (
    augment,
    clip_loss,
    load_images,
    load_split,
    nt_xent,
    register_model_configs,
    resolve_data_dir,
    train_tiny_clip,
    zero_shot_accuracy,
)

register_model_configs()

# A micro config (same tower types as crossgap-tiny, far fewer FLOPs) keeps the training tests fast.
MICRO = "crossgap-test-micro"
MICRO_CFG = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "head_width": 16, "patch_size": 8},
    "text_cfg": {"context_length": 24, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}


@pytest.fixture(scope="module", autouse=True)
def micro_config(tmp_path_factory: pytest.TempPathFactory) -> None:
    if MICRO not in open_clip.list_models():
        cfg_dir = tmp_path_factory.mktemp("cfg")
        (cfg_dir / f"{MICRO}.json").write_text(json.dumps(MICRO_CFG))
        open_clip.add_model_config(cfg_dir)


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate_synthetic(tmp_path_factory.mktemp("syn"), num_train=64, num_test=16, seed=0)


@pytest.fixture(scope="module")
def trained(data: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, dict]:
    out = tmp_path_factory.mktemp("run")
    ckpt, loss_csv = out / "model.pt", out / "loss.csv"
    summary = train_tiny_clip(
        data.parent, ckpt, model_name=MICRO, epochs=4, batch_size=16, lr=1e-3, weight_decay=0.0, seed=0,
        device="cpu", loss_csv=loss_csv, epoch_csv=out / "epochs.csv", num_threads=2,
    )
    return ckpt, loss_csv, summary


def test_default_config_and_tokenizer_context_length(tmp_path: Path) -> None:
    tok = open_clip.get_tokenizer("crossgap-tiny")
    model, _, preprocess = open_clip.create_model_and_transforms("crossgap-tiny")
    assert type(model) is open_clip.CLIP
    assert tok(["a photo of a red circle."]).shape == (1, model.context_length) == (1, 24)
    assert model.visual.image_size == (32, 32)
    path = tmp_path / "tiny.pt"
    torch.save({"epoch": 0, "name": "crossgap-tiny", "state_dict": model.state_dict()}, path)
    reloaded = open_clip.create_model("crossgap-tiny", pretrained=str(path))
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), reloaded.state_dict().values()))


def test_loss_decreases_and_csv(trained: tuple[Path, Path, dict]) -> None:
    ckpt, loss_csv, summary = trained
    assert summary["steps"] == 16 and summary["num_train"] == 64
    losses = summary["epoch_losses"]
    assert len(losses) == 4 and all(math.isfinite(x) for x in losses)
    assert losses[-1] < losses[0] - 0.05
    with open(loss_csv) as fh:
        rows = list(csv.DictReader(fh))
    assert list(rows[0]) == ["epoch", "step", "loss"] and len(rows) == 16
    assert [int(r["step"]) for r in rows] == list(range(16))
    with open(loss_csv.parent / "epochs.csv") as fh:
        assert len(list(csv.DictReader(fh))) == 4
    assert not [p for p in ckpt.parent.iterdir() if p.name.startswith(".")]  # atomic writes cleaned up


def test_checkpoint_reloads_exactly(trained: tuple[Path, Path, dict], data: Path) -> None:
    ckpt, _, _ = trained
    raw = torch.load(ckpt, weights_only=True)
    assert raw["name"] == MICRO and raw["epoch"] == 4
    model, _, preprocess = open_clip.create_model_and_transforms(MICRO, pretrained=str(ckpt))
    model.eval()
    fresh = open_clip.create_model(MICRO)
    fresh.load_state_dict(raw["state_dict"])
    fresh.eval()
    tokens = open_clip.get_tokenizer("crossgap-tiny")(["a photo of a red circle.", "a blue ring at the top."])
    images = load_images(data, [r for r, _, _ in load_split(data, "test")[:4]], preprocess)
    with torch.no_grad():
        assert torch.equal(model.encode_image(images), fresh.encode_image(images))
        assert torch.equal(model.encode_text(tokens), fresh.encode_text(tokens))
        assert not torch.allclose(model.encode_text(tokens), open_clip.create_model(MICRO).encode_text(tokens))
    acc = zero_shot_accuracy(model, open_clip.get_tokenizer(MICRO), preprocess, data, device="cpu")
    assert 0.0 <= acc <= 100.0


def test_deterministic_and_fixed_temperature(data: Path, tmp_path: Path) -> None:
    kwargs = dict(model_name=MICRO, epochs=1, batch_size=32, lr=1e-3, temperature=1.0, seed=5, device="cpu", num_threads=2)
    a = train_tiny_clip(data, tmp_path / "a.pt", **kwargs)
    b = train_tiny_clip(data, tmp_path / "b.pt", **kwargs)
    assert a["epoch_losses"] == b["epoch_losses"]
    assert a["final_temperature"] == pytest.approx(1.0)
    sa = torch.load(tmp_path / "a.pt", weights_only=True)["state_dict"]
    sb = torch.load(tmp_path / "b.pt", weights_only=True)["state_dict"]
    assert all(torch.equal(sa[k], sb[k]) for k in sa)


def test_intramodal_term_runs(data: Path, tmp_path: Path) -> None:
    s = train_tiny_clip(data, tmp_path / "m.pt", model_name=MICRO, epochs=1, batch_size=32,
                        intramodal_weight=1.0, device="cpu")
    assert s["steps"] == 2 and math.isfinite(s["final_loss"])
    # the training-only SimCLR head is not part of the open_clip checkpoint (strict load)
    open_clip.create_model(MICRO, pretrained=str(tmp_path / "m.pt"))


def test_loss_helpers() -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.nn.functional.normalize(torch.randn(8, 16, generator=g), dim=-1)
    assert clip_loss(x, x, torch.tensor(100.0)) < clip_loss(x, x.roll(1, 0), torch.tensor(100.0))
    assert nt_xent(x, x) < nt_xent(x, x.roll(1, 0))
    imgs = torch.randn(4, 3, 16, 16, generator=g)
    assert augment(imgs, g).shape == imgs.shape


def test_resolve_data_dir(data: Path, tmp_path: Path) -> None:
    assert resolve_data_dir(data) == resolve_data_dir(data.parent) == data
    with pytest.raises(FileNotFoundError):
        resolve_data_dir(tmp_path)
