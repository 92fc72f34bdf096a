"""OTI and OVI over open_clip's whole zoo: every architecture built tiny, loaded, checked for exactness.

For each architecture of ``open_clip.list_models()`` that ships with the pinned open_clip (its own
``model_configs``; crossgap's and the tests' configs are left out), :func:`crossgap.models.tiny.save_tiny`
writes a tiny random-init copy with the same tower types (no hub: timm trunks and Hugging Face
configs/tokenizers are built locally), ``crossgap.load_clip`` loads it from disk, and:

- OTI exact: the embeddings of "big red dog" in the three pseudo-token slots of
  "a photo of {} on the grass" give ``encode_text`` of the sentence, through the plain forward and
  the template encoder (prefix cache where the tower has one);
- OVI exact: an image's own patch embeddings as pseudo patches give ``encode_image``;
- refused: the method raises :class:`crossgap.models.TowerUnsupported` with a message naming the tower;
- wrong: the method ran and differs (beyond ``rtol = atol = 1e-5``) — must be 0; errors: the tiny
  build or the load failed (the message is printed).

Prints one line per architecture, then a markdown table per family (vision tower + text tower) with
the largest absolute difference to the model's own encoders over the family's exact checks.
Run: ``nice -n 10 python benchmarks/zoo.py`` (a few minutes on 2 CPU cores; one thread);
``--only NAME...`` checks some architectures; ``--json PATH`` writes the per-architecture rows.
"""

from __future__ import annotations

import argparse
import collections
import json
import logging
import tempfile
import time
from pathlib import Path

import torch

TEMPLATE, WORDS = "a photo of {} on the grass", "big red dog"
TOL = 1e-5


def zoo_names() -> list[str]:
    import open_clip

    own = {p.stem for p in (Path(open_clip.__file__).parent / "model_configs").glob("*.json")}
    return [name for name in open_clip.list_models() if name in own]


def family(model) -> tuple[str, str]:
    """``(vision family, text family)`` of a loaded wrapper, named by the towers' classes."""
    inner = model.model
    visual = inner.visual
    vision = type(visual).__name__
    if hasattr(visual, "trunk"):
        vision = f"timm {type(visual.trunk).__name__}"
    elif getattr(visual, "attn_pool", None) is not None:
        vision += " (attentional pool)"
    text_module = getattr(inner, "text", inner)
    if type(text_module).__name__ == "HFTextEncoder":
        text = f"HF {text_module.config.model_type}"
    else:
        causal = getattr(text_module, "attn_mask", None) is not None
        text = "causal" if causal else "bidirectional"
        if getattr(text_module, "cls_emb", None) is not None:
            text += " + CLS (CoCa)"
        text = f"open_clip text, {text}"
    return vision, text


def _diff(got: torch.Tensor, expected: torch.Tensor) -> tuple[bool, float]:
    return bool(torch.allclose(got, expected, rtol=TOL, atol=TOL)), float((got - expected).abs().max())


def check_oti(model) -> tuple[str, str]:
    from crossgap.models import TowerUnsupported

    try:
        ids = model.tokenize_template(TEMPLATE, 3)
    except TowerUnsupported as exc:
        return "refused", str(exc)
    bare = set(model.tokenizer("")[0].tolist())
    word_ids = torch.tensor([t for t in model.tokenizer(WORDS)[0].tolist() if t not in bare])
    if len(word_ids) != 3:
        return "error", f"'{WORDS}' is {len(word_ids)} tokens for this tokenizer"
    with torch.no_grad():
        sentence = TEMPLATE.format(WORDS)
        expected = model.encode_text(model.tokenizer([sentence, sentence]))
        pseudo = model.text.embed_tokens(word_ids.unsqueeze(0)).expand(2, -1, -1)
        plain = _diff(model.encode_with_pseudo_tokens(ids, pseudo), expected)
        cached = _diff(model.template_encoder(ids, 3)(pseudo), expected)
    ok = plain[0] and cached[0]
    return ("exact" if ok else "wrong"), max(plain[1], cached[1])


def check_ovi(model) -> tuple[str, str]:
    from crossgap.models import TowerUnsupported

    try:
        width = model.visual_token_embedding_dim
    except TowerUnsupported as exc:
        return "refused", str(exc)
    images = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = model.encode_image(images)
        patches = model.visual.embed_patches(images)
        ok, diff = _diff(model.encode_image_with_pseudo_tokens(patches), expected)
    return ("exact" if ok else "wrong"), diff


