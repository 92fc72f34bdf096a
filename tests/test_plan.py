"""The static plan (crossgap.plan) and the settings it is built from (crossgap.config).

Expected tags, paths and counts are written out by hand: the tags were printed by crossgap 0.1's
``inversion_tag`` before the runtime/result split, so they pin that finished inversions of
today's parameters stay addressable.
"""

from __future__ import annotations

import copy
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from crossgap import plan
from crossgap.config import ConfigError, InversionRuntime, load_params

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def default():
    return load_params(REPO / "params.yaml")


def _edit(config, path: str, value):
    out = copy.deepcopy(config)
    *parents, last = path.split(".")
    node = out
    for key in parents:
        node = node[key]
    node[last] = value
    return load_params(out)


# --------------------------------------------------------------------------- tags
def test_todays_tags_are_unchanged(default):
    # v1 tags of the shipped defaults (OTI; OVI with P = 1, 2, 4) and of the reduced test config
    assert plan.tags(default, "tiny") == {"oti": "dcb93fcef5", "ovi": "fd57292494"}
    for tokens, tag in ((2, "acea8fb09c"), (4, "3f70fac064")):
        assert plan.tags(_edit(default, "models.tiny.ovi_tokens", tokens), "tiny")["ovi"] == tag
    reduced = _edit(_edit(default, "inversion.oti.steps", 8), "inversion.ovi.steps", 8)
    assert plan.tags(reduced, "tiny") == {"oti": "2429c346c6", "ovi": "ec7effc6ab"}


@pytest.mark.parametrize("key, value", [("inversion.batch_size", 16), ("inversion.shard_size", 7),
                                        ("inversion.resume_every", 5)])
def test_runtime_settings_do_not_change_tags(default, key, value):
    assert plan.tags(_edit(default, key, value), "tiny") == {"oti": "dcb93fcef5", "ovi": "fd57292494"}


@pytest.mark.parametrize("key, value, changed", [
    ("inversion.oti.steps", 151, "oti"),
    ("inversion.oti.learning_rate", 0.020000001, "oti"),
    ("inversion.oti.template", "a picture of {}", "oti"),
    ("inversion.ovi.steps", 999, "ovi"),
    ("models.tiny.ovi_tokens", 3, "ovi"),
])
def test_result_fields_change_only_their_own_tag(default, key, value, changed):
    tags = plan.tags(_edit(default, key, value), "tiny")
    before = {"oti": "dcb93fcef5", "ovi": "fd57292494"}
    assert tags[changed] != before[changed]
    other = "ovi" if changed == "oti" else "oti"
    assert tags[other] == before[other]


def test_seed_changes_both_tags(default):
    tags = plan.tags(_edit(default, "inversion.seed", 42), "tiny")
    assert tags["oti"] != "dcb93fcef5" and tags["ovi"] != "fd57292494"


def test_a_later_field_at_its_default_keeps_the_tag_and_another_value_changes_it(default, monkeypatch):
    import crossgap.config as config

    monkeypatch.setitem(config.HASHED_WHEN_NOT_DEFAULT, "oti", {**config.HASHED_WHEN_NOT_DEFAULT["oti"], "future_knob": 3})
    with_default = dict(default, inversion=dict(default["inversion"], oti=dict(default["inversion"]["oti"],
                                                                              future_knob=3)))
    assert plan.tags(with_default, "tiny")["oti"] == "dcb93fcef5"
    other = dict(default, inversion=dict(default["inversion"], oti=dict(default["inversion"]["oti"],
                                                                       future_knob=4)))
    assert plan.tags(other, "tiny")["oti"] != "dcb93fcef5"


def test_precision_and_ovi_template_are_later_fields(default):
    # at their defaults (fp16, "a photo of {}") today's tags and rule params stay as they were
    assert default["inversion"]["precision"] == "fp16" and default["inversion"]["ovi"]["template"] == "a photo of {}"
    assert plan.tags(default, "tiny") == {"oti": "dcb93fcef5", "ovi": "fd57292494"}
    assert "precision" not in plan.current_params(default, "ovi", "synthetic", "tiny", "fd57292494")
    # another precision re-addresses both inversions and reaches their jobs' params
    bf16 = _edit(default, "inversion.precision", "bf16")
    tags = plan.tags(bf16, "tiny")
    assert tags["oti"] != "dcb93fcef5" and tags["ovi"] != "fd57292494"
    assert plan.current_params(bf16, "oti", "synthetic", "tiny", tags["oti"])["precision"] == "bf16"
    # another OVI template re-addresses OVI only
    sentence = plan.tags(_edit(default, "inversion.ovi.template", "a photo of a {}."), "tiny")
    assert sentence["oti"] == "dcb93fcef5" and sentence["ovi"] != "fd57292494"


