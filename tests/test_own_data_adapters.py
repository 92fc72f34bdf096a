"""Your own data, part 1: the ``imagefolder`` and ``captions`` adapters, their options and the schema."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import yaml
from fixtures_datasets import garble_file
from fixtures_own_data import make_caption_table, make_imagefolder

from crossgap.datasets import (
    DatasetIntegrityError,
    DatasetLayoutError,
    DatasetNotFoundError,
    DatasetOptionsError,
    check_dataset,
    configured_adapter,
    dataset_protocol,
    get_adapter,
    prepare_manifest,
    query_gallery,
    read_manifest,
    relevance,
    zero_shot_rows,
)
from crossgap.datasets.imagefolder import ImageFolderOptions
from crossgap.datasets.table import CaptionTableOptions
from crossgap.datasets.wds import WdsOptions

SCHEMA = Path(__file__).resolve().parents[1] / "workflow/schemas/params.schema.yaml"
CAPTION_OPTIONS = {"table": "captions.csv", "caption_columns": ["caption_1", "caption_2"], "label_column": "label",
                   "split_column": "split", "gallery_split": "train"}


# --------------------------------------------------------------------------------- options / protocol
def test_protocols_follow_from_params_alone(tmp_path):
    nowhere = str(tmp_path / "absent")  # no data needed
    proto = dataset_protocol({"adapter": "imagefolder", "dataroot": nowhere,
                              "options": {"splits": ["train", "val"], "query_split": "val", "gallery_split": None}})
    assert proto["image_retrieval"]["query"]["split"] == "val" and proto["image_retrieval"]["gallery"]["split"] == "val"
    assert proto["zero_shot"] == {"split": "val", "select": "all"} and proto["text_retrieval"] is None
    unlabelled = dataset_protocol({"adapter": "captions", "dataroot": nowhere})
    assert unlabelled["image_retrieval"] is None and unlabelled["zero_shot"] is None
    assert unlabelled["text_retrieval"]["query"] == {"split": "test", "select": "first_per_group"}
    assert unlabelled["text_retrieval"]["gallery"] == {"split": "test", "select": "rest_per_group"}
    assert unlabelled["modality_gap"] == {"split": "test"}
    labelled = get_adapter("captions").protocol_for({"adapter": "captions", "options": CAPTION_OPTIONS})
    assert labelled["image_retrieval"]["gallery"]["split"] == "train" and labelled["zero_shot"]["split"] == "test"
    retrieval = dataset_protocol({"adapter": "wds", "dataroot": nowhere, "options": {"dataset_type": "retrieval"}})
    assert retrieval["image_retrieval"] is None and retrieval["text_retrieval"]["relevance"] == "group"
    # the paper's adapters keep their fixed protocol and take no options
    assert dataset_protocol({"adapter": "dtd", "dataroot": nowhere}) == dict(get_adapter("dtd").protocol)


@pytest.mark.parametrize("entry, message", [
    ({"adapter": "imagefolder", "options": {"splits": ["train"], "query_split": "test"}},
     r"datasets.pets.options: query_split: 'test' is not one of splits \['train'\]"),
    ({"adapter": "imagefolder", "options": {"splits": ["my-train"]}}, r"splits: split name 'my-train' must"),
    ({"adapter": "imagefolder", "options": {"query_split": "all", "splits": ["all", "train"]}}, r"must not be \['all'\]"),
    ({"adapter": "imagefolder", "options": {"split": "test"}}, r"unknown option\(s\) \['split'\]; known: "),
    ({"adapter": "imagefolder", "options": {"query_fraction": "half"}}, r"options.query_fraction: expected a number"),
    ({"adapter": "captions", "options": {"caption_columns": "caption"}}, r"caption_columns: expected a list of a str"),
    ({"adapter": "captions", "options": {"table": "data.xlsx"}}, r"cannot tell the format of 'data.xlsx'"),
    ({"adapter": "captions", "options": {"gallery_split": "train"}}, r"gallery_split: image retrieval needs labels"),
    ({"adapter": "wds", "options": {"dataset_type": "multilabel"}}, r"dataset_type: expected one of"),
    ({"adapter": "dtd", "options": {"splits": []}}, r"adapter 'dtd' takes no options"),
])
def test_bad_options_name_the_key(entry, message):
    with pytest.raises(DatasetOptionsError, match=message):
        dataset_protocol({"dataroot": "x", **entry}, "pets")


def test_schema_defaults_equal_the_option_dataclasses():
    schema = yaml.safe_load(SCHEMA.read_text())
    branches = schema["properties"]["datasets"]["additionalProperties"]["allOf"]
    by_adapter = {b["if"]["properties"]["adapter"]["const"]: b["then"]["properties"]["options"]["properties"]
                  for b in branches if "const" in b["if"]["properties"]["adapter"]}
    for slug, cls in (("imagefolder", ImageFolderOptions), ("captions", CaptionTableOptions), ("wds", WdsOptions)):
        defaults = {f.name: f.default for f in dataclasses.fields(cls)}
        from_schema = {k: tuple(v["default"]) if isinstance(v["default"], list) else v["default"]
                       for k, v in by_adapter[slug].items()}
        assert from_schema == defaults, slug


# --------------------------------------------------------------------------------- imagefolder
def test_imagefolder_split_folders(tmp_path):
    info = make_imagefolder(tmp_path / "pets")
    df, meta = configured_adapter("imagefolder", name="pets").build(tmp_path / "pets")
    assert meta["dataset"] == "pets" and meta["adapter"] == "crossgap.datasets.imagefolder.ImageFolderAdapter"
    images = df[df["modality"] == "image"]
    assert images["id"].tolist() == [i for _, i, _ in info.images]
    assert images["id"].tolist()[:2] == ["train/cat/img0.png", "train/cat/img1.png"]
    assert images["label"].tolist() == [0, 0, 1, 1, 0, 0, 1]
    assert meta["classnames"] == ["cat", "golden retriever"]  # sorted folders, "_" read as a space
    assert meta["templates"] == ["a photo of a {}."] and meta["root"] == str(tmp_path / "pets")
    assert all((tmp_path / "pets" / p).is_file() for p in images["path"])
    q, g, same = query_gallery(df, meta, "image_retrieval")
    assert q["split"].unique().tolist() == ["test"] and g["split"].unique().tolist() == ["train"] and not same
    assert zero_shot_rows(df, meta)["id"].tolist() == q["id"].tolist()


def test_imagefolder_single_folder_seeded_split_and_classnames_file(tmp_path):
    root = tmp_path / "flat"
    make_imagefolder(root, {"x": {"b_cls": 5, "a_cls": 1}}, splits=False)
    (root / "classnames.txt").write_text("Alpha\nBeta\n")
    opts = {"splits": [], "query_fraction": 0.4, "seed": 3}
    df, meta = configured_adapter("imagefolder", opts).build(root)
    assert meta["classnames"] == ["Alpha", "Beta"]
    by_split = df.groupby("split")["id"].apply(list).to_dict()
    assert len(by_split["test"]) == 2 + 1 and len(by_split["train"]) == 3  # round(0.4*5)=2 of b; a's only image
    assert "test/a_cls/img0.png" in by_split["test"]
    again, _ = configured_adapter("imagefolder", opts).build(root)
    assert again["id"].tolist() == df["id"].tolist()  # seeded: same split every time
    chosen = {tuple(configured_adapter("imagefolder", {**opts, "seed": s}).build(root)[0].query("split == 'test'")["id"])
              for s in range(6)}
    assert len(chosen) > 1  # the seed decides which images are queries


def test_imagefolder_bad_inputs(tmp_path):
    info = make_imagefolder(tmp_path / "p")
    (tmp_path / "p/test/empty_class").mkdir()
    (tmp_path / "p/test/empty_class/notes.txt").write_text("no images here")
    with pytest.raises(DatasetLayoutError, match=r"p/test/empty_class: class folder has no images; expected files"):
        configured_adapter("imagefolder").build(tmp_path / "p")
    report = check_dataset(configured_adapter("imagefolder"), tmp_path / "p")
    assert not report.ok and "empty_class: class folder has no images" in report.error
    (tmp_path / "p/test/empty_class/notes.txt").unlink()
    (tmp_path / "p/test/empty_class").rmdir()
    (tmp_path / "p/classnames.txt").write_text("only one\n")
    with pytest.raises(DatasetLayoutError, match=r"classnames.txt: 1 class name\(s\) but 2 class folder"):
        configured_adapter("imagefolder").build(tmp_path / "p")
    (tmp_path / "p/classnames.txt").unlink()
    with pytest.raises(DatasetNotFoundError, match=r"looked for: .*p/val"):
        configured_adapter("imagefolder", {"splits": ["train", "val"], "query_split": "val"}).build(tmp_path / "p")
    garble_file(info.files["test/cat/img1.png"])
    with pytest.raises(DatasetIntegrityError, match=r"corrupt: .*p/test/cat/img1.png"):
        configured_adapter("imagefolder").build(tmp_path / "p")
    out = tmp_path / "m.parquet"
    with pytest.raises(DatasetIntegrityError):
        prepare_manifest("imagefolder", tmp_path / "p", out, name="pets")
    assert not out.exists() and list(tmp_path.glob(".m.parquet*")) == []  # nothing half-written
    report = check_dataset(configured_adapter("imagefolder"), tmp_path / "p")
    assert report.counts == {"train": 4, "test": 3} and [p.id for p in report.problems] == ["test/cat/img1.png"]


# --------------------------------------------------------------------------------- captions
@pytest.mark.parametrize("fmt", ["csv", "tsv", "jsonl", "parquet"])
def test_caption_table_every_format(tmp_path, fmt):
    info = make_caption_table(tmp_path, fmt)
    out = tmp_path / "cap.parquet"
    prepare_manifest("captions", tmp_path, out, options={**CAPTION_OPTIONS, "table": f"captions.{fmt}"})
    df, meta = read_manifest(out)
    assert meta["dataset"] == "captions"  # no name given: the adapter slug
    images, texts = df[df["modality"] == "image"], df[df["modality"] == "text"]
    assert images["id"].tolist() == [i for _, i, _ in info.images]
    assert images["label"].tolist() == [1, 0, 1, 0, 0] and meta["classnames"] == ["blue", "red"]
    got = texts.groupby("group", sort=False)["text"].apply(list).to_dict()
    assert got == info.captions  # empty cells skipped; the repeated row of img/e.png adds its third caption
    assert got["test/img/e.png"] == ["blue", "very blue", "the last blue one"]
    q, g, same = query_gallery(df, meta, "text_retrieval")
    assert q["text"].tolist() == ["a red block", "a blue block", "blue"]  # first caption of each test image
    assert g["text"].tolist() == ["red again", "very blue", "the last blue one"] and not same
    assert relevance(meta, "text_retrieval") == "group"
    qi, gi, _ = query_gallery(df, meta, "image_retrieval")
    assert qi["id"].tolist() == ["test/img/c.png", "test/img/d.png", "test/img/e.png"]
    assert gi["id"].tolist() == ["train/img/a.png", "train/img/b.png"]
    assert meta["protocol"]["modality_gap"] == {"split": "test"}


def test_caption_table_unlabelled_single_split(tmp_path):
    make_caption_table(tmp_path, "csv")
    opts = {"caption_columns": ["caption_1", "caption_2"]}
    df, meta = configured_adapter("captions", opts).build(tmp_path)
    assert set(df["split"]) == {"test"} and set(df["label"]) == {-1}
    assert meta["classnames"] == [] and meta["templates"] == []
    assert meta["protocol"]["image_retrieval"] is None and meta["protocol"]["zero_shot"] is None
    assert df[df["modality"] == "image"]["id"].tolist()[0] == "test/img/a.png"


def test_caption_table_bad_inputs(tmp_path):
    info = make_caption_table(tmp_path, "csv")
    with pytest.raises(DatasetLayoutError, match=r"captions.csv: column\(s\) \['caption'\] named by "
                       r"options.caption_columns not found; the table has columns \['image', 'caption_1'"):
        configured_adapter("captions").build(tmp_path)
    report = check_dataset(configured_adapter("captions", {"label_column": "class"}), tmp_path)
    assert not report.ok and "options.caption_columns" in report.error
    with pytest.raises(DatasetNotFoundError, match=r"looked for: .*/missing.csv"):
        configured_adapter("captions", {"table": "missing.csv"}).build(tmp_path)
    text = info.path.read_text().replace("img/b.png,a blue square,a square in blue,blue,train",
                                         "img/b.png,a blue square,a square in blue,blue,test")
    (tmp_path / "conflict.csv").write_text(text.replace("img/e.png,blue,very blue,blue,test",
                                                        "img/e.png,blue,very blue,red,test"))
    with pytest.raises(DatasetLayoutError, match=r"conflict.csv: line 7: image 'img/e.png' has label 'blue' here "
                       r"but 'red' at .*line 6"):
        configured_adapter("captions", {**CAPTION_OPTIONS, "table": "conflict.csv"}).build(tmp_path)
    (tmp_path / "escape.csv").write_text("image,caption\n../secret.png,hello\n")
    with pytest.raises(DatasetLayoutError, match=r"escape.csv: line 2: image path '../secret.png' must stay inside"):
        configured_adapter("captions", {"table": "escape.csv"}).build(tmp_path)
    garble_file(info.files["test/img/d.png"])
    (tmp_path / "img/c.png").unlink()
    report = check_dataset(configured_adapter("captions", CAPTION_OPTIONS), tmp_path)
    assert [(p.id, p.kind) for p in report.problems] == [("test/img/c.png", "missing"), ("test/img/d.png", "corrupt")]
    df, meta = configured_adapter("captions", CAPTION_OPTIONS).build(tmp_path, skip_corrupt=True)
    assert not df["id"].str.startswith(("test/img/c.png", "test/img/d.png")).any()  # images and their captions
    assert {s["id"] for s in meta["skipped"]} >= {"test/img/c.png", "test/img/c.png#0", "test/img/d.png#0"}
