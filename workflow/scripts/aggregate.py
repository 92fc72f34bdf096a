"""Rule aggregate: summary.json (DVC metrics, with paired-bootstrap intervals), the table, plot data."""

from crossgap.report import aggregate_step
from crossgap.runtime import job_setup

job_setup(snakemake.log[0], snakemake.threads)
aggregate_step(
    results=list(snakemake.input.results),
    gaps=list(snakemake.input.gaps),
    summary_out=snakemake.output.summary,
    table_csv=snakemake.output.table_csv,
    table_md=snakemake.output.table_md,
    plot_csv=snakemake.output.plot_data,
    steps_csv=snakemake.output.steps,
    **snakemake.params.settings,  # bootstrap, final_steps, seed (crossgap.plan.report_params)
)
