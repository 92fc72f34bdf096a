"""crossgap.steps.report: summary, all-methods table, aggregate step and plots."""

from __future__ import annotations

import json
import struct
import zlib

import pandas as pd
import pytest

from crossgap.metrics.results import write_result
from crossgap.steps.report import (
    aggregate_step,
    build_summary,
    comparison_table,
    plot_comparison,
    plot_losses,
)
from crossgap.utils import write_json

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

SUMMARY = {
    "synthetic": {
        "ViT-B-32/openai": {
            "image_retrieval": {"image": {"mAP": 50.0, "R@1": 70.0}, "oti": {"mAP": 42.5, "R@1": 60.0}},
            "text_retrieval": {"text": {"mAP": 30.0}, "ovi": {"mAP": 36.0}},
            "zero_shot": {"standard": {"top1": 80.0, "top5": 95.0}, "oti": {"top1": 70.0}, "ovi": {"top1": 81.5}},
            "modality_gap": {"native": {"gap": 0.8}},
        },
        "RN50/openai": {
            # no native result: nothing to compare
            "image_retrieval": {"oti": {"mAP": 10.0}},
            # one inverted method only
            "zero_shot": {"standard": {"top1": 40.0}, "ovi": {"top1": 20.0}},
        },
    },
    "roxford5k": {
        "ViT-B-32/openai": {
            "image_retrieval": {"image": {"mAP_easy": 60.0, "mAP_medium": 45.0, "mAP_hard": 20.0},
                                "oti": {"mAP_easy": 50.0, "mAP_medium": 40.0, "mAP_hard": 15.0}},
        },
    },
}


COLUMNS = ["dataset", "model", "task", "metric", "native_method", "native", "method", "kind", "score", "delta",
           "ci95_low", "ci95_high", "significant", "gap", "seeds", "seeds_delta_mean", "seeds_delta_sd",
           "unavailable"]


def _rows(table: pd.DataFrame) -> list[tuple]:
    return [tuple(r) for r in table[["dataset", "model", "task", "metric", "native_method", "native", "method",
                                     "score", "delta"]].itertuples(index=False)]


def test_comparison_table_rows_and_deltas():
    table = comparison_table(SUMMARY)
    assert list(table.columns) == COLUMNS
    rows = _rows(table)
    vit, rn = "ViT-B-32/openai", "RN50/openai"
    assert rows == [
        # datasets and models sorted; tasks in table order; revisited falls back to mAP_medium
        ("roxford5k", vit, "image_retrieval", "mAP_medium", "image", 45.0, "oti", 40.0, pytest.approx(-5.0)),
        ("synthetic", rn, "zero_shot", "top1", "standard", 40.0, "ovi", 20.0, pytest.approx(-20.0)),
        ("synthetic", vit, "image_retrieval", "mAP", "image", 50.0, "oti", 42.5, pytest.approx(-7.5)),
        ("synthetic", vit, "text_retrieval", "mAP", "text", 30.0, "ovi", 36.0, pytest.approx(6.0)),
        ("synthetic", vit, "zero_shot", "top1", "standard", 80.0, "oti", 70.0, pytest.approx(-10.0)),
        ("synthetic", vit, "zero_shot", "top1", "standard", 80.0, "ovi", 81.5, pytest.approx(1.5)),
    ]
    assert "modality_gap" not in set(table["task"])
    # no intervals in this summary: none shown, nothing called significant
    assert table["ci95_low"].isna().all() and table["significant"].isna().all()


def test_comparison_table_orders_snapshots_after_their_inversion_and_marks_significance():
    summary = {"d": {"m": {
        "image_retrieval": {
            "image": {"mAP": 10.0},
            "pca_text": {"mAP": 11.0, "delta": {"mAP": 1.0}, "ci95_low": {"mAP": -0.5}, "ci95_high": {"mAP": 2.5}},
            "oti@50": {"mAP": 12.0, "delta": {"mAP": 2.0}, "ci95_low": {"mAP": 0.5}, "ci95_high": {"mAP": 3.0}},
            "oti": {"mAP": 13.0, "delta": {"mAP": 3.0}, "ci95_low": {"mAP": 1.0}, "ci95_high": {"mAP": 4.0}},
            "oti@10": {"mAP": 9.0, "delta": {"mAP": -1.0}, "ci95_low": {"mAP": -2.0}, "ci95_high": {"mAP": -0.1}},
        },
        "modality_gap": {"native": {"gap_distance": 0.7}}}}}
    table = comparison_table(summary)
    assert table["method"].tolist() == ["oti@10", "oti@50", "oti", "pca_text"]
    assert table["kind"].tolist() == ["snapshot", "snapshot", "inverted", "transform"]
    assert table["significant"].tolist() == [True, True, True, False]
    assert table["gap"].tolist() == [0.7] * 4


