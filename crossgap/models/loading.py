"""``load_clip``: build a frozen :class:`~crossgap.models.base.CLIPWrapper` from a backend.

Backends are registered functions ``loader(model_name, pretrained) -> (model, preprocess, tokenizer)``;
adding one is a :func:`register_backend` call, not another branch.
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path
from typing import Callable, Sequence

import torch
from torch import nn

from crossgap.models.base import CLIPWrapper, PatchesUnsupported, TextTokensUnsupported
from crossgap.models.tokenizers import Tokenizer, open_clip_tokenizer, split_pretrained_dir
from crossgap.models.towers import build_text_tower, build_vision_tower
from crossgap.utils import resolve_device

log = logging.getLogger(__name__)

Loader = Callable[[str, "str | None"], "tuple[nn.Module, Callable, Tokenizer]"]
_BACKENDS: dict[str, Loader] = {}
_NAME_PREFIXES: dict[str, str] = {}  # model-name prefix -> backend, consulted by infer_backend

# Vision tower shape of each OpenAI ViT: (width, patch size, input resolution).
OPENAI_VIT_SHAPES = {
    "ViT-B/32": (768, 32, 224),
    "ViT-B/16": (768, 16, 224),
    "ViT-L/14": (1024, 14, 224),
    "ViT-L/14@336px": (1024, 14, 336),
}


def register_backend(name: str, *, name_prefixes: Sequence[str] = ()) -> Callable[[Loader], Loader]:
    """Decorator registering a model-loading backend under ``name``.

    ``name_prefixes``: model names starting with one of these infer this backend (e.g. ``SLIP``).
    """

    def deco(fn: Loader) -> Loader:
        _BACKENDS[name] = fn
        for prefix in name_prefixes:
            _NAME_PREFIXES[prefix] = name
        return fn

    return deco


def list_backends() -> list[str]:
    return sorted(_BACKENDS)


def infer_backend(model_name: str) -> str:
    """'openai' for OpenAI-style names with a slash (``ViT-B/32``, ``RN50``), else 'open_clip' (``ViT-B-32``).

    Names starting with a prefix registered through :func:`register_backend` go to that backend.
    """
    for prefix, backend in _NAME_PREFIXES.items():
        if model_name.startswith(prefix):
            return backend
    if model_name.startswith("hf-hub:"):
        return "open_clip"
    if re.fullmatch(r"(ViT-[BLH]/\d+(@\d+px)?|RN\d+(x\d+)?)", model_name):
        return "openai"
    return "open_clip"


def load_clip(
    model_name: str,
    pretrained: str | os.PathLike | None = None,
    *,
    backend: str | None = None,
    device: str | torch.device | None = None,
) -> tuple[CLIPWrapper, str, Callable]:
    """Load a frozen CLIP-like model with pseudo-token encoders.

    Args:
        model_name: ``ViT-B/32`` style (OpenAI) or an open_clip architecture (``ViT-B-32``, ...).
        pretrained: an open_clip pretrained tag, or a local checkpoint path (either backend), or
            (open_clip) a directory with the checkpoint and the Hugging Face tokenizer files;
            None downloads OpenAI weights through the ``clip`` package (needs internet) and builds
            an open_clip model with random weights.
        backend: 'openai' or 'open_clip'; inferred from ``model_name`` when None.
        device: target device; None → CUDA when available, else CPU.

    Returns:
        ``(model, model_name, preprocess)``: the frozen wrapper (eval, no grad, fp32 weights),
        the architecture name, and the image preprocessing transform (PIL → ``[3, H, W]``).
    """
    backend = backend or infer_backend(model_name)
    if backend not in _BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; known: {list_backends()}")
    if pretrained is not None and isinstance(pretrained, os.PathLike):
        pretrained = os.fspath(pretrained)
    model, preprocess, tokenizer = _BACKENDS[backend](model_name, pretrained)
    model = model.float().eval()
    # load first, refuse per method: a tower that cannot take pseudo tokens makes only its method unavailable
    visual, visual_error = None, None
    try:
        visual = build_vision_tower(model.visual)
    except PatchesUnsupported as exc:  # OTI still works; OVI raises it
        log.info("%s: no visual pseudo tokens (OVI): %s", model_name, exc)
        visual_error = exc
    text, text_error = None, None
    try:
        text = build_text_tower(model)
    except TextTokensUnsupported as exc:  # OVI still works; OTI raises it
        log.info("%s: no textual pseudo tokens (OTI): %s", model_name, exc)
        text_error = exc
    wrapper = CLIPWrapper(
        model,
        text,
        visual,
        tokenizer,
        name=model_name,
        backend=backend,
        visual_error=visual_error,
        text_error=text_error,
    )
    wrapper.to(resolve_device(device))
    log.info("loaded %s (%s, pretrained=%s) on %s", model_name, backend, pretrained, wrapper.device)
    return wrapper, model_name, preprocess


def _is_local_path(pretrained: str | None) -> bool:
    return pretrained is not None and (
        os.path.sep in pretrained or pretrained.endswith((".pt", ".pth", ".bin", ".safetensors"))
        or Path(pretrained).exists()
    )


def read_checkpoint_state_dict(path: str) -> dict[str, torch.Tensor]:
    """State dict of a TorchScript archive or a (possibly wrapped) ``torch.save`` file at ``path``.

    Wrapped files (``{"state_dict": ...}``) and DataParallel prefixes (``module.``) are unwrapped.
    """
    if not Path(path).is_file():
        raise FileNotFoundError(f"checkpoint {path!r} does not exist")
    try:
        state = torch.jit.load(path, map_location="cpu").state_dict()
    except (RuntimeError, ValueError):
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:
            raise ValueError(
                f"{path}: not a TorchScript archive nor a torch.save state dict ({exc})"
            ) from exc
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{path}: expected a mapping of parameter names to tensors")
    if all(k.startswith("module.") for k in state):
        state = {k[len("module."):]: v for k, v in state.items()}
    return dict(state)


@register_backend("openai")
def _load_openai(model_name: str, pretrained: str | None) -> tuple[nn.Module, Callable, Tokenizer]:
    import clip
    from clip.clip import _transform
    from clip.model import build_model

    if pretrained is None:
        if model_name not in clip.available_models():
            raise ValueError(f"unknown OpenAI model {model_name!r}; known: {clip.available_models()}")
        try:
            model, preprocess = clip.load(model_name, device="cpu", jit=False)
        except Exception as exc:  # network failures surface as many exception types
            raise RuntimeError(
                f"could not download the OpenAI checkpoint for {model_name!r} ({type(exc).__name__}: {exc}). "
                "Without internet access, pass a local checkpoint: "
                f"load_clip({model_name!r}, pretrained='/path/to/{model_name.replace('/', '-')}.pt') "
                "(a TorchScript archive from OpenAI or a plain state dict), or set `pretrained:` of the model "
                "in params.yaml"
            ) from exc
    else:
        state = read_checkpoint_state_dict(pretrained)
        try:
            model = build_model(state).float()
            # build_model rounds the weights to fp16; reload them at the checkpoint's own precision
            model.load_state_dict({k: v.float() for k, v in state.items() if k in model.state_dict()})
        except (KeyError, RuntimeError, IndexError) as exc:
            raise ValueError(f"{pretrained}: not an OpenAI CLIP state dict ({exc})") from exc
        expected = OPENAI_VIT_SHAPES.get(model_name)
        if expected is not None:
            visual = model.visual
            found = (
                getattr(getattr(visual, "conv1", None), "out_channels", None),
                getattr(getattr(visual, "conv1", None), "kernel_size", (None,))[0],
                visual.input_resolution,
            )
            if found != expected:
                raise ValueError(
                    f"{pretrained}: checkpoint has vision (width, patch, resolution) = {found}, "
                    f"but {model_name} expects {expected}"
                )
        preprocess = _transform(model.visual.input_resolution)
    context = model.context_length

    def tokenize(texts: Sequence[str]) -> torch.Tensor:
        return clip.tokenize(list(texts), context_length=context, truncate=True)

    return model, preprocess, tokenize


def _build_failure(model_name: str, exc: Exception) -> RuntimeError:
    """The error of an open_clip architecture that could not be built (no weights were involved)."""
    import open_clip

    text_cfg = (open_clip.get_model_config(model_name) or {}).get("text_cfg", {})
    hf_name = text_cfg.get("hf_model_name")
    hint = ""
    if hf_name and isinstance(exc, (OSError, ValueError)):
        hint = (
            f" Its text tower is the Hugging Face model {hf_name!r} (text_cfg.hf_model_name), whose config "
            "transformers reads from the hub or its cache: run once online (or copy the Hugging Face cache), or "
            "register a config whose hf_model_name is a local directory holding config.json"
        )
    return RuntimeError(
        f"open_clip could not build the architecture {model_name} ({type(exc).__name__}: {exc}); no pretrained "
        f"weights were involved.{hint}"
    )


@register_backend("open_clip")
def _load_open_clip(model_name: str, pretrained: str | None) -> tuple[nn.Module, Callable, Tokenizer]:
    """Build ``model_name``, then load ``pretrained`` (a tag, a local file, or None for random weights).

    Each failure says what failed: an unknown architecture or pretrained tag, a build failure (e.g. a
    Hugging Face config that is not cached), a weight download, or a checkpoint that does not match.
    """
    import open_clip
    from open_clip.pretrained import get_pretrained_cfg, list_pretrained_tags_by_model

    if not model_name.startswith("hf-hub:") and model_name not in open_clip.list_models():
        raise ValueError(
            f"unknown open_clip architecture {model_name!r}; see open_clip.list_models() "
            "(OpenAI-style names such as 'ViT-B/32' use backend='openai')"
        )
    # a directory holds the checkpoint and, for Hugging Face tokenizers, the tokenizer files
    pretrained, pretrained_dir = split_pretrained_dir(pretrained)
    local = _is_local_path(pretrained)
    if local and not Path(pretrained).is_file():
        raise FileNotFoundError(f"checkpoint {pretrained!r} for {model_name} does not exist")
    tagged = pretrained is not None and not local and not model_name.startswith("hf-hub:")
    if tagged and not get_pretrained_cfg(model_name, pretrained):
        raise ValueError(
            f"{pretrained!r} is neither a pretrained tag of {model_name} nor an existing file; known tags: "
            f"{list_pretrained_tags_by_model(model_name)}"
        )
    if tagged or model_name.startswith("hf-hub:"):
        try:
            model, _, preprocess = open_clip.create_model_and_transforms(
                model_name, pretrained=pretrained, device="cpu", precision="fp32"
            )
        except Exception as exc:  # downloads fail with many exception types
            raise RuntimeError(
                f"could not build {model_name} with the pretrained weights {pretrained!r} "
                f"({type(exc).__name__}: {exc}). Without internet access, download the checkpoint elsewhere and "
                "pass its local path as `pretrained`"
            ) from exc
        return model, preprocess, open_clip_tokenizer(model_name, pretrained_dir)
    # random weights or a local file: build first (crossgap's None means random weights, so no Hugging Face
    # text weights are downloaded either), then load the checkpoint
    try:
        model, _, preprocess = open_clip.create_model_and_transforms(
            model_name, pretrained=None, device="cpu", precision="fp32", pretrained_text=False
        )
    except Exception as exc:
        raise _build_failure(model_name, exc) from exc
    if local:
        try:
            open_clip.load_checkpoint(model, pretrained, strict=True)
        except Exception as exc:
            raise ValueError(
                f"{pretrained}: cannot load as a {model_name} checkpoint ({type(exc).__name__}: {exc})"
            ) from exc
    return model, preprocess, open_clip_tokenizer(model_name, pretrained_dir)
