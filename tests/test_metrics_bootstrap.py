"""Per-query score tables and the paired bootstrap.

Score columns must average to the evaluations' summary metrics; the bootstrap must equal a
plain loop over the same random draws, and its intervals must exclude / include 0 where they
obviously should.
"""

from __future__ import annotations

import os

import numpy as np
import pandas as pd
import pytest
import torch

from crossgap.metrics.bootstrap import bootstrap_deltas, bootstrap_tables, paired_bootstrap
from crossgap.metrics.retrieval import evaluate_retrieval, evaluation_per_query, summarize_retrieval
from crossgap.metrics.revisited import evaluate_revisited, revisited_per_query, summarize_revisited
from crossgap.metrics.scores import (
    RETRIEVAL_COLUMNS,
    SUMMARY_KEYS,
    read_scores,
    read_scores_metadata,
    retrieval_scores,
    revisited_scores,
    summarize_scores,
    write_scores,
    zero_shot_scores,
)
from crossgap.metrics.zeroshot import evaluate_zero_shot, zero_shot_ranks

TOL = 1e-9  # mean of ×100 per-query values vs ×100 of the mean: float64 rounding only


def assert_columns_average_to(scores: dict, summary: dict) -> None:
    means = summarize_scores(scores)
    assert means, "no score columns"
    for key, value in means.items():
        assert abs(value - summary[key]) <= TOL, (key, value, summary[key])


# --------------------------------------------------------------------------------------------
# per-query scores
# --------------------------------------------------------------------------------------------
@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)


@pytest.mark.parametrize("reference_compat", [False, True])
def test_retrieval_columns_average_to_the_summary(rng, reference_compat):
    feats = rng.normal(size=(60, 8))
    labels = rng.integers(0, 6, size=60)
    labels[0] = 99  # its only item is itself: no relevant item with exclude_self
    kw = dict(exclude_self=True, chunk_size=16, device="cpu", reference_compat=reference_compat)
    summary = evaluate_retrieval(feats, feats, labels, labels, **kw)
    per = evaluation_per_query(feats, feats, labels, labels, **kw)
    assert summarize_retrieval(per) == summary
    scores = retrieval_scores(per)
    # leave-one-out: both mAP@R definitions beside the columns of every retrieval
    assert tuple(scores) == (*RETRIEVAL_COLUMNS, "AP_at_R_standard", "AP_at_R_reference")
    chosen = "AP_at_R_reference" if reference_compat else "AP_at_R_standard"
    np.testing.assert_array_equal(scores["AP_at_R"], scores[chosen])
    assert all(v.shape == (60,) and v.dtype == np.float64 for v in scores.values())
    assert np.isnan(scores["AP"][0]) and np.isnan(scores["hit@1"][0]) and summary["queries_without_relevant"] == [0]
    assert set(np.unique(scores["hit@5"][1:])) <= {0.0, 100.0}
    assert_columns_average_to(scores, summary)


def test_retrieval_by_groups(rng):
    q, g = rng.normal(size=(20, 8)), rng.normal(size=(50, 8))
    qg, gg = rng.integers(0, 10, size=20), rng.integers(0, 10, size=50)
    kw = dict(query_groups=qg, gallery_groups=gg, device="cpu")
    assert_columns_average_to(retrieval_scores(evaluation_per_query(q, g, **kw)), evaluate_retrieval(q, g, **kw))


def test_revisited_columns_average_to_the_summary(rng):
    q, g = rng.normal(size=(6, 8)), rng.normal(size=(40, 8))
    gnd = []
    for i in range(6):
        perm = rng.permutation(40).tolist()
        gnd.append({"easy": perm[:3] if i != 2 else [], "hard": perm[3:6], "junk": perm[6:9]})
    summary = evaluate_revisited(q, g, gnd, device="cpu")
    per = revisited_per_query(q, g, gnd, device="cpu")
    assert summarize_revisited(per, 40) == summary
    scores = revisited_scores(per)
    assert {"AP_easy", "AP_medium", "AP_hard", "P@1_easy", "P@10_hard"} <= set(scores)
    assert np.isnan(scores["AP_easy"][2]) and not np.isnan(scores["AP_medium"][2])
    assert_columns_average_to(scores, summary)


