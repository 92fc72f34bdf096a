"""Rules gather_oti / gather_ovi: merge inversion shards in manifest order."""

from crossgap.steps.inversion import gather_step
from crossgap.runtime import job_setup

job_setup(snakemake.log[0], snakemake.threads)
gather_step(shards=list(snakemake.input.shards), out=snakemake.output.inverted, loss_csv=snakemake.output.losses)
