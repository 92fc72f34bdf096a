"""Pre-projection features and the final linear projections of CLIP-like towers (for IsoCLIP).

Each tower of a CLIP-like model ends in a linear map from its width ``W`` to the shared space
``D``: ``features = pre @ weight (+ bias)`` with ``pre`` ``[N, W]`` the pooled, normalised
output of the transformer and ``weight`` ``[W, D]``.  :func:`encode_with_preprojection` returns
``features`` **and** ``pre`` from one forward pass; :func:`projection_matrices` returns the
matrices.

**Bias.**  A projection with a bias (an ``nn.Linear(bias=True)``: open_clip ``TextTransformer``
with ``proj_bias``, timm heads) is *augmented*: the matrix is ``[W + 1, D]`` with the bias as
its last row, and ``pre`` gets a trailing column of ones (``[N, W + 1]``), so that
``features == pre @ matrix`` holds for every tower.  This is how IsoCLIP handles the SigLIP-v2
image head (``simomagi/IsoCLIP: src/retrieval.py`` appends a column of ones to the features,
``src/encode_no_projection.py:get_projection_layers`` a bias row to the matrix).  Without a
bias the shapes are the plain ``[N, W]`` / ``[W, D]``.

**How ``pre`` is captured.**  Nothing in the model is changed and ``features`` is the model's
own ``encode_image`` / ``encode_text`` output (bit-identical to the features crossgap extracts
otherwise).  A projection that is a module (``nn.Linear``, SLIP's ``MatrixProjection``) is
observed with a forward pre-hook; a projection that is a bare parameter applied as
``pre @ proj`` (OpenAI CLIP ``visual.proj`` / ``text_projection``, open_clip ``visual.proj`` /
``text_projection``) is observed with a :class:`~torch.overrides.TorchFunctionMode` that records
the left operand of the one matmul whose right operand *is* that parameter.  Exactly one capture
per forward is required, and the result is checked against ``pre @ matrix``.

**Where the projection is.**  Part of each tower family: its module registers a function
``module -> LinearProjection`` with :func:`register_projection` under the
class of the module it wraps (the vision module, or the text module of
:func:`crossgap.models.towers.text_module`), beside its tower: OpenAI CLIP ViT and text; open_clip
``VisionTransformer`` (CoCa's included) with ``proj``, ``TextTransformer`` with a parameter or
``nn.Linear`` projection; open_clip ``TimmModel`` with a linear ``head.proj`` or a linear trunk
classifier head (Perception-Encoder style); Hugging Face text towers with a linear ``proj``; SLIP.
A module of no registered class (ResNet attention pools) or whose function finds no single linear
map (MLP heads, SigLIP's attention-pool head without projection, ``proj`` set to None) raises
:class:`NoLinearProjectionError`.  IsoCLIP itself linearises SigLIP-v2's MLP head (GELU slope
1/2); crossgap does not approximate.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from crossgap.models.towers import _factory, _name as _class_name, register_class, text_module

log = logging.getLogger(__name__)

MODALITIES: tuple[str, ...] = ("image", "text")


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


def _inner(model: nn.Module) -> nn.Module:
    """The third-party model of a :class:`~crossgap.models.base.CLIPWrapper`, or ``model`` itself."""
    from crossgap.models.base import CLIPWrapper

    return model.model if isinstance(model, CLIPWrapper) else model


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


ProjectionFn = Callable[[nn.Module], LinearProjection]
_PROJECTIONS: dict[str, dict[type, ProjectionFn]] = {"image": {}, "text": {}}


def register_projection(modality: str, module_cls: type) -> Callable[[ProjectionFn], ProjectionFn]:
    """Decorator: ``fn(module) -> LinearProjection`` is the final linear projection of ``modality``
    ("image" or "text") towers whose module is a ``module_cls`` (the module a tower of that family wraps).

    ``fn`` raises :class:`~crossgap.models.projection.NoLinearProjectionError` when the module does
    not end in one linear map (see this module).
    """
    return register_class(_PROJECTIONS[modality], module_cls, f"a projection function ({modality})")


def projection_of(module: nn.Module, modality: str) -> LinearProjection:
    """The registered final :class:`LinearProjection` of ``module`` (most specific class first).

    Raises:
        NoLinearProjectionError: no function is registered for the module's class, or it found none.
    """
    fn = _factory(_PROJECTIONS[modality], module)
    if fn is None:
        hint = " (ResNet towers project inside their attention pool)" if modality == "image" else ""
        kind = "vision" if modality == "image" else "text"
        raise NoLinearProjectionError(
            f"the {kind} tower {_class_name(type(module))} has no separable linear projection{hint}"
        )
    return fn(module)


def linear_projection(model: nn.Module, modality: str) -> LinearProjection:
    """The final :class:`LinearProjection` of ``model``'s ``modality`` tower ("image" or "text").

    Args:
        model: a :class:`~crossgap.models.base.CLIPWrapper` (from :func:`crossgap.load_clip`) or
            the third-party model itself.

    Raises:
        NoLinearProjectionError: the tower does not end in one separable linear map.
    """
    if modality not in MODALITIES:
        raise ValueError(f"modality must be one of {MODALITIES}, got {modality!r}")
    m = _inner(model)
    if modality == "text":
        return projection_of(text_module(m), "text")
    visual = getattr(m, "visual", None)
    if visual is None:
        raise NoLinearProjectionError(f"{_name(m)} has no `visual` tower")
    return projection_of(visual, "image")


def projection_matrices(model: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    """``(W_image [W_v(+1), D], W_text [W_t(+1), D])``: ``features == pre @ W`` for each tower.

    A bias becomes the last row (``+1``; module docstring), matching the ones column that
    :func:`encode_with_preprojection` appends to ``pre``.  Detached float32 CPU copies.
    """
    return tuple(  # type: ignore[return-value]
        linear_projection(model, modality).matrix().float().cpu().clone() for modality in MODALITIES
    )


class _MatmulInputs(TorchFunctionMode):
    """Records the left operand of every matmul whose right operand is ``weight`` (the object)."""

    _FUNCS = frozenset({torch.Tensor.__matmul__, torch.matmul, torch.Tensor.matmul, torch.mm, torch.Tensor.mm})

    def __init__(self, weight: torch.Tensor, sink: list[torch.Tensor]) -> None:
        super().__init__()
        self.weight = weight
        self.sink = sink

    def __torch_function__(self, func, types, args=(), kwargs=None):  # noqa: ANN001 - torch's protocol
        if func in self._FUNCS and len(args) >= 2 and args[1] is self.weight:
            self.sink.append(args[0])
        return func(*args, **(kwargs or {}))


def _encoder(model: nn.Module, modality: str) -> Callable[[torch.Tensor], torch.Tensor]:
    if hasattr(model, "encode_image"):
        return model.encode_image if modality == "image" else model.encode_text
    m = _inner(model)
    return m.encode_image if modality == "image" else m.encode_text


@torch.no_grad()
def encode_with_preprojection(
    model: nn.Module, images_or_tokens: torch.Tensor, modality: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(projected [N, D], pre [N, W(+1)])`` of one batch, from ONE forward pass.

    Args:
        model: a :class:`~crossgap.models.base.CLIPWrapper` or the third-party model.
        images_or_tokens: preprocessed images ``[N, 3, H, W]`` (``modality="image"``) or token
            ids ``[N, L]`` (``"text"``), on the model's device.
        modality: "image" or "text".

    Returns:
        ``projected``: the model's own ``encode_image`` / ``encode_text`` output (unnormalised).
        ``pre``: the projection's input, with a trailing column of ones when the projection has a
        bias, so that ``projected == pre @ W`` for ``W`` of :func:`projection_matrices`.

    Raises:
        NoLinearProjectionError: the tower has no separable linear projection.
        RuntimeError: the projection was not applied exactly once, or its output is not the
            tower's output (an unsupported layout).
    """
    proj = linear_projection(model, modality)
    captured: list[torch.Tensor] = []
    encode = _encoder(model, modality)
    if isinstance(proj.site, nn.Module):
        handle = proj.site.register_forward_pre_hook(lambda _module, args: captured.append(args[0]))
        try:
            projected = encode(images_or_tokens)
        finally:
            handle.remove()
    else:
        with _MatmulInputs(proj.site, captured):
            projected = encode(images_or_tokens)
    if len(captured) != 1:
        raise RuntimeError(
            f"{proj.where} was applied {len(captured)} times in one {modality} forward pass, expected once "
            "(an unsupported tower layout)"
        )
    pre = captured[0]
    if proj.bias is not None:
        pre = torch.cat([pre, pre.new_ones(pre.shape[0], 1)], dim=1)
    _check_consistent(projected, pre, proj, modality)
    return projected, pre


def _check_consistent(projected: torch.Tensor, pre: torch.Tensor, proj: LinearProjection, modality: str) -> None:
    """``projected ≈ pre @ matrix`` (loose: autocast may run the tower in half precision)."""
    if pre.ndim != 2 or pre.shape[0] != projected.shape[0]:
        raise RuntimeError(
            f"{modality} pre-projection features have shape {tuple(pre.shape)}, expected [{projected.shape[0]}, W]"
        )
    w = proj.matrix().to(device=pre.device, dtype=torch.float32)
    recomputed = pre.float() @ w
    err = float((recomputed - projected.float()).norm() / projected.float().norm().clamp_min(1e-12))
    if err > 1e-2:
        raise RuntimeError(
            f"{modality} features differ from pre @ {proj.where} (relative error {err:.2e}): something follows the "
            "projection in this tower"
        )
