"""Rule pretrain_tiny: train the tiny CLIP of the embedded default on the synthetic train split."""

from pathlib import Path

from crossgap.runtime import job_setup
from crossgap.training import train_tiny_clip
from crossgap.utils import write_json

job_setup(snakemake.log[0], snakemake.threads)
p = dict(snakemake.params.pretrain)
summary = train_tiny_clip(
    Path(snakemake.input.data).parent.parent,
    snakemake.output.checkpoint,
    model_name=snakemake.params.model["architecture"],
    epochs=p.get("epochs", 12),
    batch_size=p.get("batch_size", 128),
    lr=p.get("learning_rate", 1e-3),
    weight_decay=p.get("weight_decay", 0.1),
    temperature=p.get("temperature"),
    intramodal_weight=p.get("intramodal_weight", 0.0),
    seed=p.get("seed", 0),
    loss_csv=snakemake.output.loss_curve,
    epoch_csv=snakemake.output.epoch_curve,
    num_threads=snakemake.threads,
)
write_json(snakemake.output.summary, summary)
