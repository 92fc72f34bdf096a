"""The Snakemake workflow: lint, formatting, the paper grid's dry run, config validation, and the
reduced embedded default run end to end."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

from crossgap import plan
from crossgap.metrics.results import TASK_METHODS
from workflow_helpers import BIN, REPO, copy_repo, job_stats, read_summary, run, test_params


def expected_jobs(config: dict) -> dict[str, int]:
    """Job counts derived independently from the config and the adapters' protocols."""
    evaluation, shards = config.get("evaluation", {}), config["inversion"]["shards"]
    counts = {"prepare_manifest": len(config["datasets"]), "aggregate": 1, "plots": 1, "default": 1}

    def add(rule, n):
        if n:
            counts[rule] = counts.get(rule, 0) + n

    for d, cfg in config["datasets"].items():
        tasks = plan.tasks(cfg, evaluation)
        for m in config["models"]:
            add("extract_features", len(plan.feature_files(d, m, cfg, evaluation)))
            add("prompt_features", int("zero_shot" in tasks))
            add("oti_shard", shards * len(plan.oti_splits(cfg, evaluation)))
            add("gather_oti", len(plan.oti_splits(cfg, evaluation)))
            add("ovi_shard", shards * len(plan.ovi_sets(cfg, evaluation)))
            add("gather_ovi", len(plan.ovi_sets(cfg, evaluation)))
            for task in tasks:
                add(f"evaluate_{task}", len(TASK_METHODS[task]))
            add("modality_gap", int(plan.has_modality_gap(cfg, evaluation)))
    return counts


def test_lint_clean():
    proc = run([str(BIN / "snakemake"), "--lint"], cwd=REPO, timeout=300)
    assert "Congratulations, your workflow is in a good condition" in proc.stdout + proc.stderr


def test_snakefmt_clean():
    run([str(BIN / "snakefmt"), "--check", "Snakefile", "workflow"], cwd=REPO, timeout=120)


def test_paper_grid_dry_run_builds_the_full_dag_without_data(tmp_path):
    root = copy_repo(tmp_path)
    assert not (root / "data").exists()
    proc = run([str(BIN / "snakemake"), "-n", "--configfile", "params/paper.yaml"], cwd=root, timeout=600)
    stats = job_stats(proc.stdout)
    config = yaml.safe_load((REPO / "params/paper.yaml").read_text())
    assert len(config["models"]) == 7 and len(config["datasets"]) >= 31
    assert stats == expected_jobs(config)
    # the embedded default is not merged into the grid
    assert "pretrain_tiny" not in stats and "generate_synthetic" not in stats
    print("paper grid dry run:", stats)


def test_default_dry_run_counts(tmp_path):
    root = copy_repo(tmp_path)
    stats = job_stats(run([str(BIN / "snakemake"), "-n"], cwd=root, timeout=300).stdout)
    expected = expected_jobs(test_params()) | {"generate_synthetic": 1, "pretrain_tiny": 1}
    assert stats == expected


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda p: p["inversion"]["oti"].update(stepz=3), "stepz"),
        (lambda p: p["models"]["tiny"].update(backend="tensorflow"), "tensorflow"),
        (lambda p: p["evaluation"].update(tasks=["image_retrieval", "captioning"]), "captioning"),
    ],
)
def test_invalid_params_name_the_key(tmp_path, edit, message):
    params = test_params()
    edit(params)
    root = copy_repo(tmp_path, params)
    proc = run([str(BIN / "snakemake"), "-n"], cwd=root, timeout=300, check=False)
    assert proc.returncode != 0
    assert message in proc.stdout + proc.stderr


def current_tags(params: dict) -> dict[str, str]:
    """The inversion tags of the default model, computed here from the parameters."""
    inv = params["inversion"]
    common = {"batch_size": inv["batch_size"], "seed": inv["seed"]}
    ovi = dict(inv["ovi"], **common, num_pseudo_tokens=params["models"]["tiny"].get("ovi_tokens", 1))
    return {"oti": plan.inversion_tag(dict(inv["oti"], **common)), "ovi": plan.inversion_tag(ovi)}


