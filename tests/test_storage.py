"""crossgap.storage: feature-file round trip, format check, atomic writes, ``take``."""

from __future__ import annotations

import json
import os

import pytest
import torch
from safetensors import SafetensorError
from safetensors.torch import save_file

from crossgap.storage import FeatureSet, load_feature_set, save_feature_set, take


def _fs(n: int = 4, d: int = 3, **kw) -> FeatureSet:
    gen = torch.Generator().manual_seed(0)
    return FeatureSet(torch.randn(n, d, generator=gen), [f"split/img{i}.png" for i in range(n)], **kw)


def test_round_trip_features_ids_meta_extras(tmp_path):
    tokens = torch.randn(4, 2, 5)
    losses = torch.rand(4, 7, dtype=torch.float64)
    counts = torch.arange(4, dtype=torch.int64)
    meta = {"model": "ViT-B-32/openai", "split": "test", "params": {"steps": 7, "lr": 0.01}, "nested": [1, "x"]}
    fs = _fs(meta=meta, extras={"pseudo_tokens": tokens, "losses": losses, "counts": counts})
    path = tmp_path / "sub" / "f.safetensors"  # parent folder is created
    save_feature_set(path, fs)
    back = load_feature_set(path)
    assert back.ids == fs.ids
    assert back.features.dtype == torch.float32
    assert torch.equal(back.features, fs.features)
    assert back.meta == meta
    assert set(back.extras) == {"pseudo_tokens", "losses", "counts"}
    assert torch.equal(back.extras["pseudo_tokens"], tokens)
    # extras keep their dtype (only 'features' is cast to float32)
    assert back.extras["losses"].dtype == torch.float64 and torch.equal(back.extras["losses"], losses)
    assert back.extras["counts"].dtype == torch.int64 and torch.equal(back.extras["counts"], counts)


def test_features_are_stored_as_float32_on_cpu(tmp_path):
    fs = FeatureSet(torch.tensor([[1.5, -2.0]], dtype=torch.float64), ["a"])
    save_feature_set(tmp_path / "f.safetensors", fs)
    back = load_feature_set(tmp_path / "f.safetensors")
    assert back.features.dtype == torch.float32
    assert back.features.tolist() == [[1.5, -2.0]]


def test_three_dimensional_features_and_unicode_ids(tmp_path):
    ids = ["train/ä ö.png", "q#1", 'with "quotes"']
    fs = FeatureSet(torch.arange(3 * 2 * 4, dtype=torch.float32).reshape(3, 2, 4), ids)
    save_feature_set(tmp_path / "t.safetensors", fs)
    back = load_feature_set(tmp_path / "t.safetensors")
    assert back.ids == ids
    assert back.features.shape == (3, 2, 4)
    assert torch.equal(back.features, fs.features)


def test_empty_feature_set_round_trips(tmp_path):
    fs = FeatureSet(torch.empty(0, 6), [], extras={"losses": torch.empty(0, 3)})
    save_feature_set(tmp_path / "e.safetensors", fs)
    back = load_feature_set(tmp_path / "e.safetensors")
    assert back.ids == [] and back.features.shape == (0, 6)
    assert back.extras["losses"].shape == (0, 3)
    assert back.meta == {}


def test_meta_with_non_json_values_is_stringified(tmp_path):
    fs = _fs(meta={"path": tmp_path / "x", "n": 1})
    save_feature_set(tmp_path / "m.safetensors", fs)
    assert load_feature_set(tmp_path / "m.safetensors").meta == {"path": str(tmp_path / "x"), "n": 1}


def test_featureset_rejects_row_id_mismatch():
    with pytest.raises(ValueError, match="3 feature rows but 2 ids"):
        FeatureSet(torch.zeros(3, 2), ["a", "b"])


def test_extra_named_features_is_rejected_and_nothing_is_written(tmp_path):
    fs = _fs(extras={"features": torch.zeros(4, 3)})
    with pytest.raises(ValueError, match="features"):
        save_feature_set(tmp_path / "bad.safetensors", fs)
    assert list(tmp_path.iterdir()) == []


def test_non_crossgap_safetensors_names_the_file(tmp_path):
    path = tmp_path / "foreign.safetensors"
    save_file({"features": torch.zeros(2, 2)}, str(path), metadata={"format": "pt"})
    with pytest.raises(ValueError, match="foreign.safetensors") as err:
        load_feature_set(path)
    assert "not a crossgap feature file" in str(err.value)
    no_header = tmp_path / "noheader.safetensors"
    save_file({"features": torch.zeros(2, 2)}, str(no_header))
    with pytest.raises(ValueError, match="noheader.safetensors"):
        load_feature_set(no_header)


