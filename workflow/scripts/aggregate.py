"""Rule aggregate: summary.json (DVC metrics, with paired-bootstrap intervals), the table, plot data, and the
paper tables, verdicts and paper_summary.json (crossgap.paper)."""

from crossgap.steps.report import aggregate_step
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
    paper_outputs={"tables_md": snakemake.output.paper_md, "tables_csv": snakemake.output.paper_csv,
                   "verdicts_csv": snakemake.output.verdicts, "summary_json": snakemake.output.paper_summary},
    **snakemake.params.settings,  # bootstrap, final_steps, seed, paper_methods (crossgap.plan.report_params)
)
