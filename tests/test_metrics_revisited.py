"""Revisited Oxford/Paris protocol against a per-query reference loop on synthetic ground truth."""

from __future__ import annotations

import numpy as np
import pytest

from crossgap.metrics import evaluate_revisited, revisited_per_query, setup_ground_truth

KAPPAS = (1, 5, 10)


def reference_query(sims: np.ndarray, ok: list[int], junk: list[int]) -> dict[str, float] | None:
    """Official revisitop AP / mP@k for one query, written as a plain loop."""
    if not ok:
        return None
    ok_set, junk_set = set(ok), set(junk) - set(ok)
    ranking = sorted(range(len(sims)), key=lambda i: (-sims[i], i))
    pos, n_junk = [], 0
    for r, idx in enumerate(ranking):
        if idx in ok_set:
            pos.append(r - n_junk)  # 0-based rank once junk is removed
        elif idx in junk_set:
            n_junk += 1
    ap = 0.0
    for j, r in enumerate(pos):
        p0 = 1.0 if r == 0 else j / r
        p1 = (j + 1) / (r + 1)
        ap += (p0 + p1) / 2 / len(ok_set)
    out = {"ap": ap}
    pos1 = [p + 1 for p in pos]
    for k in KAPPAS:
        kq = min(max(pos1), k)
        out[f"p{k}"] = sum(p <= kq for p in pos1) / kq
    return out


def synthetic_gnd(rng: np.random.Generator, n_q: int, n_g: int) -> list[dict]:
    gnd = []
    for i in range(n_q):
        perm = rng.permutation(n_g)
        n_easy, n_hard, n_junk = rng.integers(1, 12), rng.integers(1, 12), rng.integers(0, 10)
        if i == 2:
            n_hard = 0  # no positive in the hard setup
        if i == 5:
            n_easy = 0  # no positive in the easy setup
        easy = perm[:n_easy].tolist()
        hard = perm[n_easy : n_easy + n_hard].tolist()
        junk = perm[n_easy + n_hard : n_easy + n_hard + n_junk].tolist()
        gnd.append({"easy": easy, "hard": hard, "junk": junk, "bbx": [0.0, 0.0, 10.0, 10.0]})
    return gnd


def make_problem(seed: int = 0, n_q: int = 15, n_g: int = 250):
    rng = np.random.default_rng(seed)
    q, g = rng.normal(size=(n_q, 16)), rng.normal(size=(n_g, 16))
    gnd = synthetic_gnd(rng, n_q, n_g)
    # make positives likelier to rank high so that the metrics are not trivial
    for i, entry in enumerate(gnd):
        for idx in entry["easy"][:4] + entry["hard"][:2]:
            g[idx] += 1.5 * q[i]
    return q, g, gnd


def reference_all(q: np.ndarray, g: np.ndarray, gnd: list[dict]) -> dict[str, list]:
    sims = (q / np.linalg.norm(q, axis=1, keepdims=True)) @ (g / np.linalg.norm(g, axis=1, keepdims=True)).T
    return {
        setup: [reference_query(sims[i], ok, junk) for i, (ok, junk) in enumerate(setup_ground_truth(gnd, setup))]
        for setup in ("easy", "medium", "hard")
    }


def test_per_query_matches_reference():
    q, g, gnd = make_problem()
    per = revisited_per_query(q, g, gnd, chunk_size=4, device="cpu")
    refs = reference_all(q, g, gnd)
    for setup, setup_refs in refs.items():
        for i, r in enumerate(setup_refs):
            if r is None:
                assert np.isnan(per[setup]["ap"][i].item())
                continue
            assert per[setup]["ap"][i].item() == pytest.approx(r["ap"], abs=1e-12)
            for k in KAPPAS:
                assert per[setup][f"p{k}"][i].item() == pytest.approx(r[f"p{k}"], abs=1e-12)


def test_summary_matches_reference_and_excludes_empty_queries():
    q, g, gnd = make_problem(seed=1)
    out = evaluate_revisited(q, g, {"gnd": gnd, "imlist": [], "qimlist": []}, device="cpu")
    refs = reference_all(q, g, gnd)
    for setup, setup_refs in refs.items():
        valid = [r for r in setup_refs if r is not None]
        assert out[f"mAP_{setup}"] == pytest.approx(100 * np.mean([r["ap"] for r in valid]), abs=1e-9)
        for k in KAPPAS:
            assert out[f"mP@{k}_{setup}"] == pytest.approx(100 * np.mean([r[f"p{k}"] for r in valid]), abs=1e-9)
    assert out["num_queries_without_positive_hard"] == 1
    assert out["num_queries_without_positive_easy"] == 1
    assert out["num_queries_without_positive_medium"] == 0
    assert out["num_queries"] == 15 and out["gallery_size"] == 250


def test_chunk_size_invariance():
    q, g, gnd = make_problem(seed=2, n_q=9)
    results = [evaluate_revisited(q, g, gnd, chunk_size=c, device="cpu") for c in (1, 7, 9)]
    for key in results[0]:
        assert results[0][key] == pytest.approx(results[1][key], abs=1e-12, nan_ok=True)
        assert results[0][key] == pytest.approx(results[2][key], abs=1e-12, nan_ok=True)


def test_hand_example_official_interpolation():
    # gallery ranking for the query: idx0 (neg), idx1 (junk), idx2 (pos), idx3 (neg)
    q = np.array([[1.0, 0.0]])
    g = np.array([[1.0, 0.0], [0.9, 0.1], [0.8, 0.2], [0.0, 1.0]])
    gnd = [{"easy": [2], "hard": [], "junk": [1]}]
    out = evaluate_revisited(q, g, gnd, device="cpu")
    # positive at rank 1 once junk is removed: (0/1 + 1/2) / 2 = 0.25 (non-interpolated AP: 0.5)
    assert out["mAP_easy"] == pytest.approx(25.0)
    assert out["mAP_medium"] == pytest.approx(25.0)
    assert np.isnan(out["mAP_hard"])
    assert out["mP@1_easy"] == 0.0
    assert out["mP@5_easy"] == pytest.approx(50.0)  # k' = min(max pos = 2, 5) = 2 -> 1/2


def test_setup_definitions():
    gnd = [{"easy": [1], "hard": [2], "junk": [3]}]
    assert setup_ground_truth(gnd, "easy") == [([1], [3, 2])]
    assert setup_ground_truth(gnd, "medium") == [([1, 2], [3])]
    assert setup_ground_truth(gnd, "hard") == [([2], [3, 1])]
    with pytest.raises(ValueError):
        setup_ground_truth(gnd, "extreme")
    with pytest.raises(ValueError, match="lacks"):
        setup_ground_truth([{"easy": [1]}], "easy")


def test_errors():
    q, g = np.ones((2, 3)), np.ones((5, 3))
    with pytest.raises(ValueError, match="ground truth has"):
        evaluate_revisited(q, g, [{"easy": [0], "hard": [], "junk": []}], device="cpu")
    with pytest.raises(ValueError, match="outside"):
        evaluate_revisited(q[:1], g, [{"easy": [7], "hard": [], "junk": []}], device="cpu")
