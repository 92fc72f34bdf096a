"""Tower interfaces and the frozen model wrapper that crossgap's inversions run against.

A *text tower* turns token ids ``[B, L]`` into features ``[B, D]`` and can start from token
embeddings ``[B, L, W_text]`` instead of ids, so that pseudo tokens can be spliced in.
A *vision tower* turns images ``[B, 3, H, W]`` into features ``[B, D]`` and can start from patch
embeddings ``[B, N, W_vis]`` (the output of the patchifying convolution, before the class token
and positional embeddings), so that pseudo patches can be fed in.

Concrete towers live in one module per tower family and are looked up through the registry of
:mod:`crossgap.models.towers`, keyed by the third-party module's class (the rule is stated there).
**Load first, refuse per method.**  A tower that cannot take pseudo tokens raises a
:class:`TowerUnsupported` where it is found: :class:`PatchesUnsupported` for a vision module
(a ResNet: no patch tokens; OVI is then unavailable), :class:`TextTokensUnsupported` for a text
module (OTI is then unavailable).  The model still loads; :class:`CLIPWrapper` keeps the error and
raises it again only when that method asks for the tower, so the other method works.
"""

from __future__ import annotations

import abc
import inspect
import logging
from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from crossgap.models.prefix import CausalStack, FullTemplateEncoder, PrefixCachedEncoder

log = logging.getLogger(__name__)

PLACEHOLDER = "£"
"""The placeholder character that marks a pseudo-token position in a template."""


class TowerUnsupported(TypeError):
    """One tower of the model cannot take pseudo tokens: the method that needs it is unavailable.

    The message names the tower class and what is missing.  ``method`` is "oti" or "ovi".
    Raised where it is found (the tower lookup, a tower factory, the placeholder lookup);
    :class:`CLIPWrapper` keeps it and raises it again when that method asks for the tower, so that
    the other method still works.  The pipeline records the method as unavailable with the message
    (:func:`crossgap.steps.inversion.invert_shard_step`).
    """

    method: str = ""


class PatchesUnsupported(TowerUnsupported):
    """This vision tower cannot take patch embeddings (visual pseudo tokens): OVI is unavailable."""

    method = "ovi"


class TextTokensUnsupported(TowerUnsupported):
    """This text tower cannot take token embeddings (textual pseudo tokens): OTI is unavailable."""

    method = "oti"


