"""Manifest schema, Parquet round trip, validation errors and protocol selection."""

from __future__ import annotations

import json

import pandas as pd
import pyarrow.parquet as pq
import pytest

from crossgap.datasets.errors import ManifestError
from crossgap.datasets.manifest import (
    MANIFEST_COLUMNS,
    MANIFEST_VERSION,
    query_gallery,
    read_manifest,
    read_manifest_meta,
    relevance,
    select,
    skipped_sidecar_path,
    write_manifest,
    zero_shot_rows,
)

PROTOCOL = {
    "image_retrieval": {"query": {"split": "test"}, "gallery": {"split": "train"}, "relevance": "label"},
    "text_retrieval": {
        "query": {"split": "test", "select": "first_per_group"},
        "gallery": {"split": "train", "select": "all"},
        "relevance": "label",
    },
    "zero_shot": {"split": "test"},
    "self_retrieval": {"query": {"split": "*", "modality": "image"}, "gallery": {"split": "*", "modality": "image"}},
    "caption_split": {
        "query": {"split": "*", "select": "first_per_group", "modality": "text"},
        "gallery": {"split": "*", "select": "rest_per_group", "modality": "text"},
        "relevance": "group",
    },
}


def _row(id_, split, modality, path=None, text=None, label=0, classname="a", group=None):
    return {
        "id": id_,
        "split": split,
        "modality": modality,
        "path": path,
        "text": text,
        "label": label,
        "classname": classname,
        "group": group,
    }


def make_frame() -> pd.DataFrame:
    rows = [
        _row("train/a.png", "train", "image", path="a.png", label=0, classname="cat"),
        _row("train/b.png", "train", "image", path="b.png", label=1, classname="dog"),
        _row("test/c.png", "test", "image", path="c.png", label=1, classname="dog"),
        _row("train/a.png#0", "train", "text", text="a cat", label=0, classname="cat", group="train/a.png"),
        _row("train/a.png#1", "train", "text", text="the cat", label=0, classname="cat", group="train/a.png"),
        _row("test/c.png#0", "test", "text", text="a dog", label=1, classname="dog", group="test/c.png"),
        _row("test/c.png#1", "test", "text", text="the dog", label=1, classname="dog", group="test/c.png"),
        _row("test/free", "test", "text", text="no group", label=-1, classname=None, group=None),
    ]
    df = pd.DataFrame(rows, columns=list(MANIFEST_COLUMNS))
    df["label"] = df["label"].astype("int64")
    return df


def make_meta(**extra) -> dict:
    return {
        "dataset": "toy",
        "adapter": "tests.Toy",
        "adapter_version": "1",
        "dataroot": "/data",
        "root": "/data/toy/images",
        "classnames": ["cat", "dog"],
        "templates": ["a photo of a {}."],
        "protocol": PROTOCOL,
        "skipped": [],
        "created_by": "crossgap test",
        **extra,
    }


def test_round_trip_pandas_and_pyarrow(tmp_path):
    df, meta = make_frame(), make_meta()
    out = tmp_path / "m" / "toy.parquet"
    write_manifest(out, df, meta)
    back, back_meta = read_manifest(out)
    assert list(back.columns) == list(MANIFEST_COLUMNS)
    assert back["label"].dtype == "int64"
    assert back_meta["manifest_version"] == MANIFEST_VERSION
    assert {k: back_meta[k] for k in meta} == json.loads(json.dumps(meta))
    for col in MANIFEST_COLUMNS:
        assert [None if pd.isna(v) else v for v in back[col]] == [None if pd.isna(v) else v for v in df[col]], col
    # plain pandas and pyarrow can read it too, metadata included
    plain = pd.read_parquet(out)
    assert plain["id"].tolist() == df["id"].tolist()
    table = pq.read_table(out)
    assert json.loads(table.schema.metadata[b"crossgap"])["dataset"] == "toy"
    assert table.schema.field("label").type == "int64"
    # and a re-write of what was read is identical
    write_manifest(tmp_path / "again.parquet", back, back_meta)
    again, _ = read_manifest(tmp_path / "again.parquet")
    pd.testing.assert_frame_equal(again, back)
    assert read_manifest_meta(out)["classnames"] == ["cat", "dog"]
    assert json.loads(skipped_sidecar_path(out).read_text())["skipped"] == []
    assert skipped_sidecar_path(out).name == "toy.skipped.json"
    assert not list(out.parent.glob(".*tmp"))  # no temporary files left


