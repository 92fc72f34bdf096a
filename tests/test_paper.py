"""crossgap.paper: paper-style tables, published figures, verdicts across datasets, `crossgap report`.

The fabricated folder: 3 datasets (stanford_cars, oxford_pets, roxford5k) × 2 models (clip_b32,
clip_l14), image retrieval, methods image (native), oti, pca_text; 4 queries each, native per-query
AP ``[40, 50, 60, 70]`` (mean 55).  Each method adds a per-query offset (``BASE + offset``), chosen so
every expectation below follows by hand:

- a constant offset ``c``: every resample's Δ is ``c``, the paired interval ``[c, c]``;
- ``±d`` alternating: Δ 0; a resample's mean Δ lies in ``[-d, d]`` and reaches both ends with
  probability 1/16 each (> 2.5%), so the interval is ``[-d, d]``: "no different".
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from crossgap.cli import main as cli_main
from crossgap.paper.published import SOURCES, load_published
from fixtures_results import default_results, paper_grid_results, paper_yaml, write_block

BASE = [40.0, 50.0, 60.0, 70.0]
ALT = lambda d: [d, -d, d, -d]  # noqa: E731
#: (dataset, model) → method → per-query offsets (None: the method is unavailable there)
OFFSETS = {
    ("stanford_cars", "clip_b32"): {"oti": [4] * 4, "pca_text": ALT(2)},
    ("oxford_pets", "clip_b32"): {"oti": [-2] * 4, "pca_text": [1] * 4},
    ("roxford5k", "clip_b32"): {"oti": [6] * 4, "pca_text": ALT(3)},
    ("stanford_cars", "clip_l14"): {"oti": [1] * 4, "pca_text": [3] * 4},
    ("oxford_pets", "clip_l14"): {"oti": ALT(1), "pca_text": None},
    ("roxford5k", "clip_l14"): {"oti": [2] * 4, "pca_text": [-1] * 4},
}
REASON = "test: no vocabulary features for this tower"


def _fabricate(root: Path) -> Path:
    results = root / "results"
    for (dataset, model), methods in OFFSETS.items():
        column = "AP_medium" if dataset == "roxford5k" else "AP"
        scores = {"image": {column: BASE}}
        extra = {}
        for method, offsets in methods.items():
            if offsets is None:
                scores[method], extra[method] = {}, {"unavailable": REASON}
            else:
                scores[method] = {column: [b + o for b, o in zip(BASE, offsets)]}
        write_block(results, dataset, model, "image_retrieval", scores, extra=extra,
                    params={"oti": {"steps": 150, "seed": 0}})
    return results


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    root = tmp_path_factory.mktemp("paper")
    results = _fabricate(root)
    assert cli_main(["report", str(results), "--out", str(root / "out")]) == 0
    return root / "out"


def _row(frame: pd.DataFrame, name: str, model: str, method: str) -> dict:
    sel = frame[(frame["name"] == name) & (frame["model"] == model) & (frame["method"] == method)]
    assert len(sel) == 1, sel
    return sel.iloc[0].to_dict()


def test_average_rows_by_hand(report):
    frame = pd.read_csv(report / "paper_tables.csv")
    oti = _row(frame, "paper15", "clip_b32", "oti")
    # native 55 on all three; OTI (59 + 53 + 61) / 3; Δ (4 - 2 + 6) / 3
    assert (oti["native"], oti["score"], oti["delta"]) == pytest.approx((55.0, 173 / 3, 8 / 3))
    assert (oti["n"], oti["of"], oti["row"]) == (3, 15, "average")
    pca = _row(frame, "paper15", "clip_b32", "pca_text")
    assert (pca["score"], pca["delta"]) == pytest.approx((166 / 3, 1 / 3))  # (55 + 56 + 55) / 3
    # clip_l14's pca_text is unavailable on oxford_pets: two datasets enter (58 and 54), native still over 3
    l14 = _row(frame, "paper15", "clip_l14", "pca_text")
    assert (l14["native"], l14["score"], l14["delta"], l14["n"]) == pytest.approx((55.0, 56.0, 1.0, 2))
    unavailable = _row(frame, "oxford_pets", "clip_l14", "pca_text")
    assert unavailable["unavailable"] == REASON and pd.isna(unavailable["score"])
    # per dataset: the paper metric (ROxford: Medium), Δ and the paired interval
    rox = _row(frame, "roxford5k", "clip_b32", "oti")
    assert rox["metric"] == "mAP_medium" and (rox["delta"], rox["ci95_low"], rox["ci95_high"]) == pytest.approx((6, 6, 6))
    cars = _row(frame, "stanford_cars", "clip_b32", "pca_text")
    assert (cars["delta"], cars["ci95_low"], cars["ci95_high"]) == pytest.approx((0, -2, 2))
    assert cars["significant"] is False or cars["significant"] == 0


def test_published_columns_by_hand(report):
    frame = pd.read_csv(report / "paper_tables.csv")
    # Herzog & Wang Table 3: clip_b32 Cars image 24.9, OTI 28.0; run 55 and 59
    cars = _row(frame, "stanford_cars", "clip_b32", "oti")
    assert (cars["published_native"], cars["published"]) == (24.9, 28.0)
    assert (cars["native_minus_published"], cars["score_minus_published"]) == pytest.approx((30.1, 31.0))
    assert cars["published_source"] == "S" and cars["published_protocol"] == "as run"
    # ROxford: the source does not state its protocol: compared with Medium, and marked
    rox = _row(frame, "roxford5k", "clip_b32", "oti")
    assert (rox["published_native"], rox["native_minus_published"]) == pytest.approx((42.4, 12.6))
    assert rox["published_protocol"] == "not stated"
    # clip_l14 pets: a published native (47.2), none for pca_text
    pets = _row(frame, "oxford_pets", "clip_l14", "pca_text")
    assert pets["published_native"] == 47.2 and pd.isna(pets["published"])
    # the poster's 15-dataset average: shown, not compared (3 of 15 datasets)
    avg = _row(frame, "paper15", "clip_b32", "oti")
    assert (avg["published_native"], avg["published"], avg["published_source"]) == (39.2, 41.2, "P")
    assert pd.isna(avg["score_minus_published"]) and avg["protocol"].startswith("not compared: 3 of 15 datasets")
    md = (report / "paper_tables.md").read_text()
    assert ("| stanford_cars | mAP | 55.00 · pub 24.9 (+30.1) | 59.00 (+4.00*) · pub 28.0 (+31.0) | "
            "55.00 · pub 43.8 (+11.2) | 56.00 (+1.00*) · pub 50.5 (+5.5) |") in md
    assert "| roxford5k | mAP_medium | 55.00 · pub 42.4‡ (+12.6) | 61.00 (+6.00*) · pub 43.0‡ (+18.0) |" in md
    # the pca_text table: clip_b32 pets 56 (Δ +1 on every query), clip_l14 unavailable
    assert "| oxford_pets | mAP | 55.00 · pub 31.2 (+23.8) | 56.00 (+1.00*) | 55.00 · pub 47.2 (+7.8) | unavailable |" in md


def test_verdicts_by_hand(report):
    verdicts = pd.read_csv(report / "verdicts.csv")
    v = verdicts.set_index(["model", "method", "versus"])
    oti = v.loc[("clip_b32", "oti", "image")]
    assert (oti["better"], oti["same"], oti["worse"], oti["datasets"], oti["of"]) == (2, 0, 1, 3, 15)
    assert oti["mean_delta"] == pytest.approx(8 / 3)
    # per-dataset Δ constant (4, -2, 6): the two-level interval is the spread of means of 3 draws from
    # them: at least -2 and at most 6, with 0 inside (all three -2, or all 6, have probability 1/27 > 2.5%)
    assert -2 - 1e-9 <= oti["ci95_low"] <= 0 and 4 <= oti["ci95_high"] <= 6 + 1e-9 and not oti["significant"]
    pca = v.loc[("clip_b32", "pca_text", "image")]
    assert (pca["better"], pca["same"], pca["worse"]) == (1, 2, 0) and pca["mean_delta"] == pytest.approx(1 / 3)
    # the pair OTI vs pca_text on the same queries: Δ [2, 6, 2, 6] (4, interval [2, 6]), -3, [3, 9, 3, 9] (6)
    pair = v.loc[("clip_b32", "oti", "pca_text")]
    assert (pair["better"], pair["same"], pair["worse"]) == (2, 0, 1) and pair["mean_delta"] == pytest.approx(7 / 3)
    assert pair["per_dataset"] == "roxford5k:+6.00* stanford_cars:+4.00* oxford_pets:-3.00*"  # the paper's order
    l14 = v.loc[("clip_l14", "oti", "image")]
    assert (l14["better"], l14["same"], l14["worse"]) == (2, 1, 0) and l14["mean_delta"] == pytest.approx(1.0)
    l14_pca = v.loc[("clip_l14", "pca_text", "image")]
    assert (l14_pca["better"], l14_pca["worse"], l14_pca["datasets"]) == (1, 1, 2)
    # a pair enters only where both methods ran: clip_l14 pets has no pca_text
    assert v.loc[("clip_l14", "oti", "pca_text")]["datasets"] == 2
    # 6 comparisons (2 models × (2 vs native + 1 pair)); per-dataset intervals: clip_b32 3 + 3 + 3,
    # clip_l14 3 (oti) + 2 (pca_text) + 2 (the pair) = 16
    md = (report / "paper_tables.md").read_text()
    assert "the verdicts hold 16 per-dataset intervals and 6 across-dataset means" in md
    summary = json.loads((report / "paper_summary.json").read_text())
    node = summary["image_retrieval"]["paper15"]["clip_b32"]
    assert node["oti"]["score"] == pytest.approx(173 / 3, abs=1e-6)
    assert (node["oti"]["n"], node["oti"]["of"], node["oti"]["better"], node["oti"]["worse"]) == (3, 15, 2, 1)
    assert node["pairs"]["oti_vs_pca_text"]["delta"] == pytest.approx(7 / 3, abs=1e-6)
    assert summary["comparisons"] == {"per_dataset": 16, "means": 6}


def test_summary_keys_and_the_long_table_stay(report):
    summary = json.loads((report / "summary.json").read_text())
    node = summary["stanford_cars"]["clip_b32"]["image_retrieval"]
    assert set(node) == {"image", "oti", "pca_text"} and node["oti"]["delta"]["mAP"] == pytest.approx(4.0)
    table = (report / "table.md").read_text()
    assert "| oxford_pets | clip_l14 | image_retrieval | mAP | 55.00 (image) | pca_text | unavailable: " + REASON in table


def test_the_shipped_published_figures_and_their_sources():
    published = load_published()
    assert len(published) == 162  # 38 poster averages, 104 of Table 3, 20 of the modality-gap table
    assert set(f.source for f in published.values()) == set(SOURCES) == {"P", "S"}
    # a few figures as the sources print them (poster bars; Herzog & Wang Table 3)
    assert published[("image_retrieval", "average", "paper15", "slip_l16", "oti")].value == 37.1
    assert published[("text_retrieval", "average", "captions3", "siglip_b16", "ovi")].value == 44.4
    assert published[("zero_shot", "average", "coop11", "openclip_l14", "oti")].value == 77.0
    assert published[("image_retrieval", "dataset", "imagenet", "slip_b16", "oti")].value == 14.8
    assert published[("image_retrieval", "dataset", "rparis6k", "clip_coco_tau1", "image")].value == 46.6
    assert published[("image_retrieval", "average", "gap5", "clip_coco_tau0.01", "oti")].value == 40.2


def test_a_bad_published_file_names_the_line(tmp_path):
    bad = tmp_path / "published.csv"
    bad.write_text("source,task,scope,name,model,method,metric,value,protocol,note\n"
                   "P,image_retrieval,dataset,cub2011,clip_b32,image,mAP,39.2,as run,x\n"
                   "Q,image_retrieval,dataset,sop,clip_b32,image,mAP,39.2,as run,x\n")
    with pytest.raises(ValueError, match=r"published.csv:3: source 'Q' is not one of \['P', 'S'\]"):
        load_published(bad)
    bad.write_text("source,task,scope,name,model,method,metric,value,protocol,note\n"
                   "P,image_retrieval,dataset,cub2011,clip_b32,image,mAP,139.2,as run,x\n")
    with pytest.raises(ValueError, match="published.csv:2: value 139.2 is not a percentage"):
        load_published(bad)


def test_report_of_a_folder_that_is_not_there(tmp_path, caplog):
    assert cli_main(["report", str(tmp_path / "nope"), "--out", str(tmp_path / "out")]) == 1
    assert "nope: not a folder" in caplog.text
    assert cli_main(["report", str(tmp_path), "--out", str(tmp_path / "out"), "--methods", "image_retrieval=bogus"]) == 1
    assert "['bogus'] not methods of image_retrieval" in caplog.text


def test_the_embedded_defaults_report_renders_its_single_dataset(tmp_path):
    """The embedded default (synthetic × tiny, every planned method): its paper tables are the one
    synthetic dataset, in the group of datasets outside the paper, with its own average."""
    default_results(tmp_path / "results")
    assert cli_main(["report", str(tmp_path / "results"), "--out", str(tmp_path / "out")]) == 0
    md = (tmp_path / "out/paper_tables.md").read_text()
    # one table per method shown: image retrieval oti + 5 training-free, text ovi + 3, zero-shot oti, ovi + 4
    assert md.count("| synthetic |") == 16 and md.count("| *other datasets (not in the paper)* |") == 16
    assert md.count("| **mean over the other datasets (n = 1 of 1)** |") == 16
    verdicts = pd.read_csv(tmp_path / "out/verdicts.csv")
    assert set(verdicts["average"]) == {"other"} and set(verdicts["datasets"]) == {1}
    # 6 + 4 + 6 methods against native, and their pairs: C(6, 2) + C(4, 2) + C(6, 2)
    assert len(verdicts) == (6 + 15) + (4 + 6) + (6 + 15)
    page = (tmp_path / "out/report.html").read_text()
    assert page.count('<table class="paper">') == 16 and page.count('<th scope="row">synthetic</th>') == 16
    assert "<h1>crossgap results</h1>" in page and page.count("<h1>") == 1


# --------------------------------------------------------------------------- the paper grid's size


@pytest.fixture(scope="module")
def grid_report(tmp_path_factory):
    root = tmp_path_factory.mktemp("grid")
    counts = paper_grid_results(root / "results")
    start = time.perf_counter()
    assert cli_main(["report", str(root / "results"), "--out", str(root / "out")]) == 0
    print(f"crossgap report of the paper-grid-sized folder ({counts}): {time.perf_counter() - start:.1f} s")
    return root, counts


@pytest.mark.slow
def test_paper_grid_sized_report(grid_report):
    root, counts = grid_report
    paper = paper_yaml()
    assert counts == {"results": counts["results"], "datasets": len(paper["datasets"]), "models": len(paper["models"])}
    frame = pd.read_csv(root / "out/paper_tables.csv")
    assert set(frame["model"]) == set(paper["models"])
    assert set(frame.loc[frame["row"] == "dataset", "name"]) == set(paper["datasets"])
    # every average of the paper complete: 15 image datasets, 3 caption sets, 11 CoOp sets
    averages = frame[frame["row"] == "average"].groupby(["task", "name"])[["n", "of"]].max()
    assert averages.loc[("image_retrieval", "paper15")].tolist() == [15, 15]
    assert averages.loc[("text_retrieval", "captions3")].tolist() == [3, 3]
    assert averages.loc[("zero_shot", "coop11")].tolist() == [11, 11]


def _chromium():
    sys.path.insert(0, str(Path(__file__).parent / "workflow"))
    from apt import Unavailable, ensure_binaries

    try:
        ensure_binaries(["chromium"], ["chromium"], timeout=600)
    except Unavailable as exc:
        pytest.skip(f"no headless browser here: {exc}")


def _dom(page: Path, fragment: str = "") -> str:
    proc = subprocess.run(["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--virtual-time-budget=20000",
                           "--dump-dom", page.as_uri() + fragment], capture_output=True, text=True, timeout=180)
    assert 'data-ready="1"' in proc.stdout, (proc.returncode, proc.stderr[-2000:])
    return proc.stdout


@pytest.mark.slow
def test_paper_grid_html_in_a_headless_browser(grid_report):
    """Every section, table and plot of the paper-grid-sized page renders; the filter hides the other rows."""
    _chromium()
    root, _ = grid_report
    page = root / "out/report.html"
    table = pd.read_csv(root / "out/table.csv")
    dom = _dom(page)
    for section in ("task-image_retrieval", "task-text_retrieval", "task-zero_shot", "all-results", "plots", "sources"):
        assert f'<section id="{section}"' in dom, section
    rendered = re.findall(r'data-rendered="(\d+)x(\d+)"', dom)
    assert len(rendered) == 5 and all(int(w) > 100 and int(h) > 100 for w, h in rendered), rendered
    # paper tables: per task one per method the plan evaluates (image: oti, centered, isoclip, pca_text,
    # gap_shift, pca_text_dataset; text: ovi, centered, isoclip; zero-shot: oti, ovi, centered, gap_shift,
    # pca_text, pca_text_dataset), and a verdict table per task
    assert dom.count('<table class="paper">') == 6 + 3 + 6 and dom.count('<table class="verdicts">') == 3
    assert re.search(r'data-visible="(\d+)"', dom).group(1) == str(len(table))
    # "type" a dataset name (the page's #filter= fragment fills the input and fires its input event)
    dom = _dom(page, "#filter=dataset:cub2011")
    expected = int((table["dataset"] == "cub2011").sum())
    assert re.search(r'data-visible="(\d+)"', dom).group(1) == str(expected)
    assert f"{expected} of {len(table)} rows" in dom
    # substrings, case-insensitive: "CLIP_B32" is clip_b32 and openclip_b32
    dom = _dom(page, "#filter=dataset:cub2011,model:CLIP_B32,method:oti")
    assert re.search(r'data-visible="(\d+)"', dom).group(1) == "2"
    assert "2 of " in dom
