"""Small shared helpers: atomic file writes, device selection, logging set-up.

Everything that writes a file a later step may trust goes through :func:`atomic_path`
so that an interrupted job never leaves a half-written file under the final name.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

from crossgap.writes import write_failures

if TYPE_CHECKING:  # torch is imported lazily: dry runs and the CLI must not pay for it
    import torch

log = logging.getLogger(__name__)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` only on success.

    The temporary file lives in the same directory (same file system) so the final
    ``os.replace`` is atomic.  On any exception the temporary file is removed; a failed
    write (a full disk included, whatever the writer: ``open``, ``torch.save``, safetensors,
    pyarrow) is raised as :class:`crossgap.writes.WriteError` naming ``path``.
    """
    final = Path(path)
    with write_failures(final):
        final.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent)
        os.close(fd)
    tmp = Path(tmp_name)

    def remove() -> None:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()

    with write_failures(final, tmp, cleanup=remove):
        yield tmp
        os.replace(tmp, final)


def write_json(path: str | os.PathLike, obj: Any) -> None:
    """Write ``obj`` as indented JSON to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n")


def resolve_device(device: "str | torch.device | None" = None) -> "torch.device":
    """Return ``device`` as a :class:`torch.device`; ``None`` means CUDA when available, else CPU."""
    import torch

    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


#: precisions a setting may name (``features.precision``, ``inversion.precision``); ``auto`` (library
#: callers without a setting, e.g. pretraining the tiny model): bf16 where the GPU supports it, else fp16
PRECISIONS: tuple[str, ...] = ("fp32", "fp16", "bf16")


def autocast_dtype(device: "torch.device", precision: str = "auto") -> "torch.dtype | None":
    """The autocast dtype of ``precision`` on ``device``; ``None`` means no autocast (fp32).

    The CPU always computes in fp32 (``None``), whatever ``precision`` says. On CUDA: ``fp32`` ->
    ``None``, ``fp16`` -> float16, ``bf16`` -> bfloat16 (a ``ValueError`` on a GPU without bf16),
    ``auto`` -> bfloat16 where supported, else float16.
    """
    import torch

    if precision not in (*PRECISIONS, "auto"):
        raise ValueError(f"precision must be one of {PRECISIONS} or 'auto', got {precision!r}")
    if device.type != "cuda" or precision == "fp32":
        return None
    if precision == "fp16":
        return torch.float16
    bf16 = torch.cuda.is_bf16_supported()
    if precision == "bf16" and not bf16:
        raise ValueError(f"precision 'bf16': {torch.cuda.get_device_name(device)} does not support bfloat16; "
                         "use fp16 or fp32")
    return torch.bfloat16 if bf16 else torch.float16


def effective_precision(device: "torch.device", precision: str = "auto") -> str:
    """The precision ``precision`` runs at on ``device``: ``fp32``, ``fp16`` or ``bf16`` (recorded in outputs)."""
    import torch

    dtype = autocast_dtype(device, precision)
    return {None: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16"}[dtype]


def autocast_context(device: "torch.device", precision: str = "auto") -> contextlib.AbstractContextManager:
    """``torch.autocast`` with :func:`autocast_dtype` on CUDA; a no-op context for fp32 and on the CPU."""
    import torch

    dtype = autocast_dtype(device, precision)
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def setup_logging(log_file: str | os.PathLike | None = None, level: int = logging.INFO) -> None:
    """Configure root logging to stderr and, when given, to ``log_file`` (appending)."""
    handlers: list[logging.Handler] = [logging.StreamHandler()]
    if log_file is not None:
        Path(log_file).parent.mkdir(parents=True, exist_ok=True)
        handlers.append(logging.FileHandler(log_file))
    logging.basicConfig(
        level=level,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        handlers=handlers,
        force=True,
    )
