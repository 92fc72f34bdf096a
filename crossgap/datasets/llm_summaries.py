"""LLM summaries of long texts, with the reference implementation's prompts and sampling.

The reference (miccunifi/Cross-the-Gap, ``src/text_summarization.py``) summarises every gallery
document of IMDB, 20 Newsgroups and NanoBEIR with ``meta-llama/Llama-3.2-1B-Instruct`` through a
``transformers`` text-generation pipeline: one document at a time, fp16 on CUDA, a system and a user
message (:data:`REFERENCE_SYSTEM_PROMPT`, :data:`REFERENCE_PROMPT`), ``max_new_tokens=80`` and the
model's own generation config (for Llama-3.2-Instruct: sampling, with its temperature and top-p),
unseeded.  crossgap keeps the prompts, the length and the sampling, and makes the result
reproducible and resumable:

* **seeded per document**: before document ``k`` is generated the torch RNG is seeded with
  :func:`document_seed` ``(seed, key_k)``, so with ``batch_size=1`` (the default, as the reference)
  a summary depends on the seed and the document only, not on the order nor on a kill before it;
* **cached per document** in an append-only JSON-lines file (``{"key", "id", "summary"}``, flushed and
  fsync'ed after every batch), so a rerun after a kill generates only what is missing.  The key
  hashes the model, the prompts, the generation settings, the seed and the text: other settings never
  reuse a summary.  The file is also a summaries file for the ``summaries`` strategy
  (:func:`crossgap.datasets.longtext.load_summaries` reads its ``id``/``summary``);
* every setting that shaped the output (model, prompts, length, sampling as resolved from the model's
  ``generation_config.json``, seed, precision) is returned for the manifest metadata.

The generator is injectable (:class:`Generator`): tests pass a tiny callable instead of an LLM.
``transformers`` is imported only by :class:`TransformersGenerator`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Protocol, Sequence

from crossgap.datasets.errors import DatasetError
from crossgap.writes import write_failures

log = logging.getLogger(__name__)

#: the reference's system message (src/text_summarization.py of miccunifi/Cross-the-Gap)
REFERENCE_SYSTEM_PROMPT = (
    "You are a helpful assistant that summarizes long text to under 77 tokens without changing the meaning."
)
#: the reference's user message; ``{text}`` is the document (the same file)
REFERENCE_PROMPT = (
    "Please summarize this text to under 77 tokens: {text}. \n Start directly with the summarized text without "
    "anything else before"
)
#: the reference's model (a local copy of it: crossgap never downloads)
REFERENCE_MODEL = "meta-llama/Llama-3.2-1B-Instruct"
#: generation settings read from a model's ``generation_config.json`` (``None`` in LLMConfig: the model's)
SAMPLING_KEYS = ("do_sample", "temperature", "top_p", "top_k")

Messages = list[dict[str, str]]


class LongTextError(DatasetError):
    """A text-preparation step cannot run (missing summaries, missing model or dependency)."""


class LLMError(LongTextError):
    """A summary cannot be generated (no local model, missing dependency, a generator error)."""


@dataclass
class LLMConfig:
    """A local causal LM and how to prompt it.

    ``prompt`` holds ``{text}`` (and may hold ``{max_tokens}``, replaced by ``target_tokens``).
    ``do_sample`` / ``temperature`` / ``top_p`` / ``top_k``: ``None`` takes the model's generation
    config, as the reference's pipeline did.  ``seed``: see :func:`document_seed` (``None``: unseeded).
    ``precision``: model weights on CUDA (``fp16`` as the reference; ``bf16``, ``fp32``); fp32 on the CPU.
    """

    model: str
    prompt: str = REFERENCE_PROMPT
    system_prompt: str | None = REFERENCE_SYSTEM_PROMPT
    max_new_tokens: int = 80
    target_tokens: int = 77
    batch_size: int = 1
    cache: str | os.PathLike | None = None
    device: str | None = None
    seed: int | None = 0
    do_sample: bool | None = None
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    precision: str = "fp16"

    def messages(self, text: str) -> Messages:
        """The chat messages for ``text``: the system message (when set), then the user message."""
        user = self.prompt.replace("{max_tokens}", str(self.target_tokens)).replace("{text}", text)
        return ([{"role": "system", "content": self.system_prompt}] if self.system_prompt else []) + [
            {"role": "user", "content": user}]

    def sampling(self) -> dict[str, Any]:
        """Generation settings in effect: the model's ``generation_config.json``, overridden where set here."""
        resolved = {**model_generation_defaults(self.model), "max_new_tokens": self.max_new_tokens}
        for name in SAMPLING_KEYS:
            if getattr(self, name) is not None:
                resolved[name] = getattr(self, name)
        return resolved

    def key(self, text: str, sampling: Mapping[str, Any] | None = None) -> str:
        """Cache key of ``text``: sha256 of the model, prompts, generation settings, seed and text.

        ``sampling``: :meth:`sampling`, when the caller has it already (it reads a file).
        """
        model = Path(self.model).expanduser()
        blob = json.dumps([str(model.resolve()) if model.exists() else self.model, self.system_prompt, self.prompt,
                           self.target_tokens, dict(sampling) if sampling is not None else self.sampling(),
                           self.seed, self.batch_size, self.precision, text],
                          ensure_ascii=False, sort_keys=True)
        return hashlib.sha256(blob.encode("utf-8")).hexdigest()

    def record(self) -> dict[str, Any]:
        """What the manifest metadata records about the generation."""
        return {"model": str(self.model), "system_prompt": self.system_prompt, "prompt": self.prompt,
                "max_new_tokens": self.max_new_tokens, "sampling": self.sampling(), "seed": self.seed,
                "batch_size": self.batch_size, "precision": self.precision}


