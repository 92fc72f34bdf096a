"""Tokenizers read from disk and ``pretrained`` directories (checkpoint + tokenizer files).

Models whose open_clip config names a Hugging Face tokenizer
(``text_cfg.hf_tokenizer_name``, e.g. ``timm/ViT-B-16-SigLIP``) normally download it.  Offline,
point crossgap at a local copy, in order of precedence:

1. ``set_tokenizer_path(model_name, directory)`` (programmatic; ``None`` clears it);
2. a ``pretrained`` **directory** holding the checkpoint *and* the tokenizer files, i.e. a copy of
   the model's hub repository: ``load_clip("ViT-B-16-SigLIP", "/models/ViT-B-16-SigLIP/")``.
   The checkpoint is ``open_clip_model.safetensors`` / ``open_clip_pytorch_model.bin`` or the
   directory's only ``*.safetensors|*.bin|*.pt|*.pth`` file.

Otherwise the hub is used as open_clip does, with an error that names both options on failure.

**Placeholder.**  SentencePiece tokenizers may split ``"£"`` into a word-boundary piece and the
character (``▁`` + ``£``).  :class:`PlaceholderTokenizer` then drops the boundary piece in front of
each placeholder, so that a placeholder is one token standing for a whole word piece: a pseudo
token equal to the embedding of ``▁cat`` reproduces the tokenisation of "... cat" exactly.
(Real text containing a literal "£" is tokenised the same way: the only difference to the
library's tokenizer.)
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Callable, Sequence

import torch

from crossgap.models.base import PLACEHOLDER

log = logging.getLogger(__name__)

Tokenizer = Callable[[Sequence[str]], torch.Tensor]

CHECKPOINT_NAMES = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")
CHECKPOINT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "spiece.model", "sentencepiece.model")

_TOKENIZER_PATHS: dict[str, Path] = {}


def set_tokenizer_path(model_name: str, path: str | os.PathLike | None) -> None:
    """Use the Hugging Face tokenizer saved in directory ``path`` for ``model_name`` (None: forget it)."""
    if path is None:
        _TOKENIZER_PATHS.pop(model_name, None)
        return
    _TOKENIZER_PATHS[model_name] = Path(path)


def has_tokenizer_files(directory: Path | None) -> bool:
    return directory is not None and any((directory / name).is_file() for name in TOKENIZER_FILES)


def split_pretrained_dir(pretrained: str | None) -> tuple[str | None, Path | None]:
    """``(checkpoint, directory)``: a ``pretrained`` directory → its checkpoint file and itself.

    Anything else (a tag, a file, None) is returned unchanged with ``directory=None``.
    """
    if pretrained is None or not Path(pretrained).is_dir():
        return pretrained, None
    directory = Path(pretrained)
    for name in CHECKPOINT_NAMES:
        if (directory / name).is_file():
            return str(directory / name), directory
    found = sorted(p.name for p in directory.iterdir() if p.is_file() and p.name.endswith(CHECKPOINT_SUFFIXES))
    if len(found) != 1:
        raise FileNotFoundError(
            f"pretrained directory {directory} must hold one checkpoint ({' or '.join(CHECKPOINT_NAMES)}, "
            f"or a single *{'|*'.join(CHECKPOINT_SUFFIXES)} file); found {found or 'none'}"
        )
    return str(directory / found[0]), directory


class PlaceholderTokenizer:
    """An open_clip Hugging Face tokenizer whose placeholder ``£`` is always one token.

    Call: ``texts`` (list of str) → ids ``[B, context_length]``.  See the module docstring.  A
    tokenizer that cannot make the placeholder one token still tokenises text as the library does;
    ``placeholder_error`` then says why, and the model's OTI is unavailable with that message.
    """

    def __init__(self, tokenizer: Callable) -> None:
        self.inner = tokenizer
        hf = tokenizer.tokenizer
        self.context_length: int = tokenizer.context_length
        self.pad_id = hf.pad_token_id if hf.pad_token_id is not None else 0
        pieces = hf(PLACEHOLDER, add_special_tokens=False)["input_ids"]
        self.boundary_id: int | None = None
        self.placeholder_id: int | None = None
        self.placeholder_error: str | None = None  # why OTI is unavailable with this tokenizer
        boundary_then_char = hf.decode(pieces[:1]).strip() == "" and hf.decode(pieces[1:]).strip() == PLACEHOLDER
        if len(pieces) == 2 and boundary_then_char:
            self.boundary_id = int(pieces[0])
        elif len(pieces) != 1:
            pretty = hf.convert_ids_to_tokens(pieces)
            self.placeholder_error = (
                f"the tokenizer {type(hf).__name__} splits the placeholder {PLACEHOLDER!r} into {pretty}; "
                "pseudo-token inversion (OTI) needs one token (or a word-boundary piece followed by one token)"
            )
            log.info("%s", self.placeholder_error)
            return
        self.placeholder_id = int(pieces[-1])
        if hf.unk_token_id is not None and self.placeholder_id == hf.unk_token_id:
            log.warning("the placeholder %r is an unknown token for this tokenizer", PLACEHOLDER)

    def __call__(self, texts: Sequence[str]) -> torch.Tensor:
        texts = list(texts)
        ids = self.inner(texts)
        if self.boundary_id is None:
            return ids
        rows = [i for i, text in enumerate(texts) if PLACEHOLDER in text]
        if not rows:
            return ids
        # Tokenise at a longer context so that dropping boundary pieces loses no content.
        extra = max(texts[i].count(PLACEHOLDER) for i in rows)
        longer = self.inner([texts[i] for i in rows], context_length=self.context_length + extra)
        for row, long_ids in zip(rows, longer):
            before_placeholder = torch.zeros_like(long_ids, dtype=torch.bool)
            before_placeholder[:-1] = (long_ids[:-1] == self.boundary_id) & (long_ids[1:] == self.placeholder_id)
            kept = long_ids[~before_placeholder][: self.context_length]
            ids[row] = self.pad_id
            ids[row, : kept.shape[0]] = kept
        return ids


def _hf_tokenizer_from_dir(model_name: str, directory: Path) -> Callable:
    import open_clip
    from open_clip.tokenizer import HFTokenizer

    if not has_tokenizer_files(directory):
        raise FileNotFoundError(
            f"no tokenizer files ({', '.join(TOKENIZER_FILES)}) in {directory} for {model_name}"
        )
    text_cfg = (open_clip.get_model_config(model_name) or {}).get("text_cfg", {})
    log.info("loading the tokenizer of %s from %s", model_name, directory)
    return HFTokenizer(
        str(directory),
        context_length=text_cfg.get("context_length", 77),
        tokenizer_mode=text_cfg.get("tokenizer_mode"),
        **text_cfg.get("tokenizer_kwargs", {}),
    )


def open_clip_tokenizer(model_name: str, pretrained_dir: Path | None = None) -> Tokenizer:
    """The tokenizer of an open_clip model: ``texts`` → ids ``[B, context_length]``.

    Looks for a local Hugging Face tokenizer (:func:`set_tokenizer_path`, then ``pretrained_dir``
    when the model uses a Hugging Face tokenizer) before asking open_clip, which may download it.
    """
    import open_clip
    from open_clip.tokenizer import HFTokenizer, SigLipTokenizer

    text_cfg = (open_clip.get_model_config(model_name) or {}).get("text_cfg", {})
    local = _TOKENIZER_PATHS.get(model_name)
    if local is None and text_cfg.get("hf_tokenizer_name") and has_tokenizer_files(pretrained_dir):
        local = pretrained_dir
    if local is not None:
        tokenizer = _hf_tokenizer_from_dir(model_name, local)
    else:
        try:
            tokenizer = open_clip.get_tokenizer(model_name)
        except Exception as exc:  # hub/network failures surface as many exception types
            raise RuntimeError(
                f"could not load the tokenizer of {model_name} ({type(exc).__name__}: {exc}). Without "
                "internet access, save the tokenizer files (tokenizer.json, ...) beside the checkpoint and pass "
                "that directory as `pretrained`, or call "
                f"crossgap.models.tokenizers.set_tokenizer_path({model_name!r}, '/path/to/tokenizer') "
                "(HF_HUB_OFFLINE=1 skips the hub's retries)"
            ) from exc
    if isinstance(tokenizer, (HFTokenizer, SigLipTokenizer)):
        return PlaceholderTokenizer(tokenizer)
    return lambda texts: tokenizer(list(texts))

