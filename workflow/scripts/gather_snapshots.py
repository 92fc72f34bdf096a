"""Rules gather_oti_snapshots / gather_ovi_snapshots: snapshot features of one inverted set, in order."""

from crossgap.steps.inversion import gather_snapshots_step
from crossgap.runtime import job_setup

job_setup(snakemake.log[0], snakemake.threads)
steps = [int(s) for s in snakemake.wildcards.steps.split("-")]
gather_snapshots_step(shards=list(snakemake.input.shards), steps=steps, out=snakemake.output.snapshots)
