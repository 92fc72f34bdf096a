"""Text dataset adapters on tiny files in their real formats: captions, IMDB, 20 Newsgroups, NanoBEIR."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest
from fixtures_text_datasets import (
    NEWSGROUPS,
    make_coco_karpathy,
    make_flickr30k,
    make_imdb,
    make_nanobeir,
    make_newsgroups,
    make_nocaps,
)

from crossgap.datasets import (
    DatasetIntegrityError,
    DatasetLayoutError,
    DatasetNotFoundError,
    check_dataset,
    get_adapter,
    qrels_pairs,
    query_gallery,
    read_manifest,
    relevance,
    write_manifest,
)
from crossgap.datasets.nanobeir import NANO_CORPUS_SIZES


def _round_trip(tmp_path, slug):
    df, meta = get_adapter(slug).build(tmp_path)
    out = tmp_path / f"{slug}.parquet"
    write_manifest(out, df, meta)
    return read_manifest(out)


def test_coco_text_first_caption_against_the_rest(tmp_path, caplog):
    data = make_coco_karpathy(tmp_path)
    with caplog.at_level(logging.WARNING):
        df, meta = _round_trip(tmp_path, "coco_text")
    assert "coco_text: split 'test' has 2 images, expected 5000" in caplog.text  # counted in images
    assert set(df["modality"]) == {"text"} and df["path"].isna().all()
    assert meta["counts"] == {"test": 2, "train": 1, "val": 1, "restval": 1}
    assert meta["text_counts"]["test"] == 11 and meta["count_unit"] == "groups"
    q, g, same = query_gallery(df, meta, "text_retrieval")
    tests = [im for im in data["images"] if im["split"] == "test"]
    assert q["text"].tolist() == [im["sentences"][0]["raw"] for im in tests]
    assert g["text"].tolist() == [s["raw"] for im in tests for s in im["sentences"][1:]]
    assert q["group"].tolist() == [f"test/{im['filename']}" for im in tests]
    assert relevance(meta, "text_retrieval") == "group" and not same
    assert set(g["group"]) == set(q["group"])


def test_coco_text_malformed(tmp_path):
    make_coco_karpathy(tmp_path)
    path = tmp_path / "COCO2014" / "dataset_coco_light.json"
    data = json.loads(path.read_text())
    del data["images"][2]["sentences"][1]["raw"]
    path.write_text(json.dumps(data))
    with pytest.raises(DatasetLayoutError, match=r"dataset_coco_light.json: images\[2\]: every sentence needs a 'raw'"):
        get_adapter("coco_text").build(tmp_path)
    path.write_text("{not json")
    report = check_dataset(get_adapter("coco_text"), tmp_path)
    assert report.found and "dataset_coco_light.json: not valid JSON" in report.error


def test_flickr30k_text_val_split_and_broken_line(tmp_path, caplog):
    captions = make_flickr30k(tmp_path)
    with caplog.at_level(logging.WARNING):
        df, meta = _round_trip(tmp_path, "flickr30k_text")
    assert "results.csv: line 16 lacks the delimiter after the comment number; repaired" in caplog.text
    assert meta["counts"] == {"train": 1, "val": 2, "test": 1}
    q, g, _ = query_gallery(df, meta, "text_retrieval")
    val = ["10002456.jpg", "1000268201.jpg"]
    assert q["text"].tolist() == [captions[n][0] for n in val]
    assert g["text"].tolist() == [c for n in val for c in captions[n][1:]]  # repaired caption included
    assert q["id"].tolist() == ["val/10002456.jpg#0", "val/1000268201.jpg#0"]
    # an image of a split list without captions is an error naming results.csv
    (tmp_path / "Flickr30K" / "karpathy_test.txt").write_text("1000344755\n424242\n")
    with pytest.raises(DatasetLayoutError, match=r"results.csv: no captions for 1 image\(s\).*'424242.jpg'"):
        get_adapter("flickr30k_text").build(tmp_path)


def test_nocaps_text(tmp_path):
    data = make_nocaps(tmp_path)
    df, meta = _round_trip(tmp_path, "nocaps_text")
    assert meta["counts"] == {"val": 3} and len(df) == 30
    q, g, _ = query_gallery(df, meta, "text_retrieval")
    assert q["text"].tolist() == ["cap 0 of 1", "cap 0 of 0", "cap 0 of 2"]  # order of first annotation
    assert len(g) == 27 and g["text"].iloc[0] == "cap 1 of 1"
    assert q["group"].iloc[0] == f"val/{data['images'][1]['file_name']}"
    path = tmp_path / "nocaps" / "nocaps_val_4500_captions.json"
    data["annotations"][4]["image_id"] = 77
    path.write_text(json.dumps(data))
    with pytest.raises(DatasetLayoutError, match=r"annotations\[4\]: image_id 77 is not in 'images'"):
        get_adapter("nocaps_text").build(tmp_path)


def test_imdb_text(tmp_path, caplog):
    table = make_imdb(tmp_path)
    with caplog.at_level(logging.WARNING):
        df, meta = _round_trip(tmp_path, "imdb_text")
    assert "imdb_text: split 'corpus' has 4 texts, expected 50000" in caplog.text
    assert meta["classnames"] == ["positive", "negative"]
    q, g, _ = query_gallery(df, meta, "text_retrieval")
    assert q["text"].tolist() == ["a positive review of a movie.", "a negative review of a movie."]
    assert q["label"].tolist() == [0, 1]
    assert g["text"].tolist() == [r.strip() for r in table["review"]]  # multi-line, quotes, commas intact
    assert g["label"].tolist() == [0, 1, 0, 1] and g["id"].tolist() == [f"corpus/{i}" for i in range(4)]
    path = tmp_path / "IMDB_Reviews" / "IMDB_Dataset.csv"
    table.assign(sentiment=["positive", "neutral", "positive", "negative"]).to_csv(path, index=False)
    with pytest.raises(DatasetLayoutError, match="IMDB_Dataset.csv: data row 1 has sentiment 'neutral'"):
        get_adapter("imdb_text").build(tmp_path)
    table.rename(columns={"review": "text"}).to_csv(path, index=False)
    with pytest.raises(DatasetLayoutError, match=r"IMDB_Dataset.csv: missing column\(s\) \['review'\]"):
        get_adapter("imdb_text").build(tmp_path)


def _sklearn_fetch_order(test_dir):
    """What fetch_20newsgroups(subset='test') returns, rebuilt from scikit-learn's own parts."""
    from sklearn.datasets import load_files

    bunch = load_files(test_dir, encoding="latin1")  # the cached, seed-0-shuffled split
    perm = np.arange(len(bunch.data))
    np.random.RandomState(42).shuffle(perm)  # fetch_20newsgroups' own shuffle
    return [bunch.data[i] for i in perm], [bunch.target_names[bunch.target[i]] for i in perm]


