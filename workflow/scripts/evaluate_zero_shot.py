"""Rule evaluate_zero_shot: standard, OTI or OVI zero-shot classification."""

from crossgap.steps.evaluation import zero_shot_step
from crossgap.runtime import job_setup

job_setup(snakemake.log[0], snakemake.threads)
zero_shot_step(
    method=snakemake.params.method,
    manifest=snakemake.input.manifest,
    images=snakemake.input.images,
    prompts=snakemake.input.prompts,
    out=snakemake.output.result,
    model_slug=snakemake.wildcards.model,
    params=snakemake.params.settings,
    reference_compat=snakemake.params.reference_compat,
    references={key[len("ref_"):]: path for key, path in snakemake.input.items() if key.startswith("ref_")},
    per_query_out=snakemake.output.per_query,
)
