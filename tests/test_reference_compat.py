"""evaluation.reference_compat: the reference's mAP@R and fp16 ImageNet ranking, against loops written
from its code (miccunifi/Cross-the-Gap src/retrieval.py ``compute_metrics`` / ``calculate_similarities``,
src/utils.py ``retrieval_average_precision_atk``), and crossgap's definitions by default."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from torchmetrics.functional.retrieval import retrieval_r_precision

from crossgap.datasets import write_manifest
from crossgap.steps.evaluation import retrieval_step, zero_shot_step
from crossgap.metrics import evaluate_retrieval, read_result
from crossgap.metrics.reference_compat import reference_per_query
from crossgap.metrics.retrieval import retrieval_per_query
from crossgap.storage import FeatureSet, save_feature_set


def average_precision_tm140(sim: torch.Tensor, true: torch.Tensor) -> float:
    """torchmetrics 1.4.0's ``retrieval_average_precision`` (the version the reference pins in
    install_requirements.sh): positives' positions in the full ranking, mean of hits/position; 0 without
    positives.  (Later releases, since Lightning-AI/torchmetrics PR #3104, also drop positives whose
    similarity is <= 0, as the 1.9 installed here does; with CLIP features cosines are positive.)"""
    ranked = true[torch.topk(sim, k=sim.shape[-1], sorted=True).indices]
    if not ranked.sum():
        return 0.0
    positions = torch.arange(1, len(ranked) + 1, dtype=torch.float64)[ranked]
    return float(((torch.arange(len(positions)) + 1) / positions).mean())


def reference_loop(q: torch.Tensor, g: torch.Tensor, q_labels, g_labels, same_split: bool) -> dict[str, float]:
    """The reference's per-query loop, restated: R is counted before the query is removed."""
    sims = F.normalize(q.float()) @ F.normalize(g.float()).T
    truth = torch.as_tensor(q_labels)[:, None] == torch.as_tensor(g_labels)[None, :]
    aps, aps_at_r, p_at_r, r_at_1 = [], [], [], []
    for i in range(len(q)):
        sim, true = sims[i], truth[i]
        n_counted = int(true.sum())  # counted here, with the query itself still in the gallery
        if same_split:
            sim, true = torch.cat((sim[:i], sim[i + 1:])), torch.cat((true[:i], true[i + 1:]))
        aps.append(average_precision_tm140(sim, true))
        # retrieval_average_precision_atk(sim, true, top_k=n_counted)
        top = true[torch.topk(sim, k=n_counted).indices].double()
        precisions = torch.cumsum(top, 0) * top / torch.arange(1, n_counted + 1)
        aps_at_r.append(float(precisions.sum() / min(int(true.sum()), n_counted)))
        p_at_r.append(float(retrieval_r_precision(sim, true)))
        r_at_1.append(float(true[torch.topk(sim, 1).indices[0]]))
    return {"mAP": np.mean(aps) * 100, "mAP_at_R": np.mean(aps_at_r) * 100,
            "R_precision": np.mean(p_at_r) * 100, "R@1": np.mean(r_at_1) * 100}


def standard_map_at_r(q, g, q_labels, g_labels, exclude_self: bool) -> float:
    """MAP@R (Musgrave et al.): top R of the ranking without the query, R without the query."""
    sims = (F.normalize(q.double()) @ F.normalize(g.double()).T).numpy()
    values = []
    for i in range(len(q)):
        items = [j for j in range(len(g)) if not (exclude_self and j == i)]
        ranked = sorted(items, key=lambda j: (-sims[i, j], j))
        rel = [q_labels[i] == g_labels[j] for j in ranked]
        r = sum(rel)
        values.append(sum(sum(rel[:k]) / k for k in range(1, r + 1) if rel[k - 1]) / r)
    return float(np.mean(values) * 100)


@pytest.fixture(scope="module")
def leave_one_out():
    """40 items of 5 classes (8 each), tie-free random features: the CUB/SOP situation."""
    gen = torch.Generator().manual_seed(3)
    feats = torch.randn(40, 16, generator=gen)
    labels = np.repeat(np.arange(5), 8)[np.random.default_rng(1).permutation(40)]
    return feats, labels


