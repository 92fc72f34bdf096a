"""Rule prompt_features: text features of the zero-shot class prompts."""

from crossgap.runtime import job_setup

job_setup(snakemake.log[0], snakemake.threads, gpu=True)
from crossgap.config import with_defaults  # noqa: E402
from crossgap.steps.features import prompts_step  # noqa: E402

prompts_step(
    manifest=snakemake.input.manifest,
    model_slug=snakemake.wildcards.model,
    model_spec=snakemake.params.model,
    out=snakemake.output.features,
    precision=with_defaults("features", snakemake.params.options)["precision"],
)
