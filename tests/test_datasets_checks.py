"""Checks: count mismatches warn, missing/corrupt files stop the build or are skipped and recorded."""

from __future__ import annotations

import json
import logging

import pytest
from fixtures_datasets import garble_file, make_coop_dataset, make_synthetic, truncate_file

from crossgap.datasets import (
    DatasetIntegrityError,
    check_dataset,
    get_adapter,
    prepare_manifest,
    read_manifest,
    skipped_sidecar_path,
)


def test_count_mismatch_is_a_warning_with_both_numbers(tmp_path, caplog):
    make_coop_dataset(tmp_path, "oxford_pets")
    with caplog.at_level(logging.WARNING, logger="crossgap"):
        df, meta = get_adapter("oxford_pets").build(tmp_path)
    assert len(df) == 8  # the build went on
    assert "oxford_pets: split 'train' has 4 images, expected 2944" in caplog.text
    assert "split 'test' has 2 images, expected 3669" in caplog.text
    assert "2 classes, expected 37" in caplog.text
    report = check_dataset(get_adapter("oxford_pets"), tmp_path)
    assert report.ok and report.counts == {"train": 4, "val": 2, "test": 2}
    assert any("expected 736" in w for w in report.warnings)
    assert "(expected 2944)   <-- MISMATCH" in report.format()


def test_missing_and_corrupt_files_stop_the_build(tmp_path):
    info = make_coop_dataset(tmp_path, "dtd")
    missing, truncated, garbled = info.path_of(0), info.path_of(3), info.path_of(5)
    missing.unlink()
    truncate_file(truncated)
    garble_file(garbled)
    with pytest.raises(DatasetIntegrityError) as err:
        get_adapter("dtd").build(tmp_path)
    msg = str(err.value)
    for path in (missing, truncated, garbled):
        assert str(path) in msg
    assert f"missing: {missing}" in msg and "--skip-corrupt" in msg
    assert [(p.kind, p.id) for p in err.value.problems] == [
        ("missing", info.ids()[0]),
        ("corrupt", info.ids()[3]),
        ("corrupt", info.ids()[5]),
    ]
    # without decoding, only the missing file is a problem
    with pytest.raises(DatasetIntegrityError) as err:
        get_adapter("dtd").build(tmp_path, check_images=False)
    assert [p.path for p in err.value.problems] == [str(missing)]
    report = check_dataset(get_adapter("dtd"), tmp_path)
    assert not report.ok and len(report.problems) == 3
    assert f"CORRUPT {garbled}" in report.format()


def test_skip_corrupt_records_skipped_rows(tmp_path):
    info = make_coop_dataset(tmp_path, "caltech101")
    garble_file(info.path_of(1))
    info.path_of(2).unlink()
    out = tmp_path / "manifests" / "caltech101.parquet"
    df, meta = prepare_manifest("caltech101", tmp_path, out, skip_corrupt=True)
    bad = {info.ids()[1], info.ids()[2]}
    assert bad.isdisjoint(df["id"]) and len(df) == len(info.items) - 2
    back, back_meta = read_manifest(out)
    assert {s["id"] for s in back_meta["skipped"]} == bad
    assert {s["kind"] for s in back_meta["skipped"]} == {"missing", "corrupt"}
    sidecar = json.loads(skipped_sidecar_path(out).read_text())
    assert sidecar["skipped"] == back_meta["skipped"] and sidecar["dataset"] == "caltech101"


def test_skipping_an_image_also_skips_its_captions(tmp_path):
    info = make_synthetic(tmp_path)
    truncate_file(info.path_of(0))
    df, meta = get_adapter("synthetic").build(tmp_path, skip_corrupt=True)
    image_id = info.ids()[0]
    skipped = {s["id"]: s for s in meta["skipped"]}
    assert set(skipped) == {image_id, f"{image_id}#0", f"{image_id}#1"}
    assert skipped[f"{image_id}#0"]["kind"] == "orphan" and image_id in skipped[f"{image_id}#0"]["reason"]
    assert not df["group"].eq(image_id).any() and image_id not in set(df["id"])


def test_check_reports_not_found(tmp_path):
    report = check_dataset(get_adapter("sun397"), tmp_path)
    assert not report.found and not report.ok
    assert str(tmp_path / "sun397") in report.error and "split_zhou_SUN397.json" in report.error
    assert report.format().startswith("[NOT FOUND] sun397")
