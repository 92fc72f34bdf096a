# Phase 4: retrieval (native vs inverted queries), zero-shot in three modes, modality gap.


rule evaluate_image_retrieval:
    input:
        unpack(get_image_retrieval_inputs),
    output:
        result="data/results/{dataset}/{model}/image_retrieval/{method}.json",
    log:
        "logs/evaluation/{dataset}/{model}/image_retrieval_{method}.log",
    benchmark:
        "logs/bench/evaluation/{dataset}/{model}/image_retrieval_{method}.tsv"
    wildcard_constraints:
        method="image|oti-[0-9a-f]{10}",
    conda:
        "../envs/crossgap.yaml"
    threads: 2
    resources:
        mem_mb=8000,
        runtime=60,
    params:
        task="image_retrieval",
        method=get_method_name,
        inversion=get_method_params,
    script:
        "../scripts/evaluate_retrieval.py"


rule evaluate_text_retrieval:
    input:
        unpack(get_text_retrieval_inputs),
    output:
        result="data/results/{dataset}/{model}/text_retrieval/{method}.json",
    log:
        "logs/evaluation/{dataset}/{model}/text_retrieval_{method}.log",
    benchmark:
        "logs/bench/evaluation/{dataset}/{model}/text_retrieval_{method}.tsv"
    wildcard_constraints:
        method="text|ovi-[0-9a-f]{10}",
    conda:
        "../envs/crossgap.yaml"
    threads: 2
    resources:
        mem_mb=8000,
        runtime=60,
    params:
        task="text_retrieval",
        method=get_method_name,
        inversion=get_method_params,
    script:
        "../scripts/evaluate_retrieval.py"


rule evaluate_zero_shot:
    input:
        unpack(get_zero_shot_inputs),
    output:
        result="data/results/{dataset}/{model}/zero_shot/{method}.json",
    log:
        "logs/evaluation/{dataset}/{model}/zero_shot_{method}.log",
    benchmark:
        "logs/bench/evaluation/{dataset}/{model}/zero_shot_{method}.tsv"
    wildcard_constraints:
        method="standard|oti-[0-9a-f]{10}|ovi-[0-9a-f]{10}",
    conda:
        "../envs/crossgap.yaml"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=30,
    params:
        method=get_method_name,
        inversion=get_method_params,
    script:
        "../scripts/evaluate_zero_shot.py"


rule modality_gap:
    input:
        unpack(get_gap_inputs),
    output:
        gap="data/results/{dataset}/{model}/modality_gap.json",
    log:
        "logs/evaluation/{dataset}/{model}/modality_gap.log",
    benchmark:
        "logs/bench/evaluation/{dataset}/{model}/modality_gap.tsv"
    conda:
        "../envs/crossgap.yaml"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=10,
    params:
        sources=get_gap_sources,
    script:
        "../scripts/modality_gap.py"
