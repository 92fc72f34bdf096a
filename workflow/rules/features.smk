# Phase 2: native features per dataset x model x split x modality, and zero-shot prompt features.


rule extract_features:
    input:
        manifest=get_manifest,
        checkpoint=get_model_checkpoint,
    output:
        features="data/features/{dataset}/{model}/{modality}_{split}.safetensors",
    log:
        "logs/features/{dataset}/{model}/{modality}_{split}.log",
    benchmark:
        "logs/bench/features/{dataset}/{model}/{modality}_{split}.tsv"
    conda:
        "../envs/crossgap.yaml"
    threads: 2
    resources:
        gpu=1,
        mem_mb=8000,
        runtime=240,
    params:
        model=get_model_spec,
        options=get_feature_options,
    script:
        "../scripts/extract_features.py"


rule prompt_features:
    input:
        manifest=get_manifest,
        checkpoint=get_model_checkpoint,
    output:
        features="data/features/{dataset}/{model}/prompts.safetensors",
    log:
        "logs/features/{dataset}/{model}/prompts.log",
    benchmark:
        "logs/bench/features/{dataset}/{model}/prompts.tsv"
    conda:
        "../envs/crossgap.yaml"
    threads: 1
    resources:
        gpu=1,
        mem_mb=4000,
        runtime=30,
    params:
        model=get_model_spec,
        options=get_text_feature_options,
    script:
        "../scripts/prompt_features.py"


# The OVI zero-shot targets: inversion.ovi.template filled with each class name (the reference's
# use_class_names); the standard zero-shot classifier keeps the dataset's prompts above.
rule class_sentence_features:
    input:
        manifest=get_manifest,
        checkpoint=get_model_checkpoint,
    output:
        features="data/features/{dataset}/{model}/class_sentences.safetensors",
    log:
        "logs/features/{dataset}/{model}/class_sentences.log",
    benchmark:
        "logs/bench/features/{dataset}/{model}/class_sentences.tsv"
    conda:
        "../envs/crossgap.yaml"
    threads: 1
    resources:
        gpu=1,
        mem_mb=4000,
        runtime=30,
    params:
        model=get_model_spec,
        template=config["inversion"]["ovi"]["template"],
        options=get_text_feature_options,
    message:
        "OVI zero-shot targets of {wildcards.dataset}/{wildcards.model}: each class name in {params.template!r}"
    script:
        "../scripts/class_sentence_features.py"
