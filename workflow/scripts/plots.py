"""Rule plots: Δ with intervals, metric vs steps, inversion loss curves (PNG, in the report; CSV for DVC), the
per-task faceted plots of the paper tables, and the one-page HTML report of the tables and the plots."""

from pathlib import Path

from crossgap.html_report import write_html_report
from crossgap.paper.build import paper_plots
from crossgap.steps.report import plot_comparison, plot_losses, plot_steps, write_curves_table
from crossgap.runtime import job_setup

job_setup(snakemake.log[0], snakemake.threads)
plot_comparison(snakemake.input.table, snakemake.output.comparison)
plot_steps(snakemake.input.steps, snakemake.output.steps)
curves = {str(Path(p).relative_to("data/plots/losses").with_suffix("")): p for p in snakemake.input.losses}
plot_losses(curves, snakemake.output.losses)
write_curves_table(curves, snakemake.output.losses_table)
write_curves_table({Path(p).stem: p for p in snakemake.input.pretrain}, snakemake.output.pretrain_table)
task_plots = paper_plots(snakemake.input.paper_csv, Path(snakemake.output.paper_image).parent)
write_html_report(snakemake.input.table_md, {
    "Δ of every method against its task's native method, 95% paired-bootstrap intervals": snakemake.output.comparison,
    "Headline metric vs optimisation step (snapshots of one optimisation)": snakemake.output.steps,
    "OTI / OVI loss curves": snakemake.output.losses,
}, snakemake.output.html, paper={"tables_csv": snakemake.input.paper_csv, "verdicts_csv": snakemake.input.verdicts,
                                 "tables_md": snakemake.input.paper_md, "plots": task_plots})
