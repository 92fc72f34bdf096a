"""The Snakemake workflow: lint, formatting, the paper grid's dry run, config validation, and the
reduced embedded default run end to end."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest
import yaml

from workflow_helpers import BIN, REPO, clone_run, copy_repo, job_stats, read_summary, run, test_params


#: jobs of the reduced default (tests/workflow/params.test.yaml), counted by hand: 24 test / 160 train
#: images, shard_size 12 -> OTI on the 24 test images in 2 shards; OVI on the 24 query captions in
#: 2 shards and on the class sentences ("a photo of {classname}", one per class) in 1 (size not known
#: statically); snapshots OTI at steps 2 and 4 (one snapshot gather), OVI at 4 (queries, class
#: sentences); features image/text x train/test, the CoOp prompts (standard zero-shot), the class
#: sentences (OVI zero-shot targets), the bare class names (pca_text_dataset), ImageNet's class names
#: (pca_text, one per model), the projections and the pre-projection features of the 4 feature files (isoclip).
#: Methods: image retrieval image, oti, oti@2, oti@4, gap_shift, centered, isoclip, pca_text,
#: pca_text_dataset (9); text retrieval text, ovi, ovi@4, gap_shift, centered, isoclip (6); zero-shot
#: standard, oti, oti@2, oti@4, ovi, ovi@4, gap_shift, centered, pca_text, pca_text_dataset (10).
REDUCED_JOBS = {
    "generate_synthetic": 1, "pretrain_tiny": 1, "prepare_manifest": 1, "extract_features": 4,
    "prompt_features": 1, "class_sentence_features": 1, "classname_features": 1, "vocabulary_features": 1,
    "projection_matrices": 1,
    "preprojection_features": 4, "oti_shard": 2, "gather_oti": 1, "gather_oti_snapshots": 1, "ovi_shard": 3, "gather_ovi": 2,
    "gather_ovi_snapshots": 2, "evaluate_image_retrieval": 9, "evaluate_text_retrieval": 6, "evaluate_zero_shot": 10,
    "modality_gap": 1, "aggregate": 1, "plots": 1, "default": 1,
}
#: ImageNet's jobs in the paper grid (7 models), counted by hand: image features of val and train,
#: their pre-projection features, prompts, bare class names, projections; OTI on the 50,000 val images in ceil(50,000 / 4,096) = 13
#: shards; OVI on the 1,000 class sentences in 1; image retrieval image, oti, gap_shift, centered,
#: isoclip, pca_text, pca_text_dataset; zero-shot standard, oti, ovi, gap_shift, centered, pca_text,
#: pca_text_dataset; the gap. (The 7 class_sentence_features jobs print a message instead of their rule
#: block: counted separately; the ImageNet-names span of pca_text is per model, not ImageNet's.)
PAPER_IMAGENET_JOBS = {
    "prepare_manifest": 1, "extract_features": 7 * 2, "preprojection_features": 7 * 2, "prompt_features": 7,
    "classname_features": 7, "projection_matrices": 7, "oti_shard": 7 * 13, "gather_oti": 7, "ovi_shard": 7, "gather_ovi": 7,
    "evaluate_image_retrieval": 7 * 7, "evaluate_zero_shot": 7 * 7, "modality_gap": 7,
}
#: today's tags of the reduced configuration (OTI 8 steps, OVI 8 steps, P = 1), pinned
TAGS = {"oti": "2429c346c6", "ovi": "ec7effc6ab"}


def jobs_of_dataset(output: str, dataset: str) -> dict[str, int]:
    """{rule: count} of a dry run's jobs whose first output belongs to ``dataset``."""
    counts: dict[str, int] = {}
    for block in output.split("\n\n"):
        rule = re.search(r"^(?:local)?rule (\w+):", block, re.M)
        out = re.search(r"output: (\S+)", block)
        if rule and out and (f"/{dataset}/" in out.group(1) or out.group(1).startswith(f"data/manifests/{dataset}.")):
            counts[rule.group(1)] = counts.get(rule.group(1), 0) + 1
    return counts


def test_lint_clean():
    proc = run([str(BIN / "snakemake"), "--lint"], cwd=REPO, timeout=300)
    assert "Congratulations, your workflow is in a good condition" in proc.stdout + proc.stderr


def test_snakefmt_clean():
    run([str(BIN / "snakefmt"), "--check", "Snakefile", "workflow"], cwd=REPO, timeout=120)


