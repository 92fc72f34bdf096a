"""Your own data end to end: an image folder, a caption CSV and WebDataset shards, each added to the
reduced default configuration by ``crossgap datasets init --append params.yaml`` alone, run through
``snakemake`` and found in ``summary.json`` and ``table.md``.

The run starts from the reduced default's finished run (the tiny model trained once, shared with
the other workflow tests); the three datasets are appended and one ``snakemake`` run does only
their jobs. Its wall time is printed (``pytest -s``).
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import yaml
from workflow_helpers import BIN, clone_run, job_stats, read_summary, run

from fixtures_own_data import make_caption_table, make_imagefolder, make_wds

pytestmark = pytest.mark.slow


def _snakemake(root: Path, *args: str, timeout: float = 1800) -> float:
    start = time.perf_counter()
    run([str(BIN / "snakemake"), "--cores", "2", *args], cwd=root, timeout=timeout)
    return time.perf_counter() - start


def _init(root: Path, *args: str) -> None:
    run([str(BIN / "crossgap"), "datasets", "init", *args, "--append", "params.yaml"], cwd=root, timeout=300)


def test_own_data_through_the_workflow(local_run, tmp_path):
    root = clone_run(local_run, tmp_path / "repo")
    data = tmp_path / "own"
    make_imagefolder(data / "pets", {"train": {"cat": 3, "dog": 3, "bird": 2}, "test": {"cat": 2, "dog": 2, "bird": 2}})
    make_caption_table(data / "shop", "csv")
    make_wds(data / "bench", sizes={"test": 7}, max_count=3)
    steps = [
        ("pets", ["imagefolder", str(data / "pets"), "--name", "pets"]),
        ("shop", ["captions", str(data / "shop/captions.csv"), "--name", "shop"]),
        ("bench", ["wds", str(data / "bench"), "--name", "bench"]),
    ]
    for name, args in steps:
        _init(root, *args)
        entry = yaml.safe_load((root / "params.yaml").read_text())["datasets"][name]
        assert set(entry) == {"adapter", "dataroot", "options", "sizes"}
    # the new datasets' jobs only: nothing of the default's data, model or features again
    planned = job_stats(run([str(BIN / "snakemake"), "-n"], cwd=root).stdout)
    assert planned["prepare_manifest"] == 3 and "pretrain_tiny" not in planned and "generate_synthetic" not in planned
    print(f"own data (3 datasets, {sum(planned.values())} jobs): {_snakemake(root):.1f} s wall")

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
                                              "pca_text", "pca_text_dataset"}}
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
