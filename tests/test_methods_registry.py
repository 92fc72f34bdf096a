"""crossgap.methods (one registry of evaluation methods) and how the plan reads it."""

from __future__ import annotations

import copy
import re
from pathlib import Path

import pytest

from crossgap import plan
from crossgap.config import ConfigError, load_params
from crossgap.methods import TASK_METHODS, get_method, native_method, task_methods, transform_names

REPO = Path(__file__).resolve().parents[1]


def test_registry_holds_native_inverted_and_the_discovered_transforms():
    assert TASK_METHODS == {
        "image_retrieval": ("image", "oti", "oti_gallery", "centered", "gap_shift", "isoclip", "pca_text",
                            "pca_text_dataset"),
        "text_retrieval": ("text", "ovi", "ovi_gallery", "centered", "gap_shift", "isoclip"),
        "zero_shot": ("standard", "oti", "ovi", "centered", "gap_shift", "pca_text", "pca_text_dataset"),
    }
    assert transform_names() == ("centered", "gap_shift", "isoclip", "pca_text", "pca_text_dataset")
    assert [native_method(t).name for t in TASK_METHODS] == ["image", "text", "standard"]
    assert get_method("image_retrieval", "isoclip").features == "pre"
    assert get_method("image_retrieval", "gap_shift").fallbacks == {"text": "prompts"}


def test_snapshots_are_methods_of_their_inversion():
    snap = get_method("zero_shot", "ovi@250")
    assert (snap.kind, snap.inversion, snap.file_stem({"ovi": "abcdef0123"})) == ("snapshot", "ovi", "ovi@250-abcdef0123")
    with pytest.raises(KeyError, match="'ovi@3' is not registered for task 'image_retrieval'"):
        get_method("image_retrieval", "ovi@3")


def test_method_pattern_matches_every_result_stem_and_nothing_else():
    pattern = re.compile(f"^(?:{plan.method_pattern('image_retrieval')})$")
    for stem in ("image", "oti-0123456789", "oti@50-0123456789", "gap_shift", "centered", "isoclip", "pca_text",
                 "pca_text_dataset"):
        assert pattern.match(stem), stem
    for stem in ("text", "ovi-0123456789", "oti@x-0123456789", "oti-01234", "gap_shift-0123456789"):
        assert not pattern.match(stem), stem


def test_reading_the_registry_imports_no_torch():
    import subprocess
    import sys

    code = "import sys, crossgap.methods; print('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True).stdout.strip() == "False"


@pytest.fixture(scope="module")
def paper():
    return load_params(REPO / "params/paper.yaml")


def _names(config, dataset, task):
    return [m.name for m in plan.dataset_methods(config, dataset, task)]


def test_transforms_run_where_the_dataset_provides_their_references(paper):
    # ImageNet: image retrieval and zero-shot, no captions -> gap_shift falls back to the class prompts
    assert _names(paper, "imagenet", "image_retrieval") == ["image", "oti", "centered", "gap_shift", "isoclip",
                                                             "pca_text", "pca_text_dataset"]
    # the authors' span (ImageNet-1k names) on every dataset with image retrieval, also without zero-shot;
    # the dataset-names variant only where the dataset has class names (zero-shot)
    assert "pca_text" in _names(paper, "cub2011", "image_retrieval")
    assert "pca_text_dataset" not in _names(paper, "cub2011", "image_retrieval")
    assert plan.resolve_references(paper, "cub2011", "image_retrieval", get_method("image_retrieval", "pca_text"),
                                   "clip_b32") == {
        "imagenet_classnames": "data/features/_vocabulary/clip_b32/imagenet_classnames.safetensors"}
    assert plan.resolve_references(paper, "imagenet", "zero_shot", get_method("zero_shot", "centered"), "m") == {
        "image": "data/features/imagenet/m/image_train.safetensors",
        "classifier": "data/features/imagenet/m/prompts.safetensors"}
    assert plan.resolve_references(paper, "imagenet", "image_retrieval",
                                   get_method("image_retrieval", "gap_shift"), "m") == {
        "image": "data/features/imagenet/m/image_train.safetensors",
        "prompts": "data/features/imagenet/m/prompts.safetensors"}
    # a text-only corpus: no images, no class names -> no gap_shift, and centered on texts only
    assert _names(paper, "imdb_text", "text_retrieval") == ["text", "ovi", "centered", "isoclip"]


def test_snapshots_and_enabled_methods_follow_the_config():
    config = load_params(REPO / "params.yaml")
    assert _names(config, "synthetic", "zero_shot") == [
        "standard", "oti", "oti@10", "oti@50", "oti@100", "ovi", "ovi@50", "ovi@250", "ovi@500", "centered",
        "gap_shift", "pca_text", "pca_text_dataset"]
    fewer = copy.deepcopy(config)
    fewer["evaluation"]["methods"] = ["pca_text"]
    fewer["inversion"]["oti"]["snapshots"] = [150, 10]  # the final step is not a snapshot
    assert _names(fewer, "synthetic", "image_retrieval") == ["image", "oti", "oti@10", "pca_text"]
    assert plan.snapshot_slug(fewer, "oti") == "10"
    assert plan.retrieval_inputs(fewer, "image_retrieval", "synthetic", "tiny", "oti@10-dcb93fcef5")["query"] == (
        "data/inversion/synthetic/tiny/oti-dcb93fcef5/test.at-10.safetensors")


