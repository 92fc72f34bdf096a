"""Image benchmark adapters on tiny trees in their real layouts: CUB, SOP, rOxford/rParis, ImageNet variants."""

from __future__ import annotations

import logging
import pickle

import pytest
from fixtures_datasets import garble_file
from fixtures_image_benchmarks import (
    IMAGENET_CLASSES,
    make_cub,
    make_imagenet_variant,
    make_revisited,
    make_sop,
)

from crossgap.datasets import (
    DatasetIntegrityError,
    DatasetLayoutError,
    DatasetNotFoundError,
    check_dataset,
    get_adapter,
    query_boxes,
    query_gallery,
    read_manifest,
    relevance,
    revisited_ground_truth,
    write_manifest,
    zero_shot_rows,
)


def _check_images(df, meta, info):
    assert df["id"].tolist() == info.ids()
    assert df["split"].tolist() == [s for s, _, _ in info.items]
    assert df["label"].tolist() == [label for _, _, label in info.items]
    assert meta["classnames"] == info.classnames
    assert meta["root"] == str(info.image_root)
    assert all((info.image_root / p).is_file() for p in df["path"])


def _build_checked(slug, tmp_path, info, caplog):
    """Build ``slug`` under ``tmp_path`` (warnings captured) and check its image rows against ``info``."""
    with caplog.at_level(logging.WARNING):
        df, meta = get_adapter(slug).build(tmp_path)
    _check_images(df, meta, info)
    return df, meta


def test_cub_all_to_all_leave_one_out(tmp_path, caplog):
    info = make_cub(tmp_path)
    df, meta = _build_checked("cub2011", tmp_path, info, caplog)
    assert "cub2011: split 'train' has 4 images, expected 5994" in caplog.text
    write_manifest(tmp_path / "cub.parquet", df, meta)
    df, meta = read_manifest(tmp_path / "cub.parquet")
    q, g, same = query_gallery(df, meta, "image_retrieval")
    assert len(q) == len(g) == 6 and same  # every image against every other image
    assert relevance(meta, "image_retrieval") == "label"
    assert meta["protocol"]["zero_shot"] is None


def test_cub_index_file_errors(tmp_path):
    info = make_cub(tmp_path)
    labels = info.folder / "image_class_labels.txt"
    labels.write_text(labels.read_text().replace("\n3 3\n", "\n3 7\n"))
    with pytest.raises(DatasetLayoutError, match=r"image_class_labels.txt: image 3: class id '7' is not in 1..3"):
        get_adapter("cub2011").build(tmp_path)
    lines = labels.read_text().splitlines()[:-1]
    labels.write_text("\n".join(lines) + "\n")
    with pytest.raises(DatasetLayoutError, match=r"image_class_labels.txt: image ids differ .*missing \[6\]"):
        get_adapter("cub2011").build(tmp_path)
    (info.folder / "classes.txt").unlink()
    with pytest.raises(DatasetNotFoundError, match="looked for: .*CUB_200_2011/classes.txt") as err:
        get_adapter("cub2011").build(tmp_path)
    assert "image_class_labels.txt" in str(err.value) and "Expected layout" in str(err.value)


def test_sop_test_against_test(tmp_path, caplog):
    info = make_sop(tmp_path)
    df, meta = _build_checked("sop", tmp_path, info, caplog)
    assert "sop: split 'test' has 3 classes, expected 11316" in caplog.text
    q, g, same = query_gallery(df, meta, "image_retrieval")
    assert set(q["split"]) == {"test"} and same and len(q) == 7
    assert sorted(set(q["label"])) == [2, 3, 4]
    ebay = info.folder / "Ebay_test.txt"
    ebay.write_text(ebay.read_text().replace("image_id class_id", "image_id klass_id"))
    with pytest.raises(DatasetLayoutError, match="Ebay_test.txt: line 1 must be the header"):
        get_adapter("sop").build(tmp_path)


def test_sop_missing_image_is_named(tmp_path):
    info = make_sop(tmp_path)
    info.path_of(5).unlink()
    with pytest.raises(DatasetIntegrityError, match=str(info.path_of(5))):
        get_adapter("sop").build(tmp_path, check_images=False)


@pytest.mark.parametrize("name", ["roxford5k", "rparis6k"])
def test_revisited_full_query_and_bbx_variant(tmp_path, name, caplog):
    fx = make_revisited(tmp_path, name)
    with caplog.at_level(logging.WARNING):
        df, meta = get_adapter(name).build(tmp_path)
    assert f"{name}: split 'query' has 2 images, expected 70" in caplog.text
    assert df["id"].tolist() == [f"query/{q}.jpg" for q in fx.qimlist] + [f"database/{d}.jpg" for d in fx.imlist]
    assert set(df["label"]) == {-1} and meta["classnames"] == []
    assert meta["root"] == str(fx.folder / "jpg")
    out = tmp_path / f"{name}.parquet"
    write_manifest(out, df, meta)
    df, meta = read_manifest(out)
    q, g, same = query_gallery(df, meta, "image_retrieval")
    assert not same and len(q) == 2 and len(g) == 6
    gt = revisited_ground_truth(meta, "image_retrieval", q, g)
    assert [{k: e[k] for k in ("easy", "hard", "junk")} for e in gt] == [
        {k: e[k] for k in ("easy", "hard", "junk")} for e in fx.gnd
    ]
    assert query_boxes(meta, "image_retrieval", q) == [None, None]  # the paper: full query images
    # the standard protocol's crop is the _bbx variant
    df_b, meta_b = get_adapter(f"{name}_bbx").build(tmp_path)
    qb, _, _ = query_gallery(df_b, meta_b, "image_retrieval")
    assert query_boxes(meta_b, "image_retrieval", qb) == [tuple(e["bbx"]) for e in fx.gnd]
    assert meta_b["dataset"] == f"{name}_bbx" and meta_b["root"] == meta["root"]


