"""Per-job set-up for workflow scripts: logging into the rule's log, thread count, GPU slot."""

from __future__ import annotations

import logging
import os
import signal
import sys

from crossgap.runtime.gpu import GpuSlot, acquire_gpu_slot
from crossgap.utils import setup_logging

log = logging.getLogger(__name__)


#: cuBLAS workspace setting that makes its GEMMs deterministic (PyTorch's reproducibility notes; the
#: reference's value, miccunifi/Cross-the-Gap src/oti.py and src/ovi.py)
CUBLAS_WORKSPACE_CONFIG = ":4096:8"


def job_setup(
    log_file: str | None, threads: int, *, gpu: bool = False, deterministic: bool = False
) -> GpuSlot | None:
    """Log to ``log_file``, use ``threads`` CPU threads and, for GPU jobs, take a GPU slot first.

    The slot is taken before torch initialises CUDA; its choice is logged into the rule's log.
    ``deterministic`` (``inversion.deterministic``, read with :class:`crossgap.config.InversionRuntime`):
    :func:`set_deterministic` before anything touches CUDA.
    """
    setup_logging(log_file)
    _log_uncaught_exceptions()
    _exit_cleanly_on_sigterm()
    slot = acquire_gpu_slot() if gpu else None
    if deterministic:
        set_deterministic()
    import torch

    torch.set_num_threads(max(int(threads), 1))
    log.info("job: pid %d, %d threads, CUDA_VISIBLE_DEVICES=%s, cuda available=%s, deterministic=%s", os.getpid(),
             threads, os.environ.get("CUDA_VISIBLE_DEVICES"), torch.cuda.is_available(),
             torch.are_deterministic_algorithms_enabled())
    return slot


def set_deterministic() -> None:
    """``CUBLAS_WORKSPACE_CONFIG=:4096:8`` and ``torch.use_deterministic_algorithms(True)``.

    cuBLAS reads the variable when CUDA initialises, so this must run first: a process whose CUDA
    context already exists is refused with a RuntimeError (its GEMMs could not be made
    deterministic any more).  A value already set to one of the two documented deterministic
    workspace settings (``:4096:8``, ``:16:8``) is kept.  Operations without a deterministic
    implementation then raise instead of silently varying.
    """
    import torch

    if torch.cuda.is_initialized():
        raise RuntimeError("inversion.deterministic: CUDA is already initialised in this process; "
                           "set_deterministic() must run before anything touches the GPU")
    if os.environ.get("CUBLAS_WORKSPACE_CONFIG") not in (":4096:8", ":16:8"):
        os.environ["CUBLAS_WORKSPACE_CONFIG"] = CUBLAS_WORKSPACE_CONFIG
    torch.use_deterministic_algorithms(True)
    torch.backends.cudnn.benchmark = False
    log.info("deterministic algorithms on, CUBLAS_WORKSPACE_CONFIG=%s", os.environ["CUBLAS_WORKSPACE_CONFIG"])


def _log_uncaught_exceptions() -> None:
    """Send an uncaught exception's traceback to the rule's log too (Snakemake shows the log on failure)."""
    previous = sys.excepthook

    def hook(exc_type, exc, tb):
        logging.getLogger("crossgap.job").error("job failed", exc_info=(exc_type, exc, tb))
        previous(exc_type, exc, tb)

    sys.excepthook = hook


def _exit_cleanly_on_sigterm() -> None:
    """SIGTERM (``scancel``, ``timeout``, Snakemake stopping its jobs) becomes ``SystemExit(143)``.

    Python's default for SIGTERM ends the process at once; as an exception it unwinds, so
    temporary files (``crossgap.utils.atomic_path``) are removed and the log says where the job
    stopped.  Finished batches are already in the shard's resume file.
    """

    def handler(signum, frame):
        logging.getLogger("crossgap.job").warning("received signal %d: stopping", signum)
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, handler)
