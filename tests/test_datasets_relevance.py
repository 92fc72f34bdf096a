"""Explicit relevance (qrels, revisited ground truth), query crops and text-only manifests.

Manifests go through :mod:`crossgap.datasets.manifest` (write, read); their rows are selected
with :mod:`crossgap.datasets.selection`.
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import pytest

from crossgap.datasets.errors import ManifestError
from crossgap.datasets.manifest import MANIFEST_COLUMNS, read_manifest, write_manifest
from crossgap.datasets.rows import plain_text_row
from crossgap.datasets.selection import qrels_pairs, query_boxes, query_gallery, relevance, revisited_ground_truth
from crossgap.metrics.retrieval import evaluate_retrieval
from crossgap.metrics.revisited import evaluate_revisited


def _frame(rows):
    df = pd.DataFrame(rows, columns=list(MANIFEST_COLUMNS))
    df["label"] = df["label"].astype("int64")
    return df


def _text(split, key, text):
    return plain_text_row(split, key, text)


def _image(split, name):
    return {
        "id": f"{split}/{name}",
        "split": split,
        "modality": "image",
        "path": name,
        "text": None,
        "label": -1,
        "classname": None,
        "group": None,
    }


def _meta(protocol, **extra):
    return {
        "dataset": "toy",
        "adapter": "tests.Toy",
        "adapter_version": "1",
        "dataroot": "/d",
        "root": "/d/toy",
        "classnames": [],
        "templates": [],
        "protocol": protocol,
        "skipped": [],
        "created_by": "test",
        **extra,
    }


QRELS_PROTOCOL = {
    "text_retrieval": {"query": {"split": "queries"}, "gallery": {"split": "corpus"}, "relevance": "qrels"},
}
REVISITED_PROTOCOL = {
    "image_retrieval": {
        "query": {"split": "query"},
        "gallery": {"split": "database"},
        "relevance": "revisited",
        "query_crop": "bbx",
    },
}


def _qrels_manifest():
    df = _frame(
        [
            _text("queries", "a", "q a"),
            _text("queries", "b", "q b"),
            _text("corpus", "x", "doc x"),
            _text("corpus", "y", "doc y"),
            _text("corpus", "z", "doc z"),
        ]
    )
    qrels = [
        ["queries/a", "corpus/y", 1],
        ["queries/b", "corpus/x", 2],
        ["queries/b", "corpus/z", 0],
        ["queries/b", "corpus/gone", 1],
    ]
    return df, _meta(QRELS_PROTOCOL, qrels=qrels)


def test_qrels_round_trip_and_pairs_feed_the_evaluation(tmp_path, caplog):
    df, meta = _qrels_manifest()
    write_manifest(tmp_path / "m.parquet", df, meta)
    df, meta = read_manifest(tmp_path / "m.parquet")
    q, g, same = query_gallery(df, meta, "text_retrieval")
    assert relevance(meta, "text_retrieval") == "qrels" and not same
    with caplog.at_level(logging.WARNING):
        pairs = qrels_pairs(meta, "text_retrieval", q, g)
    assert pairs.tolist() == [[0, 1], [1, 0]] and "1 qrels name rows outside" in caplog.text
    feats_q = np.array([[0.0, 1.0, 0.0], [1.0, 0.0, 0.0]])
    feats_g = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    result = evaluate_retrieval(feats_q, feats_g, relevance=pairs, device="cpu")
    assert result["mAP"] == pytest.approx(100.0) and result["num_queries_evaluated"] == 2
    with pytest.raises(ManifestError, match="has relevance 'qrels', not 'revisited'"):
        revisited_ground_truth(meta, "text_retrieval", q, g)


def test_revisited_ground_truth_feeds_the_evaluation(tmp_path):
    df = _frame(
        [
            _image("query", "q0.jpg"),
            _image("database", "d0.jpg"),
            _image("database", "d1.jpg"),
            _image("database", "d2.jpg"),
        ]
    )
    gnd = [
        {
            "query": "query/q0.jpg",
            "easy": ["database/d1.jpg"],
            "hard": ["database/d2.jpg"],
            "junk": ["database/d0.jpg"],
            "bbx": [1, 2, 3, 4.5],
        }
    ]
    write_manifest(tmp_path / "r.parquet", df, _meta(REVISITED_PROTOCOL, gnd=gnd))
    df, meta = read_manifest(tmp_path / "r.parquet")
    q, g, _ = query_gallery(df, meta, "image_retrieval")
    gt = revisited_ground_truth(meta, "image_retrieval", q, g)
    assert gt == [{"easy": [1], "hard": [2], "junk": [0], "bbx": [1, 2, 3, 4.5]}]
    assert query_boxes(meta, "image_retrieval", q) == [(1.0, 2.0, 3.0, 4.5)]
    result = evaluate_revisited(np.array([[0.0, 1.0, 0.0]]), np.eye(3), gt, device="cpu")
    assert result["mAP_easy"] == pytest.approx(100.0) and result["num_queries"] == 1
    with pytest.raises(ManifestError, match=r"no entry for query row\(s\) \['query/other.jpg'\]"):
        revisited_ground_truth(meta, "image_retrieval", q.assign(id=["query/other.jpg"]), g)


@pytest.mark.parametrize(
    "protocol, extra, match",
    [
        (QRELS_PROTOCOL, {}, "relevance 'qrels' needs metadata 'qrels'"),
        (
            QRELS_PROTOCOL,
            {"qrels": [["queries/a", "corpus/x"]]},
            r"'qrels'\[0\] must be \[query_id, gallery_id, score\]",
        ),
        (QRELS_PROTOCOL, {"qrels": [["queries/a", "corpus/x", "1"]]}, r"'qrels'\[0\]"),
        (REVISITED_PROTOCOL, {}, "relevance 'revisited' needs metadata 'gnd'"),
        (
            REVISITED_PROTOCOL,
            {"gnd": [{"query": "q", "easy": [1], "hard": [], "junk": []}]},
            r"'gnd'\[0\]: 'easy' must",
        ),
        (REVISITED_PROTOCOL, {"gnd": [{"query": "q", "easy": [], "hard": [], "junk": [], "bbx": [1, 2]}]}, "'bbx'"),
        (
            {"t": {"query": {"split": "a"}, "gallery": {"split": "b"}, "query_crop": "center"}},
            {},
            "'query_crop' must be",
        ),
        (
            {"t": {"query": {"split": "a"}, "gallery": {"split": "b"}, "query_crop": "bbx"}},
            {},
            "needs 'relevance': 're",
        ),
    ],
)
def test_bad_explicit_relevance_metadata(tmp_path, protocol, extra, match):
    df = _frame([_text("a", "1", "x")])
    with pytest.raises(ManifestError, match=match):
        write_manifest(tmp_path / "bad.parquet", df, _meta(protocol, **extra))
    assert not (tmp_path / "bad.parquet").exists()


def test_query_boxes_without_crop_and_old_protocols(tmp_path):
    df, meta = _qrels_manifest()
    q, _, _ = query_gallery(df, meta, "text_retrieval")
    assert query_boxes(meta, "text_retrieval", q) == [None, None]
    # a manifest without explicit relevance needs neither key (backward compatible)
    plain = _meta(
        {"text_retrieval": {"query": {"split": "queries"}, "gallery": {"split": "corpus"}, "relevance": "label"}}
    )
    write_manifest(tmp_path / "p.parquet", df, plain)
    assert "qrels" not in read_manifest(tmp_path / "p.parquet")[1]
