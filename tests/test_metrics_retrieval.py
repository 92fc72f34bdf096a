"""Retrieval metrics against slow, obviously-correct per-query references; result files."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from sklearn.metrics import average_precision_score

from crossgap.metrics import (
    aggregate_results,
    evaluate_retrieval,
    read_result,
    retrieval_per_query,
    write_result,
)
from crossgap.metrics.relevance import Relevance
from crossgap.metrics.retrieval import _chunk_metrics

KS = (1, 5, 10)


def reference_query(sims: np.ndarray, rel: np.ndarray, self_idx: int | None = None) -> dict[str, float] | None:
    """One query, the slow way: rank by (-similarity, gallery index), drop self, count."""
    items = [g for g in range(len(sims)) if g != self_idx]
    ranked = sorted(items, key=lambda g: (-sims[g], g))
    rels = [bool(rel[g]) for g in ranked]
    n_rel = sum(rels)
    if n_rel == 0:
        return None
    ap = ap_r = 0.0
    hits = 0
    for k, r in enumerate(rels, start=1):
        if r:
            hits += 1
            ap += hits / k
            if k <= n_rel:
                ap_r += hits / k
    out = {"ap": ap / n_rel, "ap_at_r": ap_r / n_rel, "r_precision": sum(rels[:n_rel]) / n_rel}
    for k in KS:
        out[f"hit{k}"] = float(any(rels[:k]))
    return out


def reference_all(q: np.ndarray, g: np.ndarray, rel: np.ndarray, exclude_self: bool = False) -> list:
    """Per-query references for float64 features ``[Q, D]``, ``[G, D]`` and relevance ``[Q, G]``."""
    qn = q / np.linalg.norm(q, axis=1, keepdims=True)
    gn = g / np.linalg.norm(g, axis=1, keepdims=True)
    sims = qn @ gn.T
    return [reference_query(sims[i], rel[i], i if exclude_self else None) for i in range(len(q))]


def assert_matches(per_query, refs: list) -> None:
    """Compare a RetrievalPerQuery with the per-query references (None = no relevant item)."""
    valid = per_query.valid.numpy()
    assert list(valid) == [r is not None for r in refs]
    for i, r in enumerate(refs):
        if r is None:
            assert np.isnan(per_query.ap[i].item())
            continue
        assert per_query.ap[i].item() == pytest.approx(r["ap"], abs=1e-12)
        assert per_query.ap_at_r[i].item() == pytest.approx(r["ap_at_r"], abs=1e-12)
        assert per_query.r_precision[i].item() == pytest.approx(r["r_precision"], abs=1e-12)
        for k in KS:
            assert float(per_query.hits[k][i]) == r[f"hit{k}"]


def sign_features(rng: np.random.Generator, n: int, d: int = 16) -> np.ndarray:
    """±1 vectors: norm sqrt(d) = 4, so normalised features and all dot products are exact in float32."""
    return rng.choice([-1.0, 1.0], size=(n, d)).astype(np.float32)


def test_tie_free_matches_sklearn_and_reference():
    rng = np.random.default_rng(0)
    q, g = rng.normal(size=(40, 24)), rng.normal(size=(300, 24))
    q_lab, g_lab = rng.integers(0, 8, 40), rng.integers(0, 8, 300)
    q_lab[[3, 17]] = 99  # no relevant gallery item
    per_query = retrieval_per_query(q, g, q_lab, g_lab, chunk_size=16, device="cpu")
    rel = q_lab[:, None] == g_lab[None, :]
    refs = reference_all(q, g, rel)
    assert_matches(per_query, refs)
    qn = q / np.linalg.norm(q, axis=1, keepdims=True)
    gn = g / np.linalg.norm(g, axis=1, keepdims=True)
    for i in range(len(q)):
        if rel[i].any():
            sk = average_precision_score(rel[i], qn[i] @ gn.T)
            assert per_query.ap[i].item() == pytest.approx(sk, abs=1e-12)

    summary = evaluate_retrieval(q, g, q_lab, g_lab, chunk_size=16, device="cpu")
    assert summary["num_queries"] == 40
    assert summary["num_queries_without_relevant"] == 2
    assert summary["queries_without_relevant"] == [3, 17]
    assert summary["num_queries_evaluated"] == 38
    assert summary["gallery_size"] == 300
    valid = [r for r in refs if r is not None]
    assert summary["mAP"] == pytest.approx(100 * np.mean([r["ap"] for r in valid]), abs=1e-9)
    assert summary["mAP_at_R"] == pytest.approx(100 * np.mean([r["ap_at_r"] for r in valid]), abs=1e-9)
    assert summary["R_precision"] == pytest.approx(100 * np.mean([r["r_precision"] for r in valid]), abs=1e-9)
    for k in KS:
        assert summary[f"R@{k}"] == pytest.approx(100 * np.mean([r[f"hit{k}"] for r in valid]), abs=1e-9)


def test_ties_break_by_gallery_index():
    rng = np.random.default_rng(1)
    q = sign_features(rng, 30)
    g = sign_features(rng, 120)
    g = np.concatenate([g, g[:40], g[5:25]])  # exact duplicates at higher indices
    q_lab = rng.integers(0, 5, len(q))
    g_lab = rng.integers(0, 5, len(g))
    per_query = retrieval_per_query(q, g, q_lab, g_lab, chunk_size=8, device="cpu")
    refs = reference_all(q.astype(np.float64), g.astype(np.float64), q_lab[:, None] == g_lab[None, :])
    assert_matches(per_query, refs)


def chunk_metrics_of(sim: np.ndarray, rel: np.ndarray) -> tuple[dict, int]:
    """crossgap's chunk metrics of an exact similarity matrix ``[B, G]``: ``I_B @ sim`` is exact."""
    b, n_g = sim.shape
    idx, valid = Relevance(b, n_g, torch.device("cpu"), None, None, torch.from_numpy(rel), None, None).lists(0, b)
    t = torch.from_numpy(sim)
    return _chunk_metrics(torch.eye(b, dtype=t.dtype), t.T.contiguous(), idx, valid, None, KS)


