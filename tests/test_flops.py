"""FLOPs counted from shapes equal PyTorch's own count of the step's weight matrix products."""

from __future__ import annotations

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from crossgap.models.flops import block_macs, step_flops
from test_prefix_cache import reference_text


def counted(run) -> int:
    """FLOPs of ``run()``'s forward and backward as FlopCounterMode counts them (matrix products only).

    On the CPU the fused attention kernel is not counted by FlopCounterMode, so this is the linear part.
    """
    with FlopCounterMode(display=False) as counter:
        run().square().sum().backward()
    return counter.get_total_flops()


def head_macs(projection) -> int:
    return projection.weight.numel() if isinstance(projection, torch.nn.Linear) else projection.numel()


@pytest.mark.parametrize("tower", ["openai-vit", "open_clip-vit"])
def test_oti_step_with_the_prefix_cache(tiny_models, tower):
    model = tiny_models[tower]
    ids = model.tokenize_template("a photo of {} on the grass", 2)
    encoder = model.template_encoder(ids, 2)
    tokens = torch.zeros(3, 2, model.text_token_embedding_dim, requires_grad=True)
    text = getattr(model.model, "text", model.model)
    flops = step_flops(encoder.stack.blocks, batch=3, positions=encoder.positions, past=encoder.prefix_length,
                       last_positions=1, head_macs=head_macs(text.text_projection))
    assert flops.linear == counted(lambda: encoder(tokens))
    qkv, rest, width = block_macs(encoder.stack.blocks[0])
    assert qkv == 3 * width * width and rest == width * width + 2 * 4 * width * width
    keys = encoder.prefix_length + encoder.positions
    layers = len(encoder.stack.blocks)
    attention = 2 * width * ((layers - 1) * encoder.positions * keys + keys)  # last block: one query
    assert flops.attention == 2 * 3 * attention * 3


def test_full_context_reference_step(tiny_models):
    model = tiny_models["open_clip-vit"]
    ids = model.tokenize_template("a photo of {}", 1)
    tokens = torch.zeros(2, 1, model.text_token_embedding_dim, requires_grad=True)
    blocks = list(model.model.transformer.resblocks)
    flops = step_flops(blocks, batch=2, positions=ids.shape[1], head_macs=head_macs(model.model.text_projection))
    assert flops.linear == counted(lambda: reference_text(model, ids, tokens))


def test_ovi_step(tiny_models):
    model = tiny_models["open_clip-vit"]
    visual = model.visual
    tokens = torch.zeros(2, 1, visual.width, requires_grad=True)
    flops = step_flops(visual.blocks, batch=2, positions=visual.num_patches + 1, last_positions=1,
                       head_macs=visual.v.proj.numel())
    assert flops.linear == counted(lambda: model.encode_image_with_pseudo_tokens(tokens))
