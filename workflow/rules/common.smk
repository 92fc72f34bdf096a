# Helpers and input functions. Everything the DAG needs is derived from params.yaml and the
# registered dataset adapters (crossgap.plan), never from files, so dry runs need no data.
import os

from snakemake.utils import validate

from crossgap import plan

validate(config, schema="../schemas/params.schema.yaml")

DATASETS = sorted(config["datasets"])
MODELS = sorted(config["models"])
SHARDS = list(range(config["inversion"]["shards"]))
EVALUATION = config.get("evaluation", {})


wildcard_constraints:
    dataset="|".join(DATASETS),
    model="|".join(MODELS),
    split="[A-Za-z0-9]+",
    modality="image|text",
    shard=r"\d+",
    ovi_set="queries|prompts",
    tag="[0-9a-f]{10}",


def dataset_cfg(wildcards):
    return config["datasets"][wildcards.dataset]


def model_spec(wildcards):
    """The models: entry of params.yaml for {model} (passed as params, so a change reruns its jobs)."""
    return config["models"][wildcards.model]


def pretrained_models():
    return [
        f"data/models/{m}/checkpoint.pt"
        for m in MODELS
        if config["models"][m].get("pretrain")
    ]


def model_checkpoint(wildcards):
    """The checkpoint file when the pipeline trains the model itself; nothing otherwise."""
    if config["models"][wildcards.model].get("pretrain"):
        return f"data/models/{wildcards.model}/checkpoint.pt"
    return []


def generated_dataset(wildcards):
    if config["datasets"][wildcards.dataset].get("generate"):
        return f"{config['datasets'][wildcards.dataset]['dataroot']}/synthetic/split_zhou_Synthetic.json"
    return []


def synthetic_root():
    """The data root of the generated dataset (the first dataset with generate: true)."""
    for name in DATASETS:
        if config["datasets"][name].get("generate"):
            return config["datasets"][name]["dataroot"]
    return "data/raw"


def manifest(wildcards):
    return f"data/manifests/{wildcards.dataset}.parquet"


def feature_path(dataset, model, modality, split):
    return f"data/features/{dataset}/{model}/{modality}_{split}.safetensors"


def oti_query_features(wildcards):
    return feature_path(wildcards.dataset, wildcards.model, "image", wildcards.split)


def ovi_targets(wildcards):
    """OVI inverts the text-retrieval queries or the zero-shot prompts."""
    if wildcards.ovi_set == "prompts":
        return (
            f"data/features/{wildcards.dataset}/{wildcards.model}/prompts.safetensors"
        )
    split = plan.query_split(dataset_cfg(wildcards), "text_retrieval")
    return feature_path(wildcards.dataset, wildcards.model, "text", split)


def ovi_task(wildcards):
    return "text_retrieval" if wildcards.ovi_set == "queries" else None


def oti_params(wildcards=None):
    return dict(
        config["inversion"]["oti"],
        batch_size=config["inversion"]["batch_size"],
        seed=config["inversion"]["seed"],
    )


def model_ovi_params(model):
    params = dict(
        config["inversion"]["ovi"],
        batch_size=config["inversion"]["batch_size"],
        seed=config["inversion"]["seed"],
    )
    params["num_pseudo_tokens"] = config["models"][model].get("ovi_tokens", 1)
    return params


def ovi_params(wildcards):
    return model_ovi_params(wildcards.model)


# ---- parameter-addressed inversions: data/inversion/{dataset}/{model}/{oti,ovi}-{tag}/ --------
def inversion_tags(model):
    """``{"oti": tag, "ovi": tag}`` of the current parameters (crossgap.plan.inversion_tag)."""
    return {
        "oti": plan.inversion_tag(oti_params()),
        "ovi": plan.inversion_tag(model_ovi_params(model)),
    }


def current_params(method, wildcards, tag):
    """The current parameters of ``method``; refuses to write them under another set's tag."""
    params = oti_params() if method == "oti" else ovi_params(wildcards)
    expected = plan.inversion_tag(params)
    if tag != expected:
        raise ValueError(
            f"{method}-{tag} ({wildcards.dataset}/{wildcards.model}) belongs to another parameter set: "
            f"the inversion parameters in the config have tag {expected}. Files of other parameter sets "
            "are kept and reused, never recomputed; request the workflow's targets instead."
        )
    return params


def oti_job_params(wildcards):
    return current_params("oti", wildcards, wildcards.tag)


def ovi_job_params(wildcards):
    return current_params("ovi", wildcards, wildcards.tag)


def method_name(wildcards):
    """``oti`` for the result wildcard ``oti-{tag}`` (the method without its tag)."""
    return wildcards.method.split("-")[0]


def oti_shards(wildcards):
    return expand(
        "data/inversion/{{dataset}}/{{model}}/oti-{{tag}}/{{split}}.shards/{shard}.safetensors",
        shard=SHARDS,
    )


