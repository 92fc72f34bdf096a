"""Rule vocabulary_features: text features of a fixed vocabulary's class names (pca_text's ImageNet span)."""

from crossgap.config import with_defaults
from crossgap.runtime import job_setup

job_setup(snakemake.log[0], snakemake.threads, gpu=True)
from crossgap.steps.features import vocabulary_step  # noqa: E402

vocabulary_step(
    vocabulary=snakemake.wildcards.vocabulary,
    model_slug=snakemake.wildcards.model,
    model_spec=snakemake.params.model,
    out=snakemake.output.features,
    precision=with_defaults("features", snakemake.params.options)["precision"],
)
