# Config validation and thin input functions. Every decision (which files a method reads, tags,
# shards, pairings) is crossgap.plan's, derived from params.yaml and the registered adapters,
# never from files, so dry runs need no data (and import no torch).
#
# Every rule receives exactly the fields it uses as params, so a change reruns only what it
# affects. Runtime settings (inversion.batch_size / resume_every, features.batch_size /
# num_workers: memory, speed, bookkeeping) are not params: scripts read them from the config
# through crossgap.config, so changing them reruns nothing.
from snakemake.utils import validate

from crossgap import plan
from crossgap.config import non_default

validate(config, schema="../schemas/params.schema.yaml")
plan.check_method_params(config)

DATASETS = sorted(config["datasets"])
MODELS = sorted(config["models"])


wildcard_constraints:
    dataset="|".join(DATASETS),
    model="|".join(MODELS),
    split="[A-Za-z0-9]+",
    modality="image|text",
    shard=r"\d+",
    num_shards=r"\d+",
    shard_size=r"\d+",
    ovi_set="queries|classnames|gallery",
    tag="[0-9a-f]{10}",
    steps=r"[0-9]+(-[0-9]+)*",


# ---- data and models ------------------------------------------------------------------------
def config_options(section):
    """The keys of a config section that differ from their schema defaults (a rule's params)."""
    return non_default(config, section)


def get_dataset_spec(wildcards):
    return plan.dataset_spec(config, wildcards.dataset)


def get_generated_split_file(wildcards):
    return plan.generated_split_file(config, wildcards.dataset)


def get_model_spec(wildcards):
    return plan.model_spec(config, wildcards.model)


def get_architecture(wildcards):
    return plan.architecture(config, wildcards.model)


def get_feature_options(wildcards):
    return plan.feature_options(config)


def get_model_checkpoint(wildcards):
    return plan.model_checkpoint(config, wildcards.model)


def get_manifest(wildcards):
    return plan.manifest_path(wildcards.dataset)


def get_text_options(wildcards):
    return plan.text_options(config, wildcards.dataset)


def get_text_gpus(wildcards):
    return plan.text_step_gpus(config, wildcards.dataset)


def get_dataroot(wildcards):
    return plan.dataroot(config, wildcards.dataset)


def get_ovi_template(wildcards):
    return plan.ovi_template(config)


# ---- inversion --------------------------------------------------------------------------------
def get_oti_targets(wildcards):
    return plan.inversion_targets(
        config, wildcards.dataset, wildcards.model, "oti", wildcards.split
    )


def get_ovi_targets(wildcards):
    return plan.inversion_targets(
        config, wildcards.dataset, wildcards.model, "ovi", wildcards.ovi_set
    )


def get_ovi_task(wildcards):
    return plan.inversion_task("ovi", wildcards.ovi_set)


def get_oti_params(wildcards):
    return plan.current_params(
        config, "oti", wildcards.dataset, wildcards.model, wildcards.tag
    )


def get_ovi_params(wildcards):
    return plan.current_params(
        config, "ovi", wildcards.dataset, wildcards.model, wildcards.tag
    )


def get_oti_shards(wildcards):
    return plan.shard_files(
        config,
        wildcards.dataset,
        wildcards.model,
        "oti",
        wildcards.tag,
        wildcards.split,
    )


def get_ovi_shards(wildcards):
    return plan.shard_files(
        config,
        wildcards.dataset,
        wildcards.model,
        "ovi",
        wildcards.tag,
        wildcards.ovi_set,
    )


# ---- evaluation -------------------------------------------------------------------------------
def get_image_retrieval_inputs(wildcards):
    return plan.retrieval_inputs(
        config, "image_retrieval", wildcards.dataset, wildcards.model, wildcards.method
    )


def get_text_retrieval_inputs(wildcards):
    return plan.retrieval_inputs(
        config, "text_retrieval", wildcards.dataset, wildcards.model, wildcards.method
    )


def get_zero_shot_inputs(wildcards):
    return plan.zero_shot_inputs(
        config, wildcards.dataset, wildcards.model, wildcards.method
    )


def get_method_name(wildcards):
    return plan.method_name(wildcards.method)


def get_image_retrieval_params(wildcards):
    return plan.result_params(
        config, wildcards.dataset, wildcards.model, "image_retrieval", wildcards.method
    )


def get_text_retrieval_params(wildcards):
    return plan.result_params(
        config, wildcards.dataset, wildcards.model, "text_retrieval", wildcards.method
    )


def get_zero_shot_params(wildcards):
    return plan.result_params(
        config, wildcards.dataset, wildcards.model, "zero_shot", wildcards.method
    )


def get_gap_inputs(wildcards):
    return plan.gap_inputs(config, wildcards.dataset, wildcards.model)


def get_gap_sources(wildcards):
    """The gap's input paths as a param: which features it pairs is part of its result."""
    return sorted(plan.gap_inputs(config, wildcards.dataset, wildcards.model).items())


def get_reference_compat(wildcards):
    return plan.reference_compat(config)


def get_report_params(wildcards):
    return plan.report_params(config)