def test_paper_grid_dry_run_builds_the_full_dag_without_data(tmp_path):
    root = copy_repo(tmp_path)
    assert not (root / "data").exists()
    proc = run([str(BIN / "snakemake"), "-n", "--configfile", "params/paper.yaml"], cwd=root, timeout=600)
    stats = job_stats(proc.stdout)
    config = yaml.safe_load((REPO / "params/paper.yaml").read_text())
    assert len(config["models"]) == 7 and len(config["datasets"]) >= 31
    assert jobs_of_dataset(proc.stdout, "imagenet") == PAPER_IMAGENET_JOBS
    # the OVI zero-shot targets: the reference's "a photo of {classname}", one job per model
    assert proc.stdout.count("OVI zero-shot targets of imagenet/") == 7
    assert "OVI zero-shot targets of imagenet/clip_b32: each class name in 'a photo of {}'" in proc.stdout
    assert stats["aggregate"] == 1
    # the 9 long-text datasets (IMDB, 20 Newsgroups, 7 NanoBEIR): adapter manifest, then the text step
    # (the reference's summaries); every other dataset's manifest comes from prepare_manifest
    assert stats["prepare_text"] == stats["prepare_source_manifest"] == 9
    assert stats["prepare_manifest"] == len(config["datasets"]) - 9
    for dataset in ("imdb_text", "newsgroup_text", "nano_scifact"):
        assert f"output: data/manifests/{dataset}.parquet, data/manifests/{dataset}.skipped.json" in proc.stdout
        assert f"output: data/manifests/{dataset}.source.parquet" in proc.stdout
    # the embedded default is not merged into the grid
    assert "pretrain_tiny" not in stats and "generate_synthetic" not in stats
    print("paper grid dry run:", stats)


def test_default_dry_run_counts(tmp_path):
    root = copy_repo(tmp_path)
    stats = job_stats(run([str(BIN / "snakemake"), "-n"], cwd=root, timeout=300).stdout)
    assert stats == REDUCED_JOBS


def test_copies_do_not_see_what_a_run_left_in_the_source_tree(tmp_path):
    """``make run`` then ``make test``: outputs in data/, logs/, .snakemake/ of the tree are not copied."""
    from workflow_helpers import committable_files

    src = tmp_path / "src"
    subprocess.run(["git", "init", "-q", str(src)], check=True)
    (src / "Snakefile").write_text("rule all:\n")
    for rel in ("data/metrics/summary.json", "data/plots/comparison.csv", "logs/aggregate.log",
                ".snakemake/metadata/x", "dvc_plots/index.html", "crossgap/new_module.py"):
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        (src / rel).write_text("{}")
    assert sorted(committable_files(src)) == ["Snakefile", "crossgap/new_module.py"]


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda p: p["inversion"]["oti"].update(stepz=3), "stepz"),
        (lambda p: p["models"]["tiny"].update(backend="tensorflow"), "tensorflow"),
        (lambda p: p["evaluation"].update(tasks=["image_retrieval", "captioning"]), "captioning"),
    ],
)
def test_invalid_params_name_the_key(tmp_path, edit, message):
    params = test_params()
    edit(params)
    root = copy_repo(tmp_path, params)
    proc = run([str(BIN / "snakemake"), "-n"], cwd=root, timeout=300, check=False)
    assert proc.returncode != 0
    assert message in proc.stdout + proc.stderr


def test_inversions_are_addressed_by_their_parameters(tmp_path):
    params = test_params()
    tags = TAGS
    root = copy_repo(tmp_path, params)
    out = run([str(BIN / "snakemake"), "-n"], cwd=root, timeout=300).stdout
    assert f"data/inversion/synthetic/tiny/oti-{tags['oti']}/test.safetensors" in out
    assert f"data/results/synthetic/tiny/zero_shot/ovi-{tags['ovi']}.json" in out
    # a file of another parameter set is never recomputed under the current parameters
    stale = "data/inversion/synthetic/tiny/oti-0123456789/test.safetensors"
    proc = run([str(BIN / "snakemake"), "-n", stale], cwd=root, timeout=300, check=False)
    assert proc.returncode != 0
    assert "oti-0123456789 (synthetic/tiny) belongs to another parameter set" in proc.stdout + proc.stderr
    assert f"have tag {tags['oti']}" in proc.stdout + proc.stderr


