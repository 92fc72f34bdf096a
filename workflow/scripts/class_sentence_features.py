"""Rule class_sentence_features: text features of inversion.ovi.template filled with each class name."""

from crossgap.runtime import job_setup

job_setup(snakemake.log[0], snakemake.threads, gpu=True)
from crossgap.config import with_defaults  # noqa: E402
from crossgap.steps.features import class_sentences_step  # noqa: E402

class_sentences_step(
    manifest=snakemake.input.manifest,
    model_slug=snakemake.wildcards.model,
    model_spec=snakemake.params.model,
    template=snakemake.params.template,
    out=snakemake.output.features,
    precision=with_defaults("features", snakemake.params.options)["precision"],
)
