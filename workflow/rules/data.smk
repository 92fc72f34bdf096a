# Phase 1: datasets -> manifests; the embedded default also generates its data and trains its model.


rule generate_synthetic:
    output:
        # the files that downstream rules read; the images sit beside them. (Not a directory()
        # output: DVC relinks the files inside, which would change a directory's mtime.)
        split=f"{synthetic_root()}/synthetic/split_zhou_Synthetic.json",
        captions=f"{synthetic_root()}/synthetic/captions.json",
        classnames=f"{synthetic_root()}/synthetic/classnames.txt",
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
        synthetic=config.get("synthetic", {}),
    script:
        "../scripts/generate_synthetic.py"


rule pretrain_tiny:
    input:
        data=f"{synthetic_root()}/synthetic/split_zhou_Synthetic.json",
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
        model=model_spec,
        pretrain=config.get("pretrain", {}),
    script:
        "../scripts/pretrain.py"


rule prepare_manifest:
    input:
        generated=generated_dataset,
    output:
        manifest="data/manifests/{dataset}.parquet",
        skipped="data/manifests/{dataset}.skipped.json",
    log:
        "logs/prepare/{dataset}.log",
    benchmark:
        "logs/bench/prepare/{dataset}.tsv"
    conda:
        "../envs/crossgap.yaml"
    threads: 2
    resources:
        mem_mb=4000,
        runtime=120,
    params:
        dataset=dataset_cfg,
        prepare=config.get("prepare", {}),
    script:
        "../scripts/prepare_manifest.py"