def test_newsgroups_follows_fetch_20newsgroups_order(tmp_path):
    fx = make_newsgroups(tmp_path)
    texts, groups = _sklearn_fetch_order(fx.data_home / "20news_home" / "20news-bydate-test")
    df, meta = _round_trip(tmp_path, "newsgroup_text")
    assert meta["classnames"] == list(NEWSGROUPS)
    q, g, _ = query_gallery(df, meta, "text_retrieval")
    assert q["id"].tolist() == [f"query/{n}" for n in NEWSGROUPS] and q["label"].tolist() == [0, 1, 2]
    assert q["text"].iloc[2] == "Space: exploration, astronomy, and scientific discoveries."
    assert g["text"].tolist() == [t.strip() for t in texts]
    assert g["classname"].tolist() == groups
    assert g["id"].tolist() == [f"test/{i}" for i in range(len(texts))]
    assert "Caf\xe9" in g["text"].iloc[0]  # latin-1 decoded
    # the same rows come from scikit-learn's cache when the extracted folder is gone
    make_newsgroups(tmp_path / "cached", cache=True)
    df2, _ = get_adapter("newsgroup_text").build(tmp_path / "cached")
    assert df2["text"].tolist() == df["text"].tolist() and df2["id"].tolist() == df["id"].tolist()


