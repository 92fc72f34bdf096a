"""Rule generate_synthetic: write the synthetic captioned-image dataset."""

from pathlib import Path

from crossgap.config import with_defaults
from crossgap.runtime import job_setup
from crossgap.synthetic_generator import generate_synthetic

job_setup(snakemake.log[0], snakemake.threads)
generate_synthetic(Path(snakemake.output.split).parent.parent, **with_defaults("synthetic", snakemake.params.synthetic))