def test_comparison_table_missing_metric_gives_no_delta():
    summary = {"d": {"m": {"zero_shot": {"standard": {"top1": 50.0}, "oti": {"top5": 90.0}},
                           "image_retrieval": {"image": {"R@1": 10.0}, "oti": {"mAP": 5.0}}}}}
    table = comparison_table(summary)
    # zero-shot OTI has no top1: no row; image retrieval's native method has no mAP: no delta
    assert len(table) == 1
    ir = table.iloc[0]
    assert ir["metric"] == "mAP" and pd.isna(ir["native"]) and ir["score"] == 5.0 and pd.isna(ir["delta"])


def test_comparison_table_of_empty_summary_has_the_columns():
    table = comparison_table({})
    assert table.empty and list(table.columns) == COLUMNS


def _write_results(tmp_path) -> tuple[list[str], list[str]]:
    results = []
    specs = [
        ("synthetic", "tiny", "image_retrieval", "image", {"mAP": 50.0, "R@1": 70.0, "num_queries": 3}),
        ("synthetic", "tiny", "image_retrieval", "oti", {"mAP": 42.5, "R@1": float("nan"), "num_queries": 3}),
        ("synthetic", "tiny", "zero_shot", "standard", {"top1": 80.0, "num_samples": 3}),
        ("synthetic", "tiny", "zero_shot", "oti", {"top1": 70.0, "num_samples": 3}),
        ("synthetic", "tiny", "zero_shot", "ovi", {"top1": 81.5, "num_samples": 3}),
        ("roxford5k", "tiny", "image_retrieval", "image", {"mAP_easy": 60.0, "mAP_medium": 45.0}),
        ("roxford5k", "tiny", "image_retrieval", "oti", {"mAP_easy": 50.0, "mAP_medium": 40.0}),
    ]
    for dataset, model, task, method, metrics in specs:
        path = tmp_path / "results" / dataset / task / f"{method}.json"
        write_result(path, task=task, method=method, dataset=dataset, model=model, metrics=metrics, params={})
        results.append(str(path))
    gap = tmp_path / "results" / "synthetic" / "modality_gap.json"
    write_json(gap, {"dataset": "synthetic", "model": "tiny", "num_pairs": 3, "pairing": "first caption",
                     "metrics": {"gap": 0.75, "cosine": 0.25}})
    return results, [str(gap)]


def test_build_summary_merges_results_and_gaps(tmp_path):
    results, gaps = _write_results(tmp_path)
    summary = build_summary(results, gaps)
    assert set(summary) == {"synthetic", "roxford5k"}
    node = summary["synthetic"]["tiny"]
    assert node["image_retrieval"]["image"] == {"mAP": 50.0, "R@1": 70.0}
    assert node["image_retrieval"]["oti"] == {"mAP": 42.5}  # undefined metric and counts left out
    assert node["modality_gap"] == {"native": {"gap": 0.75, "cosine": 0.25}}
    assert "modality_gap" not in summary["roxford5k"]["tiny"]
    assert build_summary(results) == {**summary, "synthetic": {"tiny": {k: v for k, v in node.items()
                                                                         if k != "modality_gap"}}}


