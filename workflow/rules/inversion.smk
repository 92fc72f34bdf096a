# Phase 3: OTI on query/zero-shot images and OVI on query texts and class prompts, sharded;
# a gather rule merges the shards in manifest order. Interrupted runs resume per shard.
# Outputs are addressed by the parameters' tag ({oti,ovi}-{tag}, common.smk: inversion_tags), so
# each parameter set keeps its own finished inversions.


rule oti_shard:
    input:
        features=oti_query_features,
        checkpoint=model_checkpoint,
    output:
        shard="data/inversion/{dataset}/{model}/oti-{tag}/{split}.shards/{shard}.safetensors",
    log:
        "logs/inversion/{dataset}/{model}/oti-{tag}/{split}_{shard}.log",
    benchmark:
        "logs/bench/inversion/{dataset}/{model}/oti-{tag}/{split}_{shard}.tsv"
    conda:
        "../envs/crossgap.yaml"
    threads: 1
    resources:
        gpu=1,
        mem_mb=8000,
        runtime=720,
    params:
        model=model_spec,
        oti=oti_job_params,
        shards=config["inversion"]["shards"],
    script:
        "../scripts/invert_shard.py"


rule ovi_shard:
    input:
        features=ovi_targets,
        manifest=manifest,
        checkpoint=model_checkpoint,
    output:
        shard="data/inversion/{dataset}/{model}/ovi-{tag}/{ovi_set}.shards/{shard}.safetensors",
    log:
        "logs/inversion/{dataset}/{model}/ovi-{tag}/{ovi_set}_{shard}.log",
    benchmark:
        "logs/bench/inversion/{dataset}/{model}/ovi-{tag}/{ovi_set}_{shard}.tsv"
    conda:
        "../envs/crossgap.yaml"
    threads: 1
    resources:
        gpu=1,
        mem_mb=8000,
        runtime=720,
    params:
        model=model_spec,
        ovi=ovi_job_params,
        task=ovi_task,
        shards=config["inversion"]["shards"],
    script:
        "../scripts/invert_shard.py"


rule gather_oti:
    input:
        shards=oti_shards,
    output:
        inverted="data/inversion/{dataset}/{model}/oti-{tag}/{split}.safetensors",
        losses="data/plots/losses/{dataset}/{model}/oti-{tag}/{split}.csv",
    log:
        "logs/inversion/{dataset}/{model}/oti-{tag}/gather_{split}.log",
    benchmark:
        "logs/bench/inversion/{dataset}/{model}/oti-{tag}/gather_{split}.tsv"
    conda:
        "../envs/crossgap.yaml"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=10,
    script:
        "../scripts/gather_shards.py"


rule gather_ovi:
    input:
        shards=ovi_shards,
    output:
        inverted="data/inversion/{dataset}/{model}/ovi-{tag}/{ovi_set}.safetensors",
        losses="data/plots/losses/{dataset}/{model}/ovi-{tag}/{ovi_set}.csv",
    log:
        "logs/inversion/{dataset}/{model}/ovi-{tag}/gather_{ovi_set}.log",
    benchmark:
        "logs/bench/inversion/{dataset}/{model}/ovi-{tag}/gather_{ovi_set}.tsv"
    conda:
        "../envs/crossgap.yaml"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=10,
    script:
        "../scripts/gather_shards.py"
