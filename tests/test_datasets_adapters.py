"""Adapters for the CoOp family, FGVC-Aircraft and ImageNet on tiny trees in their real layouts."""

from __future__ import annotations

import json
import logging

import pytest
from fixtures_datasets import COOP_LAYOUTS, make_coop_dataset, make_fgvc_aircraft, make_imagenet

from crossgap.datasets import (
    DatasetLayoutError,
    DatasetNotFoundError,
    UnknownDatasetError,
    get_adapter,
    list_datasets,
    query_gallery,
    read_manifest,
    write_manifest,
    zero_shot_rows,
)

ALL = sorted([*COOP_LAYOUTS, "fgvc_aircraft", "imagenet", "synthetic"])
TEMPLATES = {
    "oxford_pets": "a photo of a {}, a type of pet.",
    "oxford_flowers": "a photo of a {}, a type of flower.",
    "fgvc_aircraft": "a photo of a {}, a type of aircraft.",
    "dtd": "{} texture.",
    "eurosat": "a centered satellite photo of {}.",
    "stanford_cars": "a photo of a {}.",
    "food101": "a photo of {}, a type of food.",
    "sun397": "a photo of a {}.",
    "caltech101": "a photo of a {}.",
    "ucf101": "a photo of a person doing {}.",
    "imagenet": "a photo of a {}.",
}


def _check_images(df, meta, info):
    assert df["id"].tolist() == info.ids()
    assert df["path"].tolist() == [rel for _, rel, _ in info.items]
    assert df["split"].tolist() == [s for s, _, _ in info.items]
    assert df["label"].tolist() == [label for _, _, label in info.items]
    assert set(df["modality"]) == {"image"}
    assert meta["classnames"] == info.classnames
    assert df["classname"].tolist() == [info.classnames[label] for _, _, label in info.items]
    assert meta["root"] == str(info.image_root)
    assert all((info.image_root / p).is_file() for p in df["path"])


def test_registry_lists_every_dataset():
    listed = list_datasets()
    assert set(ALL) <= set(listed) and listed == sorted(listed)
    with pytest.raises(KeyError) as err:
        get_adapter("cifar10")
    assert isinstance(err.value, UnknownDatasetError)
    assert "unknown dataset 'cifar10'" in str(err.value) and "oxford_pets" in str(err.value)


@pytest.mark.parametrize("slug", sorted(COOP_LAYOUTS))
def test_coop_family(tmp_path, slug):
    info = make_coop_dataset(tmp_path, slug)
    adapter = get_adapter(slug)
    df, meta = adapter.build(tmp_path)
    _check_images(df, meta, info)
    assert meta["templates"] == [TEMPLATES[slug]]
    assert meta["dataset"] == slug and meta["skipped"] == []
    assert meta["dataroot"] == str(tmp_path)
    assert meta["protocol"]["text_retrieval"] is None
    out = tmp_path / f"{slug}.parquet"
    write_manifest(out, df, meta)
    back, back_meta = read_manifest(out)
    q, g, same = query_gallery(back, back_meta, "image_retrieval")
    assert set(q["split"]) == {"test"} and set(g["split"]) == {"train"} and not same
    assert set(zero_shot_rows(back, back_meta)["split"]) == {"test"}


def test_coop_classname_rules(tmp_path):
    assert make_coop_dataset(tmp_path / "a", "food101").classnames == ["apple pie", "baby back ribs"]
    assert get_adapter("food101").build(tmp_path / "a")[1]["classnames"] == ["apple pie", "baby back ribs"]
    # flowers: names come from cat_to_name.json, not from the split file
    flowers = get_adapter("oxford_flowers").build(make_coop_dataset(tmp_path / "b", "oxford_flowers").folder.parent)
    assert flowers[1]["classnames"] == ["pink primrose", "hard-leaved pocket orchid"]
    # eurosat: folder-style names are renamed the way CoOp does
    make_coop_dataset(tmp_path / "c", "eurosat", raw_names=("AnnualCrop", "SeaLake"))
    assert get_adapter("eurosat").build(tmp_path / "c")[1]["classnames"] == ["Annual Crop Land", "Sea or Lake"]


def test_split_file_errors_name_file_and_entry(tmp_path):
    info = make_coop_dataset(tmp_path, "dtd")
    split_file = info.folder / "split_zhou_DescribableTextures.json"
    data = json.loads(split_file.read_text())
    data["test"][0] = ["banded/x.jpg", "zero", "banded"]
    split_file.write_text(json.dumps(data))
    with pytest.raises(DatasetLayoutError, match=r"split_zhou_DescribableTextures.json: test\[0\]: expected"):
        get_adapter("dtd").build(tmp_path)
    data["test"][0] = ["banded/x.jpg", 0, "not banded"]
    split_file.write_text(json.dumps(data))
    with pytest.raises(DatasetLayoutError, match="label 0 is called both 'banded' and 'not banded'"):
        get_adapter("dtd").build(tmp_path)


def test_missing_dataset_says_where_it_looked(tmp_path):
    with pytest.raises(DatasetNotFoundError) as err:
        get_adapter("oxford_pets").locate(tmp_path)
    msg = str(err.value)
    assert str(tmp_path / "oxford_pets") in msg and "split_zhou_OxfordPets.json" in msg and "images/" in msg
    (tmp_path / "oxford_pets").mkdir()
    with pytest.raises(DatasetNotFoundError, match="looked for: .*oxford_pets/images, .*split_zhou_OxfordPets.json"):
        get_adapter("oxford_pets").build(tmp_path)


def test_fgvc_aircraft(tmp_path):
    info = make_fgvc_aircraft(tmp_path)
    df, meta = get_adapter("fgvc_aircraft").build(tmp_path)
    _check_images(df, meta, info)
    assert meta["classnames"] == ["707-320", "A300B4", "F-16A/B"]
    assert meta["templates"] == [TEMPLATES["fgvc_aircraft"]]
    with open(info.folder / "images_variant_test.txt", "a") as f:
        f.write("0000001 Unknown Plane\n")
    with pytest.raises(DatasetLayoutError, match="images_variant_test.txt: line .*'Unknown Plane' is not listed"):
        get_adapter("fgvc_aircraft").build(tmp_path)


def test_imagenet(tmp_path, caplog):
    info = make_imagenet(tmp_path)
    (info.image_root / "train" / "n01440764" / ".hidden").write_text("x")
    with caplog.at_level(logging.WARNING):
        df, meta = get_adapter("imagenet").build(tmp_path)
    _check_images(df, meta, info)
    assert meta["classnames"] == ["tench", "goldfish", "great white shark"]
    assert "split 'train' has 6 images, expected 1281167" in caplog.text
    q, g, _ = query_gallery(df, meta, "image_retrieval")
    assert set(q["split"]) == {"val"} and set(g["split"]) == {"train"}
    assert set(zero_shot_rows(df, meta)["split"]) == {"val"}
    (info.image_root / "val" / "n99999999").mkdir()
    with pytest.raises(DatasetLayoutError, match="'n99999999' is not listed in .*classnames.txt"):
        get_adapter("imagenet").build(tmp_path)
