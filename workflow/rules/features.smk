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
        options=get_feature_options,
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
        template=get_ovi_template,
        options=get_feature_options,
    message:
        "OVI zero-shot targets of {wildcards.dataset}/{wildcards.model}: each class name in {params.template!r}"
    script:
        "../scripts/class_sentence_features.py"


rule classname_features:
    input:
        manifest=get_manifest,
        checkpoint=get_model_checkpoint,
    output:
        features="data/features/{dataset}/{model}/bare_classnames.safetensors",
    log:
        "logs/features/{dataset}/{model}/bare_classnames.log",
    benchmark:
        "logs/bench/features/{dataset}/{model}/bare_classnames.tsv"
    conda:
        "../envs/crossgap.yaml"
    threads: 1
    resources:
        gpu=1,
        mem_mb=4000,
        runtime=30,
    params:
        model=get_model_spec,
        options=get_feature_options,
    script:
        "../scripts/classname_features.py"


rule projection_matrices:
    input:
        checkpoint=get_model_checkpoint,
    output:
        projections="data/features/{dataset}/{model}/projections.safetensors",
    log:
        "logs/projections/{dataset}/{model}.log",
    benchmark:
        "logs/bench/projections/{dataset}/{model}.tsv"
    conda:
        "../envs/crossgap.yaml"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=10,
    params:
        model=get_model_spec,
    script:
        "../scripts/projection_matrices.py"


rule preprojection_features:
    input:
        manifest=get_manifest,
        checkpoint=get_model_checkpoint,
    output:
        features="data/features/{dataset}/{model}/{modality}_{split}.pre.safetensors",
    log:
        "logs/features/{dataset}/{model}/{modality}_{split}.pre.log",
    benchmark:
        "logs/bench/features/{dataset}/{model}/{modality}_{split}.pre.tsv"
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


# OVI's targets with inversion.ovi.underscores_as_spaces: the texts of a split with "_" read as a
# space, as the reference inverts them (its native baseline keeps the texts as they are).
rule spaced_text_features:
    input:
        manifest=get_manifest,
        checkpoint=get_model_checkpoint,
    output:
        features="data/features/{dataset}/{model}/text_{split}.spaces.safetensors",
    log:
        "logs/features/{dataset}/{model}/text_{split}.spaces.log",
    benchmark:
        "logs/bench/features/{dataset}/{model}/text_{split}.spaces.tsv"
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


# Fixed vocabularies, once per model: ImageNet-1k's bare class names, the span Herzog & Wang's
# pca_text projects onto for every dataset (crossgap.methods.vocabularies).
rule vocabulary_features:
    input:
        checkpoint=get_model_checkpoint,
    output:
        features="data/features/_vocabulary/{model}/{vocabulary}_classnames.safetensors",
    log:
        "logs/features/_vocabulary/{model}/{vocabulary}.log",
    benchmark:
        "logs/bench/features/_vocabulary/{model}/{vocabulary}.tsv"
    wildcard_constraints:
        vocabulary="imagenet",
    conda:
        "../envs/crossgap.yaml"
    threads: 1
    resources:
        gpu=1,
        mem_mb=4000,
        runtime=30,
    params:
        model=get_model_spec,
        options=get_feature_options,
    script:
        "../scripts/vocabulary_features.py"
