"""roxford5k_r1m / rparis6k_r1m: the revisitop1m distractors in the gallery, in revisitop's layout.

Fixture layout as revisitop's download script leaves it (filipradenovic/revisitop python/download.py,
python/dataset.py): ``<dataroot>/revisitop1m/revisitop1m.txt`` (entries relative to ``jpg/``, with
their extension) and ``<dataroot>/revisitop1m/jpg/<subfolder>/<file>``, next to ``<dataroot>/roxford5k/``.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fixtures_datasets import write_image
from fixtures_image_benchmarks import make_revisited

from crossgap.cli import main
from crossgap.datasets import (
    DatasetIntegrityError,
    DatasetLayoutError,
    DatasetNotFoundError,
    check_dataset,
    get_adapter,
    list_datasets,
    prepare_manifest,
    query_gallery,
    read_manifest,
    revisited_ground_truth,
)

ENTRIES = ["1/0a1b2c3d4e5f.jpg", "1/11aa22bb33cc.jpg", "2/7f8e9d0c1b2a"]  # the last without extension
FILES = ["1/0a1b2c3d4e5f.jpg", "1/11aa22bb33cc.jpg", "2/7f8e9d0c1b2a.jpg"]


def make_revisitop1m(dataroot: Path, entries: list[str] = ENTRIES) -> Path:
    folder = Path(dataroot) / "revisitop1m"
    for k, rel in enumerate(entries):
        name = rel if Path(rel).suffix else f"{rel}.jpg"
        write_image(folder / "jpg" / name, (30 * k, 90, 10), size=16)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "revisitop1m.txt").write_text("\n".join(entries) + "\n")
    return folder


@pytest.fixture
def root(tmp_path):
    make_revisited(tmp_path, "roxford5k")
    make_revisitop1m(tmp_path)
    return tmp_path


def test_registered_with_the_published_count():
    assert {"roxford5k_r1m", "rparis6k_r1m"} <= set(list_datasets())
    assert get_adapter("roxford5k_r1m").expected_sizes == {"query": 70, "database": 4993 + 1_001_001}
    assert get_adapter("rparis6k_r1m").expected_sizes == {"query": 70, "database": 6322 + 1_001_001}


def test_gallery_is_the_database_then_the_listed_distractors(root):
    plain_df, plain_meta = get_adapter("roxford5k").build(root)
    df, meta = get_adapter("roxford5k_r1m").build(root)
    assert meta["root"] == str(root.absolute())
    assert df["id"].tolist() == plain_df["id"].tolist() + [f"database/revisitop1m/{f}" for f in FILES]
    assert df["path"].tolist()[-3:] == [f"revisitop1m/jpg/{f}" for f in FILES]
    assert df["path"].tolist()[:8] == [f"roxford5k/jpg/{p}" for p in plain_df["path"]]
    assert all((Path(meta["root"]) / p).is_file() for p in df["path"])
    assert meta["gnd"] == plain_meta["gnd"]
    assert meta["distractors"] == {"list": str(root.absolute() / "revisitop1m" / "revisitop1m.txt"), "count": 3,
                                   "published": 1_001_001}
    query, gallery, same = query_gallery(df, meta, "image_retrieval")
    assert len(query) == 2 and len(gallery) == 6 + 3 and not same
    # the ground truth keeps its positions: the distractors come after the database
    assert revisited_ground_truth(meta, "image_retrieval", query, gallery) == revisited_ground_truth(
        plain_meta, "image_retrieval", *query_gallery(plain_df, plain_meta, "image_retrieval")[:2])


def test_check_shows_the_published_count(root, capsys):
    report = check_dataset(get_adapter("roxford5k_r1m"), root)
    assert report.ok and report.counts == {"query": 2, "database": 9}
    assert "roxford5k_r1m: revisitop1m/revisitop1m.txt lists 3 distractors, published 1,001,001" in report.warnings
    assert main(["datasets", "check", "roxford5k_r1m", "--dataroot", str(root)]) == 0
    out = capsys.readouterr().out
    assert "database: 9 images (expected 1005994)   <-- MISMATCH" in out
    assert "lists 3 distractors, published 1,001,001" in out
    assert main(["datasets", "check", "roxford5k_r1m", "--dataroot", str(root), "--strict"]) == 1


def test_without_the_distractors_the_variant_is_not_found(tmp_path):
    make_revisited(tmp_path, "roxford5k")
    with pytest.raises(DatasetNotFoundError) as err:
        get_adapter("roxford5k_r1m").build(tmp_path)
    message = str(err.value)
    assert str(tmp_path.absolute() / "revisitop1m" / "revisitop1m.txt") in message
    assert "|-- revisitop1m.txt" in message and "published: 1,001,001" in message
    report = check_dataset(get_adapter("roxford5k_r1m"), tmp_path)
    assert not report.found and report.format().startswith("[NOT FOUND] roxford5k_r1m")
    assert check_dataset(get_adapter("roxford5k"), tmp_path).ok  # the plain dataset is unaffected


def test_a_missing_distractor_is_a_missing_file(root, tmp_path):
    (root / "revisitop1m" / "jpg" / FILES[1]).unlink()
    with pytest.raises(DatasetIntegrityError) as err:
        get_adapter("roxford5k_r1m").build(root)
    assert [(p.kind, p.id) for p in err.value.problems] == [("missing", f"database/revisitop1m/{FILES[1]}")]
    out = tmp_path / "r1m.parquet"
    df, meta = prepare_manifest("roxford5k_r1m", root, out, skip_corrupt=True)
    assert meta["distractors"]["count"] == 2 and len(df) == 2 + 6 + 2
    assert read_manifest(out)[1]["distractors"]["count"] == 2


@pytest.mark.parametrize("lines, match", [
    (["1/a.jpg", "1/a.jpg"], "listed twice"),
    (["/abs/a.jpg"], "relative to jpg/"),
    (["../roxford5k/jpg/x.jpg"], "relative to jpg/"),
    ([""], "empty"),
])
def test_malformed_lists_name_the_file(root, lines, match):
    path = root / "revisitop1m" / "revisitop1m.txt"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(DatasetLayoutError, match=match) as err:
        get_adapter("roxford5k_r1m").build(root, check_images=False)
    assert str(path) in str(err.value)


def test_rparis_variant(tmp_path):
    make_revisited(tmp_path, "rparis6k")
    make_revisitop1m(tmp_path, ENTRIES[:1])
    df, meta = get_adapter("rparis6k_r1m").build(tmp_path)
    assert df["id"].tolist()[-1] == f"database/revisitop1m/{FILES[0]}"
    assert df["path"].tolist()[0].startswith("rparis6k/jpg/paris_defense_q")
    assert json.dumps(meta["distractors"]).count("1001001") == 1
