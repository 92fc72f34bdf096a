"""Fixtures for workflow tests: a copy of the repository with the reduced test configuration.

The copy holds the files git would commit (tracked + untracked-not-ignored), so tests see the
working tree as a fresh clone would. ``params.yaml`` is replaced by the default configuration
deep-merged with ``tests/workflow/params.test.yaml`` (fewer images, epochs and steps), so that
Snakemake (configfile) and DVC (params) both read the reduced values.
"""

from __future__ import annotations

import json
import re
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
TEST_PARAMS = Path(__file__).with_name("params.test.yaml")


def deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in override.items():
        out[key] = deep_merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def test_params() -> dict[str, Any]:
    return deep_merge(yaml.safe_load((REPO / "params.yaml").read_text()), yaml.safe_load(TEST_PARAMS.read_text()))

test_params.__test__ = False  # a helper, not a test (it is imported into test modules)


def tool_env() -> dict[str, str]:
    """Environment with this interpreter's tools (snakemake, dvc) first on PATH."""
    env = dict(os.environ)
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    env.pop("CUDA_VISIBLE_DEVICES", None)
    env.setdefault("CROSSGAP_NUM_GPUS", "0")
    return env


def run(cmd: list[str], cwd: Path, timeout: float = 900, check: bool = True) -> subprocess.CompletedProcess:
    """Run ``cmd`` in ``cwd`` with a timeout; on failure show its output in the assertion."""
    proc = subprocess.run(cmd, cwd=cwd, env=tool_env(), capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout[-6000:]}\n{proc.stderr[-6000:]}")
    return proc


#: what running the pipeline writes into a working tree (``make run``, ``dvc repro``, ``--report``):
#: never copied, tracked or not, so the tests see the tree as a fresh clone would whatever the
#: user has run in it
RUN_OUTPUTS = ("data/", "logs/", ".snakemake/", "dvc_plots/", "report.zip", "report.html", "results/", ".dvc/cache/",
               ".dvc/tmp/")


def committable_files(repo: Path = REPO) -> list[str]:
    """Tracked and untracked-not-ignored files of ``repo``, less the pipeline's run outputs."""
    listed = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"], cwd=repo,
                            capture_output=True, text=True, check=True).stdout.split("\0")
    return [rel for rel in listed if rel and not rel.startswith(RUN_OUTPUTS)]


def copy_repo(dest: Path, params: dict[str, Any] | None = None) -> Path:
    """Copy the repository's source files to ``dest`` and write the reduced ``params.yaml``."""
    for rel in committable_files():
        src = REPO / rel
        if src.is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)
    (dest / "params.yaml").write_text(yaml.safe_dump(params or test_params(), sort_keys=False))
    return dest


def job_stats(output: str) -> dict[str, int]:
    """Snakemake's 'Job stats' table of a dry run as {rule: count}."""
    if "Job stats:" not in output:
        return {}
    block = output.split("Job stats:", 1)[1]
    stats = {}
    for line in block.splitlines()[3:]:
        match = re.fullmatch(r"(\w+)\s+(\d+)", line.strip())
        if not match:
            break
        stats[match.group(1)] = int(match.group(2))
    total = stats.pop("total")
    assert total == sum(stats.values())
    return stats


def read_summary(root: Path) -> dict[str, Any]:
    return json.loads((root / "data/metrics/summary.json").read_text())


def clone_run(src: Path, dest: Path, params: dict[str, Any] | None = None) -> Path:
    """A copy of a finished run (sources, outputs, Snakemake's metadata) at ``dest``; ``params``
    replaces its ``params.yaml``.  ``copy2`` keeps the mtimes, so finished jobs stay finished."""
    shutil.copytree(src, dest, symlinks=True)
    if params is not None:
        (dest / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    return dest


@pytest.fixture(scope="session")
def local_run(tmp_path_factory) -> Path:
    """The reduced default configuration run end to end by ``snakemake --cores 2`` (shared by tests)."""
    root = copy_repo(tmp_path_factory.mktemp("local_run"))
    run([str(BIN / "snakemake"), "--cores", "2"], cwd=root, timeout=1500)
    return root
