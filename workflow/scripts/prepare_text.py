"""Rule prepare_text: a long-text dataset's source manifest -> the manifest the features read."""

from crossgap.runtime import job_setup

# the llm strategy asks for a GPU (resources: gpu=1): take a slot before torch starts CUDA
job_setup(snakemake.log[0], snakemake.threads, gpu=bool(snakemake.resources.get("gpu", 0)))
from crossgap.datasets.textprep import prepare_text_step  # noqa: E402

prepare_text_step(
    source=snakemake.input.manifest,
    out=snakemake.output.manifest,
    options=snakemake.params.text,
    dataroot=snakemake.params.dataroot,
)
