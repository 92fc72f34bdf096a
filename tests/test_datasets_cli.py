"""``crossgap datasets list/check/prepare`` through ``crossgap.cli.main``."""

from __future__ import annotations

import json

from fixtures_datasets import garble_file, make_coop_dataset, make_synthetic

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
    assert "skipped 3 row(s)" in capsys.readouterr().out
    assert len(json.loads(skipped_sidecar_path(bad).read_text())["skipped"]) == 3
    assert main(["datasets", "prepare", "ucf101", "--dataroot", str(tmp_path), "--out", str(bad)]) == 1
