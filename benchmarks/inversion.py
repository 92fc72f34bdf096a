"""OTI / OVI throughput: crossgap vs a naive reference loop, ViT-B/32 architecture, random weights.

The naive loop is what the reference implementation does: it tokenises the template at every
step and runs the text tower over the full 77-token context.  Both start from the same initial
tokens and use the same optimiser, so their losses must agree; the script prints samples/s for a
full inversion (OTI 150 steps, OVI 1000 steps, extrapolated from the timed steps), the speed-up,
and the final losses of both.

    python benchmarks/inversion.py [--batch 16] [--oti-steps 20] [--ovi-steps 5] [--device cpu]
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

from crossgap import load_clip
from crossgap.inversion import initial_tokens, oti, ovi
from crossgap.models.base import PLACEHOLDER, expand_pseudo_patches


def naive_oti(model, targets, init, steps, template="a photo of {}"):
    """Reference-style OTI: re-tokenise every step, full context, same AdamW."""
    m = model.model  # open_clip CLIP
    tokens = torch.nn.Parameter(init.clone().to(targets.device))
    opt = torch.optim.AdamW([tokens], lr=2e-2, weight_decay=0.01)
    targets = F.normalize(targets, dim=-1)
    losses = []
    for _ in range(steps):
        ids = model.tokenizer([template.format(PLACEHOLDER)] * targets.shape[0]).to(targets.device)
        x = m.token_embedding(ids)
        mask = (ids == model.placeholder_id).unsqueeze(-1)
        x = torch.where(mask, tokens.expand(-1, ids.shape[1], -1) if tokens.shape[1] == 1 else tokens, x)
        x = x + m.positional_embedding
        x = m.transformer(x, attn_mask=m.attn_mask)
        x = m.ln_final(x)
        x = x[torch.arange(x.shape[0]), ids.argmax(dim=-1)] @ m.text_projection
        per = 1 - (F.normalize(x, dim=-1) * targets).sum(-1)
        opt.zero_grad()
        per.sum().backward()
        opt.step()
        losses.append(per.detach())
    return torch.stack(losses, 1)


def naive_ovi(model, targets, init, steps):
    """Reference-style OVI: interpolate patches, class token, positions, full vision tower."""
    v = model.model.visual
    tokens = torch.nn.Parameter(init.clone().to(targets.device))
    opt = torch.optim.AdamW([tokens], lr=2e-2, weight_decay=0.01)
    targets = F.normalize(targets, dim=-1)
    losses = []
    for _ in range(steps):
        x = expand_pseudo_patches(tokens, v.positional_embedding.shape[0] - 1)
        x = torch.cat([v.class_embedding.expand(x.shape[0], 1, -1), x], 1) + v.positional_embedding
        x = v.transformer(v.ln_pre(x))
        x = v.ln_post(x[:, 0]) @ v.proj
        per = 1 - (F.normalize(x, dim=-1) * targets).sum(-1)
        opt.zero_grad()
        per.sum().backward()
        opt.step()
        losses.append(per.detach())
    return torch.stack(losses, 1)


def timed(fn):
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--oti-steps", type=int, default=20, help="timed steps (full OTI = 150)")
    parser.add_argument("--ovi-steps", type=int, default=5, help="timed steps (full OVI = 1000)")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    torch.manual_seed(0)
    model = load_clip("ViT-B-32", device=args.device)[0]
    dev = model.device
    with torch.no_grad():
        img = model.encode_image(torch.randn(args.batch, 3, 224, 224, device=dev))
        txt = model.encode_text(model.tokenizer([f"a photo of a thing number {i}" for i in range(args.batch)]).to(dev))

    rows = []
    init = initial_tokens(args.batch, 1, model.text_token_embedding_dim, seed=0)
    (_, ours), t_ours = timed(lambda: oti(img, model, steps=args.oti_steps, seed=0, progress=False))
    naive, t_naive = timed(lambda: naive_oti(model, img, init, args.oti_steps))
    rows.append(("OTI", 150, t_ours / args.oti_steps, t_naive / args.oti_steps, ours, naive))

    init = initial_tokens(args.batch, 1, model.visual_token_embedding_dim, seed=0)
    (_, ours), t_ours = timed(lambda: ovi(txt, model, steps=args.ovi_steps, seed=0, progress=False))
    naive, t_naive = timed(lambda: naive_ovi(model, txt, init, args.ovi_steps))
    rows.append(("OVI", 1000, t_ours / args.ovi_steps, t_naive / args.ovi_steps, ours, naive))

    print(f"ViT-B/32 (random weights), batch {args.batch}, device {dev}, torch threads {torch.get_num_threads()}")
    print(f"{'method':6} {'s/step ours':>12} {'s/step naive':>13} {'samples/s ours':>15} "
          f"{'samples/s naive':>16} {'speed-up':>9} {'final loss ours':>16} {'final loss naive':>17} {'max |Δloss|':>12}")
    for name, full, s_ours, s_naive, l_ours, l_naive in rows:
        sps_ours = args.batch / (s_ours * full)
        sps_naive = args.batch / (s_naive * full)
        print(f"{name:6} {s_ours:12.3f} {s_naive:13.3f} {sps_ours:15.3f} {sps_naive:16.3f} "
              f"{s_naive / s_ours:8.2f}x {float(l_ours[:, -1].mean()):16.5f} {float(l_naive[:, -1].mean()):17.5f} "
              f"{float((l_ours - l_naive.cpu()).abs().max()):12.2e}")
    print("samples/s = batch / (seconds per step x full steps: OTI 150, OVI 1000)")


if __name__ == "__main__":
    main()
