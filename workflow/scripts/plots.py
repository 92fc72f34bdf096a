"""Rule plots: Δ with intervals, metric vs steps, inversion loss curves (PNG, in the report; CSV for DVC),
and the one-page HTML report of the table and the plots."""

from pathlib import Path

from crossgap.html_report import write_html_report
from crossgap.report import plot_comparison, plot_losses, plot_steps, write_curves_table
from crossgap.runtime import job_setup

job_setup(snakemake.log[0], snakemake.threads)
plot_comparison(snakemake.input.table, snakemake.output.comparison)
plot_steps(snakemake.input.steps, snakemake.output.steps)
curves = {str(Path(p).relative_to("data/plots/losses").with_suffix("")): p for p in snakemake.input.losses}
plot_losses(curves, snakemake.output.losses)
write_curves_table(curves, snakemake.output.losses_table)
write_curves_table({Path(p).stem: p for p in snakemake.input.pretrain}, snakemake.output.pretrain_table)
write_html_report(snakemake.input.table_md, {
    "Δ of every method against its task's native method, 95% paired-bootstrap intervals": snakemake.output.comparison,
    "Headline metric vs optimisation step (snapshots of one optimisation)": snakemake.output.steps,
    "OTI / OVI loss curves": snakemake.output.losses,
}, snakemake.output.html)
