"""Rule prepare_manifest: dataset on disk -> canonical manifest (+ skipped-items sidecar)."""

from crossgap.datasets import prepare_manifest
from crossgap.config import with_defaults
from crossgap.runtime import job_setup

job_setup(snakemake.log[0], snakemake.threads)
cfg, prep = snakemake.params.dataset, with_defaults("prepare", snakemake.params.prepare)
prepare_manifest(
    cfg["adapter"],
    cfg["dataroot"],
    snakemake.output.manifest,
    skip_corrupt=prep["skip_corrupt"],
    check_images=prep["check_images"],
    workers=snakemake.threads,
    truncated_images=prep["truncated_images"],
    options=cfg.get("options"),
    name=snakemake.wildcards.dataset,
)
