"""The final linear projection of a tower, as a value: what each tower family's module returns.

:mod:`crossgap.models.towers` registers, per wrapped module class, a function ``module ->
LinearProjection``; :mod:`crossgap.models.projection` uses them (pre-projection features, the matrices
IsoCLIP reads).  This module holds only the value type and its two constructors, so the families, the
registry and the projection functions depend on it and not on each other.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


class NoLinearProjectionError(TypeError):
    """The tower does not end in one linear projection that crossgap can separate."""


@dataclass(frozen=True)
class LinearProjection:
    """The last linear map of one tower: ``features = pre @ weight (+ bias)``.

    Attributes:
        weight: ``[W, D]``.
        bias: ``[D]`` or None.
        site: where ``pre`` is observed: a module whose forward input is ``pre``, or the
            parameter ``weight`` itself as the right operand of ``pre @ weight``.
        where: a readable name of the site (for error messages).
    """

    weight: torch.Tensor
    bias: torch.Tensor | None
    site: nn.Module | torch.Tensor
    where: str

    def matrix(self) -> torch.Tensor:
        """``[W, D]``, or ``[W + 1, D]`` with the bias as the last row (module docstring)."""
        w = self.weight.detach()
        if self.bias is None:
            return w
        return torch.cat([w, self.bias.detach().reshape(1, -1).to(w.dtype)], dim=0)


def _name(obj: object) -> str:
    return f"{type(obj).__module__}.{type(obj).__name__}"


def from_linear(layer: nn.Linear, where: str) -> LinearProjection:
    """The projection ``pre @ layer.weight.T + layer.bias`` of an ``nn.Linear`` (observed at the layer)."""
    return LinearProjection(layer.weight.T, layer.bias, layer, where)


def from_parameter(holder: nn.Module, attr: str, where: str) -> LinearProjection:
    """``holder.<attr>``: a ``[W, D]`` matrix applied as ``pre @ proj`` or an ``nn.Linear``; None is an error."""
    proj = getattr(holder, attr, None)
    if proj is None:
        raise NoLinearProjectionError(f"{where} is None: the {_name(holder)} tower has no final projection")
    if isinstance(proj, nn.Linear):
        return from_linear(proj, where)
    if not isinstance(proj, torch.Tensor) or proj.ndim != 2:
        raise NoLinearProjectionError(f"{where} is a {_name(proj)}, expected a [W, D] matrix or an nn.Linear")
    return LinearProjection(proj, None, proj, where)
