"""Rule plots: Δ with intervals, metric vs steps, inversion loss curves (PNG, in the report; CSV for DVC)."""

from pathlib import Path

from crossgap.report import plot_comparison, plot_losses, plot_steps, write_curves_table
from crossgap.runtime import job_setup

job_setup(snakemake.log[0], snakemake.threads)
plot_comparison(snakemake.input.table, snakemake.output.comparison)
plot_steps(snakemake.input.steps, snakemake.output.steps)
curves = {str(Path(p).relative_to("data/plots/losses").with_suffix("")): p for p in snakemake.input.losses}
plot_losses(curves, snakemake.output.losses)
write_curves_table(curves, snakemake.output.losses_table)
write_curves_table({Path(p).stem: p for p in snakemake.input.pretrain}, snakemake.output.pretrain_table)
