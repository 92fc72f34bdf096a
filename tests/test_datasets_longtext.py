"""Long-text preparation: truncate (words / tokenizer), user summaries, and a tiny local LLM with its cache."""

from __future__ import annotations

import json
import logging
import pickle
import sys

import pytest
from fixtures_text_datasets import make_imdb, make_nanobeir

from crossgap.datasets import get_adapter, read_manifest, write_manifest
from crossgap.datasets import llm_summaries, longtext
from crossgap.datasets.longtext import (
    LLMConfig,
    LongTextError,
    fit_words,
    load_summaries,
    make_counter,
    prepare_text_manifest,
    prepare_texts,
    word_counter,
)

LONG = "one two three four five six seven eight nine ten eleven twelve"


def _imdb(tmp_path):
    make_imdb(tmp_path)
    return get_adapter("imdb_text").build(tmp_path)


def test_fit_words_keeps_whole_words_and_formatting():
    counter = word_counter(1.0)  # one token per word
    assert fit_words("a  b\nc d", 3, counter) == "a  b\nc"
    assert fit_words("short", 3, counter) == "short"
    assert fit_words(LONG, 0, counter) == ""
    clip = make_counter("clip")
    cut = fit_words(LONG * 10, 20, clip)
    assert clip.count(cut) <= 20 < clip.count(cut + " x y z") and LONG.startswith(cut[:20])


def test_truncate_approximates_by_words_and_says_so(tmp_path, caplog):
    df, meta = _imdb(tmp_path)
    df.loc[df["id"] == "corpus/2", "text"] = LONG
    with caplog.at_level(logging.WARNING):
        out, out_meta = prepare_texts(df, meta, context_length=12, special_tokens=2, counter=word_counter(1.0))
    assert "approximated by words (1.0 words/token)" in caplog.text
    rec = out_meta["text_preparation"][-1]
    assert rec["approximate"] is True and rec["token_budget"] == 10 and rec["n_texts"] == 6
    assert rec["n_over_budget"] == rec["n_cut"] == 1 and rec["over_budget_examples"] == ["corpus/2"]
    assert out.loc[out["id"] == "corpus/2", "text"].item() == "one two three four five six seven eight nine ten"
    assert out["id"].tolist() == df["id"].tolist() and df.loc[2 + 2, "text"] == LONG  # input untouched
    counted, _ = prepare_texts(df, meta, context_length=10, counter=word_counter(1.0), cut=False)
    assert counted["text"].tolist() == df["text"].tolist()


def test_truncate_with_a_tokenizer_callable(tmp_path):
    df, meta = _imdb(tmp_path)
    calls = []

    def tokenizer(text):  # one token per character, no special tokens
        calls.append(text)
        return list(text)

    counter = longtext.tokenizer_counter(tokenizer, "chars")
    out, out_meta = prepare_texts(df, meta, context_length=14, special_tokens=2, counter=counter, splits=["corpus"])
    rec = out_meta["text_preparation"][-1]
    assert rec["approximate"] is False and rec["tokenizer"] == "chars" and rec["splits"] == ["corpus"]
    assert all(len(t) <= 12 for t in out.loc[out["split"] == "corpus", "text"])
    assert out.loc[out["split"] == "query", "text"].tolist() == df.loc[df["split"] == "query", "text"].tolist()
    assert rec["n_cut"] == 3  # "Fine acting." has 12 characters and fits


@pytest.mark.parametrize("fmt", ["json", "csv", "jsonl", "pkl"])
def test_summaries_file_formats_and_keys(tmp_path, fmt):
    df, meta = _imdb(tmp_path)
    summaries = {"0": "good film", "corpus/1": "bad film", "2": "fine", "3": "waste"}  # short or full keys
    path = tmp_path / f"s.{fmt}"
    if fmt == "json":
        path.write_text(json.dumps(summaries))
    elif fmt == "csv":
        path.write_text("id,summary\n" + "".join(f'{k},"{v}"\n' for k, v in summaries.items()))
    elif fmt == "jsonl":
        path.write_text("".join(json.dumps({"id": k, "summary": v}) + "\n" for k, v in summaries.items()))
    else:
        path.write_bytes(pickle.dumps(summaries))
    assert load_summaries(path) == summaries
    out, out_meta = prepare_texts(df, meta, "summaries", summaries=path)
    assert out.loc[out["split"] == "corpus", "text"].tolist() == ["good film", "bad film", "fine", "waste"]
    assert out.loc[out["split"] == "query", "text"].tolist() == df.loc[df["split"] == "query", "text"].tolist()
    rec = out_meta["text_preparation"][-1]
    assert rec["n_replaced"] == 4 and rec["n_over_budget_after"] == 0 and rec["source"] == str(path)


def test_summaries_errors_name_missing_ids_and_bad_files(tmp_path):
    df, meta = _imdb(tmp_path)
    path = tmp_path / "s.json"
    path.write_text(json.dumps({"0": "x", "2": "y"}))
    with pytest.raises(LongTextError, match=r"s.json: no summary for 2 of 4 row\(s\), e.g. \['corpus/1', 'corpus/3'\]"):
        prepare_texts(df, meta, "summaries", summaries=path)
    (tmp_path / "evil.pkl").write_bytes(pickle.dumps({"0": print}))
    with pytest.raises(LongTextError, match=r"evil.pkl: refusing to load global builtins.print"):
        load_summaries(tmp_path / "evil.pkl")
    with pytest.raises(LongTextError, match="summaries file not found"):
        load_summaries(tmp_path / "none.json")


