"""DVC on top of Snakemake, in a temporary git + DVC repository holding the reduced default:
each stage's Snakemake target plans every file under the stage's outs (checked on a fresh tree by
dry runs), a first repro that adopts a finished ``snakemake`` run (the shared reduced run: the user's
``make run`` then ``dvc repro``) without recomputing, a no-op second repro, a parameter change that
reruns only what it affects, `dvc metrics diff`, and a `dvc checkout` of an earlier state that does
not recompute finished work."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

from workflow_helpers import BIN, clone_run, copy_repo, job_stats, read_summary, run

pytestmark = pytest.mark.slow

DVC = str(BIN / "dvc")
SNAKEMAKE = str(BIN / "snakemake")


def git(root: Path, *args: str) -> str:
    return run(["git", "-c", "user.name=crossgap-test", "-c", "user.email=test@crossgap", *args], cwd=root).stdout


def stamps(root: Path, pattern: str) -> dict[str, tuple[int, int]]:
    """(inode, mtime) of the files under data/ matching ``pattern``: equal stamps = not rewritten."""
    return {str(p.relative_to(root)): (p.stat().st_ino, p.stat().st_mtime_ns) for p in sorted(root.glob(pattern))}


def planned_rules(root: Path) -> set[str]:
    """Rules a ``snakemake -n`` would run (empty when there is nothing to be done)."""
    return set(job_stats(run([SNAKEMAKE, "-n"], cwd=root).stdout))


def planned_outputs(root: Path, *targets: str) -> set[str]:
    """Every output file of the jobs ``snakemake -n [targets]`` lists."""
    out = run([SNAKEMAKE, "-n", *targets], cwd=root).stdout
    return {path for line in re.findall(r"^\s*output: (.+)$", out, re.M) for path in line.split(", ")}


def stage_paths(stage: dict) -> list[str]:
    return [next(iter(o)) if isinstance(o, dict) else o
            for kind in ("outs", "metrics", "plots") for o in stage.get(kind, [])]


def test_each_stage_target_plans_every_file_under_its_outs(tmp_path):
    """No later stage writes into an earlier stage's outs (it would fail a fresh ``dvc repro``)."""
    root = copy_repo(tmp_path)
    stages = yaml.safe_load((root / "dvc.yaml").read_text())["stages"]
    assert list(stages) == ["prepare", "features", "invert", "evaluate"]
    everything = planned_outputs(root)
    for name, stage in stages.items():
        cmd = stage["cmd"].split()
        assert cmd[:3] == ["snakemake", "--cores", "all"], stage["cmd"]
        planned = planned_outputs(root, *cmd[3:])
        paths = stage_paths(stage)
        under = {f for f in everything if any(f == p or f.startswith(p.rstrip("/") + "/") for p in paths)}
        assert under, f"stage {name}: the DAG writes nothing under {paths}"
        assert under <= planned, f"stage {name}: written by a later stage: {sorted(under - planned)[:5]}"


@pytest.fixture(scope="module")
def repo(local_run, tmp_path_factory) -> Path:
    """A git repository of the finished reduced run (a user's ``make run``), not yet under DVC's control."""
    root = clone_run(local_run, tmp_path_factory.mktemp("dvc_repo") / "repo")
    git(root, "init", "-q", "-b", "main")
    git(root, "add", "-A")
    git(root, "commit", "-qm", "reduced default")
    return root


@pytest.fixture(scope="module")
def baseline(repo):
    """The first ``dvc repro`` (adopting the finished run), committed; its completed process."""
    proc = run([DVC, "repro"], cwd=repo, timeout=1500)
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "baseline results")
    return proc


@pytest.fixture(scope="module")
def more_oti_steps(repo, baseline):
    """After the baseline: +4 OTI steps in params.yaml, ``dvc repro``, not yet committed.

    Returns the repro's completed process and the (inode, mtime) stamps taken before it.
    """
    before = {
        "features": stamps(repo, "data/features/**/*.safetensors"),
        "models": stamps(repo, "data/models/**/*.pt"),
        "ovi": stamps(repo, "data/inversion/**/ovi-*/**/*.safetensors"),
        "oti": stamps(repo, "data/inversion/**/oti-*/**/*.safetensors"),
        "baseline": stamps(repo, "data/results/**/image_retrieval/image.json"),
    }
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["inversion"]["oti"]["steps"] += 4
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    proc = run([DVC, "repro"], cwd=repo, timeout=1200)
    return proc, before


