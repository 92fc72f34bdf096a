"""Your own data, part 3: ``crossgap datasets init`` / ``check --params`` / ``prepare --params``."""

from __future__ import annotations

import json

import pytest
import yaml
from fixtures_datasets import garble_file
from fixtures_own_data import make_caption_table, make_imagefolder, make_wds

from crossgap.cli import main
from crossgap.datasets import read_manifest
from crossgap.datasets.init import ParamsFileError, append_entry

PARAMS = """\
# crossgap: THE configuration.
models:
  tiny:
    backend: open_clip   # a comment that must survive
    architecture: crossgap-tiny

datasets:
  synthetic:
    adapter: synthetic
    dataroot: data/raw
    generate: true # written by the pipeline

# the synthetic dataset
synthetic:
  num_train: 10
"""


def test_init_imagefolder_prints_a_checked_entry(tmp_path, capsys):
    make_imagefolder(tmp_path / "my_pets")
    assert main(["datasets", "init", "imagefolder", str(tmp_path / "my_pets")]) == 0
    out = capsys.readouterr().out
    assert "[OK] my_pets" in out and "train: 4 images" in out and "test: 3 images" in out
    entry = yaml.safe_load(out[out.index("datasets:"):out.index("next:")])["datasets"]["my_pets"]
    assert entry == {
        "adapter": "imagefolder", "dataroot": str(tmp_path / "my_pets"),
        "options": {"splits": ["train", "test"], "query_split": "test", "gallery_split": "train",
                    "query_fraction": 0.2, "seed": 0, "classnames_file": None, "templates": ["a photo of a {}."]},
        "sizes": {"train": 4, "test": 3},
    }


def test_init_captions_detects_columns_and_appends(tmp_path, capsys):
    info = make_caption_table(tmp_path / "shop", "csv")
    params = tmp_path / "params.yaml"
    params.write_text(PARAMS)
    argv = ["datasets", "init", "captions", str(info.path), "--name", "shop", "--append", str(params)]
    assert main(argv) == 0
    assert f"appended datasets.shop to {params}" in capsys.readouterr().out
    text = params.read_text()
    assert text.startswith(PARAMS.split("\n# the synthetic")[0])  # everything before stays as it was
    assert "backend: open_clip   # a comment that must survive" in text and text.endswith("num_train: 10\n")
    cfg = yaml.safe_load(text)
    assert list(cfg["datasets"]) == ["synthetic", "shop"] and cfg["synthetic"] == {"num_train": 10}
    assert cfg["datasets"]["shop"]["dataroot"] == str(tmp_path / "shop")
    assert cfg["datasets"]["shop"]["options"] | {} == {
        "table": "captions.csv", "format": None, "image_column": "image", "caption_columns": ["caption_1", "caption_2"],
        "label_column": "label", "split_column": "split", "query_split": "test", "gallery_split": "train",
        "image_root": "", "templates": ["a photo of a {}."]}
    assert cfg["datasets"]["shop"]["sizes"] == {"train": 2, "test": 3}
    # the same name again is refused, and the file is unchanged
    assert main(argv) == 1
    assert params.read_text() == text
    capsys.readouterr()
    # check / prepare read the entry (adapter, dataroot, options) from the params file
    assert main(["datasets", "check", "--params", str(params), "shop", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report[0]["dataset"] == "shop" and report[0]["counts"] == {"train": 2, "test": 3}
    out = tmp_path / "shop.parquet"
    assert main(["datasets", "prepare", "shop", "--params", str(params), "--out", str(out)]) == 0
    df, meta = read_manifest(out)
    assert meta["dataset"] == "shop" and meta["classnames"] == ["blue", "red"] and len(df) == 5 + 10


def test_init_wds_and_overrides(tmp_path, capsys):
    make_wds(tmp_path / "bench", sizes={"train": 4, "test": 5})
    assert main(["datasets", "init", "wds", str(tmp_path / "bench"), "--set", "gallery_split=null"]) == 0
    out = capsys.readouterr().out
    entry = yaml.safe_load(out[out.index("datasets:"):out.index("next:")])["datasets"]["bench"]
    assert entry["options"] == {"dataset_type": "classification", "split": "test", "gallery_split": None,
                                "templates": None}
    assert entry["sizes"] == {"test": 5}  # only the split that is read
    make_wds(tmp_path / "caps", "retrieval", sizes={"test": 3})
    assert main(["datasets", "init", "wds", str(tmp_path / "caps")]) == 0
    out = capsys.readouterr().out
    assert yaml.safe_load(out[out.index("datasets:"):out.index("next:")])["datasets"]["caps"]["options"][
        "dataset_type"] == "retrieval"


def test_init_refuses_bad_data_and_writes_nothing(tmp_path, capsys):
    info = make_imagefolder(tmp_path / "pets")
    garble_file(info.files["train/cat/img0.png"])
    params = tmp_path / "params.yaml"
    params.write_text(PARAMS)
    assert main(["datasets", "init", "imagefolder", str(tmp_path / "pets"), "--append", str(params)]) == 1
    out = capsys.readouterr().out
    assert "[PROBLEMS] pets" in out and f"CORRUPT {info.files['train/cat/img0.png']}" in out
    assert "datasets:\n" not in out and params.read_text() == PARAMS
    make_caption_table(tmp_path / "shop", "csv")
    assert main(["datasets", "init", "captions", str(tmp_path / "shop/captions.csv"), "--set",
                 "caption_columns=[text]"]) == 1
    assert "column(s) ['text'] named by options.caption_columns not found" in capsys.readouterr().out
    assert main(["datasets", "init", "imagefolder", str(tmp_path / "nowhere")]) == 1
    assert main(["datasets", "init", "captions", str(tmp_path / "shop/captions.csv"), "--set", "oops"]) == 1
    assert main(["datasets", "check", "imagefolder"]) == 2  # neither --dataroot nor --params


def test_append_to_a_file_without_datasets_and_flow_style(tmp_path):
    params = tmp_path / "p.yaml"
    params.write_text("models: {}\n")
    append_entry(params, "mine", {"adapter": "imagefolder", "dataroot": "d"})
    assert yaml.safe_load(params.read_text()) == {"models": {}, "datasets": {"mine": {"adapter": "imagefolder",
                                                                                      "dataroot": "d"}}}
    params.write_text("datasets: {a: {adapter: dtd, dataroot: x}}\n")
    with pytest.raises(ParamsFileError, match="flow style"):
        append_entry(params, "mine", {"adapter": "imagefolder", "dataroot": "d"})
