"""Rule projection_matrices: the model's final linear projections (for IsoCLIP)."""

from crossgap.steps.features import projections_step
from crossgap.runtime import job_setup

job_setup(snakemake.log[0], snakemake.threads)
projections_step(
    model_slug=snakemake.wildcards.model,
    model_spec=snakemake.params.model,
    out=snakemake.output.projections,
)