@pytest.mark.parametrize("num_classes", [3, 12])
def test_zero_shot_columns_average_to_the_summary(rng, num_classes):
    x, w = rng.normal(size=(90, 8)), rng.normal(size=(num_classes, 8))
    y = rng.integers(0, num_classes, size=90)
    summary = evaluate_zero_shot(x, w, y, device="cpu")
    ranks, labels, c = zero_shot_ranks(x, w, y, device="cpu")
    scores = zero_shot_scores(ranks, c)
    assert set(np.unique(scores["top1"])) <= {0.0, 100.0}
    assert scores["top1"].sum() / 100 == summary["top1_correct"]
    assert_columns_average_to(scores, summary)
    sims = torch.nn.functional.normalize(torch.tensor(x), dim=1) @ torch.nn.functional.normalize(torch.tensor(w), dim=1).T
    assert np.array_equal(scores["top1"] == 100, (sims.argmax(1).numpy() == y))


def test_score_table_round_trip(tmp_path, rng):
    scores = {"AP": rng.random(5) * 100, "hit@1": np.array([0, 100, np.nan, 100, 0.0])}
    path = tmp_path / "sub" / "scores.parquet"
    write_scores(path, scores, query_ids=["q0", "q1", "q2", "q3", "q4"], metadata={"method": "oti"})
    table = read_scores(path)
    assert list(table.columns) == ["query_id", "AP", "hit@1"]
    assert table["query_id"].tolist() == ["q0", "q1", "q2", "q3", "q4"]
    np.testing.assert_array_equal(table["AP"].to_numpy(), scores["AP"])
    np.testing.assert_array_equal(table["hit@1"].to_numpy(), scores["hit@1"])
    meta = read_scores_metadata(path)
    assert meta["method"] == "oti" and meta["summary_keys"] == {"AP": "mAP", "hit@1": "R@1"}
    write_scores(path, scores)  # default ids 0..N-1, overwrite
    assert read_scores(path)["query_id"].tolist() == list(range(5))
    assert os.listdir(path.parent) == ["scores.parquet"]  # no temporary files left


def test_score_table_errors(tmp_path):
    path = tmp_path / "s.parquet"
    with pytest.raises(ValueError, match="has 2 rows, the others 3"):
        write_scores(path, {"AP": [1, 2, 3], "R_precision": [1, 2]})
    with pytest.raises(ValueError, match="not unique"):
        write_scores(path, {"AP": [1, 2]}, query_ids=[7, 7])
    with pytest.raises(ValueError, match="2 query ids for 3"):
        write_scores(path, {"AP": [1, 2, 3]}, query_ids=[1, 2])
    with pytest.raises(ValueError, match="inf"):
        write_scores(path, {"AP": [1, np.inf]})
    with pytest.raises(ValueError, match="reserved"):
        write_scores(path, {"query_id": [1]})
    assert not path.exists()
    with pytest.raises(FileNotFoundError, match="s.parquet"):
        read_scores(path)
    pd.DataFrame({"x": [1]}).to_parquet(path)
    with pytest.raises(ValueError, match="not a score table"):
        read_scores(path)


def test_summary_keys_cover_every_column():
    assert set(RETRIEVAL_COLUMNS) <= set(SUMMARY_KEYS)


# --------------------------------------------------------------------------------------------
# paired bootstrap
# --------------------------------------------------------------------------------------------
def plain_bootstrap(native, method, resamples, seed, confidence):
    rng = np.random.default_rng(seed)
    n = len(native)
    stats = []
    for _ in range(resamples):
        idx = rng.integers(0, n, size=n)
        stats.append(np.mean(method[idx]) - np.mean(native[idx]))
    alpha = 1 - confidence
    return np.mean(method) - np.mean(native), np.quantile(stats, alpha / 2), np.quantile(stats, 1 - alpha / 2)


@pytest.mark.parametrize("n, resamples, seed, confidence", [(37, 200, 0, 0.95), (5, 50, 3, 0.9), (1, 10, 1, 0.95)])
def test_bootstrap_matches_a_plain_loop(rng, n, resamples, seed, confidence):
    native, method = rng.random(n) * 100, rng.random(n) * 100
    delta, low, high = plain_bootstrap(native, method, resamples, seed, confidence)
    for max_elements in (1, 7 * n, 1 << 22):  # chunking must not change the draws
        out = paired_bootstrap(native, method, resamples=resamples, seed=seed, confidence=confidence,
                               max_elements=max_elements)
        assert out["delta"] == pytest.approx(delta, abs=1e-12)
        assert out["ci95_low"] == pytest.approx(low, abs=1e-10)
        assert out["ci95_high"] == pytest.approx(high, abs=1e-10)
        assert out["n"] == n and out["resamples"] == resamples and out["confidence"] == confidence