def test_jobs_fill_in_later_fields_at_their_defaults():
    from crossgap.config import complete_params

    v1 = {"steps": 8, "num_pseudo_tokens": 1, "learning_rate": 0.02, "weight_decay": 0.01, "seed": 0}
    assert complete_params("ovi", v1) == {**v1, "template": "a photo of {}", "precision": "fp16",
                                          "underscores_as_spaces": False}
    assert complete_params("oti", {**v1, "template": "x {}", "precision": "fp32"})["precision"] == "fp32"
    with pytest.raises(ConfigError, match="unknown inversion method 'xyz'"):
        complete_params("xyz", v1)


def test_stale_tag_is_refused_with_the_current_one(default):
    with pytest.raises(plan.StaleTagError, match="oti-0123456789 .synthetic/tiny. belongs to another parameter "
                                                 "set.*have tag dcb93fcef5"):
        plan.current_params(default, "oti", "synthetic", "tiny", "0123456789")
    assert plan.current_params(default, "oti", "synthetic", "tiny", "dcb93fcef5") == {
        "steps": 150, "num_pseudo_tokens": 1, "template": "a photo of {}", "learning_rate": 0.02,
        "weight_decay": 0.01, "seed": 0}



def test_replicate_seeds_are_inversions_of_their_own(default):
    """``inversion.seeds``: each other seed is the inversion a config with that ``inversion.seed``
    would run (same tag, so the work is shared), planned and evaluated beside the main one."""
    seeded = _edit(_edit(_edit(_edit(default, "evaluation.methods", ["gap_shift"]), "inversion.oti.snapshots", [50]),
                         "inversion.ovi.snapshots", []), "inversion.seeds", [1, 0])
    assert plan.seed_tags(seeded, "tiny") == [{"oti": "dcb93fcef5", "ovi": "fd57292494"},
                                              {"oti": "130be3e6f1", "ovi": "f819ffcb2b"}]
    assert plan.tags(_edit(default, "inversion.seed", 1), "tiny") == {"oti": "130be3e6f1", "ovi": "f819ffcb2b"}
    files = plan.result_files(seeded, "synthetic", "tiny")
    replicates = [f for f in files if "130be3e6f1" in f or "f819ffcb2b" in f]
    # the methods that read an inversion, once more (native and transforms run once)
    assert replicates == [
        "data/results/synthetic/tiny/image_retrieval/oti-130be3e6f1.json",
        "data/results/synthetic/tiny/image_retrieval/oti@50-130be3e6f1.json",
        "data/results/synthetic/tiny/text_retrieval/ovi-f819ffcb2b.json",
        "data/results/synthetic/tiny/zero_shot/oti-130be3e6f1.json",
        "data/results/synthetic/tiny/zero_shot/oti@50-130be3e6f1.json",
        "data/results/synthetic/tiny/zero_shot/ovi-f819ffcb2b.json",
    ]
    # seed 0: image, oti, oti@50, gap_shift; text, ovi, gap_shift; standard, oti, oti@50, ovi, gap_shift
    assert len(files) == 4 + 3 + 5 + len(replicates)
    inversions = plan.all_inversion_files(seeded)
    assert "data/inversion/synthetic/tiny/oti-130be3e6f1/test.safetensors" in inversions
    assert "data/inversion/synthetic/tiny/oti-130be3e6f1/test.at-50.safetensors" in inversions
    assert "data/inversion/synthetic/tiny/ovi-f819ffcb2b/classnames.safetensors" in inversions
    # the replicate's jobs get its own seed; an unknown tag names every seed's
    assert plan.current_params(seeded, "oti", "synthetic", "tiny", "130be3e6f1")["seed"] == 1
    with pytest.raises(plan.StaleTagError, match="have tags dcb93fcef5, 130be3e6f1"):
        plan.current_params(seeded, "oti", "synthetic", "tiny", "0123456789")


