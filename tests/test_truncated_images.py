"""prepare.truncated_images: load | skip | fail, when checking, preparing and extracting features.

The truncated JPEG is written here: a 48×48 noise image (so its entropy-coded data is long)
cut to 60 % of its bytes, which PIL identifies but decodes only with LOAD_TRUNCATED_IMAGES.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from fixtures_datasets import garble_file, make_coop_dataset, truncate_file
from PIL import Image, ImageFile

from crossgap.cli import main
from crossgap.datasets import (
    DatasetIntegrityError,
    check_dataset,
    get_adapter,
    prepare_manifest,
    read_manifest,
)
from crossgap.datasets.images import manifest_truncated_mode, open_rgb, truncated_loading, truncated_policy
from crossgap.runtime.env import load_model
from crossgap.steps.features import extract_step
from crossgap.storage import load_feature_set


def write_truncated_jpeg(path: Path, fraction: float = 0.6) -> np.ndarray:
    """Overwrite ``path`` with a noise JPEG cut to ``fraction`` of its bytes; return the full image's pixels."""
    pixels = np.random.default_rng(0).integers(0, 256, (48, 48, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path, format="JPEG", quality=95)
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * fraction)])
    return pixels


@pytest.fixture
def dtd(tmp_path):
    """dtd with image 1 truncated (decodable with the flag) and, for some tests, nothing else wrong."""
    info = make_coop_dataset(tmp_path, "dtd")
    write_truncated_jpeg(info.path_of(1))
    return tmp_path, info


def test_the_written_file_is_truncated_not_corrupt(dtd):
    _, info = dtd
    with truncated_loading(False), pytest.raises(OSError, match="truncated"):
        Image.open(info.path_of(1)).load()
    with truncated_loading(True):
        assert Image.open(info.path_of(1)).convert("RGB").size == (48, 48)


def test_check_counts_truncated_images_and_fails_only_under_fail(dtd):
    root, info = dtd
    garble_file(info.path_of(4))
    truncate_file(info.path_of(6))  # 20 bytes: not even identifiable, so corrupt under every mode
    adapter = get_adapter("dtd")
    fail = check_dataset(adapter, root)  # default mode: fail
    assert [(p.kind, p.id) for p in fail.problems] == [
        ("truncated", info.ids()[1]), ("corrupt", info.ids()[4]), ("corrupt", info.ids()[6])]
    assert [p.id for p in fail.truncated] == [info.ids()[1]]
    assert f"TRUNCATED {info.path_of(1)}" in fail.format() and "truncated: 1 image(s), refused" in fail.format()
    load = check_dataset(adapter, root, truncated_images="load")
    assert [p.kind for p in load.problems] == ["corrupt", "corrupt"] and len(load.truncated) == 1
    assert "truncated: 1 image(s), loaded (truncated_images: load)" in load.format()
    assert f"TRUNCATED {info.path_of(1)}  (will be loaded)" in load.format()
    as_json = load.to_json()
    assert as_json["num_truncated"] == 1 and as_json["truncated_images"] == "load"
    assert as_json["truncated"][0]["id"] == info.ids()[1]
    info.path_of(4).unlink()
    write_truncated_jpeg(info.path_of(6))
    skip = check_dataset(adapter, root, truncated_images="skip")
    assert [p.kind for p in skip.problems] == ["missing"] and len(skip.truncated) == 2
    with pytest.raises(ValueError, match=r"truncated_images: expected one of \['fail', 'load', 'skip'\]"):
        check_dataset(adapter, root, truncated_images="ignore")


def test_load_keeps_the_row_and_records_mode_count_and_ids(dtd):
    root, info = dtd
    out = root / "dtd.parquet"
    df, meta = prepare_manifest("dtd", root, out, truncated_images="load")
    assert info.ids()[1] in set(df["id"]) and len(df) == len(info.items)
    assert meta["skipped"] == []
    _, back = read_manifest(out)
    assert back["truncated_images"] == {"mode": "load", "count": 1, "ids": [info.ids()[1]], "action": "loaded",
                                        "checked": True}
    assert manifest_truncated_mode(back) == "load"


def test_skip_drops_the_row_without_skip_corrupt_and_records_it(dtd):
    root, info = dtd
    df, meta = get_adapter("dtd").build(root, truncated_images="skip")
    assert info.ids()[1] not in set(df["id"]) and len(df) == len(info.items) - 1
    assert [(s["id"], s["kind"]) for s in meta["skipped"]] == [(info.ids()[1], "truncated")]
    assert meta["truncated_images"]["action"] == "skipped" and meta["truncated_images"]["count"] == 1


