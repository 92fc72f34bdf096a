"""Builders of "your own data" in the three generic formats, written independently of the adapters.

* :func:`make_imagefolder`: ``<root>/<split>/<class>/<image>.png`` (or ``<root>/<class>/...``);
* :func:`make_caption_table`: a CSV / TSV / JSONL / Parquet table with two caption columns;
* :func:`make_wds`: CLIP_benchmark's WebDataset layout, the shards written with webdataset's
  ``ShardWriter`` and the very sample dicts of ``clip_benchmark.webdataset_builder.convert_dataset``
  (``{"__key__": "s%07d" % index, <ext>: image bytes, "cls": label}``, or ``"txt"`` captions),
  plus ``nshards.txt``, ``classnames.txt``, ``zeroshot_classification_templates.txt`` and
  ``dataset_type.txt`` as that exporter and ``build_wds_dataset`` define them.

Images are 16x16 with a colour per item, so features differ between images.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
from PIL import Image

IMAGE_FORMATS = {"webp": dict(format="webp", lossless=True), "png": dict(format="png"), "jpg": dict(format="jpeg")}


def colour(i: int) -> tuple[int, int, int]:
    """A distinct colour per index."""
    return ((37 * i + 40) % 256, (91 * i + 10) % 256, (53 * i + 200) % 256)


def image_bytes(i: int, fmt: str = "png", size: int = 16) -> bytes:
    """Encoded bytes of the solid image number ``i``."""
    buf = io.BytesIO()
    Image.new("RGB", (size, size), colour(i)).save(buf, **IMAGE_FORMATS[fmt])
    return buf.getvalue()


@dataclass
class OwnData:
    """What a builder wrote: the path to give ``init``, and the expected rows by hand."""

    path: Path
    classnames: list[str] = field(default_factory=list)
    images: list[tuple[str, str, int]] = field(default_factory=list)  # (split, id, label) in manifest order
    captions: dict[str, list[str]] = field(default_factory=dict)  # image id -> captions
    files: dict[str, Path] = field(default_factory=dict)  # image id -> file (or tar shard)


def make_imagefolder(root: Path, classes: dict[str, dict[str, int]] | None = None, *, splits: bool = True) -> OwnData:
    """``root/<split>/<class>/img<k>.png``; ``classes`` maps split -> {class folder: count}."""
    classes = classes or {"train": {"golden_retriever": 2, "cat": 2}, "test": {"golden_retriever": 1, "cat": 2}}
    info = OwnData(root)
    names = sorted({c for per in classes.values() for c in per})
    info.classnames = [n.replace("_", " ") for n in names]
    n = 0
    for split, per in classes.items():
        for label, name in enumerate(names):
            for k in range(per.get(name, 0)):
                rel = f"{split}/{name}/img{k}.png" if splits else f"{name}/img{k}.png"
                path = root / rel
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(image_bytes(n))
                n += 1
                info.images.append((split, f"{split}/{name}/img{k}.png", label))
                info.files[info.images[-1][1]] = path
    return info


CAPTION_ROWS = [  # image, caption_1, caption_2, label, split
    ("img/a.png", "a red square", "a square that is red", "red", "train"),
    ("img/b.png", "a blue square", "a square in blue", "blue", "train"),
    ("img/c.png", "a red block", "red again", "red", "test"),
    ("img/d.png", "a blue block", "", "blue", "test"),
    ("img/e.png", "blue", "very blue", "blue", "test"),
]


def make_caption_table(root: Path, fmt: str = "csv", *, extra_row: bool = True) -> OwnData:
    """A table ``root/captions.<fmt>`` with columns image, caption_1, caption_2, label, split.

    ``extra_row``: one more row for ``img/e.png`` with a third caption (several rows per image).
    """
    rows = [dict(zip(("image", "caption_1", "caption_2", "label", "split"), r)) for r in CAPTION_ROWS]
    if extra_row:
        rows.append({"image": "img/e.png", "caption_1": "the last blue one", "caption_2": "", "label": "blue",
                     "split": "test"})
    info = OwnData(root / f"captions.{fmt}", classnames=["blue", "red"])
    for i, (image, c1, c2, label, split) in enumerate(CAPTION_ROWS):
        (root / image).parent.mkdir(parents=True, exist_ok=True)
        (root / image).write_bytes(image_bytes(i))
        key = f"{split}/{image}"
        info.images.append((split, key, ["blue", "red"].index(label)))
        info.captions[key] = [c for c in (c1, c2) if c]
        info.files[key] = root / image
    if extra_row:
        info.captions["test/img/e.png"].append("the last blue one")
    df = pd.DataFrame(rows)
    writers: dict[str, Any] = {
        "csv": lambda p: df.to_csv(p, index=False),
        "tsv": lambda p: df.to_csv(p, sep="\t", index=False),
        "jsonl": lambda p: df.replace("", None).to_json(p, orient="records", lines=True),
        "parquet": lambda p: df.to_parquet(p, index=False),
    }
    writers[fmt](info.path)
    return info


WDS_CLASSES = ["cat", "dog", "bird"]
WDS_TEMPLATES = ["a photo of a {c}.", "a blurry photo of the {c}.", "art of the {c}."]


def write_shards(folder: Path, split: str, samples: list[dict[str, Any]], max_count: int) -> int:
    """Samples -> ``folder/split/{0..N-1}.tar`` with webdataset's ShardWriter, and ``nshards.txt``."""
    import webdataset

    (folder / split).mkdir(parents=True, exist_ok=True)
    sink = webdataset.ShardWriter(str(folder / split / "%d.tar"), maxcount=max_count, verbose=0)
    for sample in samples:
        sink.write(sample)
    num_shards = sink.shard
    sink.close()
    (folder / split / "nshards.txt").write_text(f"{num_shards}\n")
    return num_shards


