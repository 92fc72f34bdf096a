"""GPU slot allocator: distinct slots for concurrent processes, freed when a holder dies, hands-off when pinned."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from crossgap.runtime.gpu import acquire_gpu_slot, pinned_by_scheduler

HOLDER = """
import os, sys, time
from crossgap.runtime.gpu import acquire_gpu_slot
slot = acquire_gpu_slot(timeout=float(sys.argv[2]), poll=0.05)
print(slot.index if slot else "none", os.environ.get("CUDA_VISIBLE_DEVICES"), flush=True)
time.sleep(float(sys.argv[1]))
"""


def spawn(lock_dir: Path, num: int, hold: float, timeout: float = 5.0) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if k not in ("CUDA_VISIBLE_DEVICES", "SLURM_JOB_ID")}
    env.update(CROSSGAP_NUM_GPUS=str(num), CROSSGAP_GPU_LOCK_DIR=str(lock_dir))
    return subprocess.Popen([sys.executable, "-c", HOLDER, str(hold), str(timeout)], env=env,
                            stdout=subprocess.PIPE, text=True)


def first_line(proc: subprocess.Popen) -> list[str]:
    return proc.stdout.readline().split()


def test_concurrent_processes_get_distinct_slots(tmp_path):
    procs = [spawn(tmp_path, 3, hold=3.0) for _ in range(3)]
    try:
        got = [first_line(p) for p in procs]
    finally:
        for p in procs:
            p.kill()
            p.wait()
    assert sorted(int(index) for index, _ in got) == [0, 1, 2]
    assert all(index == visible for index, visible in got)


def test_a_killed_holder_frees_its_slot(tmp_path):
    holder = spawn(tmp_path, 1, hold=60.0)
    assert first_line(holder) == ["0", "0"]
    waiter = spawn(tmp_path, 1, hold=0.0, timeout=30.0)
    time.sleep(1.0)
    assert waiter.poll() is None  # still waiting: the only slot is held
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    try:
        assert first_line(waiter) == ["0", "0"]
    finally:
        waiter.kill()
        waiter.wait()


def test_no_free_slot_times_out(tmp_path):
    holder = spawn(tmp_path, 1, hold=30.0)
    try:
        assert first_line(holder)[0] == "0"
        waiter = spawn(tmp_path, 1, hold=0.0, timeout=0.5)
        assert waiter.wait(timeout=20) != 0
    finally:
        holder.kill()
        holder.wait()


def test_hands_off_when_pinned(monkeypatch, tmp_path):
    monkeypatch.setenv("CROSSGAP_GPU_LOCK_DIR", str(tmp_path))
    monkeypatch.setenv("SLURM_JOB_ID", "42")
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    assert "SLURM" in pinned_by_scheduler()
    assert acquire_gpu_slot(num_slots=4) is None
    assert "CUDA_VISIBLE_DEVICES" not in os.environ
    monkeypatch.delenv("SLURM_JOB_ID")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3")
    assert acquire_gpu_slot(num_slots=4) is None
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "3"
    assert not list(tmp_path.iterdir())


def test_no_gpu_means_cpu(monkeypatch, tmp_path):
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.delenv("SLURM_JOB_ID", raising=False)
    monkeypatch.setenv("CROSSGAP_NUM_GPUS", "0")
    assert acquire_gpu_slot(lock_dir=tmp_path) is None
    monkeypatch.setenv("CROSSGAP_NUM_GPUS", "two")
    with pytest.raises(ValueError, match="CROSSGAP_NUM_GPUS"):
        acquire_gpu_slot(lock_dir=tmp_path)