def check(name: str, root: Path) -> dict:
    from crossgap import load_clip
    from crossgap.models.tiny import save_tiny

    row = {"architecture": name}
    begin = time.perf_counter()
    try:
        tiny, directory = save_tiny(name, root / name)
        model = load_clip(tiny, directory, device="cpu")[0]
    except Exception as exc:  # the benchmark reports every failure; it never stops on one
        row.update(vision="?", text="?", oti="error", ovi="error", oti_note=f"{type(exc).__name__}: {exc}",
                   ovi_note="")
        return row
    row["vision"], row["text"] = family(model)
    for method, fn in (("oti", check_oti), ("ovi", check_ovi)):
        try:
            row[method], row[f"{method}_note"] = fn(model)
        except Exception as exc:
            row[method], row[f"{method}_note"] = "wrong", f"crashed: {type(exc).__name__}: {exc}"
    row["seconds"] = round(time.perf_counter() - begin, 2)
    return row


def table(rows: list[dict]) -> str:
    groups: dict[tuple[str, str], list[dict]] = collections.defaultdict(list)
    for row in rows:
        groups[(row["vision"], row["text"])].append(row)
    lines = ["| vision tower | text tower | architectures | OTI exact | OVI exact | refused with a message | "
             "wrong results | errors | max abs diff (OTI / OVI) |", "|---|---|---:|---:|---:|---|---:|---:|---|"]
    total = collections.Counter()
    for (vision, text), members in sorted(groups.items(), key=lambda kv: (-len(kv[1]), kv[0])):
        count = collections.Counter()
        refused = []
        for row in members:
            for method in ("oti", "ovi"):
                count[f"{method}_{row[method]}"] += 1
                if row[method] == "refused":
                    refused.append(method.upper())
        wrong = count["oti_wrong"] + count["ovi_wrong"]
        errors = sum(1 for r in members if r["oti"] == "error" or r["ovi"] == "error")
        refused_text = ", ".join(f"{m} {n}" for m, n in sorted(collections.Counter(refused).items())) or "—"
        diffs = []
        for method in ("oti", "ovi"):
            values = [r[f"{method}_note"] for r in members if isinstance(r[f"{method}_note"], float)]
            diffs.append(("0" if max(values) == 0 else f"{max(values):.0e}") if values else "—")
        lines.append(f"| {vision} | {text} | {len(members)} | {count['oti_exact']} | {count['ovi_exact']} | "
                     f"{refused_text} | {wrong} | {errors} | {' / '.join(diffs)} |")
        total.update(count, archs=len(members), wrong=wrong, errors=errors)
    lines.append(f"| **all** | | **{total['archs']}** | **{total['oti_exact']}** | **{total['ovi_exact']}** | "
                 f"OTI {total['oti_refused']}, OVI {total['ovi_refused']} | **{total['wrong']}** | "
                 f"**{total['errors']}** | |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--only", nargs="*", help="architectures to check (default: the whole zoo)")
    parser.add_argument("--json", type=Path, help="write the per-architecture rows here")
    args = parser.parse_args()
    torch.set_num_threads(1)
    logging.basicConfig(level=logging.ERROR)
    logging.getLogger().setLevel(logging.ERROR)  # open_clip warns about random init via the root logger
    import open_clip

    import crossgap.models  # noqa: F401  registers the towers

    names = args.only or zoo_names()
    print(f"open_clip {open_clip.__version__}: {len(names)} architectures", flush=True)
    rows = []
    with tempfile.TemporaryDirectory(prefix="crossgap-zoo-") as tmp:
        for name in names:
            row = check(name, Path(tmp))
            rows.append(row)
            print(f"{name:<40} {row['vision']:<34} {row['text']:<34} OTI {row['oti']:<7} OVI {row['ovi']:<7} "
                  f"{row.get('seconds', '')}", flush=True)
    print()
    print(table(rows))
    print("\nmessages (one per family and method):")
    seen = set()
    for row in rows:
        for method in ("oti", "ovi"):
            key = (row["vision"], row["text"], method, row[method])
            if row[method] in ("refused", "wrong", "error") and key not in seen:
                seen.add(key)
                print(f"- {row['architecture']} {method.upper()} {row[method]}: {row[f'{method}_note']}")
    if args.json:
        tmp_json = args.json.with_suffix(".tmp")
        tmp_json.write_text(json.dumps(rows, indent=1))
        tmp_json.replace(args.json)


if __name__ == "__main__":
    main()