class TextTower(nn.Module, abc.ABC):
    """A text encoder that can run from token embeddings.

    Subclasses set ``width`` (token embedding size ``W_text``), ``context_length`` and
    ``truncatable``: True when the tower is causal and pools at the end-of-text token, so that
    positions after the last end-of-text token cannot change the output and may be dropped.
    """

    width: int
    context_length: int
    truncatable: bool

    @abc.abstractmethod
    def embed_tokens(self, ids: torch.Tensor) -> torch.Tensor:
        """Token embeddings ``[B, L, W_text]`` of ids ``[B, L]`` (no positional embedding)."""

    @abc.abstractmethod
    def forward_embeddings(self, embeddings: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        """Features ``[B, D]`` from token embeddings ``[B, L, W_text]``; ``ids`` ``[B, L]`` locate pooling."""

    def pool_length(self, ids: torch.Tensor) -> int:
        """Number of leading positions needed to encode ``ids`` ``[B, L]`` exactly."""
        return ids.shape[1]

    def causal_stack(self) -> CausalStack | None:
        """The tower position by position, for the prefix cache of :mod:`crossgap.models.prefix`.

        None (the default) when the tower is not causal or its blocks have an unsupported layout:
        templates are then encoded by the plain forward.
        """
        return None

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.forward_embeddings(self.embed_tokens(ids), ids)


class VisionTower(nn.Module, abc.ABC):
    """An image encoder that can run from patch embeddings.

    Subclasses set ``width`` (patch embedding size ``W_vis``) and ``num_patches`` (``N``).
    """

    width: int
    num_patches: int

    @abc.abstractmethod
    def embed_patches(self, images: torch.Tensor) -> torch.Tensor:
        """Patch embeddings ``[B, N, W_vis]`` of images ``[B, 3, H, W]`` (before class token/positions)."""

    @abc.abstractmethod
    def forward_patches(self, patches: torch.Tensor) -> torch.Tensor:
        """Features ``[B, D]`` from patch embeddings ``[B, N, W_vis]``."""

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.forward_patches(self.embed_patches(images))


class CLIPWrapper(nn.Module):
    """A frozen CLIP-like model with pseudo-token encoders.

    Attributes:
        model: the third-party model (kept for ``encode_image`` / ``encode_text``).
        text: a :class:`TextTower` over the model's text encoder, or None when the tower cannot
            take token embeddings (or its tokenizer has no one-token placeholder); OTI then raises
            :class:`TextTokensUnsupported` (``text_error``, the one the lookup raised, when given).
        visual: a :class:`VisionTower` over the model's image encoder, or None when the tower
            cannot take patch embeddings (e.g. ResNet); OVI then raises :class:`PatchesUnsupported`
            (``visual_error``, the one the tower lookup raised, when given).
        tokenizer: ``str | list[str]`` → LongTensor ``[B, context_length]``.
    """

    def __init__(
        self,
        model: nn.Module,
        text: TextTower | None,
        visual: VisionTower | None,
        tokenizer: Callable[[str | Sequence[str]], torch.Tensor],
        *,
        name: str,
        backend: str,
        visual_error: PatchesUnsupported | None = None,
        text_error: TextTokensUnsupported | None = None,
    ) -> None:
        super().__init__()
        self.model = model
        self.text = text
        self.visual = visual
        self._tokenizer = tokenizer
        self.name = name
        self.backend = backend
        self._visual_error = visual_error
        self._text_error = text_error
        self.placeholder_id: int | None = None
        if text is not None:
            try:
                self.placeholder_id = self._find_placeholder_id()
            except TextTokensUnsupported as exc:  # OVI still works; OTI raises it
                log.info("%s: no textual pseudo tokens (OTI): %s", name, exc)
                self.text, self._text_error = None, exc
        self.eval()
        for p in self.parameters():
            p.requires_grad_(False)

    # -- basic API ---------------------------------------------------------------------------
    def tokenizer(self, texts: str | Sequence[str]) -> torch.Tensor:
        """Token ids ``[B, context_length]`` (LongTensor) of one text or a list of texts."""
        if isinstance(texts, str):
            texts = [texts]
        return self._tokenizer(list(texts)).long()

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def text_token_embedding_dim(self) -> int:
        """Width ``W_text`` of the text token embeddings (size of one OTI pseudo token)."""
        return self._require_text().width

    @property
    def visual_token_embedding_dim(self) -> int:
        """Width ``W_vis`` of the patch embeddings (size of one OVI pseudo token)."""
        return self._require_visual().width

    @property
    def logit_scale(self) -> float:
        """The model's learned inverse temperature ``exp(log_scale)``."""
        scale = getattr(self.model, "logit_scale", None)
        if scale is None:
            return 100.0
        return float(torch.as_tensor(scale).detach().exp().reshape(-1)[0])

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        """Image features ``[B, D]`` (not normalised) of preprocessed images ``[B, 3, H, W]``."""
        return self.model.encode_image(images, **_unnormalized(self.model.encode_image))

    def encode_text(self, ids: torch.Tensor) -> torch.Tensor:
        """Text features ``[B, D]`` (not normalised) of token ids ``[B, L]``."""
        return self.model.encode_text(ids, **_unnormalized(self.model.encode_text))

    # -- pseudo tokens -----------------------------------------------------------------------
    def _find_placeholder_id(self) -> int:
        reason = getattr(self._tokenizer, "placeholder_error", None)
        if reason:
            raise TextTokensUnsupported(f"{self.name}: {reason}")
        ids = self.tokenizer(PLACEHOLDER)[0]
        bare = self.tokenizer("")[0]
        extra = [int(t) for t in ids.tolist() if t not in set(bare.tolist())]
        if len(extra) != 1:
            raise TextTokensUnsupported(
                f"tokenizer of {self.name!r} does not map the placeholder {PLACEHOLDER!r} to exactly one "
                f"token (got {len(extra)}: {extra}); pseudo-token inversion needs a one-token placeholder"
            )
        return extra[0]

    def tokenize_template(self, template: str, num_pseudo_tokens: int) -> torch.Tensor:
        """Ids ``[1, L]`` of ``template`` with its ``{}`` replaced by ``num_pseudo_tokens`` placeholders."""
        self._require_text()
        if template.count("{}") != 1:
            raise ValueError(f"template {template!r} must contain exactly one '{{}}'")
        placeholders = " ".join([PLACEHOLDER] * num_pseudo_tokens)
        # A placeholder touching punctuation ("£.") can merge into another token under BPE; words and
        # punctuation are split before BPE anyway, so padding the placeholders with spaces is exact.
        for text in (template.format(placeholders), " ".join(template.format(f" {placeholders} ").split())):
            ids = self.tokenizer(text)
            found = int((ids == self.placeholder_id).sum())
            if found == num_pseudo_tokens:
                break
        else:
            raise ValueError(
                f"template {template!r} tokenised to {found} placeholder tokens, expected {num_pseudo_tokens} "
                f"(is the text longer than the context length {ids.shape[1]}?)"
            )
        return ids

    def encode_with_pseudo_tokens(
        self, tokenized_text: torch.Tensor, pseudo_tokens: torch.Tensor, *, truncate: bool = True
    ) -> torch.Tensor:
        """Text features ``[B, D]`` with placeholder embeddings replaced by pseudo tokens.

        Args:
            tokenized_text: ids ``[B, L]`` (or ``[1, L]``, broadcast) holding R placeholders per row.
            pseudo_tokens: ``[B, R, W_text]``, or ``[B, W_text]`` when R = 1.
            truncate: drop positions after the last end-of-text token when the tower allows it
                (exact; see :attr:`TextTower.truncatable`).
        """
        text = self._require_text()
        if pseudo_tokens.dim() == 2:
            pseudo_tokens = pseudo_tokens.unsqueeze(1)
        batch, num_tokens, width = pseudo_tokens.shape
        if width != text.width:
            raise ValueError(f"pseudo tokens have width {width}, the text tower expects {self.text.width}")
        ids = tokenized_text.to(pseudo_tokens.device)
        if ids.shape[0] == 1 and batch > 1:
            ids = ids.expand(batch, -1)
        if truncate and self.text.truncatable:
            ids = ids[:, : self.text.pool_length(ids)]
        mask = ids == self.placeholder_id
        counts = mask.sum(dim=1)
        if not bool((counts == num_tokens).all()):
            raise ValueError(
                f"every text must hold {num_tokens} placeholder tokens; found counts {counts.tolist()}"
            )
        embeddings = self.text.embed_tokens(ids)
        embeddings = embeddings.masked_scatter(
            mask.unsqueeze(-1), pseudo_tokens.to(embeddings.dtype).reshape(-1, width)
        )
        return self.text.forward_embeddings(embeddings, ids)

    def template_encoder(self, tokenized_template: torch.Tensor, num_pseudo_tokens: int) -> nn.Module:
        """A module: pseudo tokens ``[B, R, W_text]`` → features ``[B, D]`` in one fixed template.

        Equal to :meth:`encode_with_pseudo_tokens` up to float rounding, but for causal towers
        (``text.causal_stack()`` not None) the positions before the first placeholder are encoded
        once here and each call runs only the placeholders up to the pooled end-of-text token
        (:class:`~crossgap.models.prefix.PrefixCachedEncoder`).

        Args:
            tokenized_template: ids ``[1, L]`` holding ``num_pseudo_tokens`` placeholders
                (:meth:`tokenize_template`).
        """
        self._require_text()
        ids = tokenized_template.to(self.device)
        stack = self.text.causal_stack() if self.text.truncatable else None
        if stack is None:
            log.debug("%s: no prefix cache for %s", self.name, type(self.text).__name__)
            if self.text.truncatable:
                ids = ids[:, : self.text.pool_length(ids)]
            return FullTemplateEncoder(
                lambda ids, tokens: self.encode_with_pseudo_tokens(ids, tokens, truncate=False), ids
            )
        ids = ids[:, : self.text.pool_length(ids)]
        return PrefixCachedEncoder(stack, self.text.embed_tokens, ids, self.placeholder_id, num_pseudo_tokens)

    def encode_image_with_pseudo_tokens(self, pseudo_tokens: torch.Tensor) -> torch.Tensor:
        """Image features ``[B, D]`` from P pseudo patches ``[B, P, W_vis]``.

        The P tokens are repeated over the N patch positions by nearest interpolation
        (``N/P`` consecutive positions per token), then the tower adds the class token and
        positional embeddings and runs as usual.
        """
        visual = self._require_visual()
        if pseudo_tokens.dim() == 2:
            pseudo_tokens = pseudo_tokens.unsqueeze(1)
        if pseudo_tokens.shape[-1] != visual.width:
            raise ValueError(
                f"pseudo tokens have width {pseudo_tokens.shape[-1]}, the vision tower expects {visual.width}"
            )
        patches = expand_pseudo_patches(pseudo_tokens, visual.num_patches)
        return visual.forward_patches(patches)

    def _require_text(self) -> TextTower:
        if self.text is None:
            if self._text_error is not None:
                raise TextTokensUnsupported(str(self._text_error)) from self._text_error
            raise TextTokensUnsupported(f"the text tower of {self.name!r} cannot take textual pseudo tokens")
        return self.text

    def _require_visual(self) -> VisionTower:
        if self.visual is None:
            if self._visual_error is not None:
                raise PatchesUnsupported(str(self._visual_error)) from self._visual_error
            raise PatchesUnsupported(
                f"the vision tower of {self.name!r} cannot take visual pseudo tokens (OVI needs a ViT)"
            )
        return self.visual

    def train(self, mode: bool = True) -> "CLIPWrapper":
        # The wrapper is frozen: it always stays in eval mode.
        return super().train(False)


def _unnormalized(encode: Callable) -> dict[str, bool]:
    """``{"normalize": False}`` for encoders that take it (open_clip's; CoCa normalises by default), else ``{}``."""
    try:
        takes = "normalize" in inspect.signature(encode).parameters
    except (TypeError, ValueError):  # builtins / scripted methods without a signature
        takes = False
    return {"normalize": False} if takes else {}


def expand_pseudo_patches(pseudo_tokens: torch.Tensor, num_patches: int) -> torch.Tensor:
    """Repeat ``[B, P, W]`` pseudo tokens to ``[B, N, W]`` by nearest interpolation along positions."""
    if pseudo_tokens.shape[1] == num_patches:
        return pseudo_tokens
    x = F.interpolate(pseudo_tokens.transpose(1, 2), size=num_patches, mode="nearest")
    return x.transpose(1, 2)
