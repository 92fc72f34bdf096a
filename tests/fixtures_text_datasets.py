"""Builders of tiny files in the real formats of the text datasets.

COCO (Karpathy split), Flickr30K and nocaps captions, IMDB reviews, 20 Newsgroups (extracted
archive or scikit-learn's cache) and NanoBEIR. Nothing here is a pytest fixture; each format
is written from the dataset's own distribution format, independently of the adapters.
"""

from __future__ import annotations

import codecs
import json
import pickle
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

def make_coco_karpathy(dataroot: Path) -> dict[str, Any]:
    """``COCO2014/dataset_coco_light.json``: 2 test, 1 val, 1 restval, 1 train image."""
    images = []
    plan = [("test", 5), ("train", 5), ("test", 6), ("val", 5), ("restval", 5)]
    for i, (split, n) in enumerate(plan):
        prefix = "COCO_train2014_" if split in ("train", "restval") else "COCO_val2014_"
        images.append(
            {
                "filepath": "train2014" if split in ("train", "restval") else "val2014",
                "filename": f"{prefix}{i + 1:012d}.jpg",
                "split": split,
                "imgid": i,
                "cocoid": i + 1,
                "sentences": [
                    {"raw": f"Caption {k} of image {i}.", "imgid": i, "sentid": 10 * i + k} for k in range(n)
                ],
            }
        )
    data = {"dataset": "coco", "images": images}
    folder = Path(dataroot) / "COCO2014"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "dataset_coco_light.json").write_text(json.dumps(data))
    return data


def make_flickr30k(dataroot: Path, *, broken_line: bool = True) -> dict[str, list[str]]:
    """``Flickr30K/results.csv`` (Kaggle format) and ``karpathy_*.txt`` (names without .jpg).

    Returns the expected captions per image name. With ``broken_line`` one caption line
    lacks its second delimiter, as in the Kaggle copy.
    """
    folder = Path(dataroot) / "Flickr30K"
    folder.mkdir(parents=True, exist_ok=True)
    images = {"1000092795.jpg": "train", "10002456.jpg": "val", "1000268201.jpg": "val", "1000344755.jpg": "test"}
    lines, captions = ["image_name| comment_number| comment"], {}
    for name in images:
        captions[name] = []
        for k in range(5):
            text = f"A person number {k} in {name[:-4]} ."
            captions[name].append(text)
            if broken_line and name == "1000268201.jpg" and k == 4:
                lines.append(f"{name}| {k}   {text}")
            else:
                lines.append(f"{name}| {k}| {text}")
    lines.append("99999.jpg| 0| An image in no split .")
    (folder / "results.csv").write_text("\n".join(lines) + "\n")
    for split in ("train", "val", "test"):
        names = [n[:-4] for n, s in images.items() if s == split]
        (folder / f"karpathy_{split}.txt").write_text("\n".join(names) + "\n")
    return captions


def make_nocaps(dataroot: Path) -> dict[str, Any]:
    """``nocaps/nocaps_val_4500_captions.json``: 3 images, annotations interleaved."""
    images = [
        {"id": i, "file_name": f"{name}.jpg", "height": 8, "width": 8}
        for i, name in enumerate(["0013ea2087020901", "00223c1a1b5d7a2a", "0041ab0c0e1e8b20"])
    ]
    annotations = []
    for k in range(10):
        for image in (images[1], images[0], images[2]):
            annotations.append(
                {"image_id": image["id"], "id": len(annotations), "caption": f"cap {k} of {image['id']}"}
            )
    data = {"licenses": [], "info": {}, "images": images, "annotations": annotations}
    folder = Path(dataroot) / "nocaps"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "nocaps_val_4500_captions.json").write_text(json.dumps(data))
    return data


