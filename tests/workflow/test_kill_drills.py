"""Kill drills: real ``snakemake`` process groups killed while an OVI shard runs, then finished.

What a user does after each kill is what the README says: SIGTERM (``scancel``, ``timeout``) and
SIGINT (Ctrl-C): run the same command again; SIGKILL of the whole group (a node crash): the lock
stays behind, so ``snakemake --unlock``, then the same command.  Every drill must end with the
``summary.json`` of an uninterrupted run, leave no unreadable file under a final name, and the
killed shard must resume from its last saved batch.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from workflow_helpers import BIN, clone_run, deep_merge, job_stats, read_summary, run, test_params, tool_env

pytestmark = pytest.mark.slow

#: the reduced default narrowed to text retrieval (native and OVI queries: the drills' jobs are the OVI
#: shards, their gather, two evaluations and the report), with an OVI long enough to be killed inside:
#: 24 query captions in shards of 12, batches of 3 (4 batches per shard), 300 steps
DRILL = {"inversion": {"batch_size": 3, "ovi": {"steps": 300, "snapshots": []}, "oti": {"snapshots": []}},
         "evaluation": {"tasks": ["text_retrieval"], "methods": []}}


@pytest.fixture(scope="module")
def prepared(local_run, tmp_path_factory) -> Path:
    """The reduced default's finished run with the drill's parameters: data, model and features
    done (the drill changes none of their params), the drill's OVI not started."""
    root = clone_run(local_run, tmp_path_factory.mktemp("drill_base") / "repo", deep_merge(test_params(), DRILL))
    planned = job_stats(run([str(BIN / "snakemake"), "-n", "features"], cwd=root, timeout=300).stdout)
    assert planned == {}, f"the drill's parameters must not touch the features: {planned}"
    return root


def clone(src: Path, dest: Path) -> Path:
    return clone_run(src, dest)


@pytest.fixture(scope="module")
def reference(prepared, tmp_path_factory) -> dict:
    root = clone(prepared, tmp_path_factory.mktemp("drill_ref") / "repo")
    run([str(BIN / "snakemake"), "--cores", "2"], cwd=root, timeout=1200)
    return read_summary(root)


def _default_sigint() -> None:
    """In the child: SIGINT as in a terminal. A shell starts background jobs with SIGINT ignored, and
    an ignored SIGINT is inherited: ``make test &`` would otherwise make the Ctrl-C drill a no-op."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def start(root: Path) -> subprocess.Popen:
    return subprocess.Popen([str(BIN / "snakemake"), "--cores", "2"], cwd=root, env=tool_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True,
                            preexec_fn=_default_sigint)


def wait_for_saved_batch(root: Path, proc: subprocess.Popen, timeout: float = 600) -> Path:
    """Block until an OVI query shard has saved a finished batch; return its resume file."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = list((root / "data/inversion").glob("*/*/ovi-*/queries.shards/*/*.resume.safetensors"))
        if found:
            return found[0]
        if proc.poll() is not None:
            raise AssertionError(f"snakemake ended before a batch was saved:\n{proc.stdout.read().decode()[-4000:]}")
        time.sleep(0.05)
    raise AssertionError("no resume file appeared")


def kill_group(proc: subprocess.Popen, sig: int) -> str:
    os.killpg(proc.pid, sig)
    out, _ = proc.communicate(timeout=300)
    return out.decode()


def assert_final_files_readable(root: Path) -> None:
    """Every file under a final name is whole: feature files open, JSON parses, no temp file remains."""
    from crossgap.storage import load_feature_set

    for path in (root / "data").rglob("*"):
        if not path.is_file() or path.name.endswith(".resume.safetensors"):
            continue
        assert not path.name.endswith(".tmp"), f"temporary file left behind: {path}"
        if path.suffix == ".safetensors":
            load_feature_set(path)
        elif path.suffix == ".json":
            json.loads(path.read_text())


def resumed_logs(root: Path) -> list[str]:
    return [line for log in (root / "logs/inversion").rglob("queries_*.log")
            for line in log.read_text().splitlines() if "resuming from batch" in line]


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_terminate_or_interrupt_then_the_same_command_finishes_identically(prepared, reference, tmp_path, sig):
    root = clone(prepared, tmp_path / "repo")
    proc = start(root)
    side = wait_for_saved_batch(root, proc)
    kill_group(proc, sig)
    assert proc.returncode != 0
    assert not (side.parents[2] / "queries.safetensors").exists(), "the killed run must not have finished"
    assert side.exists(), "the resume file must survive the failed job"
    assert_final_files_readable(root)
    run([str(BIN / "snakemake"), "--cores", "2"], cwd=root, timeout=1200)
    assert read_summary(root) == reference
    assert resumed_logs(root), "the rerun must resume the killed shard from its saved batches"
    assert not list((root / "data").rglob("*.resume.safetensors"))


def test_sigkill_of_the_group_needs_unlock_then_finishes_identically(prepared, reference, tmp_path):
    root = clone(prepared, tmp_path / "repo")
    proc = start(root)
    wait_for_saved_batch(root, proc)
    kill_group(proc, signal.SIGKILL)
    assert_final_files_readable(root)
    locked = run([str(BIN / "snakemake"), "--cores", "2"], cwd=root, timeout=300, check=False)
    assert locked.returncode != 0 and "cannot be locked" in locked.stdout + locked.stderr
    run([str(BIN / "snakemake"), "--unlock"], cwd=root, timeout=300)
    run([str(BIN / "snakemake"), "--cores", "2"], cwd=root, timeout=1200)
    assert read_summary(root) == reference
    lines = resumed_logs(root)
    assert lines and all("resuming from batch 2 of 4" in line or "resuming from batch 3 of 4" in line
                         or "resuming from batch 4 of 4" in line for line in lines), lines
