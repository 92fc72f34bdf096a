"""crossgap.steps.features and crossgap.steps.inversion: file-to-file steps (features, prompts, sharded inversion,
gather)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from crossgap.datasets import prepare_manifest, read_manifest
from crossgap.plan import protocol_split
from crossgap.runtime.env import load_model
from crossgap.steps.features import extract_step, prompts_step, query_crops
from crossgap.steps.inversion import gather_step, inversion_targets, invert_shard_step, shard_bounds
from crossgap.storage import FeatureSet, load_feature_set, save_feature_set

from fixtures_image_benchmarks import make_revisited

EMBED_DIM = 32  # test-vit-tiny
OTI_PARAMS = {"steps": 2, "learning_rate": 0.02, "weight_decay": 0.01, "num_pseudo_tokens": 1,
              "seed": 7, "template": "a photo of {}"}
OVI_PARAMS = {"steps": 2, "learning_rate": 0.02, "weight_decay": 0.01, "num_pseudo_tokens": 2,
              "seed": 11}


@pytest.fixture
def cached_model(monkeypatch, tiny_spec, tiny_model_and_preprocess):
    """``load_model`` returns the module's already loaded model (the real loader is tested once)."""
    from crossgap.steps import features, inversion

    calls = []

    def fake_load_model(model_spec, device=None):
        assert dict(model_spec) == tiny_spec
        calls.append(model_spec)
        return tiny_model_and_preprocess

    for steps in (features, inversion):
        monkeypatch.setattr(steps, "load_model", fake_load_model)
    return calls


