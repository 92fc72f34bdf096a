"""crossgap.comparison: paired-bootstrap intervals in the summary, step curves and best steps."""

from __future__ import annotations

import numpy as np
import pytest

from crossgap.comparison import add_intervals, best_steps, step_curves
from crossgap.metrics.results import write_result
from crossgap.metrics.scores import write_scores
from crossgap.report import build_summary


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
