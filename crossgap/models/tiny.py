"""Tiny random-init copies of open_clip architectures, saved to disk: same tower types, small widths.

For tests and ``benchmarks/zoo.py``: :func:`save_tiny` turns the config of an architecture of
``open_clip.list_models()`` into a small one (a few layers of width 32, 32 px images) that keeps
every tower type — the open_clip ``VisionTransformer`` / ``ModifiedResNet`` / ``TextTransformer``
with all their options, the timm trunk of the same timm family (a tiny timm entrypoint that calls
the architecture's own entrypoint with small sizes), the Hugging Face text model of the same
``model_type`` (a tiny config written to a local directory: no hub), CoCa's multimodal decoder —
registers it with open_clip as ``<name>-tiny``, and writes a directory that
``crossgap.load_clip("<name>-tiny", directory)`` reads: the random-init checkpoint and, for
architectures with a Hugging Face tokenizer, a tiny SentencePiece-style tokenizer (the same special
tokens at the ids the tower expects; words of :data:`WORDS`).  Nothing is downloaded.

The shrinking rules are registries keyed by the timm module of an entrypoint
(:data:`TIMM_TINY_KWARGS`) and by the Hugging Face ``model_type`` (:data:`HF_TINY_CONFIGS`).
"""

from __future__ import annotations

import copy
import json
import logging
from pathlib import Path
from typing import Any, Callable

import torch

log = logging.getLogger(__name__)

WORDS = "a photo of on the grass big red dog cat".split()
IMAGE_SIZE = 32
TINY_VOCAB = 64  # vocabulary of the tiny Hugging Face tokenizers / text models

_VIT = dict(img_size=IMAGE_SIZE, patch_size=8, embed_dim=32, depth=2, num_heads=2)
# timm module of the architecture's entrypoint -> keyword arguments that make it tiny
TIMM_TINY_KWARGS: dict[str, dict[str, Any]] = {
    "vision_transformer": _VIT,
    "vision_transformer_relpos": _VIT,
    "eva": {**_VIT, "attn_pool_num_heads": 2},
    # convolutional stems (stride 16) whose output width is the ViT's: only depth and image size shrink
    "vision_transformer_hybrid": dict(img_size=IMAGE_SIZE, depth=2),
    "vitamin": dict(img_size=IMAGE_SIZE, depth=2),
    "swin_transformer": dict(img_size=IMAGE_SIZE, patch_size=4, window_size=4, embed_dim=16, depths=(1, 1),
                             num_heads=(1, 2)),
    "convnext": dict(depths=(1, 1, 1, 1), dims=(8, 16, 32, 64)),
    "fastvit": dict(layers=(1, 1, 1, 1), embed_dims=(8, 16, 32, 64)),
}
# open_clip's hf_model_name -> Hugging Face model_type (what the tiny config is built as)
HF_MODEL_TYPES: dict[str, str] = {
    "roberta-base": "roberta",
    "xlm-roberta-base": "xlm-roberta",
    "xlm-roberta-large": "xlm-roberta",
    "google/mt5-base": "mt5",
    "google/mt5-xl": "mt5",
    "facebook/nllb-200-distilled-600M": "m2m_100",
    "facebook/nllb-200-distilled-1.3B": "m2m_100",
}
# special token ids of the tiny tokenizers: pad 0, eos 1 (2 where the tower pools at eos_id 2), unk, bos
_HF_IDS = dict(pad_token_id=0, eos_token_id=1, bos_token_id=3)


def _bert_like(cls_name: str) -> Callable[[], Any]:
    def build():
        import transformers

        return getattr(transformers, cls_name)(
            vocab_size=TINY_VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
            max_position_embeddings=96, type_vocab_size=1, **_HF_IDS)

    return build


def _mt5() -> Any:
    from transformers import MT5Config

    return MT5Config(vocab_size=TINY_VOCAB, d_model=32, d_kv=16, d_ff=64, num_layers=2, num_decoder_layers=1,
                     num_heads=2, decoder_start_token_id=0, pad_token_id=0, eos_token_id=1)


def _m2m_100() -> Any:
    from transformers import M2M100Config

    return M2M100Config(vocab_size=TINY_VOCAB, d_model=32, encoder_layers=2, decoder_layers=1,
                        encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=64, decoder_ffn_dim=64,
                        max_position_embeddings=96, scale_embedding=True, decoder_start_token_id=1, **_HF_IDS)


HF_TINY_CONFIGS: dict[str, Callable[[], Any]] = {
    "roberta": _bert_like("RobertaConfig"),
    "xlm-roberta": _bert_like("XLMRobertaConfig"),
    "mt5": _mt5,
    "m2m_100": _m2m_100,
}
# how the tiny tokenizer frames a text for each model_type (the first token is what a CLS pooler reads)
_HF_FRAMES = {"roberta": "<s> $A </s>", "xlm-roberta": "<s> $A </s>", "m2m_100": "<s> $A </s>", "mt5": "$A </s>"}


def tiny_timm_name(name: str) -> str:
    """Register (once) and return a tiny timm entrypoint calling timm's ``name`` with small sizes."""
    import timm

    tiny = f"crossgap_tiny__{name}"
    if timm.is_model(tiny):
        return tiny
    modules = [m for m in TIMM_TINY_KWARGS if name in timm.list_models(module=m)]
    if not modules:
        raise KeyError(f"no tiny sizes for the timm module of {name}; add them to TIMM_TINY_KWARGS")
    sizes = TIMM_TINY_KWARGS[modules[0]]

    def entrypoint(pretrained: bool = False, **kwargs):
        kwargs = {k: v for k, v in kwargs.items() if k not in ("pretrained_cfg", "pretrained_cfg_overlay", "cache_dir")}
        return timm.create_model(name, pretrained=False, **{**sizes, **kwargs})

    entrypoint.__name__ = tiny
    entrypoint.__module__ = __name__
    timm.models.register_model(entrypoint)
    return tiny


