"""Rule classname_features: text features of the dataset's bare class names (the span of pca_text_dataset)."""

from crossgap.config import with_defaults
from crossgap.runtime import job_setup

job_setup(snakemake.log[0], snakemake.threads, gpu=True)
from crossgap.steps.features import classnames_step  # noqa: E402

classnames_step(
    manifest=snakemake.input.manifest,
    model_slug=snakemake.wildcards.model,
    model_spec=snakemake.params.model,
    out=snakemake.output.features,
    precision=with_defaults("features", snakemake.params.options)["precision"],
)
