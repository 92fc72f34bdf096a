"""Tests for the deterministic Synthetic dataset generator."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from crossgap.synthetic_generator import COLOURS, SHAPES, class_label, class_names, generate_synthetic

NUM_TRAIN, NUM_TEST = 40, 20


def _digest(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate_synthetic(tmp_path_factory.mktemp("a"), num_train=NUM_TRAIN, num_test=NUM_TEST, seed=3)


def test_same_seed_byte_identical(dataset: Path, tmp_path: Path) -> None:
    again = generate_synthetic(tmp_path, num_train=NUM_TRAIN, num_test=NUM_TEST, seed=3)
    assert _digest(again) == _digest(dataset)


def test_different_seed_differs(dataset: Path, tmp_path: Path) -> None:
    other = generate_synthetic(tmp_path, num_train=NUM_TRAIN, num_test=NUM_TEST, seed=4)
    assert _digest(other) != _digest(dataset)


def test_test_split_independent_of_num_train(dataset: Path, tmp_path: Path) -> None:
    other = generate_synthetic(tmp_path, num_train=5, num_test=NUM_TEST, seed=3)
    a = {k: v for k, v in _digest(dataset).items() if k.startswith("images/test/")}
    b = {k: v for k, v in _digest(other).items() if k.startswith("images/test/")}
    assert a == b and len(a) == NUM_TEST


def test_layout(dataset: Path) -> None:
    assert dataset.name == "synthetic"
    split = json.loads((dataset / "split_zhou_Synthetic.json").read_text())
    assert set(split) == {"train", "val", "test"}
    assert split["val"] == []
    assert len(split["train"]) == NUM_TRAIN and len(split["test"]) == NUM_TEST
    captions = json.loads((dataset / "captions.json").read_text())
    attributes = json.loads((dataset / "attributes.json").read_text())
    names = (dataset / "classnames.txt").read_text().splitlines()
    assert names == class_names() and len(names) == len(COLOURS) * len(SHAPES) == 30
    for part in ("train", "test"):
        for rel, label, classname in split[part]:
            assert rel.startswith(f"{part}/") and rel.endswith(".png")
            with Image.open(dataset / "images" / rel) as im:
                assert im.mode == "RGB" and im.size == (32, 32)
            assert isinstance(label, int) and names[label] == classname
            assert len(captions[rel]) == 3
            assert set(attributes[rel]) == {"shape", "colour", "size", "position", "background"}
    assert set(captions) == set(attributes) == {r for p in ("train", "test") for r, _, _ in split[p]}
    assert not [p for p in dataset.parent.iterdir() if p.name.startswith(".")]  # no temp dirs left


def test_labels_are_colour_times_shape(dataset: Path) -> None:
    split = json.loads((dataset / "split_zhou_Synthetic.json").read_text())
    attributes = json.loads((dataset / "attributes.json").read_text())
    for rel, label, classname in split["train"] + split["test"]:
        a = attributes[rel]
        assert label == class_label(a["colour"], a["shape"])
        assert classname == f"{a['colour']} {a['shape']}"


def test_captions_mention_class_attributes(dataset: Path) -> None:
    captions = json.loads((dataset / "captions.json").read_text())
    attributes = json.loads((dataset / "attributes.json").read_text())
    mentioned_nuisance = 0
    for rel, caps in captions.items():
        a = attributes[rel]
        for cap in caps:
            assert f"{a['colour']} {a['shape']}" in cap
            words = cap.rstrip(".").split()
            mentioned_nuisance += a["size"] in words or a["background"] in words
    total = sum(len(c) for c in captions.values())
    assert 0 < mentioned_nuisance < total  # a varying subset of nuisance attributes


def test_small_image_size_and_nonuniform_pixels(tmp_path: Path) -> None:
    root = generate_synthetic(tmp_path, num_train=3, num_test=0, image_size=16, captions_per_image=2, seed=0)
    split = json.loads((root / "split_zhou_Synthetic.json").read_text())
    assert split["test"] == []
    rel = split["train"][0][0]
    arr = np.asarray(Image.open(root / "images" / rel))
    assert arr.shape == (16, 16, 3) and arr.std() > 5
    assert len(json.loads((root / "captions.json").read_text())[rel]) == 2


def test_overwrite_false_raises(dataset: Path) -> None:
    with pytest.raises(FileExistsError):
        generate_synthetic(dataset.parent, num_train=1, num_test=1, overwrite=False)