def _tiny_llm(folder, chat: bool):
    """A random-init GPT-2 with a 40-word word-level tokenizer, saved like a real checkpoint."""
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    words = ["[UNK]", "[PAD]", "[EOS]"] + sorted(
        set((LONG + " summarize the following text review film good bad " "fine waste of time acting one best").split())
    )
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", eos_token="[EOS]")
    if chat:
        fast.chat_template = "{% for m in messages %}{{ m['content'] }} {% endfor %}"
    fast.save_pretrained(folder)
    torch.manual_seed(0)
    config = GPT2Config(
        vocab_size=len(words),
        n_positions=512,
        n_embd=16,
        n_layer=1,
        n_head=2,
        bos_token_id=2,
        eos_token_id=2,
        pad_token_id=1,
    )
    GPT2LMHeadModel(config).save_pretrained(folder)
    return folder


def test_llm_summaries_are_batched_and_cached(tmp_path, monkeypatch):
    df, meta = _imdb(tmp_path)
    write_manifest(tmp_path / "in.parquet", df, meta)
    model = _tiny_llm(tmp_path / "tiny-llm", chat=True)
    cache = tmp_path / "cache.jsonl"
    config = LLMConfig(model=str(model), max_new_tokens=5, batch_size=3, cache=cache, device="cpu")
    out, out_meta = prepare_text_manifest(tmp_path / "in.parquet", tmp_path / "out.parquet", "llm", llm=config)
    rec = out_meta["text_preparation"][-1]
    assert rec["llm"]["generated"] == 4 and rec["llm"]["hits"] == 0 and rec["n_replaced"] == 4
    assert rec["source"] == str(model) and rec["input_manifest"] == str(tmp_path / "in.parquet")
    assert len(cache.read_text().splitlines()) == 4
    back, back_meta = read_manifest(tmp_path / "out.parquet")
    assert (
        back["text"].tolist() == out["text"].tolist() and back_meta["text_preparation"] == out_meta["text_preparation"]
    )
    assert back.loc[back["split"] == "query", "text"].tolist() == df.loc[df["split"] == "query", "text"].tolist()

    # a rerun is free: everything comes from the cache and the model is never loaded
    def no_model(_config):
        raise AssertionError("model loaded although every summary is cached")

    monkeypatch.setattr(llm_summaries, "_load_llm", no_model)
    again, again_meta = prepare_texts(df, meta, "llm", llm=config)
    assert again["text"].tolist() == out["text"].tolist()
    assert again_meta["text_preparation"][-1]["llm"]["hits"] == 4
    # a different prompt is a different cache key
    with pytest.raises(AssertionError, match="model loaded"):
        prepare_texts(df, meta, "llm", llm=LLMConfig(model=str(model), prompt="Shorten: {text}", cache=cache))


def test_llm_plain_prompt_and_clear_errors(tmp_path, monkeypatch):
    df, meta = _imdb(tmp_path)
    model = _tiny_llm(tmp_path / "plain", chat=False)
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model)
    prompt = longtext.build_prompt(tok, LLMConfig(model=str(model), system_prompt=None, prompt="S: {text}"), "abc")
    assert prompt == "S: abc\n"
    out, _ = prepare_texts(
        df,
        meta,
        "llm",
        splits=["corpus"],
        only_long=False,
        llm=LLMConfig(model=str(model), max_new_tokens=3, device="cpu"),
    )
    assert out.loc[out["split"] == "corpus", "text"].str.len().gt(0).all()
    with pytest.raises(LongTextError, match="not a local transformers model folder"):
        prepare_texts(df, meta, "llm", llm=LLMConfig(model=str(tmp_path / "nowhere")))
    monkeypatch.setitem(sys.modules, "transformers", None)
    with pytest.raises(LongTextError, match="optional dependency 'transformers'"):
        prepare_texts(df, meta, "llm", llm=LLMConfig(model=str(model)))


def test_default_rows_follow_the_protocol(tmp_path):
    make_nanobeir(tmp_path, "SciFact")
    df, meta = get_adapter("nano_scifact").build(tmp_path)
    summaries = {f"d{i}": f"summary {i}" for i in range(1, 6)}  # corpus only: queries are left alone
    out, out_meta = prepare_texts(df, meta, "summaries", summaries=summaries)
    assert out_meta["text_preparation"][-1]["splits"] == ["corpus"]
    assert out.loc[out["split"] == "queries", "text"].tolist() == df.loc[df["split"] == "queries", "text"].tolist()
    with pytest.raises(LongTextError, match=r"no text rows in split\(s\) \['test'\]"):
        prepare_texts(df, meta, splits=["test"])
    long_only, rec_meta = prepare_texts(
        df.assign(text=df["text"].where(df["id"] != "corpus/d3", LONG)),
        meta,
        "summaries",
        summaries={"d3": "short"},
        only_long=True,
        counter=word_counter(1.0),
        context_length=10,
    )
    assert long_only.loc[long_only["id"] == "corpus/d3", "text"].item() == "short"
    assert rec_meta["text_preparation"][-1]["n_texts"] == 1
