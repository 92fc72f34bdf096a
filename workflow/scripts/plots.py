"""Rule plots: baseline-vs-inverted bars and inversion loss curves (PNG, in the report)."""

from pathlib import Path

from crossgap.report import plot_comparison, plot_losses
from crossgap.runtime import job_setup

job_setup(snakemake.log[0], snakemake.threads)
plot_comparison(snakemake.input.table, snakemake.output.comparison)
curves = {str(Path(p).relative_to("data/plots/losses").with_suffix("")): p for p in snakemake.input.losses}
plot_losses(curves, snakemake.output.losses)
