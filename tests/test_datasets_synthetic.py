"""The synthetic dataset's adapter: image rows, caption rows, protocol."""

from __future__ import annotations

import json
import logging

import pytest
from fixtures_datasets import make_synthetic

from crossgap.datasets import (
    DatasetLayoutError,
    get_adapter,
    query_gallery,
    read_manifest,
    write_manifest,
    zero_shot_rows,
)


def test_synthetic_manifest(tmp_path, caplog):
    info = make_synthetic(tmp_path)
    with caplog.at_level(logging.WARNING):
        df, meta = get_adapter("synthetic").build(tmp_path)
    assert "expected" not in caplog.text  # no fixed sizes, no count check
    images, texts = df[df["modality"] == "image"], df[df["modality"] == "text"]
    assert images["id"].tolist() == info.ids()
    assert images["label"].tolist() == [label for _, _, label in info.items]
    assert meta["classnames"] == ["red circle", "blue square", "green ring"]
    assert meta["templates"] == ["a photo of a {}."]
    assert meta["root"] == str(info.image_root)
    assert df.index[df["modality"] == "text"].min() > df.index[df["modality"] == "image"].max()
    assert len(texts) == 2 * len(images)
    first = texts.iloc[0]
    assert first["id"] == f"{info.ids()[0]}#0" and first["group"] == info.ids()[0]
    assert first["text"] == info.captions[info.items[0][1]][0]
    by_id = images.set_index("id")
    assert (texts["label"].to_numpy() == by_id.loc[texts["group"], "label"].to_numpy()).all()
    assert (texts["split"].to_numpy() == by_id.loc[texts["group"], "split"].to_numpy()).all()
    assert texts["path"].isna().all() and images["text"].isna().all()

    out = tmp_path / "synthetic.parquet"
    write_manifest(out, df, meta)
    df, meta = read_manifest(out)
    q, g, same = query_gallery(df, meta, "text_retrieval")
    assert q["id"].tolist() == [f"{i}#0" for i in info.ids() if i.startswith("test/")]
    assert set(g["split"]) == {"train"} and len(g) == 2 * 6 and not same
    q, g, same = query_gallery(df, meta, "image_retrieval")
    assert set(q["modality"]) == {"image"} and set(q["split"]) == {"test"} and set(g["split"]) == {"train"}
    assert len(zero_shot_rows(df, meta)) == 3


def test_synthetic_classname_mismatch_is_an_error(tmp_path):
    info = make_synthetic(tmp_path)
    (info.folder / "classnames.txt").write_text("red circle\nblue SQUARE\ngreen ring\n")
    with pytest.raises(
        DatasetLayoutError, match="named 'blue square', but line 2 of .*classnames.txt is 'blue SQUARE'"
    ):
        get_adapter("synthetic").build(tmp_path)


def test_synthetic_bad_captions(tmp_path):
    info = make_synthetic(tmp_path)
    captions = dict(info.captions)
    captions[info.items[0][1]] = "not a list"
    (info.folder / "captions.json").write_text(json.dumps(captions))
    with pytest.raises(DatasetLayoutError, match=r"captions.json: key 'train/000000.png' must map to a list"):
        get_adapter("synthetic").build(tmp_path)


def test_manifest_order_does_not_depend_on_json_key_order(tmp_path):
    info = make_synthetic(tmp_path)
    split_file = info.folder / "split_zhou_Synthetic.json"
    split_file.write_text(json.dumps(json.loads(split_file.read_text()), sort_keys=True))  # test, train, val
    df, _ = get_adapter("synthetic").build(tmp_path)
    assert df.loc[df["modality"] == "image", "id"].tolist() == info.ids()  # train first
