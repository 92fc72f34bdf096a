"""GPU slots for jobs on one machine: which GPU a job uses, chosen before CUDA initialises.

``snakemake --resources gpu=N`` caps how many GPU jobs run at once but never says which device
each should use.  :func:`acquire_gpu_slot` takes a non-blocking ``fcntl.flock`` on one of
``gpu0.lock … gpu{N-1}.lock`` in a node-local directory, keeps the file open for the life of
the process (the kernel releases the lock when the process ends, even on SIGKILL) and sets
``CUDA_VISIBLE_DEVICES`` to the slot's device.

It does nothing when the job is already pinned: inside a SLURM allocation (``SLURM_JOB_ID``
set), or when ``CUDA_VISIBLE_DEVICES`` already names at most one device.

Environment:
    ``CROSSGAP_NUM_GPUS``: number of slots (default: the devices NVML reports; 0 → CPU).
    ``CROSSGAP_GPU_LOCK_DIR``: lock directory (default ``$TMPDIR/crossgap-gpu-slots-<uid>``);
    keep it node-local: ``flock`` is not reliable on NFS.
"""

from __future__ import annotations

import fcntl
import logging
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO

log = logging.getLogger(__name__)

_HELD: list[IO] = []  # open lock files: kept referenced for the life of the process


@dataclass(frozen=True)
class GpuSlot:
    """The device a job was given: ``index`` into the machine's GPUs and the lock file held."""

    index: int
    lock_path: Path


def default_lock_dir() -> Path:
    return Path(os.environ.get("CROSSGAP_GPU_LOCK_DIR")
                or Path(tempfile.gettempdir()) / f"crossgap-gpu-slots-{os.getuid()}")


def visible_gpu_count() -> int:
    """Number of GPU slots: ``CROSSGAP_NUM_GPUS`` or the device count (NVML; does not initialise CUDA)."""
    env = os.environ.get("CROSSGAP_NUM_GPUS")
    if env is not None:
        try:
            return max(int(env), 0)
        except ValueError as exc:
            raise ValueError(f"CROSSGAP_NUM_GPUS must be an integer, got {env!r}") from exc
    try:
        import torch

        return torch.cuda.device_count()
    except Exception:  # pragma: no cover - no torch/CUDA at all
        return 0


def pinned_by_scheduler() -> str | None:
    """Why the job is already pinned to a device (SLURM, or a single visible device), else None."""
    if os.environ.get("SLURM_JOB_ID"):
        return f"inside SLURM job {os.environ['SLURM_JOB_ID']}"
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None and len([d for d in visible.split(",") if d.strip()]) <= 1:
        return f"CUDA_VISIBLE_DEVICES={visible!r} already set"
    return None


def acquire_gpu_slot(
    num_slots: int | None = None,
    lock_dir: str | os.PathLike | None = None,
    *,
    timeout: float = 600.0,
    poll: float = 0.5,
) -> GpuSlot | None:
    """Take a free GPU slot and set ``CUDA_VISIBLE_DEVICES``; None when pinned already or no GPU.

    Call it before anything initialises CUDA.  Waits up to ``timeout`` seconds for a slot
    (e.g. a crashed job of another user still holding one) and then raises ``TimeoutError``.
    """
    reason = pinned_by_scheduler()
    if reason is not None:
        log.info("GPU slot: not allocating (%s)", reason)
        return None
    num_slots = visible_gpu_count() if num_slots is None else num_slots
    if num_slots <= 0:
        log.info("GPU slot: no GPU visible, running on the CPU")
        return None
    directory = Path(lock_dir) if lock_dir is not None else default_lock_dir()
    directory.mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + timeout
    while True:
        for index in range(num_slots):
            path = directory / f"gpu{index}.lock"
            handle = open(path, "a+")
            try:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                handle.close()
                continue
            handle.seek(0)
            handle.truncate()
            handle.write(f"{os.getpid()}\n")
            handle.flush()
            _HELD.append(handle)
            os.environ["CUDA_VISIBLE_DEVICES"] = str(index)
            log.info("GPU slot: took gpu%d (lock %s), CUDA_VISIBLE_DEVICES=%d", index, path, index)
            return GpuSlot(index, path)
        if time.monotonic() > deadline:
            raise TimeoutError(f"no free GPU slot among {num_slots} in {directory} after {timeout:.0f} s")
        time.sleep(poll)
