"""Helpers shared by the training-free methods: argument checks, reference look-up, normalisation.

Imported only by the method modules (never by :mod:`crossgap.methods`), which import this module
inside their ``fit`` / ``apply`` so that reading a method's ``SPEC`` never imports torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Mapping, Sequence

if TYPE_CHECKING:
    import torch

MODALITIES: tuple[str, ...] = ("image", "text")
ROLES: tuple[str, ...] = ("query", "gallery")


class MissingReferenceError(KeyError):
    """A method's ``fit`` lacks a reference feature set, or its ``apply`` a statistic."""

    def __str__(self) -> str:  # KeyError would quote the whole message
        return str(self.args[0]) if self.args else ""


def check_params(spec: Mapping[str, Any], params: Mapping[str, Any], name: str | None = None) -> dict[str, Any]:
    """``spec["params"]`` updated with ``params``; TypeError naming unknown parameters (``name``: the
    method, default ``spec["name"]``)."""
    unknown = sorted(set(params) - set(spec["params"]))
    if unknown:
        raise TypeError(f"{name or spec['name']}: unknown parameter(s) {unknown}; known: {sorted(spec['params'])}")
    return {**spec["params"], **params}


def matrix(x: Any, what: str, *, min_rows: int = 1) -> "torch.Tensor":
    """``x`` as a finite 2-D floating tensor (float64 stays float64, anything else becomes float32)."""
    import torch

    t = torch.as_tensor(x)
    if t.ndim != 2 or t.shape[0] < min_rows or t.shape[1] < 1:
        raise ValueError(f"{what}: expected a [N, D] matrix with N >= {min_rows}, got shape {tuple(t.shape)}")
    t = t if t.dtype == torch.float64 else t.float()
    if not bool(torch.isfinite(t).all()):
        raise ValueError(f"{what}: contains NaN or inf")
    return t


def reference(refs: Mapping[str, Any], keys: Sequence[str], method: str, *, min_rows: int = 1) -> tuple[str, "torch.Tensor"]:
    """``(key, [N, D] tensor)`` of the first of ``keys`` present in ``refs``.

    Raises:
        MissingReferenceError: none of ``keys`` is in ``refs`` (the message names them all).
    """
    for key in keys:
        if key in refs and refs[key] is not None:
            return key, matrix(refs[key], f"{method}: reference {key!r}", min_rows=min_rows)
    wanted = " or ".join(repr(k) for k in keys)
    raise MissingReferenceError(f"{method}: fit needs the reference features {wanted}; got keys {sorted(refs)}")


def statistic(stats: Mapping[str, Any], key: str, method: str, hint: str = "") -> "torch.Tensor":
    """``stats[key]`` as a tensor; MissingReferenceError naming ``key`` when absent."""
    import torch

    if key not in stats:
        raise MissingReferenceError(
            f"{method}: statistics lack {key!r}{' (' + hint + ')' if hint else ''}; got keys {sorted(stats)}"
        )
    return torch.as_tensor(stats[key])


def check_apply(features: Any, modality: str, role: str, method: str) -> "torch.Tensor":
    """Validate ``modality`` / ``role`` and return ``features`` as a finite ``[N, D]`` tensor."""
    if modality not in MODALITIES:
        raise ValueError(f"{method}: modality must be one of {MODALITIES}, got {modality!r}")
    if role not in ROLES:
        raise ValueError(f"{method}: role must be one of {ROLES}, got {role!r}")
    return matrix(features, f"{method}: {role} {modality} features", min_rows=0)


def l2n(x: "torch.Tensor") -> "torch.Tensor":
    """Rows of ``x`` ``[N, D]`` scaled to unit L2 norm (zero rows stay zero)."""
    import torch.nn.functional as F

    return F.normalize(x, dim=-1)


def check_width(x: "torch.Tensor", width: int, what: str, method: str) -> None:
    if x.shape[1] != width:
        raise ValueError(f"{method}: {what} have width {x.shape[1]}, the statistics expect {width}")
