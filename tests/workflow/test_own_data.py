"""Your own data end to end: an image folder, a caption CSV and WebDataset shards, each added to the
reduced default configuration by ``crossgap datasets init --append params.yaml`` alone, run through
``snakemake`` and found in ``summary.json`` and ``table.md``.

The reduced default runs first (the tiny model is trained once); then each dataset is appended and
the workflow re-run, so each run does only that dataset's jobs. The wall time of each run is
printed (``pytest -s``) and written to ``own_data_times.json`` in the test's temporary folder.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import pytest
import yaml
from workflow_helpers import BIN, copy_repo, read_summary, run

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from fixtures_own_data import make_caption_table, make_imagefolder, make_wds  # noqa: E402

pytestmark = pytest.mark.slow


def _snakemake(root: Path, *args: str, timeout: float = 1800) -> float:
    start = time.perf_counter()
    run([str(BIN / "snakemake"), "--cores", "2", *args], cwd=root, timeout=timeout)
    return time.perf_counter() - start


def _init(root: Path, *args: str) -> None:
    run([str(BIN / "crossgap"), "datasets", "init", *args, "--append", "params.yaml"], cwd=root, timeout=300)


def test_own_data_through_the_workflow(tmp_path):
    root = copy_repo(tmp_path / "repo")
    data = tmp_path / "own"
    make_imagefolder(data / "pets", {"train": {"cat": 3, "dog": 3, "bird": 2}, "test": {"cat": 2, "dog": 2, "bird": 2}})
    make_caption_table(data / "shop", "csv")
    make_wds(data / "bench", sizes={"test": 7}, max_count=3)
    times = {"default": _snakemake(root)}
    steps = [
        ("pets", ["imagefolder", str(data / "pets"), "--name", "pets"]),
        ("shop", ["captions", str(data / "shop/captions.csv"), "--name", "shop"]),
        ("bench", ["wds", str(data / "bench"), "--name", "bench"]),
    ]
    for name, args in steps:
        _init(root, *args)
        entry = yaml.safe_load((root / "params.yaml").read_text())["datasets"][name]
        assert set(entry) == {"adapter", "dataroot", "options", "sizes"}
        times[name] = _snakemake(root)
    (tmp_path / "own_data_times.json").write_text(json.dumps(times, indent=2))
    print("wall time of each reduced run (s):", json.dumps({k: round(v, 1) for k, v in times.items()}))

    summary = read_summary(root)
    table = (root / "data/metrics/table.md").read_text()
    assert {"synthetic", "pets", "shop", "bench"} <= set(summary)  # keyed by the params name, not the adapter
    assert not {"imagefolder", "captions", "wds"} & set(summary)
    for name, tasks in (("pets", ("image_retrieval", "zero_shot")), ("bench", ("image_retrieval", "zero_shot")),
                        ("shop", ("image_retrieval", "text_retrieval", "zero_shot"))):
        assert set(tasks) <= set(summary[name]["tiny"]), (name, summary[name]["tiny"].keys())
        for task in tasks:
            assert f"| {name} | tiny | {task} |" in table, (name, task)
    # every task the protocols promise has a result for the native and the inverted methods
    results = root / "data/results"
    assert {p.name for p in (results / "pets/tiny").iterdir()} >= {"image_retrieval", "zero_shot"}
    assert {p.name for p in (results / "shop/tiny").iterdir()} >= {"image_retrieval", "text_retrieval", "zero_shot",
                                                                 "modality_gap.json"}
    assert {p.name for p in (results / "bench/tiny").iterdir()} >= {"image_retrieval", "zero_shot"}
    # native, inverted, its snapshots (OTI at 2 and 4, OVI at 4) and the training-free methods the data allows
    expected = {"shop/tiny/text_retrieval": {"text", "ovi", "ovi@4", "gap_shift", "centered", "isoclip"},
                "pets/tiny/image_retrieval": {"image", "oti", "oti@2", "oti@4", "gap_shift", "centered", "isoclip",
                                              "pca_text"}}
    for task_dir, methods in expected.items():
        stems = {p.stem.split("-")[0] for p in (results / task_dir).glob("*.json")}
        assert stems == methods, (task_dir, stems)
    # nothing is left to do, and the manifests point where expected
    dry = run([str(BIN / "snakemake"), "-n", "--cores", "2"], cwd=root)
    assert "Nothing to be done" in dry.stdout + dry.stderr
    manifest = root / "data/manifests/bench.parquet"
    from crossgap.datasets import read_manifest

    df, meta = read_manifest(manifest)
    assert df["path"].iloc[0] == "test/0.tar#s0000000.webp" and meta["root"] == str(data / "bench")