def test_interval_excludes_zero_for_a_clear_improvement(rng):
    native = rng.random(300) * 100
    method = native + 5 + rng.normal(size=300)
    out = paired_bootstrap(native, method)
    assert out["ci95_low"] > 0 and out["excludes_zero"]
    assert out["ci95_low"] < out["delta"] < out["ci95_high"]


def test_interval_includes_zero_without_a_difference(rng):
    native = rng.random(300) * 100
    noise = rng.normal(size=300) * 10
    method = native + noise - noise.mean()  # observed delta 0, per-query differences noisy
    out = paired_bootstrap(native, method, seed=4)
    assert out["delta"] == pytest.approx(0, abs=1e-9)
    assert out["ci95_low"] < 0 < out["ci95_high"] and not out["excludes_zero"]


def test_bootstrap_is_seeded_and_handles_large_inputs(rng):
    native, method = rng.random(50_000), rng.random(50_000)
    a = paired_bootstrap(native, method, seed=1)  # the documented maximum: 50,000 queries, 1,000 resamples
    assert a["n"] == 50_000 and a["ci95_low"] < a["delta"] < a["ci95_high"]
    small = bootstrap_deltas(method[:500] - native[:500], resamples=100, seed=1)
    assert small.shape == (100,)
    assert np.array_equal(small, bootstrap_deltas(method[:500] - native[:500], resamples=100, seed=1))
    assert not np.array_equal(small, bootstrap_deltas(method[:500] - native[:500], resamples=100, seed=2))


def test_bootstrap_drops_shared_nan_rows_and_checks_inputs():
    native = np.array([np.nan, 10.0, 20.0, 30.0])
    method = np.array([np.nan, 12.0, 22.0, 32.0])
    out = paired_bootstrap(native, method, resamples=20)
    assert out["n"] == 3 and out["delta"] == pytest.approx(2) and out["ci95_low"] == pytest.approx(2)
    with pytest.raises(ValueError, match="NaN on different queries"):
        paired_bootstrap(native, np.array([1.0, 12.0, 22.0, 32.0]))
    with pytest.raises(ValueError, match="same length"):
        paired_bootstrap(native, method[:3])
    with pytest.raises(ValueError, match="no \\(non-NaN\\) query scores"):
        paired_bootstrap([np.nan], [np.nan])
    with pytest.raises(ValueError, match="confidence"):
        paired_bootstrap(native, method, confidence=1.0)
    with pytest.raises(ValueError, match="resamples"):
        paired_bootstrap(native, method, resamples=0)


def test_bootstrap_tables_pair_rows_by_query_id(tmp_path, rng):
    ids = [f"q{i}" for i in range(40)]
    native = {"AP": rng.random(40) * 100, "hit@1": (rng.random(40) > 0.5) * 100.0}
    method = {"AP": native["AP"] + 3, "hit@1": native["hit@1"]}
    write_scores(tmp_path / "n.parquet", native, query_ids=ids)
    order = rng.permutation(40)  # the method's table in another order
    write_scores(tmp_path / "m.parquet", {k: v[order] for k, v in method.items()}, query_ids=[ids[i] for i in order])
    res = bootstrap_tables(read_scores(tmp_path / "n.parquet"), read_scores(tmp_path / "m.parquet"), resamples=100)
    assert set(res) == {"AP", "hit@1"}
    assert res["AP"]["delta"] == pytest.approx(3) and res["AP"]["ci95_low"] == pytest.approx(3)
    assert res["hit@1"]["delta"] == 0 and res["hit@1"]["ci95_high"] == 0
    direct = paired_bootstrap(native["AP"], method["AP"], resamples=100)
    assert res["AP"] == direct
    other = read_scores(tmp_path / "n.parquet").iloc[:-1]
    with pytest.raises(ValueError, match="different queries"):
        bootstrap_tables(other, read_scores(tmp_path / "m.parquet"))
    with pytest.raises(KeyError, match="R_precision"):
        bootstrap_tables(read_scores(tmp_path / "n.parquet"), read_scores(tmp_path / "m.parquet"), metrics=["R_precision"])