def test_newsgroups_locations_and_problems(tmp_path):
    with pytest.raises(DatasetNotFoundError) as err:
        get_adapter("newsgroup_text").locate(tmp_path)
    assert str(tmp_path / "scikit_learn_data" / "20news_home" / "20news-bydate-test") in str(err.value)
    assert "20news-bydate_py3.pkz" in str(err.value)
    fx = make_newsgroups(tmp_path)
    # <dataroot> may itself be the data home
    assert get_adapter("newsgroup_text").locate(fx.data_home) == fx.data_home
    post = (
        fx.data_home
        / "20news_home"
        / "20news-bydate-test"
        / "comp.graphics"
        / sorted(p for g, p in fx.posts if g == "comp.graphics")[0]
    )
    post.unlink()
    post.mkdir()  # an entry that cannot be read as a file
    with pytest.raises(DatasetIntegrityError, match=str(post)):
        get_adapter("newsgroup_text").build(tmp_path)
    df, meta = get_adapter("newsgroup_text").build(tmp_path, skip_corrupt=True)
    assert len(meta["skipped"]) == 1 and len(df) == 3 + 9 - 1


@pytest.mark.parametrize("hf_layout", [False, True])
def test_nanobeir_qrels(tmp_path, hf_layout, caplog):
    make_nanobeir(tmp_path, "SciFact", hf_layout=hf_layout, title=True)
    with caplog.at_level(logging.WARNING):
        df, meta = _round_trip(tmp_path, "nano_scifact")
    assert "1 qrels line(s) name unknown query or corpus ids" in caplog.text
    assert "1 queries have no relevant document" in caplog.text
    assert meta["counts"] == {"queries": 3, "corpus": 5}
    q, g, _ = query_gallery(df, meta, "text_retrieval")
    assert q["id"].tolist() == ["queries/q1", "queries/q2", "queries/q3"]
    # the text alone, as the reference encodes it; titles in the metadata (textprep prepends them on request)
    assert g["text"].tolist()[:3] == ["Document 1 text.", "Document 2 text.", "Document 3 text."]
    assert meta["titles"] == {"corpus/d1": "Title one", "corpus/d4": "Title four", "corpus/d5": "Title five"}
    assert relevance(meta, "text_retrieval") == "qrels"
    assert sorted(map(tuple, meta["qrels"])) == [
        ("queries/q1", "corpus/d2", 1),
        ("queries/q1", "corpus/d4", 1),
        ("queries/q2", "corpus/d1", 2),
        ("queries/q2", "corpus/d5", 0),
    ]
    pairs = qrels_pairs(meta, "text_retrieval", q, g)
    assert pairs.dtype == np.int64 and pairs.tolist() == [[0, 1], [0, 3], [1, 0]]  # score 0 is not relevant


def test_nanobeir_folder_names_and_errors(tmp_path):
    assert sorted(a for a in map(lambda n: f"nano_{n.lower()}", NANO_CORPUS_SIZES)) == [
        "nano_climatefever",
        "nano_dbpedia",
        "nano_fever",
        "nano_nfcorpus",
        "nano_nq",
        "nano_scidocs",
        "nano_scifact",
    ]
    folder = make_nanobeir(tmp_path, "NQ")
    folder.rename(folder.parent / "NQ")  # the bare BEIR name works too
    df, meta = get_adapter("nano_nq").build(tmp_path)
    assert meta["expected_sizes"] == {"queries": 50, "corpus": 5035} and len(df) == 8
    (folder.parent / "NQ" / "qrels.parquet").unlink()
    with pytest.raises(DatasetNotFoundError) as err:
        get_adapter("nano_nq").build(tmp_path)
    msg = str(err.value)
    assert "NanoBEIR/NanoNQ/corpus.parquet" in msg and "NanoBEIR/NQ/qrels.parquet" in msg
    assert "query-id, corpus-id" in msg
    (folder.parent / "NQ" / "corpus.parquet").write_text("garbage")
    make_nanobeir(tmp_path, "NQ")
    (tmp_path / "NanoBEIR" / "NanoNQ" / "corpus.parquet").write_text("garbage")
    with pytest.raises(DatasetLayoutError, match="NanoNQ/corpus.parquet: not a readable Parquet file"):
        get_adapter("nano_nq").build(tmp_path)