def test_compat_matches_the_reference_loop_on_leave_one_out(leave_one_out):
    feats, labels = leave_one_out
    ref = reference_loop(feats, feats, labels, labels, same_split=True)
    compat = evaluate_retrieval(feats, feats, labels, labels, exclude_self=True, reference_compat=True)
    for key in ("mAP", "mAP_at_R", "R_precision", "R@1"):
        assert compat[key] == pytest.approx(ref[key], abs=1e-5), key  # torchmetrics computes in float32
    default = evaluate_retrieval(feats, feats, labels, labels, exclude_self=True)
    assert default["mAP_at_R"] == pytest.approx(standard_map_at_r(feats, feats, labels, labels, True), abs=1e-9)
    assert compat["mAP_at_R"] - default["mAP_at_R"] > 0.1  # the extra rank can only add to the sum
    for key in ("mAP", "R_precision", "R@1"):  # only mAP@R differs
        assert default[key] == pytest.approx(compat[key], abs=1e-9)


def test_compat_equals_default_when_query_and_gallery_differ(leave_one_out):
    feats, labels = leave_one_out
    q, g, ql, gl = feats[:10], feats[10:], labels[:10], labels[10:]
    ref = reference_loop(q, g, ql, gl, same_split=False)
    compat = evaluate_retrieval(q, g, ql, gl, reference_compat=True)
    default = evaluate_retrieval(q, g, ql, gl)
    for key in ("mAP", "mAP_at_R", "R_precision", "R@1"):
        assert compat[key] == pytest.approx(ref[key], abs=1e-5) and default[key] == pytest.approx(compat[key])


def _angles(degrees) -> torch.Tensor:
    rad = torch.tensor(degrees, dtype=torch.float64) * math.pi / 180
    return torch.stack((rad.cos(), rad.sin()), dim=1)


def test_leave_one_out_hand_example():
    """Items at 0°, 21°, 10°, 45° with labels A, A, B, B; each query ranks the other three by angle.

    q0: B(10°) A(21°) B(45°) → AP@R 0, reference 1/2;  q1: B A B → 0, 1/2;
    q2: A A B → 0, 0 (its one relevant item is 3rd);   q3: A B A → 0, 1/2.
    """
    feats, labels = _angles([0.0, 21.0, 10.0, 45.0]), np.array([0, 0, 1, 1])
    compat = reference_per_query(feats, feats, labels, labels, exclude_self=True)
    default = retrieval_per_query(feats, feats, labels, labels, exclude_self=True)
    assert compat.ap_at_r.tolist() == [0.5, 0.5, 0.0, 0.5]
    assert default.ap_at_r.tolist() == [0.0, 0.0, 0.0, 0.0]
    assert compat.ap.tolist() == pytest.approx([0.5, 0.5, 1 / 3, 0.5]) and default.ap.tolist() == compat.ap.tolist()
    out = evaluate_retrieval(feats, feats, labels, labels, exclude_self=True, reference_compat=True)
    assert out["mAP_at_R"] == pytest.approx(37.5) and out["mAP"] == pytest.approx(100 * (1.5 + 1 / 3) / 4)


def test_fp16_similarities_tie_and_break_by_index():
    """cos 0.5 (non-relevant, index 0) and 0.50001 (relevant, index 1) are one float16 value (0.5)."""
    q = torch.tensor([[1.0, 0.0]], dtype=torch.float64)
    cos = torch.tensor([0.5, 0.50001, 0.1], dtype=torch.float64)
    g = torch.stack((cos, (1 - cos**2).sqrt()), dim=1)
    assert torch.tensor(0.50001).half() == torch.tensor(0.5).half()
    rel = torch.tensor([[False, True, False]])
    fp32 = evaluate_retrieval(q, g, relevance=rel, reference_compat=True)
    fp16 = evaluate_retrieval(q, g, relevance=rel, reference_compat=True, fp16_similarities=True)
    assert fp32["mAP"] == pytest.approx(100.0) and fp32["R@1"] == 100.0
    assert fp16["mAP"] == pytest.approx(50.0) and fp16["R@1"] == 0.0 and fp16["R@5"] == 100.0
    with pytest.raises(ValueError, match="needs reference_compat=True"):
        evaluate_retrieval(q, g, relevance=rel, fp16_similarities=True)


def test_fp16_matches_a_loop_over_rounded_similarities():
    """Many ties: features on a coarse grid; the loop ranks float16 similarities by (-sim, index)."""
    gen = torch.Generator().manual_seed(0)
    q, g = torch.randn(12, 8, generator=gen), torch.randn(300, 8, generator=gen)
    ql, gl = torch.randint(0, 3, (12,), generator=gen).numpy(), torch.randint(0, 3, (300,), generator=gen).numpy()
    sims = (F.normalize(q) @ F.normalize(g).T).half().float().numpy()
    assert len(np.unique(sims)) < sims.size * 0.9  # ties do happen
    aps = []
    for i in range(12):
        ranked = sorted(range(300), key=lambda j: (-sims[i, j], j))
        rel = [ql[i] == gl[j] for j in ranked]
        aps.append(sum(sum(rel[:k]) / k for k in range(1, 301) if rel[k - 1]) / sum(rel))
    out = evaluate_retrieval(q, g, ql, gl, reference_compat=True, fp16_similarities=True, chunk_size=5)
    assert out["mAP"] == pytest.approx(np.mean(aps) * 100, abs=1e-9)
    assert out["mAP"] != pytest.approx(evaluate_retrieval(q, g, ql, gl)["mAP"], abs=1e-6)


