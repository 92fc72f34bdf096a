"""profiles/slurm on a real (single-node) SLURM cluster: the reduced default configuration runs
through sbatch and gives the same metrics as the local run.

The run starts from the local run's data, tiny model and image/text features (the slow part of
the DAG on this CPU machine, already shared by the other workflow tests) with every inversion,
result and report removed, and two feature files (the prompts and the class sentences) removed
too: SLURM then runs two feature jobs, every OTI/OVI shard, the 26 evaluations in group jobs and,
on the submit host, the gathers and the report; the summary must equal the local run's.

The cluster (tests/workflow/slurm_cluster.py) is CPU-only, so a small overlay profile, written
here and given as a second ``--profile`` (per key, the later profile wins), replaces the shipped
GPU requests (gpu=1 -> --gpus=1, which no node here could satisfy) by gpu=0, caps threads at the
node's 2 CPUs with the thread counts of the local run (so the metrics come out bit-identical),
makes the plugin poll ``squeue`` 1 s after a submission (no accounting database, so no sacct;
the default first check after 40 s would make this test minutes longer) and groups the
evaluation jobs into one SLURM job, as the README suggests for many small jobs.
``--workflow-profile none`` makes the run depend on the two profiles given only.
"""

from __future__ import annotations

import math
import re
import shutil
import time
from pathlib import Path

import pytest
import yaml

from slurm_cluster import SlurmCluster, SlurmUnavailable, ensure_slurm
from workflow_helpers import BIN, clone_run, job_stats, read_summary, run

pytestmark = pytest.mark.slow

GPU_RULES = ("extract_features", "preprojection_features", "prompt_features", "class_sentence_features",
             "spaced_text_features",
             "vocabulary_features",
             "classname_features", "oti_shard", "ovi_shard")
EVALUATION_RULES = {"evaluate_image_retrieval", "evaluate_text_retrieval", "evaluate_zero_shot", "modality_gap"}
#: what the SLURM run redoes (see the module docstring), counted by hand
REDONE = {"prompt_features": 1, "class_sentence_features": 1, "oti_shard": 2, "gather_oti": 1, "gather_oti_snapshots": 1,
          "ovi_shard": 3, "gather_ovi": 2, "gather_ovi_snapshots": 2, "evaluate_image_retrieval": 9,
          "evaluate_text_retrieval": 6, "evaluate_zero_shot": 10, "modality_gap": 1, "aggregate": 1, "plots": 1,
          "default": 1}
SUBMITTED_GPU_RULES = {"prompt_features", "class_sentence_features", "oti_shard", "ovi_shard"}
LOCAL_RULES = {"aggregate", "plots", "gather_oti", "gather_ovi", "gather_oti_snapshots",
               "gather_ovi_snapshots"}  # localrules in workflow/rules/report.smk

# Test-only settings on top of profiles/slurm (per key, a later --profile wins).
TEST_OVERLAY = {
    # The node has 2 CPUs: no job may ask for more.
    "cores": 2,
    "local-cores": 2,
    # Thread counts of the local run (--cores 2; the shipped profile raises them for cluster
    # nodes): the same torch thread counts keep the results bit-identical.
    "set-threads": {"extract_features": 2, "oti_shard": 1, "ovi_shard": 1, "pretrain_tiny": 2,
                    "evaluate_image_retrieval": 1, "evaluate_text_retrieval": 1},
    # No GPU on this cluster: drop the per-rule GPU requests the shipped profile makes.
    "set-resources": {rule: {"gpu": 0} for rule in GPU_RULES},
    "latency-wait": 5,  # one local file system
    "restart-times": 0,
    "keep-going": False,
    # No slurmdbd here: sacct fails, squeue answers (MinJobAge=3600 in the cluster's config).
    "slurm-status-command": "squeue",
    "slurm-init-seconds-before-status-checks": 1,
    # Keep the SLURM log of every job: its directory names the rule a SLURM job id belongs to.
    "slurm-keep-successful-logs": True,
    # The README's advice for many small jobs: the 8 evaluation jobs of the reduced default
    # (independent of one another) go to SLURM as one group job.
    "groups": {rule: "evaluation" for rule in sorted(EVALUATION_RULES)},
    "group-components": {"evaluation": 8},
}


@pytest.fixture(scope="session")
def slurm_cluster(tmp_path_factory, request) -> SlurmCluster:
    """A running one-node SLURM cluster (installed with apt-get when missing), stopped afterwards."""
    try:
        import snakemake_executor_plugin_slurm  # noqa: F401
    except ImportError:  # a pinned dependency (pyproject.toml): missing means a broken install
        pytest.fail("snakemake-executor-plugin-slurm is not installed (pinned in pyproject.toml)")
    try:
        ensure_slurm()
    except SlurmUnavailable as exc:
        pytest.skip(f"no SLURM cluster possible here: {exc}")
    cluster = SlurmCluster(tmp_path_factory.mktemp("slurm"))
    request.addfinalizer(cluster.stop)  # also when start() or the test fails
    started = time.monotonic()
    cluster.start()
    print(f"SLURM cluster up in {time.monotonic() - started:.1f} s, pids {cluster.pids}")
    return cluster