def assert_chunk_matches(out: dict, sim: np.ndarray, rel: np.ndarray) -> None:
    for i in range(sim.shape[0]):
        ref = reference_query(sim[i].astype(np.float64), rel[i])
        assert ref is not None
        assert out["ap"][i].item() == pytest.approx(ref["ap"], abs=1e-12), i
        assert out["ap_at_r"][i].item() == pytest.approx(ref["ap_at_r"], abs=1e-12), i
        assert out["r_precision"][i].item() == pytest.approx(ref["r_precision"], abs=1e-12), i
        for k in KS:
            assert float(out[f"hit{k}"][i]) == ref[f"hit{k}"], (i, k)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_ties_across_relevance_are_counted_by_index_without_sorting(dtype):
    """Non-relevant items equal to a relevant one, at lower and at higher gallery indices."""
    rng = np.random.default_rng(12)
    sim = rng.normal(size=(24, 300)).astype(dtype)
    rel = rng.random((24, 300)) < 0.1
    rel[:, 0] = True
    for i in range(24):
        pos, neg = np.flatnonzero(rel[i]), np.flatnonzero(~rel[i])
        for p in rng.choice(pos, 3, replace=True):
            sim[i, rng.choice(neg, 2, replace=False)] = sim[i, p]  # copies on both sides of p
    out, n_sorted = chunk_metrics_of(sim, rel)
    assert n_sorted == 0  # handled by the searchsorted path
    assert_chunk_matches(out, sim, rel)


def test_ties_among_relevant_items_use_the_sort_path():
    rng = np.random.default_rng(13)
    sim = rng.normal(size=(10, 120))
    rel = rng.random((10, 120)) < 0.2
    rel[:, :2] = True
    sim[[2, 5, 7], 1] = sim[[2, 5, 7], 0]  # two relevant items tied
    out, n_sorted = chunk_metrics_of(sim, rel)
    assert n_sorted == 3
    assert_chunk_matches(out, sim, rel)
    coarse = np.round(sim * 4) / 4  # ties of every kind
    out, n_sorted = chunk_metrics_of(coarse, rel)
    assert n_sorted == 10
    assert_chunk_matches(out, coarse, rel)


def test_tie_order_hand_example():
    # Two identical gallery items: the lower index ranks first.
    g = np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    q = np.array([[1.0, 0.0]])
    first_wins = evaluate_retrieval(q, g, [0], [0, 1, 0], device="cpu")
    assert first_wins["mAP"] == pytest.approx(100 * (1 / 1 + 2 / 3) / 2)
    assert first_wins["R@1"] == 100.0
    second_wins = evaluate_retrieval(q, g, [0], [1, 0, 0], device="cpu")
    assert second_wins["mAP"] == pytest.approx(100 * (1 / 2 + 2 / 3) / 2)
    assert second_wins["R@1"] == 0.0
    assert second_wins["R_precision"] == pytest.approx(50.0)
    assert second_wins["mAP_at_R"] == pytest.approx(100 * (1 / 2) / 2)


