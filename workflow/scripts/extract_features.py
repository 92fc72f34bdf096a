"""Rules extract_features / preprojection_features / spaced_text_features: features of one split."""

from crossgap.config import FeatureRuntime, with_defaults
from crossgap.runtime import job_setup

job_setup(snakemake.log[0], snakemake.threads, gpu=True)
from crossgap.steps.features import extract_step  # noqa: E402  (after the GPU slot is chosen)

runtime = FeatureRuntime.from_config(snakemake.config)
extract_step(
    manifest=snakemake.input.manifest,
    model_slug=snakemake.wildcards.model,
    model_spec=snakemake.params.model,
    split=snakemake.wildcards.split,
    modality=snakemake.wildcards.get("modality", "text"),
    out=snakemake.output.features,
    batch_size=runtime.batch_size,
    num_workers=runtime.num_workers,
    precision=with_defaults("features", snakemake.params.options)["precision"],
    preprojection=snakemake.rule == "preprojection_features",
    underscores_as_spaces=snakemake.rule == "spaced_text_features",
)
