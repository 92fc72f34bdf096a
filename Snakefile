# Entry point: Snakemake finds this file first. The workflow lives in workflow/Snakefile;
# included files cannot set the default target, so it is named here.
include: "workflow/Snakefile"


rule default:
    default_target: True
    input:
        rules.all.input,