def model_generation_defaults(model: str | os.PathLike) -> dict[str, Any]:
    """The sampling keys of ``<model>/generation_config.json`` (``{}`` when there is none)."""
    path = Path(model).expanduser() / "generation_config.json"
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise LLMError(f"{path}: not a readable generation config ({exc})") from exc
    return {name: data[name] for name in SAMPLING_KEYS if name in data}


def document_seed(seed: int, key: str) -> int:
    """The RNG seed of one document: 63 bits of sha256(``seed``, the document's cache key)."""
    return int(hashlib.sha256(f"{seed}:{key}".encode()).hexdigest()[:16], 16) & (2**63 - 1)


class Generator(Protocol):
    """Summaries of a batch: ``generator(messages per document, seed or None) -> one text per document``."""

    def __call__(self, batch: Sequence[Messages], seed: int | None) -> list[str]: ...


class SummaryCache:
    """Append-only JSON-lines cache ``{"key", "id", "summary"}``; unreadable lines (a kill mid-write) are ignored."""

    def __init__(self, path: str | os.PathLike | None) -> None:
        self.path = Path(path) if path else None
        self.items: dict[str, str] = {}
        if self.path and self.path.is_file():
            for n, line in enumerate(self.path.read_text(encoding="utf-8").splitlines(), 1):
                try:
                    item = json.loads(line)
                    self.items[item["key"]] = item["summary"]
                except (json.JSONDecodeError, KeyError, TypeError):
                    log.warning("%s: line %d is not a cache entry; ignored", self.path, n)

    def add(self, entries: Mapping[str, tuple[str, str]]) -> None:
        """Store ``{key: (row id, summary)}`` in memory and append them to the file (flushed, fsync'ed)."""
        self.items.update({key: summary for key, (_, summary) in entries.items()})
        if self.path and entries:
            # a failed append (a full disk) names the cache; a cut last line is ignored when it is read back
            with write_failures(self.path):
                self.path.parent.mkdir(parents=True, exist_ok=True)
                with open(self.path, "a", encoding="utf-8") as f:
                    for key, (row_id, summary) in entries.items():
                        f.write(json.dumps({"key": key, "id": row_id, "summary": summary}, ensure_ascii=False) + "\n")
                    f.flush()
                    os.fsync(f.fileno())


def import_transformers(what: str) -> Any:
    """``transformers``, or an :class:`LLMError` naming what needs it."""
    try:
        import transformers
    except ImportError as exc:
        raise LLMError(
            f"{what} needs the optional dependency 'transformers' (pip install transformers); it is not installed"
        ) from exc
    return transformers


