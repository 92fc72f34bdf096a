"""Fit long texts (reviews, news posts, BEIR documents) to a text tower's context.

CLIP-style text towers read at most 77 tokens (SigLIP: 64), start/end tokens included.
:func:`prepare_texts` rewrites the ``text`` of chosen manifest rows with one strategy and
records what it did in the metadata list ``text_preparation`` (one entry per step):

``truncate`` (default)
    Cut each text longer than the budget (``context_length - special_tokens`` tokens) to
    its longest whole-word prefix that fits, and record how many were cut. Token counts
    come from a tokenizer (``tokenizer(text) -> token ids`` without special tokens; see
    :func:`make_counter`: ``clip`` = CLIP's BPE, ``hf:<local path>`` = a Hugging Face
    tokenizer); without one they are *approximated by words* (``words_per_token``) and the
    record says ``"approximate": true``.
``summaries``
    Replace texts by user-supplied summaries: a file mapping row id -> summary (JSON
    object, JSON lines ``{"id", "summary"}``, CSV with columns ``id,summary``, or a pickled
    dict). A key may be the full row id (``corpus/123``) or the dataset's own key (``123``).
    Every chosen row needs one; the error names the missing ids.
``llm``
    Summarise with a local ``transformers`` causal LM (:class:`LLMConfig`), by default with the
    reference implementation's prompts, length and sampling, seeded per document and cached per
    document so that a rerun (after a kill too) only generates what is missing: see
    :mod:`crossgap.datasets.llm_summaries`.

By default ``truncate`` handles every text row, while ``summaries`` and ``llm`` handle the
``text_retrieval`` gallery rows (as in the paper, queries are short); ``splits`` and
``only_long`` change that. Row ids never change.
"""

from __future__ import annotations

import copy
import json
import logging
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

import pandas as pd

from crossgap.datasets.llm_summaries import (  # noqa: F401  (LLMConfig, build_prompt: public through this module)
    LLMConfig,
    LongTextError,
    build_prompt,
    import_transformers,
    llm_summaries,
)
from crossgap.datasets.manifest import read_manifest, write_manifest
from crossgap.datasets.rows import strip_split
from crossgap.datasets.selection import select
from crossgap.safe_pickle import UnsafePickleError, restricted_load

log = logging.getLogger(__name__)

STRATEGIES: tuple[str, ...] = ("truncate", "summaries", "llm")
DEFAULT_CONTEXT_LENGTH = 77
DEFAULT_SPECIAL_TOKENS = 2  # start and end of text
DEFAULT_WORDS_PER_TOKEN = 0.75
_WORD = re.compile(r"\S+")


# --------------------------------------------------------------------------- token counting


@dataclass(frozen=True)
class TokenCounter:
    """Counts the tokens of a text (special tokens excluded); ``exact`` is False for estimates."""

    name: str
    count: Callable[[str], int]
    exact: bool = True


def word_counter(words_per_token: float = DEFAULT_WORDS_PER_TOKEN) -> TokenCounter:
    """Estimate: ``ceil(words / words_per_token)`` tokens."""
    if words_per_token <= 0:
        raise ValueError(f"words_per_token must be > 0, got {words_per_token}")
    return TokenCounter(
        f"words ({words_per_token} words/token)",
        lambda text: math.ceil(len(_WORD.findall(text)) / words_per_token),
        exact=False,
    )


def tokenizer_counter(tokenizer: Callable[[str], Sequence[int]], name: str = "tokenizer") -> TokenCounter:
    """Exact counts from ``tokenizer(text) -> token ids`` (without special tokens)."""
    return TokenCounter(name, lambda text: len(tokenizer(text)))


def make_counter(spec: str | None = None, words_per_token: float = DEFAULT_WORDS_PER_TOKEN) -> TokenCounter:
    """``None``/``"words"``: word estimate; ``"clip"``: CLIP's BPE (bundled with open_clip);
    ``"hf:<local path>"``: a saved Hugging Face tokenizer."""
    if spec in (None, "", "words"):
        return word_counter(words_per_token)
    if spec == "clip":
        from open_clip.tokenizer import SimpleTokenizer

        return tokenizer_counter(SimpleTokenizer().encode, "clip")
    if spec.startswith("hf:"):
        path = spec[3:]
        transformers = import_transformers("tokenizer 'hf:'")
        tok = transformers.AutoTokenizer.from_pretrained(path, local_files_only=True)
        return tokenizer_counter(lambda text: tok(text, add_special_tokens=False)["input_ids"], spec)
    raise ValueError(f"unknown tokenizer {spec!r}; use 'words', 'clip' or 'hf:<local path>'")