def test_aggregate_step_writes_summary_table_markdown_and_plot_data(tmp_path):
    results, gaps = _write_results(tmp_path)
    out = tmp_path / "metrics"
    paths = {"summary_out": out / "summary.json", "table_csv": out / "table.csv", "table_md": out / "table.md",
             "plot_csv": tmp_path / "plots" / "comparison.csv"}
    summary = aggregate_step(results=results, gaps=gaps, **{k: str(v) for k, v in paths.items()})
    assert json.loads(paths["summary_out"].read_text()) == summary == build_summary(results, gaps)

    table = pd.read_csv(paths["table_csv"])
    assert len(table) == 4
    assert table.loc[table["dataset"] == "roxford5k", "metric"].tolist() == ["mAP_medium"]
    assert table["method"].tolist() == ["oti", "oti", "oti", "ovi"]

    md = paths["table_md"].read_text().splitlines()
    assert md[0] == "# crossgap results"
    rows = [line for line in md if line.startswith("| ") and not line.startswith(("| dataset", "|---"))]
    assert len(rows) == len(table)
    assert "| roxford5k | tiny | image_retrieval | mAP_medium | 45.00 (image) | oti | 40.00 | -5.00 | — | — |" in rows
    assert "| synthetic | tiny | zero_shot | top1 | 80.00 (standard) | ovi | 81.50 | +1.50 | — | — |" in rows
    assert "| synthetic | tiny | image_retrieval | mAP | 50.00 (image) | oti | 42.50 | -7.50 | — | — |" in rows

    plot = pd.read_csv(paths["plot_csv"])
    assert list(plot.columns) == ["label", "delta", "ci95_low", "ci95_high", "significant"]
    assert plot.set_index("label")["delta"].to_dict() == pytest.approx({
        "roxford5k/tiny/image_retrieval/oti": -5.0, "synthetic/tiny/image_retrieval/oti": -7.5,
        "synthetic/tiny/zero_shot/oti": -10.0, "synthetic/tiny/zero_shot/ovi": 1.5})
    # atomic writes leave no temporary files behind
    assert sorted(p.name for p in out.iterdir()) == ["summary.json", "table.csv", "table.md"]



def test_replicate_seeds_get_their_own_section_of_the_table(tmp_path):
    paths = []
    for method, seed, top1 in (("standard", None, 50.0), ("oti", 0, 52.0), ("oti", 1, 56.0), ("oti", 2, 54.0)):
        path = tmp_path / "r" / f"{method}-{seed}.json"
        write_result(path, task="zero_shot", method=method, dataset="d", model="m", metrics={"top1": top1},
                     params={} if seed is None else {"seed": seed})
        paths.append(str(path))
    md, csv = tmp_path / "t.md", tmp_path / "t.csv"
    summary = aggregate_step(results=paths, gaps=[], summary_out=str(tmp_path / "s.json"), table_csv=str(csv),
                             table_md=str(md), plot_csv=str(tmp_path / "p.csv"), seed=0)
    assert summary["d"]["m"]["zero_shot"]["oti"]["top1"] == 52.0
    lines = md.read_text().splitlines()
    # the main table: seed 0 only; the section: Δ over the 3 seeds (+2, +6, +4: mean 4, sd 2)
    assert "| d | m | zero_shot | top1 | 50.00 (standard) | oti | 52.00 | +2.00 | — | — |" in lines
    assert "## Across inversion seeds" in lines
    assert "| d | m | zero_shot | oti | 3 | +4.00 ± 2.00 |" in lines
    assert pd.read_csv(csv)[["seeds", "seeds_delta_mean", "seeds_delta_sd"]].values.tolist() == [[3, 4.0, 2.0]]


def test_markdown_shows_undefined_values_as_dash(tmp_path):
    path = tmp_path / "r" / "std.json"
    write_result(path, task="zero_shot", method="standard", dataset="d", model="m", metrics={"top1": 10.0},
                 params={})
    path2 = tmp_path / "r" / "oti.json"
    write_result(path2, task="zero_shot", method="oti", dataset="d", model="m",
                 metrics={"top1": float("nan"), "top5": 3.0}, params={})
    md = tmp_path / "t.md"
    aggregate_step(results=[str(path), str(path2)], gaps=[], summary_out=str(tmp_path / "s.json"),
                   table_csv=str(tmp_path / "t.csv"), table_md=str(md), plot_csv=str(tmp_path / "p.csv"))
    # the OTI result has no top1: no row for it, and the table is otherwise empty
    rows = [line for line in md.read_text().splitlines() if line.startswith("| d ")]
    assert rows == []