def make_wds(root: Path, kind: str = "classification", *, sizes: dict[str, int] | None = None,
             image_format: str = "webp", max_count: int = 3) -> OwnData:
    """CLIP_benchmark's WebDataset layout under ``root`` (classification ``.cls`` or retrieval ``.txt``)."""
    sizes = sizes or {"test": 7}
    info = OwnData(root)
    n = 0
    for split, count in sizes.items():
        samples = []
        for index in range(count):
            key = "s%07d" % index
            sample: dict[str, Any] = {"__key__": key, image_format: image_bytes(n, image_format)}
            n += 1
            row_id = f"{split}/{key}"
            if kind == "retrieval":
                caps = [f"caption {k} of image {index} in {split}" for k in range(2 + index % 2)]
                sample["txt"] = "\n".join(caps)
                info.captions[row_id] = caps
                info.images.append((split, row_id, -1))
            else:
                sample["cls"] = index % len(WDS_CLASSES)
                info.images.append((split, row_id, index % len(WDS_CLASSES)))
            info.files[row_id] = root / split / f"{index // max_count}.tar"
            samples.append(sample)
        write_shards(root, split, samples, max_count)
    if kind == "retrieval":
        (root / "dataset_type.txt").write_text("retrieval\n")
    else:
        info.classnames = list(WDS_CLASSES)
        (root / "classnames.txt").write_text("\n".join(WDS_CLASSES) + "\n")
        (root / "zeroshot_classification_templates.txt").write_text("\n".join(WDS_TEMPLATES) + "\n")
    return info


def rewrite_member(tar: Path, name: str, data: bytes) -> None:
    """Replace member ``name`` of ``tar`` with ``data`` (a corrupt image or caption inside a shard)."""
    import tarfile

    with tarfile.open(tar) as src:
        members = [(m, src.extractfile(m).read()) for m in src.getmembers()]
    with tarfile.open(tar, "w") as out:
        for info, content in members:
            content = data if info.name == name else content
            info.size = len(content)
            out.addfile(info, io.BytesIO(content))