def _tiny_vision(v: dict[str, Any]) -> dict[str, Any]:
    v = dict(v, image_size=IMAGE_SIZE)
    if "timm_model_name" in v:
        return dict(v, timm_model_name=tiny_timm_name(v["timm_model_name"]), timm_model_pretrained=False)
    if isinstance(v.get("layers"), (list, tuple)):  # ModifiedResNet
        return dict(v, layers=[1, 1, 1, 1], width=16, head_width=16)
    v.update(layers=2, width=32, head_width=16, patch_size=8)
    if "attn_pooler_heads" in v:
        v["attn_pooler_heads"] = 2
    return v


def _tiny_text(t: dict[str, Any], root: Path) -> dict[str, Any]:
    if "hf_model_name" in t:
        model_type = HF_MODEL_TYPES[t["hf_model_name"]]
        config_dir = root / "hf_config"
        HF_TINY_CONFIGS[model_type]().save_pretrained(str(config_dir))
        return dict(t, hf_model_name=str(config_dir), hf_tokenizer_name=str(root))
    t = dict(t, width=32, heads=2, layers=2)
    if "hf_tokenizer_name" in t:
        t["vocab_size"] = TINY_VOCAB
    return t


def tiny_config(name: str, root: Path) -> dict[str, Any]:
    """The open_clip config of ``name`` made tiny (Hugging Face configs are written under ``root``)."""
    import open_clip

    cfg = copy.deepcopy(open_clip.get_model_config(name))
    if cfg is None:
        raise KeyError(f"unknown open_clip architecture {name!r}")
    cfg["embed_dim"] = 16
    cfg["vision_cfg"] = _tiny_vision(cfg["vision_cfg"])
    cfg["text_cfg"] = _tiny_text(cfg["text_cfg"], root)
    if "multimodal_cfg" in cfg:  # CoCa's decoder
        cfg["multimodal_cfg"] = dict(cfg["multimodal_cfg"], width=32, heads=2, layers=1, attn_pooler_heads=2)
    return cfg


def save_tokenizer(directory: Path, *, eos_id: int = 1, frame: str = "$A </s>") -> Path:
    """A tiny SentencePiece-style (Unigram, Metaspace) tokenizer with a one-piece ``▁£`` placeholder.

    Ids: ``<pad>`` 0, ``</s>`` ``eos_id``, then ``<unk>``, ``<s>``, the words of :data:`WORDS`, letters.
    ``frame``: the post-processing template (``"<s> $A </s>"`` puts a CLS-like token first).
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    specials = ["<pad>", "<unk>", "<s>"]
    specials.insert(eos_id, "</s>")
    vocab = [(s, 0.0) for s in specials] + [("\u2581" + w, -2.0) for w in WORDS]
    vocab += [("\u2581", -3.0), ("\u2581£", -4.0)] + [(c, -5.0) for c in "abcdefghijklmnopqrstuvwxyz"]
    ids = {piece: i for i, (piece, _) in enumerate(vocab)}
    tok = Tokenizer(models.Unigram(vocab, unk_id=ids["<unk>"]))
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme="always")
    tok.decoder = decoders.Metaspace(replacement="\u2581", prepend_scheme="always")
    tok.post_processor = processors.TemplateProcessing(
        single=frame, special_tokens=[(s, ids[s]) for s in ("<s>", "</s>") if s in frame])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="</s>", pad_token="<pad>", unk_token="<unk>",
                                   bos_token="<s>", sep_token="</s>", cls_token="<s>")
    directory.mkdir(parents=True, exist_ok=True)
    fast.save_pretrained(str(directory))
    return directory


def save_tiny(name: str, root: Path, *, seed: int = 0) -> tuple[str, Path]:
    """Write a tiny random-init ``name`` under ``root``; returns ``(tiny_name, directory)`` for ``load_clip``.

    The config is registered with open_clip as ``tiny_name`` (``<name>-tiny``); ``directory`` holds
    ``open_clip_pytorch_model.bin`` and, when the architecture uses a Hugging Face tokenizer, the
    tiny tokenizer's files (found there by :func:`crossgap.models.tokenizers.open_clip_tokenizer`).
    """
    import open_clip

    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    tiny_name = f"{name}-tiny"
    cfg = tiny_config(name, root)
    config_path = root / f"{tiny_name}.json"
    tmp = config_path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(cfg, indent=1))
    tmp.replace(config_path)
    open_clip.add_model_config(config_path)
    text = cfg["text_cfg"]
    if "hf_tokenizer_name" in text:
        model_type = HF_MODEL_TYPES.get(open_clip.get_model_config(name)["text_cfg"].get("hf_model_name", ""))
        save_tokenizer(root, eos_id=int(text.get("eos_id", 1)), frame=_HF_FRAMES.get(model_type, "$A </s>"))
    with torch.random.fork_rng(devices=[]):  # the caller's random state is left as it was
        torch.manual_seed(seed)
        model = open_clip.create_model(tiny_name, pretrained_text=False)
    checkpoint = root / "open_clip_pytorch_model.bin"
    torch.save(model.state_dict(), checkpoint.with_suffix(".tmp"))
    checkpoint.with_suffix(".tmp").replace(checkpoint)
    return tiny_name, root