def make_imdb(dataroot: Path) -> pd.DataFrame:
    """``IMDB_Reviews/IMDB_Dataset.csv`` with quoted multi-line and HTML-bearing reviews."""
    table = pd.DataFrame(
        {
            "review": [
                "One of the best films, truly.<br /><br />Go see it.",
                ' A "terrible", boring movie,\nwith commas. ',
                "Fine acting.",
                "Waste of time.",
            ],
            "sentiment": ["positive", "negative", "positive", "negative"],
        }
    )
    folder = Path(dataroot) / "IMDB_Reviews"
    folder.mkdir(parents=True, exist_ok=True)
    table.to_csv(folder / "IMDB_Dataset.csv", index=False)
    return table


NEWSGROUPS: tuple[str, ...] = ("alt.atheism", "comp.graphics", "sci.space")


@dataclass
class NewsgroupsFixture:
    """Data home and the posts written: ``{(group, file name): text}``."""

    data_home: Path
    posts: dict[tuple[str, str], str] = field(default_factory=dict)


def make_newsgroups(dataroot: Path, per_class: int = 3, *, cache: bool = False) -> NewsgroupsFixture:
    """``scikit_learn_data/20news_home/20news-bydate-{train,test}/<group>/<file>`` (latin-1 posts).

    With ``cache``, also write ``20news-bydate_py3.pkz`` the way scikit-learn builds it
    (``load_files`` on both folders, zlib-compressed pickle) and remove ``20news_home``, as
    ``fetch_20newsgroups`` does after downloading.
    """
    home = Path(dataroot) / "scikit_learn_data"
    fx = NewsgroupsFixture(home)
    for subset in ("train", "test"):
        for g, group in enumerate(NEWSGROUPS):
            d = home / "20news_home" / f"20news-bydate-{subset}" / group
            d.mkdir(parents=True, exist_ok=True)
            for k in range(per_class):
                name = str(50000 + 37 * g + k)
                text = f"From: user{k}@example.edu\nSubject: post {k} in {group}\n\nCaf\xe9 talk {k} about {group}.\n"
                (d / name).write_bytes(text.encode("latin-1"))
                if subset == "test":
                    fx.posts[(group, name)] = text
    if cache:
        import shutil

        from sklearn.datasets import load_files

        twenty = home / "20news_home"
        data = {s: load_files(twenty / f"20news-bydate-{s}", encoding="latin1") for s in ("train", "test")}
        (home / "20news-bydate_py3.pkz").write_bytes(codecs.encode(pickle.dumps(data), "zlib_codec"))
        shutil.rmtree(twenty)
    return fx


def make_nanobeir(dataroot: Path, name: str = "SciFact", *, hf_layout: bool = False, title: bool = False) -> Path:
    """``NanoBEIR/Nano<name>/{corpus,queries,qrels}.parquet`` (or HF shards ``<part>/train-*.parquet``).

    3 queries (q3 without relevant documents), 5 documents; q1 -> d2, d4; q2 -> d1 (score 2),
    d5 (score 0: judged not relevant); one qrels line names an unknown document.
    """
    folder = Path(dataroot) / "NanoBEIR" / f"Nano{name}"
    corpus = pd.DataFrame(
        {"_id": [f"d{i}" for i in range(1, 6)], "text": [f" Document {i} text. " for i in range(1, 6)]}
    )
    if title:
        corpus["title"] = ["Title one", "", None, "Title four", "Title five"]
    queries = pd.DataFrame({"_id": ["q1", "q2", "q3"], "text": ["first question?", "second question?", "third?"]})
    qrels = pd.DataFrame(
        {
            "query-id": ["q1", "q1", "q2", "q2", "q2"],
            "corpus-id": ["d2", "d4", "d1", "d5", "d99"],
            "score": [1, 1, 2, 0, 1],
        }
    )
    for part, df in (("corpus", corpus), ("queries", queries), ("qrels", qrels)):
        path = folder / part / "train-00000-of-00001.parquet" if hf_layout else folder / f"{part}.parquet"
        path.parent.mkdir(parents=True, exist_ok=True)
        df.to_parquet(path, index=False)
    return folder
