"""Rule modality_gap: gap between the image and text feature clouds of one dataset x model."""

from crossgap.steps.evaluation import modality_gap_step
from crossgap.runtime import job_setup

job_setup(snakemake.log[0], snakemake.threads)
modality_gap_step(
    manifest=snakemake.input.manifest,
    images=snakemake.input.images,
    texts=snakemake.input.get("texts"),
    prompts=snakemake.input.get("prompts"),
    out=snakemake.output.gap,
    dataset=snakemake.wildcards.dataset,
    model_slug=snakemake.wildcards.model,
)
