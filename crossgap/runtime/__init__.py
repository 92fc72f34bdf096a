"""Runtime helpers for workflow jobs (GPU slot allocation, per-job set-up; :mod:`crossgap.runtime.env`: the model a
job loads and what it records about where it ran)."""

from crossgap.runtime.gpu import GpuSlot, acquire_gpu_slot
from crossgap.runtime.job import job_setup

__all__ = ["GpuSlot", "acquire_gpu_slot", "job_setup"]