def test_aggregate_step_with_no_results(tmp_path):
    paths = {k: str(tmp_path / n) for k, n in (("summary_out", "s.json"), ("table_csv", "t.csv"),
                                                 ("table_md", "t.md"), ("plot_csv", "p.csv"))}
    assert aggregate_step(results=[], gaps=[], **paths) == {}
    assert pd.read_csv(paths["table_csv"]).empty
    assert list(pd.read_csv(paths["plot_csv"]).columns) == ["label", "delta", "ci95_low", "ci95_high", "significant"]
    assert not [line for line in (tmp_path / "t.md").read_text().splitlines()
                if line.startswith("| ") and not line.startswith("| dataset")]


def test_aggregate_step_rejects_duplicate_results(tmp_path):
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    for path in (a, b):
        write_result(path, task="zero_shot", method="standard", dataset="d", model="m", metrics={"top1": 1.0},
                     params={})
    with pytest.raises(ValueError, match="both hold d/m/zero_shot/standard"):
        aggregate_step(results=[str(a), str(b)], gaps=[], summary_out=str(tmp_path / "s.json"),
                       table_csv=str(tmp_path / "t.csv"), table_md=str(tmp_path / "t.md"),
                       plot_csv=str(tmp_path / "p.csv"))
    assert not (tmp_path / "s.json").exists()


def _png_size(path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC
    length, kind = struct.unpack(">I4s", data[8:16])
    assert kind == b"IHDR" and length == 13
    crc = struct.unpack(">I", data[16 + length: 20 + length])[0]
    assert crc == zlib.crc32(data[12:16 + length])
    assert data.endswith(b"IEND\xaeB`\x82")
    return struct.unpack(">II", data[16:24])


def test_plot_comparison_writes_a_png_with_one_panel_per_dataset(tmp_path):
    csv = tmp_path / "table.csv"
    comparison_table(SUMMARY).to_csv(csv, index=False)
    one = tmp_path / "one.csv"
    comparison_table({"synthetic": SUMMARY["synthetic"]}).to_csv(one, index=False)
    plot_comparison(str(csv), str(tmp_path / "plots" / "two.png"))
    plot_comparison(str(one), str(tmp_path / "plots" / "one.png"))
    w2, h2 = _png_size(tmp_path / "plots" / "two.png")
    w1, h1 = _png_size(tmp_path / "plots" / "one.png")
    assert w1 == w2 and h2 > h1  # a second panel below the first
    assert sorted(p.name for p in (tmp_path / "plots").iterdir()) == ["one.png", "two.png"]


def test_plot_comparison_of_empty_table(tmp_path):
    csv = tmp_path / "table.csv"
    comparison_table({}).to_csv(csv, index=False)
    plot_comparison(str(csv), str(tmp_path / "empty.png"))
    _png_size(tmp_path / "empty.png")


def test_plot_losses_writes_a_png(tmp_path):
    curves = {}
    for name, scale in (("synthetic/tiny/oti_test", 1.0), ("synthetic/tiny/ovi_prompts", 0.5)):
        path = tmp_path / f"{name.replace('/', '_')}.csv"
        pd.DataFrame({"step": range(5), "loss": [scale * (1 - k / 10) for k in range(5)]}).to_csv(path, index=False)
        curves[name] = str(path)
    out = tmp_path / "plots" / "losses.png"
    plot_losses(curves, str(out))
    assert _png_size(out) == (770, 440)  # figsize (7, 4) at 110 dpi
    bad = tmp_path / "bad.csv"  # not the step, loss columns gather_step writes
    pd.DataFrame({"iteration": [0], "value": [1.0]}).to_csv(bad, index=False)
    with pytest.raises(KeyError, match="step"):
        plot_losses({"x": str(bad)}, str(tmp_path / "bad.png"))
    assert not (tmp_path / "bad.png").exists()


def test_html_report_embeds_the_table_and_every_png(tmp_path):
    import base64
    import re

    from crossgap.html_report import write_html_report

    md = tmp_path / "table.md"
    md.write_text("# crossgap results\n\n| dataset | Δ |\n|---|---:|\n| d | +1.00* |\n| e | -2.00 |\n\n## Notes\n\n- a note\n")
    pngs = {}
    for name, colour in (("one", "red"), ("two", "blue")):
        fig = plt_figure(colour)
        pngs[f"plot {name}"] = tmp_path / f"{name}.png"
        fig.savefig(pngs[f"plot {name}"], format="png")
    out = tmp_path / "report.html"
    write_html_report(md, pngs, out)
    page = out.read_text()
    assert page.startswith("<!DOCTYPE html>") and "<h1>crossgap results</h1>" in page
    assert page.count("<tr>") == 3 and "<td style=\"text-align:right\">+1.00*</td>" in page and "<li>a note</li>" in page
    uris = re.findall(r'<img src="data:image/png;base64,([^"]+)" alt="([^"]+)">', page)
    assert [alt for _, alt in uris] == ["plot one", "plot two"]
    assert [base64.b64decode(data) for data, _ in uris] == [p.read_bytes() for p in pngs.values()]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["one.png", "report.html", "table.md", "two.png"]
    bad = tmp_path / "bad.png"
    bad.write_text("not a png")
    with pytest.raises(ValueError, match="bad.png: not a PNG"):
        write_html_report(md, {"bad": bad}, tmp_path / "r2.html")
    assert not (tmp_path / "r2.html").exists()


def plt_figure(colour: str):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(2, 2))
    ax.plot([0, 1], [0, 1], color=colour)
    return fig


