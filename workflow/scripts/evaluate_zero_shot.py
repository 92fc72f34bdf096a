"""Rule evaluate_zero_shot: standard, OTI or OVI zero-shot classification."""

from crossgap.evaluation import zero_shot_step
from crossgap.runtime import job_setup

job_setup(snakemake.log[0], snakemake.threads)
zero_shot_step(
    method=snakemake.params.method,
    manifest=snakemake.input.manifest,
    images=snakemake.input.images,
    prompts=snakemake.input.prompts,
    out=snakemake.output.result,
    model_slug=snakemake.wildcards.model,
    params=snakemake.params.inversion,
    reference_compat=snakemake.params.get("reference_compat", False),
)
