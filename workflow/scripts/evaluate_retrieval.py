"""Rules evaluate_image_retrieval / evaluate_text_retrieval."""

from crossgap.config import EvaluationRuntime
from crossgap.steps.evaluation import retrieval_step
from crossgap.runtime import job_setup

job_setup(snakemake.log[0], snakemake.threads)
retrieval_step(
    task=snakemake.params.task,
    method=snakemake.params.method,
    manifest=snakemake.input.manifest,
    query=snakemake.input.query,
    gallery=snakemake.input.gallery,
    out=snakemake.output.result,
    model_slug=snakemake.wildcards.model,
    chunk_size=EvaluationRuntime.from_config(snakemake.config).chunk_size,
    params=snakemake.params.settings,
    reference_compat=snakemake.params.reference_compat,
    references={key[len("ref_"):]: path for key, path in snakemake.input.items() if key.startswith("ref_")},
    per_query_out=snakemake.output.per_query,
)
