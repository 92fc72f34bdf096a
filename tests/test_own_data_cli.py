"""Your own data, part 3: ``crossgap datasets init`` / ``check --params`` / ``prepare --params``."""

from __future__ import annotations

import json

import pytest
import yaml
from fixtures_datasets import garble_file
from fixtures_own_data import make_caption_table, make_imagefolder, make_wds, rewrite_member

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


# --------------------------------------------------------------------------------- issue 21: bad input
def test_caption_not_utf8_named_by_check_prepare_and_init(tmp_path, capsys, caplog):
    make_wds(tmp_path / "caps", "retrieval", sizes={"test": 3})
    rewrite_member(tmp_path / "caps/test/0.tar", "s0000001.txt", b"\xff\xfeutf-16?")
    member = f"{tmp_path}/caps/test/0.tar#s0000001.txt"
    message = f"{member}: the caption text is not UTF-8 text (byte 0: b'\\xff\\xfeut'); expected UTF-8 text"
    assert main(["datasets", "init", "wds", str(tmp_path / "caps")]) == 1
    assert f"[PROBLEMS] caps  ({tmp_path / 'caps'})\n    {message}\n" in capsys.readouterr().out
    params = tmp_path / "params.yaml"
    params.write_text(f"datasets:\n  caps:\n    adapter: wds\n    dataroot: {tmp_path / 'caps'}\n"
                      "    options: {dataset_type: retrieval}\n")
    assert main(["datasets", "check", "--params", str(params), "caps"]) == 1
    assert f"    {message}\n" in capsys.readouterr().out
    caplog.clear()
    assert main(["datasets", "prepare", "caps", "--params", str(params), "--out", str(tmp_path / "m.parquet")]) == 1
    assert message in caplog.text and not (tmp_path / "m.parquet").exists()


def test_init_names_a_bad_dataset_type_file(tmp_path, caplog):
    make_wds(tmp_path / "bench", sizes={"test": 3})
    (tmp_path / "bench/dataset_type.txt").write_text("multilabel\n")
    assert main(["datasets", "init", "wds", str(tmp_path / "bench")]) == 1
    assert (f"{tmp_path}/bench/dataset_type.txt: dataset type 'multilabel' is not supported; expected one of "
            "['classification', 'retrieval']") in caplog.text
    caplog.clear()
    (tmp_path / "bench/dataset_type.txt").write_bytes(b"retri\xe8val\n")
    assert main(["datasets", "init", "wds", str(tmp_path / "bench")]) == 1
    assert (f"{tmp_path}/bench/dataset_type.txt: the dataset type is not UTF-8 text (byte 5: b'\\xe8val'); "
            "expected UTF-8 text") in caplog.text


def test_check_params_reports_generated_entries_as_generated(tmp_path, capsys):
    params = tmp_path / "params.yaml"
    params.write_text(PARAMS.replace("dataroot: data/raw", f"dataroot: {tmp_path / 'raw'}"))
    assert main(["datasets", "check", "--params", str(params)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("[GENERATED] synthetic\n    generate: true: the pipeline writes it (not written yet, "
                          "so nothing to check)\n")
    assert "generated by the pipeline: synthetic\nnot found: (none)\n" in out and "NOT FOUND" not in out
    assert main(["datasets", "check", "--params", str(params), "synthetic", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)[0]
    assert (report["ok"], report["found"], report["generated"]) == (True, False, True)


def test_prepare_skip_corrupt_reports_the_real_loss(tmp_path, capsys):
    import tarfile

    make_wds(tmp_path / "bench", sizes={"test": 18}, max_count=18)
    shard = tmp_path / "bench/test/0.tar"
    with tarfile.open(shard) as tf:
        start = {m.name: m.offset_data for m in tf.getmembers()}["s0000005.webp"]
    shard.write_bytes(shard.read_bytes()[: start + 10])
    params = tmp_path / "params.yaml"
    params.write_text(f"datasets:\n  bench:\n    adapter: wds\n    dataroot: {tmp_path / 'bench'}\n"
                      "    sizes: {test: 18}\n")
    out = tmp_path / "bench.parquet"
    assert main(["datasets", "prepare", "bench", "--params", str(params), "--out", str(out), "--skip-corrupt"]) == 0
    assert ("skipped 13 image(s) (0 missing/corrupt/truncated file(s), 13 sample(s) never read from 1 truncated "
            f"shard(s)) and 0 caption row(s) of skipped images; listed in {tmp_path / 'bench.skipped.json'}"
            ) in capsys.readouterr().out
    [entry] = json.loads((tmp_path / "bench.skipped.json").read_text())["skipped"]
    assert (entry["lost"], entry["expected"]) == (13, 18)
