"""Your own data: CLIP_benchmark WebDataset shards (``wds``), the tar reader, and feature
extraction streaming images from the shards (and from files) with a tiny random-init model."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import pytest
import torch
from fixtures_own_data import WDS_CLASSES, image_bytes, make_caption_table, make_imagefolder, make_wds, rewrite_member
from PIL import Image

from crossgap.datasets import (
    DatasetIntegrityError,
    DatasetLayoutError,
    DatasetNotFoundError,
    DatasetOptionsError,
    check_dataset,
    configured_adapter,
    prepare_manifest,
    query_gallery,
    read_manifest,
    zero_shot_rows,
)
from crossgap.datasets.errors import skipped_summary
from crossgap.datasets.tarshards import TarReadError, iter_samples, member_ref, parse_member_ref
from crossgap.steps.features import extract_step, prompts_step
from crossgap.storage import load_feature_set


def member_offsets(tar: Path) -> dict[str, tuple[int, int]]:
    with tarfile.open(tar) as tf:
        return {m.name: (m.offset, m.offset_data) for m in tf.getmembers()}


# --------------------------------------------------------------------------------- tar references
def test_member_refs_round_trip():
    assert member_ref("test/0.tar", "s0000001.webp") == "test/0.tar#s0000001.webp"
    assert parse_member_ref("/d/my#data/test/0.tar#s1.webp") == (Path("/d/my#data/test/0.tar"), "s1.webp")
    assert parse_member_ref("/d/img#1.png") is None
    with pytest.raises(ValueError, match="ending in .tar"):
        member_ref("test/0.tgz", "x")


def test_samples_grouped_as_webdataset_groups_them(tmp_path):
    tar = tmp_path / "x.tar"
    with tarfile.open(tar, "w") as tf:
        for name, data in [("a/k1.cls", b"2"), ("a/k1.JPG", b"img"), ("__meta__", b"m"), ("k2.seg.png", b"p"),
                           ("k2.cls", b"0")]:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    samples = list(iter_samples(tar))
    assert [(s.key, sorted(s.members)) for s in samples] == [("a/k1", ["cls", "jpg"]), ("k2", ["cls", "seg.png"])]
    assert samples[0].members["jpg"] == ("a/k1.JPG", b"img") and samples[0].first(("webp", "jpg")) == "jpg"


# --------------------------------------------------------------------------------- adapter
def test_classification_shards(tmp_path):
    info = make_wds(tmp_path, sizes={"train": 4, "test": 7}, max_count=3)
    out = tmp_path / "m.parquet"
    prepare_manifest("wds", tmp_path, out, options={"gallery_split": "train"})
    df, meta = read_manifest(out)
    assert df["id"].tolist() == [i for _, i, _ in info.images]
    assert df["path"].tolist()[:4] == ["train/0.tar#s0000000.webp", "train/0.tar#s0000001.webp",
                                       "train/0.tar#s0000002.webp", "train/1.tar#s0000003.webp"]
    assert df["label"].tolist() == [0, 1, 2, 0, 0, 1, 2, 0, 1, 2, 0]
    assert meta["classnames"] == WDS_CLASSES and meta["shards"] == {"train": 2, "test": 3}
    # every template of the file, {c} written as {}: the classifier averages all of them
    assert meta["templates"] == ["a photo of a {}.", "a blurry photo of the {}.", "art of the {}."]
    q, g, same = query_gallery(df, meta, "image_retrieval")
    assert len(q) == 7 and set(q["split"]) == {"test"} and len(g) == 4 and not same
    assert len(zero_shot_rows(df, meta)) == 7


def test_retrieval_shards(tmp_path):
    info = make_wds(tmp_path, "retrieval", sizes={"test": 4})
    df, meta = configured_adapter("wds", {"dataset_type": "retrieval"}).build(tmp_path)
    texts = df[df["modality"] == "text"]
    assert texts.groupby("group", sort=False)["text"].apply(list).to_dict() == info.captions
    q, g, _ = query_gallery(df, meta, "text_retrieval")
    assert q["text"].tolist() == [f"caption 0 of image {i} in test" for i in range(4)]
    assert g["text"].tolist() == ["caption 1 of image 0 in test", "caption 1 of image 1 in test",
                                  "caption 2 of image 1 in test", "caption 1 of image 2 in test",
                                  "caption 1 of image 3 in test", "caption 2 of image 3 in test"]
    assert meta["classnames"] == [] and meta["templates"] == [] and meta["dataset_type"] == "retrieval"


def test_clip_benchmark_exporter_output_reads_the_same(tmp_path):
    wb = pytest.importorskip("clip_benchmark.webdataset_builder")

    class Exported(list):
        classes = list(WDS_CLASSES)
        templates = ["a photo of a {c}.", "a blurry photo of the {c}.", "art of the {c}."]

    items = Exported((image_bytes(i, "webp"), i % 3) for i in range(7))
    wb.convert_dataset(items, "test", str(tmp_path / "exported"), image_format="webp", max_count=3, verbose=False)
    make_wds(tmp_path / "ours", sizes={"test": 7}, max_count=3)
    exported, meta_e = configured_adapter("wds").build(tmp_path / "exported")
    ours, meta_o = configured_adapter("wds").build(tmp_path / "ours")
    assert exported.equals(ours)
    assert (meta_e["classnames"], meta_e["templates"], meta_e["shards"]) == (
        meta_o["classnames"], meta_o["templates"], meta_o["shards"])


def test_wds_layout_errors(tmp_path):
    make_wds(tmp_path, sizes={"test": 4})
    with pytest.raises(DatasetOptionsError, match=r"dataset_type.txt: the shards are 'classification' but "
                       r"options.dataset_type is 'retrieval'; set dataset_type: classification"):
        configured_adapter("wds", {"dataset_type": "retrieval"}).build(tmp_path)
    (tmp_path / "dataset_type.txt").write_text("multilabel\n")
    with pytest.raises(DatasetLayoutError, match=r"dataset_type.txt: dataset type 'multilabel' is not supported"):
        configured_adapter("wds").build(tmp_path)
    (tmp_path / "dataset_type.txt").unlink()
    with pytest.raises(DatasetNotFoundError, match=r"looked for: .*/train/nshards.txt"):
        configured_adapter("wds", {"gallery_split": "train"}).build(tmp_path)
    (tmp_path / "test/nshards.txt").write_text("3\n")
    with pytest.raises(DatasetNotFoundError, match=r"test/nshards.txt says 3 shard\(s\), but .*test/2.tar do"):
        configured_adapter("wds").build(tmp_path)
    (tmp_path / "test/nshards.txt").write_text("2\n")
    (tmp_path / "classnames.txt").write_text("cat\ndog\n")  # the labels go up to 2
    with pytest.raises(DatasetLayoutError, match=r"test/0.tar#s0000002.cls: expected a class index in 0..1 "
                       r"\(classnames.txt has 2 names\), got '2'"):
        configured_adapter("wds").build(tmp_path)
    (tmp_path / "classnames.txt").unlink()
    with pytest.raises(DatasetNotFoundError, match=r"classnames.txt: missing; classification shards need"):
        configured_adapter("wds").build(tmp_path)


def test_corrupt_image_and_truncated_shard_name_file_and_member(tmp_path):
    make_wds(tmp_path, sizes={"test": 7}, max_count=3)
    rewrite_member(tmp_path / "test/0.tar", "s0000001.webp", b"not an image")
    shard = tmp_path / "test/1.tar"
    cut = member_offsets(shard)["s0000004.webp"][1] + 10  # inside the image of the second sample
    shard.write_bytes(shard.read_bytes()[:cut])
    report = check_dataset(configured_adapter("wds"), tmp_path)
    assert report.counts == {"test": 5}  # s0000001 is listed (but corrupt); s0000004, s0000005 are lost
    assert [(p.id, p.kind, Path(p.path).name) for p in report.problems] == [
        ("test/s0000001", "corrupt", "0.tar#s0000001.webp"), ("test/s0000004", "corrupt", "1.tar#s0000004.webp")]
    assert "cannot identify image file " + str(tmp_path / "test/0.tar#s0000001.webp") in report.problems[0].reason
    assert f"tar is truncated inside member 's0000004.webp' (its 38 bytes start at byte {cut - 10}" in \
        report.problems[1].reason
    out = tmp_path / "m.parquet"
    with pytest.raises(DatasetIntegrityError, match=r"corrupt: .*test/1.tar#s0000004.webp \(.*truncated"):
        prepare_manifest("wds", tmp_path, out)
    assert not out.exists() and not list(tmp_path.glob(".m.parquet*"))
    df, meta = prepare_manifest("wds", tmp_path, out, skip_corrupt=True)
    assert df["id"].tolist() == ["test/s0000000", "test/s0000002", "test/s0000003", "test/s0000006"]
    assert [s["id"] for s in meta["skipped"]] == ["test/s0000001", "test/s0000004"]


def test_truncated_header_after_a_complete_sample(tmp_path):
    make_wds(tmp_path, sizes={"test": 4}, max_count=3)
    shard = tmp_path / "test/0.tar"
    cut = member_offsets(shard)["s0000001.cls"][0] + 100  # inside the header of the second sample
    shard.write_bytes(shard.read_bytes()[:cut])
    with pytest.raises(TarReadError, match=r"0.tar: truncated tar: it ends after member 's0000000.webp' without "
                       r"the end-of-archive blocks \(byte \d+ of \d+\)"):
        list(iter_samples(shard))
    report = check_dataset(configured_adapter("wds"), tmp_path)
    # the sample before a broken header may be incomplete: dropped with the rest of the shard
    assert report.counts == {"test": 1} and [(p.id, p.path) for p in report.problems] == [("test/0.tar", str(shard))]
    shard.write_bytes(b"")
    with pytest.raises(TarReadError, match=r"0.tar: not a readable tar file"):
        list(iter_samples(shard))


# --------------------------------------------------------------------------------- features
@pytest.fixture
def cached_model(monkeypatch, tiny_model_and_preprocess):
    from crossgap.steps import features

    monkeypatch.setattr(features, "load_model", lambda model_spec, device=None: tiny_model_and_preprocess)


def _expected(tiny_model_and_preprocess, images: list[Image.Image]) -> torch.Tensor:
    model, preprocess = tiny_model_and_preprocess
    with torch.no_grad():
        return model.encode_image(torch.stack([preprocess(im) for im in images])).float()


@pytest.mark.parametrize("num_workers", [0, 2])
def test_features_stream_from_the_shards_in_manifest_order(tmp_path, tiny_spec, tiny_model_and_preprocess, cached_model,
                                                           num_workers):
    make_wds(tmp_path, sizes={"test": 7}, max_count=3)
    manifest = tmp_path / "m.parquet"
    prepare_manifest("wds", tmp_path, manifest)
    out = tmp_path / "image_test.safetensors"
    extract_step(manifest=str(manifest), model_slug="tiny", model_spec=tiny_spec, split="test", modality="image",
                 out=str(out), batch_size=2, num_workers=num_workers, progress=False)
    fs = load_feature_set(out)
    assert fs.ids == [f"test/s{i:07d}" for i in range(7)]
    images = [Image.open(io.BytesIO(image_bytes(i, "webp"))).convert("RGB") for i in range(7)]
    torch.testing.assert_close(fs.features, _expected(tiny_model_and_preprocess, images), rtol=1e-4, atol=1e-5)
    prompts = tmp_path / "prompts.safetensors"
    prompts_step(manifest=str(manifest), model_slug="tiny", model_spec=tiny_spec, out=str(prompts))
    assert load_feature_set(prompts).features.shape[0] == 3 * 3  # 3 classes x all 3 templates


def test_features_of_a_shard_truncated_after_the_manifest_name_the_member(tmp_path, tiny_spec, cached_model):
    make_wds(tmp_path, sizes={"test": 4}, max_count=4)
    manifest = tmp_path / "m.parquet"
    prepare_manifest("wds", tmp_path, manifest)
    shard = tmp_path / "test/0.tar"
    shard.write_bytes(shard.read_bytes()[: member_offsets(shard)["s0000002.webp"][1] + 5])
    out = tmp_path / "f.safetensors"
    with pytest.raises(TarReadError, match=r"test/0.tar: tar is truncated inside member 's0000002.webp'"):
        extract_step(manifest=str(manifest), model_slug="tiny", model_spec=tiny_spec, split="test", modality="image",
                     out=str(out), batch_size=2, progress=False)
    assert not out.exists()


def test_features_of_image_files_keep_their_order_with_workers(tmp_path, tiny_spec, tiny_model_and_preprocess, cached_model):
    info = make_imagefolder(tmp_path / "pets")
    manifest = tmp_path / "pets.parquet"
    prepare_manifest("imagefolder", tmp_path / "pets", manifest)
    out = tmp_path / "image_train.safetensors"
    extract_step(manifest=str(manifest), model_slug="tiny", model_spec=tiny_spec, split="train", modality="image",
                 out=str(out), batch_size=3, num_workers=2, progress=False)
    ids = [i for s, i, _ in info.images if s == "train"]
    assert load_feature_set(out).ids == ids
    images = [Image.open(info.files[i]).convert("RGB") for i in ids]
    torch.testing.assert_close(load_feature_set(out).features, _expected(tiny_model_and_preprocess, images),
                               rtol=1e-4, atol=1e-5)


def test_caption_table_texts_are_extracted(tmp_path, tiny_spec, tiny_model_and_preprocess, cached_model):
    make_caption_table(tmp_path, "csv")
    manifest = tmp_path / "cap.parquet"
    prepare_manifest("captions", tmp_path, manifest, options={"caption_columns": ["caption_1", "caption_2"]})
    out = tmp_path / "text_test.safetensors"
    extract_step(manifest=str(manifest), model_slug="tiny", model_spec=tiny_spec, split="test", modality="text",
                 out=str(out), batch_size=4, progress=False)
    fs = load_feature_set(out)
    assert fs.ids[:3] == ["test/img/a.png#0", "test/img/a.png#1", "test/img/b.png#0"] and len(fs.ids) == 10


# --------------------------------------------------------------------------------- issue 21: bad input
def test_caption_not_utf8_names_shard_and_member(tmp_path):
    make_wds(tmp_path, "retrieval", sizes={"test": 4}, max_count=3)
    rewrite_member(tmp_path / "test/1.tar", "s0000003.txt", b"caf\xe9 au lait\nsecond caption")
    member = f"{tmp_path}/test/1.tar#s0000003.txt"
    report = check_dataset(configured_adapter("wds", {"dataset_type": "retrieval"}), tmp_path)
    assert not report.ok and report.found
    assert report.error == f"{member}: the caption text is not UTF-8 text (byte 3: b'\\xe9 au'); expected UTF-8 text"
    with pytest.raises(DatasetLayoutError, match=f"^{member}: the caption text is not UTF-8"):
        prepare_manifest("wds", tmp_path, tmp_path / "m.parquet", options={"dataset_type": "retrieval"})
    assert not (tmp_path / "m.parquet").exists()


def _cut_inside(shard: Path, member: str) -> None:
    shard.write_bytes(shard.read_bytes()[: member_offsets(shard)[member][1] + 10])


def test_truncated_shard_reports_the_samples_lost_against_the_entry_sizes(tmp_path):
    make_wds(tmp_path, sizes={"test": 18}, max_count=18)  # one shard of 18 samples
    _cut_inside(tmp_path / "test/0.tar", "s0000005.webp")  # s0000000..s0000004 survive
    out = tmp_path / "m.parquet"
    df, meta = prepare_manifest("wds", tmp_path, out, skip_corrupt=True, sizes={"test": 18})
    assert df["id"].tolist() == [f"test/s000000{i}" for i in range(5)]
    [entry] = json.loads((tmp_path / "m.skipped.json").read_text())["skipped"]
    assert (entry["id"], entry["unread"], entry["lost"], entry["expected"]) == ("test/s0000005", True, 13, 18)
    assert entry["reason"].endswith(": 13 of the 18 samples of split 'test' lost (5 read; expected from the "
                                    "entry's sizes.test)")
    assert skipped_summary(meta["skipped"]) == (
        "skipped 13 image(s) (0 missing/corrupt/truncated file(s), 13 sample(s) never read from 1 truncated "
        "shard(s)) and 0 caption row(s) of skipped images")
    # without sizes: unknown (a single shard has no full shard to compare with), said so
    _, meta = prepare_manifest("wds", tmp_path, out, skip_corrupt=True)
    assert meta["skipped"][0]["lost"] is None and "an unknown number of samples lost" in meta["skipped"][0]["reason"]
    assert skipped_summary(meta["skipped"]).startswith("skipped at least 1 image(s)")


def test_truncated_shard_loss_from_sizes_json_and_from_the_full_shards(tmp_path):
    make_wds(tmp_path, sizes={"test": 18}, max_count=5)  # shards 0-2 hold 5 samples, shard 3 holds 3
    _cut_inside(tmp_path / "test/1.tar", "s0000006.webp")  # s0000005 survives; s0000006..s0000009 lost
    report = check_dataset(configured_adapter("wds"), tmp_path)
    assert report.counts == {"test": 14}
    [p] = report.problems
    assert (p.id, p.lost, p.expected) == ("test/s0000006", 4, 5)
    assert p.reason.endswith("4 of the 5 samples of the shard lost (1 read; expected from test/nshards.txt: "
                             "4 shards, the full ones hold 5 each)")
    # open_clip's sizes.json wins (here it says the shard held 6)
    (tmp_path / "test/sizes.json").write_text('{"0.tar": 5, "1.tar": 6, "2.tar": 5, "3.tar": 3}')
    [p] = check_dataset(configured_adapter("wds"), tmp_path).problems
    assert (p.lost, p.expected) == (5, 6) and "expected from test/sizes.json" in p.reason
    (tmp_path / "test/sizes.json").write_text('{"1.tar": "six"}')
    report = check_dataset(configured_adapter("wds"), tmp_path)
    assert report.error.startswith(f"{tmp_path}/test/sizes.json: expected {{shard file name: number of samples}}")