def test_exclude_self_leave_one_out():
    rng = np.random.default_rng(2)
    x = sign_features(rng, 90)
    x[60:70] = x[0:10]  # duplicates of other items (and ties with self)
    lab = rng.integers(0, 12, len(x))
    lab[7] = 1000  # singleton: nothing relevant once itself is removed
    per_query = retrieval_per_query(x, x, lab, lab, exclude_self=True, chunk_size=13, device="cpu")
    refs = reference_all(x.astype(np.float64), x.astype(np.float64), lab[:, None] == lab[None, :], exclude_self=True)
    assert refs[7] is None
    assert_matches(per_query, refs)
    assert per_query.num_relevant[0].item() == int((lab == lab[0]).sum()) - 1


@pytest.mark.parametrize("exclude_self", [False, True])
def test_chunk_size_invariance(exclude_self):
    rng = np.random.default_rng(3)
    x = sign_features(rng, 50)
    g = x if exclude_self else sign_features(rng, 80)
    q_lab = rng.integers(0, 6, len(x))
    g_lab = q_lab if exclude_self else rng.integers(0, 6, len(g))
    results = [
        evaluate_retrieval(x, g, q_lab, g_lab, exclude_self=exclude_self, chunk_size=c, device="cpu")
        for c in (1, 7, len(x))
    ]
    assert results[0] == results[1] == results[2]


def test_group_relevance():
    rng = np.random.default_rng(4)
    # caption-style: 5 captions per image, query captions against gallery captions
    groups = np.repeat(np.arange(20), 5)
    x = rng.normal(size=(100, 12))
    per_query = retrieval_per_query(x, x, query_groups=groups, gallery_groups=groups, exclude_self=True, device="cpu")
    refs = reference_all(x, x, groups[:, None] == groups[None, :], exclude_self=True)
    assert_matches(per_query, refs)
    assert (per_query.num_relevant == 4).all()


def test_qrels_dense_and_pairs():
    rng = np.random.default_rng(5)
    q, g = rng.normal(size=(25, 10)), rng.normal(size=(70, 10))
    dense = rng.random((25, 70)) < 0.08
    dense[4] = False  # a query without any relevant document
    pairs = np.argwhere(dense)
    rng.shuffle(pairs)
    refs = reference_all(q, g, dense)
    by_dense = retrieval_per_query(q, g, relevance=dense, chunk_size=6, device="cpu")
    by_pairs = retrieval_per_query(q, g, relevance=torch.from_numpy(pairs), chunk_size=6, device="cpu")
    assert_matches(by_dense, refs)
    assert_matches(by_pairs, refs)
    assert not by_pairs.valid[4]


def test_inputs_and_normalisation():
    rng = np.random.default_rng(6)
    q, g = rng.normal(size=(10, 8)).astype(np.float32), rng.normal(size=(30, 8)).astype(np.float32)
    ql, gl = rng.integers(0, 3, 10), rng.integers(0, 3, 30)
    a = evaluate_retrieval(q, g, ql, gl, device="cpu")
    b = evaluate_retrieval(
        torch.from_numpy(q) * 7.0, torch.from_numpy(g) * 0.1, torch.from_numpy(ql), gl.tolist(), device="cpu"
    )
    assert a == b
    assert set(a) >= {"mAP", "mAP_at_R", "R_precision", "R@1", "R@5", "R@10", "num_queries", "gallery_size"}


def test_errors():
    x = np.ones((4, 3))
    lab = np.zeros(4, dtype=int)
    with pytest.raises(ValueError, match="exactly one relevance source"):
        evaluate_retrieval(x, x, lab, lab, query_groups=lab, gallery_groups=lab, device="cpu")
    with pytest.raises(ValueError, match="exactly one relevance source"):
        evaluate_retrieval(x, x, device="cpu")
    with pytest.raises(ValueError, match="exclude_self"):
        evaluate_retrieval(x, x[:3], lab, lab[:3], exclude_self=True, device="cpu")
    bad = x.copy()
    bad[1, 1] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        evaluate_retrieval(bad, x, lab, lab, device="cpu")
    with pytest.raises(ValueError, match="lengths"):
        evaluate_retrieval(x, x, lab, lab[:2], device="cpu")