def test_table_lists_each_inversion_with_its_snapshots_then_the_transforms():
    node = {m: {"top1": 50.0} for m in ("standard", "gap_shift", "ovi", "oti@50", "ovi@5", "oti", "oti@10", "centered")}
    table = comparison_table({"d": {"m": {"zero_shot": node}}})
    assert table["method"].tolist() == ["oti@10", "oti@50", "oti", "ovi@5", "ovi", "centered", "gap_shift"]


def test_an_unavailable_result_appears_with_its_reason_in_table_md_csv_and_html(tmp_path):
    """A method that could not run (``extra.unavailable``, no metrics) keeps its row, with the reason."""
    from crossgap.html_report import write_html_report

    reason = "image tower: the timm vision tower ends in head layer(s) ['attn_pool'] | no linear projection"
    specs = [("image", {"mAP": 40.0}, {}), ("oti", {"mAP": 44.0}, {}), ("isoclip", {}, {"unavailable": reason})]
    paths = []
    for method, metrics, extra in specs:
        path = tmp_path / "results" / "cub2011" / "siglip_b16" / "image_retrieval" / f"{method}.json"
        write_result(path, task="image_retrieval", method=method, dataset="cub2011", model="siglip_b16",
                     metrics=metrics, params={}, extra=extra)
        paths.append(str(path))
    out = {k: str(tmp_path / n) for k, n in (("summary_out", "s.json"), ("table_csv", "t.csv"),
                                              ("table_md", "t.md"), ("plot_csv", "p.csv"))}
    summary = aggregate_step(results=paths, gaps=[], **out)
    assert set(summary["cub2011"]["siglip_b16"]["image_retrieval"]) == {"image", "oti"}  # summary keys unchanged
    md = (tmp_path / "t.md").read_text().splitlines()
    assert ("| cub2011 | siglip_b16 | image_retrieval | mAP | 40.00 (image) | isoclip | unavailable: image tower: the "
            "timm vision tower ends in head layer(s) ['attn_pool'] \\| no linear projection | — | — | — |") in md
    assert "| cub2011 | siglip_b16 | image_retrieval | mAP | 40.00 (image) | oti | 44.00 | +4.00 | — | — |" in md
    csv = pd.read_csv(tmp_path / "t.csv")
    assert csv["method"].tolist() == ["oti", "isoclip"]
    row = csv.iloc[1]
    assert row["unavailable"] == reason and pd.isna(row["score"]) and pd.isna(row["delta"]) and row["native"] == 40.0
    assert pd.isna(csv.iloc[0]["unavailable"])
    assert pd.read_csv(tmp_path / "p.csv")["label"].tolist() == ["cub2011/siglip_b16/image_retrieval/oti"]
    write_html_report(tmp_path / "t.md", {}, tmp_path / "report.html")
    page = (tmp_path / "report.html").read_text()
    assert "<td>isoclip</td>" in page
    assert ("<td style=\"text-align:right\">unavailable: image tower: the timm vision tower ends in head layer(s) "
            "['attn_pool'] | no linear projection</td>") in page
