# Phase 1: datasets -> manifests; the embedded default also generates its data and trains its model.


rule generate_synthetic:
    output:
        # the files that downstream rules read; the images sit beside them. (Not a directory()
        # output: DVC relinks the files inside, which would change a directory's mtime.)
        split=f"{plan.synthetic_root(config)}/synthetic/split_zhou_Synthetic.json",
        captions=f"{plan.synthetic_root(config)}/synthetic/captions.json",
        classnames=f"{plan.synthetic_root(config)}/synthetic/classnames.txt",
    log:
        "logs/generate_synthetic.log",
    benchmark:
        "logs/bench/generate_synthetic.tsv"
    conda:
        "../envs/crossgap.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=30,
    params:
        synthetic=config_options("synthetic"),
    script:
        "../scripts/generate_synthetic.py"


rule pretrain_tiny:
    input:
        data=f"{plan.synthetic_root(config)}/synthetic/split_zhou_Synthetic.json",
    output:
        checkpoint="data/models/{model}/checkpoint.pt",
        summary="data/models/{model}/pretrain.json",
        loss_curve="data/plots/pretrain/{model}_loss.csv",
        epoch_curve="data/plots/pretrain/{model}_epochs.csv",
    log:
        "logs/pretrain/{model}.log",
    benchmark:
        "logs/bench/pretrain/{model}.tsv"
    conda:
        "../envs/crossgap.yaml"
    threads: 8  # capped at --cores; fixed so that cluster jobs do not take a whole node
    resources:
        mem_mb=4000,
        runtime=60,
    params:
        architecture=get_architecture,
        pretrain=config_options("pretrain"),
    script:
        "../scripts/pretrain.py"


rule prepare_manifest:
    input:
        generated=get_generated_split_file,
    output:
        manifest="data/manifests/{dataset}.parquet",
        skipped="data/manifests/{dataset}.skipped.json",
    log:
        "logs/prepare/{dataset}.log",
    benchmark:
        "logs/bench/prepare/{dataset}.tsv"
    wildcard_constraints:
        # datasets without a text step; the others' manifest comes from prepare_text below
        dataset=plan.dataset_pattern(config, text_step=False),
    conda:
        "../envs/crossgap.yaml"
    threads: 2
    resources:
        mem_mb=4000,
        runtime=120,
    params:
        dataset=get_dataset_spec,
        prepare=config_options("prepare"),
    script:
        "../scripts/prepare_manifest.py"


# Datasets with long texts (IMDB, 20 Newsgroups, NanoBEIR, or any entry with a text: key): the
# adapter's manifest is {dataset}.source.parquet, and prepare_text fits its texts to the text
# towers' context (datasets.<name>.text: truncate | summaries | llm) into {dataset}.parquet, the
# manifest every later rule reads. The llm strategy's per-document cache (data/text_cache/) is not an
# output: it survives a killed job, and the rerun generates only what is missing.
use rule prepare_manifest as prepare_source_manifest with:
    output:
        manifest="data/manifests/{dataset}.source.parquet",
        skipped="data/manifests/{dataset}.source.skipped.json",
    log:
        "logs/prepare/{dataset}.source.log",
    benchmark:
        "logs/bench/prepare/{dataset}.source.tsv"
    wildcard_constraints:
        dataset=plan.dataset_pattern(config, text_step=True),


rule prepare_text:
    input:
        manifest="data/manifests/{dataset}.source.parquet",
    output:
        manifest="data/manifests/{dataset}.parquet",
        skipped="data/manifests/{dataset}.skipped.json",
    log:
        "logs/prepare/{dataset}.text.log",
    benchmark:
        "logs/bench/prepare/{dataset}.text.tsv"
    wildcard_constraints:
        dataset=plan.dataset_pattern(config, text_step=True),
    conda:
        "../envs/crossgap.yaml"
    threads: 1
    resources:
        gpu=get_text_gpus,
        mem_mb=8000,
        runtime=240,
    params:
        text=get_text_options,
        dataroot=get_dataroot,
    script:
        "../scripts/prepare_text.py"