# --------------------------------------------------------------------------- rule params
def test_model_spec_is_only_what_loading_reads(default):
    # params.yaml gives no pretrained for the tiny model: pretrain: true loads the checkpoint it trains
    assert "pretrained" not in yaml.safe_load((REPO / "params.yaml").read_text())["models"]["tiny"]
    assert plan.model_spec(default, "tiny") == {
        "backend": "open_clip", "architecture": "crossgap-tiny", "pretrained": "data/models/tiny/checkpoint.pt"}
    assert plan.model_checkpoint(default, "tiny") == ["data/models/tiny/checkpoint.pt"]
    # written out, it must be that path
    assert plan.model_spec(_edit(default, "models.tiny.pretrained", "data/models/tiny/checkpoint.pt"), "tiny") == (
        plan.model_spec(default, "tiny"))
    with pytest.raises(ConfigError, match="models.tiny.pretrained: 'elsewhere.pt', but a model with pretrain: true"):
        plan.model_spec(_edit(default, "models.tiny.pretrained", "elsewhere.pt"), "tiny")


def test_dataset_spec_leaves_out_planning_keys(default):
    cfg = _edit(default, "datasets.synthetic.sizes", {"test": 3})
    assert plan.dataset_spec(cfg, "synthetic") == {"adapter": "synthetic", "dataroot": "data/raw"}


# --------------------------------------------------------------------------- shards
def test_shards_follow_the_planned_set_size(default):
    # the default: 256 test images / shard_size 128
    assert plan.num_shards(default, "synthetic", "oti", "test") == 2
    assert plan.shard_files(default, "synthetic", "tiny", "oti", "dcb93fcef5", "test") == [
        "data/inversion/synthetic/tiny/oti-dcb93fcef5/test.shards/2x128/0.safetensors",
        "data/inversion/synthetic/tiny/oti-dcb93fcef5/test.shards/2x128/1.safetensors"]
    assert plan.num_shards(default, "synthetic", "ovi", "queries") == 2  # one query caption per test image
    assert plan.num_shards(default, "synthetic", "ovi", "classnames") == 1  # size unknown statically
    assert plan.num_shards(_edit(default, "inversion.shard_size", 100), "synthetic", "oti", "test") == 3
    assert plan.num_shards(_edit(default, "inversion.shard_size", 4096), "synthetic", "oti", "test") == 1


def test_paper_imagenet_val_is_split_by_shard_size():
    paper = load_params(REPO / "params/paper.yaml")
    assert paper["inversion"]["shard_size"] == 4096
    assert plan.num_shards(paper, "imagenet", "oti", "val") == 13  # ceil(50,000 / 4,096)
    assert plan.num_shards(paper, "sop", "oti", "test") == 15  # ceil(60,502 / 4,096)


def test_sizes_in_the_entry_override_published_ones(default):
    cfg = _edit(default, "datasets.synthetic.sizes", {"test": 1000, "train": 10})
    assert plan.num_shards(cfg, "synthetic", "oti", "test") == 8  # ceil(1000 / 128)


def test_runtime_settings_come_from_the_config(default):
    assert InversionRuntime.from_config(default) == InversionRuntime(batch_size=64, shard_size=128, resume_every=1,
                                                                     deterministic=False)
    paper = load_params(REPO / "params/paper.yaml")
    assert InversionRuntime.from_config(paper).deterministic is True and paper["inversion"]["seed"] == 42


def test_checkpoint_every_is_read_as_the_former_name_of_resume_every(default):
    old = _edit(default, "inversion.checkpoint_every", 4)
    del old["inversion"]["resume_every"]
    assert InversionRuntime.from_config(load_params(old)).resume_every == 4
    both = _edit(_edit(default, "inversion.checkpoint_every", 4), "inversion.resume_every", 2)
    with pytest.raises(ConfigError, match=r"inversion.checkpoint_every \(4\) and inversion.resume_every \(2\) disagree"):
        InversionRuntime.from_config(both)


@pytest.mark.parametrize("key, value", [("inversion.deterministic", True), ("features.precision", "fp32")])
def test_determinism_and_default_precision_change_no_tag_nor_param(default, key, value):
    cfg = _edit(default, key, value)
    assert plan.tags(cfg, "tiny") == {"oti": "dcb93fcef5", "ovi": "fd57292494"}
    assert plan.feature_options(cfg) == {}


def test_feature_precision_reaches_the_feature_rules_only_when_not_fp32(default):
    cfg = _edit(default, "features.precision", "bf16")
    assert plan.feature_options(cfg) == {"precision": "bf16"}
    assert plan.feature_options(cfg)["precision"] == "bf16"
    assert plan.tags(cfg, "tiny") == {"oti": "dcb93fcef5", "ovi": "fd57292494"}


