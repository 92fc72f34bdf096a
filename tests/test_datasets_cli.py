"""``crossgap datasets list/check/prepare/prepare-text`` through ``crossgap.cli.main``.

First on CoOp-family datasets and the synthetic one, then on every image benchmark
(CUB, SOP, revisited Oxford/Paris, ImageNet variants) and text dataset at once.
"""

from __future__ import annotations

import json

from fixtures_datasets import garble_file, make_coop_dataset, make_synthetic
from fixtures_image_benchmarks import make_cub, make_imagenet_variant, make_revisited, make_sop
from fixtures_text_datasets import make_coco_karpathy, make_flickr30k, make_imdb, make_nanobeir
from fixtures_text_datasets import make_newsgroups, make_nocaps

from crossgap.cli import COMMANDS, main
from crossgap.datasets import read_manifest, skipped_sidecar_path


def test_list(capsys):
    assert main(["datasets", "list"]) == 0
    out = capsys.readouterr().out
    assert "oxford_pets" in out and "imagenet" in out and "synthetic" in out and "2944" in out
    assert "datasets" in COMMANDS


def test_usage_errors_return_nonzero(capsys):
    assert main([]) == 2
    assert main(["datasets", "prepare", "dtd"]) == 2  # --dataroot/--out missing
    assert main(["datasets", "check", "--dataroot", "/nowhere", "cifar10"]) == 2


def test_check_named_and_all(tmp_path, capsys):
    make_coop_dataset(tmp_path, "dtd")
    make_synthetic(tmp_path)
    assert main(["datasets", "check", "--dataroot", str(tmp_path), "dtd", "synthetic"]) == 0
    out = capsys.readouterr().out
    assert "[OK] dtd" in out and "[OK] synthetic" in out and "(expected 2820)" in out
    # a requested dataset that is not there fails
    assert main(["datasets", "check", "--dataroot", str(tmp_path), "dtd", "ucf101"]) == 1
    out = capsys.readouterr().out
    assert "[NOT FOUND] ucf101" in out and str(tmp_path / "ucf101") in out
    # no names: all registered are checked, the found ones reported; absent ones are fine
    assert main(["datasets", "check", "--dataroot", str(tmp_path), "--json"]) == 0
    reports = {r["dataset"]: r for r in json.loads(capsys.readouterr().out)}
    assert {d for d, r in reports.items() if r["found"]} == {"dtd", "synthetic"}
    assert main(["datasets", "check", "--dataroot", str(tmp_path)]) == 0
    assert "found: dtd, synthetic" in capsys.readouterr().out
    assert main(["datasets", "check", "--dataroot", str(tmp_path), "--strict", "dtd"]) == 1  # count warnings


def test_check_fails_on_corrupt_image(tmp_path, capsys):
    info = make_coop_dataset(tmp_path, "eurosat")
    garble_file(info.path_of(2))
    assert main(["datasets", "check", "--dataroot", str(tmp_path), "eurosat"]) == 1
    assert f"CORRUPT {info.path_of(2)}" in capsys.readouterr().out
    assert main(["datasets", "check", "--dataroot", str(tmp_path), "--no-check-images", "eurosat"]) == 0


def test_prepare(tmp_path, capsys):
    info = make_synthetic(tmp_path)
    out = tmp_path / "m" / "synthetic.parquet"
    assert main(["datasets", "prepare", "synthetic", "--dataroot", str(tmp_path), "--out", str(out)]) == 0
    df, meta = read_manifest(out)
    assert len(df) == 3 * len(info.items) and meta["dataset"] == "synthetic"
    assert "test text" in capsys.readouterr().out

    garble_file(info.path_of(1))
    bad = tmp_path / "m" / "bad.parquet"
    assert main(["datasets", "prepare", "synthetic", "--dataroot", str(tmp_path), "--out", str(bad)]) == 1
    assert f"CORRUPT {info.path_of(1)}" in capsys.readouterr().out and not bad.exists()
    args = ["datasets", "prepare", "synthetic", "--dataroot", str(tmp_path), "--out", str(bad), "--skip-corrupt"]
    assert main(args) == 0
    assert ("skipped 1 image(s) (1 missing/corrupt/truncated file(s)) and 2 caption row(s) of skipped images"
            in capsys.readouterr().out)
    assert len(json.loads(skipped_sidecar_path(bad).read_text())["skipped"]) == 3
    assert main(["datasets", "prepare", "ucf101", "--dataroot", str(tmp_path), "--out", str(bad)]) == 1


# --------------------------------------------------------------------------- image benchmarks and text datasets

