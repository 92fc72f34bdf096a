"""Rule prepare_manifest: dataset on disk -> canonical manifest (+ skipped-items sidecar)."""

from crossgap.datasets import prepare_manifest
from crossgap.runtime import job_setup

job_setup(snakemake.log[0], snakemake.threads)
cfg, prep = snakemake.params.dataset, snakemake.params.prepare
prepare_manifest(
    cfg["adapter"],
    cfg["dataroot"],
    snakemake.output.manifest,
    skip_corrupt=prep.get("skip_corrupt", False),
    check_images=prep.get("check_images", True),
    workers=snakemake.threads,
    truncated_images=prep.get("truncated_images", "fail"),
    options=cfg.get("options"),
    name=snakemake.wildcards.dataset,
)