def test_ovi_zero_shot_inverts_one_class_sentence_per_class(default):
    assert plan.ovi_sets(default["datasets"]["synthetic"], default["evaluation"]) == ["classnames", "queries"]
    assert plan.inversion_targets(default, "synthetic", "tiny", "ovi", "classnames") == {
        "features": "data/features/synthetic/tiny/class_sentences.safetensors"}
    assert plan.inversion_task("ovi", "classnames") is None  # every row of the target file
    feats = plan.all_feature_files(default)
    assert "data/features/synthetic/tiny/class_sentences.safetensors" in feats
    assert "data/features/synthetic/tiny/prompts.safetensors" in feats  # the standard classifier's
    assert "data/inversion/synthetic/tiny/ovi-fd57292494/classnames.safetensors" in plan.all_inversion_files(default)


def test_ovi_underscores_as_spaces_switches_the_query_targets_and_the_ovi_tag_only(default):
    # at its default the field is absent from the tag and the params: finished inversions keep their addresses
    assert plan.inversion_targets(default, "synthetic", "tiny", "ovi", "queries") == {
        "features": "data/features/synthetic/tiny/text_test.safetensors",
        "manifest": "data/manifests/synthetic.parquet"}
    assert _edit(default, "inversion.ovi.underscores_as_spaces", False)["inversion"]["ovi"]["underscores_as_spaces"] is False
    assert plan.tags(_edit(default, "inversion.ovi.underscores_as_spaces", False), "tiny") == {
        "oti": "dcb93fcef5", "ovi": "fd57292494"}
    spaced = _edit(default, "inversion.ovi.underscores_as_spaces", True)
    assert plan.inversion_targets(spaced, "synthetic", "tiny", "ovi", "queries")["features"] == (
        "data/features/synthetic/tiny/text_test.spaces.safetensors")
    # the class sentences read "_" as a space anyway: same targets
    assert plan.inversion_targets(spaced, "synthetic", "tiny", "ovi", "classnames") == {
        "features": "data/features/synthetic/tiny/class_sentences.safetensors"}
    tags = plan.tags(spaced, "tiny")
    assert tags["oti"] == "dcb93fcef5" and tags["ovi"] != "fd57292494"
    assert "data/features/synthetic/tiny/text_test.spaces.safetensors" in plan.all_feature_files(spaced)
    assert plan.current_params(spaced, "ovi", "synthetic", "tiny", tags["ovi"])["underscores_as_spaces"] is True
    paper = load_params(REPO / "params/paper.yaml")
    assert paper["inversion"]["ovi"]["underscores_as_spaces"] is True


# --------------------------------------------------------------------------- files
def test_result_files_carry_the_tags_of_inverted_methods(default):
    plain = _edit(_edit(_edit(default, "evaluation.methods", []), "inversion.oti.snapshots", []),
                  "inversion.ovi.snapshots", [])
    assert plan.result_files(plain, "synthetic", "tiny") == [
        "data/results/synthetic/tiny/image_retrieval/image.json",
        "data/results/synthetic/tiny/image_retrieval/oti-dcb93fcef5.json",
        "data/results/synthetic/tiny/text_retrieval/text.json",
        "data/results/synthetic/tiny/text_retrieval/ovi-fd57292494.json",
        "data/results/synthetic/tiny/zero_shot/standard.json",
        "data/results/synthetic/tiny/zero_shot/oti-dcb93fcef5.json",
        "data/results/synthetic/tiny/zero_shot/ovi-fd57292494.json",
    ]
    snapshots = _edit(plain, "inversion.oti.snapshots", [50])
    assert "data/results/synthetic/tiny/zero_shot/oti@50-dcb93fcef5.json" in plan.result_files(snapshots, "synthetic",
                                                                                                "tiny")
    assert plan.per_query_file("data/results/d/m/zero_shot/oti-dcb93fcef5.json") == (
        "data/results/d/m/zero_shot/oti-dcb93fcef5.queries.parquet")


def test_evaluation_inputs_per_method(default):
    assert plan.retrieval_inputs(default, "image_retrieval", "synthetic", "tiny", "oti-dcb93fcef5") == {
        "manifest": "data/manifests/synthetic.parquet",
        "query": "data/inversion/synthetic/tiny/oti-dcb93fcef5/test.safetensors",
        "gallery": "data/features/synthetic/tiny/image_train.safetensors"}
    assert plan.retrieval_inputs(default, "text_retrieval", "synthetic", "tiny", "text")["query"] == (
        "data/features/synthetic/tiny/text_test.safetensors")
    assert plan.retrieval_inputs(default, "text_retrieval", "synthetic", "tiny", "ovi-fd57292494")["query"] == (
        "data/inversion/synthetic/tiny/ovi-fd57292494/queries.safetensors")
    assert plan.zero_shot_inputs(default, "synthetic", "tiny", "ovi-fd57292494") == {
        "manifest": "data/manifests/synthetic.parquet",
        "images": "data/features/synthetic/tiny/image_test.safetensors",
        "prompts": "data/inversion/synthetic/tiny/ovi-fd57292494/classnames.safetensors"}
    assert plan.zero_shot_inputs(default, "synthetic", "tiny", "oti-dcb93fcef5")["images"] == (
        "data/inversion/synthetic/tiny/oti-dcb93fcef5/test.safetensors")


