# Phase 4: retrieval and zero-shot per method (crossgap.methods: native, inverted, snapshots,
# training-free transforms), per-query scores next to each result, modality gap.


rule evaluate_image_retrieval:
    input:
        unpack(get_image_retrieval_inputs),
    output:
        result="data/results/{dataset}/{model}/image_retrieval/{method}.json",
        per_query="data/results/{dataset}/{model}/image_retrieval/{method}.queries.parquet",
    log:
        "logs/evaluation/{dataset}/{model}/image_retrieval_{method}.log",
    benchmark:
        "logs/bench/evaluation/{dataset}/{model}/image_retrieval_{method}.tsv"
    wildcard_constraints:
        method=plan.method_pattern("image_retrieval"),
    conda:
        "../envs/crossgap.yaml"
    # one thread: the embedded default's evaluations are start-up bound, so two run side by side
    # on 2 cores (same results bit for bit, measured); clusters raise it in their profile
    threads: 1
    resources:
        mem_mb=8000,
        runtime=60,
    params:
        task="image_retrieval",
        method=get_method_name,
        settings=get_image_retrieval_params,
        reference_compat=get_reference_compat,
    script:
        "../scripts/evaluate_retrieval.py"


rule evaluate_text_retrieval:
    input:
        unpack(get_text_retrieval_inputs),
    output:
        result="data/results/{dataset}/{model}/text_retrieval/{method}.json",
        per_query="data/results/{dataset}/{model}/text_retrieval/{method}.queries.parquet",
    log:
        "logs/evaluation/{dataset}/{model}/text_retrieval_{method}.log",
    benchmark:
        "logs/bench/evaluation/{dataset}/{model}/text_retrieval_{method}.tsv"
    wildcard_constraints:
        method=plan.method_pattern("text_retrieval"),
    conda:
        "../envs/crossgap.yaml"
    # one thread: the embedded default's evaluations are start-up bound, so two run side by side
    # on 2 cores (same results bit for bit, measured); clusters raise it in their profile
    threads: 1
    resources:
        mem_mb=8000,
        runtime=60,
    params:
        task="text_retrieval",
        method=get_method_name,
        settings=get_text_retrieval_params,
        reference_compat=get_reference_compat,
    script:
        "../scripts/evaluate_retrieval.py"


rule evaluate_zero_shot:
    input:
        unpack(get_zero_shot_inputs),
    output:
        result="data/results/{dataset}/{model}/zero_shot/{method}.json",
        per_query="data/results/{dataset}/{model}/zero_shot/{method}.queries.parquet",
    log:
        "logs/evaluation/{dataset}/{model}/zero_shot_{method}.log",
    benchmark:
        "logs/bench/evaluation/{dataset}/{model}/zero_shot_{method}.tsv"
    wildcard_constraints:
        method=plan.method_pattern("zero_shot"),
    conda:
        "../envs/crossgap.yaml"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=30,
    params:
        method=get_method_name,
        settings=get_zero_shot_params,
        reference_compat=get_reference_compat,
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
