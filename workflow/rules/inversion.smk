# Phase 3: OTI on query/zero-shot images and OVI on query texts and class prompts, in shards of
# inversion.shard_size targets; a gather rule merges the shards in manifest order (shards are temp:
# the gathered file holds everything). A killed shard resumes from its last saved batch: the
# resume file <shard>.resume.safetensors beside it is not an output, so it survives a failed job.
# The shard geometry is in the path ({num_shards}x{shard_size}/), not in params: a finished gather
# never reruns because shard_size changed, and shards cut another way are never mixed.
# Outputs are addressed by the parameters' tag ({oti,ovi}-{tag}, crossgap.plan.tags), so
# each parameter set keeps its own finished inversions.


rule oti_shard:
    input:
        unpack(get_oti_targets),
        checkpoint=get_model_checkpoint,
    output:
        shard=temp(
            "data/inversion/{dataset}/{model}/oti-{tag}/{split}.shards/{num_shards}x{shard_size}/{shard}.safetensors"
        ),
    log:
        "logs/inversion/{dataset}/{model}/oti-{tag}/{split}_{shard}of{num_shards}x{shard_size}.log",
    benchmark:
        "logs/bench/inversion/{dataset}/{model}/oti-{tag}/{split}_{shard}of{num_shards}x{shard_size}.tsv"
    conda:
        "../envs/crossgap.yaml"
    threads: 1
    resources:
        gpu=1,
        mem_mb=8000,
        runtime=720,
    params:
        model=get_model_spec,
        oti=get_oti_params,
        snapshots=plan.snapshot_steps(config, "oti"),
    script:
        "../scripts/invert_shard.py"


rule ovi_shard:
    input:
        unpack(get_ovi_targets),
        checkpoint=get_model_checkpoint,
    output:
        shard=temp(
            "data/inversion/{dataset}/{model}/ovi-{tag}/{ovi_set}.shards/{num_shards}x{shard_size}/{shard}.safetensors"
        ),
    log:
        "logs/inversion/{dataset}/{model}/ovi-{tag}/{ovi_set}_{shard}of{num_shards}x{shard_size}.log",
    benchmark:
        "logs/bench/inversion/{dataset}/{model}/ovi-{tag}/{ovi_set}_{shard}of{num_shards}x{shard_size}.tsv"
    conda:
        "../envs/crossgap.yaml"
    threads: 1
    resources:
        gpu=1,
        mem_mb=8000,
        runtime=720,
    params:
        model=get_model_spec,
        ovi=get_ovi_params,
        snapshots=plan.snapshot_steps(config, "ovi"),
        task=get_ovi_task,
    script:
        "../scripts/invert_shard.py"


rule gather_oti:
    input:
        shards=get_oti_shards,
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
        shards=get_ovi_shards,
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


# Snapshots (inversion.<oti|ovi>.snapshots): the tokens at intermediate steps of the same runs,
# re-encoded in the shard jobs; evaluated as the methods oti@<step> / ovi@<step>. Another list of
# steps is another file (the shards rerun to produce it; the final inversion does not change).
rule gather_oti_snapshots:
    input:
        shards=get_oti_shards,
    output:
        snapshots="data/inversion/{dataset}/{model}/oti-{tag}/{split}.at-{steps}.safetensors",
    log:
        "logs/inversion/{dataset}/{model}/oti-{tag}/gather_{split}_at_{steps}.log",
    benchmark:
        "logs/bench/inversion/{dataset}/{model}/oti-{tag}/gather_{split}_at_{steps}.tsv"
    conda:
        "../envs/crossgap.yaml"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=10,
    script:
        "../scripts/gather_snapshots.py"


rule gather_ovi_snapshots:
    input:
        shards=get_ovi_shards,
    output:
        snapshots="data/inversion/{dataset}/{model}/ovi-{tag}/{ovi_set}.at-{steps}.safetensors",
    log:
        "logs/inversion/{dataset}/{model}/ovi-{tag}/gather_{ovi_set}_at_{steps}.log",
    benchmark:
        "logs/bench/inversion/{dataset}/{model}/ovi-{tag}/gather_{ovi_set}_at_{steps}.tsv"
    conda:
        "../envs/crossgap.yaml"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=10,
    script:
        "../scripts/gather_snapshots.py"