@pytest.fixture(scope="module")
def bbx_manifest(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("revisited")
    fx = make_revisited(root, "roxford5k")
    rng = np.random.default_rng(0)
    for name in fx.qimlist:  # textured queries, so that a crop changes the features
        Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(fx.folder / "jpg" / f"{name}.jpg")
    out = root / "roxford5k_bbx.parquet"
    prepare_manifest("roxford5k_bbx", root, out)
    return out


def _targets(path: Path, n: int, seed: int = 0) -> list[str]:
    gen = torch.Generator().manual_seed(seed)
    ids = [f"row{i}" for i in range(n)]
    save_feature_set(path, FeatureSet(torch.randn(n, EMBED_DIM, generator=gen), ids, meta={"kind": "features"}))
    return ids


# --------------------------------------------------------------------------------- shard_bounds
@pytest.mark.parametrize(
    "n, num_shards, shard_size, expected",
    [
        (10, 3, 4, [(0, 4), (4, 8), (8, 10)]),  # the planned case: ceil(10 / 4) = 3 shards
        (12, 3, 4, [(0, 4), (4, 8), (8, 12)]),  # exact fit
        (14, 3, 4, [(0, 4), (4, 8), (8, 14)]),  # more targets than planned: the last shard takes the rest
        (5, 3, 4, [(0, 4), (4, 5), (5, 5)]),  # fewer than planned: trailing shards are empty
        (0, 1, 4, [(0, 0)]),
        (3, 1, 4096, [(0, 3)]),
    ],
)
def test_shard_bounds_are_fixed_size_blocks_with_the_rest_in_the_last(n, num_shards, shard_size, expected):
    assert [shard_bounds(n, s, num_shards, shard_size) for s in range(num_shards)] == expected


@pytest.mark.parametrize("shard, num_shards", [(-1, 2), (2, 2), (0, 0), (5, 3)])
def test_shard_bounds_rejects_bad_shard(shard, num_shards):
    with pytest.raises(ValueError, match="out of range"):
        shard_bounds(10, shard, num_shards, 4)


def test_protocol_split():
    assert protocol_split("all") == "*"
    assert protocol_split("test") == "test"


# --------------------------------------------------------------------------------- features
def test_extract_images_equal_model_encoding_of_preprocessed_images(synthetic_manifest, tiny_spec,
                                                                     tiny_model_and_preprocess, tmp_path):
    df, meta = read_manifest(synthetic_manifest)
    out = tmp_path / "image_train.safetensors"
    extract_step(manifest=str(synthetic_manifest), model_slug="tiny/test", model_spec=tiny_spec, split="train",
                 modality="image", out=str(out), batch_size=3, progress=False)
    fs = load_feature_set(out)
    rows = df[(df["modality"] == "image") & (df["split"] == "train")]
    assert len(rows) == 4
    assert fs.ids == rows["id"].tolist()
    model, preprocess = tiny_model_and_preprocess
    images = torch.stack([preprocess(Image.open(Path(meta["root"]) / p).convert("RGB")) for p in rows["path"]])
    with torch.no_grad():
        expected = model.encode_image(images).float()
    assert fs.features.shape == (4, EMBED_DIM)
    torch.testing.assert_close(fs.features, expected, rtol=1e-4, atol=1e-5)
    assert fs.meta["kind"] == "features" and fs.meta["dataset"] == "synthetic"
    assert fs.meta["model"] == "tiny/test" and fs.meta["split"] == "train" and fs.meta["modality"] == "image"
    assert fs.meta["model_spec"] == tiny_spec and fs.meta["device"] == "cpu"


def test_extract_all_splits_texts_equal_model_encoding(synthetic_manifest, tiny_spec, tiny_model_and_preprocess, cached_model,
                                                      tmp_path):
    df, _ = read_manifest(synthetic_manifest)
    out = tmp_path / "text_all.safetensors"
    extract_step(manifest=str(synthetic_manifest), model_slug="m", model_spec=tiny_spec, split="all",
                 modality="text", out=str(out), batch_size=5, progress=False)
    fs = load_feature_set(out)
    rows = df[df["modality"] == "text"]
    assert len(rows) == 14  # (4 + 3) images x 2 captions
    assert fs.ids == rows["id"].tolist()
    model, _ = tiny_model_and_preprocess
    with torch.no_grad():
        expected = model.encode_text(model.tokenizer(rows["text"].tolist())).float()
    torch.testing.assert_close(fs.features, expected, rtol=1e-4, atol=1e-5)
    assert fs.meta["split"] == "all" and fs.meta["modality"] == "text"


def test_extract_empty_split_is_an_error_naming_the_manifest(synthetic_manifest, tiny_spec, cached_model, tmp_path):
    out = tmp_path / "x.safetensors"
    with pytest.raises(ValueError, match="manifest.parquet.*no image rows in split 'val'"):
        extract_step(manifest=str(synthetic_manifest), model_slug="m", model_spec=tiny_spec, split="val",
                     modality="image", out=str(out), progress=False)
    assert not out.exists()


def test_prompts_step_is_class_major(synthetic_manifest, tiny_spec, tiny_model_and_preprocess, cached_model, tmp_path):
    from crossgap.features import class_prompts

    _, meta = read_manifest(synthetic_manifest)
    out = tmp_path / "prompts.safetensors"
    prompts_step(manifest=str(synthetic_manifest), model_slug="m", model_spec=tiny_spec, out=str(out))
    fs = load_feature_set(out)
    classnames, templates = meta["classnames"], meta["templates"]
    assert fs.ids == [f"class{c}/template{t}" for c in range(len(classnames)) for t in range(len(templates))]
    model, _ = tiny_model_and_preprocess
    prompts = class_prompts(classnames, templates)
    assert prompts[0] == templates[0].format(classnames[0])
    with torch.no_grad():
        expected = model.encode_text(model.tokenizer(prompts)).float()
    torch.testing.assert_close(fs.features, expected, rtol=1e-4, atol=1e-5)
    assert fs.meta["num_classes"] == len(classnames) and fs.meta["num_templates"] == len(templates)


def test_query_crops(bbx_manifest, synthetic_manifest):
    df, meta = read_manifest(bbx_manifest)
    queries = df[df["split"] == "query"]
    database = df[df["split"] == "database"]
    boxes = query_crops(df, meta, queries)
    assert boxes == [(1.0, 2.0, 12.5, 14.0), (0.0, 0.0, 8.0, 8.0)]
    # all rows: boxes for the queries, None (full image) for the database
    assert query_crops(df, meta, df) == boxes + [None] * len(database)
    # no query among the rows, or a protocol that does not crop: no boxes at all
    assert query_crops(df, meta, database) is None
    sdf, smeta = read_manifest(synthetic_manifest)
    assert query_crops(sdf, smeta, sdf[sdf["modality"] == "image"]) is None


def test_extract_crops_revisited_queries_to_their_box(bbx_manifest, tiny_spec, tiny_model_and_preprocess, cached_model,
                                                      tmp_path):
    df, meta = read_manifest(bbx_manifest)
    out = tmp_path / "image_query.safetensors"
    extract_step(manifest=str(bbx_manifest), model_slug="m", model_spec=tiny_spec, split="query", modality="image",
                 out=str(out), progress=False)
    fs = load_feature_set(out)
    queries = df[df["split"] == "query"]
    assert fs.ids == queries["id"].tolist()
    model, preprocess = tiny_model_and_preprocess
    boxes = [(1.0, 2.0, 12.5, 14.0), (0.0, 0.0, 8.0, 8.0)]
    with torch.no_grad():
        cropped = model.encode_image(torch.stack([
            preprocess(Image.open(Path(meta["root"]) / p).convert("RGB").crop(box))
            for p, box in zip(queries["path"], boxes)]))
        full = model.encode_image(torch.stack([
            preprocess(Image.open(Path(meta["root"]) / p).convert("RGB")) for p in queries["path"]]))
    torch.testing.assert_close(fs.features, cropped, rtol=1e-4, atol=1e-5)
    assert not torch.allclose(fs.features, full, atol=1e-3)


# --------------------------------------------------------------------------------- inversion
def test_inversion_targets_all_rows_or_task_queries(synthetic_manifest, tmp_path):
    df, _ = read_manifest(synthetic_manifest)
    images = df[df["modality"] == "image"]
    order = list(reversed(range(len(images))))  # file rows in a different order than the manifest
    ids = [images["id"].iloc[i] for i in order]
    feats = torch.arange(len(ids), dtype=torch.float32)[:, None].repeat(1, 4)
    path = tmp_path / "image_all.safetensors"
    save_feature_set(path, FeatureSet(feats, ids))
    all_feats, all_ids = inversion_targets(str(path), None, None)
    assert all_ids == ids and torch.equal(all_feats, feats)
    q_feats, q_ids = inversion_targets(str(path), str(synthetic_manifest), "image_retrieval")
    expected_ids = images[images["split"] == "test"]["id"].tolist()
    assert q_ids == expected_ids
    assert q_feats[:, 0].tolist() == [float(ids.index(i)) for i in expected_ids]


def test_inversion_targets_missing_query_names_the_file(synthetic_manifest, tmp_path):
    path = tmp_path / "image_train.safetensors"
    save_feature_set(path, FeatureSet(torch.zeros(1, 4), ["train/train/000000.png"]))
    with pytest.raises(KeyError, match="image_train.safetensors"):
        inversion_targets(str(path), str(synthetic_manifest), "image_retrieval")


def _invert(method, features, out, tiny_spec, shard, num_shards, params, shard_size=1, batch_size=8, **kwargs):
    invert_shard_step(method=method, features=str(features), out=str(out), model_slug="tiny/test", model_spec=tiny_spec,
                      shard=shard, num_shards=num_shards, shard_size=shard_size, params=params, batch_size=batch_size,
                      progress=False, **kwargs)


@pytest.mark.parametrize("method, params", [("oti", OTI_PARAMS), ("ovi", OVI_PARAMS)])
def test_two_shards_gathered_equal_one_shard(method, params, tiny_spec, tiny_model_and_preprocess, cached_model, tmp_path):
    feats = tmp_path / "targets.safetensors"
    ids = _targets(feats, 3)
    _invert(method, feats, tmp_path / "single.safetensors", tiny_spec, 0, 1, params, shard_size=4096)
    gather_step(shards=[str(tmp_path / "single.safetensors")], out=str(tmp_path / "one.safetensors"))
    shards = [tmp_path / f"s{i}.safetensors" for i in range(2)]
    for i, path in enumerate(shards):
        _invert(method, feats, path, tiny_spec, i, 2, params)
    parts = [load_feature_set(p) for p in shards]
    assert parts[0].ids == ids[:1] and parts[1].ids == ids[1:]  # shard_bounds(3, ., 2, 1) = [0, 1), [1, 3)
    assert parts[0].meta["rows"] == [0, 1] and parts[1].meta["rows"] == [1, 3]
    loss_csv = tmp_path / "losses.csv"
    gather_step(shards=[str(p) for p in shards], out=str(tmp_path / "two.safetensors"), loss_csv=str(loss_csv))
    one, two = load_feature_set(tmp_path / "one.safetensors"), load_feature_set(tmp_path / "two.safetensors")
    model, _ = tiny_model_and_preprocess
    width = model.text_token_embedding_dim if method == "oti" else model.visual_token_embedding_dim
    assert one.ids == two.ids == ids
    assert one.extras["pseudo_tokens"].shape == (3, params["num_pseudo_tokens"], width)
    assert one.extras["losses"].shape == (3, params["steps"])
    assert one.features.shape == (3, EMBED_DIM)
    assert len(cached_model) == 3
    # a fresh draw per shard would give different tokens: the whole-set draw is sliced
    torch.testing.assert_close(two.extras["pseudo_tokens"], one.extras["pseudo_tokens"], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(two.extras["losses"], one.extras["losses"], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(two.features, one.features, rtol=1e-5, atol=1e-5)
    assert two.meta["kind"] == method and two.meta["shard"] is None and two.meta["num_shards"] == 2
    # the later fields at their defaults are recorded with the rule's params (precision; OVI's template and
    # underscores), and on the CPU (fp32) no step is ever skipped
    assert two.meta["params"] == {**params, "precision": "fp16", **(
        {"template": "a photo of {}", "underscores_as_spaces": False} if method == "ovi" else {})}
    assert two.meta["skipped_steps"] == 0 and not two.extras["skipped_steps"].any()
    assert two.meta["seconds"] == pytest.approx(sum(p.meta["seconds"] for p in parts))
    # the loss CSV: mean loss over samples per step
    frame = pd.read_csv(loss_csv)
    assert list(frame.columns) == ["step", "loss"]
    assert frame["step"].tolist() == list(range(params["steps"]))
    np.testing.assert_allclose(frame["loss"].to_numpy(), two.extras["losses"].mean(0).numpy(), rtol=1e-6)


def test_inversion_depends_on_seed(tiny_spec, cached_model, tmp_path):
    """(So that the shard test above could tell a per-shard draw from a sliced whole-set draw.)"""
    feats = tmp_path / "targets.safetensors"
    _targets(feats, 1)
    _invert("ovi", feats, tmp_path / "a.safetensors", tiny_spec, 0, 1, dict(OVI_PARAMS, steps=1))
    _invert("ovi", feats, tmp_path / "b.safetensors", tiny_spec, 0, 1, dict(OVI_PARAMS, steps=1, seed=12))
    a, b = load_feature_set(tmp_path / "a.safetensors"), load_feature_set(tmp_path / "b.safetensors")
    assert not torch.allclose(a.extras["pseudo_tokens"], b.extras["pseudo_tokens"])


def test_oti_reencoded_features_match_the_tokens(tiny_spec, tiny_model_and_preprocess, cached_model, tmp_path):
    from crossgap.inversion import oti_features

    feats = tmp_path / "targets.safetensors"
    _targets(feats, 2)
    out = tmp_path / "oti.safetensors"
    _invert("oti", feats, out, tiny_spec, 0, 1, OTI_PARAMS)
    fs = load_feature_set(out)
    model, _ = tiny_model_and_preprocess
    expected = oti_features(fs.extras["pseudo_tokens"], model, template_sentence=OTI_PARAMS["template"])
    torch.testing.assert_close(fs.features, expected, rtol=1e-4, atol=1e-5)


def test_more_shards_than_rows_gives_empty_shards_and_same_result(tiny_spec, cached_model, tmp_path):
    feats = tmp_path / "targets.safetensors"
    ids = _targets(feats, 2)
    shards = [tmp_path / f"s{i}.safetensors" for i in range(3)]
    for i, path in enumerate(shards):
        _invert("ovi", feats, path, tiny_spec, i, 3, OVI_PARAMS)
    sizes = [len(load_feature_set(p).ids) for p in shards]
    assert sizes == [1, 1, 0]  # fixed-size blocks of 1; the planned third shard finds nothing left
    empty = load_feature_set(shards[2])
    assert empty.features.shape == (0, EMBED_DIM)
    assert empty.extras["losses"].shape == (0, OVI_PARAMS["steps"])
    assert empty.extras["pseudo_tokens"].shape[:2] == (0, OVI_PARAMS["num_pseudo_tokens"])
    gather_step(shards=[str(p) for p in shards], out=str(tmp_path / "g.safetensors"))
    _invert("ovi", feats, tmp_path / "single.safetensors", tiny_spec, 0, 1, OVI_PARAMS)
    g, single = load_feature_set(tmp_path / "g.safetensors"), load_feature_set(tmp_path / "single.safetensors")
    assert g.ids == ids
    torch.testing.assert_close(g.extras["pseudo_tokens"], single.extras["pseudo_tokens"], rtol=1e-5, atol=1e-6)


def test_invert_task_queries_only(synthetic_manifest, tiny_spec, cached_model, tmp_path):
    df, _ = read_manifest(synthetic_manifest)
    images = df[df["modality"] == "image"]
    path = tmp_path / "image_test.safetensors"
    gen = torch.Generator().manual_seed(3)
    save_feature_set(path, FeatureSet(torch.randn(len(images), EMBED_DIM, generator=gen), images["id"].tolist()))
    out = tmp_path / "oti.safetensors"
    invert_shard_step(method="oti", features=str(path), out=str(out), model_slug="m", model_spec=tiny_spec, shard=0,
                      num_shards=1, shard_size=4096, params=dict(OTI_PARAMS, steps=1), manifest=str(synthetic_manifest),
                      task="image_retrieval",
                      progress=False)
    assert load_feature_set(out).ids == images[images["split"] == "test"]["id"].tolist()


def test_unknown_method_is_rejected(tiny_spec, cached_model, tmp_path):
    feats = tmp_path / "targets.safetensors"
    _targets(feats, 2)
    with pytest.raises(ValueError, match="unknown inversion method 'xyz'"):
        _invert("xyz", feats, tmp_path / "o.safetensors", tiny_spec, 0, 1, OTI_PARAMS)
    assert not (tmp_path / "o.safetensors").exists()


# --------------------------------------------------------------------------------- gather
def _shard_file(path: Path, ids: list[str], shard: int, num_shards: int, steps: int = 4) -> str:
    n = len(ids)
    save_feature_set(path, FeatureSet(
        torch.full((n, 3), float(shard)), ids,
        meta={"kind": "oti", "shard": shard, "num_shards": num_shards, "seconds": 1.5},
        extras={"losses": torch.arange(n * steps, dtype=torch.float32).reshape(n, steps),
                "pseudo_tokens": torch.zeros(n, 1, 2)}))
    return str(path)


def test_gather_concatenates_in_order(tmp_path):
    a = _shard_file(tmp_path / "a.st", ["x", "y"], 0, 2)
    b = _shard_file(tmp_path / "b.st", ["z"], 1, 2)
    gather_step(shards=[a, b], out=str(tmp_path / "out.st"), loss_csv=str(tmp_path / "l.csv"))
    g = load_feature_set(tmp_path / "out.st")
    assert g.ids == ["x", "y", "z"]
    assert g.features[:, 0].tolist() == [0.0, 0.0, 1.0]
    assert g.extras["losses"].shape == (3, 4) and g.extras["pseudo_tokens"].shape == (3, 1, 2)
    assert g.meta["seconds"] == 3.0 and g.meta["shard"] is None and g.meta["kind"] == "oti"
    frame = pd.read_csv(tmp_path / "l.csv")
    assert list(frame.columns) == ["step", "loss"] and len(frame) == 4
    # rows: [0..3], [4..7] and [0..3] again -> mean per step
    assert frame["loss"].tolist() == pytest.approx([(0 + 4 + 0) / 3 + k for k in range(4)])


def test_gather_without_loss_csv_writes_only_the_features(tmp_path):
    a = _shard_file(tmp_path / "a.st", ["x"], 0, 1)
    gather_step(shards=[a], out=str(tmp_path / "out" / "g.st"))
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["g.st"]


def test_gather_rejects_missing_shard(tmp_path):
    a = _shard_file(tmp_path / "a.st", ["x"], 0, 3)
    b = _shard_file(tmp_path / "b.st", ["y"], 1, 3)
    with pytest.raises(ValueError, match="expected 2 shards.*num_shards=\\[3\\]"):
        gather_step(shards=[a, b], out=str(tmp_path / "out.st"))
    assert not (tmp_path / "out.st").exists()


def test_gather_rejects_shards_of_different_runs(tmp_path):
    a = _shard_file(tmp_path / "a.st", ["x"], 0, 2)
    b = _shard_file(tmp_path / "b.st", ["y"], 1, 3)
    with pytest.raises(ValueError, match="num_shards=\\[2, 3\\]"):
        gather_step(shards=[a, b], out=str(tmp_path / "out.st"))


def test_gather_rejects_overlapping_shards(tmp_path):
    a = _shard_file(tmp_path / "a.st", ["x", "y"], 0, 2)
    b = _shard_file(tmp_path / "b.st", ["y", "z"], 1, 2)
    with pytest.raises(ValueError, match="overlap"):
        gather_step(shards=[a, b], out=str(tmp_path / "out.st"))
    with pytest.raises(ValueError, match="overlap"):
        gather_step(shards=[a, a], out=str(tmp_path / "out.st"))
    assert not (tmp_path / "out.st").exists()


def test_gather_rejects_a_repeated_empty_shard_in_place_of_a_missing_one(tmp_path):
    # 2 rows in 3 shards: shard 0 is empty, shards 1 and 2 hold one row each
    s0 = _shard_file(tmp_path / "s0.st", [], 0, 3)
    _shard_file(tmp_path / "s1.st", ["row0"], 1, 3)
    s2 = _shard_file(tmp_path / "s2.st", ["row1"], 2, 3)
    with pytest.raises(ValueError):
        gather_step(shards=[s0, s0, s2], out=str(tmp_path / "out.st"))  # shard 1 (row0) is missing


# --------------------------------------------------------------------------------- resume mid-shard
class Killed(BaseException):
    """Stands in for the kill: raised from inside the optimiser, like a signal's SystemExit."""


def _kill_at_batch(monkeypatch, batch: int) -> None:
    """Make the ``batch``-th call of the inversion's per-batch optimiser (1-based) raise :class:`Killed`."""
    import crossgap.inversion as inversion

    real, calls = inversion._optimise, []

    def dying(*args, **kwargs):
        calls.append(1)
        if len(calls) == batch:
            raise Killed
        return real(*args, **kwargs)

    monkeypatch.setattr(inversion, "_optimise", dying)


@pytest.mark.parametrize("method, params", [("oti", OTI_PARAMS), ("ovi", OVI_PARAMS)])
def test_a_killed_shard_resumes_from_its_last_saved_batch_bit_identically(
    method, params, tiny_spec, cached_model, tmp_path, monkeypatch, caplog
):
    feats = tmp_path / "targets.safetensors"
    _targets(feats, 7)
    params = dict(params, steps=3)
    # uninterrupted: 7 targets in batches of 2 -> 4 batches
    _invert(method, feats, tmp_path / "whole.safetensors", tiny_spec, 0, 1, params, batch_size=2)
    out = tmp_path / "shard.safetensors"
    side = tmp_path / "shard.resume.safetensors"
    with monkeypatch.context() as patch:
        _kill_at_batch(patch, 3)
        with pytest.raises(Killed):
            _invert(method, feats, out, tiny_spec, 0, 1, params, batch_size=2)
    assert not out.exists()  # no output under the final name
    assert side.exists()  # ... but batches 1 and 2 are saved beside it
    from safetensors.torch import load_file

    assert load_file(side)["tokens"].shape[0] == 4
    with caplog.at_level("INFO", logger="crossgap.inversion"):
        _invert(method, feats, out, tiny_spec, 0, 1, params, batch_size=2)
    assert "resuming from batch 3 of 4 (4 of 7 targets already inverted" in caplog.text
    assert not side.exists()  # removed once the shard is complete
    whole, resumed = load_feature_set(tmp_path / "whole.safetensors"), load_feature_set(out)
    assert resumed.ids == whole.ids
    for key in ("pseudo_tokens", "losses"):
        assert torch.equal(resumed.extras[key], whole.extras[key]), key
    assert torch.equal(resumed.features, whole.features)


def test_resume_every_bounds_what_a_kill_loses(tiny_spec, cached_model, tmp_path, monkeypatch):
    feats = tmp_path / "targets.safetensors"
    _targets(feats, 10)
    params = dict(OTI_PARAMS, steps=1)
    side = tmp_path / "shard.resume.safetensors"
    with monkeypatch.context() as patch:
        _kill_at_batch(patch, 5)  # batches 1-4 finished; saved after batches 3 (every 3), not 4
        with pytest.raises(Killed):
            _invert("oti", feats, tmp_path / "shard.safetensors", tiny_spec, 0, 1, params, batch_size=2,
                    resume_every=3)
    from safetensors.torch import load_file

    assert load_file(side)["tokens"].shape[0] == 6


def test_a_resume_file_of_other_parameters_is_ignored(tiny_spec, cached_model, tmp_path, monkeypatch, caplog):
    feats = tmp_path / "targets.safetensors"
    _targets(feats, 4)
    out = tmp_path / "shard.safetensors"
    with monkeypatch.context() as patch:
        _kill_at_batch(patch, 2)
        with pytest.raises(Killed):
            _invert("oti", feats, out, tiny_spec, 0, 1, dict(OTI_PARAMS, steps=2), batch_size=2)
    other = dict(OTI_PARAMS, steps=2, seed=8)
    with caplog.at_level("WARNING", logger="crossgap.resume"):
        _invert("oti", feats, out, tiny_spec, 0, 1, other, batch_size=2)
    assert "fingerprint differs" in caplog.text
    _invert("oti", feats, tmp_path / "fresh.safetensors", tiny_spec, 0, 1, other, batch_size=2)
    assert torch.equal(load_feature_set(out).extras["pseudo_tokens"],
                       load_feature_set(tmp_path / "fresh.safetensors").extras["pseudo_tokens"])


def test_gather_rejects_shards_cut_with_different_shard_sizes(tiny_spec, cached_model, tmp_path):
    feats = tmp_path / "targets.safetensors"
    _targets(feats, 4)
    params = dict(OTI_PARAMS, steps=1)
    _invert("oti", feats, tmp_path / "a.safetensors", tiny_spec, 0, 2, params, shard_size=1)  # rows [0, 1)
    _invert("oti", feats, tmp_path / "b.safetensors", tiny_spec, 1, 2, params, shard_size=2)  # rows [2, 4)
    with pytest.raises(ValueError, match=r"b.safetensors covers rows \[2, 4\) but rows start at 1"):
        gather_step(shards=[str(tmp_path / "a.safetensors"), str(tmp_path / "b.safetensors")],
                    out=str(tmp_path / "g.safetensors"))


# --------------------------------------------------------------------------------- snapshots
@pytest.mark.parametrize("method, params", [("oti", OTI_PARAMS), ("ovi", OVI_PARAMS)])
def test_snapshots_are_the_tokens_of_a_shorter_run_and_leave_the_final_ones_unchanged(
    method, params, tiny_spec, cached_model, tmp_path
):
    from crossgap.steps.inversion import gather_snapshots_step

    feats = tmp_path / "targets.safetensors"
    _targets(feats, 3)
    _invert(method, feats, tmp_path / "plain.safetensors", tiny_spec, 0, 1, dict(params, steps=4), shard_size=4096)
    _invert(method, feats, tmp_path / "snap.safetensors", tiny_spec, 0, 1, dict(params, steps=4), shard_size=4096,
            snapshots=(1, 3))
    _invert(method, feats, tmp_path / "short.safetensors", tiny_spec, 0, 1, dict(params, steps=3), shard_size=4096)
    plain, snap, short = (load_feature_set(tmp_path / f"{n}.safetensors") for n in ("plain", "snap", "short"))
    assert torch.equal(snap.extras["pseudo_tokens"], plain.extras["pseudo_tokens"])  # final tokens unchanged
    assert "snapshot_tokens" not in plain.extras and snap.meta["snapshot_steps"] == [1, 3]
    assert torch.equal(snap.extras["snapshot_tokens"][:, 1], short.extras["pseudo_tokens"])  # step 3 = a 3-step run
    assert torch.equal(snap.extras["snapshot_features"][:, 1], short.features)
    gather_snapshots_step(shards=[str(tmp_path / "snap.safetensors")], steps=[3], out=str(tmp_path / "at.safetensors"))
    at = load_feature_set(tmp_path / "at.safetensors")
    assert at.meta["snapshot_steps"] == [3] and at.features.shape == (3, 1, EMBED_DIM)
    assert torch.equal(at.features[:, 0], short.features)
    with pytest.raises(ValueError, match="has snapshots at steps \\[1, 3\\], not \\[2\\]"):
        gather_snapshots_step(shards=[str(tmp_path / "snap.safetensors")], steps=[2], out=str(tmp_path / "x.st"))


def test_vocabulary_step_encodes_the_bare_imagenet_names(tiny_spec, tiny_model_and_preprocess, cached_model, tmp_path):
    """pca_text's span: ImageNet-1k's 1000 bare names (no template), unnormalised encode_text, one file per model."""
    from crossgap.steps.features import vocabulary_step

    out = tmp_path / "imagenet_classnames.safetensors"
    vocabulary_step(vocabulary="imagenet", model_slug="m", model_spec=tiny_spec, out=str(out))
    fs = load_feature_set(out)
    assert fs.features.shape[0] == 1000 and fs.ids[0] == "class0" and fs.ids[-1] == "class999"
    assert fs.meta["classnames"][:2] == ["tench", "goldfish"] and fs.meta["vocabulary"] == "imagenet"
    model, _ = tiny_model_and_preprocess
    with torch.no_grad():
        expected = model.encode_text(model.tokenizer(["tench", "toilet tissue"])).float()
    torch.testing.assert_close(fs.features[[0, 999]], expected, rtol=1e-4, atol=1e-5)


def test_pre_projection_features_of_a_tower_without_a_linear_projection_are_declared_unavailable(
        synthetic_manifest, tiny_spec, cached_model, tmp_path, monkeypatch):
    import crossgap.models.projection as projection

    def no_projection(model, modality):
        raise projection.NoLinearProjectionError("the timm vision tower ends in head layer(s) ['attn_pool']")

    monkeypatch.setattr(projection, "linear_projection", no_projection)
    out = tmp_path / "image_test.pre.safetensors"
    extract_step(manifest=str(synthetic_manifest), model_slug="m", model_spec=tiny_spec, split="test",
                 modality="image", out=str(out), preprojection=True, progress=False)
    fs = load_feature_set(out)
    assert fs.features.numel() == 0 and fs.meta["preprojection"] is True
    assert fs.meta["unavailable"] == "image tower: the timm vision tower ends in head layer(s) ['attn_pool']"


def test_spaced_text_features_read_underscores_as_spaces(synthetic_manifest, tiny_spec, tiny_model_and_preprocess,
                                                          cached_model, tmp_path):
    """OVI's targets as the reference inverts them: text.replace("_", " "), ids and order as the native file."""
    df, _ = read_manifest(synthetic_manifest)
    texts = df[(df["modality"] == "text") & (df["split"] == "test")]
    manifest = tmp_path / "underscored.parquet"
    edited = df.copy()
    edited.loc[texts.index[0], "text"] = "a_red_circle on_grass"
    _, meta = read_manifest(synthetic_manifest)
    from crossgap.datasets import write_manifest

    write_manifest(manifest, edited, meta)
    out = tmp_path / "text_test.spaces.safetensors"
    extract_step(manifest=str(manifest), model_slug="m", model_spec=tiny_spec, split="test", modality="text",
                 out=str(out), underscores_as_spaces=True, progress=False)
    fs = load_feature_set(out)
    assert fs.ids == texts["id"].tolist() and fs.meta["underscores_as_spaces"] is True
    model, _ = tiny_model_and_preprocess
    with torch.no_grad():
        expected = model.encode_text(model.tokenizer(["a red circle on grass", texts["text"].iloc[1]])).float()
    torch.testing.assert_close(fs.features[:2], expected, rtol=1e-4, atol=1e-5)


# ------------------------------------------------------------ a method the model's tower cannot run
@pytest.fixture(scope="module")
def resnet_spec(tmp_path_factory) -> dict:
    """A saved tiny open_clip ModifiedResNet model (tests/model_configs/test-rn-tiny.json): no patch tokens."""
    import open_clip

    path = tmp_path_factory.mktemp("rn") / "rn.pt"
    torch.manual_seed(0)
    torch.save(open_clip.create_model("test-rn-tiny").state_dict(), path)
    return {"backend": "open_clip", "architecture": "test-rn-tiny", "pretrained": str(path)}


def test_ovi_on_a_resnet_is_recorded_unavailable_with_its_reason_and_oti_runs(synthetic_manifest, resnet_spec,
                                                                              tmp_path):
    from crossgap.steps.evaluation import retrieval_step
    from crossgap.steps.inversion import gather_snapshots_step

    feats = tmp_path / "targets.safetensors"
    _targets(feats, 3)
    shards = [tmp_path / f"ovi{i}.safetensors" for i in range(2)]
    for i, shard in enumerate(shards):
        _invert("ovi", feats, shard, resnet_spec, i, 2, OVI_PARAMS, shard_size=2, snapshots=(1,))
    reason = ("OVI unavailable for tiny/test: the vision tower open_clip.modified_resnet.ModifiedResNet cannot take "
              "visual pseudo tokens: OVI needs a ViT vision tower (ResNet towers have no patch tokens)")
    part = load_feature_set(shards[1])
    assert part.meta["unavailable"] == reason and part.features.shape == (0, EMBED_DIM)
    assert part.meta["shard"] == 1 and part.meta["rows"] == [2, 3]
    out, losses = tmp_path / "ovi.safetensors", tmp_path / "losses.csv"
    gather_step(shards=[str(s) for s in shards], out=str(out), loss_csv=str(losses))
    gathered = load_feature_set(out)
    assert gathered.meta["unavailable"] == reason and gathered.ids == [] and gathered.meta["kind"] == "ovi"
    assert list(pd.read_csv(losses).columns) == ["step", "loss"] and len(pd.read_csv(losses)) == 0
    snaps = tmp_path / "ovi_at_1.safetensors"
    gather_snapshots_step(shards=[str(s) for s in shards], steps=[1], out=str(snaps))
    assert load_feature_set(snaps).meta["unavailable"] == reason
    # the evaluation shows the result as unavailable, with the reason
    df, _ = read_manifest(synthetic_manifest)
    texts = df[df["modality"] == "text"]["id"].tolist()
    gallery = tmp_path / "text_all.safetensors"
    save_feature_set(gallery, FeatureSet(torch.randn(len(texts), EMBED_DIM), texts))
    record = retrieval_step(task="text_retrieval", method="ovi", manifest=str(synthetic_manifest), query=str(out),
                            gallery=str(gallery), out=str(tmp_path / "ovi.json"), model_slug="tiny/test")
    assert record["metrics"] == {} and record["extra"]["unavailable"] == f"{out}: {reason}"
    # ... and the table shows its row with the reason, beside the native result
    from crossgap.steps.report import aggregate_step

    retrieval_step(task="text_retrieval", method="text", manifest=str(synthetic_manifest), query=str(gallery),
                   gallery=str(gallery), out=str(tmp_path / "text.json"), model_slug="tiny/test")
    md = tmp_path / "table.md"
    aggregate_step(results=[str(tmp_path / "text.json"), str(tmp_path / "ovi.json")], gaps=[],
                   summary_out=str(tmp_path / "s.json"), table_csv=str(tmp_path / "t.csv"), table_md=str(md),
                   plot_csv=str(tmp_path / "p.csv"))
    row = [line for line in md.read_text().splitlines() if "| ovi |" in line]
    assert len(row) == 1 and f"| ovi | unavailable: {out}: {reason}" in row[0]
    # OTI on the same model runs
    _invert("oti", feats, tmp_path / "oti.safetensors", resnet_spec, 0, 1, OTI_PARAMS, shard_size=4)
    oti_part = load_feature_set(tmp_path / "oti.safetensors")
    assert "unavailable" not in oti_part.meta and oti_part.features.shape == (3, EMBED_DIM)


def test_oti_on_a_text_tower_without_a_factory_is_recorded_unavailable(tiny_spec, monkeypatch, tmp_path):
    import crossgap.models.towers as towers

    monkeypatch.setattr(towers, "_TEXT_TOWERS", {})
    feats = tmp_path / "targets.safetensors"
    _targets(feats, 2)
    _invert("oti", feats, tmp_path / "oti0.safetensors", tiny_spec, 0, 1, OTI_PARAMS, shard_size=4)
    part = load_feature_set(tmp_path / "oti0.safetensors")
    assert part.meta["unavailable"] == (
        "OTI unavailable for tiny/test: the text tower open_clip.model.CLIP cannot take textual pseudo tokens: no "
        "pseudo-token text tower is registered for it (OTI needs its token embeddings and a way to run the tower "
        "from them)")
    _invert("ovi", feats, tmp_path / "ovi0.safetensors", tiny_spec, 0, 1, OVI_PARAMS, shard_size=4)
    assert load_feature_set(tmp_path / "ovi0.safetensors").features.shape == (2, EMBED_DIM)
