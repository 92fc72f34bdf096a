"""crossgap.comparison: paired-bootstrap intervals in the summary, step curves and best steps."""

from __future__ import annotations

import numpy as np
import pytest

from crossgap.comparison import add_intervals, best_steps, step_curves
from crossgap.metrics.results import write_result
from crossgap.metrics.scores import write_scores
from crossgap.steps.report import build_summary


def _result(tmp_path, method: str, ap: np.ndarray) -> str:
    path = tmp_path / "image_retrieval" / f"{method}.json"
    write_result(path, task="image_retrieval", method=method, dataset="d", model="m",
                 metrics={"mAP": float(np.nanmean(ap))}, params={})
    hits = (ap > 50) * 100.0
    write_scores(str(path)[: -len(".json")] + ".queries.parquet", {"AP": ap, "hit@1": hits},
                 query_ids=[f"q{i}" for i in range(len(ap))])
    return str(path)


def test_intervals_pair_queries_with_the_native_method(tmp_path):
    rng = np.random.default_rng(0)
    native = rng.uniform(20, 80, 200)
    better = native + 5.0  # every query improves by 5 points
    noisy = native + rng.normal(0, 10, 200)  # no systematic change
    paths = [_result(tmp_path, "image", native), _result(tmp_path, "oti", better),
             _result(tmp_path, "centered", noisy)]
    summary = add_intervals(build_summary(paths), paths, resamples=500, seed=0)
    oti = summary["d"]["m"]["image_retrieval"]["oti"]
    assert oti["delta"]["mAP"] == pytest.approx(5.0)
    # a constant shift: every resample has the same difference
    assert oti["ci95_low"]["mAP"] == pytest.approx(5.0) and oti["ci95_high"]["mAP"] == pytest.approx(5.0)
    centered = summary["d"]["m"]["image_retrieval"]["centered"]
    assert centered["delta"]["mAP"] == pytest.approx(float(np.mean(noisy - native)))
    assert centered["ci95_low"]["mAP"] < 0 < centered["ci95_high"]["mAP"]
    assert set(centered["delta"]) == {"mAP", "R@1"}  # each score column under its summary key
    assert "delta" not in summary["d"]["m"]["image_retrieval"]["image"]


def test_step_curves_and_best_step():
    summary = {"d": {"m": {"image_retrieval": {
        "image": {"mAP": 10.0}, "oti@10": {"mAP": 12.0}, "oti@50": {"mAP": 15.0}, "oti": {"mAP": 14.0},
        "gap_shift": {"mAP": 11.0}}}}}
    curves = step_curves(summary, {"oti": 150, "ovi": 1000})
    assert curves[["step", "score"]].values.tolist() == [[10, 12.0], [50, 15.0], [150, 14.0]]
    best = best_steps(curves)
    assert best[["inversion", "best_step", "score"]].values.tolist() == [["oti", 50, 15.0]]


def _seeded(tmp_path, method: str, seed: int, mAP: float, task: str = "image_retrieval") -> str:
    path = tmp_path / task / f"{method}-seed{seed}.json"
    write_result(path, task=task, method=method, dataset="d", model="m", metrics={"mAP": mAP, "R@1": mAP / 2},
                 params={"steps": 10, "seed": seed})
    return str(path)


def test_replicate_seeds_give_the_mean_and_spread_of_each_inverted_method(tmp_path):
    native = tmp_path / "image_retrieval" / "image.json"
    write_result(native, task="image_retrieval", method="image", dataset="d", model="m",
                 metrics={"mAP": 25.0, "R@1": 10.0}, params={})
    paths = [str(native), _seeded(tmp_path, "oti", 0, 30.0), _seeded(tmp_path, "oti", 1, 32.0),
             _seeded(tmp_path, "oti", 2, 34.0), _seeded(tmp_path, "oti@5", 0, 20.0), _seeded(tmp_path, "oti@5", 1, 20.0)]
    summary = build_summary(paths, seed=0)
    oti = summary["d"]["m"]["image_retrieval"]["oti"]
    assert oti["mAP"] == 30.0  # the main seed's result, not the mean
    seeds = oti["seeds"]
    assert seeds["n"] == 3
    assert seeds["mean"] == {"mAP": 32.0, "R@1": 16.0}
    assert seeds["sd"]["mAP"] == pytest.approx(2.0) and seeds["sd"]["R@1"] == pytest.approx(1.0)
    assert (seeds["min"]["mAP"], seeds["max"]["mAP"]) == (30.0, 34.0)
    assert seeds["delta_mean"] == {"mAP": 7.0, "R@1": 6.0}
    assert seeds["delta_sd"]["mAP"] == pytest.approx(2.0)
    snapshot = summary["d"]["m"]["image_retrieval"]["oti@5"]["seeds"]
    assert snapshot["n"] == 2 and snapshot["sd"]["mAP"] == 0.0
    assert "seeds" not in summary["d"]["m"]["image_retrieval"]["image"]
    # another main seed: seed 2's result is the one reported, the others its replicates
    assert build_summary(paths[:4], seed=2)["d"]["m"]["image_retrieval"]["oti"]["mAP"] == 34.0


def test_replicates_without_the_main_seed_are_an_error(tmp_path):
    paths = [_seeded(tmp_path, "oti", 1, 32.0), _seeded(tmp_path, "oti", 2, 34.0)]
    with pytest.raises(ValueError, match="d/m/image_retrieval/oti"):
        build_summary(paths, seed=0)
