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
        synthetic=config["synthetic"],
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
        pretrain=config["pretrain"],
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
    conda:
        "../envs/crossgap.yaml"
    threads: 2
    resources:
        mem_mb=4000,
        runtime=120,
    params:
        dataset=get_dataset_spec,
        prepare=config["prepare"],
    script:
        "../scripts/prepare_manifest.py"