def test_revisited_ground_truth_survives_skipped_images(tmp_path):
    fx = make_revisited(tmp_path)
    garble_file(fx.folder / "jpg" / f"{fx.imlist[1]}.jpg")
    df, meta = get_adapter("roxford5k").build(tmp_path, skip_corrupt=True)
    q, g, _ = query_gallery(df, meta, "image_retrieval")
    gt = revisited_ground_truth(meta, "image_retrieval", q, g)
    # database image 1 is gone: query 0 loses its only 'hard' image, later positions shift by one
    assert gt[0]["easy"] == [0, 1] and gt[0]["hard"] == [] and gt[0]["junk"] == [4]
    assert gt[1]["easy"] == [2] and gt[1]["junk"] == [0, 3]


def test_revisited_bad_ground_truth(tmp_path):
    fx = make_revisited(tmp_path)
    gnd_path = fx.folder / "gnd_roxford5k.pkl"
    data = {"imlist": fx.imlist, "qimlist": fx.qimlist, "gnd": [dict(fx.gnd[0], hard=[1, 99]), fx.gnd[1]]}
    gnd_path.write_bytes(pickle.dumps(data))
    with pytest.raises(DatasetLayoutError, match=r"gnd_roxford5k.pkl: gnd\[0\] .*\['hard'\]: indices \[99\]"):
        get_adapter("roxford5k").build(tmp_path)
    report = check_dataset(get_adapter("roxford5k"), tmp_path)
    assert report.found and not report.ok and "indices [99]" in report.error

    class Evil:
        def __reduce__(self):
            return (print, ("owned",))

    gnd_path.write_bytes(pickle.dumps({"imlist": fx.imlist, "qimlist": fx.qimlist, "gnd": [Evil()]}))
    with pytest.raises(DatasetLayoutError, match="refusing to load global builtins.print"):
        get_adapter("roxford5k").build(tmp_path)


@pytest.mark.parametrize("slug", ["imagenet_v2", "imagenet_sketch", "imagenet_a", "imagenet_r"])
def test_imagenet_variants(tmp_path, slug, caplog):
    subset = slug in ("imagenet_a", "imagenet_r")
    info = make_imagenet_variant(tmp_path, slug, classes=(1, 3) if subset else (0, 1, 2, 3))
    df, meta = _build_checked(slug, tmp_path, info, caplog)
    expected = {"imagenet_v2": 10000, "imagenet_sketch": 50889, "imagenet_a": 7500, "imagenet_r": 30000}[slug]
    assert f"{slug}: split 'test' has {len(info.items)} images, expected {expected}" in caplog.text
    assert meta["protocol"]["image_retrieval"] is None and meta["templates"] == ["a photo of a {}."]
    assert zero_shot_rows(df, meta)["id"].tolist() == info.ids()
    wnids = list(IMAGENET_CLASSES)
    if subset:
        assert meta["wnids"] == [wnids[1], wnids[3]] and meta["imagenet_labels"] == [1, 3]
        assert meta["classnames"] == ["goldfish", "tiger shark"]
    else:
        assert meta["wnids"] == wnids and meta["imagenet_labels"] == [0, 1, 2, 3]


def test_imagenet_variant_classnames_fallback_and_errors(tmp_path):
    info = make_imagenet_variant(tmp_path, "imagenet_a", classes=(2,), copy_classnames=False)
    df, meta = get_adapter("imagenet_a").build(tmp_path)  # classnames.txt from <dataroot>/imagenet/
    assert meta["classnames"] == ["great white shark"] and len(df) == 2
    (tmp_path / "imagenet" / "classnames.txt").unlink()
    with pytest.raises(
        DatasetNotFoundError, match="no classnames.txt; looked for: .*imagenet-adversarial/classnames.txt"
    ):
        get_adapter("imagenet_a").build(tmp_path)
    info = make_imagenet_variant(tmp_path, "imagenet_r")
    (info.image_root / "n99999999").mkdir()
    with pytest.raises(DatasetLayoutError, match=r"\['n99999999'\] are not listed in .*classnames.txt"):
        get_adapter("imagenet_r").build(tmp_path)
    info = make_imagenet_variant(tmp_path, "imagenet_v2")
    (info.image_root / "1000").mkdir()
    with pytest.raises(DatasetLayoutError, match=r"class folders must be labels 0..3, found \['1000'\]"):
        get_adapter("imagenet_v2").build(tmp_path)
    with pytest.raises(DatasetNotFoundError, match=r"(?s)looked for: .*/imagenet-sketch\n.*images/<wnid>/"):
        get_adapter("imagenet_sketch").build(tmp_path)