def assert_close(actual, expected, path="summary", rel=1e-9, abs_=1e-12):
    """Recursive equality; floats to a tight tolerance (see test docstring)."""
    if isinstance(expected, dict):
        assert isinstance(actual, dict) and actual.keys() == expected.keys(), path
        for key in expected:
            assert_close(actual[key], expected[key], f"{path}.{key}", rel, abs_)
    elif isinstance(expected, list):
        assert isinstance(actual, list) and len(actual) == len(expected), path
        for i, (a, e) in enumerate(zip(actual, expected)):
            assert_close(a, e, f"{path}[{i}]", rel, abs_)
    elif isinstance(expected, float) and not isinstance(expected, bool):
        assert isinstance(actual, (int, float)), path
        assert math.isclose(actual, expected, rel_tol=rel, abs_tol=abs_) or (
            math.isnan(actual) and math.isnan(expected)), f"{path}: {actual!r} != {expected!r}"
    else:
        assert actual == expected, f"{path}: {actual!r} != {expected!r}"


def slurm_jobs_by_log_dir(root: Path) -> dict[str, str]:
    """{SLURM job id: top directory} of the plugin's log tree: .snakemake/slurm_logs/rule_<rule>/<wildcards>/<id>.log,
    or group_<group>_<rules>/<id>.log for a group job."""
    logs = root / ".snakemake/slurm_logs"
    return {log.stem: log.relative_to(logs).parts[0] for log in logs.rglob("*.log")}


def test_slurm_profile_runs_workflow_on_cluster(slurm_cluster, local_run, tmp_path):
    root = clone_run(local_run, tmp_path / "repo")
    for rel in ("logs", "data/inversion", "data/results", "data/metrics", "data/plots/losses"):
        shutil.rmtree(root / rel)
    for name in ("prompts", "class_sentences"):
        (root / f"data/features/synthetic/tiny/{name}.safetensors").unlink()
    assert job_stats(run([str(BIN / "snakemake"), "-n"], cwd=root).stdout) == REDONE
    overlay = tmp_path / "slurm-test" / "config.yaml"
    overlay.parent.mkdir()
    overlay.write_text(yaml.safe_dump(TEST_OVERLAY, sort_keys=False))

    started = time.monotonic()
    proc = run([str(BIN / "snakemake"), "--profile", "profiles/slurm", "--profile", str(overlay.parent),
                "--workflow-profile", "none"], cwd=root, timeout=900)
    wall = time.monotonic() - started
    output = proc.stdout + proc.stderr
    print(f"SLURM run: {wall:.1f} s wall")

    # ---- the jobs went through SLURM --------------------------------------------------------
    run_id = re.search(r"SLURM run ID: (\S+)", output).group(1)
    # Snakemake job id (a number, or a UUID for a group job) -> SLURM job id
    submitted = dict(re.findall(r"Job (\S+) has been submitted with SLURM jobid (\d+)", output))
    assert submitted, output[-3000:]
    completed = {r["JobId"]: r for r in slurm_cluster.jobcomp_records() if r.get("Name") == run_id}
    assert set(completed) == set(submitted.values()), "every submitted job is in the job completion log"
    assert {r["JobState"] for r in completed.values()} == {"COMPLETED"}

    by_dir = slurm_jobs_by_log_dir(root)  # SLURM job id -> rule_<rule> / group_<group>_<rules>
    assert set(by_dir) == set(completed)
    by_rule = {job: d.removeprefix("rule_") for job, d in by_dir.items() if d.startswith("rule_")}
    groups = [job for job, d in by_dir.items() if d.startswith("group_evaluation")]
    # 26 evaluation jobs (9 image retrieval, 6 text retrieval, 10 zero-shot, the gap) in bundles of 8: 8+8+8+2
    assert len(groups) == 4 and len(by_rule) == len(by_dir) - 4, by_dir
    # Top-level 'rule X:' lines are the single submitted jobs, indented ones the group's members; a
    # rule with a message: (the class sentences) prints its message instead of its rule block.
    assert "OVI zero-shot targets of synthetic/tiny" in output
    assert set(by_rule.values()) == set(re.findall(r"^rule (\w+):", output, re.M)) | {"class_sentence_features"}
    assert set(re.findall(r"^\s+rule (\w+):", output, re.M)) == EVALUATION_RULES
    assert SUBMITTED_GPU_RULES == {rule for rule in by_rule.values() if rule in GPU_RULES}
    local_rules = set(re.findall(r"^localrule (\w+):", output, re.M))
    assert LOCAL_RULES <= local_rules and not LOCAL_RULES & set(by_rule.values()), "localrules stay on the submit host"

    # ---- the GPU slot allocator stays out of the way inside the allocation --------------------
    gpu_logs = [p for p in (root / "logs/features").rglob("*.log")]
    gpu_logs += [p for p in (root / "logs/inversion").rglob("*.log") if not p.name.startswith("gather_")]
    assert len(gpu_logs) == sum(1 for rule in by_rule.values() if rule in GPU_RULES)
    for log in gpu_logs:
        text = log.read_text()
        match = re.search(r"GPU slot: not allocating \(inside SLURM job (\d+)\)", text)
        assert match, f"{log}: {text[-1500:]}"
        assert match.group(1) in completed
        assert by_rule[match.group(1)] in GPU_RULES
        local_text = (local_run / log.relative_to(root)).read_text()
        assert "GPU slot: no GPU visible, running on the CPU" in local_text  # the local run's path

    # ---- same results as the local run ------------------------------------------------------
    # Same code, data, seeds and torch thread counts (TEST_OVERLAY pins them to the local run's):
    # the metrics are bit-identical, not just close. assert_close first, for a readable first
    # difference should that ever change.
    slurm_metrics, local_metrics = read_summary(root), read_summary(local_run)
    assert_close(slurm_metrics, local_metrics)
    assert slurm_metrics == local_metrics