@pytest.mark.slow
def test_default_run_end_to_end(local_run):
    summary = read_summary(local_run)
    node = summary["synthetic"]["tiny"]
    assert set(node) == {"image_retrieval", "text_retrieval", "zero_shot", "modality_gap"}
    transforms = {"gap_shift", "centered", "isoclip", "pca_text", "pca_text_dataset"}
    assert set(node["image_retrieval"]) == {"image", "oti", "oti@2", "oti@4"} | transforms
    assert set(node["text_retrieval"]) == {"text", "ovi", "ovi@4", "gap_shift", "centered", "isoclip"}
    assert set(node["zero_shot"]) == {"standard", "oti", "oti@2", "oti@4", "ovi", "ovi@4", "gap_shift", "centered",
                                      "pca_text", "pca_text_dataset"}
    for method in ("image", "oti", "isoclip"):
        assert {"mAP", "mAP_at_R", "R_precision", "R@1", "R@5", "R@10"} <= set(node["image_retrieval"][method])
    assert {"top1", "top5", "mean_per_class_recall"} <= set(node["zero_shot"]["standard"])
    # every non-native method: a paired interval per metric, around its delta
    for task, native in (("image_retrieval", "image"), ("text_retrieval", "text"), ("zero_shot", "standard")):
        for method, scores in node[task].items():
            if method == native:
                assert "delta" not in scores
                continue
            assert scores["ci95_low"]["top1" if task == "zero_shot" else "mAP"] <= scores["delta"][
                "top1" if task == "zero_shot" else "mAP"] <= scores["ci95_high"]["top1" if task == "zero_shot" else "mAP"]
    assert 0 < node["modality_gap"]["native"]["gap_distance"] < 2
    table = (local_run / "data/metrics/table.md").read_text()
    # 8 + 5 + 9 method rows (every method but the native one), then the best step of OTI/OVI per task (4)
    assert table.count("| synthetic | tiny |") == 22 + 4
    for png in ("data/plots/comparison.png", "data/plots/inversion_losses.png", "data/plots/steps.png"):
        assert (local_run / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # every job logged and benchmarked; the GPU jobs say where they ran
    logs = list((local_run / "logs").rglob("*.log"))
    assert len(logs) == 55 and len(list((local_run / "logs/bench").rglob("*.tsv"))) == 55  # all 56 jobs but the target
    assert "GPU slot: no GPU visible, running on the CPU" in (
        local_run / f"logs/inversion/synthetic/tiny/oti-{TAGS['oti']}/test_0of2x12.log").read_text()
    # nothing left to do, and no temporary files left behind
    assert "Nothing to be done" in run([str(BIN / "snakemake"), "-n"], cwd=local_run).stdout
    assert not [p for p in (local_run / "data").rglob("*.tmp")]


@pytest.mark.slow
def test_shards_are_gathered_in_manifest_order(local_run):
    from crossgap.datasets.manifest import read_manifest, select
    from crossgap.storage import load_feature_set

    df, _ = read_manifest(local_run / "data/manifests/synthetic.parquet")
    oti_dir = local_run / f"data/inversion/synthetic/tiny/oti-{TAGS['oti']}"
    gathered = load_feature_set(oti_dir / "test.safetensors")
    assert gathered.ids == select(df, "image", {"split": "test"})["id"].tolist()
    assert gathered.meta["num_shards"] == 2 and gathered.meta["num_targets"] == 24
    assert gathered.extras["pseudo_tokens"].shape[:2] == (24, 1)
    assert gathered.extras["losses"].shape == (24, 8)
    # shards are temp(): gone once gathered, and no resume file is left behind
    assert not list(oti_dir.glob("test.shards/*/*.safetensors"))
    assert not list((local_run / "data").rglob("*.resume.safetensors"))


@pytest.mark.slow
def test_html_report_includes_the_plots(local_run):
    run([str(BIN / "snakemake"), "--report", "report.zip"], cwd=local_run, timeout=600)
    import zipfile

    names = zipfile.ZipFile(local_run / "report.zip").namelist()
    assert any(n.endswith("comparison.png") for n in names)
    assert any(n.endswith("inversion_losses.png") for n in names)
    assert any(n.endswith("report.html") for n in names)


@pytest.mark.slow
def test_html_report_renders_every_plot_and_table_in_a_headless_browser(local_run):
    """``data/plots/report.html`` opened by a real browser (Debian's Chromium, installed when missing):
    every plot decodes to an image and the tables are there."""
    from apt import Unavailable, ensure_binaries

    try:
        ensure_binaries(["chromium"], ["chromium"], timeout=600)
    except Unavailable as exc:
        pytest.skip(f"no headless browser here: {exc}")
    page = local_run / "data/plots/report.html"
    proc = subprocess.run(["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--virtual-time-budget=10000",
                           "--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=120)
    dom = proc.stdout
    assert 'data-ready="1"' in dom, (proc.returncode, proc.stderr[-2000:])
    rendered = re.findall(r'data-rendered="(\d+)x(\d+)"', dom)
    # the 3 plots of the plots rule and the per-task faceted plots of the paper sections (3 tasks)
    assert len(rendered) == 6 and all(int(w) > 100 and int(h) > 100 for w, h in rendered), rendered
    # one section per task (paper-style tables of the single synthetic dataset: image retrieval 6 methods,
    # text retrieval 4, zero-shot 6), then the long table
    for section in ("task-image_retrieval", "task-text_retrieval", "task-zero_shot", "all-results"):
        assert f'<section id="{section}"' in dom, section
    assert dom.count('<table class="paper">') == 16 and dom.count('<th scope="row">synthetic</th>') == 16
    # the all-methods table (22 method rows: 8 image retrieval, 5 text retrieval, 9 zero-shot; its filter
    # script marks how many rows it shows: all of them, unfiltered) and the best steps (4), as table.md has them
    assert dom.count('<table data-visible="22">') == 1 and dom.count("<table>") == 1
    assert dom.count("<td>synthetic</td>") == 22 + 4
    assert "<h1>crossgap results</h1>" in dom and "isoclip" in dom and "oti@2" in dom
    # Snakemake's own report (a JavaScript app): rendered, its menu lists the categories of the rules' report()
    run([str(BIN / "snakemake"), "--report", "report.html"], cwd=local_run, timeout=600)
    proc = subprocess.run(["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--virtual-time-budget=10000",
                           "--dump-dom", (local_run / "report.html").as_uri()], capture_output=True, text=True,
                          timeout=120)
    shown = re.sub(r"<[^>]+>", " ", re.sub(r"<script.*?</script>", "", proc.stdout, flags=re.S))
    assert {"Results", "Inversion", "Workflow", "Statistics"} <= set(shown.split()), shown[:2000]


# --------------------------------------------------------------------------- what a change reruns
#: (parameter edit, jobs a dry run then proposes), written out by hand for the reduced default:
#: OTI work = its 2 shards, gather, snapshot gather (steps 2, 4) and the evaluations reading OTI
#: (image retrieval and zero-shot: oti, oti@2, oti@4); OVI work = 3 shards, 2 gathers, 2 snapshot
#: gathers (step 4) and text retrieval / zero-shot ovi, ovi@4.
OVI_WORK = {"ovi_shard": 3, "gather_ovi": 2, "gather_ovi_snapshots": 2, "evaluate_text_retrieval": 2,
            "evaluate_zero_shot": 2}
OTI_WORK = {"oti_shard": 2, "gather_oti": 1, "gather_oti_snapshots": 1, "evaluate_image_retrieval": 3,
            "evaluate_zero_shot": 3}
BOTH = {"oti_shard": 2, "gather_oti": 1, "gather_oti_snapshots": 1, "ovi_shard": 3, "gather_ovi": 2,
        "gather_ovi_snapshots": 2, "evaluate_image_retrieval": 3, "evaluate_text_retrieval": 2, "evaluate_zero_shot": 5}
#: every evaluation, gather and shard: what changed features rerun
DOWNSTREAM = {"oti_shard": 2, "gather_oti": 1, "gather_oti_snapshots": 1, "ovi_shard": 3, "gather_ovi": 2,
              "gather_ovi_snapshots": 2, "evaluate_image_retrieval": 9, "evaluate_text_retrieval": 6,
              "evaluate_zero_shot": 10, "modality_gap": 1}
REPORT = {"aggregate": 1, "plots": 1, "default": 1}
RERUNS = [
    ("models.tiny.ovi_tokens", 2, OVI_WORK | REPORT),
    ("inversion.ovi.steps", 9, OVI_WORK | REPORT),
    ("inversion.ovi.learning_rate", 0.01, OVI_WORK | REPORT),
    ("inversion.oti.steps", 9, OTI_WORK | REPORT),
    ("inversion.oti.template", "a picture of {}", OTI_WORK | REPORT),
    ("inversion.oti.num_pseudo_tokens", 2, OTI_WORK | REPORT),
    # the OVI zero-shot sentence: new target features and a new OVI tag (queries too: one tag per method)
    ("inversion.ovi.template", "a photo of a {}.", {"class_sentence_features": 1} | OVI_WORK | REPORT),
    ("inversion.precision", "bf16", BOTH | REPORT),
    # OVI's query targets re-encoded with "_" as spaces (the reference's): one feature job, a new OVI tag
    ("inversion.ovi.underscores_as_spaces", True, {"spaced_text_features": 1} | OVI_WORK | REPORT),
    # a feature precision is a result of every feature file (the CPU computes fp32 anyway, the params say bf16)
    ("features.precision", "bf16", {"extract_features": 4, "preprojection_features": 4, "prompt_features": 1,
                                    "class_sentence_features": 1, "classname_features": 1,
                                    "vocabulary_features": 1} | DOWNSTREAM | REPORT),
    ("inversion.seed", 1, BOTH | REPORT),
    # a replicate seed: the same work once more under seed 1's tags, the main seed's stays
    ("inversion.seeds", [0, 1], BOTH | REPORT),
    # another snapshot list: the shards rerun to produce it (new snapshot files), the final inversion stays
    # (the gather of the final tokens reads the rerun shards too: it and OTI's evaluations rerun, same numbers)
    ("inversion.oti.snapshots", [3], {"oti_shard": 2, "gather_oti": 1, "gather_oti_snapshots": 1,
                                      "evaluate_image_retrieval": 2, "evaluate_zero_shot": 2} | REPORT),
    ("evaluation.tasks", ["image_retrieval", "zero_shot"], {"modality_gap": 1} | REPORT),
    # fewer methods: only the summary changes; a method's own parameters rerun its evaluations
    ("evaluation.methods", ["gap_shift"], REPORT),
    ("evaluation.method_params.centered", {"standardize": True},
     {"evaluate_image_retrieval": 1, "evaluate_text_retrieval": 1, "evaluate_zero_shot": 1} | REPORT),
    # per task: IsoCLIP's text-retrieval setting reruns that one evaluation, its image one stays
    ("evaluation.method_params.isoclip", {"k_top": 38, "k_bottom": 12, "tasks": {"text_retrieval": {"k_top": 6}}},
     {"evaluate_text_retrieval": 1} | REPORT),
    ("evaluation.bootstrap", {"resamples": 200}, {"aggregate": 1, "plots": 1, "default": 1}),
    ("evaluation.paper_methods", {"image_retrieval": ["oti"]}, REPORT),
    ("pretrain.epochs", 2, {"pretrain_tiny": 1, "extract_features": 4, "preprojection_features": 4,
                            "prompt_features": 1, "class_sentence_features": 1, "classname_features": 1,
                            "vocabulary_features": 1, "projection_matrices": 1} | DOWNSTREAM | REPORT),
    # runtime settings: memory, speed, bookkeeping -> nothing
    ("inversion.batch_size", 5, {}),
    ("inversion.shard_size", 5, {}),
    ("inversion.resume_every", 3, {}),
    ("inversion.checkpoint_every", 3, {}),  # its former name, still read
    ("inversion.deterministic", True, {}),
    # a result field written out at its default: nothing
    ("inversion.precision", "fp16", {}),
    ("features.precision", "fp32", {}),
    ("inversion.ovi.template", "a photo of {}", {}),
    ("inversion.ovi.underscores_as_spaces", False, {}),
    ("features.batch_size", 7, {}),
    ("features.num_workers", 1, {}),
    ("evaluation.chunk_size", 3, {}),
]


@pytest.mark.slow
@pytest.mark.parametrize("key, value, expected", RERUNS, ids=[r[0] for r in RERUNS])
def test_a_parameter_reruns_only_what_it_affects(local_run, tmp_path, key, value, expected):
    root = clone_run(local_run, tmp_path / "run")
    params = yaml.safe_load((root / "params.yaml").read_text())
    *parents, last = key.split(".")
    node = params
    for part in parents:
        node = node[part]
    node[last] = value
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    out = run([str(BIN / "snakemake"), "-n"], cwd=root, timeout=300).stdout
    assert job_stats(out) == expected, out[-3000:]


@pytest.mark.slow
def test_an_updated_rule_script_reruns_nothing(local_run, tmp_path):
    """A ``git pull`` gives every changed script a new mtime; with Snakemake's ``code`` trigger that would
    rerun every finished job of the rule (every inversion, for invert_shard.py). profiles/default leaves it off."""
    import os
    import time

    root = clone_run(local_run, tmp_path / "run")
    later = time.time() + 60
    for script in (root / "workflow/scripts").glob("*.py"):
        os.utime(script, (later, later))
    out = run([str(BIN / "snakemake"), "-n"], cwd=root, timeout=300).stdout
    assert job_stats(out) == {} and "Nothing to be done" in out, out[-3000:]
