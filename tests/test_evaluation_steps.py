"""crossgap.steps.evaluation: retrieval / zero-shot / modality-gap steps from feature files and manifests.

Feature files are written by hand (no model): the steps must pick the protocol's rows by id and
evaluate them with the right relevance.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F

from crossgap.steps import evaluation
from crossgap.datasets import prepare_manifest, read_manifest, write_manifest
from crossgap.steps.evaluation import matched_pairs, modality_gap_step, retrieval_step, zero_shot_step
from crossgap.metrics import build_classifier, evaluate_retrieval, evaluate_revisited, read_result
from crossgap.storage import FeatureSet, save_feature_set

from fixtures_datasets import make_synthetic
from fixtures_image_benchmarks import make_revisited
from fixtures_text_datasets import make_coco_karpathy, make_nanobeir

D = 8


def _eye(i: int) -> torch.Tensor:
    return torch.eye(D)[i]


def _save(path: Path, ids: list[str], feats: torch.Tensor) -> str:
    save_feature_set(path, FeatureSet(feats.float(), list(ids)))
    return str(path)


def _save_shuffled(path: Path, ids: list[str], feats: torch.Tensor, seed: int = 0) -> str:
    """Write rows in a random order: the steps must select by id, not by position."""
    perm = np.random.default_rng(seed).permutation(len(ids))
    return _save(path, [ids[i] for i in perm], feats[torch.as_tensor(perm)])


def _rand(n: int, seed: int) -> torch.Tensor:
    return torch.randn(n, D, generator=torch.Generator().manual_seed(seed))


def built_manifest(root, slug: str):
    """``(path, df, meta)`` of the manifest of dataset ``slug`` under ``root``."""
    out = root / f"{slug}.parquet"
    prepare_manifest(slug, root, out)
    df, meta = read_manifest(out)
    return str(out), df, meta


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    """3 classes; train: 6 images, test: 3 images (labels 0, 1, 2), 2 captions each."""
    root = tmp_path_factory.mktemp("synthetic")
    make_synthetic(root, per_split={"train": 2, "test": 1})
    return built_manifest(root, "synthetic")


@pytest.fixture(scope="module")
def coco(tmp_path_factory):
    root = tmp_path_factory.mktemp("coco")
    make_coco_karpathy(root)
    return built_manifest(root, "coco_text")


@pytest.fixture(scope="module")
def nano(tmp_path_factory):
    root = tmp_path_factory.mktemp("nano")
    make_nanobeir(root)
    return built_manifest(root, "nano_scifact")


@pytest.fixture(scope="module")
def roxford(tmp_path_factory):
    root = tmp_path_factory.mktemp("roxford")
    fx = make_revisited(root, "roxford5k")
    return (*built_manifest(root, "roxford5k"), fx)


def _rows(df, modality, split=None):
    mask = df["modality"] == modality
    if split is not None:
        mask &= df["split"] == split
    return df[mask]


# --------------------------------------------------------------------------------- label relevance
def test_image_retrieval_label_relevance_equals_evaluate_retrieval(synthetic, tmp_path):
    manifest, df, _ = synthetic
    images = _rows(df, "image")
    feats = _rand(len(images), 0)
    path = _save_shuffled(tmp_path / "image_all.safetensors", images["id"].tolist(), feats)
    out = tmp_path / "res" / "image.json"
    record = retrieval_step(task="image_retrieval", method="image", manifest=manifest, query=path, gallery=path,
                            out=str(out), model_slug="tiny/m", params={"steps": 3})
    q = images["split"].to_numpy() == "test"
    g = images["split"].to_numpy() == "train"
    direct = evaluate_retrieval(feats[q], feats[g], images["label"].to_numpy()[q], images["label"].to_numpy()[g])
    assert record["metrics"]["mAP"] == pytest.approx(direct["mAP"])
    assert record["metrics"]["R@1"] == pytest.approx(direct["R@1"])
    assert record["counts"]["num_queries"] == 3 and record["counts"]["gallery_size"] == 6
    assert record["task"] == "image_retrieval" and record["method"] == "image"
    assert record["dataset"] == "synthetic" and record["model"] == "tiny/m" and record["params"] == {"steps": 3}
    # the test's feature file records no precision (written before features.precision existed: None)
    assert record["extra"] == {"query_file": path, "gallery_file": path, "exclude_self": False,
                               "precision": {"query": None, "gallery": None},
                               "reference_compat": False, "fp16_similarities": False,
                               "recipe": {"source": "Mistretta et al., Cross the Gap (ICLR 2025)",
                                          "repository": "miccunifi/Cross-the-Gap", "file": "src/retrieval.py",
                                          "variant": "native image queries against native gallery images"}}
    assert read_result(out) == record


def test_label_relevance_perfect_and_worst_features(synthetic, tmp_path):
    manifest, df, _ = synthetic
    images = _rows(df, "image")
    labels = images["label"].tolist()
    good = torch.stack([_eye(c) for c in labels])
    bad = torch.stack([_eye(c) if s == "train" else _eye((c + 1) % 3) for c, s in zip(labels, images["split"])])
    ids = images["id"].tolist()
    good_path, bad_path = _save(tmp_path / "g.st", ids, good), _save(tmp_path / "b.st", ids, bad)
    best = retrieval_step(task="image_retrieval", method="image", manifest=manifest, query=good_path,
                          gallery=good_path, out=str(tmp_path / "a.json"), model_slug="m")
    assert best["metrics"]["mAP"] == pytest.approx(100.0) and best["metrics"]["R@1"] == pytest.approx(100.0)
    # queries from another file (inverted queries) against the native gallery
    worst = retrieval_step(task="image_retrieval", method="oti", manifest=manifest, query=bad_path,
                           gallery=good_path, out=str(tmp_path / "b.json"), model_slug="m")
    assert worst["metrics"]["R@1"] == pytest.approx(0.0)
    assert worst["metrics"]["mAP"] < 50.0
    assert worst["extra"]["query_file"] == bad_path and worst["extra"]["gallery_file"] == good_path


def test_text_retrieval_first_caption_queries(synthetic, tmp_path):
    manifest, df, _ = synthetic
    texts = _rows(df, "text")
    feats = _rand(len(texts), 1)
    path = _save_shuffled(tmp_path / "text_all.safetensors", texts["id"].tolist(), feats, seed=1)
    record = retrieval_step(task="text_retrieval", method="text", manifest=manifest, query=path, gallery=path,
                            out=str(tmp_path / "t.json"), model_slug="m")
    is_query = (texts["split"] == "test").to_numpy() & texts["id"].str.endswith("#0").to_numpy()
    is_gallery = (texts["split"] == "train").to_numpy()
    lab = texts["label"].to_numpy()
    direct = evaluate_retrieval(feats[is_query], feats[is_gallery], lab[is_query], lab[is_gallery])
    assert record["counts"]["num_queries"] == 3 and record["counts"]["gallery_size"] == 12
    assert record["metrics"]["mAP"] == pytest.approx(direct["mAP"])
    assert record["metrics"]["R@5"] == pytest.approx(direct["R@5"])


def test_exclude_self_when_query_equals_gallery(tmp_path):
    """A protocol whose queries are its gallery: a query must not retrieve itself."""
    ids = [f"test/{i}.png" for i in range(4)]
    df = pd.DataFrame({"id": ids, "split": "test", "modality": "image", "path": [f"{i}.png" for i in range(4)],
                       "text": None, "label": [0, 0, 1, 1], "classname": None, "group": None})
    meta = {"dataset": "handmade", "adapter": "handmade", "adapter_version": "1", "dataroot": str(tmp_path),
            "root": str(tmp_path), "classnames": ["a", "b"], "templates": [], "skipped": [],
            "protocol": {"image_retrieval": {"query": {"split": "test"}, "gallery": {"split": "test"},
                                             "relevance": "label"}}}
    manifest = tmp_path / "m.parquet"
    write_manifest(manifest, df, meta)
    # each item's nearest *other* item has the other label: R@1 is 0 once self is excluded
    feats = torch.tensor([[1.0, 0, 0], [0, 1.0, 0], [0.9, 0.1, 0], [0.1, 0.9, 0]])
    path = _save(tmp_path / "f.st", ids, feats)
    record = retrieval_step(task="image_retrieval", method="image", manifest=str(manifest), query=path,
                            gallery=path, out=str(tmp_path / "r.json"), model_slug="m")
    assert record["extra"]["exclude_self"] is True
    direct = evaluate_retrieval(feats, feats, [0, 0, 1, 1], [0, 0, 1, 1], exclude_self=True)
    assert record["metrics"]["R@1"] == pytest.approx(0.0) == pytest.approx(direct["R@1"])
    # APs: items 0 and 1 find their partner at rank 3, items 2 and 3 at rank 2 -> (1/3 + 1/3 + 1/2 + 1/2) / 4
    assert record["metrics"]["mAP"] == pytest.approx(direct["mAP"]) == pytest.approx(500 / 12)


def test_missing_query_features_name_the_file(synthetic, tmp_path):
    manifest, df, _ = synthetic
    train = _rows(df, "image", "train")
    path = _save(tmp_path / "image_train.safetensors", train["id"].tolist(), _rand(len(train), 0))
    with pytest.raises(KeyError, match="image_train.safetensors"):
        retrieval_step(task="image_retrieval", method="image", manifest=manifest, query=path, gallery=path,
                       out=str(tmp_path / "r.json"), model_slug="m")
    assert not (tmp_path / "r.json").exists()


def test_unknown_relevance_kind_is_rejected(synthetic, tmp_path, monkeypatch):
    manifest, df, _ = synthetic
    images = _rows(df, "image")
    path = _save(tmp_path / "f.st", images["id"].tolist(), _rand(len(images), 0))
    monkeypatch.delitem(evaluation.RELEVANCE_EVALUATORS, "label")
    with pytest.raises(ValueError, match="unsupported relevance 'label'"):
        retrieval_step(task="image_retrieval", method="image", manifest=manifest, query=path, gallery=path,
                       out=str(tmp_path / "r.json"), model_slug="m")


def test_task_not_in_protocol_is_rejected(coco, tmp_path):
    from crossgap.datasets import ManifestError

    manifest, df, _ = coco
    path = _save(tmp_path / "f.st", df["id"].tolist(), _rand(len(df), 0))
    with pytest.raises(ManifestError, match="does not support task 'image_retrieval'"):
        retrieval_step(task="image_retrieval", method="image", manifest=manifest, query=path, gallery=path,
                       out=str(tmp_path / "r.json"), model_slug="m")


# --------------------------------------------------------------------------------- group relevance
def test_group_relevance_first_caption_retrieves_the_other_captions(coco, tmp_path):
    manifest, df, _ = coco
    test = df[df["split"] == "test"]
    groups = sorted(test["group"].unique())
    assert len(groups) == 2
    # captions of image k point along axis k: each query's relevant items are its group's other captions
    good = torch.stack([_eye(groups.index(g)) + 0.01 * _eye(2 + i % 5) for i, g in enumerate(test["group"])])
    ids = test["id"].tolist()
    path = _save_shuffled(tmp_path / "text_test.safetensors", ids, good)
    record = retrieval_step(task="text_retrieval", method="text", manifest=manifest, query=path, gallery=path,
                            out=str(tmp_path / "g.json"), model_slug="m")
    assert record["counts"]["num_queries"] == 2 and record["counts"]["gallery_size"] == 4 + 5
    assert record["metrics"]["mAP"] == pytest.approx(100.0)
    assert record["extra"]["exclude_self"] is False
    # random features: equal to evaluate_retrieval with groups given by hand
    feats = _rand(len(test), 5)
    path = _save(tmp_path / "r.safetensors", ids, feats)
    record = retrieval_step(task="text_retrieval", method="ovi", manifest=manifest, query=path, gallery=path,
                            out=str(tmp_path / "r.json"), model_slug="m")
    is_query = test["id"].str.endswith("#0").to_numpy()
    code = np.array([groups.index(g) for g in test["group"]])
    direct = evaluate_retrieval(feats[is_query], feats[~is_query], query_groups=code[is_query],
                                gallery_groups=code[~is_query])
    assert record["metrics"]["mAP"] == pytest.approx(direct["mAP"])
    assert record["metrics"]["R_precision"] == pytest.approx(direct["R_precision"])


# --------------------------------------------------------------------------------- qrels relevance
def _nano_features(d1_first: bool) -> dict[str, torch.Tensor]:
    feats = {"queries/q1": _eye(0), "queries/q2": _eye(1), "queries/q3": _eye(2),
             "corpus/d2": _eye(0), "corpus/d4": _eye(0) + 0.2 * _eye(4), "corpus/d3": _eye(2)}
    # q2's relevant d1 (score 2) and judged-not-relevant d5 (score 0)
    close, far = _eye(1), _eye(1) + 0.5 * _eye(5)
    feats["corpus/d1"], feats["corpus/d5"] = (close, far) if d1_first else (far, close)
    return feats


@pytest.mark.parametrize("d1_first, expected_map", [(True, 100.0), (False, 75.0)])
def test_qrels_relevance_uses_explicit_pairs(nano, tmp_path, d1_first, expected_map):
    manifest, df, _ = nano
    feats = _nano_features(d1_first)
    ids = df["id"].tolist()
    path = _save_shuffled(tmp_path / "text_all.safetensors", ids, torch.stack([feats[i] for i in ids]))
    record = retrieval_step(task="text_retrieval", method="text", manifest=manifest, query=path, gallery=path,
                            out=str(tmp_path / "q.json"), model_slug="m")
    # q1 -> d2, d4 (both ranked first); q2 -> d1 only (d5 has score 0): AP 1 or 1/2; q3 has none
    assert record["metrics"]["mAP"] == pytest.approx(expected_map)
    assert record["counts"]["num_queries"] == 3 and record["counts"]["gallery_size"] == 5
    assert record["counts"]["num_queries_without_relevant"] == 1
    assert record["counts"]["queries_without_relevant"] == [2]
    q = torch.stack([feats[f"queries/q{i}"] for i in (1, 2, 3)])
    g = torch.stack([feats[f"corpus/d{i}"] for i in range(1, 6)])
    direct = evaluate_retrieval(q, g, relevance=np.array([[0, 1], [0, 3], [1, 0]]))
    assert record["metrics"]["mAP"] == pytest.approx(direct["mAP"])
    assert record["metrics"]["R@1"] == pytest.approx(direct["R@1"])


# --------------------------------------------------------------------------------- revisited relevance
def test_revisited_relevance_reports_easy_medium_hard(roxford, tmp_path):
    manifest, df, meta, fx = roxford
    queries, database = df[df["split"] == "query"], df[df["split"] == "database"]
    assert database["id"].tolist() == [f"database/{im}.jpg" for im in fx.imlist]
    gallery = torch.eye(D)[:6]  # database image j along axis j
    # q0 ranks db0, db2, db1, ... and q1 ranks db3 first: every setup is perfect
    q = torch.stack([torch.tensor([6.0, 4, 5, 3, 2, 1, 0, 0]), torch.tensor([1.0, 2, 3, 6, 4, 5, 0, 0])])
    ids = queries["id"].tolist() + database["id"].tolist()
    path = _save_shuffled(tmp_path / "image_all.safetensors", ids, torch.cat([q, gallery]))
    record = retrieval_step(task="image_retrieval", method="image", manifest=manifest, query=path, gallery=path,
                            out=str(tmp_path / "r.json"), model_slug="m")
    for setup in ("easy", "medium", "hard"):
        assert record["metrics"][f"mAP_{setup}"] == pytest.approx(100.0)
    assert "mAP" not in record["metrics"]
    assert record["counts"]["num_queries"] == 2 and record["counts"]["gallery_size"] == 6
    assert record["counts"]["num_queries_without_positive_hard"] == 1  # q1 has no hard image

    # q0 now ranks a negative (db3) first: medium and hard drop; equal to the metric on the raw gnd
    q_bad = torch.stack([torch.tensor([5.0, 3, 4, 6, 2, 1, 0, 0]), torch.tensor([6.0, 2, 3, 1, 4, 5, 0, 0])])
    path = _save(tmp_path / "bad.safetensors", ids, torch.cat([q_bad, gallery]))
    record = retrieval_step(task="image_retrieval", method="oti", manifest=manifest, query=path, gallery=path,
                            out=str(tmp_path / "b.json"), model_slug="m")
    direct = evaluate_revisited(q_bad, gallery, fx.gnd)  # positions into imlist == gallery order
    for setup in ("easy", "medium", "hard"):
        assert record["metrics"][f"mAP_{setup}"] == pytest.approx(direct[f"mAP_{setup}"])
    assert record["metrics"]["mAP_medium"] < 100.0
    assert record["metrics"]["mAP_hard"] < 100.0


# --------------------------------------------------------------------------------- zero-shot
def _prompts(num_classes: int, num_templates: int) -> torch.Tensor:
    """Class-major prompts: row c*T + t along axis c, tilted towards axis 3 + t."""
    return torch.stack([_eye(c) + 0.3 * _eye(3 + t) for c in range(num_classes) for t in range(num_templates)])


def test_zero_shot_designed_accuracy(synthetic, tmp_path):
    manifest, df, _ = synthetic
    test = _rows(df, "image", "test")
    assert test["label"].tolist() == [0, 1, 2]
    images = _save(tmp_path / "image_test.st", test["id"].tolist(), torch.stack([_eye(0), _eye(1), _eye(0)]))
    prompts = _save(tmp_path / "prompts.st", [f"p{i}" for i in range(6)], _prompts(3, 2))
    out = tmp_path / "zs" / "standard.json"
    record = zero_shot_step(method="standard", manifest=manifest, images=images, prompts=prompts, out=str(out),
                            model_slug="m", params={"a": 1})
    assert record["metrics"]["top1"] == pytest.approx(200 / 3)
    assert record["counts"]["num_samples"] == 3 and record["counts"]["num_classes"] == 3
    assert record["task"] == "zero_shot" and record["method"] == "standard" and record["params"] == {"a": 1}
    assert record["extra"] == {"image_file": images, "prompt_file": prompts, "reference_compat": False,
                               "precision": {"images": None, "prompts": None},
                               "recipe": {"source": "Mistretta et al., Cross the Gap (ICLR 2025)",
                                          "repository": "miccunifi/Cross-the-Gap",
                                          "file": "src/classification/zero_shot_classification.py",
                                          "variant": "images against the averaged class-prompt classifier"}}
    assert read_result(out) == record


@pytest.mark.parametrize("num_templates", [1, 3])
def test_zero_shot_equals_argmax_counting(synthetic, tmp_path, num_templates):
    manifest, df, _ = synthetic
    test = _rows(df, "image", "test")
    # more rows than the split: only the protocol's rows count, picked by id
    images = _rows(df, "image")
    feats = _rand(len(images), 7)
    img_path = _save_shuffled(tmp_path / "image_all.st", images["id"].tolist(), feats)
    prompt_feats = _rand(3 * num_templates, 8)
    prompts = _save(tmp_path / "prompts.st", [f"p{i}" for i in range(3 * num_templates)], prompt_feats)
    record = zero_shot_step(method="ovi", manifest=manifest, images=img_path, prompts=prompts,
                            out=str(tmp_path / "z.json"), model_slug="m")
    # independent computation: class-major mean of normalised prompts, argmax of cosine
    p = F.normalize(prompt_feats, dim=-1).reshape(3, num_templates, D).mean(1)
    x = F.normalize(feats[(images["split"] == "test").to_numpy()], dim=-1)
    pred = (x @ F.normalize(p, dim=-1).T).argmax(1).numpy()
    expected = 100.0 * float(np.mean(pred == test["label"].to_numpy()))
    assert record["metrics"]["top1"] == pytest.approx(expected)
    assert record["counts"]["top1_correct"] == int((pred == test["label"].to_numpy()).sum())


def test_zero_shot_rejects_prompt_count_not_multiple_of_classes(synthetic, tmp_path):
    manifest, df, _ = synthetic
    test = _rows(df, "image", "test")
    images = _save(tmp_path / "i.st", test["id"].tolist(), _rand(3, 0))
    prompts = _save(tmp_path / "bad_prompts.st", [f"p{i}" for i in range(4)], _rand(4, 1))
    with pytest.raises(ValueError, match="bad_prompts.st.*not a multiple of 3 classes"):
        zero_shot_step(method="standard", manifest=manifest, images=images, prompts=prompts,
                       out=str(tmp_path / "z.json"), model_slug="m")
    assert not (tmp_path / "z.json").exists()


# --------------------------------------------------------------------------------- modality gap
def test_matched_pairs_caption_dataset_pairs_first_caption(synthetic, tmp_path):
    manifest, df, _ = synthetic
    test_images = _rows(df, "image", "test")
    test_texts = _rows(df, "text", "test")
    img_ids = list(reversed(test_images["id"].tolist()))
    img_feats = _rand(3, 0)
    images = _save(tmp_path / "img.st", img_ids, img_feats)
    txt_feats = _rand(len(test_texts), 1)
    txt_ids = test_texts["id"].tolist()
    texts = _save_shuffled(tmp_path / "txt.st", txt_ids, txt_feats)
    prompts = _save(tmp_path / "p.st", ["a", "b", "c"], _rand(3, 2))
    image_side, text_side, pairing = matched_pairs(manifest, images, texts, prompts)
    assert pairing == "first caption"
    assert image_side.shape == text_side.shape == (3, D)
    np.testing.assert_array_equal(image_side, img_feats.numpy())
    expected = torch.stack([txt_feats[txt_ids.index(f"{i}#0")] for i in img_ids])
    np.testing.assert_array_equal(text_side, expected.numpy())


def test_matched_pairs_classification_pairs_class_prompt_mean(synthetic, tmp_path):
    manifest, df, _ = synthetic
    images_rows = _rows(df, "image")
    img_feats = _rand(len(images_rows), 3)
    images = _save(tmp_path / "img.st", images_rows["id"].tolist(), img_feats)
    prompt_feats = _rand(6, 4)
    prompts = _save(tmp_path / "p.st", [f"p{i}" for i in range(6)], prompt_feats)
    image_side, text_side, pairing = matched_pairs(manifest, images, None, prompts)
    assert pairing == "class prompt"
    np.testing.assert_array_equal(image_side, img_feats.numpy())
    means = F.normalize(F.normalize(prompt_feats, dim=-1).reshape(3, 2, D).mean(1), dim=-1)
    expected = means[torch.as_tensor(images_rows["label"].to_numpy())]
    np.testing.assert_allclose(text_side, expected.numpy(), rtol=1e-6, atol=1e-7)


def test_matched_pairs_without_captions_of_the_images_falls_back_to_prompts(synthetic, tmp_path):
    manifest, df, _ = synthetic
    test_images = _rows(df, "image", "test")
    train_texts = _rows(df, "text", "train")
    images = _save(tmp_path / "img.st", test_images["id"].tolist(), _rand(3, 0))
    texts = _save(tmp_path / "txt.st", train_texts["id"].tolist(), _rand(len(train_texts), 1))
    prompt_feats = _rand(3, 2)
    prompts = _save(tmp_path / "p.st", ["a", "b", "c"], prompt_feats)
    _, text_side, pairing = matched_pairs(manifest, images, texts, prompts)
    assert pairing == "class prompt"
    expected = build_classifier(prompt_feats, 3)[torch.as_tensor(test_images["label"].to_numpy())]
    np.testing.assert_allclose(text_side, expected.numpy(), rtol=1e-6, atol=1e-7)


def test_modality_gap_step_writes_the_gap_of_the_pairs(synthetic, tmp_path):
    from crossgap.metrics.gap import modality_gap

    manifest, df, _ = synthetic
    test_images, test_texts = _rows(df, "image", "test"), _rows(df, "text", "test")
    images = _save(tmp_path / "img.st", test_images["id"].tolist(), _rand(3, 0) + 3 * _eye(0))
    texts = _save(tmp_path / "txt.st", test_texts["id"].tolist(), _rand(6, 1) - 3 * _eye(0))
    prompts = _save(tmp_path / "p.st", ["a", "b", "c"], _rand(3, 2))
    out = tmp_path / "gap" / "modality_gap.json"
    record = modality_gap_step(manifest=manifest, images=images, texts=texts, prompts=prompts, out=str(out),
                               dataset="synthetic", model_slug="m")
    assert json.loads(out.read_text()) == record
    assert record["num_pairs"] == 3 and record["pairing"] == "first caption"
    assert record["dataset"] == "synthetic" and record["model"] == "m"
    img, txt, _ = matched_pairs(manifest, images, texts, prompts)
    expected = {k: float(v) for k, v in modality_gap(img, txt).items()}
    assert record["metrics"] == pytest.approx(expected)
    record = modality_gap_step(manifest=manifest, images=images, texts=None, prompts=prompts,
                               out=str(tmp_path / "g2.json"), dataset="synthetic", model_slug="m")
    assert record["pairing"] == "class prompt" and record["num_pairs"] == 3


def test_modality_gap_pairing_label_on_prompt_fallback(synthetic, tmp_path):
    manifest, df, _ = synthetic
    test_images, train_texts = _rows(df, "image", "test"), _rows(df, "text", "train")
    images = _save(tmp_path / "img.st", test_images["id"].tolist(), _rand(3, 0))
    texts = _save(tmp_path / "txt.st", train_texts["id"].tolist(), _rand(len(train_texts), 1))
    prompts = _save(tmp_path / "p.st", ["a", "b", "c"], _rand(3, 2))
    record = modality_gap_step(manifest=manifest, images=images, texts=texts, prompts=prompts,
                               out=str(tmp_path / "g.json"), dataset="synthetic", model_slug="m")
    assert record["pairing"] == "class prompt"


# --------------------------------------------------------------------------------- methods beyond native
def test_gap_shift_query_equals_a_plain_shift_and_scores_are_saved(synthetic, tmp_path):
    from crossgap.metrics.scores import read_scores

    manifest, df, _ = synthetic
    images, texts = _rows(df, "image"), _rows(df, "text")
    img_feats, txt_feats = _rand(len(images), 1), _rand(len(texts), 2)
    ipath = _save(tmp_path / "image_all.safetensors", images["id"].tolist(), img_feats)
    gallery = images["split"].to_numpy() == "train"
    tg = texts["split"].to_numpy() == "train"
    tpath = _save(tmp_path / "text_train.safetensors", texts["id"][tg].tolist(), txt_feats[torch.as_tensor(tg)])
    gpath = _save(tmp_path / "image_train.safetensors", images["id"][gallery].tolist(),
                  img_feats[torch.as_tensor(gallery)])
    out, scores = tmp_path / "res" / "gap_shift.json", tmp_path / "res" / "gap_shift.queries.parquet"
    record = retrieval_step(task="image_retrieval", method="gap_shift", manifest=manifest, query=ipath, gallery=gpath,
                            out=str(out), model_slug="m", references={"image": gpath, "text": tpath},
                            per_query_out=str(scores))
    # plain: means of the L2-normalised gallery images / gallery texts, query moved by their difference
    g_img = F.normalize(img_feats[torch.as_tensor(gallery)], dim=1)
    mu_i, mu_t = g_img.mean(0), F.normalize(txt_feats[torch.as_tensor(tg)], dim=1).mean(0)
    q = F.normalize(F.normalize(img_feats[torch.as_tensor(~gallery)], dim=1) - mu_i + mu_t, dim=1)
    lab = images["label"].to_numpy()
    direct = evaluate_retrieval(q, g_img, lab[~gallery], lab[gallery])
    assert record["metrics"]["mAP"] == pytest.approx(direct["mAP"])
    assert record["extra"]["fit"]["references"] == {"image": gpath, "text": tpath}
    table = read_scores(scores)
    assert table["query_id"].tolist() == images["id"][~gallery].tolist()
    assert table["AP"].mean() == pytest.approx(record["metrics"]["mAP"])


def test_a_method_the_model_cannot_take_is_recorded_unavailable(synthetic, tmp_path):
    manifest, df, _ = synthetic
    reason = "image tower: the timm vision tower has no linear projection (SigLIP-style)"
    pre = tmp_path / "image_all.pre.safetensors"  # what extract_step writes for such a tower
    save_feature_set(pre, FeatureSet(torch.empty(0, 0), [], meta={"preprojection": True, "unavailable": reason}))
    proj = tmp_path / "projections.safetensors"
    save_feature_set(proj, FeatureSet(torch.empty(0, 0), [], meta={"unavailable": "no linear projection (MAP head)"}))
    out = tmp_path / "isoclip.json"
    record = retrieval_step(task="image_retrieval", method="isoclip", manifest=manifest, query=str(pre),
                            gallery=str(pre), out=str(out), model_slug="m",
                            references={"proj_image": str(proj), "proj_text": str(proj)},
                            per_query_out=str(tmp_path / "isoclip.queries.parquet"))
    assert record["metrics"] == {} and reason in record["extra"]["unavailable"]
    assert record["extra"]["recipe"]["repository"] == "simomagi/IsoCLIP"
    assert (tmp_path / "isoclip.queries.parquet").exists()


def test_a_plain_file_where_pre_projection_features_belong_fails_the_job(synthetic, tmp_path):
    manifest, df, _ = synthetic
    images = _rows(df, "image")
    ipath = _save(tmp_path / "image_all.safetensors", images["id"].tolist(), _rand(len(images), 3))
    with pytest.raises(ValueError, match="not a pre-projection feature file"):
        retrieval_step(task="image_retrieval", method="isoclip", manifest=manifest, query=ipath, gallery=ipath,
                       out=str(tmp_path / "isoclip.json"), model_slug="m", references={})
    assert not (tmp_path / "isoclip.json").exists()


def test_a_bug_inside_a_method_fails_the_job_instead_of_a_missing_row(synthetic, tmp_path, monkeypatch):
    """Only MethodUnavailable means unavailable: a KeyError (a typo such as stats["mean_imgae"]) fails."""
    from crossgap.methods import centered

    manifest, df, _ = synthetic
    images = _rows(df, "image")
    ipath = _save(tmp_path / "image_all.safetensors", images["id"].tolist(), _rand(len(images), 3))

    def typo(features, stats, **kw):
        return stats["mean_imgae"]

    monkeypatch.setattr(centered, "apply", typo)
    with pytest.raises(KeyError, match="mean_imgae"):
        retrieval_step(task="image_retrieval", method="centered", manifest=manifest, query=ipath, gallery=ipath,
                       out=str(tmp_path / "centered.json"), model_slug="m", references={"image": ipath})
    assert not (tmp_path / "centered.json").exists()

    def fit_typo(refs, **kw):
        raise KeyError("mean_imgae")

    monkeypatch.setattr(centered, "fit", fit_typo)
    with pytest.raises(KeyError, match="mean_imgae"):
        zero_shot_step(method="centered", manifest=manifest, images=ipath,
                       prompts=_save(tmp_path / "p.st", [f"p{i}" for i in range(3)], _rand(3, 1)),
                       out=str(tmp_path / "zs.json"), model_slug="m", references={"image": ipath})


def test_an_inversion_the_tower_could_not_run_is_unavailable(synthetic, tmp_path):
    manifest, df, _ = synthetic
    images = _rows(df, "image")
    gpath = _save(tmp_path / "image_train.safetensors", images["id"].tolist(), _rand(len(images), 1))
    reason = "the vision tower ModifiedResNet cannot take visual pseudo tokens"
    inv = tmp_path / "test.safetensors"
    save_feature_set(inv, FeatureSet(torch.empty(0, 0), [], meta={"kind": "oti", "unavailable": reason}))
    record = retrieval_step(task="image_retrieval", method="oti", manifest=manifest, query=str(inv), gallery=gpath,
                            out=str(tmp_path / "oti.json"), model_slug="m")
    assert record["metrics"] == {} and reason in record["extra"]["unavailable"]
    record = zero_shot_step(method="oti", manifest=manifest, images=str(inv),
                            prompts=_save(tmp_path / "p.st", [f"p{i}" for i in range(3)], _rand(3, 1)),
                            out=str(tmp_path / "zs_oti.json"), model_slug="m")
    assert record["metrics"] == {} and reason in record["extra"]["unavailable"]


def _zero_shot_files(synthetic, tmp_path, num_templates=2):
    manifest, df, _ = synthetic
    images = _rows(df, "image")
    test = images["split"].to_numpy() == "test"
    feats = _rand(len(images), 11) + 2.0  # an offset: a modality gap to close
    ipath = _save(tmp_path / "image_all.safetensors", images["id"].tolist(), feats)
    gpath = _save(tmp_path / "image_train.safetensors", images["id"][~test].tolist(), feats[torch.as_tensor(~test)])
    prompt_feats = _rand(3 * num_templates, 12) - 2.0
    ppath = tmp_path / "prompts.safetensors"
    save_feature_set(ppath, FeatureSet(prompt_feats, [f"p{i}" for i in range(3 * num_templates)],
                                       meta={"num_classes": 3}))
    labels = images["label"].to_numpy()[test]
    return manifest, ipath, gpath, str(ppath), feats[torch.as_tensor(test)], feats[torch.as_tensor(~test)], \
        prompt_feats, labels


def _top1(images: torch.Tensor, classes: torch.Tensor, labels) -> float:
    pred = (F.normalize(images, dim=1) @ F.normalize(classes, dim=1).T).argmax(1).numpy()
    return 100.0 * float(np.mean(pred == labels))


def test_zero_shot_centered_centres_the_averaged_class_embeddings_as_i0t(synthetic, tmp_path):
    """I0T's post-hoc centring for zero-shot: the classifier (prompts averaged per class) minus its mean,
    images minus the image mean; not each prompt centred before averaging."""
    manifest, ipath, gpath, ppath, test_x, ref_x, prompts, labels = _zero_shot_files(synthetic, tmp_path)
    record = zero_shot_step(method="centered", manifest=manifest, images=ipath, prompts=ppath,
                            out=str(tmp_path / "c.json"), model_slug="m",
                            references={"image": gpath, "classifier": ppath})
    classes = F.normalize(F.normalize(prompts, dim=1).reshape(3, 2, D).mean(1), dim=1)  # I0T: averaged first
    centred_classes = F.normalize(classes - classes.mean(0), dim=1)
    centred_images = F.normalize(F.normalize(test_x, dim=1) - F.normalize(ref_x, dim=1).mean(0), dim=1)
    assert record["metrics"]["top1"] == pytest.approx(_top1(centred_images, centred_classes, labels))
    assert record["extra"]["fit"]["references"] == {"image": gpath, "classifier": ppath}
    assert "averaged class embeddings" in record["extra"]["recipe"]["variant"]


def test_zero_shot_gap_shift_is_liangs_two_sided_move(synthetic, tmp_path):
    manifest, ipath, gpath, ppath, test_x, ref_x, prompts, labels = _zero_shot_files(synthetic, tmp_path)
    record = zero_shot_step(method="gap_shift", manifest=manifest, images=ipath, prompts=ppath,
                            out=str(tmp_path / "g.json"), model_slug="m", params={"form": "liang", "scale": 1.0},
                            references={"image": gpath, "classifier": ppath})
    classes = F.normalize(F.normalize(prompts, dim=1).reshape(3, 2, D).mean(1), dim=1)
    gap = F.normalize(ref_x, dim=1).mean(0) - classes.mean(0)  # fitted on the reference images and the classes
    unit_gap, delta = gap / gap.norm(), float(gap.norm())
    moved_images = F.normalize(F.normalize(test_x, dim=1) - 0.5 * delta * unit_gap, dim=1)
    moved_classes = F.normalize(classes + 0.5 * delta * unit_gap, dim=1)
    assert record["metrics"]["top1"] == pytest.approx(_top1(moved_images, moved_classes, labels))
    assert record["extra"]["recipe"]["repository"] == "Weixin-Liang/Modality-Gap"
    assert record["params"] == {"form": "liang", "scale": 1.0}


def test_snapshot_method_reads_its_step_column(synthetic, tmp_path):
    manifest, df, _ = synthetic
    images = _rows(df, "image")
    test = images[images["split"] == "test"]
    feats = _rand(len(images), 4)
    gpath = _save(tmp_path / "image_train.safetensors", images["id"].tolist(), feats)
    snaps = torch.stack([_rand(len(test), 5), _rand(len(test), 6)], dim=1)  # steps 10, 50
    spath = tmp_path / "test.at-10-50.safetensors"
    save_feature_set(spath, FeatureSet(snaps, test["id"].tolist(), meta={"snapshot_steps": [10, 50]}))
    record = retrieval_step(task="image_retrieval", method="oti@50", manifest=manifest, query=str(spath),
                            gallery=gpath, out=str(tmp_path / "s.json"), model_slug="m")
    g = images["split"].to_numpy() == "train"
    lab = images["label"].to_numpy()
    direct = evaluate_retrieval(snaps[:, 1], feats[torch.as_tensor(g)], test["label"].to_numpy(), lab[g])
    assert record["metrics"]["mAP"] == pytest.approx(direct["mAP"])
    with pytest.raises(ValueError, match="snapshots at steps \\[10, 50\\], not 20"):
        retrieval_step(task="image_retrieval", method="oti@20", manifest=manifest, query=str(spath), gallery=gpath,
                       out=str(tmp_path / "t.json"), model_slug="m")