def test_gap_pairs_zero_shot_images_with_query_texts(default):
    assert plan.gap_inputs(default, "synthetic", "tiny") == {
        "manifest": "data/manifests/synthetic.parquet",
        "prompts": "data/features/synthetic/tiny/prompts.safetensors",
        "images": "data/features/synthetic/tiny/image_test.safetensors",
        "texts": "data/features/synthetic/tiny/text_test.safetensors"}
    only_retrieval = _edit(default, "evaluation.tasks", ["image_retrieval"])
    assert plan.gap_inputs(only_retrieval, "synthetic", "tiny")["images"] == (
        "data/features/synthetic/tiny/image_test.safetensors")
    assert "texts" not in plan.gap_inputs(only_retrieval, "synthetic", "tiny")


# --------------------------------------------------------------------------- config validation
@pytest.mark.parametrize("key, value, named", [
    ("inversion.shard_size", 0, "inversion.shard_size"),
    ("inversion.resume_every", -1, "inversion.resume_every"),
    ("inversion.shards", 2, "'shards' was unexpected"),
    ("inversion.oti.stepz", 3, "'stepz' was unexpected"),
])
def test_bad_values_are_refused_naming_the_key(key, value, named):
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    *parents, last = key.split(".")
    node = raw
    for part in parents:
        node = node[part]
    node[last] = value
    with pytest.raises(ConfigError, match=named):
        load_params(raw)


def test_defaults_are_filled_from_the_schema():
    cfg = load_params({"models": {"m": {"architecture": "ViT-B-32"}}, "datasets": {"d": {"adapter": "synthetic",
                                                                                      "dataroot": "x"}}})
    assert cfg["inversion"]["shard_size"] == 4096 and cfg["inversion"]["resume_every"] == 1
    assert cfg["inversion"]["oti"]["steps"] == 150 and cfg["inversion"]["ovi"]["steps"] == 1000
    assert cfg["pretrain"]["epochs"] == 10 and cfg["evaluation"]["chunk_size"] == 1024


def test_training_defaults_agree_with_the_schema():
    import inspect

    from crossgap.training import train_tiny_clip

    schema = yaml.safe_load((REPO / "workflow/schemas/params.schema.yaml").read_text())
    pretrain = schema["properties"]["pretrain"]["properties"]
    signature = inspect.signature(train_tiny_clip).parameters
    for key, arg in (("epochs", "epochs"), ("batch_size", "batch_size"), ("learning_rate", "lr"),
                     ("weight_decay", "weight_decay"), ("intramodal_weight", "intramodal_weight"), ("seed", "seed")):
        assert signature[arg].default == pretrain[key]["default"], key


def test_planning_imports_no_torch():
    code = "import sys, crossgap.plan, crossgap.config; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def test_rule_params_hold_only_non_default_values(default):
    from crossgap.config import non_default, with_defaults

    # the shipped params.yaml sets every prepare key to its default: the rule's params are empty,
    # so a key added later at its default changes no finished job's params
    assert non_default(default, "prepare") == {}
    reduced = _edit(default, "pretrain.epochs", 1)
    assert non_default(reduced, "pretrain") == {"epochs": 1}
    assert with_defaults("pretrain", {"epochs": 1}) == {
        "epochs": 1, "batch_size": 128, "learning_rate": 0.001, "weight_decay": 0.1, "temperature": None,
        "intramodal_weight": 0.0, "seed": 0}
    assert with_defaults("prepare", {}) == {"skip_corrupt": False, "check_images": True, "truncated_images": "fail"}


def test_inversion_batch_size_may_be_auto(default):
    cfg = _edit(default, "inversion.batch_size", "auto")
    assert InversionRuntime.from_config(cfg).batch_size == "auto"
    assert plan.tags(cfg, "tiny") == {"oti": "dcb93fcef5", "ovi": "fd57292494"}
    with pytest.raises(ConfigError, match="inversion.batch_size"):
        _edit(default, "inversion.batch_size", "big")