@pytest.mark.parametrize(
    "mutate, match",
    [
        (lambda df: df.drop(columns=["group"]), "missing \\['group'\\]"),
        (lambda df: df.assign(extra=1), "unexpected \\['extra'\\]"),
        (lambda df: df.assign(id=["x"] * len(df)), "'id' must be unique"),
        (lambda df: df.assign(label=df["label"].astype(float)), "'label' must be int64"),
        (lambda df: df.assign(modality="audio"), "'modality' must be one of"),
        (lambda df: df.assign(label=5), "'label' has 5 but metadata 'classnames' has only 2"),
        (lambda df: df.assign(path=None), "image rows need a 'path'"),
        (lambda df: df.assign(split=None), "'split' has 8 null"),
    ],
)
def test_write_rejects_bad_frames(tmp_path, mutate, match):
    out = tmp_path / "bad.parquet"
    with pytest.raises(ManifestError, match=match) as info:
        write_manifest(out, mutate(make_frame()), make_meta())
    assert str(out) in str(info.value)
    assert not out.exists()


@pytest.mark.parametrize(
    "meta, match",
    [
        ({k: v for k, v in make_meta().items() if k != "root"}, "'root' is missing"),
        (make_meta(templates=["no placeholder"]), "templates"),
        (make_meta(protocol={"zero_shot": {"split": "test", "select": "some"}}), "protocol\\['zero_shot'\\].*'select'"),
        (
            make_meta(protocol={"x": {"query": {"split": "a"}, "gallery": {"split": "b"}, "relevance": "nope"}}),
            "relevance",
        ),
    ],
)
def test_write_rejects_bad_metadata(tmp_path, meta, match):
    with pytest.raises(ManifestError, match=match):
        write_manifest(tmp_path / "bad.parquet", make_frame(), meta)


def test_read_errors_name_the_file(tmp_path):
    with pytest.raises(ManifestError, match="missing.parquet: manifest not found"):
        read_manifest(tmp_path / "missing.parquet")
    plain = tmp_path / "plain.parquet"
    make_frame().to_parquet(plain)
    with pytest.raises(ManifestError, match="plain.parquet.*no 'crossgap' key"):
        read_manifest(plain)
    junk = tmp_path / "junk.parquet"
    junk.write_text("not parquet")
    with pytest.raises(ManifestError, match="junk.parquet: not a readable Parquet"):
        read_manifest(junk)


def test_select_variants():
    df = make_frame()
    assert select(df, "image", {"split": "train"})["id"].tolist() == ["train/a.png", "train/b.png"]
    assert select(df, "image", {"split": "*"})["id"].tolist() == ["train/a.png", "train/b.png", "test/c.png"]
    texts = {"split": "*", "select": "first_per_group"}
    assert select(df, "text", texts)["id"].tolist() == ["train/a.png#0", "test/c.png#0", "test/free"]
    rest = select(df, "text", {"split": "*", "select": "rest_per_group"})
    assert rest["id"].tolist() == ["train/a.png#1", "test/c.png#1"]
    assert rest.index.tolist() == [4, 6]  # manifest row numbers are kept
    with pytest.raises(ManifestError, match="'select' must be one of"):
        select(df, "text", {"split": "*", "select": "random"})


def test_query_gallery_and_tasks():
    df, meta = make_frame(), make_meta()
    q, g, same = query_gallery(df, meta, "image_retrieval")
    assert q["id"].tolist() == ["test/c.png"] and g["id"].tolist() == ["train/a.png", "train/b.png"]
    assert same is False
    q, g, same = query_gallery(df, meta, "text_retrieval")
    assert q["id"].tolist() == ["test/c.png#0", "test/free"]
    assert g["id"].tolist() == ["train/a.png#0", "train/a.png#1"]
    q, g, same = query_gallery(df, meta, "self_retrieval")
    assert same is True and len(q) == 3
    q, g, same = query_gallery(df, meta, "caption_split")
    assert not same and relevance(meta, "caption_split") == "group"
    assert zero_shot_rows(df, meta)["id"].tolist() == ["test/c.png"]
    meta["protocol"] = {**PROTOCOL, "text_retrieval": None}
    with pytest.raises(ManifestError, match="'toy' does not support task 'text_retrieval'"):
        query_gallery(df, meta, "text_retrieval")