def test_first_repro_adopts_the_finished_run_without_recomputing(repo, baseline):
    for stage in ("prepare", "features", "invert", "evaluate"):
        assert f"Running stage '{stage}'" in baseline.stdout
    # each stage's Snakemake run had nothing to do: no job of the finished run is redone
    assert (baseline.stdout + baseline.stderr).count("Nothing to be done") == 4, baseline.stdout[-3000:]
    lock = yaml.safe_load((repo / "dvc.lock").read_text())["stages"]
    assert set(lock) == {"prepare", "features", "invert", "evaluate"}
    assert {o["path"] for o in lock["features"]["outs"]} == {"data/features"}
    summary = read_summary(repo)
    assert set(summary["synthetic"]["tiny"]) >= {"image_retrieval", "text_retrieval", "zero_shot"}


def test_second_repro_runs_nothing(repo, baseline):
    proc = run([DVC, "repro"], cwd=repo, timeout=600)
    assert "Running stage" not in proc.stdout
    assert "Data and pipelines are up to date" in proc.stdout or proc.stdout.count("didn't change") == 4
    assert planned_rules(repo) == set(), "snakemake -n has work to do after dvc repro"


def test_changing_oti_steps_reruns_only_oti_and_its_evaluations(repo, more_oti_steps):
    proc, before = more_oti_steps
    assert before["features"] and before["oti"]
    out = proc.stdout + proc.stderr
    assert "Running stage 'invert'" in proc.stdout and "Running stage 'evaluate'" in proc.stdout
    assert "Running stage 'features'" not in proc.stdout and "Running stage 'prepare'" not in proc.stdout
    # Snakemake's job list: OTI and its evaluations, nothing upstream
    assert "rule oti_shard" in out and "rule evaluate_image_retrieval" in out
    for rule in ("extract_features", "prompt_features", "pretrain_tiny", "ovi_shard", "generate_synthetic"):
        assert f"rule {rule}:" not in out, rule
    assert stamps(repo, "data/features/**/*.safetensors") == before["features"]
    assert stamps(repo, "data/models/**/*.pt") == before["models"]
    assert stamps(repo, "data/inversion/**/ovi-*/**/*.safetensors") == before["ovi"]
    assert stamps(repo, "data/results/**/image_retrieval/image.json") == before["baseline"]
    # the new parameter set is written beside the old one, which stays untouched
    after = stamps(repo, "data/inversion/**/oti-*/**/*.safetensors")
    assert set(before["oti"]) < set(after)
    assert {path: after[path] for path in before["oti"]} == before["oti"]

    diff = json.loads(run([DVC, "metrics", "diff", "--json"], cwd=repo).stdout)["data/metrics/summary.json"]
    changed = set(diff)
    assert any(key.startswith("synthetic.tiny.image_retrieval.oti.") for key in changed), changed
    assert not any(key.startswith("synthetic.tiny.image_retrieval.image.") for key in changed), changed
    assert not any(key.startswith("synthetic.tiny.text_retrieval.") for key in changed), changed


def test_checkout_of_an_earlier_state_does_not_recompute_finished_work(repo, more_oti_steps):
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "more OTI steps")
    features = stamps(repo, "data/features/**/*.safetensors")
    git(repo, "checkout", "-q", "HEAD~1")
    run([DVC, "checkout", "--force"], cwd=repo, timeout=600)
    # the restored files are hard links to DVC's cache: their own mtimes, in their original order
    assert read_summary(repo)["synthetic"]["tiny"]["image_retrieval"]["oti"]
    assert stamps(repo, "data/features/**/*.safetensors") == features
    proc = run([DVC, "repro"], cwd=repo, timeout=600)
    assert "Running stage" not in proc.stdout
    # Inversions and their results are addressed by their parameters' tag, so Snakemake's parameter
    # provenance of the restored files is their own (the newer run wrote other paths). Only the
    # cheap local aggregation, whose list of inputs changed back, may be proposed again.
    planned = planned_rules(repo)
    assert planned <= {"aggregate", "plots", "default"}, planned


def test_dvc_plots_show_renders_every_declared_plot(repo, baseline):
    """Every plot ``dvc.yaml`` declares renders (the loss plots used to fail with 'file type error')."""
    declared = yaml.safe_load((repo / "dvc.yaml").read_text())
    files = [next(iter(p)) if isinstance(p, dict) else p for p in declared["stages"]["evaluate"]["plots"]]
    assert files == ["data/plots/comparison.csv", "data/plots/steps.csv", "data/plots/inversion_losses.csv",
                     "data/plots/pretrain_losses.csv"]
    proc = run([DVC, "plots", "show", "-o", "dvc_plots"], cwd=repo, timeout=300)
    assert "file type error" not in proc.stdout + proc.stderr
    html = (repo / "dvc_plots/index.html").read_text()
    charts = re.findall(r'vegaEmbed\(\s*["\']#', html) or re.findall(r"<div id=\"[^\"]+\"></div>", html)
    assert len(charts) == 4, html[:2000]
    for name in files:
        assert name in html, name