def ovi_shards(wildcards):
    return expand(
        "data/inversion/{{dataset}}/{{model}}/ovi-{{tag}}/{{ovi_set}}.shards/{shard}.safetensors",
        shard=SHARDS,
    )


# ---- inputs of the evaluation rules ---------------------------------------------------------
def image_retrieval_inputs(wildcards):
    cfg = dataset_cfg(wildcards)
    d, m = wildcards.dataset, wildcards.model
    q, g = plan.query_split(cfg, "image_retrieval"), plan.gallery_split(
        cfg, "image_retrieval"
    )
    query = (
        feature_path(d, m, "image", q)
        if wildcards.method == "image"
        else f"data/inversion/{d}/{m}/{wildcards.method}/{q}.safetensors"
    )
    return {
        "manifest": manifest(wildcards),
        "query": query,
        "gallery": feature_path(d, m, "image", g),
    }


def text_retrieval_inputs(wildcards):
    cfg = dataset_cfg(wildcards)
    d, m = wildcards.dataset, wildcards.model
    q, g = plan.query_split(cfg, "text_retrieval"), plan.gallery_split(
        cfg, "text_retrieval"
    )
    query = (
        feature_path(d, m, "text", q)
        if wildcards.method == "text"
        else f"data/inversion/{d}/{m}/{wildcards.method}/queries.safetensors"
    )
    return {
        "manifest": manifest(wildcards),
        "query": query,
        "gallery": feature_path(d, m, "text", g),
    }


def zero_shot_inputs(wildcards):
    d, m = wildcards.dataset, wildcards.model
    split = plan.zero_shot_split(dataset_cfg(wildcards))
    method = method_name(wildcards)
    images = (
        f"data/inversion/{d}/{m}/{wildcards.method}/{split}.safetensors"
        if method == "oti"
        else feature_path(d, m, "image", split)
    )
    prompts = (
        f"data/inversion/{d}/{m}/{wildcards.method}/prompts.safetensors"
        if method == "ovi"
        else f"data/features/{d}/{m}/prompts.safetensors"
    )
    return {"manifest": manifest(wildcards), "images": images, "prompts": prompts}


def method_params(wildcards):
    """Inversion parameters recorded with a result (empty for native methods)."""
    method, _, tag = wildcards.method.partition("-")
    return current_params(method, wildcards, tag) if tag else {}


def gap_inputs(wildcards):
    cfg = dataset_cfg(wildcards)
    d, m = wildcards.dataset, wildcards.model
    inputs = {
        "manifest": manifest(wildcards),
        "prompts": f"data/features/{d}/{m}/prompts.safetensors",
    }
    enabled = plan.tasks(cfg, EVALUATION)
    if "zero_shot" in enabled:
        inputs["images"] = feature_path(d, m, "image", plan.zero_shot_split(cfg))
    else:
        inputs["images"] = feature_path(
            d, m, "image", plan.query_split(cfg, "image_retrieval")
        )
    if "text_retrieval" in enabled:
        inputs["texts"] = feature_path(
            d, m, "text", plan.query_split(cfg, "text_retrieval")
        )
    return inputs


# ---- targets --------------------------------------------------------------------------------
def all_feature_files():
    files = []
    for d in DATASETS:
        cfg = config["datasets"][d]
        for m in MODELS:
            files += plan.feature_files(d, m, cfg, EVALUATION)
            if "zero_shot" in plan.tasks(cfg, EVALUATION):
                files.append(f"data/features/{d}/{m}/prompts.safetensors")
    return files


def all_inversion_files():
    files = []
    for d in DATASETS:
        cfg = config["datasets"][d]
        for m in MODELS:
            tags = inversion_tags(m)
            files += [
                f"data/inversion/{d}/{m}/oti-{tags['oti']}/{s}.safetensors"
                for s in plan.oti_splits(cfg, EVALUATION)
            ]
            files += [
                f"data/inversion/{d}/{m}/ovi-{tags['ovi']}/{s}.safetensors"
                for s in plan.ovi_sets(cfg, EVALUATION)
            ]
    return files


def all_result_files():
    files = []
    for d in DATASETS:
        for m in MODELS:
            files += plan.result_files(
                d, m, config["datasets"][d], EVALUATION, inversion_tags(m)
            )
    return files


def all_gap_files():
    return [
        f"data/results/{d}/{m}/modality_gap.json"
        for d in DATASETS
        for m in MODELS
        if plan.has_modality_gap(config["datasets"][d], EVALUATION)
    ]


def all_loss_curves():
    files = []
    for d in DATASETS:
        cfg = config["datasets"][d]
        for m in MODELS:
            tags = inversion_tags(m)
            files += [
                f"data/plots/losses/{d}/{m}/oti-{tags['oti']}/{s}.csv"
                for s in plan.oti_splits(cfg, EVALUATION)
            ]
            files += [
                f"data/plots/losses/{d}/{m}/ovi-{tags['ovi']}/{s}.csv"
                for s in plan.ovi_sets(cfg, EVALUATION)
            ]
    return files
