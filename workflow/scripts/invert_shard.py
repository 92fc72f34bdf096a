"""Rules oti_shard / ovi_shard: invert one shard of the target features (resumable mid-shard)."""

from crossgap.config import InversionRuntime
from crossgap.runtime import job_setup

# inversion.deterministic is a runtime setting (not a param): read from the config, set before CUDA starts
runtime = InversionRuntime.from_config(snakemake.config)
job_setup(snakemake.log[0], snakemake.threads, gpu=True, deterministic=runtime.deterministic)
from crossgap.steps.inversion import invert_shard_step  # noqa: E402

method = "oti" if snakemake.rule == "oti_shard" else "ovi"
invert_shard_step(
    method=method,
    features=snakemake.input.features,
    manifest=snakemake.input.get("manifest"),
    task=snakemake.params.get("task"),
    out=snakemake.output.shard,
    model_slug=snakemake.wildcards.model,
    model_spec=snakemake.params.model,
    shard=int(snakemake.wildcards.shard),
    num_shards=int(snakemake.wildcards.num_shards),
    shard_size=int(snakemake.wildcards.shard_size),
    params=snakemake.params[method],
    batch_size=runtime.batch_size,
    resume_every=runtime.resume_every,
    snapshots=snakemake.params.snapshots,
)
