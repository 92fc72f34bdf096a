"""Text tower of open_clip's ``HFTextEncoder`` (Hugging Face text models: XLM-R, RoBERTa, mT5, NLLB).

``HFTextEncoder.forward(ids)`` runs ``transformer(input_ids=ids, attention_mask=ids != pad)``
(the encoder only, for encoder-decoder models such as mT5 and NLLB/M2M-100), pools with the
pooler open_clip configures (``mean_pooler`` over the unpadded tokens, ``cls_pooler``: the
transformer's pooler output when it has one, else the first token; ``max_pooler``, ...), then
``proj`` (identity, linear or MLP).  :class:`HFTextTower` runs the same modules from token
embeddings through ``inputs_embeds`` (open_clip/hf_model.py), so that pseudo tokens can be
spliced in; the embeddings are those of the model's own input embedding layer
(``get_input_embeddings()``: NLLB's includes its ``sqrt(d_model)`` scale).

These towers are bidirectional (every position can change every output): nothing is truncated and
there is no prefix cache.  Positions are recomputed by the transformer from the embeddings'
length; open_clip's Hugging Face tokenizers pad on the right, where that equals the positions of
the ids for every unpadded token (padded positions are masked out of attention and pooling).
"""

from __future__ import annotations

import torch
from open_clip.hf_model import HFTextEncoder
from torch import nn

from crossgap.models.base import TextTower
from crossgap.models.projection import LinearProjection, NoLinearProjectionError, from_linear, register_projection
from crossgap.models.towers import register_text_tower


@register_text_tower(HFTextEncoder)
class HFTextTower(TextTower):
    """``HFTextEncoder`` from token embeddings ``[B, L, W_text]`` (``W_text`` = the model's hidden size)."""

    truncatable = False

    def __init__(self, encoder: nn.Module) -> None:
        super().__init__()
        self.h = encoder
        self.embedding = encoder.transformer.get_input_embeddings()
        self.width = self.embedding.weight.shape[1]
        self.context_length = int(getattr(encoder, "context_length", 0) or 0)
        self.pad_id = encoder.config.pad_token_id

    def embed_tokens(self, ids: torch.Tensor) -> torch.Tensor:
        return self.embedding(ids)

    def forward_embeddings(self, embeddings: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        mask = (ids != self.pad_id).long()
        out = self.h.transformer(inputs_embeds=embeddings, attention_mask=mask)
        return self.h.proj(self.h.pooler(out, mask))


@register_projection("text", HFTextEncoder)
def text_projection(encoder: nn.Module) -> LinearProjection:
    """``proj`` when it is one ``nn.Linear`` (``hf_proj_type: linear``); an MLP or identity has none."""
    if isinstance(encoder.proj, nn.Linear):
        return from_linear(encoder.proj, "text.proj")
    raise NoLinearProjectionError(
        f"the Hugging Face text tower ends in a {type(encoder.proj).__name__} (hf_proj_type mlp or none), not one "
        "linear projection"
    )