def test_inversions_are_addressed_by_their_parameters(tmp_path):
    params = test_params()
    tags = current_tags(params)
    root = copy_repo(tmp_path, params)
    out = run([str(BIN / "snakemake"), "-n"], cwd=root, timeout=300).stdout
    assert f"data/inversion/synthetic/tiny/oti-{tags['oti']}/test.safetensors" in out
    assert f"data/results/synthetic/tiny/zero_shot/ovi-{tags['ovi']}.json" in out
    # another OTI parameter set gets another address; OVI's stays
    params["inversion"]["oti"]["steps"] += 1
    changed = current_tags(params)
    assert changed["oti"] != tags["oti"] and changed["ovi"] == tags["ovi"]
    # a file of another parameter set is never recomputed under the current parameters
    stale = f"data/inversion/synthetic/tiny/oti-{changed['oti']}/test.safetensors"
    proc = run([str(BIN / "snakemake"), "-n", stale], cwd=root, timeout=300, check=False)
    assert proc.returncode != 0
    assert f"oti-{changed['oti']} (synthetic/tiny) belongs to another parameter set" in proc.stdout + proc.stderr
    assert f"have tag {tags['oti']}" in proc.stdout + proc.stderr


@pytest.mark.slow
def test_default_run_end_to_end(local_run):
    summary = read_summary(local_run)
    node = summary["synthetic"]["tiny"]
    assert set(node) == {"image_retrieval", "text_retrieval", "zero_shot", "modality_gap"}
    assert set(node["image_retrieval"]) == {"image", "oti"} and set(node["text_retrieval"]) == {"text", "ovi"}
    assert set(node["zero_shot"]) == {"standard", "oti", "ovi"}
    for method in ("image", "oti"):
        assert {"mAP", "mAP_at_R", "R_precision", "R@1", "R@5", "R@10"} <= set(node["image_retrieval"][method])
    assert {"top1", "top5", "mean_per_class_recall"} <= set(node["zero_shot"]["standard"])
    assert 0 < node["modality_gap"]["native"]["gap_distance"] < 2
    table = (local_run / "data/metrics/table.md").read_text()
    assert table.count("| synthetic | tiny |") == 4
    for png in ("data/plots/comparison.png", "data/plots/inversion_losses.png"):
        assert (local_run / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # every job logged and benchmarked; the GPU jobs say where they ran
    logs = list((local_run / "logs").rglob("*.log"))
    assert len(logs) >= 27 and len(list((local_run / "logs/bench").rglob("*.tsv"))) >= 27
    assert "GPU slot: no GPU visible, running on the CPU" in (
        local_run / f"logs/inversion/synthetic/tiny/oti-{current_tags(test_params())['oti']}/test_0.log").read_text()
    # nothing left to do, and no temporary files left behind
    assert "Nothing to be done" in run([str(BIN / "snakemake"), "-n"], cwd=local_run).stdout
    assert not [p for p in (local_run / "data").rglob("*.tmp")]


@pytest.mark.slow
def test_shards_are_gathered_in_manifest_order(local_run):
    from crossgap.datasets.manifest import read_manifest, select
    from crossgap.storage import load_feature_set

    df, _ = read_manifest(local_run / "data/manifests/synthetic.parquet")
    oti_dir = local_run / f"data/inversion/synthetic/tiny/oti-{current_tags(test_params())['oti']}"
    gathered = load_feature_set(oti_dir / "test.safetensors")
    assert gathered.ids == select(df, "image", {"split": "test"})["id"].tolist()
    shards = [load_feature_set(p) for p in sorted((oti_dir / "test.shards").glob("*.safetensors"))]
    assert len(shards) == test_params()["inversion"]["shards"]
    assert sum(len(s.ids) for s in shards) == len(gathered.ids)
    assert gathered.extras["pseudo_tokens"].shape[:2] == (len(gathered.ids), 1)
    assert gathered.extras["losses"].shape == (len(gathered.ids), test_params()["inversion"]["oti"]["steps"])


@pytest.mark.slow
def test_html_report_includes_the_plots(local_run):
    run([str(BIN / "snakemake"), "--report", "report.zip"], cwd=local_run, timeout=600)
    import zipfile

    names = zipfile.ZipFile(local_run / "report.zip").namelist()
    assert any(n.endswith("comparison.png") for n in names)
    assert any(n.endswith("inversion_losses.png") for n in names)
    assert any(n.endswith("report.html") for n in names)