def test_inverted_galleries_are_opt_in_and_their_cost_is_planned():
    config = load_params(REPO / "params.yaml")
    assert "oti_gallery" not in _names(config, "synthetic", "image_retrieval")
    assert plan.oti_sets(config["datasets"]["synthetic"], config["evaluation"]) == ["test"]
    opted = copy.deepcopy(config)
    opted["datasets"]["synthetic"]["inverted_gallery"] = True
    assert "oti_gallery" in _names(opted, "synthetic", "image_retrieval")
    assert "ovi_gallery" in _names(opted, "synthetic", "text_retrieval")
    # the whole train split (6,000 images) is inverted: 47 jobs of 128, no snapshots of it
    assert plan.oti_sets(opted["datasets"]["synthetic"], opted["evaluation"]) == ["test", "train"]
    assert plan.num_shards(opted, "synthetic", "oti", "train") == 47
    files = plan.all_inversion_files(opted)
    assert "data/inversion/synthetic/tiny/oti-dcb93fcef5/train.safetensors" in files
    assert not [f for f in files if "train.at-" in f or "gallery.at-" in f]
    assert plan.retrieval_inputs(opted, "image_retrieval", "synthetic", "tiny", "oti_gallery-dcb93fcef5") == {
        "manifest": "data/manifests/synthetic.parquet",
        "query": "data/inversion/synthetic/tiny/oti-dcb93fcef5/test.safetensors",
        "gallery": "data/inversion/synthetic/tiny/oti-dcb93fcef5/train.safetensors"}


def test_evaluation_methods_default_to_the_registry_and_unknown_names_are_refused():
    config = load_params(REPO / "params.yaml")
    assert "methods" not in config["evaluation"]  # no hand copy: the registry decides
    assert plan.enabled_transforms(config) == list(transform_names())
    typo = copy.deepcopy(config)
    typo["evaluation"]["methods"] = ["pca_txt"]
    with pytest.raises(ConfigError, match=r"evaluation.methods: unknown method\(s\) \['pca_txt'\]"):
        plan.dataset_methods(typo, "synthetic", "image_retrieval")
    typo = copy.deepcopy(config)
    typo["evaluation"]["method_params"] = {"isoclp": {"k_top": 1}}
    with pytest.raises(ConfigError, match=r"method_params: unknown method\(s\) \['isoclp'\]"):
        plan.check_method_params(typo)


def test_isoclip_runs_per_model_and_per_task_as_its_authors_publish(paper):
    """IsoCLIP's scripts: ViT-B/32 images 150/50 (exp_img-img_retrieval/clip_b32_img_retrieval.sh), texts 20/100
    (exp_txt-txt_retrieval/clip_b32_txt_retrieval.sh); ViT-L/14 250/200 and 10/300; OpenCLIP B/32 images 50/50."""
    assert get_method("image_retrieval", "isoclip").params == {"k_top": 150, "k_bottom": 50}
    assert get_method("text_retrieval", "isoclip").params == {"k_top": 20, "k_bottom": 100}
    published = {("clip_b32", "image_retrieval"): (150, 50), ("clip_b32", "text_retrieval"): (20, 100),
                 ("clip_l14", "image_retrieval"): (250, 200), ("clip_l14", "text_retrieval"): (10, 300),
                 ("openclip_b32", "image_retrieval"): (50, 50),
                 # not covered by IsoCLIP's scripts: the ViT-B/32 defaults of the task
                 ("openclip_b32", "text_retrieval"): (20, 100), ("siglip_b16", "image_retrieval"): (150, 50)}
    for (model, task), (top, bottom) in published.items():
        assert plan.result_params(paper, "coco_text" if task == "text_retrieval" else "cub2011", model, task,
                                  "isoclip") == {"k_top": top, "k_bottom": bottom}, (model, task)
    # the embedded default: both settings scaled to the tiny model's 128 directions
    default = load_params(REPO / "params.yaml")
    assert plan.method_params(default, "isoclip", "image_retrieval", "tiny") == {"k_top": 38, "k_bottom": 12}
    assert plan.method_params(default, "isoclip", "text_retrieval", "tiny") == {"k_top": 5, "k_bottom": 25}


def test_method_params_levels_and_errors():
    config = load_params(REPO / "params.yaml")
    config["models"]["other"] = {"architecture": "crossgap-tiny", "backend": "open_clip"}
    config["evaluation"]["method_params"] = {"isoclip": {
        "k_top": 1, "tasks": {"image_retrieval": {"k_top": 2}},
        "models": {"other": {"k_bottom": 3, "tasks": {"image_retrieval": {"k_top": 4}}}}}}
    mp = plan.method_params
    assert mp(config, "isoclip", "text_retrieval", "tiny") == {"k_top": 1, "k_bottom": 100}
    assert mp(config, "isoclip", "image_retrieval", "tiny") == {"k_top": 2, "k_bottom": 50}
    assert mp(config, "isoclip", "text_retrieval", "other") == {"k_top": 1, "k_bottom": 3}
    assert mp(config, "isoclip", "image_retrieval", "other") == {"k_top": 4, "k_bottom": 3}
    bad = copy.deepcopy(config)
    bad["evaluation"]["method_params"]["isoclip"]["models"]["other"]["tasks"]["image_retrieval"] = {"ktop": 1}
    with pytest.raises(ConfigError, match=r"isoclip.models.other.tasks.image_retrieval: unknown parameter\(s\) \['ktop'\]"):
        mp(bad, "isoclip", "image_retrieval", "other")
    bad = copy.deepcopy(config)
    bad["evaluation"]["method_params"]["isoclip"]["models"] = {"nobody": {}}
    with pytest.raises(ConfigError, match=r"isoclip.models: unknown model\(s\) \['nobody'\]"):
        mp(bad, "isoclip", "image_retrieval", "tiny")
