"""Resume files: the finished batches of an inversion shard, saved beside it while it runs.

A shard of a few thousand targets is hours of GPU time; a kill (``scancel``, a wall-time limit,
Ctrl-C, a lost node) must not cost more than the batch in progress.  While a shard runs,
:class:`ShardResume` saves the pseudo tokens and losses of its finished batches every
``resume_every`` batches to ``<shard>.resume.safetensors`` (atomically: temporary name, then
rename).  The next run of the same shard reads it back and continues at the first unfinished
batch; the file is removed once the shard's output is written.

The file is deliberately *not* a Snakemake output (Snakemake deletes a failed job's outputs) and
is excluded from DVC (``.dvcignore``).  It records a fingerprint of what it belongs to (the
inversion parameters, the shard's target ids and initial tokens): a file whose fingerprint does
not match is ignored and replaced, so a stale file can never leak into another inversion.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from crossgap.utils import atomic_path

log = logging.getLogger(__name__)

SUFFIX = ".resume.safetensors"


def resume_path(shard_output: str | os.PathLike) -> Path:
    """``…/{shard}.safetensors`` → ``…/{shard}.resume.safetensors``."""
    out = Path(shard_output)
    stem = out.name[: -len(".safetensors")] if out.name.endswith(".safetensors") else out.name
    return out.with_name(stem + SUFFIX)


def fingerprint(params: Mapping[str, Any], ids: Sequence[str], init: torch.Tensor) -> str:
    """SHA-256 of the inversion parameters, the target ids and the initial tokens of a shard."""
    digest = hashlib.sha256()
    digest.update(json.dumps(dict(params), sort_keys=True, default=str).encode())
    digest.update(json.dumps(list(ids)).encode())
    digest.update(init.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    return digest.hexdigest()


class ShardResume:
    """Finished batches of one shard: ``tokens [n, T, W]`` and ``losses [n, steps]`` of its first n targets.

    Args:
        path: the resume file (see :func:`resume_path`).
        fingerprint: what the shard is (:func:`fingerprint`); a file with another one is ignored.
        every: save after every ``every`` finished batches (``inversion.resume_every``).
    """

    def __init__(self, path: str | os.PathLike, fingerprint: str, every: int = 1):
        if every < 1:
            raise ValueError(f"resume_every must be >= 1, got {every}")
        self.path = Path(path)
        self.fingerprint = fingerprint
        self.every = int(every)
        #: per target of the loaded batches, optimisation steps skipped by the fp16 loss scaler ([n] int64)
        self.skipped_steps: torch.Tensor | None = None

    def load(self, steps: int, num_snapshots: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None:
        """The saved ``(tokens, losses, snapshot tokens [n, S, T, W])``, or ``None`` when there is no usable file."""
        if not self.path.is_file():
            return None
        try:
            with safe_open(str(self.path), framework="pt") as f:
                header = f.metadata() or {}
                tokens, losses = f.get_tensor("tokens"), f.get_tensor("losses")
                snaps = f.get_tensor("snapshots") if "snapshots" in f.keys() else None
                skipped = f.get_tensor("skipped_steps") if "skipped_steps" in f.keys() else None
        except (OSError, SafetensorError) as exc:
            log.warning("%s: unreadable resume file ignored (%s)", self.path, exc)
            return None
        if header.get("fingerprint") != self.fingerprint:
            log.warning("%s: resume file of another inversion (fingerprint differs); starting the shard anew",
                        self.path)
            return None
        if snaps is None:
            snaps = torch.empty(tokens.shape[0], 0, *tokens.shape[1:])
        if (losses.shape[0] != tokens.shape[0] or losses.shape[1:] != (steps,)
                or snaps.shape[:2] != (tokens.shape[0], num_snapshots)):
            log.warning("%s: resume file has inconsistent shapes %s / %s / %s; ignored", self.path,
                        tuple(tokens.shape), tuple(losses.shape), tuple(snaps.shape))
            return None
        self.skipped_steps = skipped if skipped is not None else torch.zeros(tokens.shape[0], dtype=torch.long)
        return tokens, losses, snaps

    def save(self, tokens: torch.Tensor, losses: torch.Tensor, snapshots: torch.Tensor | None = None,
             skipped_steps: torch.Tensor | None = None) -> None:
        """Replace the file atomically with the finished ``tokens`` / ``losses`` (/ snapshot tokens, / the
        steps the fp16 loss scaler skipped per target)."""
        tensors = {"tokens": tokens.detach().cpu().contiguous(), "losses": losses.detach().cpu().contiguous()}
        if snapshots is not None and snapshots.shape[1] > 0:
            tensors["snapshots"] = snapshots.detach().cpu().contiguous()
        if skipped_steps is not None and bool(skipped_steps.any()):
            tensors["skipped_steps"] = skipped_steps.detach().cpu().long().contiguous()
        with atomic_path(self.path) as tmp:
            save_file(tensors, str(tmp), metadata={"fingerprint": self.fingerprint, "done": str(tokens.shape[0])})
        log.info("saved %d finished targets to %s", tokens.shape[0], self.path)

    def discard(self) -> None:
        """Remove the file (the shard's output is complete)."""
        self.path.unlink(missing_ok=True)
