"""The text-preparation step (datasets.<name>.text): planning, truncate, the reference's summaries, the LLM
strategy with a fake generator (prompts, seeds, resume after a kill), NanoBEIR titles, and the report's note."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import pytest
import yaml
from fixtures_text_datasets import make_imdb, make_nanobeir

from crossgap import plan
from crossgap.config import ConfigError, load_params, text_options, text_settings
from crossgap.datasets import get_adapter, read_manifest, write_manifest
from crossgap.datasets.llm_summaries import REFERENCE_PROMPT, REFERENCE_SYSTEM_PROMPT, document_seed
from crossgap.datasets.longtext import LongTextError
from crossgap.datasets.textprep import prepare_text_step, texts_summary
from crossgap.metrics.results import write_result
from crossgap.steps.report import text_preparation_notes

REPO = Path(__file__).resolve().parents[1]
LONG_TEXT_DATASETS = ["imdb_text", "nano_climatefever", "nano_dbpedia", "nano_fever", "nano_nfcorpus", "nano_nq",
                      "nano_scidocs", "nano_scifact", "newsgroup_text"]
#: the IMDB fixture's corpus as the manifest holds it (stripped reviews)
IMDB_CORPUS = ["One of the best films, truly.<br /><br />Go see it.", 'A "terrible", boring movie,\nwith commas.',
               "Fine acting.", "Waste of time."]


@pytest.fixture
def imdb(tmp_path) -> Path:
    make_imdb(tmp_path)
    df, meta = get_adapter("imdb_text").build(tmp_path)
    source = tmp_path / "imdb_text.source.parquet"
    write_manifest(source, df, meta)
    return source


def _corpus(path: Path) -> list[str]:
    df, _ = read_manifest(path)
    return df.loc[df["split"] == "corpus", "text"].tolist()


# --------------------------------------------------------------------------- planning
def test_the_paper_grid_summarises_the_nine_long_text_datasets():
    paper = load_params(REPO / "params/paper.yaml")
    with_step = [d for d in sorted(paper["datasets"]) if plan.has_text_step(paper, d)]
    assert with_step == LONG_TEXT_DATASETS
    assert plan.dataset_pattern(paper, text_step=True) == "|".join(LONG_TEXT_DATASETS)
    assert "imagenet" in plan.dataset_pattern(paper, text_step=False).split("|")
    assert plan.text_options(paper, "nano_scifact") == {
        "strategy": "summaries",
        "path": "Cross-the-Gap/data/summarized_texts/NanoSciFact/gallery/meta-llama_Llama-3.2-1B-Instruct/"
                "summarized_text.pkl"}
    assert plan.text_step_gpus(paper, "nano_scifact") == 0
    # the source manifest's params do not carry the text settings: changing them reruns only prepare_text
    assert "text" not in plan.dataset_spec(paper, "imdb_text")


def test_the_default_has_no_text_step_and_a_pattern_that_matches_nothing():
    default = load_params(REPO / "params.yaml")
    assert not plan.has_text_step(default, "synthetic")
    assert plan.dataset_pattern(default, text_step=True) == "(?!x)x"
    assert plan.dataset_pattern(default, text_step=False) == "synthetic"
    # any entry may opt in with a text key
    opted = load_params({**default, "datasets": {"synthetic": {**default["datasets"]["synthetic"], "text": {}}}})
    assert plan.has_text_step(opted, "synthetic") and plan.text_options(opted, "synthetic") == {}


@pytest.mark.parametrize("text, named", [
    ({"strategy": "summaries"}, "datasets.imdb_text.text.path: strategy 'summaries' needs the summaries file"),
    ({"strategy": "llm"}, "datasets.imdb_text.text.llm.model: strategy 'llm' needs a local transformers model"),
])
def test_a_strategy_without_what_it_needs_is_refused_at_planning(text, named):
    cfg = load_params({"models": {"m": {"architecture": "ViT-B-32"}},
                       "datasets": {"imdb_text": {"adapter": "imdb_text", "dataroot": "x", "text": text}}})
    with pytest.raises(ConfigError, match=named):
        plan.text_options(cfg, "imdb_text")


def test_text_params_hold_only_non_default_values():
    assert text_options({"strategy": "truncate", "cut": False, "llm": {"seed": 0}}) == {}
    assert text_options({"strategy": "llm", "llm": {"model": "/m", "seed": 3}}) == {
        "strategy": "llm", "llm": {"model": "/m", "seed": 3}}
    full = text_settings({"llm": {"seed": 3}})
    assert full["strategy"] == "truncate" and full["llm"]["seed"] == 3 and full["llm"]["max_new_tokens"] == 80


# --------------------------------------------------------------------------- truncate and summaries
def test_truncate_keeps_the_texts_and_counts_those_over_the_budget(imdb, tmp_path):
    out = tmp_path / "imdb_text.parquet"
    _, meta = prepare_text_step(source=imdb, out=out, options={"context_length": 10, "tokenizer": "words"},
                                dataroot=tmp_path)
    assert _corpus(out) == IMDB_CORPUS  # the encoders cut them at their own context
    summary = texts_summary(meta)
    assert summary == {"strategy": "truncate", "summarised": False, "n_texts": 6, "n_over_budget": 1,
                       "token_budget": 8, "title": False, "truncated": True}
    cut = tmp_path / "cut.parquet"
    prepare_text_step(source=imdb, out=cut, options={"context_length": 6, "tokenizer": "words", "cut": True},
                      dataroot=tmp_path)
    assert _corpus(cut)[0] == "One of the"  # 4 tokens = 3 words at 0.75 words per token


def test_the_references_pickle_is_read_by_the_datasets_own_keys(imdb, tmp_path):
    ref = tmp_path / "Cross-the-Gap/data/summarized_texts/imdb_text/all/meta-llama_Llama-3.2-1B-Instruct"
    ref.mkdir(parents=True)
    # the reference's format: {str(row index): summary}, a plain pickled dict
    (ref / "summarized_text.pkl").write_bytes(pickle.dumps({str(i): f"summary {i}" for i in range(4)}))
    out = tmp_path / "imdb_text.parquet"
    rel = str((ref / "summarized_text.pkl").relative_to(tmp_path))
    _, meta = prepare_text_step(source=imdb, out=out, options={"strategy": "summaries", "path": rel},
                                dataroot=tmp_path)
    assert _corpus(out) == ["summary 0", "summary 1", "summary 2", "summary 3"]
    df, _ = read_manifest(out)
    assert df.loc[df["split"] == "query", "text"].tolist() == ["a positive review of a movie.",
                                                               "a negative review of a movie."]
    record = meta["text_preparation"][-1]
    assert record["summarised"] is True and record["n_replaced"] == 4 and len(record["summaries_sha256"]) == 64
    assert texts_summary(meta)["truncated"] is False


def test_a_pickle_that_names_a_callable_is_refused(imdb, tmp_path):
    (tmp_path / "evil.pkl").write_bytes(pickle.dumps({"0": print}))
    with pytest.raises(LongTextError, match="evil.pkl: refusing to load global builtins.print"):
        prepare_text_step(source=imdb, out=tmp_path / "o.parquet", options={"strategy": "summaries",
                                                                           "path": "evil.pkl"}, dataroot=tmp_path)
    with pytest.raises(LongTextError, match=r"datasets.imdb_text.text.path: summaries file .*none.pkl not found"):
        prepare_text_step(source=imdb, out=tmp_path / "o.parquet", options={"strategy": "summaries",
                                                                           "path": "none.pkl"}, dataroot=tmp_path)


# --------------------------------------------------------------------------- llm
class FakeGenerator:
    """Deterministic in (document, seed), like a seeded sampler; can fail after ``fail_after`` documents."""

    def __init__(self, fail_after: int | None = None) -> None:
        self.calls: list[tuple[list, int | None]] = []
        self.fail_after = fail_after

    def __call__(self, batch, seed):
        if self.fail_after is not None and len(self.calls) >= self.fail_after:
            raise KeyboardInterrupt("killed")
        self.calls.append((batch, seed))
        return [f"s{seed % 997}: {messages[-1]['content'][47:59]}" for messages in batch]


def _llm_model(tmp_path: Path) -> Path:
    model = tmp_path / "Llama-3.2-1B-Instruct"
    model.mkdir()
    (model / "generation_config.json").write_text(json.dumps({"do_sample": True, "temperature": 0.6, "top_p": 0.9,
                                                              "eos_token_id": [1, 2]}))
    return model


def test_llm_uses_the_reference_prompts_and_records_the_sampling(imdb, tmp_path):
    model, gen = _llm_model(tmp_path), FakeGenerator()
    out = tmp_path / "imdb_text.parquet"
    _, meta = prepare_text_step(source=imdb, out=out, options={"strategy": "llm", "llm": {"model": str(model)}},
                                dataroot=tmp_path, cache_dir=tmp_path / "cache", generator=gen)
    messages = [m for batch, _ in gen.calls for m in batch]
    assert len(gen.calls) == 4 and all(len(batch) == 1 for batch, _ in gen.calls)  # one document at a time
    assert messages[2] == [
        {"role": "system", "content": REFERENCE_SYSTEM_PROMPT},
        {"role": "user", "content": REFERENCE_PROMPT.replace("{text}", "Fine acting.")}]
    assert messages[2][1]["content"] == ("Please summarize this text to under 77 tokens: Fine acting.. \n Start "
                                         "directly with the summarized text without anything else before")
    llm = meta["text_preparation"][-1]["llm"]
    assert llm["sampling"] == {"do_sample": True, "temperature": 0.6, "top_p": 0.9, "max_new_tokens": 80}
    assert llm["seed"] == 0 and llm["generated"] == 4 and llm["hits"] == 0 and llm["precision"] == "fp16"
    assert llm["system_prompt"] == REFERENCE_SYSTEM_PROMPT and llm["prompt"] == REFERENCE_PROMPT
    assert _corpus(out)[2] == f"s{gen.calls[2][1] % 997}: Fine acting."
    # another seed: other per-document seeds
    other = FakeGenerator()
    prepare_text_step(source=imdb, out=tmp_path / "o.parquet",
                      options={"strategy": "llm", "llm": {"model": str(model), "seed": 1}},
                      dataroot=tmp_path, cache_dir=tmp_path / "cache", generator=other)
    assert [s for _, s in other.calls] != [s for _, s in gen.calls]


def test_a_killed_llm_run_continues_where_it_stopped_with_the_same_summaries(imdb, tmp_path):
    model = _llm_model(tmp_path)
    options = {"strategy": "llm", "llm": {"model": str(model), "seed": 42}}
    whole = FakeGenerator()
    prepare_text_step(source=imdb, out=tmp_path / "whole.parquet", options=options, dataroot=tmp_path,
                      cache_dir=tmp_path / "cache_whole", generator=whole)
    with pytest.raises(KeyboardInterrupt):
        prepare_text_step(source=imdb, out=tmp_path / "killed.parquet", options=options, dataroot=tmp_path,
                          cache_dir=tmp_path / "cache", generator=FakeGenerator(fail_after=2))
    cache = tmp_path / "cache/imdb_text/llm_summaries.jsonl"
    assert [json.loads(line)["id"] for line in cache.read_text().splitlines()] == ["corpus/0", "corpus/1"]
    assert not (tmp_path / "killed.parquet").exists()
    rest = FakeGenerator()
    _, meta = prepare_text_step(source=imdb, out=tmp_path / "killed.parquet", options=options, dataroot=tmp_path,
                                cache_dir=tmp_path / "cache", generator=rest)
    assert len(rest.calls) == 2 and meta["text_preparation"][-1]["llm"]["hits"] == 2
    assert _corpus(tmp_path / "killed.parquet") == _corpus(tmp_path / "whole.parquet")
    assert [s for _, s in rest.calls] == [s for _, s in whole.calls[2:]]
    # crossgap's cache is a summaries file of its own: the summaries strategy reproduces the run
    prepare_text_step(source=imdb, out=tmp_path / "again.parquet", options={"strategy": "summaries",
                      "path": str(cache)}, dataroot=tmp_path)
    assert _corpus(tmp_path / "again.parquet") == _corpus(tmp_path / "whole.parquet")


def test_document_seeds_depend_on_the_seed_and_the_document_only():
    assert document_seed(0, "k") == document_seed(0, "k") != document_seed(1, "k") != document_seed(0, "j")
    assert 0 <= document_seed(123, "x" * 64) < 2**63


# --------------------------------------------------------------------------- NanoBEIR titles
def test_nanobeir_titles_only_on_request(tmp_path):
    make_nanobeir(tmp_path, "SciFact", title=True)
    df, meta = get_adapter("nano_scifact").build(tmp_path)
    source = tmp_path / "nano_scifact.source.parquet"
    write_manifest(source, df, meta)
    plain, titled = tmp_path / "plain.parquet", tmp_path / "titled.parquet"
    prepare_text_step(source=source, out=plain, options={}, dataroot=tmp_path)
    _, meta = prepare_text_step(source=source, out=titled, options={"title": True}, dataroot=tmp_path)
    texts = dict(zip(*read_manifest(plain)[0][["id", "text"]].T.values))
    assert texts["corpus/d1"] == "Document 1 text." and texts["queries/q1"] == "first question?"
    texts = dict(zip(*read_manifest(titled)[0][["id", "text"]].T.values))
    assert texts["corpus/d1"] == "Title one Document 1 text." and texts["corpus/d2"] == "Document 2 text."
    assert meta["text_preparation"][-1]["n_titled"] == 3 and texts_summary(meta)["title"] is True


# --------------------------------------------------------------------------- the report
def test_the_report_notes_every_dataset_whose_texts_were_truncated(tmp_path):
    def result(name, dataset, texts):
        path = tmp_path / f"{name}.json"
        write_result(path, task="text_retrieval", method="text", dataset=dataset, model="m", metrics={"mAP": 1.0},
                     params={}, extra={"texts": texts})
        return str(path)

    truncated = {"strategy": "truncate", "summarised": False, "n_texts": 50002, "n_over_budget": 31234,
                 "token_budget": 75, "title": False, "truncated": True}
    summarised = dict(truncated, strategy="summaries", summarised=True, n_over_budget=12, truncated=False)
    notes = text_preparation_notes([result("a", "imdb_text", truncated), result("b", "nano_nq", summarised),
                                    result("c", "coco_text", None)])
    assert notes == ["imdb_text: texts truncated rather than summarised (31,234 of 50,002 texts over 75 tokens, "
                     "strategy 'truncate'); the reference encodes LLM summaries "
                     "(datasets.imdb_text.text.strategy: summaries | llm)"]


def test_paper_yaml_is_valid_yaml_with_the_summaries_paths():
    raw = yaml.safe_load((REPO / "params/paper.yaml").read_text())
    for dataset in LONG_TEXT_DATASETS:
        assert raw["datasets"][dataset]["text"]["strategy"] == "summaries"
        assert raw["datasets"][dataset]["text"]["path"].endswith("/summarized_text.pkl")


def test_text_retrieval_results_record_the_text_step_and_the_input_precision(tmp_path):
    import torch

    from crossgap.steps.evaluation import retrieval_step
    from crossgap.storage import FeatureSet, save_feature_set

    make_nanobeir(tmp_path, "SciFact")
    df, meta = get_adapter("nano_scifact").build(tmp_path)
    source, manifest = tmp_path / "nano_scifact.source.parquet", tmp_path / "nano_scifact.parquet"
    write_manifest(source, df, meta)
    prepare_text_step(source=source, out=manifest, options={"context_length": 4, "tokenizer": "words"},
                      dataroot=tmp_path)
    files = {}
    for split, n in (("queries", 3), ("corpus", 5)):
        ids = df.loc[df["split"] == split, "id"].tolist()
        files[split] = tmp_path / f"text_{split}.safetensors"
        save_feature_set(files[split], FeatureSet(torch.randn(n, 8, generator=torch.Generator().manual_seed(n)), ids,
                                                  meta={"precision": "fp32"}))
    result = retrieval_step(task="text_retrieval", method="text", manifest=str(manifest), query=str(files["queries"]),
                            gallery=str(files["corpus"]), out=str(tmp_path / "r.json"), model_slug="m")
    assert result["extra"]["precision"] == {"query": "fp32", "gallery": "fp32"}
    texts = result["extra"]["texts"]
    assert texts["truncated"] is True and texts["n_over_budget"] == 7  # 5 documents, 2 of 3 queries
    assert text_preparation_notes([str(tmp_path / "r.json")])[0].startswith(
        "nano_scifact: texts truncated rather than summarised (7 of 8 texts over 2 tokens")