def _manifest(tmp_path, dataset: str, splits: list[str], labels: list[int], same: bool):
    ids = [f"{s}/{i}.jpg" for i, s in enumerate(splits)]
    df = pd.DataFrame({"id": ids, "split": splits, "modality": "image", "path": [i.split("/", 1)[1] for i in ids],
                       "text": None, "label": np.asarray(labels, dtype=np.int64), "classname": None, "group": None})
    gallery = "test" if same else "train"
    meta = {"dataset": dataset, "adapter": "test", "adapter_version": "1", "dataroot": str(tmp_path),
            "root": str(tmp_path), "classnames": ["a", "b"], "templates": ["a photo of a {}."], "skipped": [],
            "protocol": {"image_retrieval": {"query": {"split": "test"}, "gallery": {"split": gallery},
                                             "relevance": "label"},
                         "zero_shot": {"split": "test"}}}
    path = tmp_path / f"{dataset}.parquet"
    write_manifest(path, df, meta)
    return str(path), ids


def test_steps_pass_the_mode_and_record_it(tmp_path):
    # leave-one-out (query split = gallery split), the hand example above
    manifest, ids = _manifest(tmp_path, "cub2011", ["test"] * 4, [0, 0, 1, 1], same=True)
    feats = tmp_path / "f.safetensors"
    save_feature_set(feats, FeatureSet(_angles([0.0, 21.0, 10.0, 45.0]).float(), ids))
    kw = dict(task="image_retrieval", method="image", manifest=manifest, query=str(feats), gallery=str(feats),
              model_slug="m")
    retrieval_step(out=str(tmp_path / "std.json"), **kw)
    retrieval_step(out=str(tmp_path / "ref.json"), reference_compat=True, **kw)
    std, ref = read_result(tmp_path / "std.json"), read_result(tmp_path / "ref.json")
    assert std["metrics"]["mAP_at_R"] == pytest.approx(0.0) and ref["metrics"]["mAP_at_R"] == pytest.approx(37.5)
    assert std["extra"]["reference_compat"] is False and ref["extra"]["reference_compat"] is True
    assert ref["extra"]["fp16_similarities"] is False and ref["extra"]["exclude_self"] is True
    # ImageNet: similarities in float16 under reference_compat only
    manifest, ids = _manifest(tmp_path, "imagenet", ["test", "train", "train", "train"], [0, 1, 0, 1], same=False)
    cos = torch.tensor([0.5, 0.50001, 0.1])
    rows = torch.cat((torch.tensor([[1.0, 0.0]]), torch.stack((cos, (1 - cos**2).sqrt()), dim=1)))
    save_feature_set(feats, FeatureSet(rows, ids))
    retrieval_step(out=str(tmp_path / "in_std.json"), **kw | {"manifest": manifest})
    retrieval_step(out=str(tmp_path / "in_ref.json"), reference_compat=True, **kw | {"manifest": manifest})
    std, ref = read_result(tmp_path / "in_std.json"), read_result(tmp_path / "in_ref.json")
    assert std["metrics"]["mAP"] == pytest.approx(100.0) and ref["metrics"]["mAP"] == pytest.approx(50.0)
    assert ref["extra"]["fp16_similarities"] is True and std["extra"]["fp16_similarities"] is False


def test_zero_shot_records_the_mode(tmp_path):
    manifest, ids = _manifest(tmp_path, "imagenet", ["test", "test"], [0, 1], same=True)
    images, prompts = tmp_path / "i.safetensors", tmp_path / "p.safetensors"
    save_feature_set(images, FeatureSet(torch.eye(2), ids))
    save_feature_set(prompts, FeatureSet(torch.eye(2), ["class0/template0", "class1/template0"]))
    for compat in (False, True):
        out = tmp_path / f"zs{compat}.json"
        zero_shot_step(method="standard", manifest=manifest, images=str(images), prompts=str(prompts),
                       out=str(out), model_slug="m", reference_compat=compat)
        result = read_result(out)
        assert result["metrics"]["top1"] == 100.0 and result["extra"]["reference_compat"] is compat
