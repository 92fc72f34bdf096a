# Phase 5: aggregate metrics (DVC), the comparison table, plots and the Snakemake report.


localrules:
    aggregate,
    plots,
    gather_oti,
    gather_ovi,
    gather_oti_snapshots,
    gather_ovi_snapshots,


rule aggregate:
    input:
        results=plan.all_result_files(config),
        per_query=plan.all_per_query_files(config),
        gaps=plan.all_gap_files(config),
    output:
        summary="data/metrics/summary.json",
        table_csv=report(
            "data/metrics/table.csv", category="Results", caption="../report/table.rst"
        ),
        table_md="data/metrics/table.md",
        plot_data="data/plots/comparison.csv",
        steps="data/plots/steps.csv",
        # the paper's layout (crossgap.paper): tables with published figures, verdicts, their DVC metrics
        paper_md="data/metrics/paper_tables.md",
        paper_csv="data/metrics/paper_tables.csv",
        verdicts="data/metrics/verdicts.csv",
        paper_summary="data/metrics/paper_summary.json",
    log:
        "logs/aggregate.log",
    benchmark:
        "logs/bench/aggregate.tsv"
    conda:
        "../envs/crossgap.yaml"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=5,
    params:
        # the set of results is part of the summary (the input trigger is off: profiles/default)
        results=plan.all_result_files(config),
        # bootstrap settings, final step counts, the main seed (other inversion.seeds: its replicates),
        # the methods of the paper-style tables
        settings=get_report_params,
    script:
        "../scripts/aggregate.py"


rule plots:
    input:
        table="data/metrics/table.csv",
        table_md="data/metrics/table.md",
        steps="data/plots/steps.csv",
        paper_md="data/metrics/paper_tables.md",
        paper_csv="data/metrics/paper_tables.csv",
        verdicts="data/metrics/verdicts.csv",
        losses=plan.all_loss_curves(config),
        pretrain=plan.pretrain_curves(config),
    output:
        comparison=report(
            "data/plots/comparison.png",
            category="Results",
            caption="../report/comparison.rst",
        ),
        losses=report(
            "data/plots/inversion_losses.png",
            category="Inversion",
            caption="../report/losses.rst",
        ),
        steps=report(
            "data/plots/steps.png",
            category="Inversion",
            caption="../report/steps.rst",
        ),
        # one faceted plot per task: a panel per dataset group × model (crossgap.paper.plots)
        paper_image=report(
            "data/plots/paper_image_retrieval.png",
            category="Results",
            caption="../report/paper.rst",
        ),
        paper_text=report(
            "data/plots/paper_text_retrieval.png",
            category="Results",
            caption="../report/paper.rst",
        ),
        paper_zero_shot=report(
            "data/plots/paper_zero_shot.png",
            category="Results",
            caption="../report/paper.rst",
        ),
        losses_table="data/plots/inversion_losses.csv",
        pretrain_table="data/plots/pretrain_losses.csv",
        # the table and every plot in one self-contained page (crossgap.html_report)
        html="data/plots/report.html",
    log:
        "logs/plots.log",
    benchmark:
        "logs/bench/plots.tsv"
    conda:
        "../envs/crossgap.yaml"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=5,
    params:
        curves=plan.all_loss_curves(config),
    script:
        "../scripts/plots.py"