def _load_llm(config: LLMConfig) -> tuple[Any, Any, Any]:
    """``(tokenizer, model, device)`` from the local folder ``config.model``."""
    transformers = import_transformers("strategy 'llm'")
    from crossgap.utils import autocast_dtype, resolve_device

    path = Path(config.model).expanduser()
    if not (path / "config.json").is_file():
        raise LLMError(
            f"{path}: not a local transformers model folder (expected config.json, weights and tokenizer files "
            "as written by save_pretrained); models are never downloaded here"
        )
    device = resolve_device(config.device)
    tok = transformers.AutoTokenizer.from_pretrained(path, local_files_only=True)
    model = transformers.AutoModelForCausalLM.from_pretrained(
        path, local_files_only=True, dtype=autocast_dtype(device, config.precision))
    model.to(device).eval()
    tok.padding_side = "left"
    if tok.pad_token is None:
        if tok.eos_token is None:
            raise LLMError(f"{path}: the tokenizer has neither a pad nor an eos token")
        tok.pad_token = tok.eos_token
    return tok, model, device


def build_prompt(tok: Any, config: LLMConfig, text: str) -> str:
    """The prompt text for ``text``: the tokenizer's chat template when it has one, else the messages joined."""
    return render(tok, config.messages(text))


def render(tok: Any, messages: Messages) -> str:
    """``messages`` through the tokenizer's chat template (with the generation prompt), else as plain text."""
    if getattr(tok, "chat_template", None):
        return tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    system = [m["content"] for m in messages if m["role"] == "system"]
    user = [m["content"] for m in messages if m["role"] == "user"]
    return "".join(f"{s}\n\n" for s in system) + "\n".join(user) + "\n"


class TransformersGenerator:
    """A local ``transformers`` causal LM, loaded at the first call (never when every summary is cached)."""

    def __init__(self, config: LLMConfig) -> None:
        self.config = config
        self._loaded: tuple[Any, Any, Any] | None = None

    def __call__(self, batch: Sequence[Messages], seed: int | None) -> list[str]:
        import torch

        if self._loaded is None:
            self._loaded = _load_llm(self.config)
        tok, model, device = self._loaded
        chat = bool(getattr(tok, "chat_template", None))  # a chat template adds its own special tokens
        enc = tok([render(tok, m) for m in batch], return_tensors="pt", padding=True,
                  add_special_tokens=not chat).to(device)
        sampling = self.config.sampling()
        if seed is not None:
            torch.manual_seed(seed)
        with torch.inference_mode():
            out = model.generate(**enc, pad_token_id=tok.pad_token_id, **sampling)
        return tok.batch_decode(out[:, enc["input_ids"].shape[1]:], skip_special_tokens=True)


def llm_summaries(
    texts: Mapping[str, str], config: LLMConfig, generator: Generator | None = None
) -> tuple[dict[str, str], dict[str, Any]]:
    """Summaries ``{row id: summary}`` of ``texts`` and stats (``hits``, ``generated``, ``empty``, ``cache``).

    Documents are generated in ``config.batch_size`` batches in the order of ``texts``; each batch is
    seeded with :func:`document_seed` of its first document and appended to the cache when done.
    An empty generation keeps the original text (counted as ``empty``).  The stats carry
    :meth:`LLMConfig.record`.
    """
    cache = SummaryCache(config.cache)
    sampling = config.sampling()
    keys = {row_id: config.key(text, sampling) for row_id, text in texts.items()}
    todo = [row_id for row_id, key in keys.items() if key not in cache.items]
    stats: dict[str, Any] = {"hits": len(texts) - len(todo), "generated": len(todo), "empty": 0,
                             "cache": str(cache.path) if cache.path else None, **config.record()}
    if todo:
        generator = generator if generator is not None else TransformersGenerator(config)
        log.info("llm: generating %d summaries with %s (%d cached, seed %s)", len(todo), config.model,
                 stats["hits"], config.seed)
        for start in range(0, len(todo), max(config.batch_size, 1)):
            batch = todo[start : start + max(config.batch_size, 1)]
            seed = document_seed(config.seed, keys[batch[0]]) if config.seed is not None else None
            out = generator([config.messages(texts[row_id]) for row_id in batch], seed)
            if len(out) != len(batch):
                raise LLMError(f"llm: the generator returned {len(out)} summaries for {len(batch)} documents")
            cache.add({keys[row_id]: (row_id, summary.strip()) for row_id, summary in zip(batch, out)})
    summaries = {}
    for row_id, text in texts.items():
        summary = cache.items[keys[row_id]]
        if not summary:
            stats["empty"] += 1
        summaries[row_id] = summary or text
    if stats["empty"]:
        log.warning("llm: %d empty summaries; those rows keep their original text", stats["empty"])
    return summaries, stats