@pytest.mark.parametrize("kind", ["garbage", "truncated"])
def test_corrupt_file_gives_value_error_naming_the_file(tmp_path, kind):
    path = tmp_path / f"{kind}.safetensors"
    if kind == "garbage":
        path.write_bytes(b"this is not a safetensors file at all")
    else:  # a real feature file cut short (interrupted copy)
        save_feature_set(path, _fs(n=8, d=16))
        path.write_bytes(path.read_bytes()[:40])
    with pytest.raises(ValueError, match=f"{kind}.safetensors"):
        load_feature_set(path)


def test_missing_file_gives_value_error_naming_the_file(tmp_path):
    with pytest.raises(ValueError, match="absent.safetensors"):
        load_feature_set(tmp_path / "absent.safetensors")


def test_header_layout(tmp_path):
    """The documented header: format, ids and meta as JSON strings."""
    from safetensors import safe_open

    path = tmp_path / "h.safetensors"
    save_feature_set(path, _fs(n=2, meta={"b": 2, "a": 1}))
    with safe_open(str(path), framework="pt") as f:
        header = f.metadata()
        keys = set(f.keys())
    assert keys == {"features"}
    assert header["format"] == "crossgap-features/1"
    assert json.loads(header["ids"]) == ["split/img0.png", "split/img1.png"]
    assert json.loads(header["meta"]) == {"a": 1, "b": 2}


def test_atomic_write_leaves_no_temp_file_and_keeps_old_file_on_failure(tmp_path, monkeypatch):
    path = tmp_path / "f.safetensors"
    old = _fs(n=2)
    save_feature_set(path, old)
    before = path.read_bytes()

    import crossgap.storage as storage

    def failing_save(tensors, filename, metadata=None):
        with open(filename, "wb") as f:  # a half-written file under the temporary name
            f.write(b"partial")
        raise RuntimeError("disk full")

    monkeypatch.setattr(storage, "save_file", failing_save)
    with pytest.raises(RuntimeError, match="disk full"):
        save_feature_set(path, _fs(n=5))
    assert sorted(os.listdir(tmp_path)) == ["f.safetensors"]
    assert path.read_bytes() == before
    assert load_feature_set(path).ids == old.ids


def test_atomic_write_failure_without_previous_file_leaves_nothing(tmp_path, monkeypatch):
    import crossgap.storage as storage

    def failing_save(tensors, filename, metadata=None):
        raise KeyboardInterrupt

    monkeypatch.setattr(storage, "save_file", failing_save)
    with pytest.raises(KeyboardInterrupt):
        save_feature_set(tmp_path / "new.safetensors", _fs())
    assert list(tmp_path.iterdir()) == []


def test_overwrite_replaces_content(tmp_path):
    path = tmp_path / "f.safetensors"
    save_feature_set(path, _fs(n=2))
    save_feature_set(path, FeatureSet(torch.ones(1, 3), ["only"]))
    back = load_feature_set(path)
    assert back.ids == ["only"] and torch.equal(back.features, torch.ones(1, 3))
    assert sorted(os.listdir(tmp_path)) == ["f.safetensors"]


def test_take_returns_rows_in_requested_order():
    fs = FeatureSet(torch.arange(5, dtype=torch.float32)[:, None].repeat(1, 2), list("abcde"))
    rows = take(fs, ["d", "a", "d", "e"], "where.safetensors")
    assert rows[:, 0].tolist() == [3.0, 0.0, 3.0, 4.0]
    assert rows.shape == (4, 2)
    assert take(fs, [], "w").shape == (0, 2)


def test_take_works_on_3d_features():
    fs = FeatureSet(torch.arange(3 * 2 * 2, dtype=torch.float32).reshape(3, 2, 2), ["x", "y", "z"])
    assert torch.equal(take(fs, ["z", "x"], "w"), fs.features[[2, 0]])


def test_take_missing_ids_key_error_names_the_file_and_ids():
    fs = FeatureSet(torch.zeros(2, 2), ["a", "b"])
    with pytest.raises(KeyError) as err:
        take(fs, ["a", "zz", "b", "yy"], "data/features/x.safetensors")
    msg = str(err.value)
    assert "data/features/x.safetensors" in msg
    assert "2 ids are missing" in msg
    assert "zz" in msg and "yy" in msg