def test_all_queries_without_relevant():
    x = np.eye(3)
    out = evaluate_retrieval(x, x, [0, 1, 2], [5, 5, 5], device="cpu")
    assert np.isnan(out["mAP"]) and out["num_queries_without_relevant"] == 3


# ---- result files -------------------------------------------------------------------


def test_write_read_aggregate(tmp_path):
    x = np.random.default_rng(7).normal(size=(20, 8))
    lab = np.arange(20) % 4
    metrics = evaluate_retrieval(x, x, lab, lab, exclude_self=True, device="cpu")
    p1 = tmp_path / "a.json"
    write_result(
        p1,
        task="image_retrieval",
        method="oti",
        dataset="cub",
        model="ViT-B-32",
        metrics=metrics,
        params={"steps": 150},
    )
    rec = read_result(p1)
    assert rec["metrics"]["mAP"] == pytest.approx(metrics["mAP"])
    assert rec["counts"]["num_queries"] == 20 and rec["counts"]["queries_without_relevant"] == []
    assert rec["params"] == {"steps": 150} and rec["extra"] == {}
    p2 = tmp_path / "b.json"
    write_result(
        p2,
        task="zero_shot",
        method="standard",
        dataset="cub",
        model="ViT-B-32",
        metrics={"top1": 50.0, "top5": float("nan"), "num_samples": 3},
        params={},
        extra={"note": "x"},
    )
    assert read_result(p2)["metrics"]["top5"] is None
    summary = aggregate_results([p1, p2])
    assert summary["cub"]["ViT-B-32"]["image_retrieval"]["oti"]["mAP"] == pytest.approx(metrics["mAP"])
    assert summary["cub"]["ViT-B-32"]["zero_shot"]["standard"] == {"top1": 50.0}
    with pytest.raises(ValueError, match="both hold"):
        aggregate_results([p1, p1])


def test_result_validation(tmp_path):
    with pytest.raises(ValueError, match="not valid for task"):
        write_result(
            tmp_path / "x.json", task="zero_shot", method="image", dataset="d", model="m", metrics={"a": 1.0}, params={}
        )
    assert not (tmp_path / "x.json").exists()
    p = tmp_path / "r.json"
    write_result(p, task="text_retrieval", method="ovi", dataset="d", model="m", metrics={"mAP": 1.0}, params={})
    rec = json.loads(p.read_text())
    del rec["metrics"]
    p.write_text(json.dumps(rec))
    with pytest.raises(ValueError, match=r"r\.json: missing key 'metrics'"):
        read_result(p)


def test_features_requiring_grad_are_fine():
    x = torch.randn(12, 6, requires_grad=True)
    lab = torch.arange(12) % 3
    out = retrieval_per_query(x, x, lab, lab, exclude_self=True, device="cpu")
    assert not out.ap.requires_grad


@pytest.mark.parametrize("reference_compat", [False, True])
def test_leave_one_out_results_record_both_map_at_r_definitions(reference_compat):
    """Query 0 (label A) ranks, without itself, items 3 (B), 1 (A), 2 (A), 4 (B): R = 2.
    Standard MAP@R (top 2): (1/2) / 2 = 0.25; the reference's (top R + 1 = 3): (1/2 + 2/3) / 2 = 7/12."""
    from crossgap.metrics import evaluate_retrieval
    from crossgap.metrics.retrieval import evaluation_per_query

    angles = np.radians([0, 20, 30, 10, 90])
    feats = np.stack([np.cos(angles), np.sin(angles)], axis=1)
    labels = np.array([0, 0, 0, 1, 1])
    kw = dict(exclude_self=True, device="cpu", reference_compat=reference_compat)
    per = evaluation_per_query(feats, feats, labels, labels, **kw)
    assert float(per.ap_at_r_standard[0]) == pytest.approx(0.25)
    assert float(per.ap_at_r_reference[0]) == pytest.approx(7 / 12)
    assert float(per.ap_at_r[0]) == pytest.approx(7 / 12 if reference_compat else 0.25)
    summary = evaluate_retrieval(feats, feats, labels, labels, **kw)
    assert summary["mAP_at_R_standard"] == pytest.approx(100 * float(per.ap_at_r_standard.mean()))
    assert summary["mAP_at_R_reference"] == pytest.approx(100 * float(per.ap_at_r_reference.mean()))
    # a query set apart from the gallery has one definition: nothing extra is recorded
    assert "mAP_at_R_reference" not in evaluate_retrieval(feats[:2], feats[2:], labels[:2], labels[2:], device="cpu")