def test_fail_is_the_default_and_is_not_lifted_by_skip_corrupt(dtd):
    root, info = dtd
    with pytest.raises(DatasetIntegrityError) as err:
        get_adapter("dtd").build(root)
    assert [(p.kind, p.id) for p in err.value.problems] == [("truncated", info.ids()[1])]
    assert "truncated_images='load'" in str(err.value) and "--truncated-images" in str(err.value)
    garble_file(info.path_of(3))
    with pytest.raises(DatasetIntegrityError) as err:  # skip_corrupt skips the garbled file, not the truncated one
        get_adapter("dtd").build(root, skip_corrupt=True)
    assert [p.kind for p in err.value.problems] == ["truncated"]
    with pytest.raises(DatasetIntegrityError) as err:  # and 'skip' does not skip a corrupt file
        get_adapter("dtd").build(root, truncated_images="skip")
    assert [p.kind for p in err.value.problems] == ["corrupt"]
    df, meta = get_adapter("dtd").build(root, truncated_images="skip", skip_corrupt=True)
    assert {s["kind"] for s in meta["skipped"]} == {"truncated", "corrupt"} and len(df) == len(info.items) - 2


def test_pil_flag_is_left_as_found(dtd):
    root, _ = dtd
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False
    check_dataset(get_adapter("dtd"), root, truncated_images="load")
    get_adapter("dtd").build(root, truncated_images="load")
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False
    ImageFile.LOAD_TRUNCATED_IMAGES = True  # a user's global setting must not make "fail" load them
    try:
        assert [p.kind for p in check_dataset(get_adapter("dtd"), root).problems] == ["truncated"]
        with pytest.raises(OSError, match="prepare.truncated_images: load"):
            open_rgb(dtd[1].path_of(1), load_truncated=False)
        assert ImageFile.LOAD_TRUNCATED_IMAGES is True
    finally:
        ImageFile.LOAD_TRUNCATED_IMAGES = False


def test_features_follow_the_manifest_mode(dtd, open_clip_tiny_checkpoint, tmp_path):
    root, info = dtd
    spec = {"backend": "open_clip", "architecture": "test-vit-tiny", "pretrained": str(open_clip_tiny_checkpoint)}
    model, preprocess = load_model(spec)
    loaded = root / "load.parquet"
    prepare_manifest("dtd", root, loaded, truncated_images="load")
    out = tmp_path / "load.safetensors"
    extract_step(manifest=str(loaded), model_slug="m", model_spec=spec, split=info.items[1][0], modality="image",
                 out=str(out), progress=False)
    fs = load_feature_set(out)
    with truncated_loading(True):
        image = Image.open(info.path_of(1)).convert("RGB")
    with torch.no_grad():
        expected = model.encode_image(preprocess(image)[None]).float()[0]
    torch.testing.assert_close(fs.features[fs.ids.index(info.ids()[1])], expected, rtol=1e-4, atol=1e-5)
    # prepared without decoding under 'fail': the truncated image is met by feature extraction, which refuses it
    unchecked = root / "unchecked.parquet"
    _, meta = prepare_manifest("dtd", root, unchecked, check_images=False)
    assert meta["truncated_images"] == {"mode": "fail", "count": 0, "ids": [], "action": "none", "checked": False}
    with pytest.raises(OSError, match=rf"cannot read image {info.path_of(1)}.*truncated_images: load"):
        extract_step(manifest=str(unchecked), model_slug="m", model_spec=spec, split=info.items[1][0],
                     modality="image", out=str(tmp_path / "x.safetensors"), progress=False)


def test_cli_check_and_prepare(dtd, capsys):
    root, info = dtd
    assert main(["datasets", "check", "dtd", "--dataroot", str(root)]) == 1
    assert f"TRUNCATED {info.path_of(1)}" in capsys.readouterr().out
    assert main(["datasets", "check", "dtd", "--dataroot", str(root), "--truncated-images", "load", "--json"]) == 0
    (report,) = json.loads(capsys.readouterr().out)
    assert report["ok"] and report["num_truncated"] == 1 and report["truncated"][0]["kind"] == "truncated"
    out = root / "m.parquet"
    assert main(["datasets", "prepare", "dtd", "--dataroot", str(root), "--out", str(out)]) == 1
    printed = capsys.readouterr().out
    assert "--truncated-images load" in printed and "--skip-corrupt" not in printed
    assert main(["datasets", "prepare", "dtd", "--dataroot", str(root), "--out", str(out),
                 "--truncated-images", "skip"]) == 0
    assert "truncated images: 1 skipped (--truncated-images skip)" in capsys.readouterr().out
    assert read_manifest(out)[1]["truncated_images"]["mode"] == "skip"
    assert main(["datasets", "prepare", "dtd", "--dataroot", str(root), "--out", str(out),
                 "--truncated-images", "maybe"]) == 2


def test_policy_registry():
    assert truncated_policy("load").keep and not truncated_policy("load").fail
    assert not truncated_policy("skip").keep and not truncated_policy("skip").fail
    assert truncated_policy("fail").fail
    with pytest.raises(ValueError, match="got None"):
        truncated_policy(None)