#: The image benchmarks and text datasets that _make_benchmarks_and_texts writes.
BENCHMARKS_AND_TEXTS = {
    "cub2011",
    "sop",
    "roxford5k",
    "roxford5k_bbx",
    "rparis6k",
    "rparis6k_bbx",
    "coco_text",
    "flickr30k_text",
    "nocaps_text",
    "imdb_text",
    "newsgroup_text",
    "nano_scifact",
    "imagenet_v2",
    "imagenet_sketch",
    "imagenet_a",
    "imagenet_r",
}


def _make_benchmarks_and_texts(root):
    make_cub(root), make_sop(root), make_revisited(root, "roxford5k"), make_revisited(root, "rparis6k")
    make_coco_karpathy(root), make_flickr30k(root), make_nocaps(root), make_imdb(root), make_newsgroups(root)
    make_nanobeir(root, "SciFact")
    for slug in ("imagenet_v2", "imagenet_sketch", "imagenet_a", "imagenet_r"):
        make_imagenet_variant(root, slug, classes=(0, 2))


def test_list_shows_benchmarks_and_texts(capsys):
    assert main(["datasets", "list"]) == 0
    out = capsys.readouterr().out
    for slug in ("cub2011", "sop", "roxford5k_bbx", "nano_climatefever", "newsgroup_text", "imagenet_r", "60502"):
        assert slug in out


def test_check_reports_every_benchmark_and_text_dataset(tmp_path, capsys):
    _make_benchmarks_and_texts(tmp_path)
    assert main(["datasets", "check", "--dataroot", str(tmp_path), "--json", "--no-check-images"]) == 0
    reports = {r["dataset"]: r for r in json.loads(capsys.readouterr().out)}
    assert {d for d, r in reports.items() if r["found"]} == BENCHMARKS_AND_TEXTS
    assert all(reports[d]["ok"] for d in BENCHMARKS_AND_TEXTS)
    assert reports["nano_scifact"]["counts"] == {"queries": 3, "corpus": 5}
    assert "nano_scifact: split 'corpus' has 5 texts, expected 2919" in reports["nano_scifact"]["warnings"]
    assert reports["imdb_text"]["expected"] == {"query": 2, "corpus": 50000}
    assert not reports["nano_fever"]["found"]
    assert main(["datasets", "check", "--dataroot", str(tmp_path), "cub2011", "nano_fever"]) == 1
    out = capsys.readouterr().out
    assert "[OK] cub2011" in out and "(expected 5994)   <-- MISMATCH" in out
    assert "[NOT FOUND] nano_fever" in out and str(tmp_path / "NanoBEIR" / "NanoFEVER" / "corpus.parquet") in out


def test_check_names_a_corrupt_database_image(tmp_path, capsys):
    fx = make_revisited(tmp_path, "rparis6k")
    bad = fx.folder / "jpg" / f"{fx.imlist[2]}.jpg"
    bad.write_bytes(b"no jpeg")
    assert main(["datasets", "check", "--dataroot", str(tmp_path), "rparis6k"]) == 1
    assert f"CORRUPT {bad}" in capsys.readouterr().out


def test_prepare_and_prepare_text(tmp_path, capsys):
    make_nanobeir(tmp_path, "SciFact")
    out = tmp_path / "m" / "nano_scifact.parquet"
    assert main(["datasets", "prepare", "nano_scifact", "--dataroot", str(tmp_path), "--out", str(out)]) == 0
    df, meta = read_manifest(out)
    assert len(meta["qrels"]) == 4 and "queries text : 3" in capsys.readouterr().out

    cut = tmp_path / "m" / "nano_scifact.truncated.parquet"
    args = ["datasets", "prepare-text", str(out), "--out", str(cut), "--context-length", "4", "--words-per-token", "1"]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "truncate on 8 text(s)" in printed and "(approximated by words)" in printed and "cut: 5" in printed
    short, short_meta = read_manifest(cut)
    assert short["text"].iloc[-1] == "Document 5" and short_meta["qrels"] == meta["qrels"]

    summaries = tmp_path / "summaries.csv"
    summaries.write_text("id,summary\n" + "".join(f"d{i},doc {i}\n" for i in range(1, 5)))
    summed = tmp_path / "m" / "summed.parquet"
    args = ["datasets", "prepare-text", str(out), "--out", str(summed), "--strategy", "summaries"]
    assert main([*args, "--summaries", str(summaries)]) == 1  # d5 has no summary
    assert not summed.exists()
    with open(summaries, "a") as f:
        f.write("d5,doc 5\n")
    assert main([*args, "--summaries", str(summaries)]) == 0
    assert "replaced: 5; still over budget: 0" in capsys.readouterr().out
    assert read_manifest(summed)[0]["text"].tolist()[-2:] == ["doc 4", "doc 5"]
    assert main(args) == 2  # --summaries missing
    assert main(["datasets", "prepare-text", str(out), "--out", str(summed), "--strategy", "llm"]) == 2