def fit_words(text: str, budget: int, counter: TokenCounter) -> str:
    """The longest whole-word prefix of ``text`` with at most ``budget`` tokens (binary search)."""
    if counter.count(text) <= budget:
        return text
    ends = [m.end() for m in _WORD.finditer(text)]
    # the first lo words fit, hi words do not; a word is at least one token, so budget + 1 words never fit
    lo, hi = 0, min(len(ends), budget + 1)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if counter.count(text[: ends[mid - 1]]) <= budget:
            lo = mid
        else:
            hi = mid
    return text[: ends[lo - 1]].strip() if lo else ""


# --------------------------------------------------------------------------- summaries files


def load_summaries(path: str | os.PathLike) -> dict[str, str]:
    """Read a summaries file (by suffix: ``.json``, ``.jsonl``, ``.csv``, ``.pkl``/``.pickle``)."""
    path = Path(path)
    if not path.is_file():
        raise LongTextError(f"{path}: summaries file not found")
    suffix = path.suffix.lower()
    try:
        if suffix == ".json":
            data = json.loads(path.read_text(encoding="utf-8"))
        elif suffix == ".jsonl":
            data = {}
            for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
                if line.strip():
                    item = json.loads(line)
                    if not isinstance(item, dict) or "id" not in item or "summary" not in item:
                        raise LongTextError(f'{path}: line {n}: expected {{"id": ..., "summary": ...}}')
                    data[str(item["id"])] = item["summary"]
        elif suffix == ".csv":
            table = pd.read_csv(path, dtype=str, keep_default_na=False)
            if not {"id", "summary"} <= set(table.columns):
                raise LongTextError(f"{path}: expected columns 'id' and 'summary', found {list(table.columns)}")
            data = dict(zip(table["id"], table["summary"]))
        elif suffix in (".pkl", ".pickle"):
            data = restricted_load(path, allowed=())  # plain dicts of str only (the reference's pickles)
        else:
            raise LongTextError(f"{path}: unknown summaries format {suffix!r}; use .json, .jsonl, .csv or .pkl")
    except (json.JSONDecodeError, UnsafePickleError, pd.errors.ParserError, UnicodeDecodeError, EOFError) as exc:
        raise LongTextError(f"{path}: cannot read summaries ({type(exc).__name__}: {exc})") from exc
    if not isinstance(data, dict) or not all(isinstance(v, str) for v in data.values()):
        raise LongTextError(f"{path}: expected a mapping of row id -> summary text")
    return {str(k): v for k, v in data.items()}


def match_summaries(ids: Iterable[str], summaries: Mapping[str, str], source: str) -> dict[str, str]:
    """Summary of each row id (by full id, else the id without its split); error naming the missing."""
    out, missing = {}, []
    for row_id in ids:
        text = summaries.get(row_id, summaries.get(strip_split(row_id)))
        if text is None:
            missing.append(row_id)
        else:
            out[row_id] = text
    if missing:
        raise LongTextError(
            f"{source}: no summary for {len(missing)} of {len(missing) + len(out)} row(s), e.g. {missing[:10]} "
            "(keys may be full row ids or the part after '<split>/')"
        )
    return out


# --------------------------------------------------------------------------- the step


def default_rows(df: pd.DataFrame, meta: Mapping[str, Any], strategy: str, splits: Sequence[str] | None) -> pd.Series:
    """Mask of the text rows a strategy handles (see the module docstring)."""
    texts = df["modality"] == "text"
    if splits:
        unknown = sorted(set(splits) - set(df.loc[texts, "split"]))
        if unknown:
            raise LongTextError(f"{meta.get('dataset')!r}: no text rows in split(s) {unknown}")
        return texts & df["split"].isin(list(splits))
    spec = (meta.get("protocol") or {}).get("text_retrieval")
    if strategy != "truncate" and spec and "gallery" in spec:
        mask = pd.Series(False, index=df.index)
        mask[select(df, "text", spec["gallery"]).index] = True
        return mask
    return texts


