"""The vision towers' own block loop (batch first, class token only in the last block) is exact.

Reference: the library's own ``VisionTransformer.forward`` on images (open_clip, OpenAI CLIP);
values and the gradients OVI uses (with respect to the patch embeddings) must agree.
"""

from __future__ import annotations

import pytest
import torch
from open_clip.transformer import VisionTransformer

from crossgap.models.blocks import block_step, causal_mask, is_mha_block, run_blocks
from crossgap.models.open_clip_tower import OpenClipVisionTower
from crossgap.models.openai_tower import OpenAIVisionTower


def images(n: int = 2) -> torch.Tensor:
    return torch.randn(n, 3, 32, 32, generator=torch.Generator().manual_seed(0))


def assert_tower_matches(tower, reference) -> None:
    x = images()
    with torch.no_grad():
        patches = tower.embed_patches(x)
        torch.testing.assert_close(tower.forward_patches(patches), reference(x), rtol=1e-5, atol=1e-5)
    grads = []
    for forward in (tower.forward_patches, None):
        leaf = patches.clone().requires_grad_(True)
        if forward is None:  # the library path from patch embeddings, via a hook on conv1's output
            handle = tower.v.conv1.register_forward_hook(
                lambda m, i, o: leaf.transpose(1, 2).reshape(o.shape)
            )
            out = reference(x)
            handle.remove()
        else:
            out = forward(leaf)
        out.square().sum().backward()
        grads.append(leaf.grad)
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-4, atol=1e-6)


VARIANTS = {
    "tok": {},
    "layer-scale": {"ls_init_value": 0.3},
    "avg-pool": {"pool_type": "avg"},
    "ln-after-pool": {"final_ln_after_pool": True},
    "attentional-pool": {"attentional_pool": True, "attn_pooler_queries": 4, "attn_pooler_heads": 2},
}


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_open_clip_vision_variants(variant):
    torch.manual_seed(0)
    visual = VisionTransformer(image_size=32, patch_size=8, width=48, layers=3, heads=4, mlp_ratio=4.0,
                               output_dim=16, **VARIANTS[variant]).eval()
    for p in visual.parameters():
        p.requires_grad_(False)
    tower = OpenClipVisionTower(visual)
    assert tower.blocks is not None
    assert tower.cls_only == (variant in ("tok", "layer-scale", "ln-after-pool"))
    assert_tower_matches(tower, visual)


def test_openai_vision_tower(tiny_models):
    model = tiny_models["openai-vit"]
    tower = model.visual
    assert isinstance(tower, OpenAIVisionTower) and tower.blocks is not None
    assert_tower_matches(tower, model.model.visual)


def test_custom_blocks_fall_back_to_the_module():
    torch.manual_seed(0)
    visual = VisionTransformer(image_size=32, patch_size=8, width=48, layers=2, heads=4, mlp_ratio=4.0,
                               output_dim=16, scale_attn=True).eval()
    assert not is_mha_block(visual.transformer.resblocks[0])
    tower = OpenClipVisionTower(visual)
    assert tower.blocks is None
    with torch.no_grad():
        torch.testing.assert_close(tower(images()), visual(images()), rtol=1e-5, atol=1e-5)


def plain_block(block, x, mask=None):
    h = block.ln_1(x)
    x = x + block.attn(h, h, h, attn_mask=mask, need_weights=False)[0]
    return x + block.mlp(block.ln_2(x))


def test_block_step_with_past_equals_one_pass():
    """Cached keys/values of a shared prefix + the offset causal mask = all positions at once."""
    torch.manual_seed(0)
    block = torch.nn.Module()
    block.ln_1, block.ln_2 = torch.nn.LayerNorm(32), torch.nn.LayerNorm(32)
    block.attn = torch.nn.MultiheadAttention(32, 4, batch_first=True)
    block.mlp = torch.nn.Sequential(torch.nn.Linear(32, 64), torch.nn.GELU(), torch.nn.Linear(64, 32))
    block.eval()
    assert is_mha_block(block)
    x = torch.randn(3, 7, 32)
    x[:, :4] = x[:1, :4]  # the same 4-position prefix in every row, as in one template
    with torch.no_grad():
        expected = plain_block(block, x, torch.full((7, 7), float("-inf")).triu(1))
        _, past = block_step(block, x[:1, :4], None, causal_mask(0, 4, x.device))
        got, kv = block_step(block, x[:, 4:], past, causal_mask(4, 3, x.device))
        torch.testing.assert_close(got, expected[:, 4:], rtol=1e-5, atol=1e-5)
        assert kv[0].shape == (3, 4, 3, 8)
        last, _ = block_step(block, x[:, 4:], past, causal_mask(4, 3, x.device), rows=slice(-1, None))
        torch.testing.assert_close(last, expected[:, -1:], rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(run_blocks([block], x), plain_block(block, x), rtol=1e-5, atol=1e-5)
        first = run_blocks([block], x, last_rows=slice(0, 1))
        torch.testing.assert_close(first, plain_block(block, x)[:, :1], rtol=1e-5, atol=1e-5)