def prepare_texts(
    df: pd.DataFrame,
    meta: Mapping[str, Any],
    strategy: str = "truncate",
    *,
    context_length: int = DEFAULT_CONTEXT_LENGTH,
    special_tokens: int = DEFAULT_SPECIAL_TOKENS,
    counter: TokenCounter | None = None,
    splits: Sequence[str] | None = None,
    only_long: bool = False,
    cut: bool = True,
    summaries: str | os.PathLike | Mapping[str, str] | None = None,
    llm: LLMConfig | None = None,
    generator: Any = None,
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """A copy of ``(df, meta)`` with the chosen texts rewritten by ``strategy`` and the step recorded.

    ``cut=False`` (truncate only) counts without changing any text.  ``generator``: the ``llm``
    strategy's :class:`crossgap.datasets.llm_summaries.Generator` (default: ``llm.model`` loaded locally).
    """
    if strategy not in STRATEGIES:
        raise ValueError(f"strategy must be one of {STRATEGIES}, got {strategy!r}")
    budget = context_length - special_tokens
    if budget < 1:
        raise ValueError(f"context_length {context_length} leaves no room after {special_tokens} special tokens")
    if counter is None:
        counter = word_counter()
    if not counter.exact:
        log.warning("no model tokenizer given: token counts are approximated by %s", counter.name)
    df, meta = df.copy(), copy.deepcopy(dict(meta))
    mask = default_rows(df, meta, strategy, splits)
    over = pd.Series(False, index=df.index)
    over[mask] = [counter.count(t) > budget for t in df.loc[mask, "text"]]
    if only_long:
        mask &= over
    record: dict[str, Any] = {
        "strategy": strategy,
        "context_length": context_length,
        "special_tokens": special_tokens,
        "token_budget": budget,
        "tokenizer": counter.name,
        "approximate": not counter.exact,
        "splits": sorted(set(df.loc[mask, "split"])),
        "only_long": only_long,
        "n_texts": int(mask.sum()),
        "n_over_budget": int((over & mask).sum()),
        "over_budget_examples": df.loc[over & mask, "id"].head(10).tolist(),
    }
    ids = df.loc[mask, "id"].tolist()
    if strategy == "truncate":
        long_rows = over & mask
        if cut:
            df.loc[long_rows, "text"] = [fit_words(t, budget, counter) for t in df.loc[long_rows, "text"]]
        record.update(n_cut=int(long_rows.sum()) if cut else 0, cut=cut)
        log.info(
            "truncate: %d of %d texts exceed %d tokens%s",
            record["n_over_budget"],
            len(ids),
            budget,
            "; cut" if cut else "",
        )
    else:
        if strategy == "summaries":
            if summaries is None:
                raise LongTextError("strategy 'summaries' needs a summaries file")
            source = str(summaries) if not isinstance(summaries, Mapping) else "<summaries>"
            given = summaries if isinstance(summaries, Mapping) else load_summaries(summaries)
            new = match_summaries(ids, given, source)
            record["source"] = source
        else:
            if llm is None:
                raise LongTextError("strategy 'llm' needs an LLMConfig (a local model path)")
            new, stats = llm_summaries(dict(zip(ids, df.loc[mask, "text"])), llm, generator)
            record.update(source=str(llm.model), llm=stats)
        df.loc[mask, "text"] = [new[i] for i in ids]
        still = [i for i in ids if counter.count(new[i]) > budget]
        record.update(n_replaced=len(ids), n_over_budget_after=len(still), over_budget_after_examples=still[:10])
        if still:
            log.warning(
                "%s: %d of %d new texts still exceed %d tokens (the encoder will cut them)",
                strategy,
                len(still),
                len(ids),
                budget,
            )
    meta["text_preparation"] = [*meta.get("text_preparation", []), record]
    return df, meta


def prepare_text_manifest(
    manifest: str | os.PathLike, out: str | os.PathLike, strategy: str = "truncate", **kwargs: Any
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Read ``manifest``, :func:`prepare_texts` it, write the result to ``out`` (atomically)."""
    df, meta = read_manifest(manifest)
    df, meta = prepare_texts(df, meta, strategy, **kwargs)
    meta["text_preparation"][-1]["input_manifest"] = str(manifest)
    write_manifest(out, df, meta)
    return df, meta
